// The typed services (sipd.core.v1.CoreService, sipd.statistics.v1.StatisticsService,
// sipd.usrloc.v1.LocationService, and whatever a module declares next): every typed
// method of the registry (registry/typed_method.h), served without knowing any of them.
//
// One grpc::AsyncGenericService receives every call whose method no other service
// registered. A call looks its path up in the registry (Registry::FindTyped): unknown
// paths get UNIMPLEMENTED. Otherwise it parses the request with the method's message
// type, converts it to MI arguments, and hands the request to the same mi::Dispatcher
// as Execute, with the CallContext built by the same function (GrpcCallContext), so
// authorization, audit and per-command figures cannot differ between the generic and
// the typed face of a command:
//  - unary methods dispatch with Delivery::kTree (answered at once, or from the
//    completion thread when an async or worker call is ready) and convert the whole
//    2xx reply; a non-2xx reply, an unknown command or a failure is answered with the
//    status of Execute's table and its rich details (service/rich_status.h);
//  - server-streaming methods pull the reply (Delivery::kPull) as ExecuteStream does:
//    each part's complete items become one response message, and the next part is
//    produced only when the client took the previous message.
// A request field that does not convert is INVALID_ARGUMENT with a google.rpc.BadRequest
// naming the field; a reply the conversion cannot read is INTERNAL (CONVERSION_FAILED).
// The limits of ServiceOptions apply as for Management (message size, stall and total
// reply timeouts, a deadline already passed).
//
// Thread-safety: as ManagementService (each call guards its state with its own lock).
#pragma once

#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "service/management_service.h"

namespace sipd::service {

class TypedService {
 public:
  // `management` gives the options, the dispatcher and the cut counter; it must outlive
  // this service.
  explicit TypedService(ManagementService& management) : management_(management) {}
  TypedService(const TypedService&) = delete;
  TypedService& operator=(const TypedService&) = delete;

  grpc::AsyncGenericService* generic_service() { return &generic_; }

  // Posts the pending calls on `cq` (after the server started); once per queue.
  void Serve(grpc::ServerCompletionQueue* cq);

  ManagementService& management() { return management_; }

 private:
  ManagementService& management_;
  grpc::AsyncGenericService generic_;
};

}  // namespace sipd::service
