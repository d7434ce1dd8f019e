// Decoding parameters and the result of one search. Torch-free, so code that
// only configures or reads generations (the batcher's public API, the server)
// does not include Torch headers. The search itself: search.h.
#ifndef FLORENCE_ENGINE_GENERATION_SEARCH_PARAMS_H_
#define FLORENCE_ENGINE_GENERATION_SEARCH_PARAMS_H_

#include <cstdint>
#include <optional>
#include <vector>

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

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_GENERATION_SEARCH_PARAMS_H_
