// florence2-probe: loads a model directory and drives the artefact once end to
// end from C++ — image features, prompt encoding, cross K/V, greedy decode
// steps over a caller-owned cache — printing one JSON object with timings.
//
// It proves a model directory serves from C++ on this machine (checksums,
// device, dtype, interface) before the gRPC server exists. It does not decode
// images or tokenize text yet (issue 3): the image is a seeded random
// normalised tensor and the prompt is the token ids of "<CAPTION>"
// ("What does the image describe?"), so with random weights the generated
// ids are meaningless, and they are printed as ids.
//
//   florence2-probe --model DIR [--device cpu|cuda:0] [--threads N] [--steps N]
#include <c10/core/InferenceMode.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/host_memory.h"
#include "engine/model_dir.h"
#include "engine/status_macros.h"
#include "engine/backend.h"

namespace florence::engine {
namespace {

struct Flags {
  std::string model;
  std::string device = "cpu";
  int threads = 0;
  std::string backend = "auto";
  int steps = 16;
};

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t0)
      .count();
}

absl::Status Run(const Flags& flags) {
  auto t0 = std::chrono::steady_clock::now();
  FLORENCE_ASSIGN_OR_RETURN(ModelDir dir, LoadModelDir(flags.model));
  const double verify_ms = MsSince(t0);
  t0 = std::chrono::steady_clock::now();
  FLORENCE_ASSIGN_OR_RETURN(
      LoadedBackend loaded,
      CreateBackend(dir, {flags.backend, flags.device, flags.threads}));
  ModelBackend* model = loaded.model.get();
  const double load_ms = MsSince(t0);

  c10::InferenceMode guard;
  torch::manual_seed(0);
  const int64_t size = dir.preprocess.size;
  at::Tensor pixels = torch::randn({1, 3, size, size});
  const std::vector<int64_t> prompt = {0, 2264, 473, 5, 2274, 6190, 116, 2};
  auto on_device = torch::TensorOptions().dtype(torch::kLong).device(model->device());
  at::Tensor ids = torch::tensor(prompt, torch::kLong).view({1, -1}).to(model->device());

  t0 = std::chrono::steady_clock::now();
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor features, model->ImageFeatures(pixels));
  at::Tensor mask =
      torch::ones({1, features.size(1) + ids.size(1)}, on_device);
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor encoded,
                            model->Encode(features, ids, mask));
  FLORENCE_ASSIGN_OR_RETURN(KvPair cross, model->CrossKv(encoded));
  // CUDA runs asynchronously: wait, or the first decode step pays the prefill.
  if (model->device().is_cuda()) torch::cuda::synchronize(model->device().index());
  const double prefill_ms = MsSince(t0);

  FLORENCE_ASSIGN_OR_RETURN(KvPair cache,
                            model->EmptySelfCache(1, flags.steps + 1));
  std::vector<int64_t> tokens = {dir.generation.decoder_start_token_id};
  t0 = std::chrono::steady_clock::now();
  for (int pos = 0; pos < flags.steps; ++pos) {
    at::Tensor last = torch::tensor({tokens.back()}, on_device);
    at::Tensor position = torch::tensor({static_cast<int64_t>(pos)}, on_device);
    FLORENCE_ASSIGN_OR_RETURN(
        at::Tensor logits,
        model->DecodeStep(last, position, &cache, cross, mask,
                          torch::zeros({1}, on_device)));
    logits = logits.slice(1, 0, dir.tokens.real_vocab_size);
    tokens.push_back(logits.argmax(1).item<int64_t>());
  }
  const double decode_ms = MsSince(t0);

  std::cout << "{\"model\":\"" << dir.dir << "\",\"dtype\":\"" << dir.dtype
            << "\",\"backend\":\"" << loaded.name
            << "\",\"device\":\"" << model->device().str()
            << "\",\"image_tokens\":" << features.size(1)
            << ",\"encoder_length\":" << encoded.size(1)
            << ",\"decoder_tokens\":[" << absl::StrJoin(tokens, ",")
            << "],\"ms\":{\"verify_checksums\":" << verify_ms
            << ",\"load\":" << load_ms << ",\"prefill\":" << prefill_ms
            << ",\"decode_per_token\":" << decode_ms / flags.steps << "}}"
            << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace florence::engine

int main(int argc, char** argv) {
  // Before the first tensor (LibTorch reads the switch once); see host_memory.h.
  florence::engine::PreferHugePages(true);
  florence::engine::Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "florence2-probe: " << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--model") {
      flags.model = value();
    } else if (arg == "--device") {
      flags.device = value();
    } else if (arg == "--threads") {
      flags.threads = std::atoi(value().c_str());
    } else if (arg == "--backend") {
      flags.backend = value();
    } else if (arg == "--steps") {
      flags.steps = std::atoi(value().c_str());
    } else {
      std::cerr << "usage: florence2-probe --model DIR [--device cpu|cuda:0] "
                   "[--threads N] [--backend auto|torchscript|aoti] "
                   "[--steps N]\n";
      return 2;
    }
  }
  if (flags.model.empty() || flags.steps < 1) {
    std::cerr << "florence2-probe: --model DIR is required (and --steps >= 1)\n";
    return 2;
  }
  const absl::Status status = florence::engine::Run(flags);
  if (!status.ok()) {
    std::cerr << "florence2-probe: " << status << "\n";
    return 1;
  }
  return 0;
}
