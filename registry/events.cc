#include "registry/events.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <ctime>
#include <deque>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "registry/authorization.h"
#include "spdlog/spdlog.h"

namespace sipd::mi {

bool EventConsumer::WaitForEvents(std::chrono::milliseconds timeout) {
  if (!PrepareToSleep()) return true;
  const std::chrono::milliseconds limit = max_sleep();
  if (limit.count() >= 0 && (timeout.count() < 0 || limit < timeout)) timeout = limit;
  pollfd pfd{wake_fd(), POLLIN, 0};
  const int timeout_ms =
      timeout.count() < 0
          ? -1
          : static_cast<int>(std::min<int64_t>(timeout.count(), std::numeric_limits<int>::max()));
  const int ready = poll(&pfd, 1, timeout_ms);
  ClearWake();
  return ready > 0;
}

// ---------------------------------------------------------------------------------------
// EventRegistry

absl::StatusOr<EventId> EventRegistry::Publish(EventSpec spec) {
  if (spec.name.empty() || spec.name.size() > kMaxEventNameLength) {
    return absl::InvalidArgumentError(absl::StrCat("event name '", spec.name, "' must have 1 to ",
                                                   kMaxEventNameLength, " characters"));
  }
  for (char c : spec.name) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) ||
        absl::ascii_iscntrl(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("event name '", spec.name, "' contains whitespace"));
    }
  }
  for (size_t i = 0; i < spec.params.size(); ++i) {
    if (spec.params[i].name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("event ", spec.name, ": parameter ", i, " has no name"));
    }
    for (size_t j = 0; j < i; ++j) {
      if (spec.params[j].name == spec.params[i].name) {
        return absl::InvalidArgumentError(
            absl::StrCat("event ", spec.name, ": parameter ", spec.params[i].name, " repeated"));
      }
    }
  }
  if (by_name_.contains(spec.name)) {
    return absl::AlreadyExistsError(absl::StrCat("event ", spec.name, " already published"));
  }
  if (events_.size() >= kMaxEvents) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot publish ", spec.name, ": ", kMaxEvents, " events at most"));
  }
  const EventId id = static_cast<EventId>(events_.size());
  by_name_[spec.name] = id;
  events_.push_back(std::make_unique<Event>(id, std::move(spec)));
  return id;
}

const Event* EventRegistry::Find(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : events_[static_cast<size_t>(it->second)].get();
}

const Event* EventRegistry::Get(EventId id) const {
  if (id < 0 || static_cast<size_t>(id) >= events_.size()) return nullptr;
  return events_[static_cast<size_t>(id)].get();
}

absl::Status EventRegistry::AddTransport(EventTransport transport) {
  if (transport.protocol.empty() || transport.protocol.find(':') != std::string::npos ||
      !transport.parse || transport.consumer == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("event transport '", transport.protocol,
                                                   "' needs a protocol, a parser and a consumer"));
  }
  if (FindTransport(transport.protocol) != nullptr) {
    return absl::AlreadyExistsError(
        absl::StrCat("event transport ", transport.protocol, " already registered"));
  }
  transports_.push_back(std::move(transport));
  return absl::OkStatus();
}

const EventTransport* EventRegistry::FindTransport(std::string_view protocol) const {
  for (const EventTransport& t : transports_) {
    if (t.protocol == protocol) return &t;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------
// The MI commands (spec section 6; 1.11 evi/event_interface.c).

namespace {

constexpr std::string_view kModule = "core";
constexpr std::string_view kEventSubscribeHelp = "subscribes an event to the Event Interface";
constexpr std::string_view kEventsListHelp =
    "lists all the events advertised through the Event Interface";
constexpr std::string_view kSubscribersListHelp =
    "lists all the Event Interface subscribers; Params: [ event [ subscriber ]]";
// Every 50 records, as 1.11's commands flush (spec 1.7).
constexpr size_t kRecordsPerFlush = 50;

using Arity = ParamSpec::Arity;

// 1.11 str2int: decimal digits only, not empty. sipd also refuses values above INT_MAX
// (1.11 keeps the expiry in an int and prints it with %d).
std::optional<uint32_t> ParseExpire(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())) return std::nullopt;
  }
  return static_cast<uint32_t>(value);
}

// Splits "PROTOCOL:ADDRESS" and parses ADDRESS with the protocol's transport.
struct ParsedSocket {
  const EventTransport* transport = nullptr;
  std::string address;
};
std::optional<ParsedSocket> ParseSocket(const EventRegistry& events, std::string_view socket) {
  const size_t colon = socket.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const EventTransport* transport = events.FindTransport(socket.substr(0, colon));
  if (transport == nullptr) return std::nullopt;
  absl::StatusOr<std::string> address = transport->parse(socket.substr(colon + 1));
  if (!address.ok()) {
    spdlog::debug("event socket '{}' refused: {}", socket, std::string(address.status().message()));
    return std::nullopt;
  }
  return ParsedSocket{transport, *std::move(address)};
}

absl::Status EventSubscribe(EventRegistry& events, Call& call) {
  // 1.11 order: missing values, expire, event, transport, address.
  if (call.arg(0).empty() || call.arg(1).empty()) {
    call.reply() = Reply::Error(400, kReasonBadArgCount);
    return absl::OkStatus();
  }
  std::optional<uint32_t> expire = kDefaultSubscriptionExpire;
  if (call.arg_count() > 2) {
    expire = ParseExpire(call.arg(2));
    if (!expire.has_value()) {
      call.reply() = Reply::Error(400, kReasonBadParameter);
      return absl::OkStatus();
    }
  }
  const Event* event = events.Find(call.arg(0));
  std::optional<ParsedSocket> socket;
  if (event != nullptr) socket = ParseSocket(events, call.arg(1));
  if (event == nullptr || !socket.has_value()) {
    call.reply() = Reply::Error(400, kReasonBadParameter);
    return absl::OkStatus();
  }
  if (absl::Status allowed = CheckEventRole(call.context().peer.role, *event); !allowed.ok()) {
    call.reply() = Reply::Error(403, std::string(allowed.message()));
    return absl::OkStatus();
  }
  EventBackend* backend = events.backend();
  if (backend == nullptr) return absl::FailedPreconditionError("no event backend");
  absl::Status status =
      backend->Subscribe(event->id(), *socket->transport, socket->address, expire);
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    spdlog::debug("event_subscribe {} {}: {}", event->name(), call.arg(1),
                  std::string(status.message()));
    call.reply() = Reply::Error(400, kReasonBadParameter);
    return absl::OkStatus();
  }
  if (!status.ok()) {
    spdlog::error("event_subscribe {} {}: {}", event->name(), call.arg(1),
                  std::string(status.message()));
    return status;  // "returned nothing", as 1.11 on an internal error
  }
  spdlog::info("event {}: {} {}:{} (expire {})", event->name(),
               *expire == 0 ? "unsubscribed" : "subscribed", socket->transport->protocol,
               socket->address, *expire);
  return absl::OkStatus();
}

class EventsListProducer final : public ReplyProducer {
 public:
  explicit EventsListProducer(const EventRegistry& events) : events_(events) {}

  absl::StatusOr<bool> Next(Call& call) override {
    const auto& list = events_.events();
    while (next_ < list.size()) {
      const Event& event = *list[next_++];
      call.reply().root.AddKid("Event", event.name()).AddAttribute("id", absl::StrCat(event.id()));
      if (next_ % kRecordsPerFlush == 0) return false;
    }
    return true;
  }

 private:
  const EventRegistry& events_;
  size_t next_ = 0;
};

absl::Status EventsList(const EventRegistry& events, Call& call) {
  call.reply().root.is_array = true;
  call.StreamWith(std::make_unique<EventsListProducer>(events));
  return absl::OkStatus();
}

void AddSubscriberNode(Node& event_node, const Subscription& s) {
  Node& node = event_node.AddKid("Subscriber");
  node.AddAttribute("socket", s.socket());
  node.AddAttribute("expire", s.expire.has_value() ? absl::StrCat(*s.expire) : "never");
}

Node& AddEventNode(Node& root, const Event& event) {
  Node& node = root.AddKid("Event", event.name());
  node.is_array = true;
  node.AddAttribute("id", absl::StrCat(event.id()));
  return node;
}

// Events with their subscribers, a flush after every 50th subscriber (1.11). The event
// being filled is marked not completed, so a flush in its middle writes its line and the
// subscribers so far and keeps it for the rest (1.11 detached it there and lost them).
class SubscribersListProducer final : public ReplyProducer {
 public:
  SubscribersListProducer(const EventRegistry& events, std::vector<Subscription> subscriptions)
      : events_(events), subscriptions_(std::move(subscriptions)) {
    // Grouped by event in publication order, newest first inside an event.
    std::stable_sort(subscriptions_.begin(), subscriptions_.end(),
                     [](const Subscription& a, const Subscription& b) {
                       return a.event != b.event ? a.event < b.event : a.sequence > b.sequence;
                     });
  }

  absl::StatusOr<bool> Next(Call& call) override {
    while (next_ < subscriptions_.size()) {
      const Subscription& s = subscriptions_[next_];
      if (current_ == nullptr || s.event != current_event_) {
        if (current_ != nullptr) current_->not_completed = false;
        const Event* event = events_.Get(s.event);
        if (event == nullptr) {
          ++next_;
          continue;
        }
        current_ = &AddEventNode(call.reply().root, *event);
        current_->not_completed = true;
        current_event_ = s.event;
      }
      AddSubscriberNode(*current_, s);
      ++next_;
      if (next_ % kRecordsPerFlush == 0) {
        if (next_ == subscriptions_.size()) current_->not_completed = false;
        return false;
      }
    }
    if (current_ != nullptr) current_->not_completed = false;
    return true;
  }

 private:
  const EventRegistry& events_;
  std::vector<Subscription> subscriptions_;
  size_t next_ = 0;
  Node* current_ = nullptr;
  EventId current_event_ = kNoEvent;
};

absl::Status SubscribersList(const EventRegistry& events, Call& call) {
  call.reply().root.is_array = true;
  EventBackend* backend = events.backend();
  if (call.arg_count() == 0) {
    if (backend == nullptr) return absl::OkStatus();
    call.StreamWith(
        std::make_unique<SubscribersListProducer>(events, backend->Subscriptions(std::nullopt)));
    return absl::OkStatus();
  }
  const Event* event = events.Find(call.arg(0));
  if (event == nullptr) {
    call.reply() = Reply::Error(404, "Event not published");
    return absl::OkStatus();
  }
  std::vector<Subscription> subscriptions;
  if (backend != nullptr) subscriptions = backend->Subscriptions(event->id());
  if (call.arg_count() == 1) {
    call.StreamWith(std::make_unique<SubscribersListProducer>(events, std::move(subscriptions)));
    return absl::OkStatus();
  }
  std::optional<ParsedSocket> socket = ParseSocket(events, call.arg(1));
  if (socket.has_value()) {
    for (const Subscription& s : subscriptions) {
      if (s.protocol == socket->transport->protocol && s.address == socket->address) {
        AddSubscriberNode(AddEventNode(call.reply().root, *event), s);
        return absl::OkStatus();
      }
    }
  }
  call.reply() = Reply::Error(404, "Subscriber does not exist");
  return absl::OkStatus();
}

}  // namespace

std::vector<Command::Spec> EventCommandSpecs(EventRegistry& events) {
  EventRegistry* e = &events;
  std::vector<Command::Spec> specs;
  specs.push_back(Command::Spec{
      .name = "event_subscribe",
      .module = std::string(kModule),
      .help = std::string(kEventSubscribeHelp),
      .params = {{"event", Arity::kRequired, "event name (see events_list)"},
                 {"socket", Arity::kRequired,
                  "subscriber: udp:HOST:PORT or unix:/PATH (event_datagram)"},
                 {"expire", Arity::kOptional,
                  "seconds (default 3600); 0 unsubscribes; subscribing again refreshes"}},
      // Blocking: a host name in a udp: socket is resolved (as 1.11 did).
      .flags = kMutating | kBlocking,
      .handler = [e](Call& call) { return EventSubscribe(*e, call); },
  });
  specs.push_back(Command::Spec{
      .name = "events_list",
      .module = std::string(kModule),
      .help = std::string(kEventsListHelp),
      .flags = kNoInput | kStreaming,
      .handler = [e](Call& call) { return EventsList(*e, call); },
  });
  specs.push_back(Command::Spec{
      .name = "subscribers_list",
      .module = std::string(kModule),
      .help = std::string(kSubscribersListHelp),
      .params = {{"event", Arity::kOptional, "only this event"},
                 {"socket", Arity::kOptional, "only this subscriber (PROTOCOL:ADDRESS)"}},
      .flags = kStreaming,
      .handler = [e](Call& call) { return SubscribersList(*e, call); },
  });
  return specs;
}

// ---------------------------------------------------------------------------------------
// LocalEventBackend

class LocalEventBackend::Consumer final : public EventConsumer {
 public:
  Consumer(std::string name, size_t capacity)
      : name_(std::move(name)),
        capacity_(std::max<size_t>(capacity, 1)),
        wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    for (auto& i : interest_) i.store(0);
    for (auto& i : local_) i.store(0);
  }
  ~Consumer() override {
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  const std::string& name() const override { return name_; }

  bool Pop(RaisedEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty()) return false;
    event = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  int wake_fd() const override { return wake_fd_; }
  bool PrepareToSleep() override {
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.empty();
  }
  void ClearWake() override {
    uint64_t count = 0;
    [[maybe_unused]] ssize_t n = read(wake_fd_, &count, sizeof(count));
  }
  void AddInterest(EventId id) override {
    if (!Valid(id)) return;
    local_[static_cast<size_t>(id)].fetch_add(1);
    interest_[static_cast<size_t>(id)].fetch_add(1);
  }
  void RemoveInterest(EventId id) override {
    if (!Valid(id)) return;
    int64_t local = local_[static_cast<size_t>(id)].load();
    while (local > 0 && !local_[static_cast<size_t>(id)].compare_exchange_weak(local, local - 1)) {
    }
    if (local > 0) interest_[static_cast<size_t>(id)].fetch_sub(1);
  }
  void ResetLocalInterest() override {
    for (size_t id = 0; id < kMaxEvents; ++id) {
      const int64_t local = local_[id].exchange(0);
      interest_[id].fetch_sub(local);
    }
  }
  uint64_t dropped() const override { return dropped_.load(); }
  void CountDeliveries(uint64_t delivered, uint64_t failed) override {
    delivered_.fetch_add(delivered);
    failed_.fetch_add(failed);
  }
  uint64_t delivered() const { return delivered_.load(); }
  uint64_t failed() const { return failed_.load(); }

  bool interested(EventId id) const { return interest_[static_cast<size_t>(id)].load() > 0; }
  void AdjustStored(EventId id, int delta) { interest_[static_cast<size_t>(id)].fetch_add(delta); }

  void Push(RaisedEvent event) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.size() >= capacity_) {
        dropped_.fetch_add(1);
        return;
      }
      queue_.push_back(std::move(event));
    }
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
  }

 private:
  static bool Valid(EventId id) { return id >= 0 && static_cast<size_t>(id) < kMaxEvents; }

  const std::string name_;
  const size_t capacity_;
  const int wake_fd_;
  std::mutex mu_;
  std::deque<RaisedEvent> queue_;
  std::array<std::atomic<int64_t>, kMaxEvents> interest_;
  std::array<std::atomic<int64_t>, kMaxEvents> local_;
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
};

LocalEventBackend::LocalEventBackend(std::function<int64_t()> now) : now_(std::move(now)) {
  if (!now_) now_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
}

LocalEventBackend::~LocalEventBackend() = default;

int64_t LocalEventBackend::Now() const { return now_(); }

bool LocalEventBackend::Wanted(EventId id) const {
  if (id < 0 || static_cast<size_t>(id) >= kMaxEvents) return false;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& c : consumers_) {
    if (c->interested(id)) return true;
  }
  return false;
}

void LocalEventBackend::Raise(EventId id, std::span<const EventArg> values) {
  if (id < 0 || static_cast<size_t>(id) >= kMaxEvents) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  RaisedEvent event;
  event.id = id;
  event.raised_at_ns = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  for (const EventArg& v : values) {
    if (v.is_int()) {
      event.values.emplace_back(v.number());
    } else {
      event.values.emplace_back(std::string(v.text()));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& c : consumers_) {
    if (c->interested(id)) c->Push(event);
  }
}

absl::StatusOr<EventConsumer*> LocalEventBackend::AddConsumer(std::string name,
                                                              size_t capacity_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  // About 256 bytes per event, as the shared-memory queue counts.
  consumers_.push_back(std::make_unique<Consumer>(std::move(name), capacity_bytes / 256));
  return consumers_.back().get();
}

void LocalEventBackend::AdjustInterest(const Stored& stored, int delta) {
  stored.consumer->AdjustStored(stored.subscription.event, delta);
}

absl::Status LocalEventBackend::Subscribe(EventId event, const EventTransport& transport,
                                          std::string_view address,
                                          std::optional<uint32_t> expire) {
  if (event < 0 || static_cast<size_t>(event) >= kMaxEvents) {
    return absl::InvalidArgumentError("bad event id");
  }
  std::lock_guard<std::mutex> lock(mu_);
  Consumer* consumer = nullptr;
  for (const auto& c : consumers_) {
    if (c.get() == transport.consumer) consumer = c.get();
  }
  if (consumer == nullptr) return absl::InvalidArgumentError("transport of another backend");
  const int64_t now = now_();
  for (auto it = subscriptions_.begin(); it != subscriptions_.end(); ++it) {
    Subscription& s = it->subscription;
    if (s.event != event || s.protocol != transport.protocol || s.address != address) continue;
    ++generation_;
    if (expire.has_value() && *expire == 0) {
      AdjustInterest(*it, -1);
      subscriptions_.erase(it);
      return absl::OkStatus();
    }
    s.subscribed_at = now;
    s.expire = expire;
    return absl::OkStatus();
  }
  if (expire.has_value() && *expire == 0) return absl::OkStatus();
  if (transport.protocol.size() > kMaxEventProtocolLength ||
      address.size() > kMaxEventAddressLength) {
    return absl::InvalidArgumentError("subscriber protocol or address too long");
  }
  if (subscriptions_.size() >= max_subscriptions_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", max_subscriptions_, " event subscriptions are in use"));
  }
  Stored stored;
  stored.subscription = Subscription{.event = event,
                                     .protocol = transport.protocol,
                                     .address = std::string(address),
                                     .expire = expire,
                                     .subscribed_at = now,
                                     .sequence = next_sequence_++};
  stored.consumer = consumer;
  AdjustInterest(stored, +1);
  subscriptions_.push_back(std::move(stored));
  ++generation_;
  return absl::OkStatus();
}

std::vector<Subscription> LocalEventBackend::Subscriptions(std::optional<EventId> event) const {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = now_();
  std::vector<Subscription> out;
  for (const Stored& s : subscriptions_) {
    if (event.has_value() && s.subscription.event != *event) continue;
    if (s.subscription.Expired(now)) continue;
    out.push_back(s.subscription);
  }
  std::sort(out.begin(), out.end(),
            [](const Subscription& a, const Subscription& b) { return a.sequence > b.sequence; });
  return out;
}

uint64_t LocalEventBackend::subscriptions_generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

size_t LocalEventBackend::ExpireSubscriptions(std::optional<int64_t>* next_expiry) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = now_();
  size_t removed = 0;
  std::optional<int64_t> next;
  for (auto it = subscriptions_.begin(); it != subscriptions_.end();) {
    const Subscription& s = it->subscription;
    if (s.Expired(now)) {
      AdjustInterest(*it, -1);
      it = subscriptions_.erase(it);
      ++removed;
      continue;
    }
    if (s.expire.has_value()) {
      // Expired once now > subscribed_at + expire.
      const int64_t at = s.subscribed_at + static_cast<int64_t>(*s.expire) + 1;
      if (!next.has_value() || at < *next) next = at;
    }
    ++it;
  }
  if (removed > 0) ++generation_;
  if (next_expiry != nullptr) *next_expiry = next;
  return removed;
}

}  // namespace sipd::mi
