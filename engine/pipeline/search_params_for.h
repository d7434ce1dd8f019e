// The decoding parameters of one request: the checkpoint's defaults
// (config.json "generation"), then the request's overrides, checked against
// what the model can hold. Shared by the single-request Runtime and the
// batcher so both accept and refuse exactly the same requests. Torch-free.
#ifndef FLORENCE_ENGINE_PIPELINE_SEARCH_PARAMS_FOR_H_
#define FLORENCE_ENGINE_PIPELINE_SEARCH_PARAMS_FOR_H_

#include <optional>

#include "absl/status/statusor.h"
#include "engine/generation/search_params.h"
#include "engine/model_dir.h"

namespace florence::engine {

// Beam widths above this are refused (memory per request grows with it).
inline constexpr int kMaxBeams = 16;

// InvalidArgument, naming the value and the allowed range, for num_beams
// outside 1..kMaxBeams, max_new_tokens outside 1..the decoder's position
// table, or min_new_tokens outside 0..max_new_tokens.
absl::StatusOr<SearchParams> SearchParamsFor(
    const ModelDir& dir, std::optional<int> num_beams,
    std::optional<int> max_new_tokens, std::optional<int> min_new_tokens);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_PIPELINE_SEARCH_PARAMS_FOR_H_
