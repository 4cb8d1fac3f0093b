#include "sipd/core/tcp_transport.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "sipd/core/proc_net.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

constexpr int kListenBacklog = 1024;
constexpr int kTcpListenState = 0x0A;

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

bool IsWildcard(const SipAddress& address) {
  if (address.ipv6()) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(address.storage);
    return IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr);
  }
  return reinterpret_cast<const sockaddr_in&>(address.storage).sin_addr.s_addr == INADDR_ANY;
}

}  // namespace

TcpOptions TcpOptions::FromConfig(const Config& config) {
  TcpOptions o;
  o.receivers = config.tcp.children > 0 ? config.tcp.children : config.children;
  o.max_connections = static_cast<size_t>(config.tcp.max_connections);
  o.connection_lifetime = std::chrono::seconds(config.tcp.connection_lifetime_s);
  o.max_message_size = static_cast<size_t>(config.tcp.max_msg_size);
  o.header_timeout = std::chrono::seconds(config.tcp.header_timeout_s);
  o.connect_timeout = std::chrono::milliseconds(config.tcp.connect_timeout_ms);
  o.send_timeout = std::chrono::milliseconds(config.tcp.send_timeout_ms);
  o.max_send_queue = static_cast<size_t>(config.tcp.max_send_queue);
  return o;
}

absl::StatusOr<std::unique_ptr<TcpTransport>> TcpTransport::Create(SharedMemory& shm,
                                                                   TcpOptions options) {
  if (options.receivers <= 0) return absl::InvalidArgumentError("tcp_children must be positive");
  std::unique_ptr<TcpTransport> transport(new TcpTransport());
  transport->options_ = options;
  absl::StatusOr<TcpConnTable*> table = TcpConnTable::Create(
      shm, TcpConnTable::Limits{.capacity = options.max_connections, .owners = options.receivers});
  if (!table.ok()) return table.status();
  transport->table_ = *table;
  return transport;
}

TcpTransport::~TcpTransport() {
  for (ListenSocket& l : listen_) CloseFd(l.fd);
  for (Channel& c : channels_) {
    CloseFd(c.main);
    CloseFd(c.receiver);
  }
  for (int& fd : wake_fds_) CloseFd(fd);
  delete table_;  // the process-local handle; the shared memory goes with the heap
}

absl::StatusOr<SipAddress> TcpTransport::Listen(int socket, const ListenAddress& address) {
  absl::StatusOr<SipAddress> wanted = SipAddress::FromIpPort(address.ip, address.port);
  if (!wanted.ok()) return wanted.status();
  const int fd = ::socket(wanted->storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create a TCP socket for ", address.ToString(),
                                            ": ", std::strerror(errno)));
  }
  const int on = 1;
  if (wanted->ipv6()) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
  // Lets a restarted sipd bind while old connections linger in TIME_WAIT; a live
  // listener on the port still makes bind() fail (Linux), so start-up errors stay loud.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (bind(fd, wanted->sockaddr_ptr(), wanted->length) != 0 || listen(fd, kListenBacklog) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot bind ", address.ToString(), ": ", std::strerror(error)));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  ListenSocket l;
  l.socket = socket;
  l.fd = fd;
  l.address = SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&bound), length);
  listen_.push_back(l);
  return l.address;
}

absl::Status TcpTransport::Finish() {
  for (int i = 0; i < options_.receivers; ++i) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
      return absl::InternalError(absl::StrCat("socketpair: ", std::strerror(errno)));
    }
    channels_.push_back(Channel{pair[0], pair[1]});
    const int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
    wake_fds_.push_back(wake);
  }
  return absl::OkStatus();
}

void TcpTransport::EnterProcess(Role role, int receiver) {
  if (role != Role::kTcpMain) {
    for (ListenSocket& l : listen_) CloseFd(l.fd);
    for (Channel& c : channels_) CloseFd(c.main);
  }
  for (size_t i = 0; i < channels_.size(); ++i) {
    if (role != Role::kTcpReceiver || static_cast<int>(i) != receiver) {
      CloseFd(channels_[i].receiver);
    }
  }
}

std::vector<int> TcpTransport::Descriptors() const {
  std::vector<int> fds(wake_fds_.begin(), wake_fds_.end());
  for (const ListenSocket& l : listen_) fds.push_back(l.fd);
  for (const Channel& c : channels_) {
    fds.push_back(c.main);
    fds.push_back(c.receiver);
  }
  return fds;
}

void TcpTransport::SetLocalSender(int index, TcpLocalSender* sender) {
  local_index_ = sender != nullptr ? index : -1;
  local_sender_ = sender;
}

SipAddress TcpTransport::ListenAddressOf(int socket) const {
  for (const ListenSocket& l : listen_) {
    if (l.socket == socket) return l.address;
  }
  return SipAddress();
}

void TcpTransport::Wake(int receiver) const {
  if (receiver < 0 || static_cast<size_t>(receiver) >= wake_fds_.size()) return;
  const uint64_t one = 1;
  // EAGAIN means the counter is already huge: the receiver will wake anyway.
  (void)!write(wake_fds_[static_cast<size_t>(receiver)], &one, sizeof(one));
}

absl::Status TcpTransport::Send(const SipDestination& destination, int connect_socket,
                                std::string_view message) {
  uint64_t id = destination.connection;
  int owner = -1;
  TcpState state = TcpState::kEof;
  if (id != 0 && (!table_->Lookup(id, &owner, &state) || state == TcpState::kEof)) id = 0;
  if (local_sender_ != nullptr) {
    const uint64_t candidate = id != 0 ? id : table_->FindByPeer(destination.address);
    if (candidate != 0 && table_->Lookup(candidate, &owner, &state) && owner == local_index_) {
      absl::Status sent = local_sender_->SendLocal(candidate, message);
      if (!absl::IsNotFound(sent)) return sent;
    }
  }
  absl::StatusOr<TcpConnTable::Queued> queued =
      table_->Enqueue(id, destination.address, destination.allow_connect ? connect_socket : -1,
                      message, options_.max_send_queue);
  if (!queued.ok()) return queued.status();
  if (queued->wake || queued->owner == local_index_) Wake(queued->owner);
  return absl::OkStatus();
}

uint64_t TcpTransport::WaitingBytes() const {
  uint64_t total = table_->QueuedBytes();
  auto add = [this, &total](const ProcNetSocket& s) {
    if (s.state == kTcpListenState || s.rx_queue == 0) return;
    for (const ListenSocket& l : listen_) {
      if (l.address.port() != s.local.port() ||
          l.address.storage.ss_family != s.local.storage.ss_family) {
        continue;
      }
      if (IsWildcard(l.address) || l.address == s.local) {
        total += s.rx_queue;
        return;
      }
    }
  };
  ForEachProcNetSocket("/proc/net/tcp", false, add);
  ForEachProcNetSocket("/proc/net/tcp6", true, add);
  return total;
}

}  // namespace sipd
