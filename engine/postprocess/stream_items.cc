// Why decoding is incremental the way it is: Tokenizer::Decode concatenates
// the bytes of the ids and then replaces ill-formed UTF-8 (utf8::Lossy, Rust's
// from_utf8_lossy), so decoding token by token and concatenating the STRINGS
// is not Decode of the sequence: a character split across byte-level tokens
// becomes one U+FFFD per piece. Lossy works left to right and decides each
// character from its own bytes only, unless an incomplete sequence runs into
// the end of the input, which always comes out as a trailing U+FFFD. Hence
// Decode(a + b) == Decode(a) + Decode(b) whenever Decode(a) does not end in
// U+FFFD, and the tracker keeps a stable decoded prefix plus the tokens after
// it whose decoding still ends in U+FFFD, re-decoded together with each new
// token: at most three for a split character; longer only while the model
// keeps generating ill-formed bytes (or a literal U+FFFD), and never more
// work per token than the prefix parse.
#include "engine/postprocess/stream_items.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "engine/postprocess/parse.h"
#include "engine/postprocess/python_text.h"
#include "engine/task.h"
#include "engine/tokenizer/tokenizer.h"

namespace florence::engine {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
constexpr absl::string_view kEos = "</s>";

bool SameBox(const Box& a, const Box& b) {
  return a.x1 == b.x1 && a.y1 == b.y1 && a.x2 == b.x2 && a.y2 == b.y2;
}

// Field-wise equality of parsed items (coordinates compared exactly: they are
// computed from the same bins by the same arithmetic).
struct SameItem {
  bool operator()(const Detection& a, const Detection& b) const {
    return a.label == b.label && SameBox(a.box, b.box);
  }
  bool operator()(const OcrRegion& a, const OcrRegion& b) const {
    return a.text == b.text && a.quad.points == b.quad.points;
  }
  bool operator()(const PolygonInstance& a, const PolygonInstance& b) const {
    return a.label == b.label && a.polygons == b.polygons;
  }
  template <typename A, typename B>
  bool operator()(const A&, const B&) const {
    return false;
  }
};

// The items of a parse in result order (OpenVocabularyResult holds boxes or
// polygons, never both).
template <typename Item>
std::vector<Item> ItemsOf(TaskResult result) {
  std::vector<Item> items;
  auto append = [&items](auto& list) {
    for (auto& item : list) items.emplace_back(std::move(item));
  };
  if (auto* r = std::get_if<DetectionResult>(&result)) {
    append(r->detections);
  } else if (auto* r = std::get_if<OcrResult>(&result)) {
    append(r->regions);
  } else if (auto* r = std::get_if<SegmentationResult>(&result)) {
    append(r->instances);
  } else if (auto* r = std::get_if<OpenVocabularyResult>(&result)) {
    append(r->detections);
    append(r->polygons);
  }
  return items;
}

// `text` without a trailing "<", "<s", "</" or "</s": the beginnings of the
// tags the pure-text parser removes ("<s>", "</s>") or cuts at ("</s>").
absl::string_view WithoutPartialTag(absl::string_view text) {
  for (absl::string_view partial : {"</s", "</", "<s", "<"}) {
    if (absl::EndsWith(text, partial)) {
      text.remove_suffix(partial.size());
      break;
    }
  }
  return text;
}

// Decode takes int32 ids and skips those that name no token; so does this.
int32_t ToTokenId(int64_t id) {
  return id >= 0 && id <= std::numeric_limits<int32_t>::max()
             ? static_cast<int32_t>(id)
             : -1;
}

}  // namespace

ItemTracker::ItemTracker(const Tokenizer& tokenizer, Task task, int image_width,
                         int image_height)
    : tokenizer_(&tokenizer),
      task_(task),
      post_process_(static_cast<size_t>(task) < kTaskSpecs.size()
                        ? SpecOf(task).post_process
                        : PostProcess::kPureText),
      image_width_(image_width),
      image_height_(image_height) {}

std::vector<ItemEvent> ItemTracker::Update(absl::Span<const int64_t> tokens,
                                           absl::Span<const float> logprobs) {
  std::vector<ItemEvent> events;
  if (!finished_) Feed(tokens, logprobs, &events);
  return events;
}

std::vector<ItemEvent> ItemTracker::Finish(absl::Span<const int64_t> tokens,
                                           absl::Span<const float> logprobs) {
  std::vector<ItemEvent> events;
  if (finished_) return events;
  Feed(tokens, logprobs, &events);
  if (!ended_) {
    // Without an end-of-sequence token the parse of the whole text is final.
    if (post_process_ == PostProcess::kPureText) {
      EmitText(/*all=*/true, &events);
    } else {
      Track(fed_ == 0 ? 0 : static_cast<int64_t>(fed_) - 1);
      EmitItems(/*all=*/true, &events);
    }
  }
  finished_ = true;
  return events;
}

void ItemTracker::Feed(absl::Span<const int64_t> tokens,
                       absl::Span<const float> logprobs,
                       std::vector<ItemEvent>* events) {
  for (size_t j = fed_; j < tokens.size(); ++j) {
    fed_ = j + 1;
    if (j >= 1) {
      const bool known = j - 1 < logprobs.size();
      logprob_sum_.push_back(logprob_sum_.back() +
                             (known ? logprobs[j - 1] : 0.0));
      logprob_count_.push_back(logprob_count_.back() + (known ? 1 : 0));
    }
    if (ended_) continue;  // the parser ignores everything after "</s>"
    AppendText(tokens[j]);
    const int64_t step = static_cast<int64_t>(j);
    if (post_process_ == PostProcess::kPureText) {
      EmitText(/*all=*/ended_, events);
      continue;
    }
    // Without a '>' the token completes no tag of the parser's grammar and
    // removes none, so the parse is what it was (stream_items.h).
    const int32_t id = ToTokenId(tokens[j]);
    if (ended_ ||
        absl::StrContains(tokenizer_->Decode(absl::MakeConstSpan(&id, 1),
                                             /*skip_special_tokens=*/false),
                          '>')) {
      Track(step);
      EmitItems(/*all=*/ended_, events);
    }
  }
}

void ItemTracker::AppendText(int64_t id) {
  const size_t searched = stable_size_;
  pending_ids_.push_back(ToTokenId(id));
  text_.resize(stable_size_);
  text_ += tokenizer_->Decode(pending_ids_, /*skip_special_tokens=*/false);
  if (!absl::EndsWith(absl::string_view(text_).substr(stable_size_),
                      kReplacement)) {
    stable_size_ = text_.size();
    pending_ids_.clear();
  }
  // parse.h: a leading "</s>" (the start token) is skipped, the next one ends
  // the generation. Occurrences inside the old stable text were looked for
  // when it was appended.
  const size_t first = absl::StartsWith(text_, kEos) ? kEos.size() : 0;
  const size_t from = std::max(
      first, searched >= kEos.size() - 1 ? searched - (kEos.size() - 1) : 0);
  if (absl::string_view(text_).find(kEos, from) != absl::string_view::npos) {
    ended_ = true;
  }
}

void ItemTracker::Track(int64_t step) {
  absl::StatusOr<TaskResult> result =
      ParseGeneration(task_, text_, image_width_, image_height_);
  if (!result.ok()) return;
  std::vector<Item> items = ItemsOf<Item>(*std::move(result));
  // Emitted items are final by construction; only the others are updated.
  for (size_t i = emitted_items_; i < items.size(); ++i) {
    if (i >= items_.size()) {
      items_.push_back(TrackedItem{std::move(items[i]), step});
    } else if (!std::visit(SameItem(), items_[i].item, items[i])) {
      items_[i] = TrackedItem{std::move(items[i]), step};
    }
  }
  const size_t keep = std::max(items.size(), emitted_items_);
  if (items_.size() > keep) items_.erase(items_.begin() + keep, items_.end());
}

void ItemTracker::EmitItems(bool all, std::vector<ItemEvent>* events) {
  size_t final_count = items_.size();
  if (!all && !items_.empty()) {
    const Item& last = items_.back().item;
    if (std::holds_alternative<PolygonInstance>(last)) {
      final_count = items_.size() - 1;  // the last one may still grow
    } else if (std::holds_alternative<Detection>(last) &&
               post_process_ == PostProcess::kDescriptionWithBboxesOrPolygons) {
      final_count = 0;  // a later "<poly>" would turn them into polygons
    }
  }
  for (size_t k = emitted_items_; k < final_count; ++k) {
    const TrackedItem& tracked = items_[k];
    ItemEvent event;
    event.index = static_cast<int>(k);
    if (const auto* d = std::get_if<Detection>(&tracked.item)) {
      event.kind = ItemEvent::Kind::kDetection;
      event.detection = *d;
    } else if (const auto* r = std::get_if<OcrRegion>(&tracked.item)) {
      event.kind = ItemEvent::Kind::kOcrRegion;
      event.ocr_region = *r;
    } else {
      event.kind = ItemEvent::Kind::kInstance;
      event.instance = std::get<PolygonInstance>(tracked.item);
    }
    event.confidence = SpanConfidence(tracked.changed_at);
    last_completed_ = std::max(last_completed_, tracked.changed_at);
    confidences_.push_back(event.confidence);
    events->push_back(std::move(event));
  }
  emitted_items_ = std::max(emitted_items_, final_count);
}

void ItemTracker::EmitText(bool all, std::vector<ItemEvent>* events) {
  absl::string_view text = text_;
  if (!all) {
    while (absl::EndsWith(text, kReplacement)) {
      text.remove_suffix(kReplacement.size());
    }
    text = WithoutPartialTag(text);
  }
  absl::StatusOr<TaskResult> result =
      ParseGeneration(task_, text, image_width_, image_height_);
  if (!result.ok()) return;
  const auto* parsed = std::get_if<TextResult>(&*result);
  if (parsed == nullptr) return;
  absl::string_view sure = parsed->text;
  if (!all) {
    // The parsed text starts with non-space (it is stripped), so Strip only
    // drops trailing whitespace here.
    sure = python_text::Strip(WithoutPartialTag(sure));
  }
  if (sure.size() <= emitted_text_size_) return;
  ItemEvent event;
  event.kind = ItemEvent::Kind::kTextDelta;
  event.text_delta = std::string(sure.substr(emitted_text_size_));
  emitted_text_size_ = sure.size();
  events->push_back(std::move(event));
}

float ItemTracker::SpanConfidence(int64_t completed_at) const {
  int64_t from = last_completed_ + 1;
  const int64_t to = completed_at;
  if (to < from) from = to;  // completed by the token of an earlier item
  from = std::max<int64_t>(from, 1);
  if (to < from || static_cast<size_t>(to) >= logprob_sum_.size()) return 0;
  const int64_t count = logprob_count_[to] - logprob_count_[from - 1];
  if (count == 0) return 0;
  const double sum = logprob_sum_[to] - logprob_sum_[from - 1];
  return static_cast<float>(std::exp(sum / static_cast<double>(count)));
}

}  // namespace florence::engine
