// StatSampler: samples statistics of a StatsRegistry at an interval, computes the rate
// per second of counters between samples, and keeps the recent history in memory.
// The statistics monitor without cron and MySQL: gRPC WatchStatistics
// (sipd.events.v1, one sampler per stream, no history) and the HTTP console's graphs
// (one sampler at 1 s keeping the last hour) both read statistics through it.
//
//   auto sampler = mi::StatSampler::Create(core.stats(), {.selectors = {"core:", "usrloc:"}});
//   (*sampler)->Start();                       // Take() every second on its own thread
//   for (const mi::StatValue& v : (*sampler)->Last().values) ... v.rate_per_second ...
//   for (const mi::StatPoint& p : (*sampler)->History("core:rcv_requests")) ... graph ...
//
// or without a thread, from the caller's own loop (the gRPC stream's timer):
//   mi::StatSample sample = sampler->Take();
//
// Selectors are get_statistics's ("all", "GROUP:", "NAME"), plus "GROUP:NAME" (the group
// is not checked: names are unique). They are resolved once, in Create(): statistics
// are registered before the fork and never change afterwards.
//
// Rates: a counter (StatsRegistry::StatRef::is_counter) gets delta = value - previous
// value and rate_per_second = delta / elapsed seconds; the first sample has delta 0 and
// rate 0; a counter that went down (reset_statistics) has a negative delta and rate 0.
// Levels (functions, no-reset counters) get neither. So, over any run of samples, the
// sum of delta (= rate * elapsed) of a counter that was not reset is its last value
// minus its first.
//
// Memory: history / interval points per statistic (16 bytes each) plus one time per
// point: "all" (~120 statistics) for an hour at 1 s is about 7 MB. history 0 keeps
// none.
//
// Thread-safety: every method may be called from any thread (one mutex; Take() holds it
// while it reads the statistics, History() while it copies).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/statistics.h"

namespace sipd::mi {

enum class StatKind { kCounter, kGauge };

struct StatValue {
  std::string group;
  std::string name;
  StatKind kind = StatKind::kGauge;
  uint64_t value = 0;
  // Counters only (0 for gauges): see file comment.
  int64_t delta = 0;
  double rate_per_second = 0;
  // The value differs from the previous sample's (true for every value of the first).
  bool changed = true;
};

struct StatSample {
  std::chrono::system_clock::time_point time;
  // Since the previous sample (zero for the first).
  std::chrono::nanoseconds elapsed{0};
  // 1 for the first sample Take() returned, then one more per Take().
  uint64_t seq = 0;
  // In selector order.
  std::vector<StatValue> values;
};

// One point of a statistic's history.
struct StatPoint {
  std::chrono::system_clock::time_point time;
  uint64_t value = 0;
  // As StatValue::rate_per_second.
  double rate_per_second = 0;
};

class StatSampler {
 public:
  struct Options {
    std::vector<std::string> selectors = {"all"};
    // For Start(): time between samples.
    std::chrono::milliseconds interval{1000};
    // How far back History() reaches (points kept: history / interval).
    std::chrono::seconds history{3600};
  };

  // NotFound ("Statistics Not Found", as get_statistics) when the selectors match no
  // statistic; InvalidArgument for an interval below 1 ms. `stats` must outlive the
  // sampler.
  static absl::StatusOr<std::unique_ptr<StatSampler>> Create(const StatsRegistry& stats,
                                                             Options options);
  ~StatSampler();  // Stop()
  StatSampler(const StatSampler&) = delete;
  StatSampler& operator=(const StatSampler&) = delete;

  // Reads every selected statistic now and returns the sample (also kept as Last() and
  // in the history).
  StatSample Take(std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
  // The latest sample (seq 0 and no values before the first Take()).
  StatSample Last() const;
  // "group:name" of the selected statistics, in sample order.
  std::vector<std::string> names() const;
  // The kept points of "group:name" or "name" (case-insensitive), oldest first; empty if
  // the statistic is not selected.
  std::vector<StatPoint> History(std::string_view name) const;

  // Calls Take() every interval on a thread of its own (the first at once), then
  // `on_sample` (if any) with the sample, outside the lock. Idempotent while running.
  void Start(std::function<void(const StatSample&)> on_sample = {});
  // Stops and joins that thread (at most one Take() later). Idempotent.
  void Stop();

 private:
  StatSampler(Options options, std::vector<StatsRegistry::StatRef> stats);
  // REQUIRES: mu_ held.
  void Keep(const StatSample& sample);

  const Options options_;
  const std::vector<StatsRegistry::StatRef> stats_;
  const size_t capacity_;  // points kept per statistic

  mutable std::mutex mu_;
  StatSample last_;
  std::vector<uint64_t> previous_;
  // Ring buffers: times_[i], and the points of sample i for every statistic side by side
  // at points_[i * stats_.size() ...]; `kept_` valid, next write at `head_`. Sample-major,
  // so that a sample writes one contiguous run (a few pages) instead of one cold line in
  // each statistic's own history, which made the 1 s sampling of ~300 statistics the
  // largest CPU cost of an idle HTTPD process.
  std::vector<std::chrono::system_clock::time_point> times_;
  std::vector<std::pair<uint64_t, double>> points_;
  size_t head_ = 0;
  size_t kept_ = 0;

  std::thread thread_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace sipd::mi
