#include "server/metrics.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "engine/pipeline/task_names.h"
#include "engine/task.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/labels.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace florence::server {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// Whole requests on CPU: 10 ms to 10 minutes, 1-2.5-5 steps.
constexpr double kRequestSecondsBuckets[] = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 600};
// Stages of a request (queueing, encode, decode): from 1 ms.
constexpr double kStageSecondsBuckets[] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1,     2.5,    5,     10,   25,    50,   100, 250,  600};
// One decoder step over the batch.
constexpr double kStepSecondsBuckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
constexpr double kEncoderBatchBuckets[] = {1, 2, 4, 8, 16, 32, 64};
constexpr double kDecodeRowsBuckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};

Histogram::BucketBoundaries Bounds(absl::Span<const double> bounds) {
  return Histogram::BucketBoundaries(bounds.begin(), bounds.end());
}

// Label slots: the tasks in enum order, then "none" (no single task), then
// "unknown" (a Task value outside the table).
constexpr size_t kNoTaskSlot = engine::kTaskNames.size();
constexpr size_t kUnknownTaskSlot = kNoTaskSlot + 1;
constexpr size_t kTaskSlots = kUnknownTaskSlot + 1;

size_t TaskSlot(std::optional<engine::Task> task) {
  if (!task.has_value()) return kNoTaskSlot;
  const auto index = static_cast<size_t>(*task);
  return index < engine::kTaskNames.size() ? index : kUnknownTaskSlot;
}

std::string TaskLabel(size_t slot) {
  if (slot == kNoTaskSlot) return "none";
  if (slot == kUnknownTaskSlot) return "unknown";
  return std::string(engine::kTaskNames[slot]);
}

// absl::StatusCode values are 0..16; anything else is counted as UNKNOWN.
constexpr size_t kStatusCodes = 17;

size_t CodeSlot(absl::StatusCode code) {
  const auto index = static_cast<size_t>(code);
  return index < kStatusCodes ? index
                              : static_cast<size_t>(absl::StatusCode::kUnknown);
}

// Durations arrive from clocks; a NaN would poison a histogram's sum for good.
double NonNegative(double seconds) { return seconds >= 0 ? seconds : 0; }

// One child of a {task}-labelled family per task, created on first use and
// read lock-free after that.
template <typename T>
class PerTask {
 public:
  // `add` returns the family's child for the given labels (Family<T>::Add).
  explicit PerTask(std::function<T&(const prometheus::Labels&)> add)
      : add_(std::move(add)) {}

  T& operator[](std::optional<engine::Task> task) {
    const size_t slot = TaskSlot(task);
    T* metric = slots_[slot].load(std::memory_order_acquire);
    if (metric == nullptr) {
      // Threads racing here get the same child: Family::Add returns the
      // existing one for known labels.
      metric = &add_({{"task", TaskLabel(slot)}});
      slots_[slot].store(metric, std::memory_order_release);
    }
    return *metric;
  }

 private:
  const std::function<T&(const prometheus::Labels&)> add_;
  std::array<std::atomic<T*>, kTaskSlots> slots_{};
};

// The children of the RPC-level families for one (method, task).
struct RpcSeries {
  Histogram* duration = nullptr;
  std::array<Counter*, kStatusCodes> requests{};  // by code, made on first use
};

PerTask<Histogram> PerTaskHistograms(Family<Histogram>& family,
                                     const Histogram::BucketBoundaries& b) {
  return PerTask<Histogram>(
      [&family, b](const prometheus::Labels& labels) -> Histogram& {
        return family.Add(labels, b);
      });
}

// Why binding `host`:`port` failed, found by trying the same bind here:
// civetweb only says "null context when constructing CivetServer".
absl::Status BindFailure(const std::string& listen_address,
                         const std::string& host, const std::string& port,
                         absl::string_view civetweb_error) {
  const std::string what =
      absl::StrCat("cannot serve /metrics on \"", listen_address, "\": ");
  const std::string fix =
      " Pass another address (\"127.0.0.1:9090\", \":0\" for any free port) "
      "or an empty one for no metrics endpoint.";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  std::string bare_host = host;
  if (bare_host.size() >= 2 && bare_host.front() == '[' &&
      bare_host.back() == ']') {
    bare_host = bare_host.substr(1, bare_host.size() - 2);
  }
  if (const int rc =
          getaddrinfo(bare_host.c_str(), port.c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, "host \"", host, "\" does not resolve (",
                     gai_strerror(rc), ").", fix));
  }
  int error = 0;
  const int fd = socket(found->ai_family, SOCK_STREAM, 0);
  if (fd >= 0) {
    const int one = 1;  // as civetweb does
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, found->ai_addr, found->ai_addrlen) != 0) error = errno;
    close(fd);
  } else {
    error = errno;
  }
  freeaddrinfo(found);
  switch (error) {
    case EADDRINUSE:
      return absl::UnavailableError(absl::StrCat(
          what, "port ", port, " is already in use (another server?).", fix));
    case EADDRNOTAVAIL:
      return absl::InvalidArgumentError(absl::StrCat(
          what, "\"", host, "\" is not an address of this machine.", fix));
    case EACCES:
      return absl::PermissionDeniedError(absl::StrCat(
          what, "port ", port, " needs privileges (ports below 1024).", fix));
    case 0:
      return absl::UnavailableError(absl::StrCat(
          what, "the HTTP server did not start (", civetweb_error, ").", fix));
    default:
      return absl::UnavailableError(
          absl::StrCat(what, std::strerror(error), ".", fix));
  }
}

}  // namespace

struct Metrics::Impl {
  Impl()
      : requests(prometheus::BuildCounter()
                     .Name("florence_requests_total")
                     .Help("RPCs completed, by method, task and status code.")
                     .Register(*registry)),
        request_duration(
            prometheus::BuildHistogram()
                .Name("florence_request_duration_seconds")
                .Help("End-to-end RPC latency in seconds, by method and task.")
                .Register(*registry)),
        first_item(PerTaskHistograms(
            prometheus::BuildHistogram()
                .Name("florence_time_to_first_item_seconds")
                .Help("Seconds from the start of a streamed Run to its first "
                      "item, by task.")
                .Register(*registry),
            Bounds(kRequestSecondsBuckets))),
        queue_time(PerTaskHistograms(
            prometheus::BuildHistogram()
                .Name("florence_queue_time_seconds")
                .Help("Seconds a task waited in the queue for its encoder "
                      "batch, by task.")
                .Register(*registry),
            Bounds(kStageSecondsBuckets))),
        prefill(PerTaskHistograms(
            prometheus::BuildHistogram()
                .Name("florence_prefill_duration_seconds")
                .Help("Seconds a task spent in prefill (the encoder batch that "
                      "encoded it), by task.")
                .Register(*registry),
            Bounds(kStageSecondsBuckets))),
        decode(PerTaskHistograms(
            prometheus::BuildHistogram()
                .Name("florence_decode_duration_seconds")
                .Help("Seconds a task spent decoding, by task.")
                .Register(*registry),
            Bounds(kStageSecondsBuckets))),
        tokens([&family = prometheus::BuildCounter()
                              .Name("florence_generated_tokens_total")
                              .Help("Tokens generated, by task.")
                              .Register(*registry)](
                   const prometheus::Labels& labels) -> Counter& {
          return family.Add(labels);
        }),
        encoder_batch_size(prometheus::BuildHistogram()
                               .Name("florence_encoder_batch_size")
                               .Help("Requests per encoder batch.")
                               .Register(*registry)
                               .Add({}, Bounds(kEncoderBatchBuckets))),
        encoder_batch_duration(
            prometheus::BuildHistogram()
                .Name("florence_encoder_batch_duration_seconds")
                .Help("Seconds per encoder batch.")
                .Register(*registry)
                .Add({}, Bounds(kStageSecondsBuckets))),
        encoder_prompts(prometheus::BuildCounter()
                            .Name("florence_encoder_prompts_total")
                            .Help("Task prompts encoded (a multi-task request "
                                  "has several).")
                            .Register(*registry)
                            .Add({})),
        encoder_images(prometheus::BuildCounter()
                           .Name("florence_encoder_images_total")
                           .Help("Images run through the vision tower (not "
                                 "served from the feature cache).")
                           .Register(*registry)
                           .Add({})),
        decode_step_rows(prometheus::BuildHistogram()
                             .Name("florence_decode_step_rows")
                             .Help("KV-cache rows (beams included) per decoder "
                                   "step.")
                             .Register(*registry)
                             .Add({}, Bounds(kDecodeRowsBuckets))),
        decode_step_sequences(prometheus::BuildHistogram()
                                  .Name("florence_decode_step_sequences")
                                  .Help("Sequences (requests' tasks) per "
                                        "decoder step.")
                                  .Register(*registry)
                                  .Add({}, Bounds(kDecodeRowsBuckets))),
        decode_step_duration(prometheus::BuildHistogram()
                                 .Name("florence_decode_step_duration_seconds")
                                 .Help("Seconds per decoder step.")
                                 .Register(*registry)
                                 .Add({}, Bounds(kStepSecondsBuckets))),
        queue_depth(prometheus::BuildGauge()
                        .Name("florence_queue_depth")
                        .Help("Requests admitted and waiting for their encoder "
                              "batch.")
                        .Register(*registry)
                        .Add({})),
        active_sequences(prometheus::BuildGauge()
                             .Name("florence_active_sequences")
                             .Help("Sequences in the decoder batch.")
                             .Register(*registry)
                             .Add({})),
        kv_cache_bytes(prometheus::BuildGauge()
                           .Name("florence_kv_cache_used_bytes")
                           .Help("KV-cache bytes held by the sequences in the "
                                 "decoder batch.")
                           .Register(*registry)
                           .Add({})) {}

  // The children of requests/request_duration for (method, task, code).
  std::pair<Counter*, Histogram*> RpcChildren(absl::string_view method,
                                              std::optional<engine::Task> task,
                                              absl::StatusCode code)
      ABSL_LOCKS_EXCLUDED(rpc_mu) {
    const size_t task_slot = TaskSlot(task);
    const size_t code_slot = CodeSlot(code);
    absl::MutexLock lock(&rpc_mu);
    RpcSeries& series = rpc_series[{std::string(method), task_slot}];
    if (series.duration == nullptr) {
      series.duration = &request_duration.Add(
          {{"method", std::string(method)}, {"task", TaskLabel(task_slot)}},
          Bounds(kRequestSecondsBuckets));
    }
    Counter*& counter = series.requests[code_slot];
    if (counter == nullptr) {
      counter = &requests.Add(
          {{"method", std::string(method)},
           {"task", TaskLabel(task_slot)},
           {"code", absl::StatusCodeToString(
                        static_cast<absl::StatusCode>(code_slot))}});
    }
    return {counter, series.duration};
  }

  // Declared first: the families below live in it. Shared because
  // prometheus::Exposer holds a weak_ptr to what it serves.
  const std::shared_ptr<prometheus::Registry> registry =
      std::make_shared<prometheus::Registry>();

  Family<Counter>& requests;
  Family<Histogram>& request_duration;
  PerTask<Histogram> first_item;
  PerTask<Histogram> queue_time;
  PerTask<Histogram> prefill;
  PerTask<Histogram> decode;
  PerTask<Counter> tokens;
  Histogram& encoder_batch_size;
  Histogram& encoder_batch_duration;
  Counter& encoder_prompts;
  Counter& encoder_images;
  Histogram& decode_step_rows;
  Histogram& decode_step_sequences;
  Histogram& decode_step_duration;
  Gauge& queue_depth;
  Gauge& active_sequences;
  Gauge& kv_cache_bytes;

  // Guards rpc_series, the cache of the RPC families' children by (method,
  // task slot); held only for the lookup (and, once per new series, the
  // family's insertion), never while recording.
  absl::Mutex rpc_mu;
  absl::flat_hash_map<std::pair<std::string, size_t>, RpcSeries> rpc_series
      ABSL_GUARDED_BY(rpc_mu);

  // Declared last so it is destroyed first: serving stops before the metrics
  // go away. Null without an endpoint.
  std::unique_ptr<prometheus::Exposer> exposer;
  int port = 0;
};

int ThreadStackShimLinked();  // thread_stack.cc

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(
    const std::string& listen_address) {
  // Keeps thread_stack.cc's interposer in every binary that serves /metrics.
  static const int shim_linked = ThreadStackShimLinked();
  (void)shim_linked;
  auto impl = std::make_unique<Impl>();
  if (listen_address.empty()) {
    return absl::WrapUnique(new Metrics(std::move(impl)));
  }

  // "HOST:PORT" or ":PORT". Checked here because civetweb's listening_ports
  // syntax accepts more (lists, "s"/"r" suffixes) and reports nothing useful.
  const size_t colon = listen_address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", listen_address,
        "\" is not HOST:PORT or :PORT (e.g. \"127.0.0.1:9090\", \":0\")"));
  }
  std::string host = listen_address.substr(0, colon);
  const std::string port = listen_address.substr(colon + 1);
  int port_number = -1;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(port, &port_number) || port_number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", listen_address, "\": port \"", port,
                     "\" is not a number from 0 to 65535"));
  }
  if (host.find_first_of(", \t") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics address \"", listen_address, "\": bad host \"", host, "\""));
  }
  if (host.empty()) host = "0.0.0.0";

  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(
        absl::StrCat(host, ":", port), /*num_threads=*/2);
    impl->exposer->RegisterCollectable(impl->registry);
    const std::vector<int> ports = impl->exposer->GetListeningPorts();
    if (ports.empty()) {
      return absl::InternalError(absl::StrCat(
          "metrics endpoint on \"", listen_address, "\" reports no port"));
    }
    impl->port = ports.front();
  } catch (const std::exception& e) {
    impl->exposer.reset();
    return BindFailure(listen_address, host, port, e.what());
  }
  return absl::WrapUnique(new Metrics(std::move(impl)));
}

Metrics::Metrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Metrics::~Metrics() = default;

int Metrics::port() const { return impl_->port; }

void Metrics::OnQueueDepth(int64_t depth) {
  impl_->queue_depth.Set(static_cast<double>(depth));
}

void Metrics::OnEncoderBatch(int requests, int tasks, int images,
                             double seconds) {
  impl_->encoder_batch_size.Observe(requests);
  impl_->encoder_batch_duration.Observe(NonNegative(seconds));
  impl_->encoder_prompts.Increment(tasks);
  impl_->encoder_images.Increment(images);
}

void Metrics::OnDecodeStep(int rows, int sequences, double seconds) {
  impl_->decode_step_rows.Observe(rows);
  impl_->decode_step_sequences.Observe(sequences);
  impl_->decode_step_duration.Observe(NonNegative(seconds));
}

void Metrics::OnQueueTime(engine::Task task, double seconds) {
  impl_->queue_time[task].Observe(NonNegative(seconds));
}

void Metrics::OnTaskGenerated(engine::Task task, double prefill_seconds,
                              double decode_seconds, int64_t tokens) {
  impl_->prefill[task].Observe(NonNegative(prefill_seconds));
  impl_->decode[task].Observe(NonNegative(decode_seconds));
  impl_->tokens[task].Increment(static_cast<double>(tokens));
}

void Metrics::OnActive(int64_t sequences, int64_t kv_bytes_in_use) {
  impl_->active_sequences.Set(static_cast<double>(sequences));
  impl_->kv_cache_bytes.Set(static_cast<double>(kv_bytes_in_use));
}

void Metrics::OnRpcDone(absl::string_view method,
                        std::optional<engine::Task> task, absl::StatusCode code,
                        double seconds) {
  auto [counter, duration] = impl_->RpcChildren(method, task, code);
  counter->Increment();
  duration->Observe(NonNegative(seconds));
}

void Metrics::OnFirstItem(engine::Task task, double seconds) {
  impl_->first_item[task].Observe(NonNegative(seconds));
}

std::string Metrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

}  // namespace florence::server
