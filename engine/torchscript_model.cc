#include "engine/torchscript_model.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/codegen/fuser/interface.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>

#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "engine/ops/decode_attention.h"
#include "engine/ops/packed_linear.h"
#include "engine/status_macros.h"
#include "engine/torch_guard.h"

namespace florence::engine {
namespace {

constexpr const char* kMethods[] = {"image_features", "encode", "cross_kv",
                                    "decode_step", "empty_self_cache"};

}  // namespace

absl::StatusOr<std::unique_ptr<TorchScriptModel>> TorchScriptModel::Create(
    const ModelDir& dir, const Options& options) {
  FLORENCE_ASSIGN_OR_RETURN(c10::Device device, ParseDevice(options.device));
  if (dir.dtype == "int8" && !device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir.dir, " holds int8 weights, which run on the CPU only; serve it "
        "with --device cpu, or export float16/bfloat16 for ", options.device));
  }
  if (device.is_cuda()) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", options.device, " requested but CUDA is not available"));
    }
    if (device.has_index() &&
        device.index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::FailedPreconditionError(
          absl::StrCat("device ", options.device, " requested but only ",
                       torch::cuda::device_count(), " CUDA device(s) exist"));
    }
  } else if (!device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device ", options.device, ": only cpu and cuda are supported"));
  }
  if (device.is_cuda()) {
    // TorchScript fuses elementwise ops on the GPU (not on the CPU) with
    // kernels NVRTC compiles at run time, once per new input shape. Every
    // decode step has new shapes (rows, positions), so that means compiles
    // while serving and a code path the CPU never runs: use eager kernels.
    torch::jit::overrideCanFuseOnGPU(false);
    // Likewise attention: on Hopper, bf16/fp16 SDPA prefers cuDNN's kernel,
    // whose execution plans are built per new shape, and the key length grows
    // every decode step. On an H200 the bf16 server ran 5x slower end to end
    // than fp32 (transformers in bf16 2.3x slower than in fp32) although one
    // fixed-shape bf16 step was as fast (docs/PERFORMANCE.md, GPU rows): that
    // is our explanation, and this switch's effect has not been measured yet.
    // Flash / memory-efficient attention build nothing at run time.
    at::globalContext().setSDPUseCuDNN(false);
  }
  if (options.num_threads > 0) at::set_num_threads(options.num_threads);

  torch::jit::Module module;
  try {
    c10::InferenceMode guard;
    module = torch::jit::load(dir.model_path, device);
    module.eval();
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot load ", dir.model_path, ": ",
        c10_error ? c10_error->what_without_backtrace() : e.what()));
  }
  for (const char* name : kMethods) {
    if (!module.find_method(name).has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir.model_path, " has no method ", name,
                       "; was it written by tools/florence2_export.py?"));
    }
  }
  std::unique_ptr<TorchScriptModel> model(
      new TorchScriptModel(std::move(module), device));

  // The artefact and config.json must agree on the decoder, or caches sized
  // from the config break.
  FLORENCE_ASSIGN_OR_RETURN(const KvPair probe, model->EmptySelfCache(1, 1));
  const std::vector<int64_t> want = {dir.decoder.layers, 1, dir.decoder.heads,
                                     1, dir.decoder.head_dim};
  if (probe.k.sizes().vec() != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir.model_path, ": self cache shape [",
        absl::StrJoin(probe.k.sizes(), ","),
        "] disagrees with config.json decoder [", absl::StrJoin(want, ","),
        "] (layers,1,heads,1,head_dim)"));
  }
  // Artefacts from tools/florence2 call florence::decode_attention for a CPU
  // float32 cache (the attribute lets a host turn it off); its library is
  // linked into this one, so loading them needs nothing more.
  if (device.is_cpu() && probe.k.scalar_type() == at::kFloat &&
      model->module_.hasattr("fused_decode_attention") &&
      model->module_.attr("fused_decode_attention").toBool()) {
    model->decode_attention_ = absl::StrCat(
        "florence::decode_attention (", ops::DecodeAttentionKernel(), ")");
  }
  if (options.cpu_prepack && device.is_cpu() && at::hasMKLDNN() &&
      model->module_.find_method("pack_for_cpu").has_value()) {
    FLORENCE_ASSIGN_OR_RETURN(model->prepacked_, Guarded("pack_for_cpu", [&] {
                                return model->module_.run_method("pack_for_cpu", kPackRows).toBool();
                              }));
    model->vision_prepacked_ = model->module_.hasattr("vision_packed") &&
                               model->module_.attr("vision_packed").toBool();
    const std::string packing =
        model->module_.hasattr("decode_linear_packing")
            ? model->module_.attr("decode_linear_packing").toStringRef()
            : std::string(model->prepacked_ && dir.dtype != "int8" ? "onednn" : "");
    if (packing == "florence") {
      model->decode_linear_ = absl::StrCat("florence::packed_linear (",
                                           ops::PackedLinearRunningKernel(), ")");
    } else if (packing == "onednn") {
      model->decode_linear_ = "oneDNN";
    }
  }
  return model;
}

absl::StatusOr<at::Tensor> TorchScriptModel::ImageFeatures(
    const at::Tensor& pixel_values) {
  return Guarded("image_features", [&] {
    return module_.run_method("image_features", pixel_values).toTensor();
  });
}

absl::StatusOr<at::Tensor> TorchScriptModel::Encode(
    const at::Tensor& image_features, const at::Tensor& input_ids,
    const at::Tensor& attention_mask) {
  return Guarded("encode", [&] {
    return module_
        .run_method("encode", image_features, input_ids, attention_mask)
        .toTensor();
  });
}

absl::StatusOr<KvPair> TorchScriptModel::CrossKv(
    const at::Tensor& encoder_hidden) {
  return Guarded("cross_kv", [&] {
    const auto kv = module_.run_method("cross_kv", encoder_hidden).toTuple();
    return KvPair{kv->elements().at(0).toTensor(),
                  kv->elements().at(1).toTensor()};
  });
}

absl::StatusOr<KvPair> TorchScriptModel::EmptySelfCache(int64_t batch,
                                                        int64_t max_len) {
  return Guarded("empty_self_cache", [&] {
    return KvPair{
        module_.run_method("empty_self_cache", batch, max_len).toTensor(),
        module_.run_method("empty_self_cache", batch, max_len).toTensor()};
  });
}

absl::StatusOr<at::Tensor> TorchScriptModel::DecodeStep(
    const at::Tensor& input_ids, const at::Tensor& positions,
    KvPair* self_cache, const KvPair& cross, const at::Tensor& cross_mask,
    const at::Tensor& cross_rows) {
  if (self_cache == nullptr) {
    return absl::InvalidArgumentError("decode_step: self_cache is null");
  }
  return Guarded("decode_step", [&] {
    return module_
        .run_method("decode_step", input_ids, positions, self_cache->k,
                    self_cache->v, cross.k, cross.v, cross_mask, cross_rows)
        .toTensor();
  });
}

}  // namespace florence::engine
