// ShmEventQueue (sipd/core/event_queue.h): records of every size, wrap-around, a full
// ring, producers in threads and in other processes, and a producer that dies between
// its claim and its publication.
#include "sipd/core/event_queue.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sipd {
namespace {

using Clock = std::chrono::steady_clock;

class EventQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shm = SharedMemory::Create(64 << 20);
    ASSERT_TRUE(shm.ok());
    shm_ = std::move(*shm);
  }
  ShmEventQueue* NewQueue(size_t bytes) {
    auto queue = ShmEventQueue::Create(*shm_, bytes);
    EXPECT_TRUE(queue.ok());
    return *queue;
  }

  std::unique_ptr<SharedMemory> shm_;
};

TEST_F(EventQueueTest, RecordsOfEverySizeComeOutAsTheyWentIn) {
  ShmEventQueue* queue = NewQueue(1 << 20);
  EXPECT_TRUE(queue->Empty());
  std::vector<std::string> sent;
  for (size_t size : {size_t{0}, size_t{1}, size_t{87}, size_t{88}, size_t{89}, size_t{200},
                      size_t{5000}, ShmEventQueue::kMaxPayload}) {
    std::string payload(size, '\0');
    for (size_t i = 0; i < size; ++i) payload[i] = static_cast<char>('a' + (i * 7 + size) % 26);
    ASSERT_EQ(queue->Push(static_cast<uint32_t>(size), static_cast<int64_t>(size) * 3, payload),
              ShmEventQueue::PushResult::kQueued);
    sent.push_back(payload);
  }
  EXPECT_FALSE(queue->Empty());
  for (const std::string& expected : sent) {
    uint32_t tag = 0;
    int64_t stamp = 0;
    std::string payload;
    ASSERT_EQ(queue->Pop(&tag, &stamp, &payload), ShmEventQueue::PopResult::kRecord);
    EXPECT_EQ(tag, expected.size());
    EXPECT_EQ(stamp, static_cast<int64_t>(expected.size()) * 3);
    EXPECT_EQ(payload, expected);
  }
  uint32_t tag = 0;
  int64_t stamp = 0;
  std::string payload;
  EXPECT_EQ(queue->Pop(&tag, &stamp, &payload), ShmEventQueue::PopResult::kEmpty);
  EXPECT_TRUE(queue->Empty());
  EXPECT_EQ(queue->Push(1, 1, std::string(ShmEventQueue::kMaxPayload + 1, 'x')),
            ShmEventQueue::PushResult::kTooLarge);
}

TEST_F(EventQueueTest, FullRingDropsAndWrapsAroundOnceDrained) {
  ShmEventQueue* queue = NewQueue(0);  // the minimum
  const size_t cells = queue->capacity_cells();
  const std::string three_cells(300, 'x');  // 88 + 2 * 112 bytes fit 3 cells
  size_t pushed = 0;
  while (queue->Push(1, 0, three_cells) == ShmEventQueue::PushResult::kQueued) ++pushed;
  EXPECT_EQ(pushed, cells / 3);
  EXPECT_EQ(queue->Push(1, 0, three_cells), ShmEventQueue::PushResult::kFull);
  // Laps: drain and refill many times; records straddle the end of the ring.
  uint32_t tag = 0;
  int64_t stamp = 0;
  std::string payload;
  uint64_t next_in = 0;
  uint64_t next_out = 0;
  for (size_t i = 0; i < pushed; ++i) {
    ASSERT_EQ(queue->Pop(&tag, &stamp, &payload), ShmEventQueue::PopResult::kRecord);
  }
  for (int round = 0; round < 20 * static_cast<int>(cells); ++round) {
    const std::string record = absl::StrCat(next_in, std::string(next_in % 400, '.'));
    if (queue->Push(7, static_cast<int64_t>(next_in), record) ==
        ShmEventQueue::PushResult::kQueued) {
      ++next_in;
    }
    if (round % 3 != 0) {
      if (queue->Pop(&tag, &stamp, &payload) == ShmEventQueue::PopResult::kRecord) {
        ASSERT_EQ(stamp, static_cast<int64_t>(next_out));
        ASSERT_EQ(payload, absl::StrCat(next_out, std::string(next_out % 400, '.')));
        ++next_out;
      }
    }
  }
  while (queue->Pop(&tag, &stamp, &payload) == ShmEventQueue::PopResult::kRecord) {
    ASSERT_EQ(stamp, static_cast<int64_t>(next_out++));
  }
  EXPECT_EQ(next_in, next_out);
  EXPECT_GT(next_in, 10 * cells / 4);
}

TEST_F(EventQueueTest, ThreadsAndProcessesProduceEveryRecordInOrderPerProducer) {
  ShmEventQueue* queue = NewQueue(1 << 20);
  constexpr int kThreads = 3;
  constexpr int kProcesses = 2;
  constexpr uint32_t kPerProducer = 50000;
  // Producer p pushes records (tag p, stamp i, payload of i % 300 bytes); a full ring
  // is retried, so that every record arrives.
  auto produce = [queue](uint32_t producer) {
    for (uint32_t i = 0; i < kPerProducer; ++i) {
      const std::string payload(i % 300, static_cast<char>('A' + producer));
      while (queue->Push(producer, i, payload) != ShmEventQueue::PushResult::kQueued) {
        std::this_thread::yield();
      }
    }
  };
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      produce(kThreads + p);
      _exit(0);
    }
    children.push_back(pid);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(produce, t);

  std::map<uint32_t, int64_t> next;
  uint64_t received = 0;
  uint32_t tag = 0;
  int64_t stamp = 0;
  std::string payload;
  const uint64_t total = static_cast<uint64_t>(kThreads + kProcesses) * kPerProducer;
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (received < total && Clock::now() < deadline) {
    const ShmEventQueue::PopResult r = queue->Pop(&tag, &stamp, &payload);
    if (r != ShmEventQueue::PopResult::kRecord) {
      std::this_thread::yield();
      continue;
    }
    ASSERT_LT(tag, static_cast<uint32_t>(kThreads + kProcesses));
    ASSERT_EQ(stamp, next[tag]) << "producer " << tag;
    ASSERT_EQ(payload, std::string(static_cast<size_t>(stamp % 300), static_cast<char>('A' + tag)));
    ++next[tag];
    ++received;
  }
  for (auto& t : threads) t.join();
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(received, total);
  EXPECT_EQ(queue->abandoned_cells(), 0u);
  EXPECT_EQ(queue->corrupt_records(), 0u);
}

TEST_F(EventQueueTest, AProducerThatDiesBetweenClaimAndPublishStallsTheQueueForASecondOnly) {
  ShmEventQueue* queue = NewQueue(1 << 20);
  ASSERT_EQ(queue->Push(1, 1, "before"), ShmEventQueue::PushResult::kQueued);
  // A real process claims three cells and dies without publishing them.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    _exit(queue->ClaimWithoutPublishingForTest(3) >= 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(queue->Push(2, 2, std::string(500, 'y')), ShmEventQueue::PushResult::kQueued);
  ASSERT_EQ(queue->Push(3, 3, "after"), ShmEventQueue::PushResult::kQueued);

  uint32_t tag = 0;
  int64_t stamp = 0;
  std::string payload;
  const Clock::time_point t0 = Clock::now();
  ASSERT_EQ(queue->Pop(&tag, &stamp, &payload, t0), ShmEventQueue::PopResult::kRecord);
  EXPECT_EQ(payload, "before");
  // The dead claim is at the head now: nothing to sleep on, but not empty either.
  EXPECT_TRUE(queue->Empty());
  EXPECT_EQ(queue->Pop(&tag, &stamp, &payload, t0), ShmEventQueue::PopResult::kStalled);
  EXPECT_EQ(queue->Pop(&tag, &stamp, &payload, t0 + std::chrono::milliseconds(999)),
            ShmEventQueue::PopResult::kStalled);
  // After kAbandonAfter the consumer steps over it, and the records behind it come out.
  const Clock::time_point later = t0 + ShmEventQueue::kAbandonAfter;
  ASSERT_EQ(queue->Pop(&tag, &stamp, &payload, later), ShmEventQueue::PopResult::kRecord);
  EXPECT_EQ(tag, 2u);
  EXPECT_EQ(payload, std::string(500, 'y'));
  ASSERT_EQ(queue->Pop(&tag, &stamp, &payload, later), ShmEventQueue::PopResult::kRecord);
  EXPECT_EQ(payload, "after");
  EXPECT_EQ(queue->Pop(&tag, &stamp, &payload, later), ShmEventQueue::PopResult::kEmpty);
  EXPECT_EQ(queue->abandoned_cells(), 3u);
  // The freed cells are usable on the next laps.
  for (size_t i = 0; i < 3 * queue->capacity_cells(); ++i) {
    ASSERT_EQ(queue->Push(4, static_cast<int64_t>(i), "z"), ShmEventQueue::PushResult::kQueued);
    ASSERT_EQ(queue->Pop(&tag, &stamp, &payload, later), ShmEventQueue::PopResult::kRecord);
    ASSERT_EQ(stamp, static_cast<int64_t>(i));
  }
}

TEST_F(EventQueueTest, ConsumerInAnotherProcessContinuesWhereTheDeadOneStopped) {
  ShmEventQueue* queue = NewQueue(1 << 20);
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(queue->Push(1, i, absl::StrCat("record ", i)), ShmEventQueue::PushResult::kQueued);
  }
  // A consumer process takes four records and is killed.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    uint32_t tag = 0;
    int64_t stamp = 0;
    std::string payload;
    for (int i = 0; i < 4; ++i) {
      if (queue->Pop(&tag, &stamp, &payload) != ShmEventQueue::PopResult::kRecord) _exit(1);
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  uint32_t tag = 0;
  int64_t stamp = 0;
  std::string payload;
  for (int i = 4; i < 10; ++i) {
    ASSERT_EQ(queue->Pop(&tag, &stamp, &payload), ShmEventQueue::PopResult::kRecord);
    EXPECT_EQ(payload, absl::StrCat("record ", i));
  }
  EXPECT_EQ(queue->Pop(&tag, &stamp, &payload), ShmEventQueue::PopResult::kEmpty);
}

}  // namespace
}  // namespace sipd
