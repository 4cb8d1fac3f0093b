#include "sipd/modules/httpd/metrics.h"

#include <unistd.h>

#include <charconv>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace sipd::httpd {
namespace {

void AppendSanitised(std::string& out, std::string_view text) {
  for (const char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
      out.push_back(c);
    } else if (c >= 'A' && c <= 'Z') {
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else {
      out.push_back('_');
    }
  }
}

// HELP text: backslash and newline escaped.
void AppendHelp(std::string& out, std::string_view text) {
  for (const char c : text) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
}

// Label value: backslash, quote and newline escaped.
void AppendLabel(std::string& out, std::string_view text) {
  for (const char c : text) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '"') {
      out.append("\\\"");
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
}

}  // namespace

std::string MetricName(std::string_view group, std::string_view name, bool counter, double* scale) {
  std::string out = "sipd_";
  AppendSanitised(out, group);
  out.push_back('_');
  AppendSanitised(out, name);
  double factor = 1;
  if (out.ends_with("_us")) {
    out.resize(out.size() - 3);
    out.append("_seconds");
    factor = 1e-6;
  } else if (out.ends_with("_ms")) {
    out.resize(out.size() - 3);
    out.append("_seconds");
    factor = 1e-3;
  }
  if (scale != nullptr) *scale = factor;
  if (counter && !out.ends_with("_total")) out.append("_total");
  return out;
}

std::vector<ProcessUsage> ReadProcessUsage(const std::vector<ProcessInfo>& table) {
  static const long ticks = sysconf(_SC_CLK_TCK);
  static const long page = sysconf(_SC_PAGESIZE);
  std::vector<ProcessUsage> out;
  for (const ProcessInfo& info : table) {
    if (info.pid <= 0) continue;
    std::ifstream stat_file(absl::StrCat("/proc/", info.pid, "/stat"));
    std::string line;
    if (!std::getline(stat_file, line)) continue;
    // Fields after the command name (which may hold spaces) start past the last ')'.
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(line.substr(close + 2));
    std::vector<std::string> f;
    std::string field;
    while (fields >> field) f.push_back(field);
    // f[0] is field 3 (state): utime is field 14, stime 15, rss 24.
    if (f.size() < 22) continue;
    ProcessUsage usage;
    usage.id = info.id;
    usage.pid = info.pid;
    usage.type = info.type;
    usage.cpu_seconds =
        static_cast<double>(std::stoull(f[11]) + std::stoull(f[12])) / static_cast<double>(ticks);
    usage.rss_bytes = std::stoull(f[21]) * static_cast<uint64_t>(page);
    out.push_back(std::move(usage));
  }
  return out;
}

std::string RenderPrometheus(const mi::StatsRegistry& stats, const std::vector<ProcessInfo>& table,
                             const std::vector<ProcessUsage>& processes) {
  std::string out;
  out.reserve(stats.size() * 160 + processes.size() * 200 + 512);
  std::unordered_set<std::string> seen;
  seen.reserve(stats.size() * 2);
  std::map<int, std::string_view> types;
  for (const ProcessInfo& p : table) types[p.id] = p.type;
  auto labels = [&](int id, std::string_view type) {
    absl::StrAppend(&out, "{id=\"", id, "\",process=\"");
    AppendLabel(out, type);
    out.append("\"} ");
  };
  // Per-process statistics (group pkmem, names "<ID>-<name>"): one metric per name.
  struct PerProcess {
    std::string group_name;  // "pkmem:<name>" for HELP
    std::vector<std::pair<int, uint64_t>> values;
  };
  std::map<std::string, PerProcess> per_process;
  stats.ForEach([&](const mi::StatsRegistry::StatView& stat) {
    if (stat.group == "pkmem") {
      const size_t dash = stat.name.find('-');
      int id = 0;
      const auto [end, error] = std::from_chars(stat.name.data(), stat.name.data() + dash, id);
      if (dash != std::string_view::npos && error == std::errc() &&
          end == stat.name.data() + dash) {
        const std::string_view rest = stat.name.substr(dash + 1);
        PerProcess& entry = per_process[MetricName(stat.group, rest, false)];
        entry.group_name = std::string(stat.group).append(":<ID>-").append(rest);
        entry.values.emplace_back(id, stat.value);
        return;
      }
    }
    const bool counter = stat.resettable();
    double scale = 1;
    std::string name = MetricName(stat.group, stat.name, counter, &scale);
    if (!seen.insert(name).second) {
      for (int n = 2;; ++n) {
        std::string candidate = absl::StrCat(name, "_", n);
        if (seen.insert(candidate).second) {
          name = std::move(candidate);
          break;
        }
      }
    }
    absl::StrAppend(&out, "# HELP ", name, " ");
    AppendHelp(out, stat.group);
    out.push_back(':');
    AppendHelp(out, stat.name);
    if (!stat.help.empty()) {
      out.append(": ");
      AppendHelp(out, stat.help);
    }
    absl::StrAppend(&out, "\n# TYPE ", name, counter ? " counter\n" : " gauge\n", name, " ");
    if (scale == 1) {
      absl::StrAppend(&out, stat.value, "\n");
    } else {
      absl::StrAppend(&out, static_cast<double>(stat.value) * scale, "\n");
    }
  });
  for (const auto& [name, entry] : per_process) {
    if (!seen.insert(name).second) continue;
    absl::StrAppend(&out, "# HELP ", name, " ");
    AppendHelp(out, entry.group_name);
    absl::StrAppend(&out, " (per process)\n# TYPE ", name, " gauge\n");
    for (const auto& [id, value] : entry.values) {
      out.append(name);
      const auto type = types.find(id);
      labels(id, type == types.end() ? std::string_view() : type->second);
      absl::StrAppend(&out, value, "\n");
    }
  }
  if (!processes.empty()) {
    out.append(
        "# HELP sipd_process_cpu_seconds_total CPU time (user + system) of each sipd "
        "process, as ps lists them\n# TYPE sipd_process_cpu_seconds_total counter\n");
    for (const ProcessUsage& p : processes) {
      out.append("sipd_process_cpu_seconds_total");
      labels(p.id, p.type);
      absl::StrAppend(&out, p.cpu_seconds, "\n");
    }
    out.append(
        "# HELP sipd_process_resident_memory_bytes Resident memory of each sipd process "
        "(shared memory pages it touched included)\n"
        "# TYPE sipd_process_resident_memory_bytes gauge\n");
    for (const ProcessUsage& p : processes) {
      out.append("sipd_process_resident_memory_bytes");
      labels(p.id, p.type);
      absl::StrAppend(&out, p.rss_bytes, "\n");
    }
  }
  return out;
}

}  // namespace sipd::httpd
