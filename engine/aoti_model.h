// ModelBackend over torch.export + AOTInductor packages: <model dir>/aoti/
// {image_features,encode,cross_kv,decode_step}.pt2, written by
// tools/florence2_export_aoti.py from the directory's float32 weights, each run
// by torch::inductor::AOTIModelPackageLoader (LibTorch only, no Python).
//
// Layouts: the compiled code assumes contiguous inputs and checks no strides,
// so this class makes every read-only input contiguous (the copy is a no-op
// for contiguous ones) and never hands a view to a package. decode_step's
// package (tools/florence2/aoti.py DECODE_LAYOUT "pool-1") takes whole KV-pool
// tensors [L, R, H, S, hd] and narrows to the rows and positions in use inside
// the graph, so DecodeStep accepts the caches and cross K/V either contiguous
// or as the first rows / positions of a contiguous tensor (what
// batching::KvPool's views are: storage offset 0, the pool's strides) and
// passes the tensor they were taken from. Any other layout is refused
// (InvalidArgument naming the tensor, sizes and strides), never computed.
//
// Same contracts as TorchScriptModel (model_backend.h): InferenceMode, Torch
// exceptions become Internal / ResourceExhausted naming the method.
#ifndef FLORENCE_ENGINE_AOTI_MODEL_H_
#define FLORENCE_ENGINE_AOTI_MODEL_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model_backend.h"
#include "engine/model_dir.h"

namespace torch::inductor {
class AOTIModelPackageLoader;
}

namespace florence::engine {

// The packages' folder inside a model directory and the decode_step input
// layout this class drives (tools/florence2/aoti.py AOTI_SUBDIR,
// DECODE_LAYOUT).
inline constexpr char kAotiSubdir[] = "aoti";
inline constexpr char kAotiDecodeLayout[] = "pool-1";

class AotiModel final : public ModelBackend {
 public:
  struct Options {
    // A torch device string. The packages run on the device kind they were
    // compiled for (the export tool compiles for the CPU); others are refused.
    std::string device = "cpu";
    // > 0: Torch's intra-op thread count (process-wide; the aten kernels the
    // packages call follow it; the generated loops use the count compiled in,
    // metadata florence.omp_threads). 0 keeps Torch's default.
    int num_threads = 0;
    // The packages' folder; empty = <dir>/aoti.
    std::string package_dir;
  };

  // Loads the four packages (each extracts its shared library under TMPDIR,
  // which must be writable) and checks their metadata against config.json:
  // florence format, method name, interface version, decode layout, float32,
  // decoder layers / heads / head_dim, and the device they were compiled for.
  // Errors: NotFound (no package folder or a package missing: the message
  // names the export command), InvalidArgument (bad device string, metadata
  // mismatch, package not loadable), FailedPrecondition (CUDA requested but
  // unavailable).
  static absl::StatusOr<std::unique_ptr<AotiModel>> Create(
      const ModelDir& dir, const Options& options);

  ~AotiModel() override;

  c10::Device device() const override { return device_; }
  absl::StatusOr<at::Tensor> ImageFeatures(
      const at::Tensor& pixel_values) override;
  absl::StatusOr<at::Tensor> Encode(const at::Tensor& image_features,
                                    const at::Tensor& input_ids,
                                    const at::Tensor& attention_mask) override;
  absl::StatusOr<KvPair> CrossKv(const at::Tensor& encoder_hidden) override;
  absl::StatusOr<KvPair> EmptySelfCache(int64_t batch,
                                        int64_t max_len) override;
  // self_cache K/V [L, B, H, s, hd] and cross K/V [L, G, H, c, hd]: contiguous,
  // or views t[:, :n, :, :len] of contiguous [L, R, H, S, hd] tensors
  // (PoolBase). cross_mask [G, c]. InvalidArgument for any other layout or
  // mismatched sizes.
  absl::StatusOr<at::Tensor> DecodeStep(const at::Tensor& input_ids,
                                        const at::Tensor& positions,
                                        KvPair* self_cache, const KvPair& cross,
                                        const at::Tensor& cross_mask,
                                        const at::Tensor& cross_rows) override;

 private:
  AotiModel(c10::Device device, const DecoderConfig& decoder);

  const c10::Device device_;
  const DecoderConfig decoder_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> image_features_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> encode_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> cross_kv_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> decode_step_;
};

// The contiguous [L, R, H, S, hd] tensor whose view t[:, :n, :, :s] (storage
// offset 0, same storage) `t` is, or `t` itself when contiguous.
// InvalidArgument, naming `name`, sizes and strides, for any other layout.
// Exposed for tests; tools/florence2/aoti.py pool_base is the same rule.
absl::StatusOr<at::Tensor> PoolBase(const at::Tensor& t, const char* name);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_AOTI_MODEL_H_
