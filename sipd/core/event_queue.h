// ShmEventQueue: a bounded, lock-free queue of variable-size records in shared memory,
// with many producers (any sipd process, any thread) and one consumer. It carries raised
// events from SIP workers (and MI processes, the timer, the attendant) to a delivery
// process (sipd/core/event_bus.h).
//
// Layout: a power-of-two ring of 128-byte cells, each a 64-bit sequence word plus data,
// with positions counting up forever (cell = position & mask). A record is a head cell
// (tag, payload size, cell count, timestamp, first payload bytes) and as many body cells
// as its payload needs, at consecutive positions. The scheme is Vyukov's bounded queue
// with multi-cell claims:
//   cell free for position p:           sequence == p
//   cell published at position p:       sequence == p + 1
//   consumer frees position p:          sequence = p + capacity   (free for the next lap)
// Push() claims cells [p, p+n) with one compare-and-swap on the enqueue position, after
// checking that cell p+n-1 is free (the consumer frees in position order, so the earlier
// ones are too); it copies the record in, publishes the body cells and then the head, each
// with a compare-and-swap p -> p+1. A full ring refuses the record (the caller counts a
// drop): producers never wait for the consumer and never take a lock; a producer only
// retries when another producer claimed first.
//
// What survives a process that dies:
//   - the consumer, anywhere: records it had not freed are read again by its successor
//     (a delivered event may be delivered twice); cells it freed without moving its
//     position on are recognised (sequence already a lap ahead) and stepped over;
//   - a producer between its claim and its publication: the consumer finds an
//     unpublished head while later positions are claimed. After kAbandonAfter it steps
//     over the unpublished cells up to the enqueue position it saw (freeing them with a
//     compare-and-swap, counted in abandoned_cells()). A producer that was only slow
//     (stopped for a second in the middle of a memcpy) then fails its publication and
//     counts a drop; if its cells were claimed again meanwhile, the new record may be
//     garbled: the consumer checks every head (kind, sizes) and the event decoder checks
//     the payload, so a garbled record is dropped, never mis-parsed.
// Until then (or while a producer is slow) Pop() answers kStalled: the consumer should
// look again within a short time even if nothing wakes it.
//
// Thread/process-safety: Push() from anywhere, concurrently; Pop(), Empty() from one
// consumer thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "sipd/core/shm.h"

namespace sipd {

class ShmEventQueue {
 public:
  static constexpr size_t kCellSize = 128;
  // Largest payload (1.11 event_datagram builds its datagram in 16 KB).
  static constexpr size_t kMaxPayload = 16384;
  // How long an unpublished head may stall the queue before the consumer steps over it.
  static constexpr std::chrono::milliseconds kAbandonAfter{1000};

  enum class PushResult {
    kQueued,
    kFull,      // not enough free cells: dropped
    kTooLarge,  // payload above kMaxPayload or a quarter of the ring: dropped
    kLost,      // the consumer stepped over the claim (this producer was stalled): dropped
  };
  enum class PopResult {
    kRecord,   // *tag, *stamp, *payload filled
    kEmpty,    // nothing published at the head
    kStalled,  // the head is claimed but not published yet: look again soon
  };

  // A queue of at least `capacity_bytes` (rounded up to a power of two number of cells,
  // at least four maximal records) in `shm`. REQUIRES: attendant, before the fork.
  static absl::StatusOr<ShmEventQueue*> Create(SharedMemory& shm, size_t capacity_bytes);

  // Queues one record. Never blocks.
  PushResult Push(uint32_t tag, int64_t stamp, std::string_view payload);

  // Takes the oldest record. `now` is the steady clock (for kAbandonAfter).
  PopResult Pop(uint32_t* tag, int64_t* stamp, std::string* payload,
                std::chrono::steady_clock::time_point now);
  PopResult Pop(uint32_t* tag, int64_t* stamp, std::string* payload) {
    return Pop(tag, stamp, payload, std::chrono::steady_clock::now());
  }
  // No record ready at the consumer's position. A claimed but unpublished head counts as
  // empty: its producer publishes it soon (and wakes a sleeping consumer then).
  bool Empty() const;

  size_t capacity_cells() const { return capacity_; }
  // Cells claimed and never published that the consumer stepped over.
  uint64_t abandoned_cells() const { return abandoned_.load(std::memory_order_relaxed); }
  // Heads that failed the consumer's checks (garbled by a stalled producer).
  uint64_t corrupt_records() const { return corrupt_.load(std::memory_order_relaxed); }

  // Tests: claims `cells` cells and never publishes them (what a producer killed in the
  // middle of Push() leaves). Returns the first claimed position, or -1 if full.
  int64_t ClaimWithoutPublishingForTest(size_t cells);

 private:
  struct Cell;
  struct Head;

  ShmEventQueue(Cell* cells, size_t capacity);
  Cell& At(uint64_t position) const;
  static size_t CellsFor(size_t payload_size);
  // Claims `count` cells; returns the first position, or false when full.
  bool Claim(size_t count, uint64_t* position);
  // Steps over an abandoned claim at the consumer's position (see file comment).
  void StepOverAbandoned();
  // Frees [position, position + count) for the next lap.
  void Free(uint64_t position, size_t count);

  Cell* const cells_;
  const size_t capacity_;  // cells, a power of two
  const uint64_t mask_;
  alignas(64) std::atomic<uint64_t> enqueue_position_{0};
  alignas(64) std::atomic<uint64_t> dequeue_position_{0};
  // Consumer only: where and since when the head has been claimed but unpublished.
  uint64_t stalled_position_ = UINT64_MAX;
  int64_t stalled_since_ns_ = 0;
  std::atomic<uint64_t> abandoned_{0};
  std::atomic<uint64_t> corrupt_{0};
};

}  // namespace sipd
