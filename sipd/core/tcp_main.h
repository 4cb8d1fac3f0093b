// The body of the `TCP main` process: accepts connections on every TCP listen socket and
// hands each to a TCP receiver (see sipd/core/tcp_transport.h for why and how).
//
// For each accepted connection: record it in the connection table (the least loaded
// receiver becomes its owner; a full table closes the connection at once, logged at most
// once a second), send the descriptor and the connection id to the owner with
// SCM_RIGHTS, close the local copy. The channel (a unix datagram socketpair) holds a few
// hundred messages (its send buffer), so a burst of accepts that finds the owner's
// channel full keeps the descriptors here (at most kMaxPending per receiver) and sends
// them when the channel is writable again; beyond that the connection is dropped and its
// slot freed.
//
// Thread/process-safety: single-threaded; the only process holding the listen sockets.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/status/status.h"
#include "sipd/api/module.h"
#include "sipd/core/tcp_transport.h"

namespace sipd {

class TcpMain {
 public:
  static constexpr size_t kMaxPending = 4096;

  explicit TcpMain(TcpTransport& transport) : transport_(transport) {}
  ~TcpMain();

  // Accepts until core.stopping(); calls core.SyncLogLevel() at least every 200 ms.
  absl::Status Run(Core& core);

 private:
  struct Pending {
    int fd;
    uint64_t id;
  };
  void AcceptAll(const TcpTransport::ListenSocket& listener);
  // Sends what waits for `receiver`, then watches its channel while anything is left.
  void HandOver(int receiver);

  TcpTransport& transport_;
  int epoll_ = -1;
  std::vector<std::deque<Pending>> pending_;
  std::vector<bool> watching_;
  int64_t last_full_log_ms_ = 0;
};

// Sends `fd` and `id` over the unix datagram socket `channel` (SCM_RIGHTS). Returns false
// (errno set) if the message could not be queued.
bool SendDescriptor(int channel, int fd, uint64_t id);
// Receives one descriptor message; returns the descriptor (or -1, errno EAGAIN when none)
// and sets *id.
int ReceiveDescriptor(int channel, uint64_t* id);

}  // namespace sipd
