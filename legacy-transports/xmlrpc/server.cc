#include "legacy-transports/xmlrpc/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <boost/intrusive/list.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "legacy-transports/xmlrpc/http.h"
#include "spdlog/spdlog.h"

namespace sipd::xmlrpc {
namespace {

using Clock = std::chrono::steady_clock;

// Listen backlog. Connections are accepted promptly; past the limits the oldest idle
// connection makes room, or the newcomer gets 503.
constexpr int kListenBacklog = 511;
// Connections accepted per wake-up (so that a connection flood cannot starve the rest).
constexpr int kAcceptBatch = 64;
// Bounds of the lingering close after an error reply.
constexpr std::chrono::seconds kLingerTime{2};
constexpr size_t kMaxLingerBytes = 16 * 1024 * 1024;
// Per-connection buffers larger than this are freed once empty.
constexpr size_t kKeptBufferCapacity = 64 * 1024;
// epoll_event.data.u64 of the two descriptors that are not connections.
constexpr uint64_t kListenKey = 0;
constexpr uint64_t kWakeKey = 1;
// Events handled per turn of the loop (a turn's work is bounded by this times the work
// of one event).
constexpr int kMaxEvents = 64;
// Parts of a streamed reply produced per turn of the loop for one connection (an
// ul_dump part, 50 AORs, takes ~0.2 ms to write): a fast reader of a long stream yields
// to the others after each.
constexpr int kPartsPerTurn = 1;

std::string PeerAddress(const sockaddr_storage& peer, std::string* host_only) {
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
  host_only->assign(host);
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

void AppendHex(size_t value, std::string* out) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = "0123456789abcdef"[value & 0xF];
    value >>= 4;
  } while (value != 0);
  while (n > 0) out->push_back(digits[--n]);
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

class XmlrpcServer::Impl {
 public:
  Impl(std::atomic<int>& active, int listen_fd, ServerOptions options,
       const XmlrpcProcessor& processor, mi::Dispatcher& dispatcher)
      : active_(active),
        listen_fd_(listen_fd),
        options_(std::move(options)),
        processor_(processor),
        dispatcher_(dispatcher),
        read_buffer_(new char[kReadChunk]) {}

  ~Impl() {
    CloseAll();
    if (epoll_fd_ >= 0) close(epoll_fd_);
    if (access_log_fd_ >= 0) close(access_log_fd_);
  }

  absl::Status Open();
  void Run(const std::function<bool()>& should_stop, const std::function<void()>& on_wakeup);

 private:
  // Where a connection is in its request/reply cycle.
  enum class Phase {
    // Waiting for a request (new connection, or keep-alive after a reply).
    kIdle,
    // Part of a request head arrived.
    kHead,
    // The head is in and acceptable; part of the body arrived.
    kBody,
    // The call was started and is not ready yet (async reply, worker).
    kRunning,
    // A pulled reply is being written part by part.
    kStreaming,
    // An HTTP error reply is being written; then kLinger.
    kErrorReply,
    // After an error reply: input is drained (and dropped) until EOF or a short time.
    kLinger,
  };

  using IdleHook =
      boost::intrusive::list_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

  struct Connection : IdleHook {
    explicit Connection(ReplyOption option) : writer(option) {}
    size_t in_pending() const { return in.size() - in_pos; }
    size_t out_pending() const { return out.size() - out_pos; }

    int fd = -1;
    uint64_t key = 0;
    // "ip:port" (CallContext.peer.address) and "ip" (per-peer limit, access log).
    std::string peer;
    std::string host;
    Phase phase = Phase::kIdle;
    // Deadline of the current phase (idle, head, body, linger).
    Clock::time_point deadline;
    // When the reply being written started (zero: none), and when the socket last took
    // bytes of it.
    Clock::time_point reply_start{};
    Clock::time_point last_progress;
    // Input received and not consumed yet starts at in_pos; output not sent yet at
    // out_pos.
    std::string in;
    size_t in_pos = 0;
    std::string out;
    size_t out_pos = 0;
    // The reply document (or one part of a pulled reply) before it is framed.
    std::string body;
    HttpRequestHead head;
    size_t head_end = 0;
    size_t body_length = 0;
    // Bytes of the pending input already searched for the end of the head.
    size_t head_scanned = 0;
    bool http10 = false;
    bool keep_alive = true;
    bool close_after_write = false;
    bool peer_closed = false;
    bool write_blocked = false;
    bool dead = false;
    int served = 0;
    size_t reply_bytes = 0;
    size_t lingered = 0;
    uint32_t events = 0;
    // The call in progress.
    std::unique_ptr<mi::Exchange> exchange;
    // An HTTP/1.0 client's streamed reply is being gathered whole in `body`.
    bool whole_body = false;
    absl::Status args_error;
    bool waited_async = false;
    ResponseWriter writer;
  };

  using IdleList = boost::intrusive::list<Connection, boost::intrusive::constant_time_size<false>>;

  Connection* Find(uint64_t key) {
    const auto it = connections_.find(key);
    return it == connections_.end() || it->second->dead ? nullptr : it->second.get();
  }

  void Accept();
  bool MakeRoom(const std::string& host);
  bool EvictIdle(const std::string* host);
  void Refuse(int fd, const std::string& peer);
  void HandleEvent(Connection& c, uint32_t events);
  void ReadInput(Connection& c);
  void Drain(Connection& c);
  void OnPeerClosed(Connection& c);
  void ProcessInput(Connection& c);
  void StartCall(Connection& c, std::string_view body);
  void Deliver(Connection& c);
  void PullStream(Connection& c);
  ResponseOptions NextResponseOptions(Connection& c);
  void BeginReply(Connection& c);
  void QueueResponse(Connection& c);
  void FinishReply(Connection& c);
  void SendError(Connection& c, int status, std::string message, const HttpRequestHead* head);
  void StartLinger(Connection& c);
  void Flush(Connection& c);
  void Settle(Connection& c);
  void AfterWork(Connection& c);
  void RunCompletions();
  void Sweep();
  void Close(Connection& c);
  void CloseAll();
  void ReapDead();
  void Log(const Connection& c, const HttpRequestHead* head, int status, size_t bytes);

  std::atomic<int>& active_;
  const int listen_fd_;
  const ServerOptions options_;
  const XmlrpcProcessor& processor_;
  mi::Dispatcher& dispatcher_;
  std::unique_ptr<char[]> read_buffer_;
  int epoll_fd_ = -1;
  int access_log_fd_ = -1;
  bool listen_paused_ = false;
  bool stopping_ = false;

  Clock::time_point now_ = Clock::now();
  std::time_t wall_now_ = 0;
  Clock::time_point next_sweep_;
  Clock::time_point next_dispatch_deadline_ = Clock::time_point::max();
  Clock::time_point next_refusal_log_{};
  uint64_t refused_since_log_ = 0;

  uint64_t next_key_ = 2;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Connection>> connections_;
  int open_ = 0;
  absl::flat_hash_map<std::string, int> per_peer_;
  // Connections with nothing received of a request and nothing to write, oldest first.
  IdleList idle_;
  std::vector<uint64_t> dead_;
  // Keys of connections whose call became ready during RunCompletions().
  std::vector<uint64_t> ready_;
  std::vector<uint64_t> scratch_keys_;
};

absl::Status XmlrpcServer::Impl::Open() {
  if (!options_.log_file.empty() && access_log_fd_ < 0) {
    access_log_fd_ =
        open(options_.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (access_log_fd_ < 0) {
      return absl::InternalError(absl::StrCat("mi_xmlrpc: cannot open log_file '",
                                              options_.log_file, "': ", strerror(errno)));
    }
  }
  if (epoll_fd_ >= 0) return absl::OkStatus();
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return absl::InternalError(absl::StrCat("epoll_create1: ", strerror(errno)));
  // Non-blocking so that a connection reset between epoll_wait() and accept() cannot
  // block us.
  fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  epoll_event listen_event{};
  // Several MI XMLRPC processes may wait on the same listen socket: wake one of them.
  listen_event.events = EPOLLIN | EPOLLEXCLUSIVE;
  listen_event.data.u64 = kListenKey;
  epoll_event wake_event{};
  wake_event.events = EPOLLIN;
  wake_event.data.u64 = kWakeKey;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &listen_event) != 0 ||
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, dispatcher_.wake_fd(), &wake_event) != 0) {
    return absl::InternalError(absl::StrCat("epoll_ctl: ", strerror(errno)));
  }
  return absl::OkStatus();
}

void XmlrpcServer::Impl::Run(const std::function<bool()>& should_stop,
                             const std::function<void()>& on_wakeup) {
  if (epoll_fd_ < 0) {
    if (absl::Status status = Open(); !status.ok()) {
      spdlog::error("{}", status.ToString());
      return;
    }
  }
  epoll_event events[kMaxEvents];
  now_ = Clock::now();
  next_sweep_ = now_ + kSweepInterval;
  while (!should_stop()) {
    const Clock::time_point next = std::min(next_sweep_, next_dispatch_deadline_);
    const int timeout_ms =
        next <= now_
            ? 0
            : static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(next - now_).count());
    const int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout_ms);
    now_ = Clock::now();
    wall_now_ = std::time(nullptr);
    if (on_wakeup) on_wakeup();
    if (n < 0 && errno != EINTR) {
      spdlog::error("mi_xmlrpc: epoll_wait: {}", strerror(errno));
      break;
    }
    bool wake = false;
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == kListenKey) {
        Accept();
      } else if (key == kWakeKey) {
        wake = true;
      } else if (Connection* c = Find(key); c != nullptr) {
        HandleEvent(*c, events[i].events);
      }
    }
    if (wake || now_ >= next_dispatch_deadline_) RunCompletions();
    if (now_ >= next_sweep_) {
      Sweep();
      next_sweep_ = now_ + kSweepInterval;
    }
    ReapDead();
  }
  stopping_ = true;
  CloseAll();
}

void XmlrpcServer::Impl::Accept() {
  for (int i = 0; i < kAcceptBatch; ++i) {
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof(peer);
    const int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors or memory: stop listening until the next sweep rather
        // than spin on a readable listen socket.
        spdlog::warn("mi_xmlrpc: accept: {} ({} connections open)", strerror(errno), open_);
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        listen_paused_ = true;
      }
      return;
    }
    std::string host;
    std::string address = PeerAddress(peer, &host);
    if (!MakeRoom(host)) {
      Refuse(fd, address);
      continue;
    }
    auto owned = std::make_unique<Connection>(processor_.options().reply_option);
    Connection& c = *owned;
    c.fd = fd;
    c.key = next_key_++;
    c.peer = std::move(address);
    c.host = std::move(host);
    c.phase = Phase::kIdle;
    c.deadline = now_ + options_.header_timeout;
    c.last_progress = now_;
    c.events = EPOLLIN | EPOLLRDHUP;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    // A fixed send buffer instead of the kernel's autotuning (up to tcp_wmem's 4 MiB):
    // what a client that does not read can pin in the kernel stays bounded.
    const int send_buffer = static_cast<int>(kSocketSendBuffer);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof(send_buffer));
    epoll_event event{};
    event.events = c.events;
    event.data.u64 = c.key;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
      spdlog::warn("mi_xmlrpc: epoll_ctl: {}", strerror(errno));
      close(fd);
      continue;
    }
    spdlog::debug("mi_xmlrpc: connection from {}", c.peer);
    ++per_peer_[c.host];
    ++open_;
    active_.fetch_add(1, std::memory_order_relaxed);
    idle_.push_back(c);
    connections_.emplace(c.key, std::move(owned));
  }
}

bool XmlrpcServer::Impl::MakeRoom(const std::string& host) {
  if (open_ >= options_.max_connections && !EvictIdle(nullptr)) return false;
  const auto it = per_peer_.find(host);
  if (it != per_peer_.end() && it->second >= options_.max_connections_per_peer &&
      !EvictIdle(&host)) {
    return false;
  }
  return true;
}

bool XmlrpcServer::Impl::EvictIdle(const std::string* host) {
  for (Connection& c : idle_) {
    if (host != nullptr && c.host != *host) continue;
    spdlog::debug("mi_xmlrpc: closing idle connection {} to make room", c.peer);
    Close(c);
    return true;
  }
  return false;
}

void XmlrpcServer::Impl::Refuse(int fd, const std::string& peer) {
  ++refused_since_log_;
  if (now_ >= next_refusal_log_) {
    spdlog::warn(
        "mi_xmlrpc: refused {} connection(s) (last from {}): {} open, none idle "
        "(max_connections {}, max_connections_per_peer {})",
        refused_since_log_, peer, open_, options_.max_connections,
        options_.max_connections_per_peer);
    refused_since_log_ = 0;
    next_refusal_log_ = now_ + std::chrono::seconds(1);
  }
  // Best effort, never blocking: the socket is non-blocking and the reply is small.
  const std::string response =
      FormatErrorResponse(HttpError{503, "too many connections"}, wall_now_);
  [[maybe_unused]] ssize_t ignored = send(fd, response.data(), response.size(), MSG_NOSIGNAL);
  close(fd);
}

void XmlrpcServer::Impl::HandleEvent(Connection& c, uint32_t events) {
  if ((events & EPOLLERR) != 0) {
    Close(c);
    return;
  }
  if ((events & EPOLLOUT) != 0) {
    c.write_blocked = false;
    Flush(c);
    if (c.dead) return;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) != 0) {
    if (c.phase == Phase::kLinger) {
      Drain(c);
    } else if ((c.events & EPOLLIN) != 0) {
      ReadInput(c);
    } else if ((events & (EPOLLRDHUP | EPOLLHUP)) != 0) {
      OnPeerClosed(c);
    }
  }
  if (!c.dead) AfterWork(c);
}

void XmlrpcServer::Impl::ReadInput(Connection& c) {
  if (c.in_pos > 0) {
    c.in.erase(0, c.in_pos);
    c.in_pos = 0;
  }
  const ssize_t n = recv(c.fd, read_buffer_.get(), kReadChunk, 0);
  if (n > 0) {
    c.in.append(read_buffer_.get(), static_cast<size_t>(n));
    ProcessInput(c);
    return;
  }
  if (n == 0) {
    OnPeerClosed(c);
    return;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
  Close(c);
}

void XmlrpcServer::Impl::Drain(Connection& c) {
  while (true) {
    const ssize_t n = recv(c.fd, read_buffer_.get(), kReadChunk, 0);
    if (n > 0) {
      c.lingered += static_cast<size_t>(n);
      if (c.lingered >= kMaxLingerBytes) break;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  Close(c);
}

void XmlrpcServer::Impl::OnPeerClosed(Connection& c) {
  c.peer_closed = true;
  switch (c.phase) {
    case Phase::kRunning:
    case Phase::kStreaming:
      // The client is gone: the call is cancelled (Close destroys the exchange).
      spdlog::debug("mi_xmlrpc: {} closed the connection while its call was running", c.peer);
      Close(c);
      return;
    case Phase::kHead:
      SendError(c, 400, "connection closed in the middle of the request head", nullptr);
      return;
    case Phase::kBody:
      SendError(c, 400,
                absl::StrCat("connection closed after ", c.in_pending() - c.head_end, " of ",
                             c.body_length, " body bytes"),
                &c.head);
      return;
    case Phase::kIdle:
      if (c.out_pending() > 0) {
        c.close_after_write = true;  // write the replies it asked for, then close
        return;
      }
      Close(c);
      return;
    case Phase::kErrorReply:
      return;  // finish writing the error; then close instead of lingering
    case Phase::kLinger:
      Close(c);
      return;
  }
}

void XmlrpcServer::Impl::ProcessInput(Connection& c) {
  while (!c.dead) {
    if (c.phase == Phase::kIdle) {
      // Pipelined requests wait while earlier replies are still being written.
      if (c.close_after_write || c.out_pending() > kStreamLowWater) break;
      // RFC 7230 3.5: ignore empty lines before a request.
      while (c.in_pos < c.in.size() && (c.in[c.in_pos] == '\r' || c.in[c.in_pos] == '\n')) {
        ++c.in_pos;
      }
      if (c.in_pending() == 0) break;
      c.phase = Phase::kHead;
      c.deadline = now_ + options_.header_timeout;
      c.head_scanned = 0;
    }
    if (c.phase == Phase::kHead) {
      const std::string_view pending = std::string_view(c.in).substr(c.in_pos);
      // Search only what arrived since the last look (a head sent byte by byte must not
      // cost quadratic time); a terminator may straddle the old end by 2 bytes.
      const size_t from = c.head_scanned > 2 ? c.head_scanned - 2 : 0;
      const size_t found = FindHeadEnd(pending.substr(from));
      const size_t head_end = found == 0 ? 0 : from + found;
      c.head_scanned = pending.size();
      if (head_end == 0) {
        if (pending.size() > kMaxHeadSize) {
          SendError(c, 431, absl::StrCat("request head exceeds ", kMaxHeadSize, " bytes"), nullptr);
        }
        break;
      }
      if (head_end > kMaxHeadSize) {
        SendError(c, 431, absl::StrCat("request head exceeds ", kMaxHeadSize, " bytes"), nullptr);
        break;
      }
      if (absl::Status parsed = ParseRequestHead(pending.substr(0, head_end), &c.head);
          !parsed.ok()) {
        SendError(c, 400, std::string(parsed.message()), nullptr);
        break;
      }
      const auto [error, body_length] = CheckRpcRequest(c.head, options_.max_body_size);
      if (error) {
        SendError(c, error->status, error->message, &c.head);
        break;
      }
      c.head_end = head_end;
      c.body_length = body_length;
      c.http10 = c.head.version == "HTTP/1.0";
      c.phase = Phase::kBody;
      c.deadline = now_ + options_.read_timeout;
      if (c.in_pending() < head_end + body_length) {
        if (c.head.ExpectsContinue()) {
          if (c.out_pending() == 0) c.last_progress = now_;
          c.out.append(kContinueResponse);
        }
        // Room for a small body at once; a large one grows as it arrives (a client
        // that announces 1 MiB and sends nothing pins nothing).
        if (body_length <= kReadChunk) c.in.reserve(c.in_pos + head_end + body_length);
      }
    }
    if (c.phase != Phase::kBody || c.in_pending() < c.head_end + c.body_length) break;
    const std::string_view body =
        std::string_view(c.in).substr(c.in_pos + c.head_end, c.body_length);
    StartCall(c, body);
    c.in_pos += c.head_end + c.body_length;
    if (c.phase != Phase::kIdle) break;  // waiting for the call or the stream
  }
  if (c.in_pos == c.in.size()) {
    c.in.clear();
    c.in_pos = 0;
    if (c.in.capacity() > kKeptBufferCapacity) std::string().swap(c.in);
  }
}

void XmlrpcServer::Impl::StartCall(Connection& c, std::string_view body) {
  mi::CallContext context;
  context.transport = mi::Transport::kXmlrpc;
  context.peer.address = c.peer;
  context.peer.local = mi::IsLoopbackHost(c.host);
  if (std::optional<std::string_view> authorization = c.head.Header("authorization")) {
    context.peer.token = mi::TokenFromAuthorization(*authorization);
  }
  context.can_wait_async = true;
  mi::Request request;
  c.body.clear();
  if (processor_.Parse(body, &request, &c.body, &context) == XmlrpcProcessor::Parsed::kAnswered) {
    QueueResponse(c);
    return;
  }
  c.args_error = request.args_error;
  c.writer.Reset();
  c.writer.SetOutput(&c.body);
  c.whole_body = false;
  const uint64_t key = c.key;
  // Always pulled, on this thread: the dispatcher never writes into this connection's
  // buffers from a worker (which could outlive a cancelled call), and a stream for an
  // HTTP/1.0 client is produced in turns like any other (then sent whole).
  c.exchange = dispatcher_.Start(std::move(context), std::move(request), mi::Delivery::kPull,
                                 nullptr, [this, key] { ready_.push_back(key); });
  if (c.exchange->ready()) {
    c.waited_async = false;
    Deliver(c);
    return;
  }
  c.waited_async = true;
  c.phase = Phase::kRunning;
  next_dispatch_deadline_ = dispatcher_.NextDeadline();
}

void XmlrpcServer::Impl::Deliver(Connection& c) {
  mi::Exchange& exchange = *c.exchange;
  if (XmlrpcProcessor::IsFault(exchange)) {
    c.body.clear();
    processor_.AppendFault(exchange, c.args_error, c.waited_async, &c.body);
    c.exchange.reset();
    QueueResponse(c);
    return;
  }
  c.body.clear();
  if (exchange.WriteNext(c.writer)) {
    if (exchange.outcome() != mi::Outcome::kReply) {  // the stream failed at once
      c.body.clear();
      processor_.AppendFault(exchange, c.args_error, c.waited_async, &c.body);
    }
    c.exchange.reset();
    QueueResponse(c);
    return;
  }
  if (c.http10) {
    // HTTP/1.0 has no chunked encoding: the parts are gathered (one per turn of the
    // loop) and the whole document goes out with a Content-Length.
    c.whole_body = true;
    c.phase = Phase::kStreaming;
    c.reply_start = now_;
    c.last_progress = now_;
    return;
  }
  // More parts follow: a chunked reply, pulled as the socket drains.
  BeginReply(c);
  const size_t start = c.out.size();
  AppendChunkedResponseHead(NextResponseOptions(c), &c.out);
  AppendHex(c.body.size(), &c.out);
  c.out.append("\r\n").append(c.body).append("\r\n");
  c.reply_bytes = c.out.size() - start;
  c.phase = Phase::kStreaming;  // Flush() pulls the next parts as the socket drains
}

void XmlrpcServer::Impl::PullStream(Connection& c) {
  if (c.exchange != nullptr && c.whole_body) {
    // Appends the next part to the document being gathered.
    const bool done = c.exchange->WriteNext(c.writer);
    c.last_progress = now_;
    if (c.exchange->outcome() != mi::Outcome::kReply) {  // failed: nothing sent yet
      c.body.clear();
      processor_.AppendFault(*c.exchange, c.args_error, c.waited_async, &c.body);
    } else if (!done) {
      return;
    }
    c.exchange.reset();
    c.whole_body = false;
    c.reply_start = Clock::time_point{};
    QueueResponse(c);
    return;
  }
  if (c.exchange != nullptr && c.out_pending() < kStreamLowWater) {
    c.body.clear();
    const bool done = c.exchange->WriteNext(c.writer);
    const size_t start = c.out.size();
    if (c.exchange->outcome() != mi::Outcome::kReply) {
      // Part of the reply is out: the client learns of the failure from a chunked body
      // that ends without its last chunk.
      spdlog::warn("mi_xmlrpc: stream of '{}' to {} failed midway; closing the connection",
                   c.exchange->command_name(), c.peer);
      c.exchange.reset();
      c.keep_alive = false;
      FinishReply(c);
      return;
    }
    if (!c.body.empty()) {
      AppendHex(c.body.size(), &c.out);
      c.out.append("\r\n").append(c.body).append("\r\n");
    }
    if (done) {
      c.out.append("0\r\n\r\n");
      c.exchange.reset();
    }
    c.reply_bytes += c.out.size() - start;
    if (done) FinishReply(c);
  }
}

ResponseOptions XmlrpcServer::Impl::NextResponseOptions(Connection& c) {
  c.keep_alive = c.head.WantsKeepAlive() && !stopping_ &&
                 (options_.keep_alive_max <= 0 || c.served + 1 < options_.keep_alive_max);
  ResponseOptions response;
  response.keep_alive = c.keep_alive;
  response.keep_alive_timeout_s = static_cast<int>(
      std::chrono::duration_cast<std::chrono::seconds>(options_.idle_timeout).count());
  response.keep_alive_remaining =
      options_.keep_alive_max > 0 ? options_.keep_alive_max - (c.served + 1) : -1;
  response.date = wall_now_;
  return response;
}

void XmlrpcServer::Impl::BeginReply(Connection& c) {
  if (c.out_pending() == 0) {
    c.reply_start = now_;
    c.last_progress = now_;
  } else if (c.reply_start == Clock::time_point{}) {
    c.reply_start = now_;
  }
}

void XmlrpcServer::Impl::QueueResponse(Connection& c) {
  BeginReply(c);
  const size_t start = c.out.size();
  AppendXmlResponse(c.body, NextResponseOptions(c), &c.out);
  c.reply_bytes = c.out.size() - start;
  if (c.body.capacity() > kKeptBufferCapacity) std::string().swap(c.body);
  FinishReply(c);
}

void XmlrpcServer::Impl::FinishReply(Connection& c) {
  Log(c, &c.head, 200, c.reply_bytes);
  ++c.served;
  if (!c.keep_alive) c.close_after_write = true;
  c.phase = Phase::kIdle;
  c.deadline = now_ + options_.idle_timeout;
}

void XmlrpcServer::Impl::SendError(Connection& c, int status, std::string message,
                                   const HttpRequestHead* head) {
  spdlog::debug("mi_xmlrpc: {} -> HTTP {} ({})", c.peer, status, message);
  const std::string response =
      FormatErrorResponse(HttpError{status, std::move(message)}, wall_now_);
  BeginReply(c);
  c.out.append(response);
  Log(c, head, status, response.size());
  c.keep_alive = false;
  c.phase = Phase::kErrorReply;
  c.in.clear();
  c.in_pos = 0;
}

void XmlrpcServer::Impl::StartLinger(Connection& c) {
  // After an error reply the client may still be sending (e.g. a 2 MB body after 413).
  // Closing with unread input would reset the connection and could destroy the reply
  // before the client reads it, so stop writing and drain input for a short while.
  if (c.peer_closed) {
    Close(c);
    return;
  }
  shutdown(c.fd, SHUT_WR);
  c.phase = Phase::kLinger;
  c.deadline = now_ + std::min<Clock::duration>(kLingerTime, options_.read_timeout);
  c.lingered = 0;
  Drain(c);
}

void XmlrpcServer::Impl::Flush(Connection& c) {
  int pulled = 0;
  while (!c.dead) {
    while (c.out_pending() > 0) {
      const ssize_t n =
          send(c.fd, c.out.data() + c.out_pos, c.out_pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        c.out_pos += static_cast<size_t>(n);
        c.last_progress = now_;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c.write_blocked = true;
        return;
      }
      spdlog::debug("mi_xmlrpc: {}: reply not delivered (peer gone)", c.peer);
      Close(c);
      return;
    }
    c.write_blocked = false;
    c.out.clear();
    c.out_pos = 0;
    if (c.phase == Phase::kStreaming) {
      if (pulled == kPartsPerTurn) {
        // Others get their turn; the socket has room, so EPOLLOUT brings this stream
        // back on the next turn of the loop.
        c.write_blocked = true;
        return;
      }
      PullStream(c);
      ++pulled;
      if (c.out_pending() > 0 || c.whole_body) continue;
    }
    break;
  }
  if (c.dead) return;
  if (c.out.capacity() > kKeptBufferCapacity) std::string().swap(c.out);
  if (c.phase == Phase::kStreaming) return;
  c.reply_start = Clock::time_point{};
  if (c.phase == Phase::kErrorReply) {
    StartLinger(c);
  } else if (c.close_after_write) {
    Close(c);
  } else if (c.phase == Phase::kIdle && c.served > 0) {
    c.deadline = now_ + options_.idle_timeout;
  }
}

void XmlrpcServer::Impl::Settle(Connection& c) {
  // What to wait for: the socket's room while output is blocked, input while a request
  // is being read (and nothing blocks), otherwise only the client's close.
  uint32_t wanted = 0;
  const bool reading = (c.phase == Phase::kIdle || c.phase == Phase::kHead ||
                        c.phase == Phase::kBody || c.phase == Phase::kLinger) &&
                       !c.close_after_write;
  if (c.write_blocked) {
    wanted = EPOLLOUT;
  } else if (reading && !c.peer_closed) {
    wanted = EPOLLIN;
  }
  if (!c.peer_closed) wanted |= EPOLLRDHUP;
  if (wanted != c.events) {
    epoll_event event{};
    event.events = wanted;
    event.data.u64 = c.key;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &event) != 0) {
      spdlog::warn("mi_xmlrpc: epoll_ctl: {}", strerror(errno));
      Close(c);
      return;
    }
    c.events = wanted;
  }
  const bool idle = c.phase == Phase::kIdle && c.in_pending() == 0 && c.out_pending() == 0 &&
                    !c.close_after_write;
  if (idle != c.is_linked()) {
    if (idle) {
      idle_.push_back(c);
    } else {
      c.unlink();
    }
  }
}

void XmlrpcServer::Impl::AfterWork(Connection& c) {
  Flush(c);
  // Replies that went out at once let the pipelined requests already read through (at
  // most one read's worth: kReadChunk bounds what a connection gets per turn).
  while (!c.dead && c.phase == Phase::kIdle && c.in_pending() > 0 && !c.write_blocked &&
         !c.close_after_write) {
    const size_t before = c.in_pending();
    ProcessInput(c);
    Flush(c);
    if (!c.dead && c.in_pending() == before) break;  // a partial request: wait for more
  }
  if (!c.dead) Settle(c);
}

void XmlrpcServer::Impl::RunCompletions() {
  dispatcher_.RunCompletions();
  next_dispatch_deadline_ = dispatcher_.NextDeadline();
  scratch_keys_.clear();
  scratch_keys_.swap(ready_);
  for (const uint64_t key : scratch_keys_) {
    Connection* c = Find(key);
    if (c == nullptr || c->exchange == nullptr || c->phase != Phase::kRunning) continue;
    Deliver(*c);
    if (!c->dead && c->phase == Phase::kIdle) ProcessInput(*c);
    if (!c->dead) AfterWork(*c);
  }
}

void XmlrpcServer::Impl::Sweep() {
  if (listen_paused_) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLEXCLUSIVE;
    event.data.u64 = kListenKey;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &event) == 0) listen_paused_ = false;
  }
  for (auto& [key, owned] : connections_) {
    Connection& c = *owned;
    if (c.dead) continue;
    if (c.out_pending() > 0 || c.phase == Phase::kStreaming) {
      if (c.write_blocked && now_ - c.last_progress >= options_.stall_timeout) {
        spdlog::debug("mi_xmlrpc: {} took no reply bytes for {} ms: closing", c.peer,
                      options_.stall_timeout.count());
        Close(c);
      } else if (c.reply_start != Clock::time_point{} &&
                 now_ - c.reply_start >= options_.reply_timeout) {
        spdlog::debug("mi_xmlrpc: {} not done reading its reply after {} ms: closing", c.peer,
                      options_.reply_timeout.count());
        Close(c);
      }
      continue;
    }
    if (now_ < c.deadline) continue;
    switch (c.phase) {
      case Phase::kIdle:
        Close(c);  // silent: nothing of a request came
        break;
      case Phase::kHead:
        SendError(c, 408, "request head not received in time", nullptr);
        AfterWork(c);
        break;
      case Phase::kBody:
        SendError(c, 408, "request body not received in time", &c.head);
        AfterWork(c);
        break;
      case Phase::kLinger:
        Close(c);
        break;
      case Phase::kRunning:
      case Phase::kStreaming:
      case Phase::kErrorReply:
        break;
    }
  }
}

void XmlrpcServer::Impl::Close(Connection& c) {
  if (c.dead) return;
  c.dead = true;
  // A call still running is cancelled: its async slot is released, a stream's producer
  // dropped, a running handler sees Call::cancelled().
  c.exchange.reset();
  if (c.is_linked()) c.unlink();
  close(c.fd);
  c.fd = -1;
  if (auto it = per_peer_.find(c.host); it != per_peer_.end() && --it->second <= 0) {
    per_peer_.erase(it);
  }
  --open_;
  active_.fetch_sub(1, std::memory_order_relaxed);
  dead_.push_back(c.key);
}

void XmlrpcServer::Impl::CloseAll() {
  for (auto& [key, owned] : connections_) Close(*owned);
  ReapDead();
}

void XmlrpcServer::Impl::ReapDead() {
  for (const uint64_t key : dead_) connections_.erase(key);
  dead_.clear();
}

void XmlrpcServer::Impl::Log(const Connection& c, const HttpRequestHead* head, int status,
                             size_t bytes) {
  if (access_log_fd_ < 0) return;
  const std::string request =
      head == nullptr ? std::string("-")
                      : absl::StrCat(head->method, " ", head->target, " ", head->version);
  const std::string line = absl::StrCat(c.host, " - - ", LogTime(wall_now_), " \"", request, "\" ",
                                        status, " ", bytes, "\n");
  // O_APPEND + one write() per line keeps lines whole; a failed log write is not worth
  // failing a request for.
  if (write(access_log_fd_, line.data(), line.size()) < 0) {
    spdlog::debug("mi_xmlrpc: access log write failed: {}", strerror(errno));
  }
}

XmlrpcServer::XmlrpcServer(int listen_fd, ServerOptions options, const XmlrpcProcessor& processor,
                           mi::Dispatcher& dispatcher)
    : impl_(std::make_unique<Impl>(active_, listen_fd, std::move(options), processor, dispatcher)) {
}

XmlrpcServer::~XmlrpcServer() = default;

absl::Status XmlrpcServer::Open() { return impl_->Open(); }

void XmlrpcServer::Run(const std::function<bool()>& should_stop,
                       const std::function<void()>& on_wakeup) {
  impl_->Run(should_stop, on_wakeup);
}

}  // namespace sipd::xmlrpc
