#include "sipd/core/timer.h"

#include <time.h>

#include <algorithm>

#include "sipd/api/module.h"
#include "spdlog/spdlog.h"

namespace sipd {

void TimerList::Add(std::string label, std::chrono::milliseconds interval,
                    std::function<void()> fn) {
  timers_.push_back(
      Timer{std::move(label), std::max(interval, std::chrono::milliseconds(1)), std::move(fn), {}});
}

std::string TimerList::ProcessType() const {
  return timers_.empty() ? "timer" : "timer: " + timers_.back().label;
}

void TimerList::Run(Core& core) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kMaxSleep = std::chrono::milliseconds(200);
  const Clock::time_point start = Clock::now();
  for (Timer& t : timers_) t.next = start + t.interval;

  while (!core.stopping()) {
    core.SyncLogLevel();
    Clock::time_point now = Clock::now();
    for (Timer& t : timers_) {
      if (now < t.next) continue;
      try {
        t.fn();
      } catch (const std::exception& e) {
        spdlog::error("timer {} failed: {}", t.label, e.what());
      } catch (...) {
        spdlog::error("timer {} failed with an unknown exception", t.label);
      }
      now = Clock::now();
      t.next += t.interval;
      if (t.next <= now) t.next = now + t.interval;
      if (core.stopping()) return;
    }
    Clock::time_point wake = now + kMaxSleep;
    for (const Timer& t : timers_) wake = std::min(wake, t.next);
    const auto sleep = std::chrono::duration_cast<std::chrono::nanoseconds>(wake - now);
    if (sleep.count() > 0) {
      timespec ts{static_cast<time_t>(sleep.count() / 1000000000),
                  static_cast<long>(sleep.count() % 1000000000)};
      nanosleep(&ts, nullptr);  // EINTR (SIGTERM) just ends the nap early
    }
  }
}

}  // namespace sipd
