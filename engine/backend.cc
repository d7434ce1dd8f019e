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
    if (model->prepacked()) {
      out.note = dir.dtype == "int8"
                     ? absl::StrCat(dir.vision_dtype,
                                    " vision tower prepacked for oneDNN "
                                    "(decoder and lm_head are int8; "
                                    "--cpu_prepack)")
                     : absl::StrCat("linear weights prepacked for oneDNN "
                                    "(vision tower in ",
                                    dir.vision_dtype,
                                    ", decoder, lm_head; --cpu_prepack)");
    }
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
