#include "sipd/modules/usrloc/location_table.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sipd::usrloc {
namespace {

enum Field : int {
  kUri,
  kCallid,
  kUserAgent,
  kReceived,
  kPath,
  kSocket,
  kInstance,
  kAttr,
  kFieldCount,
};

std::string_view FieldOf(const ContactInfo& c, int field) {
  switch (field) {
    case kUri:
      return c.uri;
    case kCallid:
      return c.callid;
    case kUserAgent:
      return c.user_agent;
    case kReceived:
      return c.received;
    case kPath:
      return c.path;
    case kSocket:
      return c.socket;
    case kInstance:
      return c.instance;
    case kAttr:
      return c.attr;
  }
  return {};
}

}  // namespace

// A contact: immutable once linked. The strings follow the header in field order.
struct LocationTable::Contact {
  std::atomic<Contact*> next{nullptr};
  int64_t expires = 0;
  int64_t last_modified = 0;
  uint64_t version = 0;          // version of the AOR change that wrote this contact
  uint64_t created_version = 0;  // version that first inserted this URI
  int32_t q = kQUnspecified;
  uint32_t cseq = 0;
  uint32_t flags = 0;
  uint32_t cflags = 0;
  uint32_t methods = 0;
  uint16_t length[kFieldCount] = {};

  const char* data() const { return reinterpret_cast<const char*>(this + 1); }
  char* data() { return reinterpret_cast<char*>(this + 1); }
  std::string_view field(int f) const {
    size_t offset = 0;
    for (int i = 0; i < f; ++i) offset += length[i];
    return std::string_view(data() + offset, length[f]);
  }
  std::string_view uri() const { return std::string_view(data(), length[kUri]); }
};

struct LocationTable::Aor {
  std::atomic<Aor*> next{nullptr};
  std::atomic<Contact*> contacts{nullptr};
  uint64_t version = 0;     // last change
  uint64_t db_version = 0;  // newest version known to be in the database
  uint32_t hash = 0;
  uint32_t contact_count = 0;
  uint32_t length = 0;

  std::string_view aor() const {
    return std::string_view(reinterpret_cast<const char*>(this + 1), length);
  }
};

struct LocationTable::Slot {
  RobustMutex mutex;
  std::atomic<Aor*> first{nullptr};
  uint32_t users = 0;     // AORs with contacts in this slot
  uint32_t contacts = 0;  // contacts in this slot
};

namespace {

// Unlocks a slot on scope exit.
class SlotUnlocker {
 public:
  explicit SlotUnlocker(RobustMutex& mutex) : mutex_(mutex) {}
  ~SlotUnlocker() { mutex_.Unlock(); }
  SlotUnlocker(const SlotUnlocker&) = delete;
  SlotUnlocker& operator=(const SlotUnlocker&) = delete;

 private:
  RobustMutex& mutex_;
};

// (hash, aor) ordering of the slot lists.
int Compare(uint32_t hash_a, std::string_view a, uint32_t hash_b, std::string_view b) {
  if (hash_a != hash_b) return hash_a < hash_b ? -1 : 1;
  return a.compare(b);
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocationTable>> LocationTable::Create(
    SharedMemory& shm, std::string name, uint32_t slots, std::atomic<uint64_t>* version_clock,
    Counters counters, bool track_db) {
  if (slots == 0) return absl::InvalidArgumentError("usrloc table needs at least one slot");
  void* memory = shm.Allocate(sizeof(Slot) * slots);
  if (memory == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for the ", slots, " slots of usrloc table ", name));
  }
  Slot* array = static_cast<Slot*>(memory);
  for (uint32_t i = 0; i < slots; ++i) new (&array[i]) Slot();
  return std::unique_ptr<LocationTable>(
      new LocationTable(shm, std::move(name), slots, array, version_clock, counters, track_db));
}

LocationTable::LocationTable(SharedMemory& shm, std::string name, uint32_t size, Slot* slots,
                             std::atomic<uint64_t>* version_clock, Counters counters, bool track_db)
    : shm_(shm),
      name_(std::move(name)),
      size_(size),
      slots_(slots),
      version_clock_(version_clock),
      counters_(counters),
      track_db_(track_db) {}

uint32_t LocationTable::Hash(std::string_view aor) {
  // FNV-1a: deterministic in every process (unlike seeded hashes).
  uint32_t h = 2166136261u;
  for (unsigned char c : aor) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

LocationTable::Slot& LocationTable::SlotFor(uint32_t hash) const { return slots_[hash % size_]; }

uint64_t LocationTable::NextVersion() const {
  return version_clock_->fetch_add(1, std::memory_order_relaxed) + 1;
}

void LocationTable::LockSlot(Slot& slot) const {
  if (slot.mutex.Lock()) RepairSlot(slot);
}

void LocationTable::RepairSlot(Slot& slot) const {
  // The previous holder died. Links are always consistent (see header); only counts can
  // be stale. Recount this slot and move the domain counters by the difference.
  uint32_t users = 0;
  uint32_t contacts = 0;
  for (Aor* a = slot.first.load(std::memory_order_acquire); a != nullptr;
       a = a->next.load(std::memory_order_acquire)) {
    uint32_t n = 0;
    for (Contact* c = a->contacts.load(std::memory_order_acquire); c != nullptr;
         c = c->next.load(std::memory_order_acquire)) {
      ++n;
    }
    a->contact_count = n;
    contacts += n;
    if (n > 0) ++users;
  }
  spdlog::warn(
      "usrloc: table {}: a process died holding a slot lock; recounted {} users, {} "
      "contacts (were {}, {})",
      name_, users, contacts, slot.users, slot.contacts);
  if (users > slot.users) counters_.users.Inc(users - slot.users);
  if (users < slot.users) counters_.users.Dec(slot.users - users);
  if (contacts > slot.contacts) counters_.contacts.Inc(contacts - slot.contacts);
  if (contacts < slot.contacts) counters_.contacts.Dec(slot.contacts - contacts);
  slot.users = users;
  slot.contacts = contacts;
}

LocationTable::Aor* LocationTable::FindLocked(Slot& slot, uint32_t hash,
                                              std::string_view aor) const {
  for (Aor* a = slot.first.load(std::memory_order_acquire); a != nullptr;
       a = a->next.load(std::memory_order_acquire)) {
    const int c = Compare(a->hash, a->aor(), hash, aor);
    if (c == 0) return a;
    if (c > 0) break;
  }
  return nullptr;
}

ContactInfo LocationTable::CopyContact(const Aor& aor, const Contact& c) const {
  ContactInfo info;
  info.uri = std::string(c.field(kUri));
  info.callid = std::string(c.field(kCallid));
  info.user_agent = std::string(c.field(kUserAgent));
  info.received = std::string(c.field(kReceived));
  info.path = std::string(c.field(kPath));
  info.socket = std::string(c.field(kSocket));
  info.instance = std::string(c.field(kInstance));
  info.attr = std::string(c.field(kAttr));
  info.expires = c.expires;
  info.q = c.q;
  info.cseq = c.cseq;
  info.flags = c.flags;
  info.cflags = c.cflags;
  info.methods = c.methods;
  info.last_modified = c.last_modified;
  if (!track_db_ || c.created_version > aor.db_version) {
    info.state = ContactState::kNew;
  } else if (c.version > aor.db_version) {
    info.state = ContactState::kDirty;
  } else {
    info.state = ContactState::kSync;
  }
  return info;
}

AorSnapshot LocationTable::CopyAorLocked(const Aor& aor, bool with_contacts) const {
  AorSnapshot snapshot;
  snapshot.aor = std::string(aor.aor());
  snapshot.version = aor.version;
  if (with_contacts) {
    snapshot.contacts.reserve(aor.contact_count);
    for (const Contact* c = aor.contacts.load(std::memory_order_acquire); c != nullptr;
         c = c->next.load(std::memory_order_acquire)) {
      snapshot.contacts.push_back(CopyContact(aor, *c));
    }
  }
  return snapshot;
}

LocationTable::Contact* LocationTable::NewContact(const ContactInfo& info, uint64_t version,
                                                  uint64_t created_version) const {
  size_t bytes = 0;
  for (int f = 0; f < kFieldCount; ++f) {
    const size_t n = FieldOf(info, f).size();
    if (n > 0xFFFF) return nullptr;
    bytes += n;
  }
  void* memory = shm_.Allocate(sizeof(Contact) + bytes);
  if (memory == nullptr) return nullptr;
  Contact* c = new (memory) Contact();
  c->expires = info.expires;
  c->last_modified = info.last_modified;
  c->version = version;
  c->created_version = created_version;
  c->q = info.q;
  c->cseq = info.cseq;
  c->flags = info.flags;
  c->cflags = info.cflags;
  c->methods = info.methods;
  char* out = c->data();
  for (int f = 0; f < kFieldCount; ++f) {
    const std::string_view value = FieldOf(info, f);
    c->length[f] = static_cast<uint16_t>(value.size());
    if (!value.empty()) std::memcpy(out, value.data(), value.size());
    out += value.size();
  }
  return c;
}

namespace {

// Links `c` into the q-ordered list: after every contact with q >= c->q.
template <typename Contact>
void InsertByQ(std::atomic<Contact*>& head, Contact* c) {
  std::atomic<Contact*>* link = &head;
  for (Contact* p = link->load(std::memory_order_acquire); p != nullptr;
       p = link->load(std::memory_order_acquire)) {
    if (p->q < c->q) break;
    link = &p->next;
  }
  c->next.store(link->load(std::memory_order_acquire), std::memory_order_release);
  link->store(c, std::memory_order_release);
}

}  // namespace

void LocationTable::DropAorLocked(Slot& slot, Aor* aor) const {
  std::atomic<Aor*>* link = &slot.first;
  for (Aor* a = link->load(std::memory_order_acquire); a != nullptr;
       a = link->load(std::memory_order_acquire)) {
    if (a == aor) {
      link->store(a->next.load(std::memory_order_acquire), std::memory_order_release);
      a->~Aor();
      shm_.Deallocate(a);
      return;
    }
    link = &a->next;
  }
}

absl::StatusOr<UpdateResult> LocationTable::Update(std::string_view aor_name, EditFn fn) {
  if (aor_name.empty() || aor_name.size() > kMaxAorLength) {
    return absl::InvalidArgumentError("bad AOR length");
  }
  const uint32_t hash = Hash(aor_name);
  Slot& slot = SlotFor(hash);
  // Freed after the lock is released.
  std::vector<void*> garbage;
  UpdateResult result;
  {
    LockSlot(slot);
    SlotUnlocker unlock(slot.mutex);
    Aor* aor = FindLocked(slot, hash, aor_name);
    result.existed = aor != nullptr && aor->contact_count > 0;
    std::vector<ContactInfo> current;
    if (result.existed) current = CopyAorLocked(*aor, true).contacts;

    std::vector<Edit> edits;
    absl::Status status = fn(result.existed, current, edits);
    if (!status.ok()) return status;

    // Decide what each edit does against the current contacts, and allocate every new
    // block before changing anything, so that a full heap leaves the AOR untouched.
    const bool needs_record = std::any_of(
        edits.begin(), edits.end(), [](const Edit& e) { return e.kind == Edit::Kind::kUpsert; });
    const uint64_t version = edits.empty() ? 0 : NextVersion();
    Aor* fresh_aor = nullptr;
    if (needs_record && aor == nullptr) {
      void* memory = shm_.Allocate(sizeof(Aor) + aor_name.size());
      if (memory == nullptr) return absl::ResourceExhaustedError("shared memory is full");
      fresh_aor = new (memory) Aor();
      fresh_aor->hash = hash;
      fresh_aor->length = static_cast<uint32_t>(aor_name.size());
      std::memcpy(reinterpret_cast<char*>(fresh_aor + 1), aor_name.data(), aor_name.size());
    }
    std::vector<Contact*> fresh(edits.size(), nullptr);
    for (size_t i = 0; i < edits.size(); ++i) {
      if (edits[i].kind != Edit::Kind::kUpsert) continue;
      uint64_t created = version;
      if (aor != nullptr) {
        for (const Contact* c = aor->contacts.load(std::memory_order_acquire); c != nullptr;
             c = c->next.load(std::memory_order_acquire)) {
          if (c->uri() == edits[i].contact.uri) {
            created = c->created_version;
            break;
          }
        }
      }
      fresh[i] = NewContact(edits[i].contact, version, created);
      if (fresh[i] == nullptr) {
        for (Contact* c : fresh) {
          if (c != nullptr) shm_.Deallocate(c);
        }
        if (fresh_aor != nullptr) shm_.Deallocate(fresh_aor);
        return absl::ResourceExhaustedError("shared memory is full");
      }
    }

    if (fresh_aor != nullptr) {
      // Link the new record at its sorted place.
      std::atomic<Aor*>* link = &slot.first;
      for (Aor* a = link->load(std::memory_order_acquire); a != nullptr;
           a = link->load(std::memory_order_acquire)) {
        if (Compare(a->hash, a->aor(), hash, aor_name) > 0) break;
        link = &a->next;
      }
      fresh_aor->next.store(link->load(std::memory_order_acquire), std::memory_order_release);
      link->store(fresh_aor, std::memory_order_release);
      aor = fresh_aor;
    }

    const uint32_t before = aor != nullptr ? aor->contact_count : 0;
    for (size_t i = 0; i < edits.size(); ++i) {
      if (aor == nullptr) break;  // only removals, and nothing to remove from
      const std::string& uri = edits[i].contact.uri;
      // Find the contact with this URI and the link that points at it.
      std::atomic<Contact*>* link = &aor->contacts;
      Contact* old = nullptr;
      for (Contact* c = link->load(std::memory_order_acquire); c != nullptr;
           c = link->load(std::memory_order_acquire)) {
        if (c->uri() == uri) {
          old = c;
          break;
        }
        link = &c->next;
      }
      if (edits[i].kind == Edit::Kind::kRemove) {
        if (old == nullptr) continue;
        link->store(old->next.load(std::memory_order_acquire), std::memory_order_release);
        garbage.push_back(old);
        --aor->contact_count;
        --slot.contacts;
        counters_.contacts.Dec();
        result.changed = true;
        continue;
      }
      Contact* c = fresh[i];
      if (old != nullptr && old->q == c->q) {
        c->next.store(old->next.load(std::memory_order_acquire), std::memory_order_release);
        link->store(c, std::memory_order_release);
        garbage.push_back(old);
      } else {
        if (old != nullptr) {
          link->store(old->next.load(std::memory_order_acquire), std::memory_order_release);
          garbage.push_back(old);
        } else {
          ++aor->contact_count;
          ++slot.contacts;
          counters_.contacts.Inc();
        }
        InsertByQ(aor->contacts, c);
      }
      result.changed = true;
    }

    if (aor != nullptr) {
      if (result.changed) aor->version = version;
      const uint32_t after = aor->contact_count;
      if (before == 0 && after > 0) {
        ++slot.users;
        counters_.users.Inc();
      } else if (before > 0 && after == 0) {
        --slot.users;
        counters_.users.Dec();
      }
      result.after = CopyAorLocked(*aor, true);
      if (after == 0 && (!track_db_ || aor->db_version >= aor->version)) {
        DropAorLocked(slot, aor);
      }
    } else {
      result.after.aor = std::string(aor_name);
    }
  }
  for (void* p : garbage) {
    static_cast<Contact*>(p)->~Contact();
    shm_.Deallocate(p);
  }
  return result;
}

std::optional<AorSnapshot> LocationTable::Get(std::string_view aor_name) const {
  const uint32_t hash = Hash(aor_name);
  Slot& slot = SlotFor(hash);
  LockSlot(slot);
  SlotUnlocker unlock(slot.mutex);
  const Aor* aor = FindLocked(slot, hash, aor_name);
  if (aor == nullptr || aor->contact_count == 0) return std::nullopt;
  return CopyAorLocked(*aor, true);
}

void LocationTable::CopyChunk(Cursor& cursor, size_t max_aors, bool with_contacts,
                              std::vector<AorSnapshot>& out, std::string_view aor_prefix) const {
  size_t copied = 0;
  while (!cursor.done && copied < max_aors) {
    Slot& slot = slots_[cursor.slot];
    bool slot_finished = true;
    {
      LockSlot(slot);
      SlotUnlocker unlock(slot.mutex);
      for (const Aor* a = slot.first.load(std::memory_order_acquire); a != nullptr;
           a = a->next.load(std::memory_order_acquire)) {
        if (cursor.has_last && Compare(a->hash, a->aor(), cursor.last_hash, cursor.last_aor) <= 0) {
          continue;
        }
        if (a->contact_count == 0) continue;
        if (!aor_prefix.empty() && a->aor().substr(0, aor_prefix.size()) != aor_prefix) continue;
        if (copied == max_aors) {
          slot_finished = false;
          break;
        }
        out.push_back(CopyAorLocked(*a, with_contacts));
        cursor.has_last = true;
        cursor.last_hash = a->hash;
        cursor.last_aor = out.back().aor;
        ++copied;
      }
    }
    if (slot_finished) {
      cursor.has_last = false;
      if (++cursor.slot == size_) cursor.done = true;
    }
  }
}

void LocationTable::Sweep(uint32_t slot_index, int64_t now, std::vector<AorSnapshot>* unsynced,
                          size_t* expired, std::vector<SweptAor>* swept) {
  Slot& slot = slots_[slot_index];
  std::vector<void*> garbage;
  size_t removed_total = 0;
  {
    LockSlot(slot);
    SlotUnlocker unlock(slot.mutex);
    std::atomic<Aor*>* aor_link = &slot.first;
    for (Aor* a = aor_link->load(std::memory_order_acquire); a != nullptr;
         a = aor_link->load(std::memory_order_acquire)) {
      const uint32_t before = a->contact_count;
      size_t removed = 0;
      SweptAor* gone = nullptr;
      std::atomic<Contact*>* link = &a->contacts;
      for (Contact* c = link->load(std::memory_order_acquire); c != nullptr;
           c = link->load(std::memory_order_acquire)) {
        if (c->expires != 0 && c->expires <= now) {
          if (swept != nullptr) {
            if (gone == nullptr)
              gone = &swept->emplace_back(SweptAor{.aor = std::string(a->aor())});
            gone->contacts.push_back(CopyContact(*a, *c));
          }
          link->store(c->next.load(std::memory_order_acquire), std::memory_order_release);
          garbage.push_back(c);
          --a->contact_count;
          ++removed;
        } else {
          link = &c->next;
        }
      }
      if (removed > 0) {
        a->version = NextVersion();
        slot.contacts -= static_cast<uint32_t>(removed);
        counters_.contacts.Dec(removed);
        removed_total += removed;
        if (before > 0 && a->contact_count == 0) {
          --slot.users;
          counters_.users.Dec();
          if (gone != nullptr) gone->aor_gone = true;
        }
      }
      if (track_db_ && unsynced != nullptr && a->version > a->db_version) {
        unsynced->push_back(CopyAorLocked(*a, true));
      }
      if (a->contact_count == 0 && (!track_db_ || a->db_version >= a->version)) {
        aor_link->store(a->next.load(std::memory_order_acquire), std::memory_order_release);
        garbage.push_back(a);
        continue;
      }
      aor_link = &a->next;
    }
  }
  if (removed_total > 0) counters_.expires.Inc(removed_total);
  if (expired != nullptr) *expired += removed_total;
  // Both block types are trivially destructible apart from their atomics.
  for (void* p : garbage) shm_.Deallocate(p);
}

void LocationTable::MarkSynced(std::string_view aor_name, uint64_t version) {
  const uint32_t hash = Hash(aor_name);
  Slot& slot = SlotFor(hash);
  LockSlot(slot);
  SlotUnlocker unlock(slot.mutex);
  Aor* aor = FindLocked(slot, hash, aor_name);
  if (aor == nullptr) return;
  aor->db_version = std::max(aor->db_version, version);
  if (aor->contact_count == 0 && aor->db_version >= aor->version) DropAorLocked(slot, aor);
}

absl::Status LocationTable::Load(const AorSnapshot& snapshot) {
  if (snapshot.aor.empty() || snapshot.aor.size() > kMaxAorLength) {
    return absl::InvalidArgumentError(absl::StrCat("bad AOR '", snapshot.aor, "'"));
  }
  if (snapshot.contacts.empty()) return absl::OkStatus();
  const uint32_t hash = Hash(snapshot.aor);
  Slot& slot = SlotFor(hash);
  LockSlot(slot);
  SlotUnlocker unlock(slot.mutex);
  if (FindLocked(slot, hash, snapshot.aor) != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat("AOR '", snapshot.aor, "' loaded twice"));
  }
  void* memory = shm_.Allocate(sizeof(Aor) + snapshot.aor.size());
  if (memory == nullptr) return absl::ResourceExhaustedError("shared memory is full");
  Aor* aor = new (memory) Aor();
  aor->hash = hash;
  aor->length = static_cast<uint32_t>(snapshot.aor.size());
  aor->version = snapshot.version;
  aor->db_version = snapshot.version;
  std::memcpy(reinterpret_cast<char*>(aor + 1), snapshot.aor.data(), snapshot.aor.size());
  for (const ContactInfo& info : snapshot.contacts) {
    Contact* c = NewContact(info, snapshot.version, snapshot.version);
    if (c == nullptr) {
      // Keep what was linked; the caller aborts start-up anyway.
      return absl::ResourceExhaustedError("shared memory is full");
    }
    InsertByQ(aor->contacts, c);
    ++aor->contact_count;
  }
  std::atomic<Aor*>* link = &slot.first;
  for (Aor* a = link->load(std::memory_order_acquire); a != nullptr;
       a = link->load(std::memory_order_acquire)) {
    if (Compare(a->hash, a->aor(), hash, snapshot.aor) > 0) break;
    link = &a->next;
  }
  aor->next.store(link->load(std::memory_order_acquire), std::memory_order_release);
  link->store(aor, std::memory_order_release);
  slot.contacts += aor->contact_count;
  ++slot.users;
  counters_.contacts.Inc(aor->contact_count);
  counters_.users.Inc();
  return absl::OkStatus();
}

}  // namespace sipd::usrloc
