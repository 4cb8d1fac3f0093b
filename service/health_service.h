// The standard gRPC health service (grpc.health.v1.Health: Check and Watch) served on
// the MI server's own completion queues.
//
// Same protocol and semantics as gRPC's built-in DefaultHealthCheckService (so
// grpc_health_probe, grpcurl and load balancers work unchanged): Check answers the
// status of a registered service name ("" = the server as a whole) or NOT_FOUND; Watch
// sends the current status at once (SERVICE_UNKNOWN for an unknown name) and again on
// every change. The built-in implementation is not used because in gRPC 1.51 it is a
// callback service, whose internal threads would slow every MI call down (see
// service/cq_tag.h).
//
// Thread-safety: SetServingStatus()/Shutdown() may be called from any thread; the calls
// run on the completion-queue threads. Lock order: service mutex, then a watch's mutex.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "service/live_calls.h"

namespace sipd::service {

class HealthService {
 public:
  HealthService() = default;
  HealthService(const HealthService&) = delete;
  HealthService& operator=(const HealthService&) = delete;

  grpc::Service* service() { return &service_; }

  // Posts the pending Check and Watch requests on `cq`; once per queue, after the
  // server started.
  void Serve(grpc::ServerCompletionQueue* cq);

  // Sets the status of `name` ("" = whole server) and, if it changed, notifies its
  // watchers.
  void SetServingStatus(const std::string& name, bool serving);

  // Every status becomes NOT_SERVING, watchers are told so and their calls end (OK), so
  // that a server shutdown does not wait for them. Later changes are ignored.
  void Shutdown();

  // This service's call objects: a queue is shut down only once there are none.
  LiveCalls& live_calls() const { return live_calls_; }

 private:
  class WatchCall;
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // The answer of Check (run by UnaryCall): the status of `request.service()`, or
  // NOT_FOUND for an unregistered name.
  grpc::Status Check(const grpc::health::v1::HealthCheckRequest& request,
                     grpc::health::v1::HealthCheckResponse* response) const;

  // SERVICE_UNKNOWN for an unregistered name. REQUIRES: mu_ held.
  Status StatusLocked(const std::string& name) const;
  void Register(WatchCall* call);
  void Unregister(WatchCall* call);

  grpc::health::v1::Health::AsyncService service_;
  mutable std::mutex mu_;
  std::map<std::string, Status> statuses_;
  std::set<WatchCall*> watchers_;
  bool shut_down_ = false;
  mutable LiveCalls live_calls_;
};

}  // namespace sipd::service
