// The MI XMLRPC process body: an HTTP/1.1 server for `POST /RPC2` (spec 5.2) that turns
// each body into an mi::Request (XmlrpcProcessor) and hands it to the Dispatcher.
//
// Concurrency model: per MI XMLRPC process ONE thread, one epoll loop (wait, read,
// parse, dispatch, write). The module forks `processes` such processes (default 2) on
// the same listen socket (EPOLLEXCLUSIVE: a new connection wakes one of them), each
// with its own dispatcher; a connection stays with the process that accepted it.
// Every socket is non-blocking; no client can stall a loop for others:
//   * A request is started with Dispatcher::Start(). A synchronous reply is written at
//     once; an async one (or a kBlocking command on the dispatcher's workers) leaves
//     the connection waiting, holding no thread, and the loop goes on. The dispatcher's
//     wake_fd() is in the epoll set and RunCompletions() also runs at NextDeadline().
//     A connection closed by its client while its call waits cancels the call
//     (Exchange::Cancel(): the async slot is released, a stream's producer dropped).
//   * Replies are written from a per-connection buffer as the socket takes them. A
//     streamed command (ul_dump) is pulled (Delivery::kPull) one part at a time, only
//     when the buffer has drained below kStreamLowWater (and at most one part per turn
//     of the loop), and goes out with HTTP/1.1 chunked transfer encoding; every other
//     reply has a Content-Length. HTTP/1.0 clients get the whole body (its parts
//     gathered the same way, one per turn, then sent with a Content-Length). The
//     dispatcher writes only inside Exchange::WriteNext() on this thread, never into a
//     connection's buffers from a worker.
//   * Limits per connection, checked by a sweep every kSweepInterval (no timer system
//     call per request): header_timeout (first byte to end of head; a new connection
//     that sends nothing is closed silently), read_timeout (end of head to end of
//     body), idle_timeout (keep-alive wait between requests), stall_timeout (a reply
//     being written, no byte taken by the socket) and reply_timeout (total time to
//     deliver one reply, streams included). A cut request head or body gets 408.
//   * max_connections in all, max_connections_per_peer per client IP (both per
//     process; the attendant's descriptor limit permitting). When a limit is
//     reached the oldest IDLE connection (nothing of a request received, nothing to
//     write) is closed to make room; only when there is none is the newcomer refused
//     (`503`, Retry-After: 1). So idle clients cannot lock a good one out.
//   * While a connection waits for its call or its socket, its input is not read (TCP
//     flow control holds the client back); a closed client is still seen (EPOLLRDHUP).
//
// Memory per connection: in the kernel, the send buffer (SO_SNDBUF kSocketSendBuffer,
// 64 KiB, which the kernel doubles: <= 128 KiB) and the receive buffer (autotuned within
// net.ipv4.tcp_rmem; it only fills while we do not read, i.e. while a call runs or a
// reply is blocked); in user space about 1 KiB of state, plus
//   input:  < kMaxHeadSize (16 KiB) + one read (kReadChunk, 64 KiB) while a head
//           arrives, the body (<= max_body_size, default 1 MiB) once its head is in;
//   output: a whole non-streamed reply (as large as the command makes it: `version` is
//           ~300 bytes), or for a streamed reply < kStreamLowWater (32 KiB) + one part
//           (ul_dump: 50 records, ~30 KiB).
// So a client that stalls (never reads, reads slowly, sends half a request, sits idle)
// costs at most ~100 KiB of user memory plus the body it sent, and <= 128 KiB of kernel
// send buffer, and only until its timeout. (Measured: tests/xmlrpc/
// xmlrpc_misbehaving_test.cc reports the MI processes' RSS growth per stalled client:
// 12-16 KiB with 1,000 and with 5,000 of them.)
//
// Fairness: one turn of the loop handles at most kMaxEvents (64) events, and a streamed
// reply gets one part produced per turn (an ul_dump part, 50 AORs, takes ~0.2 ms), so a
// fast reader of a huge dump cannot hold the loop for long either.
//
// Keep-alive: HTTP/1.1 connections stay open unless the client sends
// `Connection: close` (HTTP/1.0 only with `Connection: keep-alive`), idle at most
// idle_timeout; replies carry `Keep-Alive: timeout=<idle_timeout s>` (and `max=` only
// when keep_alive_max caps the requests per connection; by default there is no cap).
// HTTP errors (4xx/5xx) always close the connection after a lingering close (the stream
// may be out of sync); XML-RPC faults are ordinary 200 replies and keep it open.
//
// Thread-safety: Run() is called once, from one thread; the server is used by that
// thread only (active_connections() may be read from any thread).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "legacy-transports/xmlrpc/xmlrpc_processor.h"
#include "registry/dispatcher.h"

namespace sipd::xmlrpc {

// Reads are at most this large.
inline constexpr size_t kReadChunk = 64 * 1024;
// A streamed reply's next part is pulled when less than this is waiting to be sent.
inline constexpr size_t kStreamLowWater = 32 * 1024;
// SO_SNDBUF of every connection (the kernel doubles it for its bookkeeping).
inline constexpr size_t kSocketSendBuffer = 64 * 1024;
// Timeouts are checked this often.
inline constexpr std::chrono::milliseconds kSweepInterval{100};

struct ServerOptions {
  size_t max_body_size = 1024 * 1024;
  // First byte of a request (or the connection's start) to the end of its head.
  std::chrono::milliseconds header_timeout{5000};
  // End of the head to the end of the body.
  std::chrono::milliseconds read_timeout{15000};
  // Keep-alive wait for the next request (also the Keep-Alive: timeout= value).
  std::chrono::milliseconds idle_timeout{15000};
  // A reply being written: longest time without the socket taking a byte.
  std::chrono::milliseconds stall_timeout{10000};
  // A reply being written: longest time from its first byte to its last.
  std::chrono::milliseconds reply_timeout{60000};
  int max_connections = 4096;
  int max_connections_per_peer = 2048;
  // Requests per keep-alive connection; 0 = no limit.
  int keep_alive_max = 0;
  // Access log in Common Log Format; empty = none.
  std::string log_file;
};

// Creates a TCP socket bound to `address`:`port` (IPv4 or IPv6 literal; port 0 picks a
// free port) and listening. SO_REUSEADDR, close-on-exec. UnavailableError naming the
// address when bind/listen fails (e.g. the port is busy).
absl::StatusOr<int> OpenListenSocket(const std::string& address, int port);

// The port a bound socket got (for port 0).
absl::StatusOr<int> BoundPort(int fd);

class XmlrpcServer {
 public:
  // Takes ownership of nothing: `listen_fd` stays open (the attendant keeps it so that a
  // restarted process can serve the same socket). `processor` and `dispatcher` must
  // outlive the server; the server is the only caller of the dispatcher's Start(),
  // RunCompletions() and Cancel() (the dispatcher's single-threaded use).
  XmlrpcServer(int listen_fd, ServerOptions options, const XmlrpcProcessor& processor,
               mi::Dispatcher& dispatcher);
  ~XmlrpcServer();
  XmlrpcServer(const XmlrpcServer&) = delete;
  XmlrpcServer& operator=(const XmlrpcServer&) = delete;

  // Opens the access log (if configured) and the epoll set. InternalError on failure.
  absl::Status Open();

  // Serves until `should_stop()` returns true (checked after every wake-up, at least
  // every kSweepInterval; `on_wakeup()` is called as often), then closes every
  // connection (waiting calls are cancelled) and returns.
  void Run(const std::function<bool()>& should_stop, const std::function<void()>& on_wakeup);

  // Connections open right now (for tests and logs).
  int active_connections() const { return active_.load(std::memory_order_relaxed); }

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<int> active_{0};
};

}  // namespace sipd::xmlrpc
