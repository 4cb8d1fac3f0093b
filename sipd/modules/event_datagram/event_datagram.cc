#include "sipd/modules/event_datagram/event_datagram.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace event_datagram {
namespace {

constexpr char kSeparator = '\n';

// Host and port of an address as event_subscribe got it.
struct UdpParts {
  std::string host;  // without brackets
  bool bracketed = false;
  uint16_t port = 0;
};

absl::StatusOr<UdpParts> SplitUdp(std::string_view address) {
  UdpParts parts;
  std::string_view port_text;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return absl::InvalidArgumentError("malformed [IPv6]:PORT");
    }
    parts.host = std::string(address.substr(1, close - 1));
    parts.bracketed = true;
    port_text = address.substr(close + 2);
  } else {
    // 1.11: the first colon ends the host.
    const size_t colon = address.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError("port not specified");
    }
    parts.host = std::string(address.substr(0, colon));
    port_text = address.substr(colon + 1);
  }
  // 1.11 str2s: 1 to 5 digits; port 0 refused. Above 65535 1.11 wraps; sipd refuses.
  if (parts.host.empty() || port_text.empty() || port_text.size() > 5) {
    return absl::InvalidArgumentError("malformed address or port");
  }
  uint32_t port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return absl::InvalidArgumentError("malformed port");
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port == 0 || port > 65535) return absl::InvalidArgumentError("malformed port");
  parts.port = static_cast<uint16_t>(port);
  return parts;
}

// The destination of a UDP subscriber (resolves a host name with `resolver`, as 1.11 did
// when subscribing; IPv4 only, as 1.11 sent with a sockaddr_in).
absl::Status ResolveUdp(const UdpParts& parts, tm::HostResolver* resolver, sockaddr_storage* out,
                        socklen_t* length) {
  std::memset(out, 0, sizeof(*out));
  if (parts.bracketed) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
    if (inet_pton(AF_INET6, parts.host.c_str(), &in6->sin6_addr) != 1) {
      return absl::InvalidArgumentError("malformed IPv6 address");
    }
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(parts.port);
    *length = sizeof(sockaddr_in6);
    return absl::OkStatus();
  }
  auto* in4 = reinterpret_cast<sockaddr_in*>(out);
  in4->sin_family = AF_INET;
  in4->sin_port = htons(parts.port);
  *length = sizeof(sockaddr_in);
  if (inet_pton(AF_INET, parts.host.c_str(), &in4->sin_addr) == 1) return absl::OkStatus();
  if (resolver == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve host ", parts.host, ": not an IPv4 address"));
  }
  absl::StatusOr<std::vector<tm::SocketAddress>> found = resolver->Resolve(parts.host);
  if (!found.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve host ", parts.host, ": ", found.status().message()));
  }
  const auto v4 = std::find_if(found->begin(), found->end(), [](const tm::SocketAddress& a) {
    return a.generic.sa_family == AF_INET;
  });
  if (v4 == found->end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve host ", parts.host, ": no IPv4 address"));
  }
  in4->sin_addr = v4->v4.sin_addr;
  return absl::OkStatus();
}

std::string CanonicalUdp(const UdpParts& parts) {
  return parts.bracketed ? absl::StrCat("[", parts.host, "]:", parts.port)
                         : absl::StrCat(parts.host, ":", parts.port);
}

void AppendValue(std::string& out, const mi::EventValue& value) {
  if (const int64_t* n = std::get_if<int64_t>(&value)) {
    // 1.11 prints its int through int2str(unsigned long): -1 is 18446744073709551615.
    absl::StrAppend(&out, static_cast<uint64_t>(*n));
    return;
  }
  const std::string& text = std::get<std::string>(value);
  if (text.find(kSeparator) == std::string::npos) {
    out += text;
    return;
  }
  out += '"';
  for (char c : text) {
    if (c == '"') out += '\\';
    out += c;
  }
  out += '"';
}

}  // namespace

std::string EncodePayload(const mi::Event& event, const std::vector<mi::EventValue>& values) {
  std::string out = event.name();
  out += kSeparator;
  for (size_t i = 0; i < values.size(); ++i) {
    if (i < event.params().size()) absl::StrAppend(&out, event.params()[i].name, "::");
    AppendValue(out, values[i]);
    out += kSeparator;
  }
  out += kSeparator;
  return out;
}

absl::StatusOr<std::string> ParseUdpAddress(std::string_view address, tm::HostResolver* resolver) {
  SIPD_ASSIGN_OR_RETURN(UdpParts parts, SplitUdp(address));
  sockaddr_storage storage;
  socklen_t length = 0;
  SIPD_RETURN_IF_ERROR(ResolveUdp(parts, resolver, &storage, &length));
  std::string canonical = CanonicalUdp(parts);
  if (canonical.size() > mi::kMaxEventAddressLength) {
    return absl::InvalidArgumentError("address too long");
  }
  return canonical;
}

absl::StatusOr<std::string> ParseUnixAddress(std::string_view address) {
  if (address.empty()) return absl::InvalidArgumentError("no socket path");
  if (address.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError("socket path too long");
  }
  if (address.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("NUL in socket path");
  }
  return std::string(address);
}

namespace {

// One subscriber as the delivery process sends to it.
struct Target {
  std::string socket;  // protocol:address, for logs
  bool is_unix = false;
  sockaddr_storage address{};
  socklen_t address_length = 0;
  mi::Subscription subscription;
  // Logs at most one failure per target per refresh (then every kLogEvery failures).
  uint64_t failures = 0;
};

constexpr uint64_t kLogEvery = 1000;
// The delivery process keeps the priority the daemon gave it (mi_nice) unless "nice" says.
constexpr int kInheritNice = -1;
// Events taken per wake-up before the loop looks at shutdown and expiries again.
constexpr int kBatch = 256;

int OpenSocket(int family) { return socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); }

class EventDatagramModule final : public Module {
 public:
  std::string_view name() const override { return "event_datagram"; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    const int64_t* number = std::get_if<int64_t>(&value);
    if (param == "queue_size" && number != nullptr && *number >= (128 << 10) &&
        *number <= (256 << 20)) {
      queue_bytes_ = static_cast<size_t>(*number);
      return absl::OkStatus();
    }
    if (param == "nice" && number != nullptr && *number >= 0 && *number <= 19) {
      nice_ = static_cast<int>(*number);
      return absl::OkStatus();
    }
    // dns_timeout, dns_tries, dns_neg_ttl, dns_servers: as tm's.
    if (std::optional<absl::Status> dns = tm::SetResolverParam(resolver_options_, param, number,
                                                               std::get_if<std::string>(&value));
        dns.has_value()) {
      if (dns->ok()) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("event_datagram: parameter ", std::string(param), " ", dns->message()));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "event_datagram: unknown parameter or bad value '", std::string(param),
        "' (queue_size: bytes, 131072 .. 268435456; nice: 0 .. 19; dns_timeout, dns_tries, "
        "dns_neg_ttl, dns_servers: as tm's)"));
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    events_ = core.events();
    if (events_ == nullptr || events_->backend() == nullptr) {
      return absl::FailedPreconditionError("event_datagram: the core has no event interface");
    }
    SIPD_ASSIGN_OR_RETURN(consumer_,
                          events_->backend()->AddConsumer("event_datagram", queue_bytes_));
    resolver_ = std::make_unique<tm::HostResolver>(resolver_options_);
    SIPD_RETURN_IF_ERROR(
        events_->AddTransport({"udp",
                               [resolver = resolver_.get()](std::string_view address) {
                                 return ParseUdpAddress(address, resolver);
                               },
                               consumer_}));
    SIPD_RETURN_IF_ERROR(events_->AddTransport({"unix", ParseUnixAddress, consumer_}));
    return absl::OkStatus();
  }

  std::vector<ProcessSpec> Processes() override {
    ProcessSpec spec;
    spec.name = "Event datagram";
    spec.count = 1;
    spec.init_child = false;  // needs no other module's per-process state
    spec.main = [this](int) { return Run(); };
    return {std::move(spec)};
  }

 private:
  absl::Status Run();
  void Refresh();
  void Deliver(const mi::RaisedEvent& event, int64_t now);
  void SendBatch(int fd, const std::vector<Target*>& targets, const std::string& payload,
                 uint64_t* delivered, uint64_t* failed);
  void NoteFailure(Target& target, int error);

  Core* core_ = nullptr;
  mi::EventRegistry* events_ = nullptr;
  mi::EventConsumer* consumer_ = nullptr;
  size_t queue_bytes_ = 4 << 20;
  int nice_ = kInheritNice;
  tm::ResolverOptions resolver_options_;
  // Subscribers' host names: event_subscribe (MI processes) and the delivery process, a
  // cache per process.
  std::unique_ptr<tm::HostResolver> resolver_;

  // Delivery process only.
  int udp4_ = -1;
  int udp6_ = -1;
  int unix_ = -1;
  uint64_t generation_ = UINT64_MAX;
  std::map<mi::EventId, std::vector<Target>> targets_;
  uint64_t dropped_seen_ = 0;
  // Scratch of Deliver(): targets per socket (UDP IPv4, UDP IPv6, UNIX), messages.
  std::vector<Target*> by_socket_[3];
  std::vector<mmsghdr> messages_;
};

void EventDatagramModule::Refresh() {
  mi::EventBackend& backend = *events_->backend();
  generation_ = backend.subscriptions_generation();
  std::map<mi::EventId, std::vector<Target>> fresh;
  for (mi::Subscription& s : backend.Subscriptions(std::nullopt)) {
    Target target;
    target.socket = s.socket();
    if (s.protocol == "unix") {
      auto* un = reinterpret_cast<sockaddr_un*>(&target.address);
      un->sun_family = AF_UNIX;
      std::memcpy(un->sun_path, s.address.data(),
                  std::min(s.address.size(), sizeof(un->sun_path) - 1));
      target.address_length = sizeof(sockaddr_un);
      target.is_unix = true;
    } else if (s.protocol == "udp") {
      // Host names are resolved when the subscriptions change (1.11 resolved them when
      // subscribing); the resolver's cache keeps each answer for its TTL.
      absl::StatusOr<UdpParts> parts = SplitUdp(s.address);
      absl::Status status =
          parts.ok() ? ResolveUdp(*parts, resolver_.get(), &target.address, &target.address_length)
                     : parts.status();
      if (!status.ok()) {
        spdlog::warn("event_datagram: subscriber {} not reachable: {}", target.socket,
                     std::string(status.message()));
        continue;
      }
    } else {
      continue;  // another consumer's protocol
    }
    target.subscription = std::move(s);
    fresh[target.subscription.event].push_back(std::move(target));
  }
  targets_ = std::move(fresh);
}

void EventDatagramModule::NoteFailure(Target& target, int error) {
  if (target.failures++ % kLogEvery == 0) {
    spdlog::warn("event_datagram: cannot send to {}: {} ({} failure(s))", target.socket,
                 error == 0 ? "short write" : std::strerror(error), target.failures);
  }
}

void EventDatagramModule::SendBatch(int fd, const std::vector<Target*>& targets,
                                    const std::string& payload, uint64_t* delivered,
                                    uint64_t* failed) {
  if (targets.empty()) return;
  if (fd < 0) {
    for (Target* t : targets) NoteFailure(*t, EBADF);
    *failed += targets.size();
    return;
  }
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  messages_.assign(targets.size(), mmsghdr{});
  for (size_t i = 0; i < targets.size(); ++i) {
    msghdr& header = messages_[i].msg_hdr;
    header.msg_name = &targets[i]->address;
    header.msg_namelen = targets[i]->address_length;
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
  }
  // One system call for all of them; sendmmsg stops at the first failure, which the
  // next call (starting there) reports.
  size_t at = 0;
  while (at < targets.size()) {
    const int sent = sendmmsg(fd, &messages_[at], static_cast<unsigned>(targets.size() - at),
                              MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      NoteFailure(*targets[at++], errno);
      ++*failed;
      continue;
    }
    for (size_t k = at; k < at + static_cast<size_t>(sent); ++k) {
      if (messages_[k].msg_len == payload.size()) {
        ++*delivered;
      } else {
        NoteFailure(*targets[k], 0);
        ++*failed;
      }
    }
    at += static_cast<size_t>(sent);
  }
}

void EventDatagramModule::Deliver(const mi::RaisedEvent& event, int64_t now) {
  auto it = targets_.find(event.id);
  const mi::Event* declared = events_->Get(event.id);
  if (it == targets_.end() || declared == nullptr) return;
  const std::string payload = EncodePayload(*declared, event.values);
  for (auto& group : by_socket_) group.clear();
  // Newest subscriber first, as 1.11 walked its list (per socket kind).
  for (Target& target : it->second) {
    if (target.subscription.Expired(now)) continue;  // 1.11 dropped it before sending
    const size_t group = target.is_unix ? 2 : target.address.ss_family == AF_INET6 ? 1 : 0;
    by_socket_[group].push_back(&target);
  }
  if (!by_socket_[1].empty() && udp6_ < 0) udp6_ = OpenSocket(AF_INET6);
  uint64_t delivered = 0;
  uint64_t failed = 0;
  SendBatch(udp4_, by_socket_[0], payload, &delivered, &failed);
  SendBatch(udp6_, by_socket_[1], payload, &delivered, &failed);
  SendBatch(unix_, by_socket_[2], payload, &delivered, &failed);
  consumer_->CountDeliveries(delivered, failed);
}

absl::Status EventDatagramModule::Run() {
  if (nice_ != kInheritNice && setpriority(PRIO_PROCESS, 0, nice_) != 0) {
    spdlog::warn("event_datagram: cannot set nice {}: {}", nice_, std::strerror(errno));
  }
  udp4_ = OpenSocket(AF_INET);
  unix_ = OpenSocket(AF_UNIX);
  if (udp4_ < 0 || unix_ < 0) {
    const std::string why = std::strerror(errno);
    if (udp4_ >= 0) close(udp4_);
    if (unix_ >= 0) close(unix_);
    return absl::InternalError(absl::StrCat("event_datagram: socket: ", why));
  }
  mi::EventBackend& backend = *events_->backend();
  std::optional<int64_t> next_expiry;
  backend.ExpireSubscriptions(&next_expiry);
  mi::RaisedEvent event;
  while (!core_->stopping()) {
    core_->SyncLogLevel();
    const int64_t now = backend.Now();
    if (next_expiry.has_value() && now >= *next_expiry) backend.ExpireSubscriptions(&next_expiry);
    if (backend.subscriptions_generation() != generation_) {
      Refresh();
      backend.ExpireSubscriptions(&next_expiry);  // the next expiry may have changed too
    }
    int handled = 0;
    while (handled < kBatch && consumer_->Pop(event)) {
      Deliver(event, now);
      ++handled;
    }
    if (consumer_->dropped() != dropped_seen_) {
      spdlog::warn("event_datagram: {} event(s) dropped so far: the queue was full",
                   consumer_->dropped());
      dropped_seen_ = consumer_->dropped();
    }
    if (handled == kBatch) continue;
    // Wake for the next event, the next expiry, or a look at core_->stopping().
    std::chrono::milliseconds timeout(200);
    if (next_expiry.has_value()) {
      timeout = std::min(
          timeout, std::chrono::milliseconds(std::max<int64_t>(0, (*next_expiry - now) * 1000)));
    }
    consumer_->WaitForEvents(timeout);
  }
  close(udp4_);
  close(unix_);
  if (udp6_ >= 0) close(udp6_);
  return absl::OkStatus();
}

}  // namespace
}  // namespace event_datagram

std::unique_ptr<Module> NewEventDatagramModule() {
  return std::make_unique<event_datagram::EventDatagramModule>();
}

}  // namespace sipd
