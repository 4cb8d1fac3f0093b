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

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "registry/authorization.h"
#include "registry/stat_sampler.h"
#include "service/call_anchor.h"
#include "service/call_support.h"
#include "service/cq_tag.h"
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

std::chrono::system_clock::time_point ToSystem(Clock::time_point when) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(when - Clock::now());
}

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
  const mi::Event* spec = nullptr;
  int64_t raised_at_ns = 0;
  std::vector<std::string> values;  // as text, declaration order
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

class SubscribeCall final {
 public:
  SubscribeCall(EventService::Internals& in, grpc::ServerCompletionQueue* cq)
      : in_(in),
        cq_(cq),
        writer_(&ctx_),
        anchor_(std::make_shared<CallAnchor<SubscribeCall>>(this)) {
    ctx_.AsyncNotifyWhenDone(&done_tag_);
    in_.async.RequestSubscribe(&ctx_, &request_, &writer_, cq_, cq_, &request_tag_);
  }

  // The delivery thread offers an event of one of this stream's ids that passed its
  // filter.
  void OfferLocked(const std::shared_ptr<const PreparedEvent>& event) {
    if (!active_ || ending_) return;
    ++seq_;
    if (buffer_.size() >= in_.options.subscriber_buffer) {
      ++pending_dropped_;
      ++total_dropped_;
      in_.options.consumer->CountDeliveries(0, 1);
      return;
    }
    buffer_.push_back({event, seq_});
    PumpLocked();
  }

  void EndLocked(grpc::Status status) {
    if (ending_) return;
    ending_ = true;
    buffer_.clear();
    if (!writing_)
      FinishLocked(std::move(status));
    else
      end_status_ = std::move(status);
  }

 private:
  void OnRequest(bool ok) {
    if (!ok) {  // the server shuts down; no done tag comes for a call never started
      delete this;
      return;
    }
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
    if (in_.options.events == nullptr || in_.options.consumer == nullptr) {
      return EndLocked(TransportError(grpc::StatusCode::UNAVAILABLE,
                                      "this sipd has no event interface", "NO_EVENT_INTERFACE"));
    }
    if (ctx_.deadline() <= std::chrono::system_clock::now()) {
      return EndLocked(DeadlineExpiredStatus());
    }
    exchange_ = in_.management.dispatcher().Start(
        GrpcCallContext(ctx_), mi::Request{"events_list", {}}, mi::Delivery::kTree, nullptr,
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
    writing_ = true;  // initial metadata is a write of its own
    ++refs_;
    writer_.SendInitialMetadata(&write_tag_);
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

  void PumpLocked() {
    if (writing_ || ending_ || (buffer_.empty() && pending_dropped_ == 0)) return;
    response_.Clear();
    in_flight_ = std::min(buffer_.size(), kMaxEventsPerMessage);
    for (size_t i = 0; i < in_flight_; ++i) {
      const Buffered& b = buffer_.front();
      eventsv1::Event* out = response_.add_events();
      out->set_name(b.event->spec->name());
      *out->mutable_time() = TimeUtil::NanosecondsToTimestamp(b.event->raised_at_ns);
      out->set_seq(b.seq);
      const auto& params = b.event->spec->params();
      auto& map = *out->mutable_params();
      for (size_t p = 0; p < b.event->values.size() && p < params.size(); ++p) {
        map[params[p].name] = b.event->values[p];
      }
      buffer_.pop_front();
    }
    response_.set_dropped(pending_dropped_);
    response_.set_total_dropped(total_dropped_);
    pending_dropped_ = 0;
    writing_ = true;
    ++refs_;
    writer_.Write(response_, &write_tag_);
  }

  void FinishLocked(grpc::Status status) {
    if (finishing_) return;
    finishing_ = true;
    ++refs_;
    writer_.Finish(WithErrorDetails(status), &finish_tag_);
  }

  void OnWriteDone(bool ok) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    writing_ = false;
    if (in_flight_ > 0) {
      in_.options.consumer->CountDeliveries(ok ? in_flight_ : 0, ok ? 0 : in_flight_);
      in_flight_ = 0;
    }
    if (!ok) {
      EndLocked(Cancelled());
    } else if (ending_) {
      FinishLocked(std::move(end_status_));
    } else {
      PumpLocked();
    }
    Unref(lock);
  }

  void OnFinishDone(bool) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    Unref(lock);
  }

  void OnDone(bool) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    if (exchange_ != nullptr) exchange_->Cancel();
    if (ctx_.IsCancelled()) EndLocked(Cancelled());
    Unref(lock);
  }

  void Unref(std::unique_lock<std::mutex>& lock) {
    if (--refs_ > 0) return;
    anchor_->call = nullptr;
    lock.unlock();
    // Nobody reaches this call any more (the delivery thread finds no call behind the
    // anchor): leave the table and drop the interest.
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
    delete this;
  }

  struct Buffered {
    std::shared_ptr<const PreparedEvent> event;
    uint64_t seq = 0;
  };

  EventService::Internals& in_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  eventsv1::SubscribeRequest request_;
  mi::Role role_ = mi::Role::kUnset;  // the caller's, from the authorization exchange
  grpc::ServerAsyncWriter<eventsv1::SubscribeResponse> writer_;
  MemberTag<SubscribeCall, &SubscribeCall::OnRequest> request_tag_{this};
  MemberTag<SubscribeCall, &SubscribeCall::OnWriteDone> write_tag_{this};
  MemberTag<SubscribeCall, &SubscribeCall::OnFinishDone> finish_tag_{this};
  MemberTag<SubscribeCall, &SubscribeCall::OnDone> done_tag_{this};
  const std::shared_ptr<CallAnchor<SubscribeCall>> anchor_;

  // Guarded by anchor_->mu once the request arrived.
  int refs_ = 1;  // the done tag, and each operation started
  std::unique_ptr<mi::Exchange> exchange_;
  std::vector<std::pair<mi::EventId, std::vector<std::pair<size_t, std::string>>>> filters_;
  bool registered_ = false;
  bool active_ = false;
  bool writing_ = false;
  bool ending_ = false;
  bool finishing_ = false;
  grpc::Status end_status_;
  std::deque<Buffered> buffer_;
  size_t in_flight_ = 0;
  uint64_t seq_ = 0;
  uint64_t pending_dropped_ = 0;
  uint64_t total_dropped_ = 0;
  eventsv1::SubscribeResponse response_;
};

class WatchCall final {
 public:
  WatchCall(EventService::Internals& in, grpc::ServerCompletionQueue* cq)
      : in_(in), cq_(cq), writer_(&ctx_), anchor_(std::make_shared<CallAnchor<WatchCall>>(this)) {
    ctx_.AsyncNotifyWhenDone(&done_tag_);
    in_.async.RequestWatchStatistics(&ctx_, &request_, &writer_, cq_, cq_, &request_tag_);
  }

  void EndLocked(grpc::Status status) {
    if (ending_) return;
    ending_ = true;
    if (alarm_ != nullptr) alarm_->Cancel();
    if (!writing_)
      FinishLocked(std::move(status));
    else
      end_status_ = std::move(status);
  }

 private:
  void OnRequest(bool ok) {
    if (!ok) {
      delete this;
      return;
    }
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
    mi::Request command{"get_statistics", {}};
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
      if (response_.statistics_size() > 0 || sample.seq == 1) {
        writing_ = true;
        ++refs_;
        writer_.Write(response_, &write_tag_);
      }
    }
    // Fixed schedule; ticks that passed meanwhile are skipped (seq jumps).
    next_ += interval_;
    const Clock::time_point now = Clock::now();
    if (next_ <= now) {
      const auto behind = (now - next_) / interval_ + 1;
      seq_ += static_cast<uint64_t>(behind);
      next_ += behind * interval_;
    }
    if (alarm_ == nullptr) alarm_ = std::make_unique<grpc::Alarm>();
    ++refs_;
    alarm_->Set(cq_, ToSystem(next_), &alarm_tag_);
  }

  void OnAlarm(bool fired) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    if (fired && !ending_) TickLocked();
    Unref(lock);
  }

  void FinishLocked(grpc::Status status) {
    if (finishing_) return;
    finishing_ = true;
    ++refs_;
    writer_.Finish(WithErrorDetails(status), &finish_tag_);
  }

  void OnWriteDone(bool ok) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    writing_ = false;
    if (!ok) {
      EndLocked(Cancelled());
    } else if (ending_) {
      FinishLocked(std::move(end_status_));
    }
    Unref(lock);
  }

  void OnFinishDone(bool) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    Unref(lock);
  }

  void OnDone(bool) {
    std::unique_lock<std::mutex> lock(anchor_->mu);
    if (exchange_ != nullptr) exchange_->Cancel();
    if (ctx_.IsCancelled()) EndLocked(Cancelled());
    Unref(lock);
  }

  void Unref(std::unique_lock<std::mutex>& lock) {
    if (--refs_ > 0) return;
    anchor_->call = nullptr;
    lock.unlock();
    {
      std::lock_guard<std::mutex> calls(in_.calls_mu);
      in_.watches.erase(anchor_);
    }
    delete this;
  }

  EventService::Internals& in_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  eventsv1::WatchStatisticsRequest request_;
  grpc::ServerAsyncWriter<eventsv1::WatchStatisticsResponse> writer_;
  MemberTag<WatchCall, &WatchCall::OnRequest> request_tag_{this};
  MemberTag<WatchCall, &WatchCall::OnWriteDone> write_tag_{this};
  MemberTag<WatchCall, &WatchCall::OnFinishDone> finish_tag_{this};
  MemberTag<WatchCall, &WatchCall::OnDone> done_tag_{this};
  MemberTag<WatchCall, &WatchCall::OnAlarm> alarm_tag_{this};
  const std::shared_ptr<CallAnchor<WatchCall>> anchor_;

  // Guarded by anchor_->mu once the request arrived.
  int refs_ = 1;
  std::unique_ptr<mi::Exchange> exchange_;
  std::vector<std::string> selectors_;
  std::chrono::milliseconds interval_ = kDefaultInterval;
  std::unique_ptr<mi::StatSampler> sampler_;
  std::unique_ptr<grpc::Alarm> alarm_;
  Clock::time_point next_;
  uint64_t seq_ = 0;
  bool writing_ = false;
  bool ending_ = false;
  bool finishing_ = false;
  grpc::Status end_status_;
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

void EventService::DeliveryLoop() {
  mi::EventConsumer& consumer = *internals_->options.consumer;
  const mi::EventRegistry& events = *internals_->options.events;
  std::shared_ptr<const Internals::Table> table = internals_->Snapshot();
  uint64_t generation = internals_->generation.load(std::memory_order_acquire);
  mi::RaisedEvent raised;
  while (!stop_.load(std::memory_order_relaxed)) {
    int taken = 0;
    while (taken < kDeliveryBatch && consumer.Pop(raised)) {
      ++taken;
      // A stream that registered after the last look must see the events raised since.
      const uint64_t now = internals_->generation.load(std::memory_order_acquire);
      if (now != generation) {
        generation = now;
        table = internals_->Snapshot();
      }
      if (raised.id < 0 || static_cast<size_t>(raised.id) >= table->size()) continue;
      const auto& entries = (*table)[raised.id];
      if (entries.empty()) continue;
      auto prepared = std::make_shared<PreparedEvent>();
      prepared->spec = events.Get(raised.id);
      if (prepared->spec == nullptr) continue;
      prepared->raised_at_ns = raised.raised_at_ns;
      prepared->values.reserve(raised.values.size());
      for (const mi::EventValue& value : raised.values)
        prepared->values.push_back(ValueText(value));
      std::shared_ptr<const PreparedEvent> shared = std::move(prepared);
      for (const Internals::Entry& entry : entries) {
        bool match = true;
        for (const auto& [index, value] : entry.filter) {
          if (index >= shared->values.size() || shared->values[index] != value) {
            match = false;
            break;
          }
        }
        if (match) entry.anchor->Run([&](SubscribeCall& call) { call.OfferLocked(shared); });
      }
    }
    if (taken < kDeliveryBatch) consumer.WaitForEvents(kDeliveryPoll);
  }
}

}  // namespace sipd::service
