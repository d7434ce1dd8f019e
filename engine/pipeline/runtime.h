// One Florence-2 request end to end on one model, in the calling thread:
//
//   encoded image bytes --DecodeImage--> RGB --Preprocess--> [1,3,S,S] float
//   task + text/region --EncodePrompt (original image size)--> <s> ids </s>
//   GenerateOne (image features, encoder, cross K/V, greedy or beam search)
//   --Tokenizer::Decode(skip_special_tokens=false)--> generated_text
//   --ParseGeneration(task, text, original W, H)--> typed TaskResult
//
// The result equals transformers' for the same image file and prompt:
// `processor(text=prompt, images=Image.open(f).convert("RGB"))`,
// `model.generate(...)` with the same decoding parameters,
// `batch_decode(skip_special_tokens=False)` and
// `post_process_generation(text, task, (W, H))` -- identical token ids and
// text, identical labels, coordinates equal once truncated to int
// (tools/e2e_vectors.py, tests/engine/pipeline/). Two documented parity
// choices:
//   * Logits are NOT restricted to real token ids: rows >= tokens
//     .real_vocab_size (<image> = 51289 and the embedding's padding rows up to
//     V) stay eligible, because transformers' generate() does not mask them
//     either. A trained checkpoint never ranks them first; a random one can.
//     The tokenizer decodes <image> as "<image>" and skips ids that name no
//     token, as HF does.
//   * transformers 5 skips clean_up_tokenization_spaces for BPE tokenizers,
//     so the generated text is Tokenizer::Decode's output unchanged.
//
// This is the single-request path (florence2-run, tests). A batcher drives
// the same components itself (engine/generation/search.h) over a shared cache.
//
// Threading: a Runtime owns one model backend and is not thread-safe; one
// thread at a time calls Run (house style: one owner thread per model).
// Torch exceptions do not escape: they come back as Internal.
#ifndef FLORENCE_ENGINE_PIPELINE_RUNTIME_H_
#define FLORENCE_ENGINE_PIPELINE_RUNTIME_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/image/decode.h"
#include "engine/model_dir.h"
#include "engine/postprocess/parse.h"
#include "engine/task.h"
#include "engine/tokenizer/prompt.h"

namespace florence::engine {

class ModelBackend;
class Tokenizer;

struct RunRequest {
  // The encoded image file (JPEG, PNG, WebP, BMP, TIFF). Not owned: it must
  // stay valid for the duration of Run.
  absl::string_view image;
  Task task = Task::kCaption;
  // Required by the text tasks (phrase grounding, referring expression
  // segmentation, open-vocabulary detection); must be empty otherwise.
  std::string text;
  // Required by the region tasks; pixels of the original image.
  std::optional<RegionBox> region;
  // Decoding overrides; unset = config.json "generation" (min_new_tokens: 0).
  std::optional<int> num_beams;
  std::optional<int> max_new_tokens;
  std::optional<int> min_new_tokens;
};

// Wall-clock milliseconds of each stage of one Run.
struct RunTimings {
  double decode_image_ms = 0;  // DecodeImage
  double prompt_ms = 0;        // BuildPrompt + tokenization
  double preprocess_ms = 0;    // resize + normalize into the pixel tensor
  double encode_ms = 0;        // image features + encoder + cross K/V
  double decode_ms = 0;        // all decoder steps
  int steps = 0;               // decoder steps run
  double postprocess_ms = 0;   // detokenize + parse
  double total_ms = 0;
};

struct RunResult {
  Task task = Task::kCaption;
  TaskResult parsed;
  // The generated ids decoded with special tokens kept, as transformers'
  // batch_decode(skip_special_tokens=False): "</s><s>a car</s>".
  std::string generated_text;
  // The decoder sequence including the start token (and the final EOS).
  std::vector<int64_t> token_ids;
  // Per generated token (token_ids.size() - 1 entries): its log-probability
  // under the processed distribution.
  std::vector<float> token_logprobs;
  // Beam search: length-normalised score of the hypothesis; greedy: the sum
  // of token_logprobs.
  float sequence_score = 0;
  // The encoder's text ids, <s> prompt </s>.
  std::vector<int32_t> prompt_ids;
  // The decoding parameters used (after defaults and overrides).
  int num_beams = 0;
  int max_new_tokens = 0;
  int min_new_tokens = 0;
  // Size of the decoded original image; parsed coordinates refer to it.
  int image_width = 0;
  int image_height = 0;
  RunTimings timings;
};

class Runtime {
 public:
  struct Options {
    // A torch device string: "cpu", "cuda", "cuda:0", ...
    std::string device = "cpu";
    // > 0 sets Torch's process-wide intra-op thread count (see
    // TorchScriptModel::Options); 0 keeps Torch's default.
    int num_threads = 0;
    // The model backend: auto | torchscript | aoti (engine/backend.h).
    std::string backend = "auto";
    // Bounds on request images, checked before pixels are allocated.
    DecodeLimits decode_limits;
  };

  // Verifies and loads the model directory (LoadModelDir: checksums of every
  // file), its tokenizer and the TorchScript model on options.device. Errors
  // are those of LoadModelDir, Tokenizer::FromFile and
  // TorchScriptModel::Create, plus InvalidArgument for a preprocessing config
  // the engine cannot run.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(
      const std::string& model_dir, const Options& options);

  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Runs one request. InvalidArgument, with a message naming the problem, for
  // bad input: undecodable, empty, zero-sized or oversized images; text on a
  // task that takes none or missing where required; a region missing, outside
  // the image or empty; a prompt too long for the model; out-of-range
  // num_beams / max_new_tokens / min_new_tokens. Internal (ResourceExhausted
  // when out of device memory) for model failures.
  absl::StatusOr<RunResult> Run(const RunRequest& request);

  const ModelDir& model_dir() const { return dir_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }

 private:
  Runtime(ModelDir dir, std::unique_ptr<Tokenizer> tokenizer,
          std::unique_ptr<ModelBackend> model, Options options);

  const ModelDir dir_;
  const std::unique_ptr<Tokenizer> tokenizer_;
  const std::unique_ptr<ModelBackend> model_;
  const Options options_;
};

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_PIPELINE_RUNTIME_H_
