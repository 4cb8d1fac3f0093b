#include "registry/statistics.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "registry/statistics_typed.h"

namespace {
absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }
}  // namespace

namespace sipd::mi {

StatsRegistry::Group& StatsRegistry::GroupFor(std::string_view group) {
  for (auto& g : groups_) {
    if (g.name == group) return g;
  }
  groups_.push_back(Group{std::string(group), {}});
  return groups_.back();
}

void StatsRegistry::AddGroup(std::string_view group) { GroupFor(group); }

absl::StatusOr<Counter> StatsRegistry::AddCounter(std::string_view group, std::string_view name,
                                                  uint32_t flags, std::string_view help) {
  if (used_ >= storage_.size()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no room for statistic ", AbslView(group), ":", AbslView(name)));
  }
  Group& g = GroupFor(group);
  for (const auto& s : g.stats) {
    if (s.name == name) {
      return absl::AlreadyExistsError(
          absl::StrCat("statistic ", AbslView(group), ":", AbslView(name), " exists"));
    }
  }
  std::atomic<uint64_t>* cell = &storage_[used_++];
  g.stats.push_back(Stat{std::string(name), flags & ~kStatIsFunc, cell, {}, std::string(help)});
  return Counter(cell);
}

absl::Status StatsRegistry::AddFunction(std::string_view group, std::string_view name,
                                        std::function<uint64_t()> fn, std::string_view help) {
  Group& g = GroupFor(group);
  for (const auto& s : g.stats) {
    if (s.name == name) {
      return absl::AlreadyExistsError(
          absl::StrCat("statistic ", AbslView(group), ":", AbslView(name), " exists"));
    }
  }
  g.stats.push_back(
      Stat{std::string(name), kStatIsFunc, nullptr, std::move(fn), std::string(help)});
  return absl::OkStatus();
}

void StatsRegistry::ForEach(const std::function<void(const StatView&)>& visit) const {
  for (const auto& g : groups_) {
    for (const auto& s : g.stats) {
      visit(StatView{g.name, s.name, s.help, s.flags, s.Read()});
    }
  }
}

size_t StatsRegistry::size() const {
  size_t n = 0;
  for (const auto& g : groups_) n += g.stats.size();
  return n;
}

void StatsRegistry::AppendStat(const Group& g, const Stat& s, Node& out) {
  out.AddKid(absl::StrCat(g.name, ":", s.name), absl::StrCat(s.Read()));
}

const StatsRegistry::Stat* StatsRegistry::FindStat(std::string_view name,
                                                   const Group** group) const {
  for (const auto& g : groups_) {
    for (const auto& s : g.stats) {
      if (absl::EqualsIgnoreCase(s.name, AbslView(name))) {
        if (group != nullptr) *group = &g;
        return &s;
      }
    }
  }
  return nullptr;
}

bool StatsRegistry::Collect(std::string_view selector, Node& out) const {
  if (selector.empty()) return false;
  bool found = false;
  if (selector == "all") {
    for (const auto& g : groups_) {
      for (const auto& s : g.stats) {
        AppendStat(g, s, out);
        found = true;
      }
    }
    return found;
  }
  if (selector.size() > 1 && selector.back() == ':') {
    std::string_view group = selector.substr(0, selector.size() - 1);
    for (const auto& g : groups_) {
      if (!absl::EqualsIgnoreCase(g.name, AbslView(group))) continue;
      for (const auto& s : g.stats) {
        AppendStat(g, s, out);
        found = true;
      }
      break;
    }
    return found;
  }
  const Group* g = nullptr;
  const Stat* s = FindStat(selector, &g);
  if (s == nullptr) return false;
  AppendStat(*g, *s, out);
  return true;
}

const std::string& StatsRegistry::StatRef::group() const { return group_->name; }
const std::string& StatsRegistry::StatRef::name() const { return stat_->name; }
bool StatsRegistry::StatRef::is_counter() const {
  return stat_->cell != nullptr && (stat_->flags & (kStatNoReset | kStatIsFunc)) == 0;
}
uint64_t StatsRegistry::StatRef::Read() const { return stat_->Read(); }

std::vector<StatsRegistry::StatRef> StatsRegistry::Select(
    std::span<const std::string> selectors) const {
  std::vector<StatRef> out;
  auto add = [&out](const Group& g, const Stat& s) {
    for (const StatRef& have : out) {
      if (have.stat_ == &s) return;
    }
    out.push_back(StatRef(&g, &s));
  };
  for (const std::string& selector : selectors) {
    if (selector.empty()) continue;
    if (selector == "all") {
      for (const auto& g : groups_) {
        for (const auto& s : g.stats) add(g, s);
      }
    } else if (selector.size() > 1 && selector.back() == ':') {
      const std::string_view group(selector.data(), selector.size() - 1);
      for (const auto& g : groups_) {
        if (!absl::EqualsIgnoreCase(g.name, AbslView(group))) continue;
        for (const auto& s : g.stats) add(g, s);
        break;
      }
    } else {
      const Group* g = nullptr;
      const Stat* s = FindStat(selector, &g);
      if (s != nullptr) add(*g, *s);
    }
  }
  return out;
}

bool StatsRegistry::Reset(std::string_view name) const {
  const Stat* s = FindStat(name, nullptr);
  if (s == nullptr) return false;
  if (s->cell != nullptr && (s->flags & (kStatNoReset | kStatIsFunc)) == 0) {
    s->cell->store(0, std::memory_order_relaxed);
  }
  return true;
}

Counter StatsRegistry::FindCounter(std::string_view name) const {
  const Stat* s = FindStat(name, nullptr);
  return (s == nullptr || s->cell == nullptr) ? Counter() : Counter(s->cell);
}

absl::StatusOr<uint64_t> StatsRegistry::Value(std::string_view name) const {
  const Stat* s = FindStat(name, nullptr);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no statistic ", AbslView(name)));
  return s->Read();
}

bool StatsRegistry::Resettable(std::string_view group, std::string_view name) const {
  for (const auto& g : groups_) {
    if (!absl::EqualsIgnoreCase(g.name, AbslView(group))) continue;
    for (const auto& s : g.stats) {
      if (absl::EqualsIgnoreCase(s.name, AbslView(name))) {
        return s.cell != nullptr && (s.flags & (kStatNoReset | kStatIsFunc)) == 0;
      }
    }
  }
  return false;
}

absl::Status StatsRegistry::RegisterCommands(Registry& registry) const {
  using Arity = ParamSpec::Arity;
  absl::Status s = registry.Register(Command::Spec{
      .name = "get_statistics",
      .module = "statistics",
      .help = "prints the statistics (all, group or one) realtime values.",
      .params = {{"statistic", Arity::kRequired, "`all`, `group:` or a statistic name"},
                 {"statistic", Arity::kRepeated, "more selectors"}},
      .flags = 0,
      .handler =
          [this](Call& call) {
            Node& root = call.reply().root;
            bool found = false;
            for (const auto& arg : call.args()) found |= Collect(arg.value, root);
            if (!found) call.reply() = Reply::Error(404, "Statistics Not Found");
            return absl::OkStatus();
          },
      .typed = {GetStatisticsMethod(*this)},
  });
  if (!s.ok()) return s;
  return registry.Register(Command::Spec{
      .name = "reset_statistics",
      .module = "statistics",
      .help = "resets the value of a statistic variable",
      .params = {{"statistic", Arity::kRequired, "a statistic name"},
                 {"statistic", Arity::kRepeated, "more names"}},
      .flags = kMutating | kDangerous,
      .handler =
          [this](Call& call) {
            bool found = false;
            for (const auto& arg : call.args()) found |= Reset(arg.value);
            if (!found) call.reply() = Reply::Error(404, "Statistics Not Found");
            return absl::OkStatus();
          },
      .typed = {ResetStatisticsMethod()},
  });
}

}  // namespace sipd::mi
