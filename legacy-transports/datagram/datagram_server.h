// The MI datagram transport (spec 4): one request per datagram, one reply datagram.
//
// Request: `:command:\n` then argument lines (same syntax as FIFO, see
// legacy-transports/text/argument_parser.h), no end marker. Reply: the text layout of
// spec 2 without the final empty line, sent to the request's source address (UNIX
// clients must bind their socket to a path). Flushing commands only pre-render into the
// single reply buffer; nothing is sent before the command is done.
//
// Errors, each one datagram with one line and no command name:
//   500 command not available\n   bad first line or unknown command
//   400 parse error in command\n   bad arguments, or a request larger than 65457 bytes
//   500 command failed\n           the handler returned nothing
//   500 reply too large for a datagram: use a stream transport (FIFO or gRPC
//   ExecuteStream)\n               the reply does not fit in 65457 bytes (1.11 sends
//                                  nothing and the client just times out)
// Deliberate differences from 1.11: a first line ending in CRLF is accepted; the full
// 65457 bytes are usable for a reply (1.11: about half, spec 4.5).
//
// Thread-safety: a DatagramServer is used by one thread; several processes may serve
// the same sockets (children_count), each with its own server.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "legacy-transports/text/argument_parser.h"
#include "legacy-transports/text/module_params.h"
#include "registry/dispatcher.h"
#include "registry/reply_writer.h"

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
  // Longest time a reply may wait for room in the client's receive queue.
  std::chrono::milliseconds socket_timeout{2000};
  std::string reply_indent = "\t";
  // UNIX socket file: mode 0600 by default.
  FileAccess unix_access;
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
absl::StatusOr<DatagramSockets> CreateDatagramSockets(const std::string& socket_name,
                                                      const FileAccess& unix_access);
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

class DatagramServer {
 public:
  // `sockets` must outlive the server.
  DatagramServer(const DatagramConfig& config, mi::Dispatcher& dispatcher,
                 const std::vector<DatagramSockets>& sockets);

  // Serves requests until stopping() returns true; on_wakeup() runs after every wake-up
  // (at least every 200 ms).
  void Run(const std::function<bool()>& stopping, const std::function<void()>& on_wakeup);

  // Runs one request datagram and returns the reply payload (valid until the next
  // call). `real_size` > datagram.size() means the datagram was cut by the buffer.
  std::string_view Handle(std::string_view datagram, size_t real_size);

 private:
  void ReceiveOne(const DatagramSockets& sockets);
  void SendReply(int tx, std::string_view payload, const sockaddr_storage& to, socklen_t to_len);

  const DatagramConfig& config_;
  mi::Dispatcher& dispatcher_;
  const std::vector<DatagramSockets>& sockets_;
  std::vector<pollfd> poll_set_;
  std::string input_;
  mi::Request request_;
  ArgumentParser parser_{kDatagramMaxSize};
  DatagramReplyWriter writer_;
};

}  // namespace sipd::legacy
