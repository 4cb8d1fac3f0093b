// RFC 3261 (25.1) checks of the host and port of a SIP URI, for values that are stored
// or routed to: libosip2 parses a URI leniently and keeps whatever bytes it was given.
//
//   host      = hostname / IPv4address / IPv6reference
//   hostname  = *( domainlabel "." ) toplabel [ "." ]
//   domainlabel = alphanum / alphanum *( alphanum / "-" ) alphanum
//   toplabel  = ALPHA / ALPHA *( alphanum / "-" ) alphanum
//   port      = 1*DIGIT (we also require 1..65535)
//
// Thread-safety: pure functions.
#pragma once

#include <string_view>

namespace sipd {

// `host` as it appears in the URI (IPv6 in brackets) or as libosip2 gives it (IPv6
// without them).
bool IsValidSipHost(std::string_view host);
// The port text; an absent port is valid (callers pass nothing then).
bool IsValidSipPort(std::string_view port);

}  // namespace sipd
