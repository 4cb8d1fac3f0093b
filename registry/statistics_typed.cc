#include "registry/statistics_typed.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "registry/statistics.h"
#include "registry/typed_method.h"
#include "sipd/statistics/v1/statistics.pb.h"

namespace sipd::mi {
namespace {

namespace statsv1 = ::sipd::statistics::v1;

constexpr char kService[] = "sipd.statistics.v1.StatisticsService.";

// "GROUP:NAME" -> "NAME" (MI looks statistics up by bare name, spec 7.2); anything else
// unchanged.
std::string BareName(const std::string& selector) {
  const size_t colon = selector.find(':');
  if (colon == std::string::npos || colon + 1 == selector.size()) return selector;
  return selector.substr(colon + 1);
}

absl::StatusOr<std::vector<Argument>> Selectors(const statsv1::GetStatisticsRequest& request) {
  if (request.names().empty()) return Arguments({"all"});
  std::vector<std::string> values;
  for (int i = 0; i < request.names_size(); ++i) {
    const std::string& name = request.names(i);
    if (name.empty() || name == ":") {
      return FieldError(absl::StrCat("names[", i, "]"), "empty statistic name");
    }
    values.push_back(BareName(name));
  }
  return Arguments(std::move(values));
}

absl::StatusOr<std::vector<Argument>> ResetNames(const statsv1::ResetStatisticsRequest& request) {
  if (request.names().empty()) return FieldError("names", "at least one statistic name");
  std::vector<std::string> values;
  for (int i = 0; i < request.names_size(); ++i) {
    const std::string& name = request.names(i);
    const std::string field = absl::StrCat("names[", i, "]");
    if (name.empty()) return FieldError(field, "empty statistic name");
    if (name == "all" || name.back() == ':') {
      return FieldError(field, "only statistic names can be reset (not `all` or `GROUP:`)");
    }
    values.push_back(BareName(name));
  }
  return Arguments(std::move(values));
}

}  // namespace

std::shared_ptr<const TypedMethod> GetStatisticsMethod(const StatsRegistry& stats) {
  return TypedUnary<statsv1::GetStatisticsRequest, statsv1::GetStatisticsResponse>(
      absl::StrCat(kService, "GetStatistics"), Selectors,
      [&stats](const statsv1::GetStatisticsRequest&, const Reply& reply,
               statsv1::GetStatisticsResponse& out) -> absl::Status {
        for (const auto& node : reply.root.kids) {
          const size_t colon = node->name.find(':');
          uint64_t value = 0;
          if (colon == std::string::npos || !absl::SimpleAtoi(node->value, &value)) {
            return absl::InternalError(
                absl::StrCat("get_statistics line '", node->name, ":: ", node->value, "'"));
          }
          statsv1::Statistic* stat = out.add_statistics();
          stat->set_group(node->name.substr(0, colon));
          stat->set_name(node->name.substr(colon + 1));
          stat->set_value(static_cast<int64_t>(value));
          stat->set_resettable(stats.Resettable(stat->group(), stat->name()));
        }
        return absl::OkStatus();
      });
}

std::shared_ptr<const TypedMethod> ResetStatisticsMethod() {
  return TypedUnary<statsv1::ResetStatisticsRequest, statsv1::ResetStatisticsResponse>(
      absl::StrCat(kService, "ResetStatistics"), ResetNames,
      [](const statsv1::ResetStatisticsRequest&, const Reply&, statsv1::ResetStatisticsResponse&) {
        return absl::OkStatus();
      });
}

}  // namespace sipd::mi
