#include "sipd/core/tcp_receiver.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "sipd/core/tcp_main.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr uint64_t kChannelTag = 0;
constexpr uint64_t kWakeTag = ~0ull;
constexpr auto kTimerPeriod = std::chrono::milliseconds(250);
constexpr auto kMaxWait = std::chrono::milliseconds(200);

bool IsWildcard(const SipAddress& address) {
  if (address.empty()) return true;
  if (address.ipv6()) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(address.storage);
    return IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr);
  }
  return reinterpret_cast<const sockaddr_in&>(address.storage).sin_addr.s_addr == INADDR_ANY;
}

}  // namespace

struct TcpReceiver::Connection {
  Connection(uint64_t id, int fd, size_t max_message) : id(id), fd(fd), framer(max_message) {}
  uint64_t id;
  int fd;
  int socket = -1;
  SipAddress peer;
  SipStreamFramer framer;
  std::string out;
  size_t out_offset = 0;
  uint32_t events = 0;  // as registered with epoll
  bool connecting = false;
  bool reading = true;
  bool drain_then_close = false;
  bool closing = false;
  Clock::time_point last_activity{};
  Clock::time_point message_start{};  // {}: no partial message
  Clock::time_point stalled_since{};  // last write progress while output is pending
  Clock::time_point connect_start{};
};

TcpReceiver::TcpReceiver(TcpTransport& transport, int index, Hooks hooks)
    : transport_(transport),
      table_(transport.table()),
      index_(index),
      hooks_(std::move(hooks)),
      read_buffer_(new char[kReadChunk]) {}

TcpReceiver::~TcpReceiver() {
  transport_.SetLocalSender(index_, nullptr);
  for (auto& [id, c] : connections_) {
    close(c->fd);
    table_.Remove(id);
  }
  if (epoll_ >= 0) close(epoll_);
}

size_t TcpReceiver::Pending(const Connection& c) const { return c.out.size() - c.out_offset; }

absl::Status TcpReceiver::Run(Core& core) {
  std::vector<uint64_t> to_connect;
  const size_t reclaimed = table_.ReclaimOwner(index_, &to_connect);
  if (reclaimed > 0) {
    spdlog::warn("TCP receiver {}: dropped {} connection(s) of its previous process", index_,
                 reclaimed);
  }
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) {
    return absl::InternalError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kChannelTag;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, transport_.receiver_end(index_), &event);
  event.data.u64 = kWakeTag;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, transport_.wake_fd(index_), &event);
  transport_.SetLocalSender(index_, this);

  now_ = Clock::now();
  next_timer_check_ = now_ + kTimerPeriod;
  // Outbound connections queued for this receiver before it (re)started.
  for (uint64_t id : to_connect) StartConnect(id);
  ProcessWork();
  epoll_event events[64];
  while (!core.stopping()) {
    core.SyncLogLevel();
    const auto wait = std::min<Clock::duration>(
        kMaxWait, std::max<Clock::duration>(next_timer_check_ - now_, Clock::duration(0)));
    const int n = epoll_wait(
        epoll_, events, 64,
        static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(wait).count()) + 1);
    now_ = Clock::now();
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kChannelTag) {
        AdoptAll();
        continue;
      }
      if (tag == kWakeTag) {
        uint64_t count = 0;
        (void)!read(transport_.wake_fd(index_), &count, sizeof(count));
        ProcessWork();
        continue;
      }
      auto it = connections_.find(tag);
      if (it == connections_.end() || it->second->closing) continue;
      Connection& c = *it->second;
      const uint32_t what = events[i].events;
      if (c.connecting) {
        FinishConnect(c);
        continue;
      }
      if ((what & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0 && c.reading) ReadOnce(c);
      if (!c.closing && (what & EPOLLOUT) != 0) Flush(c);
      if (!c.closing && (what & EPOLLERR) != 0) Close(c, "socket error", false);
      if (!c.closing && (what & EPOLLHUP) != 0 && !c.reading) Close(c, "peer hung up", false);
    }
    if (now_ >= next_timer_check_) {
      CheckTimers();
      next_timer_check_ = now_ + kTimerPeriod;
    }
    CloseDeferred();
  }
  return absl::OkStatus();
}

void TcpReceiver::AdoptAll() {
  while (true) {
    uint64_t id = 0;
    const int fd = ReceiveDescriptor(transport_.receiver_end(index_), &id);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        spdlog::error("TCP receiver {}: bad hand-off message: {}", index_, std::strerror(errno));
        continue;
      }
      return;
    }
    TcpConnInfo info;
    if (!table_.Info(id, &info) || info.owner != index_ || info.state != TcpState::kInit) {
      close(fd);  // its slot was reclaimed meanwhile
      continue;
    }
    auto c = std::make_unique<Connection>(id, fd, transport_.options().max_message_size);
    c->socket = info.socket;
    c->peer = info.peer;
    Connection& conn = *c;
    connections_[id] = std::move(c);
    table_.Adopt(id);
    table_.SetState(id, TcpState::kOk);
    Touch(conn);
    UpdateEvents(conn);
    const size_t queued = table_.TakeInbox(id, &conn.out);
    if (queued > 0) Flush(conn);
    spdlog::debug("TCP receiver {}: connection {} from {}", index_, id, conn.peer.ToString());
  }
}

void TcpReceiver::ProcessWork() {
  for (uint64_t id : table_.TakeWork(index_)) {
    auto it = connections_.find(id);
    if (it == connections_.end()) {
      TcpConnInfo info;
      if (table_.Info(id, &info) && info.owner == index_ && info.state == TcpState::kConnecting) {
        StartConnect(id);
      }
      // kInit: the descriptor is still on its way; AdoptAll() takes the inbox.
      continue;
    }
    Connection& c = *it->second;
    if (c.closing) continue;
    const bool was_empty = Pending(c) == 0;
    if (table_.TakeInbox(id, &c.out) == 0) continue;
    if (was_empty) c.stalled_since = now_;
    if (!c.connecting) Flush(c);
    table_.SetOwnerQueued(id, Pending(c));
  }
}

void TcpReceiver::StartConnect(uint64_t id) {
  TcpConnInfo info;
  if (!table_.Info(id, &info)) return;
  const int fd = socket(info.peer.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (connections_.contains(id)) return;  // already started (listed twice)
  table_.Adopt(id);
  auto fail = [&](const char* what) {
    spdlog::warn("TCP connect to {} failed: {}: {}", info.peer.ToString(), what,
                 std::strerror(errno));
    if (fd >= 0) close(fd);
    table_.Remove(id);
  };
  if (fd < 0) return fail("socket");
  const int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  SipAddress local = transport_.ListenAddressOf(info.socket);
  if (!IsWildcard(local)) {
    // From the listen socket's IP (any port), so the peer sees the address in our Via.
    if (local.ipv6()) {
      reinterpret_cast<sockaddr_in6&>(local.storage).sin6_port = 0;
    } else {
      reinterpret_cast<sockaddr_in&>(local.storage).sin_port = 0;
    }
    if (bind(fd, local.sockaddr_ptr(), local.length) != 0) return fail("bind");
  }
  if (connect(fd, info.peer.sockaddr_ptr(), info.peer.length) != 0 && errno != EINPROGRESS) {
    return fail("connect");
  }
  auto c = std::make_unique<Connection>(id, fd, transport_.options().max_message_size);
  c->socket = info.socket;
  c->peer = info.peer;
  c->connecting = true;
  c->connect_start = now_;
  Connection& conn = *c;
  connections_[id] = std::move(c);
  Touch(conn);
  table_.TakeInbox(id, &conn.out);
  conn.stalled_since = now_;
  table_.SetOwnerQueued(id, Pending(conn));
  UpdateEvents(conn);
  spdlog::debug("TCP receiver {}: connecting {} to {}", index_, id, conn.peer.ToString());
}

void TcpReceiver::FinishConnect(Connection& c) {
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  if (error == EINPROGRESS || error == EALREADY) return;
  if (error != 0) {
    Close(c, absl::StrCat("connect failed: ", std::strerror(error)), true);
    return;
  }
  c.connecting = false;
  sockaddr_storage local{};
  socklen_t local_length = sizeof(local);
  getsockname(c.fd, reinterpret_cast<sockaddr*>(&local), &local_length);
  table_.SetLocal(c.id,
                  SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&local), local_length));
  table_.SetState(c.id, TcpState::kOk);
  Touch(c);
  UpdateEvents(c);
  Flush(c);
}

void TcpReceiver::ReadOnce(Connection& c) {
  const ssize_t n = read(c.fd, read_buffer_.get(), kReadChunk);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    Close(c, absl::StrCat("read: ", std::strerror(errno)), false);
    return;
  }
  if (n == 0) {
    if (c.framer.partial_bytes() > 0) {
      spdlog::info(
          "TCP connection {} from {} closed by the peer in the middle of a message ({} "
          "bytes dropped)",
          c.id, c.peer.ToString(), c.framer.partial_bytes());
    }
    if (Pending(c) > 0) {  // half-closed: deliver what we owe, then close
      c.reading = false;
      c.drain_then_close = true;
      UpdateEvents(c);
    } else {
      Close(c, "closed by the peer", false);
    }
    return;
  }
  Touch(c);
  c.framer.Append(std::string_view(read_buffer_.get(), static_cast<size_t>(n)));
  ProcessFrames(c);
}

void TcpReceiver::ProcessFrames(Connection& c) {
  while (!c.closing && !c.drain_then_close) {
    std::string_view message;
    const SipStreamFramer::Result result = c.framer.Next(&message);
    if (result == SipStreamFramer::Result::kNeedMore) break;
    if (result == SipStreamFramer::Result::kPing) {
      (void)SendLocal(c.id, "\r\n");  // RFC 5626 pong
      continue;
    }
    SipInbound inbound;
    inbound.bytes = message;
    inbound.source.proto = SipProto::kTcp;
    inbound.source.peer = c.peer;
    inbound.source.socket = c.socket;
    inbound.source.connection = c.id;
    if (result == SipStreamFramer::Result::kMessage) {
      c.message_start = {};
      if (hooks_.busy != nullptr) hooks_.busy->store(1, std::memory_order_relaxed);
      try {
        (*hooks_.handler)(inbound);
      } catch (const std::exception& e) {
        spdlog::error("SIP message from tcp:{} not handled: {}", c.peer.ToString(), e.what());
      }
      if (hooks_.busy != nullptr) hooks_.busy->store(0, std::memory_order_relaxed);
      continue;
    }
    const bool too_large = result == SipStreamFramer::Result::kTooLarge;
    spdlog::info("TCP connection {} from {}: {}; closing it", c.id, c.peer.ToString(),
                 too_large ? absl::StrCat("message larger than tcp_max_msg_size (",
                                          transport_.options().max_message_size, " bytes)")
                           : std::string("bad Content-Length"));
    if (!message.empty() && hooks_.reject) {
      hooks_.reject(inbound, too_large ? 513 : 400,
                    too_large ? "Message Too Large" : "Bad Content-Length");
    }
    c.reading = false;
    if (Pending(c) > 0) {
      c.drain_then_close = true;
      UpdateEvents(c);
    } else {
      Close(c, too_large ? "message too large" : "bad Content-Length", true);
    }
    return;
  }
  if (c.closing) return;
  if (c.framer.partial_bytes() == 0) {
    c.message_start = {};
  } else if (c.message_start == Clock::time_point{}) {
    c.message_start = now_;
  }
  // Backpressure: a peer that does not read its replies is not read either (and its
  // header timer stops meanwhile: the send timeout judges it now).
  if (c.reading && Pending(c) > transport_.options().max_send_queue / 2) {
    c.reading = false;
    c.message_start = {};
    UpdateEvents(c);
  }
}

absl::Status TcpReceiver::SendLocal(uint64_t id, std::string_view message) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return absl::NotFoundError("not a local connection");
  Connection& c = *it->second;
  if (c.closing || c.drain_then_close) {
    return absl::UnavailableError(absl::StrCat("TCP connection ", id, " is closing"));
  }
  const size_t pending = Pending(c);
  if (pending + message.size() > transport_.options().max_send_queue) {
    Close(c, "send queue full", true);
    return absl::ResourceExhaustedError(absl::StrCat("TCP send queue of connection ", id, " to ",
                                                     c.peer.ToString(), " is full (", pending,
                                                     " bytes queued)"));
  }
  size_t written = 0;
  if (pending == 0 && !c.connecting) {
    const ssize_t n = send(c.fd, message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      const int error = errno;
      Close(c, absl::StrCat("write: ", std::strerror(error)), false);
      return absl::UnavailableError(
          absl::StrCat("TCP send to ", c.peer.ToString(), ": ", std::strerror(error)));
    }
    if (n > 0) {
      written = static_cast<size_t>(n);
      Touch(c);
    }
    if (written == message.size()) return absl::OkStatus();
    c.stalled_since = now_;
  }
  c.out.append(message.data() + written, message.size() - written);
  table_.SetOwnerQueued(id, Pending(c));
  UpdateEvents(c);
  return absl::OkStatus();
}

void TcpReceiver::Flush(Connection& c) {
  if (c.connecting || c.closing) return;
  while (Pending(c) > 0) {
    const ssize_t n =
        send(c.fd, c.out.data() + c.out_offset, Pending(c), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      Close(c, absl::StrCat("write: ", std::strerror(errno)), false);
      return;
    }
    c.out_offset += static_cast<size_t>(n);
    c.stalled_since = now_;
    Touch(c);
  }
  if (Pending(c) == 0) {
    c.out.clear();
    c.out_offset = 0;
    if (c.drain_then_close) {
      Close(c, "drained before closing", false);
      return;
    }
  } else if (c.out_offset > 64 * 1024 && c.out_offset > c.out.size() / 2) {
    c.out.erase(0, c.out_offset);
    c.out_offset = 0;
  }
  table_.SetOwnerQueued(c.id, Pending(c));
  if (!c.reading && !c.drain_then_close && Pending(c) <= transport_.options().max_send_queue / 4) {
    c.reading = true;
    ProcessFrames(c);  // nothing complete is left behind, but keeps the rules in one place
  }
  UpdateEvents(c);
}

void TcpReceiver::UpdateEvents(Connection& c) {
  if (c.closing) return;
  uint32_t events = 0;
  if (c.reading && !c.connecting) events |= EPOLLIN | EPOLLRDHUP;
  if (c.connecting || Pending(c) > 0) events |= EPOLLOUT;
  if (events == c.events && c.events != 0) return;
  epoll_event event{};
  event.events = events;
  event.data.u64 = c.id;
  if (c.events == 0) {
    epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &event);
  } else {
    epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &event);
  }
  // A registered connection keeps a non-zero mask (EPOLLERR/HUP are always reported).
  c.events = events != 0 ? events : EPOLLERR;
}

void TcpReceiver::Touch(Connection& c) {
  c.last_activity = now_;
  table_.Touch(c.id, WallClockMs());
}

void TcpReceiver::Close(Connection& c, std::string_view reason, bool limit) {
  if (c.closing) return;
  c.closing = true;
  to_close_.push_back(c.id);
  table_.SetState(c.id, TcpState::kEof);
  if (limit) {
    spdlog::info("TCP connection {} with {} closed: {}", c.id, c.peer.ToString(),
                 std::string(reason));
  } else {
    spdlog::debug("TCP connection {} with {} closed: {}", c.id, c.peer.ToString(),
                  std::string(reason));
  }
}

void TcpReceiver::CloseDeferred() {
  for (uint64_t id : to_close_) {
    auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection& c = *it->second;
    if (c.events != 0) epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    table_.Remove(id);
    connections_.erase(it);
  }
  to_close_.clear();
}

void TcpReceiver::CheckTimers() {
  const TcpOptions& o = transport_.options();
  for (auto& [id, p] : connections_) {
    Connection& c = *p;
    if (c.closing) continue;
    if (c.connecting) {
      if (now_ - c.connect_start >= o.connect_timeout) Close(c, "connect timeout", true);
      continue;
    }
    if (c.message_start != Clock::time_point{} && now_ - c.message_start >= o.header_timeout) {
      Close(c,
            absl::StrCat("incomplete message (", c.framer.partial_bytes(), " bytes) after ",
                         o.header_timeout.count(), " ms (tcp_header_timeout)"),
            true);
      continue;
    }
    if (Pending(c) > 0 && now_ - c.stalled_since >= o.send_timeout) {
      Close(c,
            absl::StrCat("the peer took none of ", Pending(c), " queued bytes for ",
                         o.send_timeout.count(), " ms (tcp_send_timeout)"),
            true);
      continue;
    }
    if (now_ - c.last_activity >= o.connection_lifetime) {
      Close(c, "idle for tcp_connection_lifetime", false);
    }
  }
}

}  // namespace sipd
