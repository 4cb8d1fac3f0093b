// LocationTable: the shared-memory hash table of usrloc.
#include "sipd/modules/usrloc/location_table.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sipd::usrloc {
namespace {

using ::testing::ElementsAre;

class LocationTableTest : public ::testing::Test {
 protected:
  void Make(uint32_t slots, bool track_db, size_t shm_bytes = 32u << 20) {
    shm_ = std::move(SharedMemory::Create(shm_bytes).value());
    cells_ = static_cast<std::atomic<uint64_t>*>(shm_->Allocate(sizeof(std::atomic<uint64_t>) * 4));
    for (int i = 0; i < 4; ++i) new (&cells_[i]) std::atomic<uint64_t>(0);
    clock_ = &cells_[3];
    table_ = std::move(
        LocationTable::Create(
            *shm_, "location", slots, clock_,
            {mi::Counter(&cells_[0]), mi::Counter(&cells_[1]), mi::Counter(&cells_[2])}, track_db)
            .value());
  }
  void SetUp() override { Make(16, false); }

  static ContactInfo Contact(std::string uri, int64_t expires = 0, int32_t q = kQUnspecified) {
    ContactInfo c;
    c.uri = std::move(uri);
    c.callid = "cid";
    c.cseq = 1;
    c.expires = expires;
    c.q = q;
    return c;
  }

  absl::StatusOr<UpdateResult> Upsert(std::string_view aor, ContactInfo c) {
    return table_->Update(aor,
                          [&](bool, const std::vector<ContactInfo>&, std::vector<Edit>& edits) {
                            edits.push_back(Edit{Edit::Kind::kUpsert, c});
                            return absl::OkStatus();
                          });
  }
  absl::StatusOr<UpdateResult> Remove(std::string_view aor, std::string uri) {
    return table_->Update(aor,
                          [&](bool, const std::vector<ContactInfo>&, std::vector<Edit>& edits) {
                            edits.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = uri}});
                            return absl::OkStatus();
                          });
  }
  uint64_t users() const { return cells_[0].load(); }
  uint64_t contacts() const { return cells_[1].load(); }
  uint64_t expired() const { return cells_[2].load(); }

  std::vector<std::string> DumpAors(size_t chunk = 50) {
    std::vector<std::string> out;
    LocationTable::Cursor cursor;
    std::vector<AorSnapshot> snapshots;
    while (!cursor.done) {
      snapshots.clear();
      table_->CopyChunk(cursor, chunk, false, snapshots);
      EXPECT_LE(snapshots.size(), chunk);
      for (auto& s : snapshots) out.push_back(s.aor);
    }
    return out;
  }

  std::unique_ptr<SharedMemory> shm_;
  std::atomic<uint64_t>* cells_ = nullptr;
  std::atomic<uint64_t>* clock_ = nullptr;
  std::unique_ptr<LocationTable> table_;
};

TEST_F(LocationTableTest, InsertGetAndCounters) {
  auto r = Upsert("alice", Contact("sip:alice@10.0.0.1"));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->existed);
  EXPECT_TRUE(r->changed);
  ASSERT_EQ(r->after.contacts.size(), 1u);
  EXPECT_EQ(users(), 1u);
  EXPECT_EQ(contacts(), 1u);
  ASSERT_TRUE(Upsert("alice", Contact("sip:alice@10.0.0.2")).ok());
  ASSERT_TRUE(Upsert("bob", Contact("sip:bob@10.0.0.3")).ok());
  EXPECT_EQ(users(), 2u);
  EXPECT_EQ(contacts(), 3u);
  auto alice = table_->Get("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->contacts.size(), 2u);
  EXPECT_EQ(alice->contacts[0].state, ContactState::kNew);
  EXPECT_FALSE(table_->Get("carol").has_value());
}

TEST_F(LocationTableTest, ReplaceKeepsOneContactPerUri) {
  ASSERT_TRUE(Upsert("alice", Contact("sip:a@h", 100)).ok());
  ContactInfo c = Contact("sip:a@h", 200);
  c.cseq = 7;
  c.user_agent = "phone";
  auto r = Upsert("alice", c);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->existed);
  ASSERT_EQ(r->after.contacts.size(), 1u);
  EXPECT_EQ(r->after.contacts[0].cseq, 7u);
  EXPECT_EQ(r->after.contacts[0].expires, 200);
  EXPECT_EQ(r->after.contacts[0].user_agent, "phone");
  EXPECT_EQ(contacts(), 1u);
}

TEST_F(LocationTableTest, ContactsOrderedByQThenInsertion) {
  ASSERT_TRUE(Upsert("a", Contact("sip:1@h", 0, 500)).ok());
  ASSERT_TRUE(Upsert("a", Contact("sip:2@h", 0, kQUnspecified)).ok());
  ASSERT_TRUE(Upsert("a", Contact("sip:3@h", 0, 1000)).ok());
  ASSERT_TRUE(Upsert("a", Contact("sip:4@h", 0, 500)).ok());
  auto uris = [&] {
    std::vector<std::string> out;
    const auto a = table_->Get("a");
    for (auto& c : a->contacts) out.push_back(c.uri);
    return out;
  };
  EXPECT_THAT(uris(), ElementsAre("sip:3@h", "sip:1@h", "sip:4@h", "sip:2@h"));
  // A q change moves the contact; an update with the same q keeps its place.
  ASSERT_TRUE(Upsert("a", Contact("sip:1@h", 0, 100)).ok());
  ASSERT_TRUE(Upsert("a", Contact("sip:3@h", 5, 1000)).ok());
  EXPECT_THAT(uris(), ElementsAre("sip:3@h", "sip:4@h", "sip:1@h", "sip:2@h"));
}

TEST_F(LocationTableTest, RemovingLastContactDropsAorWithoutDatabase) {
  ASSERT_TRUE(Upsert("alice", Contact("sip:a@h")).ok());
  auto r = Remove("alice", "sip:a@h");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->changed);
  EXPECT_TRUE(r->after.contacts.empty());
  EXPECT_EQ(users(), 0u);
  EXPECT_EQ(contacts(), 0u);
  EXPECT_FALSE(table_->Get("alice").has_value());
  EXPECT_TRUE(DumpAors().empty());
  // Removing what is not there changes nothing.
  r = Remove("alice", "sip:a@h");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->changed);
}

TEST_F(LocationTableTest, EditFnErrorChangesNothing) {
  ASSERT_TRUE(Upsert("alice", Contact("sip:a@h")).ok());
  auto r = table_->Update(
      "alice", [](bool exists, const std::vector<ContactInfo>& current, std::vector<Edit>& edits) {
        EXPECT_TRUE(exists);
        EXPECT_EQ(current.size(), 1u);
        edits.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = "sip:a@h"}});
        return absl::AbortedError("no");
      });
  EXPECT_TRUE(absl::IsAborted(r.status()));
  EXPECT_EQ(table_->Get("alice")->contacts.size(), 1u);
}

TEST_F(LocationTableTest, SweepRemovesExpiredAndCounts) {
  ASSERT_TRUE(Upsert("a", Contact("sip:1@h", 100)).ok());
  ASSERT_TRUE(Upsert("a", Contact("sip:2@h", 0)).ok());  // permanent
  ASSERT_TRUE(Upsert("b", Contact("sip:3@h", 150)).ok());
  size_t expired_now = 0;
  for (uint32_t s = 0; s < table_->size(); ++s) table_->Sweep(s, 99, nullptr, &expired_now);
  EXPECT_EQ(expired_now, 0u);
  for (uint32_t s = 0; s < table_->size(); ++s) table_->Sweep(s, 100, nullptr, &expired_now);
  EXPECT_EQ(expired_now, 1u);
  EXPECT_EQ(expired(), 1u);
  EXPECT_EQ(users(), 2u);
  EXPECT_EQ(contacts(), 2u);
  for (uint32_t s = 0; s < table_->size(); ++s) table_->Sweep(s, 1000, nullptr, &expired_now);
  EXPECT_EQ(expired(), 2u);
  EXPECT_EQ(users(), 1u);
  EXPECT_FALSE(table_->Get("b").has_value());
  EXPECT_EQ(table_->Get("a")->contacts.size(), 1u);
}

TEST_F(LocationTableTest, DatabaseStatesAndZombies) {
  Make(8, /*track_db=*/true);
  auto r = Upsert("alice", Contact("sip:a@h"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->after.contacts[0].state, ContactState::kNew);
  std::vector<AorSnapshot> unsynced;
  for (uint32_t s = 0; s < table_->size(); ++s) table_->Sweep(s, 0, &unsynced, nullptr);
  ASSERT_EQ(unsynced.size(), 1u);
  table_->MarkSynced("alice", unsynced[0].version);
  EXPECT_EQ(table_->Get("alice")->contacts[0].state, ContactState::kSync);
  ContactInfo changed = Contact("sip:a@h");
  changed.cseq = 2;
  r = Upsert("alice", changed);
  EXPECT_EQ(r->after.contacts[0].state, ContactState::kDirty);
  ASSERT_TRUE(Upsert("alice", Contact("sip:b@h")).ok());
  auto alice = table_->Get("alice");
  EXPECT_EQ(alice->contacts[0].state, ContactState::kDirty);
  EXPECT_EQ(alice->contacts[1].state, ContactState::kNew);

  // Emptied: invisible, but kept until the removal is synced.
  ASSERT_TRUE(Remove("alice", "sip:a@h").ok());
  r = Remove("alice", "sip:b@h");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(table_->Get("alice").has_value());
  EXPECT_TRUE(DumpAors().empty());
  EXPECT_EQ(users(), 0u);
  unsynced.clear();
  for (uint32_t s = 0; s < table_->size(); ++s) table_->Sweep(s, 0, &unsynced, nullptr);
  ASSERT_EQ(unsynced.size(), 1u);
  EXPECT_TRUE(unsynced[0].contacts.empty());
  EXPECT_EQ(unsynced[0].version, r->after.version);
  // An older version being synced does not drop it.
  table_->MarkSynced("alice", r->after.version - 1);
  unsynced.clear();
  for (uint32_t s = 0; s < table_->size(); ++s) table_->Sweep(s, 0, &unsynced, nullptr);
  EXPECT_EQ(unsynced.size(), 1u);
  table_->MarkSynced("alice", r->after.version);
  unsynced.clear();
  for (uint32_t s = 0; s < table_->size(); ++s) table_->Sweep(s, 0, &unsynced, nullptr);
  EXPECT_TRUE(unsynced.empty());
}

TEST_F(LocationTableTest, LoadedContactsAreSynced) {
  Make(8, true);
  AorSnapshot s;
  s.aor = "alice";
  s.version = 42;
  s.contacts = {Contact("sip:a@h", 0, 1000), Contact("sip:b@h", 0, 500)};
  ASSERT_TRUE(table_->Load(s).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(table_->Load(s)));
  auto alice = table_->Get("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->version, 42u);
  EXPECT_EQ(alice->contacts[0].state, ContactState::kSync);
  EXPECT_EQ(alice->contacts[1].uri, "sip:b@h");
  EXPECT_EQ(users(), 1u);
  EXPECT_EQ(contacts(), 2u);
}

TEST_F(LocationTableTest, CopyChunkVisitsEveryAorOnceInBoundedChunks) {
  Make(4, false);
  std::set<std::string> expected;
  for (int i = 0; i < 1000; ++i) {
    const std::string aor = absl::StrCat("user", i);
    ASSERT_TRUE(Upsert(aor, Contact("sip:x@h")).ok());
    expected.insert(aor);
  }
  std::vector<std::string> seen = DumpAors(50);
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), expected);
}

TEST_F(LocationTableTest, CopyChunkIsStableUnderConcurrentChanges) {
  // AORs that exist for the whole walk are seen exactly once, whatever is added or
  // removed between chunks.
  Make(4, false);
  for (int i = 0; i < 500; ++i)
    ASSERT_TRUE(Upsert(absl::StrCat("keep", i), Contact("sip:k@h")).ok());
  for (int i = 0; i < 200; ++i)
    ASSERT_TRUE(Upsert(absl::StrCat("gone", i), Contact("sip:g@h")).ok());
  LocationTable::Cursor cursor;
  std::vector<AorSnapshot> chunk;
  std::multiset<std::string> seen;
  int round = 0;
  while (!cursor.done) {
    chunk.clear();
    table_->CopyChunk(cursor, 7, false, chunk);
    for (auto& s : chunk) seen.insert(s.aor);
    ++round;
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(Upsert(absl::StrCat("new", round, "_", k), Contact("sip:n@h")).ok());
    }
    if (round < 200) {
      ASSERT_TRUE(Remove(absl::StrCat("gone", round), "sip:g@h").ok());
    }
  }
  for (int i = 0; i < 500; ++i) EXPECT_EQ(seen.count(absl::StrCat("keep", i)), 1u) << i;
  for (const auto& aor : seen) EXPECT_EQ(seen.count(aor), 1u) << aor;
}

TEST_F(LocationTableTest, FullSharedMemoryLeavesAorUntouched) {
  Make(2, false, 256 * 1024);
  ContactInfo big = Contact("sip:big@h");
  big.path = std::string(400, 'p');
  big.user_agent = std::string(400, 'u');
  absl::Status status;
  int inserted = 0;
  for (int i = 0; i < 100000 && status.ok(); ++i) {
    big.uri = absl::StrCat("sip:big", i, "@h");
    auto r = Upsert("alice", big);
    status = r.status();
    if (r.ok()) ++inserted;
  }
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  auto alice = table_->Get("alice");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->contacts.size(), static_cast<size_t>(inserted));
  EXPECT_EQ(contacts(), static_cast<uint64_t>(inserted));
}

TEST_F(LocationTableTest, ProcessDyingUnderSlotLockIsRepaired) {
  // A child process dies (kill -9 style: _exit) in the middle of an update while holding
  // the slot lock. The next locker recovers the robust mutex and recounts the slot.
  Make(1, false);
  ASSERT_TRUE(Upsert("alice", Contact("sip:a@h")).ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    (void)table_->Update(
        "bob", [](bool, const std::vector<ContactInfo>&, std::vector<Edit>&) -> absl::Status {
          _exit(0);
        });
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // Would dead-lock without robust mutexes.
  ASSERT_TRUE(Upsert("bob", Contact("sip:b@h")).ok());
  EXPECT_EQ(users(), 2u);
  EXPECT_EQ(contacts(), 2u);
  EXPECT_EQ(DumpAors().size(), 2u);
}

TEST_F(LocationTableTest, ConcurrentWritersInSeveralProcesses) {
  Make(8, false);
  constexpr int kProcesses = 4;
  constexpr int kAorsEach = 300;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < kAorsEach; ++i) {
          const std::string aor = absl::StrCat("p", p, "u", i);
          if (!Upsert(aor, Contact(absl::StrCat("sip:", aor, "@h"))).ok()) _exit(2);
          // The shared table: a contact also used by every other process.
          if (!Upsert("shared", Contact(absl::StrCat("sip:p", p, "@h"))).ok()) _exit(3);
        }
      }
      _exit(0);
    }
    children.push_back(child);
  }
  // Dump concurrently while they write.
  for (int i = 0; i < 20; ++i) (void)DumpAors(50);
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_EQ(users(), kProcesses * kAorsEach + 1u);
  EXPECT_EQ(contacts(), kProcesses * kAorsEach + kProcesses);
  EXPECT_EQ(DumpAors().size(), kProcesses * kAorsEach + 1u);
  EXPECT_EQ(table_->Get("shared")->contacts.size(), static_cast<size_t>(kProcesses));
}

}  // namespace
}  // namespace sipd::usrloc
