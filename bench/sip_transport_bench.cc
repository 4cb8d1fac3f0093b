// SIP transport load driver (results: bench/RESULTS.md, section "SIP transport").
//
//   sip_transport_bench [--scenario options|register] [--calls N] [--rounds R]
//                       [--window W] [--protocols udp,tcp] [--cpus LIST]
//
// Per round and protocol: a fresh sipd (2 UDP SIP workers, 2 TCP receivers, log level 1,
// mi_fifo; usrloc + registrar for `register`) and sipp from Debian's sip-tester running
// tests/sip/options_uac.xml (stateless OPTIONS -> 200) or register_unique.xml (one new
// AOR per REGISTER) with W requests in flight. TCP is `sipp -t t1`: every request on one
// connection, so one TCP receiver does the work (UDP spreads over both workers).
// Requests/s = N / sipp's wall time; "server CPU" = utime+stime of the SIP processes
// (UDP: the SIP receivers; TCP: the TCP receivers + TCP main) per request, from
// /proc/PID/stat before and after. Medians over the rounds; protocols alternate within a
// round.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"

namespace {

using sipd::bench::Median;
using sipd::testing::SipdInstance;
using Clock = std::chrono::steady_clock;

struct Sample {
  double rate = 0;
  double cpu_us = 0;
};

std::string WorkDir() {
  char dir[] = "/tmp/sip-transport-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) std::exit(1);
  return dir;
}

Sample RunOnce(const std::string& protocol, const std::string& scenario, int calls, int window) {
  std::string config =
      "tcp_children = 2\n"
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n";
  if (scenario == "register") config += "loadmodule \"usrloc\"\nloadmodule \"registrar\"\n";
  SipdInstance sipd(SipdInstance::Options{
      .grpc = false, .tcp = true, .children = 2, .log_level = 1, .extra_config = config});
  if (absl::Status s = sipd.Start(); !s.ok()) {
    std::fprintf(stderr, "sipd did not start: %s\n", s.ToString().c_str());
    std::exit(1);
  }
  auto fifo = sipd::legacy::FifoClient::Create(sipd.tmp_dir() + "/fifo", sipd.tmp_dir() + "/");
  if (!fifo.ok()) std::exit(1);
  auto ps = (*fifo)->Execute("ps");
  if (!ps.ok()) std::exit(1);
  std::vector<pid_t> pids;
  if (protocol == "udp") {
    pids = sipd::bench::PidsOfTypeInText(*ps, "SIP receiver");
  } else {
    pids = sipd::bench::PidsOfTypeInText(*ps, "TCP receiver");
    for (pid_t p : sipd::bench::PidsOfTypeInText(*ps, "TCP main")) pids.push_back(p);
  }
  const std::string work = WorkDir();
  std::vector<std::string> args = {"-m", absl::StrCat(calls), "-r", "1000000",
                                   "-l", absl::StrCat(window)};
  if (protocol == "tcp") {
    args.push_back("-t");
    args.push_back("t1");
  }
  const long long before = sipd::bench::TotalCpuTicks(pids);
  const auto start = Clock::now();
  sipd::testing::SippResult r =
      sipd::testing::RunSipp(protocol == "tcp" ? sipd.tcp_port() : sipd.sip_port(),
                             scenario == "register" ? "register_unique.xml" : "options_uac.xml",
                             args, work, std::chrono::seconds(600));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const long long after = sipd::bench::TotalCpuTicks(pids);
  std::error_code ignored;
  std::filesystem::remove_all(work, ignored);
  if (r.exit_code != 0) {
    std::fprintf(stderr, "sipp failed (%d):\n%s\n", r.exit_code, r.output.substr(0, 4000).c_str());
    return {};
  }
  Sample s;
  s.rate = calls / seconds;
  s.cpu_us = sipd::bench::CpuMicrosPerCall(before, after, static_cast<uint64_t>(calls));
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("SIP over UDP vs TCP: requests/s and server CPU per request with sipp");
  std::string scenario = "options";
  std::string protocols = "udp,tcp";
  std::string cpus;
  int calls = 20000;
  int rounds = 3;
  int window = 50;
  app.add_option("--scenario", scenario, "options or register")
      ->check(CLI::IsMember({"options", "register"}));
  app.add_option("--protocols", protocols, "comma-separated: udp, tcp");
  app.add_option("--calls", calls, "requests per run");
  app.add_option("--rounds", rounds, "runs per protocol (median reported)");
  app.add_option("--window", window, "requests in flight (sipp -l)");
  app.add_option("--cpus", cpus, "pin the bench, sipd and sipp to these CPUs (taskset list)");
  CLI11_PARSE(app, argc, argv);
  if (!cpus.empty()) {
    auto list = sipd::bench::ParseCpuList(cpus);
    if (!list.ok() || !sipd::bench::PinToCpus(*list).ok()) {
      std::fprintf(stderr, "bad --cpus %s\n", cpus.c_str());
      return 2;
    }
  }
  const std::vector<std::string> protos = absl::StrSplit(protocols, ',', absl::SkipEmpty());
  std::vector<std::vector<Sample>> samples(protos.size());
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < protos.size(); ++i) {
      const size_t p = (round % 2 == 0) ? i : protos.size() - 1 - i;
      samples[p].push_back(RunOnce(protos[p], scenario, calls, window));
    }
  }
  double load[3] = {0, 0, 0};
  getloadavg(load, 3);
  sipd::bench::MarkdownTable table(
      {"protocol", "scenario", "requests", "req/s (median)", "server CPU us/req", "runs"}, 2);
  table.PrintHeader();
  for (size_t p = 0; p < protos.size(); ++p) {
    std::vector<double> rates;
    std::vector<double> cpu;
    std::string runs;
    for (const Sample& s : samples[p]) {
      rates.push_back(s.rate);
      cpu.push_back(s.cpu_us);
      absl::StrAppend(&runs, runs.empty() ? "" : " ", absl::StrFormat("%.0f", s.rate));
    }
    table.PrintRow({protos[p], scenario, absl::StrCat(calls),
                    absl::StrFormat("%.0f", Median(rates)), absl::StrFormat("%.1f", Median(cpu)),
                    runs});
  }
  std::printf("\nload average after the runs: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
  return 0;
}
