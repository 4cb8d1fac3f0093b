#include "registry/stats_history.h"

#include <algorithm>
#include <string_view>

namespace sipd::mi {

void StatsHistory::Sample(const StatsRegistry& stats, int64_t unix_ms) {
  if (times_.empty()) times_.assign(capacity_, 0);
  size_t i = 0;
  stats.ForEach([&](const StatsRegistry::StatView& stat) {
    if (i >= max_stats_) {
      truncated_ = true;
      return;
    }
    if (i == rings_.size()) {  // statistics are fixed after the fork: only the first time
      Ring ring;
      ring.series.group = std::string(stat.group);
      ring.series.name = std::string(stat.group).append(":").append(stat.name);
      ring.series.help = std::string(stat.help);
      ring.series.counter = stat.resettable();
      ring.values.assign(capacity_, 0);
      rings_.push_back(std::move(ring));
    }
    rings_[i].values[head_] = stat.value;
    ++i;
  });
  times_[head_] = unix_ms;
  head_ = (head_ + 1) % capacity_;
  count_ = std::min(count_ + 1, capacity_);
}

bool StatsHistory::Selected(const Series& series, const std::vector<std::string>& selectors) {
  for (const std::string& selector : selectors) {
    if (selector == "all" || selector == series.name) return true;
    if (!selector.empty() && selector.back() == ':' &&
        std::string_view(selector).substr(0, selector.size() - 1) == series.group) {
      return true;
    }
  }
  return false;
}

StatsHistory::Window StatsHistory::Query(const std::vector<std::string>& selectors, size_t last,
                                         int64_t since_ms) const {
  Window window;
  size_t n = std::min(last, count_);
  const size_t oldest = (head_ + capacity_ - count_) % capacity_;
  size_t first = (oldest + count_ - n) % capacity_;
  while (n > 0 && since_ms > 0 && times_[first] <= since_ms) {
    first = (first + 1) % capacity_;
    --n;
  }
  window.times.reserve(n);
  for (size_t k = 0; k < n; ++k) window.times.push_back(times_[(first + k) % capacity_]);
  for (const Ring& ring : rings_) {
    if (!Selected(ring.series, selectors)) continue;
    window.series.push_back(&ring.series);
    std::vector<uint64_t>& values = window.values.emplace_back();
    values.reserve(n);
    for (size_t k = 0; k < n; ++k) values.push_back(ring.values[(first + k) % capacity_]);
  }
  return window;
}

std::vector<const StatsHistory::Series*> StatsHistory::Catalog() const {
  std::vector<const Series*> out;
  out.reserve(rings_.size());
  for (const Ring& ring : rings_) out.push_back(&ring.series);
  return out;
}

}  // namespace sipd::mi
