// Shared memory for all sipd processes (ARCHITECTURE.md "Shared state").
//
// One anonymous MAP_SHARED mapping is created in the attendant before the first fork,
// so it sits at the same address in every process. A Boost.Interprocess managed heap
// (rbtree best-fit allocator) lives in it; its own process-shared mutex guards
// allocation. Objects are placed in it with Construct<T>() or via ShmAllocator<T> for
// Boost.Interprocess containers. Pointers into it are valid in every process.
//
// Small blocks are recycled (BlockCache below): Allocate() takes a block of its size
// class from a lock-free free list before it asks the heap, and Deallocate() puts it
// back, so the steady churn of transactions, messages and contacts rarely reaches the
// heap's lock and tree.
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
using ShmAlgorithm = boost::interprocess::rbtree_best_fit<boost::interprocess::mutex_family>;
using ShmHeap = boost::interprocess::basic_managed_external_buffer<char, ShmAlgorithm,
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
  // Raw bytes, 16-byte aligned; nullptr when full. Blocks of up to kMaxCachedBytes come
  // from the block cache when it has one of their size class (any process may free a
  // block another allocated). When the heap is full, the cache is given back to it and
  // the allocation tried once more.
  void* Allocate(size_t bytes);
  void Deallocate(void* p);

  // Requests up to this size are served by the block cache.
  static constexpr size_t kMaxCachedBytes = 2048 - 16;

  // Statistics from the allocator itself (shmem group). Blocks kept in the cache count
  // as free: they are there for the next allocation of their size.
  size_t total_size() const;
  size_t free_size() const;
  size_t used_size() const { return total_size() - free_size(); }
  // Highest used_size() seen by any process (updated whenever stats are read or
  // memory is allocated through this class).
  size_t max_used_size() const;
  // Number of live blocks handed out by this class (allocations + constructed objects):
  // the allocator does not expose its free-list length, so this counts used blocks.
  size_t fragments() const;
  // Bytes of the heap held by the block cache (included in free_size()).
  size_t cached_size() const;
  // Gives every cached block back to the heap (done by Allocate() when the heap is full).
  void ReleaseCache();

 private:
  struct BlockCache;
  struct BlockHeader;

  SharedMemory(boost::interprocess::mapped_region region);
  void NoteUsage() const;
  // A block's bytes in the heap, its own header included: what the heap gains when the
  // block is freed.
  size_t Footprint(const void* raw) const;
  void* FromHeap(size_t bytes);
  // The block cache's lists: Pop takes a block of `size_class` (nullptr if none); Push
  // keeps `block` unless the cache is full (false: the caller frees it to the heap).
  BlockHeader* Pop(uint32_t size_class);
  bool Push(BlockHeader* block);

  boost::interprocess::mapped_region region_;
  ShmHeap heap_;
  std::atomic<size_t>* max_used_ = nullptr;
  std::atomic<size_t>* live_objects_ = nullptr;
  BlockCache* cache_ = nullptr;
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
