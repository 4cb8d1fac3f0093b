// The shared-memory dialog table (sipd/modules/dialog/dialog_table.h): ids, transitions
// and their counters, chunked walks, expiry, and a process that dies holding a lock.
#include "sipd/modules/dialog/dialog_table.h"

#include <sys/wait.h>
#include <unistd.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sipd::dialog {
namespace {

using Kind = DialogTable::Event::Kind;

class RecordingSink : public ChangeSink {
 public:
  void Changed(const DialogInfo& d, bool removed) override {
    if (die) _exit(0);
    changes.push_back(absl::StrCat(removed ? "delete " : "upsert ", d.h_id, " state ",
                                   static_cast<int>(d.state)));
  }
  std::vector<std::string> changes;
  bool die = false;
};

class DialogTableTest : public ::testing::Test {
 protected:
  void Make(uint32_t size) {
    auto shm = SharedMemory::Create(32u << 20);
    ASSERT_TRUE(shm.ok());
    shm_ = std::move(*shm);
    cells_ = static_cast<std::atomic<uint64_t>*>(shm_->Allocate(sizeof(std::atomic<uint64_t>) * 8));
    for (int i = 0; i < 8; ++i) new (&cells_[i]) std::atomic<uint64_t>(0);
    DialogTable::Counters c{mi::Counter(&cells_[0]), mi::Counter(&cells_[1]),
                            mi::Counter(&cells_[2]), mi::Counter(&cells_[3]),
                            mi::Counter(&cells_[4])};
    auto table = DialogTable::Create(*shm_, size, &cells_[7], c, &sink_, /*seed=*/42);
    ASSERT_TRUE(table.ok());
    table_ = std::move(*table);
  }
  uint64_t active() const { return cells_[0].load(); }
  uint64_t early() const { return cells_[1].load(); }
  uint64_t processed() const { return cells_[2].load(); }
  uint64_t expired() const { return cells_[3].load(); }
  uint64_t failed() const { return cells_[4].load(); }

  DialogInfo New(std::string callid) {
    DialogInfo d;
    d.callid = std::move(callid);
    d.from_uri = "sip:a@example.com";
    d.to_uri = "sip:b@example.com";
    d.caller.tag = "ta";
    d.caller.contact = "sip:a@192.0.2.1";
    d.caller.cseq = 1;
    d.profiles = {ProfileLink{0, "alice"}, ProfileLink{2, ""}};
    auto inserted = table_->Insert(d, 1000);
    EXPECT_TRUE(inserted.ok());
    return *inserted;
  }
  absl::StatusOr<DialogTable::Transition> Do(const DialogInfo& d, Kind kind,
                                             std::string callee_tag = "tb") {
    DialogTable::Event e;
    e.kind = kind;
    e.now = 2000;
    e.lifetime = 100;
    if (kind == Kind::kProvisional || kind == Kind::kConfirmed) {
      e.callee = LegInfo{.tag = callee_tag, .contact = "sip:b@192.0.2.9", .cseq = 1};
    }
    return table_->Apply(d.h_entry, d.h_id, e);
  }

  std::unique_ptr<SharedMemory> shm_;
  std::atomic<uint64_t>* cells_ = nullptr;
  RecordingSink sink_;
  std::unique_ptr<DialogTable> table_;
};

TEST_F(DialogTableTest, IdsAreUniqueNonZeroAndIncreasingPerBucket) {
  Make(1);
  std::set<uint64_t> ids;
  uint32_t last = 0;
  for (int i = 0; i < 100; ++i) {
    DialogInfo d = New(absl::StrCat("c", i));
    EXPECT_EQ(d.h_entry, 0u);
    EXPECT_NE(d.h_id, 0u);
    EXPECT_GT(d.h_id, last);
    last = d.h_id;
    ids.insert(d.id());
  }
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_EQ(table_->count(), 100u);
  EXPECT_EQ(processed(), 100u);
}

TEST_F(DialogTableTest, TransitionsCountersAndTheDatabaseSink) {
  Make(8);
  DialogInfo d = New("call");
  ASSERT_TRUE(Do(d, Kind::kProvisional).ok());
  EXPECT_EQ(early(), 1u);
  auto t = Do(d, Kind::kConfirmed);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->before, DialogState::kEarly);
  EXPECT_EQ(t->after, DialogState::kConfirmedNoAck);
  EXPECT_EQ(t->dialog.timeout, 2100);
  EXPECT_EQ(early(), 0u);
  EXPECT_EQ(active(), 1u);
  // A second 2xx (another fork) changes nothing.
  EXPECT_FALSE(Do(d, Kind::kConfirmed, "other")->changed());
  EXPECT_EQ(table_->Get(d.h_entry, d.h_id)->callee->tag, "tb");
  ASSERT_TRUE(Do(d, Kind::kAck).ok());
  // A failed fork after the 2xx does not end the dialog.
  EXPECT_FALSE(Do(d, Kind::kFailed)->changed());
  auto bye = Do(d, Kind::kBye);
  ASSERT_TRUE(bye.ok());
  EXPECT_EQ(bye->after, DialogState::kDeleted);
  EXPECT_EQ(active(), 0u);
  EXPECT_TRUE(absl::IsNotFound(Do(d, Kind::kBye).status()));
  const uint32_t id = d.h_id;
  EXPECT_THAT(sink_.changes, ::testing::ElementsAre(absl::StrCat("upsert ", id, " state 3"),
                                                    absl::StrCat("upsert ", id, " state 4"),
                                                    absl::StrCat("delete ", id, " state 5")));
}

TEST_F(DialogTableTest, MatchingInDialogRequestsInBothDirections) {
  Make(4);
  DialogInfo d = New("m");
  // Before the callee's tag is known, the caller's tag alone matches.
  auto early = table_->MatchRequest("m", "ta", "whatever");
  ASSERT_TRUE(early.has_value());
  EXPECT_TRUE(early->from_caller);
  ASSERT_TRUE(Do(d, Kind::kConfirmed).ok());
  EXPECT_TRUE(table_->MatchRequest("m", "ta", "tb")->from_caller);
  EXPECT_FALSE(table_->MatchRequest("m", "tb", "ta")->from_caller);
  EXPECT_FALSE(table_->MatchRequest("m", "ta", "zz").has_value());
  EXPECT_FALSE(table_->MatchRequest("other", "ta", "tb").has_value());
}

TEST_F(DialogTableTest, ChunkedWalkSeesEveryDialogOnce) {
  Make(7);
  std::set<uint64_t> created;
  for (int i = 0; i < 333; ++i) created.insert(New(absl::StrCat("w", i)).id());
  DialogTable::Cursor cursor;
  std::vector<DialogInfo> out;
  int chunks = 0;
  while (!cursor.done) {
    const size_t before = out.size();
    table_->CopyChunk(cursor, 50, out);
    EXPECT_LE(out.size() - before, 50u);
    ++chunks;
  }
  std::set<uint64_t> seen;
  for (const auto& d : out) seen.insert(d.id());
  EXPECT_EQ(seen, created);
  EXPECT_EQ(out.size(), 333u);
  EXPECT_GE(chunks, 7);
  EXPECT_EQ(table_->ProfileCounts(0), (std::map<std::string, uint64_t>{{"alice", 333}}));
  EXPECT_EQ(table_->ProfileCounts(2), (std::map<std::string, uint64_t>{{"", 333}}));
  EXPECT_TRUE(table_->ProfileCounts(1).empty());
}

TEST_F(DialogTableTest, ExpiryEndsDueConfirmedDialogsAndStaleSetups) {
  Make(2);
  DialogInfo confirmed = New("due");
  ASSERT_TRUE(Do(confirmed, Kind::kConfirmed).ok());  // timeout 2100
  DialogInfo setup = New("stale");                    // created at 1000
  std::vector<DialogTable::Transition> ended;
  for (uint32_t b = 0; b < 2; ++b) table_->Expire(b, 2099, 0, ended);
  EXPECT_TRUE(ended.empty());
  for (uint32_t b = 0; b < 2; ++b) table_->Expire(b, 2100, 1001, ended);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].dialog.callid, "due");
  EXPECT_EQ(ended[0].dialog.caller.cseq, 2u);  // the BYE's CSeq
  EXPECT_EQ(table_->count(), 0u);
  EXPECT_EQ(expired(), 1u);
  EXPECT_EQ(failed(), 1u);
  EXPECT_EQ(active(), 0u);
}

TEST_F(DialogTableTest, TooLongFieldsAreRefused) {
  Make(2);
  DialogInfo d;
  d.callid = std::string(kMaxFieldLength + 1, 'c');
  EXPECT_TRUE(absl::IsInvalidArgument(table_->Insert(d, 1).status()));
  d.callid = "";
  EXPECT_TRUE(absl::IsInvalidArgument(table_->Insert(d, 1).status()));
  d.callid = "ok";
  d.caller.route_set = std::string(kMaxRouteSetLength + 1, 'r');
  EXPECT_TRUE(absl::IsInvalidArgument(table_->Insert(d, 1).status()));
}

TEST_F(DialogTableTest, LoadKeepsIdsAndMovesNextIdPastThem) {
  Make(4);
  DialogInfo d;
  d.callid = "loaded";
  d.h_entry = table_->BucketOf("loaded");
  d.h_id = 0x7FFFFFF0u;
  d.state = DialogState::kConfirmed;
  d.start_time = 5;
  d.timeout = 10;
  d.callee = LegInfo{.tag = "tb"};
  ASSERT_TRUE(table_->Load(d).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(table_->Load(d).status()));
  EXPECT_EQ(active(), 1u);
  DialogInfo next = New("loaded");
  EXPECT_EQ(next.h_entry, d.h_entry);
  EXPECT_GT(next.h_id, d.h_id);
  // An h_entry that does not fit (hash_size changed) gets new ids.
  DialogInfo moved = d;
  moved.callid = "moved";
  moved.h_entry = 99;
  auto linked = table_->Load(moved);
  ASSERT_TRUE(linked.ok());
  EXPECT_EQ(linked->h_entry, table_->BucketOf("moved"));
}

TEST_F(DialogTableTest, ProcessDyingUnderABucketLockIsRepaired) {
  Make(1);
  DialogInfo a = New("a");
  DialogInfo b = New("b");
  ASSERT_TRUE(Do(a, Kind::kConfirmed).ok());
  ASSERT_TRUE(Do(b, Kind::kConfirmed).ok());
  EXPECT_EQ(active(), 2u);
  // The child dies (kill -9 style) while the BYE of `a` is half done: state changed,
  // the record not unlinked yet, the bucket lock held.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    sink_.die = true;
    (void)Do(a, Kind::kBye);
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // Would dead-lock without robust mutexes; the half-removed dialog is gone, the other
  // one intact, and the counters match the table.
  EXPECT_FALSE(table_->Get(a.h_entry, a.h_id).has_value());
  EXPECT_TRUE(table_->Get(b.h_entry, b.h_id).has_value());
  EXPECT_EQ(table_->count(), 1u);
  EXPECT_EQ(active(), 1u);
  ASSERT_TRUE(Do(b, Kind::kBye).ok());
  EXPECT_EQ(active(), 0u);
}

}  // namespace
}  // namespace sipd::dialog
