// The core's threshold events, raised as OpenSIPS 1.11 raises them.
//
//   E_CORE_THRESHOLD      a SIP message took longer than `exec_msg_threshold`
//                         microseconds to process (1.11 execmsgthreshold): source "msg
//                         processing", time = microseconds it took, extra = the message
//                         (at most kMaxExtraBytes of it); logged as a warning too. Raised
//                         for every such message, as 1.11 does.
//   E_CORE_SHM_THRESHOLD  shared memory use crossed `shm_threshold` percent: usage
//                         (percent), threshold, used, size (bytes).
//   E_CORE_PKG_THRESHOLD  a process's private memory crossed `pkg_threshold` percent: the
//                         same and pid. sipd has no pkg pool: used/size are the process's
//                         pkmem figures (RssAnon / VmSize, sipd/core/proc_memory.h), the
//                         ones `get_statistics pkmem:` shows.
//
// Rate limit of the memory events (1.11 shm_threshold_check): the last percent raised is
// kept (for shm in shared memory, for pkg per process); an event is raised when usage is
// at or above the threshold and its percent differs from the last raised one, and once
// when usage falls back below the threshold after having been above it. So a steady
// usage above the threshold raises once, not per check.
//
// Cost on the hot path (SIP workers and TCP receivers wrap their message handler with
// Wrap()): nothing when all three are 0; with exec_msg_threshold, two steady-clock reads
// per message; with shm_threshold, one read of the allocator's free size per message
// (no lock); with pkg_threshold, a steady-clock read per message and a /proc/self/status
// read at most once per second.
//
// Thread/process-safety: Create() in the attendant before the fork; Wrap() and the
// checks from any process (the shm percent is an atomic in shared memory; two processes
// crossing at once raise at most once per percent change).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "sipd/core/event_bus.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip_transport.h"

namespace sipd {

struct ThresholdOptions {
  int64_t exec_msg_threshold_us = 0;  // 0 = off
  int shm_threshold = 0;              // percent, 0 = off
  int pkg_threshold = 0;              // percent, 0 = off
};

class ThresholdMonitor {
 public:
  // Bytes of the message given as E_CORE_THRESHOLD's `extra` at most.
  static constexpr size_t kMaxExtraBytes = 1024;

  // REQUIRES: attendant, before the fork; `shm` and `events` outlive the monitor.
  static absl::StatusOr<std::unique_ptr<ThresholdMonitor>> Create(SharedMemory& shm,
                                                                  const SipdEvents& events,
                                                                  ThresholdOptions options);

  bool active() const {
    return options_.exec_msg_threshold_us > 0 || options_.shm_threshold > 0 ||
           options_.pkg_threshold > 0;
  }
  // `handler` timed and followed by the memory checks; `handler` itself when all
  // thresholds are off. The monitor must outlive the result.
  SipMessageHandler Wrap(SipMessageHandler handler);

  // One message took `elapsed`: E_CORE_THRESHOLD if above exec_msg_threshold.
  void MessageProcessed(std::chrono::nanoseconds elapsed, std::string_view message) const;
  // The shm check (1.11's rule, see the file comment) with these figures.
  void CheckShm(uint64_t used, uint64_t size) const;
  // The pkg check of this process with these figures; `last_percent` is the process's
  // own state.
  void CheckPkg(uint64_t used, uint64_t size, int64_t& last_percent) const;

 private:
  ThresholdMonitor(SharedMemory& shm, const SipdEvents& events, ThresholdOptions options,
                   std::atomic<int64_t>* last_shm_percent)
      : shm_(shm), events_(events), options_(options), last_shm_percent_(last_shm_percent) {}

  SharedMemory& shm_;
  const SipdEvents& events_;
  const ThresholdOptions options_;
  std::atomic<int64_t>* const last_shm_percent_;  // in shared memory
};

}  // namespace sipd
