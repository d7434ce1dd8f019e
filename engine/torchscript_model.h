// ModelBackend over the TorchScript artefact of a model directory
// (tools/florence2/model.py, Florence2ForServing): each method is a thin call
// of the exported method of the same name.
#ifndef FLORENCE_ENGINE_TORCHSCRIPT_MODEL_H_
#define FLORENCE_ENGINE_TORCHSCRIPT_MODEL_H_

#include <torch/csrc/jit/api/module.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "engine/model_backend.h"
#include "engine/model_dir.h"

namespace florence::engine {

class TorchScriptModel final : public ModelBackend {
 public:
  struct Options {
    // A torch device string: "cpu", "cuda", "cuda:0", ...
    std::string device = "cpu";
    // > 0: sets Torch's intra-op thread pool size. That pool is process-wide,
    // so set it only from the one start-up path that creates models. 0 keeps
    // Torch's default (one thread per core).
    int num_threads = 0;
    // On the CPU, calls the artefact's optional pack_for_cpu(kPackRows) after
    // loading: oneDNN-prepacked decoder and lm_head weights for decode_step (a
    // second copy of those weights in memory; same results to float rounding,
    // docs/PERFORMANCE.md). Ignored on CUDA, for non-float32 artefacts and for
    // artefacts exported before the method existed.
    bool cpu_prepack = true;
  };
  // The decode batch (rows) the prepacked layout is tuned for; measured on the
  // base model to serve 3..48 rows as well as an exact hint.
  static constexpr int kPackRows = 32;

  // Loads dir.model_path (LoadModelDir has verified its checksum) onto
  // options.device and checks that it exports the five methods and that its
  // self-cache shape agrees with dir.decoder. Errors: InvalidArgument (bad
  // device string, artefact not loadable or lacking a method, shape mismatch),
  // FailedPrecondition (CUDA device requested but not available).
  static absl::StatusOr<std::unique_ptr<TorchScriptModel>> Create(
      const ModelDir& dir, const Options& options);

  c10::Device device() const override { return device_; }
  // Whether pack_for_cpu packed anything (Options::cpu_prepack): the float32
  // decoder and lm_head, and/or the vision tower.
  bool prepacked() const { return prepacked_; }
  // Whether the vision tower runs on prepacked weights: float32, or bfloat16 /
  // float16 where oneDNN has a GEMM in that dtype (not on AVX2-only CPUs).
  bool vision_prepacked() const { return vision_prepacked_; }
  // What decode_step's attention runs: "florence::decode_attention (avx2)" (or
  // "(generic)": engine/ops/, chosen by the CPU) for an artefact that calls it
  // on a CPU float32 cache, else "SDPA".
  const std::string& decode_attention() const { return decode_attention_; }
  // Which GEMM decode_step's prepacked decoder and lm_head run, as pack_for_cpu
  // chose for this CPU (florence::packed_linear_kernel()): "florence::packed_linear
  // (avx2)" (or "(generic)") or "oneDNN"; empty when they were not packed
  // (no --cpu_prepack, an int8 artefact, CUDA).
  const std::string& decode_linear() const { return decode_linear_; }
  absl::StatusOr<at::Tensor> ImageFeatures(
      const at::Tensor& pixel_values) override;
  absl::StatusOr<at::Tensor> Encode(const at::Tensor& image_features,
                                    const at::Tensor& input_ids,
                                    const at::Tensor& attention_mask) override;
  absl::StatusOr<KvPair> CrossKv(const at::Tensor& encoder_hidden) override;
  absl::StatusOr<KvPair> EmptySelfCache(int64_t batch,
                                        int64_t max_len) override;
  absl::StatusOr<at::Tensor> DecodeStep(const at::Tensor& input_ids,
                                        const at::Tensor& positions,
                                        KvPair* self_cache, const KvPair& cross,
                                        const at::Tensor& cross_mask,
                                        const at::Tensor& cross_rows) override;

 private:
  TorchScriptModel(torch::jit::Module module, c10::Device device)
      : module_(std::move(module)), device_(device) {}

  torch::jit::Module module_;
  const c10::Device device_;
  bool prepacked_ = false;
  bool vision_prepacked_ = false;
  std::string decode_attention_ = "SDPA";
  std::string decode_linear_;
};

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_TORCHSCRIPT_MODEL_H_
