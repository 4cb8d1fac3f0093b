#include "sipd/core/sip_uri.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

namespace sipd {
namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlnum(char c) { return IsAlpha(c) || IsDigit(c); }

bool IsIpv4(std::string_view text) {
  if (text.empty() || text.size() > 15) return false;
  in_addr addr;
  return inet_pton(AF_INET, std::string(text).c_str(), &addr) == 1;
}

bool IsLabel(std::string_view label, bool top) {
  if (label.empty() || label.size() > 63) return false;
  if (!(top ? IsAlpha(label.front()) : IsAlnum(label.front())) || !IsAlnum(label.back())) {
    return false;
  }
  for (char c : label) {
    if (!IsAlnum(c) && c != '-') return false;
  }
  return true;
}

bool IsHostname(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  if (host.back() == '.') host.remove_suffix(1);
  size_t start = 0;
  while (true) {
    const size_t dot = host.find('.', start);
    const bool last = dot == std::string_view::npos;
    const std::string_view label = host.substr(start, last ? std::string_view::npos : dot - start);
    if (!IsLabel(label, last)) return false;
    if (last) return true;
    start = dot + 1;
  }
}

}  // namespace

bool IsValidSipHost(std::string_view host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    const std::string inner(host.substr(1, host.size() - 2));
    in6_addr addr;
    return inner.size() <= 45 && inet_pton(AF_INET6, inner.c_str(), &addr) == 1;
  }
  if (host.find(':') != std::string_view::npos) {
    // libosip2 hands IPv6 hosts over without their brackets.
    const std::string text(host);
    in6_addr addr;
    return text.size() <= 45 && inet_pton(AF_INET6, text.c_str(), &addr) == 1;
  }
  // A dotted quad that is not a valid IPv4 address (e.g. 127.0.0.999) is not a hostname
  // either: its top label starts with a digit.
  return IsIpv4(host) || IsHostname(host);
}

bool IsValidSipPort(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (!IsDigit(c)) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value >= 1 && value <= 65535;
}

}  // namespace sipd
