// The console's view of the statistics history (registry/stats_history.h) as JSON.
//
//   HistoryJson: {"interval_ms":1000,"times":[unix_ms,...],"series":[{"name":
//     "core:rcv_requests","counter":true,"help":"...","values":[...]}],"truncated":false}
//   CatalogJson: [{"name":"core:rcv_requests","counter":true},...]
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "registry/stats_history.h"

namespace sipd::httpd {

std::string HistoryJson(const mi::StatsHistory& history, const std::vector<std::string>& selectors,
                        size_t last, int64_t since_ms);
std::string CatalogJson(const mi::StatsHistory& history);

}  // namespace sipd::httpd
