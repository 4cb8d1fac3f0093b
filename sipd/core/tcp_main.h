// The body of the `TCP main` process: accepts connections on every TCP listen socket and
// hands each to a TCP receiver (see sipd/core/tcp_transport.h for why and how).
//
// For each accepted connection: record it in the connection table (the least loaded
// receiver becomes its owner; a full table closes the connection at once, logged at most
// once a second), send the descriptor and the connection id to the owner with
// SCM_RIGHTS, close the local copy. A hand-off that fails (the owner's channel is full)
// drops the connection and frees its slot.
//
// Thread/process-safety: single-threaded; the only process holding the listen sockets.
#pragma once

#include "absl/status/status.h"
#include "sipd/api/module.h"
#include "sipd/core/tcp_transport.h"

namespace sipd {

class TcpMain {
 public:
  explicit TcpMain(TcpTransport& transport) : transport_(transport) {}

  // Accepts until core.stopping(); calls core.SyncLogLevel() at least every 200 ms.
  absl::Status Run(Core& core);

 private:
  void AcceptAll(const TcpTransport::ListenSocket& listener);

  TcpTransport& transport_;
  int64_t last_full_log_ms_ = 0;
};

// Sends `fd` and `id` over the unix datagram socket `channel` (SCM_RIGHTS). Returns false
// (errno set) if the message could not be queued.
bool SendDescriptor(int channel, int fd, uint64_t id);
// Receives one descriptor message; returns the descriptor (or -1, errno EAGAIN when none)
// and sets *id.
int ReceiveDescriptor(int channel, uint64_t* id);

}  // namespace sipd
