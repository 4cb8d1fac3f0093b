// The daemon's SipTransport (sipd/core/sip_transport.h): every listen socket, opened in
// the attendant before the fork, and Send() over them.
//
// UDP sockets are UdpListener (sipd/core/sip_receiver.h); Send picks the destination's
// socket (or the first UDP socket of its address family) and sends with MSG_DONTWAIT.
// TCP sockets, connections and processes are TcpTransport (sipd/core/tcp_transport.h).
//
// Thread/process-safety: built in the attendant; inherited by every process through
// fork(). Send() and the accessors are safe from any process and thread.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sipd/core/config.h"
#include "sipd/core/sip_receiver.h"
#include "sipd/core/sip_transport.h"
#include "sipd/core/tcp_transport.h"

namespace sipd {

class SipTransportImpl final : public SipTransport {
 public:
  struct Options {
    // UDP receive buffer probing limit (config `maxbuffer`; 0: kernel default).
    int max_buffer = 0;
    // Required when a TCP socket is configured: where the connection table lives.
    SharedMemory* shm = nullptr;
    TcpOptions tcp;
  };

  // Opens (binds) every listen socket in `addresses` order, and with a TCP socket the
  // TCP transport (table, hand-off channels, eventfds). Errors name the address. Port 0
  // lines of one IP (udp and tcp) get the same port when it is free for both.
  static absl::StatusOr<std::unique_ptr<SipTransportImpl>> Open(
      const std::vector<ListenAddress>& addresses, const Options& options);
  static absl::StatusOr<std::unique_ptr<SipTransportImpl>> Open(
      const std::vector<ListenAddress>& addresses) {
    return Open(addresses, Options());
  }
  ~SipTransportImpl() override;
  SipTransportImpl(const SipTransportImpl&) = delete;
  SipTransportImpl& operator=(const SipTransportImpl&) = delete;

  const std::vector<SipSocket>& sockets() const override { return sockets_; }
  absl::Status Send(const SipDestination& destination, std::string_view message) override;
  size_t SendBatch(std::span<const SipOutbound> messages) override;
  std::vector<SipConnectionInfo> Connections() const override;

  // The UDP listener of socket `index`; nullptr for other protocols or a bad index.
  const UdpListener* udp(int index) const;
  // Bytes received on the UDP sockets and not read yet (net:waiting_udp): their receive
  // queues as /proc/net/udp* accounts them (per-datagram overhead included).
  uint64_t UdpReceiveBacklog() const;
  // The TCP transport; nullptr without a TCP listen socket.
  TcpTransport* tcp() const { return tcp_.get(); }
  // Every descriptor of the transport (UDP sockets, and the TCP transport's): what a
  // forked process keeps before TcpTransport::EnterProcess narrows the TCP ones. Any
  // process may Send (tm retransmits from the timer, t_uac_dlg sends from MI processes),
  // so every process keeps the UDP sockets.
  std::vector<int> Descriptors() const;

 private:
  SipTransportImpl() = default;
  // Opens one listen socket of Open() and appends it.
  static absl::Status OpenOne(SipTransportImpl& transport, const ListenAddress& address,
                              const Options& options);
  // The UDP listener `destination` goes out of (its socket, or the first UDP socket of
  // its address family).
  absl::StatusOr<const UdpListener*> UdpListenerFor(const SipDestination& destination) const;
  absl::Status SendUdp(const SipDestination& destination, std::string_view message);
  absl::Status SendTcp(const SipDestination& destination, std::string_view message);

  std::vector<SipSocket> sockets_;
  // Parallel to sockets_: the UDP listener, or nullptr.
  std::vector<std::unique_ptr<UdpListener>> udp_;
  std::unique_ptr<TcpTransport> tcp_;
};

}  // namespace sipd
