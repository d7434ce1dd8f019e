// Greedy and beam search for one request, as a state machine the caller steps.
//
// Semantics are transformers v5 generate() for one input (num_return_sequences
// 1), ported from the validated Python reference tools/florence2/generate.py:
// logits rules in transformers' order (no_repeat_ngram over the whole decoder
// sequence, min_new_tokens, forced BOS at the first step, forced EOS at the
// last allowed step); greedy = argmax of the processed raw logits; beam search
// = log_softmax, rules, + running beam scores, top 2*num_beams candidates over
// num_beams*V, next running beams = best num_beams that did not stop, finished
// hypotheses scored sum_logprob / new_len^length_penalty, early stopping.
//
// The search owns no model and no cache. Per step the caller feeds the rows'
// last tokens at position() through the model (one decode_step, possibly in a
// batch with other requests' rows) and hands this request's logits rows to
// Advance(), which returns how to reorder the request's own cache rows. That
// is what lets a batcher interleave many requests.
//
// Not thread-safe; one owner (the engine thread) at a time.
#ifndef FLORENCE_ENGINE_GENERATION_SEARCH_H_
#define FLORENCE_ENGINE_GENERATION_SEARCH_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace florence::engine {

struct SearchParams {
  int max_new_tokens = 1024;
  int min_new_tokens = 0;
  int num_beams = 3;  // 1 = greedy
  int no_repeat_ngram_size = 3;
  double length_penalty = 1.0;
  bool early_stopping = true;
  int64_t decoder_start_token_id = 2;
  int64_t eos_token_id = 2;
  std::optional<int64_t> forced_bos_token_id = 0;
  std::optional<int64_t> forced_eos_token_id = 2;
};

struct SearchResult {
  // Decoder sequence including the start token, ending with EOS unless cut by
  // max_new_tokens without a forced EOS.
  std::vector<int64_t> tokens;
  // Per generated token: its log-probability under the processed
  // distribution (transformers' transition scores).
  std::vector<float> token_logprobs;
  // Beam search: the length-normalised score of the returned hypothesis;
  // greedy: the sum of token_logprobs.
  float sequence_score = 0;
};

class Search {
 public:
  // InvalidArgument for out-of-range parameters (num_beams < 1,
  // max_new_tokens < 1, min_new_tokens > max_new_tokens, ...).
  static absl::StatusOr<std::unique_ptr<Search>> Create(
      const SearchParams& params);

  virtual ~Search() = default;

  // Cache rows this request occupies (num_beams).
  virtual int rows() const = 0;
  // Each row's last token, to feed at position().
  virtual std::vector<int64_t> last_tokens() const = 0;
  // The decoder position of the next step (shared by all rows).
  virtual int64_t position() const = 0;
  // Consumes logits [rows(), V] (float32, any device) of the step just run.
  // Returns, for each new row r, the old row whose cache it continues: the
  // caller sets cache row r := old cache row result[r] (identity for greedy).
  virtual std::vector<int64_t> Advance(const at::Tensor& logits) = 0;
  virtual bool done() const = 0;
  // Valid once done().
  virtual SearchResult result() const = 0;
};

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_GENERATION_SEARCH_H_
