// The httpd server: Boost.Beast on one asio io_context, one thread. Every connection is
// a small state machine driven by completions (read head+body, answer, write), so an
// idle or slow connection holds a socket and its buffers, never a thread.
//
// Routes:
//   POST /mi        JSON-RPC 2.0 (jsonrpc.h, rpc_job.h): every call through the one
//                   mi::Dispatcher; a reply that fits one part goes out with
//                   Content-Length, a longer or streamed one with chunked encoding, one
//                   chunk per ~`chunk_bytes`, the next part produced only when the
//                   previous chunk was taken by the client.
//   GET  <path>     a handler of the route table (metrics, console API), else a static
//                   file under `web_root` ("/" is index.html).
//
// Limits (ServerOptions): a body over max_body_size is answered 413 with a JSON-RPC
// error and the connection closed; heads over 16 KiB 431; at max_connections a new
// connection is answered 503 and closed. Timeouts: header_timeout for a request to
// arrive whole (from connect or the end of the previous reply: also the keep-alive idle
// time), stall_timeout for a write the client does not take, reply_timeout as every MI
// call's deadline.
//
// TLS (ServerOptions::tls, when `cert` is set): every connection is HTTPS; the handshake
// must finish within header_timeout. With client_auth a client certificate is asked for
// (kOptional) or required (kRequire) and verified against `ca`; the verified subject
// (RFC 2253, e.g. "CN=noc") goes to the dispatcher as the caller's tls_subject.
//
// Thread-safety: everything runs on the io_context's thread (the Dispatcher's
// completions included: see Start()).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "registry/dispatcher.h"
#include "registry/statistics.h"

namespace boost::asio {
class io_context;
}

namespace sipd::httpd {

// Shared-memory counters the server keeps (statistics group "httpd"); invalid ones are
// not counted (tests).
struct ServerCounters {
  mi::Counter connections;  // open now, all processes (a gauge)
  mi::Counter requests;     // HTTP requests read
  mi::Counter rejected;     // connections refused at max_connections
  mi::Counter timeouts;     // connections cut by header_timeout (requests too slow, idle)
  mi::Counter stalled;      // connections cut by stall_timeout (a reply not taken)
  mi::Counter too_large;    // bodies refused with 413
};

struct TlsSettings {
  enum class ClientAuth { kNone, kOptional, kRequire };
  std::string cert;  // PEM certificate chain; empty = no TLS
  std::string key;   // PEM private key
  std::string ca;    // PEM CA bundle verifying client certificates
  ClientAuth client_auth = ClientAuth::kNone;
  bool enabled() const { return !cert.empty(); }
};

struct ServerOptions {
  size_t max_connections = 1024;
  size_t max_body_size = 1 << 20;
  size_t max_batch = 1000;
  size_t chunk_bytes = 64 << 10;
  std::chrono::seconds header_timeout{30};
  std::chrono::seconds stall_timeout{10};
  std::chrono::seconds reply_timeout{60};
  // Static files of the console; empty = no console.
  std::string web_root;
  TlsSettings tls;
  ServerCounters counters;
};

// What a GET route answers.
struct HttpAnswer {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
};
// `target` is the whole request target (path and query).
using GetHandler = std::function<HttpAnswer(const std::string& target)>;

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, mi::Dispatcher& dispatcher, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Loads the certificate, key and CA of `tls` (a clear error naming the file that does
  // not load); the server's constructor does the same and serves HTTPS when it is enabled.
  static absl::Status CheckTls(const TlsSettings& tls);
  // Not OK when TLS was asked for but did not load (see CheckTls).
  absl::Status status() const;

  // GET `path` (exact, before the query) answered by `handler`.
  void AddGet(std::string path, GetHandler handler);

  // A listening TCP socket on host:port (port 0: the kernel picks), close-on-exec; made
  // in the attendant before the fork so that several processes share it.
  static absl::StatusOr<int> OpenListenSocket(const std::string& host, uint16_t port);
  // The port `fd` is bound to.
  static absl::StatusOr<uint16_t> BoundPort(int fd);
  // Serves connections of the listening socket `fd` (a duplicate is taken: the caller
  // keeps `fd`).
  absl::Status Adopt(int fd);
  // Starts accepting and watching the dispatcher's wake_fd (RunCompletions on it).
  void Start();
  // Stops accepting and closes every connection.
  void Stop();
  // Runs due async timeouts (call at least every few hundred ms).
  void Tick();

  size_t connections() const;

  struct Impl;  // http_server.cc

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sipd::httpd
