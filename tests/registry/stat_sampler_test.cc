#include "registry/stat_sampler.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <mutex>

namespace sipd::mi {
namespace {

using namespace std::chrono_literals;
using Time = std::chrono::system_clock::time_point;

class StatSamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rcv_ = *stats_.AddCounter("core", "rcv_requests");
    ASSERT_TRUE(stats_.AddFunction("core", "timestamp", [this] { return level_.load(); }).ok());
    users_ = *stats_.AddCounter("usrloc", "location-users", kStatNoReset);
  }

  std::unique_ptr<StatSampler> Make(StatSampler::Options options) {
    auto sampler = StatSampler::Create(stats_, std::move(options));
    EXPECT_TRUE(sampler.ok()) << sampler.status();
    return sampler.ok() ? std::move(*sampler) : nullptr;
  }

  std::array<std::atomic<uint64_t>, 8> storage_{};
  StatsRegistry stats_{storage_};
  Counter rcv_, users_;
  std::atomic<uint64_t> level_{7};
  const Time t0_ = Time(std::chrono::seconds(1700000000));
};

TEST_F(StatSamplerTest, SelectorsAsGetStatisticsEachOnceInOrder) {
  auto sampler = Make({.selectors = {"usrloc:", "core:rcv_requests", "all"}});
  ASSERT_NE(sampler, nullptr);
  EXPECT_EQ(sampler->names(), (std::vector<std::string>{"usrloc:location-users",
                                                        "core:rcv_requests", "core:timestamp"}));
  EXPECT_EQ(StatSampler::Create(stats_, {.selectors = {"nope", "nogroup:"}}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StatSamplerTest, CountersGetDeltasAndRatesLevelsDoNot) {
  auto sampler = Make({.selectors = {"all"}});
  ASSERT_NE(sampler, nullptr);
  rcv_.Inc(100);
  users_.Inc(5);
  StatSample first = sampler->Take(t0_);
  ASSERT_EQ(first.values.size(), 3u);
  EXPECT_EQ(first.seq, 1u);
  EXPECT_EQ(first.elapsed, 0ns);
  EXPECT_EQ(first.values[0].kind, StatKind::kCounter);
  EXPECT_EQ(first.values[0].value, 100u);
  EXPECT_EQ(first.values[0].delta, 0);
  EXPECT_EQ(first.values[0].rate_per_second, 0);
  EXPECT_EQ(first.values[1].kind, StatKind::kGauge);
  EXPECT_EQ(first.values[2].kind, StatKind::kGauge);  // a no-reset counter is a level
  for (const StatValue& v : first.values) EXPECT_TRUE(v.changed);

  rcv_.Inc(50);
  users_.Inc(2);
  StatSample second = sampler->Take(t0_ + 500ms);
  EXPECT_EQ(second.seq, 2u);
  EXPECT_EQ(second.elapsed, 500ms);
  EXPECT_EQ(second.values[0].delta, 50);
  EXPECT_DOUBLE_EQ(second.values[0].rate_per_second, 100.0);
  EXPECT_TRUE(second.values[0].changed);
  EXPECT_FALSE(second.values[1].changed);  // timestamp function unchanged
  EXPECT_EQ(second.values[2].value, 7u);
  EXPECT_EQ(second.values[2].delta, 0);
  EXPECT_EQ(second.values[2].rate_per_second, 0);

  rcv_.Set(10);  // reset_statistics, then 10 more
  StatSample third = sampler->Take(t0_ + 1500ms);
  EXPECT_EQ(third.values[0].delta, -140);
  EXPECT_EQ(third.values[0].rate_per_second, 0);
}

TEST_F(StatSamplerTest, HistoryKeepsTheLastPointsOldestFirst) {
  auto sampler = Make({.selectors = {"rcv_requests"}, .interval = 1000ms, .history = 3s});
  ASSERT_NE(sampler, nullptr);
  EXPECT_TRUE(sampler->History("core:rcv_requests").empty());
  for (int i = 0; i < 5; ++i) {
    rcv_.Inc(10 * (i + 1));
    sampler->Take(t0_ + std::chrono::seconds(i));
  }
  const std::vector<StatPoint> points = sampler->History("CORE:RCV_REQUESTS");
  ASSERT_EQ(points.size(), 3u);
  EXPECT_EQ(points[0].time, t0_ + 2s);
  EXPECT_EQ(points[0].value, 60u);
  EXPECT_DOUBLE_EQ(points[0].rate_per_second, 30.0);
  EXPECT_EQ(points[2].time, t0_ + 4s);
  EXPECT_EQ(points[2].value, 150u);
  EXPECT_DOUBLE_EQ(points[2].rate_per_second, 50.0);
  EXPECT_TRUE(sampler->History("timestamp").empty());  // not selected
  EXPECT_EQ(sampler->Last().seq, 5u);
}

TEST_F(StatSamplerTest, EachStatisticKeepsItsOwnHistory) {
  auto sampler =
      Make({.selectors = {"usrloc:", "core:rcv_requests"}, .interval = 1000ms, .history = 2s});
  ASSERT_NE(sampler, nullptr);
  for (int i = 0; i < 3; ++i) {
    rcv_.Inc(1);
    users_.Inc(100);
    sampler->Take(t0_ + std::chrono::seconds(i));
  }
  const std::vector<StatPoint> users = sampler->History("usrloc:location-users");
  const std::vector<StatPoint> rcv = sampler->History("core:rcv_requests");
  ASSERT_EQ(users.size(), 2u);
  ASSERT_EQ(rcv.size(), 2u);
  EXPECT_EQ(users[0].value, 200u);
  EXPECT_EQ(users[1].value, 300u);
  EXPECT_EQ(rcv[0].value, 2u);
  EXPECT_EQ(rcv[1].value, 3u);
  EXPECT_EQ(rcv[1].time, t0_ + 2s);
}

TEST_F(StatSamplerTest, SumOfDeltasIsTheCounterChange) {
  auto sampler = Make({.selectors = {"core:"}, .history = 0s});
  ASSERT_NE(sampler, nullptr);
  const uint64_t start = sampler->Take(t0_).values[0].value;
  double from_rates = 0;
  int64_t from_deltas = 0;
  for (int i = 1; i <= 20; ++i) {
    rcv_.Inc(static_cast<uint64_t>(i * 7));
    const StatSample s = sampler->Take(t0_ + std::chrono::milliseconds(i * 137));
    from_deltas += s.values[0].delta;
    from_rates += s.values[0].rate_per_second * std::chrono::duration<double>(s.elapsed).count();
  }
  EXPECT_EQ(static_cast<uint64_t>(from_deltas), rcv_.value() - start);
  EXPECT_NEAR(from_rates, static_cast<double>(rcv_.value() - start), 1e-6);
}

TEST_F(StatSamplerTest, StartSamplesOnItsOwnThreadUntilStopped) {
  auto sampler = Make({.selectors = {"rcv_requests"}, .interval = 10ms, .history = 1s});
  ASSERT_NE(sampler, nullptr);
  std::mutex mu;
  std::condition_variable cv;
  uint64_t seen = 0;
  sampler->Start([&](const StatSample& sample) {
    std::lock_guard<std::mutex> lock(mu);
    seen = sample.seq;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return seen >= 3; }));
  }
  sampler->Stop();
  const uint64_t after_stop = sampler->Last().seq;
  EXPECT_GE(after_stop, 3u);
  EXPECT_EQ(sampler->Last().seq, after_stop);
  EXPECT_EQ(sampler->History("rcv_requests").size(), std::min<size_t>(after_stop, 100));
}

}  // namespace
}  // namespace sipd::mi
