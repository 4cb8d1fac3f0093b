#include "sipd/core/sip_transport_impl.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "sipd/core/proc_net.h"
#include "spdlog/spdlog.h"

namespace sipd {

absl::StatusOr<std::unique_ptr<SipTransportImpl>> SipTransportImpl::Open(
    const std::vector<ListenAddress>& addresses, const Options& options) {
  std::unique_ptr<SipTransportImpl> transport(new SipTransportImpl());
  // Port 0 ("any free port") on several listen lines of one IP (udp and tcp): they share
  // the port the first one got when it is free for the others too, as SIP expects one
  // port number per address; otherwise each keeps its own.
  std::map<std::string, uint16_t> any_port;
  for (const ListenAddress& requested : addresses) {
    ListenAddress address = requested;
    bool shared_port = false;
    if (requested.port == 0) {
      auto it = any_port.find(requested.ip);
      if (it != any_port.end()) {
        address.port = it->second;
        shared_port = true;
      }
    }
    auto open = [&]() -> absl::Status { return OpenOne(*transport, address, options); };
    absl::Status opened = open();
    if (!opened.ok() && shared_port) {
      address.port = 0;  // taken for this protocol: any other port
      opened = open();
    }
    if (!opened.ok()) return opened;
    if (requested.port == 0 && !any_port.contains(requested.ip)) {
      any_port[requested.ip] = transport->sockets_.back().address.port();
    }
  }
  if (transport->tcp_ != nullptr) {
    absl::Status finished = transport->tcp_->Finish();
    if (!finished.ok()) return finished;
  }
  return transport;
}

absl::Status SipTransportImpl::OpenOne(SipTransportImpl& transport, const ListenAddress& address,
                                       const Options& options) {
  {
    if (address.proto == SipProto::kTcp) {
      if (transport.tcp_ == nullptr) {
        if (options.shm == nullptr) {
          return absl::FailedPreconditionError("TCP listen sockets need shared memory");
        }
        absl::StatusOr<std::unique_ptr<TcpTransport>> tcp =
            TcpTransport::Create(*options.shm, options.tcp);
        if (!tcp.ok()) return tcp.status();
        transport.tcp_ = *std::move(tcp);
      }
      const int index = static_cast<int>(transport.sockets_.size());
      absl::StatusOr<SipAddress> bound = transport.tcp_->Listen(index, address);
      if (!bound.ok()) return bound.status();
      ListenAddress actual = address;
      actual.port = bound->port();
      transport.sockets_.push_back(SipSocket{SipProto::kTcp, *bound, actual.ToString()});
      transport.udp_.push_back(nullptr);
      return absl::OkStatus();
    }
    absl::StatusOr<std::unique_ptr<UdpListener>> listener =
        UdpListener::Open(address, options.max_buffer);
    if (!listener.ok()) return listener.status();
    SipSocket socket;
    socket.proto = SipProto::kUdp;
    socket.name = (*listener)->name();
    absl::StatusOr<SipAddress> bound = SipAddress::FromIpPort(address.ip, (*listener)->port());
    if (!bound.ok()) return bound.status();
    socket.address = *bound;
    transport.sockets_.push_back(std::move(socket));
    transport.udp_.push_back(*std::move(listener));
    return absl::OkStatus();
  }
}

SipTransportImpl::~SipTransportImpl() = default;

const UdpListener* SipTransportImpl::udp(int index) const {
  if (index < 0 || static_cast<size_t>(index) >= udp_.size()) return nullptr;
  return udp_[static_cast<size_t>(index)].get();
}

uint64_t SipTransportImpl::UdpReceiveBacklog() const {
  uint64_t total = 0;
  auto add = [this, &total](const ProcNetSocket& socket) {
    if (socket.rx_queue == 0) return;
    for (const auto& l : udp_) {
      if (l != nullptr && l->inode() == socket.inode) {
        total += socket.rx_queue;
        return;
      }
    }
  };
  ForEachProcNetSocket("/proc/net/udp", false, add);
  ForEachProcNetSocket("/proc/net/udp6", true, add);
  return total;
}

absl::Status SipTransportImpl::Send(const SipDestination& destination, std::string_view message) {
  if (message.empty()) return absl::InvalidArgumentError("empty SIP message");
  if (destination.address.empty()) return absl::InvalidArgumentError("no destination address");
  if (destination.socket >= static_cast<int>(sockets_.size())) {
    return absl::InvalidArgumentError(absl::StrCat("no listen socket ", destination.socket));
  }
  switch (destination.proto) {
    case SipProto::kUdp:
      return SendUdp(destination, message);
    case SipProto::kTcp:
      return SendTcp(destination, message);
  }
  return absl::InvalidArgumentError("unknown protocol");
}

std::vector<SipConnectionInfo> SipTransportImpl::Connections() const {
  std::vector<SipConnectionInfo> out;
  if (tcp_ == nullptr) return out;
  const int64_t lifetime_ms = tcp_->options().connection_lifetime.count();
  for (const TcpConnInfo& c : tcp_->table().Snapshot()) {
    SipConnectionInfo info;
    info.id = c.id;
    info.proto = SipProto::kTcp;
    info.state = static_cast<int>(c.state);
    info.peer = c.peer;
    info.local = c.local.empty() ? tcp_->ListenAddressOf(c.socket) : c.local;
    info.expires = static_cast<std::time_t>((c.last_activity_ms + lifetime_ms) / 1000);
    info.queued_bytes = c.queued_bytes;
    out.push_back(std::move(info));
  }
  return out;
}

absl::Status SipTransportImpl::SendTcp(const SipDestination& destination,
                                       std::string_view message) {
  int socket = destination.socket;
  if (socket >= 0) {
    if (sockets_[static_cast<size_t>(socket)].proto != SipProto::kTcp) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen socket ", socket, " is not a TCP socket"));
    }
  } else {
    for (size_t i = 0; i < sockets_.size() && socket < 0; ++i) {
      if (sockets_[i].proto == SipProto::kTcp &&
          sockets_[i].address.storage.ss_family == destination.address.storage.ss_family) {
        socket = static_cast<int>(i);
      }
    }
  }
  if (tcp_ == nullptr || socket < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no tcp listen socket for ", destination.address.ipv6() ? "IPv6" : "IPv4"));
  }
  return tcp_->Send(destination, socket, message);
}

absl::StatusOr<const UdpListener*> SipTransportImpl::UdpListenerFor(
    const SipDestination& destination) const {
  if (destination.socket >= 0) {
    const UdpListener* listener = udp(destination.socket);
    if (listener == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen socket ", destination.socket, " is not a UDP socket"));
    }
    return listener;
  }
  for (size_t i = 0; i < sockets_.size(); ++i) {
    if (udp_[i] != nullptr &&
        sockets_[i].address.storage.ss_family == destination.address.storage.ss_family) {
      return udp_[i].get();
    }
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no udp listen socket for ", destination.address.ipv6() ? "IPv6" : "IPv4"));
}

absl::Status SipTransportImpl::SendUdp(const SipDestination& destination,
                                       std::string_view message) {
  absl::StatusOr<const UdpListener*> listener = UdpListenerFor(destination);
  if (!listener.ok()) return listener.status();
  const ssize_t sent = sendto((*listener)->fd(), message.data(), message.size(), MSG_DONTWAIT,
                              destination.address.sockaddr_ptr(), destination.address.length);
  if (sent < 0) {
    return absl::UnavailableError(absl::StrCat("sendto ", destination.address.ToString(), " from ",
                                               (*listener)->name(), ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

size_t SipTransportImpl::SendBatch(std::span<const SipOutbound> messages) {
  // The UDP listener `m` leaves from; nullptr when Send() takes it alone (TCP, or a
  // message Send() refuses and says why).
  auto batched_from = [this](const SipOutbound& m) -> const UdpListener* {
    if (m.destination.proto != SipProto::kUdp || m.message.empty() ||
        m.destination.address.empty()) {
      return nullptr;
    }
    absl::StatusOr<const UdpListener*> listener = UdpListenerFor(m.destination);
    return listener.ok() ? *listener : nullptr;
  };
  constexpr size_t kMaxPerCall = 64;
  mmsghdr headers[kMaxPerCall];
  iovec data[kMaxPerCall];
  size_t sent = 0;
  for (size_t i = 0; i < messages.size();) {
    const UdpListener* listener = batched_from(messages[i]);
    if (listener == nullptr) {
      sent += Send(messages[i].destination, messages[i].message).ok() ? 1 : 0;
      ++i;
      continue;
    }
    // The run of messages that leave from the same UDP socket, up to kMaxPerCall.
    size_t n = 0;
    while (n < kMaxPerCall && i + n < messages.size() &&
           batched_from(messages[i + n]) == listener) {
      const SipOutbound& m = messages[i + n];
      data[n] = iovec{const_cast<char*>(m.message.data()), m.message.size()};
      headers[n] = mmsghdr{};
      headers[n].msg_hdr.msg_name = const_cast<sockaddr*>(m.destination.address.sockaddr_ptr());
      headers[n].msg_hdr.msg_namelen = m.destination.address.length;
      headers[n].msg_hdr.msg_iov = &data[n];
      headers[n].msg_hdr.msg_iovlen = 1;
      ++n;
    }
    // sendmmsg stops at the first message that fails: skip it, as a failed Send, and go
    // on with the rest.
    for (size_t done = 0; done < n;) {
      const int result =
          sendmmsg(listener->fd(), headers + done, static_cast<unsigned>(n - done), MSG_DONTWAIT);
      if (result > 0) {
        done += static_cast<size_t>(result);
        sent += static_cast<size_t>(result);
      } else if (result < 0 && errno == EINTR) {
        continue;
      } else {
        spdlog::debug("sendmmsg to {} from {}: {}",
                      messages[i + done].destination.address.ToString(), listener->name(),
                      std::strerror(errno));
        ++done;
      }
    }
    i += n;
  }
  return sent;
}

std::vector<int> SipTransportImpl::Descriptors() const {
  std::vector<int> fds;
  for (const auto& udp : udp_) {
    if (udp != nullptr) fds.push_back(udp->fd());
  }
  if (tcp_ != nullptr) {
    for (int fd : tcp_->Descriptors()) fds.push_back(fd);
  }
  return fds;
}

}  // namespace sipd
