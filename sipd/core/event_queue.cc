#include "sipd/core/event_queue.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace sipd {
namespace {

constexpr uint8_t kHeadKind = 'H';
constexpr uint8_t kBodyKind = 'B';
constexpr uint32_t kCheckSeed = 0x5EC0DE17u;

}  // namespace

struct ShmEventQueue::Cell {
  std::atomic<uint64_t> sequence;
  uint8_t kind;
  uint8_t reserved[7];
  uint8_t data[kCellSize - 16];
};

struct ShmEventQueue::Head {
  uint32_t tag;
  uint32_t size;
  uint32_t cells;
  // tag ^ size ^ cells ^ seed: a head garbled by a stalled producer fails it.
  uint32_t check;
  int64_t stamp;
};

namespace {
constexpr size_t kCellData = ShmEventQueue::kCellSize - 16;
constexpr size_t kHeadData = kCellData - 24;
}  // namespace

size_t ShmEventQueue::CellsFor(size_t payload_size) {
  if (payload_size <= kHeadData) return 1;
  return 1 + (payload_size - kHeadData + kCellData - 1) / kCellData;
}

namespace {

// The first 64-byte boundary at or after `p` (a block allocated 64 bytes larger than
// what is placed in it).
void* CacheLineAligned(void* p) {
  return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

}  // namespace

absl::StatusOr<ShmEventQueue*> ShmEventQueue::Create(SharedMemory& shm, size_t capacity_bytes) {
  size_t cells = std::max(capacity_bytes / kCellSize, 4 * CellsFor(kMaxPayload));
  cells = std::bit_ceil(cells);
  void* raw = shm.Allocate(cells * kCellSize + 64);
  // The queue's positions are cache-line aligned (alignas(64)); shared memory blocks
  // are 16-byte aligned, so it is placed at the first 64-byte boundary of its block.
  void* self = shm.Allocate(sizeof(ShmEventQueue) + 64);
  if (raw == nullptr || self == nullptr) {
    if (raw != nullptr) shm.Deallocate(raw);
    if (self != nullptr) shm.Deallocate(self);
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for an event queue of ", cells * kCellSize, " bytes"));
  }
  // Cache-line aligned cells.
  Cell* array = static_cast<Cell*>(CacheLineAligned(raw));
  for (size_t i = 0; i < cells; ++i) {
    Cell* cell = new (&array[i]) Cell();
    cell->sequence.store(i, std::memory_order_relaxed);
    cell->kind = 0;
  }
  return new (CacheLineAligned(self)) ShmEventQueue(array, cells);
}

ShmEventQueue::ShmEventQueue(Cell* cells, size_t capacity)
    : cells_(cells), capacity_(capacity), mask_(capacity - 1) {
  static_assert(sizeof(Cell) == kCellSize);
}

ShmEventQueue::Cell& ShmEventQueue::At(uint64_t position) const { return cells_[position & mask_]; }

bool ShmEventQueue::Claim(size_t count, uint64_t* position) {
  uint64_t pos = enqueue_position_.load(std::memory_order_relaxed);
  while (true) {
    const uint64_t last = pos + count - 1;
    const uint64_t sequence = At(last).sequence.load(std::memory_order_acquire);
    const auto diff = static_cast<int64_t>(sequence - last);
    if (diff == 0) {
      // The consumer frees cells in position order: `last` free means all of them are.
      if (enqueue_position_.compare_exchange_weak(pos, pos + count, std::memory_order_relaxed)) {
        *position = pos;
        return true;
      }
    } else if (diff < 0) {
      return false;  // still holds a record of the previous lap: full
    } else {
      pos = enqueue_position_.load(std::memory_order_relaxed);
    }
  }
}

ShmEventQueue::PushResult ShmEventQueue::Push(uint32_t tag, int64_t stamp,
                                              std::string_view payload) {
  const size_t count = CellsFor(payload.size());
  if (payload.size() > kMaxPayload || count > capacity_ / 4) return PushResult::kTooLarge;
  uint64_t position = 0;
  if (!Claim(count, &position)) return PushResult::kFull;

  Cell& head = At(position);
  head.kind = kHeadKind;
  const Head header{
      tag, static_cast<uint32_t>(payload.size()), static_cast<uint32_t>(count),
      tag ^ static_cast<uint32_t>(payload.size()) ^ static_cast<uint32_t>(count) ^ kCheckSeed,
      stamp};
  std::memcpy(head.data, &header, sizeof(header));
  size_t offset = std::min(payload.size(), kHeadData);
  std::memcpy(head.data + sizeof(header), payload.data(), offset);
  for (size_t i = 1; i < count; ++i) {
    Cell& body = At(position + i);
    body.kind = kBodyKind;
    const size_t chunk = std::min(payload.size() - offset, kCellData);
    std::memcpy(body.data, payload.data() + offset, chunk);
    offset += chunk;
  }
  // Bodies first, the head last: a published head means a complete record.
  for (size_t i = 1; i < count; ++i) {
    uint64_t expected = position + i;
    At(position + i)
        .sequence.compare_exchange_strong(expected, position + i + 1, std::memory_order_release,
                                          std::memory_order_relaxed);
  }
  uint64_t expected = position;
  if (!head.sequence.compare_exchange_strong(expected, position + 1, std::memory_order_release,
                                             std::memory_order_relaxed)) {
    return PushResult::kLost;
  }
  return PushResult::kQueued;
}

void ShmEventQueue::Free(uint64_t position, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    At(position + i).sequence.store(position + i + capacity_, std::memory_order_release);
  }
}

bool ShmEventQueue::Empty() const {
  const uint64_t pos = dequeue_position_.load(std::memory_order_relaxed);
  const uint64_t sequence = At(pos).sequence.load(std::memory_order_acquire);
  // Published, or a cell a previous consumer freed without moving on: work for Pop().
  return static_cast<int64_t>(sequence - pos) < 1;
}

ShmEventQueue::PopResult ShmEventQueue::Pop(uint32_t* tag, int64_t* stamp, std::string* payload,
                                            std::chrono::steady_clock::time_point now) {
  uint64_t pos = dequeue_position_.load(std::memory_order_relaxed);
  while (true) {
    Cell& cell = At(pos);
    const uint64_t sequence = cell.sequence.load(std::memory_order_acquire);
    const auto diff = static_cast<int64_t>(sequence - pos);
    if (diff == 1) {
      Head header;
      std::memcpy(&header, cell.data, sizeof(header));
      const bool valid = cell.kind == kHeadKind && header.size <= kMaxPayload &&
                         header.cells == CellsFor(header.size) && header.cells <= capacity_ / 4 &&
                         header.check == (header.tag ^ header.size ^ header.cells ^ kCheckSeed);
      bool complete = valid;
      for (size_t i = 1; complete && i < header.cells; ++i) {
        const Cell& body = At(pos + i);
        complete =
            body.sequence.load(std::memory_order_acquire) == pos + i + 1 && body.kind == kBodyKind;
      }
      if (!complete) {
        // A body cell at the head (left from a record stepped over), or a garbled head.
        if (cell.kind == kHeadKind) corrupt_.fetch_add(1, std::memory_order_relaxed);
        Free(pos, 1);
        dequeue_position_.store(++pos, std::memory_order_relaxed);
        continue;
      }
      *tag = header.tag;
      *stamp = header.stamp;
      payload->resize(header.size);
      size_t offset = std::min<size_t>(header.size, kHeadData);
      std::memcpy(payload->data(), cell.data + sizeof(header), offset);
      for (size_t i = 1; i < header.cells; ++i) {
        const size_t chunk = std::min<size_t>(header.size - offset, kCellData);
        std::memcpy(payload->data() + offset, At(pos + i).data, chunk);
        offset += chunk;
      }
      Free(pos, header.cells);
      dequeue_position_.store(pos + header.cells, std::memory_order_relaxed);
      stalled_position_ = UINT64_MAX;
      return PopResult::kRecord;
    }
    if (diff > 1) {
      // Freed by a previous consumer that died before moving its position on.
      dequeue_position_.store(++pos, std::memory_order_relaxed);
      continue;
    }
    if (diff < 0 || pos >= enqueue_position_.load(std::memory_order_acquire)) {
      return PopResult::kEmpty;
    }
    // Claimed, not published yet.
    const int64_t now_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
    if (stalled_position_ != pos) {
      stalled_position_ = pos;
      stalled_since_ns_ = now_ns;
      return PopResult::kStalled;
    }
    if (now_ns - stalled_since_ns_ <
        std::chrono::duration_cast<std::chrono::nanoseconds>(kAbandonAfter).count()) {
      return PopResult::kStalled;
    }
    StepOverAbandoned();
    pos = dequeue_position_.load(std::memory_order_relaxed);
  }
}

void ShmEventQueue::StepOverAbandoned() {
  uint64_t pos = dequeue_position_.load(std::memory_order_relaxed);
  const uint64_t limit = enqueue_position_.load(std::memory_order_acquire);
  uint64_t stepped = 0;
  while (pos < limit) {
    Cell& cell = At(pos);
    uint64_t sequence = cell.sequence.load(std::memory_order_acquire);
    if (sequence == pos + 1 && cell.kind == kHeadKind) break;  // a real record: read it
    if (sequence == pos) {
      // Unpublished: free it unless its producer publishes right now.
      if (!cell.sequence.compare_exchange_strong(sequence, pos + capacity_,
                                                 std::memory_order_acq_rel)) {
        continue;
      }
    } else if (sequence == pos + 1) {
      cell.sequence.store(pos + capacity_, std::memory_order_release);  // a stray body
    }
    ++pos;
    ++stepped;
  }
  dequeue_position_.store(pos, std::memory_order_relaxed);
  abandoned_.fetch_add(stepped, std::memory_order_relaxed);
  stalled_position_ = UINT64_MAX;
}

int64_t ShmEventQueue::ClaimWithoutPublishingForTest(size_t cells) {
  uint64_t position = 0;
  if (!Claim(cells, &position)) return -1;
  return static_cast<int64_t>(position);
}

}  // namespace sipd
