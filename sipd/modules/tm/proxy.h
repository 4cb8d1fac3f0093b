// The proxy's routing policy (RFC 3261 16.4-16.5), the classic registrar + proxy
// without a script engine:
//
//   1. Route header naming sipd (its listen addresses; sipd's Record-Route)? Loose
//      routing: those entries are removed and the request goes to the next Route entry,
//      or to the Request-URI when none is left. In-dialog requests (To tag) arrive this
//      way; sipd record-routes every dialog it relays.
//   2. In-dialog request that does not route through sipd: 404 "Not Here" if its
//      Request-URI is sipd itself, else relayed to it only with relay_to_any (else 403).
//   3. Request-URI in a domain sipd serves (modparam "domains", default: the listen
//      addresses):
//        REGISTER -> the registrar (local handler);
//        no user part (sipd itself) -> OPTIONS 200 with Allow/Accept/Supported, other
//        methods 501 / 405 like the stateless core;
//        user part -> location lookup of the AOR: no binding -> 404 Not Found; bindings
//        but none usable (expired, method not allowed) -> 480 Temporarily Unavailable;
//        otherwise every usable contact gets a branch (parallel forking, highest q
//        first, at most 12), to the contact's `received` address when it registered
//        from behind a NAT, with its Path as Route.
//   4. Any other domain: 403 "Relaying Forbidden", or relayed to the Request-URI with
//      relay_to_any = 1.
// INVITE, SUBSCRIBE and REFER outside a dialog are record-routed.
// Limits: no DNS NAPTR/SRV (A/AAAA only, resolver.h), no TLS, no strict-route
// repair of a Request-URI that names sipd (16.4's second case).
//
// Thread-safety: immutable after construction; Route() runs in any SIP process.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "sipd/modules/tm/transaction_layer.h"

namespace sipd::tm {

// One registered contact as the proxy needs it (from usrloc).
struct Binding {
  std::string uri;
  std::string received;  // "sip:IP:PORT" when it differs from the contact; empty = none
  std::string path;      // comma-separated Path values; empty = none
  std::string socket;    // the listen socket it registered through ("udp:IP:PORT")
  int32_t q = -1;        // 0..1000, -1 unspecified
  uint32_t methods = 0xFFFFFFFFu;
  bool valid = true;  // not expired
};

// Looks up the AOR of a Request-URI (user and host); nullopt = no such AOR.
using LocationLookup = std::function<std::optional<std::vector<Binding>>(std::string_view user,
                                                                         std::string_view host)>;

struct ProxyOptions {
  // Domains sipd serves (lower-case host names or IPs), besides its listen addresses.
  std::vector<std::string> domains;
  bool relay_to_any = false;
  std::vector<LocalSocket> sockets;
  // Headers of the 200 to OPTIONS for sipd itself.
  std::vector<std::string> options_headers;
  // The Allow header of 405/501 answers.
  std::string allow_header;
  // Host names in targets (ResolveUri); null: numeric hosts only. Outlives the proxy.
  HostResolver* resolver = nullptr;
};

class Proxy final : public Router {
 public:
  // `handlers`: local handlers by method (REGISTER -> registrar). `lookup` may be empty
  // (no usrloc): every user is then "not found".
  Proxy(ProxyOptions options, LocationLookup lookup,
        absl::flat_hash_map<std::string, LocalHandler> handlers);

  RouteDecision Route(const SipMessage& request, const Inbound& from) override;
  bool IsMe(std::string_view host, uint16_t port) const override;
  // Whether `host` is a domain sipd serves.
  bool Serves(std::string_view host) const;

 private:
  RouteDecision ToUri(const SipUri& uri, std::string_view request_uri, int pop_routes) const;
  RouteDecision Lookup(const SipMessage& request, const SipUri& uri) const;
  RouteDecision ForSipd(const SipMessage& request) const;
  static RouteDecision Reply(int code, std::string reason, std::vector<std::string> headers = {});

  ProxyOptions options_;
  LocationLookup lookup_;
  absl::flat_hash_map<std::string, LocalHandler> handlers_;
};

// OpenSIPS's method bits (usrloc `methods`).
uint32_t MethodBit(std::string_view method);

}  // namespace sipd::tm
