// florence2-run: runs one Florence-2 task on image files from the command line
// and prints one JSON object per image (JSON lines on stdout).
//
//   florence2-run --model DIR --task TASK [--text T] [--region x1,y1,x2,y2]
//                 [--num-beams N] [--max-new-tokens N] [--min-new-tokens N]
//                 [--device D] [--threads N] [--draw OUT.png] IMAGE...
//
// TASK is a task token ("<OD>") or a readable name (od, caption, ...; see
// engine/pipeline/task_names.h). The object per image:
//   {"image": path, "width": W, "height": H, "task": "<OD>", "task_name":
//    "od", "result": ..., "generated_text": "</s><s>...</s>", "token_ids":
//    [...], "token_logprobs": [...], "sequence_score": s, "num_beams": n,
//    "max_new_tokens": m, "timings_ms": {...}}
// "result" has the shape of transformers' post_process_generation(...)[task]
// with float pixel coordinates: a string for pure-text tasks; {"bboxes":
// [[x1,y1,x2,y2]...], "labels"}; {"quad_boxes": [[x1,y1,...,x4,y4]...],
// "labels"}; {"polygons": [[[x,y,...]...]...], "labels"}; or, for open-
// vocabulary detection, {"bboxes", "bboxes_labels", "polygons",
// "polygons_labels"}.
//
// --draw writes the result drawn onto the image as a PNG; with several images
// the i-th (0-based) goes to OUT with "-i" before its extension.
//
// Exit status: 0 if every image succeeded; 1 if any failed (each failure is
// reported on stderr, the other images still run); 2 for usage errors or a
// model directory that does not load.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/host_memory.h"
#include "engine/pipeline/render.h"
#include "engine/pipeline/runtime.h"
#include "engine/postprocess/result_json.h"
#include "engine/pipeline/task_names.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace florence::engine {
namespace {

using json = nlohmann::json;

constexpr char kUsage[] =
    "usage: florence2-run --model DIR --task TASK [--text T] "
    "[--region x1,y1,x2,y2]\n"
    "                     [--num-beams N] [--max-new-tokens N] "
    "[--min-new-tokens N]\n"
    "                     [--device D] [--threads N] "
    "[--backend auto|torchscript|aoti]\n"
    "                     [--draw OUT.png] IMAGE...\n"
    "  --backend: the model's TorchScript artefact (torchscript; auto = "
    "torchscript)\n"
    "             or its AOTInductor packages in DIR/aoti (aoti: "
    "tools/florence2_export_aoti.py)\n";

struct Flags {
  std::string model;
  Task task = Task::kCaption;
  std::string text;
  std::optional<RegionBox> region;
  std::optional<int> num_beams;
  std::optional<int> max_new_tokens;
  std::optional<int> min_new_tokens;
  std::string device = "cpu";
  int threads = 0;
  std::string backend = "auto";
  std::string draw;
  std::vector<std::string> images;
};

absl::StatusOr<int> ParseInt(absl::string_view flag, absl::string_view value) {
  int out = 0;
  if (!absl::SimpleAtoi(value, &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " wants an integer, got \"", value, "\""));
  }
  return out;
}

absl::StatusOr<RegionBox> ParseRegion(absl::string_view value) {
  const std::vector<absl::string_view> parts = absl::StrSplit(value, ',');
  double v[4];
  if (parts.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--region wants four comma-separated numbers x1,y1,x2,y2 (pixels of "
        "the original image), got \"",
        value, "\""));
  }
  for (int i = 0; i < 4; ++i) {
    if (!absl::SimpleAtod(parts[i], &v[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--region: \"", parts[i], "\" is not a number (in \"", value, "\")"));
    }
  }
  return RegionBox{v[0], v[1], v[2], v[3]};
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv) {
  Flags flags;
  bool have_task = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      }
      return std::string(argv[++i]);
    };
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--model") {
      FLORENCE_ASSIGN_OR_RETURN(flags.model, value());
    } else if (arg == "--task") {
      FLORENCE_ASSIGN_OR_RETURN(const std::string name, value());
      const std::optional<Task> task = ParseTaskName(name);
      if (!task) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unknown --task \"", name, "\"; use a task token such as <OD> or ",
            "one of: ", absl::StrJoin(kTaskNames, ", ")));
      }
      flags.task = *task;
      have_task = true;
    } else if (arg == "--text") {
      FLORENCE_ASSIGN_OR_RETURN(flags.text, value());
    } else if (arg == "--region") {
      FLORENCE_ASSIGN_OR_RETURN(const std::string v, value());
      FLORENCE_ASSIGN_OR_RETURN(flags.region, ParseRegion(v));
    } else if (arg == "--num-beams") {
      FLORENCE_ASSIGN_OR_RETURN(const std::string v, value());
      FLORENCE_ASSIGN_OR_RETURN(flags.num_beams, ParseInt(arg, v));
    } else if (arg == "--max-new-tokens") {
      FLORENCE_ASSIGN_OR_RETURN(const std::string v, value());
      FLORENCE_ASSIGN_OR_RETURN(flags.max_new_tokens, ParseInt(arg, v));
    } else if (arg == "--min-new-tokens") {
      FLORENCE_ASSIGN_OR_RETURN(const std::string v, value());
      FLORENCE_ASSIGN_OR_RETURN(flags.min_new_tokens, ParseInt(arg, v));
    } else if (arg == "--device") {
      FLORENCE_ASSIGN_OR_RETURN(flags.device, value());
    } else if (arg == "--threads") {
      FLORENCE_ASSIGN_OR_RETURN(const std::string v, value());
      FLORENCE_ASSIGN_OR_RETURN(flags.threads, ParseInt(arg, v));
    } else if (arg == "--backend") {
      FLORENCE_ASSIGN_OR_RETURN(flags.backend, value());
    } else if (arg == "--draw") {
      FLORENCE_ASSIGN_OR_RETURN(flags.draw, value());
    } else if (arg.size() > 1 && arg[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    } else {
      flags.images.push_back(arg);
    }
  }
  if (flags.model.empty()) {
    return absl::InvalidArgumentError("--model DIR is required");
  }
  if (!have_task) return absl::InvalidArgumentError("--task TASK is required");
  if (flags.images.empty()) {
    return absl::InvalidArgumentError("no IMAGE given");
  }
  if (flags.threads < 0) {
    return absl::InvalidArgumentError("--threads must be >= 0");
  }
  return flags;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return bytes;
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out)
    return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// OUT for one image; OUT with "-<index>" before the extension for several.
std::string DrawPath(const std::string& out, size_t index, size_t count) {
  if (count == 1) return out;
  const size_t slash = out.find_last_of('/');
  const size_t dot = out.find_last_of('.');
  const bool has_ext =
      dot != std::string::npos && (slash == std::string::npos || dot > slash);
  const std::string stem = has_ext ? out.substr(0, dot) : out;
  const std::string ext = has_ext ? out.substr(dot) : "";
  return absl::StrCat(stem, "-", index, ext);
}

json RunJson(const std::string& path, const RunResult& r) {
  const RunTimings& t = r.timings;
  return {
      {"image", path},
      {"width", r.image_width},
      {"height", r.image_height},
      {"task", std::string(SpecOf(r.task).token)},
      {"task_name", std::string(TaskName(r.task))},
      {"result", TaskResultJson(r.parsed, Coordinates::kFloat)},
      {"generated_text", r.generated_text},
      {"token_ids", r.token_ids},
      {"token_logprobs", r.token_logprobs},
      {"sequence_score", r.sequence_score},
      {"num_beams", r.num_beams},
      {"max_new_tokens", r.max_new_tokens},
      {"timings_ms",
       {{"decode_image", t.decode_image_ms},
        {"prompt", t.prompt_ms},
        {"preprocess", t.preprocess_ms},
        {"encode", t.encode_ms},
        {"decode", t.decode_ms},
        {"steps", t.steps},
        {"postprocess", t.postprocess_ms},
        {"total", t.total_ms}}},
  };
}

// One image: run, print its JSON line, draw if asked.
absl::Status RunImage(Runtime& runtime, const Flags& flags, size_t index) {
  const std::string& path = flags.images[index];
  FLORENCE_ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  RunRequest request;
  request.image = bytes;
  request.task = flags.task;
  request.text = flags.text;
  request.region = flags.region;
  request.num_beams = flags.num_beams;
  request.max_new_tokens = flags.max_new_tokens;
  request.min_new_tokens = flags.min_new_tokens;
  FLORENCE_ASSIGN_OR_RETURN(const RunResult result, runtime.Run(request));
  std::cout << RunJson(path, result)
                   .dump(-1, ' ', false, json::error_handler_t::replace)
            << std::endl;
  if (!flags.draw.empty()) {
    FLORENCE_ASSIGN_OR_RETURN(RgbImage image, DecodeImage(bytes));
    DrawResult(result.parsed, &image);
    FLORENCE_ASSIGN_OR_RETURN(const std::string png, EncodePng(image));
    FLORENCE_RETURN_IF_ERROR(
        WriteFile(DrawPath(flags.draw, index, flags.images.size()), png));
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  // Before the first tensor (LibTorch reads the switch once); see host_memory.h.
  PreferHugePages(true);
  const absl::StatusOr<Flags> flags = ParseFlags(argc, argv);
  if (!flags.ok()) {
    std::cerr << "florence2-run: " << flags.status().message() << "\n"
              << kUsage;
    return 2;
  }
  Runtime::Options options;
  options.device = flags->device;
  options.num_threads = flags->threads;
  options.backend = flags->backend;
  absl::StatusOr<std::unique_ptr<Runtime>> runtime =
      Runtime::Create(flags->model, options);
  if (!runtime.ok()) {
    std::cerr << "florence2-run: cannot load model " << flags->model << ": "
              << runtime.status() << "\n";
    return 2;
  }
  int failed = 0;
  for (size_t i = 0; i < flags->images.size(); ++i) {
    const absl::Status status = RunImage(**runtime, *flags, i);
    if (!status.ok()) {
      std::cerr << "florence2-run: " << flags->images[i] << ": " << status
                << "\n";
      ++failed;
    }
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace florence::engine

int main(int argc, char** argv) { return florence::engine::Main(argc, argv); }
