#include "sipd/core/event_bus.h"

#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"

namespace sipd {

using mi::EventArg;
using mi::EventId;
using mi::kMaxEvents;

// ---------------------------------------------------------------------------------------
// Payload encoding.

void EncodeEventValues(std::span<const EventArg> values, std::string& out) {
  for (const EventArg& v : values) {
    if (v.is_int()) {
      out.push_back('i');
      const int64_t n = v.number();
      out.append(reinterpret_cast<const char*>(&n), sizeof(n));
    } else {
      out.push_back('s');
      const auto length = static_cast<uint32_t>(
          std::min<size_t>(v.text().size(), std::numeric_limits<uint32_t>::max()));
      out.append(reinterpret_cast<const char*>(&length), sizeof(length));
      out.append(v.text().data(), length);
    }
  }
}

bool DecodeEventValues(std::string_view payload, std::vector<mi::EventValue>& values) {
  values.clear();
  size_t at = 0;
  while (at < payload.size()) {
    const char type = payload[at++];
    if (type == 'i') {
      if (payload.size() - at < sizeof(int64_t)) return false;
      int64_t n = 0;
      std::memcpy(&n, payload.data() + at, sizeof(n));
      at += sizeof(n);
      values.emplace_back(n);
    } else if (type == 's') {
      if (payload.size() - at < sizeof(uint32_t)) return false;
      uint32_t length = 0;
      std::memcpy(&length, payload.data() + at, sizeof(length));
      at += sizeof(length);
      if (payload.size() - at < length) return false;
      values.emplace_back(std::string(payload.substr(at, length)));
      at += length;
    } else {
      return false;
    }
  }
  return true;
}

namespace {

int64_t RealtimeNanos() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool ValidEvent(EventId id) { return id >= 0 && static_cast<size_t>(id) < kMaxEvents; }

void WriteEventfd(int fd) {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd, &one, sizeof(one));
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Shared state.

struct ShmEventBackend::Shared {
  struct ConsumerState {
    ShmEventQueue* queue = nullptr;
    // 1 while the consumer sleeps (or is about to) on its eventfd.
    std::atomic<uint32_t> sleeping{0};
    std::atomic<uint64_t> dropped{0};
  };

  // Guards the slots, `stored`'s writes, next_sequence.
  RobustMutex lock;
  std::atomic<uint64_t> generation{0};
  uint64_t next_sequence = 1;
  std::atomic<uint32_t> subscription_count{0};
  // Set in the attendant before the fork.
  uint32_t consumer_count = 0;
  ConsumerState consumers[kMaxConsumers];
  // Interest: stored subscriptions and local interest, per consumer and event.
  std::atomic<uint32_t> stored[kMaxConsumers][kMaxEvents];
  std::atomic<int32_t> local[kMaxConsumers][kMaxEvents];
  // Figures: cells of their own until RegisterStatistics() moves them to counters of
  // the statistics registry (shared memory as well).
  std::atomic<uint64_t> own_cells[4];
  mi::Counter queued{&own_cells[0]};
  mi::Counter dropped{&own_cells[1]};
  mi::Counter delivered{&own_cells[2]};
  mi::Counter failed{&own_cells[3]};
};

struct ShmEventBackend::Slot {
  bool used = false;
  bool has_expire = false;
  uint8_t consumer = 0;
  uint8_t protocol_length = 0;
  uint16_t address_length = 0;
  EventId event = mi::kNoEvent;
  uint32_t expire = 0;
  int64_t subscribed_at = 0;
  uint64_t sequence = 0;
  char protocol[mi::kMaxEventProtocolLength];
  char address[mi::kMaxEventAddressLength];

  std::string_view protocol_view() const { return {protocol, protocol_length}; }
  std::string_view address_view() const { return {address, address_length}; }
  bool Expired(int64_t now) const {
    return has_expire && subscribed_at + static_cast<int64_t>(expire) < now;
  }
  mi::Subscription ToSubscription() const {
    mi::Subscription s;
    s.event = event;
    s.protocol = std::string(protocol_view());
    s.address = std::string(address_view());
    if (has_expire) s.expire = expire;
    s.subscribed_at = subscribed_at;
    s.sequence = sequence;
    return s;
  }
};

// ---------------------------------------------------------------------------------------
// Consumers.

class ShmEventBackend::Consumer final : public mi::EventConsumer {
 public:
  Consumer(Shared* shared, int index, std::string name, int wake_fd)
      : shared_(shared), index_(index), name_(std::move(name)), wake_fd_(wake_fd) {}
  ~Consumer() override { close(wake_fd_); }

  const std::string& name() const override { return name_; }

  bool Pop(mi::RaisedEvent& event) override {
    ShmEventQueue& queue = *state().queue;
    while (true) {
      uint32_t tag = 0;
      switch (queue.Pop(&tag, &event.raised_at_ns, &payload_)) {
        case ShmEventQueue::PopResult::kRecord:
          stalled_ = false;
          if (!ValidEvent(static_cast<EventId>(tag)) ||
              !DecodeEventValues(payload_, event.values)) {
            // Garbled by a stalled raiser (see event_queue.h): counted as dropped.
            state().dropped.fetch_add(1, std::memory_order_relaxed);
            shared_->dropped.Inc();
            continue;
          }
          event.id = static_cast<EventId>(tag);
          return true;
        case ShmEventQueue::PopResult::kStalled:
          stalled_ = true;
          return false;
        case ShmEventQueue::PopResult::kEmpty:
          stalled_ = false;
          return false;
      }
    }
  }

  int wake_fd() const override { return wake_fd_; }

  bool PrepareToSleep() override {
    state().sleeping.store(1, std::memory_order_relaxed);
    // Pairs with the fence in Raise(): either the raiser sees the flag, or we see its
    // record.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!state().queue->Empty()) {
      state().sleeping.store(0, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  void ClearWake() override {
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = read(wake_fd_, &count, sizeof(count));
    state().sleeping.store(0, std::memory_order_relaxed);
  }

  std::chrono::milliseconds max_sleep() const override {
    return stalled_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(-1);
  }

  void AddInterest(EventId id) override {
    if (!ValidEvent(id)) return;
    shared_->local[index_][id].fetch_add(1, std::memory_order_relaxed);
  }
  void RemoveInterest(EventId id) override {
    if (!ValidEvent(id)) return;
    std::atomic<int32_t>& count = shared_->local[index_][id];
    int32_t value = count.load(std::memory_order_relaxed);
    while (value > 0 && !count.compare_exchange_weak(value, value - 1)) {
    }
  }
  void ResetLocalInterest() override {
    for (auto& count : shared_->local[index_]) count.store(0, std::memory_order_relaxed);
  }

  uint64_t dropped() const override { return state().dropped.load(std::memory_order_relaxed); }
  void CountDeliveries(uint64_t delivered, uint64_t failed) override {
    if (delivered > 0) shared_->delivered.Inc(delivered);
    if (failed > 0) shared_->failed.Inc(failed);
  }

  int index() const { return index_; }

 private:
  Shared::ConsumerState& state() const { return shared_->consumers[index_]; }

  Shared* const shared_;
  const int index_;
  const std::string name_;
  const int wake_fd_;
  // Consuming process only.
  std::string payload_;
  bool stalled_ = false;
};

// ---------------------------------------------------------------------------------------
// ShmEventBackend

absl::StatusOr<std::unique_ptr<ShmEventBackend>> ShmEventBackend::Create(SharedMemory& shm,
                                                                         Options options) {
  Shared* shared = nullptr;
  try {
    shared = shm.Construct<Shared>();
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(absl::StrCat("event interface: ", e.what()));
  }
  void* memory = shm.Allocate(sizeof(Slot) * std::max<size_t>(options.max_subscriptions, 1));
  if (memory == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("no shared memory for ", options.max_subscriptions, " event subscriptions"));
  }
  Slot* slots = static_cast<Slot*>(memory);
  for (size_t i = 0; i < options.max_subscriptions; ++i) new (&slots[i]) Slot();
  std::function<int64_t()> now = std::move(options.now);
  if (!now) now = [] { return static_cast<int64_t>(std::time(nullptr)); };
  return std::unique_ptr<ShmEventBackend>(
      new ShmEventBackend(shm, shared, slots, options.max_subscriptions, std::move(now)));
}

absl::Status ShmEventBackend::RegisterStatistics(mi::StatsRegistry& stats) {
  stats.AddGroup("evi");
  mi::Counter* figures[] = {&shared_->queued, &shared_->dropped, &shared_->delivered,
                            &shared_->failed};
  const char* names[] = {"queued_events", "dropped_events", "delivered_events",
                         "failed_deliveries"};
  for (size_t i = 0; i < 4; ++i) {
    SIPD_ASSIGN_OR_RETURN(mi::Counter counter, stats.AddCounter("evi", names[i]));
    counter.Set(figures[i]->value());
    *figures[i] = counter;
  }
  return stats.AddFunction("evi", "subscriptions",
                           [this] { return static_cast<uint64_t>(subscription_count()); });
}

ShmEventBackend::ShmEventBackend(SharedMemory& shm, Shared* shared, Slot* slots,
                                 size_t max_subscriptions, std::function<int64_t()> now)
    : shm_(shm),
      shared_(shared),
      slots_(slots),
      max_subscriptions_(max_subscriptions),
      now_(std::move(now)) {}

ShmEventBackend::~ShmEventBackend() = default;

uint64_t ShmEventBackend::queued() const { return shared_->queued.value(); }
uint64_t ShmEventBackend::dropped() const { return shared_->dropped.value(); }
size_t ShmEventBackend::subscription_count() const {
  return shared_->subscription_count.load(std::memory_order_relaxed);
}

bool ShmEventBackend::Wanted(EventId id) const {
  if (!ValidEvent(id)) return false;
  for (uint32_t c = 0; c < shared_->consumer_count; ++c) {
    if (shared_->stored[c][id].load(std::memory_order_relaxed) > 0 ||
        shared_->local[c][id].load(std::memory_order_relaxed) > 0) {
      return true;
    }
  }
  return false;
}

void ShmEventBackend::Raise(EventId id, std::span<const EventArg> values) {
  if (!ValidEvent(id)) return;
  thread_local std::string payload;
  payload.clear();
  EncodeEventValues(values, payload);
  const int64_t stamp = RealtimeNanos();
  for (uint32_t c = 0; c < shared_->consumer_count; ++c) {
    if (shared_->stored[c][id].load(std::memory_order_relaxed) == 0 &&
        shared_->local[c][id].load(std::memory_order_relaxed) <= 0) {
      continue;
    }
    Shared::ConsumerState& state = shared_->consumers[c];
    if (state.queue->Push(static_cast<uint32_t>(id), stamp, payload) !=
        ShmEventQueue::PushResult::kQueued) {
      state.dropped.fetch_add(1, std::memory_order_relaxed);
      shared_->dropped.Inc();
      continue;
    }
    shared_->queued.Inc();
    // Pairs with the fence in Consumer::PrepareToSleep().
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (state.sleeping.load(std::memory_order_relaxed) != 0 &&
        state.sleeping.exchange(0, std::memory_order_relaxed) != 0) {
      WriteEventfd(consumers_[c]->wake_fd());
    }
  }
}

absl::StatusOr<mi::EventConsumer*> ShmEventBackend::AddConsumer(std::string name,
                                                                size_t capacity_bytes) {
  if (shared_->consumer_count >= kMaxConsumers) {
    return absl::ResourceExhaustedError(
        absl::StrCat("event consumer ", name, ": ", kMaxConsumers, " consumers at most"));
  }
  SIPD_ASSIGN_OR_RETURN(ShmEventQueue * queue, ShmEventQueue::Create(shm_, capacity_bytes));
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  const int index = static_cast<int>(shared_->consumer_count);
  shared_->consumers[index].queue = queue;
  consumers_.push_back(std::make_unique<Consumer>(shared_, index, std::move(name), fd));
  ++shared_->consumer_count;
  return consumers_.back().get();
}

std::vector<int> ShmEventBackend::wake_fds() const {
  std::vector<int> fds;
  for (const auto& c : consumers_) fds.push_back(c->wake_fd());
  return fds;
}

int ShmEventBackend::ConsumerIndex(const mi::EventConsumer* consumer) const {
  for (const auto& c : consumers_) {
    if (c.get() == consumer) return c->index();
  }
  return -1;
}

void ShmEventBackend::LockSubscriptions() const {
  if (shared_->lock.Lock()) const_cast<ShmEventBackend*>(this)->RepairLocked();
}

void ShmEventBackend::RepairLocked() {
  for (auto& per_consumer : shared_->stored) {
    for (auto& count : per_consumer) count.store(0, std::memory_order_relaxed);
  }
  uint32_t used = 0;
  for (size_t i = 0; i < max_subscriptions_; ++i) {
    const Slot& slot = slots_[i];
    if (!slot.used || !ValidEvent(slot.event) || slot.consumer >= kMaxConsumers) continue;
    shared_->stored[slot.consumer][slot.event].fetch_add(1, std::memory_order_relaxed);
    ++used;
  }
  shared_->subscription_count.store(used, std::memory_order_relaxed);
  shared_->generation.fetch_add(1, std::memory_order_relaxed);
}

absl::Status ShmEventBackend::Subscribe(EventId event, const mi::EventTransport& transport,
                                        std::string_view address, std::optional<uint32_t> expire) {
  if (!ValidEvent(event)) return absl::InvalidArgumentError("bad event id");
  const int consumer = ConsumerIndex(transport.consumer);
  if (consumer < 0) return absl::InvalidArgumentError("transport of another backend");
  if (transport.protocol.size() > mi::kMaxEventProtocolLength ||
      address.size() > mi::kMaxEventAddressLength) {
    return absl::InvalidArgumentError("subscriber protocol or address too long");
  }
  const bool remove = expire.has_value() && *expire == 0;
  const int64_t now = now_();
  {
    LockSubscriptions();
    std::lock_guard<RobustMutex> unlock(shared_->lock, std::adopt_lock);
    Slot* match = nullptr;
    Slot* free_slot = nullptr;
    for (size_t i = 0; i < max_subscriptions_ && match == nullptr; ++i) {
      Slot& slot = slots_[i];
      if (!slot.used) {
        if (free_slot == nullptr) free_slot = &slot;
      } else if (slot.event == event && slot.protocol_view() == transport.protocol &&
                 slot.address_view() == address) {
        match = &slot;
      }
    }
    if (match != nullptr && remove) {
      match->used = false;
      shared_->stored[match->consumer][event].fetch_sub(1, std::memory_order_relaxed);
      shared_->subscription_count.fetch_sub(1, std::memory_order_relaxed);
    } else if (match != nullptr) {
      match->subscribed_at = now;
      match->has_expire = expire.has_value();
      match->expire = expire.value_or(0);
    } else if (remove) {
      return absl::OkStatus();  // nothing to unsubscribe
    } else if (free_slot == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("all ", max_subscriptions_, " event subscriptions are in use"));
    } else {
      Slot& slot = *free_slot;
      slot.event = event;
      slot.consumer = static_cast<uint8_t>(consumer);
      slot.protocol_length = static_cast<uint8_t>(transport.protocol.size());
      std::memcpy(slot.protocol, transport.protocol.data(), transport.protocol.size());
      slot.address_length = static_cast<uint16_t>(address.size());
      std::memcpy(slot.address, address.data(), address.size());
      slot.subscribed_at = now;
      slot.has_expire = expire.has_value();
      slot.expire = expire.value_or(0);
      slot.sequence = shared_->next_sequence++;
      slot.used = true;  // filled first, then marked used (see file comment)
      shared_->stored[consumer][event].fetch_add(1, std::memory_order_relaxed);
      shared_->subscription_count.fetch_add(1, std::memory_order_relaxed);
    }
    shared_->generation.fetch_add(1, std::memory_order_relaxed);
  }
  // The delivery process recomputes its next expiry.
  WriteEventfd(transport.consumer->wake_fd());
  return absl::OkStatus();
}

std::vector<mi::Subscription> ShmEventBackend::Subscriptions(std::optional<EventId> event) const {
  std::vector<mi::Subscription> out;
  const int64_t now = now_();
  {
    LockSubscriptions();
    std::lock_guard<RobustMutex> unlock(shared_->lock, std::adopt_lock);
    for (size_t i = 0; i < max_subscriptions_; ++i) {
      const Slot& slot = slots_[i];
      if (!slot.used || slot.Expired(now)) continue;
      if (event.has_value() && slot.event != *event) continue;
      out.push_back(slot.ToSubscription());
    }
  }
  std::sort(out.begin(), out.end(), [](const mi::Subscription& a, const mi::Subscription& b) {
    return a.sequence > b.sequence;
  });
  return out;
}

uint64_t ShmEventBackend::subscriptions_generation() const {
  return shared_->generation.load(std::memory_order_relaxed);
}

size_t ShmEventBackend::ExpireSubscriptions(std::optional<int64_t>* next_expiry) {
  const int64_t now = now_();
  size_t removed = 0;
  std::optional<int64_t> next;
  {
    LockSubscriptions();
    std::lock_guard<RobustMutex> unlock(shared_->lock, std::adopt_lock);
    for (size_t i = 0; i < max_subscriptions_; ++i) {
      Slot& slot = slots_[i];
      if (!slot.used || !slot.has_expire) continue;
      if (slot.Expired(now)) {
        slot.used = false;
        shared_->stored[slot.consumer][slot.event].fetch_sub(1, std::memory_order_relaxed);
        shared_->subscription_count.fetch_sub(1, std::memory_order_relaxed);
        ++removed;
        continue;
      }
      // Expired once now > subscribed_at + expire.
      const int64_t at = slot.subscribed_at + static_cast<int64_t>(slot.expire) + 1;
      if (!next.has_value() || at < *next) next = at;
    }
    if (removed > 0) shared_->generation.fetch_add(1, std::memory_order_relaxed);
  }
  if (next_expiry != nullptr) *next_expiry = next;
  return removed;
}

// ---------------------------------------------------------------------------------------
// SipdEvents

namespace {

// The core's events, in publication order (1.11's ids 0..2 first).
const std::vector<mi::EventSpec>& CoreEventSpecs() {
  static const std::vector<mi::EventSpec> kCoreEvents = {
      {.name = "E_CORE_THRESHOLD",
       .module = "core",
       .help = "a SIP message took longer than the execution threshold",
       .params = {{"source", "what took too long"},
                  {"time", "microseconds it took"},
                  {"extra", "details"}}},
      {.name = "E_CORE_SHM_THRESHOLD",
       .module = "core",
       .help = "shared memory use crossed the threshold",
       .params = {{"usage", "percent used"},
                  {"threshold", "the threshold, percent"},
                  {"used", "bytes used"},
                  {"size", "bytes in total"}}},
      {.name = "E_CORE_PKG_THRESHOLD",
       .module = "core",
       .help = "private memory use of a process crossed the threshold",
       .params = {{"usage", "percent used"},
                  {"threshold", "the threshold, percent"},
                  {"used", "bytes used"},
                  {"size", "bytes in total"},
                  {"pid", "the process"}}},
      {.name = "E_SIPD_PROCESS_RESTARTED",
       .module = "core",
       .help = "the attendant forked a process again after it died",
       .params = {{"id", "its ps ID (process table slot)"},
                  {"type", "its ps Type"},
                  {"pid", "the new process id"}}},
  };
  return kCoreEvents;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SipdEvents>> SipdEvents::Create(SharedMemory& shm,
                                                               ShmEventBackend::Options options) {
  auto events = std::unique_ptr<SipdEvents>(new SipdEvents());
  SIPD_ASSIGN_OR_RETURN(events->backend_, ShmEventBackend::Create(shm, std::move(options)));
  events->registry_.SetBackend(events->backend_.get());
  for (const mi::EventSpec& spec : CoreEventSpecs()) {
    SIPD_ASSIGN_OR_RETURN(EventId id, events->registry_.Publish(spec));
    if (spec.name == "E_SIPD_PROCESS_RESTARTED") events->process_restarted_ = id;
    if (spec.name == "E_CORE_THRESHOLD") events->threshold_ = id;
    if (spec.name == "E_CORE_SHM_THRESHOLD") events->shm_threshold_ = id;
    if (spec.name == "E_CORE_PKG_THRESHOLD") events->pkg_threshold_ = id;
  }
  return events;
}

void SipdEvents::ProcessRestarted(int id, std::string_view type, int pid) const {
  registry_.Raise(process_restarted_, {id, type, pid});
}

void SipdEvents::Threshold(std::string_view source, int64_t time_us, std::string_view extra) const {
  registry_.Raise(threshold_, {source, time_us, extra});
}

void SipdEvents::ShmThreshold(int64_t usage, int64_t threshold, int64_t used, int64_t size) const {
  registry_.Raise(shm_threshold_, {usage, threshold, used, size});
}

void SipdEvents::PkgThreshold(int64_t usage, int64_t threshold, int64_t used, int64_t size,
                              int pid) const {
  registry_.Raise(pkg_threshold_, {usage, threshold, used, size, pid});
}

}  // namespace sipd
