// The gRPC server around FlorenceService: listening port, TLS / mTLS,
// message size and keepalive settings, grpc.health.v1 and server reflection.
// main.cc wires it to the scheduler and metrics; tests start it in-process on
// port 0.
//
// Health ("" and "florence.v1.Florence") is NOT_SERVING from Start until
// SetServing(true) (after the model is loaded and warmed up), and again from
// SetServing(false) (draining).
#ifndef FLORENCE_SERVER_SERVER_H_
#define FLORENCE_SERVER_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "batching/scheduler.h"
#include "server/metrics.h"

namespace florence::server {

struct ServerOptions {
  std::string address = "0.0.0.0:50051";  // host:port; port 0 picks a free one
  int max_message_bytes = 64 << 20;       // larger requests: RESOURCE_EXHAUSTED from gRPC
  int keepalive_time_ms = 60'000;         // server pings idle connections this often
  int keepalive_timeout_ms = 20'000;      // and drops them when a ping goes unanswered
  // > 0: a connection older than this gets GOAWAY (calls on it may run
  // max_connection_age_grace_ms more), so clients reconnect and re-resolve:
  // DNS-based client-side balancing then sees replicas added by a scale-up.
  int max_connection_age_ms = 0;
  int max_connection_age_grace_ms = 0;
  // TLS: PEM files. Without cert/key the port is plaintext. With client_ca the
  // server requires and verifies client certificates (mTLS).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Non-empty: calls must carry "authorization: Bearer <auth_token>".
  std::string auth_token;
};

class Server {
 public:
  // Binds and starts serving (health NOT_SERVING; RPCs UNAVAILABLE until
  // Attach). `metrics` (may be null) must outlive the server. Errors:
  // InvalidArgument for unreadable TLS files, Unavailable when the address
  // cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       Metrics* metrics);
  ~Server();  // Shutdown(now) if still running

  int port() const { return port_; }
  // RPCs go to `scheduler` from now on (not owned; must outlive Shutdown).
  void Attach(batching::Scheduler* scheduler);
  void SetServing(bool serving);
  // Health NOT_SERVING and new calls refused with UNAVAILABLE by the service
  // (the port stays open, so clients are told rather than cut off); calls in
  // flight go on. Then Shutdown.
  void StartDraining();
  // Stops accepting calls; in-flight calls get until `deadline` to finish,
  // then are cancelled. Returns when every call has ended.
  void Shutdown(absl::Time deadline);

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace florence::server

#endif  // FLORENCE_SERVER_SERVER_H_
