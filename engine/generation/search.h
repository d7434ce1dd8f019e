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
#include "engine/generation/search_params.h"

namespace florence::engine {

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
  // After Advance(): for each new row r, how many leading cache positions old
  // row r already shares with old row result[r]. A position's K/V are a
  // function of the tokens up to it, and beams share a token prefix with the
  // beam they descend from, so a reorder copies only positions
  // [shared[r], written) (every written position for rows kept in place).
  virtual std::vector<int64_t> shared_positions() const = 0;
  virtual bool done() const = 0;
  // The longest prefix that every hypothesis this search can still return
  // shares (start token included), with its tokens' log-probabilities:
  // greedy: the whole sequence; beam search: the common prefix of the running
  // beams and the finished hypotheses kept. It only grows between steps, so a
  // streaming caller can publish it as final. Once done(), result().
  virtual SearchResult stable_prefix() const = 0;
  // Valid once done().
  virtual SearchResult result() const = 0;
};

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_GENERATION_SEARCH_H_
