// florence2-server: the Florence-2 gRPC server. Only wiring: flags ->
// metrics, gRPC server (health NOT_SERVING), scheduler (model load + warm-up),
// SERVING; on SIGTERM / SIGINT: NOT_SERVING, stop accepting, let in-flight
// calls finish within --grace_period, exit 0.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "batching/scheduler.h"
#include "engine/host_memory.h"
#include "server/metrics.h"
#include "server/server.h"

ABSL_FLAG(std::string, model, "models/florence2-base-random",
          "Model directory written by tools/florence2_export.py (model.ts, config.json, "
          "tokenizer.json, manifest.json); every file's checksum is verified at start-up.");
ABSL_FLAG(std::string, address, "0.0.0.0:50051",
          "gRPC listen address host:port. Port 0 picks a free port (see --port_file).");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound gRPC port is written to this file once the server listens.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, the bound metrics port is written to this file once it listens.");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9090",
          "Prometheus /metrics HTTP listen address host:port; empty disables the endpoint.");
ABSL_FLAG(std::string, device, "cpu", "Torch device for the model: cpu, cuda, cuda:N.");
ABSL_FLAG(int, threads, 0, "Torch intra-op threads (0 = one per core).");
ABSL_FLAG(bool, cpu_prepack, true,
          "On the CPU, decode with oneDNN-prepacked copies of the decoder and lm_head weights "
          "(float32 models; one more copy of those weights in memory, decode steps faster). "
          "false = plain GEMMs, for comparison.");
ABSL_FLAG(std::string, backend, "auto",
          "Model backend: torchscript (the directory's model.ts), aoti (its torch.export + "
          "AOTInductor packages in <model>/aoti, from tools/florence2_export_aoti.py --model-dir; "
          "float32, the CPU family they were compiled on), or auto = torchscript (faster under "
          "load on the CPU, docs/PERFORMANCE.md).");
ABSL_FLAG(int, workers, 2,
          "Threads that decode/resize images and tokenize before the model, and detokenize/parse "
          "after it.");
ABSL_FLAG(int, max_batch, 8, "Most requests in one encoder (vision tower + encoder) batch.");
ABSL_FLAG(int64_t, max_delay_us, 2000,
          "Longest wait, in microseconds, for an encoder batch to fill before it runs anyway.");
ABSL_FLAG(int, max_queue, 256,
          "Most requests waiting for the encoder; more get RESOURCE_EXHAUSTED with a retry hint "
          "(trailing metadata retry-after-ms).");
ABSL_FLAG(int64_t, kv_cache_bytes, int64_t{4} << 30,
          "KV-cache pool budget in bytes. Each running sequence (each beam) takes one row at the "
          "model's full decoder length; requests wait for rows rather than over-allocate.");
ABSL_FLAG(int, max_rows, 256, "Cap on KV-cache rows (decoder batch rows) whatever the budget.");
ABSL_FLAG(int, max_prompt_tokens, 256,
          "Most encoder text tokens per task prompt (longer text: INVALID_ARGUMENT); sizes the "
          "cross-attention part of each cache row.");
ABSL_FLAG(int64_t, feature_cache_bytes, 0,
          "Keep vision-tower outputs by image content hash within this many bytes (0 = off); a "
          "repeated image skips the vision tower.");
ABSL_FLAG(int, vision_batch, 0,
          "Images per vision-tower call within an encoder batch; 0 = auto: 1 on CPU (batching the "
          "compute-bound tower is slower per image there), the whole batch on a GPU.");
ABSL_FLAG(std::string, image_mode, "resize",
          "resize: stretch every image to the model's 768x768 input as transformers does (parity). "
          "letterbox: keep the aspect ratio, pad to the square input and mask the padding tokens out of "
          "the encoder; coordinates still come back in original pixels.");
ABSL_FLAG(bool, jpeg_scaled_decode, false,
          "Opt-in, resize image mode only: decode a JPEG at least twice the model's input side at 1/2, "
          "1/4 or 1/8 scale (libjpeg DCT scaling, never below the input side), then resize as usual. "
          "Several times faster for large photos, but the pixels differ from transformers' "
          "preprocessing (no parity); coordinates still refer to the original size.");
ABSL_FLAG(int64_t, max_image_bytes, int64_t{32} << 20,
          "Largest encoded image accepted (INVALID_ARGUMENT above it).");
ABSL_FLAG(int64_t, max_image_pixels, int64_t{64} << 20,
          "Largest width x height accepted, checked from the image header before decoding.");
ABSL_FLAG(int, max_message_bytes, 64 << 20,
          "Largest gRPC message (RESOURCE_EXHAUSTED from gRPC above it).");
ABSL_FLAG(int, keepalive_time_ms, 60000, "Server keepalive ping interval on idle connections.");
ABSL_FLAG(int, keepalive_timeout_ms, 20000, "Close a connection whose ping is unanswered this long.");
ABSL_FLAG(absl::Duration, max_connection_age, absl::ZeroDuration(),
          "Send GOAWAY to connections older than this (0 = never), so clients reconnect and re-resolve "
          "the service name: client-side round_robin over a headless Service then finds new replicas.");
ABSL_FLAG(absl::Duration, max_connection_age_grace, absl::Seconds(120),
          "After a max_connection_age GOAWAY: how long calls on that connection may still run.");
ABSL_FLAG(absl::Duration, grace_period, absl::Seconds(30),
          "On SIGTERM/SIGINT: how long in-flight calls may run before they are cancelled.");
ABSL_FLAG(std::string, tls_cert, "", "PEM server certificate chain; with --tls_key enables TLS.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients must present a certificate it signed (mTLS).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a bearer token; when set, calls must send metadata "
          "'authorization: Bearer <token>' (health and reflection stay open for probes).");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error, critical or off.");
ABSL_FLAG(bool, huge_pages, true,
          "Back tensors of 2 MiB and more (weights, KV-cache pool, activations) with transparent huge "
          "pages: decode steps scatter small KV-cache writes over every row, layer and head, and "
          "4 KiB-page TLB misses there are costly, most of all in a VM. Needs the kernel's THP mode "
          "madvise or always; an explicit THP_MEM_ALLOC_ENABLE in the environment wins.");
ABSL_FLAG(bool, warmup, true, "Run one short request through the model before SERVING.");

namespace {

using florence::batching::Scheduler;
using florence::server::Metrics;
using florence::server::Server;
using florence::server::ServerOptions;

// A flag duration as gRPC's int milliseconds (clamped to its range; negative = 0).
int DurationMs(absl::Duration d) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 0,
                                              std::numeric_limits<int>::max()));
}

// What the signal thread hands the main thread.
struct SignalState {
  absl::Mutex mu;
  bool serving ABSL_GUARDED_BY(mu) = false;  // set by main once health says SERVING
  int received ABSL_GUARDED_BY(mu) = 0;      // the signal that arrived after that
};

const char* SignalName(int sig) { return sig == SIGTERM ? "SIGTERM" : "SIGINT"; }

int Fail(const std::string& what, const absl::Status& status) {
  spdlog::critical("{}: {}", what, status.ToString());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Florence-2 gRPC server (florence.v1.Florence, grpc.health.v1, reflection).\n"
      "  florence2-server --model models/florence2-base-random --address 0.0.0.0:50051");
  // --help lists this file's flags (absl matches flags to the program name by default).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "server/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  // Before the first tensor: LibTorch reads its huge-page switch once.
  const bool huge_pages = florence::engine::PreferHugePages(absl::GetFlag(FLAGS_huge_pages));
  // Debian's abseil keeps Mutex deadlock detection on: a lock-order graph
  // update on every Mutex acquisition, ~10% of the front end's CPU per call.
  // The tests (debug-checked builds of the same code) keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(absl::GetFlag(FLAGS_log_level)));

  // Signals are taken synchronously by a thread of their own (sigwait); every
  // thread started from here on inherits the blocked mask. Before SERVING a
  // signal ends the process at once: nothing was accepted yet, and loading or
  // warming up a model can outlast a pod's termination grace period.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  static SignalState& signal_state = *new SignalState;  // never destroyed: the detached thread may use it at exit
  std::thread([signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    absl::MutexLock lock(&signal_state.mu);
    if (!signal_state.serving) {
      spdlog::info("{} received before SERVING: exiting", SignalName(sig));
      spdlog::default_logger()->flush();
      std::_Exit(0);
    }
    signal_state.received = sig;
  }).detach();

  absl::StatusOr<std::unique_ptr<Metrics>> metrics =
      Metrics::Create(absl::GetFlag(FLAGS_metrics_address));
  if (!metrics.ok()) return Fail("metrics endpoint", metrics.status());
  if ((*metrics)->port() > 0) spdlog::info("metrics on :{}/metrics", (*metrics)->port());
  if (const std::string path = absl::GetFlag(FLAGS_metrics_port_file); !path.empty()) {
    std::ofstream(path) << (*metrics)->port() << "\n";
  }

  ServerOptions so;
  so.address = absl::GetFlag(FLAGS_address);
  so.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  so.keepalive_time_ms = absl::GetFlag(FLAGS_keepalive_time_ms);
  so.keepalive_timeout_ms = absl::GetFlag(FLAGS_keepalive_timeout_ms);
  so.max_connection_age_ms = DurationMs(absl::GetFlag(FLAGS_max_connection_age));
  so.max_connection_age_grace_ms = DurationMs(absl::GetFlag(FLAGS_max_connection_age_grace));
  so.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  so.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  so.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    std::ifstream in(path);
    std::getline(in, so.auth_token);
    if (!in && so.auth_token.empty()) {
      return Fail("--auth_token_file", absl::InvalidArgumentError("cannot read " + path));
    }
    if (so.auth_token.empty()) {
      return Fail("--auth_token_file", absl::InvalidArgumentError(path + " holds no token"));
    }
  }
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(so, metrics->get());
  if (!server.ok()) return Fail("gRPC server", server.status());
  spdlog::info("listening on {} (port {}){}{}", so.address, (*server)->port(),
               so.tls_cert_file.empty() ? "" : ", TLS",
               so.auth_token.empty() ? "" : ", bearer-token auth");
  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    std::ofstream(path) << (*server)->port() << "\n";
  }

  Scheduler::Options opts;
  opts.device = absl::GetFlag(FLAGS_device);
  opts.num_threads = absl::GetFlag(FLAGS_threads);
  opts.cpu_prepack = absl::GetFlag(FLAGS_cpu_prepack);
  opts.backend = absl::GetFlag(FLAGS_backend);
  if (opts.backend != "auto" && opts.backend != "torchscript" && opts.backend != "aoti") {
    return Fail("--backend",
                absl::InvalidArgumentError("use auto, torchscript or aoti, not " + opts.backend));
  }
  opts.worker_threads = absl::GetFlag(FLAGS_workers);
  opts.policy.max_batch = absl::GetFlag(FLAGS_max_batch);
  opts.policy.max_delay = absl::Microseconds(absl::GetFlag(FLAGS_max_delay_us));
  opts.max_queue = absl::GetFlag(FLAGS_max_queue);
  opts.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_bytes);
  opts.max_rows = absl::GetFlag(FLAGS_max_rows);
  opts.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  opts.feature_cache_bytes = absl::GetFlag(FLAGS_feature_cache_bytes);
  opts.vision_batch = absl::GetFlag(FLAGS_vision_batch);
  opts.decode_limits.max_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  if (const std::string mode = absl::GetFlag(FLAGS_image_mode); mode == "letterbox") {
    opts.image_mode = Scheduler::Options::ImageMode::kLetterbox;
  } else if (mode != "resize") {
    return Fail("--image_mode", absl::InvalidArgumentError("use resize or letterbox, not " + mode));
  }
  opts.decode_limits.max_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  opts.jpeg_scaled_decode = absl::GetFlag(FLAGS_jpeg_scaled_decode);
  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Create(absl::GetFlag(FLAGS_model), opts, metrics->get());
  if (!scheduler.ok()) return Fail("loading " + absl::GetFlag(FLAGS_model), scheduler.status());
  const auto& dir = (*scheduler)->model_dir();
  spdlog::info("model {} ({}, {}) loaded in {:.1f} s", dir.dir, dir.dtype, opts.device,
               absl::ToDoubleSeconds(absl::Now() - load_start));
  if (dir.vision_dtype != "float32" && opts.vision_batch > 1) {
    spdlog::warn(
        "--vision_batch {} with a {} vision tower: its rounding depends on how many images share a "
        "call, so an image's features (and answer) can depend on the images batched with it; "
        "--vision_batch 1 keeps the batching contract",
        opts.vision_batch, dir.vision_dtype);
  }
  spdlog::info("malloc {}; huge pages for tensors {} (kernel THP mode {}), {} MiB on huge pages",
               florence::engine::MallocName(), huge_pages ? "on" : "off",
               florence::engine::TransparentHugePageMode(), florence::engine::AnonHugePageBytes() >> 20);
  if (absl::GetFlag(FLAGS_warmup)) {
    const absl::Time t = absl::Now();
    if (absl::Status st = (*scheduler)->Warmup(); !st.ok()) return Fail("warm-up", st);
    spdlog::info("warm-up done in {:.1f} s", absl::ToDoubleSeconds(absl::Now() - t));
  }
  // Calls reach the scheduler only from here on (before: UNAVAILABLE "model is still loading"), so a
  // signal before SERVING has nothing accepted to drain.
  (*server)->Attach(scheduler->get());
  {
    absl::MutexLock lock(&signal_state.mu);
    signal_state.serving = true;
    (*server)->SetServing(true);
    spdlog::info("SERVING");
  }

  int sig = 0;
  {
    absl::MutexLock lock(&signal_state.mu);
    signal_state.mu.Await(absl::Condition(
        +[](int* received) { return *received != 0; }, &signal_state.received));
    sig = signal_state.received;
  }
  const absl::Duration grace = absl::GetFlag(FLAGS_grace_period);
  spdlog::info("{} received: draining (grace period {})", SignalName(sig), absl::FormatDuration(grace));
  const absl::Time deadline = absl::Now() + grace;
  // NOT_SERVING, and new calls get UNAVAILABLE from the service (also new
  // requests on open RunStreams, from the scheduler) while the port stays open.
  (*server)->StartDraining();
  (*scheduler)->Drain(absl::Now());
  // Requests in flight finish within the grace period ...
  const bool drained = (*scheduler)->Drain(deadline);
  spdlog::info("drained: {}", drained ? "every request completed"
                                      : absl::StrCat((*scheduler)->in_flight(),
                                                     " requests still running at the deadline"));
  // ... then the port closes. The second of slack lets the last responses flush; calls still open then
  // (idle streams, health Watch streams, which never end by themselves) are cancelled.
  (*server)->Shutdown(std::min(deadline, absl::Now() + absl::Seconds(1)));
  spdlog::info("stopped");
  scheduler->reset();
  server->reset();
  return 0;
}
