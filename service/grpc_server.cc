#include "service/grpc_server.h"

#include <grpc/grpc.h>
#include <grpc/support/log.h>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

constexpr char kServiceName[] = "sipd.mi.v1.Management";

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

}  // namespace

void RouteGrpcLogsToSpdlog() { gpr_set_log_function(&LogToSpdlog); }

absl::StatusOr<std::unique_ptr<MiGrpcServer>> MiGrpcServer::Start(const mi::Registry& registry,
                                                                  const ServerOptions& options) {
  RouteGrpcLogsToSpdlog();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<MiGrpcServer> server(new MiGrpcServer());
  server->service_ = std::make_unique<ManagementService>(registry, options.service);

  const int max_size = static_cast<int>(options.service.max_message_size);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &server->port_);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(max_size);
  builder.SetMaxSendMessageSize(max_size);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    if (server->server_ != nullptr) server->server_->Shutdown();
    server->service_->Stop();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen,
                                               " (address in use, not local, or invalid)"));
  }
  grpc::HealthCheckServiceInterface* health = server->server_->GetHealthCheckService();
  if (health != nullptr) {
    health->SetServingStatus(true);
    health->SetServingStatus(kServiceName, true);
  }
  return server;
}

MiGrpcServer::~MiGrpcServer() { Shutdown(std::chrono::milliseconds(0)); }

void MiGrpcServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(false);
  }
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  service_->Stop();
  server_->Wait();
}

}  // namespace sipd::service
