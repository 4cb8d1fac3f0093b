#include "sipd/modules/httpd/stats_sampler.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "sipd/modules/httpd/json_reply.h"

namespace sipd::httpd {
namespace {

int64_t UnixMs(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

bool Selected(const std::string& name, const std::vector<std::string>& selectors) {
  const std::string lower = absl::AsciiStrToLower(name);
  const std::string group = lower.substr(0, lower.find(':') + 1);
  for (const std::string& s : selectors) {
    const std::string selector = absl::AsciiStrToLower(s);
    if (selector == "all" || selector == lower || (selector.back() == ':' && selector == group)) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string HistoryJson(const mi::StatSampler& sampler, const mi::StatsRegistry& stats,
                        const std::vector<std::string>& selectors, size_t last, int64_t since_ms) {
  std::map<std::string, std::string> help;
  stats.ForEach([&](const mi::StatsRegistry::StatView& v) {
    if (!v.help.empty())
      help[std::string(v.group) + ":" + std::string(v.name)] = std::string(v.help);
  });
  const std::vector<std::string> names = sampler.names();
  const mi::StatSample latest = sampler.Last();
  std::vector<int64_t> times;
  std::string series;
  bool first_series = true;
  for (size_t i = 0; i < names.size(); ++i) {
    if (!Selected(names[i], selectors)) continue;
    std::vector<mi::StatPoint> points = sampler.History(names[i]);
    size_t begin = points.size() > last ? points.size() - last : 0;
    while (begin < points.size() && since_ms > 0 && UnixMs(points[begin].time) <= since_ms) {
      ++begin;
    }
    if (first_series) {
      for (size_t k = begin; k < points.size(); ++k) times.push_back(UnixMs(points[k].time));
    }
    const bool counter =
        i < latest.values.size() && latest.values[i].kind == mi::StatKind::kCounter;
    if (!first_series) series.push_back(',');
    first_series = false;
    series.append("{\"name\":");
    AppendJsonString(series, names[i]);
    absl::StrAppend(&series, ",\"counter\":", counter ? "true" : "false", ",\"help\":");
    auto h = help.find(names[i]);
    AppendJsonString(series, h == help.end() ? std::string() : h->second);
    series.append(",\"values\":[");
    for (size_t k = begin; k < points.size(); ++k) {
      if (k > begin) series.push_back(',');
      absl::StrAppend(&series, points[k].value);
    }
    series.append("]}");
  }
  std::string out = "{\"interval_ms\":1000,\"times\":[";
  for (size_t k = 0; k < times.size(); ++k) {
    if (k > 0) out.push_back(',');
    absl::StrAppend(&out, times[k]);
  }
  absl::StrAppend(&out, "],\"series\":[", series, "],\"truncated\":false}");
  return out;
}

std::string CatalogJson(const mi::StatSampler& sampler) {
  const std::vector<std::string> names = sampler.names();
  const mi::StatSample latest = sampler.Last();
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append("{\"name\":");
    AppendJsonString(out, names[i]);
    const bool counter =
        i < latest.values.size() && latest.values[i].kind == mi::StatKind::kCounter;
    absl::StrAppend(&out, ",\"counter\":", counter ? "true" : "false", "}");
  }
  out.push_back(']');
  return out;
}

}  // namespace sipd::httpd
