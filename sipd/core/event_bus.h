// The event interface of the daemon (registry/events.h) in shared memory.
//
// ShmEventBackend keeps, all created by the attendant before the first fork:
//   - one ShmEventQueue (lock-free, sipd/core/event_queue.h) per consumer, plus the
//     consumer's eventfd and "sleeping" flag: Raise() pushes the event into the queue of
//     every interested consumer and writes the eventfd only if that consumer announced
//     that it sleeps; a full queue drops the event (evi:dropped_events). Raising takes
//     no lock, never waits for a consumer and does no I/O but that eventfd write;
//   - the interest counts per (consumer, event): stored subscriptions (changed under the
//     subscription lock) and local interest (atomics, see EventConsumer::AddInterest),
//     which Wanted() and Raise() read with relaxed loads;
//   - the subscription table: a fixed array of slots guarded by a RobustMutex. MI
//     processes add, refresh and remove subscriptions; the delivery processes read them
//     (cached, refreshed when subscriptions_generation() moves) and remove expired ones.
//     Nobody holds the lock for more than a walk over the table; raisers never take it.
//     A slot is filled before it is marked used and marked unused before it is cleared,
//     so a holder that dies leaves at worst a stale count: the next locker is told by the
//     robust mutex and recounts the stored interest from the table.
// Everything is inherited through fork(), so subscriptions and queued events survive the
// restart of any process but the attendant.
//
// SipdEvents bundles what the daemon owns: the mi::EventRegistry that Core::events()
// returns, this backend, the statistics group `evi` (after the modules' groups) and the
// core's own events:
//   E_CORE_THRESHOLD       source, time, extra           (1.11 id 0; exec_msg_threshold)
//   E_CORE_SHM_THRESHOLD   usage, threshold, used, size  (1.11 id 1; shm_threshold)
//   E_CORE_PKG_THRESHOLD   usage, threshold, used, size, pid (1.11 id 2; pkg_threshold)
//                          (the three raised by ThresholdMonitor, sipd/core/thresholds.h)
//   E_SIPD_PROCESS_RESTARTED  id, type, pid: the attendant forked a process again after
//                          it died (its `ps` ID and Type, the new pid).
// A new core event is one entry in kCoreEvents (event_bus.cc) and one Raise() call.
//
// Thread/process-safety: see registry/events.h; the figures are shared-memory counters.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/events.h"
#include "registry/statistics.h"
#include "sipd/core/event_queue.h"
#include "sipd/core/shm.h"

namespace sipd {

class ShmEventBackend final : public mi::EventBackend {
 public:
  static constexpr size_t kMaxConsumers = 4;

  struct Options {
    size_t max_subscriptions = 1024;
    // Unix seconds; empty = time(nullptr).
    std::function<int64_t()> now;
  };

  // Creates the shared state in `shm`. REQUIRES: attendant, before the fork.
  static absl::StatusOr<std::unique_ptr<ShmEventBackend>> Create(SharedMemory& shm,
                                                                 Options options);
  // Adds the statistics group `evi` (queued_events, dropped_events, delivered_events,
  // failed_deliveries: counters; subscriptions: a function) and counts into it from now
  // on. Separate from Create() so that the group comes after the modules' groups (as a
  // module's would). REQUIRES: attendant, before the fork; once.
  absl::Status RegisterStatistics(mi::StatsRegistry& stats);
  ~ShmEventBackend() override;
  ShmEventBackend(const ShmEventBackend&) = delete;
  ShmEventBackend& operator=(const ShmEventBackend&) = delete;

  bool Wanted(mi::EventId id) const override;
  void Raise(mi::EventId id, std::span<const mi::EventArg> values) override;
  absl::StatusOr<mi::EventConsumer*> AddConsumer(std::string name, size_t capacity_bytes) override;
  absl::Status Subscribe(mi::EventId event, const mi::EventTransport& transport,
                         std::string_view address, std::optional<uint32_t> expire) override;
  std::vector<mi::Subscription> Subscriptions(std::optional<mi::EventId> event) const override;
  uint64_t subscriptions_generation() const override;
  size_t ExpireSubscriptions(std::optional<int64_t>* next_expiry) override;
  int64_t Now() const override { return now_(); }

  // The consumers' eventfds: raisers in any process write them, so every process keeps
  // them across the fork (see daemon.h on descriptors).
  std::vector<int> wake_fds() const;

  // Figures (also in group evi).
  uint64_t queued() const;
  uint64_t dropped() const;
  size_t subscription_count() const;

 private:
  struct Shared;
  struct Slot;
  class Consumer;

  ShmEventBackend(SharedMemory& shm, Shared* shared, Slot* slots, size_t max_subscriptions,
                  std::function<int64_t()> now);
  // REQUIRES: the subscription lock is held. Recounts stored interest after a holder died.
  void RepairLocked();
  void LockSubscriptions() const;
  int ConsumerIndex(const mi::EventConsumer* consumer) const;

  SharedMemory& shm_;
  Shared* const shared_;
  Slot* const slots_;
  const size_t max_subscriptions_;
  std::function<int64_t()> now_;
  // Made in the attendant before the fork, like the queues they point at.
  std::vector<std::unique_ptr<Consumer>> consumers_;
};

// See file comment.
class SipdEvents {
 public:
  // REQUIRES: attendant, before the fork.
  static absl::StatusOr<std::unique_ptr<SipdEvents>> Create(SharedMemory& shm,
                                                            ShmEventBackend::Options options = {});
  // See ShmEventBackend::RegisterStatistics().
  absl::Status RegisterStatistics(mi::StatsRegistry& stats) {
    return backend_->RegisterStatistics(stats);
  }

  mi::EventRegistry& registry() { return registry_; }
  ShmEventBackend& backend() { return *backend_; }

  // E_SIPD_PROCESS_RESTARTED (from the attendant).
  void ProcessRestarted(int id, std::string_view type, int pid) const;
  // E_CORE_THRESHOLD, E_CORE_SHM_THRESHOLD, E_CORE_PKG_THRESHOLD (sipd/core/thresholds.h).
  void Threshold(std::string_view source, int64_t time_us, std::string_view extra) const;
  void ShmThreshold(int64_t usage, int64_t threshold, int64_t used, int64_t size) const;
  void PkgThreshold(int64_t usage, int64_t threshold, int64_t used, int64_t size, int pid) const;

 private:
  SipdEvents() = default;

  mi::EventRegistry registry_;
  std::unique_ptr<ShmEventBackend> backend_;
  mi::EventId process_restarted_ = mi::kNoEvent;
  mi::EventId threshold_ = mi::kNoEvent;
  mi::EventId shm_threshold_ = mi::kNoEvent;
  mi::EventId pkg_threshold_ = mi::kNoEvent;
};

// The payload of a queued event (values only; names come from the registry): per value
// one type byte, 's' + 4-byte length + bytes or 'i' + 8 bytes. Exposed for tests.
void EncodeEventValues(std::span<const mi::EventArg> values, std::string& out);
// False (and `values` unspecified) if `payload` is not such an encoding.
bool DecodeEventValues(std::string_view payload, std::vector<mi::EventValue>& values);

}  // namespace sipd
