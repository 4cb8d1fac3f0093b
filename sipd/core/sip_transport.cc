#include "sipd/core/sip_transport.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sipd {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

std::string_view SipProtoName(SipProto proto) {
  switch (proto) {
    case SipProto::kUdp:
      return "udp";
    case SipProto::kTcp:
      return "tcp";
  }
  return "unknown";
}

absl::StatusOr<SipAddress> SipAddress::FromIpPort(std::string_view ip, uint16_t port) {
  const std::string text(ip);
  SipAddress out;
  if (text.find(':') != std::string::npos) {
    auto& a = reinterpret_cast<sockaddr_in6&>(out.storage);
    if (inet_pton(AF_INET6, text.c_str(), &a.sin6_addr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a numeric IP address"));
    }
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    out.length = sizeof(a);
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(out.storage);
    if (inet_pton(AF_INET, text.c_str(), &a.sin_addr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a numeric IP address"));
    }
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    out.length = sizeof(a);
  }
  return out;
}

absl::StatusOr<SipAddress> SipAddress::Parse(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("'", AbslView(text), "': expected [IPv6]:PORT"));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return absl::InvalidArgumentError(absl::StrCat("'", AbslView(text), "': expected IP:PORT"));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  uint32_t number = 0;
  if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos ||
      !absl::SimpleAtoi(AbslView(port), &number) || number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", AbslView(text), "': bad port '", AbslView(port), "'"));
  }
  return FromIpPort(host, static_cast<uint16_t>(number));
}

SipAddress SipAddress::FromSockaddr(const sockaddr* address, socklen_t length) {
  SipAddress out;
  if (address == nullptr) return out;
  if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    std::memcpy(&out.storage, address, sizeof(sockaddr_in));
    out.length = sizeof(sockaddr_in);
  } else if (address->sa_family == AF_INET6 &&
             length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    std::memcpy(&out.storage, address, sizeof(sockaddr_in6));
    out.length = sizeof(sockaddr_in6);
  }
  return out;
}

std::string SipAddress::ip() const {
  if (storage.ss_family == AF_INET) {
    // Once per message received: without inet_ntop's sprintf.
    const auto* b = reinterpret_cast<const uint8_t*>(
        &reinterpret_cast<const sockaddr_in&>(storage).sin_addr.s_addr);
    return absl::StrCat(b[0], ".", b[1], ".", b[2], ".", b[3]);
  }
  char text[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(storage).sin6_addr, text,
              sizeof(text));
  }
  return text;
}

uint16_t SipAddress::port() const {
  if (storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(storage).sin_port);
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(storage).sin6_port);
  }
  return 0;
}

std::string SipAddress::ToString() const {
  if (empty()) return "";
  return ipv6() ? absl::StrCat("[", ip(), "]:", port()) : absl::StrCat(ip(), ":", port());
}

bool operator==(const SipAddress& a, const SipAddress& b) {
  if (a.storage.ss_family != b.storage.ss_family) return false;
  if (a.storage.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a.storage);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b.storage);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.storage.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a.storage);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b.storage);
    return x.sin6_port == y.sin6_port &&
           std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
  }
  return true;  // both empty
}

SipDestination SipDestination::ReplyTo(const SipSource& source) {
  SipDestination d;
  d.proto = source.proto;
  d.address = source.peer;
  d.socket = source.socket;
  d.connection = source.connection;
  return d;
}

}  // namespace sipd
