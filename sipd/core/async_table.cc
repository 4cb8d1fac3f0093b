#include "sipd/core/async_table.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "registry/proto_convert.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

enum State : uint32_t { kFree = 0, kPending = 1, kCompleting = 2, kDone = 3 };

constexpr uint64_t Word(uint32_t generation, State state) {
  return (static_cast<uint64_t>(generation) << 32) | state;
}
constexpr uint32_t GenerationOf(uint64_t word) { return static_cast<uint32_t>(word >> 32); }
constexpr State StateOf(uint64_t word) { return static_cast<State>(word & 0xffffffffu); }

}  // namespace

struct ShmAsyncTable::Slot {
  std::atomic<uint64_t> word{0};
  // Written by the owner while kPending is set (before anyone can know the ticket).
  int32_t owner = -1;
  // Written by the completer between kCompleting and kDone; read by the owner in kDone.
  bool has_reply = false;
  uint32_t reply_size = 0;
  void* reply_bytes = nullptr;
};

class ShmAsyncTable::View final : public mi::AsyncBackend {
 public:
  View(ShmAsyncTable& table, int owner) : table_(table), owner_(owner) {}

  absl::StatusOr<mi::AsyncTicket> Reserve() override { return table_.Reserve(owner_); }
  void Release(mi::AsyncTicket ticket) override { table_.Release(owner_, ticket); }
  std::optional<mi::AsyncResult> TryTake(mi::AsyncTicket ticket) override {
    return table_.TryTake(owner_, ticket);
  }
  int wake_fd() const override { return table_.wake_fds_[static_cast<size_t>(owner_)]; }
  void ClearWake() override {
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = read(wake_fd(), &count, sizeof(count));
  }
  void WakeSelf() override { table_.Wake(owner_); }
  bool Complete(mi::AsyncTicket ticket, const mi::Reply* reply) override {
    return table_.Complete(ticket, reply);
  }

 private:
  ShmAsyncTable& table_;
  const int owner_;
};

absl::StatusOr<std::unique_ptr<ShmAsyncTable>> ShmAsyncTable::Create(SharedMemory& shm,
                                                                     size_t slots, int owners) {
  void* memory = shm.Allocate(sizeof(Slot) * slots);
  if (memory == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for ", slots, " async MI reply slots"));
  }
  Slot* table = static_cast<Slot*>(memory);
  for (size_t i = 0; i < slots; ++i) new (&table[i]) Slot();
  std::vector<int> fds;
  for (int i = 0; i < owners; ++i) {
    const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
      const std::string why = std::strerror(errno);
      for (int open_fd : fds) close(open_fd);
      shm.Deallocate(memory);
      return absl::InternalError(absl::StrCat("eventfd: ", why));
    }
    fds.push_back(fd);
  }
  return std::unique_ptr<ShmAsyncTable>(new ShmAsyncTable(shm, table, slots, std::move(fds)));
}

ShmAsyncTable::ShmAsyncTable(SharedMemory& shm, Slot* slots, size_t capacity,
                             std::vector<int> wake_fds)
    : shm_(shm), slots_(slots), capacity_(capacity), wake_fds_(std::move(wake_fds)) {
  for (size_t i = 0; i < wake_fds_.size(); ++i) {
    views_.push_back(std::make_unique<View>(*this, static_cast<int>(i)));
  }
}

ShmAsyncTable::~ShmAsyncTable() {
  for (int fd : wake_fds_) close(fd);
}

mi::AsyncBackend& ShmAsyncTable::ForOwner(int owner) {
  return *views_.at(static_cast<size_t>(owner));
}

absl::StatusOr<mi::AsyncTicket> ShmAsyncTable::Reserve(int owner) {
  // Start the search at a per-process position so that owners do not all contend for
  // the first slots.
  static thread_local size_t hint = static_cast<size_t>(getpid()) * 7919;
  for (size_t n = 0; n < capacity_; ++n) {
    const size_t index = (hint + n) % capacity_;
    Slot& slot = slots_[index];
    uint64_t word = slot.word.load(std::memory_order_relaxed);
    if (StateOf(word) != kFree) continue;
    uint32_t generation = GenerationOf(word) + 1;
    if (generation == 0) generation = 1;
    if (!slot.word.compare_exchange_strong(word, Word(generation, kPending),
                                           std::memory_order_acq_rel)) {
      continue;
    }
    slot.owner = owner;
    hint = index + 1;
    return mi::AsyncTicket{static_cast<uint32_t>(index), generation};
  }
  return absl::ResourceExhaustedError(
      absl::StrCat("all ", capacity_, " async MI reply slots are in use"));
}

void ShmAsyncTable::FreeBytes(Slot& slot) {
  if (slot.reply_bytes != nullptr) shm_.Deallocate(slot.reply_bytes);
  slot.reply_bytes = nullptr;
  slot.reply_size = 0;
  slot.has_reply = false;
}

void ShmAsyncTable::Release(int owner, mi::AsyncTicket ticket) {
  if (ticket.slot >= capacity_) return;
  Slot& slot = slots_[ticket.slot];
  for (int spins = 0;; ++spins) {
    uint64_t word = slot.word.load(std::memory_order_acquire);
    if (GenerationOf(word) != ticket.generation || slot.owner != owner) return;
    switch (StateOf(word)) {
      case kFree:
        return;
      case kCompleting:
        // A completer is copying its reply right now (microseconds). One that died
        // there leaves the slot to the owner's next restart.
        if (spins > 100000) {
          spdlog::error("async MI slot {} stuck while being completed: left", ticket.slot);
          return;
        }
        std::this_thread::yield();
        continue;
      case kDone:
        FreeBytes(slot);
        [[fallthrough]];
      case kPending:
        if (slot.word.compare_exchange_strong(word, Word(ticket.generation, kFree),
                                              std::memory_order_acq_rel)) {
          return;
        }
        continue;
    }
  }
}

std::optional<mi::AsyncResult> ShmAsyncTable::TryTake(int owner, mi::AsyncTicket ticket) {
  if (ticket.slot >= capacity_) return std::nullopt;
  Slot& slot = slots_[ticket.slot];
  uint64_t word = slot.word.load(std::memory_order_acquire);
  if (word != Word(ticket.generation, kDone) || slot.owner != owner) return std::nullopt;
  mi::AsyncResult result;
  if (slot.has_reply) {
    mi::v1::Reply proto;
    if (proto.ParseFromArray(slot.reply_bytes, static_cast<int>(slot.reply_size))) {
      result = mi::FromProto(proto);
    } else {
      spdlog::error("async MI reply in slot {} does not parse: dropped", ticket.slot);
    }
  }
  FreeBytes(slot);
  slot.word.store(Word(ticket.generation, kFree), std::memory_order_release);
  return result;
}

bool ShmAsyncTable::Complete(mi::AsyncTicket ticket, const mi::Reply* reply) {
  if (ticket.slot >= capacity_ || !ticket.valid()) return false;
  Slot& slot = slots_[ticket.slot];
  uint64_t expected = Word(ticket.generation, kPending);
  if (!slot.word.compare_exchange_strong(expected, Word(ticket.generation, kCompleting),
                                         std::memory_order_acq_rel)) {
    return false;  // released (cancelled, timed out) or already completed
  }
  slot.has_reply = false;
  if (reply != nullptr) {
    const std::string bytes = mi::ToProto(*reply).SerializeAsString();
    void* memory = shm_.Allocate(bytes.size() + 1);
    if (memory != nullptr) {
      std::memcpy(memory, bytes.data(), bytes.size());
      slot.reply_bytes = memory;
      slot.reply_size = static_cast<uint32_t>(bytes.size());
      slot.has_reply = true;
    } else {
      spdlog::error("no shared memory for an async MI reply of {} bytes: the call fails",
                    bytes.size());
    }
  }
  const int owner = slot.owner;
  slot.word.store(Word(ticket.generation, kDone), std::memory_order_release);
  Wake(owner);
  return true;
}

void ShmAsyncTable::Wake(int owner) {
  if (owner < 0 || static_cast<size_t>(owner) >= wake_fds_.size()) return;
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fds_[static_cast<size_t>(owner)], &one, sizeof(one));
}

void ShmAsyncTable::ReclaimOwner(int owner) {
  size_t reclaimed = 0;
  for (size_t i = 0; i < capacity_; ++i) {
    Slot& slot = slots_[i];
    const uint64_t word = slot.word.load(std::memory_order_acquire);
    if (StateOf(word) == kFree || slot.owner != owner) continue;
    Release(owner, mi::AsyncTicket{static_cast<uint32_t>(i), GenerationOf(word)});
    ++reclaimed;
  }
  if (reclaimed > 0) spdlog::info("released {} async MI call(s) of a previous process", reclaimed);
}

size_t ShmAsyncTable::pending() const {
  size_t count = 0;
  for (size_t i = 0; i < capacity_; ++i) {
    if (StateOf(slots_[i].word.load(std::memory_order_relaxed)) != kFree) ++count;
  }
  return count;
}

}  // namespace sipd
