// Host names to addresses for tm (RFC 3263 without NAPTR/SRV: the hosts file, then A and
// AAAA), with c-ares, in bounded time, behind a cache. Its own library (sipd_resolver):
// event_datagram looks up its subscribers' names with it too.
//
// Why not getaddrinfo: tm resolves in the SIP workers (a Route, a Request-URI with
// relay_to_any, a registered Contact with a host name) and in the MI process
// (t_uac_dlg). glibc's resolver waits resolv.conf's timeout (5 s) per try, per server,
// for A and AAAA: a Contact whose DNS server does not answer held a SIP worker for 10 s
// or more per request, and a few such requests stopped the proxy. Here a lookup never
// takes longer than `timeout_ms * tries` (dns_timeout x dns_tries) of wall time, and
// its answer is kept: addresses for their TTL (at least 1 s, at most max_ttl_ms),
// failures (no such name, no address, no answer in time) for neg_ttl_ms, so a flood of
// requests for one name costs one lookup per process per neg_ttl_ms.
//
// The cache is per process (each SIP worker, the MI process, the timer), up to
// `capacity` names (when full, expired entries go first, then arbitrary ones). Every
// lookup opens its own c-ares channel (resolv.conf and the hosts file are read then),
// and closes it before it returns: no process keeps a DNS socket between lookups.
//
// Thread-safety: Resolve from any thread (MI worker threads); lookups run in parallel,
// the cache is under a mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/modules/tm/transaction_table.h"

namespace sipd::tm {

struct ResolverOptions {
  int64_t timeout_ms = 500;  // dns_timeout: one try
  int tries = 2;             // dns_tries
  // "IP[:PORT],[IPv6]:PORT,..." (dns_servers); empty = resolv.conf's name servers.
  std::string servers;
  int64_t neg_ttl_ms = 60000;    // dns_neg_ttl: how long a failure is kept; 0 = not kept
  int64_t max_ttl_ms = 3600000;  // an answer is kept for its TTL, at most this
  size_t capacity = 4096;        // names kept per process
};

// The name-server module parameters that tm and event_datagram share: dns_timeout (ms,
// 10 .. 30000), dns_tries (1 .. 10), dns_neg_ttl (s, 0 .. 86400) and dns_servers (a
// string), applied to `options`. nullopt when `param` is none of them; otherwise OK, or
// InvalidArgument whose message says what the value must be ("must be ..."), for the
// module to prefix with its name and the parameter's.
std::optional<absl::Status> SetResolverParam(ResolverOptions& options, std::string_view param,
                                             const int64_t* number, const std::string* text);

class HostResolver {
 public:
  using Clock = std::function<int64_t()>;  // milliseconds, for the cache's expiry

  // `clock`: the cache's time; unset = CLOCK_MONOTONIC (tests pass a fake one).
  explicit HostResolver(ResolverOptions options, Clock clock = {});

  // The addresses of `host` (a name, not a numeric address), in the order to prefer
  // (RFC 6724, as getaddrinfo sorts). NotFound: no such name or no address;
  // DeadlineExceeded: no answer within timeout_ms * tries; Unavailable: the resolver
  // could not run (bad dns_servers, no memory).
  absl::StatusOr<std::vector<SocketAddress>> Resolve(std::string_view host);

  // Lookups made (cache misses) and answers served from the cache, by this process.
  uint64_t lookups() const;
  uint64_t cache_hits() const;
  // Names in the cache (expired ones included until they are replaced or evicted).
  size_t cached() const;

  const ResolverOptions& options() const { return options_; }

 private:
  struct Entry {
    absl::StatusOr<std::vector<SocketAddress>> answer;
    int64_t expires_ms = 0;
  };
  // One lookup with c-ares; `ttl_ms` gets the answer's lowest TTL.
  absl::StatusOr<std::vector<SocketAddress>> LookUp(const std::string& host, int64_t* ttl_ms);
  void Keep(const std::string& host, Entry entry, int64_t now);

  ResolverOptions options_;
  Clock clock_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Entry> cache_;
  uint64_t lookups_ = 0;
  uint64_t cache_hits_ = 0;
};

}  // namespace sipd::tm
