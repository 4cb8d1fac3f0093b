#include "service/grpc_server.h"

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <poll.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "service/cq_tag.h"
#include "service/flush_list.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

constexpr char kServiceName[] = "sipd.mi.v1.Management";
constexpr char kHealthServiceName[] = "grpc.health.v1.Health";
constexpr char kEventServiceName[] = "sipd.events.v1.EventService";
// How long a shutdown waits for the cancelled calls to end before it stops the queues.
constexpr std::chrono::seconds kCallsEndLimit{10};

void LogToSpdlog(gpr_log_func_args* args) {
  switch (args->severity) {
    case GPR_LOG_SEVERITY_ERROR:
      spdlog::error("grpc: {} ({}:{})", args->message, args->file, args->line);
      break;
    case GPR_LOG_SEVERITY_INFO:
      spdlog::info("grpc: {}", args->message);
      break;
    case GPR_LOG_SEVERITY_DEBUG:
      spdlog::debug("grpc: {}", args->message);
      break;
  }
}

// A queue thread: poll, then complete whatever came back. Writes deferred by the calls
// (service/flush_list.h) go out when the queue has nothing more for now, or after
// FlushList::kMaxDeferredEvents events.
void RunQueue(grpc::ServerCompletionQueue* cq) {
  FlushList flushes;
  FlushList::SetCurrent(&flushes);
  void* tag = nullptr;
  bool ok = false;
  int deferred_events = 0;
  while (true) {
    if (flushes.empty()) {
      if (!cq->Next(&tag, &ok)) break;
    } else {
      const grpc::CompletionQueue::NextStatus status =
          cq->AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC));
      if (status == grpc::CompletionQueue::SHUTDOWN) break;
      if (status == grpc::CompletionQueue::TIMEOUT ||
          ++deferred_events >= FlushList::kMaxDeferredEvents) {
        flushes.FlushAll();
        deferred_events = 0;
        if (status == grpc::CompletionQueue::TIMEOUT) continue;
      }
    }
    static_cast<CqTag*>(tag)->Complete(ok);
  }
  flushes.FlushAll();
  FlushList::SetCurrent(nullptr);
}

}  // namespace

void RouteGrpcLogsToSpdlog() { gpr_set_log_function(&LogToSpdlog); }

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsOptions& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  using grpc::experimental::FileWatcherCertificateProvider;
  auto provider = tls.ca.empty() ? std::make_shared<FileWatcherCertificateProvider>(
                                       tls.key, tls.cert, tls.refresh_seconds)
                                 : std::make_shared<FileWatcherCertificateProvider>(
                                       tls.key, tls.cert, tls.ca, tls.refresh_seconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!tls.ca.empty()) options.watch_root_certs();
  switch (tls.client_auth) {
    case TlsOptions::ClientAuth::kNone:
      options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      break;
    case TlsOptions::ClientAuth::kOptional:
      options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
    case TlsOptions::ClientAuth::kRequire:
      options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
  }
  return grpc::experimental::TlsServerCredentials(options);
}

absl::StatusOr<std::unique_ptr<MiGrpcServer>> MiGrpcServer::Start(mi::Dispatcher& dispatcher,
                                                                  const ServerOptions& options) {
  RouteGrpcLogsToSpdlog();
  // gRPC locks absl::Mutex several times per call; Debian's Abseil is built with the
  // deadlock-cycle detector on, which records every lock in a global graph (a few % of
  // the CPU per call, measured). This process is gRPC's; we do not want that cost here.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Ours (HealthService) replaces the built-in one; see service/health_service.h.
  grpc::EnableDefaultHealthCheckService(false);

  std::unique_ptr<MiGrpcServer> server(new MiGrpcServer());
  server->service_ = std::make_unique<ManagementService>(dispatcher, options.service);
  server->typed_ = std::make_unique<TypedService>(*server->service_);
  server->events_ = std::make_unique<EventService>(*server->service_, options.events);
  server->health_ = std::make_unique<HealthService>();
  // The MI services: Management and the typed services the modules declared.
  std::vector<std::string> mi_services = {kServiceName, kEventServiceName};
  for (const std::string& typed : dispatcher.registry().typed_services()) {
    mi_services.push_back(typed);
  }
  std::vector<std::string> listed = mi_services;
  listed.push_back(kHealthServiceName);
  server->reflection_ = std::make_unique<ReflectionServices>(std::move(listed));

  const int max_size = static_cast<int>(options.service.max_message_size);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, ServerCredentials(options.tls), &server->port_);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(options.handshake_timeout.count()));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(options.idle_timeout.count()));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(options.keepalive_time.count()));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(options.keepalive_timeout.count()));
  builder.SetMaxReceiveMessageSize(max_size);
  builder.SetMaxSendMessageSize(max_size);
  builder.RegisterService(server->service_->service());
  builder.RegisterService(server->events_->service());
  builder.RegisterService(server->health_->service());
  builder.RegisterService(server->reflection_->v1());
  builder.RegisterService(server->reflection_->v1alpha());
  builder.RegisterAsyncGenericService(server->typed_->generic_service());
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    server->queues_.push_back(builder.AddCompletionQueue());
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    if (server->server_ != nullptr) server->server_->Shutdown();
    // Nothing was posted on the queues and no thread runs them; destroying them is all
    // (CompletionQueue::Shutdown would complain that their server is gone).
    server->queues_.clear();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen,
                                               " (address in use, not local, or invalid)"));
  }
  std::vector<mi::HealthCheck> checks = dispatcher.registry().health_checks();
  for (const mi::HealthCheck& check : options.health_checks) checks.push_back(check);
  server->monitor_ = std::make_unique<HealthMonitor>(
      *server->health_, std::move(checks), std::move(mi_services), options.health_interval);
  server->monitor_->Start();
  server->events_->Start();
  for (auto& queue : server->queues_) {
    server->service_->Serve(queue.get());
    server->events_->Serve(queue.get());
    server->typed_->Serve(queue.get());
    server->health_->Serve(queue.get());
    server->threads_.emplace_back(RunQueue, queue.get());
  }
  MiGrpcServer* raw = server.get();
  server->completions_ = std::thread([raw, &dispatcher] {
    using Clock = std::chrono::steady_clock;
    FlushList flushes;  // results made ready here leave together
    FlushList::SetCurrent(&flushes);
    while (!raw->stop_completions_.load()) {
      const Clock::time_point next = dispatcher.NextDeadline();
      int timeout_ms = 100;
      if (next != Clock::time_point::max()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now());
        timeout_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 0, 100));
      }
      pollfd pfd{dispatcher.wake_fd(), POLLIN, 0};
      poll(&pfd, 1, timeout_ms);
      dispatcher.RunCompletions();
      flushes.FlushAll();
    }
    flushes.FlushAll();
    FlushList::SetCurrent(nullptr);
  });
  return server;
}

MiGrpcServer::~MiGrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void MiGrpcServer::StopQueues() {
  for (auto& queue : queues_) queue->Shutdown();
  for (auto& thread : threads_) thread.join();  // each drains its queue, then returns
  threads_.clear();
  queues_.clear();
}

void MiGrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  monitor_->Stop();
  health_->Shutdown();
  events_->Shutdown();  // its streams never end by themselves
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  // Every call is cancelled and every posted request failed; the calls end through
  // their tags, which need the queue threads (and the completion thread). Only then may
  // the queues shut down: a call that started an operation on a shut-down queue (a
  // Finish after its write failed, say) would abort the process (service/live_calls.h).
  const auto limit = std::chrono::steady_clock::now() + kCallsEndLimit;
  if (!service_->live_calls().WaitForNone(limit) || !health_->live_calls().WaitForNone(limit)) {
    spdlog::error("mi_grpc: {} calls still open {} s after the server shut down", live_calls(),
                  kCallsEndLimit.count());
  }
  StopQueues();
  server_->Wait();
  stop_completions_.store(true);
  if (completions_.joinable()) completions_.join();
}

}  // namespace sipd::service
