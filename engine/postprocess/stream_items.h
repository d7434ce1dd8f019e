// Incremental results of a generation that is still running: text deltas for
// the pure-text tasks, and each detection / OCR region / segmented instance
// once it can no longer change, with a per-item confidence.
//
// Everything is derived from the real parser: the text of a prefix is
// Tokenizer::Decode(prefix, skip_special_tokens=false) and its items are those
// of ParseGeneration(task, text, width, height). An item is streamed only when
// every longer prefix is known to parse to the same item at the same index, so
// the events of one generation, in order, are exactly its final parse.
//
// Definitions (a "step" is the index j >= 1 of a generated token in the
// decoder sequence; tokens[0] is the start token; P_j = tokens[0..j]):
//
// * Completing token c_k of item k of the final result: the smallest step j
//   such that the parse of every prefix P_j, P_j+1, ..., up to the final
//   sequence holds item k, at index k, with its final value.
//
// * When an item is streamed (returned as an event), by its kind:
//   - Boxes and quads (detections of <OD>, dense region caption, region
//     proposal, phrase grounding; OCR regions): at step c_k. The parser only
//     reports a box once all 4 (quad: 8) <loc_N> of its group are in the
//     text, and a reported one never changes: the step of its last location
//     token.
//   - Polygon instances (both segmentation tasks, open-vocabulary polygons):
//     an instance keeps growing while <loc_N> tokens follow it, so instance k
//     is streamed at the first step whose prefix parse holds a polygon
//     instance k + 1 (by then instance k's tokens are closed off by text or
//     by "</poly>"); the last one at the end of the generation.
//   - Open-vocabulary detections: at the end. transformers parses the whole
//     generation as polygons as soon as it contains "<poly>" anywhere, which
//     discards every box; until the generation ends that can still happen.
//   "The end" is the step whose token completes the end-of-sequence "</s>"
//   after the start token (the parser ignores everything after it; Update
//   then streams everything), or Finish.
//
// * Confidence of item k: exp(mean of logprobs over its span), where the span
//   is the steps m + 1 .. c_k with m = max(c_0, ..., c_{k-1}), or 0 for the
//   first item (items complete in result order, so m is c_{k-1}): the item's
//   own tokens (label, text, locations, markers) and whatever was generated
//   between it and the previous item. When c_k == m (one token completed
//   both) the span is {c_k} alone. So spans tile the generation up to the
//   last item's completing token; the tokens after it (trailing text, the
//   end-of-sequence token, padding) belong to no item. A step without a
//   log-prob (too few passed) is left out of the mean; a span with none
//   gives 0. Streaming and confidences() use the same values.
//
// * Text deltas (kPureText tasks): after each step the tracker emits what the
//   final TextResult.text is guaranteed to start with and was not emitted
//   yet. It holds back: a trailing U+FFFD (a multi-byte character split
//   across byte-level tokens decodes to U+FFFD until its last byte arrives);
//   a trailing "<", "<s", "</" or "</s" of the raw text and of the parsed
//   text (later tokens can complete it into "<s>" / "</s>", which the parser
//   removes, or into the end-of-sequence token); and trailing whitespace
//   (the parser strips it from the final text). Leading whitespace is
//   stripped by the parser itself. The rest is emitted at the end. Text
//   deltas have index 0 and confidence 0; pure-text results have no items.
//
// Cost per generated token: decoding the token (plus the few held-back
// tokens of an incomplete UTF-8 character) and at most one ParseGeneration of
// the prefix. Structured tasks skip the parse when the token's bytes contain
// no '>' (byte 0x3E, never part of a multi-byte character): every <loc_N>,
// <sep>, <poly>, </poly>, <s>, </s> and <pad> ends with '>', so such a token
// completes none of the tags the parser matches, removes or cuts at; and
// every item's text ends with one of those tags, so text after the last '>'
// (including a U+FFFD that turns into a character) belongs to no item yet.
// The parse of the prefix is unchanged. (Tested: the tests parse every
// prefix and check each event's step.)
//
// Not thread-safe; one tracker per streaming request, fed from one thread.
#ifndef FLORENCE_ENGINE_POSTPROCESS_STREAM_ITEMS_H_
#define FLORENCE_ENGINE_POSTPROCESS_STREAM_ITEMS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/types/span.h"
#include "engine/postprocess/parse.h"
#include "engine/task.h"
#include "engine/tokenizer/tokenizer.h"

namespace florence::engine {

struct ItemEvent {
  enum class Kind { kTextDelta, kDetection, kOcrRegion, kInstance };
  Kind kind;
  // Position among items of its kind in the final result (0 for text deltas).
  int index = 0;
  std::string text_delta;    // kTextDelta
  Detection detection;       // kDetection (parse.h types)
  OcrRegion ocr_region;      // kOcrRegion
  PolygonInstance instance;  // kInstance
  float confidence = 0;      // items: exp(mean log-prob of the item's span)
};

class ItemTracker {
 public:
  // `tokenizer` is not owned and must outlive the tracker. `image_width` x
  // `image_height` is the original image (coordinates are in its pixels);
  // both must be positive (otherwise ParseGeneration fails and the tracker
  // reports nothing).
  ItemTracker(const Tokenizer& tokenizer, Task task, int image_width,
              int image_height);

  ItemTracker(const ItemTracker&) = delete;
  ItemTracker& operator=(const ItemTracker&) = delete;

  // `tokens` is the decoder sequence so far INCLUDING the start token; it
  // only grows between calls (a prefix never changes), and only the part past
  // what was already fed is read. logprobs[i] is the log-probability of
  // tokens[i + 1] (so logprobs.size() == tokens.size() - 1; extra entries are
  // ignored, a missing one leaves its token out of every mean). Returns, in
  // order, the events that became final; tokens are consumed one at a time,
  // so each event is emitted at its own step even when several tokens arrive
  // together. Tokens after the end-of-sequence "</s>" change nothing.
  std::vector<ItemEvent> Update(absl::Span<const int64_t> tokens,
                                absl::Span<const float> logprobs);

  // The generation is over; `tokens` is the final sequence (it extends what
  // was fed). Returns the remaining events, so that all events ever
  // returned, in order, equal the final parse: the text deltas concatenate to
  // TextResult.text of ParseGeneration(task, Decode(tokens), w, h); the items
  // equal its detections / regions / instances in order (OpenVocabularyResult:
  // its detections, or its polygons as kInstance). Later calls of Update or
  // Finish return nothing.
  std::vector<ItemEvent> Finish(absl::Span<const int64_t> tokens,
                                absl::Span<const float> logprobs);

  // The confidences of the items streamed so far, in result order; after
  // Finish, of every item of the final result (pure text: empty).
  const std::vector<float>& confidences() const { return confidences_; }

 private:
  using Item = std::variant<Detection, OcrRegion, PolygonInstance>;
  struct TrackedItem {
    Item item;
    int64_t changed_at = 0;  // last step at which the parse changed it
  };

  // Feeds tokens[fed_..] one by one, appending the events to `events`.
  void Feed(absl::Span<const int64_t> tokens, absl::Span<const float> logprobs,
            std::vector<ItemEvent>* events);
  // Appends token `id` (step `step`) to text_; sets ended_ once the text holds
  // the end-of-sequence token.
  void AppendText(int64_t id);
  // Parses text_ and records which items changed at `step`.
  void Track(int64_t step);
  // Streams the tracked items that are final; all of them if `all`.
  void EmitItems(bool all, std::vector<ItemEvent>* events);
  // Streams the new part of the text: what the final text surely starts with,
  // or (`all`) the whole parsed text.
  void EmitText(bool all, std::vector<ItemEvent>* events);
  // exp(mean log-prob) over the span of an item completed at `completed_at`.
  float SpanConfidence(int64_t completed_at) const;

  const Tokenizer* tokenizer_;  // not owned
  Task task_;
  PostProcess post_process_;
  int image_width_;
  int image_height_;

  size_t fed_ = 0;         // tokens consumed so far
  bool ended_ = false;     // text_ holds the end-of-sequence token
  bool finished_ = false;  // Finish ran

  // Decoded text of the tokens fed: text_[0, stable_size_) is final, the rest
  // is Decode(pending_ids_), tokens whose bytes may still end in an
  // incomplete UTF-8 character.
  std::string text_;
  size_t stable_size_ = 0;
  std::vector<int32_t> pending_ids_;

  // Prefix sums over steps 1..j of the log-probs given (and how many were).
  std::vector<double> logprob_sum_{0.0};
  std::vector<int64_t> logprob_count_{0};

  std::vector<TrackedItem> items_;  // items of the latest prefix parse
  size_t emitted_items_ = 0;
  int64_t last_completed_ = 0;  // largest c_k among the items emitted
  std::vector<float> confidences_;
  size_t emitted_text_size_ = 0;  // bytes of text emitted so far
};

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_POSTPROCESS_STREAM_ITEMS_H_
