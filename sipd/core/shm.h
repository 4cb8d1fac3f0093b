// Shared memory for all sipd processes (ARCHITECTURE.md "Shared state").
//
// One anonymous MAP_SHARED mapping is created in the attendant before the first fork,
// so it sits at the same address in every process. A Boost.Interprocess managed heap
// (rbtree best-fit allocator) lives in it; its own process-shared mutex guards
// allocation. Objects are placed in it with Construct<T>() or via ShmAllocator<T> for
// Boost.Interprocess containers. Pointers into it are valid in every process.
//
// Locks: RobustMutex (below) is a process-shared, robust pthread mutex: if its holder
// dies, the next Lock() recovers it (and reports that the protected data may be
// half-updated). Boost's own allocator mutex is not robust: never kill -9 a process
// while it allocates (no sipd process is killed that way on purpose).
#pragma once

#include <pthread.h>

#include <atomic>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace sipd {

// The heap uses Boost's process-shared mutex_family: several processes allocate from it
// concurrently (boost's default managed_external_buffer has a null mutex, which would
// corrupt the heap).
using ShmHeap = boost::interprocess::basic_managed_external_buffer<
    char, boost::interprocess::rbtree_best_fit<boost::interprocess::mutex_family>,
    boost::interprocess::iset_index>;
using ShmSegmentManager = ShmHeap::segment_manager;
template <typename T>
using ShmAllocator = boost::interprocess::allocator<T, ShmSegmentManager>;

class SharedMemory {
 public:
  // Maps `size` bytes of anonymous shared memory and builds the heap in it.
  static absl::StatusOr<std::unique_ptr<SharedMemory>> Create(size_t size);

  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  ShmSegmentManager* segment_manager() { return heap_.get_segment_manager(); }
  template <typename T>
  ShmAllocator<T> allocator() {
    return ShmAllocator<T>(segment_manager());
  }

  // Constructs an anonymous T in shared memory. Throws boost::interprocess::bad_alloc
  // when full (callers at start-up turn that into a startup error).
  template <typename T, typename... Args>
  T* Construct(Args&&... args) {
    T* p = heap_.construct<T>(boost::interprocess::anonymous_instance)(std::forward<Args>(args)...);
    live_objects_->fetch_add(1, std::memory_order_relaxed);
    NoteUsage();
    return p;
  }
  template <typename T>
  void Destroy(T* p) {
    heap_.destroy_ptr(p);
    live_objects_->fetch_sub(1, std::memory_order_relaxed);
  }
  // Raw bytes; nullptr when full.
  void* Allocate(size_t bytes);
  void Deallocate(void* p);

  // Statistics from the allocator itself (shmem group).
  size_t total_size() const;
  size_t free_size() const;
  size_t used_size() const { return total_size() - free_size(); }
  // Highest used_size() seen by any process (updated whenever stats are read or
  // memory is allocated through this class).
  size_t max_used_size() const;
  // Number of live blocks handed out by this class (allocations + constructed objects):
  // the allocator does not expose its free-list length, so this counts used blocks.
  size_t fragments() const;

 private:
  SharedMemory(boost::interprocess::mapped_region region);
  void NoteUsage() const;

  boost::interprocess::mapped_region region_;
  ShmHeap heap_;
  std::atomic<size_t>* max_used_ = nullptr;
  std::atomic<size_t>* live_objects_ = nullptr;
};

// A process-shared, robust mutex. Place it in shared memory.
// Thread/process-safety: that is its purpose. If the holder died, Lock() makes the mutex
// consistent again and returns true ("previous owner died"), so the caller can repair
// the data it protects.
class RobustMutex {
 public:
  RobustMutex();
  ~RobustMutex();
  RobustMutex(const RobustMutex&) = delete;
  RobustMutex& operator=(const RobustMutex&) = delete;

  // Returns true if the previous owner died while holding the lock.
  bool Lock();
  // Takes the lock only if it is free (never waits): kBusy when another thread or
  // process holds it, kOwnerDied when it was recovered from a holder that died (as
  // Lock()'s true). The caller holds the lock unless kBusy.
  enum class TryResult { kAcquired, kOwnerDied, kBusy };
  TryResult TryLock();
  void Unlock();
  // BasicLockable, for std::lock_guard / std::unique_lock.
  void lock() { Lock(); }
  void unlock() { Unlock(); }

 private:
  pthread_mutex_t mutex_;
};

}  // namespace sipd
