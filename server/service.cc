#include "server/service.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "engine/pipeline/task_names.h"
#include "server/convert.h"

namespace florence::server {

using batching::RequestHandle;
using batching::TaskOutput;

// What every reactor needs from the service, fixed at call start.
struct FlorenceService::Context {
  batching::Scheduler* scheduler = nullptr;
  Metrics* metrics = nullptr;
  grpc::CallbackServerContext* ctx = nullptr;
  const char* method = "";
  std::string id;
  std::optional<engine::Task> task;
  absl::Time start;

  // Records the call's outcome (metrics, one log line, retry hint metadata).
  // Call once, just before Finish.
  void Record(const absl::Status& status) const {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (metrics != nullptr) metrics->OnRpcDone(method, task, status.code(), seconds);
    const std::string task_name = task ? std::string(engine::TaskName(*task)) : "-";
    if (status.ok()) {
      spdlog::info("[{}] {} {} OK {:.1f} ms", id, method, task_name, seconds * 1e3);
    } else {
      spdlog::info("[{}] {} {} {} {:.1f} ms: {}", id, method, task_name,
                   absl::StatusCodeToString(status.code()), seconds * 1e3,
                   std::string(status.message()));
    }
    if (status.code() == absl::StatusCode::kResourceExhausted && scheduler != nullptr) {
      ctx->AddTrailingMetadata(
          "retry-after-ms", std::to_string(absl::ToInt64Milliseconds(scheduler->RetryHint())));
    }
  }
};

namespace {

using Context = FlorenceService::Context;

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  const auto d = ctx->deadline();
  if (d >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

// A client-chosen id as it may appear in a log line: printable, no spaces, <= 64 chars; else `fallback`.
std::string LogSafeId(absl::string_view id, std::string fallback) {
  bool printable = !id.empty() && id.size() <= 64;
  for (char c : id) printable &= absl::ascii_isgraph(static_cast<unsigned char>(c));
  return printable ? std::string(id) : std::move(fallback);
}

// Request id for logs: the client's x-request-id or a server counter.
std::string RequestId(const grpc::CallbackServerContext* ctx, uint64_t counter) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("x-request-id");
  const std::string fallback = absl::StrCat("r", counter);
  if (it == md.end()) return fallback;
  return LogSafeId(absl::string_view(it->second.data(), it->second.size()), fallback);
}

// Length-independent comparison of the bearer token.
bool TokenMatches(absl::string_view got, absl::string_view want) {
  unsigned char diff = got.size() == want.size() ? 0 : 1;
  for (size_t i = 0; i < got.size(); ++i) {
    diff |= static_cast<unsigned char>(got[i]) ^
            static_cast<unsigned char>(i < want.size() ? want[i] : 0);
  }
  return diff == 0;
}

absl::Status Authorize(const grpc::CallbackServerContext* ctx, const std::string& token) {
  if (token.empty()) return absl::OkStatus();
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "missing credentials: send metadata \"authorization: Bearer <token>\"");
  }
  absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(value, kBearer) || !TokenMatches(value.substr(kBearer.size()), token)) {
    return absl::UnauthenticatedError("invalid bearer token");
  }
  return absl::OkStatus();
}

// ---- Unary RPCs --------------------------------------------------------------

// Fills the typed response from the task outputs.
using FillFn = std::function<absl::Status(std::vector<TaskOutput>&)>;

class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(Context context, absl::Status admitted, absl::StatusOr<batching::Request> request,
            FillFn fill)
      : context_(std::move(context)), fill_(std::move(fill)), sink_(this) {
    absl::Status st = admitted;
    if (st.ok()) st = request.status();
    if (st.ok()) {
      request->id = context_.id;
      request->deadline = DeadlineOf(context_.ctx);
      request->received = context_.start;
      absl::StatusOr<RequestHandle> h = context_.scheduler->Submit(*std::move(request), &sink_);
      if (h.ok()) {
        handle_ = *h;
        submitted_.store(true);
        return;
      }
      st = h.status();
    }
    context_.Record(st);
    Finish(ToGrpcStatus(st));
  }

  void OnCancel() override {
    if (submitted_.load()) context_.scheduler->Cancel(handle_);
  }
  void OnDone() override { delete this; }

 private:
  class Sink final : public batching::RequestSink {
   public:
    explicit Sink(UnaryCall* call) : call_(call) {}
    void OnEvents(int, std::vector<engine::ItemEvent>) override {}
    void OnDone(absl::StatusOr<std::vector<TaskOutput>> result) override {
      absl::Status st = result.status();
      if (st.ok()) st = call_->fill_(*result);
      call_->context_.Record(st);
      call_->Finish(ToGrpcStatus(st));  // last: the call may be deleted after
    }

   private:
    UnaryCall* const call_;
  };

  const Context context_;
  const FillFn fill_;
  Sink sink_;
  RequestHandle handle_ = 0;
  std::atomic<bool> submitted_{false};
};

// ---- Writes shared by the streaming reactors ----------------------------------

// A queue of outgoing messages with at most one write in flight, and Finish
// once the producer is done and the queue has drained. `Reactor` is
// ServerWriteReactor<T> or ServerBidiReactor<R, T>. Never holds its lock
// across StartWrite or Finish.
template <typename Reactor, typename Message>
class WriteQueue {
 public:
  explicit WriteQueue(Reactor* reactor) : reactor_(reactor) {}

  void Push(Message message) ABSL_LOCKS_EXCLUDED(mu_) {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      if (broken_) return;
      pending_.push_back(std::move(message));
      next = NextLocked();
    }
    Run(next);
  }
  // The producer is done: Finish with `status` once everything is written.
  void Close(grpc::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
      status_ = std::move(status);
      next = NextLocked();
    }
    if (next.action != Next::kNothing) Run(next);  // last
  }
  // Messages queued or being written.
  int backlog() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(pending_.size()) + (writing_ ? 1 : 0);
  }
  // From the reactor's OnWriteDone. Returns false when the stream broke (the
  // client went away): the caller should cancel its work.
  bool WriteDone(bool ok) ABSL_LOCKS_EXCLUDED(mu_) {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;
        pending_.clear();
      }
      next = NextLocked();
    }
    Run(next);
    return ok;
  }

 private:
  // What the caller does once it has released the lock. The decision and its claim (writing_ / finished_) are
  // one critical section: a caller outside a reaction (a scheduler thread) touches nothing after unlocking
  // unless it holds that claim, because another thread's Finish may let gRPC delete the reactor at any moment.
  struct Next {
    enum { kNothing, kWrite, kFinish } action = kNothing;
    grpc::Status status;
  };
  Next NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Next next;
    if (writing_ || finished_) return next;
    if (!pending_.empty()) {
      current_ = std::move(pending_.front());
      pending_.pop_front();
      writing_ = true;
      next.action = Next::kWrite;
    } else if (closed_) {
      finished_ = true;
      next.status = status_;
      next.action = Next::kFinish;
    }
    return next;
  }
  void Run(const Next& next) {
    if (next.action == Next::kWrite) reactor_->StartWrite(&current_);
    if (next.action == Next::kFinish) reactor_->Finish(next.status);  // last: may delete the reactor
  }

  Reactor* const reactor_;
  absl::Mutex mu_;  // protects everything below except current_'s contents in flight
  std::deque<Message> pending_ ABSL_GUARDED_BY(mu_);
  Message current_;  // the message being written (owned by gRPC until OnWriteDone)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// ---- Run: one task, streamed ------------------------------------------------

class RunCall final : public grpc::ServerWriteReactor<v1::RunEvent> {
 public:
  RunCall(Context context, absl::Status admitted, absl::StatusOr<batching::Request> request,
          bool return_mask)
      : context_(std::move(context)), return_mask_(return_mask), writes_(this), sink_(this) {
    absl::Status st = admitted;
    if (st.ok()) st = request.status();
    if (st.ok()) {
      request->id = context_.id;
      request->deadline = DeadlineOf(context_.ctx);
      request->received = context_.start;
      request->stream = true;
      absl::StatusOr<RequestHandle> h = context_.scheduler->Submit(*std::move(request), &sink_);
      if (h.ok()) {
        handle_ = *h;
        submitted_.store(true);
        return;
      }
      st = h.status();
    }
    context_.Record(st);
    writes_.Close(ToGrpcStatus(st));
  }

  void OnWriteDone(bool ok) override {
    if (!writes_.WriteDone(ok) && submitted_.load()) context_.scheduler->Cancel(handle_);
  }
  void OnCancel() override {
    if (submitted_.load()) context_.scheduler->Cancel(handle_);
  }
  void OnDone() override { delete this; }

 private:
  class Sink final : public batching::RequestSink {
   public:
    explicit Sink(RunCall* call) : call_(call) {}
    void OnEvents(int, std::vector<engine::ItemEvent> events) override {
      for (const engine::ItemEvent& e : events) {
        if (!call_->first_item_ && call_->context_.metrics != nullptr &&
            call_->context_.task.has_value()) {
          call_->context_.metrics->OnFirstItem(
              *call_->context_.task, absl::ToDoubleSeconds(absl::Now() - call_->context_.start));
        }
        call_->first_item_ = true;
        v1::RunEvent event;
        ToRunEvent(e, &event);
        call_->writes_.Push(std::move(event));
      }
    }
    void OnDone(absl::StatusOr<std::vector<TaskOutput>> result) override {
      absl::Status st = result.status();
      if (st.ok()) {
        v1::RunEvent event;
        st = ToTaskResult(result->front(), call_->return_mask_, event.mutable_result());
        if (st.ok()) call_->writes_.Push(std::move(event));
      }
      call_->context_.Record(st);
      call_->writes_.Close(ToGrpcStatus(st));  // last: the call may be deleted after
    }

   private:
    RunCall* const call_;
  };

  const Context context_;
  const bool return_mask_;
  WriteQueue<grpc::ServerWriteReactor<v1::RunEvent>, v1::RunEvent> writes_;
  Sink sink_;
  bool first_item_ = false;  // sink calls are serialized per request
  RequestHandle handle_ = 0;
  std::atomic<bool> submitted_{false};
};

// ---- RunStream: many requests over one bidirectional stream -------------------

// Requests of one stream that are in the scheduler or answered but not yet written. At the cap the stream
// stops reading, so a client that sends without reading its responses is held back by HTTP/2 flow control
// instead of growing the server's memory.
constexpr int kStreamWindow = 32;

// The call stays open while a read is in flight or a request is unanswered: `reading_` and `outstanding_` are
// claimed under mu_ before the read is started or the request is submitted, so the thread that sees neither
// (reads done, nothing outstanding) is the one that finishes the call, and nothing touches the call after that.
class StreamCall final : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse> {
 public:
  StreamCall(Context context, absl::Status admitted) : context_(std::move(context)), writes_(this) {
    if (!admitted.ok()) {
      context_.Record(admitted);
      writes_.Close(ToGrpcStatus(admitted));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or the call ended)
      bool close = false;
      {
        absl::MutexLock lock(&mu_);
        reading_ = false;
        reads_done_ = true;
        close = ClaimCloseLocked();
      }
      if (close) Close();  // last
      return;
    }
    v1::StreamRequest request = std::move(incoming_);
    incoming_.Clear();
    bool read = false;
    int64_t ordinal = 0;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      ++outstanding_;  // this request keeps the call open until it is answered
      ordinal = ++read_count_;
      read = ClaimReadLocked();
    }
    if (read) StartRead(&incoming_);
    Submit(std::move(request), ordinal);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) CancelAll();  // first: a close racing with this one then records CANCELLED, not OK
    writes_.WriteDone(ok);
    bool read = false;
    {
      absl::MutexLock lock(&mu_);
      read = ClaimReadLocked();  // the write backlog shrank
    }
    if (read) StartRead(&incoming_);
  }
  void OnCancel() override { CancelAll(); }
  void OnDone() override { delete this; }

 private:
  class Sink final : public batching::RequestSink {
   public:
    Sink(StreamCall* call, std::string id, bool return_mask)
        : call_(call), id_(std::move(id)), return_mask_(return_mask) {}
    void OnEvents(int, std::vector<engine::ItemEvent>) override {}
    void OnDone(absl::StatusOr<std::vector<TaskOutput>> result) override {
      v1::StreamResponse response;
      response.set_id(id_);
      absl::Status st = result.status();
      if (st.ok()) st = ToTaskResult(result->front(), return_mask_, response.mutable_result());
      if (!st.ok()) {
        response.clear_result();
        response.set_code(static_cast<int>(st.code()));
        response.set_message(std::string(st.message()));
      }
      call_->Deliver(this, std::move(response));  // last
    }
    RequestHandle handle = 0;
    bool done = false;  // guarded by the call's mu_

   private:
    StreamCall* const call_;
    const std::string id_;
    const bool return_mask_;
  };

  // Runs inside OnReadDone with this request counted in outstanding_; `ordinal`: its place in the stream.
  void Submit(v1::StreamRequest request, int64_t ordinal) {
    const bool return_mask = request.request().return_mask();
    auto sink = std::make_unique<Sink>(this, request.id(), return_mask);
    Sink* raw = sink.get();
    absl::StatusOr<batching::Request> converted = FromTask(*request.mutable_request());
    absl::Status st = converted.status();
    if (st.ok()) {
      converted->id = absl::StrCat(context_.id, "/", LogSafeId(request.id(), absl::StrCat("#", ordinal)));
      converted->deadline = DeadlineOf(context_.ctx);
      converted->received = absl::Now();
      absl::MutexLock lock(&mu_);
      if (cancelled_) {
        st = absl::CancelledError("the stream was cancelled");
      } else {
        sinks_.push_back(std::move(sink));
        absl::StatusOr<RequestHandle> h = context_.scheduler->Submit(*std::move(converted), raw);
        if (h.ok()) {
          raw->handle = *h;
          return;
        }
        sinks_.pop_back();
        st = h.status();
      }
    }
    v1::StreamResponse response;
    response.set_id(request.id());
    response.set_code(static_cast<int>(st.code()));
    response.set_message(std::string(st.message()));
    Answered(nullptr, std::move(response));
  }

  void Deliver(Sink* sink, v1::StreamResponse response) { Answered(sink, std::move(response)); }

  // One request's response: queued for writing, then the request stops holding the call open. From the
  // scheduler's thread (a sink) or inside OnReadDone (a request refused before it reached the scheduler).
  void Answered(Sink* sink, v1::StreamResponse response) {
    writes_.Push(std::move(response));
    bool read = false;
    bool close = false;
    {
      absl::MutexLock lock(&mu_);
      if (sink != nullptr) {
        sink->done = true;
        // Sinks that completed earlier are no longer referenced by the
        // scheduler; this one is still on its way out of OnDone.
        sinks_.remove_if([sink](const std::unique_ptr<Sink>& s) { return s->done && s.get() != sink; });
      }
      --outstanding_;
      read = ClaimReadLocked();
      close = !read && ClaimCloseLocked();
    }
    if (read) StartRead(&incoming_);  // the read in flight keeps the call open
    if (close) Close();               // last
  }

  // Whether to start the next read now; claims it. While cancelled, reads go on: the next one fails at once
  // and ends the reading side.
  bool ClaimReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reading_ || reads_done_ || closed_) return false;
    if (!cancelled_ && outstanding_ + writes_.backlog() >= kStreamWindow) return false;
    reading_ = true;
    return true;
  }

  // Whether the call can finish now (the client stopped sending, every request was answered); claims it.
  bool ClaimCloseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!reads_done_ || reading_ || outstanding_ > 0 || closed_) return false;
    closed_ = true;
    close_status_ = cancelled_ ? absl::CancelledError("the stream was cancelled") : absl::OkStatus();
    return true;
  }

  // Finishes once the queued writes are out. Only by the thread whose ClaimCloseLocked returned true.
  void Close() {
    context_.Record(close_status_);
    writes_.Close(ToGrpcStatus(close_status_));  // last
  }

  void CancelAll() {
    std::vector<RequestHandle> handles;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      for (const auto& s : sinks_) {
        if (!s->done) handles.push_back(s->handle);
      }
    }
    for (RequestHandle h : handles) context_.scheduler->Cancel(h);
  }

  const Context context_;
  WriteQueue<grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>, v1::StreamResponse>
      writes_;
  v1::StreamRequest incoming_;  // owned by the read in flight
  absl::Mutex mu_;              // protects the fields below and Sink::done
  std::list<std::unique_ptr<Sink>> sinks_ ABSL_GUARDED_BY(mu_);
  int64_t read_count_ ABSL_GUARDED_BY(mu_) = 0;  // requests read so far
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;  // requests read and not yet answered
  bool reading_ ABSL_GUARDED_BY(mu_) = false;  // a read is in flight
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status close_status_;  // written once, under mu_, by the thread that claims the close; read by it only
};

// Segmentation instances and the mask, which several typed responses carry.
template <typename Response>
void CopySegmentation(const v1::TaskResult& r, Response* out) {
  out->mutable_instances()->CopyFrom(r.instances());
}

}  // namespace

FlorenceService::FlorenceService(Metrics* metrics, std::string auth_token)
    : metrics_(metrics), auth_token_(std::move(auth_token)) {}

FlorenceService::Context FlorenceService::Begin(grpc::CallbackServerContext* ctx,
                                                const char* method,
                                                std::optional<engine::Task> task,
                                                absl::Status* admitted) {
  Context context;
  context.scheduler = scheduler_.load();
  context.metrics = metrics_;
  context.ctx = ctx;
  context.method = method;
  context.id = RequestId(ctx, ++next_id_);
  context.task = task;
  context.start = absl::Now();
  *admitted = Authorize(ctx, auth_token_);
  if (admitted->ok() && draining_.load()) {
    *admitted = absl::UnavailableError("the server is shutting down; retry on another replica");
  }
  if (admitted->ok() && context.scheduler == nullptr) {
    *admitted = absl::UnavailableError("the model is still loading; retry in a few seconds");
  }
  return context;
}

namespace {

// The task a converted request names, for metrics and logs (none when the
// request was refused or holds several tasks).
std::optional<engine::Task> SingleTask(const absl::StatusOr<batching::Request>& r) {
  if (!r.ok() || r->tasks.size() != 1) return std::nullopt;
  return r->tasks[0].task;
}

}  // namespace

template <typename Req>
grpc::ServerUnaryReactor* FlorenceService::Unary(
    grpc::CallbackServerContext* ctx, const char* method, const Req& request,
    absl::StatusOr<batching::Request> (*convert)(Req&), FillFn fill) {
  Req copy = request;
  absl::StatusOr<batching::Request> r = convert(copy);
  absl::Status admitted;
  Context context = Begin(ctx, method, SingleTask(r), &admitted);
  return new UnaryCall(std::move(context), admitted, std::move(r), std::move(fill));
}

grpc::ServerUnaryReactor* FlorenceService::Caption(grpc::CallbackServerContext* ctx,
                                                   const v1::CaptionRequest* request,
                                                   v1::CaptionResponse* response) {
  return Unary(ctx, "Caption", *request, FromCaption,
               [response](std::vector<TaskOutput>& out) {
                 absl::Status st = ToTaskResult(out[0], false, response->mutable_result());
                 response->set_text(response->result().text());
                 return st;
               });
}

grpc::ServerUnaryReactor* FlorenceService::Detect(grpc::CallbackServerContext* ctx,
                                                  const v1::DetectRequest* request,
                                                  v1::DetectResponse* response) {
  return Unary(ctx, "Detect", *request, FromDetect,
               [response](std::vector<TaskOutput>& out) {
                 absl::Status st = ToTaskResult(out[0], false, response->mutable_result());
                 response->mutable_detections()->CopyFrom(response->result().detections());
                 CopySegmentation(response->result(), response);
                 return st;
               });
}

grpc::ServerUnaryReactor* FlorenceService::Ocr(grpc::CallbackServerContext* ctx,
                                               const v1::OcrRequest* request,
                                               v1::OcrResponse* response) {
  return Unary(ctx, "Ocr", *request, FromOcr,
               [response](std::vector<TaskOutput>& out) {
                 absl::Status st = ToTaskResult(out[0], false, response->mutable_result());
                 response->set_text(response->result().text());
                 response->mutable_regions()->CopyFrom(response->result().ocr_regions());
                 return st;
               });
}

grpc::ServerUnaryReactor* FlorenceService::Segment(grpc::CallbackServerContext* ctx,
                                                   const v1::SegmentRequest* request,
                                                   v1::SegmentResponse* response) {
  return Unary(ctx, "Segment", *request, FromSegment,
               [response, mask = request->return_mask()](std::vector<TaskOutput>& out) {
                 absl::Status st = ToTaskResult(out[0], mask, response->mutable_result());
                 CopySegmentation(response->result(), response);
                 response->set_mask_png(response->result().mask_png());
                 return st;
               });
}

grpc::ServerUnaryReactor* FlorenceService::DescribeRegion(
    grpc::CallbackServerContext* ctx, const v1::DescribeRegionRequest* request,
    v1::DescribeRegionResponse* response) {
  return Unary(ctx, "DescribeRegion", *request, FromDescribeRegion,
               [response](std::vector<TaskOutput>& out) {
                 absl::Status st = ToTaskResult(out[0], false, response->mutable_result());
                 response->set_text(response->result().text());
                 return st;
               });
}

grpc::ServerWriteReactor<v1::RunEvent>* FlorenceService::Run(grpc::CallbackServerContext* ctx,
                                                             const v1::TaskRequest* request) {
  v1::TaskRequest copy = *request;
  absl::StatusOr<batching::Request> r = FromTask(copy);
  absl::Status admitted;
  Context context = Begin(ctx, "Run", SingleTask(r), &admitted);
  return new RunCall(std::move(context), admitted, std::move(r), request->return_mask());
}

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* FlorenceService::RunStream(
    grpc::CallbackServerContext* ctx) {
  absl::Status admitted;
  Context context = Begin(ctx, "RunStream", std::nullopt, &admitted);
  return new StreamCall(std::move(context), admitted);
}

grpc::ServerUnaryReactor* FlorenceService::RunMulti(grpc::CallbackServerContext* ctx,
                                                    const v1::MultiTaskRequest* request,
                                                    v1::MultiTaskResponse* response) {
  std::vector<bool> masks;
  for (const auto& t : request->tasks()) masks.push_back(t.return_mask());
  return Unary(ctx, "RunMulti", *request, FromMulti,
               [response, masks](std::vector<TaskOutput>& out) {
                 for (size_t i = 0; i < out.size(); ++i) {
                   absl::Status st = ToTaskResult(out[i], masks[i], response->add_results());
                   if (!st.ok()) return st;
                 }
                 return absl::OkStatus();
               });
}

}  // namespace florence::server
