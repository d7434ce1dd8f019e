// Florence-2's byte-level BPE tokenizer (BART / RoBERTa / GPT-2 family), read
// from a model directory's tokenizer.json and reproducing HF `tokenizers`
// (Tokenizer.from_file(...).encode / .decode) id for id and byte for byte.
//
// Encode pipeline, as HF's for this tokenizer.json (FLORENCE2.md 3):
//   1. added tokens (<s>, </s>, <loc_N>, <od>, ...) are split out first,
//      leftmost-longest, non-"normalized" ones over the whole text, then the
//      "normalized" ones in the pieces left (there is no normalizer, so both
//      match the literal content); `<mask>` has lstrip: Unicode whitespace
//      before it belongs to it and produces no ids;
//   2. every other piece is split by the GPT-2 regex (ByteLevel pre-tokenizer,
//      add_prefix_space false; run by hand with the reference's Unicode 16.0
//      letter/number classes, unicode_classes.h), each part's bytes are
//      mapped to the GPT-2 byte-to-unicode alphabet and
//   3. merged by BPE in merge-rank order;
//   4. RobertaProcessing wraps the ids as <s> ... </s> when asked.
// Decode maps ids to tokens (added tokens verbatim), drops special tokens if
// asked, maps the byte-level alphabet back to bytes and replaces ill-formed
// UTF-8 with U+FFFD as Rust's String::from_utf8_lossy does. Decode does NOT
// apply transformers' clean_up_tokenization_spaces.
//
// Only what Florence-2's tokenizer.json uses is implemented; FromFile refuses
// anything else (another normalizer or model type, BPE dropout, byte fallback,
// single_word added tokens, ...) with an error naming the field, rather than
// tokenizing differently from the reference.
//
// Thread-safety: a Tokenizer is immutable after FromFile except for an
// internal word cache behind a mutex; Encode, Decode and the lookups are const
// and may be called concurrently from any threads.
#ifndef FLORENCE_ENGINE_TOKENIZER_TOKENIZER_H_
#define FLORENCE_ENGINE_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace florence::engine {

class Tokenizer {
 public:
  // Reads an HF tokenizer.json. NotFound if `path` does not exist;
  // InvalidArgument (message starts with the path) if it is not JSON, lacks a
  // field or is inconsistent (a merge of tokens not in the vocabulary, an
  // added token whose id disagrees with the vocabulary); Unimplemented for
  // settings this class does not reproduce.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(
      const std::string& path);

  // As FromFile, from the file's contents; `origin` names it in errors.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      absl::string_view json, absl::string_view origin = "tokenizer.json");

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (HF encode(text, add_special_tokens).ids).
  // add_special_tokens wraps them in the post-processor's <s> ... </s> (no-op
  // if the file has no post-processor). `text` should be UTF-8; ill-formed
  // sequences are first replaced by U+FFFD (HF cannot receive them at all).
  std::vector<int32_t> Encode(absl::string_view text,
                              bool add_special_tokens) const;

  // Text of `ids` (HF decode(ids, skip_special_tokens)). Ids that name no
  // token (negative, >= vocab_size(), holes) are skipped, as HF skips them.
  std::string Decode(absl::Span<const int32_t> ids,
                     bool skip_special_tokens) const;

  // Id of a token string as it appears in the vocabulary ("Ġthe", "<loc_5>").
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The token string of `id`, if any.
  std::optional<std::string> IdToToken(int32_t id) const;
  // Whether `id` is a special added token (dropped by skip_special_tokens).
  bool IsSpecial(int32_t id) const;
  // One past the largest id (51290 for a native Florence-2 export).
  int32_t vocab_size() const;

 private:
  struct Data;
  explicit Tokenizer(std::unique_ptr<Data> data);
  // Parses and checks a tokenizer.json document (FromJson without the
  // exception guard).
  static absl::StatusOr<std::unique_ptr<Data>> Build(absl::string_view json,
                                                     absl::string_view origin);

  // Appends the BPE ids of one pre-tokenized word (raw UTF-8 bytes).
  void EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const;

  std::unique_ptr<Data> d_;
};

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_TOKENIZER_TOKENIZER_H_
