// WaitUntil: the tests' way to wait for a condition that no descriptor or signal reports
// (a statistic, a file, a process state): polls `predicate` every 20 ms until it is true
// or `timeout` passes. Returns whether it became true.
#pragma once

#include <poll.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>

namespace sipd::testing {

template <typename Predicate>
bool WaitUntil(Predicate predicate, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (predicate()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    struct timespec ts {
      0, 20 * 1000 * 1000
    };
    nanosleep(&ts, nullptr);
  }
}

// Waits for child `pid` to exit (blocking in poll() on a pidfd, no polling) and reaps it
// into `*status`. False when `timeout` passed first (the child is left running).
inline bool WaitForExit(pid_t pid, int* status, std::chrono::milliseconds timeout) {
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) {
    struct pollfd pfd {
      fd, POLLIN, 0
    };
    const int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
    close(fd);
    return ready > 0 && waitpid(pid, status, 0) == pid;
  }
  return WaitUntil([&] { return waitpid(pid, status, WNOHANG) == pid; }, timeout);
}

}  // namespace sipd::testing
