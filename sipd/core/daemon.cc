#include "sipd/core/daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <osipparser2/osip_parser.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>
#include <random>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "generated/sipd_version.h"
#include "registry/status_macros.h"
#include "sipd/core/logging.h"
#include "sipd/core/tcp_main.h"
#include "sipd/core/tcp_receiver.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

// Set by SIGTERM in a child process (the attendant blocks SIGTERM and reads it with
// sigtimedwait instead).
volatile std::sig_atomic_t g_child_stop = 0;

void OnChildStopSignal(int /*signal*/) { g_child_stop = 1; }

// How long a child may take for its ChildInit() calls before start-up gives up on it.
constexpr auto kChildInitTimeout = std::chrono::seconds(10);
// Grace period between SIGTERM and SIGKILL at shutdown.
constexpr auto kStopGrace = std::chrono::seconds(5);
// A process that dies sooner than this after its start doubles its restart delay.
constexpr auto kQuickDeath = std::chrono::seconds(10);
constexpr auto kMaxBackoff = std::chrono::milliseconds(16000);

// The descriptors open in this process (from /proc/self/fd).
std::vector<int> OpenDescriptors() {
  std::vector<int> fds;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return fds;
  const int own = dirfd(dir);
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    const int fd = std::atoi(entry->d_name);
    if (fd != own) fds.push_back(fd);
  }
  closedir(dir);
  return fds;
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("ended with wait status ", status);
}

sigset_t AttendantSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

// `text` on one line (the start-up pipe is line-based).
std::string OneLine(absl::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

// One word: spaces too become '_'.
std::string OneWord(absl::string_view text) {
  std::string out = OneLine(text);
  for (char& c : out) {
    if (c == ' ' || c == '\t') c = '_';
  }
  return out.empty() ? "-" : out;
}

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Whether a modparam value as written ("127.0.0.1:8090", 8095) asks for `port`.
bool ValueNamesPort(const std::string& value, int port) {
  const std::string digits = std::to_string(port);
  if (value == digits) return true;
  const std::string needle = ":" + digits;
  for (size_t at = value.find(needle); at != std::string::npos; at = value.find(needle, at + 1)) {
    const size_t end = at + needle.size();
    if (end == value.size() || !absl::ascii_isdigit(static_cast<unsigned char>(value[end]))) {
      return true;
    }
  }
  return false;
}

// Who holds `port` (TCP or UDP), as `ss` sees it: "tcp 127.0.0.1:8090 by python3 (pid 12)";
// empty when ss is missing or sees nothing (other users' sockets need root).
std::string PortHolders(int port) {
  const std::string command =
      absl::StrCat("ss -H -l -n -p -t -u 'sport = :", port, "' 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  pclose(pipe);
  std::vector<std::string> holders;
  for (absl::string_view line : absl::StrSplit(output, '\n', absl::SkipWhitespace())) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (fields.size() < 5) continue;
    std::string who;
    const size_t users = line.find("users:((");
    if (users != absl::string_view::npos) {
      // users:(("name",pid=12,fd=3),("name",pid=13,fd=3))
      absl::string_view rest = line.substr(users + 7);
      std::vector<std::pair<long, std::string>> processes;  // by pid
      for (size_t q = rest.find("(\""); q != absl::string_view::npos; q = rest.find("(\"", q + 1)) {
        const size_t name_end = rest.find('"', q + 2);
        const size_t pid_at = rest.find("pid=", q);
        if (name_end == absl::string_view::npos || pid_at == absl::string_view::npos) break;
        const size_t pid_end = rest.find_first_not_of("0123456789", pid_at + 4);
        const std::string pid(rest.substr(pid_at + 4, pid_end - pid_at - 4));
        processes.emplace_back(
            std::atol(pid.c_str()),
            absl::StrCat(rest.substr(q + 2, name_end - q - 2), " (pid ", pid, ")"));
      }
      // Forked servers share the socket: the parent (lowest pid) and two more suffice.
      std::sort(processes.begin(), processes.end());
      std::vector<std::string> names;
      for (size_t i = 0; i < processes.size() && i < 3; ++i) names.push_back(processes[i].second);
      who = absl::StrCat(" by ", absl::StrJoin(names, ", "));
      if (processes.size() > 3) absl::StrAppend(&who, " and ", processes.size() - 3, " more");
    }
    holders.push_back(absl::StrCat(fields[0], " ", fields[4], who));
  }
  return absl::StrJoin(holders, "; ");
}

}  // namespace

Daemon::Daemon(Config config, Options options)
    : config_(std::move(config)), options_(std::move(options)) {
  for (const auto& l : config_.listen) listen_names_.push_back(l.ToString());
}

Daemon::~Daemon() {
  // Modules may hold pointers into shared memory: destroy them before it is unmapped.
  config_.modules.clear();
  stateless_stack_.reset();
  transport_.reset();
}

Module* Daemon::FindModule(std::string_view name) {
  for (auto& m : config_.modules) {
    if (m.name == name) return m.module.get();
  }
  return nullptr;
}

void Daemon::AddTimer(std::string label, std::chrono::milliseconds interval,
                      std::function<void()> fn) {
  if (initialized_) {
    spdlog::error("AddTimer({}) after start-up ignored", label);
    return;
  }
  timers_.Add(std::move(label), interval, std::move(fn));
}

void Daemon::AddSipHandler(std::string method, SipRequestHandler handler) {
  if (initialized_) {
    spdlog::error("AddSipHandler({}) after start-up ignored", method);
    return;
  }
  sip_handlers_[std::move(method)] = std::move(handler);
}

SipMessageHandler Daemon::SetSipMessageHandler(SipMessageHandler handler) {
  if (initialized_) {
    spdlog::error("SetSipMessageHandler after start-up ignored");
    return {};
  }
  if (!handler) return sip_message_handler_;
  return std::exchange(sip_message_handler_, std::move(handler));
}

std::vector<ProcessInfo> Daemon::process_table() const {
  if (table_ == nullptr) return {};
  return table_->Snapshot();
}

int Daemon::log_level() const {
  return shared_ != nullptr ? shared_->log_level.load(std::memory_order_relaxed)
                            : config_.log_level;
}

void Daemon::SetLogLevel(int level) {
  if (shared_ != nullptr) shared_->log_level.store(level, std::memory_order_relaxed);
  SyncLogLevel();
}

void Daemon::SyncLogLevel() {
  const int level = log_level();
  // Two relaxed loads when nothing changed (the common case).
  if (applied_log_level_.load(std::memory_order_relaxed) == level) return;
  if (applied_log_level_.exchange(level, std::memory_order_relaxed) != level) {
    ApplyLogLevel(level);
  }
}

bool Daemon::stopping() const {
  return g_child_stop != 0 ||
         (shared_ != nullptr && shared_->stopping.load(std::memory_order_relaxed));
}

std::unique_ptr<mi::Dispatcher> Daemon::NewDispatcher(const mi::DispatcherOptions& options) {
  // A restarted process takes over its predecessor's slot: free what it left pending.
  async_table_->ReclaimOwner(current_slot_);
  mi::DispatchHooks hooks;
  const MiSecurity* security = mi_security_.get();
  hooks.authorize = [security](mi::CallContext& context, const mi::Command& command) {
    return security->Authorize(context, command);
  };
  hooks.audit = [security](const mi::CallContext& context, const mi::Command& command,
                           const mi::Request& request,
                           uint32_t code) { security->Audit(context, command, request, code); };
  return std::make_unique<mi::Dispatcher>(mi_, &async_table_->ForOwner(current_slot_), options,
                                          std::move(hooks));
}

mi::AsyncBackend& Daemon::async() { return async_table_->ForOwner(current_slot_); }

void Daemon::RequestShutdown() {
  if (shared_ == nullptr) return;
  shared_->stopping.store(true, std::memory_order_relaxed);
  const pid_t attendant = shared_->attendant_pid.load(std::memory_order_relaxed);
  if (attendant > 0 && attendant != getpid()) kill(attendant, SIGTERM);
}

absl::Status Daemon::CreateRunDir() {
  std::string dir = config_.run_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string origin =
      config_.run_dir_line > 0
          ? absl::StrCat("run_dir is set at ", config_.file, ":", config_.run_dir_line)
          : "run_dir is the default: $XDG_RUNTIME_DIR/sipd, else /tmp/sipd-<uid>; set run_dir "
            "in the config to choose another";
  if (dir.empty()) return absl::InvalidArgumentError("empty run_dir");
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    const int error = errno;
    const size_t slash = dir.rfind('/');
    const std::string parent =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
    if (error == ENOENT) {
      return absl::FailedPreconditionError(
          absl::StrCat("run_dir ", dir, " cannot be created: its parent directory ", parent,
                       " does not exist. Create it (mkdir -p ", parent,
                       ") or choose another run_dir (", origin, ")"));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create run_dir ", dir, ": ", std::strerror(error), " (", origin, ")"));
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("run_dir ", dir, " is not a directory (", origin, ")"));
  }
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("run_dir ", dir, " belongs to uid ", st.st_uid, ", not to sipd's user (uid ",
                     geteuid(), "): remove it or choose another run_dir (", origin, ")"));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return absl::FailedPreconditionError(
        absl::StrCat("run_dir ", dir, " is writable by other users (mode ", mode, "): chmod 700 ",
                     dir, " or choose another run_dir (", origin, ")"));
  }
  return absl::OkStatus();
}

absl::Status Daemon::Explain(absl::Status status) const {
  if (status.ok()) return status;
  const std::string message(status.message());
  const size_t at = message.find(absl::StrCat(": ", std::strerror(EADDRINUSE)));
  if (at == std::string::npos) return status;
  // The port: the digits right before ": Address already in use" ("HOST:PORT: ...").
  size_t begin = at;
  while (begin > 0 && absl::ascii_isdigit(static_cast<unsigned char>(message[begin - 1]))) --begin;
  if (begin == at || begin == 0 || message[begin - 1] != ':') return status;
  const int port = std::atoi(message.substr(begin, at - begin).c_str());

  std::vector<std::string> lines;
  for (const ListenAddress& l : config_.listen) {
    if (l.port == port) {
      lines.push_back(absl::StrCat(config_.file, ":", l.line, ": listen = ", l.ToString()));
    }
  }
  for (const LoadedModule& m : config_.modules) {
    for (const ParamLine& p : m.params) {
      if (ValueNamesPort(p.value, port)) {
        lines.push_back(absl::StrCat(config_.file, ":", p.line, ": modparam(\"", m.name, "\", \"",
                                     p.param, "\", ", p.value, ")"));
      }
    }
  }
  std::string extra = absl::StrCat("\n  port ", port, " is already in use");
  if (lines.empty()) {
    absl::StrAppend(&extra, "; no line of ", config_.file,
                    " names it (a module's default: set the port with its modparam)");
  } else {
    absl::StrAppend(&extra, "; the config asks for it at ", absl::StrJoin(lines, " and at "));
  }
  const std::string holders = PortHolders(port);
  if (holders.empty()) {
    absl::StrAppend(&extra, "\n  `ss -lnptu 'sport = :", port,
                    "'` shows no holder it may see (run it as root)");
  } else {
    absl::StrAppend(&extra, "\n  held by: ", holders);
  }
  absl::StrAppend(&extra, "\n  stop that process, or change the port in the config (port 0 picks ",
                  "any free port)");
  return absl::Status(status.code(), message + extra);
}

absl::Status Daemon::Initialize() { return Explain(InitializeSteps()); }

absl::Status Daemon::InitializeSteps() {
  start_time_ = std::time(nullptr);
  start_steady_ = Clock::now();
  SIPD_RETURN_IF_ERROR(CreateRunDir());

  SIPD_ASSIGN_OR_RETURN(
      shm_, SharedMemory::Create(static_cast<size_t>(config_.shm_size_mb) * 1024 * 1024));
  try {
    shared_ = shm_->Construct<SharedState>();
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("shared memory: ", e.what()));
  }
  shared_->log_level.store(config_.log_level);
  shared_->attendant_pid.store(getpid());
  void* cells = shm_->Allocate(sizeof(std::atomic<uint64_t>) * kStatisticsCells);
  if (cells == nullptr) return absl::ResourceExhaustedError("no shared memory for statistics");
  stat_cells_ = static_cast<std::atomic<uint64_t>*>(cells);
  for (size_t i = 0; i < kStatisticsCells; ++i) new (&stat_cells_[i]) std::atomic<uint64_t>(0);
  stats_ = std::make_unique<mi::StatsRegistry>(
      std::span<std::atomic<uint64_t>>(stat_cells_, kStatisticsCells));

  // libosip2's global tables must exist before the workers fork.
  if (parser_init() != 0) return absl::InternalError("libosip2 parser_init() failed");
  RouteOsipTraces();

  SipTransportImpl::Options transport_options;
  transport_options.max_buffer = config_.maxbuffer;
  transport_options.shm = shm_.get();
  transport_options.tcp = TcpOptions::FromConfig(config_);
  SIPD_ASSIGN_OR_RETURN(transport_, SipTransportImpl::Open(config_.listen, transport_options));
  listen_names_.clear();
  for (const SipSocket& socket : transport_->sockets()) {
    listen_names_.push_back(socket.name);
    attendant_listeners_.push_back(
        Listener{"sip", std::string(SipProtoName(socket.proto)), socket.address.ToString()});
  }
  // The default SIP stack: the stateless one of the process that received the message.
  sip_message_handler_ = [this](const SipInbound& message) {
    if (stateless_stack_ != nullptr) stateless_stack_->Handle(message);
  };

  SIPD_RETURN_IF_ERROR(RegisterBuiltinStatistics());
  SIPD_ASSIGN_OR_RETURN(events_, SipdEvents::Create(*shm_));  // before any Publish
  SIPD_ASSIGN_OR_RETURN(
      thresholds_, ThresholdMonitor::Create(*shm_, *events_,
                                            {.exec_msg_threshold_us = config_.exec_msg_threshold_us,
                                             .shm_threshold = config_.shm_threshold,
                                             .pkg_threshold = config_.pkg_threshold}));
  SIPD_RETURN_IF_ERROR(stats_->RegisterCommands(mi_));
  if (options_.register_core_commands) {
    absl::Status s = options_.register_core_commands(*this);
    if (!s.ok()) return absl::InternalError(absl::StrCat("core MI commands: ", s.message()));
  }

  for (auto& m : config_.modules) {
    absl::Status s = m.module->Init(*this);
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("module ", m.name, ": init failed: ", s.message()));
    }
  }

  for (auto& m : config_.modules) {
    std::vector<ProcessSpec> specs;
    for (ProcessSpec& spec : m.module->Processes()) {
      if (spec.count <= 0 || !spec.main) continue;  // ignored, as in OpenSIPS
      specs.push_back(std::move(spec));
    }
    module_specs_.push_back(std::move(specs));
  }
  PlanProcesses();
  SIPD_ASSIGN_OR_RETURN(table_, ProcessTable::Create(*shm_, static_cast<int>(plan_.size())));
  SIPD_ASSIGN_OR_RETURN(async_table_, ShmAsyncTable::Create(*shm_, config_.mi_async_slots,
                                                            static_cast<int>(plan_.size())));
  for (size_t i = 0; i < plan_.size(); ++i) table_->SetType(static_cast<int>(i), "");
  table_->SetType(0, "starter");
  table_->SetPid(0, getpid());

  const size_t workers =
      UdpWorkerCount() +
      static_cast<size_t>(transport_->tcp() != nullptr ? transport_->tcp()->receivers() : 0);
  void* busy = shm_->Allocate(std::max<size_t>(workers, 1));
  if (busy == nullptr) return absl::ResourceExhaustedError("no shared memory for busy flags");
  busy_flags_ = static_cast<std::atomic<uint8_t>*>(busy);
  for (size_t i = 0; i < std::max<size_t>(workers, 1); ++i) {
    new (&busy_flags_[i]) std::atomic<uint8_t>(0);
  }
  SIPD_RETURN_IF_ERROR(events_->RegisterStatistics(*stats_));  // evi, after the modules'
  SIPD_RETURN_IF_ERROR(RegisterProcessStatistics());
  SIPD_ASSIGN_OR_RETURN(mi_security_,
                        MiSecurity::Create(config_.mi_security, config_.run_dir, *stats_));
  SIPD_RETURN_IF_ERROR(mi_security_->PublishEvents(events_->registry()));
  // MI calls waiting for an async reply, all processes together.
  stats_->AddGroup("mi");
  ShmAsyncTable* async_table = async_table_.get();
  SIPD_RETURN_IF_ERROR(stats_->AddFunction("mi", "async_pending", [async_table] {
    return static_cast<uint64_t>(async_table->pending());
  }));
  // Every command is registered by now: count their calls in shared memory (group mi).
  SIPD_RETURN_IF_ERROR(mi_.UseFigureCells(*stats_));

  std::random_device entropy;
  char prefix[9];
  std::snprintf(prefix, sizeof(prefix), "%08x", entropy());
  to_tag_prefix_ = prefix;
  // Any process may send the reply of a REGISTER another process deferred (sip.h).
  if (transport_ != nullptr) RegisterStatelessDeferredReplies(*transport_, sip_counters_);
  initialized_ = true;
  return absl::OkStatus();
}

absl::Status Daemon::RegisterBuiltinStatistics() {
  SharedMemory* shm = shm_.get();
  stats_->AddGroup("shmem");
  SIPD_RETURN_IF_ERROR(
      stats_->AddFunction("shmem", "total_size", [shm] { return shm->total_size(); }));
  SIPD_RETURN_IF_ERROR(
      stats_->AddFunction("shmem", "used_size", [shm] { return shm->used_size(); }));
  // The allocator reports no separate "requested" figure: used_size already counts its
  // own block overhead, so real_used_size equals used_size.
  SIPD_RETURN_IF_ERROR(
      stats_->AddFunction("shmem", "real_used_size", [shm] { return shm->used_size(); }));
  SIPD_RETURN_IF_ERROR(
      stats_->AddFunction("shmem", "max_used_size", [shm] { return shm->max_used_size(); }));
  SIPD_RETURN_IF_ERROR(
      stats_->AddFunction("shmem", "free_size", [shm] { return shm->free_size(); }));
  SIPD_RETURN_IF_ERROR(
      stats_->AddFunction("shmem", "fragments", [shm] { return shm->fragments(); }));

  const Clock::time_point start = start_steady_;
  SIPD_RETURN_IF_ERROR(RegisterCoreStats(
      *stats_,
      [start] {
        return static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count());
      },
      sip_counters_));

  stats_->AddGroup("net");
  const SipTransportImpl* transport = transport_.get();
  SIPD_RETURN_IF_ERROR(stats_->AddFunction("net", "waiting_udp",
                                           [transport] { return transport->UdpReceiveBacklog(); }));
  SIPD_RETURN_IF_ERROR(stats_->AddFunction("net", "waiting_tcp", [transport]() -> uint64_t {
    return transport->tcp() != nullptr ? transport->tcp()->WaitingBytes() : 0;
  }));

  return RegisterSlStats(*stats_, sip_counters_);
}

absl::Status Daemon::RegisterProcessStatistics() {
  stats_->AddGroup("pkmem");
  ProcessTable* table = table_;
  ProcMemoryCache* cache = &proc_memory_cache_;
  for (int slot = 0; slot < table_->size(); ++slot) {
    auto read = [table, cache, slot](uint64_t ProcMemory::*field) {
      return [table, cache, slot, field] { return cache->Get(table->pid(slot)).*field; };
    };
    SIPD_RETURN_IF_ERROR(stats_->AddFunction("pkmem", absl::StrCat(slot, "-total_size"),
                                             read(&ProcMemory::total_size)));
    SIPD_RETURN_IF_ERROR(stats_->AddFunction("pkmem", absl::StrCat(slot, "-used_size"),
                                             read(&ProcMemory::used_size)));
    SIPD_RETURN_IF_ERROR(stats_->AddFunction("pkmem", absl::StrCat(slot, "-real_used_size"),
                                             read(&ProcMemory::real_used_size)));
    SIPD_RETURN_IF_ERROR(stats_->AddFunction("pkmem", absl::StrCat(slot, "-max_used_size"),
                                             read(&ProcMemory::max_used_size)));
    SIPD_RETURN_IF_ERROR(stats_->AddFunction("pkmem", absl::StrCat(slot, "-free_size"),
                                             read(&ProcMemory::free_size)));
    SIPD_RETURN_IF_ERROR(stats_->AddFunction("pkmem", absl::StrCat(slot, "-fragments"),
                                             read(&ProcMemory::fragments)));
  }

  stats_->AddGroup("load");
  const size_t children = static_cast<size_t>(config_.children);
  for (size_t l = 0; l < transport_->sockets().size(); ++l) {
    std::atomic<uint8_t>* flags = busy_flags_ + l * children;
    SIPD_RETURN_IF_ERROR(
        stats_->AddFunction("load", absl::StrCat(listen_names_[l], "-load"), [flags, children] {
          uint64_t busy = 0;
          for (size_t i = 0; i < children; ++i) busy += flags[i].load(std::memory_order_relaxed);
          return busy * 100 / children;
        }));
  }
  if (transport_->tcp() != nullptr) {
    std::atomic<uint8_t>* flags = busy_flags_ + UdpWorkerCount();
    const size_t receivers = static_cast<size_t>(transport_->tcp()->receivers());
    SIPD_RETURN_IF_ERROR(stats_->AddFunction("load", "tcp-load", [flags, receivers] {
      uint64_t busy = 0;
      for (size_t i = 0; i < receivers; ++i) busy += flags[i].load(std::memory_order_relaxed);
      return busy * 100 / receivers;
    }));
  }
  return absl::OkStatus();
}

void Daemon::PlanProcesses() {
  plan_.clear();
  plan_.push_back(PlannedProcess{.kind = PlannedProcess::Kind::kAttendant, .type = "attendant"});
  for (size_t m = 0; m < module_specs_.size(); ++m) {
    for (size_t s = 0; s < module_specs_[m].size(); ++s) {
      for (int i = 0; i < module_specs_[m][s].count; ++i) {
        plan_.push_back(PlannedProcess{.kind = PlannedProcess::Kind::kModule,
                                       .type = module_specs_[m][s].name,
                                       .module = m,
                                       .spec = s,
                                       .index = i});
      }
    }
  }
  int worker = 0;
  for (size_t l = 0; l < transport_->sockets().size(); ++l) {
    if (transport_->sockets()[l].proto != SipProto::kUdp) continue;
    for (int i = 0; i < config_.children; ++i) {
      // Trailing space, as OpenSIPS prints it (spec 10.1).
      plan_.push_back(PlannedProcess{.kind = PlannedProcess::Kind::kSipWorker,
                                     .type = absl::StrCat("SIP receiver ", listen_names_[l], " "),
                                     .index = worker++,
                                     .listener = l});
    }
  }
  plan_.push_back(
      PlannedProcess{.kind = PlannedProcess::Kind::kTimer, .type = timers_.ProcessType()});
  // Spec 10.1: `TCP receiver` x tcp_children, then `TCP main` last.
  if (transport_->tcp() != nullptr) {
    for (int i = 0; i < transport_->tcp()->receivers(); ++i) {
      plan_.push_back(PlannedProcess{
          .kind = PlannedProcess::Kind::kTcpReceiver, .type = "TCP receiver", .index = i});
    }
    plan_.push_back(PlannedProcess{.kind = PlannedProcess::Kind::kTcpMain, .type = "TCP main"});
  }
}

size_t Daemon::UdpWorkerCount() const {
  size_t udp = 0;
  for (const SipSocket& socket : transport_->sockets()) udp += socket.proto == SipProto::kUdp;
  return udp * static_cast<size_t>(config_.children);
}

std::vector<std::string> Daemon::PlannedProcessTypes() const {
  std::vector<std::string> types;
  for (const auto& p : plan_) types.push_back(p.type);
  return types;
}

int Daemon::ChildRank(const PlannedProcess& p) const {
  switch (p.kind) {
    case PlannedProcess::Kind::kModule:
      return kRankModule;
    case PlannedProcess::Kind::kSipWorker:
      return kRankSipWorker + p.index;
    case PlannedProcess::Kind::kTimer:
      return kRankTimer;
    case PlannedProcess::Kind::kTcpReceiver:
      return kRankSipWorker + static_cast<int>(UdpWorkerCount()) + p.index;
    case PlannedProcess::Kind::kTcpMain:
      return kRankTcpMain;
    case PlannedProcess::Kind::kAttendant:
      break;
  }
  return kRankMain;
}

absl::StatusOr<pid_t> Daemon::ForkSlot(int slot) {
  PlannedProcess& p = plan_[static_cast<size_t>(slot)];
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  table_->SetType(slot, p.type);
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close(report[0]);
    close(report[1]);
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot fork ", p.type, ": ", std::strerror(error)));
  }
  if (pid == 0) {
    close(report[0]);
    ChildMain(slot, report[1]);
  }
  close(report[1]);
  table_->SetPid(slot, pid);
  p.started = Clock::now();

  // The child's start-up report, one line each: "O" when its ChildInit calls are done;
  // then, from a process that reports_listeners, "L MODULE PROTOCOL ADDRESS" lines and
  // "R" once it listens; "E TEXT" says why it failed. EOF before the end = it died.
  const bool wants_listeners = ReportsListeners(p);
  bool init_done = false;
  bool ready = false;
  bool timed_out = false;
  std::string error_text;
  std::vector<Listener> reported;
  std::string buffer;
  Clock::time_point deadline = Clock::now() + kChildInitTimeout;
  while (!ready) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd pfd{report[0], POLLIN, 0};
    if (left <= 0 || poll(&pfd, 1, static_cast<int>(left)) == 0) {
      timed_out = true;
      break;
    }
    char chunk[4096];
    const ssize_t n = read(report[0], chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buffer.append(chunk, static_cast<size_t>(n));
    for (size_t end = buffer.find('\n'); end != std::string::npos && !ready;
         end = buffer.find('\n')) {
      const std::string line = buffer.substr(0, end);
      buffer.erase(0, end + 1);
      if (line == "O") {
        init_done = true;
        ready = !wants_listeners;
        deadline = Clock::now() + kChildInitTimeout;  // binding gets its own allowance
      } else if (line == "R") {
        ready = init_done;
      } else if (absl::StartsWith(line, "E ")) {
        error_text = line.substr(2);
      } else if (absl::StartsWith(line, "L ")) {
        std::vector<std::string> f = absl::StrSplit(line.substr(2), absl::MaxSplits(' ', 2));
        if (f.size() == 3) reported.push_back(Listener{f[0], f[1], f[2]});
      }
    }
  }
  close(report[0]);
  if (ready) {
    if (wants_listeners) p.listeners = std::move(reported);
    return pid;
  }

  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  table_->SetPid(slot, 0);
  if (!error_text.empty()) {
    return absl::UnavailableError(
        absl::StrCat("process ", slot, " (", p.type, ") failed to start: ", error_text));
  }
  const char* what = !init_done ? "failed to initialise" : "failed before it listened";
  return absl::InternalError(absl::StrCat("process ", slot, " (", p.type, ") ", what,
                                          timed_out ? " in time" : "", ", it ",
                                          DescribeExit(status), "; see its log above"));
}

bool Daemon::ReportsListeners(const PlannedProcess& p) const {
  return p.kind == PlannedProcess::Kind::kModule &&
         module_specs_[p.module][p.spec].reports_listeners;
}

void Daemon::ReportListeners(std::vector<Listener> listeners) {
  if (current_slot_ == 0) {  // the attendant: Init, pre_fork, post_fork
    for (Listener& l : listeners) attendant_listeners_.push_back(std::move(l));
    return;
  }
  if (report_fd_ < 0) {
    spdlog::debug("ReportListeners in a process that does not report listeners: ignored");
    return;
  }
  std::string message;
  for (const Listener& l : listeners) {
    absl::StrAppend(&message, "L ", OneWord(l.module), " ", OneWord(l.protocol), " ",
                    OneLine(l.address), "\n");
  }
  message += "R\n";
  if (!WriteAll(report_fd_, message)) {
    spdlog::warn("cannot report listeners to the attendant: {}", std::strerror(errno));
  }
  close(report_fd_);
  report_fd_ = -1;
}

std::vector<Listener> Daemon::listeners() const {
  std::vector<Listener> all = attendant_listeners_;
  for (const PlannedProcess& p : plan_) {
    all.insert(all.end(), p.listeners.begin(), p.listeners.end());
  }
  // SIP first, then modules in loadmodule order (however their processes reported).
  auto rank = [this](const Listener& l) {
    if (l.module == "sip") return -1;
    for (size_t m = 0; m < config_.modules.size(); ++m) {
      if (config_.modules[m].name == l.module) return static_cast<int>(m);
    }
    return static_cast<int>(config_.modules.size());
  };
  std::stable_sort(all.begin(), all.end(),
                   [&rank](const Listener& a, const Listener& b) { return rank(a) < rank(b); });
  return all;
}

std::string Daemon::Banner() const {
  const std::vector<Listener> all = listeners();
  size_t width = std::string("run_dir").size();
  for (const Listener& l : all) width = std::max(width, l.module.size());
  auto row = [width](const std::string& name, const std::string& protocol,
                     const std::string& where) {
    return absl::StrCat("\n  ", name, std::string(width - name.size() + 2, ' '), protocol,
                        std::string(protocol.size() < 8 ? 8 - protocol.size() : 1, ' '), where);
  };
  std::string out = absl::StrCat("sipd ", SIPD_VERSION, " started: pid ", getpid(), ", ",
                                 plan_.size(), " processes. Listening:");
  std::string files;
  for (const Listener& l : all) {
    const bool is_file = l.protocol == "sqlite";
    absl::StrAppend(is_file ? &files : &out, row(l.module, l.protocol, l.address));
  }
  absl::StrAppend(&out, "\nFiles:", files,
                  row("run_dir", "", absl::StrCat(config_.run_dir, " (sipd.pid, listeners)")));
  return out;
}

void Daemon::ChildMain(int slot, int report_fd) {
  // Never return into the attendant's code path; never run the attendant's destructors.
  const pid_t attendant = shared_->attendant_pid.load();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != attendant) _exit(0);  // the attendant died before prctl took effect

  struct sigaction stop {};
  stop.sa_handler = &OnChildStopSignal;
  sigemptyset(&stop.sa_mask);
  stop.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR and loops re-check
  sigaction(SIGTERM, &stop, nullptr);
  signal(SIGINT, SIG_IGN);  // Ctrl-C reaches the whole group; the attendant decides
  signal(SIGHUP, SIG_IGN);
  signal(SIGCHLD, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  const PlannedProcess& p = plan_[static_cast<size_t>(slot)];
  current_slot_ = slot;
  CloseForeignDescriptors(p, report_fd);
  // Keep only the SIP descriptors this process serves (sipd/core/tcp_transport.h).
  if (transport_->tcp() != nullptr) {
    transport_->tcp()->EnterProcess(
        p.kind == PlannedProcess::Kind::kTcpMain       ? TcpTransport::Role::kTcpMain
        : p.kind == PlannedProcess::Kind::kTcpReceiver ? TcpTransport::Role::kTcpReceiver
                                                       : TcpTransport::Role::kOther,
        p.index);
  }
  SetLogProcessType(p.type);
  // A short name for top/ps/pgrep (the kernel keeps 15 bytes): sipd:sip, sipd:timer,
  // sipd:<module process type>.
  std::string comm = "sipd:";
  switch (p.kind) {
    case PlannedProcess::Kind::kSipWorker:
      comm += "sip";
      break;
    case PlannedProcess::Kind::kTimer:
      comm += "timer";
      break;
    case PlannedProcess::Kind::kTcpReceiver:
      comm += "tcp";
      break;
    case PlannedProcess::Kind::kTcpMain:
      comm += "tcp-main";
      break;
    default:
      comm += p.type;
  }
  prctl(PR_SET_NAME, comm.substr(0, 15).c_str());
  SyncLogLevel();
  if (p.kind == PlannedProcess::Kind::kModule && config_.mi_nice != 0 &&
      setpriority(PRIO_PROCESS, 0, config_.mi_nice) != 0) {
    spdlog::warn("cannot set nice {} for {}: {}", config_.mi_nice, p.type, std::strerror(errno));
  }

  int exit_code = 0;
  try {
    const bool init_child =
        p.kind != PlannedProcess::Kind::kModule || module_specs_[p.module][p.spec].init_child;
    if (init_child) {
      const int rank = ChildRank(p);
      for (auto& m : config_.modules) {
        absl::Status s = m.module->ChildInit(rank);
        if (!s.ok()) {
          const std::string why = absl::StrCat("module ", m.name, ": child init (rank ", rank,
                                               ") failed: ", s.message());
          spdlog::critical("{}", why);
          WriteAll(report_fd, absl::StrCat("E ", OneLine(why), "\n"));
          std::fflush(nullptr);
          _exit(1);
        }
      }
    }
    if (!WriteAll(report_fd, "O\n")) _exit(1);
    if (ReportsListeners(p)) {
      report_fd_ = report_fd;  // ReportListeners() sends the rest and closes it
    } else {
      close(report_fd);
    }

    switch (p.kind) {
      case PlannedProcess::Kind::kModule: {
        absl::Status status = module_specs_[p.module][p.spec].main(p.index);
        if (!status.ok()) {
          spdlog::critical("process {} ({}) failed: {}", slot, p.type,
                           std::string(status.message()));
          exit_code = 1;
        }
        if (report_fd_ >= 0) {  // ended before it reported: tell the attendant why
          WriteAll(report_fd_,
                   absl::StrCat("E ",
                                status.ok() ? "it ended before it reported its listeners"
                                            : OneLine(status.message()),
                                "\n"));
          close(report_fd_);
          report_fd_ = -1;
        }
        break;
      }
      case PlannedProcess::Kind::kSipWorker: {
        stateless_stack_ = std::make_unique<StatelessSipStack>(*transport_, sip_counters_,
                                                               sip_handlers_, to_tag_prefix_,
                                                               absl::StrCat("sipd/", SIPD_VERSION));
        const int socket = static_cast<int>(p.listener);
        const SipMessageHandler handler = thresholds_->Wrap(sip_message_handler_);
        UdpReceiver receiver(*transport_->udp(socket), socket, handler, &busy_flags_[p.index]);
        receiver.Run(*this);
        break;
      }
      case PlannedProcess::Kind::kTimer:
        timers_.Run(*this);
        break;
      case PlannedProcess::Kind::kTcpReceiver: {
        stateless_stack_ = std::make_unique<StatelessSipStack>(*transport_, sip_counters_,
                                                               sip_handlers_, to_tag_prefix_,
                                                               absl::StrCat("sipd/", SIPD_VERSION));
        TcpReceiver::Hooks hooks;
        const SipMessageHandler handler = thresholds_->Wrap(sip_message_handler_);
        hooks.handler = &handler;
        StatelessSipStack* stack = stateless_stack_.get();
        hooks.reject = [stack](const SipInbound& headers, int code, std::string_view reason) {
          stack->Reject(headers, code, reason);
        };
        hooks.busy = &busy_flags_[UdpWorkerCount() + static_cast<size_t>(p.index)];
        TcpReceiver receiver(*transport_->tcp(), p.index, std::move(hooks));
        absl::Status status = receiver.Run(*this);
        if (!status.ok()) {
          spdlog::critical("process {} ({}) failed: {}", slot, p.type,
                           std::string(status.message()));
          exit_code = 1;
        }
        break;
      }
      case PlannedProcess::Kind::kTcpMain: {
        TcpMain accepter(*transport_->tcp());
        absl::Status status = accepter.Run(*this);
        if (!status.ok()) {
          spdlog::critical("process {} ({}) failed: {}", slot, p.type,
                           std::string(status.message()));
          exit_code = 1;
        }
        break;
      }
      case PlannedProcess::Kind::kAttendant:
        break;
    }
  } catch (const std::exception& e) {
    spdlog::critical("process {} ({}) failed: {}", slot, p.type, e.what());
    if (report_fd_ >= 0) WriteAll(report_fd_, absl::StrCat("E ", OneLine(e.what()), "\n"));
    exit_code = 1;
  } catch (...) {
    spdlog::critical("process {} ({}) failed with an unknown exception", slot, p.type);
    exit_code = 1;
  }
  spdlog::debug("process {} exits", slot);
  std::fflush(nullptr);
  _exit(exit_code);
}

void Daemon::CloseForeignDescriptors(const PlannedProcess& p, int report_fd) const {
  std::vector<int> keep = {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, report_fd};
  const std::vector<int>& wake = async_table_->wake_fds();
  keep.insert(keep.end(), wake.begin(), wake.end());
  const std::vector<int> event_wake = events_->backend().wake_fds();
  keep.insert(keep.end(), event_wake.begin(), event_wake.end());
  switch (p.kind) {
    case PlannedProcess::Kind::kModule: {
      const std::vector<int>& own = module_spec_fds_[p.module][p.spec];
      keep.insert(keep.end(), own.begin(), own.end());
      break;
    }
    default:
      break;
  }
  // SIP: every process may send (the transport's descriptors); TCP roles are narrowed by
  // TcpTransport::EnterProcess right after.
  const std::vector<int> sip = transport_->Descriptors();
  keep.insert(keep.end(), sip.begin(), sip.end());
  for (int fd : OpenDescriptors()) {
    if (std::find(keep.begin(), keep.end(), fd) == keep.end()) close(fd);
  }
}

absl::Status Daemon::StartAll() {
  module_spec_fds_.assign(module_specs_.size(), {});
  for (size_t m = 0; m < module_specs_.size(); ++m) {
    module_spec_fds_[m].assign(module_specs_[m].size(), {});
    for (size_t s = 0; s < module_specs_[m].size(); ++s) {
      ProcessSpec& spec = module_specs_[m][s];
      if (spec.pre_fork) {
        // What pre_fork opens is what this group serves (and keeps across restarts).
        const std::vector<int> before = OpenDescriptors();
        absl::Status st = spec.pre_fork();
        for (int fd : OpenDescriptors()) {
          if (std::find(before.begin(), before.end(), fd) == before.end()) {
            module_spec_fds_[m][s].push_back(fd);
          }
        }
        if (!st.ok()) {
          return absl::Status(st.code(),
                              absl::StrCat("module ", config_.modules[m].name, ": pre-fork of ",
                                           spec.name, " failed: ", st.message()));
        }
      }
      for (size_t slot = 0; slot < plan_.size(); ++slot) {
        const PlannedProcess& p = plan_[slot];
        if (p.kind != PlannedProcess::Kind::kModule || p.module != m || p.spec != s) continue;
        SIPD_RETURN_IF_ERROR(ForkSlot(static_cast<int>(slot)).status());
        if (stopping()) return absl::CancelledError("shutdown requested during start-up");
      }
      if (spec.post_fork) spec.post_fork();
    }
  }
  for (size_t slot = 1; slot < plan_.size(); ++slot) {
    if (plan_[slot].kind == PlannedProcess::Kind::kModule) continue;
    SIPD_RETURN_IF_ERROR(ForkSlot(static_cast<int>(slot)).status());
  }
  return absl::OkStatus();
}

absl::Status Daemon::WritePidFile() {
  const std::string path = pid_file();
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << getpid() << "\n";
    out.close();
    if (!out) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write ", temp, ": ", std::strerror(errno)));
    }
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rename ", temp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status Daemon::WriteListenersFile() {
  std::string text =
      absl::StrCat("# sipd pid ", getpid(), ": MODULE PROTOCOL ADDRESS, one per line\n");
  for (const Listener& l : listeners()) {
    absl::StrAppend(&text, OneWord(l.module), " ", OneWord(l.protocol), " ", OneLine(l.address),
                    "\n");
  }
  const std::string path = listeners_file();
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write ", temp, ": ", std::strerror(errno)));
    }
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rename ", temp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

int Daemon::Run() {
  const sigset_t signals = AttendantSignals();
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::Status started = Explain(StartAll());
  if (started.ok()) started = WriteListenersFile();
  if (started.ok()) started = WritePidFile();
  if (!started.ok()) {
    if (started.code() == absl::StatusCode::kCancelled) {
      spdlog::info("{}", std::string(started.message()));
    } else {
      spdlog::critical("start-up failed: {}", std::string(started.message()));
    }
    StopAll();
    return started.code() == absl::StatusCode::kCancelled ? 0 : 1;
  }
  table_->SetType(0, "attendant");
  started_ = true;
  spdlog::info("{}", Banner());

  Supervise();
  StopAll();
  spdlog::info("sipd stopped");
  return 0;
}

void Daemon::Supervise() {
  const sigset_t signals = AttendantSignals();
  while (!stopping()) {
    SyncLogLevel();
    siginfo_t info{};
    const timespec timeout{0, 200 * 1000 * 1000};
    const int signal_number = sigtimedwait(&signals, &info, &timeout);
    if (signal_number == SIGTERM || signal_number == SIGINT) {
      spdlog::info("received {}, shutting down", strsignal(signal_number));
      break;
    }
    if (signal_number == SIGHUP) {
      spdlog::info(
          "SIGHUP: nothing to reload (TLS certificates are re-read within tls_refresh seconds "
          "of a change to their files)");
    }
    ReapChildren();
    RestartDue();
  }
}

void Daemon::ReapChildren() {
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    const int slot = table_->FindSlot(pid);
    if (slot <= 0) continue;
    PlannedProcess& p = plan_[static_cast<size_t>(slot)];
    table_->SetPid(slot, 0);
    if (stopping()) continue;
    if (p.kind == PlannedProcess::Kind::kModule && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      spdlog::info("process {} ({}) pid {} finished", slot, p.type, pid);
      continue;  // a module process that returns on purpose is not restarted
    }
    ScheduleRestart(p);
    spdlog::error("process {} ({}) pid {} {}; restarting it", slot, p.type, pid,
                  DescribeExit(status));
  }
}

void Daemon::ScheduleRestart(PlannedProcess& p) {
  const Clock::time_point now = Clock::now();
  // The first death restarts at once; repeated quick deaths wait 2 s, 4 s, ... 16 s.
  p.quick_deaths = (now - p.started < kQuickDeath) ? p.quick_deaths + 1 : 1;
  std::chrono::milliseconds delay(0);
  if (p.quick_deaths > 1) {
    delay = std::min(kMaxBackoff,
                     std::chrono::milliseconds(1000) * (1 << std::min(p.quick_deaths - 1, 5)));
  }
  // Never more than one start per second per slot.
  p.next_start = std::max(now + delay, p.started + std::chrono::seconds(1));
  p.restart_pending = true;
}

void Daemon::RestartDue() {
  const Clock::time_point now = Clock::now();
  for (size_t slot = 1; slot < plan_.size(); ++slot) {
    PlannedProcess& p = plan_[slot];
    if (!p.restart_pending || now < p.next_start || stopping()) continue;
    p.restart_pending = false;
    absl::StatusOr<pid_t> pid = ForkSlot(static_cast<int>(slot));
    if (pid.ok()) {
      spdlog::info("process {} ({}) restarted as pid {}", slot, p.type, *pid);
      if (started_ && ReportsListeners(p)) {
        absl::Status written = WriteListenersFile();
        if (!written.ok()) spdlog::error("{}", std::string(written.message()));
      }
      events_->ProcessRestarted(static_cast<int>(slot), p.type, *pid);
    } else {
      spdlog::error("restart failed: {}", std::string(pid.status().message()));
      ScheduleRestart(p);
    }
  }
}

void Daemon::StopAll() {
  shared_->stopping.store(true);
  for (int slot = 1; slot < table_->size(); ++slot) {
    const pid_t pid = table_->pid(slot);
    if (pid > 0) kill(pid, SIGTERM);
  }
  auto alive = [this] {
    int count = 0;
    for (int slot = 1; slot < table_->size(); ++slot) count += table_->pid(slot) > 0 ? 1 : 0;
    return count;
  };
  const Clock::time_point deadline = Clock::now() + kStopGrace;
  const sigset_t child_signal = [] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    return set;
  }();
  while (alive() > 0 && Clock::now() < deadline) {
    const timespec timeout{0, 50 * 1000 * 1000};
    sigtimedwait(&child_signal, nullptr, &timeout);
    ReapChildren();
  }
  for (int slot = 1; slot < table_->size(); ++slot) {
    const pid_t pid = table_->pid(slot);
    if (pid <= 0) continue;
    spdlog::warn("process {} ({}) pid {} did not stop in time; killing it", slot,
                 plan_[static_cast<size_t>(slot)].type, pid);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    table_->SetPid(slot, 0);
  }
  for (auto it = config_.modules.rbegin(); it != config_.modules.rend(); ++it) {
    try {
      it->module->Shutdown();
    } catch (const std::exception& e) {
      spdlog::error("module {}: shutdown failed: {}", it->name, e.what());
    }
  }
  unlink(pid_file().c_str());
  if (started_) unlink(listeners_file().c_str());
}

}  // namespace sipd
