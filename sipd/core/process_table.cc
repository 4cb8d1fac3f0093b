#include "sipd/core/process_table.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>

#include "absl/strings/str_cat.h"

namespace sipd {

absl::StatusOr<ProcessTable*> ProcessTable::Create(SharedMemory& shm, int size) {
  if (size <= 0) return absl::InvalidArgumentError("process table needs at least one slot");
  void* raw = shm.Allocate(sizeof(Slot) * static_cast<size_t>(size));
  if (raw == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for a process table of ", size, " slots"));
  }
  Slot* slots = static_cast<Slot*>(raw);
  for (int i = 0; i < size; ++i) new (&slots[i]) Slot();
  try {
    return shm.Construct<ProcessTable>(slots, size);
  } catch (const std::exception& e) {
    shm.Deallocate(raw);
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for the process table: ", e.what()));
  }
}

void ProcessTable::SetType(int slot, std::string_view type) {
  if (slot < 0 || slot >= size_) return;
  std::lock_guard<RobustMutex> lock(mutex_);
  const size_t n = std::min(type.size(), kMaxTypeLength);
  std::memcpy(slots_[slot].type, type.data(), n);
  slots_[slot].type[n] = '\0';
}

void ProcessTable::SetPid(int slot, pid_t pid) {
  if (slot < 0 || slot >= size_) return;
  slots_[slot].pid.store(pid, std::memory_order_release);
}

pid_t ProcessTable::pid(int slot) const {
  if (slot < 0 || slot >= size_) return 0;
  return slots_[slot].pid.load(std::memory_order_acquire);
}

int ProcessTable::FindSlot(pid_t pid) const {
  if (pid <= 0) return -1;
  for (int i = 0; i < size_; ++i) {
    if (slots_[i].pid.load(std::memory_order_acquire) == pid) return i;
  }
  return -1;
}

std::vector<ProcessInfo> ProcessTable::Snapshot() const {
  std::vector<ProcessInfo> out;
  out.reserve(static_cast<size_t>(size_));
  std::lock_guard<RobustMutex> lock(mutex_);
  for (int i = 0; i < size_; ++i) {
    out.push_back(ProcessInfo{i, slots_[i].pid.load(std::memory_order_acquire), slots_[i].type});
  }
  return out;
}

}  // namespace sipd
