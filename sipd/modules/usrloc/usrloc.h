// usrloc: the user location service (OpenSIPS 1.11 usrloc semantics).
//
// Usrloc owns the location tables (LocationTable, in shared memory), their statistics
// and their persistence in SQLite according to db_mode:
//   0 (no DB)         memory only;
//   1 (write-through) every change is committed to SQLite after the slot lock is
//                     released and before the caller answers (the registrar sends
//                     200 OK only after the commit); the commit is a group commit
//                     (sipd/modules/sqlite/group_commit.h): the changes queued by every
//                     process at that moment share one SQLite transaction. The registrar
//                     does not wait for it: it queues the AOR's record with the reply
//                     (CommitLater), goes back to its socket, and whichever process
//                     commits the batch sends the replies after the COMMIT (statistics
//                     usrloc:db_commits and usrloc:db_records show the batch size);
//   2 (write-back)    changes are written by the timer process every timer_interval,
//                     by ul_flush, and once more at clean shutdown (in the attendant);
//   3 (DB only)       not implemented: rejected at start-up with a config error.
// In both DB modes the tables are loaded from the database at start-up, and the timer
// (re)writes any AOR whose newest version is not in the database yet (so a failed
// write-through commit is retried).
//
// Process-safety: created in the attendant (Start, AddTable, LoadFromDatabase) before
// the fork; afterwards every method may be called from any sipd process and thread. Table access
// is guarded by the tables' slot locks; SQLite is reached only through the group-commit
// writer of the database file (shared with the dialog module when it names the same
// file), which opens one connection per process on first use (or in ChildInit), never
// under a slot lock; the connection of the attendant is closed before the fork.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "registry/events.h"
#include "registry/statistics.h"
#include "sipd/api/module.h"
#include "sipd/core/shm.h"
#include "sipd/modules/sqlite/group_commit.h"
#include "sipd/modules/usrloc/contact.h"
#include "sipd/modules/usrloc/location_table.h"
#include "sipd/modules/usrloc/sqlite_store.h"

namespace sipd::usrloc {

enum class DbMode { kNone = 0, kWriteThrough = 1, kWriteBack = 2 };

// The table every REGISTER is saved into.
inline constexpr std::string_view kDefaultTable = "location";

struct Options {
  DbMode db_mode = DbMode::kNone;
  // 1: AORs are user@domain; 0: the domain part is ignored (stripped).
  bool use_domain = false;
  // The hash tables have 2^hash_size slots (OpenSIPS semantics; 9 -> 512).
  int hash_size = 9;
  // Seconds between timer runs (expiry, write-back flush).
  int timer_interval = 60;
  // SQLite file (db_mode 1, 2).
  std::string db_path;
  SqliteStore::Synchronous synchronous = SqliteStore::Synchronous::kNormal;
  // Most live contacts registered from one source address (the registrar answers 503 +
  // Retry-After beyond it); 0 = no limit, nothing counted. Off by default: behind an
  // SBC or a NAT every phone has one source.
  uint32_t max_contacts_per_source = 0;
  // Where the database writer schedules its maintenance (the daemon's AddTimer; see
  // sqlite::GroupCommitWriter::Options::add_timer). Unset in tests.
  sqlite::AddTimerFn add_timer;
};

// Counters of contacts per source address (shared by hash: see ContactsFromSource).
inline constexpr size_t kSourceBuckets = 4096;

class Usrloc {
 public:
  // Current unix time in seconds (injectable for tests).
  using Clock = std::function<int64_t()>;

  Usrloc(Options options, SharedMemory& shm, mi::StatsRegistry& stats, Clock clock = {});
  ~Usrloc();
  Usrloc(const Usrloc&) = delete;
  Usrloc& operator=(const Usrloc&) = delete;

  // Creates the shared state, the `usrloc:registered_users` statistic and the default
  // table `location`. REQUIRES: attendant, before the fork.
  absl::Status Start();
  // Adds another table (statistics D-users, D-contacts, D-expires). REQUIRES: after
  // Start(), before LoadFromDatabase() and the fork.
  absl::StatusOr<LocationTable*> AddTable(std::string_view name);
  // DB modes: prunes and loads every table from the database, then closes the
  // connection. A no-op in db_mode 0.
  absl::Status LoadFromDatabase();

  const Options& options() const { return options_; }
  int64_t Now() const { return clock_(); }

  // Exact, case-sensitive lookup; nullptr if there is no such table.
  LocationTable* FindTable(std::string_view name) const;
  const std::vector<std::unique_ptr<LocationTable>>& tables() const { return tables_; }
  uint64_t registered_users() const;

  // The MI form of an AOR (spec 8.1): use_domain=0 strips "@..."; use_domain=1 needs an
  // '@' (nullopt if missing).
  std::optional<std::string> FixAor(std::string_view aor) const;

  struct Applied {
    UpdateResult result;
    // Write-through: the outcome of the commit (OK when nothing had to be written).
    // Other modes: always OK. On failure the change stays in memory and the timer
    // retries the write.
    absl::Status persisted;
    // Write-through with CommitMode::kLater: result.after still has to be committed
    // (CommitLater or CommitNow) before the change may be acknowledged.
    bool commit_pending = false;
  };
  // kWait: Update() returns after the commit. kLater: it does not commit; the caller
  // does (commit_pending), e.g. with its reply as the acknowledgment.
  enum class CommitMode { kWait, kLater };
  // LocationTable::Update, then (write-through) the commit of the new AOR state.
  absl::StatusOr<Applied> Update(LocationTable& table, std::string_view aor,
                                 LocationTable::EditFn fn, CommitMode mode = CommitMode::kWait);

  // Write-through with a deferred acknowledgment (the registrar): queues the commit of
  // `snapshot` (Applied::result.after of Update(..., kLater)) together with `ack`, tries
  // to lead the commit without waiting for the writer's lock, and returns. After the
  // COMMIT, in whichever process commits it (a SIP worker, an MI process, or the timer's
  // backstop), the handler given to SetAckHandler() gets `ack` and the outcome: never
  // before the COMMIT, possibly twice if a leader dies while acknowledging.
  // ResourceExhausted when shared memory is full (nothing queued, no acknowledgment:
  // commit with CommitNow()). FailedPrecondition outside write-through.
  // `lead_now`: try to lead at once; otherwise only when kLeadAt records are queued,
  // leaving the rest to the UDP worker's idle moment (usrloc registers a SIP idle
  // handler: the worker commits once it has read every datagram waiting, so the batch
  // is what arrived meanwhile) and to the timer's backstop.
  absl::Status CommitLater(LocationTable& table, const AorSnapshot& snapshot, std::string_view ack,
                           bool lead_now = true);
  static constexpr uint64_t kLeadAt = 64;
  // Commits `snapshot` and waits (the Update(..., kWait) path).
  absl::Status CommitNow(LocationTable& table, const AorSnapshot& snapshot);
  // Runs in the committing process, under the writer's commit lock: must not block nor
  // wait for the writer (see GroupCommitWriter::Client::Acknowledge).
  using AckHandler = std::function<void(std::string_view ack, const absl::Status& committed)>;
  // REQUIRES: attendant, before the fork (every process gets the handler).
  void SetAckHandler(AckHandler handler) { ack_handler_ = std::move(handler); }

  // Timer work: removes expired contacts from every table and, in DB modes, writes every
  // AOR not yet in the database. Also what ul_flush runs.
  void RunTimer();
  // ul_sync: rewrites the database rows of one AOR (NotFound if it has no contacts) or
  // of a whole table from memory. FailedPrecondition without a database.
  absl::Status SyncAor(LocationTable& table, std::string_view aor);
  absl::Status SyncTable(LocationTable& table);

  // With options.max_contacts_per_source set: the live contacts registered from `host`
  // (the address a REGISTER came from: a contact's `received` host, or its URI's host
  // when it has none), counted in shared memory by whichever process adds or removes
  // them (after the slot lock: concurrent REGISTERs may overshoot by a few). Hosts share
  // kSourceBuckets counters by hash, so a count may include another host's contacts (the
  // limit errs on the safe side). 0 when nothing is counted.
  uint32_t ContactsFromSource(std::string_view host) const;
  uint32_t max_contacts_per_source() const { return options_.max_contacts_per_source; }
  // The source host of a stored contact, as ContactsFromSource counts it.
  static std::string_view SourceHost(const ContactInfo& contact);

  // The database writer (nullptr in db_mode 0).
  const std::shared_ptr<sqlite::GroupCommitWriter>& writer() const { return writer_; }
  // Publishes usrloc's events in `events` and raises them from then on, in whichever
  // process changes the table (registrar in a SIP worker, ul_* in an MI process, expiry in
  // the timer), after the slot lock is released:
  //   E_UL_AOR_INSERT, E_UL_AOR_DELETE      aor (1.11): an AOR got its first contact /
  //                                         lost its last one (ul_rm, expiry, Expires 0)
  //   E_UL_CONTACT_INSERT, _UPDATE, _DELETE domain, aor, uri, received, path, qval,
  //                                         user_agent, socket, bflags, expires, callid,
  //                                         cseq, attr (later OpenSIPS names and order)
  // Contact changes are found by comparing the AOR before and after an update (by URI),
  // and only when somebody listens. REQUIRES: attendant, before the fork.
  absl::Status PublishEvents(mi::EventRegistry& events);

  // The "sipd.usrloc" health check: OK without a database; otherwise the last write of
  // any process succeeded and this process can take the write lock (SqliteStore::
  // CheckWritable). Unavailable with the reason.
  absl::Status CheckDatabase();

  // Per-process hooks, called by the module.
  absl::Status ChildInit(int rank);
  // Attendant, after every child has exited: write-back flushes what is left.
  void Shutdown();

 private:
  struct Shared;
  class DbClient;

  // Runs `fn` with a store on this process's writer connection, under the writer's
  // commit lock (one thread and process at a time). FailedPrecondition without a
  // database.
  absl::Status WithStore(const std::function<absl::Status(SqliteStore&)>& fn);
  void CloseStore();
  // Writes snapshots and marks them synced.
  absl::Status Persist(LocationTable& table, std::span<const AorSnapshot> snapshots, bool force);

  struct EventIds {
    mi::EventId aor_insert = mi::kNoEvent;
    mi::EventId aor_delete = mi::kNoEvent;
    mi::EventId contact_insert = mi::kNoEvent;
    mi::EventId contact_update = mi::kNoEvent;
    mi::EventId contact_delete = mi::kNoEvent;
  };
  bool ContactEventsWanted() const;
  bool CountingSources() const { return options_.max_contacts_per_source != 0; }
  // Moves the per-source counters from `before` to `after` (by URI).
  void CountSources(const std::vector<ContactInfo>& before,
                    const std::vector<ContactInfo>& after) const;
  void AddToSource(const ContactInfo& contact, int delta) const;
  void RaiseContact(mi::EventId id, const LocationTable& table, std::string_view aor,
                    const ContactInfo& contact) const;
  // The events of one Update(): `before` is filled only when contact events are wanted.
  void RaiseUpdate(const LocationTable& table, std::string_view aor, const UpdateResult& result,
                   const std::vector<ContactInfo>& before) const;
  void RaiseSwept(const LocationTable& table, const std::vector<SweptAor>& swept) const;

  // The writer's Acknowledge() for CommitLater records.
  void Acknowledge(std::string_view record, std::string_view ack, const absl::Status& status);

  Options options_;
  SharedMemory& shm_;
  mi::StatsRegistry& stats_;
  Clock clock_;
  AckHandler ack_handler_;
  Shared* shared_ = nullptr;
  std::vector<std::unique_ptr<LocationTable>> tables_;
  std::unique_ptr<DbClient> db_client_;
  std::shared_ptr<sqlite::GroupCommitWriter> writer_;
  int client_ = -1;
  mi::EventRegistry* events_ = nullptr;
  EventIds event_ids_;
};

// The `usrloc` module: modparams db_mode, use_domain, hash_size, timer_interval, db_url,
// db_synchronous ("normal" | "full"); MI commands ul_*; the `ul-timer` timer.
class UsrlocModule : public Module {
 public:
  UsrlocModule();
  ~UsrlocModule() override;
  std::string_view name() const override { return "usrloc"; }
  absl::Status SetParam(std::string_view param, const ParamValue& value) override;
  absl::Status Init(Core& core) override;
  absl::Status ChildInit(int rank) override;
  void Shutdown() override;

  // Whether Init() succeeded (other modules' Init may ask).
  bool initialized() const { return usrloc_ != nullptr; }
  // REQUIRES: Init() succeeded.
  Usrloc& usrloc() { return *usrloc_; }
  // For tests: the clock used by the service created in Init().
  void set_clock(Usrloc::Clock clock) { clock_ = std::move(clock); }

 private:
  Options options_;
  std::string db_url_;
  Usrloc::Clock clock_;
  std::unique_ptr<Usrloc> usrloc_;
};

}  // namespace sipd::usrloc

namespace sipd {
// The factory of the module list (sipd/module_list.cc).
std::unique_ptr<Module> NewUsrlocModule();
}  // namespace sipd
