#include "service/rich_status.h"

#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "service/utf8.h"

namespace sipd::service {
namespace {

// As kMaxReasonInMetadata (service/call_support.h): trailers stay well below the peers'
// header-size limit.
constexpr size_t kMaxText = 512;

std::string Text(std::string_view text) {
  std::string out(text.substr(0, kMaxText));
  SanitizeUtf8(&out);
  return out;
}

grpc::Status Build(grpc::StatusCode code, std::string message, const google::rpc::ErrorInfo& info,
                   const google::rpc::BadRequest* bad_request) {
  google::rpc::Status details;
  details.set_code(static_cast<int32_t>(code));
  details.set_message(Text(message));
  details.add_details()->PackFrom(info);
  if (bad_request != nullptr) details.add_details()->PackFrom(*bad_request);
  return grpc::Status(code, details.message(), details.SerializeAsString());
}

google::rpc::ErrorInfo Info(std::string_view reason) {
  google::rpc::ErrorInfo info;
  info.set_reason(std::string(reason));
  info.set_domain(kErrorDomain);
  return info;
}

}  // namespace

grpc::Status MiErrorStatus(grpc::StatusCode code, const mi::Reply& reply, std::string_view outcome,
                           std::string_view field) {
  google::rpc::ErrorInfo info = Info(absl::StrCat("MI_", reply.code));
  auto& metadata = *info.mutable_metadata();
  metadata["mi_code"] = absl::StrCat(reply.code);
  metadata["mi_reason"] = Text(reply.reason);
  metadata["outcome"] = std::string(outcome);
  if (code != grpc::StatusCode::INVALID_ARGUMENT) {
    return Build(code, reply.reason, info, nullptr);
  }
  google::rpc::BadRequest bad_request;
  for (const mi::ArgumentProblem& problem : reply.bad_arguments) {
    auto* violation = bad_request.add_field_violations();
    violation->set_field(Text(problem.argument.empty() ? std::string_view("params")
                                                       : std::string_view(problem.argument)));
    violation->set_description(Text(problem.description));
  }
  if (reply.bad_arguments.empty()) {
    auto* violation = bad_request.add_field_violations();
    violation->set_field(Text(field.empty() ? std::string_view("params") : field));
    violation->set_description(Text(reply.reason));
  }
  return Build(code, reply.reason, info, &bad_request);
}

grpc::Status TransportError(grpc::StatusCode code, std::string message, std::string_view reason,
                            std::string_view field) {
  const google::rpc::ErrorInfo info = Info(reason);
  if (field.empty()) return Build(code, std::move(message), info, nullptr);
  google::rpc::BadRequest bad_request;
  auto* violation = bad_request.add_field_violations();
  violation->set_field(Text(field));
  violation->set_description(Text(message));
  return Build(code, std::move(message), info, &bad_request);
}

grpc::Status WithErrorDetails(const grpc::Status& status, std::string_view reason) {
  if (status.ok() || !status.error_details().empty()) return status;
  return Build(status.error_code(), status.error_message(),
               Info(reason.empty() ? StatusCodeName(status.error_code()) : reason), nullptr);
}

std::string_view StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      break;
  }
  return "UNKNOWN";
}

}  // namespace sipd::service
