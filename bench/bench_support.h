// What the load drivers in bench/ share: latency summaries, server CPU time from
// /proc/<pid>/stat, finding a sipd process by its `ps` type, CPU pinning, a closed-loop
// runner, the common command-line flags and the Markdown result table.
//
// Thread-safety: the free functions are safe to call from any thread. A LatencyLog
// belongs to one client thread while it records; merge the logs after the threads
// joined. MarkdownTable writes to stdout and is for the main thread only.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace CLI {
class App;
}  // namespace CLI

namespace sipd::bench {

using Clock = std::chrono::steady_clock;

// --- latency ---------------------------------------------------------------------------

struct LatencySummary {
  uint64_t count = 0;
  double p50_us = 0;
  double p90_us = 0;
  double p99_us = 0;
  double max_us = 0;
};

// Latencies of one client thread, kept in 100 ns units (uint32_t: up to ~7 minutes per
// sample; longer samples saturate) so a million samples cost 4 MB.
class LatencyLog {
 public:
  LatencyLog() { samples_.reserve(1 << 20); }
  void Add(Clock::duration latency);
  size_t size() const { return samples_.size(); }

  // p50/p99/max over the samples of all `logs`.
  static LatencySummary Merge(const std::vector<LatencyLog>& logs);

 private:
  std::vector<uint32_t> samples_;
};

// p50/p90/p99/max of latencies given in microseconds (sorts a copy).
LatencySummary Summarize(std::vector<double> micros);

// The median of any figures (rates, CPU per request, drops): the middle element of a
// sorted copy, the upper one of an even count (as Summarize's p50); 0 when empty.
double Median(std::vector<double> values);

// --- CPU time --------------------------------------------------------------------------

// utime + stime of a whole process (all its threads) from /proc/<pid>/stat, in clock
// ticks; -1 if unreadable (e.g. the process is gone).
long long ProcessCpuTicks(pid_t pid);
// The sum over `pids`; -1 if any of them is unreadable.
long long TotalCpuTicks(const std::vector<pid_t>& pids);
// CPU time of the main threads of `pids` so far, in microseconds, from
// /proc/<pid>/schedstat (nanoseconds; clock ticks are too coarse for a few microseconds
// per request). For single-threaded processes such as SIP receivers.
double TotalSchedCpuMicros(const std::vector<pid_t>& pids);
// CPU time (user + system) of this process, in microseconds.
double SelfCpuMicros();
// CPU time (user + system) of this process's children reaped so far, in microseconds.
double ChildrenCpuMicros();
// (after - before) clock ticks per call in microseconds; -1 when a sample is missing
// (negative) or there were no calls.
double CpuMicrosPerCall(long long ticks_before, long long ticks_after, uint64_t calls);

// --- sipd processes --------------------------------------------------------------------

// Whether the `ps` Type `actual` is `wanted`: equal, or `wanted` followed by a space
// (so "SIP receiver" matches "SIP receiver udp:127.0.0.1:5060").
bool ProcessTypeMatches(std::string_view actual, std::string_view wanted);
// PIDs of the processes of type `type` in a text `ps` reply: the MI FIFO/datagram body
// ("Process:: ID=0 PID=1234 Type=attendant" lines) or XML-RPC's flattened node lines.
std::vector<pid_t> PidsOfTypeInText(std::string_view ps_reply, std::string_view type);
// PIDs of the processes of type `type`, from `ps` over the MI gRPC transport at
// `grpc_target` (host:port).
absl::StatusOr<std::vector<pid_t>> PidsOfTypeOverGrpc(const std::string& grpc_target,
                                                      std::string_view type);

// --- CPU pinning -----------------------------------------------------------------------

// Parses a taskset-style CPU list ("0", "0,1", "0-3,6").
absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view list);
// Pins the calling process (all threads created afterwards, and children forked
// afterwards, e.g. the sipd the bench starts) to `cpus`, as `taskset -c` would.
absl::Status PinToCpus(const std::vector<int>& cpus);
// Pins every thread process `pid` has now (/proc/PID/task; 0 = this process) to `cpus`;
// threads it creates later inherit the mask of their creator.
absl::Status PinAllThreads(pid_t pid, const std::vector<int>& cpus);

// --- closed-loop runner ----------------------------------------------------------------

// One request; false on error. Each client thread owns one.
using Requester = std::function<bool()>;
using RequesterFactory = std::function<Requester()>;

struct RunResult {
  int clients = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;
  double seconds = 0;
  LatencySummary latency;
  double server_cpu_us_per_call = -1;  // -1: no server pids, or unreadable
  double client_cpu_us_per_call = -1;  // this whole process
};

// `clients` threads, each with a Requester from `factory`, issue requests back to back:
// `warmup_seconds` unrecorded, then `seconds` recorded. Server CPU is sampled over the
// recorded phase from `server_pids` (empty: none).
RunResult RunClosedLoop(const RequesterFactory& factory, int clients, double warmup_seconds,
                        double seconds, const std::vector<pid_t>& server_pids);

// --- command line ----------------------------------------------------------------------

// The flags every load driver has; the caller sets the defaults before AddTo().
struct CommonFlags {
  std::string clients = "1,4,8";    // --clients: comma-separated client counts
  double seconds = 5;               // --seconds: measured seconds per run
  double warmup = 1;                // --warmup: warm-up seconds per run
  std::string command = "version";  // --command: MI command to run
  std::string cpus;                 // --cpus: pin the bench (and the sipd it starts)

  void AddTo(CLI::App& app);
  // Parses --clients and applies --cpus; call after parsing, before starting sipd.
  absl::StatusOr<std::vector<int>> Apply() const;
};

// Parses "1,4,8" into client counts (each >= 1).
absl::StatusOr<std::vector<int>> ParseClientCounts(std::string_view list);

// A GitHub Markdown table on stdout; columns after the first `text_columns` are
// right-aligned. Each row is flushed at once so long runs show progress.
class MarkdownTable {
 public:
  MarkdownTable(std::vector<std::string> headers, size_t text_columns = 1);
  void PrintHeader() const;
  void PrintRow(const std::vector<std::string>& cells) const;

 private:
  std::vector<std::string> headers_;
  size_t text_columns_;
};

}  // namespace sipd::bench
