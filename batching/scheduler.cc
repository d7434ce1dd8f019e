// The scheduler's mechanism: worker pool, admission queue, engine thread,
// KV-cache pool and feature cache. The decisions are batching/policy.h.
//
// Threads and what they own:
//   * callers (gRPC threads): Submit / Cancel only take `mu_` briefly;
//   * workers (`pool_`): prepare a request (decode, resize, tokenize) and
//     finish it (detokenize, parse, confidences, sink calls), each request's
//     closures serialized by its Job's strand;
//   * the engine thread: the only caller of the model, owner of the KV pool,
//     the feature cache and the running sequences (no lock needed for them).
#include "batching/scheduler.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <openssl/evp.h>
#include <torch/cuda.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/types/span.h"
#include "batching/kv_pool.h"
#include "batching/log.h"
#include "engine/generation/search.h"
#include "engine/image/preprocess.h"
#include "engine/model_backend.h"
#include "engine/pipeline/search_params_for.h"
#include "engine/status_macros.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/backend.h"

namespace florence::batching {
namespace {

using engine::KvPair;
using engine::SearchParams;

double MsBetween(absl::Time a, absl::Time b) {
  return absl::ToDoubleMilliseconds(b - a);
}

// A decode step attends over the longest self and cross length in use, the
// other rows' tails masked. The CPU attention kernels' float sums then depend
// on that padded length (how the valid positions fall into vector lanes), so a
// row's logits moved by ~1e-6 with its batch-mates (measured: max |diff|
// 2.5e-6 fp32); an int8 export's per-row activation quantization can turn such
// a difference into a whole quantization step (0.096 in the logits), which
// flipped tokens of 2 of 18 requests in the issue-4 benchmark. Padding both
// lengths to a multiple of this quantum makes a row's step bit-identical
// whatever the other rows' lengths (int8: exact; measured for multiples of 16,
// 32 and 64). tools/florence2/generate.py pads its reference the same way.
constexpr int64_t kAttentionLengthQuantum = 16;

int64_t RoundUpToQuantum(int64_t n) {
  return (n + kAttentionLengthQuantum - 1) / kAttentionLengthQuantum *
         kAttentionLengthQuantum;
}

// Torch exceptions from tensor code outside the backend become Status.
template <typename F>
absl::Status GuardTorch(absl::string_view stage, F&& f) {
  try {
    return f();
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(stage, ": out of device memory: ", e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(stage, ": ", e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(stage, ": out of host memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(stage, ": ", e.what()));
  }
}

// Fixed threads running posted closures in FIFO order.
class WorkerPool {
 public:
  explicit WorkerPool(int threads) {
    for (int i = 0; i < std::max(1, threads); ++i) {
      threads_.emplace_back([this] { Loop(); });
    }
  }
  // Runs everything already posted, then joins.
  ~WorkerPool() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : threads_) t.join();
  }
  void Post(std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(fn));
  }

 private:
  void Loop() {
    while (true) {
      std::function<void()> fn;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](WorkerPool* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
              return p->stop_ || !p->queue_.empty();
            },
            this));
        if (queue_.empty()) return;  // stop_ and drained
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  absl::Mutex mu_;  // protects queue_ and stop_
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// One accepted request. Shared by the registry (for Cancel), the queue or the
// engine thread's sequences, and the closures on its strand: its lifetime
// really is shared, and ends when the last of them lets go.
struct Job {
  RequestHandle handle = 0;
  Request request;
  RequestSink* sink = nullptr;
  SearchParams params;
  int rows_needed = 0;  // tasks x beams
  std::atomic<bool> cancelled{false};

  // Written by the prepare closure before the job is queued; read by the
  // engine thread after (the queue's mutex orders the two).
  std::vector<float> pixels;
  std::string image_key;  // SHA-256 of the image, when the feature cache is on
  int width = 0;   // the original image
  int height = 0;
  // The size location bins refer to: the image itself, or the letterbox
  // canvas in original pixels.
  int coord_width = 0;
  int coord_height = 0;
  std::vector<uint8_t> image_token_mask;  // letterbox: 0 = padding token; empty = all real
  std::vector<std::vector<int32_t>> prompt_ids;
  double prepare_ms = 0;
  absl::Time enqueued;

  // Strand: closures for this job run one at a time, in order, on the pool.
  absl::Mutex strand_mu;  // protects strand_queue and strand_running
  std::deque<std::function<void()>> strand_queue ABSL_GUARDED_BY(strand_mu);
  bool strand_running ABSL_GUARDED_BY(strand_mu) = false;

  // Touched only by strand closures.
  bool completed = false;
  int tasks_left = 0;
  std::vector<TaskOutput> outputs;
  std::vector<std::unique_ptr<engine::ItemTracker>> trackers;  // streaming
};

// One task of a job in the decoder batch. Engine thread only.
struct Sequence {
  std::shared_ptr<Job> job;
  int task_index = 0;
  std::unique_ptr<engine::Search> search;
  std::vector<int64_t> rows;  // KV pool self rows, one per beam
  int64_t cross_row = -1;     // KV pool cross row, read by every beam
  int64_t cross_len = 0;      // real encoder positions (image + prompt)
  absl::Time joined;
  TaskTimings timings;
  size_t published = 0;  // stable-prefix tokens already handed to the strand
};

// Image features by content hash, least recently used evicted first, within
// a byte budget. Engine thread only.
class FeatureCache {
 public:
  explicit FeatureCache(int64_t budget) : budget_(budget) {}
  bool enabled() const { return budget_ > 0; }
  std::optional<at::Tensor> Get(const std::string& key) {
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    lru_.splice(lru_.begin(), lru_, it->second.pos);
    return it->second.features;
  }
  void Put(const std::string& key, const at::Tensor& features) {
    const int64_t bytes = features.numel() * features.element_size();
    if (!enabled() || bytes > budget_ || map_.contains(key)) return;
    while (bytes_ + bytes > budget_ && !lru_.empty()) {
      auto victim = map_.find(lru_.back());
      bytes_ -= victim->second.bytes;
      map_.erase(victim);
      lru_.pop_back();
    }
    lru_.push_front(key);
    map_[key] = Entry{features, bytes, lru_.begin()};
    bytes_ += bytes;
  }

 private:
  struct Entry {
    at::Tensor features;  // [1, N, d]
    int64_t bytes = 0;
    std::list<std::string>::iterator pos;
  };
  const int64_t budget_;
  int64_t bytes_ = 0;
  std::list<std::string> lru_;
  absl::flat_hash_map<std::string, Entry> map_;
};

// Canvas pixels per image-token side: N = 1 + g*g tokens over a size x size
// canvas (768 / 24 = 32 for Florence-2); 0 if the model's tokens do not form
// such a grid.
int LetterboxPatch(const engine::ModelDir& dir) {
  const int64_t cells = dir.num_image_tokens - 1;
  int64_t g = 1;
  while (g * g < cells) ++g;
  if (g * g != cells || dir.preprocess.size % g != 0) return 0;
  return static_cast<int>(dir.preprocess.size / g);
}

absl::StatusOr<std::string> Sha256Of(absl::string_view a, absl::string_view b) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), a.data(), a.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), b.data(), b.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), digest, &size) != 1) {
    return absl::ResourceExhaustedError("image hash: OpenSSL could not allocate");
  }
  return std::string(reinterpret_cast<const char*>(digest), size);
}

class SchedulerImpl final : public Scheduler {
 public:
  SchedulerImpl(engine::ModelDir dir, std::unique_ptr<engine::Tokenizer> tokenizer,
                std::unique_ptr<engine::ModelBackend> model, std::unique_ptr<KvPool> kv,
                const Options& options, SchedulerObserver* observer)
      : dir_(std::move(dir)),
        tokenizer_(std::move(tokenizer)),
        model_(std::move(model)),
        kv_(std::move(kv)),
        options_(options),
        observer_(observer != nullptr ? observer : &null_observer_),
        features_(options.feature_cache_bytes),
        letterbox_patch_(LetterboxPatch(dir_)),
        vision_batch_(options.vision_batch > 0 ? options.vision_batch
                      : model_->device().is_cpu() ? 1
                                                  : 0),
        pool_(std::make_unique<WorkerPool>(options.worker_threads)) {
    engine_thread_ = std::thread([this] { EngineLoop(); });
  }

  ~SchedulerImpl() override {
    {
      absl::MutexLock lock(&mu_);
      draining_ = true;
      stop_ = true;
      work_cv_.SignalAll();
    }
    engine_thread_.join();  // fails what it still held, see EngineLoop
    pool_.reset();          // runs the pending closures (OnDone included)
  }

  // A token's length in bytes at most, for the text-length pre-check: the Florence-2 (BART byte-level BPE)
  // vocabulary's longest token is 128 bytes.
  static constexpr int kMaxBytesPerToken = 128;

  absl::StatusOr<RequestHandle> Submit(Request request, RequestSink* sink) override {
    if (request.tasks.empty() || request.tasks.size() > kMaxTasksPerRequest) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a request needs 1 to ", kMaxTasksPerRequest, " tasks, got ", request.tasks.size()));
    }
    for (size_t i = 0; i < request.tasks.size(); ++i) {
      if (static_cast<size_t>(request.tasks[i].task) >= engine::kTaskSpecs.size()) {
        return absl::InvalidArgumentError(absl::StrCat("tasks[", i, "]: unknown task"));
      }
      // Text that cannot fit the prompt is refused before its image is decoded or it is tokenized (which
      // costs tens of bytes of memory per input byte): no token of the vocabulary is longer than this.
      const size_t max_text = size_t{kMaxBytesPerToken} * std::max(1, options_.max_prompt_tokens);
      if (request.tasks[i].text.size() > max_text) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tasks[", i, "]: the text is ", request.tasks[i].text.size(), " bytes; a prompt holds at most ",
            options_.max_prompt_tokens, " tokens (--max_prompt_tokens), so at most ", max_text,
            " bytes of text are accepted; shorten the text"));
      }
    }
    FLORENCE_ASSIGN_OR_RETURN(
        SearchParams params,
        engine::SearchParamsFor(dir_, request.num_beams, request.max_new_tokens,
                                request.min_new_tokens));
    auto job = std::make_shared<Job>();
    job->params = params;
    job->rows_needed = params.num_beams * static_cast<int>(request.tasks.size());
    if (job->rows_needed > kv_->capacity()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "this request needs ", job->rows_needed, " KV-cache rows (", request.tasks.size(),
          " task(s) x ", params.num_beams, " beams) but the server's pool has ", kv_->capacity(),
          "; use fewer beams or tasks, or raise --kv_cache_bytes"));
    }
    job->sink = sink;
    job->tasks_left = static_cast<int>(request.tasks.size());
    job->outputs.resize(request.tasks.size());
    job->trackers.resize(request.tasks.size());
    job->request = std::move(request);
    {
      absl::MutexLock lock(&mu_);
      if (draining_) {
        return absl::UnavailableError("the server is shutting down; retry on another replica");
      }
      if (waiting_ >= options_.max_queue) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the request queue is full (", waiting_, " requests waiting); retry in about ",
            absl::ToInt64Milliseconds(RetryHintLocked()), " ms"));
      }
      ++waiting_;
      ++in_flight_;
      job->handle = ++next_handle_;
      registry_[job->handle] = job;
    }
    PublishQueueDepth();
    Post(job, [this, job] { Prepare(job); });
    return job->handle;
  }

  void Cancel(RequestHandle handle) override {
    std::shared_ptr<Job> job;
    {
      absl::MutexLock lock(&mu_);
      auto it = registry_.find(handle);
      if (it == registry_.end()) return;
      job = it->second.lock();
      if (!job) return;
      job->cancelled = true;
      // Still queued: leave the queue now. Otherwise the prepare closure or
      // the engine thread notices the flag.
      auto q = std::find(queue_.begin(), queue_.end(), job);
      if (q == queue_.end()) {
        work_cv_.SignalAll();
        return;
      }
      queue_.erase(q);
      --waiting_;
    }
    PublishQueueDepth();
    Fail(job, absl::CancelledError("the request was cancelled by the client"));
  }

  absl::Duration RetryHint() const override {
    absl::MutexLock lock(&mu_);
    return RetryHintLocked();
  }

  absl::Status Warmup() override {
    class WaitSink final : public RequestSink {
     public:
      void OnEvents(int, std::vector<engine::ItemEvent>) override {}
      void OnDone(absl::StatusOr<std::vector<TaskOutput>> result) override {
        status = result.status();
        done.Notify();
      }
      absl::Status status;
      absl::Notification done;
    } sink;
    Request r;
    r.id = "warmup";
    engine::RgbImage gray;
    gray.width = 64;
    gray.height = 48;
    gray.rgb.assign(size_t{3} * gray.width * gray.height, 128);
    r.raw = std::move(gray);
    r.tasks.push_back({engine::Task::kCaption, "", std::nullopt});
    r.num_beams = 1;
    r.max_new_tokens = 2;
    FLORENCE_ASSIGN_OR_RETURN(RequestHandle h, Submit(std::move(r), &sink));
    sink.done.WaitForNotification();
    // Complete() hands the result over before it unregisters the request:
    // wait for that too, so a finished warm-up leaves in_flight() as it was.
    absl::MutexLock lock(&mu_);
    const auto unregistered = [this, h]() {
      mu_.AssertHeld();
      return !registry_.contains(h);
    };
    mu_.Await(absl::Condition(&unregistered));
    return sink.status;
  }

  bool Drain(absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    return mu_.AwaitWithDeadline(
        absl::Condition(
            +[](SchedulerImpl* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
              return s->in_flight_ == 0;
            },
            this),
        deadline);
  }

  int64_t in_flight() const override {
    absl::MutexLock lock(&mu_);
    return in_flight_;
  }
  int64_t kv_bytes_in_use() const override { return kv_in_use_.load(); }
  int64_t kv_bytes_capacity() const override { return kv_->capacity() * kv_->row_bytes(); }
  const engine::ModelDir& model_dir() const override { return dir_; }

 private:
  int64_t waiting() const {
    absl::MutexLock lock(&mu_);
    return waiting_;
  }

  // Reads and publishes the queue depth as one step, so publishes from several threads cannot leave an
  // older value on the gauge than the last change.
  void PublishQueueDepth() ABSL_LOCKS_EXCLUDED(mu_, depth_mu_) {
    absl::MutexLock lock(&depth_mu_);
    observer_->OnQueueDepth(waiting());
  }

  absl::Duration RetryHintLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const double per_request_ms = std::max(50.0, service_ms_ewma_.load());
    return absl::Milliseconds(per_request_ms * static_cast<double>(waiting_ + 1) /
                              std::max(1, options_.policy.max_batch));
  }

  // ---- Strands ---------------------------------------------------------------

  void Post(const std::shared_ptr<Job>& job, std::function<void()> fn) {
    {
      absl::MutexLock lock(&job->strand_mu);
      job->strand_queue.push_back(std::move(fn));
      if (job->strand_running) return;
      job->strand_running = true;
    }
    pool_->Post([job] {
      while (true) {
        std::function<void()> next;
        {
          absl::MutexLock lock(&job->strand_mu);
          if (job->strand_queue.empty()) {
            job->strand_running = false;
            return;
          }
          next = std::move(job->strand_queue.front());
          job->strand_queue.pop_front();
        }
        next();
      }
    });
  }

  // Completes `job` exactly once (strand only).
  void Complete(const std::shared_ptr<Job>& job, absl::StatusOr<std::vector<TaskOutput>> result) {
    if (job->completed) return;
    job->completed = true;
    if (!result.ok()) {
      log::Debug(absl::StrCat("[", job->request.id, "] failed: ", result.status().ToString()));
    }
    job->sink->OnDone(std::move(result));
    absl::MutexLock lock(&mu_);
    registry_.erase(job->handle);
    --in_flight_;
  }

  // Fails `job` from any thread: the failure runs on its strand.
  void Fail(const std::shared_ptr<Job>& job, absl::Status status) {
    Post(job, [this, job, status = std::move(status)] { Complete(job, status); });
  }

  // ---- Prepare (worker) ------------------------------------------------------

  void Prepare(const std::shared_ptr<Job>& job) {
    const absl::Time start = absl::Now();
    // A request cancelled or expired while it waited for a worker costs no decoding: under overload the
    // workers' backlog is where dead requests pile up.
    absl::Status st = Abandoned(*job);
    // No exception (std::bad_alloc from a hostile image, say) may leave a worker thread.
    if (st.ok()) st = GuardTorch("preparing the request", [&] { return PrepareInputs(*job); });
    if (st.ok()) st = Abandoned(*job);
    job->prepare_ms = MsBetween(start, absl::Now());
    if (!st.ok()) {
      {
        absl::MutexLock lock(&mu_);
        --waiting_;
      }
      PublishQueueDepth();
      Complete(job, st);
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      if (stop_) {
        --waiting_;
        st = absl::UnavailableError("the server is shutting down");
      } else if (job->cancelled) {  // Cancel ran after the check above and did not find it in queue_
        --waiting_;
        st = absl::CancelledError("the request was cancelled by the client");
      } else {
        job->enqueued = absl::Now();
        auto pos = std::find_if(queue_.begin(), queue_.end(), [&](const auto& other) {
          return other->request.priority < job->request.priority;
        });
        queue_.insert(pos, job);
        work_cv_.Signal();
      }
    }
    if (!st.ok()) {
      PublishQueueDepth();
      Complete(job, st);
    }
  }

  static absl::Status Abandoned(const Job& job) {
    if (job.cancelled) return absl::CancelledError("the request was cancelled by the client");
    if (absl::Now() >= job.request.deadline) {
      return absl::DeadlineExceededError("the deadline passed before the request was queued");
    }
    return absl::OkStatus();
  }

  absl::Status PrepareInputs(Job& job) {
    const Request& r = job.request;
    engine::RgbImage decoded;
    const engine::RgbImage* image = nullptr;
    if (r.raw.has_value()) {
      const engine::RgbImage& raw = *r.raw;
      if (raw.width <= 0 || raw.height <= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "image: raw image size ", raw.width, "x", raw.height, " must be positive"));
      }
      const int64_t pixels = int64_t{raw.width} * raw.height;
      if (pixels > options_.decode_limits.max_pixels) {
        return absl::InvalidArgumentError(absl::StrCat(
            "image: raw image of ", raw.width, "x", raw.height, " = ", pixels,
            " pixels exceeds the limit of ", options_.decode_limits.max_pixels, " pixels"));
      }
      if (static_cast<int64_t>(raw.rgb.size()) != 3 * pixels) {
        return absl::InvalidArgumentError(absl::StrCat(
            "image: raw RGB of ", raw.width, "x", raw.height, " needs exactly ", 3 * pixels,
            " bytes (width * height * 3), got ", raw.rgb.size()));
      }
      image = &raw;
    } else {
      engine::DecodeLimits limits = options_.decode_limits;
      if (options_.jpeg_scaled_decode) {  // no smaller than the model's input
        limits.jpeg_scaled_min_side = static_cast<int>(dir_.preprocess.size);
      }
      absl::StatusOr<engine::RgbImage> d = engine::DecodeImage(r.encoded_image, limits);
      if (!d.ok()) {
        return absl::Status(d.status().code(), absl::StrCat("image: ", d.status().message()));
      }
      decoded = *std::move(d);
      image = &decoded;
    }
    // Coordinates (prompt regions, results) refer to the file's own size,
    // also when a JPEG was decoded at reduced scale.
    job.width = engine::SourceWidth(*image);
    job.height = engine::SourceHeight(*image);
    const bool letterbox = options_.image_mode == Options::ImageMode::kLetterbox;
    // Letterbox: prompts quantize regions against the square canvas (side
    // max(W, H) in original pixels), after checking them against the image.
    job.coord_width = letterbox ? std::max(job.width, job.height) : job.width;
    job.coord_height = letterbox ? std::max(job.width, job.height) : job.height;
    for (size_t i = 0; i < r.tasks.size(); ++i) {
      const TaskInput& t = r.tasks[i];
      const std::string where =
          r.tasks.size() > 1 ? absl::StrCat("tasks[", i, "] ", engine::SpecOf(t.task).token, ": ")
                             : absl::StrCat(engine::SpecOf(t.task).token, ": ");
      if (letterbox && t.region.has_value()) {
        absl::StatusOr<std::array<int, 4>> inside =
            engine::QuantizeBox(*t.region, image->width, image->height);
        if (!inside.ok()) {
          return absl::Status(inside.status().code(), absl::StrCat(where, inside.status().message()));
        }
      }
      absl::StatusOr<std::vector<int32_t>> ids = engine::EncodePrompt(
          *tokenizer_, t.task, t.text, t.region, job.coord_width, job.coord_height,
          static_cast<int>(dir_.decoder.max_positions), static_cast<int>(dir_.num_image_tokens));
      if (!ids.ok()) {
        return absl::Status(ids.status().code(), absl::StrCat(where, ids.status().message()));
      }
      if (static_cast<int>(ids->size()) > options_.max_prompt_tokens) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "the prompt is ", ids->size(), " tokens; this server accepts at most ",
            options_.max_prompt_tokens, " (--max_prompt_tokens); shorten the text"));
      }
      job.prompt_ids.push_back(*std::move(ids));
    }
    if (features_.enabled()) {
      FLORENCE_ASSIGN_OR_RETURN(
          job.image_key,
          r.raw.has_value()
              ? Sha256Of(absl::StrCat("raw:", image->width, "x", image->height),
                         absl::string_view(reinterpret_cast<const char*>(image->rgb.data()), image->rgb.size()))
              : Sha256Of("encoded:", r.encoded_image));
    }
    if (letterbox) {
      job.pixels.resize(engine::PreprocessedSize(dir_.preprocess));
      FLORENCE_ASSIGN_OR_RETURN(
          engine::Letterbox box,
          engine::PreprocessLetterboxInto(*image, dir_.preprocess, absl::MakeSpan(job.pixels)));
      job.image_token_mask = engine::LetterboxTokenMask(
          box, static_cast<int>(dir_.preprocess.size), letterbox_patch_);
      job.request.encoded_image = std::string();
      job.request.raw.reset();
      return absl::OkStatus();
    }
    job.pixels.resize(engine::PreprocessedSize(dir_.preprocess));
    FLORENCE_RETURN_IF_ERROR(
        engine::PreprocessInto(*image, dir_.preprocess, absl::MakeSpan(job.pixels)));
    // The pixels are all that is needed now.
    job.request.encoded_image = std::string();
    job.request.raw.reset();
    return absl::OkStatus();
  }

  // ---- Engine thread ---------------------------------------------------------

  void EngineLoop() {
    c10::InferenceMode guard;
    while (true) {
      std::vector<std::shared_ptr<Job>> to_encode;
      std::vector<std::pair<std::shared_ptr<Job>, absl::Status>> to_fail;
      bool decode = false;
      bool stop = false;
      {
        absl::MutexLock lock(&mu_);
        while (true) {
          stop = stop_;
          if (stop) break;
          const absl::Time now = absl::Now();
          // Requests that expired or were cancelled while queued leave now.
          for (auto it = queue_.begin(); it != queue_.end();) {
            if ((*it)->request.deadline <= now) {
              to_fail.emplace_back(*it, absl::DeadlineExceededError(absl::StrCat(
                                            "the deadline passed after ",
                                            static_cast<int64_t>(MsBetween((*it)->request.received, now)),
                                            " ms in the queue, before encoding started")));
              it = queue_.erase(it);
              --waiting_;
            } else {
              ++it;
            }
          }
          if (!to_fail.empty()) break;
          QueueSummary q;
          q.waiting = static_cast<int>(queue_.size());
          q.decoding = !active_.empty();
          int free_rows = kv_->free_rows();
          for (const auto& job : queue_) {
            q.oldest_enqueued = std::min(q.oldest_enqueued, job->enqueued);
            q.nearest_deadline = std::min(q.nearest_deadline, job->request.deadline);
          }
          for (const auto& job : queue_) {  // in order: no overtaking the head
            if (job->rows_needed > free_rows) break;
            free_rows -= job->rows_needed;
            ++q.admissible;
          }
          const Decision d = DecideNext(q, now, options_.policy);
          if (d.action == Decision::Action::kEncode) {
            to_encode.assign(queue_.begin(), queue_.begin() + d.batch);
            queue_.erase(queue_.begin(), queue_.begin() + d.batch);
            waiting_ -= d.batch;
            break;
          }
          if (d.action == Decision::Action::kDecode) {
            decode = true;
            break;
          }
          // Wake for new work, a cancel, or the policy's time. A cancel of a
          // running sequence needs no wake-up: nothing runs while we sleep.
          work_cv_.WaitWithDeadline(&mu_, d.wake_at);
        }
      }
      if (stop) break;
      PublishQueueDepth();
      for (auto& [job, status] : to_fail) Fail(job, status);
      if (!to_encode.empty()) {
        EncodeBatch(std::move(to_encode));
      } else if (decode) {
        DecodeStep();
      }
    }
    // Shutting down: fail what is left.
    std::vector<std::shared_ptr<Job>> left;
    {
      absl::MutexLock lock(&mu_);
      left.assign(queue_.begin(), queue_.end());
      waiting_ -= static_cast<int64_t>(queue_.size());
      queue_.clear();
    }
    for (auto& seq : active_) left.push_back(seq->job);
    active_.clear();
    for (auto& job : left) Fail(job, absl::UnavailableError("the server is shutting down"));
  }

  void EncodeBatch(std::vector<std::shared_ptr<Job>> jobs) {
    const absl::Time start = absl::Now();
    // Cancelled while the policy decided: drop before spending the encoder.
    std::vector<std::shared_ptr<Job>> live;
    for (auto& job : jobs) {
      if (job->cancelled) {
        Fail(job, absl::CancelledError("the request was cancelled by the client"));
      } else {
        live.push_back(std::move(job));
      }
    }
    if (live.empty()) return;
    std::vector<std::unique_ptr<Sequence>> joined;
    int images_run = 0;
    int tasks = 0;
    absl::Status st = GuardTorch("encode", [&]() -> absl::Status {
      const auto device = model_->device();
      const int64_t size = dir_.preprocess.size;
      // Vision tower for the images the cache does not hold.
      std::vector<at::Tensor> features(live.size());
      std::vector<size_t> misses;
      std::vector<bool> cached(live.size(), false);
      for (size_t j = 0; j < live.size(); ++j) {
        if (features_.enabled()) {
          if (auto hit = features_.Get(live[j]->image_key)) {
            features[j] = *hit;
            cached[j] = true;
            std::vector<float>().swap(live[j]->pixels);
            continue;
          }
        }
        misses.push_back(j);
      }
      if (!misses.empty()) {
        at::Tensor pixels = at::empty({static_cast<int64_t>(misses.size()), 3, size, size}, at::kFloat);
        for (size_t m = 0; m < misses.size(); ++m) {
          std::vector<float>& src = live[misses[m]]->pixels;
          std::memcpy(pixels[m].data_ptr<float>(), src.data(), src.size() * sizeof(float));
          std::vector<float>().swap(src);
        }
        const int64_t n = static_cast<int64_t>(misses.size());
        const int64_t chunk = vision_batch_ > 0 ? vision_batch_ : n;
        std::vector<at::Tensor> outs;
        for (int64_t first = 0; first < n; first += chunk) {
          FLORENCE_ASSIGN_OR_RETURN(
              at::Tensor part, model_->ImageFeatures(pixels.narrow(0, first, std::min(chunk, n - first))));
          outs.push_back(std::move(part));
        }
        const at::Tensor out = outs.size() == 1 ? outs[0] : at::cat(outs, 0);
        for (size_t m = 0; m < misses.size(); ++m) {
          features[misses[m]] = out.narrow(0, static_cast<int64_t>(m), 1);
          if (features_.enabled()) features_.Put(live[misses[m]]->image_key, features[misses[m]].clone());
        }
        images_run = static_cast<int>(misses.size());
      }
      // One encoder row per task, prompts right-padded to the longest.
      std::vector<at::Tensor> rows_features;
      int64_t t_max = 0;
      for (size_t j = 0; j < live.size(); ++j) {
        for (const auto& ids : live[j]->prompt_ids) {
          rows_features.push_back(features[j]);
          t_max = std::max<int64_t>(t_max, static_cast<int64_t>(ids.size()));
        }
      }
      tasks = static_cast<int>(rows_features.size());
      const int64_t n_img = features[0].size(1);
      const auto long_opts = at::TensorOptions().dtype(at::kLong);
      at::Tensor ids = at::full({tasks, t_max}, dir_.tokens.pad, long_opts);
      at::Tensor mask = at::zeros({tasks, n_img + t_max}, long_opts);
      std::vector<int64_t> lens;
      int64_t row = 0;
      for (const auto& job : live) {
        for (const auto& p : job->prompt_ids) {
          auto acc = ids.accessor<int64_t, 2>();
          for (size_t t = 0; t < p.size(); ++t) acc[row][t] = p[t];
          mask[row].narrow(0, 0, n_img + static_cast<int64_t>(p.size())).fill_(1);
          if (!job->image_token_mask.empty()) {  // letterbox: padding tokens masked
            auto m = mask.accessor<int64_t, 2>();
            for (int64_t i = 0; i < n_img; ++i) m[row][i] = job->image_token_mask[i];
          }
          lens.push_back(n_img + static_cast<int64_t>(p.size()));
          ++row;
        }
      }
      at::Tensor feats = at::cat(rows_features, 0);
      const at::Tensor mask_dev = mask.to(device);
      FLORENCE_ASSIGN_OR_RETURN(at::Tensor encoded,
                                model_->Encode(feats, ids.to(device), mask_dev));
      FLORENCE_ASSIGN_OR_RETURN(KvPair cross, model_->CrossKv(encoded));
      // CUDA runs asynchronously: wait, or encode_ms would count only the
      // launches and the first decode step would pay for the encoder.
      if (device.is_cuda()) torch::cuda::synchronize(device.index());
      const absl::Time done = absl::Now();
      row = 0;
      for (size_t j = 0; j < live.size(); ++j) {
        const auto& job = live[j];
        for (size_t t = 0; t < job->prompt_ids.size(); ++t, ++row) {
          FLORENCE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Search> search,
                                    engine::Search::Create(job->params));
          // In `joined` as soon as it holds rows, so a failure below frees them.
          joined.push_back(std::make_unique<Sequence>());
          Sequence* seq = joined.back().get();
          seq->job = job;
          seq->task_index = static_cast<int>(t);
          seq->search = std::move(search);
          seq->rows = kv_->Allocate(seq->search->rows());
          seq->cross_row = kv_->AllocateCross();
          seq->cross_len = lens[row];
          kv_->WriteCross(seq->cross_row, cross, row, lens[row], mask_dev[row]);
          seq->joined = done;
          seq->timings.prepare_ms = job->prepare_ms;
          seq->timings.queue_ms = MsBetween(job->request.received, start);
          seq->timings.encode_ms = MsBetween(start, done);
          seq->timings.encoder_batch_size = static_cast<int>(live.size());
          seq->timings.features_cached = cached[j];
          observer_->OnQueueTime(job->request.tasks[t].task, seq->timings.queue_ms / 1000.0);
        }
      }
      return absl::OkStatus();
    });
    if (!st.ok()) {
      // A model failure fails every request of its batch, with the same status.
      FreeRows(joined);
      UpdateActive();
      log::Error(absl::StrCat("encoder batch of ", live.size(), " requests failed: ", st.ToString()));
      for (auto& job : live) Fail(job, st);
      return;
    }
    observer_->OnEncoderBatch(static_cast<int>(live.size()), tasks, images_run,
                              absl::ToDoubleSeconds(absl::Now() - start));
    for (auto& seq : joined) active_.push_back(std::move(seq));
    UpdateActive();
  }

  // The self and cross lengths a decode step attends over: the longest in
  // use by the running sequences, padded to kAttentionLengthQuantum (the pool
  // holds whole quanta).
  std::pair<int64_t, int64_t> LengthsInUse() const {
    int64_t self_len = 1;
    int64_t cross_len = 1;
    for (const auto& seq : active_) {
      self_len = std::max(self_len, seq->search->position() + 1);
      cross_len = std::max(cross_len, seq->cross_len);
    }
    return {RoundUpToQuantum(self_len), RoundUpToQuantum(cross_len)};
  }

  // Frees the pool rows of `gone` (no longer in active_) and renumbers the
  // rows the pool moved.
  void FreeRows(const std::vector<std::unique_ptr<Sequence>>& gone) {
    std::vector<int64_t> rows;
    std::vector<int64_t> cross_rows;
    for (const auto& seq : gone) {
      rows.insert(rows.end(), seq->rows.begin(), seq->rows.end());
      if (seq->cross_row >= 0) cross_rows.push_back(seq->cross_row);
    }
    if (rows.empty() && cross_rows.empty()) return;
    const auto [self_len, cross_len] = LengthsInUse();
    const KvPool::Moves moves = kv_->Free(rows, cross_rows, self_len, cross_len);
    const absl::flat_hash_map<int64_t, int64_t> renumber(moves.self.begin(), moves.self.end());
    const absl::flat_hash_map<int64_t, int64_t> renumber_cross(moves.cross.begin(),
                                                               moves.cross.end());
    for (auto& seq : active_) {
      for (int64_t& r : seq->rows) {
        auto it = renumber.find(r);
        if (it != renumber.end()) r = it->second;
      }
      auto it = renumber_cross.find(seq->cross_row);
      if (it != renumber_cross.end()) seq->cross_row = it->second;
    }
  }

  // Removes the sequences for which `drop` is true from the batch (their rows
  // freed) and returns them.
  template <typename Pred>
  std::vector<std::unique_ptr<Sequence>> RemoveIf(Pred drop) {
    std::vector<std::unique_ptr<Sequence>> removed;
    std::vector<std::unique_ptr<Sequence>> kept;
    for (auto& seq : active_) {
      (drop(*seq) ? removed : kept).push_back(std::move(seq));
    }
    active_ = std::move(kept);
    FreeRows(removed);
    return removed;
  }

  void UpdateActive() {
    kv_in_use_ = kv_->bytes_in_use();
    observer_->OnActive(static_cast<int64_t>(active_.size()), kv_in_use_.load());
  }

  void DecodeStep() {
    const absl::Time now = absl::Now();
    // Cancelled or expired requests leave before the step (all their tasks).
    absl::flat_hash_map<Job*, absl::Status> gone;
    for (const auto& seq : active_) {
      Job* job = seq->job.get();
      if (gone.contains(job)) continue;
      if (job->cancelled) {
        gone[job] = absl::CancelledError("the request was cancelled by the client");
      } else if (job->request.deadline <= now) {
        gone[job] = absl::DeadlineExceededError(absl::StrCat(
            "the deadline passed while decoding, after ", seq->search->position(),
            " generated tokens"));
      }
    }
    if (!gone.empty()) {
      auto removed = RemoveIf([&](const Sequence& s) { return gone.contains(s.job.get()); });
      UpdateActive();  // before the sinks hear of it: their rows are already free
      absl::flat_hash_map<Job*, bool> failed;
      for (auto& seq : removed) {
        if (failed.contains(seq->job.get())) continue;
        failed[seq->job.get()] = true;
        Fail(seq->job, gone[seq->job.get()]);
      }
    }
    if (active_.empty()) return;

    const absl::Time start = absl::Now();
    const int n = kv_->used();
    std::vector<std::unique_ptr<Sequence>> finished;
    absl::Status st = GuardTorch("decode", [&]() -> absl::Status {
      const auto device = model_->device();
      std::vector<int64_t> ids(n, dir_.tokens.pad);
      std::vector<int64_t> pos(n, 0);
      std::vector<int64_t> cross_rows(n, 0);
      for (const auto& seq : active_) {
        const std::vector<int64_t> last = seq->search->last_tokens();
        for (size_t j = 0; j < seq->rows.size(); ++j) {
          ids[seq->rows[j]] = last[j];
          pos[seq->rows[j]] = seq->search->position();
          cross_rows[seq->rows[j]] = seq->cross_row;
        }
      }
      const auto [self_len, cross_len] = LengthsInUse();
      KvPair self = kv_->SelfView(self_len);
      FLORENCE_ASSIGN_OR_RETURN(
          at::Tensor logits,
          model_->DecodeStep(at::tensor(ids, at::kLong).to(device),
                             at::tensor(pos, at::kLong).to(device), &self,
                             kv_->CrossView(cross_len), kv_->MaskView(cross_len),
                             at::tensor(cross_rows, at::kLong).to(device)));
      logits = logits.to(at::kCPU);
      for (const auto& seq : active_) {
        at::Tensor rows = at::tensor(seq->rows, at::kLong);
        const int64_t written = seq->search->position() + 1;  // this sequence's positions so far
        const std::vector<int64_t> sources = seq->search->Advance(logits.index_select(0, rows));
        bool identity = true;
        for (size_t j = 0; j < sources.size(); ++j) identity &= sources[j] == static_cast<int64_t>(j);
        if (!identity) kv_->Reorder(seq->rows, sources, seq->search->shared_positions(), written);
        if (seq->job->request.stream && !seq->search->done()) Publish(*seq);
      }
      return absl::OkStatus();
    });
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    observer_->OnDecodeStep(n, static_cast<int>(active_.size()), seconds);
    if (!st.ok()) {
      log::Error(absl::StrCat("decode step over ", n, " rows failed: ", st.ToString()));
      auto removed = RemoveIf([](const Sequence&) { return true; });
      UpdateActive();
      absl::flat_hash_map<Job*, bool> failed;
      for (auto& seq : removed) {
        if (failed.contains(seq->job.get())) continue;
        failed[seq->job.get()] = true;
        Fail(seq->job, st);
      }
      return;
    }
    finished = RemoveIf([](const Sequence& s) { return s.search->done(); });
    UpdateActive();
    const absl::Time end = absl::Now();
    for (auto& seq : finished) {
      seq->timings.decode_ms = MsBetween(seq->joined, end);
      const engine::Task task = seq->job->request.tasks[seq->task_index].task;
      engine::SearchResult result = seq->search->result();
      observer_->OnTaskGenerated(task, seq->timings.encode_ms / 1000.0,
                                 seq->timings.decode_ms / 1000.0,
                                 static_cast<int64_t>(result.tokens.size()) - 1);
      std::shared_ptr<Job> job = seq->job;
      Post(job, [this, job, index = seq->task_index, timings = seq->timings,
                 result = std::move(result)]() mutable {
        FinishTask(job, index, std::move(result), timings);
      });
    }
  }

  // Streaming: hands the search's stable prefix to the strand if it grew.
  void Publish(Sequence& seq) {
    engine::SearchResult prefix = seq.search->stable_prefix();
    if (prefix.tokens.size() <= seq.published) return;
    seq.published = prefix.tokens.size();
    std::shared_ptr<Job> job = seq.job;
    Post(job, [this, job, index = seq.task_index, prefix = std::move(prefix)] {
      if (job->completed) return;
      engine::ItemTracker& tracker = Tracker(*job, index);
      std::vector<engine::ItemEvent> events = tracker.Update(prefix.tokens, prefix.token_logprobs);
      if (!events.empty()) job->sink->OnEvents(index, std::move(events));
    });
  }

  engine::ItemTracker& Tracker(Job& job, int index) {
    auto& t = job.trackers[index];
    if (!t) {
      t = std::make_unique<engine::ItemTracker>(*tokenizer_, job.request.tasks[index].task,
                                                job.coord_width, job.coord_height);
    }
    return *t;
  }

  // Strand: detokenize, parse, confidences; completes the job after its last
  // task.
  void FinishTask(const std::shared_ptr<Job>& job, int index, engine::SearchResult result,
                  TaskTimings timings) {
    if (job->completed) return;
    const engine::Task task = job->request.tasks[index].task;
    TaskOutput& out = job->outputs[index];
    out.task = task;
    out.token_ids = std::move(result.tokens);
    out.token_logprobs = std::move(result.token_logprobs);
    out.sequence_score = result.sequence_score;
    const std::vector<int32_t> ids32(out.token_ids.begin(), out.token_ids.end());
    out.generated_text = tokenizer_->Decode(ids32, /*skip_special_tokens=*/false);
    absl::StatusOr<engine::TaskResult> parsed =
        engine::ParseGeneration(task, out.generated_text, job->coord_width, job->coord_height);
    if (!parsed.ok()) {
      Complete(job, parsed.status());
      return;
    }
    out.parsed = *std::move(parsed);
    engine::ItemTracker& tracker = Tracker(*job, index);
    std::vector<engine::ItemEvent> events = tracker.Finish(out.token_ids, out.token_logprobs);
    out.confidences = tracker.confidences();
    if (job->request.stream && !events.empty()) job->sink->OnEvents(index, std::move(events));
    out.prompt_tokens = static_cast<int>(job->prompt_ids[index].size());
    out.image_tokens = static_cast<int>(dir_.num_image_tokens);
    out.num_beams = job->params.num_beams;
    out.max_new_tokens = job->params.max_new_tokens;
    out.image_width = job->width;
    out.image_height = job->height;
    timings.total_ms = MsBetween(job->request.received, absl::Now());
    out.timings = timings;
    if (--job->tasks_left > 0) return;
    const double total = timings.total_ms;
    service_ms_ewma_ = 0.8 * service_ms_ewma_.load() + 0.2 * total;
    Complete(job, std::move(job->outputs));
  }

  const engine::ModelDir dir_;
  const std::unique_ptr<engine::Tokenizer> tokenizer_;
  const std::unique_ptr<engine::ModelBackend> model_;
  const std::unique_ptr<KvPool> kv_;  // engine thread
  const Options options_;
  NullObserver null_observer_;
  SchedulerObserver* const observer_;
  FeatureCache features_;  // engine thread
  const int letterbox_patch_;  // canvas pixels per image token side
  const int64_t vision_batch_;  // images per vision-tower call (0 = all)

  absl::Mutex depth_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // orders the queue-depth publishes
  mutable absl::Mutex mu_;  // protects the queue, registry and counters below
  absl::CondVar work_cv_;   // signalled on new queued work, cancel, stop
  std::vector<std::shared_ptr<Job>> queue_ ABSL_GUARDED_BY(mu_);  // by priority, then arrival
  absl::flat_hash_map<RequestHandle, std::weak_ptr<Job>> registry_ ABSL_GUARDED_BY(mu_);
  int64_t waiting_ ABSL_GUARDED_BY(mu_) = 0;    // preparing or queued
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // accepted, not completed
  RequestHandle next_handle_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<int64_t> kv_in_use_{0};
  std::atomic<double> service_ms_ewma_{0};

  std::vector<std::unique_ptr<Sequence>> active_;  // engine thread
  std::unique_ptr<WorkerPool> pool_;
  std::thread engine_thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const std::string& model_dir,
                                                             const Options& options,
                                                             SchedulerObserver* observer) {
  return CreateWithModel(model_dir, options, observer, nullptr);
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::CreateWithModel(
    const std::string& model_dir, const Options& options, SchedulerObserver* observer,
    std::unique_ptr<engine::ModelBackend> model) {
  if (options.policy.max_batch < 1 || options.max_queue < 1 || options.worker_threads < 1 ||
      options.max_prompt_tokens < 3 || options.policy.max_delay < absl::ZeroDuration() ||
      options.vision_batch < 0) {
    return absl::InvalidArgumentError(
        "scheduler options: max_batch, max_queue and worker_threads must be >= 1, "
        "max_prompt_tokens >= 3, max_delay >= 0 and vision_batch >= 0");
  }
  FLORENCE_ASSIGN_OR_RETURN(engine::ModelDir dir, engine::LoadModelDir(model_dir));
  FLORENCE_RETURN_IF_ERROR(engine::ValidatePreprocessConfig(dir.preprocess));
  FLORENCE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tokenizer,
                            engine::Tokenizer::FromFile(dir.tokenizer_path));
  if (options.image_mode == Options::ImageMode::kLetterbox && options.jpeg_scaled_decode) {
    return absl::InvalidArgumentError(
        "reduced-scale JPEG decoding works with the resize image mode only, not letterbox");
  }
  if (options.image_mode == Options::ImageMode::kLetterbox && LetterboxPatch(dir) == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "letterbox image mode needs the image tokens to form a square grid over the canvas; this model "
        "has ", dir.num_image_tokens, " tokens on a ", dir.preprocess.size, " px canvas"));
  }
  KvPool::Shape shape;
  shape.layers = dir.decoder.layers;
  shape.heads = dir.decoder.heads;
  shape.head_dim = dir.decoder.head_dim;
  // Whole attention quanta, so LengthsInUse() never pads past the pool.
  shape.self_len = RoundUpToQuantum(dir.decoder.max_positions);
  shape.cross_len = RoundUpToQuantum(dir.num_image_tokens + options.max_prompt_tokens);
  // Loading the model and zeroing the pool run parallel Torch kernels. OpenMP
  // (libgomp) keeps a worker pool for every thread that ever led a parallel
  // region, and once it manages more threads than there are CPUs it stops
  // spinning at barriers: each of a decode step's ~150 parallel kernels then
  // pays a futex sleep and wake-up (measured: ~100 context switches per step
  // per thread, steps 25% slower). So this set-up runs on a thread that exits,
  // releasing its pool, and the engine thread is left as the only leader.
  std::unique_ptr<KvPool> kv;
  absl::Status setup;
  std::thread([&] {
    setup = [&]() -> absl::Status {
      if (model == nullptr) {
        FLORENCE_ASSIGN_OR_RETURN(
            engine::LoadedBackend loaded,
            engine::CreateBackend(dir, {options.backend, options.device, options.num_threads,
                                        options.cpu_prepack}));
        log::Info(absl::StrCat("model backend: ", loaded.name,
                               loaded.note.empty() ? "" : absl::StrCat(" (", loaded.note, ")")));
        if (!loaded.warning.empty()) log::Warn(loaded.warning);
        model = std::move(loaded.model);
      }
      FLORENCE_ASSIGN_OR_RETURN(
          kv, KvPool::Create(*model, shape, options.kv_cache_bytes, options.max_rows));
      return absl::OkStatus();
    }();
  }).join();
  FLORENCE_RETURN_IF_ERROR(setup);
  log::Info(absl::StrCat("KV-cache pool: ", kv->capacity(), " rows of ",
                         kv->row_bytes() >> 20, " MiB (", (kv->capacity() * kv->row_bytes()) >> 20,
                         " MiB), ", shape.self_len, " decoder + ", shape.cross_len,
                         " encoder positions per row"));
  return std::unique_ptr<Scheduler>(new SchedulerImpl(std::move(dir), std::move(tokenizer),
                                                      std::move(model), std::move(kv), options,
                                                      observer));
}

}  // namespace florence::batching
