// Prometheus metrics for the server: the scheduler's SchedulerObserver events
// plus per-RPC series, served as text on GET /metrics by an HTTP endpoint of
// its own (prometheus-cpp's civetweb exposer, not the gRPC port).
//
// Series (all prefixed florence_, seconds and bytes in the names):
//   florence_requests_total{method,task,code}             counter
//   florence_request_duration_seconds{method,task}        histogram, end to end
//   florence_time_to_first_item_seconds{task}             histogram, streamed
//   Run florence_queue_time_seconds{task}                     histogram
//   florence_prefill_duration_seconds{task}               histogram, encode
//   florence_decode_duration_seconds{task}                histogram
//   florence_generated_tokens_total{task}                 counter
//   florence_encoder_batch_size                           histogram, requests
//   florence_encoder_batch_duration_seconds               histogram
//   florence_encoder_prompts_total                        counter
//   florence_encoder_images_total                         counter, vision tower
//   florence_decode_step_rows                             histogram
//   florence_decode_step_sequences                        histogram
//   florence_decode_step_duration_seconds                 histogram
//   florence_queue_depth                                  gauge
//   florence_active_sequences                             gauge
//   florence_kv_cache_used_bytes                          gauge
// `task` is engine::TaskName() ("od", "caption"), "none" for a request without
// a single task; `code` is absl::StatusCodeToString() ("OK",
// "INVALID_ARGUMENT"). Labelled series appear on first use. Tokens per second
// is rate(florence_generated_tokens_total[1m]).
//
// Threading: every recording method may be called from any thread at any time
// (the engine thread, gRPC threads) and never blocks on I/O: it updates
// atomics, or takes a short uncontended lock (a histogram's, or the RPC-series
// map's) for a few instructions. Scrapes run on the exposer's own threads.
#ifndef FLORENCE_SERVER_METRICS_H_
#define FLORENCE_SERVER_METRICS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "batching/observer.h"
#include "engine/task.h"

namespace florence::server {

class Metrics final : public batching::SchedulerObserver {
 public:
  // Starts serving GET /metrics on `listen_address`, "HOST:PORT" or ":PORT"
  // (all interfaces); port 0 picks a free port (see port()). An empty address
  // serves nothing: the metrics are still recorded and Serialize() works.
  // InvalidArgument for a malformed address or one that is not local,
  // Unavailable when the port is taken, PermissionDenied for a privileged port.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      const std::string& listen_address);

  // Stops the HTTP endpoint (joining its threads) before the metrics go away;
  // with an endpoint this takes up to 2 s (civetweb's poll interval).
  ~Metrics() override;

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The bound port; 0 when there is no endpoint.
  int port() const;

  // batching::SchedulerObserver.
  void OnQueueDepth(int64_t depth) override;
  void OnEncoderBatch(int requests, int tasks, int images,
                      double seconds) override;
  void OnDecodeStep(int rows, int sequences, double seconds) override;
  void OnQueueTime(engine::Task task, double seconds) override;
  void OnTaskGenerated(engine::Task task, double prefill_seconds,
                       double decode_seconds, int64_t tokens) override;
  void OnActive(int64_t sequences, int64_t kv_bytes_in_use) override;

  // One RPC completed with `code` after `seconds` end to end. `method` is the
  // RPC's short name ("Caption", "Run"); `task` is nullopt when the request
  // named no single task (rejected before one was known, or several tasks).
  // Call exactly once per RPC.
  void OnRpcDone(absl::string_view method, std::optional<engine::Task> task,
                 absl::StatusCode code, double seconds);
  // A streamed Run sent its first item `seconds` after the call started.
  void OnFirstItem(engine::Task task, double seconds);

  // Every florence_* series in the text exposition format (what /metrics
  // serves, minus prometheus-cpp's own exposer_* series).
  std::string Serialize() const;

 private:
  struct Impl;
  explicit Metrics(std::unique_ptr<Impl> impl);

  const std::unique_ptr<Impl> impl_;
};

}  // namespace florence::server

#endif  // FLORENCE_SERVER_METRICS_H_
