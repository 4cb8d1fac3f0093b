// Async MI replies across processes (spec 1.6): the shared-memory AsyncBackend.
//
// A fixed table of slots lives in shared memory, created by the attendant before the
// first fork, plus one eventfd per process-table slot (the "owner"). An MI process
// reserves a slot for a caller it holds; any process (a SIP worker that got the final
// SIP reply, the timer process) completes it: the reply is serialised into shared
// memory and the owner's eventfd is written, which wakes the owner's event loop. No
// lock is taken and nothing blocks on either side.
//
// Each slot is one 64-bit atomic word (generation << 32 | state) plus the reply bytes:
//   kFree --Reserve (owner)--> kPending --Complete (anyone)--> kCompleting --> kDone
//   kPending/kDone --Release (owner)--> kFree;  kDone --TryTake (owner)--> kFree
// Every transition is a compare-and-swap on the whole word, so a completion for a
// released (cancelled, timed-out) ticket fails even if the slot was reserved again
// meanwhile: the generation differs.
//
// A process that dies leaves its slots pending; its replacement (same owner index)
// reclaims them when it makes its dispatcher (ReclaimOwner), so nothing leaks across
// restarts. A completer that dies between kCompleting and kDone leaves that one slot
// stuck until the owner's restart; completers do nothing but copy bytes there.
//
// Thread/process-safety: everything is lock-free; views may be used from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/async.h"
#include "sipd/core/shm.h"

namespace sipd {

class ShmAsyncTable {
 public:
  // `slots` pending calls at most, shared by all owners; `owners` process-table slots.
  static absl::StatusOr<std::unique_ptr<ShmAsyncTable>> Create(SharedMemory& shm, size_t slots,
                                                               int owners);
  ~ShmAsyncTable();
  ShmAsyncTable(const ShmAsyncTable&) = delete;
  ShmAsyncTable& operator=(const ShmAsyncTable&) = delete;

  // The backend as process `owner` sees it (owner side bound to that owner; the
  // completer side works for every ticket). Valid as long as the table.
  mi::AsyncBackend& ForOwner(int owner);

  // Frees every slot `owner` left behind (called when a restarted process starts).
  void ReclaimOwner(int owner);

  size_t pending() const;
  size_t capacity() const { return capacity_; }
  // The owners' eventfds: every process keeps them (any process may complete a call).
  const std::vector<int>& wake_fds() const { return wake_fds_; }

 private:
  struct Slot;
  class View;

  ShmAsyncTable(SharedMemory& shm, Slot* slots, size_t capacity, std::vector<int> wake_fds);

  absl::StatusOr<mi::AsyncTicket> Reserve(int owner);
  void Release(int owner, mi::AsyncTicket ticket);
  std::optional<mi::AsyncResult> TryTake(int owner, mi::AsyncTicket ticket);
  bool Complete(mi::AsyncTicket ticket, const mi::Reply* reply);
  void Wake(int owner);
  void FreeBytes(Slot& slot);

  SharedMemory& shm_;
  Slot* const slots_;
  const size_t capacity_;
  // One eventfd per owner, created before the fork and inherited by every process.
  const std::vector<int> wake_fds_;
  std::vector<std::unique_ptr<View>> views_;
};

}  // namespace sipd
