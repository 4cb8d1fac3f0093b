// The attendant: the sipd main process and its implementation of sipd::Core.
//
// Start-up (Initialize, all before the first fork):
//   run_dir (created 0700 if missing, its parent never; see sipd/core/config.h), shared
//   memory, shared state (log level, stopping flag, statistics cells,
//   process table, worker busy flags), libosip2, the SIP listen sockets (UDP, and TCP
//   with its connection table, hand-off socketpairs and eventfds: sipd/core/
//   tcp_transport.h), statistics groups shmem/core/net/sl, MI commands (get_statistics,
//   reset_statistics, the core list), modules' Init in loadmodule order, module process specs, the
//   process table plan, statistics groups pkmem/load.
// Run:
//   forks module processes (modules in loadmodule order, each spec x count; pre_fork /
//   post_fork around each group), SIP receivers (children per UDP listen socket), the
//   timer process, then with a TCP listen socket `TCP receiver` x tcp_children and
//   `TCP main` last (spec 10.1); every child first closes the SIP descriptors its role
//   must not hold (TcpTransport::EnterProcess), then runs the modules' ChildInit for its rank and
//   reports success over a pipe before its main loop (a process whose ProcessSpec sets
//   reports_listeners also reports, over the same pipe, what it listens on once it does).
//   Then writes <run_dir>/listeners and <run_dir>/sipd.pid, logs the start-up banner
//   (what listens where, where the files are) and supervises:
//   a child that dies is logged and forked again into the same slot (at most once per
//   second per slot; the delay doubles up to 16 s while it keeps dying within 10 s).
//   A module process whose main() returns (exit status 0) is not restarted.
//   SIGTERM/SIGINT or Core::RequestShutdown(): stopping flag, SIGTERM to every child,
//   up to 5 s grace, SIGKILL for stragglers, modules' Shutdown() (reverse loadmodule
//   order), pid file removed.
// Children set PR_SET_PDEATHSIG(SIGTERM), so an attendant killed with SIGKILL leaves
// no orphans.
// Descriptors: right after the fork each child closes everything it inherited except
// stdin/stdout/stderr, the async-reply and event-consumer eventfds (any process may
// complete an MI call or raise an event), the SIP UDP sockets (any process may send SIP:
// tm retransmits from the timer, t_uac_dlg sends from an MI process; only SIP receivers
// read them), the TCP transport's descriptors for its role (sipd/core/tcp_transport.h:
// only TCP main holds the TCP listen sockets, a receiver only its own connections) and,
// for a module process, what its group's pre_fork opened. So no SIP process holds an MI
// socket and no MI process holds another MI transport's socket or a TCP listen socket
// (issue 9). Descriptors opened later (ChildInit, main) are the process's own.
//
// <run_dir>/listeners (written atomically, before the pid file; rewritten when a
// restarted process reports a new address; removed at shutdown):
//   # sipd pid 1234: MODULE PROTOCOL ADDRESS, one per line
//   sip udp 127.0.0.1:5060
//   mi_grpc grpc 127.0.0.1:8090
//   mi_fifo fifo /run/user/1000/sipd/opensips_fifo
//   mi_xmlrpc http http://127.0.0.1:8095/RPC2
// MODULE and PROTOCOL are single words; ADDRESS is the rest of the line (a path may
// hold spaces). Lines starting with '#' are comments. Tests start sipd with port 0
// everywhere and read their ports here (tests/support/sipd_harness.h).
//
// Start-up errors are made actionable: a port already in use names the port, the
// config line that asks for it and, when `ss` can see it, the process holding it.
//
// Thread/process-safety: the Daemon object is built in the attendant and inherited by
// every child through fork(). Registration calls (Add*) are only valid during modules'
// Init(). Accessors read shared memory and are safe in every process and thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "registry/command.h"
#include "registry/statistics.h"
#include "sipd/api/module.h"
#include "sipd/core/async_table.h"
#include "sipd/core/config.h"
#include "sipd/core/event_bus.h"
#include "sipd/core/proc_memory.h"
#include "sipd/core/process_table.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip_receiver.h"
#include "sipd/core/sip_transport_impl.h"
#include "sipd/core/thresholds.h"
#include "sipd/core/timer.h"

namespace sipd {

class Daemon final : public Core {
 public:
  struct Options {
    // The daemon's command line (for the `arg` command).
    std::vector<std::string> argv;
    // Registers the core MI commands (uptime, version, ...) right after the statistics
    // commands; empty when the build has none.
    std::function<absl::Status(Core&)> register_core_commands;
  };

  // Statistics cells in shared memory (counters only; functions need none).
  static constexpr size_t kStatisticsCells = 8192;

  Daemon(Config config, Options options);
  ~Daemon() override;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Everything before the first fork (see file comment). Errors name what failed.
  // REQUIRES: called once, in the attendant.
  absl::Status Initialize();

  // Forks, supervises, and stops everything (see file comment). Returns main()'s exit
  // code: 0 after a clean shutdown, 1 if start-up failed.
  // REQUIRES: Initialize() succeeded.
  int Run();

  // --- sipd::Core ---
  const std::string& run_dir() const override { return config_.run_dir; }
  int children() const override { return config_.children; }
  const std::vector<std::string>& listen() const override { return listen_names_; }
  std::time_t start_time() const override { return start_time_; }
  const std::vector<std::string>& argv() const override { return options_.argv; }
  SharedMemory& shm() override { return *shm_; }
  mi::Registry& mi() override { return mi_; }
  mi::StatsRegistry& stats() override { return *stats_; }
  Module* FindModule(std::string_view name) override;
  void AddTimer(std::string label, std::chrono::milliseconds interval,
                std::function<void()> fn) override;
  void AddSipHandler(std::string method, SipRequestHandler handler) override;
  SipTransport* sip_transport() override { return transport_.get(); }
  SipMessageHandler SetSipMessageHandler(SipMessageHandler handler) override;
  std::vector<ProcessInfo> process_table() const override;
  int log_level() const override;
  void SetLogLevel(int level) override;
  void RequestShutdown() override;
  bool stopping() const override;
  void SyncLogLevel() override;
  std::unique_ptr<mi::Dispatcher> NewDispatcher(const mi::DispatcherOptions& options) override;
  mi::AsyncBackend& async() override;
  mi::EventRegistry* events() override { return events_ ? &events_->registry() : nullptr; }

  // The `ps` type of every slot in fork order, as planned by Initialize() (the process
  // table itself shows a type only once the slot is forked, spec 10.1).
  std::vector<std::string> PlannedProcessTypes() const;

  // Where the pid file goes.
  std::string pid_file() const { return config_.run_dir + "/sipd.pid"; }
  // Where the listeners file goes (format above).
  std::string listeners_file() const { return config_.run_dir + "/listeners"; }

  // Every reported listener: SIP first, then what modules reported in the attendant,
  // then module processes in slot order.
  std::vector<Listener> listeners() const;
  // The start-up banner: one block, what listens where and where the files are.
  std::string Banner() const;

  void ReportListeners(std::vector<Listener> listeners) override;

 private:
  using Clock = std::chrono::steady_clock;

  // Variables shared by all processes; lives in shared memory.
  struct SharedState {
    std::atomic<int> log_level{2};
    std::atomic<bool> stopping{false};
    std::atomic<int> attendant_pid{0};
  };

  // One process-table slot as the attendant plans and supervises it.
  struct PlannedProcess {
    enum class Kind { kAttendant, kModule, kSipWorker, kTimer, kTcpReceiver, kTcpMain };
    Kind kind = Kind::kAttendant;
    std::string type;
    size_t module = 0;    // kModule: index in config_.modules
    size_t spec = 0;      // kModule: index in module_specs_[module]
    int index = 0;        // kModule: process index in the spec; kSipWorker: global index;
                          // kTcpReceiver: receiver index
    size_t listener = 0;  // kSipWorker: the UDP socket's index in transport_->sockets()
    // Supervision (attendant only).
    Clock::time_point started{};
    Clock::time_point next_start{};
    int quick_deaths = 0;
    bool restart_pending = false;
    // What this process reported (reports_listeners), from its latest start.
    std::vector<Listener> listeners;
  };

  absl::Status InitializeSteps();
  absl::Status CreateRunDir();
  // Adds what an operator needs to act on a start-up error (see file comment).
  absl::Status Explain(absl::Status status) const;
  absl::Status RegisterBuiltinStatistics();
  absl::Status RegisterProcessStatistics();
  // UDP SIP workers in total (UDP listen sockets x children).
  size_t UdpWorkerCount() const;
  void PlanProcesses();

  // Forks `slot` and waits for its ChildInit report. Returns the pid, or an error (the
  // child is gone then).
  absl::StatusOr<pid_t> ForkSlot(int slot);
  [[noreturn]] void ChildMain(int slot, int report_fd);
  // Closes every descriptor a new child inherited but does not serve (see file comment).
  void CloseForeignDescriptors(const PlannedProcess& p, int report_fd) const;
  int ChildRank(const PlannedProcess& p) const;

  absl::Status StartAll();
  void Supervise();
  void ReapChildren();
  void ScheduleRestart(PlannedProcess& p);
  void RestartDue();
  void StopAll();
  absl::Status WritePidFile();
  absl::Status WriteListenersFile();
  bool ReportsListeners(const PlannedProcess& p) const;

  Config config_;
  Options options_;
  std::time_t start_time_ = 0;
  Clock::time_point start_steady_{};
  std::vector<std::string> listen_names_;

  std::unique_ptr<SharedMemory> shm_;
  std::unique_ptr<ShmAsyncTable> async_table_;
  std::unique_ptr<MiSecurity> mi_security_;
  std::unique_ptr<SipdEvents> events_;
  std::unique_ptr<ThresholdMonitor> thresholds_;
  // This process's slot in the process table (0 in the attendant).
  int current_slot_ = 0;
  // In a module process that has yet to report its listeners: the start-up pipe.
  int report_fd_ = -1;
  // SIP sockets and what modules reported in the attendant.
  std::vector<Listener> attendant_listeners_;
  bool started_ = false;
  SharedState* shared_ = nullptr;
  std::atomic<uint64_t>* stat_cells_ = nullptr;
  std::unique_ptr<mi::StatsRegistry> stats_;
  mi::Registry mi_;
  ProcessTable* table_ = nullptr;
  std::atomic<uint8_t>* busy_flags_ = nullptr;
  ProcMemoryCache proc_memory_cache_;

  std::unique_ptr<SipTransportImpl> transport_;
  SipCounters sip_counters_;
  SipHandlerMap sip_handlers_;
  // The SIP stack entry point (Core::SetSipMessageHandler); by default the stateless
  // stack of the calling process (stateless_stack_).
  SipMessageHandler sip_message_handler_;
  // In a receiving process (UDP worker, TCP receiver): the core's stateless stack.
  std::unique_ptr<StatelessSipStack> stateless_stack_;
  std::string to_tag_prefix_;
  TimerList timers_;

  std::vector<std::vector<ProcessSpec>> module_specs_;
  // The descriptors each module process group opened in its pre_fork (the sockets it
  // serves), same indexes as module_specs_.
  std::vector<std::vector<std::vector<int>>> module_spec_fds_;
  std::vector<PlannedProcess> plan_;
  bool initialized_ = false;
  // The level this process applied last (per process; atomic for gRPC threads).
  std::atomic<int> applied_log_level_{-100};
};

}  // namespace sipd
