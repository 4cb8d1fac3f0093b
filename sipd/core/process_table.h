// The process table (spec 10.1): one slot per sipd process, in fork order, in shared
// memory so `ps` in any process sees every slot.
//
// Thread/process-safety: slots are written by the attendant only (type before the fork,
// pid after it) and read by every process. A RobustMutex guards each read and write of a
// slot, so a reader never sees a half-written type; a reader killed while holding it does
// not block anybody (robust mutex). pid() alone is a lock-free atomic load.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sipd/api/module.h"
#include "sipd/core/shm.h"

namespace sipd {

class ProcessTable {
 public:
  // Longer types are truncated (spec types are far shorter).
  static constexpr size_t kMaxTypeLength = 127;

  // Allocates a table with `size` empty slots (pid 0, empty type) in `shm`.
  static absl::StatusOr<ProcessTable*> Create(SharedMemory& shm, int size);

  int size() const { return size_; }
  void SetType(int slot, std::string_view type);
  void SetPid(int slot, pid_t pid);
  pid_t pid(int slot) const;
  // The slot of `pid`, or -1.
  int FindSlot(pid_t pid) const;
  // Every slot, slot order.
  std::vector<ProcessInfo> Snapshot() const;

  // Public for construction in shared memory through SharedMemory::Construct.
  struct Slot {
    std::atomic<int> pid{0};
    char type[kMaxTypeLength + 1] = {};
  };
  ProcessTable(Slot* slots, int size) : slots_(slots), size_(size) {}

 private:
  mutable RobustMutex mutex_;
  Slot* slots_;
  int size_;
};

}  // namespace sipd
