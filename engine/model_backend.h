// The model as the engine drives it: Florence-2 split into the five calls of
// incremental decoding.
//
// Engine-internal (uses at::Tensor). TorchScriptModel implements it over a
// TorchScript artefact; a torch.export / AOTInductor backend (a .pt2 package
// run by torch::inductor::AOTIModelPackageLoader) could implement the same
// interface without changing the code that schedules requests.
//
// Shapes (d: d_model, L: decoder layers, H: decoder heads, hd: head dim,
// N: image tokens, T: prompt tokens):
//   pixel_values    [B, 3, size, size] float, normalized
//   image_features  [B, N, d]
//   encoder_hidden  [B, S = N + T, d]
//   cross K/V       [L, G, H, S, hd]      one row per encoded sequence (G)
//   self cache K/V  [L, B, H, S_max, hd]  one row per decoder row (B: beams)
//
// Threading: a backend is not thread-safe; exactly one engine thread calls it
// (house style: one owner thread per model instance). Every call runs under
// c10::InferenceMode, so returned tensors are inference tensors: read them
// anywhere, but modify them in place only inside InferenceMode.
//
// Errors: Torch exceptions never escape; a failed call returns Internal
// (ResourceExhausted when the device is out of memory) naming the method.
#ifndef FLORENCE_ENGINE_MODEL_BACKEND_H_
#define FLORENCE_ENGINE_MODEL_BACKEND_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace florence::engine {

// Keys and values of one attention cache.
struct KvPair {
  at::Tensor k;
  at::Tensor v;
};

class ModelBackend {
 public:
  virtual ~ModelBackend() = default;

  // The device the weights live on. Callers put every input tensor there
  // (ImageFeatures also accepts pixel_values elsewhere, and of any float
  // dtype, and converts them itself).
  virtual c10::Device device() const = 0;

  // pixel_values [B, 3, size, size] -> image features [B, N, d] in the model
  // dtype.
  virtual absl::StatusOr<at::Tensor> ImageFeatures(
      const at::Tensor& pixel_values) = 0;

  // image_features [B, N, d], input_ids [B, T] int64 (right-padded with <pad>),
  // attention_mask [B, N + T] int64 (nonzero = real position) -> encoder output
  // [B, N + T, d].
  virtual absl::StatusOr<at::Tensor> Encode(
      const at::Tensor& image_features, const at::Tensor& input_ids,
      const at::Tensor& attention_mask) = 0;

  // encoder_hidden [B, S, d] -> cross-attention K and V, each [L, B, H, S, hd];
  // computed once per request.
  virtual absl::StatusOr<KvPair> CrossKv(const at::Tensor& encoder_hidden) = 0;

  // A zeroed self-attention cache (K and V, each [L, batch, H, max_len, hd]) in
  // the model dtype and device.
  virtual absl::StatusOr<KvPair> EmptySelfCache(int64_t batch,
                                                int64_t max_len) = 0;

  // One decoder step for B rows. input_ids [B] int64 is each row's last token,
  // positions [B] int64 its 0-based decoder position. Writes that position of
  // `self_cache` (not null; tensors from EmptySelfCache) in place and attends
  // to positions 0..positions[b]. cross [L, G, H, S, hd] from CrossKv,
  // cross_mask [G, S] nonzero where the encoder position is real, cross_rows
  // [B] int64 the cross row each decoder row reads: a request's beams share
  // one row (stored once, read once per step). Returns logits [B, V] float32.
  virtual absl::StatusOr<at::Tensor> DecodeStep(
      const at::Tensor& input_ids, const at::Tensor& positions,
      KvPair* self_cache, const KvPair& cross, const at::Tensor& cross_mask,
      const at::Tensor& cross_rows) = 0;
};

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_MODEL_BACKEND_H_
