// Load driver for the MI XML-RPC transport: POST /RPC2 methodCall CMD (default `version`)
// against a real sipd that the bench starts itself (tests/support/sipd_harness.h, with
// `loadmodule "mi_xmlrpc"` on a free port), or against --port.
//
//   xmlrpc_bench [--clients 1,4,8] [--seconds 5] [--warmup 1] [--command version]
//                [--port N [--server-pid PID]]
//
// Each client is one thread with one keep-alive HTTP/1.1 connection issuing requests
// back to back (one in flight). mi_xmlrpc closes a connection after 30 requests
// (Keep-Alive max=30, as Abyss), so clients reconnect then; the reconnect is part of
// the measured latency of the next request, as it is for a real client. For every
// client count it prints requests/s, p50/p99/max latency and the server CPU time per
// request of the "MI XMLRPC" process (utime+stime of all its threads from
// /proc/<pid>/stat before/after; only when the bench started sipd or --server-pid is
// given).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/sipd_harness.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using sipd::xmlrpc::testing::HttpResponse;
using sipd::xmlrpc::testing::MethodCall;
using sipd::xmlrpc::testing::PostRequest;
using sipd::xmlrpc::testing::RawConnection;

struct RunResult {
  int clients = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;
  uint64_t connections = 0;
  double seconds = 0;
  double p50_us = 0, p99_us = 0, max_us = 0;
  double server_cpu_us_per_call = -1;
};

// utime + stime of a whole process (all threads), in clock ticks; -1 if unreadable.
long long ProcessCpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  long long utime = 0, stime = 0;
  // Fields after "pid (comm) ": state is field 3; utime is 14, stime 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoll(f);
    if (i == 15) stime = std::stoll(f);
  }
  return utime + stime;
}

// PID of the "MI XMLRPC" process, from the `ps` MI command over XML-RPC itself.
pid_t FindMiXmlrpcPid(int port) {
  RawConnection connection;
  if (!connection.Connect(port)) return 0;
  const auto outcome = connection.Call(MethodCall("ps"));
  if (!outcome || outcome->is_fault) return 0;
  for (absl::string_view line : absl::StrSplit(outcome->String(), '\n')) {
    if (!absl::EndsWith(line, " Type=MI XMLRPC")) continue;
    const size_t at = line.find("PID=");
    int pid = 0;
    if (at != absl::string_view::npos &&
        absl::SimpleAtoi(line.substr(at + 4, line.find(' ', at) - at - 4), &pid)) {
      return pid;
    }
  }
  return 0;
}

struct ClientStats {
  std::vector<double> latencies_us;
  uint64_t errors = 0;
  uint64_t connections = 0;
};

void RunClient(int port, const std::string& request, Clock::time_point start, Clock::time_point end,
               ClientStats* stats) {
  RawConnection connection;
  bool connected = false;
  while (Clock::now() < start) std::this_thread::yield();
  while (true) {
    const Clock::time_point begin = Clock::now();
    if (begin >= end) break;
    if (!connected) {
      connected = connection.Connect(port);
      ++stats->connections;
      if (!connected) {
        ++stats->errors;
        continue;
      }
    }
    const HttpResponse response =
        connection.Send(request) ? connection.ReadResponse() : HttpResponse{};
    const Clock::time_point done = Clock::now();
    // Cheap validity check: a 200 with a methodResponse <string> (a fault has none).
    if (!response.ok || response.status != 200 ||
        response.body.find("<string>Server:: ") == std::string::npos) {
      ++stats->errors;
      connection.Close();
      connected = false;
      continue;
    }
    stats->latencies_us.push_back(std::chrono::duration<double, std::micro>(done - begin).count());
    if (response.headers.count("connection") != 0 && response.headers.at("connection") == "close") {
      connection.Close();
      connected = false;
    }
  }
}

RunResult Run(int port, pid_t server_pid, const std::string& command, int clients, double seconds,
              double warmup) {
  const std::string request = PostRequest(MethodCall(command));
  const Clock::time_point start =
      Clock::now() + std::chrono::milliseconds(50) +
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup));
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  // Warm-up: the same load before `start`, not recorded.
  {
    std::vector<std::thread> threads;
    std::vector<ClientStats> ignored(static_cast<size_t>(clients));
    for (int i = 0; i < clients; ++i) {
      threads.emplace_back(RunClient, port, request, Clock::now(),
                           start - std::chrono::milliseconds(50), &ignored[static_cast<size_t>(i)]);
    }
    for (auto& thread : threads) thread.join();
  }
  std::vector<ClientStats> stats(static_cast<size_t>(clients));
  std::vector<std::thread> threads;
  const long long cpu_before = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back(RunClient, port, request, start, end, &stats[static_cast<size_t>(i)]);
  }
  for (auto& thread : threads) thread.join();
  const long long cpu_after = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;

  RunResult result;
  result.clients = clients;
  result.seconds = seconds;
  std::vector<double> all;
  for (const ClientStats& s : stats) {
    all.insert(all.end(), s.latencies_us.begin(), s.latencies_us.end());
    result.errors += s.errors;
    result.connections += s.connections;
  }
  result.calls = all.size();
  if (!all.empty()) {
    std::sort(all.begin(), all.end());
    result.p50_us = all[all.size() / 2];
    result.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)];
    result.max_us = all.back();
  }
  if (cpu_before >= 0 && cpu_after >= 0 && result.calls > 0) {
    const double ticks_per_second = static_cast<double>(sysconf(_SC_CLK_TCK));
    result.server_cpu_us_per_call = static_cast<double>(cpu_after - cpu_before) / ticks_per_second *
                                    1e6 / static_cast<double>(result.calls);
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"MI XML-RPC load driver (see bench/RESULTS.md)"};
  std::string clients_list = "1,4,8";
  double seconds = 5;
  double warmup = 1;
  std::string command = "version";
  int port = 0;
  int server_pid = 0;
  app.add_option("--clients", clients_list, "comma-separated client counts");
  app.add_option("--seconds", seconds, "measured seconds per client count");
  app.add_option("--warmup", warmup, "warm-up seconds per client count");
  app.add_option("--command", command, "MI command without arguments (reply starts Server::)");
  app.add_option("--port", port, "use a running sipd's mi_xmlrpc port on 127.0.0.1");
  app.add_option("--server-pid", server_pid, "PID of its MI XMLRPC process (for CPU/request)");
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<sipd::testing::SipdInstance> sipd;
  if (port == 0) {
    port = sipd::testing::FreeTcpPort();
    sipd::testing::SipdInstance::Options options;
    options.grpc = false;
    options.log_level = 1;
    options.extra_config =
        absl::StrCat("loadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"port\", ", port, ")\n");
    sipd = std::make_unique<sipd::testing::SipdInstance>(options);
    if (absl::Status status = sipd->Start(); !status.ok()) {
      std::fprintf(stderr, "cannot start sipd: %s\n", status.ToString().c_str());
      return 1;
    }
    sipd::testing::WaitUntil([&] { return FindMiXmlrpcPid(port) > 0; }, std::chrono::seconds(10));
  }
  if (server_pid == 0) server_pid = FindMiXmlrpcPid(port);
  if (server_pid == 0) std::fprintf(stderr, "MI XMLRPC process not found: no CPU figures\n");

  std::printf(
      "| clients | requests | errors | connections | req/s | p50 us | p99 us | max us |"
      " server CPU us/req |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (absl::string_view item : absl::StrSplit(clients_list, ',')) {
    int clients = 0;
    if (!absl::SimpleAtoi(item, &clients) || clients <= 0) continue;
    const RunResult r = Run(port, server_pid, command, clients, seconds, warmup);
    std::printf("| %d | %llu | %llu | %llu | %.0f | %.0f | %.0f | %.0f | %.1f |\n", r.clients,
                static_cast<unsigned long long>(r.calls), static_cast<unsigned long long>(r.errors),
                static_cast<unsigned long long>(r.connections),
                static_cast<double>(r.calls) / r.seconds, r.p50_us, r.p99_us, r.max_us,
                r.server_cpu_us_per_call);
    std::fflush(stdout);
  }
  if (sipd) (void)sipd->Stop();
  return 0;
}
