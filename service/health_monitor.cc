#include "service/health_monitor.h"

#include <exception>
#include <utility>

#include "spdlog/spdlog.h"

namespace sipd::service {

HealthMonitor::HealthMonitor(HealthService& health, std::vector<mi::HealthCheck> checks,
                             std::vector<std::string> services, std::chrono::milliseconds interval)
    : health_(health),
      checks_(std::move(checks)),
      services_(std::move(services)),
      interval_(interval) {}

void HealthMonitor::Start() {
  for (const std::string& service : services_) health_.SetServingStatus(service, true);
  bool serving = RunOnce();
  thread_ = std::thread([this, serving]() mutable {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      wake_.wait_for(lock, serving ? interval_ : interval_ / 10, [this] { return stop_; });
      if (stop_) break;
      lock.unlock();
      serving = RunOnce();
      lock.lock();
    }
  });
}

void HealthMonitor::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool HealthMonitor::RunOnce() {
  // name -> the first failure (OK if every check of that name passed).
  std::map<std::string, absl::Status> results;
  for (const mi::HealthCheck& check : checks_) {
    absl::Status status;
    try {
      status = check.check();
    } catch (const std::exception& e) {
      status = absl::InternalError(e.what());
    }
    auto [it, inserted] = results.emplace(check.name, status);
    if (!inserted && it->second.ok()) it->second = status;
  }
  bool all = true;
  for (const auto& [name, status] : results) {
    const bool serving = status.ok();
    all = all && serving;
    auto last = last_.find(name);
    if (last == last_.end() || last->second != serving) {
      if (serving) {
        spdlog::info("mi_grpc: health of {}: SERVING", name);
      } else {
        spdlog::warn("mi_grpc: health of {}: NOT_SERVING ({})", name,
                     std::string(status.message()));
      }
      last_[name] = serving;
    }
    health_.SetServingStatus(name, serving);
  }
  health_.SetServingStatus("", all);
  return all;
}

}  // namespace sipd::service
