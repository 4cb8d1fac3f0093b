// One usrloc domain ("table", e.g. `location`): a hash table of address-of-records in
// shared memory, each with its list of contacts.
//
// Layout (all in the sipd shared-memory heap, created in the attendant before the fork,
// so raw pointers are valid in every process):
//   - `size` slots, each a RobustMutex, a singly linked list of AOR records sorted by
//     (hash, AOR) and the slot's own user/contact counts;
//   - an AOR record is one allocation (header + AOR bytes) holding a list of contacts
//     ordered by q (highest first; equal q keeps insertion order);
//   - a contact is one allocation (header + its strings packed behind it), immutable once
//     linked: an update links a new copy in place of the old one.
// Records are our own variable-size blobs (not Boost containers) so that every change
// becomes visible through a single pointer store: see "Process-safety" below.
//
// Versions: every change of an AOR takes a new value from a global counter shared by all
// tables (`version_clock`). A record remembers the newest version known to be in the
// database (`db_version`); the difference gives the contacts' CS_NEW/CS_DIRTY/CS_SYNC
// state and tells the persistence layer (usrloc.h) what is still to be written. When the
// database is in use (`track_db`), an AOR whose last contact went away stays in the
// table, invisible to every reader, until its removal has been written.
//
// Process-safety: every operation takes the slot lock of the AOR(s) it touches, holds it
// only to walk, copy or relink records (never during I/O; callers do database writes
// after the lock is released) and copies data out, so callers never see shared memory.
// List links are published with release stores after the new node is complete, so a
// process that dies while holding a slot lock leaves every list walkable (at worst a
// leaked block); the next locker gets EOWNERDEAD from the robust mutex and recounts the
// slot's users/contacts to repair the statistics. Allocation goes through the
// Boost.Interprocess heap, whose own mutex is not robust (see sipd/core/shm.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "registry/statistics.h"
#include "sipd/core/shm.h"
#include "sipd/modules/usrloc/contact.h"

namespace sipd::usrloc {

// One change requested by an Update() callback.
struct Edit {
  enum class Kind {
    kUpsert,  // insert `contact`, or replace the contact with the same URI
    kRemove,  // remove the contact whose URI equals contact.uri (if any)
  };
  Kind kind = Kind::kUpsert;
  ContactInfo contact;
};

// What one Sweep() removed from one AOR (usrloc raises its events from it).
struct SweptAor {
  std::string aor;
  std::vector<ContactInfo> contacts;
  // The AOR's last contact went away.
  bool aor_gone = false;
};

struct UpdateResult {
  // The AOR had at least one contact before the update.
  bool existed = false;
  // At least one edit changed the table (a new version was taken).
  bool changed = false;
  // The AOR after the update (every stored contact, expired ones not yet swept
  // included; state filled in). Empty contacts = the AOR is gone.
  AorSnapshot after;
};

class LocationTable {
 public:
  struct Counters {
    mi::Counter users;     // D-users: AORs with at least one contact
    mi::Counter contacts;  // D-contacts
    mi::Counter expires;   // D-expires: contacts removed because they expired
  };

  // Resumable position of CopyChunk() (a walk in (slot, hash, AOR) order).
  struct Cursor {
    uint32_t slot = 0;
    bool has_last = false;
    uint32_t last_hash = 0;
    std::string last_aor;
    bool done = false;
  };

  // Called under the slot lock with the AOR's current contacts (`exists` is false when
  // the AOR has none). Appends the edits to apply, or returns an error to abort without
  // changing anything. Must not block or take other locks.
  using EditFn = absl::FunctionRef<absl::Status(
      bool exists, const std::vector<ContactInfo>& current, std::vector<Edit>& edits)>;

  // Creates the table in `shm`. `slots` > 0. `version_clock` (in shm) holds the last
  // version handed out. REQUIRES: attendant, before the fork.
  static absl::StatusOr<std::unique_ptr<LocationTable>> Create(SharedMemory& shm, std::string name,
                                                               uint32_t slots,
                                                               std::atomic<uint64_t>* version_clock,
                                                               Counters counters, bool track_db);

  const std::string& name() const { return name_; }
  uint32_t size() const { return size_; }
  bool track_db() const { return track_db_; }

  // Runs `fn` under the AOR's slot lock and applies its edits atomically (all or none).
  // Errors: what `fn` returned; ResourceExhausted if shared memory is full.
  absl::StatusOr<UpdateResult> Update(std::string_view aor, EditFn fn);

  // The AOR with its contacts, or nullopt if it has none.
  std::optional<AorSnapshot> Get(std::string_view aor) const;

  // Appends up to `max_aors` AORs that have contacts (and start with `aor_prefix`, if
  // not empty), continuing from `cursor`; each AOR is copied whole under its slot lock,
  // and no lock is held for more than one slot's share of the chunk. Sets cursor.done
  // at the end of the table. Contacts are copied only if `with_contacts`.
  void CopyChunk(Cursor& cursor, size_t max_aors, bool with_contacts, std::vector<AorSnapshot>& out,
                 std::string_view aor_prefix = {}) const;

  // Timer work for one slot: removes contacts with expires != 0 && expires <= now
  // (counted in D-expires, returned in *expired) and, when the table tracks the
  // database, appends a snapshot of every AOR whose newest version is not in the
  // database yet to *unsynced (nullptr: do not collect). With `swept`, also appends a copy
  // of what was removed, per AOR.
  void Sweep(uint32_t slot, int64_t now, std::vector<AorSnapshot>* unsynced, size_t* expired,
             std::vector<SweptAor>* swept = nullptr);

  // Records that `version` of `aor` is in the database; drops the AOR if it is empty and
  // nothing newer is pending.
  void MarkSynced(std::string_view aor, uint64_t version);

  // Inserts an AOR read from the database at start-up: its contacts are CS_SYNC.
  // REQUIRES: the AOR is not in the table yet.
  absl::Status Load(const AorSnapshot& snapshot);

  uint64_t users() const { return counters_.users.value(); }
  uint64_t contacts() const { return counters_.contacts.value(); }

  // Implementation types (defined in location_table.cc).
  struct Slot;
  struct Aor;
  struct Contact;

 private:
  LocationTable(SharedMemory& shm, std::string name, uint32_t size, Slot* slots,
                std::atomic<uint64_t>* version_clock, Counters counters, bool track_db);

  static uint32_t Hash(std::string_view aor);
  Slot& SlotFor(uint32_t hash) const;
  void LockSlot(Slot& slot) const;
  void RepairSlot(Slot& slot) const;
  // REQUIRES: slot locked.
  Aor* FindLocked(Slot& slot, uint32_t hash, std::string_view aor) const;
  AorSnapshot CopyAorLocked(const Aor& aor, bool with_contacts) const;
  ContactInfo CopyContact(const Aor& aor, const Contact& contact) const;
  Contact* NewContact(const ContactInfo& info, uint64_t version, uint64_t created_version) const;
  // Unlinks `aor` from its slot and frees it. REQUIRES: slot locked, no contacts.
  void DropAorLocked(Slot& slot, Aor* aor) const;
  uint64_t NextVersion() const;

  SharedMemory& shm_;
  std::string name_;
  uint32_t size_;
  Slot* slots_;
  std::atomic<uint64_t>* version_clock_;
  Counters counters_;
  bool track_db_;
};

}  // namespace sipd::usrloc
