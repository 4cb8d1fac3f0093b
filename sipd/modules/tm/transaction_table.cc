#include "sipd/modules/tm/transaction_table.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sipd::tm {

std::string Destination::ip() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.generic.sa_family == AF_INET) {
    inet_ntop(AF_INET, &address.v4.sin_addr, text, sizeof(text));
  } else if (address.generic.sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &address.v6.sin6_addr, text, sizeof(text));
  }
  return text;
}

uint16_t Destination::port() const {
  if (address.generic.sa_family == AF_INET) return ntohs(address.v4.sin_port);
  if (address.generic.sa_family == AF_INET6) return ntohs(address.v6.sin6_port);
  return 0;
}

std::string Destination::ToString() const {
  const bool v6 = address.generic.sa_family == AF_INET6;
  return absl::StrCat(std::string(ProtoName(proto)), ":", v6 ? "[" : "", ip(), v6 ? "]" : "", ":",
                      port());
}

bool Destination::SameAddress(const Destination& other) const {
  if (proto != other.proto || address.generic.sa_family != other.address.generic.sa_family) {
    return false;
  }
  if (address.generic.sa_family == AF_INET) {
    return address.v4.sin_port == other.address.v4.sin_port &&
           address.v4.sin_addr.s_addr == other.address.v4.sin_addr.s_addr;
  }
  return address.v6.sin6_port == other.address.v6.sin6_port &&
         std::memcmp(&address.v6.sin6_addr, &other.address.v6.sin6_addr, 16) == 0;
}

bool MakeDestination(Proto proto, std::string_view ip, uint16_t port, Destination* out) {
  std::string text(ip);
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  Destination d;
  d.proto = proto;
  if (inet_pton(AF_INET, text.c_str(), &d.address.v4.sin_addr) == 1) {
    d.address.v4.sin_family = AF_INET;
    d.address.v4.sin_port = htons(port);
  } else if (inet_pton(AF_INET6, text.c_str(), &d.address.v6.sin6_addr) == 1) {
    d.address.v6.sin6_family = AF_INET6;
    d.address.v6.sin6_port = htons(port);
  } else {
    return false;
  }
  *out = d;
  return true;
}

// A sentinel per slot: circular doubly linked lists.
struct TransactionTable::Wheel {
  RobustMutex mutex;
  uint32_t epoch = 1;
  bool rebuild = false;
  int64_t last_ms = 0;  // every slot up to this time has been collected
  TimerLink heads[kSlots];
};

struct TransactionTable::Recent {
  static constexpr uint32_t kSlots = 1u << 18;  // 4 MB
  struct Slot {
    std::atomic<uint64_t> fingerprint{0};
    std::atomic<int64_t> until_ms{0};
  };
  Slot slots[kSlots];
};

namespace {

void ResetHeads(TransactionTable::Wheel& wheel) {
  for (TimerLink& head : wheel.heads) {
    head.prev = &head;
    head.next = &head;
  }
}

int64_t SlotTime(int64_t ms) { return ms / TransactionTable::kTickMs; }

}  // namespace

absl::StatusOr<std::unique_ptr<TransactionTable>> TransactionTable::Create(SharedMemory& shm,
                                                                           mi::Counter inuse,
                                                                           int64_t now_ms) {
  void* bucket_memory = shm.Allocate(sizeof(Bucket) * kBuckets);
  void* wheel_memory = shm.Allocate(sizeof(Wheel));
  void* recent_memory = shm.Allocate(sizeof(Recent));
  if (bucket_memory == nullptr || wheel_memory == nullptr || recent_memory == nullptr) {
    shm.Deallocate(bucket_memory);
    shm.Deallocate(wheel_memory);
    shm.Deallocate(recent_memory);
    return absl::ResourceExhaustedError(
        absl::StrCat("tm: no shared memory for the transaction table (",
                     (sizeof(Bucket) * kBuckets + sizeof(Wheel) + sizeof(Recent)) >> 20, " MB)"));
  }
  auto* recent = new (recent_memory) Recent();
  auto* buckets = static_cast<Bucket*>(bucket_memory);
  for (uint32_t i = 0; i < kBuckets; ++i) new (&buckets[i]) Bucket();
  auto* wheel = new (wheel_memory) Wheel();
  ResetHeads(*wheel);
  wheel->last_ms = now_ms;
  return std::unique_ptr<TransactionTable>(
      new TransactionTable(shm, buckets, wheel, recent, inuse));
}

TransactionTable::TransactionTable(SharedMemory& shm, Bucket* buckets, Wheel* wheel, Recent* recent,
                                   mi::Counter inuse)
    : shm_(shm), buckets_(buckets), wheel_(wheel), recent_(recent), inuse_(inuse) {}

uint64_t TransactionTable::Fingerprint(std::string_view key) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h == 0 ? 1 : h;
}

void TransactionTable::RememberEnded(uint64_t fingerprint, int64_t now_ms, int64_t until_ms) {
  for (uint32_t i = 0; i < 8; ++i) {
    Recent::Slot& slot = recent_->slots[(fingerprint + i) % Recent::kSlots];
    const uint64_t current = slot.fingerprint.load(std::memory_order_acquire);
    const int64_t until = slot.until_ms.load(std::memory_order_acquire);
    if (current == fingerprint || current == 0 || until <= now_ms) {
      // Expiry first: a reader that sees the new fingerprint with the old (expired)
      // expiry just misses it.
      slot.until_ms.store(until_ms, std::memory_order_release);
      slot.fingerprint.store(fingerprint, std::memory_order_release);
      return;
    }
  }
}

bool TransactionTable::RecentlyEnded(uint64_t fingerprint, int64_t now_ms) const {
  for (uint32_t i = 0; i < 8; ++i) {
    const Recent::Slot& slot = recent_->slots[(fingerprint + i) % Recent::kSlots];
    if (slot.fingerprint.load(std::memory_order_acquire) == fingerprint &&
        slot.until_ms.load(std::memory_order_acquire) > now_ms) {
      return true;
    }
  }
  return false;
}

// The shared memory outlives every process; nothing to free here.
TransactionTable::~TransactionTable() = default;

Bucket& TransactionTable::LockBucket(uint32_t index, int64_t now_ms) {
  Bucket& bucket = buckets_[index % kBuckets];
  if (bucket.mutex.Lock()) RepairBucket(bucket, now_ms);
  return bucket;
}

void TransactionTable::RepairBucket(Bucket& bucket, int64_t now_ms) {
  uint32_t count = 0;
  for (Cell* c = bucket.first.load(std::memory_order_acquire); c != nullptr;
       c = c->next.load(std::memory_order_acquire)) {
    ++count;
    // The cell may be half-updated: end it. Its other timers are disarmed so that
    // nothing but the deletion runs.
    ForEachLink(*c, [this](TimerLink& link) { Disarm(link); });
    c->ended = true;
    c->final_sent = true;
    Arm(c->wait, now_ms);
  }
  spdlog::warn("tm: a process died holding a transaction bucket lock; {} transaction(s) ended",
               count);
  const uint32_t before = bucket.current.load();
  if (count > before) inuse_.Inc(count - before);
  if (count < before) inuse_.Dec(before - count);
  bucket.current.store(count);
}

uint32_t TransactionTable::current(uint32_t index) const {
  return buckets_[index % kBuckets].current.load(std::memory_order_relaxed);
}

uint64_t TransactionTable::total(uint32_t index) const {
  return buckets_[index % kBuckets].total.load(std::memory_order_relaxed);
}

Cell* TransactionTable::NewCell(Bucket& bucket, uint32_t index, uint32_t branches) {
  void* memory = shm_.Allocate(sizeof(Cell));
  if (memory == nullptr) return nullptr;
  Cell* cell = new (memory) Cell();
  cell->index = index % kBuckets;
  if (branches > 0 && !SetBranchCount(*cell, branches)) {
    cell->~Cell();
    shm_.Deallocate(cell);
    return nullptr;
  }
  cell->label = bucket.next_label++;
  if (bucket.next_label == 0) bucket.next_label = 1;
  ForEachLink(*cell, [cell](TimerLink& link) {
    link.index = cell->index;
    link.label = cell->label;
  });
  cell->server_retransmit.kind = TimerKind::kServerRetransmit;
  cell->wait.kind = TimerKind::kWait;
  cell->next.store(bucket.first.load(std::memory_order_acquire), std::memory_order_release);
  bucket.first.store(cell, std::memory_order_release);
  ++bucket.current;
  ++bucket.total;
  inuse_.Inc();
  return cell;
}

bool TransactionTable::SetBranchCount(Cell& cell, uint32_t count) {
  count = std::min(count, kMaxBranches);
  if (count <= cell.branch_count) return true;
  void* memory = shm_.Allocate(sizeof(Branch) * count);
  if (memory == nullptr) return false;
  auto* fresh = static_cast<Branch*>(memory);
  for (uint32_t i = 0; i < count; ++i) new (&fresh[i]) Branch();
  // Armed links of the old branches must be relinked at their new address.
  for (uint32_t i = 0; i < cell.branch_count; ++i) {
    Branch& old = cell.branches[i];
    fresh[i] = old;
    TimerLink* old_links[] = {&old.retransmit, &old.timeout, &old.cancel_retransmit,
                              &old.cancel_timeout};
    TimerLink* new_links[] = {&fresh[i].retransmit, &fresh[i].timeout, &fresh[i].cancel_retransmit,
                              &fresh[i].cancel_timeout};
    for (int k = 0; k < 4; ++k) {
      new_links[k]->armed = false;
      new_links[k]->prev = new_links[k]->next = nullptr;
      if (old_links[k]->armed) {
        const int64_t due = old_links[k]->due_ms;
        Disarm(*old_links[k]);
        Arm(*new_links[k], due);
      }
    }
  }
  for (uint32_t i = cell.branch_count; i < count; ++i) {
    const TimerKind kinds[] = {TimerKind::kBranchRetransmit, TimerKind::kBranchTimeout,
                               TimerKind::kCancelRetransmit, TimerKind::kCancelTimeout};
    TimerLink* links[] = {&fresh[i].retransmit, &fresh[i].timeout, &fresh[i].cancel_retransmit,
                          &fresh[i].cancel_timeout};
    for (int k = 0; k < 4; ++k) {
      links[k]->kind = kinds[k];
      links[k]->branch = static_cast<uint8_t>(i);
      links[k]->index = cell.index;
      links[k]->label = cell.label;
    }
  }
  Branch* old = cell.branches;
  cell.branches = fresh;
  cell.branch_count = static_cast<uint8_t>(count);
  if (old != nullptr) shm_.Deallocate(old);
  return true;
}

Cell* TransactionTable::FindByLabel(Bucket& bucket, uint32_t label) {
  for (Cell* c = bucket.first.load(std::memory_order_acquire); c != nullptr;
       c = c->next.load(std::memory_order_acquire)) {
    if (c->label == label) return c;
  }
  return nullptr;
}

void TransactionTable::DeleteCell(Bucket& bucket, Cell* cell) {
  std::atomic<Cell*>* link = &bucket.first;
  for (Cell* c = link->load(std::memory_order_acquire); c != nullptr;
       c = link->load(std::memory_order_acquire)) {
    if (c == cell) {
      link->store(c->next.load(std::memory_order_acquire), std::memory_order_release);
      if (bucket.current.load() > 0) bucket.current.fetch_sub(1);
      inuse_.Dec();
      break;
    }
    link = &c->next;
  }
  ForEachLink(*cell, [this](TimerLink& l) { Disarm(l); });
  FreeCellMemory(cell);
}

void TransactionTable::FreeCellMemory(Cell* cell) {
  ShmBuffer* buffers[] = {&cell->key,     &cell->call_id,    &cell->from_tag,
                          &cell->request, &cell->last_reply, &cell->completion_data};
  for (ShmBuffer* b : buffers) Release(*b);
  for (uint32_t i = 0; i < cell->branch_count; ++i) {
    Branch& b = cell->branches[i];
    Release(b.request);
    Release(b.reply);
    Release(b.cancel);
    Release(b.ack);
  }
  if (cell->branches != nullptr) shm_.Deallocate(cell->branches);
  cell->~Cell();
  shm_.Deallocate(cell);
}

bool TransactionTable::Assign(ShmBuffer& buffer, std::string_view bytes) {
  if (buffer.size == bytes.size() && buffer.data != nullptr) {
    std::memcpy(buffer.data, bytes.data(), bytes.size());
    return true;
  }
  Release(buffer);
  if (bytes.empty()) return true;
  void* memory = shm_.Allocate(bytes.size());
  if (memory == nullptr) return false;
  std::memcpy(memory, bytes.data(), bytes.size());
  buffer.data = static_cast<char*>(memory);
  buffer.size = static_cast<uint32_t>(bytes.size());
  return true;
}

void TransactionTable::Release(ShmBuffer& buffer) {
  if (buffer.data != nullptr) shm_.Deallocate(buffer.data);
  buffer.data = nullptr;
  buffer.size = 0;
}

size_t TransactionTable::LockedBucketsForTesting() {
  size_t locked = 0;
  for (uint32_t i = 0; i < kBuckets; ++i) {
    if (buckets_[i].mutex.TryLock() == RobustMutex::TryResult::kBusy) {
      ++locked;
    } else {
      buckets_[i].mutex.Unlock();
    }
  }
  return locked;
}

void TransactionTable::LockWheel() {
  if (wheel_->mutex.Lock()) {
    // Its holder died: the lists may be inconsistent. Start a new epoch (see header).
    ++wheel_->epoch;
    ResetHeads(*wheel_);
    wheel_->rebuild = true;
    spdlog::warn("tm: a process died holding the timer lock; timers are re-armed from the table");
  }
}

void TransactionTable::Arm(TimerLink& link, int64_t due_ms) {
  LockWheel();
  if (link.armed && link.epoch == wheel_->epoch) {
    link.prev->next = link.next;
    link.next->prev = link.prev;
  }
  // A timer due before the wheel's position would never be collected from its slot.
  due_ms = std::max(due_ms, wheel_->last_ms + kTickMs);
  TimerLink& head = wheel_->heads[static_cast<uint64_t>(SlotTime(due_ms)) % kSlots];
  link.due_ms = due_ms;
  link.epoch = wheel_->epoch;
  ++link.generation;
  link.armed = true;
  link.prev = &head;
  link.next = head.next;
  head.next->prev = &link;
  head.next = &link;
  wheel_->mutex.Unlock();
}

void TransactionTable::Disarm(TimerLink& link) {
  if (!link.armed) return;
  LockWheel();
  if (link.armed && link.epoch == wheel_->epoch) {
    link.prev->next = link.next;
    link.next->prev = link.prev;
  }
  link.prev = link.next = nullptr;
  link.armed = false;
  ++link.generation;
  wheel_->mutex.Unlock();
}

void TransactionTable::CollectDue(int64_t now_ms, std::vector<DueTimer>& out) {
  LockWheel();
  int64_t from = SlotTime(wheel_->last_ms) + 1;
  const int64_t to = SlotTime(now_ms);
  // After a long stall, one revolution covers every slot.
  if (to - from >= static_cast<int64_t>(kSlots)) from = to - kSlots + 1;
  for (int64_t t = from; t <= to; ++t) {
    TimerLink& head = wheel_->heads[static_cast<uint64_t>(t) % kSlots];
    for (TimerLink* link = head.next; link != &head;) {
      TimerLink* next = link->next;
      if (SlotTime(link->due_ms) <= to) {
        link->prev->next = link->next;
        link->next->prev = link->prev;
        link->prev = link->next = nullptr;
        link->armed = false;
        out.push_back(
            DueTimer{link->index, link->label, link->kind, link->branch, link->generation});
      }
      link = next;
    }
  }
  if (now_ms > wheel_->last_ms) wheel_->last_ms = now_ms - now_ms % kTickMs;
  wheel_->mutex.Unlock();
}

size_t TransactionTable::RebuildIfNeeded(int64_t now_ms) {
  LockWheel();
  const bool rebuild = wheel_->rebuild;
  wheel_->rebuild = false;
  const uint32_t epoch = wheel_->epoch;
  wheel_->mutex.Unlock();
  if (!rebuild) return 0;
  size_t rearmed = 0;
  for (uint32_t i = 0; i < kBuckets; ++i) {
    Bucket& bucket = LockBucket(i, now_ms);
    for (Cell* c = bucket.first.load(std::memory_order_acquire); c != nullptr;
         c = c->next.load(std::memory_order_acquire)) {
      ForEachLink(*c, [&](TimerLink& link) {
        if (link.armed && link.epoch != epoch) {
          link.armed = false;  // its old neighbours are gone
          Arm(link, std::max(link.due_ms, now_ms));
          ++rearmed;
        }
      });
    }
    UnlockBucket(bucket);
  }
  spdlog::warn("tm: re-armed {} timers after the timer lock was recovered", rearmed);
  return rearmed;
}

}  // namespace sipd::tm
