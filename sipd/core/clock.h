// The daemon's millisecond clock.
#pragma once

#include <cstdint>

namespace sipd {

// CLOCK_MONOTONIC in milliseconds: the same clock in every process (what
// std::chrono::steady_clock reads on Linux), so shared-memory deadlines compare across
// processes.
int64_t MonotonicMs();

}  // namespace sipd
