// tm's queue-based overload decision (modparams overload_queue and overload_sustain),
// apart from the sockets it samples so that it can be tested on its own.
//
// The timer process samples the fullest UDP receive queue every 10 ms. sipd counts as
// overloaded once that queue has stayed at or above `on_percent` of its buffer for
// `sustain_ms` (0: at the first such sample), and no longer once a sample finds it below
// a third of `on_percent`. The sustain tells a backlog that lasts (more arrives than
// sipd serves: refusing new calls keeps the rest going) from a burst the buffer absorbs
// (the SIP workers held up for a few tens of milliseconds, by another process or a slow
// disk, then catching up): refusing calls for a burst only loses them.
//
// Thread-safety: one instance per process (the timer process); not shared.
#pragma once

#include <cstdint>

namespace sipd::tm {

class OverloadDetector {
 public:
  OverloadDetector(double on_percent, int64_t sustain_ms)
      : on_percent_(on_percent), sustain_ms_(sustain_ms) {}

  // The flag after a sample of the fullest queue (% of its buffer) taken at `now_ms`
  // (a monotonic clock).
  bool Sample(double fullest_percent, int64_t now_ms) {
    if (on_) {
      if (fullest_percent < on_percent_ / 3.0) on_ = false;
      return on_;
    }
    if (fullest_percent < on_percent_) {
      above_ = false;
      return false;
    }
    if (!above_) {
      above_ = true;
      above_since_ = now_ms;
    }
    if (now_ms - above_since_ >= sustain_ms_) {
      on_ = true;
      above_ = false;
    }
    return on_;
  }

  bool on() const { return on_; }
  // How long the queue has been at or above the threshold without the flag (0 if not).
  int64_t above_for_ms(int64_t now_ms) const { return above_ ? now_ms - above_since_ : 0; }

 private:
  const double on_percent_;
  const int64_t sustain_ms_;
  bool on_ = false;
  bool above_ = false;  // the samples since above_since_ were all at or above
  int64_t above_since_ = 0;
};

}  // namespace sipd::tm
