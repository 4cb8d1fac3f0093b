#include "sipd/modules/tm/proxy.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace sipd::tm {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(absl::ascii_tolower(static_cast<unsigned char>(c)));
  return out;
}

bool RecordRoutes(Method m) {
  return m == Method::kInvite || m == Method::kSubscribe || m == Method::kRefer;
}

}  // namespace

uint32_t MethodBit(std::string_view method) {
  static constexpr std::pair<std::string_view, uint32_t> kBits[] = {
      {"INVITE", 1},    {"CANCEL", 2},   {"ACK", 4},        {"BYE", 8},        {"INFO", 16},
      {"OPTIONS", 32},  {"UPDATE", 64},  {"REGISTER", 128}, {"MESSAGE", 256},  {"SUBSCRIBE", 512},
      {"NOTIFY", 1024}, {"PRACK", 2048}, {"REFER", 4096},   {"PUBLISH", 8192},
  };
  for (const auto& [name, bit] : kBits) {
    if (name == method) return bit;
  }
  return 16384;
}

Proxy::Proxy(ProxyOptions options, LocationLookup lookup,
             absl::flat_hash_map<std::string, LocalHandler> handlers)
    : options_(std::move(options)), lookup_(std::move(lookup)), handlers_(std::move(handlers)) {
  for (std::string& d : options_.domains) d = Lower(d);
}

RouteDecision Proxy::Reply(int code, std::string reason, std::vector<std::string> headers) {
  RouteDecision d;
  d.kind = RouteDecision::Kind::kReply;
  d.code = code;
  d.reason = std::move(reason);
  d.headers = std::move(headers);
  return d;
}

bool Proxy::IsMe(std::string_view host, uint16_t port) const {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  for (const LocalSocket& s : options_.sockets) {
    if (s.ip == host && (port == s.port || (port == 0 && s.port == 5060))) return true;
  }
  return false;
}

bool Proxy::Serves(std::string_view host) const {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string lower = Lower(host);
  for (const LocalSocket& s : options_.sockets) {
    if (s.ip == lower) return true;
  }
  return std::find(options_.domains.begin(), options_.domains.end(), lower) !=
         options_.domains.end();
}

RouteDecision Proxy::ToUri(const SipUri& uri, std::string_view request_uri, int pop_routes) const {
  auto destination = ResolveUri(uri, options_.sockets, options_.resolver);
  if (!destination.ok()) {
    return destination.status().code() == absl::StatusCode::kUnimplemented
               ? Reply(416, "Unsupported URI Scheme")
               : Reply(478, "Unresolvable Destination");
  }
  RouteDecision d;
  d.kind = RouteDecision::Kind::kRelay;
  d.pop_routes = pop_routes;
  d.targets.push_back(Target{std::string(request_uri), *destination, {}});
  return d;
}

RouteDecision Proxy::Route(const SipMessage& request, const Inbound& /*from*/) {
  auto uri = request.RequestUri();
  if (!uri.ok()) return Reply(400, "Bad Request-URI");

  // 1. Loose routing: Route entries that name sipd are consumed.
  auto routes = request.Routes();
  if (!routes.ok()) return Reply(400, "Bad Route header");
  int pop = 0;
  while (static_cast<size_t>(pop) < routes->size() &&
         IsMe((*routes)[pop].uri.host, (*routes)[pop].uri.port)) {
    ++pop;
  }
  if (static_cast<size_t>(pop) < routes->size()) {
    if (pop == 0 && !options_.relay_to_any) {
      // A Route that does not start with sipd asks sipd to relay for someone else.
      return Reply(403, "Relaying Forbidden");
    }
    // The next hop is the next Route entry.
    RouteDecision d = ToUri((*routes)[pop].uri, request.request_uri(), pop);
    if (d.kind == RouteDecision::Kind::kRelay) {
      d.record_route = request.to_tag().empty() && RecordRoutes(request.method());
    }
    return d;
  }
  const bool to_me = IsMe(uri->host, uri->port);
  if (pop > 0 && !to_me) {
    // Routed through sipd, no Route left: the Request-URI (remote target) is next.
    RouteDecision d = ToUri(*uri, request.request_uri(), pop);
    if (d.kind == RouteDecision::Kind::kRelay) {
      d.record_route = request.to_tag().empty() && RecordRoutes(request.method());
    }
    return d;
  }

  // 2. In-dialog, not routed through sipd.
  if (!request.to_tag().empty()) {
    if (to_me || Serves(uri->host)) {
      // To sipd itself: no dialog of sipd's; to a user: found by location below.
      if (uri->user.empty()) return Reply(404, "Not Here");
    } else {
      if (!options_.relay_to_any) return Reply(403, "Relaying Forbidden");
      return ToUri(*uri, request.request_uri(), pop);
    }
  }

  // 3. A domain sipd serves.
  if (to_me || Serves(uri->host)) {
    if (auto it = handlers_.find(std::string(request.method_text())); it != handlers_.end()) {
      // REGISTER for any user of a served domain; other methods only for sipd itself.
      if (request.method() == Method::kRegister || uri->user.empty()) {
        RouteDecision d;
        d.kind = RouteDecision::Kind::kLocal;
        d.handler = it->second;
        return d;
      }
    }
    if (uri->user.empty() || request.method() == Method::kRegister) return ForSipd(request);
    return Lookup(request, *uri);
  }

  // 4. Someone else's domain.
  if (!options_.relay_to_any) return Reply(403, "Relaying Forbidden");
  RouteDecision d = ToUri(*uri, request.request_uri(), pop);
  if (d.kind == RouteDecision::Kind::kRelay) {
    d.record_route = request.to_tag().empty() && RecordRoutes(request.method());
  }
  return d;
}

RouteDecision Proxy::ForSipd(const SipMessage& request) const {
  switch (request.method()) {
    case Method::kOptions:
      return Reply(200, "OK", options_.options_headers);
    case Method::kAck:
      return RouteDecision{.kind = RouteDecision::Kind::kDrop};
    case Method::kRegister:
      return Reply(405, "Method Not Allowed", {options_.allow_header});
    default:
      return Reply(501, "Not Implemented", {options_.allow_header});
  }
}

RouteDecision Proxy::Lookup(const SipMessage& request, const SipUri& uri) const {
  std::optional<std::vector<Binding>> bindings;
  if (lookup_) bindings = lookup_(uri.user, Lower(uri.host));
  if (!bindings || bindings->empty()) return Reply(404, "Not Found");
  std::vector<Binding> usable;
  const uint32_t bit = MethodBit(request.method_text());
  for (Binding& b : *bindings) {
    if (b.valid && (b.methods & bit) != 0) usable.push_back(std::move(b));
  }
  if (usable.empty()) return Reply(480, "Temporarily Unavailable");
  // Highest q first; the table already keeps that order, keep it stable.
  std::stable_sort(usable.begin(), usable.end(),
                   [](const Binding& a, const Binding& b) { return a.q > b.q; });
  RouteDecision d;
  d.kind = RouteDecision::Kind::kRelay;
  d.record_route = RecordRoutes(request.method());
  for (const Binding& b : usable) {
    if (d.targets.size() >= kMaxBranches) break;
    auto contact = ParseUri(b.uri);
    if (!contact.ok() || !contact->is_sip()) continue;
    SipUri where = *contact;
    absl::StatusOr<SipUri> received = absl::InvalidArgumentError("none");
    if (!b.received.empty()) {
      received = ParseUri(b.received);
      if (received.ok()) where = *received;
    }
    // The contact's transport unless `received` names one.
    std::string transport_uri;
    if (received.ok() && received->transport().empty() && !contact->transport().empty()) {
      transport_uri = absl::StrCat(std::string(received->text),
                                   ";transport=", std::string(contact->transport()));
      auto with_transport = ParseUri(transport_uri);
      if (with_transport.ok()) where = *with_transport;
    }
    std::vector<std::string_view> path = SplitList(b.path);
    absl::StatusOr<NameAddr> first_path = absl::InvalidArgumentError("none");
    if (!path.empty()) {
      first_path = ParseNameAddr(path.front());
      if (!first_path.ok()) continue;
      where = first_path->uri;  // RFC 3327: the Path is the route to the contact
    }
    auto destination = ResolveUri(where, options_.sockets, options_.resolver, b.socket);
    if (!destination.ok()) continue;
    Target t;
    t.request_uri = b.uri;
    t.destination = *destination;
    for (std::string_view p : path) t.routes.emplace_back(p);
    d.targets.push_back(std::move(t));
  }
  if (d.targets.empty()) return Reply(480, "Temporarily Unavailable");
  return d;
}

}  // namespace sipd::tm
