// SharedMemory's allocation path: the block cache in front of the heap (sipd/core/shm.h).
#include "sipd/core/shm.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

constexpr size_t kHeap = 8u * 1024 * 1024;

std::unique_ptr<SharedMemory> MakeHeap() {
  auto shm = SharedMemory::Create(kHeap);
  EXPECT_TRUE(shm.ok()) << shm.status();
  return shm.ok() ? std::move(*shm) : nullptr;
}

TEST(SharedMemoryTest, BlocksOfEverySizeAreAlignedWritableAndAllReturned) {
  auto shm = MakeHeap();
  ASSERT_NE(shm, nullptr);
  const size_t free_before = shm->free_size();
  const size_t fragments_before = shm->fragments();
  std::vector<std::pair<char*, size_t>> blocks;
  for (size_t size = 0; size <= 4200; size += 7) {
    auto* p = static_cast<char*>(shm->Allocate(size));
    ASSERT_NE(p, nullptr) << size;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << size;
    std::memset(p, static_cast<int>(size & 0xff), size);
    blocks.emplace_back(p, size);
  }
  EXPECT_LT(shm->free_size(), free_before);
  EXPECT_EQ(shm->fragments(), fragments_before + blocks.size());
  for (auto [p, size] : blocks) {
    for (size_t i = 0; i < size; ++i) ASSERT_EQ(static_cast<unsigned char>(p[i]), size & 0xff);
    shm->Deallocate(p);
  }
  // Cached blocks count as free, to the byte.
  EXPECT_GT(shm->cached_size(), 0u);
  EXPECT_EQ(shm->free_size(), free_before);
  EXPECT_EQ(shm->fragments(), fragments_before);
  shm->ReleaseCache();
  EXPECT_EQ(shm->cached_size(), 0u);
  EXPECT_EQ(shm->free_size(), free_before);
}

TEST(SharedMemoryTest, AFreedBlockServesTheNextAllocationOfItsSizeClass) {
  auto shm = MakeHeap();
  ASSERT_NE(shm, nullptr);
  void* first = shm->Allocate(100);
  ASSERT_NE(first, nullptr);
  shm->Deallocate(first);
  const size_t cached = shm->cached_size();
  EXPECT_GE(cached, 100u);
  // 90 and 100 bytes share a class (32-byte steps, header included); 200 does not.
  void* other_class = shm->Allocate(200);
  EXPECT_NE(other_class, first);
  EXPECT_EQ(shm->cached_size(), cached);
  void* same_class = shm->Allocate(90);
  EXPECT_EQ(same_class, first);
  EXPECT_EQ(shm->cached_size(), 0u);
  shm->Deallocate(same_class);
  shm->Deallocate(other_class);
  // Large blocks bypass the cache.
  const size_t before = shm->cached_size();
  void* large = shm->Allocate(SharedMemory::kMaxCachedBytes + 1);
  ASSERT_NE(large, nullptr);
  shm->Deallocate(large);
  EXPECT_EQ(shm->cached_size(), before);
}

TEST(SharedMemoryTest, TheCacheKeepsAtMostASixteenthOfTheHeap) {
  auto shm = MakeHeap();
  ASSERT_NE(shm, nullptr);
  const size_t free_before = shm->free_size();
  std::vector<void*> blocks;
  for (size_t total = 0; total < kHeap / 4; total += 1000) {
    blocks.push_back(shm->Allocate(1000));
    ASSERT_NE(blocks.back(), nullptr);
  }
  for (void* p : blocks) shm->Deallocate(p);
  EXPECT_GT(shm->cached_size(), kHeap / 16 - 2048);
  EXPECT_LE(shm->cached_size(), shm->total_size() / 16);
  EXPECT_EQ(shm->free_size(), free_before);
}

TEST(SharedMemoryTest, AFullHeapTakesTheCachedBlocksBack) {
  auto shm = MakeHeap();
  ASSERT_NE(shm, nullptr);
  const size_t free_before = shm->free_size();
  // Fill the heap with small blocks, free them (the cache keeps its share), then fill it
  // with blocks of another class: without the cache's blocks given back, a sixteenth of
  // the heap would be missing.
  std::vector<void*> blocks;
  while (void* p = shm->Allocate(40)) blocks.push_back(p);
  ASSERT_GT(blocks.size(), 1000u);
  for (void* p : blocks) shm->Deallocate(p);
  ASSERT_GT(shm->cached_size(), 0u);
  blocks.clear();
  size_t got = 0;
  while (void* p = shm->Allocate(900)) {
    blocks.push_back(p);
    got += 900;
  }
  EXPECT_EQ(shm->cached_size(), 0u);
  EXPECT_GT(got, free_before * 9 / 10);
  for (void* p : blocks) shm->Deallocate(p);
  EXPECT_EQ(shm->free_size(), free_before);
}

// Three processes allocate and free blocks of every cached class at once, each marking
// its blocks: a block handed to two owners, or lost, shows up as a wrong mark or as
// memory missing at the end.
TEST(SharedMemoryTest, ProcessesShareTheCacheWithoutLosingOrSharingABlock) {
  auto shm = MakeHeap();
  ASSERT_NE(shm, nullptr);
  const size_t free_before = shm->free_size();
  const size_t fragments_before = shm->fragments();
  auto churn = [&shm](uint32_t seed) {
    std::mt19937 random(seed);
    std::vector<std::pair<uint32_t*, size_t>> held;
    int bad = 0;
    for (int i = 0; i < 200000; ++i) {
      if (held.size() < 64 && (held.empty() || random() % 2 == 0)) {
        const size_t words = 1 + random() % (SharedMemory::kMaxCachedBytes / 4);
        auto* p = static_cast<uint32_t*>(shm->Allocate(words * 4));
        if (p == nullptr) return 2;
        for (size_t w = 0; w < words; ++w) p[w] = seed;
        held.emplace_back(p, words);
      } else {
        const size_t k = random() % held.size();
        auto [p, words] = held[k];
        for (size_t w = 0; w < words; ++w) bad += p[w] != seed;
        shm->Deallocate(p);
        held[k] = held.back();
        held.pop_back();
      }
    }
    for (auto [p, words] : held) {
      for (size_t w = 0; w < words; ++w) bad += p[w] != seed;
      shm->Deallocate(p);
    }
    return bad == 0 ? 0 : 1;
  };
  std::vector<pid_t> children;
  for (uint32_t seed : {11u, 22u}) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(churn(seed));
    children.push_back(pid);
  }
  EXPECT_EQ(churn(33), 0);
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  EXPECT_EQ(shm->fragments(), fragments_before);
  EXPECT_EQ(shm->free_size(), free_before);
}

// A process killed at any point inside Allocate() or Deallocate() leaves the cache's
// lists whole: the others go on, and everything but the blocks the dead held (and at
// most one block each was moving) comes back. The churn stays inside the cache (one
// class, filled beforehand, never past its limit), because Boost's own heap lock is not
// robust (shm.h).
TEST(SharedMemoryTest, AProcessKilledMidOperationLeavesTheCacheWhole) {
  auto shm = MakeHeap();
  ASSERT_NE(shm, nullptr);
  constexpr int kFilled = 1000;
  constexpr int kHeldByEach = 8;
  std::set<void*> filled;
  for (int i = 0; i < kFilled; ++i) filled.insert(shm->Allocate(100));
  for (void* p : filled) shm->Deallocate(p);
  ASSERT_GT(shm->cached_size(), 0u);
  for (int round = 0; round < 20; ++round) {
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    std::vector<pid_t> children;
    for (int c = 0; c < 3; ++c) {
      const pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        std::vector<void*> held;
        for (uint64_t i = 0;; ++i) {
          if (held.size() < kHeldByEach && (held.empty() || (i * 2654435761u) % 3 != 0)) {
            held.push_back(shm->Allocate(100));
          } else {
            shm->Deallocate(held.back());
            held.pop_back();
          }
          if (i == 10000) (void)!write(ready[1], "r", 1);  // busy: kill me at any moment
        }
      }
      children.push_back(pid);
    }
    char byte;
    for (size_t c = 0; c < children.size(); ++c) ASSERT_EQ(read(ready[0], &byte, 1), 1);
    for (pid_t pid : children) kill(pid, SIGKILL);
    for (pid_t pid : children) ASSERT_EQ(waitpid(pid, nullptr, 0), pid);
    close(ready[0]);
    close(ready[1]);
  }
  // The lists are whole: every block still in them comes out, once, until the first
  // block from the heap (one the cache was not filled with).
  std::set<void*> left;
  for (;;) {
    void* p = shm->Allocate(100);
    if (!filled.contains(p)) {
      shm->Deallocate(p);
      break;
    }
    ASSERT_TRUE(left.insert(p).second);
  }
  // 60 processes died holding up to kHeldByEach blocks and moving at most one more.
  EXPECT_LE(left.size(), static_cast<size_t>(kFilled));
  EXPECT_GE(left.size(), static_cast<size_t>(kFilled - 60 * (kHeldByEach + 1)));
  for (void* p : left) shm->Deallocate(p);
}

TEST(SharedMemoryDeathTest, FreeingABlockThatAllocateDidNotHandOutAborts) {
  auto shm = MakeHeap();
  ASSERT_NE(shm, nullptr);
  auto* p = static_cast<char*>(shm->Allocate(64));
  ASSERT_NE(p, nullptr);
  std::memset(p, 0, 64);
  EXPECT_DEATH(
      {
        spdlog::set_default_logger(spdlog::stderr_logger_st("shm_test"));
        shm->Deallocate(p + 16);
      },
      "did not hand out");
  shm->Deallocate(p);
}

}  // namespace
}  // namespace sipd
