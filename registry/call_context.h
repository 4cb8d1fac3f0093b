// Who is calling, over what, until when: the context a transport hands to the
// Dispatcher with every request (see registry/dispatcher.h).
//
// Transports fill what they know: the transport, the peer (SO_PEERCRED uid/pid on unix
// sockets and the FIFO owner, ip:port on network sockets), the deadline, a cancellation
// token they trip when the client goes away, and whether they can hold the caller while
// an async command completes. The dispatcher's authorization hook reads the principal
// and role (filled by the security layer); everything else is policy input for the
// dispatcher, never re-decided by a transport.
//
// Thread-safety: a CallContext is copied into the call; the CancellationToken it holds
// is shared and may be tripped from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace sipd::mi {

enum class Transport {
  kInternal,  // in-process callers (tests, other modules)
  kFifo,
  kDatagramUnix,
  kDatagramUdp,
  kXmlrpc,
  kGrpc,
  kHttp,
};

std::string_view TransportName(Transport transport);

// What the caller is allowed to do (decided by the authorization hook; see
// registry/dispatcher.h). kUnset = no security layer has spoken: everything is allowed.
enum class Role { kUnset, kNone, kRead, kOperate, kAdmin };

std::string_view RoleName(Role role);

// True for an IPv4 loopback (127/8), ::1, or IPv4-mapped loopback host, written without
// port or brackets ("127.0.0.1", "::1", "::ffff:127.0.0.1").
bool IsLoopbackHost(std::string_view host);

// The credential in an HTTP `Authorization` header value: the token of `Bearer TOKEN`,
// or the password of `Basic base64(user:password)`; empty if neither.
std::string TokenFromAuthorization(std::string_view value);

struct Peer {
  // Unix sockets (SO_PEERCRED) and the FIFO (owner of the reply FIFO); -1 = unknown.
  uid_t uid = static_cast<uid_t>(-1);
  pid_t pid = -1;
  // "ip:port" for network peers, the socket or FIFO path for local ones; may be empty.
  std::string address;
  // The caller is on this host: a unix socket or FIFO, or a loopback address.
  bool local = false;
  // Credentials as the transport received them; the authorization hook checks them.
  // A bearer token (gRPC `authorization: Bearer`, XML-RPC Basic password or Bearer).
  std::string token;
  // The subject of a verified TLS client certificate (mTLS).
  std::string tls_subject;
  // Decided by the authorization hook from the credentials above (a transport may
  // preset `role` only from its own configuration, e.g. mi_datagram's udp_role).
  // Empty principal = anonymous.
  std::string principal;
  Role role = Role::kUnset;

  bool uid_known() const { return uid != static_cast<uid_t>(-1); }
};

// Tripped by the transport when the caller is gone (gRPC cancel or deadline, a FIFO
// reader that went away, a closed connection) or by the dispatcher on timeout. Running
// handlers check it through Call::cancelled() (one atomic load) or block on it with
// Call::WaitCancelled(); a cancelled async call releases its slot.
class CancellationToken {
 public:
  CancellationToken() : state_(std::make_shared<State>()) {}
  void Cancel() const {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->flag.store(true, std::memory_order_relaxed);
    }
    state_->cv.notify_all();
  }
  bool cancelled() const { return state_->flag.load(std::memory_order_relaxed); }
  // Blocks until Cancel() or `timeout`; returns cancelled().
  bool WaitFor(std::chrono::steady_clock::duration timeout) const {
    std::unique_lock<std::mutex> lock(state_->mu);
    return state_->cv.wait_for(lock, timeout, [this] { return cancelled(); });
  }

 private:
  struct State {
    std::atomic<bool> flag{false};
    std::mutex mu;
    std::condition_variable cv;
  };
  std::shared_ptr<State> state_;
};

struct CallContext {
  using Clock = std::chrono::steady_clock;

  Transport transport = Transport::kInternal;
  Peer peer;
  // No deadline by default; an async call then waits at most the dispatcher's
  // async_timeout.
  Clock::time_point deadline = Clock::time_point::max();
  CancellationToken cancel;
  // The transport can hold the caller until an async command completes (all of sipd's
  // transports can). When false an async command answers `202 Accepted` (spec 8.3).
  bool can_wait_async = true;
};

}  // namespace sipd::mi
