// The scheduler: admission, encoder batching and continuous decoding of
// Florence-2 requests on one model. Torch-free public interface.
//
//   Submit -> [worker pool] prepare: decode image, resize/normalise, tokenize
//          -> admission queue (bounded, by priority then arrival)
//          -> [engine thread] encoder batch: vision tower (once per image,
//             optionally from the feature cache), encoder over padded prompts,
//             cross-attention K/V into KV-cache pool rows
//          -> continuous decoding: one decode step at a time over every
//             running sequence's rows; sequences join right after their
//             encoder batch and leave the moment they finish
//          -> [worker pool] detokenize, parse, confidences -> sink->OnDone
//
// Policy (when to encode, decode or sleep) is batching/policy.h.
//
// Contract: a request's token ids are the same whether it runs alone or amid
// any mix of other requests (same as the single-request Runtime).
//
// Threading: Submit, Cancel, Drain and the accessors are thread-safe and never
// block on the model. Sink calls come from worker threads, serialized per
// request (never two at once for one request), and never under a scheduler
// lock.
#ifndef FLORENCE_BATCHING_SCHEDULER_H_
#define FLORENCE_BATCHING_SCHEDULER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "batching/observer.h"
#include "batching/policy.h"
#include "engine/image/decode.h"
#include "engine/model_dir.h"
#include "engine/postprocess/parse.h"
#include "engine/postprocess/stream_items.h"
#include "engine/task.h"
#include "engine/tokenizer/prompt.h"

namespace florence::engine {
class ModelBackend;  // engine/model_backend.h (Torch); only passed through here
}  // namespace florence::engine

namespace florence::batching {

// One task on the request's image.
struct TaskInput {
  engine::Task task = engine::Task::kCaption;
  std::string text;                        // text tasks only
  std::optional<engine::RegionBox> region;  // region tasks only
};

struct Request {
  std::string id;  // for logs
  // The image: encoded bytes (JPEG, PNG, WebP, BMP, TIFF), or raw pixels when
  // `raw` is set (its rgb must hold 3 * width * height bytes).
  std::string encoded_image;
  std::optional<engine::RgbImage> raw;
  std::vector<TaskInput> tasks;  // 1 .. kMaxTasksPerRequest; same decoding for all
  std::optional<int> num_beams;
  std::optional<int> max_new_tokens;
  std::optional<int> min_new_tokens;
  int priority = 0;  // higher leaves the queue first
  absl::Time deadline = absl::InfiniteFuture();
  bool stream = false;  // deliver OnEvents while decoding
  absl::Time received = absl::Now();
};

inline constexpr int kMaxTasksPerRequest = 16;

struct TaskTimings {
  double queue_ms = 0;    // received -> its encoder batch started (prepare included)
  double prepare_ms = 0;  // image decode + preprocess + prompt
  double encode_ms = 0;   // its encoder batch
  double decode_ms = 0;   // joined the decoder batch -> last token
  double total_ms = 0;    // received -> result ready
  int encoder_batch_size = 0;
  bool features_cached = false;
};

// The result of one task.
struct TaskOutput {
  engine::Task task = engine::Task::kCaption;
  engine::TaskResult parsed;
  // Per item of `parsed` in result order (detections / regions / instances,
  // or an open-vocabulary result's detections then polygons):
  // engine::ItemTracker's confidence.
  std::vector<float> confidences;
  std::string generated_text;   // decoded with special tokens
  std::vector<int64_t> token_ids;  // start token included
  std::vector<float> token_logprobs;
  float sequence_score = 0;
  int prompt_tokens = 0;
  int image_tokens = 0;
  int num_beams = 0;
  int max_new_tokens = 0;
  int image_width = 0;
  int image_height = 0;
  TaskTimings timings;
};

// Implemented by the caller (the gRPC layer) per request.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // Streaming requests: items of task `task_index` that became final, in
  // order. Never after OnDone.
  virtual void OnEvents(int task_index,
                        std::vector<engine::ItemEvent> events) = 0;
  // Exactly once per accepted request: one output per task, in the order of
  // Request::tasks, or the request's error.
  virtual void OnDone(absl::StatusOr<std::vector<TaskOutput>> result) = 0;
};

using RequestHandle = uint64_t;

class Scheduler {
 public:
  struct Options {
    std::string device = "cpu";  // torch device string
    int num_threads = 0;         // Torch intra-op threads, 0 = default
    bool cpu_prepack = true;     // see engine::TorchScriptModel::Options
    std::string backend = "auto";  // auto | torchscript | aoti (engine/backend.h)
    int worker_threads = 2;      // prepare / finish pool
    PolicyConfig policy;
    int max_queue = 256;         // requests admitted but not yet encoding
    // KV-cache pool budget in bytes; each cache row holds one sequence (a beam
    // request takes num_beams rows) at the model's full decoder length.
    int64_t kv_cache_bytes = int64_t{4} << 30;
    int max_rows = 256;          // cap on pool rows whatever the budget
    int max_prompt_tokens = 256; // encoder text tokens a request may use
    // Image features kept by content hash (0 = no cache).
    int64_t feature_cache_bytes = 0;
    // Images per vision-tower call within an encoder batch; 0 = auto: one on
    // CPU (where the compute-bound tower runs slower per image when batched:
    // 3.3 s vs 2.9 s at 4 images, docs/PERFORMANCE.md), the whole batch on
    // other devices.
    int vision_batch = 0;
    // kResize: transformers' preprocessing (stretch to 768x768), the parity
    // default. kLetterbox: aspect ratio kept, the image at the top-left of the
    // square canvas and the image tokens that cover only padding masked out of
    // the encoder (engine/image/preprocess.h PreprocessLetterboxInto);
    // coordinates still come back in original pixels.
    enum class ImageMode { kResize, kLetterbox };
    ImageMode image_mode = ImageMode::kResize;
    engine::DecodeLimits decode_limits;
    // Opt-in (kResize only): a JPEG larger than twice the model's input side
    // is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling, never
    // below the input side, then resized as usual (engine/image/decode.h
    // DecodeLimits::jpeg_scaled_min_side). Faster for large photos; the pixels
    // then differ from transformers' preprocessing (docs/PERFORMANCE.md).
    bool jpeg_scaled_decode = false;
  };

  // Loads the model directory (checksums, tokenizer, TorchScript model on
  // options.device), allocates the KV-cache pool and starts the threads.
  // `observer` is not owned and must outlive the scheduler (null = none).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      const std::string& model_dir, const Options& options,
      SchedulerObserver* observer);
  // As Create, running `model` instead of loading model.ts (tests wrap the
  // real model to inject failures; another backend could be passed the same
  // way). The directory still provides config, tokenizer and checksums.
  static absl::StatusOr<std::unique_ptr<Scheduler>> CreateWithModel(
      const std::string& model_dir, const Options& options,
      SchedulerObserver* observer, std::unique_ptr<engine::ModelBackend> model);

  virtual ~Scheduler() = default;

  // Accepts `request`; `sink` (not owned) must stay valid until its OnDone,
  // which follows exactly once. Refusals come back here instead (no OnDone):
  // InvalidArgument for decoding options or tasks that can never run,
  // ResourceExhausted when the queue is full (the message gives a retry
  // hint), Unavailable while draining.
  virtual absl::StatusOr<RequestHandle> Submit(Request request,
                                               RequestSink* sink) = 0;
  // The request stops at the next decode step (or leaves the queue) and its
  // cache rows are freed; its OnDone carries CANCELLED. Unknown or finished
  // handles are ignored.
  virtual void Cancel(RequestHandle handle) = 0;
  // A rough wait before a refused request should retry (queue length x recent
  // per-request service time).
  virtual absl::Duration RetryHint() const = 0;

  // Runs one short request end to end (raw gray image, caption, 2 tokens) so
  // the first real request does not pay for lazy initialisation.
  virtual absl::Status Warmup() = 0;
  // Stops accepting (Submit -> Unavailable) and waits until every accepted
  // request has completed or `deadline` passes; true if all completed.
  virtual bool Drain(absl::Time deadline) = 0;

  // Snapshot counters.
  virtual int64_t in_flight() const = 0;  // accepted, OnDone not yet delivered
  virtual int64_t kv_bytes_in_use() const = 0;
  virtual int64_t kv_bytes_capacity() const = 0;
  virtual const engine::ModelDir& model_dir() const = 0;
};

}  // namespace florence::batching

#endif  // FLORENCE_BATCHING_SCHEDULER_H_
