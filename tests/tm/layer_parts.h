// What a tm::TransactionLayer runs on, for the tests, fuzz targets and benches that
// drive it in one process: shared memory, the statistics it counts into (the core's, sl's
// and tm's), the transaction table and a blacklist. Each user builds its own layer on
// them (its transport, router, options and clock).
//
// A part that cannot be made aborts: that is a broken set-up, not a result.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string_view>

#include "registry/statistics.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip_receiver.h"
#include "sipd/modules/tm/blacklist.h"
#include "sipd/modules/tm/transaction_layer.h"
#include "sipd/modules/tm/transaction_table.h"

namespace sipd::tm {

struct LayerParts {
  // `now_ms`: the table's clock at creation (the layer's clock takes over from there).
  explicit LayerParts(int64_t now_ms) {
    auto made = SharedMemory::Create(64u << 20);
    if (!made.ok()) std::abort();
    shm = std::move(*made);
    auto* cells = static_cast<std::atomic<uint64_t>*>(
        shm->Allocate(sizeof(std::atomic<uint64_t>) * kStatCells));
    for (size_t i = 0; i < kStatCells; ++i) new (&cells[i]) std::atomic<uint64_t>(0);
    stats =
        std::make_unique<mi::StatsRegistry>(std::span<std::atomic<uint64_t>>(cells, kStatCells));
    // The core's and sl's first: tm's registration finds their counters.
    if (!RegisterCoreStats(
             *stats, [] { return uint64_t{0}; }, sip_counters)
             .ok() ||
        !RegisterSlStats(*stats, sip_counters).ok()) {
      std::abort();
    }
    auto layer_counters = RegisterLayerStatistics(*stats);
    if (!layer_counters.ok()) std::abort();
    counters = *layer_counters;
    auto made_table = TransactionTable::Create(*shm, counters.inuse, now_ms);
    auto made_blacklist = Blacklist::Create(*shm, 16);
    if (!made_table.ok() || !made_blacklist.ok()) std::abort();
    table = std::move(*made_table);
    blacklist = std::move(*made_blacklist);
  }

  // A statistic by name (999999 if there is none, so that a typo fails the check).
  uint64_t Stat(std::string_view name) const { return stats->Value(name).value_or(999999); }

  static constexpr size_t kStatCells = 256;
  std::unique_ptr<SharedMemory> shm;
  std::unique_ptr<mi::StatsRegistry> stats;
  SipCounters sip_counters;
  LayerCounters counters;
  std::unique_ptr<TransactionTable> table;
  std::unique_ptr<Blacklist> blacklist;
};

}  // namespace sipd::tm
