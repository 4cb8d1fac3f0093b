// The console's statistics history as JSON. The history is registry/stat_sampler.h's
// StatSampler (the sampler gRPC WatchStatistics uses too): httpd takes one sample a
// second from its event loop and keeps `history_seconds` of them.
//
//   HistoryJson: {"interval_ms":1000,"times":[unix_ms,...],"series":[{"name":
//     "core:rcv_requests","counter":true,"help":"...","values":[...]}],"truncated":false}
//   CatalogJson: [{"name":"core:rcv_requests","counter":true},...]
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "registry/stat_sampler.h"
#include "registry/statistics.h"

namespace sipd::httpd {

// The selected statistics ("all", "group:" or "group:name"; unknown ones select nothing)
// over the last `last` samples, only those after unix time `since_ms` when > 0. Help
// texts come from `stats`.
std::string HistoryJson(const mi::StatSampler& sampler, const mi::StatsRegistry& stats,
                        const std::vector<std::string>& selectors, size_t last, int64_t since_ms);
std::string CatalogJson(const mi::StatSampler& sampler);

}  // namespace sipd::httpd
