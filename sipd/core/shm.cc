#include "sipd/core/shm.h"

#include <boost/interprocess/anonymous_shared_memory.hpp>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sipd {

namespace bip = boost::interprocess;

absl::StatusOr<std::unique_ptr<SharedMemory>> SharedMemory::Create(size_t size) {
  try {
    bip::mapped_region region = bip::anonymous_shared_memory(size);
    auto shm = std::unique_ptr<SharedMemory>(new SharedMemory(std::move(region)));
    return shm;
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create ", size, " bytes of shared memory: ", e.what()));
  }
}

SharedMemory::SharedMemory(bip::mapped_region region)
    : region_(std::move(region)),
      heap_(bip::create_only, region_.get_address(), region_.get_size()) {
  max_used_ = heap_.construct<std::atomic<size_t>>(bip::anonymous_instance)(0);
  live_objects_ = heap_.construct<std::atomic<size_t>>(bip::anonymous_instance)(0);
  NoteUsage();
}

void* SharedMemory::Allocate(size_t bytes) {
  void* p = heap_.allocate(bytes, std::nothrow);
  if (p != nullptr) {
    live_objects_->fetch_add(1, std::memory_order_relaxed);
    NoteUsage();
  }
  return p;
}

void SharedMemory::Deallocate(void* p) {
  if (p == nullptr) return;
  heap_.deallocate(p);
  live_objects_->fetch_sub(1, std::memory_order_relaxed);
}

size_t SharedMemory::total_size() const { return heap_.get_size(); }
size_t SharedMemory::free_size() const { return heap_.get_free_memory(); }

void SharedMemory::NoteUsage() const {
  const size_t used = used_size();
  size_t seen = max_used_->load(std::memory_order_relaxed);
  while (used > seen && !max_used_->compare_exchange_weak(seen, used)) {
  }
}

size_t SharedMemory::max_used_size() const {
  NoteUsage();
  return max_used_->load(std::memory_order_relaxed);
}

size_t SharedMemory::fragments() const {
  // Boost declares these counters non-const although they only read.
  auto& heap = const_cast<ShmHeap&>(heap_);
  return heap.get_num_named_objects() + heap.get_num_unique_objects() +
         live_objects_->load(std::memory_order_relaxed);
}

RobustMutex::RobustMutex() {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&mutex_, &attr);
  pthread_mutexattr_destroy(&attr);
}

RobustMutex::~RobustMutex() { pthread_mutex_destroy(&mutex_); }

bool RobustMutex::Lock() {
  int rc = pthread_mutex_lock(&mutex_);
  if (rc == EOWNERDEAD) {
    pthread_mutex_consistent(&mutex_);
    return true;
  }
  return false;
}

RobustMutex::TryResult RobustMutex::TryLock() {
  const int rc = pthread_mutex_trylock(&mutex_);
  if (rc == 0) return TryResult::kAcquired;
  if (rc == EOWNERDEAD) {
    pthread_mutex_consistent(&mutex_);
    return TryResult::kOwnerDied;
  }
  return TryResult::kBusy;
}

void RobustMutex::Unlock() { pthread_mutex_unlock(&mutex_); }

}  // namespace sipd
