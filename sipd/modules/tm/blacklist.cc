#include "sipd/modules/tm/blacklist.h"

#include <new>

namespace sipd::tm {

struct Blacklist::Shared {
  RobustMutex mutex;
  std::atomic<uint32_t> live{0};
  size_t capacity = 0;
  Entry entries[1];  // really `capacity`; expires_ms 0 = free
};

absl::StatusOr<std::unique_ptr<Blacklist>> Blacklist::Create(SharedMemory& shm, size_t capacity) {
  if (capacity == 0) capacity = 1;
  void* memory = shm.Allocate(sizeof(Shared) + sizeof(Entry) * capacity);
  if (memory == nullptr)
    return absl::ResourceExhaustedError("tm: no shared memory for the blacklist");
  auto* shared = new (memory) Shared();
  shared->capacity = capacity;
  for (size_t i = 0; i < capacity; ++i) new (&shared->entries[i]) Entry();
  return std::unique_ptr<Blacklist>(new Blacklist(shared));
}

size_t Blacklist::capacity() const { return shared_->capacity; }

void Blacklist::Lock() {
  if (shared_->mutex.Lock()) {
    // Entries are written field by field: drop any that looks half-written.
    uint32_t live = 0;
    for (size_t i = 0; i < shared_->capacity; ++i) {
      Entry& e = shared_->entries[i];
      if (e.expires_ms != 0 && e.destination.port() == 0) e.expires_ms = 0;
      if (e.expires_ms != 0) ++live;
    }
    shared_->live.store(live);
  }
}

void Blacklist::Add(const Destination& destination, int64_t until_ms) {
  Lock();
  Entry* slot = nullptr;
  for (size_t i = 0; i < shared_->capacity; ++i) {
    Entry& e = shared_->entries[i];
    if (e.expires_ms != 0 && e.destination.SameAddress(destination)) {
      slot = &e;
      break;
    }
    if (slot == nullptr || (slot->expires_ms != 0 && e.expires_ms < slot->expires_ms)) slot = &e;
  }
  if (slot->expires_ms == 0) shared_->live.fetch_add(1);
  slot->expires_ms = 0;
  slot->destination = destination;
  slot->destination.connection = 0;
  slot->expires_ms = until_ms;
  shared_->mutex.Unlock();
}

bool Blacklist::Contains(const Destination& destination, int64_t now_ms) {
  if (shared_->live.load(std::memory_order_relaxed) == 0) return false;
  Lock();
  bool found = false;
  for (size_t i = 0; i < shared_->capacity; ++i) {
    Entry& e = shared_->entries[i];
    if (e.expires_ms == 0) continue;
    if (e.expires_ms <= now_ms) {
      e.expires_ms = 0;
      shared_->live.fetch_sub(1);
      continue;
    }
    if (e.destination.SameAddress(destination)) found = true;
  }
  shared_->mutex.Unlock();
  return found;
}

std::vector<Blacklist::Entry> Blacklist::Snapshot(int64_t now_ms) {
  std::vector<Entry> out;
  Lock();
  for (size_t i = 0; i < shared_->capacity; ++i) {
    Entry& e = shared_->entries[i];
    if (e.expires_ms == 0) continue;
    if (e.expires_ms <= now_ms) {
      e.expires_ms = 0;
      shared_->live.fetch_sub(1);
      continue;
    }
    out.push_back(e);
  }
  shared_->mutex.Unlock();
  return out;
}

}  // namespace sipd::tm
