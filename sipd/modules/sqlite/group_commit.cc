#include "sipd/modules/sqlite/group_commit.h"

#include <linux/futex.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sipd/core/clock.h"
#include "sipd/modules/sqlite/statement.h"
#include "spdlog/spdlog.h"

namespace sipd::sqlite {
namespace {

enum EntryState : uint32_t { kQueued = 0, kCommitted = 1, kFailed = 2 };
constexpr size_t kErrorText = 160;

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// The calling thread's nice value (0 if it cannot be read).
int CurrentNice() {
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, 0);
  return errno == 0 ? nice : 0;
}

// Process-shared futex on a word in the shared heap (not FUTEX_PRIVATE: the waiter and
// the waker are different processes).
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::microseconds limit) {
  const timespec timeout{.tv_sec = static_cast<time_t>(limit.count() / 1000000),
                         .tv_nsec = static_cast<long>(limit.count() % 1000000) * 1000};
  (void)syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &timeout,
                nullptr, 0);
}

void FutexWake(std::atomic<uint32_t>* word) {
  (void)syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr,
                nullptr, 0);
}

}  // namespace

struct GroupCommitWriter::Entry {
  Entry* next = nullptr;  // under the queue lock
  uint64_t seq = 0;
  uint32_t client = 0;
  uint32_t length = 0;
  // Nobody waits for it: the leader frees it.
  bool detached = false;
  // Queued by Defer(): the leader acknowledges it (the ack follows the record's bytes).
  bool with_ack = false;
  uint32_t ack_length = 0;
  // Queued by a process running below the leaders' priority (Wait).
  bool below = false;
  // Someone else leads it: its waiter (not detached) or, for a Defer()ed record, its
  // queuer or the writer's timer. Counted in Shared::led_by_others unless `below`.
  bool led = false;
  std::atomic<uint32_t> state{kQueued};
  // Its waiter sleeps on `state` (futex) and wants a wake-up when it changes.
  std::atomic<uint32_t> sleeping{0};
  char error[kErrorText] = {};

  const char* data() const { return reinterpret_cast<const char*>(this + 1); }
  char* data() { return reinterpret_cast<char*>(this + 1); }
  std::string_view record() const { return std::string_view(data(), length); }
  std::string_view ack() const { return std::string_view(data() + length, ack_length); }
};

struct GroupCommitWriter::Shared {
  // Whoever holds it commits (the leader).
  RobustMutex commit_lock;
  // Guards head, tail, next_seq and every Entry::next.
  RobustMutex queue_lock;
  Entry* head = nullptr;
  Entry* tail = nullptr;
  uint64_t next_seq = 1;
  std::atomic<uint64_t> queued{0};
  // Of them, queued with Defer() (waiting for an acknowledgment).
  std::atomic<uint64_t> deferred{0};
  // Of them, led by a process at the leaders' priority (Entry::led and not below).
  std::atomic<uint64_t> led_by_others{0};
  // When a process at the leaders' priority last committed (MonotonicMs).
  std::atomic<int64_t> leaders_last_ms{0};
  std::atomic<uint64_t> transactions{0};
  std::atomic<uint64_t> records{0};
};

namespace {

class Unlocker {
 public:
  explicit Unlocker(RobustMutex& mutex) : mutex_(mutex) {}
  ~Unlocker() { mutex_.Unlock(); }
  Unlocker(const Unlocker&) = delete;
  Unlocker& operator=(const Unlocker&) = delete;

 private:
  RobustMutex& mutex_;
};

}  // namespace

// Releases the commit lock, then leads again if records are queued: whoever queued them
// meanwhile found the lock busy and left them to the holder (see TryLead).
class GroupCommitWriter::LeaderUnlocker {
 public:
  explicit LeaderUnlocker(GroupCommitWriter& writer) : writer_(writer) {}
  ~LeaderUnlocker() {
    writer_.shared_->commit_lock.Unlock();
    if (writer_.shared_->queued.load(std::memory_order_acquire) > 0) writer_.TryLead();
  }
  LeaderUnlocker(const LeaderUnlocker&) = delete;
  LeaderUnlocker& operator=(const LeaderUnlocker&) = delete;

 private:
  GroupCommitWriter& writer_;
};

namespace {

std::mutex& RegistryMutex() {
  static std::mutex* m = new std::mutex();
  return *m;
}
// (shared memory, path) -> writer; entries expire with their last holder.
std::map<std::pair<const void*, std::string>, std::weak_ptr<GroupCommitWriter>>& Registry() {
  static auto* r =
      new std::map<std::pair<const void*, std::string>, std::weak_ptr<GroupCommitWriter>>();
  return *r;
}

}  // namespace

absl::Status Exec(sqlite3* db, const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error != nullptr ? error : sqlite3_errmsg(db);
    sqlite3_free(error);
    return absl::UnavailableError(absl::StrCat(message, " (in: ", sql, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GroupCommitWriter>> GroupCommitWriter::Create(SharedMemory& shm,
                                                                             Options options) {
  if (options.path.empty()) return absl::InvalidArgumentError("database path is empty");
  if (options.max_batch == 0) options.max_batch = 1;
  struct Shared* shared = nullptr;
  try {
    shared = shm.Construct<struct Shared>();
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for the database writer: ", e.what()));
  }
  return std::unique_ptr<GroupCommitWriter>(new GroupCommitWriter(std::move(options), shm, shared));
}

absl::StatusOr<std::shared_ptr<GroupCommitWriter>> GroupCommitWriter::ForFile(
    SharedMemory& shm, const Options& options) {
  std::lock_guard<std::mutex> lock(RegistryMutex());
  auto& registry = Registry();
  const auto key = std::make_pair(static_cast<const void*>(&shm), options.path);
  if (auto it = registry.find(key); it != registry.end()) {
    if (std::shared_ptr<GroupCommitWriter> writer = it->second.lock(); writer != nullptr) {
      if (options.synchronous == Synchronous::kFull) {
        writer->options_.synchronous = Synchronous::kFull;
      }
      writer->ScheduleMaintenance(options);
      return writer;
    }
  }
  absl::StatusOr<std::unique_ptr<GroupCommitWriter>> created = Create(shm, options);
  if (!created.ok()) return created.status();
  std::shared_ptr<GroupCommitWriter> writer(std::move(*created));
  registry[key] = writer;
  writer->ScheduleMaintenance(options);
  return writer;
}

void GroupCommitWriter::ScheduleMaintenance(const Options& options) {
  if (maintained_ || !options.add_timer) return;
  maintained_ = true;
  // The daemon's writers live as long as the daemon: the timer keeps this one.
  options.add_timer("db-writer", kMaintenanceInterval, [writer = this] {
    if (absl::Status s = writer->Maintain(); !s.ok()) {
      spdlog::warn("sqlite writer {}: {}", writer->path(), s.ToString());
    }
  });
}

GroupCommitWriter::GroupCommitWriter(Options options, SharedMemory& shm, struct Shared* shared)
    : options_(std::move(options)), leader_nice_(CurrentNice()), shm_(shm), shared_(shared) {}

GroupCommitWriter::~GroupCommitWriter() {
  CloseConnection();
  // The shared part stays: other processes may still use it (the daemon's writers live
  // as long as the daemon; tests drop the whole heap).
}

int GroupCommitWriter::AddClient(Client* client) {
  clients_.push_back(client);
  return static_cast<int>(clients_.size() - 1);
}

GroupCommitWriter::Figures GroupCommitWriter::figures() const {
  return Figures{shared_->transactions.load(std::memory_order_relaxed),
                 shared_->records.load(std::memory_order_relaxed)};
}

uint64_t GroupCommitWriter::queued() const {
  return shared_->queued.load(std::memory_order_relaxed);
}

GroupCommitWriter::Entry* GroupCommitWriter::Push(int client, std::string_view record,
                                                  bool detached, std::string_view ack,
                                                  bool with_ack) {
  void* memory = shm_.Allocate(sizeof(Entry) + record.size() + ack.size());
  if (memory == nullptr) return nullptr;
  Entry* e = new (memory) Entry();
  e->client = static_cast<uint32_t>(client);
  e->length = static_cast<uint32_t>(record.size());
  e->detached = detached;
  e->with_ack = with_ack;
  e->ack_length = static_cast<uint32_t>(ack.size());
  e->below = CurrentNice() > leader_nice_;
  e->led = !e->below && (with_ack || !detached);
  if (!record.empty()) std::memcpy(e->data(), record.data(), record.size());
  if (!ack.empty()) std::memcpy(e->data() + record.size(), ack.data(), ack.size());
  if (shared_->queue_lock.Lock()) {
    // The previous holder died between linking an entry and moving the tail: find it.
    Entry* last = shared_->head;
    while (last != nullptr && last->next != nullptr) last = last->next;
    shared_->tail = last;
    spdlog::warn("sqlite writer {}: a process died holding the queue lock (repaired)",
                 options_.path);
  }
  {
    Unlocker unlock(shared_->queue_lock);
    e->seq = shared_->next_seq++;
    if (shared_->tail != nullptr) {
      shared_->tail->next = e;
    } else {
      shared_->head = e;
    }
    shared_->tail = e;
    shared_->queued.fetch_add(1, std::memory_order_relaxed);
    if (with_ack) shared_->deferred.fetch_add(1, std::memory_order_relaxed);
    if (e->led) shared_->led_by_others.fetch_add(1, std::memory_order_relaxed);
  }
  return e;
}

absl::Status GroupCommitWriter::Commit(int client, std::string_view record) {
  Entry* e = Push(client, record, /*detached=*/false);
  if (e == nullptr) return absl::ResourceExhaustedError("shared memory is full");
  return Wait(e);
}

absl::Status GroupCommitWriter::CommitAll(int client, std::span<const std::string> records) {
  std::vector<Entry*> entries;
  entries.reserve(records.size());
  absl::Status status;
  for (const std::string& r : records) {
    Entry* e = Push(client, r, /*detached=*/false);
    if (e == nullptr) {
      status = absl::ResourceExhaustedError("shared memory is full");
      break;
    }
    entries.push_back(e);
  }
  for (Entry* e : entries) {
    absl::Status s = Wait(e);
    if (status.ok() && !s.ok()) status = s;
  }
  return status;
}

absl::Status GroupCommitWriter::Enqueue(int client, std::string_view record) {
  if (Push(client, record, /*detached=*/true) == nullptr) {
    return absl::ResourceExhaustedError("shared memory is full");
  }
  return absl::OkStatus();
}

absl::Status GroupCommitWriter::Defer(int client, std::string_view record, std::string_view ack) {
  if (Push(client, record, /*detached=*/true, ack, /*with_ack=*/true) == nullptr) {
    return absl::ResourceExhaustedError("shared memory is full");
  }
  return absl::OkStatus();
}

size_t GroupCommitWriter::TryLead() {
  size_t batches = 0;
  while (true) {
    const RobustMutex::TryResult taken = shared_->commit_lock.TryLock();
    if (taken == RobustMutex::TryResult::kBusy) return batches;
    if (taken == RobustMutex::TryResult::kOwnerDied) {
      spdlog::warn("sqlite writer {}: the leading process died; its records are committed again",
                   options_.path);
    }
    {
      Unlocker unlock(shared_->commit_lock);
      while (RunBatch()) ++batches;
    }
    // A process that queued while this one held the lock found it busy and left its
    // records to this leader: look again, now that the lock is free.
    bool more = false;
    if (shared_->queue_lock.Lock()) {
      Entry* last = shared_->head;
      while (last != nullptr && last->next != nullptr) last = last->next;
      shared_->tail = last;
    }
    more = shared_->head != nullptr;
    shared_->queue_lock.Unlock();
    if (!more) return batches;
  }
}

void GroupCommitWriter::AwaitLeader(Entry* e) {
  const auto deadline = std::chrono::steady_clock::now() + kLeaderWait;
  // A leader is coming while records it leads are queued, or while leaders are at work
  // (an idle SIP worker leads whatever is queued).
  const auto leader_coming = [&] {
    return shared_->led_by_others.load(std::memory_order_acquire) > 0 ||
           MonotonicMs() - shared_->leaders_last_ms.load(std::memory_order_relaxed) <
               kLeadersActive.count();
  };
  while (e->state.load(std::memory_order_acquire) == kQueued && leader_coming()) {
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      spdlog::warn("sqlite writer {}: no leader took this record within {} ms; committing it",
                   options_.path, kLeaderWait.count());
      return;
    }
    // The leader reads `sleeping` before it sets the state: should it miss this store,
    // the wait ends at its slice and the state is read again.
    e->sleeping.store(1, std::memory_order_seq_cst);
    if (e->state.load(std::memory_order_seq_cst) != kQueued) return;
    FutexWait(&e->state, kQueued, std::min(left, kWaitSlice));
  }
}

absl::Status GroupCommitWriter::Wait(Entry* e) {
  if (e->below) AwaitLeader(e);
  while (e->state.load(std::memory_order_acquire) == kQueued) {
    if (shared_->commit_lock.Lock()) {
      spdlog::warn("sqlite writer {}: the leading process died; its records are committed again",
                   options_.path);
    }
    LeaderUnlocker unlock(*this);
    while (e->state.load(std::memory_order_acquire) == kQueued) {
      if (!RunBatch()) break;
    }
  }
  absl::Status status;
  if (e->state.load(std::memory_order_acquire) == kFailed) {
    status = absl::UnavailableError(absl::StrCat("database ", options_.path, ": ", e->error));
  }
  e->~Entry();
  shm_.Deallocate(e);
  return status;
}

absl::Status GroupCommitWriter::Flush() {
  uint64_t target = 0;
  shared_->queue_lock.Lock();
  target = shared_->next_seq - 1;
  shared_->queue_lock.Unlock();
  if (shared_->commit_lock.Lock()) {
    spdlog::warn("sqlite writer {}: the leading process died; its records are committed again",
                 options_.path);
  }
  LeaderUnlocker unlock(*this);
  absl::Status first_error;
  while (true) {
    uint64_t head_seq = 0;
    shared_->queue_lock.Lock();
    if (shared_->head != nullptr) head_seq = shared_->head->seq;
    shared_->queue_lock.Unlock();
    if (head_seq == 0 || head_seq > target) break;
    if (!RunBatch(&first_error)) break;
  }
  return first_error;
}

absl::StatusOr<sqlite3*> GroupCommitWriter::Connection() {
  const pid_t pid = getpid();
  if (db_ != nullptr && db_pid_ == pid) return db_;
  // Inherited across fork: must not be used or closed here. Leak it.
  db_ = nullptr;
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(options_.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat("cannot open database ", options_.path, ": ", message));
  }
  sqlite3_busy_timeout(db, options_.busy_timeout_ms);
  absl::Status s = Exec(db, "PRAGMA journal_mode=WAL");
  if (s.ok()) {
    s = Exec(db, options_.synchronous == Synchronous::kFull ? "PRAGMA synchronous=FULL"
                                                            : "PRAGMA synchronous=NORMAL");
  }
  if (s.ok()) {
    s = Exec(db, absl::StrCat("PRAGMA wal_autocheckpoint=", kLeaderCheckpointFrames).c_str());
  }
  if (s.ok()) s = Exec(db, "BEGIN IMMEDIATE");
  if (s.ok()) {
    for (Client* c : clients_) {
      s = c->CreateSchema(db);
      if (!s.ok()) break;
    }
    if (s.ok()) {
      s = Exec(db, "COMMIT");
    } else {
      (void)Exec(db, "ROLLBACK");
    }
  }
  if (!s.ok()) {
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("database ", options_.path, ": ", s.message()));
  }
  db_ = db;
  db_pid_ = pid;
  return db_;
}

absl::Status GroupCommitWriter::Checkpoint() {
  if (db_ == nullptr || db_pid_ != getpid()) {
    // Opening writes the schema (a write transaction): only while nobody leads.
    const RobustMutex::TryResult taken = shared_->commit_lock.TryLock();
    if (taken == RobustMutex::TryResult::kBusy) return absl::OkStatus();
    Unlocker unlock(shared_->commit_lock);
    absl::StatusOr<sqlite3*> db = Connection();
    if (!db.ok()) return db.status();
  }
  const int rc =
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY)
    return absl::UnavailableError(DatabaseError(db_, "checkpoint"));
  return absl::OkStatus();
}

absl::Status GroupCommitWriter::Maintain() {
  if (shared_->deferred.load(std::memory_order_relaxed) > 0) TryLead();
  return Checkpoint();
}

void GroupCommitWriter::CloseConnection() {
  if (db_ != nullptr && db_pid_ == getpid()) {
    for (Client* c : clients_) c->ConnectionClosing(db_);
    sqlite3_close_v2(db_);
  }
  db_ = nullptr;
  db_pid_ = 0;
}

absl::Status GroupCommitWriter::WithConnection(absl::FunctionRef<absl::Status(sqlite3*)> fn) {
  if (shared_->commit_lock.Lock()) {
    spdlog::warn("sqlite writer {}: the leading process died; its records are committed again",
                 options_.path);
  }
  LeaderUnlocker unlock(*this);
  absl::StatusOr<sqlite3*> db = Connection();
  if (!db.ok()) return db.status();
  return fn(*db);
}

std::string GroupCommitWriter::DatabaseError(sqlite3* db, std::string_view what) const {
  return absl::StrCat(Absl(what), ": ", sqlite3_errmsg(db));
}

absl::Status GroupCommitWriter::ApplyBatch(sqlite3* db, const std::vector<Entry*>& batch) {
  absl::Status s = Exec(db, "BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  for (Entry* e : batch) {
    if (e->client >= clients_.size()) {
      s = absl::InternalError("record of an unknown client");
    } else {
      s = clients_[e->client]->Apply(db, e->record());
    }
    if (!s.ok()) break;
  }
  if (s.ok()) s = Exec(db, "COMMIT");
  if (!s.ok()) (void)Exec(db, "ROLLBACK");
  return s;
}

bool GroupCommitWriter::RunBatch(absl::Status* first_error) {
  std::vector<Entry*> batch;
  if (shared_->queue_lock.Lock()) {
    Entry* last = shared_->head;
    while (last != nullptr && last->next != nullptr) last = last->next;
    shared_->tail = last;
  }
  for (Entry* e = shared_->head; e != nullptr && batch.size() < options_.max_batch; e = e->next) {
    batch.push_back(e);
  }
  shared_->queue_lock.Unlock();
  if (batch.empty()) return false;

  std::vector<absl::Status> results(batch.size());
  absl::StatusOr<sqlite3*> db = Connection();
  size_t committed = 0;
  uint64_t transactions = 0;
  if (!db.ok()) {
    for (absl::Status& r : results) r = db.status();
  } else {
    absl::Status s = ApplyBatch(*db, batch);
    if (s.ok()) {
      committed = batch.size();
      transactions = 1;
    } else {
      // Isolate the record(s) that fail: each alone in its own transaction.
      spdlog::warn("sqlite writer {}: a batch of {} records failed ({}); retrying one by one",
                   options_.path, batch.size(), std::string(s.message()));
      for (size_t i = 0; i < batch.size(); ++i) {
        results[i] = ApplyBatch(*db, std::vector<Entry*>{batch[i]});
        if (results[i].ok()) {
          ++committed;
          ++transactions;
        }
      }
    }
  }
  shared_->transactions.fetch_add(transactions, std::memory_order_relaxed);
  shared_->records.fetch_add(committed, std::memory_order_relaxed);
  if (CurrentNice() <= leader_nice_) {
    shared_->leaders_last_ms.store(MonotonicMs(), std::memory_order_relaxed);
  }

  // Acknowledged before they leave the queue: a leader that dies here leaves them to the
  // next one (see Client::Acknowledge).
  for (size_t i = 0; i < batch.size(); ++i) {
    Entry* e = batch[i];
    if (!e->with_ack || e->client >= clients_.size()) continue;
    absl::Status status = results[i];
    if (!status.ok()) {
      status =
          absl::UnavailableError(absl::StrCat("database ", options_.path, ": ", status.message()));
    }
    clients_[e->client]->Acknowledge(e->record(), e->ack(), status);
  }

  std::vector<Entry*> detached;
  if (shared_->queue_lock.Lock()) {
    Entry* last = shared_->head;
    while (last != nullptr && last->next != nullptr) last = last->next;
    shared_->tail = last;
  }
  {
    Unlocker unlock(shared_->queue_lock);
    for (size_t i = 0; i < batch.size(); ++i) {
      Entry* e = batch[i];
      // Only the leader removes entries, so the batch is still at the head.
      shared_->head = e->next;
      if (shared_->head == nullptr) shared_->tail = nullptr;
      shared_->queued.fetch_sub(1, std::memory_order_relaxed);
      if (e->with_ack) shared_->deferred.fetch_sub(1, std::memory_order_relaxed);
      if (e->led) shared_->led_by_others.fetch_sub(1, std::memory_order_relaxed);
      if (!results[i].ok()) {
        if (first_error != nullptr && first_error->ok()) *first_error = results[i];
        const std::string text(results[i].message());
        std::strncpy(e->error, text.c_str(), kErrorText - 1);
        spdlog::error("sqlite writer {}: record not written: {}", options_.path, text);
      }
      if (e->detached) {
        detached.push_back(e);
      } else {
        // Read before the store: once the state changes, the waiter may free the entry.
        const bool sleeping = e->sleeping.load(std::memory_order_seq_cst) != 0;
        e->state.store(results[i].ok() ? kCommitted : kFailed, std::memory_order_seq_cst);
        if (sleeping) FutexWake(&e->state);
      }
    }
  }
  for (Entry* e : detached) {
    e->~Entry();
    shm_.Deallocate(e);
  }
  return true;
}

// ---------------------------------------------------------------------------------------

StatementCache::~StatementCache() { Drop(); }

void StatementCache::Drop() {
  const bool own = pid_ == getpid();
  for (sqlite3_stmt* s : statements_) {
    if (own && s != nullptr) sqlite3_finalize(s);
  }
  statements_.clear();
  db_ = nullptr;
}

absl::StatusOr<sqlite3_stmt*> StatementCache::Get(sqlite3* db, size_t index) {
  if (db != db_ || pid_ != getpid()) {
    Drop();
    db_ = db;
    pid_ = getpid();
    statements_.assign(sql_.size(), nullptr);
  }
  sqlite3_stmt*& s = statements_[index];
  if (s == nullptr) {
    absl::StatusOr<Statement> prepared = Prepare(db, sql_[index]);
    if (!prepared.ok()) return prepared.status();
    s = prepared->release();
  } else {
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
  }
  return s;
}

// ---------------------------------------------------------------------------------------

void RecordWriter::U32(uint32_t v) {
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void RecordWriter::U64(uint64_t v) {
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void RecordWriter::Str(std::string_view s) {
  U32(static_cast<uint32_t>(s.size()));
  out_.append(s.data(), s.size());
}

bool RecordReader::U8(uint8_t& v) {
  if (in_.empty()) return false;
  v = static_cast<uint8_t>(in_[0]);
  in_.remove_prefix(1);
  return true;
}
bool RecordReader::U32(uint32_t& v) {
  if (in_.size() < 4) return false;
  v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
  in_.remove_prefix(4);
  return true;
}
bool RecordReader::U64(uint64_t& v) {
  if (in_.size() < 8) return false;
  v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
  in_.remove_prefix(8);
  return true;
}
bool RecordReader::I64(int64_t& v) {
  uint64_t u = 0;
  if (!U64(u)) return false;
  v = static_cast<int64_t>(u);
  return true;
}
bool RecordReader::Str(std::string& s) {
  uint32_t n = 0;
  if (!U32(n) || in_.size() < n) return false;
  s.assign(in_.data(), n);
  in_.remove_prefix(n);
  return true;
}

}  // namespace sipd::sqlite
