#include "sipd/core/thresholds.h"

#include <unistd.h>

#include <algorithm>
#include <string_view>
#include <utility>

#include "sipd/core/proc_memory.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kPkgCheckInterval(1);

int64_t Percent(uint64_t used, uint64_t size) {
  return size == 0 ? 0 : static_cast<int64_t>(used * 100 / size);
}

// 1.11's shm_threshold_check(): nothing to raise if below the threshold and the last
// raised percent was not above it, or if at/above it and the percent is the last raised.
bool Quiet(int64_t percent, int64_t threshold, int64_t last) {
  return (percent < threshold && last <= threshold) || (percent >= threshold && last == percent);
}

// The first line of a message, for the log.
std::string_view FirstLine(std::string_view message) {
  return message.substr(0, std::min(message.find_first_of("\r\n"), size_t{200}));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ThresholdMonitor>> ThresholdMonitor::Create(
    SharedMemory& shm, const SipdEvents& events, ThresholdOptions options) {
  void* cell = shm.Allocate(sizeof(std::atomic<int64_t>));
  if (cell == nullptr) return absl::ResourceExhaustedError("no shared memory for thresholds");
  auto* last = new (cell) std::atomic<int64_t>(0);
  return std::unique_ptr<ThresholdMonitor>(new ThresholdMonitor(shm, events, options, last));
}

SipMessageHandler ThresholdMonitor::Wrap(SipMessageHandler handler) {
  if (!active()) return handler;
  // Per process (each one calls Wrap() after the fork): its pkg state.
  struct PkgState {
    Clock::time_point next_check;
    int64_t last_percent = 0;
  };
  return [this, handler = std::move(handler),
          pkg = std::make_shared<PkgState>()](const SipInbound& message) {
    const bool timed = options_.exec_msg_threshold_us > 0 || options_.pkg_threshold > 0;
    const Clock::time_point start = timed ? Clock::now() : Clock::time_point();
    handler(message);
    if (!timed && options_.shm_threshold <= 0) return;
    const Clock::time_point end = timed ? Clock::now() : Clock::time_point();
    if (options_.exec_msg_threshold_us > 0) MessageProcessed(end - start, message.bytes);
    if (options_.shm_threshold > 0) CheckShm(shm_.used_size(), shm_.total_size());
    if (options_.pkg_threshold > 0 && end >= pkg->next_check) {
      pkg->next_check = end + kPkgCheckInterval;
      absl::StatusOr<ProcMemory> memory = ReadProcMemory(getpid());
      if (memory.ok()) CheckPkg(memory->used_size, memory->total_size, pkg->last_percent);
    }
  };
}

void ThresholdMonitor::MessageProcessed(std::chrono::nanoseconds elapsed,
                                        std::string_view message) const {
  const int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count();
  if (options_.exec_msg_threshold_us <= 0 || us <= options_.exec_msg_threshold_us) return;
  spdlog::warn("threshold exceeded: msg processing took too long - {} us. Source: {}", us,
               FirstLine(message));
  events_.Threshold("msg processing", us, message.substr(0, kMaxExtraBytes));
}

void ThresholdMonitor::CheckShm(uint64_t used, uint64_t size) const {
  const int64_t threshold = options_.shm_threshold;
  if (threshold <= 0) return;
  const int64_t percent = Percent(used, size);
  int64_t last = last_shm_percent_->load(std::memory_order_relaxed);
  if (Quiet(percent, threshold, last)) return;
  // One process raises per change (1.11's event_shm_pending).
  if (!last_shm_percent_->compare_exchange_strong(last, percent, std::memory_order_relaxed)) {
    return;
  }
  spdlog::warn("shared memory usage {}% (threshold {}%): {} of {} bytes", percent, threshold, used,
               size);
  events_.ShmThreshold(percent, threshold, static_cast<int64_t>(used), static_cast<int64_t>(size));
}

void ThresholdMonitor::CheckPkg(uint64_t used, uint64_t size, int64_t& last_percent) const {
  const int64_t threshold = options_.pkg_threshold;
  if (threshold <= 0) return;
  const int64_t percent = Percent(used, size);
  if (Quiet(percent, threshold, last_percent)) return;
  last_percent = percent;
  const int pid = static_cast<int>(getpid());
  spdlog::warn("private memory usage of process {}: {}% (threshold {}%): {} of {} bytes", pid,
               percent, threshold, used, size);
  events_.PkgThreshold(percent, threshold, static_cast<int64_t>(used), static_cast<int64_t>(size),
                       pid);
}

}  // namespace sipd
