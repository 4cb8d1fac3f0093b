// Per-process memory figures for the `pkmem` statistics group.
//
// OpenSIPS reports its private (pkg) allocator per process. sipd uses the system
// allocator, so the figures come from the kernel instead (/proc/PID/status and
// /proc/PID/maps), in bytes:
//
//   i-total_size     = VmSize   (address space of the process)
//   i-used_size      = RssAnon  (resident private anonymous memory: heap, stacks)
//   i-real_used_size = VmRSS    (all resident memory, shared pages included)
//   i-max_used_size  = VmHWM    (peak of VmRSS)
//   i-free_size      = VmSize - VmRSS (mapped but not resident)
//   i-fragments      = number of memory mappings (lines of /proc/PID/maps)
//
// An empty slot (pid 0) or an unreadable /proc entry reads as all zeros.
//
// Thread-safety: ProcMemoryCache is internally locked (gRPC threads may read stats in
// parallel).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "absl/status/statusor.h"

namespace sipd {

struct ProcMemory {
  uint64_t total_size = 0;
  uint64_t used_size = 0;
  uint64_t real_used_size = 0;
  uint64_t max_used_size = 0;
  uint64_t free_size = 0;
  uint64_t fragments = 0;
};

absl::StatusOr<ProcMemory> ReadProcMemory(pid_t pid);

// Caches ReadProcMemory per pid for up to one second, so `get_statistics pkmem:`
// reads each process's /proc files once rather than six times (spec 7.4: values are
// refreshed lazily, at most once per second).
class ProcMemoryCache {
 public:
  ProcMemory Get(pid_t pid);

 private:
  struct Entry {
    std::chrono::steady_clock::time_point read_at;
    ProcMemory memory;
  };
  std::mutex mutex_;
  std::unordered_map<pid_t, Entry> entries_;
};

}  // namespace sipd
