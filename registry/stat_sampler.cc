#include "registry/stat_sampler.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace sipd::mi {
namespace {

// "GROUP:NAME" -> "NAME" (statistics are looked up by bare name, spec 7.2).
std::string BareName(const std::string& selector) {
  const size_t colon = selector.find(':');
  if (colon == std::string::npos || colon + 1 == selector.size()) return selector;
  return selector.substr(colon + 1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<StatSampler>> StatSampler::Create(const StatsRegistry& stats,
                                                                 Options options) {
  if (options.interval < std::chrono::milliseconds(1)) {
    return absl::InvalidArgumentError("the sampling interval must be at least 1 ms");
  }
  if (options.selectors.empty()) options.selectors = {"all"};
  std::vector<std::string> bare;
  for (const std::string& selector : options.selectors) bare.push_back(BareName(selector));
  std::vector<StatsRegistry::StatRef> selected = stats.Select(bare);
  if (selected.empty()) return absl::NotFoundError("Statistics Not Found");
  return std::unique_ptr<StatSampler>(new StatSampler(std::move(options), std::move(selected)));
}

StatSampler::StatSampler(Options options, std::vector<StatsRegistry::StatRef> stats)
    : options_(std::move(options)),
      stats_(std::move(stats)),
      capacity_(static_cast<size_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(options_.history).count() /
          options_.interval.count())),
      previous_(stats_.size(), 0),
      times_(capacity_),
      points_(stats_.size() * capacity_) {}

StatSampler::~StatSampler() { Stop(); }

StatSample StatSampler::Take(std::chrono::system_clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  StatSample sample;
  sample.time = now;
  sample.seq = last_.seq + 1;
  const bool first = last_.seq == 0;
  if (!first) sample.elapsed = std::max(std::chrono::nanoseconds(0), now - last_.time);
  const double seconds = std::chrono::duration<double>(sample.elapsed).count();
  sample.values.reserve(stats_.size());
  for (size_t i = 0; i < stats_.size(); ++i) {
    const StatsRegistry::StatRef& stat = stats_[i];
    StatValue& v = sample.values.emplace_back();
    v.group = stat.group();
    v.name = stat.name();
    v.kind = stat.is_counter() ? StatKind::kCounter : StatKind::kGauge;
    v.value = stat.Read();
    v.changed = first || v.value != previous_[i];
    if (v.kind == StatKind::kCounter && !first) {
      v.delta = static_cast<int64_t>(v.value - previous_[i]);
      if (v.delta > 0 && seconds > 0) v.rate_per_second = static_cast<double>(v.delta) / seconds;
    }
    previous_[i] = v.value;
  }
  Keep(sample);
  last_ = sample;
  return sample;
}

void StatSampler::Keep(const StatSample& sample) {
  if (capacity_ == 0) return;
  times_[head_] = sample.time;
  const size_t row = head_ * stats_.size();
  for (size_t i = 0; i < stats_.size(); ++i) {
    points_[row + i] = {sample.values[i].value, sample.values[i].rate_per_second};
  }
  head_ = (head_ + 1) % capacity_;
  kept_ = std::min(kept_ + 1, capacity_);
}

StatSample StatSampler::Last() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

std::vector<std::string> StatSampler::names() const {
  std::vector<std::string> out;
  for (const StatsRegistry::StatRef& stat : stats_) {
    out.push_back(absl::StrCat(stat.group(), ":", stat.name()));
  }
  return out;
}

std::vector<StatPoint> StatSampler::History(std::string_view name) const {
  const std::string bare = BareName(std::string(name));
  size_t index = stats_.size();
  for (size_t i = 0; i < stats_.size(); ++i) {
    if (absl::EqualsIgnoreCase(stats_[i].name(), bare)) {
      index = i;
      break;
    }
  }
  std::vector<StatPoint> out;
  if (index == stats_.size()) return out;
  std::lock_guard<std::mutex> lock(mu_);
  out.reserve(kept_);
  const size_t oldest = (head_ + capacity_ - kept_) % std::max<size_t>(capacity_, 1);
  for (size_t k = 0; k < kept_; ++k) {
    const size_t at = (oldest + k) % capacity_;
    const std::pair<uint64_t, double>& point = points_[at * stats_.size() + index];
    out.push_back(StatPoint{times_[at], point.first, point.second});
  }
  return out;
}

void StatSampler::Start(std::function<void(const StatSample&)> on_sample) {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this, on_sample = std::move(on_sample)] {
    auto next = std::chrono::steady_clock::now();
    while (true) {
      StatSample sample = Take();
      if (on_sample) on_sample(sample);
      next += options_.interval;
      std::unique_lock<std::mutex> wait(mu_);
      if (wake_.wait_until(wait, next, [this] { return stopping_; })) return;
    }
  });
}

void StatSampler::Stop() {
  std::thread thread;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    thread = std::move(thread_);
  }
  wake_.notify_all();
  if (thread.joinable()) thread.join();
}

}  // namespace sipd::mi
