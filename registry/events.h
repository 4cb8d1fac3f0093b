// The event interface (OpenSIPS 1.11 "evi"; spec section 6 rows event_subscribe,
// events_list, subscribers_list): the registry of published events, the subscriber
// transports, the backend that queues raised events for their consumers, and the three
// MI commands.
//
//   module Init (attendant)            any process                 consumer process
//   Publish(spec) -> id        ──►     Raise(id, {values})   ──►   Pop(event) -> deliver
//   AddTransport("udp", consumer)      (queued, never blocks)      (event_datagram sends
//   backend()->AddConsumer(...)                                      datagrams; a gRPC
//                                       event_subscribe (MI)         stream later)
//                                       -> backend()->Subscribe
//
// Events are declared once, like commands: name, module, help, parameters. A raised
// event carries one value per declared parameter, in declaration order; consumers map
// them back to the names through the registry (events_list, the datagram payload and a
// gRPC Subscribe stream all read the one declaration).
//
// Consumers. A consumer is one queue of raised events with a wake descriptor, drained by
// one process (event_datagram's delivery process; later the gRPC process). Raisers queue
// an event for a consumer only while it has interest in it: a stored subscription
// (event_subscribe) for one of the consumer's protocols, or local interest that an
// in-process subscriber took with AddInterest() (a gRPC stream). So an event nobody
// listens to costs its raiser one atomic load.
//
// An in-process subscriber (the gRPC Subscribe stream to come) uses a consumer of its own:
//   Init (attendant):   consumer = core.events()->backend()->AddConsumer("mi_grpc", 1 << 20)
//   process start:      consumer->ResetLocalInterest()   (what a dead predecessor held)
//   a stream opens:     id = core.events()->Find(name)->id(); consumer->AddInterest(id)
//   a stream ends:      consumer->RemoveInterest(id), once per AddInterest
//   its event thread:   while (consumer->Pop(event)) hand `event` to the streams of event.id;
//                       then consumer->WaitForEvents(timeout) (or PrepareToSleep(), poll
//                       wake_fd() for at most max_sleep(), ClearWake())
//   names and types:    core.events()->Get(event.id)->params()[i].name for event.values[i]
//                       (std::string or int64_t); event.raised_at_ns for the raise time
//   figures:            consumer->CountDeliveries(written, lost) per stream message
// Its events never reach event_datagram's subscribers and the other way round: each
// consumer has its own queue, and a raiser queues an event once per interested consumer.
// Such subscribers are not stored subscriptions (subscribers_list does not show them).
//
// The backend lives elsewhere: sipd/core/event_bus.h keeps queues, subscriptions and
// interest in shared memory (created before the fork, so every process raises into the
// same queues and subscriptions survive the restart of any process);
// LocalEventBackend below serves one process (unit tests, in-process servers).
//
// Deliberate deviations from 1.11 (observable):
//   - `event_subscribe ... 0` removes the subscription at once (1.11 kept it, and sent to
//     it, until the next raise of its event at least a second later); an expired
//     subscription leaves subscribers_list when it expires (1.11: at the next raise);
//   - more than three arguments to event_subscribe answer 400 "Too few or too many
//     arguments" (1.11 ignored the rest); an expire above 2147483647 is a bad parameter
//     (1.11 wrapped it);
//   - a re-subscription matches the canonical address exactly (1.11 compared only the
//     length of the new address: "127.0.0.1" refreshed an existing "127.0.0.10");
//   - subscribers_list flushing after its 50th subscriber in the middle of an event keeps
//     that event's node for the rest of its subscribers (1.11 lost them);
//   - sipd publishes E_SIPD_PROCESS_RESTARTED as core event 3, so module events have ids
//     one higher than in 1.11 (E_UL_AOR_INSERT is 4).
//
// Thread/process-safety: Publish/AddTransport/SetBackend only before the fork (the
// registry is read-only afterwards, as the command registry). Raise() and Wanted() may
// be called from any process and thread; the backends document the rest.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "registry/command.h"

namespace sipd::mi {

using EventId = int32_t;
inline constexpr EventId kNoEvent = -1;
// Upper bound of published events (backends size their per-event tables with it).
inline constexpr size_t kMaxEvents = 256;
// 1.11's MAX_EVENT_NAME.
inline constexpr size_t kMaxEventNameLength = 64;
// Longest subscriber protocol and canonical address a backend stores (a transport's
// parse should refuse longer ones: `event_subscribe` answers 400 Bad parameter).
inline constexpr size_t kMaxEventProtocolLength = 15;
inline constexpr size_t kMaxEventAddressLength = 300;
// `event_subscribe`'s default expiry (1.11 DEFAULT_EXPIRE), seconds.
inline constexpr uint32_t kDefaultSubscriptionExpire = 3600;

struct EventParamSpec {
  std::string name;
  std::string help;
};

struct EventSpec {
  // E_..., at most kMaxEventNameLength bytes, no whitespace.
  std::string name;
  std::string module;
  std::string help;
  std::vector<EventParamSpec> params;
  // The role a caller needs to subscribe to it (registry/authorization.h, CheckEventRole),
  // declared once with the event like a command's flags: event_subscribe answers 403 and
  // gRPC Subscribe PERMISSION_DENIED to a caller with less. kRead: everyone who may read.
  Role required_role = Role::kRead;
};

class Event {
 public:
  Event(EventId id, EventSpec spec) : id_(id), spec_(std::move(spec)) {}
  EventId id() const { return id_; }
  const std::string& name() const { return spec_.name; }
  const std::string& module() const { return spec_.module; }
  const std::string& help() const { return spec_.help; }
  const std::vector<EventParamSpec>& params() const { return spec_.params; }
  Role required_role() const { return spec_.required_role; }

 private:
  EventId id_;
  EventSpec spec_;
};

// A parameter value as a consumer receives it: a string or an integer (1.11's
// EVI_STR_VAL / EVI_INT_VAL; the datagram payload prints integers in decimal, a gRPC
// stream may keep the type).
using EventValue = std::variant<std::string, int64_t>;

// A parameter value as a raiser passes it: a view, so raising copies nothing before it
// is known that somebody listens.
class EventArg {
 public:
  EventArg(std::string_view text) : text_(text) {}  // NOLINT: implicit on purpose
  EventArg(const std::string& text) : text_(text) {}
  EventArg(const char* text) : text_(text) {}
  template <typename Int>
  requires std::is_integral_v<Int> EventArg(Int number)
      : is_int_(true), number_(static_cast<int64_t>(number)) {}

  bool is_int() const { return is_int_; }
  std::string_view text() const { return text_; }
  int64_t number() const { return number_; }

 private:
  bool is_int_ = false;
  std::string_view text_;
  int64_t number_ = 0;
};

// One raised event, as a consumer takes it from its queue.
struct RaisedEvent {
  EventId id = kNoEvent;
  // CLOCK_REALTIME nanoseconds at Raise() (for latency figures; comparable across
  // processes).
  int64_t raised_at_ns = 0;
  // One value per declared parameter, in declaration order. A raiser that passed fewer
  // values leaves the rest out.
  std::vector<EventValue> values;
};

// A consumer: one queue of raised events and its wake descriptor, drained by one process.
// Created by a module in Init() through EventBackend::AddConsumer(); usable in every
// process afterwards.
//
// The consuming process's loop:
//   while (!stopping) {
//     while (consumer.Pop(event)) Deliver(event);
//     if (consumer.PrepareToSleep()) { poll(consumer.wake_fd(), timeout); consumer.ClearWake(); }
//   }
// (WaitForEvents() is that poll.) Raisers write wake_fd() only for a consumer that said
// it sleeps, so a busy consumer costs its raisers no system call.
//
// Thread-safety: Pop/PrepareToSleep/ClearWake/WaitForEvents from one thread at a time
// (the consuming one); the interest calls and the figures from any thread.
class EventConsumer {
 public:
  virtual ~EventConsumer() = default;

  virtual const std::string& name() const = 0;

  // Takes the oldest queued event into *event (its vectors are reused). False if none.
  virtual bool Pop(RaisedEvent& event) = 0;
  // Readable when events may be waiting (after PrepareToSleep() returned true).
  virtual int wake_fd() const = 0;
  // Announces that the consumer is about to sleep on wake_fd(). False if events arrived
  // meanwhile: Pop() again instead of sleeping.
  virtual bool PrepareToSleep() = 0;
  // Empties wake_fd() (after poll reported it readable).
  virtual void ClearWake() = 0;
  // PrepareToSleep(), then a poll on wake_fd() for at most `timeout` (negative: no
  // limit), then ClearWake(). True if events may be waiting. EINTR returns false.
  bool WaitForEvents(std::chrono::milliseconds timeout);

  // Local interest, for subscribers that live inside the consuming process (a gRPC
  // stream): while the count for `id` is above zero, raisers queue that event for this
  // consumer. Counted: every AddInterest() needs one RemoveInterest().
  virtual void AddInterest(EventId id) = 0;
  virtual void RemoveInterest(EventId id) = 0;
  // Drops all local interest, e.g. what a previous incarnation of the consuming
  // process left behind (call it when the process starts). Stored subscriptions stay.
  virtual void ResetLocalInterest() = 0;

  // The longest a consumer should sleep on wake_fd() before it calls Pop() again even
  // if nothing wakes it (a queue waiting for a stalled raiser); negative = no limit.
  // WaitForEvents() honours it.
  virtual std::chrono::milliseconds max_sleep() const { return std::chrono::milliseconds(-1); }

  // Events raised for this consumer that did not fit its queue (also in
  // evi:dropped_events).
  virtual uint64_t dropped() const = 0;
  // The consuming process reports what became of events it handed on (datagrams sent or
  // not, stream messages written or not): evi:delivered_events, evi:failed_deliveries.
  virtual void CountDeliveries(uint64_t delivered, uint64_t failed) = 0;
};

// A stored subscription (event_subscribe).
struct Subscription {
  EventId event = kNoEvent;
  std::string protocol;  // "udp", "unix"
  std::string address;   // canonical, as the transport's parse returned it
  // Seconds after subscribed_at; nullopt = never expires.
  std::optional<uint32_t> expire;
  // Unix seconds of the (last re-)subscription.
  int64_t subscribed_at = 0;
  // Grows with every new subscription: subscribers_list shows the newest first, as 1.11.
  uint64_t sequence = 0;

  // 1.11: `subscription_time + expire < now`.
  bool Expired(int64_t now) const {
    return expire.has_value() && subscribed_at + static_cast<int64_t>(*expire) < now;
  }
  // "udp:127.0.0.1:8888", as subscribers_list prints it.
  std::string socket() const { return protocol + ":" + address; }
};

// A subscriber transport (1.11's evi_export_t): `event_subscribe EVENT PROTOCOL:ADDRESS`
// finds the transport by PROTOCOL; `parse` validates ADDRESS and returns its canonical
// text (what subscribers_list prints and what a re-subscription must match), or an error
// (-> 400 Bad parameter). Delivery is the business of `consumer`.
struct EventTransport {
  std::string protocol;
  std::function<absl::StatusOr<std::string>(std::string_view address)> parse;
  EventConsumer* consumer = nullptr;
};

class EventBackend {
 public:
  virtual ~EventBackend() = default;

  // --- raisers: any process, any thread; never block, never do I/O (except writing a
  // sleeping consumer's eventfd) ---

  // Somebody listens to `id` (a stored subscription or local interest).
  virtual bool Wanted(EventId id) const = 0;
  // Queues the event for every consumer interested in it. A full queue drops it there
  // (counted). REQUIRES: 0 <= id < kMaxEvents.
  virtual void Raise(EventId id, std::span<const EventArg> values) = 0;

  // --- set-up (attendant, before the fork) ---

  // A new consumer whose queue holds about `capacity_bytes` of events. Valid for the
  // backend's lifetime. ResourceExhausted when no more consumers or memory.
  virtual absl::StatusOr<EventConsumer*> AddConsumer(std::string name, size_t capacity_bytes) = 0;

  // --- subscriptions (MI processes; delivery processes read them) ---

  // Adds the subscription of (event, protocol, address), delivered by `consumer`, or
  // refreshes the existing one (1.11: subscription time = now, expire replaced). An
  // `expire` of 0 removes it (OK whether or not it existed). ResourceExhausted when the
  // subscription table is full; InvalidArgument for a protocol or address longer than
  // kMaxEventProtocolLength / kMaxEventAddressLength or a transport of another backend.
  virtual absl::Status Subscribe(EventId event, const EventTransport& transport,
                                 std::string_view address, std::optional<uint32_t> expire) = 0;
  // Unexpired subscriptions of `event` (all events if nullopt), newest first.
  virtual std::vector<Subscription> Subscriptions(std::optional<EventId> event) const = 0;
  // Changes whenever a subscription is added, refreshed or removed (delivery processes
  // cache Subscriptions() and refresh it when this moves).
  virtual uint64_t subscriptions_generation() const = 0;
  // Removes the subscriptions expired at Now(); returns how many. Also reports (in
  // *next_expiry, if not null) the unix second at which the next one expires, or
  // nullopt. Delivery processes call it when that time comes.
  virtual size_t ExpireSubscriptions(std::optional<int64_t>* next_expiry) = 0;

  // Unix seconds (the backends take an injectable clock for tests).
  virtual int64_t Now() const = 0;
};

// The published events and the subscriber transports, and the door raisers go through.
class EventRegistry {
 public:
  // Declares an event and returns its id (ids count from 0 in publication order, as
  // 1.11). AlreadyExists for a name published before; InvalidArgument for an empty or
  // too long name, whitespace in it, or a repeated parameter name; ResourceExhausted
  // beyond kMaxEvents.
  absl::StatusOr<EventId> Publish(EventSpec spec);

  // nullptr if not published. Exact, case-sensitive match.
  const Event* Find(std::string_view name) const;
  const Event* Get(EventId id) const;
  // Publication order.
  const std::vector<std::unique_ptr<Event>>& events() const { return events_; }

  // Adds a subscriber transport. AlreadyExists for a protocol taken; InvalidArgument
  // without protocol, parse function or consumer.
  absl::Status AddTransport(EventTransport transport);
  // nullptr if no such protocol.
  const EventTransport* FindTransport(std::string_view protocol) const;

  // The backend raised events go to; nullptr = nobody can listen (Raise is a no-op).
  // `backend` must outlive the registry's use.
  void SetBackend(EventBackend* backend) { backend_ = backend; }
  EventBackend* backend() const { return backend_; }

  // Somebody listens to `id`: raisers that must compute their values check it first.
  bool Wanted(EventId id) const { return backend_ != nullptr && id >= 0 && backend_->Wanted(id); }
  // Raises event `id` with its values in declaration order, if somebody listens. Never
  // blocks. An invalid id (kNoEvent, never published) is ignored.
  void Raise(EventId id, std::initializer_list<EventArg> values) const {
    if (Wanted(id)) backend_->Raise(id, std::span<const EventArg>(values.begin(), values.size()));
  }
  void Raise(EventId id, std::span<const EventArg> values) const {
    if (Wanted(id)) backend_->Raise(id, values);
  }

 private:
  std::vector<std::unique_ptr<Event>> events_;
  absl::flat_hash_map<std::string, EventId> by_name_;
  std::vector<EventTransport> transports_;
  EventBackend* backend_ = nullptr;
};

// The three 1.11 core commands, in 1.11's order (module "core", help texts byte exact):
//   event_subscribe <event> <protocol:address> [expire]
//   events_list
//   subscribers_list [event [protocol:address]]
// Registered by the core commands right after cache_remove (which prints 1.11's order).
// `events` must outlive the registry.
std::vector<Command::Spec> EventCommandSpecs(EventRegistry& events);

// An EventBackend for one process (unit tests, in-process servers): subscriptions and
// queues in memory under one mutex, an eventfd per consumer written on every queued
// event. Raise() takes that mutex: good for tests, not for SIP workers.
class LocalEventBackend final : public EventBackend {
 public:
  // `now` returns unix seconds; empty = time(nullptr).
  explicit LocalEventBackend(std::function<int64_t()> now = {});
  ~LocalEventBackend() override;
  LocalEventBackend(const LocalEventBackend&) = delete;
  LocalEventBackend& operator=(const LocalEventBackend&) = delete;

  bool Wanted(EventId id) const override;
  void Raise(EventId id, std::span<const EventArg> values) override;
  absl::StatusOr<EventConsumer*> AddConsumer(std::string name, size_t capacity_bytes) override;
  absl::Status Subscribe(EventId event, const EventTransport& transport, std::string_view address,
                         std::optional<uint32_t> expire) override;
  std::vector<Subscription> Subscriptions(std::optional<EventId> event) const override;
  uint64_t subscriptions_generation() const override;
  size_t ExpireSubscriptions(std::optional<int64_t>* next_expiry) override;
  int64_t Now() const override;

  // Subscriptions at most (then Subscribe() answers ResourceExhausted).
  void set_max_subscriptions(size_t max) { max_subscriptions_ = max; }

 private:
  class Consumer;
  struct Stored {
    Subscription subscription;
    Consumer* consumer = nullptr;
  };

  // REQUIRES: mu_ held.
  void AdjustInterest(const Stored& stored, int delta);

  std::function<int64_t()> now_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Consumer>> consumers_;
  std::vector<Stored> subscriptions_;
  uint64_t generation_ = 0;
  uint64_t next_sequence_ = 1;
  size_t max_subscriptions_ = 1024;
};

}  // namespace sipd::mi
