#include "legacy-transports/xmlrpc/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "legacy-transports/xmlrpc/http.h"
#include "spdlog/spdlog.h"

namespace sipd::xmlrpc {
namespace {

using Clock = std::chrono::steady_clock;

// How often blocked loops look at the stop flag.
constexpr std::chrono::milliseconds kPollSlice{200};
// Listen backlog. Connections are accepted promptly; past max_connections they get 503.
constexpr int kListenBacklog = 128;
constexpr size_t kReadChunk = 64 * 1024;
// Bounds of the lingering close after an error reply.
constexpr std::chrono::seconds kLingerTime{2};
constexpr size_t kMaxLingerBytes = 16 * 1024 * 1024;
// Per-connection buffers larger than this are freed after the request that grew them.
constexpr size_t kKeptBufferCapacity = 256 * 1024;

std::string PeerName(const sockaddr_storage& peer) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (peer.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&peer);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (peer.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&peer);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
  }
  return absl::StrCat(host, ":", port);
}

// Common Log Format time: [10/Oct/2000:13:55:36 +0000].
std::string LogTime(std::time_t when) {
  struct tm tm_utc;
  gmtime_r(&when, &tm_utc);
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buffer[48];
  snprintf(buffer, sizeof(buffer), "[%02d/%s/%04d:%02d:%02d:%02d +0000]", tm_utc.tm_mday,
           kMonths[tm_utc.tm_mon], tm_utc.tm_year + 1900, tm_utc.tm_hour, tm_utc.tm_min,
           tm_utc.tm_sec);
  return buffer;
}

int MillisUntil(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, kPollSlice.count()));
}

}  // namespace

absl::StatusOr<int> OpenListenSocket(const std::string& address, int port) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  auto* in = reinterpret_cast<sockaddr_in*>(&storage);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET, address.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, address.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    length = sizeof(sockaddr_in6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_xmlrpc: listen address '", address, "' is not an IP address"));
  }
  const int fd = socket(storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("mi_xmlrpc: socket: ", strerror(errno)));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0 ||
      listen(fd, kListenBacklog) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat(
        "mi_xmlrpc: cannot listen on ", storage.ss_family == AF_INET6 ? "[" : "", address,
        storage.ss_family == AF_INET6 ? "]" : "", ":", port, ": ", strerror(error)));
  }
  return fd;
}

absl::StatusOr<int> BoundPort(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) {
    return absl::InternalError(absl::StrCat("getsockname: ", strerror(errno)));
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
}

struct XmlrpcServer::Worker {
  std::thread thread;
  std::atomic<bool> finished{false};
};

// One accepted connection, served on its own thread: read a request, answer it, repeat
// while keep-alive allows.
class XmlrpcServer::Connection {
 public:
  Connection(XmlrpcServer& server, int fd, std::string peer)
      : server_(server), fd_(fd), peer_(std::move(peer)) {}
  ~Connection() { close(fd_); }

  void Serve() {
    int served = 0;
    while (true) {
      const Clock::time_point deadline = Clock::now() + server_.options_.read_timeout;
      if (!ServeOne(deadline, served)) return;
      ++served;
      if (!keep_alive_) return;
    }
  }

 private:
  enum class ReadResult { kData, kEof, kTimeout, kStopped, kError };

  // Appends what the socket has (waiting until `deadline`).
  ReadResult ReadMore(Clock::time_point deadline) {
    while (true) {
      if (server_.stopping_.load()) return ReadResult::kStopped;
      if (Clock::now() >= deadline) return ReadResult::kTimeout;
      pollfd pfd{fd_, POLLIN, 0};
      const int ready = poll(&pfd, 1, MillisUntil(deadline));
      if (ready < 0 && errno != EINTR) return ReadResult::kError;
      if (ready <= 0) continue;
      char chunk[kReadChunk];
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n > 0) {
        buffer_.append(chunk, static_cast<size_t>(n));
        return ReadResult::kData;
      }
      if (n == 0) return ReadResult::kEof;
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return ReadResult::kError;
    }
  }

  // Sends all of `data` before `deadline`. False if the peer is gone, too slow, or the
  // server is stopping.
  bool SendAll(std::string_view data, Clock::time_point deadline) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
      if (server_.stopping_.load() || Clock::now() >= deadline) return false;
      pollfd pfd{fd_, POLLOUT, 0};
      if (poll(&pfd, 1, MillisUntil(deadline)) < 0 && errno != EINTR) return false;
    }
    return true;
  }

  void SendError(int status, std::string message, const HttpRequestHead* head) {
    spdlog::debug("mi_xmlrpc: {} -> HTTP {} ({})", peer_, status, message);
    const std::string response =
        FormatErrorResponse(HttpError{status, std::move(message)}, std::time(nullptr));
    const bool sent = SendAll(response, Clock::now() + server_.options_.read_timeout);
    Log(head, status, response.size());
    if (sent) LingerClose();
  }

  // After an error reply the client may still be sending (e.g. a 2 MB body after 413).
  // Closing with unread input would reset the connection and could destroy the reply
  // before the client reads it, so stop writing and drain input for a short while.
  void LingerClose() {
    shutdown(fd_, SHUT_WR);
    const Clock::time_point deadline =
        Clock::now() + std::min<Clock::duration>(kLingerTime, server_.options_.read_timeout);
    size_t drained = 0;
    buffer_.clear();
    while (drained < kMaxLingerBytes) {
      const ReadResult result = ReadMore(deadline);
      if (result != ReadResult::kData) return;
      drained += buffer_.size();
      buffer_.clear();
    }
  }

  void Log(const HttpRequestHead* head, int status, size_t bytes) {
    if (server_.access_log_fd_ < 0) return;
    const std::string request =
        head == nullptr ? std::string("-")
                        : absl::StrCat(head->method, " ", head->target, " ", head->version);
    server_.WriteAccessLog(absl::StrCat(peer_.substr(0, peer_.rfind(':')), " - - ",
                                        LogTime(std::time(nullptr)), " \"", request, "\" ", status,
                                        " ", bytes, "\n"));
  }

  // Drops CR/LF between requests (RFC 7230 3.5: ignore empty lines before a request).
  void SkipLeadingEmptyLines() {
    const size_t start = buffer_.find_first_not_of("\r\n");
    buffer_.erase(0, start == std::string::npos ? buffer_.size() : start);
  }

  // Reads, checks and answers one request. False when the connection must be closed now.
  bool ServeOne(Clock::time_point deadline, int served) {
    size_t head_end = 0;
    SkipLeadingEmptyLines();
    while ((head_end = FindHeadEnd(buffer_)) == 0) {
      if (buffer_.size() > kMaxHeadSize) {
        SendError(431, absl::StrCat("request head exceeds ", kMaxHeadSize, " bytes"), nullptr);
        return false;
      }
      const ReadResult result = ReadMore(deadline);
      SkipLeadingEmptyLines();
      if (result == ReadResult::kData) continue;
      // An idle connection (nothing of a next request yet) just closes.
      if (buffer_.empty()) return false;
      if (result == ReadResult::kEof) {
        SendError(400, "connection closed in the middle of the request head", nullptr);
      } else if (result == ReadResult::kTimeout) {
        SendError(408, "request head not received in time", nullptr);
      }
      return false;
    }
    if (head_end > kMaxHeadSize) {
      SendError(431, absl::StrCat("request head exceeds ", kMaxHeadSize, " bytes"), nullptr);
      return false;
    }

    if (absl::Status parsed =
            ParseRequestHead(std::string_view(buffer_).substr(0, head_end), &head_);
        !parsed.ok()) {
      SendError(400, std::string(parsed.message()), nullptr);
      return false;
    }
    const HttpRequestHead* const head = &head_;
    const auto [error, body_length] = CheckRpcRequest(*head, server_.options_.max_body_size);
    if (error) {
      SendError(error->status, error->message, head);
      return false;
    }
    if (head->ExpectsContinue() && buffer_.size() < head_end + body_length &&
        !SendAll(kContinueResponse, deadline)) {
      return false;
    }
    while (buffer_.size() < head_end + body_length) {
      const ReadResult result = ReadMore(deadline);
      if (result == ReadResult::kData) continue;
      if (result == ReadResult::kEof) {
        SendError(400,
                  absl::StrCat("connection closed after ", buffer_.size() - head_end, " of ",
                               body_length, " body bytes"),
                  head);
      } else if (result == ReadResult::kTimeout) {
        SendError(408, "request body not received in time", head);
      }
      return false;
    }

    xml_.clear();
    server_.processor_.Process(std::string_view(buffer_).substr(head_end, body_length), &xml_);
    buffer_.erase(0, head_end + body_length);

    const int remaining = server_.options_.keep_alive_max - (served + 1);
    keep_alive_ = head->WantsKeepAlive() && remaining > 0 && !server_.stopping_.load();
    ResponseOptions response_options;
    response_options.keep_alive = keep_alive_;
    response_options.keep_alive_timeout_s = static_cast<int>(
        std::chrono::duration_cast<std::chrono::seconds>(server_.options_.read_timeout).count());
    response_options.keep_alive_remaining = remaining;
    response_options.date = std::time(nullptr);
    response_.clear();
    AppendXmlResponse(xml_, response_options, &response_);
    const bool sent = SendAll(response_, Clock::now() + server_.options_.read_timeout);
    Log(head, 200, response_.size());
    ReleaseLargeBuffers();
    if (!sent) spdlog::debug("mi_xmlrpc: {}: reply not delivered (peer gone or too slow)", peer_);
    return sent;
  }

  // A huge request or reply should not pin its memory for the rest of a long keep-alive
  // connection; ordinary ones keep their buffers (no allocation per request).
  void ReleaseLargeBuffers() {
    for (std::string* buffer : {&xml_, &response_}) {
      if (buffer->capacity() > kKeptBufferCapacity) std::string().swap(*buffer);
    }
    if (buffer_.empty() && buffer_.capacity() > kKeptBufferCapacity) std::string().swap(buffer_);
  }

  XmlrpcServer& server_;
  const int fd_;
  const std::string peer_;
  // Bytes received and not consumed yet (the next request's start, when pipelined).
  std::string buffer_;
  // Per-request state, reused across the requests of the connection.
  HttpRequestHead head_;
  std::string xml_;
  std::string response_;
  bool keep_alive_ = false;
};

XmlrpcServer::XmlrpcServer(int listen_fd, ServerOptions options, const XmlrpcProcessor& processor)
    : listen_fd_(listen_fd), options_(std::move(options)), processor_(processor) {}

XmlrpcServer::~XmlrpcServer() {
  stopping_.store(true);
  Reap(/*all=*/true);
  if (access_log_fd_ >= 0) close(access_log_fd_);
}

absl::Status XmlrpcServer::Open() {
  if (options_.log_file.empty() || access_log_fd_ >= 0) return absl::OkStatus();
  access_log_fd_ = open(options_.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (access_log_fd_ < 0) {
    return absl::InternalError(absl::StrCat("mi_xmlrpc: cannot open log_file '", options_.log_file,
                                            "': ", strerror(errno)));
  }
  return absl::OkStatus();
}

void XmlrpcServer::WriteAccessLog(const std::string& line) {
  std::lock_guard<std::mutex> lock(access_log_mutex_);
  // O_APPEND + one write() per line keeps lines whole; a failed log write is not worth
  // failing a request for.
  if (write(access_log_fd_, line.data(), line.size()) < 0) {
    spdlog::debug("mi_xmlrpc: access log write failed: {}", strerror(errno));
  }
}

void XmlrpcServer::Run(const std::function<bool()>& should_stop,
                       const std::function<void()>& on_wakeup) {
  // Non-blocking so that a connection reset between poll() and accept() cannot block us.
  fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  while (!should_stop()) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>(kPollSlice.count()));
    if (should_stop()) break;
    if (on_wakeup) on_wakeup();
    if (ready > 0) Accept();
    Reap(/*all=*/false);
  }
  stopping_.store(true);
  Reap(/*all=*/true);
}

void XmlrpcServer::Accept() {
  // Bounded so that a connection flood cannot starve the stop check.
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof(peer);
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        spdlog::warn("mi_xmlrpc: accept: {}", strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      return;
    }
    std::string peer_name = PeerName(peer);
    if (active_.load() >= options_.max_connections) {
      spdlog::warn("mi_xmlrpc: {} connections busy, refusing {}", options_.max_connections,
                   peer_name);
      // Best effort, never blocking: the socket is non-blocking and the reply is small.
      const std::string response = FormatErrorResponse(
          HttpError{503, absl::StrCat("too many connections (", options_.max_connections, ")")},
          std::time(nullptr));
      [[maybe_unused]] ssize_t ignored = send(fd, response.data(), response.size(), MSG_NOSIGNAL);
      close(fd);
      continue;
    }
    spdlog::debug("mi_xmlrpc: connection from {}", peer_name);
    active_.fetch_add(1);
    auto worker = std::make_unique<Worker>();
    Worker* raw = worker.get();
    auto connection = std::make_unique<Connection>(*this, fd, std::move(peer_name));
    try {
      raw->thread = std::thread([this, raw, connection = std::move(connection)]() mutable {
        connection->Serve();
        connection.reset();
        active_.fetch_sub(1);
        raw->finished.store(true);
      });
    } catch (const std::system_error& e) {
      // Thread creation failed: `connection` was destroyed with the lambda (fd closed).
      spdlog::error("mi_xmlrpc: cannot start a connection thread: {}", e.what());
      active_.fetch_sub(1);
      continue;
    }
    workers_.push_back(std::move(worker));
  }
}

void XmlrpcServer::Reap(bool all) {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (all || (*it)->finished.load()) {
      if ((*it)->thread.joinable()) (*it)->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace sipd::xmlrpc
