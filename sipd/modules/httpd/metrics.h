// GET /metrics: every statistic in the Prometheus text exposition format (version
// 0.0.4), and per-process CPU and memory.
//
//   # HELP sipd_core_rcv_requests_total core:rcv_requests: <declared help>
//   # TYPE sipd_core_rcv_requests_total counter
//   sipd_core_rcv_requests_total 1234
//
// Names: sipd_<group>_<name>, lower-cased, every character outside [a-z0-9_] turned into
// '_'; resettable counters are `counter` and get Prometheus's `_total` suffix (promtool
// insists); everything else (functions, no-reset figures such as tm:inuse_transactions)
// is `gauge`. Prometheus wants base units: a statistic named `..._us` (microseconds, e.g.
// mi:<command>_time_us) or `..._ms` is exported as `..._seconds` with its value scaled.
// Two statistics that sanitise to one name keep the first, the second gets
// a `_2` suffix. Per-process figures carry a `process` label (the `ps` type) and `id`
// (the `ps` ID): the per-process statistics `pkmem:<ID>-<name>` become one metric per
// name, and each process's CPU and memory are read from /proc:
//   sipd_pkmem_used_size{id="3",process="MI FIFO"} 123456
//   sipd_process_cpu_seconds_total{id="3",process="MI FIFO"} 0.42
//   sipd_process_resident_memory_bytes{id="3",process="MI FIFO"} 8126464
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "registry/statistics.h"
#include "sipd/api/module.h"

namespace sipd::httpd {

struct ProcessUsage {
  int id = 0;
  int pid = 0;
  std::string type;
  double cpu_seconds = 0;  // user + system, since the process started
  uint64_t rss_bytes = 0;
};

// Reads /proc/PID/stat for every forked process of `table`; gone processes are skipped.
std::vector<ProcessUsage> ReadProcessUsage(const std::vector<ProcessInfo>& table);

// The metric name of group:name (see file comment; no dedup), and the factor its value
// is multiplied by (1, or 1e-6 / 1e-3 for microseconds / milliseconds).
std::string MetricName(std::string_view group, std::string_view name, bool counter,
                       double* scale = nullptr);

// `table` names the processes of per-process statistics (pkmem); `processes` adds CPU
// and memory per process.
std::string RenderPrometheus(const mi::StatsRegistry& stats, const std::vector<ProcessInfo>& table,
                             const std::vector<ProcessUsage>& processes);

}  // namespace sipd::httpd
