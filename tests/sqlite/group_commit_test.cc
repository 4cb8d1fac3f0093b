// The group-commit writer (sipd/modules/sqlite/group_commit.h) with real SQLite files,
// real shared memory and real processes: records committed before Commit() returns,
// batches shared between callers, a bad record failing alone, and a leader that dies.
#include "sipd/modules/sqlite/group_commit.h"

#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/core/shm.h"
#include "sipd/modules/sqlite/statement.h"
#include "tests/support/database_file_copy.h"

namespace sipd::sqlite {
namespace {

// The values in table `row` of the database at `path`, read by a connection of its own.
std::set<std::string> RowsOf(const std::string& path) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  std::set<std::string> out;
  {
    absl::StatusOr<Statement> select = Prepare(db, "SELECT value FROM row");
    if (select.ok()) {
      StepRows(select->get(),
               [&](sqlite3_stmt* row) { out.insert(std::string(ColumnText(row, 0))); });
    }
  }
  sqlite3_close(db);
  return out;
}

// A client whose records are row values of one table; "bad" fails, "die" ends a forked
// process in the middle of the leader's transaction (in the test process it is a row).
class RowClient final : public GroupCommitWriter::Client {
 public:
  RowClient() : parent_(getpid()) {}
  absl::Status CreateSchema(sqlite3* db) override {
    return Exec(db, "CREATE TABLE IF NOT EXISTS row (value TEXT PRIMARY KEY)");
  }
  absl::Status Apply(sqlite3* db, std::string_view record) override {
    ++applied_;
    if (record == "bad") return absl::InvalidArgumentError("bad record");
    if (record == "die" && getpid() != parent_) _exit(0);
    // "who:NAME" is stored as "who:NAME@parent" or "who:NAME@child": which process led it.
    const std::string value =
        record.starts_with("who:")
            ? absl::StrCat(std::string(record), getpid() == parent_ ? "@parent" : "@child")
            : std::string(record);
    const std::string sql = absl::StrCat("INSERT OR REPLACE INTO row VALUES ('", value, "')");
    return Exec(db, sql.c_str());
  }
  // Deferred records: what the leader acknowledged (in this process), and whether the
  // record's row was already visible to another connection at that moment.
  struct Ack {
    std::string record;
    std::string ack;
    bool ok = false;
    bool row_committed = false;
  };
  void Acknowledge(std::string_view record, std::string_view ack,
                   const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mutex_);
    acks_.push_back(Ack{std::string(record), std::string(ack), status.ok(),
                        rows_ != nullptr && rows_(std::string(record))});
  }
  std::vector<Ack> acks() {
    std::lock_guard<std::mutex> lock(mutex_);
    return acks_;
  }
  // Tells whether a row is in the database (another connection).
  std::function<bool(const std::string&)> rows_;
  int applied_ = 0;

 private:
  const pid_t parent_;
  std::mutex mutex_;
  std::vector<Ack> acks_;
};

class GroupCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sipd-group-commit-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    auto shm = SharedMemory::Create(16u << 20);
    ASSERT_TRUE(shm.ok());
    shm_ = std::move(*shm);
    auto writer = GroupCommitWriter::Create(*shm_, {.path = dir_ + "/test.sqlite"});
    ASSERT_TRUE(writer.ok());
    writer_ = std::move(*writer);
    client_ = writer_->AddClient(&rows_);
    rows_.rows_ = [this](const std::string& row) { return Rows().contains(row); };
  }
  void TearDown() override {
    writer_.reset();
    std::filesystem::remove_all(dir_);
  }

  // The rows as another connection sees them now.
  std::set<std::string> Rows() {
    if (!std::filesystem::exists(dir_ + "/test.sqlite")) return {};
    return RowsOf(dir_ + "/test.sqlite");
  }

  std::string dir_;
  std::unique_ptr<SharedMemory> shm_;
  RowClient rows_;
  std::unique_ptr<GroupCommitWriter> writer_;
  int client_ = 0;
};

TEST_F(GroupCommitTest, CommitReturnsOnceTheRecordIsInTheDatabase) {
  ASSERT_TRUE(writer_->Commit(client_, "a").ok());
  EXPECT_EQ(Rows(), (std::set<std::string>{"a"}));
  EXPECT_EQ(writer_->figures().transactions, 1u);
  EXPECT_EQ(writer_->queued(), 0u);
}

TEST_F(GroupCommitTest, QueuedRecordsShareTheNextTransaction) {
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(writer_->Enqueue(client_, absl::StrCat("q", i)).ok());
  EXPECT_EQ(writer_->queued(), 10u);
  EXPECT_TRUE(Rows().empty());
  // One commit takes everything queued before it into one transaction.
  ASSERT_TRUE(writer_->Commit(client_, "c").ok());
  EXPECT_EQ(Rows().size(), 11u);
  EXPECT_EQ(writer_->figures().transactions, 1u);
  EXPECT_EQ(writer_->figures().records, 11u);
  EXPECT_EQ(writer_->queued(), 0u);
}

// The database file alone (a copy without its WAL): what checkpoints have copied into it.
std::set<std::string> RowsInTheDatabaseFile(const std::string& dir,
                                            const std::string& name = "test.sqlite") {
  return RowsOf(testing::DatabaseFileCopy(dir + "/" + name, dir + "/file-only.sqlite").path());
}

TEST_F(GroupCommitTest, LeadersLeaveTheWalToCheckpointWhichCopiesItWithoutTheCommitLock) {
  // 1,500 transactions: more WAL frames than SQLite's default auto-checkpoint (1,000),
  // at which a leader used to stop and copy, and fewer than kLeaderCheckpointFrames.
  for (int i = 0; i < 1500; ++i) ASSERT_TRUE(writer_->Commit(client_, absl::StrCat("r", i)).ok());
  EXPECT_EQ(Rows().size(), 1500u);
  EXPECT_TRUE(RowsInTheDatabaseFile(dir_).empty());

  ASSERT_TRUE(writer_->Checkpoint().ok());
  EXPECT_EQ(RowsInTheDatabaseFile(dir_).size(), 1500u);
  // It goes on while the commit lock is held (by a thread that leaves the connection be).
  ASSERT_TRUE(writer_->Commit(client_, "late").ok());
  std::promise<void> holding;
  std::promise<void> release;
  std::thread leader([&] {
    ASSERT_TRUE(writer_
                    ->WithConnection([&](sqlite3*) {
                      holding.set_value();
                      release.get_future().wait();
                      return absl::OkStatus();
                    })
                    .ok());
  });
  holding.get_future().wait();
  EXPECT_TRUE(writer_->Checkpoint().ok());
  release.set_value();
  leader.join();
  EXPECT_TRUE(RowsInTheDatabaseFile(dir_).contains("late"));
}

TEST_F(GroupCommitTest, ForFileSchedulesTheWritersMaintenanceOncePerFile) {
  struct Timer {
    std::string label;
    std::chrono::milliseconds interval;
    std::function<void()> fn;
  };
  std::vector<Timer> timers;
  const AddTimerFn add_timer = [&](std::string label, std::chrono::milliseconds interval,
                                   std::function<void()> fn) {
    timers.push_back(Timer{std::move(label), interval, std::move(fn)});
  };
  const std::string path = dir_ + "/shared.sqlite";
  // Two modules naming one file share one writer and one timer; a module without a timer
  // to give (a test's) changes nothing.
  auto first = GroupCommitWriter::ForFile(*shm_, {.path = path});
  ASSERT_TRUE(first.ok());
  auto second = GroupCommitWriter::ForFile(*shm_, {.path = path, .add_timer = add_timer});
  auto third = GroupCommitWriter::ForFile(*shm_, {.path = path, .add_timer = add_timer});
  ASSERT_TRUE(second.ok() && third.ok());
  EXPECT_EQ(first->get(), second->get());
  EXPECT_EQ(second->get(), third->get());
  ASSERT_EQ(timers.size(), 1u);
  EXPECT_EQ(timers[0].label, "db-writer");
  EXPECT_EQ(timers[0].interval, GroupCommitWriter::kMaintenanceInterval);
  auto other =
      GroupCommitWriter::ForFile(*shm_, {.path = dir_ + "/other.sqlite", .add_timer = add_timer});
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(timers.size(), 2u);

  RowClient rows;
  GroupCommitWriter& writer = **first;
  const int client = writer.AddClient(&rows);
  // A write-back record waits for its module's Flush(): the timer leaves it queued.
  ASSERT_TRUE(writer.Enqueue(client, "write-back").ok());
  timers[0].fn();
  EXPECT_EQ(writer.queued(), 1u);
  EXPECT_TRUE(RowsOf(path).empty());
  // A deferred record nobody led (its process went on working): the timer commits it,
  // with what was queued before it, and acknowledges it.
  ASSERT_TRUE(writer.Defer(client, "deferred", "its reply").ok());
  timers[0].fn();
  EXPECT_EQ(writer.queued(), 0u);
  EXPECT_EQ(RowsOf(path), (std::set<std::string>{"write-back", "deferred"}));
  ASSERT_EQ(rows.acks().size(), 1u);
  EXPECT_EQ(rows.acks()[0].ack, "its reply");
  EXPECT_TRUE(rows.acks()[0].ok);
  // And it checkpointed: the database file alone holds the rows.
  EXPECT_EQ(RowsInTheDatabaseFile(dir_, "shared.sqlite"),
            (std::set<std::string>{"write-back", "deferred"}));
}

TEST_F(GroupCommitTest, SubmitWhileHoldingALockAndAwaitAfterwards) {
  GroupCommitWriter::Entry* a = writer_->Submit(client_, "a");
  GroupCommitWriter::Entry* b = writer_->Submit(client_, "b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(writer_->Await(b).ok());  // b's batch carries a along
  EXPECT_TRUE(writer_->Await(a).ok());
  EXPECT_EQ(Rows(), (std::set<std::string>{"a", "b"}));
  EXPECT_EQ(writer_->figures().transactions, 1u);
}

TEST_F(GroupCommitTest, ABadRecordFailsAloneAndTheOthersAreCommitted) {
  ASSERT_TRUE(writer_->Enqueue(client_, "x").ok());
  ASSERT_TRUE(writer_->Enqueue(client_, "bad").ok());
  ASSERT_TRUE(writer_->Enqueue(client_, "y").ok());
  absl::Status bad = writer_->Commit(client_, "bad");
  EXPECT_TRUE(absl::IsUnavailable(bad)) << bad;
  EXPECT_THAT(std::string(bad.message()), ::testing::HasSubstr("bad record"));
  EXPECT_EQ(Rows(), (std::set<std::string>{"x", "y"}));
  ASSERT_TRUE(writer_->Commit(client_, "z").ok());
  EXPECT_EQ(Rows(), (std::set<std::string>{"x", "y", "z"}));
}

TEST_F(GroupCommitTest, FlushCommitsWhatIsQueuedAndReportsTheFirstError) {
  ASSERT_TRUE(writer_->Enqueue(client_, "p").ok());
  ASSERT_TRUE(writer_->Enqueue(client_, "bad").ok());
  EXPECT_FALSE(writer_->Flush().ok());
  EXPECT_EQ(Rows(), (std::set<std::string>{"p"}));
  EXPECT_TRUE(writer_->Flush().ok());  // nothing left
}

TEST_F(GroupCommitTest, ProcessesAndThreadsCommitConcurrently) {
  writer_->CloseConnection();  // nothing crosses the fork
  constexpr int kProcesses = 3;
  constexpr int kThreads = 2;
  constexpr int kEach = 100;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      std::vector<std::thread> threads;
      std::atomic<int> failures{0};
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0; i < kEach; ++i) {
            if (!writer_->Commit(client_, absl::StrCat(p, "-", t, "-", i)).ok()) ++failures;
          }
        });
      }
      for (auto& t : threads) t.join();
      _exit(failures.load() == 0 ? 0 : 1);
    }
    children.push_back(child);
  }
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  EXPECT_EQ(Rows().size(), static_cast<size_t>(kProcesses * kThreads * kEach));
  const GroupCommitWriter::Figures f = writer_->figures();
  EXPECT_EQ(f.records, static_cast<uint64_t>(kProcesses * kThreads * kEach));
  EXPECT_LE(f.transactions, f.records);
  EXPECT_EQ(writer_->queued(), 0u);
}

TEST_F(GroupCommitTest, ALeaderThatDiesMidTransactionLeavesItsRecordsToTheNext) {
  writer_->CloseConnection();
  ASSERT_TRUE(writer_->Enqueue(client_, "before").ok());
  ASSERT_TRUE(writer_->Enqueue(client_, "die").ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Leads the batch [before, die, ...] and dies inside it, holding the commit lock.
    (void)writer_->Commit(client_, "child");
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);  // it died in Apply("die")
  EXPECT_TRUE(Rows().empty());        // SQLite rolled the open transaction back
  EXPECT_EQ(writer_->queued(), 3u);
  // The next leader gets the robust commit lock back and commits the dead one's batch.
  ASSERT_TRUE(writer_->Commit(client_, "after").ok());
  EXPECT_EQ(Rows(), (std::set<std::string>{"before", "die", "child", "after"}));
  EXPECT_EQ(writer_->queued(), 0u);
}

TEST_F(GroupCommitTest, DeferredRecordsAreAcknowledgedAfterTheirCommitInOneBatch) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(writer_->Defer(client_, absl::StrCat("d", i), absl::StrCat("ack", i)).ok());
  }
  ASSERT_TRUE(writer_->Defer(client_, "bad", "ack-bad").ok());
  EXPECT_TRUE(rows_.acks().empty());  // nothing acknowledged before a commit
  EXPECT_EQ(writer_->queued(), 6u);
  EXPECT_GE(writer_->TryLead(), 1u);
  EXPECT_EQ(writer_->queued(), 0u);
  const auto acks = rows_.acks();
  ASSERT_EQ(acks.size(), 6u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(acks[i].record, absl::StrCat("d", i));
    EXPECT_EQ(acks[i].ack, absl::StrCat("ack", i));
    EXPECT_TRUE(acks[i].ok);
    EXPECT_TRUE(acks[i].row_committed) << "acknowledged before its COMMIT: " << acks[i].record;
  }
  EXPECT_EQ(acks[5].ack, "ack-bad");  // the failing record is acknowledged with its error
  EXPECT_FALSE(acks[5].ok);
  EXPECT_EQ(Rows().size(), 5u);
}

TEST_F(GroupCommitTest, TryLeadNeverWaitsAndTheHolderTakesTheRecordsAlong) {
  std::promise<void> holding;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::thread holder([&] {
    (void)writer_->WithConnection([&](sqlite3*) {
      holding.set_value();
      released.wait();
      return absl::OkStatus();
    });
  });
  holding.get_future().wait();
  ASSERT_TRUE(writer_->Defer(client_, "while-busy", "ack").ok());
  EXPECT_EQ(writer_->TryLead(), 0u);  // returns at once: the lock is held
  EXPECT_TRUE(rows_.acks().empty());
  release.set_value();
  holder.join();  // releasing the lock, the holder led the queued record
  ASSERT_EQ(rows_.acks().size(), 1u);
  EXPECT_TRUE(rows_.acks()[0].ok);
  EXPECT_TRUE(rows_.acks()[0].row_committed);
  EXPECT_EQ(writer_->queued(), 0u);
}

TEST_F(GroupCommitTest, ALeaderKilledMidBatchLeavesDeferredRecordsToTheNextWhichAcknowledges) {
  writer_->CloseConnection();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A SIP worker: queues its records with their replies, leads, dies inside the batch.
    for (int i = 0; i < 3; ++i) (void)writer_->Defer(client_, absl::StrCat("r", i), "ack");
    (void)writer_->Defer(client_, "die", "ack-die");
    (void)writer_->TryLead();
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);  // it died in Apply("die"), holding the commit lock
  EXPECT_TRUE(Rows().empty());
  EXPECT_EQ(writer_->queued(), 4u);
  // The timer's backstop (or any process's next TryLead) recovers the lock and answers.
  EXPECT_GE(writer_->TryLead(), 1u);
  EXPECT_EQ(Rows(), (std::set<std::string>{"r0", "r1", "r2", "die"}));
  const auto acks = rows_.acks();
  ASSERT_EQ(acks.size(), 4u);
  for (const auto& a : acks) {
    EXPECT_TRUE(a.ok) << a.record;
    EXPECT_TRUE(a.row_committed) << a.record;
  }
  EXPECT_EQ(writer_->queued(), 0u);
}

// Forks a child that runs below the writer creator's priority (as the MI processes run at
// mi_nice) and calls `body` there; the child exits 0 when `body` returns true.
pid_t ForkBelowTheLeaders(const std::function<bool()>& body) {
  const pid_t child = fork();
  if (child != 0) return child;
  errno = 0;
  const int nice = getpriority(PRIO_PROCESS, 0);
  if (errno != 0 || setpriority(PRIO_PROCESS, 0, std::min(nice + 5, 19)) != 0 || nice >= 19) {
    _exit(3);
  }
  _exit(body() ? 0 : 1);
}

int ExitCodeOf(pid_t child) {
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// The MI at nice 19 must not hold the commit lock while SIP replies wait behind it: with a
// SIP worker's deferred record queued, it leaves its own record to that record's leader.
TEST_F(GroupCommitTest, AProcessBelowTheLeadersPriorityLeavesItsRecordToTheirLeader) {
  writer_->CloseConnection();
  ASSERT_TRUE(writer_->Defer(client_, "who:sip", "ack").ok());  // no TryLead yet
  const pid_t child = ForkBelowTheLeaders([&] { return writer_->Commit(client_, "who:mi").ok(); });
  ASSERT_GT(child, 0);
  // Wait until the child's record is queued behind the deferred one; it must not lead.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (writer_->queued() < 2 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  ASSERT_EQ(writer_->queued(), 2u);
  EXPECT_GE(writer_->TryLead(), 1u);  // the SIP worker leads both
  EXPECT_EQ(ExitCodeOf(child), 0);    // and the child's Commit() returned OK
  EXPECT_EQ(Rows(), (std::set<std::string>{"who:sip@parent", "who:mi@parent"}));
  EXPECT_EQ(writer_->queued(), 0u);
}

TEST_F(GroupCommitTest, AProcessBelowTheLeadersPriorityLeadsWhenNothingElseIsQueued) {
  writer_->CloseConnection();
  // A write-back record (Enqueue) has no leader of its own: the child takes it along.
  ASSERT_TRUE(writer_->Enqueue(client_, "who:later").ok());
  const pid_t child = ForkBelowTheLeaders([&] { return writer_->Commit(client_, "who:mi").ok(); });
  ASSERT_GT(child, 0);
  EXPECT_EQ(ExitCodeOf(child), 0);
  EXPECT_EQ(Rows(), (std::set<std::string>{"who:later@child", "who:mi@child"}));
  EXPECT_EQ(writer_->queued(), 0u);
}

}  // namespace
}  // namespace sipd::sqlite
