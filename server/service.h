// The florence.v1.Florence service on gRPC's callback (reactor) API.
//
// Every handler validates and converts its request (server/convert.h),
// submits it to the scheduler and returns a reactor; it never blocks. The
// scheduler's sink calls (worker threads) write results and Finish the call.
// Client cancellation (OnCancel) cancels the scheduler request, whose cache
// rows are freed within one decode step. gRPC deadlines become the
// scheduler request's deadline.
//
// Before a scheduler is attached (model loading, warm-up) and once draining
// has started, every call gets UNAVAILABLE. With an auth token configured, calls without
// "authorization: Bearer <token>" metadata get UNAUTHENTICATED.
#ifndef FLORENCE_SERVER_SERVICE_H_
#define FLORENCE_SERVER_SERVICE_H_

#include <atomic>
#include <functional>
#include <optional>
#include <vector>
#include <string>

#include "batching/scheduler.h"
#include "florence/v1/florence.grpc.pb.h"
#include "server/metrics.h"

namespace florence::server {

class FlorenceService final : public v1::Florence::CallbackService {
 public:
  // `metrics` (not owned, may be null) must outlive the service.
  FlorenceService(Metrics* metrics, std::string auth_token);

  // Not owned; must outlive every call (the server's Shutdown waits for them).
  void Attach(batching::Scheduler* scheduler) { scheduler_.store(scheduler); }
  // From now on new calls get UNAVAILABLE ("shutting down; retry on another
  // replica") from the service itself, while the port still accepts them.
  void StartDraining() { draining_.store(true); }

  grpc::ServerUnaryReactor* Caption(grpc::CallbackServerContext* ctx,
                                    const v1::CaptionRequest* request,
                                    v1::CaptionResponse* response) override;
  grpc::ServerUnaryReactor* Detect(grpc::CallbackServerContext* ctx,
                                   const v1::DetectRequest* request,
                                   v1::DetectResponse* response) override;
  grpc::ServerUnaryReactor* Ocr(grpc::CallbackServerContext* ctx, const v1::OcrRequest* request,
                                v1::OcrResponse* response) override;
  grpc::ServerUnaryReactor* Segment(grpc::CallbackServerContext* ctx,
                                    const v1::SegmentRequest* request,
                                    v1::SegmentResponse* response) override;
  grpc::ServerUnaryReactor* DescribeRegion(grpc::CallbackServerContext* ctx,
                                           const v1::DescribeRegionRequest* request,
                                           v1::DescribeRegionResponse* response) override;
  grpc::ServerWriteReactor<v1::RunEvent>* Run(grpc::CallbackServerContext* ctx,
                                              const v1::TaskRequest* request) override;
  grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* RunStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* RunMulti(grpc::CallbackServerContext* ctx,
                                     const v1::MultiTaskRequest* request,
                                     v1::MultiTaskResponse* response) override;

  // Shared by the reactors (service.cc).
  struct Context;

 private:
  // The call's context (id, start time, task for metrics) and whether it may
  // proceed: auth, not draining, model attached.
  Context Begin(grpc::CallbackServerContext* ctx, const char* method,
                std::optional<engine::Task> task, absl::Status* admitted);
  // A unary call: copy and convert the request, then hand it to a UnaryCall
  // reactor whose `fill` writes the typed response.
  template <typename Req>
  grpc::ServerUnaryReactor* Unary(
      grpc::CallbackServerContext* ctx, const char* method, const Req& request,
      absl::StatusOr<batching::Request> (*convert)(Req&),
      std::function<absl::Status(std::vector<batching::TaskOutput>&)> fill);

  std::atomic<batching::Scheduler*> scheduler_{nullptr};
  std::atomic<bool> draining_{false};
  Metrics* const metrics_;
  const std::string auth_token_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace florence::server

#endif  // FLORENCE_SERVER_SERVICE_H_
