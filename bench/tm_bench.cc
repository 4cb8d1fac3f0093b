// tm / proxy load driver (results: bench/RESULTS.md, section "tm").
//
//   tm_bench calls [--rates 1000,2000,3000] [--seconds 10] [--repeat 3]
//                  [--servers sipd,kamailio] [--children 2] [--cpus LIST]
//     Calls per second through the proxy: a sipp UAC (tests/sip/uac_call.xml: INVITE,
//     100, 180, 200, ACK, BYE, 200) -> the server -> a registered sipp UAS
//     (tests/sip/uas_call.xml), at each offered rate for --seconds. Reports goodput
//     (successful calls / wall time), failed calls, retransmissions sipp had to make and
//     the server's CPU per call (utime+stime of all its processes, /proc). With
//     `kamailio` in --servers, Kamailio 5.6 (`scripts/bootstrap.sh bench` installs it)
//     runs the same scenario on loopback with a minimal tm + registrar + usrloc + rr +
//     dialog (dlg_manage) script and the same number of UDP children; sipd loads tm and
//     dialog likewise. Runs of the two servers alternate and each figure is the median
//     of --repeat runs.
//
//   tm_bench overload [--capacity C] [--seconds 30] [--server-cpu P] [--overload-queue Q]
//                     [--overload-delay D] [--cpus LIST] [--repeat N] [--paired]
//     Offers 2x capacity to sipd for --seconds (capacity: --capacity, else the best
//     goodput of a quick `calls` ramp) and reports goodput against capacity, and whether
//     retransmissions were absorbed: tm:UAS_transactions must grow by exactly one per
//     INVITE and BYE sipp created (a retransmitted request never makes a second
//     transaction). --paired runs 1x (capacity offered) before each 2x run and gives the
//     2x goodput against that run's too: on this VM what a capped sipd carries drifts
//     between minutes.
//
//   tm_bench refusals [--invites 500] [--rounds 40] [--children 2] [--cpus LIST]
//     What sipd's UDP workers spend refusing an INVITE under overload (INVITE in, 503
//     out), in the real process with its system calls: per round the SIP receivers are
//     stopped (SIGSTOP), --invites new INVITEs are queued, and once they are older than
//     tm's overload_delay (1 ms here) the receivers go on and refuse them all while the
//     bench, asleep in recv() between datagrams, takes the 503s. Then the ACK of each 503
//     is queued the same way and absorbed (done once sl:received_ACKs counted them all).
//     Reports the workers' CPU (/proc/PID/schedstat) per refused INVITE, per ACK and per
//     refused call (the two), and 503s lost.
//
//   tm_bench soak [--rate 2000] [--seconds 10] [--children 2] [--cpus LIST]
//     Calls at --rate for --seconds (a long run), then waits until every transaction
//     and dialog the calls made is gone, and compares sipd's state with its state
//     before: tm:inuse_transactions, dialog:active_dialogs and shmem:used_size (what
//     the calls left behind in shared memory, per call).
//
// Everything runs on this machine; the figures depend on its load (see RESULTS.md).
// TM_BENCH_KEEP=1 keeps the work directory (/tmp/sipd-tm-bench-*: sipd's and sipp's
// logs, sipp's statistics files with the failure reasons, e.g. FailedTimeoutOnRecv for
// a call refused with 503) instead of removing it; TM_BENCH_TRACE=1 also has the UAS
// trace every message (sipp -trace_msg: ~3 MB per 1,000 calls).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "registry/text_format.h"
#include "sipd/modules/tm/sip_message.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/udp_peer.h"
#include "tests/tm/sip_peers.h"

namespace {

using sipd::testing::MiClient;
using sipd::testing::SipdInstance;
using sipd::testing::SippProcess;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Config lines appended to sipd's (--extra), e.g. "mi_nice = 0".
std::string g_extra;

// A proxy under test: where to send, which processes to measure.
class Server {
 public:
  virtual ~Server() = default;
  virtual std::string name() const = 0;
  virtual int port() const = 0;
  virtual std::vector<pid_t> pids() const = 0;
  // Registers `user` at 127.0.0.1:`port`.
  virtual bool Register(const std::string& user, int port) = 0;
  // tm:UAS_transactions (sipd only; -1 elsewhere).
  virtual long long ServerTransactions() { return -1; }
  // INVITEs refused with 503 under overload so far; -1 if unknown.
  virtual long long RefusedInvites() { return -1; }
};

// tm's overload control: modparam("tm", "overload_queue", Q), ("overload_delay", D) and
// ("overload_sustain", S) for each value >= 0 (else tm's default).
struct Overload {
  int queue_percent = -1;
  int delay_ms = -1;
  int sustain_ms = -1;
  std::string Params() const {
    std::string out;
    if (queue_percent >= 0) {
      absl::StrAppend(&out, "modparam(\"tm\", \"overload_queue\", ", queue_percent, ")\n");
    }
    if (sustain_ms >= 0) {
      absl::StrAppend(&out, "modparam(\"tm\", \"overload_sustain\", ", sustain_ms, ")\n");
    }
    if (delay_ms >= 0) {
      absl::StrAppend(&out, "modparam(\"tm\", \"overload_delay\", ", delay_ms, ")\n");
    }
    return out;
  }
};

// Udp RcvbufErrors of /proc/net/snmp: datagrams dropped because a receive buffer was full
// (every socket of the host); -1 if unreadable.
long long UdpReceiveBufferErrors() {
  std::ifstream in("/proc/net/snmp");
  std::string line, names;
  while (std::getline(in, line)) {
    if (!line.starts_with("Udp: ")) continue;
    if (names.empty()) {
      names = line;
      continue;
    }
    std::vector<std::string> keys = absl::StrSplit(names, ' ', absl::SkipEmpty());
    std::vector<std::string> values = absl::StrSplit(line, ' ', absl::SkipEmpty());
    for (size_t i = 0; i < keys.size() && i < values.size(); ++i) {
      if (keys[i] == "RcvbufErrors") return std::stoll(values[i]);
    }
  }
  return -1;
}

class SipdServer final : public Server {
 public:
  SipdServer(int children, const Overload& overload) {
    sipd_ = std::make_unique<SipdInstance>(
        SipdInstance::Options{.children = children,
                              .log_level = 1,
                              .extra_config = "shm_size = 512\n"
                                              "loadmodule \"usrloc\"\n"
                                              "loadmodule \"registrar\"\n"
                                              "loadmodule \"tm\"\n"
                                              "loadmodule \"dialog\"\n" +
                                              overload.Params() + g_extra + "\n"});
    absl::Status s = sipd_->Start();
    if (!s.ok()) {
      std::fprintf(stderr, "sipd did not start: %s\n%s\n", s.ToString().c_str(),
                   sipd_->log().c_str());
      std::exit(1);
    }
    mi_ = std::make_unique<MiClient>(sipd_->grpc_target());
  }
  std::string name() const override { return "sipd"; }
  int port() const override { return sipd_->sip_port(); }
  std::string grpc_target() const { return sipd_->grpc_target(); }
  std::vector<pid_t> pids() const override {
    std::vector<pid_t> all = sipd::testing::ChildPids(sipd_->pid());
    all.push_back(sipd_->pid());
    return all;
  }
  bool Register(const std::string& user, int port) override {
    mi_->Execute("ul_rm", {"location", user});
    return mi_->Execute("ul_add",
                        {"location", user, absl::StrCat("sip:", user, "@127.0.0.1:", port), "0",
                         "1.00", "0", "0", "0", "4294967295"})
               .code == 200;
  }
  long long ServerTransactions() override { return Statistic("tm:UAS_transactions"); }
  long long RefusedInvites() override { return Statistic("tm:overload_refused"); }
  std::string Log() const { return sipd_->log(); }
  // dlg_list as the FIFO would show it.
  std::string DialogList() {
    return sipd::mi::RenderText(mi_->Execute("dlg_list").reply, "\t", false);
  }
  // Statistics by their full names ("group:name"), in one MI call; -1 for one sipd does
  // not answer.
  std::map<std::string, long long> Statistics(const std::vector<std::string>& full_names) {
    std::vector<std::string> names;
    for (const std::string& n : full_names) names.push_back(n.substr(n.find(':') + 1));
    const auto stats = mi_->Statistics(names);
    std::map<std::string, long long> out;
    for (const std::string& n : full_names) {
      auto it = stats.find(n);
      out[n] = it == stats.end() ? -1 : static_cast<long long>(it->second);
    }
    return out;
  }
  long long Statistic(const std::string& full_name) { return Statistics({full_name})[full_name]; }

 private:
  std::unique_ptr<SipdInstance> sipd_;
  std::unique_ptr<MiClient> mi_;
};

// Kamailio 5.6 with the classic registrar + proxy script (generated into a temp dir; it
// is a benchmark fixture, not a product file).
class KamailioServer final : public Server {
 public:
  KamailioServer(int children, const std::string& work) : dir_(work + "/kamailio") {
    std::filesystem::create_directories(dir_);
    // Kamailio cannot listen on port 0: try ports until one binds (kept once bound).
    for (int port = 35060; port < 35160 && pid_ <= 0; ++port) {
      WriteConfig(children, port);
      const pid_t pid = fork();
      if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        const std::string log = dir_ + "/kamailio.log";
        const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        // Its tm clones every parsed request into shared memory: 1 GB is what a few
        // thousand calls/s with the 5 s wait timer need. -x tlsf: the fast allocator
        // (Debian's default, qm, keeps debug records and is slower).
        execlp("kamailio", "kamailio", "-f", (dir_ + "/kamailio.cfg").c_str(), "-DD", "-E", "-m",
               "1024", "-M", "16", "-x", "tlsf", static_cast<char*>(nullptr));
        _exit(127);
      }
      setpgid(pid, pid);
      const bool up = sipd::testing::WaitUntil(
          [&] {
            int status = 0;
            if (waitpid(pid, &status, WNOHANG) == pid) return true;  // died: next port
            return std::filesystem::exists(dir_ + "/kamailio_ctl");
          },
          10s);
      if (up && std::filesystem::exists(dir_ + "/kamailio_ctl") && kill(pid, 0) == 0) {
        pid_ = pid;
        port_ = port;
      } else {
        kill(-pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
    if (pid_ <= 0) {
      std::fprintf(stderr,
                   "kamailio did not start (is it installed? scripts/bootstrap.sh bench)\n");
      std::exit(1);
    }
  }
  ~KamailioServer() override {
    kill(-pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  std::string name() const override { return "kamailio 5.6"; }
  int port() const override { return port_; }
  std::vector<pid_t> pids() const override {
    std::vector<pid_t> all = sipd::testing::ChildPids(pid_);
    all.push_back(pid_);
    return all;
  }
  bool Register(const std::string& user, int port) override {
    // kamcmd ul.add TABLE AOR CONTACT EXPIRES Q PATH FLAGS CFLAGS METHODS ("." = no path)
    const std::string kamcmd = absl::StrCat("kamcmd -s unix:", dir_, "/kamailio_ctl ");
    (void)std::system(absl::StrCat(kamcmd, "ul.rm location ", user, " >/dev/null 2>&1").c_str());
    const std::string command =
        absl::StrCat(kamcmd, "ul.add location ", user, " sip:", user, "@127.0.0.1:", port,
                     " 0 1.0 . 0 0 4294967295 >/dev/null 2>&1");
    return std::system(command.c_str()) == 0;
  }

 private:
  void WriteConfig(int children, int port) {
    std::ofstream out(dir_ + "/kamailio.cfg");
    out << "#!KAMAILIO\n"
           "debug=0\nlog_stderror=yes\nauto_aliases=no\ndns=no\nrev_dns=no\n"
           "maxbuffer=2097152\n"
        << "children=" << children << "\ntcp_children=1\n"
        << "listen=udp:127.0.0.1:" << port << "\n"
        << "mpath=\"/usr/lib/x86_64-linux-gnu/kamailio/modules/\"\n"
           "loadmodule \"kex.so\"\nloadmodule \"tm.so\"\nloadmodule \"sl.so\"\n"
           "loadmodule \"rr.so\"\nloadmodule \"pv.so\"\nloadmodule \"maxfwd.so\"\n"
           "loadmodule \"siputils.so\"\nloadmodule \"textops.so\"\n"
           "loadmodule \"usrloc.so\"\nloadmodule \"registrar.so\"\nloadmodule \"ctl.so\"\n"
           "loadmodule \"dialog.so\"\n"
        << "modparam(\"ctl\", \"binrpc\", \"unix:" << dir_ << "/kamailio_ctl\")\n"
        << "request_route {\n"
           "  if (!mf_process_maxfwd_header(\"10\")) { sl_send_reply(\"483\", \"Too Many Hops\"); "
           "exit; }\n"
           "  if (has_totag()) {\n"
           "    if (loose_route()) { dlg_manage(); t_relay(); exit; }\n"
           "    if (is_method(\"ACK\")) { if (t_check_trans()) { t_relay(); } exit; }\n"
           "    sl_send_reply(\"404\", \"Not here\"); exit;\n"
           "  }\n"
           "  if (is_method(\"CANCEL\")) { if (t_check_trans()) { t_relay(); } exit; }\n"
           "  t_check_trans();\n"
           "  if (is_method(\"REGISTER\")) { save(\"location\"); exit; }\n"
           "  if (is_method(\"INVITE\")) { dlg_manage(); record_route(); }\n"
           "  if (!lookup(\"location\")) { sl_send_reply(\"404\", \"Not Found\"); exit; }\n"
           "  t_relay();\n"
           "}\n";
  }

  std::string dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct CallRun {
  double offered = 0;
  double goodput = 0;         // successful calls / wall time of the whole run
  double window_goodput = 0;  // successful calls / s during the offered period
  long long successful = 0;
  long long failed = 0;
  long long invites = 0;  // INVITEs sipp created (first sends)
  long long byes = 0;
  long long retransmissions = 0;
  double server_cpu_us_per_call = -1;
  double server_cpu_percent = -1;      // of one core
  long long server_transactions = -1;  // tm:UAS_transactions delta (sipd)
  long long refused = -1;              // tm:overload_refused delta (sipd)
};

// Messages and retransmissions of a request line of sipp's scenario screen
// ("  INVITE ---------->  16000  7  0").
void SentAndRetransmitted(const std::string& screen, const std::string& method, long long* sent,
                          long long* retrans) {
  std::regex line("\\s" + method + R"( ---------->\s+(\d+)\s+(\d+))");
  std::smatch m;
  auto begin = screen.cbegin();
  while (std::regex_search(begin, screen.cend(), m, line)) {
    *sent = std::stoll(m[1]);
    *retrans = std::stoll(m[2]);
    begin = m.suffix().first;
  }
}

// sipp's statistics file (-trace_stat -stf FILE -fd 1): one row per second.
struct SippStats {
  double elapsed = 0;  // s
  long long created = 0;
  long long successful = 0;
  long long failed = 0;
  long long retransmissions = 0;
};

double ParseElapsed(const std::string& text) {  // "HH:MM:SS" or "HH:MM:SS:uuuuuu"
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  if (parts.size() < 3) return 0;
  double v = std::stod(parts[0]) * 3600 + std::stod(parts[1]) * 60 + std::stod(parts[2]);
  if (parts.size() > 3) v += std::stod(parts[3]) / 1e6;
  return v;
}

// The rows of a statistics file, in order.
std::vector<SippStats> ReadSippStats(const std::string& path) {
  std::vector<SippStats> rows;
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return rows;
  std::vector<std::string> header = absl::StrSplit(line, ';');
  auto column = [&](const std::string& name) {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return static_cast<int>(i);
    }
    return -1;
  };
  const int elapsed = column("ElapsedTime(C)");
  const int created = column("TotalCallCreated");
  const int ok = column("SuccessfulCall(C)");
  const int failed = column("FailedCall(C)");
  const int retrans = column("Retransmissions(C)");
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ';');
    auto number = [&](int c) {
      long long v = 0;
      return c >= 0 && static_cast<size_t>(c) < f.size() && absl::SimpleAtoi(f[c], &v) ? v : 0;
    };
    SippStats row;
    if (elapsed >= 0 && static_cast<size_t>(elapsed) < f.size()) {
      row.elapsed = ParseElapsed(f[elapsed]);
    }
    row.created = number(created);
    row.successful = number(ok);
    row.failed = number(failed);
    row.retransmissions = number(retrans);
    rows.push_back(row);
  }
  return rows;
}

// sipp's socket buffers (-buff_size; the kernel caps them at net.core.rmem_max /
// wmem_max). sipp's default, 64 KB, overflows at a few thousand calls/s: in a 2x
// overload run the four sipp sockets dropped ~35,000 datagrams (/proc/net/udp), and the
// retransmissions they caused loaded the proxy under test (RESULTS.md, "Overload: the
// load generator dropped what it was sent").
constexpr const char* kSippBufferBytes = "4194304";

// Offers `rate` calls/s for `seconds` from `uacs` sipp UAC processes, each calling its own
// UAS (users bob0, bob1, ...) at rate/uacs: one sipp cannot offer or answer much more
// than ~5000 calls/s here.
CallRun RunCalls(Server& server, double rate, double seconds, const std::string& work, int tag,
                 int uacs = 1) {
  CallRun run;
  run.offered = rate;
  // A fresh UAS per run: calls a previous run left half done (and their retransmitted
  // 200s) must not load this one.
  // One UAS (user bobN) per UAC: one sipp cannot answer much more than ~5000 calls/s.
  std::vector<std::unique_ptr<SippProcess>> servers;
  for (int u = 0; u < uacs; ++u) {
    std::vector<std::string> uas_args = {"-buff_size", kSippBufferBytes};
    if (std::getenv("TM_BENCH_TRACE") != nullptr) uas_args.push_back("-trace_msg");
    servers.push_back(
        SippProcess::Start("uas_call.xml", uas_args, work, absl::StrCat("uas-", tag, "-", u)));
    auto uas_port = servers.back()->SipPort(false);
    if (!uas_port.ok() || !server.Register(absl::StrCat("bob", u), *uas_port)) {
      std::fprintf(stderr, "cannot set up the UAS\n");
      return run;
    }
  }
  const double each = rate / uacs;
  const long long calls = static_cast<long long>(each * seconds);
  const std::vector<pid_t> pids = server.pids();
  const long long transactions_before = server.ServerTransactions();
  const long long refused_before = server.RefusedInvites();
  const long long ticks_before = sipd::bench::TotalCpuTicks(pids);
  const auto start = Clock::now();
  std::vector<std::unique_ptr<SippProcess>> clients;
  for (int u = 0; u < uacs; ++u) {
    clients.push_back(
        SippProcess::Start("uac_call.xml",
                           {"-s", absl::StrCat("bob", u), absl::StrCat("127.0.0.1:", server.port()),
                            "-r", absl::StrCat(each), "-m", absl::StrCat(calls), "-l",
                            absl::StrCat(static_cast<long long>(each * 3)), "-timeout",
                            absl::StrCat(static_cast<int>(seconds * 4 + 30), "s"), "-trace_stat",
                            "-stf", absl::StrCat(work, "/uac-", tag, "-", u, ".csv"), "-fd", "1",
                            // A refused call (503) is ACKed and ends: no BYE for it.
                            "-default_behaviors", "all,-bye", "-buff_size", kSippBufferBytes},
                           work, absl::StrCat("uac-", tag, "-", u)));
  }
  for (auto& uac : clients) uac->Wait(std::chrono::seconds(static_cast<int>(seconds * 4 + 40)));
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  const long long ticks_after = sipd::bench::TotalCpuTicks(pids);
  double window_successful = 0;
  for (int u = 0; u < uacs; ++u) {
    const std::string screen = clients[u]->output();
    long long invites = 0, byes = 0, r1 = 0, r2 = 0;
    SentAndRetransmitted(screen, "INVITE", &invites, &r1);
    SentAndRetransmitted(screen, "BYE", &byes, &r2);
    const std::vector<SippStats> rows =
        ReadSippStats(absl::StrCat(work, "/uac-", tag, "-", u, ".csv"));
    if (rows.empty()) {
      std::fprintf(stderr, "sipp UAC gave no statistics; the end of its output:\n%s\n",
                   screen.substr(screen.size() > 3000 ? screen.size() - 3000 : 0).c_str());
      run.failed += calls;
      continue;
    }
    const SippStats& last = rows.back();
    run.successful += last.successful;
    run.failed += last.failed;
    run.retransmissions += last.retransmissions;
    // killed before its final screen: every call created sent an INVITE
    run.invites += invites > 0 ? invites : last.created;
    run.byes += byes;
    // Goodput while load was offered: successful calls by the end of the offered period.
    const SippStats* at_end = &rows.front();
    for (const SippStats& r : rows) {
      if (r.elapsed <= seconds + 0.5) at_end = &r;
    }
    if (at_end->elapsed > 0) window_successful += at_end->successful / at_end->elapsed;
  }
  run.window_goodput = window_successful;
  run.goodput = run.successful > 0 ? run.successful / wall : 0;
  if (ticks_before >= 0 && ticks_after >= 0 && run.successful > 0) {
    run.server_cpu_us_per_call = sipd::bench::CpuMicrosPerCall(
        ticks_before, ticks_after, static_cast<uint64_t>(run.successful));
    run.server_cpu_percent =
        100.0 * static_cast<double>(ticks_after - ticks_before) / sysconf(_SC_CLK_TCK) / wall;
  }
  const long long transactions_after = server.ServerTransactions();
  if (transactions_before >= 0 && transactions_after >= 0) {
    run.server_transactions = transactions_after - transactions_before;
  }
  const long long refused_after = server.RefusedInvites();
  if (refused_before >= 0 && refused_after >= 0) run.refused = refused_after - refused_before;
  return run;
}

std::vector<double> ParseRates(const std::string& list) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    double v = 0;
    if (absl::SimpleAtod(part, &v) && v > 0) out.push_back(v);
  }
  return out;
}

struct Setup {
  std::unique_ptr<Server> server;
};

Setup StartServer(const std::string& kind, int children, const std::string& work,
                  const Overload& overload) {
  Setup s;
  if (kind == "kamailio") {
    s.server = std::make_unique<KamailioServer>(children, work);
  } else {
    s.server = std::make_unique<SipdServer>(children, overload);
  }
  return s;
}

// Caps the CPU of a server's processes at `percent` of one core with a cgroup (v1 `cpu`
// controller, /sys/fs/cgroup/cpu/sipd-tm-bench-PID), so that the server and not the
// sipp processes sharing the machine is the bottleneck. The cgroup is removed by the
// destructor, once the server's processes are gone.
class CpuCap {
 public:
  ~CpuCap() {
    if (path_.empty()) return;
    sipd::testing::WaitUntil([&] { return rmdir(path_.c_str()) == 0; }, 10s);
  }
  // `period_ms`: the quota is `percent` of each period. A long period makes the server
  // stop and go (at 12 %, 88 ms frozen in every 100 ms), which adds queueing of its own.
  bool Apply(const Server& server, double percent, int period_ms) {
    path_ = absl::StrCat("/sys/fs/cgroup/cpu/sipd-tm-bench-", getpid());
    if (mkdir(path_.c_str(), 0755) != 0 && errno != EEXIST) {
      std::fprintf(stderr, "cannot create %s: %s\n", path_.c_str(), std::strerror(errno));
      path_.clear();
      return false;
    }
    std::ofstream(path_ + "/cpu.cfs_period_us") << period_ms * 1000;
    std::ofstream(path_ + "/cpu.cfs_quota_us")
        << static_cast<long long>(percent * 10.0 * period_ms);
    for (pid_t pid : server.pids()) std::ofstream(path_ + "/cgroup.procs") << pid << "\n";
    return true;
  }

 private:
  std::string path_;
};

void Renice(Server& server, int nice_value) {
  if (nice_value == 0) return;
  for (pid_t pid : server.pids()) setpriority(PRIO_PROCESS, static_cast<id_t>(pid), nice_value);
}

struct RefusalRun {
  double cpu_us_per_refusal = 0;
  double cpu_us_per_ack = 0;  // the ACK of each 503, absorbed
  long long refused = 0;
  long long lost = 0;  // INVITEs that got no 503
};

// See "tm_bench refusals" above. sipd must run with overload_delay 1 and the queue test
// off.
RefusalRun RunRefusals(SipdServer& server, int invites, int rounds, int tag) {
  RefusalRun out;
  const sipd::testing::UdpPeer client;
  // Room for a round's 503s: past net.core.rmem_max as root, else up to it.
  const int buffer = 8 << 20;
  if (setsockopt(client.fd(), SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) != 0 &&
      setsockopt(client.fd(), SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer) != 0) {
    std::fprintf(stderr, "client socket: %s\n", std::strerror(errno));
    std::exit(1);
  }
  absl::StatusOr<std::vector<pid_t>> receivers =
      sipd::bench::PidsOfTypeOverGrpc(server.grpc_target(), "SIP receiver");
  if (!receivers.ok() || receivers->empty()) {
    std::fprintf(stderr, "no SIP receivers\n");
    std::exit(1);
  }
  const long long refused_before = server.RefusedInvites();
  // Queues a burst with `queue` while the receivers are stopped, lets them go on, waits
  // with `drain` until they handled it, and returns their CPU time meanwhile.
  auto burst = [&](const std::function<void()>& queue, const std::function<void()>& drain) {
    for (pid_t pid : *receivers) kill(pid, SIGSTOP);
    queue();
    const double before = sipd::bench::TotalSchedCpuMicros(*receivers);
    for (pid_t pid : *receivers) kill(pid, SIGCONT);
    drain();
    return sipd::bench::TotalSchedCpuMicros(*receivers) - before;
  };
  double cpu = 0;
  double ack_cpu = 0;
  long long received = 0;
  long long acked = 0;
  char reply[4096];
  std::vector<std::pair<std::string, std::string>> refused_calls;  // (Call-ID, To-tag)
  for (int r = 0; r < rounds; ++r) {
    refused_calls.clear();
    cpu += burst(
        [&] {
          for (int i = 0; i < invites; ++i) {
            client.SendTo(server.port(), sipd::testing::MakeSipRequest(
                                             "INVITE", server.port(),
                                             absl::StrCat("refusal-", tag, "-", r, "-", i)));
          }
          // Older than overload_delay (1 ms) before anyone reads them.
          const auto queued = Clock::now();
          while (Clock::now() - queued < 3ms) {
          }
        },
        [&] {
          // Read into one small buffer (UdpPeer::Receive makes a 64 KB string per
          // datagram), so that the bench keeps up with the 503s and sleeps between them.
          while (static_cast<int>(refused_calls.size()) < invites) {
            pollfd p{client.fd(), POLLIN, 0};
            if (poll(&p, 1, 2000) != 1) break;  // the rest are lost
            const ssize_t n = recv(client.fd(), reply, sizeof reply, 0);
            if (n <= 0) continue;
            auto parsed =
                sipd::tm::SipMessage::Parse(std::string_view(reply, static_cast<size_t>(n)));
            if (parsed.ok() && parsed->status() == 503) {
              refused_calls.emplace_back(parsed->call_id(), parsed->to_tag());
            }
          }
        });
    received += static_cast<long long>(refused_calls.size());
    // The ACK of each 503 (the same branch, the 503's To-tag), queued the same way; done
    // once sipd counted them all (sl:received_ACKs).
    const long long acks_before = server.Statistic("sl:received_ACKs");
    const std::string to = absl::StrCat("To: <sip:127.0.0.1:", server.port(), ">");
    ack_cpu += burst(
        [&] {
          for (const auto& [call_id, to_tag] : refused_calls) {
            std::string ack = sipd::testing::MakeSipRequest("ACK", server.port(), call_id);
            ack.insert(ack.find(to) + to.size(), absl::StrCat(";tag=", to_tag));
            client.SendTo(server.port(), ack);
          }
        },
        [&] {
          const auto waited = Clock::now();
          while (server.Statistic("sl:received_ACKs") - acks_before <
                 static_cast<long long>(refused_calls.size())) {
            if (Clock::now() - waited > 5s) {
              std::fprintf(stderr, "round %d: sipd did not count its ACKs\n", r);
              std::exit(1);
            }
            std::this_thread::sleep_for(1ms);  // polling sipd's counter
          }
        });
    acked += static_cast<long long>(refused_calls.size());
  }
  out.refused = server.RefusedInvites() - refused_before;
  out.lost = static_cast<long long>(invites) * rounds - received;
  out.cpu_us_per_refusal = received > 0 ? cpu / static_cast<double>(received) : 0;
  out.cpu_us_per_ack = acked > 0 ? ack_cpu / static_cast<double>(acked) : 0;
  return out;
}

double LoadAverage() {
  double one = 0;
  std::ifstream in("/proc/loadavg");
  in >> one;
  return one;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("tm / proxy benchmarks");
  // Options of the app (--extra) may also follow the subcommand.
  app.fallthrough();
  app.add_option("--extra", g_extra, "config lines appended to sipd's config");
  app.require_subcommand(1);
  std::string rates = "1000,2000,3000";
  double seconds = 10;
  int repeat = 3;
  std::string servers = "sipd";
  int children = 2;
  std::string cpus;
  double capacity = 0;
  CLI::App* calls = app.add_subcommand("calls", "calls/s through the proxy");
  calls->add_option("--rates", rates, "offered calls/s, comma-separated");
  calls->add_option("--seconds", seconds, "seconds of calls per run");
  calls->add_option("--repeat", repeat, "runs per figure (median)");
  calls->add_option("--servers", servers, "sipd,kamailio");
  calls->add_option("--children", children, "UDP workers of each server");
  CLI::App* overload = app.add_subcommand("overload", "2x capacity for --seconds");
  overload->add_option("--capacity", capacity, "calls/s (default: measured first)");
  overload->add_option("--seconds", seconds, "seconds at 2x");
  overload->add_option("--children", children, "UDP workers of the server");
  std::string overload_server = "sipd";
  overload->add_option("--server", overload_server, "sipd or kamailio");
  std::string ramp = "2000,3000,4000,5000,6000";
  overload->add_option("--ramp", ramp, "offered calls/s of the capacity ramp");
  int overload_repeat = 1;
  overload
      ->add_option("--repeat", overload_repeat,
                   "2x runs on the same server, each once the last one's calls have ended "
                   "(a row each, then the median)")
      ->check(CLI::Range(1, 100));
  bool overload_paired = false;
  overload->add_flag("--paired", overload_paired,
                     "before each 2x run, a run at 1x (capacity offered) on the same sipd: the "
                     "2x goodput is also given against that run's, what sipd carried minutes "
                     "before on this host");
  CLI::App* refusals = app.add_subcommand(
      "refusals", "sipd's CPU per INVITE refused with 503 under overload, system calls included");
  int refusal_invites = 500;
  int refusal_rounds = 40;
  int refusal_repeat = 5;
  refusals->add_option("--invites", refusal_invites, "INVITEs queued per round")
      ->check(CLI::Range(1, 1500));
  refusals->add_option("--rounds", refusal_rounds, "rounds per run")->check(CLI::Range(1, 10000));
  refusals->add_option("--repeat", refusal_repeat, "runs (a row each, then the median)")
      ->check(CLI::Range(1, 100));
  refusals->add_option("--children", children, "UDP workers of sipd");
  CLI::App* soak = app.add_subcommand(
      "soak", "calls for --seconds, then sipd's transactions, dialogs and shared memory");
  double soak_rate = 2000;
  soak->add_option("--rate", soak_rate, "offered calls/s");
  soak->add_option("--seconds", seconds, "seconds of calls");
  soak->add_option("--children", children, "UDP workers of sipd");
  int nice_value = 0;
  double cpu_quota = 0;
  int cpu_period_ms = 100;
  Overload overload_control;
  refusals->add_option("--cpus", cpus, "pin the bench and everything it starts (taskset list)");
  for (CLI::App* sub : {calls, overload, soak}) {
    sub->add_option("--overload-queue", overload_control.queue_percent,
                    "sipd's tm overload_queue (% of a UDP receive queue; 0 = off)");
    sub->add_option("--overload-sustain", overload_control.sustain_ms,
                    "sipd's tm overload_sustain (ms the queue must stay above overload_queue)");
    sub->add_option("--overload-delay", overload_control.delay_ms,
                    "sipd's tm overload_delay (ms an INVITE may wait in the receive queue; "
                    "0 = off)");
    sub->add_option("--cpus", cpus, "pin the bench and everything it starts (taskset list)");
    sub->add_option("--server-nice", nice_value, "nice value for every server process");
    sub->add_option("--server-cpu", cpu_quota,
                    "cap the server's processes at this % of one core (a cgroup): the server, "
                    "not sipp, becomes the bottleneck");
    sub->add_option("--server-cpu-period-ms", cpu_period_ms,
                    "the cap's accounting period (ms, 1-1000): --server-cpu % of each period")
        ->check(CLI::Range(1, 1000));
  }
  CLI11_PARSE(app, argc, argv);
  if (!cpus.empty()) {
    auto list = sipd::bench::ParseCpuList(cpus);
    if (!list.ok() || !sipd::bench::PinToCpus(*list).ok()) {
      std::fprintf(stderr, "bad --cpus\n");
      return 2;
    }
  }
  char dir[] = "/tmp/sipd-tm-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 1;
  const std::string work = dir;
  std::printf("load average at start: %.2f\n", LoadAverage());

  if (calls->parsed()) {
    std::vector<std::string> kinds = absl::StrSplit(servers, ',', absl::SkipWhitespace());
    std::map<std::string, CpuCap> caps;  // destroyed after the servers
    std::map<std::string, Setup> setups;
    for (const std::string& k : kinds) {
      setups[k] = StartServer(k, children, work, overload_control);
      Renice(*setups[k].server, nice_value);
      if (cpu_quota > 0 && !caps[k].Apply(*setups[k].server, cpu_quota, cpu_period_ms)) return 1;
    }
    // results[server][rate] = runs
    std::map<std::string, std::map<double, std::vector<CallRun>>> results;
    int tag = 0;
    for (int r = 0; r < repeat; ++r) {
      for (double rate : ParseRates(rates)) {
        for (const std::string& k : kinds) {
          CallRun run = RunCalls(*setups[k].server, rate, seconds, work, tag++);
          std::fprintf(stderr,
                       "%s rate %.0f: goodput %.0f, failed %lld, retrans %lld, cpu %.1f us/call\n",
                       k.c_str(), rate, run.goodput, run.failed, run.retransmissions,
                       run.server_cpu_us_per_call);
          results[k][rate].push_back(run);
        }
      }
    }
    std::printf("load average at end: %.2f\n\n", LoadAverage());
    sipd::bench::MarkdownTable table(
        {"server", "offered calls/s", "goodput calls/s", "failed %", "sipp retrans/call",
         "server CPU us/call", "server CPU % (1 core)"},
        1);
    table.PrintHeader();
    for (const std::string& k : kinds) {
      for (const auto& [rate, runs] : results[k]) {
        std::vector<double> goodput, failed, retrans, cpu, percent;
        for (const CallRun& c : runs) {
          goodput.push_back(c.goodput);
          const double total = static_cast<double>(c.successful + c.failed);
          failed.push_back(total > 0 ? 100.0 * c.failed / total : 100);
          retrans.push_back(total > 0 ? c.retransmissions / total : 0);
          cpu.push_back(c.server_cpu_us_per_call);
          percent.push_back(c.server_cpu_percent);
        }
        using sipd::bench::Median;
        table.PrintRow(
            {setups[k].server->name(), absl::StrFormat("%.0f", rate),
             absl::StrFormat("%.0f", Median(goodput)), absl::StrFormat("%.2f", Median(failed)),
             absl::StrFormat("%.3f", Median(retrans)), absl::StrFormat("%.1f", Median(cpu)),
             absl::StrFormat("%.0f", Median(percent))});
      }
    }
  } else if (refusals->parsed()) {
    Overload refuse_by_age;
    refuse_by_age.queue_percent = 0;
    refuse_by_age.delay_ms = 1;
    SipdServer server(children, refuse_by_age);
    sipd::bench::MarkdownTable table(
        {"run", "INVITEs refused", "503s lost", "worker CPU us per refusal", "per ACK absorbed",
         "per refused call"},
        1);
    table.PrintHeader();
    std::vector<double> costs;
    std::vector<double> ack_costs;
    std::vector<double> call_costs;
    for (int r = 0; r < refusal_repeat; ++r) {
      const RefusalRun run = RunRefusals(server, refusal_invites, refusal_rounds, r);
      costs.push_back(run.cpu_us_per_refusal);
      ack_costs.push_back(run.cpu_us_per_ack);
      call_costs.push_back(run.cpu_us_per_refusal + run.cpu_us_per_ack);
      table.PrintRow({absl::StrCat(r + 1), absl::StrCat(run.refused), absl::StrCat(run.lost),
                      absl::StrFormat("%.2f", run.cpu_us_per_refusal),
                      absl::StrFormat("%.2f", run.cpu_us_per_ack),
                      absl::StrFormat("%.2f", call_costs.back())});
    }
    std::printf(
        "\nmedian worker CPU per refusal: %.2f us, per ACK: %.2f us, per refused call: %.2f us "
        "(load average at end: %.2f)\n",
        sipd::bench::Median(costs), sipd::bench::Median(ack_costs), sipd::bench::Median(call_costs),
        LoadAverage());
  } else if (soak->parsed()) {
    CpuCap cap;  // destroyed after the server
    SipdServer server(children, overload_control);
    Renice(server, nice_value);
    if (cpu_quota > 0 && !cap.Apply(server, cpu_quota, cpu_period_ms)) return 1;
    const std::vector<std::string> names = {"tm:inuse_transactions", "dialog:active_dialogs",
                                            "shmem:used_size"};
    // What went wrong, if anything: counted over the run and the settling.
    const std::vector<std::string> trouble = {
        "core:drop_replies",   "core:drop_requests",  "core:err_requests", "tm:4xx_transactions",
        "tm:5xx_transactions", "tm:6xx_transactions", "sl:5xx_replies",    "tm:UAS_transactions"};
    std::vector<std::string> all = names;
    all.insert(all.end(), trouble.begin(), trouble.end());
    const std::map<std::string, long long> before = server.Statistics(all);  // one MI call
    const long long dropped_before = UdpReceiveBufferErrors();
    // One sipp UAC and UAS pair per 2,500 calls/s (one sipp tops out near 5,000).
    const int uacs = std::max(1, static_cast<int>(std::ceil(soak_rate / 2500)));
    CallRun run = RunCalls(server, soak_rate, seconds, work, 0, uacs);
    // Transactions end wt_timer (5 s) after their final reply, dialogs with their BYE;
    // calls sipp gave up on end at tm's and the dialog's own limits.
    const auto settle_start = Clock::now();
    std::map<std::string, long long> after;  // the last poll's figures
    const bool settled = sipd::testing::WaitUntil(
        [&] {
          after = server.Statistics(names);
          return after["tm:inuse_transactions"] == before.at("tm:inuse_transactions") &&
                 after["dialog:active_dialogs"] == before.at("dialog:active_dialogs");
        },
        300s);
    const double settle_s = std::chrono::duration<double>(Clock::now() - settle_start).count();
    std::printf("load average at end: %.2f\n\n", LoadAverage());
    if (!settled) std::printf("dialogs left:\n%s\n", server.DialogList().c_str());
    const std::map<std::string, long long> trouble_after = server.Statistics(trouble);
    std::printf("during the run:");
    for (const std::string& n : trouble) {
      std::printf(" %s +%lld", n.c_str(), trouble_after.at(n) - before.at(n));
    }
    std::printf("; datagrams the kernel dropped on full UDP receive buffers (any socket) +%lld\n",
                UdpReceiveBufferErrors() - dropped_before);
    // Each INVITE and BYE sipp created is one server transaction; its retransmissions
    // must not make more (with shedding off, refused INVITEs make none either).
    std::printf(
        "sipp created %lld INVITEs and %lld BYEs (%lld retransmissions); "
        "tm:UAS_transactions +%lld\n",
        run.invites, run.byes, run.retransmissions,
        trouble_after.at("tm:UAS_transactions") - before.at("tm:UAS_transactions"));
    if (std::getenv("TM_BENCH_KEEP") != nullptr) {
      std::ofstream(work + "/sipd.log") << server.Log();
    }
    const long long calls = run.successful + run.failed;
    sipd::bench::MarkdownTable table(
        {"offered calls/s", "seconds", "calls", "failed", "server CPU us/call", "settled after (s)",
         "inuse_transactions before / after", "active_dialogs before / after",
         "shm used before / after (bytes)", "shm left per call"},
        0);
    table.PrintHeader();
    const long long shm_left = after["shmem:used_size"] - before.at("shmem:used_size");
    table.PrintRow(
        {absl::StrFormat("%.0f", soak_rate), absl::StrFormat("%.0f", seconds), absl::StrCat(calls),
         absl::StrCat(run.failed), absl::StrFormat("%.1f", run.server_cpu_us_per_call),
         settled ? absl::StrFormat("%.1f", settle_s) : "not in 300 s",
         absl::StrCat(before.at("tm:inuse_transactions"), " / ", after["tm:inuse_transactions"]),
         absl::StrCat(before.at("dialog:active_dialogs"), " / ", after["dialog:active_dialogs"]),
         absl::StrCat(before.at("shmem:used_size"), " / ", after["shmem:used_size"]),
         absl::StrFormat("%.3f B", calls > 0 ? static_cast<double>(shm_left) / calls : 0)});
  } else {
    CpuCap cap;  // destroyed after the server
    Setup setup = StartServer(overload_server, children, work, overload_control);
    Renice(*setup.server, nice_value);
    if (cpu_quota > 0 && !cap.Apply(*setup.server, cpu_quota, cpu_period_ms)) return 1;
    if (capacity <= 0) {
      // A ramp: the best goodput with >= 99% of the calls successful.
      for (double rate : ParseRates(ramp)) {
        CallRun run = RunCalls(*setup.server, rate, 10, work, static_cast<int>(rate), 2);
        const double total = static_cast<double>(run.successful + run.failed);
        std::fprintf(stderr, "ramp %.0f: goodput %.0f, failed %lld\n", rate, run.window_goodput,
                     run.failed);
        if (total > 0 && run.failed <= total / 100) {
          capacity = std::max(capacity, run.window_goodput);
        }
      }
    }
    // An operator's monitoring during the overload: get_statistics every 100 ms (a
    // poller's period), each call's latency (sipd only).
    std::vector<double> mi_us;
    std::atomic<bool> stop_poller{false};
    std::thread poller;
    if (const auto* sipd = dynamic_cast<const SipdServer*>(setup.server.get())) {
      poller = std::thread([&, target = sipd->grpc_target()] {
        MiClient mi(target);
        while (!stop_poller.load()) {
          const auto start = Clock::now();
          (void)mi.Execute("get_statistics", {"tm:", "dialog:"});
          mi_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
          std::this_thread::sleep_for(100ms);
        }
      });
    }
    std::vector<CallRun> runs;
    std::vector<CallRun> before;  // --paired: the 1x run just before each 2x run
    auto* sipd_server = dynamic_cast<SipdServer*>(setup.server.get());
    // The last run's transactions and dialogs end first (wt_timer, BYEs), so that they do
    // not load the next one.
    auto settle = [&](const std::string& what) {
      if (sipd_server == nullptr) return;
      const auto wait_start = Clock::now();
      std::map<std::string, long long> left;  // the last poll's figures
      (void)sipd::testing::WaitUntil(
          [&] {
            left = sipd_server->Statistics({"tm:inuse_transactions", "dialog:active_dialogs"});
            return left["tm:inuse_transactions"] == 0 && left["dialog:active_dialogs"] == 0;
          },
          120s);
      std::fprintf(stderr, "%s: after %.1f s, %lld transactions and %lld dialogs left\n",
                   what.c_str(), std::chrono::duration<double>(Clock::now() - wait_start).count(),
                   left["tm:inuse_transactions"], left["dialog:active_dialogs"]);
    };
    for (int r = 0; r < overload_repeat; ++r) {
      if (overload_paired) {
        if (r > 0) settle(absl::StrCat("1x run ", r + 1));
        before.push_back(RunCalls(*setup.server, capacity, seconds, work, 899999 - r, 2));
      }
      if (r > 0 || overload_paired) settle(absl::StrCat("2x run ", r + 1));
      runs.push_back(RunCalls(*setup.server, 2 * capacity, seconds, work, 999999 - r, 2));
    }
    stop_poller = true;
    if (poller.joinable()) poller.join();
    std::printf("load average at end: %.2f\n", LoadAverage());
    if (!mi_us.empty()) {
      const sipd::bench::LatencySummary mi = sipd::bench::Summarize(std::move(mi_us));
      std::printf(
          "MI get_statistics every 100 ms during the run: %llu calls, median %.2f ms, "
          "p90 %.2f ms, max %.2f ms\n",
          static_cast<unsigned long long>(mi.count), mi.p50_us / 1000, mi.p90_us / 1000,
          mi.max_us / 1000);
    }
    std::printf("\n");
    std::vector<std::string> columns = {"server",
                                        "capacity calls/s",
                                        "offered calls/s",
                                        "goodput calls/s",
                                        "goodput / capacity",
                                        "failed calls",
                                        "INVITEs refused (503)",
                                        "sipp retransmissions",
                                        "INVITE+BYE created",
                                        "tm UAS transactions",
                                        "server CPU % (1 core)"};
    if (overload_paired) {
      columns.insert(columns.begin() + 5, {"goodput at 1x just before", "goodput / that"});
    }
    sipd::bench::MarkdownTable table(columns, 1);
    table.PrintHeader();
    std::vector<double> ratios, paired_ratios;
    for (size_t i = 0; i < runs.size(); ++i) {
      const CallRun& run = runs[i];
      ratios.push_back(capacity > 0 ? run.window_goodput / capacity : 0);
      std::vector<std::string> row = {
          setup.server->name(),
          absl::StrFormat("%.0f", capacity),
          absl::StrFormat("%.0f", 2 * capacity),
          absl::StrFormat("%.0f", run.window_goodput),
          absl::StrFormat("%.2f", ratios.back()),
          absl::StrCat(run.failed),
          run.refused >= 0 ? absl::StrCat(run.refused) : "-",
          absl::StrCat(run.retransmissions),
          absl::StrCat(run.invites + run.byes),
          run.server_transactions >= 0 ? absl::StrCat(run.server_transactions) : "-",
          absl::StrFormat("%.0f", run.server_cpu_percent)};
      if (overload_paired) {
        const double one = before[i].window_goodput;
        paired_ratios.push_back(one > 0 ? run.window_goodput / one : 0);
        row.insert(row.begin() + 5,
                   {absl::StrFormat("%.0f", one), absl::StrFormat("%.2f", paired_ratios.back())});
      }
      table.PrintRow(row);
    }
    if (runs.size() > 1) {
      std::printf("\nmedian goodput / capacity of %zu runs: %.2f\n", runs.size(),
                  sipd::bench::Median(ratios));
      if (overload_paired) {
        std::printf("median goodput / goodput at 1x just before: %.2f\n",
                    sipd::bench::Median(paired_ratios));
      }
    }
  }
  if (std::getenv("TM_BENCH_KEEP") == nullptr) std::filesystem::remove_all(work);
  return 0;
}
