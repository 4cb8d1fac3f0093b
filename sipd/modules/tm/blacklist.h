// The blacklist of destinations that failed (spec 6, list_blacklists): a destination
// that answered 503 or did not answer at all (timer B/F) is kept for bl_timeout, and tm
// does not send to it meanwhile (the branch fails at once with 503).
//
// A fixed array in shared memory (created in the attendant before the fork) guarded by
// a RobustMutex; when it is full, the entry that expires first is replaced. Entries are
// plain values, so a holder that dies leaves at worst one half-written entry, which the
// next locker (EOWNERDEAD) clears. A relaxed count lets the send path skip the lock
// while the list is empty.
//
// Thread/process-safety: every method, any process and thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "sipd/core/shm.h"
#include "sipd/modules/tm/transaction_table.h"

namespace sipd::tm {

class Blacklist {
 public:
  struct Entry {
    Destination destination;
    int64_t expires_ms = 0;  // CLOCK_MONOTONIC
  };

  static absl::StatusOr<std::unique_ptr<Blacklist>> Create(SharedMemory& shm, size_t capacity);

  // Adds (or extends) `destination` until `until_ms`.
  void Add(const Destination& destination, int64_t until_ms);
  bool Contains(const Destination& destination, int64_t now_ms);
  // The live entries (expired ones are dropped on the way).
  std::vector<Entry> Snapshot(int64_t now_ms);
  size_t capacity() const;

  struct Shared;

 private:
  explicit Blacklist(Shared* shared) : shared_(shared) {}
  void Lock();
  Shared* shared_;
};

}  // namespace sipd::tm
