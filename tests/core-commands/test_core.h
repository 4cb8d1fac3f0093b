// A small sipd::Core for unit tests of the core commands: real shared memory and a real
// MI registry, a fixed process table, an in-memory log level, timers recorded (tests run
// them by hand) and shutdown requests counted.
//
// Thread/process-safety: single-threaded test use; a forked child gets its own copy of
// everything except the shared memory.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "registry/command.h"
#include "registry/statistics.h"
#include "sipd/api/module.h"
#include "sipd/core/shm.h"

namespace sipd::testing {

class TestCore : public Core {
 public:
  struct Timer {
    std::string label;
    std::chrono::milliseconds interval;
    std::function<void()> fn;
  };

  explicit TestCore(size_t shm_size = 16 << 20) : stats_(stat_cells_) {
    auto shm = SharedMemory::Create(shm_size);
    if (shm.ok()) shm_ = std::move(*shm);
  }

  bool shm_ok() const { return shm_ != nullptr; }

  const std::string& run_dir() const override { return run_dir_; }
  int children() const override { return 2; }
  const std::vector<std::string>& listen() const override { return listen_; }
  std::time_t start_time() const override { return start; }
  const std::vector<std::string>& argv() const override { return argv_list; }
  SharedMemory& shm() override { return *shm_; }
  mi::Registry& mi() override { return registry_; }
  mi::StatsRegistry& stats() override { return stats_; }
  Module* FindModule(std::string_view) override { return nullptr; }
  void AddTimer(std::string label, std::chrono::milliseconds interval,
                std::function<void()> fn) override {
    timers.push_back({std::move(label), interval, std::move(fn)});
  }
  void AddSipHandler(std::string, SipRequestHandler) override {}
  void ReportListeners(std::vector<Listener> reported) override { listeners = std::move(reported); }
  std::vector<ProcessInfo> process_table() const override { return processes; }
  int log_level() const override { return level; }
  void SetLogLevel(int new_level) override { level = new_level; }
  void RequestShutdown() override { ++shutdown_requests; }
  bool stopping() const override { return shutdown_requests > 0; }
  void SyncLogLevel() override {}
  std::unique_ptr<mi::Dispatcher> NewDispatcher(const mi::DispatcherOptions& options) override {
    return std::make_unique<mi::Dispatcher>(registry_, &async_, options);
  }
  mi::AsyncBackend& async() override { return async_; }
  mi::LocalAsyncBackend async_;

  // Test-visible state.
  std::time_t start = std::time(nullptr);
  std::vector<std::string> argv_list;
  std::vector<ProcessInfo> processes;
  int level = 3;
  int shutdown_requests = 0;
  std::vector<Timer> timers;
  std::vector<Listener> listeners;

 private:
  std::string run_dir_ = "/tmp";
  std::vector<std::string> listen_ = {"udp:127.0.0.1:5060"};
  std::unique_ptr<SharedMemory> shm_;
  mi::Registry registry_;
  std::array<std::atomic<uint64_t>, 16> stat_cells_{};
  mi::StatsRegistry stats_;
};

// Runs `body` in a forked child and returns its exit status (0..255), or -signal if it
// was killed. The child is killed by SIGALRM after `timeout_s` so a deadlock cannot hang
// the test, and exits with _exit (no gtest/atexit teardown in the child).
inline int RunInChild(const std::function<int()>& body, unsigned timeout_s = 20) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(timeout_s);
    int rc = body();
    _exit(rc);
  }
  if (pid < 0) return -1000;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1002;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? -WTERMSIG(status) : -1001;
}

}  // namespace sipd::testing
