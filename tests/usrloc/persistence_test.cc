// usrloc with db_mode 1 (write-through) and 2 (write-back): what reaches SQLite when,
// and what a restart (clean, or after kill -9) finds.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/modules/usrloc/sqlite_store.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "tests/usrloc/test_support.h"

namespace sipd::usrloc {
namespace {

constexpr int64_t kNow = 1700000000;

// One sipd "run": a fresh shared memory, module and clock on the same database file.
struct Instance {
  Instance(const std::string& db, int db_mode, int64_t now) : now(now) {
    EXPECT_TRUE(module.SetParam("db_mode", int64_t{db_mode}).ok());
    EXPECT_TRUE(module.SetParam("db_url", absl::StrCat("sqlite://", db)).ok());
    module.set_clock([this] { return this->now; });
    status = module.Init(core);
  }
  Usrloc& ul() { return module.usrloc(); }
  LocationTable& location() { return *ul().FindTable("location"); }
  absl::StatusOr<Usrloc::Applied> Add(std::string aor, std::string uri, int64_t expires = 3600) {
    return ul().Update(location(), aor,
                       [&](bool, const std::vector<ContactInfo>&, std::vector<Edit>& edits) {
                         ContactInfo c;
                         c.uri = uri;
                         c.callid = "cid";
                         c.cseq = 1;
                         c.expires = now + expires;
                         c.path = "<sip:edge;lr>";
                         c.received = "sip:198.51.100.7:3456";
                         edits.push_back(Edit{Edit::Kind::kUpsert, c});
                         return absl::OkStatus();
                       });
  }
  absl::StatusOr<Usrloc::Applied> RemoveAll(std::string aor) {
    return ul().Update(
        location(), aor,
        [&](bool, const std::vector<ContactInfo>& current, std::vector<Edit>& edits) {
          for (const auto& c : current) {
            edits.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = c.uri}});
          }
          return absl::OkStatus();
        });
  }
  int64_t now;
  testing::FakeCore core;
  UsrlocModule module;
  absl::Status status;
};

class PersistenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sipd-ul-persist-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    db_ = dir_ + "/location.sqlite";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // AORs -> contact URIs as stored in the database right now.
  std::map<std::string, std::vector<std::string>> InDb() {
    auto store = SqliteStore::Open({.path = db_});
    EXPECT_TRUE(store.ok());
    std::map<std::string, std::vector<std::string>> out;
    const std::vector<AorSnapshot> all = (*store)->Load("location").value();
    for (const auto& s : all) {
      for (const auto& c : s.contacts) out[s.aor].push_back(c.uri);
    }
    return out;
  }

  std::string dir_;
  std::string db_;
};

using Stored = std::map<std::string, std::vector<std::string>>;

TEST_F(PersistenceTest, WriteThroughCommitsBeforeReturningAndSurvivesRestart) {
  {
    Instance run(db_, 1, kNow);
    ASSERT_TRUE(run.status.ok()) << run.status;
    auto applied = run.Add("alice", "sip:alice@10.0.0.1");
    ASSERT_TRUE(applied.ok());
    EXPECT_TRUE(applied->persisted.ok());
    EXPECT_EQ(InDb(), (Stored{{"alice", {"sip:alice@10.0.0.1"}}}));
    EXPECT_EQ(run.location().Get("alice")->contacts[0].state, ContactState::kSync);
    ASSERT_TRUE(run.Add("bob", "sip:bob@10.0.0.2").ok());
    ASSERT_TRUE(run.RemoveAll("bob").ok());
    EXPECT_EQ(InDb(), (Stored{{"alice", {"sip:alice@10.0.0.1"}}}));
    run.module.Shutdown();
  }
  Instance restarted(db_, 1, kNow + 100);
  ASSERT_TRUE(restarted.status.ok()) << restarted.status;
  auto alice = restarted.location().Get("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->contacts[0].expires, kNow + 3600);
  EXPECT_EQ(alice->contacts[0].path, "<sip:edge;lr>");
  EXPECT_EQ(alice->contacts[0].received, "sip:198.51.100.7:3456");
  EXPECT_EQ(alice->contacts[0].state, ContactState::kSync);
  EXPECT_FALSE(restarted.location().Get("bob").has_value());
  EXPECT_EQ(restarted.core.stats().Value("location-users").value(), 1u);
  EXPECT_EQ(restarted.core.stats().Value("location-contacts").value(), 1u);
  // New versions continue above the stored ones: a change after restart is written.
  ASSERT_TRUE(restarted.Add("alice", "sip:alice@10.0.0.9").ok());
  EXPECT_EQ(InDb()["alice"].size(), 2u);
}

TEST_F(PersistenceTest, WriteThroughSurvivesKillMinusNine) {
  Instance run(db_, 1, kNow);
  ASSERT_TRUE(run.status.ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A SIP worker: commit, "send 200 OK", die without any cleanup.
    auto applied = run.Add("carol", "sip:carol@10.0.0.3");
    if (!applied.ok() || !applied->persisted.ok()) _exit(1);
    raise(SIGKILL);
    _exit(2);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  Instance restarted(db_, 1, kNow + 1);
  ASSERT_TRUE(restarted.status.ok());
  EXPECT_TRUE(restarted.location().Get("carol").has_value());
}

TEST_F(PersistenceTest, WriteBackWritesOnTimerAndAtShutdown) {
  {
    Instance run(db_, 2, kNow);
    ASSERT_TRUE(run.status.ok());
    ASSERT_TRUE(run.Add("alice", "sip:a@h").ok());
    EXPECT_TRUE(InDb().empty());
    EXPECT_EQ(run.location().Get("alice")->contacts[0].state, ContactState::kNew);
    run.core.RunTimers();
    EXPECT_EQ(InDb(), (Stored{{"alice", {"sip:a@h"}}}));
    EXPECT_EQ(run.location().Get("alice")->contacts[0].state, ContactState::kSync);
    ASSERT_TRUE(run.Add("alice", "sip:a@h", 7200).ok());
    EXPECT_EQ(run.location().Get("alice")->contacts[0].state, ContactState::kDirty);
    ASSERT_TRUE(run.Add("bob", "sip:b@h").ok());
    ASSERT_TRUE(run.RemoveAll("alice").ok());
    EXPECT_EQ(InDb(), (Stored{{"alice", {"sip:a@h"}}}));  // not yet
    run.module.Shutdown();                                // the attendant's final flush
    EXPECT_EQ(InDb(), (Stored{{"bob", {"sip:b@h"}}}));
  }
  Instance restarted(db_, 2, kNow + 1);
  ASSERT_TRUE(restarted.status.ok());
  EXPECT_TRUE(restarted.location().Get("bob").has_value());
  EXPECT_FALSE(restarted.location().Get("alice").has_value());
}

TEST_F(PersistenceTest, ExpiredContactsAreDroppedFromTheDatabase) {
  {
    Instance run(db_, 1, kNow);
    ASSERT_TRUE(run.Add("shortlived", "sip:s@h", 60).ok());
    ASSERT_TRUE(run.Add("longlived", "sip:l@h", 6000).ok());
    run.now += 60;
    run.core.RunTimers();  // write-through: the timer deletes expired rows
    EXPECT_EQ(InDb(), (Stored{{"longlived", {"sip:l@h"}}}));
    EXPECT_EQ(run.core.stats().Value("location-expires").value(), 1u);
    ASSERT_TRUE(run.Add("offline", "sip:o@h", 100).ok());
  }
  // Expired while sipd was down: pruned at start-up.
  Instance restarted(db_, 1, kNow + 1000);
  ASSERT_TRUE(restarted.status.ok());
  EXPECT_FALSE(restarted.location().Get("offline").has_value());
  EXPECT_EQ(InDb(), (Stored{{"longlived", {"sip:l@h"}}}));
}

TEST_F(PersistenceTest, ConcurrentWriteThroughFromSeveralProcesses) {
  Instance run(db_, 1, kNow);
  ASSERT_TRUE(run.status.ok());
  std::vector<pid_t> children;
  for (int p = 0; p < 3; ++p) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (int i = 0; i < 60; ++i) {
        auto a = run.Add(absl::StrCat("p", p, "u", i), "sip:x@h");
        if (!a.ok() || !a->persisted.ok()) _exit(1);
        // Everybody also rewrites one shared AOR: the database must end with the last
        // in-memory state whatever order the commits land in.
        auto s = run.Add("shared", absl::StrCat("sip:p", p, "i", i, "@h"));
        if (!s.ok() || !s->persisted.ok()) _exit(1);
      }
      _exit(0);
    }
    children.push_back(child);
  }
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  Stored stored = InDb();
  EXPECT_EQ(stored.size(), 181u);
  std::vector<std::string> memory;
  const std::optional<AorSnapshot> shared = run.location().Get("shared");
  for (const auto& c : shared->contacts) memory.push_back(c.uri);
  EXPECT_EQ(memory.size(), 180u);
  EXPECT_EQ(stored["shared"], memory);
}

TEST_F(PersistenceTest, WriteThroughFromSeveralThreadsOfOneProcess) {
  // MI transports may run commands on several threads of one process: they share that
  // process's connection.
  Instance run(db_, 1, kNow);
  ASSERT_TRUE(run.status.ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto a = run.Add(absl::StrCat("t", t, "u", i), "sip:x@h");
        if (!a.ok() || !a->persisted.ok()) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(InDb().size(), 200u);
}

TEST_F(PersistenceTest, SyncRewritesTheDatabaseFromMemory) {
  Instance run(db_, 2, kNow);
  ASSERT_TRUE(run.Add("alice", "sip:a@h").ok());
  ASSERT_TRUE(run.Add("bob", "sip:b@h").ok());
  {
    // Someone else puts rows in the database that memory does not have.
    auto store = SqliteStore::Open({.path = db_});
    AorSnapshot ghost;
    ghost.aor = "ghost";
    ghost.version = 1;
    ghost.contacts.push_back(ContactInfo{.uri = "sip:g@h"});
    ASSERT_TRUE((*store)->Write("location", std::vector<AorSnapshot>{ghost}).ok());
  }
  ASSERT_TRUE(run.ul().SyncAor(run.location(), "alice").ok());
  EXPECT_EQ(InDb(), (Stored{{"alice", {"sip:a@h"}}, {"ghost", {"sip:g@h"}}}));
  EXPECT_TRUE(absl::IsNotFound(run.ul().SyncAor(run.location(), "nobody")));
  ASSERT_TRUE(run.ul().SyncTable(run.location()).ok());
  EXPECT_EQ(InDb(), (Stored{{"alice", {"sip:a@h"}}, {"bob", {"sip:b@h"}}}));
}

TEST_F(PersistenceTest, UnusableDatabaseFailsStartUp) {
  Instance run("/nonexistent-dir/sub/ul.sqlite", 1, kNow);
  EXPECT_FALSE(run.status.ok());
  EXPECT_THAT(std::string(run.status.message()), ::testing::HasSubstr("/nonexistent-dir/sub"));
}

}  // namespace
}  // namespace sipd::usrloc
