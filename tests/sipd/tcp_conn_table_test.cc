// Unit tests of the shared-memory TCP connection table (sipd/core/tcp_conn_table.h),
// including a lock holder that dies.
#include "sipd/core/tcp_conn_table.h"

#include <sys/wait.h>
#include <unistd.h>

#include <set>
#include <string>

#include "gtest/gtest.h"

namespace sipd {
namespace {

SipAddress Peer(uint16_t port) { return *SipAddress::FromIpPort("127.0.0.1", port); }

class TcpConnTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shm = SharedMemory::Create(8 << 20);
    ASSERT_TRUE(shm.ok()) << shm.status();
    shm_ = *std::move(shm);
    auto table = TcpConnTable::Create(*shm_, {.capacity = 4, .owners = 2});
    ASSERT_TRUE(table.ok()) << table.status();
    table_ = *table;
  }
  void TearDown() override { delete table_; }

  std::unique_ptr<SharedMemory> shm_;
  TcpConnTable* table_ = nullptr;
};

TEST_F(TcpConnTableTest, AcceptedConnectionsSpreadOverOwnersUntilFull) {
  std::set<uint64_t> ids;
  int per_owner[2] = {0, 0};
  for (uint16_t i = 0; i < 4; ++i) {
    auto added = table_->AddAccepted(Peer(1000 + i), Peer(5060), 1);
    ASSERT_TRUE(added.ok()) << added.status();
    ids.insert(added->id);
    ++per_owner[added->owner];
  }
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(per_owner[0], 2);
  EXPECT_EQ(per_owner[1], 2);
  auto full = table_->AddAccepted(Peer(2000), Peer(5060), 1);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(table_->size(), 4u);

  // A freed slot comes back with a new id; the old one is never found again.
  const uint64_t old = *ids.begin();
  table_->Remove(old);
  int owner = 0;
  TcpState state;
  EXPECT_FALSE(table_->Lookup(old, &owner, &state));
  auto again = table_->AddAccepted(Peer(3000), Peer(5060), 1);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ids.count(again->id), 0u);
}

TEST_F(TcpConnTableTest, EnqueueByIdByPeerOrNewConnection) {
  auto added = table_->AddAccepted(Peer(1000), Peer(5060), 1);
  ASSERT_TRUE(added.ok());
  table_->SetState(added->id, TcpState::kOk);

  auto by_id = table_->Enqueue(added->id, Peer(9), -1, "one", 100);
  ASSERT_TRUE(by_id.ok()) << by_id.status();
  EXPECT_EQ(by_id->id, added->id);
  EXPECT_TRUE(by_id->wake);
  auto by_peer = table_->Enqueue(0, Peer(1000), -1, "two", 100);
  ASSERT_TRUE(by_peer.ok());
  EXPECT_EQ(by_peer->id, added->id);
  EXPECT_FALSE(by_peer->wake);  // already on the owner's work list

  auto nowhere = table_->Enqueue(0, Peer(1001), -1, "x", 100);
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kUnavailable);
  auto fresh = table_->Enqueue(0, Peer(1001), 3, "three", 100);
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->created);
  TcpConnInfo info;
  ASSERT_TRUE(table_->Info(fresh->id, &info));
  EXPECT_EQ(info.state, TcpState::kConnecting);
  EXPECT_TRUE(info.outbound);
  EXPECT_EQ(info.socket, 3);
  EXPECT_EQ(table_->FindByPeer(Peer(1001)), fresh->id);

  // Limits: the connection's queue, counted with what its owner holds.
  auto too_much = table_->Enqueue(added->id, Peer(1000), -1, std::string(96, 'x'), 100);
  EXPECT_EQ(too_much.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(table_->QueuedBytes(), 3u + 3u + 5u);

  std::set<uint64_t> work;
  for (int owner = 0; owner < 2; ++owner) {
    for (uint64_t id : table_->TakeWork(owner)) work.insert(id);
  }
  EXPECT_EQ(work, (std::set<uint64_t>{added->id, fresh->id}));
  std::string out;
  EXPECT_EQ(table_->TakeInbox(added->id, &out), 6u);
  EXPECT_EQ(out, "onetwo");
  table_->SetOwnerQueued(added->id, 90);
  EXPECT_EQ(table_->Enqueue(added->id, Peer(1000), -1, std::string(11, 'x'), 100).status().code(),
            absl::StatusCode::kResourceExhausted);

  // Closing connections are no longer found by address.
  table_->SetState(added->id, TcpState::kEof);
  EXPECT_EQ(table_->FindByPeer(Peer(1000)), 0u);
}

// QueuedBytes walks the slots up to the highest one ever used: connections in the last
// slot, and in slots freed and taken again, are all counted.
TEST_F(TcpConnTableTest, QueuedBytesCountsEveryConnectionWhereverItsSlotIs) {
  EXPECT_EQ(table_->QueuedBytes(), 0u);
  std::vector<uint64_t> ids;
  for (uint16_t i = 0; i < 4; ++i) {
    auto added = table_->AddAccepted(Peer(1000 + i), Peer(5060), 1);
    ASSERT_TRUE(added.ok()) << added.status();
    table_->SetState(added->id, TcpState::kOk);
    ids.push_back(added->id);
  }
  ASSERT_TRUE(table_->Enqueue(ids[3], Peer(1003), -1, "last", 100).ok());
  table_->SetOwnerQueued(ids[2], 7);
  EXPECT_EQ(table_->QueuedBytes(), 4u + 7u);
  table_->Remove(ids[0]);
  table_->Remove(ids[1]);
  EXPECT_EQ(table_->QueuedBytes(), 4u + 7u);
  auto again = table_->AddAccepted(Peer(2000), Peer(5060), 1);
  ASSERT_TRUE(again.ok());
  table_->SetState(again->id, TcpState::kOk);
  ASSERT_TRUE(table_->Enqueue(again->id, Peer(2000), -1, "ab", 100).ok());
  EXPECT_EQ(table_->QueuedBytes(), 4u + 7u + 2u);
  table_->Remove(ids[3]);
  EXPECT_EQ(table_->QueuedBytes(), 7u + 2u);
}

TEST_F(TcpConnTableTest, ReclaimOwnerFreesWhatItsPredecessorAdopted) {
  std::vector<uint64_t> adopted;
  for (uint16_t i = 0; i < 3; ++i) {
    auto added = table_->AddAccepted(Peer(1000 + i), Peer(1), 1);
    ASSERT_TRUE(added.ok());
    if (added->owner == 0 && adopted.empty()) {
      table_->Adopt(added->id);
      adopted.push_back(added->id);
    }
  }
  ASSERT_EQ(adopted.size(), 1u);
  ASSERT_TRUE(table_->Enqueue(0, Peer(1000), -1, "queued", 100).ok());
  // An outbound connection nobody started yet, for owner 1 (the least loaded).
  auto outbound = table_->Enqueue(0, Peer(2000), 1, "request", 100);
  ASSERT_TRUE(outbound.ok());
  ASSERT_EQ(outbound->owner, 1);
  std::vector<uint64_t> to_connect;
  EXPECT_EQ(table_->ReclaimOwner(0, &to_connect), 1u);
  EXPECT_TRUE(to_connect.empty());
  EXPECT_EQ(table_->size(), 3u);
  EXPECT_EQ(table_->ReclaimOwner(1, &to_connect), 0u);
  EXPECT_EQ(to_connect, std::vector<uint64_t>{outbound->id});
}

TEST_F(TcpConnTableTest, SurvivesALockHolderThatDies) {
  auto added = table_->AddAccepted(Peer(1000), Peer(5060), 1);
  ASSERT_TRUE(added.ok());
  ASSERT_TRUE(table_->Enqueue(added->id, Peer(1000), -1, "before", 100).ok());
  const pid_t child = fork();
  if (child == 0) {
    table_->LockAndAbandonForTesting();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  // The next locker repairs and everything still adds up.
  EXPECT_EQ(table_->size(), 1u);
  EXPECT_EQ(table_->FindByPeer(Peer(1000)), added->id);
  ASSERT_TRUE(table_->Enqueue(added->id, Peer(1000), -1, "after", 100).ok());
  std::string out;
  table_->TakeInbox(added->id, &out);
  EXPECT_EQ(out, "beforeafter");
  EXPECT_EQ(table_->TakeWork(added->owner), std::vector<uint64_t>{added->id});
  for (uint16_t i = 1; i < 4; ++i)
    EXPECT_TRUE(table_->AddAccepted(Peer(1000 + i), Peer(1), 1).ok());
  EXPECT_FALSE(table_->AddAccepted(Peer(2000), Peer(1), 1).ok());
}

}  // namespace
}  // namespace sipd
