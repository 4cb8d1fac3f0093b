// sipd.events.v1.EventService (proto/sipd/events/v1/events.proto): Subscribe streams the
// events of the event interface (registry/events.h), WatchStatistics streams samples of
// the statistics (registry/stat_sampler.h). Served by the MI gRPC process beside
// Management and the typed services, on the same completion queues.
//
// Authorization: a stream opens only after an MI command ran for it through the
// dispatcher with the call's GrpcCallContext, so the dispatcher's authorize hook (roles)
// and figures apply as to any call: `events_list` for Subscribe, `get_statistics NAMES`
// for WatchStatistics (whose 404 is also WatchStatistics' NOT_FOUND). Both are read
// commands: role read suffices.
//
// Subscribe. The MI gRPC process has one event consumer (mi_grpc's, added in the
// attendant: EventConsumer in registry/events.h); each stream adds local interest in its
// events, so SIP workers queue an event for this process only while a stream wants it,
// once whatever the number of streams. One delivery thread pops the consumer's queue in
// batches, serializes each event ONCE (name, time, params as Event wire bytes:
// service/event_wire.h) and offers the batch to each stream of its id under one lock
// (filter checked there). Subscribe is a raw method (grpc::ByteBuffer): a stream's
// message is built by concatenating, per event, the tag and length, the shared bytes and
// the stream's own `seq` field, then `dropped` / `total_dropped`; the .proto is
// unchanged and clients cannot tell. Each stream has a bounded buffer of events
// (`subscriber_buffer`): an event that does not fit is dropped for that stream only
// (counted in SubscribeResponse.dropped, evi:failed_deliveries) — the delivery thread
// never waits for a client. One write is in flight per stream; events arriving meanwhile
// leave together in the next message (at most kMaxEventsPerMessage).
//
// Coalescing (`event_coalesce`): a busy stream (its last message carried >= 2 events)
// that wrote less than that ago holds new events until that long after its last write;
// an idle stream, or one whose last message carried a single event, sends at once (so a
// steady rate below 2 per window is never held behind it: holding at 1,000/s with a 1 ms
// window would add ~0.6 ms to every event, measured). The delivery
// thread keeps the flush times in a heap, sleeps until the earliest (nanosecond ppoll on
// the consumer's eventfd), and when every stream is holding does not even wake for new
// events: they gather in the queue and leave in one run at the flush. Measured (bench/
// RESULTS.md, "Events over gRPC"): with 100 streams at 5,000-7,500 REGISTERs/s, 20-30
// events per message; MI gRPC CPU per REGISTER 57 us before this design, ~40 us after,
// most of the rest being HTTP/2 framing and loopback TCP per event and stream. A stream that never
// reads holds its buffer and one message, no thread.
//
// WatchStatistics. Each stream has its own StatSampler (no history) and a grpc::Alarm on
// its queue: every interval (fixed schedule from the first sample) it takes a sample and
// writes it, unless the previous write is still in flight (then the tick is skipped:
// seq jumps). on_change leaves out unchanged values and skips empty samples.
//
// Neither stream is cut for not reading (bounded memory, see above); they end when the
// client cancels or its deadline passes, or with UNAVAILABLE when the server stops
// (Shutdown()).
//
// Thread-safety: calls run on the queue threads, the dispatcher's completion thread (an
// authorizing command that was not answered at once) and the delivery thread; each call
// guards its state with its anchor's lock (service/call_anchor.h). Lock order: the
// service's calls lock, then a call's anchor lock; the delivery thread takes only
// anchor locks (it reads the subscriber table through a snapshot).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "registry/events.h"
#include "registry/statistics.h"
#include "service/management_service.h"
#include "sipd/events/v1/events.grpc.pb.h"

namespace sipd::service {

namespace eventsv1 = ::sipd::events::v1;

struct EventServiceOptions {
  // The event interface and mi_grpc's consumer of it; nullptr: Subscribe answers
  // UNAVAILABLE ("no event interface").
  mi::EventRegistry* events = nullptr;
  mi::EventConsumer* consumer = nullptr;
  // The statistics; nullptr: WatchStatistics answers UNAVAILABLE.
  const mi::StatsRegistry* stats = nullptr;
  // Events a Subscribe stream holds for its client at most (beyond: dropped).
  size_t subscriber_buffer = 1024;
  // A busy stream (last message >= 2 events) that wrote less than this ago holds new
  // events until this much time passed since that write, so that under load a message
  // carries many events; an idle or slow stream sends at once (see Coalescing above).
  // Zero: every event leaves as soon as no write is in flight.
  std::chrono::microseconds event_coalesce{1000};
};

// Events in one SubscribeResponse at most.
inline constexpr size_t kMaxEventsPerMessage = 256;

class EventService {
 public:
  // Subscribe is a raw method: responses are built from bytes (event_wire.h).
  using AsyncService = eventsv1::EventService::WithRawMethod_Subscribe<
      eventsv1::EventService::WithAsyncMethod_WatchStatistics<eventsv1::EventService::Service>>;

  // `management` gives the dispatcher and the service options; it must outlive this.
  EventService(ManagementService& management, EventServiceOptions options);
  ~EventService();
  EventService(const EventService&) = delete;
  EventService& operator=(const EventService&) = delete;

  grpc::Service* service() { return &service_; }

  // Drops the local interest a previous MI gRPC process left in the consumer and starts
  // the delivery thread. Once, before Serve().
  void Start();
  // Posts the pending calls on `cq` (after the server started); once per queue.
  void Serve(grpc::ServerCompletionQueue* cq);
  // Stops the delivery thread and ends every open stream with UNAVAILABLE. Before the
  // completion queues shut down. Idempotent.
  void Shutdown();

  // Streams open now (both kinds), for tests and figures.
  size_t open_streams() const;

  // --- for the calls (event_service.cc) ---
  struct Internals;
  Internals& internals() { return *internals_; }

 private:
  void DeliveryLoop();

  AsyncService service_;
  std::unique_ptr<Internals> internals_;
  std::thread delivery_;
  std::atomic<bool> stop_{false};
};

}  // namespace sipd::service
