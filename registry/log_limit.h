// Rate-limited logging for lines that outside input can trigger at will (a malformed
// request, a client that went away): a flood of bad requests must not turn into a flood
// of log writes, which would cost more than refusing the requests and bury the log.
//
//   SIPD_LOG_LIMITED(spdlog::level::warn, "parse error in command '{}'", name);
//
// Each call site logs at most kLogLinesPerSecond lines per second and process; the first
// line after a suppressed burst says how many were left out.
//
// Thread-safety: safe from any thread (a small lock per call site).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

#include "spdlog/spdlog.h"

namespace sipd {

inline constexpr int kLogLinesPerSecond = 20;

class LogRateLimit {
 public:
  // True if a line may be written now; `*suppressed` = lines left out since the last one.
  bool Allow(uint64_t* suppressed) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    if (now - window_start_ >= std::chrono::seconds(1)) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= kLogLinesPerSecond) {
      ++suppressed_;
      return false;
    }
    ++in_window_;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_{};
  int in_window_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace sipd

#define SIPD_LOG_LIMITED(level, ...)                                             \
  do {                                                                           \
    if (spdlog::should_log(level)) {                                             \
      static ::sipd::LogRateLimit sipd_log_limit_;                               \
      uint64_t sipd_suppressed_ = 0;                                             \
      if (sipd_log_limit_.Allow(&sipd_suppressed_)) {                            \
        if (sipd_suppressed_ > 0) {                                              \
          spdlog::log(level, "({} similar lines suppressed)", sipd_suppressed_); \
        }                                                                        \
        spdlog::log(level, __VA_ARGS__);                                         \
      }                                                                          \
    }                                                                            \
  } while (0)
