// The SIP side of the core: UDP listen sockets, the UDP receiver loop, libosip2 parsing,
// the core's stateless stack and the `core` / `sl` statistics it updates.
//
// The stateless stack handles each inbound message (UDP datagram or framed TCP message,
// sipd/core/sip_transport.h) as: parse -> count -> check mandatory headers -> module
// handler (Core::AddSipHandler) or core default (OPTIONS 200, ACK absorbed, others 501)
// -> stateless reply through SipTransport::Send to where the request came from (the same
// socket; for TCP the same connection).
//
// Thread/process-safety: a UdpListener is created in the attendant before the fork and
// shared (the fd) by every SIP-sending process; one UdpReceiver runs per SIP receiver
// process and one StatelessSipStack per receiving process, both single-threaded.
// Counters are shared-memory atomics.
#pragma once

#include <osipparser2/osip_message.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "registry/statistics.h"
#include "sipd/api/module.h"
#include "sipd/core/config.h"
#include "sipd/core/sip_transport.h"

namespace sipd {

// The `core` and `sl` statistics the SIP side updates (spec 7.4 / 7.5).
struct SipCounters {
  // core
  mi::Counter rcv_requests, rcv_replies, fwd_requests, fwd_replies, drop_requests, drop_replies,
      err_requests, err_replies, bad_uris_rcvd, unsupported_methods, bad_msg_hdr;
  // sl
  mi::Counter replies_by_class[6];  // 1xx .. 6xx
  mi::Counter sent_replies, sent_err_replies, received_acks;
};

// Registers group `core` (its counters, then `timestamp` = `timestamp_fn`).
absl::Status RegisterCoreStats(mi::StatsRegistry& stats, std::function<uint64_t()> timestamp_fn,
                               SipCounters& counters);
// Registers group `sl`.
absl::Status RegisterSlStats(mi::StatsRegistry& stats, SipCounters& counters);

// One bound UDP socket (`listen = udp:IP:PORT`).
class UdpListener {
 public:
  // Creates and binds the socket (a port in use is an error naming the address). The
  // socket has a 200 ms receive timeout so workers notice shutdown. `max_buffer` > 0
  // probes the largest receive buffer the kernel grants up to that many bytes, as
  // OpenSIPS's `maxbuffer` does (double while it takes effect, then grow in 2 KB steps),
  // and logs "using a UDP receive buffer of N kb"; 0 keeps the kernel's default.
  static absl::StatusOr<std::unique_ptr<UdpListener>> Open(const ListenAddress& address,
                                                           int max_buffer = 0);
  ~UdpListener();
  UdpListener(const UdpListener&) = delete;
  UdpListener& operator=(const UdpListener&) = delete;

  int fd() const { return fd_; }
  // "udp:IP:PORT" with the bound port (useful when the config asked for port 0).
  const std::string& name() const { return name_; }
  uint16_t port() const { return port_; }
  // The socket's inode (matches /proc/net/udp lines).
  uint64_t inode() const { return inode_; }
  // SO_RCVBUF after probing, as the kernel reports it (Linux doubles the request).
  int receive_buffer() const { return receive_buffer_; }
  // Bytes queued for sending on this socket (SIOCOUTQ), 0 if unsupported.
  uint64_t QueuedBytes() const;
  // From now on the kernel stamps each datagram as it arrives, and the receivers report
  // how long it waited (SipInbound::queued_us; 0 without stamps). Off by default: only
  // overload control by age needs it. Call before the fork (the socket is shared).
  void EnableReceiveTimestamps() const;

 private:
  UdpListener(int fd, std::string name, uint16_t port)
      : fd_(fd), name_(std::move(name)), port_(port) {}
  int fd_;
  std::string name_;
  uint16_t port_;
  uint64_t inode_ = 0;
  int receive_buffer_ = 0;
};

// Probes SO_RCVBUF of `fd` up to `max_buffer` bytes (see UdpListener::Open) and returns
// the final value the kernel reports.
int ProbeReceiveBuffer(int fd, int max_buffer);

using SipHandlerMap = absl::flat_hash_map<std::string, SipRequestHandler>;

// The core's stateless SIP stack: the default SipMessageHandler (sipd/core/sip_transport.h)
// of every receiving process (UDP workers, TCP receivers). One per process; replies go
// out through the SipTransport (the same connection for TCP).
class StatelessSipStack {
 public:
  // `to_tag_prefix` starts every To-tag the core adds (shared by all processes so
  // retransmissions get the same tag from any of them). All references must outlive the
  // stack.
  StatelessSipStack(SipTransport& transport, const SipCounters& counters,
                    const SipHandlerMap& handlers, std::string to_tag_prefix,
                    std::string server_header);
  ~StatelessSipStack();

  // Handles one inbound message. Never throws.
  void Handle(const SipInbound& message);

  // Answers a message the transport cannot hand over (TCP: too large, bad
  // Content-Length) with `code`/`reason`, from its header block alone (`headers.bytes`),
  // when it is a request that can be answered; counts it in core:err_requests (and
  // core:drop_requests when no answer is possible). Never throws.
  void Reject(const SipInbound& headers, int code, std::string_view reason);

  // Sends a stateless reply for `message` to `source` (SipDestination::ReplyTo; shared by
  // the SipRequest implementation).
  absl::Status SendReply(osip_message_t* message, const SipSource& source, int code,
                         std::string_view reason, const std::vector<std::string>& extra_headers,
                         std::string_view body);
  // A deferred-reply token ('S') for `message` from `source` (SipRequest::Defer): the
  // destination and the reply's header block (Via..CSeq, To-tag added), so that any
  // process can send the final reply with SendDeferredReply().
  std::string DeferredToken(osip_message_t* message, const SipSource& source) const;

 private:
  void HandleRequest(osip_message_t* message, const SipInbound& inbound);
  void HandleUnparsable(const SipInbound& inbound);
  std::string ToTag(osip_message_t* message) const;
  // Via(s), From, To (with a To-tag unless `code` is 100), Call-ID, CSeq; CRLF after each.
  void AppendReplyHead(std::string& out, osip_message_t* message, int code) const;
  const std::string& SocketName(int socket) const;

  SipTransport& transport_;
  const SipCounters& counters_;
  const SipHandlerMap& handlers_;
  std::string to_tag_prefix_;
  std::string server_header_;
  std::string allow_header_;
  std::vector<std::string> options_headers_;
  std::vector<std::string> not_implemented_headers_;
  std::string reply_buffer_;
};

// The body of one `SIP receiver udp:IP:PORT ` process: receives datagrams on one UDP
// socket and hands each to the SIP message handler.
// Registers the sender of the stateless stack's deferred replies ('S' tokens), which
// needs no stack object: the token carries the header block. REQUIRES: the attendant,
// before the fork; `transport` and `counters` outlive every process's use of it.
void RegisterStatelessDeferredReplies(SipTransport& transport, const SipCounters& counters);

class UdpReceiver {
 public:
  // `socket` is the index of `listener` in SipTransport::sockets(). `busy` (may be
  // nullptr) is this worker's busy flag for the `load` statistics. References must
  // outlive the receiver.
  UdpReceiver(const UdpListener& listener, int socket, const SipMessageHandler& handler,
              std::atomic<uint8_t>* busy);
  ~UdpReceiver();

  // Receives and hands over datagrams until `core.stopping()`; calls core.SyncLogLevel()
  // after each wake-up (at least every 200 ms).
  void Run(Core& core);

 private:
  const UdpListener& listener_;
  int socket_;
  const SipMessageHandler& handler_;
  std::atomic<uint8_t>* busy_;
  // Reused across datagrams.
  std::unique_ptr<char[]> receive_buffer_;
};

// Source address helpers.
std::string SockaddrIp(const sockaddr_storage& address);
uint16_t SockaddrPort(const sockaddr_storage& address);

}  // namespace sipd
