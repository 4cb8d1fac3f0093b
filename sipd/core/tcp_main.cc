#include "sipd/core/tcp_main.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "spdlog/spdlog.h"

namespace sipd {

bool SendDescriptor(int channel, int fd, uint64_t id) {
  iovec payload{&id, sizeof(id)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &payload;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &fd, sizeof(int));
  while (true) {
    if (sendmsg(channel, &message, MSG_DONTWAIT | MSG_NOSIGNAL) == sizeof(id)) return true;
    if (errno != EINTR) return false;
  }
}

int ReceiveDescriptor(int channel, uint64_t* id) {
  *id = 0;
  iovec payload{id, sizeof(*id)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &payload;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(channel, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  int fd = -1;
  for (cmsghdr* h = CMSG_FIRSTHDR(&message); h != nullptr; h = CMSG_NXTHDR(&message, h)) {
    if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS) {
      std::memcpy(&fd, CMSG_DATA(h), sizeof(int));
    }
  }
  if (n != sizeof(*id)) {
    if (fd >= 0) close(fd);
    errno = EPROTO;
    return -1;
  }
  if (fd < 0) errno = EPROTO;
  return fd;
}

namespace {
// epoll tags: listen sockets are 0..n-1, receiver channels start here.
constexpr uint64_t kChannelTagBase = 1u << 20;
}  // namespace

TcpMain::~TcpMain() {
  for (auto& queue : pending_) {
    for (const Pending& p : queue) close(p.fd);
  }
  if (epoll_ >= 0) close(epoll_);
}

absl::Status TcpMain::Run(Core& core) {
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) return absl::InternalError(std::string("epoll_create1: ") + std::strerror(errno));
  const auto& listeners = transport_.listen_sockets();
  for (size_t i = 0; i < listeners.size(); ++i) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = i;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, listeners[i].fd, &event);
  }
  pending_.resize(static_cast<size_t>(transport_.receivers()));
  watching_.assign(static_cast<size_t>(transport_.receivers()), false);
  epoll_event events[16];
  while (!core.stopping()) {
    core.SyncLogLevel();
    const int n = epoll_wait(epoll_, events, 16, 200);
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag >= kChannelTagBase) {
        HandOver(static_cast<int>(tag - kChannelTagBase));
      } else {
        AcceptAll(listeners[tag]);
      }
    }
  }
  return absl::OkStatus();
}

void TcpMain::HandOver(int receiver) {
  std::deque<Pending>& queue = pending_[static_cast<size_t>(receiver)];
  const int channel = transport_.main_end(receiver);
  while (!queue.empty()) {
    const Pending p = queue.front();
    if (!SendDescriptor(channel, p.fd, p.id)) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;  // the channel is full: wait
      spdlog::error("cannot hand TCP connection {} to TCP receiver {}: {}", p.id, receiver,
                    std::strerror(errno));
      transport_.table().Remove(p.id);
    }
    close(p.fd);
    queue.pop_front();
  }
  const bool watch = !queue.empty();
  if (watch == watching_[static_cast<size_t>(receiver)]) return;
  epoll_event event{};
  event.events = EPOLLOUT;
  event.data.u64 = kChannelTagBase + static_cast<uint64_t>(receiver);
  epoll_ctl(epoll_, watch ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, channel, &event);
  watching_[static_cast<size_t>(receiver)] = watch;
}

void TcpMain::AcceptAll(const TcpTransport::ListenSocket& listener) {
  for (int round = 0; round < 64; ++round) {  // then let the other listeners have a turn
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof(peer);
    const int fd = accept4(listener.fd, reinterpret_cast<sockaddr*>(&peer), &peer_length,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        spdlog::error("accept on tcp:{} failed: {}", listener.address.ToString(),
                      std::strerror(errno));
      }
      return;
    }
    const int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    sockaddr_storage local{};
    socklen_t local_length = sizeof(local);
    getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length);
    const SipAddress peer_address =
        SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&peer), peer_length);
    absl::StatusOr<TcpConnTable::Added> added = transport_.table().AddAccepted(
        peer_address, SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&local), local_length),
        listener.socket);
    if (!added.ok()) {
      close(fd);
      const int64_t now = WallClockMs();
      if (now - last_full_log_ms_ >= 1000) {
        last_full_log_ms_ = now;
        spdlog::warn("TCP connection from {} refused: {}", peer_address.ToString(),
                     std::string(added.status().message()));
      }
      continue;
    }
    std::deque<Pending>& queue = pending_[static_cast<size_t>(added->owner)];
    if (queue.size() >= kMaxPending) {
      spdlog::error("TCP connection {} from {} dropped: {} connections wait for TCP receiver {}",
                    added->id, peer_address.ToString(), queue.size(), added->owner);
      transport_.table().Remove(added->id);
      close(fd);
      continue;
    }
    spdlog::debug("TCP connection {} from {} handed to receiver {}", added->id,
                  peer_address.ToString(), added->owner);
    queue.push_back(Pending{fd, added->id});
    HandOver(added->owner);
  }
}

}  // namespace sipd
