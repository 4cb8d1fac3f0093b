// LocalCache on real shared memory: values, limits, expiry with a fake clock, memory
// accounting, sharing across fork and recovery from a lock holder that died.
#include "sipd/modules/core/local_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/core-commands/test_core.h"

namespace sipd {
namespace {

using ::sipd::testing::RunInChild;
using std::chrono::seconds;

class LocalCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shm = SharedMemory::Create(8 << 20);
    ASSERT_TRUE(shm.ok()) << shm.status();
    shm_ = std::move(*shm);
  }

  std::unique_ptr<LocalCache> MakeCache(LocalCache::Options options = {}) {
    options.now_ms = [this] { return now_ms_.load(); };
    auto cache = LocalCache::Create(*shm_, std::move(options));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  std::unique_ptr<SharedMemory> shm_;
  std::atomic<int64_t> now_ms_{50'000};
};

TEST_F(LocalCacheTest, StoreFetchReplaceRemove) {
  auto cache = MakeCache();
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(absl::IsNotFound(cache->Fetch("a").status()));
  ASSERT_TRUE(cache->Store("a", "1").ok());
  ASSERT_TRUE(cache->Store("b", std::string("bin\0ary", 7)).ok());
  EXPECT_EQ(*cache->Fetch("a"), "1");
  EXPECT_EQ(*cache->Fetch("b"), std::string("bin\0ary", 7));
  ASSERT_TRUE(cache->Store("a", "a much longer value than before").ok());
  EXPECT_EQ(*cache->Fetch("a"), "a much longer value than before");
  EXPECT_EQ(cache->size(), 2u);
  EXPECT_TRUE(cache->Remove("a").ok());
  EXPECT_TRUE(absl::IsNotFound(cache->Remove("a")));
  EXPECT_TRUE(absl::IsNotFound(cache->Fetch("a").status()));
  EXPECT_EQ(*cache->Fetch("b"), std::string("bin\0ary", 7));
  EXPECT_EQ(cache->size(), 1u);
}

TEST_F(LocalCacheTest, CollidingKeysInOneBucket) {
  LocalCache::Options options;
  options.buckets = 1;
  auto cache = MakeCache(options);
  ASSERT_NE(cache, nullptr);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(cache->Store(absl::StrCat("k", i), "v").ok());
  for (int i = 0; i < 50; i += 2) ASSERT_TRUE(cache->Remove(absl::StrCat("k", i)).ok());
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(cache->Fetch(absl::StrCat("k", i)).ok(), i % 2 == 1) << i;
  }
  EXPECT_EQ(cache->size(), 25u);
}

TEST_F(LocalCacheTest, MemoryIsReturnedAndCounted) {
  auto cache = MakeCache();
  ASSERT_NE(cache, nullptr);
  const size_t free_before = shm_->free_size();
  ASSERT_TRUE(cache->Store("a", std::string(1000, 'x')).ok());
  ASSERT_TRUE(cache->Store("b", "short", seconds(1)).ok());
  EXPECT_LT(shm_->free_size(), free_before);
  EXPECT_GE(cache->bytes(), 1000u + 5u + 2u);
  ASSERT_TRUE(cache->Store("a", "y").ok());  // replacing frees the old block
  ASSERT_TRUE(cache->Remove("a").ok());
  now_ms_ += 1000;
  EXPECT_EQ(cache->Expire(), 1u);
  EXPECT_EQ(cache->size(), 0u);
  EXPECT_EQ(cache->bytes(), 0u);
  EXPECT_EQ(shm_->free_size(), free_before);
}

TEST_F(LocalCacheTest, InvalidArgumentsAndLimits) {
  LocalCache::Options options;
  options.max_attr_size = 8;
  options.max_value_size = 16;
  options.max_entries = 3;
  auto cache = MakeCache(options);
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(absl::IsInvalidArgument(cache->Store("", "v")));
  EXPECT_TRUE(absl::IsInvalidArgument(cache->Store("123456789", "v")));
  EXPECT_TRUE(absl::IsInvalidArgument(cache->Store("a", std::string(17, 'v'))));
  EXPECT_TRUE(absl::IsInvalidArgument(cache->Store("a", "v", seconds(-1))));
  EXPECT_TRUE(cache->Store("12345678", std::string(16, 'v')).ok());
  EXPECT_TRUE(cache->Store("b", "v").ok());
  EXPECT_TRUE(cache->Store("c", "v").ok());
  EXPECT_TRUE(absl::IsResourceExhausted(cache->Store("d", "v")));
  EXPECT_TRUE(cache->Store("c", "replaced").ok());
  EXPECT_EQ(cache->size(), 3u);
}

TEST_F(LocalCacheTest, ByteLimitKeepsTheOldValue) {
  LocalCache::Options options;
  options.max_bytes = 400;
  auto cache = MakeCache(options);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->Store("a", "small").ok());
  EXPECT_TRUE(absl::IsResourceExhausted(cache->Store("a", std::string(500, 'x'))));
  EXPECT_EQ(*cache->Fetch("a"), "small");
  EXPECT_TRUE(absl::IsResourceExhausted(cache->Store("b", std::string(500, 'x'))));
  EXPECT_EQ(cache->size(), 1u);
}

TEST_F(LocalCacheTest, SharedMemoryExhaustionIsAnError) {
  auto small = SharedMemory::Create(256 << 10);
  ASSERT_TRUE(small.ok());
  LocalCache::Options options;
  options.max_bytes = 1 << 30;  // let the heap itself run out
  options.now_ms = [] { return int64_t{0}; };
  auto cache = LocalCache::Create(**small, options);
  ASSERT_TRUE(cache.ok());
  absl::Status status;
  int stored = 0;
  for (; stored < 1000 && status.ok(); ++stored) {
    status = (*cache)->Store(absl::StrCat("k", stored), std::string(60 * 1024, 'x'));
  }
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_GT(stored, 1);
}

TEST_F(LocalCacheTest, ExpiryIsExactAndSweepFreesOnlyExpired) {
  auto cache = MakeCache();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->Store("two", "2", seconds(2)).ok());
  ASSERT_TRUE(cache->Store("never", "n").ok());
  ASSERT_TRUE(cache->Store("five", "5", seconds(5)).ok());
  now_ms_ += 1999;
  EXPECT_TRUE(cache->Fetch("two").ok());
  EXPECT_EQ(cache->Expire(), 0u);
  now_ms_ += 1;
  EXPECT_TRUE(absl::IsNotFound(cache->Fetch("two").status()));
  EXPECT_EQ(cache->Expire(), 1u);
  EXPECT_EQ(cache->size(), 2u);
  // Re-storing without expiry makes an entry permanent.
  ASSERT_TRUE(cache->Store("five", "5").ok());
  now_ms_ += 100'000;
  EXPECT_EQ(cache->Expire(), 0u);
  EXPECT_EQ(*cache->Fetch("five"), "5");
  EXPECT_EQ(*cache->Fetch("never"), "n");
}

TEST_F(LocalCacheTest, VisibleInForkedChildAndBack) {
  auto cache = MakeCache();
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->Store("parent", "P").ok());
  int rc = RunInChild([&cache] {
    auto v = cache->Fetch("parent");
    if (!v.ok() || *v != "P") return 1;
    return cache->Store("child", "C").ok() ? 0 : 2;
  });
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(*cache->Fetch("child"), "C");
  EXPECT_EQ(cache->size(), 2u);
}

TEST_F(LocalCacheTest, SurvivesALockHolderThatDies) {
  LocalCache::Options options;
  options.buckets = 4;
  auto cache = MakeCache(options);
  ASSERT_NE(cache, nullptr);
  ASSERT_TRUE(cache->Store("victim", "before").ok());
  ASSERT_TRUE(cache->Store("other", "o").ok());
  // The child takes the bucket lock of "victim" and exits without releasing it.
  int rc = RunInChild([&cache] {
    cache->BucketMutexForTesting("victim").Lock();
    return 0;
  });
  ASSERT_EQ(rc, 0);
  // No deadlock: the next locker recovers the robust mutex and repairs the bucket.
  EXPECT_EQ(*cache->Fetch("victim"), "before");
  ASSERT_TRUE(cache->Store("victim", "after").ok());
  EXPECT_EQ(*cache->Fetch("victim"), "after");
  EXPECT_EQ(cache->Expire(), 0u);  // performs the flagged recount
  EXPECT_EQ(cache->size(), 2u);
  // And the lock works normally afterwards, also from another process.
  rc = RunInChild([&cache] { return cache->Store("victim", "child").ok() ? 0 : 1; });
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(*cache->Fetch("victim"), "child");
}

TEST_F(LocalCacheTest, RejectsBadOptions) {
  LocalCache::Options options;
  options.buckets = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(LocalCache::Create(*shm_, options).status()));
}

}  // namespace
}  // namespace sipd
