// SIP over TCP: the listen sockets, the connection table, the hand-off channels from
// `TCP main` to the `TCP receiver`s, and the TCP half of SipTransport::Send().
//
// Processes (spec 10.1: `TCP receiver` x tcp_children, then `TCP main`, last):
//   - TCP main (tcp_main.h) accepts on every TCP listen socket, records the connection in
//     the table (refusing beyond tcp_max_connections) with the least loaded receiver as
//     its owner, and passes the descriptor to that receiver with SCM_RIGHTS over a unix
//     datagram socketpair created before the fork; then it closes its copy.
//     Why SCM_RIGHTS rather than SO_REUSEPORT or a shared accept: the owner is chosen by
//     load (connection count), not by the kernel's hash of the 4-tuple; one process sees
//     every accept, so the connection limit is exact; and receivers never hold a listen
//     socket, so a busy or stuck receiver cannot delay accepts for the others.
//   - Each TCP receiver (tcp_receiver.h) owns its connections: it alone reads, frames
//     (tcp_framer.h) and writes them, with non-blocking sockets and epoll, and runs the
//     SIP message handler for every framed message. It also opens the outbound
//     connections that Send() asked for.
// Send() from any process (sipd/core/sip_transport.h): in the owner itself the bytes
// are written at once (the rest kept in the owner's per-connection buffer); elsewhere
// they are queued in the table (shared memory) and the owner is woken through its
// eventfd. A connection's queue (inbox + owner's buffer) is bounded by
// tcp_max_send_queue.
//
// Limits (sipd/core/config.h): tcp_max_connections, tcp_connection_lifetime (idle),
// tcp_max_msg_size (513 then close), tcp_header_timeout (a message must be complete
// this long after its first byte: headers and body, like OpenSIPS's tcp_max_msg_time),
// tcp_connect_timeout, tcp_send_timeout (a peer that takes none of our bytes this long
// is dropped), tcp_max_send_queue. A receiver reads at most 64 KB from one connection
// before serving the others, and stops reading from a peer whose replies it cannot
// deliver (half the send queue), so a flooding or stalled peer only slows itself.
//
// Descriptors: created in the attendant (listen sockets, socketpairs, eventfds). After
// the fork EnterProcess() closes what the process must not hold: only TCP main keeps the
// listen sockets and the main ends of the socketpairs; receiver i keeps only its own end;
// every process keeps the receivers' eventfds (needed by Send()).
//
// Thread/process-safety: built in the attendant before the fork. Send() is safe from any
// process and thread; the receiver-local fast path runs only in the owner's (single)
// thread. The table locks itself (tcp_conn_table.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/core/config.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip_transport.h"
#include "sipd/core/tcp_conn_table.h"

namespace sipd {

struct TcpOptions {
  int receivers = 1;
  size_t max_connections = 2048;
  std::chrono::milliseconds connection_lifetime{120 * 1000};
  size_t max_message_size = 65536;
  std::chrono::milliseconds header_timeout{4000};
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds send_timeout{10000};
  size_t max_send_queue = 262144;

  // From the config (tcp_children 0 = `children`).
  static TcpOptions FromConfig(const Config& config);
};

// What the owning receiver offers Send() in its own process.
class TcpLocalSender {
 public:
  virtual ~TcpLocalSender() = default;
  // Writes (or buffers) `message` on connection `id` if this process owns it and it is
  // open; NotFound if it does not know `id` (then Send() queues through the table).
  virtual absl::Status SendLocal(uint64_t id, std::string_view message) = 0;
};

class TcpTransport {
 public:
  // The process roles EnterProcess() knows.
  enum class Role { kOther, kTcpMain, kTcpReceiver };

  static absl::StatusOr<std::unique_ptr<TcpTransport>> Create(SharedMemory& shm,
                                                              TcpOptions options);
  ~TcpTransport();
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  // Binds and listens on `address` (a TCP listen line) as listen socket `socket` (its
  // index in SipTransport::sockets()). Returns the bound address. Errors name it.
  absl::StatusOr<SipAddress> Listen(int socket, const ListenAddress& address);
  // Creates the hand-off socketpairs and eventfds, once every Listen() is done.
  absl::Status Finish();

  // In a forked child: closes the descriptors this role must not hold (see the file
  // comment). `receiver` is the receiver index for kTcpReceiver.
  void EnterProcess(Role role, int receiver);
  // All its descriptors (listen sockets, both ends of every channel, eventfds).
  std::vector<int> Descriptors() const;

  // The TCP half of SipTransport::Send. `connect_socket` is the listen socket for a new
  // connection (already checked to be TCP and of the address's family).
  absl::Status Send(const SipDestination& destination, int connect_socket,
                    std::string_view message);

  // In TCP receiver `index`: routes Send() for its own connections through `sender`
  // (nullptr to stop).
  void SetLocalSender(int index, TcpLocalSender* sender);

  const TcpOptions& options() const { return options_; }
  TcpConnTable& table() { return *table_; }
  const TcpConnTable& table() const { return *table_; }
  int receivers() const { return options_.receivers; }

  struct ListenSocket {
    int socket = -1;  // index in SipTransport::sockets()
    int fd = -1;
    SipAddress address;
  };
  const std::vector<ListenSocket>& listen_sockets() const { return listen_; }
  // The address a listen socket index is bound to (empty if it is not TCP).
  SipAddress ListenAddressOf(int socket) const;
  // Hand-off channel ends: TCP main writes main_end(i), receiver i reads receiver_end(i).
  int main_end(int receiver) const { return channels_[static_cast<size_t>(receiver)].main; }
  int receiver_end(int receiver) const { return channels_[static_cast<size_t>(receiver)].receiver; }
  int wake_fd(int receiver) const { return wake_fds_[static_cast<size_t>(receiver)]; }
  // Wakes receiver `index` (its work list has new entries).
  void Wake(int receiver) const;

  // net:waiting_tcp: bytes received on sipd's TCP connections and not read yet (kernel
  // receive queues, /proc/net/tcp*) plus bytes queued for sending (the table).
  uint64_t WaitingBytes() const;

 private:
  struct Channel {
    int main = -1;
    int receiver = -1;
  };
  TcpTransport() = default;

  TcpOptions options_;
  TcpConnTable* table_ = nullptr;
  std::vector<ListenSocket> listen_;
  std::vector<Channel> channels_;
  std::vector<int> wake_fds_;
  // Process-local: the receiver this process is, and its fast path.
  int local_index_ = -1;
  TcpLocalSender* local_sender_ = nullptr;
};

}  // namespace sipd
