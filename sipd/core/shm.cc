#include "sipd/core/shm.h"

#include <spdlog/spdlog.h>

#include <boost/interprocess/anonymous_shared_memory.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sipd {

namespace bip = boost::interprocess;

namespace {

// Size classes of the block cache: a block of class c is (c + 1) * kGranule bytes, its
// header included, so the classes cover 32 to 2,048 bytes. Larger blocks go to the heap
// and back directly (kDirect).
constexpr size_t kGranule = 32;
constexpr uint32_t kClasses = 64;
constexpr uint32_t kDirect = UINT32_MAX;
constexpr uint32_t kMagic = 0x5b10c4ed;
// A list head packs the first block's offset from the mapping, in 16-byte units, with a
// tag that every change increments (so a block popped and pushed back between another
// process's read and its compare-and-swap fails that swap: no ABA).
constexpr uint64_t kOffsetMask = 0xffffffffu;
constexpr size_t kUnit = 16;
constexpr size_t kMaxMapping = (kOffsetMask + 1) * kUnit;  // 64 GiB

}  // namespace

// Put before every block that Allocate() hands out (16 bytes, so the caller's bytes keep
// the heap's 16-byte alignment).
struct SharedMemory::BlockHeader {
  // While the block is cached: the packed head of the rest of its list. Only the cache
  // writes it; callers own the bytes after the header.
  std::atomic<uint64_t> next{0};
  uint32_t size_class = kDirect;
  uint32_t magic = kMagic;
};
static_assert(sizeof(std::atomic<uint64_t>) == 8 && std::atomic<uint64_t>::is_always_lock_free);

// One lock-free LIFO list of free blocks per size class, shared by every process. A
// process that dies inside Allocate() or Deallocate() holds no lock: at worst the block
// it was moving is lost (neither cached nor handed out) and free_size() stays that
// block's size too high. The limit is checked before the block is counted, so racing
// processes may pass it by a block each.
struct SharedMemory::BlockCache {
  struct alignas(64) List {
    std::atomic<uint64_t> head{0};
  };
  List lists[kClasses];
  // Footprints (heap bytes) of the cached blocks.
  alignas(64) std::atomic<size_t> bytes{0};
};

absl::StatusOr<std::unique_ptr<SharedMemory>> SharedMemory::Create(size_t size) {
  if (size > kMaxMapping) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory of ", size, " bytes: at most ", kMaxMapping));
  }
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
  cache_ = heap_.construct<BlockCache>(bip::anonymous_instance)();
  NoteUsage();
}

namespace {

char* Base(const bip::mapped_region& region) { return static_cast<char*>(region.get_address()); }

}  // namespace

size_t SharedMemory::Footprint(const void* raw) const {
  return heap_.get_segment_manager()->size(raw) + ShmAlgorithm::PayloadPerAllocation;
}

void* SharedMemory::FromHeap(size_t bytes) {
  void* raw = heap_.allocate(bytes, std::nothrow);
  if (raw == nullptr && cached_size() > 0) {
    ReleaseCache();
    raw = heap_.allocate(bytes, std::nothrow);
  }
  return raw;
}

SharedMemory::BlockHeader* SharedMemory::Pop(uint32_t size_class) {
  std::atomic<uint64_t>& head = cache_->lists[size_class].head;
  uint64_t first = head.load(std::memory_order_acquire);
  while ((first & kOffsetMask) != 0) {
    auto* block = reinterpret_cast<BlockHeader*>(Base(region_) + (first & kOffsetMask) * kUnit);
    // Another process may take the block meanwhile (and even give it back to the heap):
    // then `next` is stale (the mapping stays, so the read is harmless) and the tag
    // makes the swap fail.
    const uint64_t next = block->next.load(std::memory_order_relaxed) & kOffsetMask;
    if (head.compare_exchange_weak(first, ((first >> 32) + 1) << 32 | next,
                                   std::memory_order_acquire, std::memory_order_acquire)) {
      cache_->bytes.fetch_sub(Footprint(block), std::memory_order_relaxed);
      return block;
    }
  }
  return nullptr;
}

bool SharedMemory::Push(BlockHeader* block) {
  const size_t footprint = Footprint(block);
  // A sixteenth of the heap at most sits in the cache (4 MiB of the default 64 MiB):
  // enough for the churn of thousands of transactions, little against a burst's peak.
  // Above it a freed block goes back to the heap.
  if (cache_->bytes.load(std::memory_order_relaxed) + footprint > total_size() / 16) return false;
  cache_->bytes.fetch_add(footprint, std::memory_order_relaxed);
  std::atomic<uint64_t>& head = cache_->lists[block->size_class].head;
  const uint64_t offset =
      static_cast<uint64_t>(reinterpret_cast<char*>(block) - Base(region_)) / kUnit;
  uint64_t first = head.load(std::memory_order_relaxed);
  do {
    block->next.store(first & kOffsetMask, std::memory_order_relaxed);
  } while (!head.compare_exchange_weak(first, ((first >> 32) + 1) << 32 | offset,
                                       std::memory_order_release, std::memory_order_relaxed));
  return true;
}

void* SharedMemory::Allocate(size_t bytes) {
  BlockHeader* header = nullptr;
  if (bytes <= kMaxCachedBytes) {
    const uint32_t size_class = static_cast<uint32_t>((bytes + sizeof(BlockHeader) - 1) / kGranule);
    header = Pop(size_class);
    if (header == nullptr) {
      void* raw = FromHeap((size_class + 1) * kGranule);
      if (raw == nullptr) return nullptr;
      header = new (raw) BlockHeader();
      header->size_class = size_class;
    }
  } else {
    void* raw = FromHeap(bytes + sizeof(BlockHeader));
    if (raw == nullptr) return nullptr;
    header = new (raw) BlockHeader();
  }
  live_objects_->fetch_add(1, std::memory_order_relaxed);
  NoteUsage();
  return header + 1;
}

void SharedMemory::Deallocate(void* p) {
  if (p == nullptr) return;
  BlockHeader* header = static_cast<BlockHeader*>(p) - 1;
  if (header->magic != kMagic) {
    // Not a block of Allocate()'s, or its header was overwritten: giving it to the heap
    // would corrupt the heap for every process.
    spdlog::critical("shm: Deallocate({}) of a block that Allocate() did not hand out", p);
    std::abort();
  }
  live_objects_->fetch_sub(1, std::memory_order_relaxed);
  if (header->size_class != kDirect && Push(header)) return;
  heap_.deallocate(header);
}

void SharedMemory::ReleaseCache() {
  for (uint32_t size_class = 0; size_class < kClasses; ++size_class) {
    while (BlockHeader* block = Pop(size_class)) heap_.deallocate(block);
  }
}

size_t SharedMemory::cached_size() const { return cache_->bytes.load(std::memory_order_relaxed); }

size_t SharedMemory::total_size() const { return heap_.get_size(); }
size_t SharedMemory::free_size() const { return heap_.get_free_memory() + cached_size(); }

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
