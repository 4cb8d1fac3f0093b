// SubscribeCall and WatchCall: completion-queue state machines of the streams of
// sipd.events.v1.EventService (see event_service.h).
//
//   Subscribe:  requested -> events_list through the dispatcher (authorization) ->
//               validate -> table + interest -> initial metadata (active) ->
//               [events offered by the delivery thread into the buffer] -> Write ->
//               write done -> next message ... -> client gone / Shutdown -> Finish
//   WatchStatistics: requested -> get_statistics NAMES (authorization, NOT_FOUND) ->
//               first sample -> Write ... alarm every interval -> sample -> Write ...
//
// Thread-safety: tags complete on the call's queue thread, on_ready on the dispatcher's
// completion thread, offers on the delivery thread; the anchor's mutex guards the state.
#include "service/event_service.h"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/slice.h"
#include "registry/authorization.h"
#include "registry/stat_sampler.h"
#include "service/async_call.h"
#include "service/call_anchor.h"
#include "service/call_support.h"
#include "service/cq_tag.h"
#include "service/event_wire.h"
#include "service/rich_status.h"
#include "spdlog/spdlog.h"

namespace sipd::service {
namespace {

using Clock = std::chrono::steady_clock;
using google::protobuf::util::TimeUtil;

constexpr std::chrono::milliseconds kMinInterval(100);
constexpr std::chrono::milliseconds kMaxInterval(3600 * 1000);
constexpr std::chrono::milliseconds kDefaultInterval(1000);
// Events the delivery thread takes per wake-up before it looks at the stop flag.
constexpr int kDeliveryBatch = 256;
constexpr std::chrono::milliseconds kDeliveryPoll(100);

grpc::Status Cancelled() {
  return TransportError(grpc::StatusCode::CANCELLED, "stream cancelled", kReasonCancelled);
}

grpc::Status Stopping() {
  return TransportError(grpc::StatusCode::UNAVAILABLE, "sipd is stopping", kReasonStopping);
}

// The status of the authorizing command: OK for a 2xx reply, else what Execute would
// answer (PERMISSION_DENIED, NOT_FOUND, ...) with its MI trailers.
grpc::Status AuthorizationStatus(grpc::ServerContext* context, mi::Exchange& exchange) {
  if (exchange.outcome() == mi::Outcome::kReply && exchange.reply().code >= 200 &&
      exchange.reply().code < 300) {
    return grpc::Status::OK;
  }
  return ExchangeStatus(context, exchange);
}

// An event as the delivery thread hands it to the streams: made once per event.
struct PreparedEvent {
  std::vector<std::string> values;  // as text, declaration order (for the filters)
  std::string body;                 // Event name, time and params on the wire (event_wire.h)
};

class SubscribeCall;
class WatchCall;

}  // namespace

struct EventService::Internals {
  // One subscriber of one event in the table.
  struct Entry {
    std::shared_ptr<CallAnchor<SubscribeCall>> anchor;
    // (parameter index, value) pairs that must all match.
    std::vector<std::pair<size_t, std::string>> filter;
  };
  // Subscribers by event id (kMaxEvents slots).
  using Table = std::vector<std::vector<Entry>>;

  Internals(ManagementService& m, AsyncService& a, EventServiceOptions o)
      : management(m), async(a), options(o), table(std::make_shared<const Table>(mi::kMaxEvents)) {}

  std::shared_ptr<const Table> Snapshot() const {
    std::lock_guard<std::mutex> lock(table_mu);
    return table;
  }
  void Change(const std::function<void(Table&)>& change) {
    std::lock_guard<std::mutex> lock(table_mu);
    auto fresh = std::make_shared<Table>(*table);
    change(*fresh);
    table = std::move(fresh);
    generation.fetch_add(1, std::memory_order_release);
  }

  ManagementService& management;
  AsyncService& async;
  const EventServiceOptions options;

  mutable std::mutex table_mu;
  std::shared_ptr<const Table> table;
  std::atomic<uint64_t> generation{0};

  // Open calls, for Shutdown(). Lock order: calls_mu, then a call's anchor.
  mutable std::mutex calls_mu;
  std::set<std::shared_ptr<CallAnchor<SubscribeCall>>> subscribes;
  std::set<std::shared_ptr<CallAnchor<WatchCall>>> watches;
  bool stopping = false;
};

namespace {

class SubscribeCall final
    : public AsyncCall<SubscribeCall, grpc::ServerAsyncWriter<grpc::ByteBuffer>> {
 public:
  SubscribeCall(EventService::Internals& in, grpc::ServerCompletionQueue* cq)
      : AsyncCall(this, cq, in.management.live_calls()), in_(in) {
    in_.async.RequestSubscribe(&ctx_, &request_bytes_, &stream_, cq_, cq_, &request_tag_);
  }

  // The delivery thread offers an event of one of this stream's ids that passed its
  // filter, at `now`. Returns when the delivery thread must call FlushLocked() (the
  // stream holds events for coalescing), if it must.
  std::optional<Clock::time_point> OfferLocked(const std::shared_ptr<const PreparedEvent>& event,
                                               Clock::time_point now) {
    if (!active_ || ending_) return std::nullopt;
    ++seq_;
    if (buffer_.size() >= in_.options.subscriber_buffer) {
      ++pending_dropped_;
      ++total_dropped_;
      in_.options.consumer->CountDeliveries(0, 1);
    } else {
      buffer_.push_back({event, seq_});
    }
    return PumpLocked(now);
  }

  // The time FlushLocked() was asked for came: send what the stream holds, unless a write
  // is still in flight (its completion sends it then).
  void FlushLocked() {
    if (!scheduled_) return;
    scheduled_ = false;
    if (!writing_ && !ending_) WriteLocked();
  }

  void EndLocked(grpc::Status status) {
    if (ending_) return;
    buffer_.clear();
    Base::EndLocked(std::move(status));
  }

 private:
  friend Base;

  void OnRequest() {
    new SubscribeCall(in_, cq_);
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock(in_.calls_mu);
      stopping = in_.stopping;
      in_.subscribes.insert(anchor_);
    }
    std::lock_guard<std::mutex> lock(anchor_->mu);
    if (stopping) return EndLocked(Stopping());
    if (grpc::Status framing = CheckMessageFraming(ctx_); !framing.ok()) return EndLocked(framing);
    // The raw method hands over the request's bytes (the responses are built by hand).
    if (!grpc::SerializationTraits<eventsv1::SubscribeRequest>::Deserialize(&request_bytes_,
                                                                            &request_)
             .ok()) {
      return EndLocked(TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                                      "the SubscribeRequest does not parse",
                                      kReasonInvalidRequest));
    }
    if (in_.options.events == nullptr || in_.options.consumer == nullptr) {
      return EndLocked(TransportError(grpc::StatusCode::UNAVAILABLE,
                                      "this sipd has no event interface", "NO_EVENT_INTERFACE"));
    }
    if (ctx_.deadline() <= std::chrono::system_clock::now()) {
      return EndLocked(DeadlineExpiredStatus());
    }
    exchange_ = in_.management.dispatcher().Start(
        GrpcCallContext(ctx_),
        mi::Request{.command = "events_list", .args = {}, .args_error = absl::OkStatus()},
        mi::Delivery::kTree, nullptr,
        [anchor = anchor_] { anchor->Run([](SubscribeCall& call) { call.AuthorizedLocked(); }); });
    if (exchange_->ready()) AuthorizedLocked();
  }

  void AuthorizedLocked() {
    if (exchange_ == nullptr || !exchange_->ready()) return;
    grpc::Status status = AuthorizationStatus(&ctx_, *exchange_);
    role_ = exchange_->context().peer.role;  // ValidateLocked checks each event's role
    exchange_.reset();
    if (ending_) return;
    if (!status.ok()) return EndLocked(std::move(status));
    status = ValidateLocked();
    if (!status.ok()) return EndLocked(std::move(status));
    // Table first, then interest, then the headers: an event raised after the client
    // saw the headers is queued for this process and finds this stream in the table.
    std::shared_ptr<CallAnchor<SubscribeCall>> anchor = anchor_;
    in_.Change([&](EventService::Internals::Table& table) {
      for (const auto& [id, filter] : filters_) table[id].push_back({anchor, filter});
    });
    for (const auto& [id, filter] : filters_) in_.options.consumer->AddInterest(id);
    registered_ = true;
    active_ = true;
    StartSendInitialMetadataLocked();  // a write of its own
  }

  grpc::Status ValidateLocked() {
    const mi::EventRegistry& events = *in_.options.events;
    if (request_.events().empty()) {
      return TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                            "no event to subscribe to (see MI events_list)", kReasonInvalidRequest,
                            "events");
    }
    std::vector<const mi::Event*> wanted;
    for (int i = 0; i < request_.events_size(); ++i) {
      const mi::Event* event = events.Find(request_.events(i));
      if (event == nullptr) {
        return TransportError(
            grpc::StatusCode::NOT_FOUND,
            absl::StrCat("event '", request_.events(i), "' is not published (see MI events_list)"),
            kReasonUnknownEvent, absl::StrCat("events[", i, "]"));
      }
      if (absl::Status allowed = mi::CheckEventRole(role_, *event); !allowed.ok()) {
        return MiErrorStatus(grpc::StatusCode::PERMISSION_DENIED,
                             mi::Reply::Error(403, std::string(allowed.message())), "reply");
      }
      if (std::find(wanted.begin(), wanted.end(), event) == wanted.end()) wanted.push_back(event);
    }
    // Sorted keys: the error names the same key whatever the map's order.
    const std::map<std::string, std::string> filter(request_.filter().begin(),
                                                    request_.filter().end());
    for (const auto& [key, value] : filter) {
      bool known = false;
      for (const mi::Event* event : wanted) {
        for (const mi::EventParamSpec& param : event->params()) known |= param.name == key;
      }
      if (!known) {
        return TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("no requested event has a parameter '", key, "'"),
                              kReasonInvalidRequest, absl::StrCat("filter[", key, "]"));
      }
    }
    for (const mi::Event* event : wanted) {
      std::vector<std::pair<size_t, std::string>> match;
      bool possible = true;
      for (const auto& [key, value] : filter) {
        const auto& params = event->params();
        auto it =
            std::find_if(params.begin(), params.end(),
                         [&name = key](const mi::EventParamSpec& p) { return p.name == name; });
        if (it == params.end()) {
          possible = false;  // this event never has the key: it never matches
          break;
        }
        match.emplace_back(static_cast<size_t>(it - params.begin()), value);
      }
      if (possible) filters_.emplace_back(event->id(), std::move(match));
    }
    request_.Clear();
    return grpc::Status::OK;
  }

  // Something to send: now if the stream may write (idle, and not busy or its last write
  // is at least event_coalesce old), else at a time the delivery thread is asked to flush it.
  std::optional<Clock::time_point> PumpLocked(Clock::time_point now) {
    if (ending_ || (buffer_.empty() && pending_dropped_ == 0)) return std::nullopt;
    const Clock::duration coalesce = in_.options.event_coalesce;
    if (coalesce.count() <= 0) {
      if (!writing_) WriteLocked();  // else the write's completion sends it
      return std::nullopt;
    }
    if (scheduled_) return std::nullopt;
    // A stream whose last message carried one event is not busy: it sends at once (or as
    // soon as the write in flight completes), so holding never phase-locks a steady low
    // rate behind the window. Busy streams (>= 2 events per message, i.e. at least
    // 2 / event_coalesce events per second once held) hold.
    if (last_message_events_ < 2) {
      if (!writing_) WriteLocked();
      return std::nullopt;
    }
    const Clock::time_point allowed = last_write_ + coalesce;
    if (!writing_ && now >= allowed) {
      WriteLocked();
      return std::nullopt;
    }
    scheduled_ = true;
    return std::max(allowed, now);
  }

  // One message of up to kMaxEventsPerMessage buffered events (their shared bodies, each
  // with this stream's seq) and the drop counters, in one slice.
  void WriteLocked() {
    if (buffer_.empty() && pending_dropped_ == 0) return;
    in_flight_ = std::min(buffer_.size(), kMaxEventsPerMessage);
    size_t size = CountersSize(pending_dropped_, total_dropped_);
    for (size_t i = 0; i < in_flight_; ++i) {
      size += EventEntrySize(buffer_[i].event->body.size(), buffer_[i].seq);
    }
    grpc_slice slice = grpc_slice_malloc(size);
    char* at = reinterpret_cast<char*>(GRPC_SLICE_START_PTR(slice));
    for (size_t i = 0; i < in_flight_; ++i) {
      at = AppendEventEntry(at, buffer_.front().event->body, buffer_.front().seq);
      buffer_.pop_front();
    }
    AppendCounters(at, pending_dropped_, total_dropped_);
    grpc::Slice owned(slice, grpc::Slice::STEAL_REF);
    response_ = grpc::ByteBuffer(&owned, 1);
    pending_dropped_ = 0;
    last_write_ = Clock::now();
    last_message_events_ = in_flight_;
    StartWriteLocked(response_);
  }

  void OnWriteDoneLocked(bool ok) {
    if (in_flight_ > 0) {
      in_.options.consumer->CountDeliveries(ok ? in_flight_ : 0, ok ? 0 : in_flight_);
      in_flight_ = 0;
    }
    if (!ok) {
      EndLocked(Cancelled());
    } else if (ending_) {
      FinishEndedLocked();
    } else if (!scheduled_) {
      // Nothing is held for coalescing (or its time passed during this write): what
      // came meanwhile, or a backlog beyond one message, leaves now.
      WriteLocked();
    }
  }

  void OnDoneLocked() {
    if (exchange_ != nullptr) exchange_->Cancel();
    if (ctx_.IsCancelled()) EndLocked(Cancelled());
  }

  // Nobody reaches this call any more (the delivery thread finds no call behind the
  // anchor): leave the table and drop the interest.
  void ReleaseUnlocked() {
    if (registered_) {
      in_.Change([this](EventService::Internals::Table& table) {
        for (const auto& [id, filter] : filters_) {
          auto& entries = table[id];
          entries.erase(std::remove_if(entries.begin(), entries.end(),
                                       [this](const auto& e) { return e.anchor == anchor_; }),
                        entries.end());
        }
      });
      for (const auto& [id, filter] : filters_) in_.options.consumer->RemoveInterest(id);
    }
    {
      std::lock_guard<std::mutex> calls(in_.calls_mu);
      in_.subscribes.erase(anchor_);
    }
  }

  struct Buffered {
    std::shared_ptr<const PreparedEvent> event;
    uint64_t seq = 0;
  };

  EventService::Internals& in_;
  grpc::ByteBuffer request_bytes_;
  eventsv1::SubscribeRequest request_;
  mi::Role role_ = mi::Role::kUnset;  // the caller's, from the authorization exchange

  // Guarded by anchor_->mu once the request arrived.
  std::unique_ptr<mi::Exchange> exchange_;
  std::vector<std::pair<mi::EventId, std::vector<std::pair<size_t, std::string>>>> filters_;
  bool registered_ = false;
  bool active_ = false;
  std::deque<Buffered> buffer_;
  size_t in_flight_ = 0;
  uint64_t seq_ = 0;
  uint64_t pending_dropped_ = 0;
  uint64_t total_dropped_ = 0;
  // Coalescing: when the last message was written, and whether the delivery thread will
  // call FlushLocked().
  Clock::time_point last_write_;
  size_t last_message_events_ = 0;
  bool scheduled_ = false;
  grpc::ByteBuffer response_;
};

class WatchCall final
    : public AsyncCall<WatchCall, grpc::ServerAsyncWriter<eventsv1::WatchStatisticsResponse>> {
 public:
  WatchCall(EventService::Internals& in, grpc::ServerCompletionQueue* cq)
      : AsyncCall(this, cq, in.management.live_calls()), in_(in) {
    in_.async.RequestWatchStatistics(&ctx_, &request_, &stream_, cq_, cq_, &request_tag_);
  }

  void EndLocked(grpc::Status status) {
    if (ending_) return;
    CancelAlarmLocked();
    Base::EndLocked(std::move(status));
  }

 private:
  friend Base;

  void OnRequest() {
    new WatchCall(in_, cq_);
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock(in_.calls_mu);
      stopping = in_.stopping;
      in_.watches.insert(anchor_);
    }
    std::lock_guard<std::mutex> lock(anchor_->mu);
    if (stopping) return EndLocked(Stopping());
    if (grpc::Status framing = CheckMessageFraming(ctx_); !framing.ok()) return EndLocked(framing);
    if (in_.options.stats == nullptr) {
      return EndLocked(
          TransportError(grpc::StatusCode::UNAVAILABLE, "no statistics here", "NO_STATISTICS"));
    }
    if (request_.has_interval()) {
      const auto& d = request_.interval();
      const int64_t ms = d.seconds() * 1000 + d.nanos() / 1000000;
      if (d.seconds() < 0 || d.nanos() < 0 || ms < kMinInterval.count() ||
          ms > kMaxInterval.count()) {
        return EndLocked(TransportError(grpc::StatusCode::INVALID_ARGUMENT,
                                        "interval must be between 100 ms and 1 hour",
                                        kReasonInvalidRequest, "interval"));
      }
      interval_ = std::chrono::milliseconds(ms);
    }
    mi::Request command{.command = "get_statistics", .args = {}, .args_error = absl::OkStatus()};
    for (int i = 0; i < request_.names_size(); ++i) {
      const std::string& name = request_.names(i);
      if (name.empty() || name == ":") {
        return EndLocked(TransportError(grpc::StatusCode::INVALID_ARGUMENT, "empty statistic name",
                                        kReasonInvalidRequest, absl::StrCat("names[", i, "]")));
      }
      // "GROUP:NAME" -> "NAME" (MI looks statistics up by bare name, spec 7.2).
      const size_t colon = name.find(':');
      selectors_.push_back(
          colon == std::string::npos || colon + 1 == name.size() ? name : name.substr(colon + 1));
    }
    if (selectors_.empty()) selectors_.push_back("all");
    for (const std::string& s : selectors_) command.args.push_back({"", s});
    if (ctx_.deadline() <= std::chrono::system_clock::now()) {
      return EndLocked(DeadlineExpiredStatus());
    }
    exchange_ = in_.management.dispatcher().Start(
        GrpcCallContext(ctx_), std::move(command), mi::Delivery::kTree, nullptr,
        [anchor = anchor_] { anchor->Run([](WatchCall& call) { call.AuthorizedLocked(); }); });
    if (exchange_->ready()) AuthorizedLocked();
  }

  void AuthorizedLocked() {
    if (exchange_ == nullptr || !exchange_->ready()) return;
    grpc::Status status = AuthorizationStatus(&ctx_, *exchange_);
    exchange_.reset();
    if (ending_) return;
    if (!status.ok()) return EndLocked(std::move(status));
    auto sampler = mi::StatSampler::Create(
        *in_.options.stats,
        {.selectors = selectors_, .interval = interval_, .history = std::chrono::seconds(0)});
    if (!sampler.ok()) {
      return EndLocked(
          TransportError(grpc::StatusCode::NOT_FOUND, "Statistics Not Found", "MI_404"));
    }
    sampler_ = std::move(*sampler);
    next_ = Clock::now();
    TickLocked();
  }

  // Takes and sends a sample (unless the previous one is still being written), then
  // arms the alarm for the next.
  void TickLocked() {
    ++seq_;
    if (!writing_) {
      const mi::StatSample sample = sampler_->Take();
      response_.Clear();
      *response_.mutable_time() = TimeUtil::NanosecondsToTimestamp(
          std::chrono::duration_cast<std::chrono::nanoseconds>(sample.time.time_since_epoch())
              .count());
      *response_.mutable_elapsed() = TimeUtil::NanosecondsToDuration(sample.elapsed.count());
      response_.set_seq(seq_);
      for (const mi::StatValue& v : sample.values) {
        if (request_.on_change() && sample.seq > 1 && !v.changed) continue;
        eventsv1::StatisticSample* out = response_.add_statistics();
        out->set_group(v.group);
        out->set_name(v.name);
        out->set_value(static_cast<int64_t>(v.value));
        out->set_kind(v.kind == mi::StatKind::kCounter ? eventsv1::StatisticSample::KIND_COUNTER
                                                       : eventsv1::StatisticSample::KIND_GAUGE);
        out->set_delta(v.delta);
        out->set_rate_per_second(v.rate_per_second);
      }
      if (response_.statistics_size() > 0 || sample.seq == 1) StartWriteLocked(response_);
    }
    // Fixed schedule; ticks that passed meanwhile are skipped (seq jumps).
    next_ += interval_;
    const Clock::time_point now = Clock::now();
    if (next_ <= now) {
      const auto behind = (now - next_) / interval_ + 1;
      seq_ += static_cast<uint64_t>(behind);
      next_ += behind * interval_;
    }
    SetAlarmLocked(next_);
  }

  void OnAlarmLocked(bool fired) {
    if (fired && !ending_) TickLocked();
  }

  void OnWriteDoneLocked(bool ok) {
    if (!ok) {
      EndLocked(Cancelled());
    } else if (ending_) {
      FinishEndedLocked();
    }
  }

  void OnDoneLocked() {
    if (exchange_ != nullptr) exchange_->Cancel();
    if (ctx_.IsCancelled()) EndLocked(Cancelled());
  }

  void ReleaseUnlocked() {
    std::lock_guard<std::mutex> calls(in_.calls_mu);
    in_.watches.erase(anchor_);
  }

  EventService::Internals& in_;
  eventsv1::WatchStatisticsRequest request_;

  // Guarded by anchor_->mu once the request arrived.
  std::unique_ptr<mi::Exchange> exchange_;
  std::vector<std::string> selectors_;
  std::chrono::milliseconds interval_ = kDefaultInterval;
  std::unique_ptr<mi::StatSampler> sampler_;
  Clock::time_point next_;
  uint64_t seq_ = 0;
  eventsv1::WatchStatisticsResponse response_;
};

std::string ValueText(const mi::EventValue& value) {
  if (const auto* text = std::get_if<std::string>(&value)) return *text;
  return absl::StrCat(std::get<int64_t>(value));
}

}  // namespace

EventService::EventService(ManagementService& management, EventServiceOptions options)
    : internals_(std::make_unique<Internals>(management, service_, options)) {}

EventService::~EventService() { Shutdown(); }

void EventService::Start() {
  if (internals_->options.consumer == nullptr || delivery_.joinable()) return;
  internals_->options.consumer->ResetLocalInterest();
  delivery_ = std::thread([this] { DeliveryLoop(); });
}

void EventService::Serve(grpc::ServerCompletionQueue* cq) {
  new SubscribeCall(*internals_, cq);
  new WatchCall(*internals_, cq);
}

void EventService::Shutdown() {
  stop_.store(true);
  if (delivery_.joinable()) delivery_.join();
  std::lock_guard<std::mutex> lock(internals_->calls_mu);
  internals_->stopping = true;
  for (const auto& anchor : internals_->subscribes) {
    anchor->Run([](SubscribeCall& call) { call.EndLocked(Stopping()); });
  }
  for (const auto& anchor : internals_->watches) {
    anchor->Run([](WatchCall& call) { call.EndLocked(Stopping()); });
  }
}

size_t EventService::open_streams() const {
  std::lock_guard<std::mutex> lock(internals_->calls_mu);
  return internals_->subscribes.size() + internals_->watches.size();
}

namespace {

// Sleeps on the consumer's wake descriptor for at most `timeout` (nanosecond precision,
// unlike EventConsumer::WaitForEvents), honouring its max_sleep().
void WaitForEvents(mi::EventConsumer& consumer, Clock::duration timeout) {
  if (!consumer.PrepareToSleep()) return;
  const Clock::duration limit = consumer.max_sleep();
  if (limit.count() >= 0) timeout = std::min(timeout, limit);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::max(timeout, Clock::duration::zero()));
  const timespec ts{static_cast<time_t>(ns.count() / 1000000000),
                    static_cast<long>(ns.count() % 1000000000)};
  pollfd pfd{consumer.wake_fd(), POLLIN, 0};
  ppoll(&pfd, 1, &ts, nullptr);
  consumer.ClearWake();
}

}  // namespace

void EventService::DeliveryLoop() {
  mi::EventConsumer& consumer = *internals_->options.consumer;
  const mi::EventRegistry& events = *internals_->options.events;
  std::shared_ptr<const Internals::Table> table = internals_->Snapshot();
  uint64_t generation = internals_->generation.load(std::memory_order_acquire);
  size_t streams = 0;  // distinct streams in `table`
  // Streams holding events for coalescing, earliest flush first (one entry per stream at
  // most: SubscribeCall::scheduled_).
  using Due = std::pair<Clock::time_point, std::shared_ptr<CallAnchor<SubscribeCall>>>;
  auto later = [](const Due& a, const Due& b) { return a.first > b.first; };
  std::priority_queue<Due, std::vector<Due>, decltype(later)> due(later);
  struct Popped {
    mi::EventId id;
    std::shared_ptr<const PreparedEvent> event;
  };
  std::vector<Popped> batch;
  mi::RaisedEvent raised;
  std::vector<std::pair<std::string_view, std::string_view>> params;
  while (!stop_.load(std::memory_order_relaxed)) {
    // Take what is queued (at most kDeliveryBatch), serializing each event once here,
    // whatever the number of streams (event_wire.h).
    batch.clear();
    while (batch.size() < static_cast<size_t>(kDeliveryBatch) && consumer.Pop(raised)) {
      const mi::Event* spec = events.Get(raised.id);
      if (spec == nullptr) continue;
      auto prepared = std::make_shared<PreparedEvent>();
      prepared->values.reserve(raised.values.size());
      for (const mi::EventValue& value : raised.values)
        prepared->values.push_back(ValueText(value));
      params.clear();
      for (size_t p = 0; p < prepared->values.size() && p < spec->params().size(); ++p) {
        params.emplace_back(spec->params()[p].name, prepared->values[p]);
      }
      prepared->body = EncodeEventBody(spec->name(), raised.raised_at_ns, params);
      batch.push_back({raised.id, std::move(prepared)});
    }
    const bool full = batch.size() == static_cast<size_t>(kDeliveryBatch);
    // A stream that registered after the last look must see the events raised since.
    const uint64_t now_generation = internals_->generation.load(std::memory_order_acquire);
    if (now_generation != generation) {
      generation = now_generation;
      table = internals_->Snapshot();
      std::set<const void*> distinct;
      for (const auto& entries : *table) {
        for (const Internals::Entry& entry : entries) distinct.insert(entry.anchor.get());
      }
      streams = distinct.size();
    }
    // Offer each run of events of one id to each stream of that id: one lock per stream
    // per run.
    const Clock::time_point offered_at = Clock::now();
    for (size_t first = 0; first < batch.size();) {
      const mi::EventId id = batch[first].id;
      size_t end = first;
      while (end < batch.size() && batch[end].id == id) ++end;
      if (id >= 0 && static_cast<size_t>(id) < table->size()) {
        for (const Internals::Entry& entry : (*table)[id]) {
          std::optional<Clock::time_point> flush_at;
          entry.anchor->Run([&](SubscribeCall& call) {
            for (size_t i = first; i < end; ++i) {
              const PreparedEvent& event = *batch[i].event;
              bool match = true;
              for (const auto& [index, value] : entry.filter) {
                if (index >= event.values.size() || event.values[index] != value) {
                  match = false;
                  break;
                }
              }
              if (!match) continue;
              if (auto at = call.OfferLocked(batch[i].event, offered_at)) flush_at = at;
            }
          });
          if (flush_at) due.emplace(*flush_at, entry.anchor);
        }
      }
      first = end;
    }
    // Streams whose coalescing time came.
    const Clock::time_point now = Clock::now();
    while (!due.empty() && due.top().first <= now) {
      due.top().second->Run([](SubscribeCall& call) { call.FlushLocked(); });
      due.pop();
    }
    if (full) continue;
    if (due.empty()) {
      WaitForEvents(consumer, kDeliveryPoll);
    } else if (due.size() >= streams) {
      // Every stream holds events until its flush time: new ones wait in the queue
      // meanwhile (no wake-up per event, for raisers no eventfd write), and leave in one
      // run at the earliest flush.
      std::this_thread::sleep_until(std::min(due.top().first, now + kDeliveryPoll));
    } else {
      WaitForEvents(consumer, std::min<Clock::duration>(due.top().first - now, kDeliveryPoll));
    }
  }
}

}  // namespace sipd::service
