// Rich error details, the standard way: every non-OK status the MI gRPC server sends
// carries a google.rpc.Status (proto/google/rpc/status.proto) in the
// `grpc-status-details-bin` trailer, so status.FromError(err).Details() (Go),
// grpc_status.rpc_status.from_call() (Python) and `grpcurl -v` show it. Its details:
//
//   google.rpc.ErrorInfo   always; domain "sipd"; reason "MI_<code>" when an MI command
//                          answered (MI_404, MI_500), with metadata mi_code, mi_reason
//                          and outcome ("reply", "not-available", "failed"); otherwise
//                          a transport reason (INVALID_REQUEST, DEADLINE_EXPIRED,
//                          CANCELLED, CALL_CUT, REPLY_TOO_LARGE, UNKNOWN_METHOD, ...);
//   google.rpc.BadRequest  for INVALID_ARGUMENT: one violation per refused argument
//                          (the MI parameter, or the typed request's field); also for
//                          NOT_FOUND of a request field (an unknown event name).
//
// The sipd-mi-* trailers of sipd.mi.v1 stay as they were, for compatibility.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "grpcpp/support/status.h"
#include "registry/tree.h"

namespace sipd::service {

inline constexpr char kErrorDomain[] = "sipd";

// ErrorInfo reasons of statuses no MI command produced.
inline constexpr char kReasonInvalidRequest[] = "INVALID_REQUEST";
inline constexpr char kReasonDeadlineExpired[] = "DEADLINE_EXPIRED";
inline constexpr char kReasonCancelled[] = "CANCELLED";
inline constexpr char kReasonCallCut[] = "CALL_CUT";
inline constexpr char kReasonReplyTooLarge[] = "REPLY_TOO_LARGE";
inline constexpr char kReasonUnknownMethod[] = "UNKNOWN_METHOD";
inline constexpr char kReasonUnknownCommand[] = "UNKNOWN_COMMAND";
inline constexpr char kReasonConversion[] = "CONVERSION_FAILED";
inline constexpr char kReasonUnknownEvent[] = "UNKNOWN_EVENT";
inline constexpr char kReasonStopping[] = "STOPPING";
inline constexpr char kReasonFraming[] = "FRAMING";

// The status `code` of an MI answer (see service/status_mapping.h), message = the MI
// reason (cut at 512 bytes), with ErrorInfo "MI_<code>" and, when `code` is
// INVALID_ARGUMENT, a BadRequest: reply.bad_arguments if any, else one violation of
// `field` (empty: "params") with the reason as description.
grpc::Status MiErrorStatus(grpc::StatusCode code, const mi::Reply& reply, std::string_view outcome,
                           std::string_view field = {});

// A status no MI command answered: ErrorInfo `reason`, and when `field` is given a
// BadRequest with one violation of `field` described by `message` (INVALID_ARGUMENT, or
// NOT_FOUND for a name in the request that names nothing, e.g. Subscribe's events[i]).
grpc::Status TransportError(grpc::StatusCode code, std::string message, std::string_view reason,
                            std::string_view field = {});

// `status` unchanged if it is OK or carries details; otherwise the same code and
// message with an ErrorInfo whose reason is `reason`, or the code's name (e.g.
// "RESOURCE_EXHAUSTED") when `reason` is empty.
grpc::Status WithErrorDetails(const grpc::Status& status, std::string_view reason = {});

// The name of a status code, "NOT_FOUND".
std::string_view StatusCodeName(grpc::StatusCode code);

}  // namespace sipd::service
