// The group-commit writer: every SQLite write of sipd's persistent modules (usrloc's
// location tables, the dialog table) goes through one queue per database file, and
// whichever process commits takes everything queued so far into ONE transaction.
//
//   SIP worker A             SIP worker B              the database
//   Commit(r1) ─ queue ─┐    Commit(r2) ─ queue ─┐
//   leader: BEGIN; r1, r2, (r3 ...); COMMIT ─────┴──────► one transaction, one WAL append
//   r1 OK                    r2 OK (B waited on the commit lock, found r2 done)
//
// Why: a write-through REGISTER used to cost one SQLite transaction (BEGIN IMMEDIATE,
// the rows, COMMIT: ~8 page writes, 6 file locks, and every ~200 commits a checkpoint
// with fdatasync) taken under a lock every SIP worker queued on; with the writer, the
// changes of every process waiting at the same moment share one transaction, and still
// each caller of Commit() returns only after its own record is committed ("acknowledged
// only after its commit"). Modules that do not need to wait (write-back) Enqueue() and
// let the next Commit() or Flush() take their records along.
//
// Deferred acknowledgments (Defer): a caller that must not answer before its record is
// committed, but need not wait for it either (a SIP worker with a REGISTER: it goes on
// reading while the commit is pending), queues the record TOGETHER WITH an `ack` (opaque
// bytes: e.g. the reply to send) and returns. The batch is then everything in flight,
// not one record per waiting process. After the COMMIT the leader hands each such record
// and its ack to the Client's Acknowledge(), then removes them from the queue. Who
// commits: the process that queued tries the commit lock WITHOUT waiting (TryLead); if
// it is busy, its holder takes the record along, because a leader looks at the queue
// again after releasing the lock and leads again if something is left; the timer calls
// TryLead() periodically as a backstop (a leader that died with the lock held: the next
// TryLead gets EOWNERDEAD, applies the records again and acknowledges them). So no
// process ever waits for a lock whose holder is stalled, and no record stays queued
// with nobody to commit it.
//
// Priority: the MI and module processes run below the SIP workers (mi_nice, 19 by
// default). Holding the commit lock there would make every SIP reply queued meanwhile
// wait for a process the scheduler puts last, so a process running below the priority of
// the writer's creator (the attendant, whose SIP workers lead) does not lead while records
// that a process at that priority leads are queued (a Commit()/Await() waiter's, or a
// Defer()ed one, which its queuer or the timer leads): it waits on a futex, without the
// lock, until one of those leaders takes its record along (kLeaderWait at most). It does
// the same while such a process committed within the last kLeadersActive: SIP workers
// are at work and an idle one leads whatever is queued. When SIP is quiet and nothing
// else is queued, it leads itself, as before. Flush() and WithConnection() (bulk MI
// commands: ul_flush, dlg_db_sync) still take the lock.
//
// Maintenance (Maintain(), every kMaintenanceInterval in the timer process): that
// backstop, and the WAL checkpoint that leaders should not have to do. The writer
// schedules it itself, once per file, through Options::add_timer (the daemon's timer),
// so that no module sharing the file has to remember it.
//
// Records are opaque bytes a Client encoded; the leader hands them back to that Client's
// Apply() inside the transaction, in queue order. A record may be applied twice (a
// leader that dies right after COMMIT leaves its records queued for the next one), so
// Apply() must be idempotent (usrloc and dialog rows carry versions). When the batch
// fails (a record's Apply() fails, or COMMIT does), it is rolled back and each record is
// retried in a transaction of its own, so one bad record fails alone.
//
// Shared memory and processes: the queue lives in the sipd heap (created in the
// attendant before the fork); the commit lock and the queue lock are robust
// process-shared mutexes. A process that dies while leading leaves its records queued
// (SQLite rolls its open transaction back); the next leader gets EOWNERDEAD and runs
// them again. A process that dies while holding the queue lock leaves the list walkable
// (the next locker finds the tail again). A process killed while waiting in Commit()
// leaks its record block once it is done (a few hundred bytes). Each process opens its
// own connection on first use and never uses one across fork(); the commit lock also
// serialises the threads of one process (MI worker threads).
//
// Thread/process-safety: Create/ForFile/AddClient in the attendant before the fork; the
// rest from any process and thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/core/shm.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sipd::sqlite {

enum class Synchronous { kNormal, kFull };

// Registers `fn` to run every `interval` in the timer process (Module::Core::AddTimer).
using AddTimerFn = std::function<void(std::string label, std::chrono::milliseconds interval,
                                      std::function<void()> fn)>;

class GroupCommitWriter {
 public:
  // Implementation types (group_commit.cc); an Entry* is also a Submit() ticket.
  struct Shared;
  struct Entry;

  // A module's part of the database.
  class Client {
   public:
    virtual ~Client() = default;
    // Creates the module's tables if needed; runs in a write transaction on every new
    // connection (so it must be cheap when they exist).
    virtual absl::Status CreateSchema(sqlite3* db) = 0;
    // Applies one record inside the leader's transaction (see the file comment).
    virtual absl::Status Apply(sqlite3* db, std::string_view record) = 0;
    // This process closes `db`: finalize what was prepared on it.
    virtual void ConnectionClosing(sqlite3* /*db*/) {}
    // A record queued with Defer() was committed (`status` OK) or not (its error). Runs
    // in the leading process (any process, any thread) after the COMMIT, under the
    // commit lock and before the record leaves the queue: a leader that dies before or
    // while acknowledging leaves the record to the next leader, which applies it again
    // and acknowledges it again (an acknowledgment may come twice, never before the
    // commit). Must not block, and must not call this writer's Commit, CommitAll, Await,
    // Flush or WithConnection (Submit, Enqueue and Defer are fine).
    virtual void Acknowledge(std::string_view /*record*/, std::string_view /*ack*/,
                             const absl::Status& /*status*/) {}
  };

  struct Options {
    std::string path;
    // NORMAL: a commit survives the death of any sipd process; FULL: also an OS crash
    // (fsync per commit). Two modules asking for one file get the stronger of the two.
    Synchronous synchronous = Synchronous::kNormal;
    int busy_timeout_ms = 5000;
    // Records per transaction at most (bounds how long one commit keeps the lock).
    size_t max_batch = 512;
    // Registers a periodic function in the timer process (the daemon's
    // Module::Core::AddTimer). ForFile schedules the writer's Maintain() with the first
    // one it is given for a file, once. Unset (a writer of tests): its owner calls
    // Maintain().
    AddTimerFn add_timer;
  };

  struct Figures {
    uint64_t transactions = 0;  // committed batches
    uint64_t records = 0;       // records committed
  };

  // A writer of its own (tests). REQUIRES: attendant, before the fork.
  static absl::StatusOr<std::unique_ptr<GroupCommitWriter>> Create(SharedMemory& shm,
                                                                   Options options);
  // The writer of `options.path` in `shm`, shared by every module that names the same
  // file (created on first use; kept while a module holds it).
  static absl::StatusOr<std::shared_ptr<GroupCommitWriter>> ForFile(SharedMemory& shm,
                                                                    const Options& options);

  ~GroupCommitWriter();
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  // REQUIRES: before the fork. Returns the id to pass to Commit()/Enqueue().
  int AddClient(Client* client);

  // Queues `record` and returns once it is committed (by this process or another): OK,
  // or Unavailable with the database error.
  absl::Status Commit(int client, std::string_view record);
  // The same for several records (all queued at once); the first error.
  absl::Status CommitAll(int client, std::span<const std::string> records);
  // Commit() in two steps, for a caller that queues while it holds a lock of its own
  // (so that the queue keeps the order of its changes) and waits after releasing it.
  // Every ticket Submit() returns must be passed to Await() exactly once. nullptr when
  // shared memory is full.
  Entry* Submit(int client, std::string_view record) {
    return Push(client, record, /*detached=*/false);
  }
  absl::Status Await(Entry* ticket) { return Wait(ticket); }
  // Queues without waiting: the next Commit() or Flush() (of any process) commits it.
  // ResourceExhausted when shared memory is full.
  absl::Status Enqueue(int client, std::string_view record);
  // Commits everything queued before the call. The first error of those records.
  absl::Status Flush();
  // Queues `record` with `ack` for the client's Acknowledge() (see the file comment) and
  // returns without waiting for the commit. ResourceExhausted when shared memory is full
  // (nothing queued, nothing will be acknowledged). Call TryLead() afterwards.
  absl::Status Defer(int client, std::string_view record, std::string_view ack);
  // Commits everything queued if the commit lock is free; returns at once when another
  // thread or process holds it (that leader takes the queue along). Returns the number
  // of transactions run.
  size_t TryLead();

  // Copies what is committed in the WAL into the database file (SQLite's PASSIVE
  // checkpoint) WITHOUT the commit lock, so that leaders (SIP workers answering
  // REGISTERs) do not stop to copy pages and fsync. Leaders still checkpoint when the WAL
  // reaches kLeaderCheckpointFrames: a checkpoint that runs beside a busy writer may never
  // find the WAL fully copied at the moment a transaction starts, which is what lets
  // SQLite start the WAL over; one under the commit lock always does. For the timer
  // process: not concurrently with another call of this writer in the same process. A
  // process without a connection opens one only if the commit lock is free.
  absl::Status Checkpoint();
  // The WAL size (frames) at which a leader checkpoints itself (wal_autocheckpoint).
  static constexpr int kLeaderCheckpointFrames = 4000;

  // The writer's timer: commits the Defer()ed records that no process leads (their
  // leader died, or every process that queued went on working), then Checkpoint().
  // Records queued with Enqueue() alone are left for the next Commit() or Flush() (a
  // write-back module's period). Same rule as Checkpoint() for processes and threads.
  absl::Status Maintain();
  static constexpr std::chrono::milliseconds kMaintenanceInterval{100};

  // Runs `fn` with this process's connection under the commit lock, outside any
  // transaction (fn may open its own): loads at start-up, pruning, full-table syncs.
  absl::Status WithConnection(absl::FunctionRef<absl::Status(sqlite3*)> fn);
  // Closes this process's connection (the attendant, before the fork).
  void CloseConnection();

  const std::string& path() const { return options_.path; }
  Figures figures() const;
  // Records waiting to be committed.
  uint64_t queued() const;

 private:
  class LeaderUnlocker;

  GroupCommitWriter(Options options, SharedMemory& shm, struct Shared* shared);
  // Registers Maintain() with options.add_timer unless already done (ForFile).
  void ScheduleMaintenance(const Options& options);

  Entry* Push(int client, std::string_view record, bool detached, std::string_view ack = {},
              bool with_ack = false);
  // Waits until `entry` is done, leading batches meanwhile; frees it.
  absl::Status Wait(Entry* entry);
  // For an entry queued below the leaders' priority: waits (without the commit lock)
  // while records that a process at their priority leads are queued, or while such a
  // process committed within kLeadersActive, so that one of those leaders takes it
  // along; at most kLeaderWait.
  void AwaitLeader(Entry* entry);
  static constexpr std::chrono::milliseconds kLeaderWait{1000};
  static constexpr std::chrono::milliseconds kLeadersActive{10};
  static constexpr std::chrono::microseconds kWaitSlice{2000};
  // REQUIRES: commit lock held. Commits the oldest queued records (at most max_batch).
  // Returns false when the queue was empty. The first record error goes to
  // `first_error` (if given and still OK).
  bool RunBatch(absl::Status* first_error = nullptr);
  absl::StatusOr<sqlite3*> Connection();
  absl::Status ApplyBatch(sqlite3* db, const std::vector<Entry*>& batch);
  std::string DatabaseError(sqlite3* db, std::string_view what) const;

  Options options_;
  // The nice value of the process that created the writer (the attendant, whose SIP
  // workers lead); a process above it runs below the leaders' priority.
  int leader_nice_ = 0;
  // ForFile scheduled Maintain() (attendant, before the fork).
  bool maintained_ = false;
  SharedMemory& shm_;
  struct Shared* shared_;
  std::vector<Client*> clients_;
  // This process's connection (only touched under the commit lock).
  sqlite3* db_ = nullptr;
  pid_t db_pid_ = 0;
};

// Prepared statements of one connection for a Client: re-prepared when the connection
// changes (a new process, a reopened file). Statements of a connection inherited across
// fork are dropped without being finalized (they belong to the parent).
class StatementCache {
 public:
  explicit StatementCache(std::vector<std::string> sql) : sql_(std::move(sql)) {}
  ~StatementCache();
  // The statement `index` for `db`, reset and with its bindings cleared.
  absl::StatusOr<sqlite3_stmt*> Get(sqlite3* db, size_t index);
  // Finalizes every statement (the connection is about to close).
  void Drop();

 private:
  std::vector<std::string> sql_;
  std::vector<sqlite3_stmt*> statements_;
  sqlite3* db_ = nullptr;
  pid_t pid_ = 0;
};

// Runs `sql` (several statements allowed); Unavailable naming the error.
absl::Status Exec(sqlite3* db, const char* sql);

// A small binary record encoding for Client records.
class RecordWriter {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v);
  void U64(uint64_t v);
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Str(std::string_view s);
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class RecordReader {
 public:
  explicit RecordReader(std::string_view in) : in_(in) {}
  bool U8(uint8_t& v);
  bool U32(uint32_t& v);
  bool U64(uint64_t& v);
  bool I64(int64_t& v);
  bool Str(std::string& s);
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

}  // namespace sipd::sqlite
