// The one place that builds the MI gRPC server: listening port (insecure, loopback by
// default), message-size limits, no SO_REUSEPORT (a second daemon on the same port must
// fail, not share it), the standard health service driven by the subsystems' checks
// (service/health_service.h, health_monitor.h), server reflection v1 and v1alpha (so
// grpcurl works without .proto files, service/reflection_service.h),
// sipd.mi.v1.Management, the typed services the registry declares
// (service/typed_service.h) and sipd.events.v1.EventService (service/event_service.h),
// all served by `threads` completion-queue threads (see
// service/cq_tag.h).
//
// gRPC must only be initialised in the process that serves (the forked "MI gRPC"
// process); nothing here may run in the attendant.
//
// Thread-safety: Start() and Shutdown() from one thread; the server itself serves from
// its queue threads, its completion thread (dispatcher completions) and (reflection)
// gRPC's own threads.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "registry/dispatcher.h"
#include "service/event_service.h"
#include "service/health_monitor.h"
#include "service/health_service.h"
#include "service/management_service.h"
#include "service/reflection_service.h"
#include "service/typed_service.h"

namespace sipd::service {

struct TlsOptions {
  enum class ClientAuth { kNone, kOptional, kRequire };
  // PEM files; TLS is on when cert and key are set. The files are re-read when they
  // change (checked every refresh_seconds), so renewed certificates take effect without
  // a restart and without dropping connections.
  std::string cert;
  std::string key;
  // CA that signs client certificates (mTLS); required unless client_auth is kNone.
  std::string ca;
  ClientAuth client_auth = ClientAuth::kNone;
  unsigned refresh_seconds = 1;
  bool enabled() const { return !cert.empty() && !key.empty(); }
};

struct ServerOptions {
  // gRPC listen address: "host:port" ("127.0.0.1:8090", "[::1]:8090", "0.0.0.0:0") or
  // "unix:/path" (the socket file is made mode 0600: only its owner and root connect).
  std::string listen = "127.0.0.1:8090";
  TlsOptions tls;
  // Completion-queue threads: they poll the sockets and run ordinary commands inline.
  // One is the fastest on a small machine (no hand-off between pollers); more let
  // several slow-ish commands run in parallel.
  int threads = 1;
  // Connection limits, so that clients that misbehave cost bounded memory and go away:
  // HTTP/2 streams per connection (calls beyond wait in the client), time to complete
  // the HTTP/2 handshake (a peer that sends half a preface), a connection without
  // calls for this long is closed (GOAWAY), and keepalive pings that find dead peers.
  int max_concurrent_streams = 256;
  std::chrono::milliseconds handshake_timeout{20000};
  std::chrono::milliseconds idle_timeout{300000};
  std::chrono::milliseconds keepalive_time{60000};
  std::chrono::milliseconds keepalive_timeout{20000};
  ServiceOptions service;
  // sipd.events.v1.EventService: the event interface, its consumer and the statistics
  // (without them Subscribe / WatchStatistics answer UNAVAILABLE).
  EventServiceOptions events;
  // Health checks beside those of the registry (e.g. "sipd.sip" from the process
  // table), and how often they all run.
  std::vector<mi::HealthCheck> health_checks;
  std::chrono::milliseconds health_interval{1000};
};

class MiGrpcServer {
 public:
  // Builds and starts the server. UnavailableError if the address cannot be bound (in
  // use, not local, bad syntax). `dispatcher` runs every command and must outlive the
  // server; the server runs its completions (RunCompletions) on a thread of its own.
  static absl::StatusOr<std::unique_ptr<MiGrpcServer>> Start(mi::Dispatcher& dispatcher,
                                                             const ServerOptions& options);
  ~MiGrpcServer();
  MiGrpcServer(const MiGrpcServer&) = delete;
  MiGrpcServer& operator=(const MiGrpcServer&) = delete;

  // The bound port (useful with port 0).
  int port() const { return port_; }
  // Calls cut so far because their client made no progress (see ServiceOptions).
  uint64_t calls_cut() const { return service_->calls_cut(); }
  // Call objects that exist: posted requests and calls in progress (0 after Shutdown).
  int live_calls() const { return service_->live_calls().count() + health_->live_calls().count(); }

  // Health goes NOT_SERVING (watchers are told and released), calls in progress get
  // at most `grace` to finish, the rest are cancelled; once every call object is gone
  // (service/live_calls.h), the queue threads and the completion thread stop.
  // Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  MiGrpcServer() = default;
  void StopQueues();

  std::unique_ptr<ManagementService> service_;
  std::unique_ptr<TypedService> typed_;
  std::unique_ptr<EventService> events_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<HealthMonitor> monitor_;
  std::unique_ptr<ReflectionServices> reflection_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues_;
  std::vector<std::thread> threads_;
  // Delivers the dispatcher's async and worker completions (see registry/dispatcher.h).
  std::thread completions_;
  std::atomic<bool> stop_completions_{false};
  int port_ = 0;
  bool shut_down_ = false;
};

// Plaintext, or TLS (mTLS with client_auth) with certificates re-read when they change.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsOptions& tls);

// Routes gRPC's own log lines (gpr_log) to spdlog. Idempotent.
void RouteGrpcLogsToSpdlog();

}  // namespace sipd::service
