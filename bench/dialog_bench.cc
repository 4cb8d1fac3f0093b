// dialog load driver (results: bench/RESULTS.md, section "dialog").
//
//   dialog_bench fill [--dialogs 10000,100000] [--rate 2000] [--repeat 3]
//     Shared memory per concurrent dialog: a fresh sipd (tm + dialog) is filled with N
//     confirmed calls (a sipp UAC -> sipd -> a registered sipp UAS; the calls stay up:
//     tests/sip/uac_call_ended_by_proxy.xml waits for a BYE that never comes), and
//     shmem:used_size is read before the first call and once the N calls are confirmed
//     and every transaction is gone (tm:inuse_transactions 0), so the difference is the
//     dialogs alone. Then dlg_list of the N dialogs is timed over gRPC ExecuteStream
//     (reading the stream without rebuilding the tree) and over the FIFO, with the peak
//     RSS (VmHWM, reset through /proc/PID/clear_refs before each run) of the MI process
//     that served it and the part of it that is the table's shared pages (RssShmem).
//
// sipd and sipp run on this machine; numbers depend on its load (see RESULTS.md).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"
#include "tests/tm/sip_peers.h"

namespace {

using sipd::testing::MiClient;
using sipd::testing::SipdInstance;
using sipd::testing::SippProcess;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string Config(int dialogs) {
  // Room for the dialogs, the transactions of the fill and usrloc (shm_size in MB).
  const int shm_mb = std::max(256, dialogs / 200 + 256);
  return absl::StrCat("shm_size = ", shm_mb,
                      "\n"
                      "loadmodule \"mi_fifo\"\n"
                      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
                      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
                      "modparam(\"mi_fifo\", \"reply_timeout\", 600000)\n"
                      "loadmodule \"usrloc\"\n"
                      "loadmodule \"registrar\"\n"
                      "loadmodule \"tm\"\n"
                      "modparam(\"tm\", \"wt_timer\", 1)\n"
                      "loadmodule \"dialog\"\n"
                      "modparam(\"dialog\", \"hash_size\", 4096)\n"
                      "modparam(\"dialog\", \"profiles_with_value\", \"caller/from_user\")\n");
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

uint64_t Stat(MiClient& mi, const std::string& name) {
  for (const auto& [key, value] : mi.Statistics({name})) {
    if (absl::EndsWith(key, ":" + name)) return value;
  }
  return 0;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a;
  in >> a;
  return a;
}

int RunFill(const std::vector<int>& sizes, int rate, int repeat) {
  char dir[] = "/tmp/dialog-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 1;
  const std::string work = dir;
  std::printf("%-9s %12s %14s %10s  |  %-20s %8s %12s %12s %10s  load\n", "dialogs", "shm for them",
              "per dialog", "per 10,000", "dlg_list over", "seconds", "MI RSS before",
              "MI peak RSS", "of it shm");
  for (int n : sizes) {
    for (int r = 0; r < repeat; ++r) {
      SipdInstance sipd(
          SipdInstance::Options{.children = 2, .log_level = 1, .extra_config = Config(n)});
      if (absl::Status s = sipd.Start(); !s.ok()) {
        std::fprintf(stderr, "sipd: %s\n%s\n", s.ToString().c_str(), sipd.log().c_str());
        return 1;
      }
      MiClient mi(sipd.grpc_target());
      auto uas = SippProcess::Start("uas_call.xml", {"-m", absl::StrCat(n)}, work, "uas");
      absl::StatusOr<int> port = uas->SipPort(false);
      if (!port.ok()) {
        std::fprintf(stderr, "%s\n", port.status().ToString().c_str());
        return 1;
      }
      (void)mi.Execute("ul_add", {"location", "bob", absl::StrCat("sip:bob@127.0.0.1:", *port), "0",
                                  "1.00", "0", "0", "0", "4294967295"});
      // Everything the start-up and the registration took, before the first call.
      const uint64_t before = Stat(mi, "used_size");
      auto uac =
          SippProcess::Start("uac_call_ended_by_proxy.xml",
                             {"-s", "bob", absl::StrCat("127.0.0.1:", sipd.sip_port()), "-m",
                              absl::StrCat(n), "-l", absl::StrCat(n), "-r", absl::StrCat(rate)},
                             work, "uac");
      const bool filled = sipd::testing::WaitUntil(
          [&] {
            return Stat(mi, "active_dialogs") == static_cast<uint64_t>(n) &&
                   Stat(mi, "inuse_transactions") == 0;
          },
          std::chrono::seconds(60 + 3 * n / rate));
      if (!filled) {
        std::fprintf(stderr,
                     "only %llu dialogs confirmed (%llu transactions, %llu processed, %llu "
                     "failed, %llu early)\n%s\n",
                     static_cast<unsigned long long>(Stat(mi, "active_dialogs")),
                     static_cast<unsigned long long>(Stat(mi, "inuse_transactions")),
                     static_cast<unsigned long long>(Stat(mi, "processed_dialogs")),
                     static_cast<unsigned long long>(Stat(mi, "failed_dialogs")),
                     static_cast<unsigned long long>(Stat(mi, "early_dialogs")),
                     uac->output().substr(0, 3000).c_str());
        return 1;
      }
      const uint64_t after = Stat(mi, "used_size");
      const double bytes = static_cast<double>(after - before);

      absl::StatusOr<std::vector<pid_t>> grpc =
          sipd::bench::PidsOfTypeOverGrpc(sipd.grpc_target(), "MI gRPC");
      absl::StatusOr<std::vector<pid_t>> fifo =
          sipd::bench::PidsOfTypeOverGrpc(sipd.grpc_target(), "MI FIFO");
      if (!grpc.ok() || !fifo.ok() || grpc->empty() || fifo->empty()) {
        std::fprintf(stderr, "no MI gRPC / MI FIFO process in ps\n");
        return 1;
      }
      struct Case {
        const char* name;
        int pid;
        std::function<long()> run;  // dialogs received
      };
      const std::vector<Case> cases = {
          {"gRPC ExecuteStream", (*grpc)[0],
           [&]() -> long {
             // Lines of the stream: a dialog node and its kids.
             const long nodes = mi.StreamNodeCount("dlg_list");
             return nodes < 0 ? -1 : nodes;
           }},
          {"FIFO", (*fifo)[0],
           [&]() -> long {
             auto client = sipd::legacy::FifoClient::Create(sipd.tmp_dir() + "/sipd_fifo",
                                                            sipd.tmp_dir() + "/");
             if (!client.ok()) return -1;
             auto reply = (*client)->Execute("dlg_list", {}, std::chrono::minutes(10));
             if (!reply.ok()) return -1;
             long dialogs = 0;
             for (size_t at = reply->find("dialog::  hash="); at != std::string::npos;
                  at = reply->find("dialog::  hash=", at + 1)) {
               ++dialogs;
             }
             return dialogs;
           }},
      };
      for (size_t c = 0; c < cases.size(); ++c) {
        ResetPeak(cases[c].pid);
        const long rss_before = StatusKb(cases[c].pid, "VmRSS");
        const auto start = Clock::now();
        const long received = cases[c].run();
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        const long peak = StatusKb(cases[c].pid, "VmHWM");
        const long shared = StatusKb(cases[c].pid, "RssShmem");
        std::printf(
            "%-9d %9.1f MB %11.0f B %7.1f MB  |  %-20s %8.2f %9.1f MB %9.1f MB %7.1f MB  %s%s\n", n,
            bytes / 1e6, bytes / n, bytes / n * 10000 / 1e6, cases[c].name, seconds,
            rss_before / 1024.0, peak / 1024.0, shared / 1024.0, LoadAverage().c_str(),
            received < 0 ? "  (failed)" : "");
        std::fflush(stdout);
      }
      {
        // A profile command walks the table: its time grows with the dialogs.
        const auto start = Clock::now();
        MiClient::Result size = mi.Execute("profile_get_size", {"caller", "alice"});
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        std::string count = size.Status();
        if (!size.reply.root.kids.empty()) {
          for (const auto& a : size.reply.root.kids[0]->attributes) {
            if (a.name == "count") count = a.value;
          }
        }
        std::printf("%-9d profile_get_size caller alice: count %s, %.1f ms\n", n, count.c_str(),
                    ms);
      }
      uac->Kill();
      uas->Kill();
      (void)sipd.Stop();
    }
  }
  std::filesystem::remove_all(work);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dialog load driver"};
  app.require_subcommand(1);
  std::vector<int> sizes = {10000, 100000};
  int rate = 2000;
  int repeat = 1;
  auto* fill = app.add_subcommand("fill", "shared memory per dialog, dlg_list time and MI RSS");
  fill->add_option("--dialogs", sizes, "concurrent dialogs");
  fill->add_option("--rate", rate, "calls per second while filling (sipp -r)");
  fill->add_option("--repeat", repeat, "runs per size");
  CLI11_PARSE(app, argc, argv);
  return RunFill(sizes, rate, repeat);
}
