// StatsHistory: every statistic sampled at a fixed interval by its owner's timer (1 s in
// httpd), the last `capacity` samples kept in memory, so a chart opened now shows the
// last hour at once: no cron, no database. Transport-neutral (no JSON, no protobuf):
// httpd's console renders it as JSON (sipd/modules/httpd/stats_sampler.h); a gRPC
// WatchStatistics can own one the same way and send its windows.
//
// Memory: 8 bytes x capacity per statistic (3600 samples: 28 KiB each); at most
// `max_stats` statistics are kept (the first ones, registry order), the rest are left
// out and truncated() says so.
//
// Thread-safety: none; one owner thread (e.g. httpd's event loop).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "registry/statistics.h"

namespace sipd::mi {

class StatsHistory {
 public:
  StatsHistory(size_t capacity, size_t max_stats) : capacity_(capacity), max_stats_(max_stats) {}

  // Reads every statistic once; `unix_ms` is the sample's wall-clock time.
  void Sample(const StatsRegistry& stats, int64_t unix_ms);

  struct Series {
    std::string group;
    std::string name;  // group:name
    std::string help;
    bool counter = false;  // resettable: charted as a rate
  };
  struct Window {
    std::vector<int64_t> times;  // unix ms, oldest first
    // One entry per selected series: its description and values (times.size() each).
    std::vector<const Series*> series;
    std::vector<std::vector<uint64_t>> values;
  };
  // The selected statistics over the last `last` samples (only those after unix time
  // `since_ms` when > 0). Selectors: "all", "group:" (a whole group) or "group:name";
  // unknown ones select nothing.
  Window Query(const std::vector<std::string>& selectors, size_t last, int64_t since_ms) const;

  // What can be queried (after the first Sample()).
  std::vector<const Series*> Catalog() const;
  size_t samples() const { return count_; }
  bool truncated() const { return truncated_; }

 private:
  struct Ring {
    Series series;
    std::vector<uint64_t> values;  // capacity_ slots
  };
  static bool Selected(const Series& series, const std::vector<std::string>& selectors);

  const size_t capacity_;
  const size_t max_stats_;
  std::vector<Ring> rings_;
  std::vector<int64_t> times_;  // capacity_ slots
  size_t head_ = 0;             // next slot to write
  size_t count_ = 0;            // filled slots
  bool truncated_ = false;
};

}  // namespace sipd::mi
