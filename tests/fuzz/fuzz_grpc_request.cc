// Fuzz target: gRPC request validation (service/management_service.h): the raw request
// bytes of Execute/ExecuteStream (ParseRequest on a grpc::ByteBuffer, as the generic
// handlers receive them) and of a Session message (parse + ValidateRequest), with
// small limits so the limit checks are reached.
#include <cstdint>
#include <string_view>

#include "google/protobuf/stubs/logging.h"
#include "grpc/grpc.h"
#include "grpcpp/support/byte_buffer.h"
#include "service/management_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool initialised = [] {
    grpc_init();
    // protobuf logs every string field with invalid UTF-8 it refuses: discard that.
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)initialised;
  static const sipd::service::ServiceOptions options = [] {
    sipd::service::ServiceOptions o;
    o.max_args = 8;
    o.max_command_length = 32;
    return o;
  }();
  grpc::Slice slice(data, size);
  grpc::ByteBuffer bytes(&slice, 1);
  sipd::mi::Request request;
  (void)sipd::service::ParseRequest(bytes, options, &request);
  sipd::mi::v1::SessionRequest session;
  if (session.ParseFromArray(data, static_cast<int>(size))) {
    sipd::mi::Request from_session;
    (void)sipd::service::ValidateRequest(session, options, &from_session);
  }
  return 0;
}
