#include "legacy-transports/datagram/datagram_server.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "registry/dispatcher.h"
#include "registry/log_limit.h"
#include "registry/text_format.h"
#include "spdlog/spdlog.h"

namespace sipd::legacy {
namespace {

using Clock = std::chrono::steady_clock;

// Datagrams read from one socket per event-loop turn at most.
constexpr int kDatagramsPerTurn = 64;
constexpr int kPollIntervalMs = 200;
constexpr int kMaxEvents = 64;
// epoll tag of the dispatcher's wake descriptor; sockets use their index.
constexpr uint64_t kWakeTag = ~uint64_t{0};
constexpr std::string_view kUdpPrefix = "udp:";
// A reply buffer keeps at most this much memory between two replies (a call that waits
// takes the buffer along).
constexpr size_t kKeptWriterCapacity = 4096;

std::string Errno() { return std::strerror(errno); }

absl::StatusOr<DatagramSockets> CreateUdpSocket(const std::string& name, bool insecure) {
  const std::string_view spec = std::string_view(name).substr(kUdpPrefix.size());
  const size_t colon = spec.rfind(':');
  int port = 0;
  if (colon == std::string_view::npos ||
      std::from_chars(spec.data() + colon + 1, spec.data() + spec.size(), port).ptr !=
          spec.data() + spec.size() ||
      (port != 0 && port < 1024) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_datagram: socket_name '", name,
                     "': expected udp:HOST:PORT with PORT 1024..65535 (or 0: any free port)"));
  }
  std::string host(spec.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_datagram: socket_name '", name, "': ", gai_strerror(rc)));
  }
  DatagramSockets sockets;
  sockets.rx = socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sockets.rx < 0 || bind(sockets.rx, found->ai_addr, found->ai_addrlen) != 0) {
    const std::string why = Errno();
    freeaddrinfo(found);
    sockets.Close();
    return absl::FailedPreconditionError(
        absl::StrCat("mi_datagram: cannot bind ", name, ": ", why));
  }
  const bool loopback =
      (found->ai_family == AF_INET &&
       (ntohl(reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr.s_addr) >> 24) == 127) ||
      (found->ai_family == AF_INET6 &&
       IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr));
  freeaddrinfo(found);
  if (!loopback) {
    if (!insecure) {
      sockets.Close();
      return absl::FailedPreconditionError(absl::StrCat(
          "mi_datagram: ", name,
          " is not a loopback address: UDP datagrams carry no identity, so anyone who can "
          "reach it could run MI commands as udp_role; bind it to 127.0.0.1, or set "
          "modparam(\"mi_datagram\", \"insecure\", 1) to accept that"));
    }
    spdlog::critical(
        "mi_datagram: INSECURE: {} is not a loopback address and carries no identity: "
        "anyone who can reach it runs MI commands as the udp_role",
        name);
  }
  sockets.tx = sockets.rx;
  return sockets;
}

absl::StatusOr<DatagramSockets> CreateUnixSockets(const std::string& path,
                                                  const FileAccess& unix_access) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_datagram: socket_name '", path, "' is too long for a UNIX socket"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mi_datagram: socket_name '", path,
          S_ISLNK(st.st_mode) ? "' is a symbolic link" : "' exists and is not a socket",
          ": refusing to replace it"));
    }
    unlink(path.c_str());  // stale socket of an earlier run
  }
  DatagramSockets sockets;
  sockets.rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sockets.rx < 0) return absl::InternalError(absl::StrCat("mi_datagram: socket: ", Errno()));
  // Every datagram carries its sender's uid and pid (SCM_CREDENTIALS): set before the
  // socket can receive anything, so no datagram arrives without them.
  const int on = 1;
  if (setsockopt(sockets.rx, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) != 0) {
    spdlog::warn("mi_datagram: SO_PASSCRED on {}: {}: callers' uid unknown", path, Errno());
  }
  // The socket file is created by bind() with the umask: keep it private until chmod.
  const mode_t old_umask = umask(0177);
  const int bound = bind(sockets.rx, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const std::string why = Errno();
  umask(old_umask);
  if (bound != 0) {
    sockets.Close();
    return absl::FailedPreconditionError(
        absl::StrCat("mi_datagram: cannot bind ", path, ": ", why));
  }
  sockets.unix_path = path;
  if (absl::Status status = ApplyAccessToPath(path, unix_access); !status.ok()) {
    sockets.Close();
    return status;
  }
  // Replies leave from a separate unbound socket (spec 4.1).
  sockets.tx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sockets.tx < 0) {
    sockets.Close();
    return absl::InternalError(absl::StrCat("mi_datagram: socket: ", Errno()));
  }
  return sockets;
}

}  // namespace

void DatagramSockets::Close() {
  if (tx >= 0 && tx != rx) close(tx);
  if (rx >= 0) close(rx);
  rx = tx = -1;
  if (!unix_path.empty()) {
    struct stat st;
    if (lstat(unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(unix_path.c_str());
    unix_path.clear();
  }
}

absl::StatusOr<DatagramSockets> CreateDatagramSockets(const std::string& socket_name, bool insecure,
                                                      const FileAccess& unix_access) {
  if (socket_name.empty()) {
    return absl::InvalidArgumentError("mi_datagram: parameter 'socket_name' is mandatory");
  }
  if (socket_name.compare(0, kUdpPrefix.size(), kUdpPrefix) == 0) {
    return CreateUdpSocket(socket_name, insecure);
  }
  return CreateUnixSockets(socket_name, unix_access);
}

std::string BoundAddress(const DatagramSockets& sockets) {
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (getsockname(sockets.rx, reinterpret_cast<sockaddr*>(&bound), &length) != 0) return "";
  char host[INET6_ADDRSTRLEN] = "";
  if (bound.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&bound);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
    return absl::StrCat(host, ":", ntohs(v4->sin_port));
  }
  if (bound.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&bound);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
    return absl::StrCat("[", host, "]:", ntohs(v6->sin6_port));
  }
  return "";
}

absl::StatusOr<std::vector<DatagramSockets>> CreateDatagramSockets(const DatagramConfig& config) {
  std::vector<DatagramSockets> all;
  std::vector<std::string> names = {config.socket_name};
  names.insert(names.end(), config.extra_socket_names.begin(), config.extra_socket_names.end());
  for (const std::string& name : names) {
    absl::StatusOr<DatagramSockets> sockets =
        CreateDatagramSockets(name, config.insecure, config.unix_access);
    if (!sockets.ok()) {
      for (DatagramSockets& created : all) created.Close();
      return sockets.status();
    }
    all.push_back(std::move(*sockets));
  }
  return all;
}

DatagramReplyWriter::DatagramReplyWriter(std::string indent, size_t max_size)
    : indent_(std::move(indent)), max_size_(max_size) {}

void DatagramReplyWriter::Begin() {
  buffer_.clear();
  if (buffer_.capacity() > kKeptWriterCapacity) buffer_.shrink_to_fit();
  too_large_ = false;
}

void DatagramReplyWriter::WriteStatus(const mi::Reply& reply) {
  if (too_large_) return;
  mi::AppendStatusLine(buffer_, reply.code, reply.text_reason());
  CheckSize();
}

void DatagramReplyWriter::WriteNode(const mi::Node& node, int depth) {
  if (too_large_) return;
  mi::AppendNodeLine(buffer_, node, depth, indent_);
  CheckSize();
}

void DatagramReplyWriter::CheckSize() {
  if (buffer_.size() <= max_size_) return;
  too_large_ = true;
  buffer_.clear();
  buffer_.shrink_to_fit();
}

// A call that did not finish at once: whom to answer, from which socket, and its own
// reply buffer (the dispatcher writes the reply into it when the call is ready).
struct DatagramServer::Waiting {
  std::unique_ptr<mi::Exchange> exchange;
  std::unique_ptr<DatagramReplyWriter> writer;
  size_t index = 0;
  sockaddr_storage peer{};
  socklen_t peer_len = 0;
};

DatagramServer::DatagramServer(const DatagramConfig& config, mi::Dispatcher& dispatcher,
                               const std::vector<DatagramSockets>& sockets,
                               mi::Counter dropped_replies)
    : config_(config),
      dispatcher_(dispatcher),
      sockets_(sockets),
      dropped_(dropped_replies),
      writer_(std::make_unique<DatagramReplyWriter>(config.reply_indent, kDatagramMaxSize)) {
  input_.resize(kDatagramMaxSize);
  for (const DatagramSockets& socket : sockets_) {
    tx_.push_back(socket.tx);
    own_tx_.push_back(false);
    sockaddr_storage bound{};
    bound.ss_family = AF_UNSPEC;
    socklen_t length = sizeof(bound);
    if (socket.unix_path.empty() &&
        getsockname(socket.rx, reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
      bound.ss_family = AF_UNSPEC;
    }
    if (!socket.unix_path.empty()) bound.ss_family = AF_UNSPEC;
    own_addresses_.push_back(bound);
  }
}

bool ErrorReplyBudget::Allow(Clock::time_point now) {
  if (last_ != Clock::time_point{} && now > last_) {
    tokens_ =
        std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
  }
  if (last_ == Clock::time_point{} || now > last_) last_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

bool DatagramServer::FromOwnSocket(const sockaddr_storage& from) const {
  for (const sockaddr_storage& own : own_addresses_) {
    if (own.ss_family != from.ss_family) continue;
    if (own.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&own);
      const auto* b = reinterpret_cast<const sockaddr_in*>(&from);
      // A wildcard-bound socket is reachable at every local address: the port decides.
      if (a->sin_port == b->sin_port &&
          (a->sin_addr.s_addr == INADDR_ANY || a->sin_addr.s_addr == b->sin_addr.s_addr)) {
        return true;
      }
    } else if (own.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&own);
      const auto* b = reinterpret_cast<const sockaddr_in6*>(&from);
      if (a->sin6_port == b->sin6_port &&
          (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) ||
           std::memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(in6_addr)) == 0)) {
        return true;
      }
    }
  }
  return false;
}

DatagramServer::~DatagramServer() {
  waiting_.clear();  // cancels what still waits
  for (size_t i = 0; i < tx_.size(); ++i) {
    if (own_tx_[i]) close(tx_[i]);
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

absl::Status DatagramServer::Setup() {
  if (epoll_fd_ >= 0) return absl::OkStatus();
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return absl::InternalError(absl::StrCat("mi_datagram: epoll: ", Errno()));
  for (size_t i = 0; i < sockets_.size(); ++i) {
    epoll_event event{.events = EPOLLIN, .data = {.u64 = i}};
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, sockets_[i].rx, &event) != 0) {
      return absl::InternalError(absl::StrCat("mi_datagram: epoll_ctl: ", Errno()));
    }
    if (!sockets_[i].unix_path.empty()) {
      socklen_t len = sizeof(send_buffer_);
      getsockopt(sockets_[i].tx, SOL_SOCKET, SO_SNDBUF, &send_buffer_, &len);
    }
  }
  epoll_event wake{.events = EPOLLIN, .data = {.u64 = kWakeTag}};
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, dispatcher_.wake_fd(), &wake) != 0) {
    return absl::InternalError(absl::StrCat("mi_datagram: epoll_ctl: ", Errno()));
  }
  return absl::OkStatus();
}

absl::Status DatagramServer::Run(const std::function<bool()>& stopping,
                                 const std::function<void()>& on_wakeup) {
  if (absl::Status status = Setup(); !status.ok()) return status;
  epoll_event events[kMaxEvents];
  while (!stopping()) {
    int timeout = kPollIntervalMs;
    const Clock::time_point deadline = dispatcher_.NextDeadline();
    if (deadline != Clock::time_point::max()) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      timeout = static_cast<int>(std::clamp<int64_t>(left, 0, kPollIntervalMs));
    }
    const int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout);
    on_wakeup();
    if (n < 0 && errno != EINTR) {
      const std::string why = Errno();
      waiting_.clear();
      waiting_count_.store(0, std::memory_order_relaxed);
      return absl::InternalError(absl::StrCat("mi_datagram: epoll_wait: ", why));
    }
    bool wake = false;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 == kWakeTag) {
        wake = true;
      } else {
        // Drain a burst per wake-up (bounded, so the other sockets and the completions
        // get their turn): one epoll_wait per datagram cannot keep up with a flood.
        for (int k = 0;
             k < kDatagramsPerTurn && ReceiveOne(static_cast<size_t>(events[i].data.u64)); ++k) {
        }
      }
    }
    if (wake || (deadline != Clock::time_point::max() && deadline <= Clock::now())) {
      dispatcher_.RunCompletions();
      OnReady();
    }
  }
  waiting_.clear();
  waiting_count_.store(0, std::memory_order_relaxed);
  return absl::OkStatus();
}

bool DatagramServer::ReceiveOne(size_t index) {
  const DatagramSockets& sockets = sockets_[index];
  const bool is_unix = !sockets.unix_path.empty();
  sockaddr_storage from{};
  iovec iov{input_.data(), input_.size()};
  msghdr msg{};
  msg.msg_name = &from;
  msg.msg_namelen = sizeof(from);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (is_unix) {
    msg.msg_control = control_;
    msg.msg_controllen = sizeof(control_);
  }
  // MSG_TRUNC: the real size of a datagram larger than the buffer. Other children may
  // have taken the datagram already (EAGAIN).
  const ssize_t n = recvmsg(sockets.rx, &msg, MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) spdlog::error("recvmsg: {}", Errno());
    return false;
  }
  const socklen_t from_len = msg.msg_namelen;
  mi::Peer peer;
  if (is_unix) {
    peer.local = true;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred credentials;
        std::memcpy(&credentials, CMSG_DATA(c), sizeof(credentials));
        peer.uid = credentials.uid;
        peer.pid = credentials.pid;
      }
    }
    const auto* address = reinterpret_cast<const sockaddr_un*>(&from);
    if (from_len > offsetof(sockaddr_un, sun_path) && address->sun_path[0] != '\0') {
      peer.address.assign(address->sun_path,
                          strnlen(address->sun_path, from_len - offsetof(sockaddr_un, sun_path)));
    }
  } else {
    // A datagram "from" our own socket (a forged source address) would be answered to
    // ourselves, and that answer again, forever: never answer it.
    if (FromOwnSocket(from)) {
      ignored_own_.fetch_add(1, std::memory_order_relaxed);
      SIPD_LOG_LIMITED(spdlog::level::warn,
                       "mi_datagram: ignored a datagram whose source is sipd's own MI socket "
                       "(forged source address)");
      return true;
    }
    if (from.ss_family == AF_INET) {
      // (inet_ntop formats IPv4 with sprintf: a visible cost per request.)
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&from);
      const auto* b = reinterpret_cast<const uint8_t*>(&v4->sin_addr);
      peer.address = absl::StrCat(b[0], ".", b[1], ".", b[2], ".", b[3], ":", ntohs(v4->sin_port));
      peer.local = b[0] == 127;
    } else if (from.ss_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&from);
      char host[INET6_ADDRSTRLEN] = "?";
      inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
      peer.address = absl::StrCat("[", host, "]:", ntohs(v6->sin6_port));
      peer.local = mi::IsLoopbackHost(host);
    }
    // No identity is possible over UDP: the configured role (mi_datagram udp_role).
    peer.role = config_.udp_role;
  }
  const size_t real_size = static_cast<size_t>(n);
  const std::string_view reply =
      Handle(std::string_view(input_.data(), std::min(real_size, input_.size())), real_size,
             std::move(peer), index, from, from_len);
  if (reply.empty()) return true;  // the call waits
  if (is_unix && from_len <= offsetof(sockaddr_un, sun_path)) {
    SIPD_LOG_LIMITED(spdlog::level::warn, "request from an unbound UNIX socket: no reply possible");
    return true;
  }
  const bool error =
      reply.data() == kDatagramNotAvailable.data() || reply.data() == kDatagramParseError.data() ||
      reply.data() == kDatagramFailed.data() || reply.data() == kDatagramTooLarge.data();
  if (error && !error_budget_.Allow(ErrorReplyBudget::Clock::now())) {
    unsent_errors_.fetch_add(1, std::memory_order_relaxed);
    SIPD_LOG_LIMITED(spdlog::level::warn,
                     "mi_datagram: more than {} error replies per second: error replies dropped",
                     kErrorRepliesPerSecond);
    return true;
  }
  SendReply(index, reply, from, from_len);
  return true;
}

std::string DatagramServer::FeedForFuzzing(std::string_view datagram) {
  mi::Peer peer;
  peer.local = true;
  sockaddr_storage from{};
  from.ss_family = AF_UNIX;
  const size_t size = std::min(datagram.size(), input_.size());
  std::memcpy(input_.data(), datagram.data(), size);
  return std::string(Handle(std::string_view(input_.data(), size), datagram.size(), std::move(peer),
                            0, from, sizeof(sa_family_t)));
}

std::string_view DatagramServer::Handle(std::string_view datagram, size_t real_size, mi::Peer peer,
                                        size_t index, const sockaddr_storage& from,
                                        socklen_t from_len) {
  if (real_size > datagram.size() || datagram.size() > kDatagramMaxSize) {
    SIPD_LOG_LIMITED(spdlog::level::warn, "request of {} bytes exceeds {} bytes", real_size,
                     kDatagramMaxSize);
    return kDatagramParseError;
  }
  // First line: exactly `:command:` and LF (CRLF accepted).
  const size_t colon =
      datagram.size() > 2 && datagram[0] == ':' ? datagram.find(':', 1) : std::string_view::npos;
  if (colon == std::string_view::npos || colon == 1) return kDatagramNotAvailable;
  size_t body = colon + 1;
  if (body < datagram.size() && datagram[body] == '\r') ++body;
  if (body >= datagram.size() || datagram[body] != '\n') return kDatagramNotAvailable;
  mi::Request request;
  request.command.assign(datagram.substr(1, colon - 1));
  request.args_error = parser_.ParseAll(datagram.substr(body + 1), &request.args);
  mi::CallContext context;
  context.transport = sockets_[index].unix_path.empty() ? mi::Transport::kDatagramUdp
                                                        : mi::Transport::kDatagramUnix;
  context.peer = std::move(peer);
  context.can_wait_async = true;
  writer_->Begin();
  const uint64_t id = next_id_++;
  std::unique_ptr<mi::Exchange> exchange =
      dispatcher_.Start(std::move(context), std::move(request), mi::Delivery::kWriter,
                        writer_.get(), [this, id] { ready_.push_back(id); });
  if (exchange->ready()) return Payload(*exchange, *writer_);
  // It waits: it keeps this reply buffer; the next request gets a new one.
  auto waiting = std::make_unique<Waiting>();
  waiting->exchange = std::move(exchange);
  waiting->writer = std::move(writer_);
  waiting->index = index;
  waiting->peer = from;
  waiting->peer_len = from_len;
  waiting_.emplace(id, std::move(waiting));
  waiting_count_.store(waiting_.size(), std::memory_order_relaxed);
  writer_ = std::make_unique<DatagramReplyWriter>(config_.reply_indent, kDatagramMaxSize);
  return {};
}

std::string_view DatagramServer::Payload(mi::Exchange& exchange,
                                         const DatagramReplyWriter& writer) {
  switch (exchange.outcome()) {
    case mi::Outcome::kNotAvailable:
      return kDatagramNotAvailable;
    case mi::Outcome::kParseError:
      return kDatagramParseError;
    case mi::Outcome::kFailed:
      return kDatagramFailed;
    case mi::Outcome::kReply:
      break;
  }
  if (writer.too_large()) {
    spdlog::warn("reply of command '{}' exceeds {} bytes", exchange.command_name(),
                 kDatagramMaxSize);
    return kDatagramTooLarge;
  }
  return writer.payload();
}

void DatagramServer::OnReady() {
  if (ready_.empty()) return;
  std::vector<uint64_t> ready;
  ready.swap(ready_);
  for (const uint64_t id : ready) {
    auto it = waiting_.find(id);
    if (it == waiting_.end()) continue;
    Waiting& waiting = *it->second;
    const std::string_view payload = Payload(*waiting.exchange, *waiting.writer);
    const bool is_unix = !sockets_[waiting.index].unix_path.empty();
    if (is_unix && waiting.peer_len <= offsetof(sockaddr_un, sun_path)) {
      spdlog::warn("reply to an unbound UNIX socket is not possible");
    } else {
      SendReply(waiting.index, payload, waiting.peer, waiting.peer_len);
    }
    waiting_.erase(it);
  }
  waiting_count_.store(waiting_.size(), std::memory_order_relaxed);
}

void DatagramServer::SendReply(size_t index, std::string_view payload, const sockaddr_storage& to,
                               socklen_t to_len) {
  const auto send = [&](int fd) {
    ssize_t n;
    do {
      n = sendto(fd, payload.data(), payload.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&to), to_len);
    } while (n < 0 && errno == EINTR);
    return n >= 0;
  };
  if (send(tx_[index])) return;
  if (errno != EAGAIN && errno != ENOBUFS) {
    SIPD_LOG_LIMITED(spdlog::level::warn, "cannot send reply: {}", Errno());
    return;
  }
  if (!sockets_[index].unix_path.empty()) {
    // Full queue at the client, or our own send buffer full of replies that clients who
    // never read hold: the latter would silence everyone, so answer from a fresh socket.
    int queued = 0;
    if (ioctl(tx_[index], SIOCOUTQ, &queued) == 0 &&
        static_cast<size_t>(queued) + payload.size() + 4096 >= static_cast<size_t>(send_buffer_)) {
      const int fresh = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fresh >= 0) {
        spdlog::debug("reply socket full of unread replies ({} bytes): a new one", queued);
        if (own_tx_[index]) close(tx_[index]);
        tx_[index] = fresh;
        own_tx_[index] = true;
        if (send(fresh)) return;
      }
    }
  }
  Drop(errno == ENOBUFS ? "no buffer space" : "the client's queue is full");
}

void DatagramServer::Drop(std::string_view why) {
  dropped_local_.fetch_add(1, std::memory_order_relaxed);
  if (dropped_.valid()) dropped_.Inc();
  spdlog::debug("reply dropped: {}", why);
}

}  // namespace sipd::legacy
