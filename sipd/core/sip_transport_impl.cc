#include "sipd/core/sip_transport_impl.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sipd {

absl::StatusOr<std::unique_ptr<SipTransportImpl>> SipTransportImpl::Open(
    const std::vector<ListenAddress>& addresses) {
  std::unique_ptr<SipTransportImpl> transport(new SipTransportImpl());
  for (const ListenAddress& address : addresses) {
    absl::StatusOr<std::unique_ptr<UdpListener>> listener = UdpListener::Open(address);
    if (!listener.ok()) return listener.status();
    SipSocket socket;
    socket.proto = SipProto::kUdp;
    socket.name = (*listener)->name();
    absl::StatusOr<SipAddress> bound = SipAddress::FromIpPort(address.ip, (*listener)->port());
    if (!bound.ok()) return bound.status();
    socket.address = *bound;
    transport->sockets_.push_back(std::move(socket));
    transport->udp_.push_back(*std::move(listener));
  }
  return transport;
}

SipTransportImpl::~SipTransportImpl() = default;

const UdpListener* SipTransportImpl::udp(int index) const {
  if (index < 0 || static_cast<size_t>(index) >= udp_.size()) return nullptr;
  return udp_[static_cast<size_t>(index)].get();
}

uint64_t SipTransportImpl::UdpReceiveBacklog() const {
  uint64_t total = 0;
  for (const auto& l : udp_) {
    if (l != nullptr) total += l->QueuedBytes();
  }
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
      return absl::FailedPreconditionError("no tcp listen socket");
  }
  return absl::InvalidArgumentError("unknown protocol");
}

absl::Status SipTransportImpl::SendUdp(const SipDestination& destination,
                                       std::string_view message) {
  const UdpListener* listener = nullptr;
  if (destination.socket >= 0) {
    listener = udp(destination.socket);
    if (listener == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen socket ", destination.socket, " is not a UDP socket"));
    }
  } else {
    for (size_t i = 0; i < sockets_.size() && listener == nullptr; ++i) {
      if (udp_[i] != nullptr &&
          sockets_[i].address.storage.ss_family == destination.address.storage.ss_family) {
        listener = udp_[i].get();
      }
    }
    if (listener == nullptr) {
      return absl::FailedPreconditionError(
          absl::StrCat("no udp listen socket for ", destination.address.ipv6() ? "IPv6" : "IPv4"));
    }
  }
  const ssize_t sent = sendto(listener->fd(), message.data(), message.size(), MSG_DONTWAIT,
                              destination.address.sockaddr_ptr(), destination.address.length);
  if (sent < 0) {
    return absl::UnavailableError(absl::StrCat("sendto ", destination.address.ToString(), " from ",
                                               listener->name(), ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace sipd
