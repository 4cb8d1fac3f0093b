// The typed face of get_statistics and reset_statistics: sipd.statistics.v1
// StatisticsService (proto/sipd/statistics/v1/statistics.proto), declared on those
// commands by StatsRegistry::RegisterCommands().
#pragma once

#include <memory>

namespace sipd::mi {

class StatsRegistry;
class TypedMethod;

// GetStatistics: names -> selectors ("GROUP:NAME" is looked up by NAME; none = "all");
// `group:name:: value` lines -> Statistic{group, name, value, resettable}, resettable
// from `stats`, which must outlive the method.
std::shared_ptr<const TypedMethod> GetStatisticsMethod(const StatsRegistry& stats);
// ResetStatistics: names ("NAME" or "GROUP:NAME"; at least one; no "all" or "GROUP:").
std::shared_ptr<const TypedMethod> ResetStatisticsMethod();

}  // namespace sipd::mi
