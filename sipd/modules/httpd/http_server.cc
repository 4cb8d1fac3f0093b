#include "sipd/modules/httpd/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "sipd/modules/httpd/json_reply.h"
#include "sipd/modules/httpd/jsonrpc.h"
#include "sipd/modules/httpd/rpc_job.h"
#include "spdlog/spdlog.h"

namespace sipd::httpd {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr size_t kMaxHeaderBytes = 16 << 10;
constexpr auto kLingerTime = std::chrono::seconds(10);
constexpr char kServerName[] = "sipd-httpd";

std::string_view ContentTypeFor(std::string_view path) {
  if (path.ends_with(".html")) return "text/html; charset=utf-8";
  if (path.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (path.ends_with(".css")) return "text/css; charset=utf-8";
  if (path.ends_with(".svg")) return "image/svg+xml";
  if (path.ends_with(".png")) return "image/png";
  if (path.ends_with(".json")) return "application/json";
  return "application/octet-stream";
}

// A request path that may name a file under the web root: no "..", no odd characters.
bool SafeStaticPath(std::string_view path) {
  if (path.empty() || path[0] != '/' || path.find("..") != std::string_view::npos) return false;
  for (const char c : path) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '/' || c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

void Count(const mi::Counter& counter) {
  if (counter.valid()) counter.Inc();
}

// The server's TLS context from `tls`: an error names the file that did not load.
absl::StatusOr<std::unique_ptr<asio::ssl::context>> BuildTlsContext(const TlsSettings& tls) {
  if (tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError("httpd: tls_cert and tls_key go together");
  }
  if (tls.client_auth != TlsSettings::ClientAuth::kNone && tls.ca.empty()) {
    return absl::InvalidArgumentError(
        "httpd: tls_client_auth needs tls_ca (the CA that signs client certificates)");
  }
  auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  auto failed = [](const char* what, const std::string& file, const beast::error_code& ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("httpd: cannot load ", what, " ", file, ": ", ec.message()));
  };
  beast::error_code ec;
  context->use_certificate_chain_file(tls.cert, ec);
  if (ec) return failed("tls_cert", tls.cert, ec);
  context->use_private_key_file(tls.key, asio::ssl::context::pem, ec);
  if (ec) return failed("tls_key", tls.key, ec);
  if (SSL_CTX_check_private_key(context->native_handle()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "httpd: tls_key ", tls.key, " does not match the certificate of tls_cert ", tls.cert));
  }
  if (!tls.ca.empty()) {
    context->load_verify_file(tls.ca, ec);
    if (ec) return failed("tls_ca", tls.ca, ec);
  }
  switch (tls.client_auth) {
    case TlsSettings::ClientAuth::kNone:
      context->set_verify_mode(asio::ssl::verify_none);
      break;
    case TlsSettings::ClientAuth::kOptional:
      context->set_verify_mode(asio::ssl::verify_peer);
      break;
    case TlsSettings::ClientAuth::kRequire:
      context->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
      break;
  }
  // Session resumption with client certificates needs an id context.
  static constexpr unsigned char kIdContext[] = "sipd-httpd";
  SSL_CTX_set_session_id_context(context->native_handle(), kIdContext, sizeof(kIdContext) - 1);
  return context;
}

// The subject (RFC 2253) of the client certificate the handshake verified, else "".
std::string VerifiedSubject(SSL* ssl) {
  if (SSL_get_verify_result(ssl) != X509_V_OK) return "";
  X509* certificate = SSL_get_peer_certificate(ssl);
  if (certificate == nullptr) return "";
  std::string subject;
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio != nullptr) {
    if (X509_NAME_print_ex(bio, X509_get_subject_name(certificate), 0, XN_FLAG_RFC2253) >= 0) {
      char* data = nullptr;
      const long size = BIO_get_mem_data(bio, &data);
      if (size > 0) subject.assign(data, static_cast<size_t>(size));
    }
    BIO_free(bio);
  }
  X509_free(certificate);
  return subject;
}

using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

}  // namespace

// What the server needs of a session of either stream type.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void Close() = 0;
};

struct HttpServer::Impl {
  Impl(asio::io_context& io_context, mi::Dispatcher& d, ServerOptions o)
      : io(io_context),
        dispatcher(d),
        options(std::move(o)),
        acceptor(io_context),
        wake(io_context) {
    if (options.tls.enabled()) {
      absl::StatusOr<std::unique_ptr<asio::ssl::context>> context = BuildTlsContext(options.tls);
      if (context.ok()) {
        tls = std::move(*context);
      } else {
        status = context.status();
      }
    }
  }

  void Accept();
  void WatchWake();

  asio::io_context& io;
  mi::Dispatcher& dispatcher;
  const ServerOptions options;
  tcp::acceptor acceptor;
  asio::posix::stream_descriptor wake;
  std::map<std::string, GetHandler> routes;
  std::unique_ptr<asio::ssl::context> tls;  // set: every connection is HTTPS
  absl::Status status;                      // TLS asked for but not loaded
  std::unordered_set<SessionBase*> sessions;
  bool stopped = false;
};

// One connection, over plain TCP or TLS (`Stream`): the same code for both.
template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

  static Stream MakeStream(tcp::socket socket, HttpServer::Impl& server) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *server.tls);
    } else {
      return Stream(std::move(socket));
    }
  }

 public:
  Session(tcp::socket socket, HttpServer::Impl& server)
      : stream_(MakeStream(std::move(socket), server)), server_(server) {
    server_.sessions.insert(this);
    Count(server_.options.counters.connections);
    beast::error_code ec;
    const tcp::endpoint remote = Socket().remote_endpoint(ec);
    if (!ec) {
      const std::string ip = remote.address().to_string();
      peer_ = remote.address().is_v6() ? absl::StrCat("[", ip, "]:", remote.port())
                                       : absl::StrCat(ip, ":", remote.port());
      local_ = mi::IsLoopbackHost(ip);
    }
  }
  ~Session() override {
    server_.sessions.erase(this);
    if (server_.options.counters.connections.valid()) server_.options.counters.connections.Dec();
  }

  void Start(bool over_limit) {
    if constexpr (kTls) {
      // The handshake counts as the first request's arrival (header_timeout).
      Lowest().expires_after(server_.options.header_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = shared_from_this(), over_limit](beast::error_code ec) {
                                if (ec) return self->Fail(ec, false);
                                self->tls_subject_ = VerifiedSubject(self->stream_.native_handle());
                                self->Serve(over_limit);
                              });
    } else {
      Serve(over_limit);
    }
  }

  void Close() override {
    job_.reset();
    beast::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_both, ec);
    Lowest().close();
  }

 private:
  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }
  tcp::socket& Socket() { return Lowest().socket(); }

  void Serve(bool over_limit) {
    if (over_limit) {
      Count(server_.options.counters.rejected);
      keep_alive_ = false;
      Respond(http::status::service_unavailable, "text/plain; charset=utf-8",
              "too many connections\n", 11);
      return;
    }
    ReadRequest();
  }

  // A socket operation failed: the connection ends (a timeout is counted: reading, the
  // header_timeout; writing, the stall_timeout).
  void Fail(beast::error_code ec, bool writing) {
    if (ec == beast::error::timeout) {
      Count(writing ? server_.options.counters.stalled : server_.options.counters.timeouts);
    }
    Close();
  }

  void ReadRequest() {
    parser_.emplace();
    parser_->body_limit(server_.options.max_body_size);
    parser_->header_limit(kMaxHeaderBytes);
    Lowest().expires_after(server_.options.header_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      Count(server_.options.counters.too_large);
      keep_alive_ = false;
      linger_ = true;
      Respond(http::status::payload_too_large, "application/json",
              JsonRpcError("null", kJsonRpcInvalidRequest,
                           absl::StrCat("Invalid Request: body larger than ",
                                        server_.options.max_body_size, " bytes")),
              11);
      return;
    }
    if (ec == http::error::header_limit) {
      keep_alive_ = false;
      Respond(http::status::request_header_fields_too_large, "text/plain; charset=utf-8",
              "request head too large\n", 11);
      return;
    }
    if (ec) {
      // Closed, timed out, or not HTTP: a parse error gets a 400 when anything was read.
      if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
          ec != asio::error::operation_aborted && ec != asio::error::connection_reset &&
          ec.category() == http::make_error_code(http::error::end_of_stream).category()) {
        keep_alive_ = false;
        Respond(http::status::bad_request, "text/plain; charset=utf-8",
                absl::StrCat("bad request: ", ec.message(), "\n"), 11);
        return;
      }
      Fail(ec, false);
      return;
    }
    Lowest().expires_never();
    Count(server_.options.counters.requests);
    Handle();
  }

  void Handle() {
    auto& request = parser_->get();
    keep_alive_ = request.keep_alive();
    version_ = request.version();
    const std::string target(request.target());
    const std::string path = target.substr(0, target.find('?'));
    if (path == "/mi") {
      if (request.method() != http::verb::post) {
        MethodNotAllowed("POST");
        return;
      }
      StartRpc(request);
      return;
    }
    if (request.method() != http::verb::get) {
      MethodNotAllowed("GET");
      return;
    }
    if (auto route = server_.routes.find(path); route != server_.routes.end()) {
      if (std::optional<mi::Reply> refusal = Refused(request)) {
        Respond(static_cast<http::status>(refusal->code), "application/json",
                JsonRpcError("null", refusal->code, refusal->reason), version_);
        return;
      }
      HttpAnswer answer = route->second(target);
      Respond(static_cast<http::status>(answer.status), answer.content_type, std::move(answer.body),
              version_);
      return;
    }
    ServeFile(path);
  }

  void MethodNotAllowed(std::string_view allow) {
    allow_ = std::string(allow);
    Respond(http::status::method_not_allowed, "text/plain; charset=utf-8",
            "method not allowed; use " + allow_ + "\n", version_);
  }

  void ServeFile(std::string path) {
    if (path == "/") path = "/index.html";
    if (server_.options.web_root.empty() || !SafeStaticPath(path)) {
      Respond(http::status::not_found, "text/plain; charset=utf-8", "not found\n", version_);
      return;
    }
    std::ifstream file(server_.options.web_root + path, std::ios::binary);
    if (!file) {
      Respond(http::status::not_found, "text/plain; charset=utf-8", "not found\n", version_);
      return;
    }
    std::ostringstream content;
    content << file.rdbuf();
    Respond(http::status::ok, std::string(ContentTypeFor(path)), std::move(content).str(),
            version_);
  }

  // The data routes (metrics, console API) show what `version`-level (read) callers may
  // see: the dispatcher's authorization hook decides, as it would for a `version` call
  // with this caller's context (nothing runs); its 401/403 is returned.
  std::optional<mi::Reply> Refused(const http::request<http::string_body>& request) {
    mi::CallContext context = CallerContext(request);
    return server_.dispatcher.Refusal(context, "version");
  }

  mi::CallContext CallerContext(const http::request<http::string_body>& request) const {
    mi::CallContext context;
    context.transport = mi::Transport::kHttp;
    context.peer.address = peer_;
    context.peer.local = local_;
    context.peer.tls_subject = tls_subject_;
    // Credentials only as received; the dispatcher's authorization hook decides.
    if (const auto authorization = request.find(http::field::authorization);
        authorization != request.end()) {
      const auto value = authorization->value();
      context.peer.token = mi::TokenFromAuthorization(std::string_view(value.data(), value.size()));
    }
    context.deadline = mi::CallContext::Clock::now() + server_.options.reply_timeout;
    context.can_wait_async = true;
    return context;
  }

  void StartRpc(http::request<http::string_body>& request) {
    mi::CallContext context = CallerContext(request);
    std::string& body = request.body();
    // The callback holds the session while a call runs with no socket operation pending
    // (an async reply, a worker): the cycle ends when the job ends or Close() drops it.
    job_ =
        std::make_unique<RpcJob>(server_.dispatcher, ParseJsonRpc(body, server_.options.max_batch),
                                 std::move(context), [self = shared_from_this()] { self->Pump(); });
    body.clear();
    body.shrink_to_fit();
    header_sent_ = false;
    Pump();
  }

  // Moves the JSON-RPC response on: produce more when nothing is being written.
  void Pump() {
    if (writing_ || !job_) return;
    const RpcJob::State state = job_->Run(out_, server_.options.chunk_bytes);
    switch (state) {
      case RpcJob::State::kBroken:
        // A stream failed after parts were sent: cut, so the client sees a truncated body.
        spdlog::warn("httpd: a streamed reply to {} failed midway; closing the connection", peer_);
        Close();
        return;
      case RpcJob::State::kWaiting:
        if (header_sent_ && !out_.empty()) {
          WriteChunk(false);
        } else {
          WatchPeer();
        }
        return;  // on_ready calls Pump() again
      case RpcJob::State::kMore:
        WriteChunk(false);
        return;
      case RpcJob::State::kDone:
        if (header_sent_) {
          WriteChunk(true);
        } else {
          const bool silent = job_->silent();
          job_.reset();
          Respond(silent ? http::status::no_content : http::status::ok, "application/json",
                  std::move(out_), version_);
          out_.clear();
        }
        return;
    }
  }

  // While a call waits (async reply, worker) nothing is read or written: notice a client
  // that goes away meanwhile, so its call is cancelled at once (the dispatcher releases
  // the async slot) rather than at its deadline. Waits for readability without taking
  // any byte: a pipelined next request stays in the socket for the parser.
  void WatchPeer() {
    if (watching_) return;
    watching_ = true;
    Socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      self->watching_ = false;
      if (ec || !self->job_) return;
      char byte;
      const ssize_t n = recv(self->Socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        self->Close();  // gone: ~RpcJob cancels the call
      }
    });
  }

  void WriteChunk(bool last) {
    writing_ = true;
    Lowest().expires_after(server_.options.stall_timeout);
    auto self = shared_from_this();
    if (!header_sent_) {
      header_sent_ = true;
      chunked_head_ = {};
      chunked_head_.version(version_);
      chunked_head_.result(http::status::ok);
      chunked_head_.set(http::field::server, kServerName);
      chunked_head_.set(http::field::content_type, "application/json");
      chunked_head_.keep_alive(keep_alive_);
      chunked_head_.chunked(true);
      head_serializer_.emplace(chunked_head_);
      http::async_write_header(stream_, *head_serializer_,
                               [self, last](beast::error_code ec, size_t) {
                                 if (ec) return self->Fail(ec, true);
                                 self->writing_ = false;
                                 self->WriteChunk(last);
                               });
      return;
    }
    sending_.swap(out_);
    out_.clear();
    auto after_data = [self, last](beast::error_code ec, size_t) {
      if (ec) return self->Fail(ec, true);
      self->sending_.clear();
      if (!last) {
        self->writing_ = false;
        self->Pump();
        return;
      }
      asio::async_write(self->stream_, http::make_chunk_last(),
                        [self](beast::error_code ec2, size_t) {
                          self->writing_ = false;
                          self->job_.reset();
                          self->AfterResponse(ec2);
                        });
    };
    if (sending_.empty()) {
      after_data({}, 0);
      return;
    }
    asio::async_write(stream_, http::make_chunk(asio::buffer(sending_)), std::move(after_data));
  }

  void Respond(http::status status, std::string content_type, std::string body, unsigned version) {
    auto response = std::make_shared<http::response<http::string_body>>(status, version);
    response->set(http::field::server, kServerName);
    response->set(http::field::content_type, content_type);
    response->set(http::field::cache_control, "no-store");
    response->set("X-Content-Type-Options", "nosniff");
    if (!allow_.empty()) response->set(http::field::allow, allow_);
    allow_.clear();
    if (content_type.starts_with("text/html")) {
      response->set("Content-Security-Policy",
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    }
    response->keep_alive(keep_alive_);
    response->body() = std::move(body);
    response->prepare_payload();
    writing_ = true;
    Lowest().expires_after(server_.options.stall_timeout);
    http::async_write(stream_, *response,
                      [self = shared_from_this(), response](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        self->AfterResponse(ec);
                      });
  }

  void AfterResponse(beast::error_code ec) {
    if (!ec && linger_ && !server_.stopped) {
      Linger();
      return;
    }
    if (ec || !keep_alive_ || server_.stopped) {
      Fail(ec, true);
      return;
    }
    ReadRequest();
  }

  // After refusing a body still on its way: stop sending, then read and drop what the
  // client still sends (bounded in time), so closing does not reset the connection and
  // take the answer with it before the client has read it.
  void Linger() {
    beast::error_code ec;
    Socket().shutdown(tcp::socket::shutdown_send, ec);
    if (!linger_started_) {
      linger_started_ = true;
      Lowest().expires_after(kLingerTime);
    }
    drain_.resize(64 << 10);
    stream_.async_read_some(asio::buffer(drain_),
                            [self = shared_from_this()](beast::error_code read_ec, size_t) {
                              if (read_ec) return self->Close();
                              self->Linger();
                            });
  }

  Stream stream_;
  HttpServer::Impl& server_;
  std::string peer_;
  std::string tls_subject_;  // a verified client certificate's subject
  bool local_ = false;       // a loopback peer (the security layer's "local caller")
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
  bool linger_ = false;
  bool linger_started_ = false;
  std::string drain_;
  unsigned version_ = 11;
  std::string allow_;
  std::unique_ptr<RpcJob> job_;
  std::string out_;
  std::string sending_;
  bool writing_ = false;
  bool watching_ = false;
  bool header_sent_ = false;
  http::response<http::empty_body> chunked_head_;
  std::optional<http::response_serializer<http::empty_body>> head_serializer_;
};

void HttpServer::Impl::Accept() {
  acceptor.async_accept(io, [this](beast::error_code ec, tcp::socket socket) {
    if (stopped) return;
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        spdlog::warn("httpd: accept failed: {}", ec.message());
      }
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
        // Out of descriptors: wait for connections to go instead of spinning.
        auto timer = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(100));
        timer->async_wait([this, timer](beast::error_code) { Accept(); });
        return;
      }
    } else {
      socket.set_option(tcp::no_delay(true), ec);
      const bool over_limit = sessions.size() >= options.max_connections;
      if (tls) {
        std::make_shared<Session<TlsStream>>(std::move(socket), *this)->Start(over_limit);
      } else {
        std::make_shared<Session<PlainStream>>(std::move(socket), *this)->Start(over_limit);
      }
    }
    Accept();
  });
}

void HttpServer::Impl::WatchWake() {
  wake.async_wait(asio::posix::stream_descriptor::wait_read, [this](beast::error_code ec) {
    if (ec || stopped) return;
    dispatcher.RunCompletions();
    WatchWake();
  });
}

HttpServer::HttpServer(asio::io_context& io, mi::Dispatcher& dispatcher, ServerOptions options)
    : impl_(std::make_unique<Impl>(io, dispatcher, std::move(options))) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::CheckTls(const TlsSettings& tls) { return BuildTlsContext(tls).status(); }

absl::Status HttpServer::status() const { return impl_->status; }

void HttpServer::AddGet(std::string path, GetHandler handler) {
  impl_->routes[std::move(path)] = std::move(handler);
}

absl::StatusOr<int> HttpServer::OpenListenSocket(const std::string& host, uint16_t port) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  auto* in = reinterpret_cast<sockaddr_in*>(&storage);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    length = sizeof(sockaddr_in6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("httpd: listen address '", host, "' is not an IP address"));
  }
  const int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("httpd: socket: ", strerror(errno)));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 || listen(fd, 1024) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("httpd: cannot listen on ", host, " port ", port, ": ", strerror(error)));
  }
  return fd;
}

absl::StatusOr<uint16_t> HttpServer::BoundPort(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return absl::InternalError(absl::StrCat("httpd: getsockname: ", strerror(errno)));
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
}

absl::Status HttpServer::Adopt(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return absl::InternalError(absl::StrCat("httpd: getsockname: ", strerror(errno)));
  }
  const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) return absl::InternalError(absl::StrCat("httpd: dup: ", strerror(errno)));
  beast::error_code ec;
  impl_->acceptor.assign(storage.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), own, ec);
  if (ec) {
    close(own);
    return absl::InternalError(absl::StrCat("httpd: cannot use the listen socket: ", ec.message()));
  }
  return absl::OkStatus();
}

void HttpServer::Start() {
  const int fd = dup(impl_->dispatcher.wake_fd());
  if (fd >= 0) {
    impl_->wake.assign(fd);
    impl_->WatchWake();
  }
  impl_->Accept();
}

void HttpServer::Stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  beast::error_code ec;
  impl_->acceptor.close(ec);
  impl_->wake.close(ec);
  std::vector<SessionBase*> open(impl_->sessions.begin(), impl_->sessions.end());
  for (SessionBase* session : open) session->Close();
}

void HttpServer::Tick() {
  if (mi::Dispatcher::Clock::now() >= impl_->dispatcher.NextDeadline()) {
    impl_->dispatcher.RunCompletions();
  }
}

size_t HttpServer::connections() const { return impl_->sessions.size(); }

}  // namespace sipd::httpd
