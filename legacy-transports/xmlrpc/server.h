// The MI XMLRPC process body: an HTTP/1.1 server for `POST /RPC2` (spec 5.2) that hands
// each body to an XmlrpcProcessor.
//
// Concurrency model: the process loop (Run) polls the listening socket every <= 200 ms,
// accepts, and serves each connection on its own thread, at most `max_connections` at a
// time (one more is answered `503` and closed). Every connection has a read deadline of
// `read_timeout` per request (idle keep-alive wait included), and the same bound for
// writing a reply, so a slow, silent or dead client only ever holds its own thread; all
// socket I/O is non-blocking with poll(). Commands of different connections run
// concurrently through mi::Dispatch (which is thread-safe).
//
// Keep-alive (Abyss semantics, but 1000 requests per connection by default where Abyss
// allows 30): HTTP/1.1 connections stay open unless the client sends
// `Connection: close` (HTTP/1.0 only with `Connection: keep-alive`), for at most
// `keep_alive_max` requests, idle at most `read_timeout`; replies carry
// `Keep-Alive: timeout=<read_timeout s>, max=<requests left>`. HTTP errors (4xx/5xx)
// always close the connection (the stream may be out of sync); XML-RPC faults are
// ordinary 200 replies and keep it open.
//
// Thread-safety: Run() is called once, from one thread; it owns the worker threads and
// joins them all before returning.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "legacy-transports/xmlrpc/xmlrpc_processor.h"

namespace sipd::xmlrpc {

struct ServerOptions {
  size_t max_body_size = 1024 * 1024;
  std::chrono::milliseconds read_timeout{15000};
  int max_connections = 32;
  // Requests per keep-alive connection. Abyss (and OpenSIPS 1.11) close after 30; we
  // allow more because each new connection costs a TCP handshake and a thread start,
  // which for small commands costs as much as the commands themselves.
  int keep_alive_max = 1000;
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
  // restarted process can serve the same socket). `processor` must outlive Run().
  XmlrpcServer(int listen_fd, ServerOptions options, const XmlrpcProcessor& processor);
  ~XmlrpcServer();
  XmlrpcServer(const XmlrpcServer&) = delete;
  XmlrpcServer& operator=(const XmlrpcServer&) = delete;

  // Opens the access log (if configured). InternalError naming the file on failure.
  absl::Status Open();

  // Serves until `should_stop()` returns true (checked at least every 200 ms, before
  // `on_wakeup()` is called), then stops accepting, lets the workers finish the request
  // in progress (idle ones leave at once) and joins them.
  void Run(const std::function<bool()>& should_stop, const std::function<void()>& on_wakeup);

  // Connections being served right now (for tests and logs).
  int active_connections() const { return active_.load(); }

 private:
  struct Worker;
  class Connection;

  void Accept();
  void Reap(bool all);
  void WriteAccessLog(const std::string& line);

  const int listen_fd_;
  const ServerOptions options_;
  const XmlrpcProcessor& processor_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> active_{0};
  std::list<std::unique_ptr<Worker>> workers_;
  int access_log_fd_ = -1;
  std::mutex access_log_mutex_;
};

}  // namespace sipd::xmlrpc
