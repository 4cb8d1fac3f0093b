// The "local" cache system: a key/value cache in shared memory, the store behind the
// cache_store / cache_fetch / cache_remove MI commands (OpenSIPS localcache,
// `cachedb_url = "local://"`). Other modules may use it through the same API.
//
// Layout: a fixed array of buckets in shared memory; each bucket is a singly linked list
// of entries with its own RobustMutex. An entry is one shared-memory block holding its
// attribute, its value and an absolute expiry time (0 = never). Expired entries are
// invisible to Fetch() at once and are freed by Expire(), which the core registers as
// the "localcache" timer (every second).
//
// Limits: attribute and value sizes, the number of entries and the bytes used by entries
// are bounded (Options); a Store() over a limit fails with ResourceExhausted and changes
// nothing. Values are opaque bytes.
//
// Thread/process-safety: Create() runs in the attendant before the first fork; the
// returned handle is then valid in every forked process (the mapping and the handle sit
// at the same addresses after fork). Store/Fetch/Remove/Expire may be called
// concurrently from any process and thread: each operation holds at most one bucket lock
// at a time (Expire's recount takes all of them in index order, so no deadlock is
// possible). Shared-memory allocation and release happen outside the bucket locks.
//
// What survives a process that dies while holding a bucket lock: every list change is a
// single atomic pointer store of a fully built entry (insert, replace) or of the
// successor (unlink), so the list is always well formed. The next locker gets
// "previous owner died" from the RobustMutex, walks the bucket to repair its entry/byte
// counts and flags a global recount, which the next Expire() performs under all bucket
// locks. Lost at most per death: one entry block (allocated but not yet linked, or
// unlinked but not yet freed) leaks, and the operation in flight may or may not have
// taken effect. A death inside the shared-memory allocator itself is not recoverable
// (see sipd/core/shm.h); that is why no bucket lock is held while allocating.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/core/shm.h"

namespace sipd {

class LocalCache {
 public:
  // The cache id the cache_* MI commands accept (first argument).
  static constexpr std::string_view kSystemName = "local";

  struct Options {
    // Number of hash buckets (each with its own lock). Must be > 0.
    size_t buckets = 512;
    size_t max_entries = 65536;
    size_t max_attr_size = 1024;
    size_t max_value_size = 64 * 1024;
    // Bytes all entries may use (headers included); 0 = a quarter of the shared memory.
    size_t max_bytes = 0;
    // Monotonic clock in milliseconds, the same in every process (default:
    // CLOCK_MONOTONIC). Tests inject a fake one.
    std::function<int64_t()> now_ms;
  };

  // Builds an empty cache in `shm`. InvalidArgument for bad options, ResourceExhausted
  // when the shared memory cannot hold the bucket array.
  // REQUIRES: called in the attendant before the first fork; `shm` outlives the cache.
  static absl::StatusOr<std::unique_ptr<LocalCache>> Create(SharedMemory& shm, Options options);
  static absl::StatusOr<std::unique_ptr<LocalCache>> Create(SharedMemory& shm) {
    return Create(shm, Options());
  }

  LocalCache(const LocalCache&) = delete;
  LocalCache& operator=(const LocalCache&) = delete;
  // Leaves the shared table alone (other processes may still use it).
  ~LocalCache() = default;

  // Stores `value` under `attr`, replacing any previous value and expiry. `expires` is
  // relative, 0 = never expires. InvalidArgument for an empty or too long attribute, a
  // too long value or a negative expiry; ResourceExhausted when the entry, byte or
  // shared-memory limit is reached (the old value, if any, is then kept).
  absl::Status Store(std::string_view attr, std::string_view value,
                     std::chrono::seconds expires = std::chrono::seconds(0));

  // The value under `attr`; NotFound if there is none or it has expired.
  absl::StatusOr<std::string> Fetch(std::string_view attr) const;

  // Removes `attr`; NotFound if there was no entry (an expired one is still removed).
  absl::Status Remove(std::string_view attr);

  // Frees every expired entry and, if a lock holder died since the last call, recounts
  // the totals. Returns the number of entries removed.
  size_t Expire();

  // Entries currently stored (expired ones not yet freed included) and their bytes.
  size_t size() const;
  size_t bytes() const;
  const Options& options() const { return options_; }

  // The lock of the bucket `attr` hashes to; lets tests simulate a holder that dies.
  RobustMutex& BucketMutexForTesting(std::string_view attr);

 private:
  struct Entry;
  struct Bucket;
  struct Shared;
  class BucketLock;

  LocalCache(SharedMemory& shm, Shared* shared, Options options)
      : shm_(shm), shared_(shared), options_(std::move(options)) {}

  Bucket& BucketFor(uint32_t hash) const;
  int64_t Now() const;
  void Recount();

  SharedMemory& shm_;
  Shared* shared_;
  Options options_;
};

}  // namespace sipd
