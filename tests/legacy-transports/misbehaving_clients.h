// Misbehaving clients of the MI FIFO and datagram transports, for the tests that prove no
// client can stall a transport for others (tests/legacy-transports/{fifo,datagram}/) and
// for bench/legacy_bench.cc (--misbehaving). One background thread drives them all, so
// a thousand clients cost a thousand descriptors, not a thousand threads.
//
// FIFO kinds (each has its own reply FIFO in reply_dir):
//   never_read  sends `big_request` with its reply FIFO open for reading and never reads;
//               when the server gives up (the FIFO shows POLLHUP) it sends it again.
//   slow_read   the same, reading `slow_read_bytes` once a second.
//   idle        opens the request FIFO and its reply FIFO, never sends a byte.
//   half_send   sends the beginning of a request once (half of them stop at a line end,
//               half mid-line) and then nothing; the server answers it 400 when the next
//               request begins or request_timeout passes.
//   never_open  sends a complete request every second but never opens its reply FIFO.
// Half-senders are started one after the other, each once the server has read the
// previous one (FIONREAD on the request FIFO is 0), and before Start() returns, so the
// good client's requests arrive after a pause (see the resynchronisation rule in
// legacy-transports/fifo/fifo_server.h).
//
// Datagram kinds (UNIX sockets bound in client_dir, or UDP sockets):
//   never_read  UNIX: sends `never_read_burst` requests at once (default: more than its
//               socket's queue holds, net.unix.max_dgram_qlen + 6, at most 600); then
//               `big_request` `requests_per_second`; never reads.
//               (No burst over UDP: a UDP server never waits for a client's queue,
//               and a burst would only overflow the server's own receive buffer.)
//   slow_read   the same with the smallest receive buffer, reading one datagram (at most
//               slow_read_bytes of it) once a second.
//   idle        a bound socket that never sends.
//   half_send   sends truncated requests (`:get_statistics:` without its LF, an
//               unterminated quoted argument) and reads the error replies.
//   never_open  (same as never_read on datagram)
//
// Thread-safety: Start() and the destructor from one thread; figures() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/stop_signal.h"

namespace sipd::legacy::testing {

struct MisbehavingMix {
  int never_read = 0;
  int slow_read = 0;
  int idle = 0;
  int half_send = 0;
  int never_open = 0;

  int total() const { return never_read + slow_read + idle + half_send + never_open; }
  // `n` clients spread over the kinds (FIFO: all five; datagram: never_open excluded).
  static MisbehavingMix Spread(int n, bool fifo);
};

struct MisbehavingFigures {
  // Requests the misbehaving clients sent (complete or not).
  uint64_t requests = 0;
  // FIFO: replies the server gave up on or finished (the client saw the end of its
  // reply FIFO); datagram: replies read.
  uint64_t replies_ended = 0;
  uint64_t bytes_read = 0;
};

class MisbehavingClients {
 public:
  struct FifoOptions {
    std::string fifo;
    std::string reply_dir;
    MisbehavingMix mix;
    // Command and argument lines of the request never_read / slow_read clients send (its
    // reply should exceed a pipe buffer).
    std::vector<std::string> big_request = {"ul_dump"};
    size_t slow_read_bytes = 1024;
  };
  struct DatagramOptions {
    // UNIX socket path, or empty for UDP on 127.0.0.1:udp_port.
    std::string unix_path;
    std::string client_dir;
    int udp_port = 0;
    MisbehavingMix mix;
    // A whole datagram, e.g. ":get_statistics:\nall\n".
    std::string big_request = ":get_statistics:\nall\n";
    double requests_per_second = 2;
    // -1: net.unix.max_dgram_qlen + 6 (at most 600).
    int never_read_burst = -1;
    size_t slow_read_bytes = 1024;
  };

  static absl::StatusOr<std::unique_ptr<MisbehavingClients>> StartFifo(FifoOptions options);
  static absl::StatusOr<std::unique_ptr<MisbehavingClients>> StartDatagram(DatagramOptions options);

  // Stops the driver, closes every descriptor, removes every file it made.
  ~MisbehavingClients();
  MisbehavingClients(const MisbehavingClients&) = delete;
  MisbehavingClients& operator=(const MisbehavingClients&) = delete;

  int size() const { return static_cast<int>(clients_.size()); }
  MisbehavingFigures figures() const;

 private:
  enum class Kind { kNeverRead, kSlowRead, kIdle, kHalfSend, kNeverOpen };
  struct Client {
    Kind kind;
    int fd = -1;        // FIFO: reply FIFO read end; datagram: the socket
    int write_fd = -1;  // FIFO idle: its own descriptor on the request FIFO
    std::string path;   // reply FIFO or UNIX socket path
    std::string name;   // reply FIFO name
    // Next send (datagram; FIFO never_open) or next read (FIFO slow_read).
    std::chrono::steady_clock::time_point next;
    // Datagram slow_read: next read.
    std::chrono::steady_clock::time_point next_read;
  };

  MisbehavingClients() = default;
  void DriveFifo();
  void DriveDatagram();
  bool SendFifo(Client& client);
  void SendDatagram(Client& client);

  bool fifo_ = true;
  FifoOptions fifo_options_;
  DatagramOptions datagram_options_;
  int request_fd_ = -1;
  std::vector<Client> clients_;
  std::atomic<bool> stop_{false};
  // Wakes the datagram driver's pacing wait when stop_ is set.
  ::sipd::testing::StopSignal stop_signal_;
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> replies_ended_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::thread thread_;
};

}  // namespace sipd::legacy::testing
