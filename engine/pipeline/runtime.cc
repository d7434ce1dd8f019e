#include "engine/pipeline/runtime.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <chrono>
#include <exception>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "engine/generation/generate.h"
#include "engine/generation/search.h"
#include "engine/image/preprocess.h"
#include "engine/model_backend.h"
#include "engine/pipeline/search_params_for.h"
#include "engine/status_macros.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/backend.h"

namespace florence::engine {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

absl::Status CheckTask(Task task) {
  const auto index = static_cast<size_t>(task);
  if (index >= kTaskSpecs.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown task value ", index));
  }
  return absl::OkStatus();
}

// Wraps a Torch-calling stage: exceptions from tensor code outside the
// backend (index_select, to(device), ...) become Status.
template <typename F>
auto GuardTorch(absl::string_view stage, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(absl::StrCat(
        stage, ": out of device memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(stage, ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(stage, ": ", e.what()));
  }
}

}  // namespace

Runtime::Runtime(ModelDir dir, std::unique_ptr<Tokenizer> tokenizer,
                 std::unique_ptr<ModelBackend> model, Options options)
    : dir_(std::move(dir)),
      tokenizer_(std::move(tokenizer)),
      model_(std::move(model)),
      options_(std::move(options)) {}

Runtime::~Runtime() = default;

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(
    const std::string& model_dir, const Options& options) {
  FLORENCE_ASSIGN_OR_RETURN(ModelDir dir, LoadModelDir(model_dir));
  FLORENCE_RETURN_IF_ERROR(ValidatePreprocessConfig(dir.preprocess));
  FLORENCE_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                            Tokenizer::FromFile(dir.tokenizer_path));
  FLORENCE_ASSIGN_OR_RETURN(
      LoadedBackend loaded,
      CreateBackend(dir, {options.backend, options.device, options.num_threads}));
  return std::unique_ptr<Runtime>(new Runtime(
      std::move(dir), std::move(tokenizer), std::move(loaded.model), options));
}

absl::StatusOr<RunResult> Runtime::Run(const RunRequest& request) {
  const auto start = Clock::now();
  FLORENCE_RETURN_IF_ERROR(CheckTask(request.task));
  FLORENCE_ASSIGN_OR_RETURN(const SearchParams params,
                            SearchParamsFor(dir_, request.num_beams, request.max_new_tokens,
                                            request.min_new_tokens));
  RunResult out;
  out.task = request.task;
  out.num_beams = params.num_beams;
  out.max_new_tokens = params.max_new_tokens;
  out.min_new_tokens = params.min_new_tokens;

  auto t0 = Clock::now();
  absl::StatusOr<RgbImage> image =
      DecodeImage(request.image, options_.decode_limits);
  if (!image.ok()) {
    return absl::Status(image.status().code(),
                        absl::StrCat("image: ", image.status().message()));
  }
  out.image_width = image->width;
  out.image_height = image->height;
  out.timings.decode_image_ms = MsSince(t0);

  // The prompt depends on the original size (regions are quantized against
  // it); it is checked before the costlier preprocessing.
  t0 = Clock::now();
  FLORENCE_ASSIGN_OR_RETURN(
      out.prompt_ids, EncodePrompt(*tokenizer_, request.task, request.text,
                                   request.region, image->width, image->height,
                                   static_cast<int>(dir_.decoder.max_positions),
                                   static_cast<int>(dir_.num_image_tokens)));
  out.timings.prompt_ms = MsSince(t0);

  FLORENCE_ASSIGN_OR_RETURN(
      SearchResult generated,
      GuardTorch("generate", [&]() -> absl::StatusOr<SearchResult> {
        auto t = Clock::now();
        const int64_t size = dir_.preprocess.size;
        at::Tensor pixels = at::empty({1, 3, size, size}, at::kFloat);
        FLORENCE_RETURN_IF_ERROR(PreprocessInto(
            *image, dir_.preprocess,
            absl::MakeSpan(pixels.data_ptr<float>(),
                           static_cast<size_t>(pixels.numel()))));
        // PreprocessInto has read every pixel; free them before the model
        // runs.
        image = RgbImage{};
        std::vector<int64_t> ids(out.prompt_ids.begin(), out.prompt_ids.end());
        at::Tensor input_ids = at::tensor(ids, at::kLong)
                                   .view({1, static_cast<int64_t>(ids.size())});
        out.timings.preprocess_ms = MsSince(t);

        GenerateTimings g;
        FLORENCE_ASSIGN_OR_RETURN(
            SearchResult r,
            GenerateOne(*model_, pixels, input_ids, params, &g));
        out.timings.encode_ms = g.encode_ms;
        out.timings.decode_ms = g.decode_ms;
        out.timings.steps = g.steps;
        return r;
      }));

  t0 = Clock::now();
  out.token_ids = std::move(generated.tokens);
  out.token_logprobs = std::move(generated.token_logprobs);
  out.sequence_score = generated.sequence_score;
  // Every id fits int32: they index the model's vocabulary rows.
  const std::vector<int32_t> ids32(out.token_ids.begin(), out.token_ids.end());
  out.generated_text = tokenizer_->Decode(ids32, /*skip_special_tokens=*/false);
  FLORENCE_ASSIGN_OR_RETURN(out.parsed,
                            ParseGeneration(request.task, out.generated_text,
                                            out.image_width, out.image_height));
  out.timings.postprocess_ms = MsSince(t0);
  out.timings.total_ms = MsSince(start);
  return out;
}

}  // namespace florence::engine
