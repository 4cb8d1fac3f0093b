#include "bench/bench_support.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "sipd/mi/v1/mi.grpc.pb.h"

namespace sipd::bench {
namespace {

absl::string_view AbslView(std::string_view text) { return {text.data(), text.size()}; }

LatencySummary SummarizeSorted(const std::vector<double>& sorted) {
  LatencySummary s;
  s.count = sorted.size();
  if (sorted.empty()) return s;
  s.p50_us = sorted[sorted.size() / 2];
  s.p90_us = sorted[sorted.size() * 9 / 10];
  s.p99_us = sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)];
  s.max_us = sorted.back();
  return s;
}

// User + system CPU time of `who` (RUSAGE_SELF or RUSAGE_CHILDREN), in microseconds.
double RusageCpuMicros(int who) {
  rusage usage{};
  getrusage(who, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + usage.ru_utime.tv_usec +
         usage.ru_stime.tv_usec;
}

}  // namespace

void LatencyLog::Add(Clock::duration latency) {
  const auto units = std::chrono::duration_cast<std::chrono::nanoseconds>(latency).count() / 100;
  samples_.push_back(
      static_cast<uint32_t>(std::clamp<int64_t>(units, 0, std::numeric_limits<uint32_t>::max())));
}

LatencySummary LatencyLog::Merge(const std::vector<LatencyLog>& logs) {
  std::vector<uint32_t> all;
  for (const LatencyLog& log : logs)
    all.insert(all.end(), log.samples_.begin(), log.samples_.end());
  std::sort(all.begin(), all.end());
  std::vector<double> micros;
  micros.reserve(all.size());
  for (uint32_t units : all) micros.push_back(units / 10.0);
  return SummarizeSorted(micros);
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

LatencySummary Summarize(std::vector<double> micros) {
  std::sort(micros.begin(), micros.end());
  return SummarizeSorted(micros);
}

long long ProcessCpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // comm may contain spaces and parentheses: the fields start after the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 > stat.size()) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  long long utime = -1, stime = -1;
  // Fields after "pid (comm) ": state is field 3; utime is 14, stime 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 && !absl::SimpleAtoi(f, &utime)) return -1;
    if (i == 15 && !absl::SimpleAtoi(f, &stime)) return -1;
  }
  if (utime < 0 || stime < 0) return -1;
  return utime + stime;
}

long long TotalCpuTicks(const std::vector<pid_t>& pids) {
  long long total = 0;
  for (pid_t pid : pids) {
    const long long ticks = ProcessCpuTicks(pid);
    if (ticks < 0) return -1;
    total += ticks;
  }
  return total;
}

double TotalSchedCpuMicros(const std::vector<pid_t>& pids) {
  double total = 0;
  for (pid_t pid : pids) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/schedstat"));
    double ns = 0;
    in >> ns;
    total += ns / 1000;
  }
  return total;
}

double SelfCpuMicros() { return RusageCpuMicros(RUSAGE_SELF); }

double ChildrenCpuMicros() { return RusageCpuMicros(RUSAGE_CHILDREN); }

double CpuMicrosPerCall(long long ticks_before, long long ticks_after, uint64_t calls) {
  if (ticks_before < 0 || ticks_after < 0 || calls == 0) return -1;
  return static_cast<double>(ticks_after - ticks_before) * 1e6 /
         static_cast<double>(sysconf(_SC_CLK_TCK)) / static_cast<double>(calls);
}

bool ProcessTypeMatches(std::string_view actual, std::string_view wanted) {
  if (actual.size() < wanted.size() || actual.compare(0, wanted.size(), wanted) != 0) {
    return false;
  }
  return actual.size() == wanted.size() || actual[wanted.size()] == ' ';
}

std::vector<pid_t> PidsOfTypeInText(std::string_view ps_reply, std::string_view type) {
  std::vector<pid_t> pids;
  for (absl::string_view line : absl::StrSplit(AbslView(ps_reply), '\n')) {
    const size_t pid_at = line.find("PID=");
    const size_t type_at = line.find(" Type=");
    if (pid_at == absl::string_view::npos || type_at == absl::string_view::npos ||
        type_at < pid_at) {
      continue;
    }
    const absl::string_view actual = line.substr(type_at + 6);
    int pid = 0;
    if (ProcessTypeMatches(std::string_view(actual.data(), actual.size()), type) &&
        absl::SimpleAtoi(line.substr(pid_at + 4, type_at - pid_at - 4), &pid)) {
      pids.push_back(pid);
    }
  }
  return pids;
}

absl::StatusOr<std::vector<pid_t>> PidsOfTypeOverGrpc(const std::string& grpc_target,
                                                      std::string_view type) {
  namespace v1 = ::sipd::mi::v1;
  auto stub =
      v1::Management::NewStub(grpc::CreateChannel(grpc_target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::ExecuteRequest request;
  request.set_command("ps");
  v1::Reply reply;
  if (grpc::Status s = stub->Execute(&ctx, request, &reply); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("ps over gRPC: ", s.error_message()));
  }
  std::vector<pid_t> pids;
  for (const auto& node : reply.nodes()) {
    std::string pid, actual;
    for (const auto& a : node.attributes()) {
      if (a.name() == "PID") pid = a.value();
      if (a.name() == "Type") actual = a.value();
    }
    int value = 0;
    if (ProcessTypeMatches(actual, type) && absl::SimpleAtoi(pid, &value)) pids.push_back(value);
  }
  return pids;
}

absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view list) {
  std::vector<int> cpus;
  for (absl::string_view item : absl::StrSplit(AbslView(list), ',')) {
    std::vector<absl::string_view> range = absl::StrSplit(item, absl::MaxSplits('-', 1));
    int first = 0;
    int last = 0;
    const bool parsed = absl::SimpleAtoi(range[0], &first) &&
                        absl::SimpleAtoi(range.size() == 2 ? range[1] : range[0], &last);
    if (!parsed || first < 0 || last < first || last >= CPU_SETSIZE) {
      return absl::InvalidArgumentError(absl::StrCat("bad CPU list '", AbslView(list), "'"));
    }
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

absl::Status PinToCpus(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("sched_setaffinity: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status PinAllThreads(pid_t pid, const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) CPU_SET(cpu, &set);
  const std::string dir = pid == 0 ? "/proc/self/task" : absl::StrCat("/proc/", pid, "/task");
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    pid_t tid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &tid)) continue;
    if (sched_setaffinity(tid, sizeof(set), &set) != 0 && errno != ESRCH) {
      return absl::InvalidArgumentError(
          absl::StrCat("sched_setaffinity(", tid, "): ", std::strerror(errno)));
    }
  }
  if (error) return absl::NotFoundError(absl::StrCat(dir, ": ", error.message()));
  return absl::OkStatus();
}

RunResult RunClosedLoop(const RequesterFactory& factory, int clients, double warmup_seconds,
                        double seconds, const std::vector<pid_t>& server_pids) {
  std::vector<Requester> requesters;
  for (int i = 0; i < clients; ++i) requesters.push_back(factory());
  std::atomic<int> phase{0};  // 0 warm-up, 1 measuring, 2 stop
  std::vector<LatencyLog> latencies(static_cast<size_t>(clients));
  std::vector<uint64_t> errors(static_cast<size_t>(clients), 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      while (true) {
        const int p = phase.load(std::memory_order_relaxed);
        if (p == 2) break;
        const auto start = Clock::now();
        const bool ok = requesters[i]();
        const auto end = Clock::now();
        if (p != 1) continue;
        if (!ok) ++errors[i];
        latencies[i].Add(end - start);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_seconds));
  const long long cpu_before = server_pids.empty() ? -1 : TotalCpuTicks(server_pids);
  const double self_before = SelfCpuMicros();
  const auto t0 = Clock::now();
  phase = 1;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  phase = 2;
  const auto t1 = Clock::now();
  const long long cpu_after = server_pids.empty() ? -1 : TotalCpuTicks(server_pids);
  const double self_after = SelfCpuMicros();
  for (auto& t : threads) t.join();

  RunResult r;
  r.clients = clients;
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  for (uint64_t e : errors) r.errors += e;
  r.latency = LatencyLog::Merge(latencies);
  r.calls = r.latency.count;
  r.server_cpu_us_per_call = CpuMicrosPerCall(cpu_before, cpu_after, r.calls);
  if (r.calls > 0) r.client_cpu_us_per_call = (self_after - self_before) / r.calls;
  return r;
}

void CommonFlags::AddTo(CLI::App& app) {
  app.add_option("--clients", clients, "comma-separated client counts")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds per run")->capture_default_str();
  app.add_option("--warmup", warmup, "warm-up seconds per run")->capture_default_str();
  app.add_option("--command", command, "MI command (no arguments)")->capture_default_str();
  app.add_option("--cpus", cpus,
                 "pin the bench and the sipd it starts to these CPUs (taskset list, e.g. 0)");
}

absl::StatusOr<std::vector<int>> CommonFlags::Apply() const {
  absl::StatusOr<std::vector<int>> counts = ParseClientCounts(clients);
  if (!counts.ok()) return counts.status();
  if (!cpus.empty()) {
    absl::StatusOr<std::vector<int>> list = ParseCpuList(cpus);
    if (!list.ok()) return list.status();
    if (absl::Status s = PinToCpus(*list); !s.ok()) return s;
  }
  return counts;
}

absl::StatusOr<std::vector<int>> ParseClientCounts(std::string_view list) {
  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(AbslView(list), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      return absl::InvalidArgumentError(absl::StrCat("bad --clients '", AbslView(list), "'"));
    }
    counts.push_back(n);
  }
  return counts;
}

MarkdownTable::MarkdownTable(std::vector<std::string> headers, size_t text_columns)
    : headers_(std::move(headers)), text_columns_(text_columns) {}

void MarkdownTable::PrintHeader() const {
  std::string rule = "|";
  for (size_t i = 0; i < headers_.size(); ++i) rule += i < text_columns_ ? "---|" : "---:|";
  std::printf("| %s |\n%s\n", absl::StrJoin(headers_, " | ").c_str(), rule.c_str());
  std::fflush(stdout);
}

void MarkdownTable::PrintRow(const std::vector<std::string>& cells) const {
  std::printf("| %s |\n", absl::StrJoin(cells, " | ").c_str());
  std::fflush(stdout);
}

}  // namespace sipd::bench
