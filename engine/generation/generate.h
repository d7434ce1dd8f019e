// One request, start to finish, on a ModelBackend: prefill (image features ->
// encoder -> cross K/V) then a Search stepped over a cache this function owns.
// The single-request path of the CLI and the tests; the batcher drives
// Search itself over a shared cache pool instead.
#ifndef FLORENCE_ENGINE_GENERATION_GENERATE_H_
#define FLORENCE_ENGINE_GENERATION_GENERATE_H_

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "engine/generation/search.h"
#include "engine/model_backend.h"

namespace florence::engine {

struct GenerateTimings {
  double encode_ms = 0;  // image features + encoder + cross K/V
  double decode_ms = 0;  // all decode steps
  int steps = 0;
};

// pixel_values [1, 3, size, size] float; input_ids [1, T] int64 (<s> ... </s>).
absl::StatusOr<SearchResult> GenerateOne(ModelBackend& model,
                                         const at::Tensor& pixel_values,
                                         const at::Tensor& input_ids,
                                         const SearchParams& params,
                                         GenerateTimings* timings = nullptr);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_GENERATION_GENERATE_H_
