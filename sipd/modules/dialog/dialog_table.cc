#include "sipd/modules/dialog/dialog_table.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <random>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sipd::dialog {
namespace {

// Strings of the caller block, in storage order.
enum CallerField : int {
  kCallid,
  kFromUri,
  kToUri,
  kCallerTag,
  kCallerContact,
  kCallerRouteSet,
  kCallerBindAddr,
  kCallerNextHop,
  kCallerFields,
};

// Strings of the callee block.
enum CalleeField : int {
  kCalleeTag,
  kCalleeContact,
  kCalleeRouteSet,
  kCalleeBindAddr,
  kCalleeFields,
};

uint32_t Fnv1a(std::string_view s) {
  // Deterministic in every process (unlike seeded hashes).
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

uint64_t SplitMix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

class BucketUnlocker {
 public:
  explicit BucketUnlocker(RobustMutex& mutex) : mutex_(mutex) {}
  ~BucketUnlocker() { mutex_.Unlock(); }
  BucketUnlocker(const BucketUnlocker&) = delete;
  BucketUnlocker& operator=(const BucketUnlocker&) = delete;

 private:
  RobustMutex& mutex_;
};

bool IsEarly(DialogState s) { return s == DialogState::kEarly; }
bool IsActive(DialogState s) {
  return s == DialogState::kConfirmedNoAck || s == DialogState::kConfirmed;
}

}  // namespace

// An immutable string block: `strings` lengths, then `profiles` (profile index, length)
// pairs, then the bytes in that order.
struct DialogTable::Block {
  uint16_t strings = 0;
  uint16_t profiles = 0;

  uint16_t* lengths() { return reinterpret_cast<uint16_t*>(this + 1); }
  const uint16_t* lengths() const { return reinterpret_cast<const uint16_t*>(this + 1); }
  // profile indexes follow the lengths of strings and profile values
  const uint16_t* profile_ids() const { return lengths() + strings + profiles; }
  uint16_t* profile_ids() { return lengths() + strings + profiles; }
  const char* bytes() const { return reinterpret_cast<const char*>(profile_ids() + profiles); }
  char* bytes() { return reinterpret_cast<char*>(profile_ids() + profiles); }

  std::string_view field(int i) const {
    size_t offset = 0;
    for (int k = 0; k < i; ++k) offset += lengths()[k];
    return std::string_view(bytes() + offset, lengths()[i]);
  }
  // Every string and profile value in storage order, in one pass.
  template <typename Fn>
  void ForEach(Fn fn) const {
    const char* p = bytes();
    for (int k = 0; k < strings + profiles; ++k) {
      fn(k, std::string_view(p, lengths()[k]));
      p += lengths()[k];
    }
  }
  void CopyProfiles(std::vector<ProfileLink>& out) const {
    size_t offset = 0;
    for (int k = 0; k < strings; ++k) offset += lengths()[k];
    for (int p = 0; p < profiles; ++p) {
      const uint16_t n = lengths()[strings + p];
      out.push_back(ProfileLink{profile_ids()[p], std::string(bytes() + offset, n)});
      offset += n;
    }
  }
};

struct DialogTable::Record {
  std::atomic<Record*> next{nullptr};
  std::atomic<Block*> caller{nullptr};
  std::atomic<Block*> callee{nullptr};
  uint64_t version = 0;
  // When the dialog was created (unix time; not shown, not stored): stale setups.
  int64_t created = 0;
  int64_t start_time = 0;
  int64_t timeout = 0;
  uint32_t h_id = 0;
  uint32_t callid_hash = 0;
  uint32_t caller_cseq = 0;
  uint32_t callee_cseq = 0;
  uint32_t user_flags = 0;
  std::atomic<uint8_t> state{static_cast<uint8_t>(DialogState::kUnconfirmed)};
  // The ACK for the 2xx passed before the 2xx's callback ran (another process).
  bool acked_early = false;

  DialogState get_state() const { return static_cast<DialogState>(state.load()); }
  void set_state(DialogState s) { state.store(static_cast<uint8_t>(s)); }
};

struct DialogTable::Bucket {
  RobustMutex mutex;
  std::atomic<Record*> first{nullptr};
  // The record with the highest h_id (the tail), for O(1) appends; a hint that the
  // repair of a dead holder's bucket recomputes.
  Record* last = nullptr;
  uint32_t next_id = 1;
  // Written under the lock; count and active are also read without it (estimates).
  std::atomic<uint32_t> count{0};
  uint32_t early = 0;
  std::atomic<uint32_t> active{0};
};

absl::StatusOr<std::unique_ptr<DialogTable>> DialogTable::Create(
    SharedMemory& shm, uint32_t size, std::atomic<uint64_t>* version_clock, Counters counters,
    ChangeSink* sink, uint64_t seed) {
  if (size == 0) return absl::InvalidArgumentError("dialog table needs at least one bucket");
  void* memory = shm.Allocate(sizeof(Bucket) * size);
  if (memory == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for the ", size, " buckets of the dialog table"));
  }
  if (seed == 0)
    seed = std::random_device()() | (static_cast<uint64_t>(std::random_device()()) << 32);
  Bucket* array = static_cast<Bucket*>(memory);
  for (uint32_t i = 0; i < size; ++i) {
    new (&array[i]) Bucket();
    // A random start below 2^31 leaves room before the ids wrap; never 0.
    array[i].next_id = static_cast<uint32_t>(SplitMix(seed + i) & 0x7FFFFFFFu) | 1u;
  }
  return std::unique_ptr<DialogTable>(
      new DialogTable(shm, size, array, version_clock, counters, sink));
}

DialogTable::DialogTable(SharedMemory& shm, uint32_t size, Bucket* buckets,
                         std::atomic<uint64_t>* version_clock, Counters counters, ChangeSink* sink)
    : shm_(shm),
      size_(size),
      buckets_(buckets),
      version_clock_(version_clock),
      counters_(counters),
      sink_(sink) {}

uint32_t DialogTable::BucketOf(std::string_view callid) const { return Fnv1a(callid) % size_; }

uint64_t DialogTable::NextVersion() const {
  return version_clock_->fetch_add(1, std::memory_order_relaxed) + 1;
}

void DialogTable::LockBucket(Bucket& bucket) const {
  if (bucket.mutex.Lock()) RepairBucket(bucket);
}

void DialogTable::RepairBucket(Bucket& bucket) const {
  // The previous holder died. Links and blocks are always consistent (see header); a
  // record it was removing may still be linked (state kDeleted): unlink it now. Then
  // only the counts may be stale: recount and move the global counters by the
  // difference.
  std::atomic<Record*>* link = &bucket.first;
  for (Record* r = link->load(std::memory_order_acquire); r != nullptr;
       r = link->load(std::memory_order_acquire)) {
    if (r->get_state() == DialogState::kDeleted) {
      link->store(r->next.load(std::memory_order_acquire), std::memory_order_release);
      continue;  // leaked: a few hundred bytes, once per dead process
    }
    link = &r->next;
  }
  uint32_t count = 0;
  uint32_t early = 0;
  uint32_t active = 0;
  bucket.last = nullptr;
  for (Record* r = bucket.first.load(std::memory_order_acquire); r != nullptr;
       r = r->next.load(std::memory_order_acquire)) {
    bucket.last = r;
    ++count;
    if (IsEarly(r->get_state())) ++early;
    if (IsActive(r->get_state())) ++active;
  }
  spdlog::warn(
      "dialog: a process died holding a dialog bucket lock; recounted {} dialogs, {} early, "
      "{} active (were {}, {}, {})",
      count, early, active, bucket.count.load(), bucket.early, bucket.active.load());
  auto adjust = [](const mi::Counter& counter, uint32_t now, uint32_t was) {
    if (!counter.valid()) return;
    if (now > was) counter.Inc(now - was);
    if (now < was) counter.Dec(was - now);
  };
  adjust(counters_.early, early, bucket.early);
  adjust(counters_.active, active, bucket.active);
  bucket.count = count;
  bucket.early = early;
  bucket.active = active;
}

void DialogTable::CountStateChange(Bucket& bucket, DialogState before, DialogState after) const {
  if (IsEarly(before) && !IsEarly(after)) {
    --bucket.early;
    if (counters_.early.valid()) counters_.early.Dec();
  } else if (!IsEarly(before) && IsEarly(after)) {
    ++bucket.early;
    if (counters_.early.valid()) counters_.early.Inc();
  }
  if (IsActive(before) && !IsActive(after)) {
    --bucket.active;
    if (counters_.active.valid()) counters_.active.Dec();
  } else if (!IsActive(before) && IsActive(after)) {
    ++bucket.active;
    if (counters_.active.valid()) counters_.active.Inc();
  }
}

DialogTable::Record* DialogTable::FindLocked(Bucket& bucket, uint32_t h_id) const {
  // The newest dialog (at the tail) is the one most events are about.
  if (Record* last = bucket.last; last != nullptr) {
    if (last->h_id == h_id) return last;
    if (last->h_id < h_id) return nullptr;
  }
  for (Record* r = bucket.first.load(std::memory_order_acquire); r != nullptr;
       r = r->next.load(std::memory_order_acquire)) {
    if (r->h_id == h_id) return r;
    if (r->h_id > h_id) break;
  }
  return nullptr;
}

DialogTable::Block* DialogTable::NewBlock(const DialogInfo& info, bool callee_part) const {
  std::vector<std::string_view> strings;
  const std::vector<ProfileLink>* profiles = nullptr;
  if (callee_part) {
    const LegInfo& leg = *info.callee;
    strings = {leg.tag, leg.contact, leg.route_set, leg.bind_addr};
  } else {
    strings = {info.callid,           info.from_uri,       info.to_uri,
               info.caller.tag,       info.caller.contact, info.caller.route_set,
               info.caller.bind_addr, info.caller_next_hop};
    profiles = &info.profiles;
  }
  const size_t n_profiles = profiles != nullptr ? profiles->size() : 0;
  size_t bytes = 0;
  for (std::string_view s : strings) {
    if (s.size() > 0xFFFF) return nullptr;
    bytes += s.size();
  }
  if (profiles != nullptr) {
    for (const ProfileLink& p : *profiles) {
      if (p.value.size() > 0xFFFF) return nullptr;
      bytes += p.value.size();
    }
  }
  const size_t header = sizeof(Block) + sizeof(uint16_t) * (strings.size() + 2 * n_profiles);
  void* memory = shm_.Allocate(header + bytes);
  if (memory == nullptr) return nullptr;
  Block* b = new (memory) Block();
  b->strings = static_cast<uint16_t>(strings.size());
  b->profiles = static_cast<uint16_t>(n_profiles);
  for (size_t i = 0; i < strings.size(); ++i)
    b->lengths()[i] = static_cast<uint16_t>(strings[i].size());
  for (size_t p = 0; p < n_profiles; ++p) {
    b->lengths()[strings.size() + p] = static_cast<uint16_t>((*profiles)[p].value.size());
    b->profile_ids()[p] = (*profiles)[p].profile;
  }
  char* out = b->bytes();
  for (std::string_view s : strings) {
    if (!s.empty()) std::memcpy(out, s.data(), s.size());
    out += s.size();
  }
  for (size_t p = 0; p < n_profiles; ++p) {
    const std::string& v = (*profiles)[p].value;
    if (!v.empty()) std::memcpy(out, v.data(), v.size());
    out += v.size();
  }
  return b;
}

DialogInfo DialogTable::CopyLocked(uint32_t h_entry, const Record& r) const {
  DialogInfo info;
  info.h_entry = h_entry;
  info.h_id = r.h_id;
  info.state = r.get_state();
  info.user_flags = r.user_flags;
  info.start_time = r.start_time;
  info.timeout = r.timeout;
  info.version = r.version;
  if (const Block* b = r.caller.load(std::memory_order_acquire); b != nullptr) {
    info.callid = std::string(b->field(kCallid));
    info.from_uri = std::string(b->field(kFromUri));
    info.to_uri = std::string(b->field(kToUri));
    info.caller.tag = std::string(b->field(kCallerTag));
    info.caller.contact = std::string(b->field(kCallerContact));
    info.caller.route_set = std::string(b->field(kCallerRouteSet));
    info.caller.bind_addr = std::string(b->field(kCallerBindAddr));
    info.caller_next_hop = std::string(b->field(kCallerNextHop));
    b->CopyProfiles(info.profiles);
  }
  info.caller.cseq = r.caller_cseq;
  if (const Block* b = r.callee.load(std::memory_order_acquire); b != nullptr) {
    LegInfo leg;
    leg.tag = std::string(b->field(kCalleeTag));
    leg.contact = std::string(b->field(kCalleeContact));
    leg.route_set = std::string(b->field(kCalleeRouteSet));
    leg.bind_addr = std::string(b->field(kCalleeBindAddr));
    leg.cseq = r.callee_cseq;
    info.callee = std::move(leg);
  }
  return info;
}

namespace {

absl::Status CheckLengths(const DialogInfo& info) {
  for (std::string_view s :
       {std::string_view(info.callid), std::string_view(info.from_uri),
        std::string_view(info.to_uri), std::string_view(info.caller.tag),
        std::string_view(info.caller.contact), std::string_view(info.caller.bind_addr),
        std::string_view(info.caller_next_hop)}) {
    if (s.size() > kMaxFieldLength) return absl::InvalidArgumentError("dialog field too long");
  }
  if (info.caller.route_set.size() > kMaxRouteSetLength) {
    return absl::InvalidArgumentError("dialog route set too long");
  }
  if (info.callee.has_value()) {
    const LegInfo& l = *info.callee;
    if (l.tag.size() > kMaxFieldLength || l.contact.size() > kMaxFieldLength ||
        l.bind_addr.size() > kMaxFieldLength || l.route_set.size() > kMaxRouteSetLength) {
      return absl::InvalidArgumentError("dialog callee field too long");
    }
  }
  if (info.profiles.size() > kMaxProfileLinks) {
    return absl::InvalidArgumentError("too many profile links");
  }
  for (const ProfileLink& p : info.profiles) {
    if (p.value.size() > kMaxFieldLength)
      return absl::InvalidArgumentError("profile value too long");
  }
  if (info.callid.empty()) return absl::InvalidArgumentError("dialog without Call-ID");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DialogInfo> DialogTable::Insert(DialogInfo info, int64_t now) {
  info.state = DialogState::kUnconfirmed;
  info.start_time = 0;
  info.timeout = 0;
  info.callee.reset();
  return Link(std::move(info), /*keep_ids=*/false, now);
}

absl::StatusOr<DialogInfo> DialogTable::Load(DialogInfo info) {
  if (!info.live()) return absl::InvalidArgumentError("a deleted dialog cannot be loaded");
  const bool keep = info.h_entry < size_ && info.h_entry == BucketOf(info.callid) && info.h_id != 0;
  if (!keep) {
    spdlog::info("dialog: dialog {}:{} ({}) gets new ids (hash_size changed)", info.h_entry,
                 info.h_id, info.callid);
  }
  const int64_t created = info.start_time;
  return Link(std::move(info), keep, created);
}

absl::StatusOr<DialogInfo> DialogTable::Link(DialogInfo info, bool keep_ids, int64_t now) {
  if (absl::Status s = CheckLengths(info); !s.ok()) return s;
  const uint32_t hash = Fnv1a(info.callid);
  const uint32_t h_entry = hash % size_;
  info.h_entry = h_entry;
  // Allocate before locking: a full heap changes nothing.
  Block* caller = NewBlock(info, /*callee_part=*/false);
  Block* callee = info.callee.has_value() ? NewBlock(info, /*callee_part=*/true) : nullptr;
  void* memory = shm_.Allocate(sizeof(Record));
  if (caller == nullptr || (info.callee.has_value() && callee == nullptr) || memory == nullptr) {
    if (caller != nullptr) shm_.Deallocate(caller);
    if (callee != nullptr) shm_.Deallocate(callee);
    if (memory != nullptr) shm_.Deallocate(memory);
    return absl::ResourceExhaustedError("shared memory is full");
  }
  Record* r = new (memory) Record();
  r->callid_hash = hash;
  r->created = now;
  r->user_flags = info.user_flags;
  r->start_time = info.start_time;
  r->timeout = info.timeout;
  r->caller_cseq = info.caller.cseq;
  r->callee_cseq = info.callee.has_value() ? info.callee->cseq : 0;
  r->set_state(info.state);
  r->caller.store(caller, std::memory_order_release);
  r->callee.store(callee, std::memory_order_release);

  Bucket& bucket = buckets_[h_entry];
  LockBucket(bucket);
  BucketUnlocker unlock(bucket.mutex);
  if (keep_ids) {
    if (FindLocked(bucket, info.h_id) != nullptr) {
      shm_.Deallocate(caller);
      if (callee != nullptr) shm_.Deallocate(callee);
      shm_.Deallocate(memory);
      return absl::AlreadyExistsError(
          absl::StrCat("dialog ", info.h_entry, ":", info.h_id, " exists"));
    }
    if (info.h_id >= bucket.next_id && info.h_id != 0xFFFFFFFFu) bucket.next_id = info.h_id + 1;
  } else {
    // Next free id; ids only repeat after 2^32 dialogs in one bucket, so the uniqueness
    // walk is needed only once they wrapped below the tail's.
    do {
      info.h_id = bucket.next_id++;
      if (bucket.next_id == 0) bucket.next_id = 1;
    } while (info.h_id == 0 || ((bucket.last == nullptr || info.h_id <= bucket.last->h_id) &&
                                FindLocked(bucket, info.h_id) != nullptr));
  }
  r->h_id = info.h_id;
  r->version = NextVersion();
  info.version = r->version;
  // Sorted by h_id: a new id is normally the highest, appended at the tail.
  std::atomic<Record*>* link = &bucket.first;
  if (bucket.last != nullptr && bucket.last->h_id < info.h_id) {
    link = &bucket.last->next;
  } else {
    for (Record* a = link->load(std::memory_order_acquire); a != nullptr;
         a = link->load(std::memory_order_acquire)) {
      if (a->h_id > info.h_id) break;
      link = &a->next;
    }
  }
  r->next.store(link->load(std::memory_order_acquire), std::memory_order_release);
  link->store(r, std::memory_order_release);
  if (r->next.load(std::memory_order_acquire) == nullptr) bucket.last = r;
  ++bucket.count;
  CountStateChange(bucket, DialogState::kDeleted, info.state);
  if (!keep_ids && counters_.processed.valid()) counters_.processed.Inc();
  return info;
}

std::optional<DialogInfo> DialogTable::Get(uint32_t h_entry, uint32_t h_id) const {
  if (h_entry >= size_) return std::nullopt;
  Bucket& bucket = buckets_[h_entry];
  LockBucket(bucket);
  BucketUnlocker unlock(bucket.mutex);
  const Record* r = FindLocked(bucket, h_id);
  if (r == nullptr) return std::nullopt;
  return CopyLocked(h_entry, *r);
}

std::optional<DialogInfo> DialogTable::FindByCallId(std::string_view callid,
                                                    std::string_view from_tag) const {
  const uint32_t hash = Fnv1a(callid);
  const uint32_t h_entry = hash % size_;
  Bucket& bucket = buckets_[h_entry];
  LockBucket(bucket);
  BucketUnlocker unlock(bucket.mutex);
  for (const Record* r = bucket.first.load(std::memory_order_acquire); r != nullptr;
       r = r->next.load(std::memory_order_acquire)) {
    if (r->callid_hash != hash) continue;
    const Block* b = r->caller.load(std::memory_order_acquire);
    if (b == nullptr || b->field(kCallid) != callid) continue;
    if (!from_tag.empty() && b->field(kCallerTag) != from_tag) continue;
    return CopyLocked(h_entry, *r);
  }
  return std::nullopt;
}

std::optional<DialogTable::Match> DialogTable::MatchRequest(std::string_view callid,
                                                            std::string_view from_tag,
                                                            std::string_view to_tag) const {
  const uint32_t hash = Fnv1a(callid);
  const uint32_t h_entry = hash % size_;
  Bucket& bucket = buckets_[h_entry];
  LockBucket(bucket);
  BucketUnlocker unlock(bucket.mutex);
  for (const Record* r = bucket.first.load(std::memory_order_acquire); r != nullptr;
       r = r->next.load(std::memory_order_acquire)) {
    if (r->callid_hash != hash) continue;
    const Block* b = r->caller.load(std::memory_order_acquire);
    if (b == nullptr || b->field(kCallid) != callid) continue;
    const std::string_view caller_tag = b->field(kCallerTag);
    const Block* c = r->callee.load(std::memory_order_acquire);
    const std::string_view callee_tag = c != nullptr ? c->field(kCalleeTag) : std::string_view();
    if (from_tag == caller_tag && (c == nullptr || to_tag.empty() || to_tag == callee_tag)) {
      return Match{h_entry, r->h_id, true};
    }
    if (c != nullptr && from_tag == callee_tag && to_tag == caller_tag) {
      return Match{h_entry, r->h_id, false};
    }
  }
  return std::nullopt;
}

void DialogTable::UnlinkLocked(Bucket& bucket, Record* record, std::vector<void*>& garbage) const {
  std::atomic<Record*>* link = &bucket.first;
  Record* previous = nullptr;
  for (Record* a = link->load(std::memory_order_acquire); a != nullptr;
       a = link->load(std::memory_order_acquire)) {
    if (a == record) {
      link->store(a->next.load(std::memory_order_acquire), std::memory_order_release);
      if (bucket.last == a) bucket.last = previous;
      --bucket.count;
      garbage.push_back(a->caller.load(std::memory_order_acquire));
      if (Block* c = a->callee.load(std::memory_order_acquire); c != nullptr) garbage.push_back(c);
      garbage.push_back(a);
      return;
    }
    previous = a;
    link = &a->next;
  }
}

absl::StatusOr<DialogTable::Transition> DialogTable::Apply(uint32_t h_entry, uint32_t h_id,
                                                           const Event& event) {
  if (h_entry >= size_) return absl::NotFoundError("no such dialog");
  using Kind = Event::Kind;
  Bucket& bucket = buckets_[h_entry];
  std::vector<void*> garbage;
  Block* fresh_callee = nullptr;
  // Allocated before the lock (a full heap leaves the dialog as it is); dropped if the
  // event does not need it.
  if ((event.kind == Kind::kProvisional || event.kind == Kind::kConfirmed) &&
      event.callee.has_value() && !event.callee->tag.empty()) {
    DialogInfo carrier;
    carrier.callee = event.callee;
    if (event.callee->tag.size() > kMaxFieldLength ||
        event.callee->contact.size() > kMaxFieldLength ||
        event.callee->bind_addr.size() > kMaxFieldLength ||
        event.callee->route_set.size() > kMaxRouteSetLength) {
      return absl::InvalidArgumentError("callee leg field too long");
    }
    fresh_callee = NewBlock(carrier, /*callee_part=*/true);
    if (fresh_callee == nullptr) return absl::ResourceExhaustedError("shared memory is full");
  }
  Transition t;
  {
    LockBucket(bucket);
    BucketUnlocker unlock(bucket.mutex);
    Record* r = FindLocked(bucket, h_id);
    if (r == nullptr) {
      if (fresh_callee != nullptr) garbage.push_back(fresh_callee);
      fresh_callee = nullptr;
    } else {
      const DialogState before = r->get_state();
      DialogState after = before;
      bool remove = false;
      bool touched = false;  // something the database keeps changed
      auto take_callee = [&](bool replace) {
        if (fresh_callee == nullptr) return;
        Block* old = r->callee.load(std::memory_order_acquire);
        if (old != nullptr && !replace) return;
        r->callee.store(fresh_callee, std::memory_order_release);
        if (event.callee.has_value()) r->callee_cseq = event.callee->cseq;
        if (old != nullptr) garbage.push_back(old);
        fresh_callee = nullptr;
      };
      switch (event.kind) {
        case Kind::kProvisional:
          if (before == DialogState::kUnconfirmed || before == DialogState::kEarly) {
            after = DialogState::kEarly;
            take_callee(/*replace=*/false);
          }
          break;
        case Kind::kConfirmed:
          if (before == DialogState::kUnconfirmed || before == DialogState::kEarly) {
            take_callee(/*replace=*/true);
            after = r->acked_early ? DialogState::kConfirmed : DialogState::kConfirmedNoAck;
            r->start_time = event.now;
            r->timeout = event.lifetime > 0 ? event.now + event.lifetime : 0;
            touched = true;
          }
          break;
        case Kind::kFailed:
          if (before == DialogState::kUnconfirmed || before == DialogState::kEarly) {
            remove = true;
            if (counters_.failed.valid()) counters_.failed.Inc();
          }
          break;
        case Kind::kAck:
          if (before == DialogState::kConfirmedNoAck) {
            after = DialogState::kConfirmed;
            touched = true;
          } else if (before == DialogState::kUnconfirmed || before == DialogState::kEarly) {
            r->acked_early = true;
          }
          break;
        case Kind::kRequest:
          if (event.from_caller && event.cseq > r->caller_cseq) {
            r->caller_cseq = event.cseq;
            touched = IsActive(before);
          } else if (!event.from_caller && event.cseq > r->callee_cseq) {
            r->callee_cseq = event.cseq;
            touched = IsActive(before);
          }
          break;
        case Kind::kBye:
          remove = true;
          break;
        case Kind::kTerminate:
          if (!IsActive(before))
            return absl::FailedPreconditionError("the dialog is not confirmed");
          remove = true;
          // The CSeqs of the BYEs sipd sends on both legs.
          ++r->caller_cseq;
          ++r->callee_cseq;
          if (event.expired && counters_.expired.valid()) counters_.expired.Inc();
          break;
      }
      if (remove) after = DialogState::kDeleted;
      if (after != before) {
        r->set_state(after);
        CountStateChange(bucket, before, after);
      }
      if (after != before || touched) r->version = NextVersion();
      t.before = before;
      t.after = after;
      t.dialog = CopyLocked(h_entry, *r);
      t.dialog.state = after;
      if (sink_ != nullptr) {
        if (remove && IsActive(before)) {
          sink_->Changed(t.dialog, /*removed=*/true);
        } else if (!remove && IsActive(after) && (touched || after != before)) {
          sink_->Changed(t.dialog, /*removed=*/false);
        }
      }
      if (remove) UnlinkLocked(bucket, r, garbage);
      if (fresh_callee != nullptr) garbage.push_back(fresh_callee);
      fresh_callee = nullptr;
    }
  }
  for (void* p : garbage) shm_.Deallocate(p);
  if (t.dialog.h_id == 0) return absl::NotFoundError("no such dialog");
  return t;
}

template <typename Take>
void DialogTable::Walk(Cursor& cursor, size_t max, Take take) const {
  size_t copied = 0;
  while (!cursor.done && copied < max) {
    Bucket& bucket = buckets_[cursor.bucket];
    bool bucket_finished = true;
    if (bucket.first.load(std::memory_order_acquire) != nullptr) {
      LockBucket(bucket);
      BucketUnlocker unlock(bucket.mutex);
      for (const Record* r = bucket.first.load(std::memory_order_acquire); r != nullptr;
           r = r->next.load(std::memory_order_acquire)) {
        if (cursor.has_last && r->h_id <= cursor.last_id) continue;
        if (copied == max) {
          bucket_finished = false;
          break;
        }
        cursor.has_last = true;
        cursor.last_id = r->h_id;
        if (take(cursor.bucket, *r)) ++copied;
      }
    }
    if (bucket_finished) {
      cursor.has_last = false;
      if (++cursor.bucket == size_) cursor.done = true;
    }
  }
}

void DialogTable::CopyChunk(Cursor& cursor, size_t max, std::vector<DialogInfo>& out) const {
  CopyChunk(
      cursor, max, [](const DialogInfo&) { return true; }, out);
}

void DialogTable::CopyChunk(Cursor& cursor, size_t max, Filter filter,
                            std::vector<DialogInfo>& out) const {
  Walk(cursor, max, [&](uint32_t h_entry, const Record& r) {
    DialogInfo info = CopyLocked(h_entry, r);
    if (!filter(info)) return false;
    out.push_back(std::move(info));
    return true;
  });
}

void DialogTable::CopyChunk(Cursor& cursor, size_t max, ChunkFilter filter,
                            DialogChunk& out) const {
  Walk(cursor, max, [&](uint32_t h_entry, const Record& r) {
    const size_t bytes = out.byte_count();
    const size_t links = out.link_count();
    CopyLocked(h_entry, r, out);
    if (filter(out, out.dialogs().back())) return true;
    out.DropLast(bytes, links);
    return false;
  });
}

void DialogTable::CopyLocked(uint32_t h_entry, const Record& r, DialogChunk& out) const {
  const Block* caller = r.caller.load(std::memory_order_acquire);
  const Block* callee = r.callee.load(std::memory_order_acquire);
  DialogChunk::Text texts[kCallerFields];
  const size_t first_link = out.link_count();
  if (caller != nullptr) {
    caller->ForEach([&](int k, std::string_view s) {
      if (k < kCallerFields) {
        texts[k] = out.AddText(s);
      } else {
        out.AddLink(caller->profile_ids()[k - caller->strings], s);
      }
    });
  }
  DialogChunk::Text callee_texts[kCalleeFields];
  if (callee != nullptr) {
    callee->ForEach([&](int k, std::string_view s) {
      if (k < kCalleeFields) callee_texts[k] = out.AddText(s);
    });
  }
  DialogChunk::Dialog& d = out.AddDialog();
  d.h_entry = h_entry;
  d.h_id = r.h_id;
  d.state = r.get_state();
  d.user_flags = r.user_flags;
  d.start_time = r.start_time;
  d.timeout = r.timeout;
  d.callid = texts[kCallid];
  d.from_uri = texts[kFromUri];
  d.to_uri = texts[kToUri];
  d.caller = DialogChunk::Leg{texts[kCallerTag], texts[kCallerContact], texts[kCallerRouteSet],
                              texts[kCallerBindAddr], r.caller_cseq};
  if (callee != nullptr) {
    d.has_callee = true;
    d.callee = DialogChunk::Leg{callee_texts[kCalleeTag], callee_texts[kCalleeContact],
                                callee_texts[kCalleeRouteSet], callee_texts[kCalleeBindAddr],
                                r.callee_cseq};
  }
  d.first_link = static_cast<uint32_t>(first_link);
  d.links = static_cast<uint32_t>(out.link_count() - first_link);
}

void DialogTable::Expire(uint32_t bucket_index, int64_t now, int64_t setup_cutoff,
                         std::vector<Transition>& ended) {
  Bucket& bucket = buckets_[bucket_index];
  if (bucket.count.load(std::memory_order_relaxed) == 0) return;  // the next run catches up
  std::vector<void*> garbage;
  {
    LockBucket(bucket);
    BucketUnlocker unlock(bucket.mutex);
    std::vector<Record*> due;
    for (Record* r = bucket.first.load(std::memory_order_acquire); r != nullptr;
         r = r->next.load(std::memory_order_acquire)) {
      const DialogState s = r->get_state();
      if (IsActive(s) ? (r->timeout != 0 && r->timeout <= now) : r->created < setup_cutoff) {
        due.push_back(r);
      }
    }
    for (Record* r : due) {
      const DialogState before = r->get_state();
      const bool active = IsActive(before);
      if (active) {
        // The CSeqs of the BYEs sipd sends on both legs.
        ++r->caller_cseq;
        ++r->callee_cseq;
      }
      r->set_state(DialogState::kDeleted);
      CountStateChange(bucket, before, DialogState::kDeleted);
      r->version = NextVersion();
      if (active) {
        Transition t;
        t.before = before;
        t.after = DialogState::kDeleted;
        t.dialog = CopyLocked(bucket_index, *r);
        if (sink_ != nullptr) sink_->Changed(t.dialog, /*removed=*/true);
        if (counters_.expired.valid()) counters_.expired.Inc();
        ended.push_back(std::move(t));
      } else {
        spdlog::info("dialog: {}:{} still unconfirmed after its setup limit; dropped", bucket_index,
                     r->h_id);
        if (counters_.failed.valid()) counters_.failed.Inc();
      }
      UnlinkLocked(bucket, r, garbage);
    }
  }
  for (void* p : garbage) shm_.Deallocate(p);
}

absl::Status DialogTable::MergeFromDatabase(const DialogInfo& row) {
  if (row.h_entry >= size_) return absl::NotFoundError("no such dialog");
  Bucket& bucket = buckets_[row.h_entry];
  LockBucket(bucket);
  BucketUnlocker unlock(bucket.mutex);
  Record* r = FindLocked(bucket, row.h_id);
  if (r == nullptr) return absl::NotFoundError("no such dialog");
  const DialogState before = r->get_state();
  if (!row.live()) return absl::OkStatus();
  if (static_cast<int>(row.state) > static_cast<int>(before)) {
    r->set_state(row.state);
    CountStateChange(bucket, before, row.state);
    r->timeout = row.timeout;
    if (row.start_time != 0) r->start_time = row.start_time;
    r->caller_cseq = row.caller.cseq;
    if (row.callee.has_value()) r->callee_cseq = row.callee->cseq;
  } else if (row.state == before) {
    r->timeout = std::max(r->timeout, row.timeout);
    r->caller_cseq = std::max(r->caller_cseq, row.caller.cseq);
    if (row.callee.has_value()) r->callee_cseq = std::max(r->callee_cseq, row.callee->cseq);
  }
  return absl::OkStatus();
}

std::map<std::string, uint64_t> DialogTable::ProfileCounts(uint16_t profile) const {
  std::map<std::string, uint64_t> counts;
  for (uint32_t i = 0; i < size_; ++i) {
    Bucket& bucket = buckets_[i];
    if (bucket.count.load(std::memory_order_relaxed) == 0) continue;
    LockBucket(bucket);
    BucketUnlocker unlock(bucket.mutex);
    for (const Record* r = bucket.first.load(std::memory_order_acquire); r != nullptr;
         r = r->next.load(std::memory_order_acquire)) {
      const Block* b = r->caller.load(std::memory_order_acquire);
      if (b == nullptr || b->profiles == 0) continue;
      size_t offset = 0;
      for (int k = 0; k < b->strings; ++k) offset += b->lengths()[k];
      for (int p = 0; p < b->profiles; ++p) {
        const uint16_t n = b->lengths()[b->strings + p];
        if (b->profile_ids()[p] == profile) ++counts[std::string(b->bytes() + offset, n)];
        offset += n;
      }
    }
  }
  return counts;
}

uint64_t DialogTable::count() const {
  uint64_t total = 0;
  for (uint32_t i = 0; i < size_; ++i) total += buckets_[i].count.load(std::memory_order_relaxed);
  return total;
}

}  // namespace sipd::dialog
