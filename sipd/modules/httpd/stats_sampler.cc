#include "sipd/modules/httpd/stats_sampler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "sipd/modules/httpd/json_reply.h"

namespace sipd::httpd {

void StatsSampler::Sample(const mi::StatsRegistry& stats, int64_t unix_ms) {
  if (times_.empty()) times_.assign(capacity_, 0);
  size_t i = 0;
  stats.ForEach([&](const mi::StatsRegistry::StatView& stat) {
    if (i >= max_stats_) {
      truncated_ = true;
      return;
    }
    if (i == series_.size()) {  // statistics are fixed after the fork: only the first time
      Series s;
      s.group = std::string(stat.group);
      s.name = std::string(stat.group).append(":").append(stat.name);
      s.help = std::string(stat.help);
      s.counter = stat.resettable();
      s.values.assign(capacity_, 0);
      series_.push_back(std::move(s));
    }
    series_[i].values[head_] = stat.value;
    ++i;
  });
  times_[head_] = unix_ms;
  head_ = (head_ + 1) % capacity_;
  count_ = std::min(count_ + 1, capacity_);
}

bool StatsSampler::Selected(const Series& series, const std::vector<std::string>& selectors) const {
  for (const std::string& selector : selectors) {
    if (selector == "all" || selector == series.name) return true;
    if (!selector.empty() && selector.back() == ':' &&
        std::string_view(selector).substr(0, selector.size() - 1) == series.group) {
      return true;
    }
  }
  return false;
}

std::string StatsSampler::HistoryJson(const std::vector<std::string>& selectors, size_t last,
                                      int64_t since_ms) const {
  size_t n = std::min(last, count_);
  const size_t oldest = (head_ + capacity_ - count_) % capacity_;
  size_t first = (oldest + count_ - n) % capacity_;
  while (n > 0 && since_ms > 0 && times_[first] <= since_ms) {
    first = (first + 1) % capacity_;
    --n;
  }
  std::string out = "{\"interval_ms\":1000,\"times\":[";
  for (size_t k = 0; k < n; ++k) {
    if (k > 0) out.push_back(',');
    absl::StrAppend(&out, times_[(first + k) % capacity_]);
  }
  out.append("],\"series\":[");
  bool any = false;
  for (const Series& series : series_) {
    if (!Selected(series, selectors)) continue;
    if (any) out.push_back(',');
    any = true;
    out.append("{\"name\":");
    AppendJsonString(out, series.name);
    absl::StrAppend(&out, ",\"counter\":", series.counter ? "true" : "false", ",\"help\":");
    AppendJsonString(out, series.help);
    out.append(",\"values\":[");
    for (size_t k = 0; k < n; ++k) {
      if (k > 0) out.push_back(',');
      absl::StrAppend(&out, series.values[(first + k) % capacity_]);
    }
    out.append("]}");
  }
  absl::StrAppend(&out, "],\"truncated\":", truncated_ ? "true" : "false", "}");
  return out;
}

std::string StatsSampler::CatalogJson() const {
  std::string out = "[";
  for (size_t i = 0; i < series_.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append("{\"name\":");
    AppendJsonString(out, series_[i].name);
    absl::StrAppend(&out, ",\"counter\":", series_[i].counter ? "true" : "false", "}");
  }
  out.push_back(']');
  return out;
}

}  // namespace sipd::httpd
