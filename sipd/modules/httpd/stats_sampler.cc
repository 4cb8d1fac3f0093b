#include "sipd/modules/httpd/stats_sampler.h"

#include "absl/strings/str_cat.h"
#include "sipd/modules/httpd/json_reply.h"

namespace sipd::httpd {

std::string HistoryJson(const mi::StatsHistory& history, const std::vector<std::string>& selectors,
                        size_t last, int64_t since_ms) {
  const mi::StatsHistory::Window window = history.Query(selectors, last, since_ms);
  std::string out = "{\"interval_ms\":1000,\"times\":[";
  for (size_t k = 0; k < window.times.size(); ++k) {
    if (k > 0) out.push_back(',');
    absl::StrAppend(&out, window.times[k]);
  }
  out.append("],\"series\":[");
  for (size_t i = 0; i < window.series.size(); ++i) {
    const mi::StatsHistory::Series& series = *window.series[i];
    if (i > 0) out.push_back(',');
    out.append("{\"name\":");
    AppendJsonString(out, series.name);
    absl::StrAppend(&out, ",\"counter\":", series.counter ? "true" : "false", ",\"help\":");
    AppendJsonString(out, series.help);
    out.append(",\"values\":[");
    for (size_t k = 0; k < window.values[i].size(); ++k) {
      if (k > 0) out.push_back(',');
      absl::StrAppend(&out, window.values[i][k]);
    }
    out.append("]}");
  }
  absl::StrAppend(&out, "],\"truncated\":", history.truncated() ? "true" : "false", "}");
  return out;
}

std::string CatalogJson(const mi::StatsHistory& history) {
  std::string out = "[";
  bool first = true;
  for (const mi::StatsHistory::Series* series : history.Catalog()) {
    if (!first) out.push_back(',');
    first = false;
    out.append("{\"name\":");
    AppendJsonString(out, series->name);
    absl::StrAppend(&out, ",\"counter\":", series->counter ? "true" : "false", "}");
  }
  out.push_back(']');
  return out;
}

}  // namespace sipd::httpd
