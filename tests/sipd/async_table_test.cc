// The shared-memory async reply table across real processes (fork).
#include "sipd/core/async_table.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "registry/text_format.h"

namespace sipd {
namespace {

class AsyncTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shm = SharedMemory::Create(4 << 20);
    ASSERT_TRUE(shm.ok()) << shm.status();
    shm_ = std::move(*shm);
    auto table = ShmAsyncTable::Create(*shm_, 16, 3);
    ASSERT_TRUE(table.ok()) << table.status();
    table_ = std::move(*table);
  }

  // Runs `body` in a child process; returns its exit status.
  static int InChild(const std::function<int()>& body) {
    const pid_t pid = fork();
    if (pid == 0) _exit(body());
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  static bool Readable(int fd, int timeout_ms) {
    pollfd pfd{fd, POLLIN, 0};
    return poll(&pfd, 1, timeout_ms) == 1;
  }

  std::unique_ptr<SharedMemory> shm_;
  std::unique_ptr<ShmAsyncTable> table_;
};

TEST_F(AsyncTableTest, AnotherProcessCompletesAndWakesTheOwner) {
  mi::AsyncBackend& owner = table_->ForOwner(1);
  auto ticket = owner.Reserve();
  ASSERT_TRUE(ticket.ok());
  EXPECT_FALSE(owner.TryTake(*ticket).has_value());
  EXPECT_FALSE(Readable(owner.wake_fd(), 0));

  EXPECT_EQ(InChild([this, t = *ticket] {
              mi::Reply reply;
              reply.root.AddKid("from", "child").AddAttribute("pid", std::to_string(getpid()));
              return table_->ForOwner(2).Complete(t, &reply) ? 0 : 1;
            }),
            0);
  ASSERT_TRUE(Readable(owner.wake_fd(), 5000));
  owner.ClearWake();
  std::optional<mi::AsyncResult> result = owner.TryTake(*ticket);
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ(mi::RenderText(**result, "\t", false).substr(0, 20), "200 OK\nfrom:: child ");
  EXPECT_EQ(table_->pending(), 0u);
  // Taken: a second completion is refused, and so is one for a made-up generation.
  EXPECT_FALSE(owner.Complete(*ticket, nullptr));
  EXPECT_FALSE(owner.Complete(mi::AsyncTicket{ticket->slot, ticket->generation + 7}, nullptr));
}

TEST_F(AsyncTableTest, ReleasedTicketsAreRefusedEvenWhenTheSlotIsReused) {
  mi::AsyncBackend& owner = table_->ForOwner(1);
  std::vector<mi::AsyncTicket> tickets;
  for (int i = 0; i < 16; ++i) tickets.push_back(owner.Reserve().value());
  EXPECT_EQ(owner.Reserve().status().code(), absl::StatusCode::kResourceExhausted);
  const mi::AsyncTicket old = tickets[3];
  owner.Release(old);
  const mi::AsyncTicket reused = owner.Reserve().value();
  EXPECT_EQ(reused.slot, old.slot);
  EXPECT_NE(reused.generation, old.generation);
  mi::Reply late;
  EXPECT_FALSE(owner.Complete(old, &late));
  EXPECT_TRUE(owner.Complete(reused, nullptr));
  std::optional<mi::AsyncResult> result = owner.TryTake(reused);
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->has_value());  // completed with nothing
}

TEST_F(AsyncTableTest, OnlyTheOwnerTakesAndReleasingACompletedTicketFreesIt) {
  auto ticket = table_->ForOwner(1).Reserve().value();
  mi::Reply reply;
  ASSERT_TRUE(table_->ForOwner(0).Complete(ticket, &reply));
  EXPECT_FALSE(table_->ForOwner(2).TryTake(ticket).has_value());
  EXPECT_EQ(table_->pending(), 1u);
  table_->ForOwner(1).Release(ticket);
  EXPECT_EQ(table_->pending(), 0u);
}

TEST_F(AsyncTableTest, ARestartedOwnerReclaimsWhatItsPredecessorLeft) {
  EXPECT_EQ(InChild([this] {
              for (int i = 0; i < 5; ++i) {
                if (!table_->ForOwner(2).Reserve().ok()) return 1;
              }
              return 0;  // dies holding five pending slots
            }),
            0);
  auto other = table_->ForOwner(1).Reserve().value();
  EXPECT_EQ(table_->pending(), 6u);
  table_->ReclaimOwner(2);
  EXPECT_EQ(table_->pending(), 1u);
  EXPECT_TRUE(table_->ForOwner(0).Complete(other, nullptr));
}

}  // namespace
}  // namespace sipd
