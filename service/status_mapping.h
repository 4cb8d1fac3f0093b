// MI code -> gRPC status mapping and the trailing metadata that keeps the MI code and
// reason visible to gRPC clients (documented in proto/sipd/mi/v1/mi.proto).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "grpcpp/support/status.h"
#include "registry/dispatcher.h"

namespace sipd::service {

// Trailing metadata keys (lower case, as HTTP/2 requires).
inline constexpr char kMetadataMiCode[] = "sipd-mi-code";
inline constexpr char kMetadataMiReason[] = "sipd-mi-reason";
// Serialized sipd.mi.v1.Reply of a non-2xx reply ("-bin": binary metadata).
inline constexpr char kMetadataMiReplyBin[] = "sipd-mi-reply-bin";
// What happened to the request: "reply" (the command ran and replied; the code is its
// code), "not-available" (no such command), "failed" (the handler returned nothing).
inline constexpr char kMetadataMiOutcome[] = "sipd-mi-outcome";

inline constexpr std::string_view kOutcomeReply = "reply";
inline constexpr std::string_view kOutcomeNotAvailable = "not-available";
inline constexpr std::string_view kOutcomeFailed = "failed";

// The documented table:
//   2xx -> OK; 400 -> INVALID_ARGUMENT; 401, 403 -> PERMISSION_DENIED;
//   404, 481 -> NOT_FOUND; 405, 501 -> UNIMPLEMENTED; 408 -> DEADLINE_EXCEEDED;
//   409 -> ALREADY_EXISTS; other 4xx -> FAILED_PRECONDITION; 503 -> UNAVAILABLE;
//   500 and every other code (5xx, 1xx, 3xx, 6xx+) -> INTERNAL.
grpc::StatusCode MiCodeToStatusCode(uint32_t mi_code);

// What Execute answers for a dispatch outcome (the same for ExecuteStream, each Session
// request and the typed services): kNotAvailable -> NOT_FOUND, kFailed and kParseError
// -> INTERNAL, kReply -> INVALID_ARGUMENT when the reply refuses the arguments
// (reply.bad_arguments: a missing argument, whatever MI code the 1.11 text carries,
// e.g. cache_store's 404 "Too few arguments"), else MiCodeToStatusCode(reply.code).
grpc::StatusCode OutcomeStatusCode(mi::Outcome outcome, const mi::Reply& reply);
// The `sipd-mi-outcome` text of an outcome ("reply", "not-available", "failed").
std::string_view OutcomeName(mi::Outcome outcome);

// Percent-encodes every byte outside printable ASCII (0x20..0x7E) and '%' itself, so
// any MI reason is a valid ASCII metadata value (the encoding gRPC uses for
// grpc-message). Longer inputs are cut at `max_bytes` (before encoding).
std::string EncodeMetadataText(std::string_view text, size_t max_bytes = 1024);

// Reverses EncodeMetadataText (an invalid escape is kept literally).
std::string DecodeMetadataText(std::string_view text);

}  // namespace sipd::service
