#include "sipd/modules/core/local_cache.h"

#include <atomic>
#include <cstring>
#include <new>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sipd/core/clock.h"
#include "spdlog/spdlog.h"

namespace sipd {

// One cached value: header, then attr bytes, then value bytes, in one shm block.
// Immutable once linked, except `next`.
struct LocalCache::Entry {
  std::atomic<Entry*> next{nullptr};
  int64_t expires_at_ms = 0;  // 0 = never
  uint32_t hash = 0;
  uint32_t attr_size = 0;
  uint32_t value_size = 0;

  char* data() { return reinterpret_cast<char*>(this + 1); }
  const char* data() const { return reinterpret_cast<const char*>(this + 1); }
  std::string_view attr() const { return {data(), attr_size}; }
  std::string_view value() const { return {data() + attr_size, value_size}; }
  size_t block_size() const { return sizeof(Entry) + attr_size + value_size; }
  bool Expired(int64_t now_ms) const { return expires_at_ms != 0 && now_ms >= expires_at_ms; }
};

// Everything but `mutex` is guarded by `mutex`; `head` is atomic so that list changes
// are single release stores (crash consistency, see header) and so that Expire() can
// skip empty buckets without locking.
struct LocalCache::Bucket {
  RobustMutex mutex;
  std::atomic<Entry*> head{nullptr};
  // What this bucket has added to Shared::entries / Shared::bytes.
  uint64_t entries = 0;
  uint64_t bytes = 0;
};

struct LocalCache::Shared {
  // Sum of the buckets' counts (exact while no holder has died; see header). Changed
  // only while holding the bucket lock of the entry concerned.
  std::atomic<uint64_t> entries{0};
  std::atomic<uint64_t> bytes{0};
  // Set when a bucket was repaired after its lock holder died.
  std::atomic<bool> recount_needed{false};
  size_t bucket_count = 0;
  Bucket* buckets = nullptr;
};

// Holds one bucket's lock; repairs the bucket if the previous holder died.
class LocalCache::BucketLock {
 public:
  BucketLock(Shared& shared, Bucket& bucket) : bucket_(bucket) {
    if (bucket_.mutex.Lock()) Repair(shared);
  }
  ~BucketLock() { bucket_.mutex.Unlock(); }
  BucketLock(const BucketLock&) = delete;
  BucketLock& operator=(const BucketLock&) = delete;

 private:
  void Repair(Shared& shared) {
    uint64_t entries = 0;
    uint64_t bytes = 0;
    for (Entry* e = bucket_.head.load(std::memory_order_acquire); e != nullptr;
         e = e->next.load(std::memory_order_acquire)) {
      ++entries;
      bytes += e->block_size();
    }
    spdlog::warn(
        "localcache: a process died holding a bucket lock; bucket repaired ({} entries, "
        "previously counted {})",
        entries, bucket_.entries);
    bucket_.entries = entries;
    bucket_.bytes = bytes;
    shared.recount_needed.store(true, std::memory_order_release);
  }

  Bucket& bucket_;
};

namespace {

// FNV-1a: stable across processes (unlike a seeded hash).
uint32_t HashAttr(std::string_view attr) {
  uint32_t h = 2166136261u;
  for (unsigned char c : attr) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

// Adds `amount` to `counter` unless that exceeds `limit`.
bool Reserve(std::atomic<uint64_t>& counter, uint64_t amount, uint64_t limit) {
  uint64_t current = counter.load(std::memory_order_relaxed);
  do {
    if (current + amount > limit) return false;
  } while (!counter.compare_exchange_weak(current, current + amount, std::memory_order_relaxed));
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalCache>> LocalCache::Create(SharedMemory& shm, Options options) {
  if (options.buckets == 0) return absl::InvalidArgumentError("localcache: zero buckets");
  if (options.max_attr_size == 0 || options.max_attr_size > UINT32_MAX ||
      options.max_value_size > UINT32_MAX) {
    return absl::InvalidArgumentError("localcache: bad attribute/value size limits");
  }
  if (options.max_bytes == 0) options.max_bytes = shm.total_size() / 4;
  if (!options.now_ms) options.now_ms = MonotonicMs;

  void* raw = shm.Allocate(sizeof(Shared) + options.buckets * sizeof(Bucket));
  if (raw == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("localcache: no shared memory for ", options.buckets, " buckets"));
  }
  auto* shared = new (raw) Shared();
  shared->bucket_count = options.buckets;
  shared->buckets = reinterpret_cast<Bucket*>(static_cast<char*>(raw) + sizeof(Shared));
  for (size_t i = 0; i < options.buckets; ++i) new (&shared->buckets[i]) Bucket();
  return std::unique_ptr<LocalCache>(new LocalCache(shm, shared, std::move(options)));
}

LocalCache::Bucket& LocalCache::BucketFor(uint32_t hash) const {
  return shared_->buckets[hash % shared_->bucket_count];
}

int64_t LocalCache::Now() const { return options_.now_ms(); }

absl::Status LocalCache::Store(std::string_view attr, std::string_view value,
                               std::chrono::seconds expires) {
  if (attr.empty()) return absl::InvalidArgumentError("localcache: empty attribute");
  if (attr.size() > options_.max_attr_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("localcache: attribute longer than ", options_.max_attr_size, " bytes"));
  }
  if (value.size() > options_.max_value_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("localcache: value longer than ", options_.max_value_size, " bytes"));
  }
  if (expires.count() < 0) return absl::InvalidArgumentError("localcache: negative expiry");

  const uint32_t hash = HashAttr(attr);
  const size_t block_size = sizeof(Entry) + attr.size() + value.size();
  void* raw = shm_.Allocate(block_size);
  if (raw == nullptr) return absl::ResourceExhaustedError("localcache: shared memory full");
  auto* entry = new (raw) Entry();
  entry->expires_at_ms = expires.count() == 0 ? 0 : Now() + expires.count() * 1000;
  entry->hash = hash;
  entry->attr_size = static_cast<uint32_t>(attr.size());
  entry->value_size = static_cast<uint32_t>(value.size());
  std::memcpy(entry->data(), attr.data(), attr.size());
  if (!value.empty()) std::memcpy(entry->data() + attr.size(), value.data(), value.size());

  Entry* replaced = nullptr;
  absl::Status status;
  {
    Bucket& bucket = BucketFor(hash);
    BucketLock lock(*shared_, bucket);
    std::atomic<Entry*>* link = &bucket.head;
    Entry* current = link->load(std::memory_order_relaxed);
    while (current != nullptr && !(current->hash == hash && current->attr() == attr)) {
      link = &current->next;
      current = link->load(std::memory_order_relaxed);
    }
    if (current == nullptr) {
      if (!Reserve(shared_->entries, 1, options_.max_entries)) {
        status = absl::ResourceExhaustedError(
            absl::StrCat("localcache: entry limit (", options_.max_entries, ") reached"));
      } else if (!Reserve(shared_->bytes, block_size, options_.max_bytes)) {
        shared_->entries.fetch_sub(1, std::memory_order_relaxed);
        status = absl::ResourceExhaustedError(
            absl::StrCat("localcache: byte limit (", options_.max_bytes, ") reached"));
      } else {
        ++bucket.entries;
        bucket.bytes += block_size;
        entry->next.store(nullptr, std::memory_order_relaxed);
        link->store(entry, std::memory_order_release);
      }
    } else {
      const size_t old_size = current->block_size();
      if (block_size > old_size &&
          !Reserve(shared_->bytes, block_size - old_size, options_.max_bytes)) {
        status = absl::ResourceExhaustedError(
            absl::StrCat("localcache: byte limit (", options_.max_bytes, ") reached"));
      } else {
        if (block_size < old_size) {
          shared_->bytes.fetch_sub(old_size - block_size, std::memory_order_relaxed);
        }
        bucket.bytes = bucket.bytes - old_size + block_size;
        entry->next.store(current->next.load(std::memory_order_relaxed), std::memory_order_relaxed);
        link->store(entry, std::memory_order_release);
        replaced = current;
      }
    }
  }
  if (!status.ok()) {
    shm_.Deallocate(entry);
    return status;
  }
  if (replaced != nullptr) shm_.Deallocate(replaced);
  return absl::OkStatus();
}

absl::StatusOr<std::string> LocalCache::Fetch(std::string_view attr) const {
  const uint32_t hash = HashAttr(attr);
  const int64_t now = Now();
  Bucket& bucket = BucketFor(hash);
  BucketLock lock(*shared_, bucket);
  for (Entry* e = bucket.head.load(std::memory_order_relaxed); e != nullptr;
       e = e->next.load(std::memory_order_relaxed)) {
    if (e->hash == hash && e->attr() == attr) {
      if (e->Expired(now)) break;
      return std::string(e->value());
    }
  }
  return absl::NotFoundError(absl::StrCat("localcache: no value for '", std::string(attr), "'"));
}

absl::Status LocalCache::Remove(std::string_view attr) {
  const uint32_t hash = HashAttr(attr);
  Entry* removed = nullptr;
  {
    Bucket& bucket = BucketFor(hash);
    BucketLock lock(*shared_, bucket);
    std::atomic<Entry*>* link = &bucket.head;
    for (Entry* e = link->load(std::memory_order_relaxed); e != nullptr;
         link = &e->next, e = link->load(std::memory_order_relaxed)) {
      if (e->hash == hash && e->attr() == attr) {
        link->store(e->next.load(std::memory_order_relaxed), std::memory_order_release);
        --bucket.entries;
        bucket.bytes -= e->block_size();
        shared_->entries.fetch_sub(1, std::memory_order_relaxed);
        shared_->bytes.fetch_sub(e->block_size(), std::memory_order_relaxed);
        removed = e;
        break;
      }
    }
  }
  if (removed == nullptr) {
    return absl::NotFoundError(absl::StrCat("localcache: no value for '", std::string(attr), "'"));
  }
  shm_.Deallocate(removed);
  return absl::OkStatus();
}

size_t LocalCache::Expire() {
  const int64_t now = Now();
  std::vector<Entry*> expired;
  for (size_t i = 0; i < shared_->bucket_count; ++i) {
    Bucket& bucket = shared_->buckets[i];
    if (bucket.head.load(std::memory_order_relaxed) == nullptr) continue;
    const size_t first = expired.size();
    {
      BucketLock lock(*shared_, bucket);
      std::atomic<Entry*>* link = &bucket.head;
      Entry* e = link->load(std::memory_order_relaxed);
      while (e != nullptr) {
        Entry* next = e->next.load(std::memory_order_relaxed);
        if (e->Expired(now)) {
          link->store(next, std::memory_order_release);
          --bucket.entries;
          bucket.bytes -= e->block_size();
          shared_->entries.fetch_sub(1, std::memory_order_relaxed);
          shared_->bytes.fetch_sub(e->block_size(), std::memory_order_relaxed);
          expired.push_back(e);
        } else {
          link = &e->next;
        }
        e = next;
      }
    }
    for (size_t j = first; j < expired.size(); ++j) shm_.Deallocate(expired[j]);
  }
  if (shared_->recount_needed.exchange(false, std::memory_order_acq_rel)) Recount();
  return expired.size();
}

void LocalCache::Recount() {
  // Every count change happens under its bucket lock, so with all locks held the
  // totals must equal the sum of the (repaired) bucket counts.
  std::vector<std::unique_ptr<BucketLock>> locks;
  locks.reserve(shared_->bucket_count);
  uint64_t entries = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < shared_->bucket_count; ++i) {
    locks.push_back(std::make_unique<BucketLock>(*shared_, shared_->buckets[i]));
    entries += shared_->buckets[i].entries;
    bytes += shared_->buckets[i].bytes;
  }
  const uint64_t old_entries = shared_->entries.exchange(entries, std::memory_order_relaxed);
  const uint64_t old_bytes = shared_->bytes.exchange(bytes, std::memory_order_relaxed);
  if (old_entries != entries || old_bytes != bytes) {
    spdlog::warn("localcache: recount corrected totals from {} entries/{} bytes to {}/{}",
                 old_entries, old_bytes, entries, bytes);
  }
}

size_t LocalCache::size() const { return shared_->entries.load(std::memory_order_relaxed); }
size_t LocalCache::bytes() const { return shared_->bytes.load(std::memory_order_relaxed); }

RobustMutex& LocalCache::BucketMutexForTesting(std::string_view attr) {
  return BucketFor(HashAttr(attr)).mutex;
}

}  // namespace sipd
