// A stop request a test thread can wait on: pacing loops (a slow reader taking 1 KB a
// second, a client sending every 10 ms) wait for Stop() with their pace as the timeout,
// so they end at once when the test is done instead of sleeping through it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace sipd::testing {

class StopSignal {
 public:
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
  }
  bool stopped() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stopped_;
  }
  // Waits at most `pace` for Stop(); true once stopped.
  template <typename Rep, typename Period>
  bool WaitFor(std::chrono::duration<Rep, Period> pace) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, pace, [this] { return stopped_; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
};

}  // namespace sipd::testing
