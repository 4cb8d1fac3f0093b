// StatsSampler: every statistic sampled at a fixed interval (1 s in httpd), the last
// `capacity` samples kept in memory, so a chart opened now shows the last hour at once:
// no cron, no database. Built to be shared: anything that can call Sample() on a timer
// and wants history (httpd's console, a gRPC WatchStatistics) can own one.
//
// Memory: 8 bytes x capacity per statistic (3600 samples: 28 KiB each); at most
// `max_stats` statistics are kept (the first ones, registry order), the rest are left
// out of the history and said so in the JSON ("truncated": true).
//
// Thread-safety: none; one owner thread (httpd's event loop).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "registry/statistics.h"

namespace sipd::httpd {

class StatsSampler {
 public:
  StatsSampler(size_t capacity, size_t max_stats) : capacity_(capacity), max_stats_(max_stats) {}

  // Reads every statistic once; `unix_ms` is the sample's wall-clock time.
  void Sample(const mi::StatsRegistry& stats, int64_t unix_ms);

  // JSON for the console:
  //   {"interval_ms":1000,"times":[unix_ms,...],"series":[{"name":"core:rcv_requests",
  //    "counter":true,"help":"...","values":[...]}],"truncated":false}
  // `selectors`: "all", "group:" (a whole group) or "group:name"; values at most the last
  // `last` samples (and only after unix time `since_ms` when > 0). Unknown selectors
  // select nothing.
  std::string HistoryJson(const std::vector<std::string>& selectors, size_t last,
                          int64_t since_ms) const;
  // JSON list of what can be charted: [{"name":"core:rcv_requests","counter":true},...]
  std::string CatalogJson() const;

  size_t samples() const { return count_; }

 private:
  struct Series {
    std::string group;
    std::string name;  // group:name
    std::string help;
    bool counter = false;
    std::vector<uint64_t> values;  // ring, capacity_
  };
  bool Selected(const Series& series, const std::vector<std::string>& selectors) const;

  const size_t capacity_;
  const size_t max_stats_;
  std::vector<Series> series_;
  std::vector<int64_t> times_;  // ring, capacity_
  size_t head_ = 0;             // next slot to write
  size_t count_ = 0;            // filled slots
  bool truncated_ = false;
};

}  // namespace sipd::httpd
