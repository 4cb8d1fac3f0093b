// The timer process body: runs the callbacks registered with Core::AddTimer at their
// intervals on the steady clock.
//
// Thread/process-safety: callbacks are added in the attendant before the fork (Add is not
// synchronised); Run executes in the single-threaded timer process.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace sipd {

class Core;

class TimerList {
 public:
  void Add(std::string label, std::chrono::milliseconds interval, std::function<void()> fn);

  // "timer: LABEL" of the most recently added timer, or "timer" when there is none.
  std::string ProcessType() const;
  size_t size() const { return timers_.size(); }

  // Runs due callbacks until core.stopping(); wakes at least every 200 ms and calls
  // core.SyncLogLevel(). A callback that throws is logged; it keeps its schedule.
  // A callback that overruns makes missed runs collapse into one (no catch-up burst).
  void Run(Core& core);

 private:
  struct Timer {
    std::string label;
    std::chrono::milliseconds interval;
    std::function<void()> fn;
    std::chrono::steady_clock::time_point next;
  };
  std::vector<Timer> timers_;
};

}  // namespace sipd
