#include "sipd/core/tcp_conn_table.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace sipd {

struct TcpConnTable::Message {
  Message* next;
  uint32_t size;
  char* data() { return reinterpret_cast<char*>(this + 1); }
};

struct TcpConnTable::Slot {
  std::atomic<uint64_t> id{0};  // 0 = free
  uint64_t generation = 0;
  std::atomic<int> state{0};
  std::atomic<int> owner{0};
  int socket = -1;
  bool outbound = false;
  bool in_work = false;
  bool indexed = false;
  bool adopted = false;
  SipAddress peer;
  SipAddress local;
  std::atomic<int64_t> last_activity_ms{0};
  std::atomic<uint64_t> owner_queued{0};
  std::atomic<uint64_t> inbox_bytes{0};
  Message* inbox_head = nullptr;
  Message* inbox_tail = nullptr;
  int32_t next_in_bucket = -1;
  int32_t next_free = -1;
  int32_t next_work = -1;
};

struct TcpConnTable::Header {
  RobustMutex mutex;
  int32_t free_head = -1;
  size_t used = 0;
  // One past the highest slot ever allocated: walks stop there. The free list hands out
  // the most recently freed slot first (and starts at slot 0), so in-use slots stay low.
  std::atomic<size_t> high_water{0};
};

namespace {

uint64_t HashBytes(uint64_t hash, const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    hash ^= p[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

bool IsOpen(int state) { return state != static_cast<int>(TcpState::kEof); }

}  // namespace

int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::StatusOr<TcpConnTable*> TcpConnTable::Create(SharedMemory& shm, Limits limits) {
  if (limits.capacity == 0 || limits.owners <= 0) {
    return absl::InvalidArgumentError("TCP connection table: no capacity or no receivers");
  }
  size_t buckets = 1;
  while (buckets < limits.capacity * 2) buckets <<= 1;
  auto* table = new TcpConnTable();  // process-local handle, inherited through fork
  table->shm_ = &shm;
  table->capacity_ = limits.capacity;
  table->bucket_count_ = buckets;
  table->owners_ = limits.owners;
  try {
    table->header_ = shm.Construct<Header>();
  } catch (const std::exception& e) {
    delete table;
    return absl::ResourceExhaustedError(absl::StrCat("TCP connection table: ", e.what()));
  }
  void* slots = shm.Allocate(sizeof(Slot) * limits.capacity);
  void* bucket_memory = shm.Allocate(sizeof(int32_t) * buckets);
  void* owner_memory = shm.Allocate(sizeof(int32_t) * 2 * static_cast<size_t>(limits.owners));
  if (slots == nullptr || bucket_memory == nullptr || owner_memory == nullptr) {
    delete table;
    return absl::ResourceExhaustedError(absl::StrCat(
        "no shared memory for a TCP connection table of ", limits.capacity, " connections"));
  }
  table->slots_ = static_cast<Slot*>(slots);
  for (size_t i = 0; i < limits.capacity; ++i) new (&table->slots_[i]) Slot();
  table->buckets_ = static_cast<int32_t*>(bucket_memory);
  for (size_t i = 0; i < buckets; ++i) table->buckets_[i] = -1;
  table->work_heads_ = static_cast<int32_t*>(owner_memory);
  table->owner_counts_ = table->work_heads_ + limits.owners;
  for (int i = 0; i < limits.owners; ++i) {
    table->work_heads_[i] = -1;
    table->owner_counts_[i] = 0;
  }
  // Free list in index order.
  for (size_t i = limits.capacity; i-- > 0;) {
    table->slots_[i].next_free = table->header_->free_head;
    table->header_->free_head = static_cast<int32_t>(i);
  }
  return table;
}

TcpConnTable::Slot* TcpConnTable::SlotOf(uint64_t id) const {
  if (id == 0) return nullptr;
  Slot& s = slots_[(id - 1) % capacity_];
  return s.id.load(std::memory_order_acquire) == id ? &s : nullptr;
}

size_t TcpConnTable::Bucket(const SipAddress& peer) const {
  uint64_t hash = 1469598103934665603ull;
  const uint16_t port = peer.port();
  hash = HashBytes(hash, &port, sizeof(port));
  if (peer.ipv6()) {
    hash = HashBytes(hash, &reinterpret_cast<const sockaddr_in6&>(peer.storage).sin6_addr, 16);
  } else {
    hash = HashBytes(hash, &reinterpret_cast<const sockaddr_in&>(peer.storage).sin_addr, 4);
  }
  return static_cast<size_t>(hash) & (bucket_count_ - 1);
}

void TcpConnTable::Repair() const {
  // Everything derived is rebuilt from the slots' ids, states and inbox heads.
  header_->free_head = -1;
  header_->used = 0;
  for (size_t i = 0; i < bucket_count_; ++i) buckets_[i] = -1;
  for (int o = 0; o < owners_; ++o) {
    work_heads_[o] = -1;
    owner_counts_[o] = 0;
  }
  for (size_t i = capacity_; i-- > 0;) {
    Slot& s = slots_[i];
    s.next_in_bucket = -1;
    s.next_work = -1;
    s.indexed = false;
    if (s.id.load() == 0) {
      s.inbox_head = s.inbox_tail = nullptr;
      s.inbox_bytes.store(0);
      s.in_work = false;
      s.next_free = header_->free_head;
      header_->free_head = static_cast<int32_t>(i);
      continue;
    }
    ++header_->used;
    const int owner = s.owner.load();
    if (owner >= 0 && owner < owners_) ++owner_counts_[owner];
    uint64_t bytes = 0;
    Message* tail = nullptr;
    size_t steps = 0;
    for (Message* m = s.inbox_head; m != nullptr && steps < (1u << 20); m = m->next, ++steps) {
      bytes += m->size;
      tail = m;
    }
    if (tail != nullptr) tail->next = nullptr;
    s.inbox_tail = tail;
    s.inbox_bytes.store(bytes);
    if (IsOpen(s.state.load())) {
      const size_t b = Bucket(s.peer);
      s.next_in_bucket = buckets_[b];
      buckets_[b] = static_cast<int32_t>(i);
      s.indexed = true;
    }
    const bool needs_work =
        s.inbox_head != nullptr || s.state.load() == static_cast<int>(TcpState::kConnecting);
    s.in_work = needs_work && owner >= 0 && owner < owners_;
    if (s.in_work) {
      s.next_work = work_heads_[owner];
      work_heads_[owner] = static_cast<int32_t>(i);
    }
  }
}

void TcpConnTable::LockTable() const {
  if (header_->mutex.Lock()) Repair();
}

int TcpConnTable::LeastLoadedOwner() const {
  int best = 0;
  for (int o = 1; o < owners_; ++o) {
    if (owner_counts_[o] < owner_counts_[best]) best = o;
  }
  return best;
}

TcpConnTable::Slot* TcpConnTable::AllocateSlot(int owner) {
  const int32_t index = header_->free_head;
  if (index < 0) return nullptr;
  Slot& s = slots_[index];
  if (static_cast<size_t>(index) >= header_->high_water.load(std::memory_order_relaxed)) {
    header_->high_water.store(static_cast<size_t>(index) + 1, std::memory_order_release);
  }
  header_->free_head = s.next_free;
  s.next_free = -1;
  ++s.generation;
  s.owner.store(owner);
  s.socket = -1;
  s.outbound = false;
  s.in_work = false;
  s.indexed = false;
  s.adopted = false;
  s.peer = SipAddress();
  s.local = SipAddress();
  s.last_activity_ms.store(WallClockMs());
  s.owner_queued.store(0);
  s.inbox_bytes.store(0);
  s.inbox_head = s.inbox_tail = nullptr;
  s.next_in_bucket = -1;
  s.next_work = -1;
  ++header_->used;
  ++owner_counts_[owner];
  return &s;
}

void TcpConnTable::IndexInsert(Slot& s) {
  if (s.indexed) return;
  const size_t b = Bucket(s.peer);
  s.next_in_bucket = buckets_[b];
  buckets_[b] = static_cast<int32_t>(&s - slots_);
  s.indexed = true;
}

void TcpConnTable::IndexRemove(Slot& s) {
  if (!s.indexed) return;
  const int32_t index = static_cast<int32_t>(&s - slots_);
  int32_t* link = &buckets_[Bucket(s.peer)];
  while (*link >= 0 && *link != index) link = &slots_[*link].next_in_bucket;
  if (*link == index) *link = s.next_in_bucket;
  s.next_in_bucket = -1;
  s.indexed = false;
}

void TcpConnTable::FreeSlot(Slot& s, std::vector<Message*>* garbage) {
  IndexRemove(s);
  for (Message* m = s.inbox_head; m != nullptr; m = m->next) garbage->push_back(m);
  s.inbox_head = s.inbox_tail = nullptr;
  s.inbox_bytes.store(0);
  // Unlink from its owner's work list, if queued there.
  const int owner = s.owner.load();
  if (s.in_work && owner >= 0 && owner < owners_) {
    const int32_t index = static_cast<int32_t>(&s - slots_);
    int32_t* link = &work_heads_[owner];
    while (*link >= 0 && *link != index) link = &slots_[*link].next_work;
    if (*link == index) *link = s.next_work;
  }
  s.in_work = false;
  s.next_work = -1;
  if (owner >= 0 && owner < owners_ && owner_counts_[owner] > 0) --owner_counts_[owner];
  if (header_->used > 0) --header_->used;
  s.id.store(0, std::memory_order_release);
  s.next_free = header_->free_head;
  header_->free_head = static_cast<int32_t>(&s - slots_);
}

void TcpConnTable::FreeMessages(const std::vector<Message*>& garbage) {
  for (Message* m : garbage) shm_->Deallocate(m);
}

TcpConnTable::Slot* TcpConnTable::FindOpenLocked(const SipAddress& peer) const {
  for (int32_t i = buckets_[Bucket(peer)]; i >= 0; i = slots_[i].next_in_bucket) {
    Slot& s = slots_[i];
    if (s.id.load() != 0 && IsOpen(s.state.load()) && s.peer == peer) return &s;
  }
  return nullptr;
}

absl::StatusOr<TcpConnTable::Added> TcpConnTable::AddAccepted(const SipAddress& peer,
                                                              const SipAddress& local, int socket) {
  LockTable();
  const int owner = LeastLoadedOwner();
  Slot* s = AllocateSlot(owner);
  if (s == nullptr) {
    header_->mutex.Unlock();
    return absl::ResourceExhaustedError(
        absl::StrCat("TCP connection table full (", capacity_, " connections)"));
  }
  s->peer = peer;
  s->local = local;
  s->socket = socket;
  s->state.store(static_cast<int>(TcpState::kInit));
  const uint64_t id = s->generation * capacity_ + static_cast<uint64_t>(s - slots_) + 1;
  s->id.store(id, std::memory_order_release);
  IndexInsert(*s);
  header_->mutex.Unlock();
  return Added{id, owner};
}

absl::StatusOr<TcpConnTable::Queued> TcpConnTable::Enqueue(uint64_t connection,
                                                           const SipAddress& peer,
                                                           int connect_socket,
                                                           std::string_view message,
                                                           uint64_t max_queued) {
  if (message.size() > max_queued || message.size() > UINT32_MAX) {
    return absl::ResourceExhaustedError(absl::StrCat("message of ", message.size(),
                                                     " bytes exceeds the TCP send queue (",
                                                     max_queued, " bytes)"));
  }
  auto* block = static_cast<Message*>(shm_->Allocate(sizeof(Message) + message.size()));
  if (block == nullptr) return absl::ResourceExhaustedError("no shared memory for a TCP message");
  block->next = nullptr;
  block->size = static_cast<uint32_t>(message.size());
  std::memcpy(block->data(), message.data(), message.size());

  absl::Status error;
  Queued queued;
  std::vector<Message*> garbage;
  LockTable();
  Slot* s = SlotOf(connection);
  if (s != nullptr && !IsOpen(s->state.load())) s = nullptr;
  if (s == nullptr && !peer.empty()) s = FindOpenLocked(peer);
  if (s == nullptr) {
    if (connect_socket < 0) {
      error = absl::UnavailableError(absl::StrCat("no open TCP connection to ", peer.ToString()));
    } else if (peer.empty()) {
      error = absl::InvalidArgumentError("no TCP destination address");
    } else {
      const int owner = LeastLoadedOwner();
      s = AllocateSlot(owner);
      if (s == nullptr) {
        error = absl::ResourceExhaustedError(
            absl::StrCat("TCP connection table full (", capacity_, " connections)"));
      } else {
        s->peer = peer;
        s->socket = connect_socket;
        s->outbound = true;
        s->state.store(static_cast<int>(TcpState::kConnecting));
        s->id.store(s->generation * capacity_ + static_cast<uint64_t>(s - slots_) + 1,
                    std::memory_order_release);
        IndexInsert(*s);
        queued.created = true;
      }
    }
  }
  if (s != nullptr) {
    const uint64_t pending = s->inbox_bytes.load() + s->owner_queued.load();
    if (pending + message.size() > max_queued) {
      error = absl::ResourceExhaustedError(absl::StrCat("TCP send queue of connection ",
                                                        s->id.load(), " to ", s->peer.ToString(),
                                                        " is full (", pending, " bytes queued)"));
      s = nullptr;
    }
  }
  if (s != nullptr) {
    if (s->inbox_tail != nullptr) {
      s->inbox_tail->next = block;
    } else {
      s->inbox_head = block;
    }
    s->inbox_tail = block;
    s->inbox_bytes.fetch_add(message.size());
    block = nullptr;
    const int owner = s->owner.load();
    queued.id = s->id.load();
    queued.owner = owner;
    if (!s->in_work) {
      queued.wake = work_heads_[owner] < 0;
      s->next_work = work_heads_[owner];
      work_heads_[owner] = static_cast<int32_t>(s - slots_);
      s->in_work = true;
    }
  }
  header_->mutex.Unlock();
  if (block != nullptr) shm_->Deallocate(block);
  if (!error.ok()) return error;
  return queued;
}

bool TcpConnTable::Lookup(uint64_t id, int* owner, TcpState* state) const {
  const Slot* s = SlotOf(id);
  if (s == nullptr) return false;
  *owner = s->owner.load(std::memory_order_relaxed);
  *state = static_cast<TcpState>(s->state.load(std::memory_order_relaxed));
  return s->id.load(std::memory_order_acquire) == id;
}

bool TcpConnTable::Info(uint64_t id, TcpConnInfo* out) const {
  LockTable();
  const Slot* s = SlotOf(id);
  if (s != nullptr) {
    out->id = id;
    out->state = static_cast<TcpState>(s->state.load());
    out->owner = s->owner.load();
    out->socket = s->socket;
    out->outbound = s->outbound;
    out->peer = s->peer;
    out->local = s->local;
    out->last_activity_ms = s->last_activity_ms.load();
    out->queued_bytes = s->inbox_bytes.load() + s->owner_queued.load();
  }
  header_->mutex.Unlock();
  return s != nullptr;
}

uint64_t TcpConnTable::FindByPeer(const SipAddress& peer) const {
  LockTable();
  const Slot* s = FindOpenLocked(peer);
  const uint64_t id = s != nullptr ? s->id.load() : 0;
  header_->mutex.Unlock();
  return id;
}

std::vector<uint64_t> TcpConnTable::TakeWork(int owner) {
  std::vector<uint64_t> ids;
  if (owner < 0 || owner >= owners_) return ids;
  LockTable();
  for (int32_t i = work_heads_[owner]; i >= 0;) {
    Slot& s = slots_[i];
    const int32_t next = s.next_work;
    s.next_work = -1;
    s.in_work = false;
    if (s.id.load() != 0) ids.push_back(s.id.load());
    i = next;
  }
  work_heads_[owner] = -1;
  header_->mutex.Unlock();
  return ids;
}

size_t TcpConnTable::TakeInbox(uint64_t id, std::string* out) {
  LockTable();
  Slot* s = SlotOf(id);
  Message* list = nullptr;
  if (s != nullptr) {
    list = s->inbox_head;
    s->inbox_head = s->inbox_tail = nullptr;
    s->inbox_bytes.store(0);
  }
  header_->mutex.Unlock();
  size_t moved = 0;
  while (list != nullptr) {
    Message* next = list->next;
    out->append(list->data(), list->size);
    moved += list->size;
    shm_->Deallocate(list);
    list = next;
  }
  return moved;
}

void TcpConnTable::SetState(uint64_t id, TcpState state) {
  LockTable();
  if (Slot* s = SlotOf(id); s != nullptr) {
    s->state.store(static_cast<int>(state));
    if (!IsOpen(static_cast<int>(state))) IndexRemove(*s);
  }
  header_->mutex.Unlock();
}

void TcpConnTable::SetLocal(uint64_t id, const SipAddress& local) {
  LockTable();
  if (Slot* s = SlotOf(id); s != nullptr) s->local = local;
  header_->mutex.Unlock();
}

void TcpConnTable::Touch(uint64_t id, int64_t now_ms) {
  if (Slot* s = SlotOf(id); s != nullptr) {
    s->last_activity_ms.store(now_ms, std::memory_order_relaxed);
  }
}

void TcpConnTable::SetOwnerQueued(uint64_t id, uint64_t bytes) {
  if (Slot* s = SlotOf(id); s != nullptr) s->owner_queued.store(bytes, std::memory_order_relaxed);
}

void TcpConnTable::Remove(uint64_t id) {
  std::vector<Message*> garbage;
  LockTable();
  if (Slot* s = SlotOf(id); s != nullptr) FreeSlot(*s, &garbage);
  header_->mutex.Unlock();
  FreeMessages(garbage);
}

void TcpConnTable::Adopt(uint64_t id) {
  LockTable();
  if (Slot* s = SlotOf(id); s != nullptr) s->adopted = true;
  header_->mutex.Unlock();
}

size_t TcpConnTable::ReclaimOwner(int owner, std::vector<uint64_t>* to_connect) {
  std::vector<Message*> garbage;
  size_t count = 0;
  LockTable();
  for (size_t i = 0; i < capacity_; ++i) {
    Slot& s = slots_[i];
    if (s.id.load() == 0 || s.owner.load() != owner) continue;
    if (s.adopted) {
      FreeSlot(s, &garbage);
      ++count;
    } else if (to_connect != nullptr && s.state.load() == static_cast<int>(TcpState::kConnecting)) {
      to_connect->push_back(s.id.load());
    }
  }
  header_->mutex.Unlock();
  FreeMessages(garbage);
  return count;
}

std::vector<TcpConnInfo> TcpConnTable::Snapshot() const {
  std::vector<TcpConnInfo> out;
  LockTable();
  out.reserve(header_->used);
  for (size_t i = 0; i < capacity_; ++i) {
    const Slot& s = slots_[i];
    const uint64_t id = s.id.load();
    if (id == 0) continue;
    TcpConnInfo info;
    info.id = id;
    info.state = static_cast<TcpState>(s.state.load());
    info.owner = s.owner.load();
    info.socket = s.socket;
    info.outbound = s.outbound;
    info.peer = s.peer;
    info.local = s.local;
    info.last_activity_ms = s.last_activity_ms.load();
    info.queued_bytes = s.inbox_bytes.load() + s.owner_queued.load();
    out.push_back(std::move(info));
  }
  header_->mutex.Unlock();
  std::sort(out.begin(), out.end(),
            [](const TcpConnInfo& a, const TcpConnInfo& b) { return a.id < b.id; });
  return out;
}

size_t TcpConnTable::size() const {
  LockTable();
  const size_t used = header_->used;
  header_->mutex.Unlock();
  return used;
}

uint64_t TcpConnTable::QueuedBytes() const {
  uint64_t total = 0;
  const size_t end = std::min(capacity_, header_->high_water.load(std::memory_order_acquire));
  for (size_t i = 0; i < end; ++i) {
    const Slot& s = slots_[i];
    if (s.id.load(std::memory_order_relaxed) == 0) continue;
    total += s.inbox_bytes.load(std::memory_order_relaxed) +
             s.owner_queued.load(std::memory_order_relaxed);
  }
  return total;
}

}  // namespace sipd
