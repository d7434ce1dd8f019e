#include "engine/pipeline/search_params_for.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace florence::engine {

absl::StatusOr<SearchParams> SearchParamsFor(
    const ModelDir& dir, std::optional<int> num_beams,
    std::optional<int> max_new_tokens, std::optional<int> min_new_tokens) {
  const GenerationDefaults& g = dir.generation;
  SearchParams p;
  p.num_beams = static_cast<int>(num_beams.value_or(g.num_beams));
  p.max_new_tokens =
      static_cast<int>(max_new_tokens.value_or(g.max_new_tokens));
  p.min_new_tokens = min_new_tokens.value_or(0);
  p.no_repeat_ngram_size = static_cast<int>(g.no_repeat_ngram_size);
  p.length_penalty = g.length_penalty;
  p.early_stopping = g.early_stopping;
  p.decoder_start_token_id = g.decoder_start_token_id;
  p.eos_token_id = dir.tokens.eos;
  p.forced_bos_token_id = g.forced_bos_token_id;
  p.forced_eos_token_id = g.forced_eos_token_id;

  // Bounds that keep one request's memory sane; Search::Create checks the
  // rest (min <= max, ...).
  if (p.num_beams < 1 || p.num_beams > kMaxBeams) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_beams = ", p.num_beams,
                     " is out of range; use 1 (greedy) to ", kMaxBeams));
  }
  // The decoder feeds positions 0 .. max_new_tokens - 1 (position 0 is the
  // start token), so its position table bounds max_new_tokens.
  const int64_t max_positions = dir.decoder.max_positions;
  if (p.max_new_tokens < 1 || p.max_new_tokens > max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_new_tokens = ", p.max_new_tokens, " is out of range; this model ",
        "generates 1 to ", max_positions, " tokens"));
  }
  if (p.min_new_tokens < 0 || p.min_new_tokens > p.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_new_tokens = ", p.min_new_tokens,
        " must be between 0 and max_new_tokens = ", p.max_new_tokens));
  }
  return p;
}

}  // namespace florence::engine
