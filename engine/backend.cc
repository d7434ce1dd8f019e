#include "engine/backend.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/aoti_model.h"
#include "engine/status_macros.h"
#include "engine/torchscript_model.h"

namespace florence::engine {

absl::StatusOr<LoadedBackend> CreateBackend(const ModelDir& dir,
                                            const BackendOptions& options) {
  LoadedBackend out;
  if (options.backend == "auto" || options.backend == "torchscript") {
    FLORENCE_ASSIGN_OR_RETURN(
        std::unique_ptr<TorchScriptModel> model,
        TorchScriptModel::Create(
            dir, {options.device, options.num_threads, options.cpu_prepack}));
    const bool plain_reduced_tower = options.cpu_prepack && model->device().is_cpu() &&
                                     dir.vision_dtype != "float32" &&
                                     !model->vision_prepacked();
    if (model->prepacked()) {
      const std::string tower =
          model->vision_prepacked()
              ? absl::StrCat(dir.vision_dtype, " vision tower")
              : absl::StrCat("not the ", dir.vision_dtype, " vision tower");
      out.note = dir.dtype == "int8"
                     ? absl::StrCat(tower,
                                    " prepacked for oneDNN "
                                    "(decoder and lm_head are int8; "
                                    "--cpu_prepack)")
                 : model->decode_linear() == "oneDNN"
                     ? absl::StrCat("linear weights prepacked for oneDNN "
                                    "(decoder, lm_head, ",
                                    tower, "; --cpu_prepack)")
                     : absl::StrCat("decoder and lm_head prepacked for ",
                                    model->decode_linear(), ", ", tower,
                                    " for oneDNN (--cpu_prepack)");
    } else if (plain_reduced_tower) {
      out.note = "nothing prepacked";
    }
    if (plain_reduced_tower && dir.dtype != dir.vision_dtype) {
      out.warning = absl::StrCat(
          "the ", dir.vision_dtype,
          " vision tower runs unpacked: this CPU's oneDNN has no ",
          dir.vision_dtype,
          " GEMM (bfloat16 needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT); on an "
          "AVX2 CPU it is ~14x slower than a float32 tower "
          "(docs/PERFORMANCE.md): export with --vision-dtype float32 here");
    }
    out.note = absl::StrCat(out.note, out.note.empty() ? "" : "; ",
                            "decode attention: ", model->decode_attention());
    out.model = std::move(model);
    out.name = "torchscript";
  } else if (options.backend == "aoti") {
    AotiModel::Options aoti;
    aoti.device = options.device;
    aoti.num_threads = options.num_threads;
    FLORENCE_ASSIGN_OR_RETURN(out.model, AotiModel::Create(dir, aoti));
    out.name = "aoti";
    out.note = absl::StrCat("torch.export + AOTInductor packages from ",
                            dir.dir, "/", kAotiSubdir);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown backend \"", options.backend,
                     "\"; expected auto, torchscript or aoti"));
  }
  return out;
}

}  // namespace florence::engine
