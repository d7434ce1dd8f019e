#include "engine/generation/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>

#include <chrono>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "engine/status_macros.h"

namespace florence::engine {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t0)
      .count();
}

bool IsIdentity(const std::vector<int64_t>& sources) {
  for (size_t i = 0; i < sources.size(); ++i) {
    if (sources[i] != static_cast<int64_t>(i)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<SearchResult> GenerateOne(ModelBackend& model,
                                         const at::Tensor& pixel_values,
                                         const at::Tensor& input_ids,
                                         const SearchParams& params,
                                         GenerateTimings* timings) {
  FLORENCE_ASSIGN_OR_RETURN(std::unique_ptr<Search> search,
                            Search::Create(params));
  c10::InferenceMode guard;
  const auto device = model.device();
  const auto t0 = std::chrono::steady_clock::now();
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor features,
                            model.ImageFeatures(pixel_values));
  at::Tensor ids = input_ids.to(device);
  at::Tensor mask = at::ones({1, features.size(1) + ids.size(1)},
                             at::TensorOptions().dtype(at::kLong).device(device));
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor encoded,
                            model.Encode(features, ids, mask));
  FLORENCE_ASSIGN_OR_RETURN(KvPair cross, model.CrossKv(encoded));
  const int64_t rows = search->rows();
  // Every beam row reads the request's one cross K/V row.
  const at::Tensor cross_rows =
      at::zeros({rows}, at::TensorOptions().dtype(at::kLong).device(device));
  // CUDA kernels run asynchronously: wait for the prefill, or its time would
  // be counted in the first decode step.
  if (timings && device.is_cuda()) torch::cuda::synchronize(device.index());
  if (timings) timings->encode_ms = MsSince(t0);

  const auto t1 = std::chrono::steady_clock::now();
  FLORENCE_ASSIGN_OR_RETURN(
      KvPair cache, model.EmptySelfCache(rows, 1 + params.max_new_tokens));
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  int steps = 0;
  while (!search->done()) {
    at::Tensor last = at::tensor(search->last_tokens(), at::kLong).to(device);
    at::Tensor positions = at::full({rows}, search->position(), long_opts);
    FLORENCE_ASSIGN_OR_RETURN(
        at::Tensor logits,
        model.DecodeStep(last, positions, &cache, cross, mask, cross_rows));
    const std::vector<int64_t> sources = search->Advance(logits);
    ++steps;
    if (!IsIdentity(sources)) {  // reorder this request's own cache rows
      at::Tensor index = at::tensor(sources, at::kLong).to(device);
      cache.k.copy_(cache.k.index_select(1, index));
      cache.v.copy_(cache.v.index_select(1, index));
    }
  }
  if (timings) {
    timings->decode_ms = MsSince(t1);
    timings->steps = steps;
  }
  return search->result();
}

}  // namespace florence::engine
