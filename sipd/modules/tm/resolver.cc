#include "sipd/modules/tm/resolver.h"

#include <ares.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "sipd/core/clock.h"
#include "spdlog/spdlog.h"

namespace sipd::tm {
namespace {

struct Lookup {
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<SocketAddress> addresses;
  int64_t ttl_ms = -1;
};

void Done(void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
  auto* lookup = static_cast<Lookup*>(arg);
  lookup->done = true;
  lookup->status = status;
  if (result == nullptr) return;
  for (const ares_addrinfo_node* n = result->nodes; n != nullptr; n = n->ai_next) {
    SocketAddress a{};
    if (n->ai_family == AF_INET && n->ai_addrlen >= sizeof(sockaddr_in)) {
      std::memcpy(&a.v4, n->ai_addr, sizeof(sockaddr_in));
    } else if (n->ai_family == AF_INET6 && n->ai_addrlen >= sizeof(sockaddr_in6)) {
      std::memcpy(&a.v6, n->ai_addr, sizeof(sockaddr_in6));
    } else {
      continue;
    }
    lookup->addresses.push_back(a);
    const int64_t ttl = int64_t{std::max(n->ai_ttl, 0)} * 1000;
    lookup->ttl_ms = lookup->ttl_ms < 0 ? ttl : std::min(lookup->ttl_ms, ttl);
  }
  ares_freeaddrinfo(result);
}

// Runs `channel` until its lookup is done or `deadline_ms` (MonotonicMs) passes.
void RunUntil(ares_channel channel, const Lookup& lookup, int64_t deadline_ms) {
  while (!lookup.done) {
    const int64_t left = deadline_ms - MonotonicMs();
    if (left <= 0) {
      ares_cancel(channel);  // the callback runs with ARES_ECANCELLED
      return;
    }
    ares_socket_t sockets[ARES_GETSOCK_MAXNUM];
    const int bits = ares_getsock(channel, sockets, ARES_GETSOCK_MAXNUM);
    pollfd fds[ARES_GETSOCK_MAXNUM];
    nfds_t n = 0;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      const bool readable = ARES_GETSOCK_READABLE(bits, i);
      const bool writable = ARES_GETSOCK_WRITABLE(bits, i);
      if (!readable && !writable) continue;
      fds[n++] = pollfd{sockets[i],
                        static_cast<short>((readable ? POLLIN : 0) | (writable ? POLLOUT : 0)), 0};
    }
    timeval most{static_cast<time_t>(left / 1000), static_cast<suseconds_t>(left % 1000 * 1000)};
    timeval tv{};
    const timeval* wait = ares_timeout(channel, &most, &tv);
    const int wait_ms = static_cast<int>(wait->tv_sec * 1000 + (wait->tv_usec + 999) / 1000);
    const int ready = poll(fds, n, wait_ms);
    if (ready < 0 && errno != EINTR) {
      ares_cancel(channel);
      return;
    }
    if (ready <= 0) {
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts
      continue;
    }
    for (nfds_t i = 0; i < n && !lookup.done; ++i) {
      const bool in = (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
      const bool out = (fds[i].revents & POLLOUT) != 0;
      if (in || out) {
        ares_process_fd(channel, in ? fds[i].fd : ARES_SOCKET_BAD,
                        out ? fds[i].fd : ARES_SOCKET_BAD);
      }
    }
  }
}

// A lookup that found no answer in time, logged at most every 10 s per process (a flood
// of names would otherwise flood the log); the count says how many went unlogged.
void WarnTimeout(const std::string& host, int64_t budget_ms) {
  static std::mutex mu;
  static int64_t last_ms = -1;
  static uint64_t unlogged = 0;
  std::lock_guard<std::mutex> lock(mu);
  const int64_t now = MonotonicMs();
  if (last_ms >= 0 && now - last_ms < 10000) {
    ++unlogged;
    return;
  }
  spdlog::warn("tm: no DNS answer for {} within {} ms (dns_timeout x dns_tries){}", host, budget_ms,
               unlogged > 0 ? absl::StrCat("; ", unlogged, " more since the last warning") : "");
  last_ms = now;
  unlogged = 0;
}

}  // namespace

HostResolver::HostResolver(ResolverOptions options, Clock clock)
    : options_(std::move(options)), clock_(clock ? std::move(clock) : Clock(MonotonicMs)) {
  static const int init = ares_library_init(ARES_LIB_INIT_ALL);
  (void)init;
}

absl::StatusOr<std::vector<SocketAddress>> HostResolver::Resolve(std::string_view host) {
  std::string key = absl::AsciiStrToLower(std::string(host));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end() && it->second.expires_ms > clock_()) {
      ++cache_hits_;
      return it->second.answer;
    }
    ++lookups_;
  }
  int64_t ttl_ms = 0;
  absl::StatusOr<std::vector<SocketAddress>> answer = LookUp(key, &ttl_ms);
  const int64_t now = clock_();
  int64_t keep_ms = options_.neg_ttl_ms;
  if (answer.ok()) {
    keep_ms = std::clamp<int64_t>(ttl_ms, 1000, std::max<int64_t>(options_.max_ttl_ms, 1000));
  } else if (answer.status().code() == absl::StatusCode::kUnavailable) {
    keep_ms = 0;  // the resolver itself failed: try again next time
  }
  if (keep_ms > 0) Keep(key, Entry{answer, now + keep_ms}, now);
  return answer;
}

void HostResolver::Keep(const std::string& host, Entry entry, int64_t now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.size() >= options_.capacity && !cache_.contains(host)) {
    for (auto it = cache_.begin(); it != cache_.end();) {
      auto here = it++;
      if (here->second.expires_ms <= now) cache_.erase(here);
    }
    while (!cache_.empty() && cache_.size() >= options_.capacity) cache_.erase(cache_.begin());
  }
  if (options_.capacity > 0) cache_.insert_or_assign(host, std::move(entry));
}

absl::StatusOr<std::vector<SocketAddress>> HostResolver::LookUp(const std::string& host,
                                                                int64_t* ttl_ms) {
  ares_options o{};
  o.timeout = static_cast<int>(options_.timeout_ms);
  o.tries = options_.tries;
  char lookups[] = "fb";  // the hosts file, then DNS
  o.lookups = lookups;
  ares_channel channel = nullptr;
  if (int rc =
          ares_init_options(&channel, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS);
      rc != ARES_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("DNS resolver: ", ares_strerror(rc)));
  }
  if (!options_.servers.empty()) {
    if (int rc = ares_set_servers_ports_csv(channel, options_.servers.c_str());
        rc != ARES_SUCCESS) {
      ares_destroy(channel);
      return absl::UnavailableError(absl::StrCat("DNS resolver: dns_servers \"", options_.servers,
                                                 "\": ", ares_strerror(rc)));
    }
  }
  Lookup lookup;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  const int64_t budget_ms = options_.timeout_ms * options_.tries;
  ares_getaddrinfo(channel, host.c_str(), nullptr, &hints, &Done, &lookup);
  RunUntil(channel, lookup, MonotonicMs() + budget_ms);
  ares_destroy(channel);  // a lookup still running ends here (callback: ARES_EDESTRUCTION)
  *ttl_ms = lookup.ttl_ms;
  if (lookup.status == ARES_SUCCESS && !lookup.addresses.empty())
    return std::move(lookup.addresses);
  switch (lookup.status) {
    case ARES_SUCCESS:
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
    case ARES_EBADNAME:
      return absl::NotFoundError(absl::StrCat("cannot resolve ", host, ": no address"));
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
    case ARES_ETIMEOUT:
      WarnTimeout(host, budget_ms);
      return absl::DeadlineExceededError(
          absl::StrCat("cannot resolve ", host, ": no DNS answer within ", budget_ms, " ms"));
    case ARES_ENOMEM:
    case ARES_ENOTINITIALIZED:
      return absl::UnavailableError(
          absl::StrCat("cannot resolve ", host, ": ", ares_strerror(lookup.status)));
    default:  // SERVFAIL, REFUSED, connection refused, ...
      return absl::NotFoundError(
          absl::StrCat("cannot resolve ", host, ": ", ares_strerror(lookup.status)));
  }
}

uint64_t HostResolver::lookups() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lookups_;
}

uint64_t HostResolver::cache_hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cache_hits_;
}

size_t HostResolver::cached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cache_.size();
}

std::optional<absl::Status> SetResolverParam(ResolverOptions& options, std::string_view param,
                                             const int64_t* number, const std::string* text) {
  auto integer = [number](int64_t min, int64_t max, int64_t scale, int64_t* out) -> absl::Status {
    if (number == nullptr || *number < min || *number > max) {
      return absl::InvalidArgumentError(
          absl::StrCat("must be an integer in [", min, ", ", max, "]"));
    }
    *out = *number * scale;
    return absl::OkStatus();
  };
  if (param == "dns_timeout") return integer(10, 30000, 1, &options.timeout_ms);
  if (param == "dns_neg_ttl") return integer(0, 86400, 1000, &options.neg_ttl_ms);
  if (param == "dns_tries") {
    int64_t tries = 0;
    absl::Status s = integer(1, 10, 1, &tries);
    if (s.ok()) options.tries = static_cast<int>(tries);
    return s;
  }
  if (param == "dns_servers") {
    if (text == nullptr) {
      return absl::InvalidArgumentError(
          "must be a string of IP[:PORT] name servers, comma-separated");
    }
    options.servers = *text;
    return absl::OkStatus();
  }
  return std::nullopt;
}

}  // namespace sipd::tm
