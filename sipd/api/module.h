// The module API: how the daemon and its modules (core, mi_grpc, mi_fifo, mi_datagram,
// mi_xmlrpc, usrloc, registrar, ...) talk to each other. Modelled on OpenSIPS's
// module_exports / proc_export_t (spec section 10.2).
//
// Life cycle, all in the attendant unless said otherwise:
//   1. the config parser creates each `loadmodule`d module (in order) and calls
//      SetParam() for each `modparam`;
//   2. Init(core) in loadmodule order: create shared-memory state, statistics, MI
//      commands, SIP handlers, timers. Everything shared must exist before the fork;
//   3. the attendant forks the processes from Processes() (module processes first,
//      modules in loadmodule order, then SIP receivers, then the timer process, then the
//      TCP receivers and TCP main when a TCP listen socket is configured);
//   4. in every forked child, ChildInit(rank) of every module (rank: kRankSipWorker+i
//      for SIP workers, UDP then TCP receivers; kRankTimer; kRankTcpMain; kRankModule for
//      module processes that ask for it);
//   5. at clean shutdown, Shutdown() in the attendant after all children are gone.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "registry/async.h"
#include "registry/command.h"
#include "registry/dispatcher.h"
#include "registry/events.h"
#include "registry/statistics.h"

namespace sipd {

class Core;
class SipRequest;
// sipd/core/sip_transport.h: the SIP transport seam (inbound handler, Send()).
class SipTransport;
struct SipInbound;
using SipMessageHandler = std::function<void(const SipInbound& message)>;
// sipd/core/shm.h (Boost.Interprocess): included only by the modules that place objects
// in shared memory.
class SharedMemory;

// Ranks passed to ChildInit (as OpenSIPS).
inline constexpr int kRankMain = 0;
inline constexpr int kRankTimer = -1;
inline constexpr int kRankModule = -2;
inline constexpr int kRankSipWorker = 1;  // first SIP worker; workers are 1..n
// TCP receivers are SIP workers too: they take the ranks after the UDP workers.
inline constexpr int kRankTcpMain = -4;  // `TCP main` (accepts connections, runs no SIP)

// A modparam value: a quoted string or a bare integer.
using ParamValue = std::variant<std::string, int64_t>;

// Where a client reaches sipd, or a file an operator looks for: one line of the start-up
// banner and of RUN_DIR/listeners (format in sipd/core/daemon.h). Addresses are the ones
// actually bound (a configured port 0 shows the port the kernel chose).
struct Listener {
  std::string module;    // "sip" for the SIP sockets, else the module's name
  std::string protocol;  // udp, tcp, grpc, http, fifo, unix, sqlite
  std::string address;   // HOST:PORT ([v6]:PORT), or an absolute path; no newline
};

// One group of processes a module asks the attendant to fork.
struct ProcessSpec {
  // `ps` Type text (e.g. "MI FIFO"); no index suffix.
  std::string name;
  int count = 1;
  // Run once in the attendant before this group is forked; an error aborts start-up.
  std::function<absl::Status()> pre_fork;
  // Run once in the attendant after this group is forked.
  std::function<void()> post_fork;
  // The body of process `index` (0..count-1). It should loop until Core::stopping()
  // becomes true. Returning OK ends the process deliberately (it is not restarted); an
  // error is logged by the attendant, the process exits with status 1 and is restarted.
  std::function<absl::Status(int index)> main;
  // Run every module's ChildInit(kRankModule) before main().
  bool init_child = true;
  // main() binds its listeners itself (after the fork) and then calls
  // Core::ReportListeners() once, e.g. mi_grpc whose server exists only in its process.
  // The attendant waits for that report (at most 10 s, as for ChildInit) before it
  // forks the next process, so start-up completes only when the process listens, and
  // the banner and RUN_DIR/listeners show the bound address. A process that ends or
  // fails before it reports fails start-up (its error is passed to the attendant).
  // After a restart the new report replaces the old one.
  bool reports_listeners = false;
};

class Module {
 public:
  virtual ~Module() = default;
  virtual std::string_view name() const = 0;
  // InvalidArgument naming the parameter for an unknown name or a value of the wrong
  // type or range.
  virtual absl::Status SetParam(std::string_view param, const ParamValue& value) = 0;
  virtual absl::Status Init(Core& core) = 0;
  virtual std::vector<ProcessSpec> Processes() { return {}; }
  virtual absl::Status ChildInit(int /*rank*/) { return absl::OkStatus(); }
  virtual void Shutdown() {}
};

// One slot of the process table (shared memory), as `ps` shows it.
struct ProcessInfo {
  int id = 0;
  int pid = 0;  // 0 = not forked yet
  std::string type;
};

// Handles one SIP request in a SIP worker. See sipd/core/sip.h.
using SipRequestHandler = std::function<void(SipRequest& request)>;

// What the daemon offers to modules. Implemented by the attendant (sipd/core/daemon.*).
// Thread/process-safety: the registration calls (Add*, Register*) are only valid during
// Init(); the accessors are valid in every process.
class Core {
 public:
  virtual ~Core() = default;

  // Global config values (`key = value` lines).
  virtual const std::string& run_dir() const = 0;
  virtual int children() const = 0;
  // Listen sockets as `udp:IP:PORT` / `tcp:IP:PORT`, in config order (the names of
  // SipTransport::sockets()).
  virtual const std::vector<std::string>& listen() const = 0;
  virtual std::time_t start_time() const = 0;
  // argv of the daemon, for the `arg` command.
  virtual const std::vector<std::string>& argv() const = 0;

  virtual SharedMemory& shm() = 0;
  virtual mi::Registry& mi() = 0;
  virtual mi::StatsRegistry& stats() = 0;

  // The MI dispatcher of the calling process, configured with the daemon's policy
  // hooks (authorization, audit) and its async replies routed to this process. A
  // transport process makes one when it starts (after the fork) and serves every
  // request through it. REQUIRES: called in a forked process, not during Init().
  virtual std::unique_ptr<mi::Dispatcher> NewDispatcher(const mi::DispatcherOptions& options) = 0;
  // Completes async MI calls (AsyncBackend::Complete) from any process: where a module
  // hands the reply of a ticket it was given (spec 1.6).
  virtual mi::AsyncBackend& async() = 0;

  // Another loaded module, or nullptr.
  virtual Module* FindModule(std::string_view name) = 0;

  // Tells the operator where this module listens (or which file it keeps). In the
  // attendant (Init, pre_fork, post_fork) the entries are recorded at once. In a module
  // process whose ProcessSpec sets reports_listeners, they travel to the attendant over
  // the start-up pipe (lines "L MODULE PROTOCOL ADDRESS", then "R"; sipd/core/daemon.cc)
  // and mark the process ready; call it once, after binding. Elsewhere it is ignored.
  // (A no-op by default, for test doubles.)
  virtual void ReportListeners(std::vector<Listener> /*listeners*/) {}
  // The event interface (registry/events.h): modules publish their events during Init()
  // and raise them from any process; event transports (event_datagram) add their
  // consumer and transports during Init(). nullptr when the core has none (test doubles).
  virtual mi::EventRegistry* events() { return nullptr; }

  // Runs `fn` every `interval` in the timer process (`label` shows in `ps` as
  // "timer: LABEL" when it is the most recently registered timer).
  virtual void AddTimer(std::string label, std::chrono::milliseconds interval,
                        std::function<void()> fn) = 0;
  // AddTimer as a function object, for a library that schedules its own timer when a
  // module creates it (sqlite::GroupCommitWriter::Options::add_timer). Valid while this
  // core is (the attendant's start-up).
  std::function<void(std::string, std::chrono::milliseconds, std::function<void()>)>
  TimerRegistration() {
    return [this](std::string label, std::chrono::milliseconds interval, std::function<void()> fn) {
      AddTimer(std::move(label), interval, std::move(fn));
    };
  }

  // Routes SIP requests with this method (e.g. "REGISTER") to `handler` in the SIP
  // workers. Methods without a handler get the core's stateless answer (OPTIONS: 200,
  // others: 501/405 as documented in sipd/core/sip.h).
  virtual void AddSipHandler(std::string method, SipRequestHandler handler) = 0;

  // The SIP transport (sipd/core/sip_transport.h): listen sockets and Send(). Valid in
  // every process once Init() starts; Send() is meant for forked processes. nullptr in
  // cores without SIP (test doubles).
  virtual SipTransport* sip_transport() { return nullptr; }

  // Installs the SIP stack entry point run for every inbound SIP message, in the process
  // that received it (UDP workers, TCP receivers), and returns the handler it replaces
  // (at first: the core's stateless stack, which runs the AddSipHandler handlers), so
  // the new stack can pass on what it does not handle. Only during Init(); an empty
  // handler is ignored. (Test doubles without SIP return an empty function.)
  virtual SipMessageHandler SetSipMessageHandler(SipMessageHandler /*handler*/) { return {}; }

  // Snapshot of the process table, slot order (spec 10.1).
  virtual std::vector<ProcessInfo> process_table() const = 0;

  // The OpenSIPS-style log level shared by all processes (-3 alert .. 4 debug).
  virtual int log_level() const = 0;
  // Sets the shared level; every process applies it on its next SyncLogLevel().
  virtual void SetLogLevel(int level) = 0;

  // Starts a clean shutdown of the whole daemon (the `kill` command): SIGTERM to the
  // attendant, which stops every child.
  virtual void RequestShutdown() = 0;

  // True once shutdown has begun; process loops poll it (at least every 200 ms).
  virtual bool stopping() const = 0;

  // Applies the shared log level if another process changed it (`debug` command).
  // Process loops call it after each wake-up; it is an atomic load when nothing changed.
  virtual void SyncLogLevel() = 0;
};

}  // namespace sipd
