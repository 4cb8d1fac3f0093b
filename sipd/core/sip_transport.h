// The SIP transport seam: how SIP messages enter a SIP stack and how any SIP-handling
// process sends one, over UDP or TCP. This header is a stable contract (changes are
// additive and announced in commit messages); the implementation is in
// sipd/core/sip_transport_impl.h, sipd/core/sip_receiver.* (UDP) and sipd/core/tcp_*.
//
// Inbound. Every SIP message sipd receives reaches ONE entry point, the SIP message
// handler, in the process that received it:
//   - a UDP datagram, in a `SIP receiver udp:IP:PORT ` process;
//   - one Content-Length-framed message read from a TCP connection, in the
//     `TCP receiver` process that owns that connection (RFC 3261 18.3).
// The handler gets the bytes of exactly one message and where they came from
// (SipSource: protocol, peer address, receiving listen socket, TCP connection id).
// RFC 5626 keep-alives (CRLF / CRLFCRLF) are answered by the transport and never
// delivered. The default handler is the core's stateless stack (sipd/core/sip.h:
// parse, Core::AddSipHandler handlers such as the registrar, OPTIONS 200, ACK absorbed,
// others 501). A module replaces it with Core::SetSipMessageHandler() during Init(); the
// call returns the handler it replaced, so a stateful stack (tm) can hand the messages
// it does not take over to the stateless stack:
//
//   SipMessageHandler stateless;
//   absl::Status TmModule::Init(Core& core) {
//     stateless = core.SetSipMessageHandler([this](const SipInbound& in) {
//       if (!HandleStatefully(in)) stateless(in);
//     });
//     ...
//   }
//
// Outbound. SipTransport::Send(destination, bytes) may be called from any forked sipd
// process (UDP workers, TCP receivers, the timer process, MI processes) and from any
// thread. It never blocks on the network:
//   - UDP: one sendto() with MSG_DONTWAIT on the chosen listen socket (a full socket
//     buffer is an error, as a lost datagram; RFC 3261 timers retransmit);
//   - TCP: the bytes go to the connection the destination is known by, i.e. the given
//     connection id if it is still open (replies go back on the connection the request
//     came in on, RFC 3261 18.2.2), else any open connection to that address (18.1.1
//     reuse), else a new connection is opened by a TCP receiver (unless
//     `allow_connect` is false). Each connection is owned, read and written by ONE
//     TCP receiver; another process's Send queues the bytes in shared memory and wakes
//     the owner (eventfd). The owner's own Send writes at once when it can. Per
//     connection the queue is bounded (tcp_max_send_queue): a peer that stalls or
//     floods loses its connection, never blocks other peers, UDP, or the sender.
// Send's OK therefore means "handed to the kernel (UDP) / accepted for this connection
// (TCP)", not "delivered"; a TCP connection that fails later drops what it had queued
// (logged) and RFC 3261 timers do the rest.
//
// Addresses. SipAddress is a numeric IP address and port (IPv4, or IPv6 without scope);
// text forms are "IP:PORT" and "[IPv6]:PORT". Listen sockets are numbered in config
// order, UDP and TCP together (SipTransport::sockets(); Core::listen() lists the same
// names): SipSource::socket and SipDestination::socket are indexes into that list.
// Connection ids are positive, never reused while sipd runs, and are the IDs
// `list_tcp_conns` shows.
//
// Descriptors. Only SIP processes hold SIP sockets: UDP workers and TCP receivers
// hold the UDP sockets (to send from them) and their own TCP connections; `TCP main`
// holds the TCP listen sockets. The timer and MI processes hold the UDP sockets and the
// receivers' wake-up eventfds (to Send), never TCP listen sockets or connections.
//
// Thread/process-safety: SipTransport is created in the attendant before the fork and
// inherited by every process; Send() and sockets() are safe from any process and
// thread. A SipInbound, and the bytes it points to, live for one handler call. The
// handler runs single-threaded in its process; it should not block (one TCP receiver
// serves many connections).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <ctime>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sipd {

enum class SipProto : uint8_t { kUdp = 1, kTcp = 2 };

// "udp" / "tcp" (lower case, as in socket names and Via parameters).
std::string_view SipProtoName(SipProto proto);

// A numeric IP transport address. Value type.
struct SipAddress {
  sockaddr_storage storage{};  // AF_INET or AF_INET6 (ss_family 0: empty)
  socklen_t length = 0;

  // Parses a numeric IP (IPv6 without brackets) and a port; InvalidArgument otherwise.
  static absl::StatusOr<SipAddress> FromIpPort(std::string_view ip, uint16_t port);
  // Parses "IP:PORT" or "[IPv6]:PORT"; InvalidArgument otherwise.
  static absl::StatusOr<SipAddress> Parse(std::string_view text);
  // From a kernel address (accept, recvfrom, getsockname).
  static SipAddress FromSockaddr(const sockaddr* address, socklen_t length);

  bool empty() const { return storage.ss_family == 0; }
  bool ipv6() const { return storage.ss_family == AF_INET6; }
  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&storage); }
  std::string ip() const;  // "127.0.0.1", "::1"; "" when empty
  uint16_t port() const;
  std::string ToString() const;  // "127.0.0.1:5060", "[::1]:5060"

  // Same family, IP and port.
  friend bool operator==(const SipAddress& a, const SipAddress& b);
};

// A listen socket (`listen = udp:IP:PORT` / `listen = tcp:IP:PORT`).
struct SipSocket {
  SipProto proto = SipProto::kUdp;
  SipAddress address;  // as bound (a configured port 0 shows the chosen port)
  std::string name;    // "udp:127.0.0.1:5060", "tcp:[::1]:5060": ps, stats, usrloc
};

// Where an inbound message came from.
struct SipSource {
  SipProto proto = SipProto::kUdp;
  SipAddress peer;          // the sender (TCP: the remote end of the connection)
  int socket = -1;          // index in SipTransport::sockets() that received it
  uint64_t connection = 0;  // TCP: the connection's id; 0 for UDP
};

// One inbound SIP message: a UDP datagram or one framed TCP message.
struct SipInbound {
  std::string_view bytes;
  SipSource source;
  // How long the message waited in the kernel's receive queue before a worker took it,
  // in microseconds (UDP: from the kernel's receive timestamp); 0 when not known (TCP).
  // Overload control sheds new calls whose INVITE waited too long (tm overload_delay).
  int64_t queued_us = 0;
};

// Where Send() delivers.
struct SipDestination {
  SipProto proto = SipProto::kUdp;
  SipAddress address;
  // Listen socket to send from (UDP: its fd; TCP: the local IP a new connection is
  // bound to). -1: the first socket of `proto` in the address's family.
  int socket = -1;
  // TCP: the connection to use while it is open (0: none). Ignored for UDP.
  uint64_t connection = 0;
  // TCP: whether Send may open a new connection when none to `address` is open.
  bool allow_connect = true;

  // Where a response to a request from `source` goes when the caller has nothing
  // better (RFC 3261 18.2.2): same protocol, socket and connection, the source address.
  static SipDestination ReplyTo(const SipSource& source);
};

// One message of SipTransport::SendBatch().
struct SipOutbound {
  SipDestination destination;
  std::string_view message;
};

// One TCP connection, as `list_tcp_conns` shows it.
struct SipConnectionInfo {
  uint64_t id = 0;
  SipProto proto = SipProto::kTcp;
  int state = 0;              // 0 established, 1 accepted (being handed over), 2 closing,
                              // 5 connecting (OpenSIPS-style values)
  SipAddress peer;            // the remote end
  SipAddress local;           // our end (empty while connecting)
  std::time_t expires = 0;    // when it closes if it stays idle (wall clock)
  uint64_t queued_bytes = 0;  // waiting to be written
};

class SipTransport {
 public:
  virtual ~SipTransport() = default;

  // Listen sockets in config order (UDP and TCP together).
  virtual const std::vector<SipSocket>& sockets() const = 0;

  // Sends one complete SIP message (see the file comment). Never blocks. Errors:
  // InvalidArgument (bad destination or socket index, empty message), FailedPrecondition
  // (no listen socket of that protocol and family), Unavailable (UDP send failed;
  // TCP: no open connection and !allow_connect, or the connection is closing),
  // ResourceExhausted (TCP: the connection's send queue is full, or the connection
  // table is full).
  virtual absl::Status Send(const SipDestination& destination, std::string_view message) = 0;

  // Sends several messages, each as Send() would, in as few system calls as the
  // transport can: UDP messages that follow one another and go out of one listen socket
  // leave in one sendmmsg(), so a receiver asleep in its recv() is woken once for them
  // all rather than once per message (on a VM, waking a peer on another CPU costs the
  // sender more than the send itself). A message that cannot go is skipped, as a failed
  // Send. Returns how many were handed over.
  virtual size_t SendBatch(std::span<const SipOutbound> messages) {
    size_t sent = 0;
    for (const SipOutbound& m : messages) sent += Send(m.destination, m.message).ok() ? 1 : 0;
    return sent;
  }

  // Open TCP connections in ascending id order (empty without TCP). Takes a snapshot.
  virtual std::vector<SipConnectionInfo> Connections() const { return {}; }
};

// The SIP stack entry point (see the file comment). Must not throw.
using SipMessageHandler = std::function<void(const SipInbound& message)>;

}  // namespace sipd
