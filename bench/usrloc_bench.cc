// usrloc / registrar load driver (results: bench/RESULTS.md, section "usrloc").
//
//   usrloc_bench register [--calls N] [--rounds R] [--db-mode M]
//     REGISTER throughput of a fresh sipd (2 SIP children) driven by sipp with unique
//     AORs (tests/sip/register_unique.xml), alone and while an MI client loops
//     `ul_dump` (gRPC ExecuteStream) + `get_statistics usrloc:`; rounds alternate the two
//     cases and the median is reported with the throughput drop.
//
//   usrloc_bench dump [--contacts N]...
//     Fills a sipd with N contacts (sipp) and times `ul_dump` over gRPC Execute, gRPC
//     ExecuteStream and the FIFO, with the peak RSS (VmHWM, reset through
//     /proc/PID/clear_refs before each run) of the MI process that served it.
//
//   usrloc_bench store [--aors N] [--batch B] [--passes P]
//     The SQLite part of a write-through REGISTER alone, in this process: N one-contact
//     AOR snapshots written through usrloc's store in transactions of B (as the
//     group-commit writer batches them), in a new random order each pass; CPU and wall
//     time per record. Pass 0 inserts; later passes rewrite existing AORs (re-REGISTERs).
//     Then times Load() of the whole table, as a restart reads it.
//
// sipd and sipp run on this machine; numbers depend on its load (see RESULTS.md).
#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "sipd/modules/usrloc/sqlite_store.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"

namespace {

using sipd::testing::MiClient;
using sipd::testing::SipdInstance;
using Clock = std::chrono::steady_clock;

// Config lines appended to the bench's own (--extra), e.g. a usrloc modparam.
std::string g_extra;

std::string Config(int db_mode, int shm_mb) {
  return absl::StrCat("shm_size = ", shm_mb,
                      "\nloadmodule \"mi_fifo\"\n"
                      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
                      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
                      "modparam(\"mi_fifo\", \"reply_timeout\", 600000)\n"
                      // Large enough for a unary ul_dump of 100,000 contacts.
                      "modparam(\"mi_grpc\", \"max_message_size\", 1073741824)\n"
                      "loadmodule \"usrloc\"\n"
                      "modparam(\"usrloc\", \"db_mode\", ",
                      db_mode,
                      ")\n"
                      "loadmodule \"registrar\"\n",
                      g_extra.empty() ? "" : g_extra + "\n");
}

// SIP children of the sipd under test (--children).
int g_children = 2;

std::unique_ptr<SipdInstance> StartSipd(int db_mode, int shm_mb) {
  auto sipd = std::make_unique<SipdInstance>(SipdInstance::Options{
      .children = g_children, .log_level = 1, .extra_config = Config(db_mode, shm_mb)});
  absl::Status s = sipd->Start();
  if (!s.ok()) {
    std::fprintf(stderr, "sipd did not start: %s\n%s\n", s.ToString().c_str(), sipd->log().c_str());
    std::exit(1);
  }
  return sipd;
}

// Runs sipp with unique AORs; returns REGISTERs per second (0 on failure).
// Outstanding REGISTERs of sipp. Small enough that no UDP socket buffer overflows on a
// loaded 2-core host: a lost datagram costs a 500 ms retransmission and would dominate
// the measurement.
int g_window = 50;

double RegisterLoad(SipdInstance& sipd, int calls, const std::string& work) {
  const auto start = Clock::now();
  sipd::testing::SippResult r = sipd::testing::RunSipp(
      sipd.sip_port(), "register_unique.xml",
      {"-m", absl::StrCat(calls), "-r", "100000", "-l", absl::StrCat(g_window)}, work,
      std::chrono::seconds(600));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (r.exit_code != 0) {
    std::fprintf(stderr, "sipp failed (%d):\n%s\n", r.exit_code, r.output.substr(0, 4000).c_str());
    return 0;
  }
  return calls / seconds;
}

// kB from /proc/PID/status.
long StatusKb(int pid, std::string_view field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, std::string(field) + ":")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipEmpty());
      long kb = 0;
      if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &kb)) return kb;
    }
  }
  return -1;
}

void ResetPeak(int pid) {
  std::ofstream out(absl::StrCat("/proc/", pid, "/clear_refs"));
  out << "5";
}

std::string MakeWorkDir() {
  char dir[] = "/tmp/usrloc-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) std::exit(1);
  return dir;
}

// utime + stime of `pids`, in seconds.
double CpuSeconds(const std::vector<int>& pids) {
  double total = 0;
  for (int pid : pids) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t end = stat.rfind(')');
    if (end == std::string::npos) continue;
    std::vector<std::string> fields = absl::StrSplit(stat.substr(end + 2), ' ');
    // fields[0] is the state (stat field 3): utime and stime are fields 14 and 15.
    long utime = 0;
    long stime = 0;
    if (fields.size() > 12 && absl::SimpleAtoi(fields[11], &utime) &&
        absl::SimpleAtoi(fields[12], &stime)) {
      total += static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
  }
  return total;
}

std::vector<int> PidsOf(MiClient& mi, std::string_view type) {
  std::vector<int> out;
  MiClient::Result r = mi.Execute("ps");
  for (const auto& node : r.reply.root.kids) {
    std::string pid;
    bool match = false;
    for (const auto& a : node->attributes) {
      if (a.name == "PID") pid = a.value;
      if (a.name == "Type" && absl::StartsWith(a.value, std::string(type))) match = true;
    }
    int value = 0;
    if (match && absl::SimpleAtoi(pid, &value)) out.push_back(value);
  }
  return out;
}

struct RunResult {
  double rate = 0;           // REGISTER/s
  double worker_cpu_us = 0;  // SIP worker CPU per REGISTER
  long mi_iterations = 0;
  double mi_call_ms_median = 0;  // latency of the loop's get_statistics (or ul_add) calls
  double mi_call_ms_max = 0;
};

// What the bench gives the MI gRPC process and its own MI client thread: a nice value,
// or SCHED_IDLE (runs only when nothing else wants the CPU, and a waking task of another
// policy always preempts it). Nice 0 and not idle: left as they are.
struct MiPriority {
  int nice = 0;
  bool idle = false;
  bool set() const { return nice != 0 || idle; }
  std::string ToString() const { return idle ? "SCHED_IDLE" : absl::StrCat("nice ", nice); }
};

void SetPriority(int tid, const MiPriority& priority) {
  if (priority.idle) {
    sched_param param{};
    (void)sched_setscheduler(tid, SCHED_IDLE, &param);
  } else {
    setpriority(PRIO_PROCESS, static_cast<id_t>(tid), priority.nice);
  }
}

int RunRegister(int calls, int rounds, int db_mode, int mi_interval_ms, MiPriority mi_nice,
                const std::string& mi_commands) {
  const std::string work = MakeWorkDir();
  std::vector<RunResult> alone;
  std::vector<RunResult> loaded;
  for (int round = 0; round < rounds; ++round) {
    // Alternate which case runs first, so a slow drift of the host's load does not favour
    // one of them.
    for (int step = 0; step < 2; ++step) {
      const int with_mi = (round % 2 == 0) ? step : 1 - step;
      auto sipd = StartSipd(db_mode, 256);
      MiClient control(sipd->grpc_target());
      const std::vector<int> workers = PidsOf(control, "SIP receiver");
      if (mi_nice.set()) {
        // Every thread of the process (Linux renices one thread per id): gRPC's queue
        // threads and the dispatcher's workers do the MI work, not the main thread.
        for (int pid : PidsOf(control, "MI gRPC")) {
          for (const auto& task : std::filesystem::directory_iterator(
                   absl::StrCat("/proc/", pid, "/task"),
                   std::filesystem::directory_options::skip_permission_denied)) {
            int tid = 0;
            if (absl::SimpleAtoi(task.path().filename().string(), &tid)) {
              SetPriority(tid, mi_nice);
            }
          }
        }
      }
      std::atomic<bool> done{false};
      std::atomic<long> iterations{0};
      std::vector<double> call_us;  // the loop thread's timed calls, read after join
      std::thread mi_loop;
      if (with_mi == 1) {
        mi_loop = std::thread([&] {
          // Linux: a thread id names just this thread.
          if (mi_nice.set()) SetPriority(gettid(), mi_nice);
          MiClient mi(sipd->grpc_target());
          auto timed = [&call_us](auto&& call) {
            const auto start = Clock::now();
            call();
            call_us.push_back(
                std::chrono::duration<double, std::micro>(Clock::now() - start).count());
          };
          while (!done.load()) {
            if (mi_commands == "add") {
              // MI writes: each ul_add is committed by the group-commit writer, and may be
              // led by the MI process itself.
              const std::string user = absl::StrCat("mi-user-", iterations.load());
              timed([&] {
                (void)mi.Execute("ul_add",
                                 {"location", user, absl::StrCat("sip:", user, "@127.0.0.1:5999"),
                                  "3600", "1.00", "0", "0", "0", "4294967295"});
              });
            } else {
              // Reads the stream without rebuilding the tree: the load is sipd's work.
              if (mi_commands != "stats") (void)mi.StreamNodeCount("ul_dump");
              if (mi_commands != "dump") {
                timed([&] { (void)mi.Execute("get_statistics", {"usrloc:"}); });
              }
            }
            ++iterations;
            if (mi_interval_ms > 0) {
              std::this_thread::sleep_for(std::chrono::milliseconds(mi_interval_ms));
            }
          }
        });
      }
      const double cpu_before = CpuSeconds(workers);
      RunResult result;
      result.rate = RegisterLoad(*sipd, calls, work);
      result.worker_cpu_us = (CpuSeconds(workers) - cpu_before) * 1e6 / calls;
      done = true;
      if (mi_loop.joinable()) mi_loop.join();
      result.mi_iterations = iterations.load();
      if (!call_us.empty()) {
        const sipd::bench::LatencySummary calls = sipd::bench::Summarize(std::move(call_us));
        result.mi_call_ms_median = calls.p50_us / 1000;
        result.mi_call_ms_max = calls.max_us / 1000;
      }
      (with_mi == 1 ? loaded : alone).push_back(result);
      std::printf("round %d %-8s %8.0f REGISTER/s  %6.1f us worker CPU/REGISTER", round + 1,
                  with_mi ? "MI load" : "alone", result.rate, result.worker_cpu_us);
      if (with_mi == 1 && mi_commands == "add") {
        std::printf("  (%ld x ul_add; ul_add %.2f ms median, %.1f ms max)", result.mi_iterations,
                    result.mi_call_ms_median, result.mi_call_ms_max);
      } else if (with_mi == 1) {
        std::printf(
            "  (%ld x ul_dump + get_statistics; get_statistics %.2f ms median, %.1f ms max)",
            result.mi_iterations, result.mi_call_ms_median, result.mi_call_ms_max);
      }
      if (db_mode != 0) {
        // The group commit's batch size (usrloc:db_commits / db_records, where they exist).
        std::map<std::string, uint64_t> db = control.Statistics({"usrloc:"});
        const uint64_t commits = db["usrloc:db_commits"];
        if (commits > 0) {
          std::printf("  %llu records in %llu commits (%.1f per commit)",
                      static_cast<unsigned long long>(db["usrloc:db_records"]),
                      static_cast<unsigned long long>(commits),
                      static_cast<double>(db["usrloc:db_records"]) / static_cast<double>(commits));
        }
      }
      std::printf("\n");
      std::fflush(stdout);
      (void)sipd->Stop();
    }
  }
  auto rates = [](const std::vector<RunResult>& v) {
    std::vector<double> out;
    for (const auto& r : v) out.push_back(r.rate);
    return out;
  };
  auto cpu = [](const std::vector<RunResult>& v) {
    std::vector<double> out;
    for (const auto& r : v) out.push_back(r.worker_cpu_us);
    return out;
  };
  using sipd::bench::Median;
  const double a = Median(rates(alone));
  const double l = Median(rates(loaded));
  // Per round (the two runs of a round are adjacent in time): loaded / alone.
  std::vector<double> drops;
  for (size_t i = 0; i < alone.size() && i < loaded.size(); ++i) {
    if (alone[i].rate > 0)
      drops.push_back((alone[i].rate - loaded[i].rate) * 100.0 / alone[i].rate);
  }
  std::printf(
      "\ndb_mode %d, %d unique AORs per run, %d rounds, MI loop pause %d ms, MI %s, %d "
      "children\n",
      db_mode, calls, rounds, mi_interval_ms, mi_nice.ToString().c_str(), g_children);
  std::printf("median alone    : %8.0f REGISTER/s  %6.1f us worker CPU/REGISTER\n", a,
              Median(cpu(alone)));
  std::printf("median MI load  : %8.0f REGISTER/s  %6.1f us worker CPU/REGISTER\n", l,
              Median(cpu(loaded)));
  std::printf("drop under MI   : %7.1f %% (medians), %.1f %% (median of per-round drops)\n",
              a > 0 ? (a - l) * 100.0 / a : 0.0, Median(drops));
  std::filesystem::remove_all(work);
  return 0;
}

int RunDump(const std::vector<int>& sizes, int repeat) {
  const std::string work = MakeWorkDir();
  std::printf("%-9s %-20s %8s %14s %14s %14s  %s\n", "contacts", "transport", "seconds",
              "MI RSS before", "MI peak RSS", "of it shm", "received");
  for (int contacts : sizes) {
    auto sipd = StartSipd(0, std::max(256, contacts / 100 + 128));
    if (RegisterLoad(*sipd, contacts, work) == 0) return 1;
    MiClient mi(sipd->grpc_target());
    const uint64_t stored = mi.Statistics({"location-contacts"})["usrloc:location-contacts"];
    const std::vector<int> grpc_pids = PidsOf(mi, "MI gRPC");
    const std::vector<int> fifo_pids = PidsOf(mi, "MI FIFO");
    if (grpc_pids.empty() || fifo_pids.empty()) {
      std::fprintf(stderr, "no MI gRPC / MI FIFO process in ps\n");
      return 1;
    }
    const int grpc_pid = grpc_pids[0];
    const int fifo_pid = fifo_pids[0];
    for (int r = 0; r < repeat; ++r) {
      struct Case {
        const char* name;
        int pid;
        // AORs received, or an error text.
        std::function<std::string()> run;
      };
      auto aors = [](const MiClient::Result& r) -> std::string {
        if (r.code != 200) return absl::StrCat("error: ", r.Status());
        size_t n = 0;
        for (const auto& domain : r.reply.root.kids) n += domain->kids.size();
        return absl::StrCat(n, " AORs");
      };
      // ExecuteStream and FIFO first: the unary Execute leaves its peak in the heap.
      const std::vector<Case> cases = {
          {"gRPC ExecuteStream", grpc_pid, [&] { return aors(mi.ExecuteStream("ul_dump")); }},
          {"FIFO", fifo_pid,
           [&]() -> std::string {
             auto client = sipd::legacy::FifoClient::Create(sipd->tmp_dir() + "/sipd_fifo",
                                                            sipd->tmp_dir() + "/");
             if (!client.ok()) return client.status().ToString();
             auto reply = (*client)->Execute("ul_dump", {}, std::chrono::minutes(10));
             if (!reply.ok()) return reply.status().ToString();
             size_t n = 0;
             for (size_t at = reply->find("\n\tAOR:: "); at != std::string::npos;
                  at = reply->find("\n\tAOR:: ", at + 1)) {
               ++n;
             }
             return absl::StrCat(n, " AORs, ", reply->size() / 1024, " KiB");
           }},
          {"gRPC Execute", grpc_pid, [&] { return aors(mi.Execute("ul_dump")); }},
      };
      for (const Case& c : cases) {
        ResetPeak(c.pid);
        const long before = StatusKb(c.pid, "VmRSS");
        const auto start = Clock::now();
        const std::string outcome = c.run();
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        const long peak = StatusKb(c.pid, "VmHWM");
        // Shared-memory pages the process touched (the table itself) count in RSS too.
        const long shared = StatusKb(c.pid, "RssShmem");
        std::printf("%-9llu %-20s %8.2f %11.1f MB %11.1f MB %11.1f MB  %s\n",
                    static_cast<unsigned long long>(stored), c.name, seconds, before / 1024.0,
                    peak / 1024.0, shared / 1024.0, outcome.c_str());
        std::fflush(stdout);
      }
    }
    (void)sipd->Stop();
  }
  std::filesystem::remove_all(work);
  return 0;
}

int RunStore(int aors, int batch, int passes) {
  const std::string work = MakeWorkDir();
  int rc = 0;
  {
    auto store = sipd::usrloc::SqliteStore::Open({.path = work + "/usrloc.sqlite"});
    if (!store.ok()) {
      std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
      std::filesystem::remove_all(work);
      return 1;
    }
    std::mt19937 rng(1);
    std::vector<int> order(static_cast<size_t>(aors));
    std::iota(order.begin(), order.end(), 0);
    uint64_t version = 0;
    // Runs `work`, then prints this process's CPU and the wall time it took per AOR.
    const auto per_aor = [aors](const std::string& what, const char* unit, auto&& work) {
      const double cpu0 = sipd::bench::SelfCpuMicros();
      const auto wall0 = Clock::now();
      work();
      const double cpu_us = sipd::bench::SelfCpuMicros() - cpu0;
      const double wall = std::chrono::duration<double>(Clock::now() - wall0).count();
      std::printf("%s: %6.2f us CPU/%s  %6.2f us wall/%s\n", what.c_str(), cpu_us / aors, unit,
                  1e6 * wall / aors, unit);
    };
    std::printf("%d AORs, %d records per transaction\n", aors, batch);
    for (int pass = 0; pass < passes && rc == 0; ++pass) {
      std::shuffle(order.begin(), order.end(), rng);
      per_aor(absl::StrCat("pass ", pass, pass == 0 ? " (insert)" : " (rewrite)"), "record", [&] {
        for (size_t i = 0; i < order.size() && rc == 0; i += static_cast<size_t>(batch)) {
          std::vector<sipd::usrloc::AorSnapshot> snapshots;
          for (size_t j = i; j < std::min(order.size(), i + static_cast<size_t>(batch)); ++j) {
            sipd::usrloc::AorSnapshot s;
            s.aor = absl::StrCat("user", order[j], "@example.com");
            s.version = ++version;
            sipd::usrloc::ContactInfo c;
            c.uri = absl::StrCat("sip:user", order[j], "@127.0.0.1:5070");
            c.callid = absl::StrCat(order[j], "-", pass, "@127.0.0.1");
            c.user_agent = "sipp";
            c.socket = "udp:127.0.0.1:5060";
            c.expires = 2000000000;
            c.cseq = static_cast<uint32_t>(pass + 1);
            s.contacts.push_back(std::move(c));
            snapshots.push_back(std::move(s));
          }
          absl::Status written = (*store)->Write("location", snapshots);
          if (!written.ok()) {
            std::fprintf(stderr, "%s\n", written.ToString().c_str());
            rc = 1;
          }
        }
      });
      std::fflush(stdout);
    }
    if (rc == 0) {
      absl::StatusOr<std::vector<sipd::usrloc::AorSnapshot>> loaded;
      per_aor("load", "AOR", [&] { loaded = (*store)->Load("location"); });
      if (!loaded.ok() || loaded->size() != order.size()) {
        std::fprintf(stderr, "load: %s\n",
                     loaded.ok() ? "wrong number of AORs" : loaded.status().ToString().c_str());
        rc = 1;
      }
    }
  }
  std::filesystem::remove_all(work);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"usrloc/registrar load driver"};
  // Options of the app (--extra) may also follow the subcommand (bench/ab_register.py).
  app.fallthrough();
  app.require_subcommand(1);
  int calls = 20000;
  int rounds = 3;
  int db_mode = 0;
  auto* reg = app.add_subcommand("register", "REGISTER/s alone and under MI load");
  reg->add_option("--calls", calls, "unique AORs registered per run");
  reg->add_option("--rounds", rounds, "alone/loaded pairs");
  reg->add_option("--db-mode", db_mode, "usrloc db_mode (0, 1, 2)");
  reg->add_option("--window", g_window, "sipp -l: outstanding REGISTERs");
  reg->add_option("--children", g_children, "SIP worker processes of sipd (children)");
  app.add_option("--extra", g_extra, "config lines appended to the bench's sipd config");
  int mi_interval_ms = 0;
  reg->add_option("--mi-interval-ms", mi_interval_ms,
                  "pause of the MI client between iterations (0 = back to back)");
  std::string mi_commands = "both";
  reg->add_option("--mi-commands", mi_commands,
                  "what the MI loop runs: both, dump, stats, add (ul_add of new AORs)");
  MiPriority mi_nice;
  reg->add_option("--mi-nice", mi_nice.nice,
                  "nice value for the MI gRPC process and the MI client thread (0 = as is)")
      ->check(CLI::Range(-20, 19));
  reg->add_flag("--mi-sched-idle", mi_nice.idle,
                "run the MI gRPC process and the MI client thread SCHED_IDLE instead");
  std::vector<int> sizes = {10000, 100000};
  int repeat = 1;
  auto* dump = app.add_subcommand("dump", "ul_dump time and MI process peak RSS");
  dump->add_option("--contacts", sizes, "table sizes");
  dump->add_option("--repeat", repeat, "runs per transport");
  int aors = 10000;
  int batch = 23;
  int passes = 4;
  auto* store = app.add_subcommand("store", "CPU per record of usrloc's SQLite writes");
  store->add_option("--aors", aors, "AORs written per pass")->check(CLI::PositiveNumber);
  store->add_option("--batch", batch, "records per transaction")->check(CLI::PositiveNumber);
  store->add_option("--passes", passes, "passes (the first inserts)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  if (store->parsed()) return RunStore(aors, batch, passes);
  if (reg->parsed())
    return RunRegister(calls, rounds, db_mode, mi_interval_ms, mi_nice, mi_commands);
  return RunDump(sizes, repeat);
}
