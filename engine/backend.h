// Which ModelBackend serves a model directory: --backend auto|torchscript|aoti
// (florence2-server, florence2-run, florence2-probe).
//
//   torchscript  the TorchScript artefact (model.ts): TorchScriptModel.
//   aoti         the torch.export + AOTInductor packages in <dir>/aoti/
//                (tools/florence2_export_aoti.py): AotiModel. NotFound, naming
//                the export command, when the directory has none.
//   auto         torchscript. Measured on the base model on the CPU
//                (docs/PERFORMANCE.md), TorchScript with oneDNN-prepacked
//                weights is as fast or faster for the vision tower and for
//                decode steps of several rows, which is what serving runs; so
//                the packages are used only when asked for.
#ifndef FLORENCE_ENGINE_BACKEND_H_
#define FLORENCE_ENGINE_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/model_backend.h"
#include "engine/model_dir.h"

namespace florence::engine {

struct BackendOptions {
  std::string backend = "auto";  // auto | torchscript | aoti
  std::string device = "cpu";
  int num_threads = 0;           // see TorchScriptModel::Options
  bool cpu_prepack = true;       // TorchScript only
};

struct LoadedBackend {
  std::unique_ptr<ModelBackend> model;
  std::string name;  // "torchscript" or "aoti": what `auto` resolved to
  std::string note;  // one line for the start-up log (may be empty)
  // One line for a start-up warning (may be empty): the model loads, but runs
  // far below what this CPU could do with another export.
  std::string warning;
};

// Loads dir's model with the backend options.backend names. InvalidArgument
// for an unknown backend name; otherwise the errors of TorchScriptModel::Create
// / AotiModel::Create.
absl::StatusOr<LoadedBackend> CreateBackend(const ModelDir& dir,
                                            const BackendOptions& options);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_BACKEND_H_
