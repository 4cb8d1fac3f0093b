// Reads the kernel's socket tables (/proc/net/udp, udp6, tcp, tcp6): the receive and
// send queues behind net:waiting_udp and net:waiting_tcp (as OpenSIPS 1.11 computes
// them, from the same files).
//
// Thread-safety: stateless.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"
#include "sipd/core/sip_transport.h"

namespace sipd {

struct ProcNetSocket {
  SipAddress local;
  int state = 0;  // TCP state (0x0A = LISTEN); UDP: 7
  uint64_t tx_queue = 0;
  uint64_t rx_queue = 0;
  uint64_t inode = 0;
};

// Calls `fn` for every socket listed in `path` (e.g. "/proc/net/udp"); `ipv6` tells the
// address format of that file. A missing file calls nothing.
void ForEachProcNetSocket(const char* path, bool ipv6,
                          absl::FunctionRef<void(const ProcNetSocket&)> fn);

}  // namespace sipd
