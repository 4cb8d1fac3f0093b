// The one place that builds the MI gRPC server: listening port (insecure, loopback by
// default), message-size limits, no SO_REUSEPORT (a second daemon on the same port must
// fail, not share it), the standard health service and server reflection (so grpcurl
// works without .proto files), and the sipd.mi.v1.Management service.
//
// gRPC must only be initialised in the process that serves (the forked "MI gRPC"
// process); nothing here may run in the attendant.
//
// Thread-safety: Start() and Shutdown() from one thread; the server itself serves from
// gRPC's threads and the service's worker pool.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "registry/command.h"
#include "service/management_service.h"

namespace sipd::service {

struct ServerOptions {
  // gRPC listen address: "host:port" ("127.0.0.1:8090", "[::1]:8090", "0.0.0.0:0").
  std::string listen = "127.0.0.1:8090";
  ServiceOptions service;
};

class MiGrpcServer {
 public:
  // Builds and starts the server. UnavailableError if the address cannot be bound (in
  // use, not local, bad syntax).
  static absl::StatusOr<std::unique_ptr<MiGrpcServer>> Start(const mi::Registry& registry,
                                                             const ServerOptions& options);
  ~MiGrpcServer();

  // The bound port (useful with port 0).
  int port() const { return port_; }

  // Marks the health service NOT_SERVING, lets calls in progress finish for at most
  // `grace`, cancels the rest and stops the worker pool. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  MiGrpcServer() = default;

  std::unique_ptr<ManagementService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

// Routes gRPC's own log lines (gpr_log) to spdlog. Idempotent.
void RouteGrpcLogsToSpdlog();

}  // namespace sipd::service
