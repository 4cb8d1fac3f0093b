#include "service/status_mapping.h"

namespace sipd::service {

grpc::StatusCode MiCodeToStatusCode(uint32_t mi_code) {
  if (mi_code >= 200 && mi_code < 300) return grpc::StatusCode::OK;
  switch (mi_code) {
    case 400:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 401:
      return grpc::StatusCode::UNAUTHENTICATED;
    case 403:
      return grpc::StatusCode::PERMISSION_DENIED;
    case 404:
    case 481:
      return grpc::StatusCode::NOT_FOUND;
    case 405:
    case 501:
      return grpc::StatusCode::UNIMPLEMENTED;
    case 408:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case 409:
      return grpc::StatusCode::ALREADY_EXISTS;
    case 503:
      return grpc::StatusCode::UNAVAILABLE;
    default:
      break;
  }
  if (mi_code >= 400 && mi_code < 500) return grpc::StatusCode::FAILED_PRECONDITION;
  return grpc::StatusCode::INTERNAL;
}

grpc::StatusCode OutcomeStatusCode(mi::Outcome outcome, const mi::Reply& reply) {
  switch (outcome) {
    case mi::Outcome::kNotAvailable:
      return grpc::StatusCode::NOT_FOUND;
    case mi::Outcome::kFailed:
    case mi::Outcome::kParseError:
      return grpc::StatusCode::INTERNAL;
    case mi::Outcome::kReply:
      break;
  }
  if (!reply.bad_arguments.empty() && !reply.is_success()) {
    return grpc::StatusCode::INVALID_ARGUMENT;
  }
  return MiCodeToStatusCode(reply.code);
}

std::string_view OutcomeName(mi::Outcome outcome) {
  switch (outcome) {
    case mi::Outcome::kNotAvailable:
      return kOutcomeNotAvailable;
    case mi::Outcome::kFailed:
    case mi::Outcome::kParseError:
      return kOutcomeFailed;
    case mi::Outcome::kReply:
      break;
  }
  return kOutcomeReply;
}

std::string EncodeMetadataText(std::string_view text, size_t max_bytes) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  if (text.size() > max_bytes) text = text.substr(0, max_bytes);
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c <= 0x7E && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}
}  // namespace

std::string DecodeMetadataText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      const int hi = HexValue(text[i + 1]);
      const int lo = HexValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

}  // namespace sipd::service
