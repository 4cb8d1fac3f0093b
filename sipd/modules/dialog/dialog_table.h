// The dialog table: every INVITE dialog sipd relays, in shared memory (OpenSIPS 1.11's
// d_table, spec 8.2).
//
// Layout (all in the sipd shared-memory heap, created in the attendant before the fork,
// so raw pointers are valid in every process):
//   - `size` buckets ("h_entry" = FNV-1a(Call-ID) % size), each a RobustMutex, a singly
//     linked list of dialog records sorted by h_id, the bucket's next h_id and its own
//     counts of early and confirmed dialogs;
//   - a dialog record is one allocation: a header of scalars (state, CSeqs, times,
//     version) and a pointer to its caller block; the caller block (Call-ID, URIs,
//     caller leg, profile values) is immutable once linked; the callee leg is a second
//     immutable block, published with one pointer store when the 2xx (or an early reply
//     with a To-tag) arrives, and replaced (never edited) by a later one.
// h_id: each bucket hands out increasing ids from a random start (never 0), so a dialog
// id ((h_entry << 32) + h_id) is not reused while sipd runs, nor soon after a restart.
//
// Life cycle (spec 8.2 states): Insert() makes a kUnconfirmed dialog; Apply() moves it
// (provisional reply -> kEarly, 2xx -> kConfirmedNoAck, ACK -> kConfirmed, CSeq updates
// of in-dialog requests); a dialog that ends (non-2xx final reply, BYE, timeout,
// dlg_end_dlg) is unlinked at once and Apply() returns its last contents with state
// kDeleted. Nothing in the table is ever kDeleted.
//
// Statistics (group `dialog`, spec 7.5): the table keeps active_dialogs (kConfirmedNoAck
// + kConfirmed) and early_dialogs exact, and counts processed_dialogs (created),
// failed_dialogs (setup ended without a 2xx) and expired_dialogs (timeouts).
//
// Persistence hook: every change of a confirmed dialog, and the removal of a dialog that
// had been confirmed, is reported to the ChangeSink while the bucket lock is still held,
// so the sink sees the changes of one dialog in the order they happened (the SQLite
// writer queues them in that order). The sink must not block or take a bucket lock.
//
// Process-safety: every operation takes the bucket lock of the dialog(s) it touches,
// holds it only to walk, copy or relink records (never during I/O: callers send BYEs and
// wait for database commits after the lock is released) and copies data out, so callers
// never see shared memory. Links and blocks are published with release stores after
// they are complete, and scalars are single aligned stores, so a process that dies while
// holding a bucket lock leaves every list walkable and every record readable (at worst
// a leaked block, or a change half applied: e.g. the 2xx's callee leg stored but the
// state still early). The next locker gets EOWNERDEAD from the robust mutex, unlinks a
// record the dead process was removing (its state is already kDeleted; the block leaks),
// and recounts the bucket's early/confirmed dialogs to repair active_dialogs and
// early_dialogs. A database change queued by the dead process may be lost (the writer
// queue is only appended to after the change is complete); dlg_restore_db rewrites it.
// Allocation goes through the Boost.Interprocess heap, whose own mutex is not robust
// (see sipd/core/shm.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
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
#include "sipd/modules/dialog/dialog_info.h"

namespace sipd::dialog {

// Receives the changes the database must learn about (see the file comment).
class ChangeSink {
 public:
  virtual ~ChangeSink() = default;
  // `dialog` is the new contents; `removed` means the dialog ended (remove its row).
  // Called with the dialog's bucket lock held.
  virtual void Changed(const DialogInfo& dialog, bool removed) = 0;
};

class DialogTable {
 public:
  struct Counters {
    mi::Counter active;     // active_dialogs
    mi::Counter early;      // early_dialogs
    mi::Counter processed;  // processed_dialogs
    mi::Counter expired;    // expired_dialogs
    mi::Counter failed;     // failed_dialogs
  };

  // What happens to a dialog (Apply()).
  struct Event {
    enum class Kind {
      kProvisional,  // 101-199 to the INVITE went upstream: 1 -> 2
      kConfirmed,    // 2xx to the INVITE went upstream: 1, 2 -> 3 (4 if ACKed already)
      kFailed,       // final non-2xx to the INVITE (or the INVITE transaction ended
                     // without a 2xx): 1, 2 -> ended
      kAck,          // ACK for the 2xx: 3 -> 4 (remembered if it overtook the 2xx)
      kRequest,      // another in-dialog request: the sender's CSeq
      kBye,          // BYE from either side: -> ended
      kTerminate,    // dlg_end_dlg or the timer: 3, 4 -> ended (BYEs are the caller's
                     // business); NotFound for a dialog not confirmed
    };
    Kind kind = Kind::kRequest;
    // kProvisional / kConfirmed: the callee's leg (only stored when its tag is set).
    std::optional<LegInfo> callee;
    // kConfirmed: unix time and dialog lifetime (timeout = now + lifetime).
    int64_t now = 0;
    int64_t lifetime = 0;
    // kRequest: who sent it and its CSeq; kTerminate: the CSeqs the BYEs will use are
    // stored (caller cseq + 1, callee cseq + 1).
    bool from_caller = true;
    uint32_t cseq = 0;
    // kTerminate: counted as expired (timer) rather than ended from the MI.
    bool expired = false;
  };

  struct Transition {
    DialogState before = DialogState::kUnconfirmed;
    DialogState after = DialogState::kUnconfirmed;
    // The dialog after the event (state kDeleted if it ended).
    DialogInfo dialog;
    bool changed() const { return before != after; }
  };

  // Resumable position of CopyChunk(): a walk in (bucket, h_id) order.
  struct Cursor {
    uint32_t bucket = 0;
    bool has_last = false;
    uint32_t last_id = 0;
    bool done = false;
  };

  // Creates the table in `shm` with `size` > 0 buckets. `version_clock` (in shm) holds
  // the last version handed out. `sink` may be null (no database). `seed` makes the
  // buckets' first h_ids (0 = random). REQUIRES: attendant, before the fork.
  static absl::StatusOr<std::unique_ptr<DialogTable>> Create(SharedMemory& shm, uint32_t size,
                                                             std::atomic<uint64_t>* version_clock,
                                                             Counters counters, ChangeSink* sink,
                                                             uint64_t seed = 0);

  uint32_t size() const { return size_; }
  uint32_t BucketOf(std::string_view callid) const;

  // Adds a kUnconfirmed dialog for an initial INVITE at unix time `now` (h_entry, h_id,
  // version and state of `info` are assigned). InvalidArgument when a field is too long,
  // ResourceExhausted when shared memory is full.
  absl::StatusOr<DialogInfo> Insert(DialogInfo info, int64_t now);

  // Inserts a dialog read from the database (keeps its ids; a dialog whose h_entry does
  // not fit this table's size is given new ids). AlreadyExists if that id is present.
  absl::StatusOr<DialogInfo> Load(DialogInfo info);

  std::optional<DialogInfo> Get(uint32_t h_entry, uint32_t h_id) const;
  // The first dialog with this Call-ID (and this caller tag, when `from_tag` is given).
  std::optional<DialogInfo> FindByCallId(std::string_view callid,
                                         std::string_view from_tag = {}) const;

  // The dialog an in-dialog request belongs to: same Call-ID, and From/To tags equal to
  // (caller, callee) or (callee, caller); while no callee tag is known, a request from
  // the caller matches on its From tag alone.
  struct Match {
    uint32_t h_entry = 0;
    uint32_t h_id = 0;
    bool from_caller = true;
  };
  std::optional<Match> MatchRequest(std::string_view callid, std::string_view from_tag,
                                    std::string_view to_tag) const;

  // NotFound when the dialog does not exist (any more).
  absl::StatusOr<Transition> Apply(uint32_t h_entry, uint32_t h_id, const Event& event);

  // Appends up to `max` dialogs for which `filter` is true (all when empty), continuing
  // from `cursor`; no lock is held longer than one bucket's share of the chunk. Sets
  // cursor.done at the end of the table.
  using Filter = absl::FunctionRef<bool(const DialogInfo&)>;
  void CopyChunk(Cursor& cursor, size_t max, std::vector<DialogInfo>& out) const;
  void CopyChunk(Cursor& cursor, size_t max, Filter filter, std::vector<DialogInfo>& out) const;
  // The same into a DialogChunk (what the listing commands use: far fewer allocations).
  using ChunkFilter = absl::FunctionRef<bool(const DialogChunk&, const DialogChunk::Dialog&)>;
  void CopyChunk(Cursor& cursor, size_t max, ChunkFilter filter, DialogChunk& out) const;

  // Timer work for one bucket: the confirmed dialogs whose timeout is due (timeout != 0
  // && timeout <= now) end as by a kTerminate event with `expired` set (their
  // transitions are appended to `ended`); unconfirmed and early dialogs created before
  // `setup_cutoff` end as failed (nobody is told: their INVITE is long gone).
  void Expire(uint32_t bucket, int64_t now, int64_t setup_cutoff, std::vector<Transition>& ended);

  // dlg_db_sync: takes the state, timeout and CSeqs of `row` (a database row of a dialog
  // in the table) when the row's state is newer; with the same state, the later timeout
  // and the higher CSeqs. NotFound if the dialog is not in the table.
  absl::Status MergeFromDatabase(const DialogInfo& row);

  // For each value of profile `profile` (an index, see ProfileLink), the number of
  // dialogs in the table that have it ("" is the value of profiles without values).
  // Reads the records in place, one bucket lock at a time.
  std::map<std::string, uint64_t> ProfileCounts(uint16_t profile) const;

  // Every dialog in the table (all states).
  uint64_t count() const;

  // Implementation types (dialog_table.cc).
  struct Bucket;
  struct Record;
  struct Block;

 private:
  DialogTable(SharedMemory& shm, uint32_t size, Bucket* buckets,
              std::atomic<uint64_t>* version_clock, Counters counters, ChangeSink* sink);

  void LockBucket(Bucket& bucket) const;
  void RepairBucket(Bucket& bucket) const;
  Record* FindLocked(Bucket& bucket, uint32_t h_id) const;
  DialogInfo CopyLocked(uint32_t h_entry, const Record& record) const;
  void CopyLocked(uint32_t h_entry, const Record& record, DialogChunk& out) const;
  // Walks `cursor`'s bucket from where it stopped; `take` copies one record and says
  // whether it counts. Shared by the CopyChunk() variants.
  template <typename Take>
  void Walk(Cursor& cursor, size_t max, Take take) const;
  Block* NewBlock(const DialogInfo& info, bool callee_part) const;
  absl::StatusOr<DialogInfo> Link(DialogInfo info, bool keep_ids, int64_t now);
  // Unlinks and frees `record`. REQUIRES: bucket locked.
  void UnlinkLocked(Bucket& bucket, Record* record, std::vector<void*>& garbage) const;
  void CountStateChange(Bucket& bucket, DialogState before, DialogState after) const;
  uint64_t NextVersion() const;

  SharedMemory& shm_;
  uint32_t size_;
  Bucket* buckets_;
  std::atomic<uint64_t>* version_clock_;
  Counters counters_;
  ChangeSink* sink_;
};

}  // namespace sipd::dialog
