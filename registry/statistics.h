// The statistics registry (spec section 7).
//
// A statistic is (group, name, flags, counter or function). Counters are atomics in
// memory supplied by the caller (shared memory in sipd, so every process updates the
// same cell); functions are evaluated in the process that reads them.
//
// Thread/process-safety: register everything before the first fork; afterwards the
// registry's metadata is read-only and counters are lock-free atomics usable from any
// process and thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/command.h"
#include "registry/tree.h"

namespace sipd::mi {

enum StatFlag : uint32_t {
  kStatNoReset = 1,  // STAT_NO_RESET
  kStatIsFunc = 8,   // STAT_IS_FUNC
};

// A handle to one counter cell. Cheap to copy; valid as long as the storage lives.
class Counter {
 public:
  Counter() = default;
  explicit Counter(std::atomic<uint64_t>* cell) : cell_(cell) {}
  void Inc(uint64_t n = 1) const { cell_->fetch_add(n, std::memory_order_relaxed); }
  void Dec(uint64_t n = 1) const { cell_->fetch_sub(n, std::memory_order_relaxed); }
  void Set(uint64_t v) const { cell_->store(v, std::memory_order_relaxed); }
  uint64_t value() const { return cell_->load(std::memory_order_relaxed); }
  bool valid() const { return cell_ != nullptr; }
  std::atomic<uint64_t>* cell() const { return cell_; }

 private:
  std::atomic<uint64_t>* cell_ = nullptr;
};

class StatsRegistry {
  struct Stat;
  struct Group;

 public:
  // One statistic, for repeated reads (registry/stat_sampler.h). Valid as long as the
  // registry is not changed (after the fork: for good). Read() from any process or
  // thread, as get_statistics.
  class StatRef {
   public:
    const std::string& group() const;
    const std::string& name() const;
    // A counter cell that reset_statistics may zero: a count whose rate means
    // something. False for functions and no-reset counters (levels such as
    // usrloc:location-users).
    bool is_counter() const;
    uint64_t Read() const;

   private:
    friend class StatsRegistry;
    StatRef(const Group* group, const Stat* stat) : group_(group), stat_(stat) {}
    const Group* group_;
    const Stat* stat_;
  };

  // `storage` holds the counter cells (zero-initialised, typically in shared memory);
  // its size bounds the number of counters.
  explicit StatsRegistry(std::span<std::atomic<uint64_t>> storage) : storage_(storage) {}

  // Creates the group if it does not exist yet (groups keep creation order).
  void AddGroup(std::string_view group);

  // ResourceExhausted when the storage is full; AlreadyExists for a duplicate
  // group:name. `help` is the one-line description exporters show (Prometheus
  // `# HELP`); empty = none declared.
  absl::StatusOr<Counter> AddCounter(std::string_view group, std::string_view name,
                                     uint32_t flags = 0, std::string_view help = {});
  absl::Status AddFunction(std::string_view group, std::string_view name,
                           std::function<uint64_t()> fn, std::string_view help = {});

  // One statistic as exporters see it (see ForEach).
  struct StatView {
    std::string_view group;
    std::string_view name;
    std::string_view help;
    uint32_t flags = 0;  // kStatNoReset, kStatIsFunc
    uint64_t value = 0;
    // A counter cell that reset_statistics can zero (not a function, no kStatNoReset).
    bool resettable() const { return (flags & (kStatNoReset | kStatIsFunc)) == 0; }
  };
  // Calls `visit` for every statistic, groups in creation order, reading each value
  // (functions run in the calling process).
  void ForEach(const std::function<void(const StatView&)>& visit) const;
  size_t size() const;

  // Appends `group:name:: value` nodes for one selector (`all`, `group:` or a bare,
  // case-insensitive name). Returns whether anything was appended.
  bool Collect(std::string_view selector, Node& out) const;

  // The statistics get_statistics prints for `selectors` (same rules as Collect), in
  // that order, each once. Empty if nothing matched.
  std::vector<StatRef> Select(std::span<const std::string> selectors) const;

  // Resets one statistic by bare name. Returns whether it was found (even if it is not
  // resettable, spec 7.3).
  bool Reset(std::string_view name) const;

  // Lookup by bare name (case-insensitive); nullptr-like invalid Counter if absent or a
  // function.
  Counter FindCounter(std::string_view name) const;
  // Value of a statistic by bare name; NotFound if absent.
  absl::StatusOr<uint64_t> Value(std::string_view name) const;
  // Whether reset_statistics can set group:name to 0 (a counter without kStatNoReset);
  // false for functions and unknown statistics. Group and name are case-insensitive.
  bool Resettable(std::string_view group, std::string_view name) const;

  // Registers get_statistics and reset_statistics (module "statistics"), with their
  // typed methods sipd.statistics.v1.StatisticsService.GetStatistics/ResetStatistics
  // (registry/statistics_typed.h).
  absl::Status RegisterCommands(Registry& registry) const;

 private:
  struct Stat {
    std::string name;
    uint32_t flags = 0;
    std::atomic<uint64_t>* cell = nullptr;
    std::function<uint64_t()> fn;
    std::string help;
    uint64_t Read() const { return fn ? fn() : cell->load(std::memory_order_relaxed); }
  };
  struct Group {
    std::string name;
    std::vector<Stat> stats;
  };
  Group& GroupFor(std::string_view group);
  const Stat* FindStat(std::string_view name, const Group** group) const;
  static void AppendStat(const Group& g, const Stat& s, Node& out);

  std::span<std::atomic<uint64_t>> storage_;
  size_t used_ = 0;
  std::vector<Group> groups_;
};

}  // namespace sipd::mi
