// The MI datagram transport (spec 4): one request per datagram, one reply datagram.
//
// Request: `:command:\n` then argument lines (same syntax as FIFO, see
// legacy-transports/text/argument_parser.h), no end marker. Reply: the text layout of
// spec 2 without the final empty line, sent to the request's source address (UNIX
// clients must bind their socket to a path). Flushing commands only pre-render into the
// single reply buffer; nothing is sent before the command is done.
//
// Each process is one event loop (epoll) over its sockets and the dispatcher's wake
// descriptor. A request is parsed and started at once; a call that is not ready at once
// (an async reply from another process, a command on a worker thread) keeps the peer
// address, the socket to answer from and its own reply buffer, and the loop goes on
// serving others; its reply is sent when the dispatcher reports it ready. An async call
// without a reply after `async_timeout` gets `500 command failed`. With several
// processes (children_count) each has its own dispatcher, and a completion comes back to
// the process that started the call (the shared async table wakes its owner).
//
// Sends never block: a reply that meets a full queue (EAGAIN/ENOBUFS: a client that does
// not read) is dropped, logged at debug level and counted (statistic
// `mi_datagram:dropped_replies`). UNIX replies leave from an unbound socket, and the
// replies a client has not read yet are charged to that socket's send buffer: when
// clients that never read fill it, the process opens a fresh reply socket for everyone
// else (the kernel keeps at most net.unix.max_dgram_qlen + 1 unread replies per client
// and frees them when the client reads or closes).
//
// Memory: one reply buffer for the calls answered at once (up to 65457 bytes, reused);
// about 1 KB per call that waits (peer address, call state) plus its reply once it is
// rendered (at most 65457 bytes, freed when sent).
//
// Peer identity for the dispatcher (CallContext.peer): UNIX: uid and pid of the sender
// (SO_PASSCRED / SCM_CREDENTIALS) and its socket path; UDP: `ip:port`.
//
// Errors, each one datagram with one line and no command name:
//   500 command not available\n   bad first line or unknown command
//   400 parse error in command\n   bad arguments, or a request larger than 65457 bytes
//   500 command failed\n           the handler returned nothing, or its async reply
//                                  failed or never came
//   500 reply too large for a datagram: use a stream transport (FIFO or gRPC
//   ExecuteStream)\n               the reply does not fit in 65457 bytes (1.11 sends
//                                  nothing and the client just times out)
// Deliberate differences from 1.11: a first line ending in CRLF is accepted; the full
// 65457 bytes are usable for a reply (1.11: about half, spec 4.5); an async call that
// fails is answered (1.11 loses that reply, spec 4.6); a reply is never waited for
// (as in 1.11, whose socket_timeout has no effect either), and a dropped one is counted.
//
// Thread-safety: a DatagramServer is used by one thread; several processes may serve
// the same sockets (children_count), each with its own server.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "legacy-transports/text/argument_parser.h"
#include "legacy-transports/text/module_params.h"
#include "registry/dispatcher.h"
#include "registry/reply_writer.h"
#include "registry/statistics.h"

namespace sipd::legacy {

// DATAGRAM_SOCK_BUF_SIZE: the largest request and reply.
inline constexpr size_t kDatagramMaxSize = 65457;

inline constexpr std::string_view kDatagramNotAvailable = "500 command not available\n";
inline constexpr std::string_view kDatagramParseError = "400 parse error in command\n";
inline constexpr std::string_view kDatagramFailed = "500 command failed\n";
inline constexpr std::string_view kDatagramTooLarge =
    "500 reply too large for a datagram: use a stream transport (FIFO or gRPC "
    "ExecuteStream)\n";

struct DatagramConfig {
  // `udp:HOST:PORT` (port 1024..65535, IPv6 host in brackets) or a UNIX socket path.
  std::string socket_name;
  // More sockets served by the same processes (sipd extension: e.g. a UNIX socket for
  // local tools and a loopback UDP socket).
  std::vector<std::string> extra_socket_names;
  int children = 1;
  // Accepted for compatibility (1.11's send timeout, which has no effect there either):
  // replies never wait.
  std::chrono::milliseconds socket_timeout{2000};
  // Longest wait for an async reply (the dispatcher's async_timeout for this transport).
  std::chrono::milliseconds async_timeout{120000};
  std::string reply_indent = "\t";
  // UNIX socket file: mode 0600 by default.
  FileAccess unix_access;
  // The role of every UDP caller (no identity is possible over UDP): read by default.
  mi::Role udp_role = mi::Role::kRead;
  // Allows a UDP socket on a non-loopback address (refused otherwise).
  bool insecure = false;
};

// The sockets of the transport, created in the attendant before the fork so that a busy
// port or a bad path fails start-up.
struct DatagramSockets {
  int rx = -1;
  // UNIX: a separate unbound socket; UDP: rx itself.
  int tx = -1;
  // The bound UNIX path (empty for UDP).
  std::string unix_path;

  bool open() const { return rx >= 0; }
  void Close();
};

// UDP: binds HOST:PORT (no SO_REUSEADDR: a busy port is an error). UNIX: binds the path
// with `unix_access`; a stale socket file is replaced, a symlink or any other file is
// refused (FailedPrecondition).
absl::StatusOr<DatagramSockets> CreateDatagramSockets(const std::string& socket_name, bool insecure,
                                                      const FileAccess& unix_access);
// HOST:PORT ([v6]:PORT) a UDP socket is bound to (the port the kernel chose for port 0).
std::string BoundAddress(const DatagramSockets& sockets);
// The sockets of config.socket_name and config.extra_socket_names, all or none.
absl::StatusOr<std::vector<DatagramSockets>> CreateDatagramSockets(const DatagramConfig& config);

// Renders a reply into one datagram buffer; remembers when it no longer fits.
class DatagramReplyWriter final : public mi::ReplyWriter {
 public:
  DatagramReplyWriter(std::string indent, size_t max_size);
  void Begin();
  void WriteStatus(const mi::Reply& reply) override;
  void WriteNode(const mi::Node& node, int depth) override;
  // Flushes and the end add nothing: no empty lines on datagram (spec 4.3, 4.5).

  bool too_large() const { return too_large_; }
  bool full() const override { return too_large_; }
  std::string_view payload() const { return buffer_; }

 private:
  void CheckSize();

  const std::string indent_;
  const size_t max_size_;
  std::string buffer_;
  bool too_large_ = false;
};

// A token bucket for error replies (a bad request costs the sender one datagram; a flood
// of them must not turn the MI socket into a reflector). `rate` per second, up to `burst`
// at once. Time is passed in, so tests drive it.
class ErrorReplyBudget {
 public:
  using Clock = std::chrono::steady_clock;
  ErrorReplyBudget(double rate, double burst) : rate_(rate), burst_(burst), tokens_(burst) {}
  // True if one more error reply may go at `now`.
  bool Allow(Clock::time_point now);

 private:
  const double rate_;
  const double burst_;
  double tokens_;
  Clock::time_point last_{};
};

// Error replies per second and process (and the burst allowed at once).
inline constexpr double kErrorRepliesPerSecond = 1000;
inline constexpr double kErrorReplyBurst = 1000;

class DatagramServer {
 public:
  // `sockets` must outlive the server. `dropped_replies` counts replies dropped on a
  // full queue (an invalid Counter: counted locally only).
  DatagramServer(const DatagramConfig& config, mi::Dispatcher& dispatcher,
                 const std::vector<DatagramSockets>& sockets, mi::Counter dropped_replies = {});
  ~DatagramServer();
  DatagramServer(const DatagramServer&) = delete;
  DatagramServer& operator=(const DatagramServer&) = delete;

  // Serves requests until stopping() returns true; on_wakeup() runs after every wake-up
  // (at least every 200 ms). Returns an error only if the event loop itself fails. Calls
  // still waiting are cancelled on return.
  absl::Status Run(const std::function<bool()>& stopping, const std::function<void()>& on_wakeup);

  // Calls waiting for their reply, and replies dropped so far by this server. May be
  // read from any thread (tests).
  size_t waiting() const { return waiting_count_.load(std::memory_order_relaxed); }
  uint64_t dropped_replies() const { return dropped_local_.load(std::memory_order_relaxed); }
  // Datagrams ignored because they came from one of the transport's own sockets (a forged
  // source would make a socket answer itself forever), and error replies left unsent
  // over the budget.
  uint64_t ignored_own() const { return ignored_own_.load(std::memory_order_relaxed); }
  uint64_t unsent_errors() const { return unsent_errors_.load(std::memory_order_relaxed); }

  // Fuzzing: serves `datagram` as received on socket 0 from a local caller; returns the
  // reply payload (empty if the call waits). Needs no Run().
  std::string FeedForFuzzing(std::string_view datagram);

 private:
  struct Waiting;

  absl::Status Setup();
  // Reads and serves one datagram of socket `index`; false when there was none.
  bool ReceiveOne(size_t index);
  // Parses and starts one request from `peer`. Returns the payload to send at once, or
  // an empty view if the call waits (it is then in waiting_).
  std::string_view Handle(std::string_view datagram, size_t real_size, mi::Peer peer, size_t index,
                          const sockaddr_storage& from, socklen_t from_len);
  // The payload of a ready exchange, rendered in `writer`.
  static std::string_view Payload(mi::Exchange& exchange, const DatagramReplyWriter& writer);
  void OnReady();
  void SendReply(size_t index, std::string_view payload, const sockaddr_storage& to,
                 socklen_t to_len);
  void Drop(std::string_view why);
  // True if `from` is the address of one of our UDP sockets.
  bool FromOwnSocket(const sockaddr_storage& from) const;

  const DatagramConfig& config_;
  mi::Dispatcher& dispatcher_;
  const std::vector<DatagramSockets>& sockets_;
  // The socket each listening socket answers from (UNIX: may be replaced, see above);
  // `own_tx_` marks those this server created (and closes).
  std::vector<int> tx_;
  std::vector<bool> own_tx_;
  int send_buffer_ = 0;
  mi::Counter dropped_;
  std::atomic<uint64_t> dropped_local_{0};
  std::atomic<size_t> waiting_count_{0};
  std::atomic<uint64_t> ignored_own_{0};
  std::atomic<uint64_t> unsent_errors_{0};
  // The bound addresses of our UDP sockets (AF_UNSPEC for UNIX ones).
  std::vector<sockaddr_storage> own_addresses_;
  ErrorReplyBudget error_budget_{kErrorRepliesPerSecond, kErrorReplyBurst};
  int epoll_fd_ = -1;

  std::string input_;
  char control_[64];
  ArgumentParser parser_{kDatagramMaxSize};
  // The reply buffer of calls answered at once; a call that waits takes it along.
  std::unique_ptr<DatagramReplyWriter> writer_;
  uint64_t next_id_ = 1;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Waiting>> waiting_;
  std::vector<uint64_t> ready_;
};

}  // namespace sipd::legacy
