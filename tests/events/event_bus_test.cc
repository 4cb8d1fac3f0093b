// ShmEventBackend and SipdEvents (sipd/core/event_bus.h): interest, raising across
// processes, the consumer's wake-up, subscriptions shared by processes, the figures.
#include "sipd/core/event_bus.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace sipd {
namespace {

using mi::EventValue;
using ::testing::ElementsAre;

bool Readable(int fd, int timeout_ms) {
  pollfd pfd{fd, POLLIN, 0};
  return poll(&pfd, 1, timeout_ms) == 1;
}

// Runs `body` in a child process and returns whether it exited with status 0.
template <typename Body>
bool InChild(Body body) {
  const pid_t pid = fork();
  if (pid == 0) _exit(body() ? 0 : 1);
  int status = 0;
  return pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

class EventBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shm = SharedMemory::Create(64 << 20);
    ASSERT_TRUE(shm.ok());
    shm_ = std::move(*shm);
    cells_ = static_cast<std::atomic<uint64_t>*>(shm_->Allocate(sizeof(cells_[0]) * 64));
    for (int i = 0; i < 64; ++i) new (&cells_[i]) std::atomic<uint64_t>(0);
    stats_ = std::make_unique<mi::StatsRegistry>(std::span(cells_, 64));
    auto events =
        SipdEvents::Create(*shm_, {.max_subscriptions = 4, .now = [this] { return now_.load(); }});
    ASSERT_TRUE(events.ok()) << events.status();
    events_ = std::move(*events);
    ASSERT_TRUE(events_->RegisterStatistics(*stats_).ok());
    test_event_ = *registry().Publish(
        {.name = "E_TEST", .module = "test", .params = {{"text", ""}, {"number", ""}}});
    auto consumer = backend().AddConsumer("test", 1 << 20);
    ASSERT_TRUE(consumer.ok());
    consumer_ = *consumer;
    auto parse = [](std::string_view a) -> absl::StatusOr<std::string> { return std::string(a); };
    udp_ = {"udp", parse, consumer_};
  }

  mi::EventRegistry& registry() { return events_->registry(); }
  ShmEventBackend& backend() { return events_->backend(); }
  uint64_t Stat(std::string_view name) { return *stats_->Value(name); }

  std::unique_ptr<SharedMemory> shm_;
  std::atomic<uint64_t>* cells_ = nullptr;
  // Unix seconds; a forked child sees the value of the moment it was forked.
  std::atomic<int64_t> now_{1000};
  std::unique_ptr<mi::StatsRegistry> stats_;
  std::unique_ptr<SipdEvents> events_;
  mi::EventId test_event_ = mi::kNoEvent;
  mi::EventConsumer* consumer_ = nullptr;
  mi::EventTransport udp_;
};

TEST_F(EventBusTest, CoreEventsComeFirstWithTheIdsOf111) {
  ASSERT_GE(registry().events().size(), 4u);
  EXPECT_EQ(registry().Get(0)->name(), "E_CORE_THRESHOLD");
  EXPECT_EQ(registry().Get(1)->name(), "E_CORE_SHM_THRESHOLD");
  EXPECT_EQ(registry().Get(2)->name(), "E_CORE_PKG_THRESHOLD");
  EXPECT_EQ(registry().Get(3)->name(), "E_SIPD_PROCESS_RESTARTED");
  EXPECT_EQ(test_event_, 4);
}

TEST_F(EventBusTest, RaisedOnlyWhileSomebodyListensAndDecodedAsRaised) {
  EXPECT_FALSE(registry().Wanted(test_event_));
  registry().Raise(test_event_, {"unheard", 1});
  EXPECT_EQ(Stat("queued_events"), 0u);
  ASSERT_TRUE(backend().Subscribe(test_event_, udp_, "127.0.0.1:9", 60).ok());
  EXPECT_TRUE(registry().Wanted(test_event_));
  EXPECT_FALSE(registry().Wanted(0));
  const std::string binary("a\0b\n\"c\"", 7);
  registry().Raise(test_event_, {binary, -42});
  registry().Raise(test_event_, {"", int64_t{1} << 40});
  EXPECT_EQ(Stat("queued_events"), 2u);
  mi::RaisedEvent event;
  ASSERT_TRUE(consumer_->Pop(event));
  EXPECT_EQ(event.id, test_event_);
  EXPECT_THAT(event.values, ElementsAre(EventValue(binary), EventValue(int64_t{-42})));
  ASSERT_TRUE(consumer_->Pop(event));
  EXPECT_THAT(event.values, ElementsAre(EventValue(std::string()), EventValue(int64_t{1} << 40)));
  EXPECT_FALSE(consumer_->Pop(event));
}

TEST_F(EventBusTest, ProcessRestartedCarriesIdTypeAndPid) {
  consumer_->AddInterest(3);
  events_->ProcessRestarted(7, "Event datagram", 4242);
  mi::RaisedEvent event;
  ASSERT_TRUE(consumer_->Pop(event));
  EXPECT_EQ(event.id, 3);
  EXPECT_THAT(event.values, ElementsAre(EventValue(int64_t{7}), EventValue("Event datagram"),
                                        EventValue(int64_t{4242})));
}

TEST_F(EventBusTest, AFullQueueDropsAndCounts) {
  auto small = backend().AddConsumer("small", 0);  // the minimum: 1024 cells
  ASSERT_TRUE(small.ok());
  (*small)->AddInterest(test_event_);
  const std::string big(5000, 'x');  // 45 cells
  int raised = 0;
  while ((*small)->dropped() == 0 && raised < 1000) {
    registry().Raise(test_event_, {big, raised++});
  }
  EXPECT_EQ((*small)->dropped(), 1u);
  EXPECT_EQ(Stat("dropped_events"), 1u);
  EXPECT_EQ(Stat("queued_events"), static_cast<uint64_t>(raised - 1));
  EXPECT_GE(raised, 20);
  (*small)->ResetLocalInterest();
  EXPECT_FALSE(registry().Wanted(test_event_));
}

TEST_F(EventBusTest, ARaiserInAnotherProcessWakesTheSleepingConsumerOnly) {
  consumer_->AddInterest(test_event_);
  // Not sleeping: raising writes no eventfd.
  ASSERT_TRUE(InChild([&] {
    registry().Raise(test_event_, {"busy", 1});
    return true;
  }));
  EXPECT_FALSE(Readable(consumer_->wake_fd(), 0));
  EXPECT_FALSE(consumer_->PrepareToSleep());  // a record is waiting: do not sleep
  mi::RaisedEvent event;
  ASSERT_TRUE(consumer_->Pop(event));
  // Sleeping: the next raise wakes it.
  ASSERT_TRUE(consumer_->PrepareToSleep());
  ASSERT_TRUE(InChild([&] {
    registry().Raise(test_event_, {"wake up", 2});
    return true;
  }));
  EXPECT_TRUE(Readable(consumer_->wake_fd(), 5000));
  consumer_->ClearWake();
  ASSERT_TRUE(consumer_->Pop(event));
  EXPECT_THAT(event.values, ElementsAre(EventValue("wake up"), EventValue(int64_t{2})));
  EXPECT_FALSE(Readable(consumer_->wake_fd(), 0));
  // WaitForEvents: returns at once when something is queued.
  registry().Raise(test_event_, {"queued", 3});
  EXPECT_TRUE(consumer_->WaitForEvents(std::chrono::milliseconds(-1)));
}

TEST_F(EventBusTest, SubscriptionsAreSharedByProcesses) {
  ASSERT_TRUE(
      InChild([&] { return backend().Subscribe(test_event_, udp_, "10.0.0.1:5", 30).ok(); }));
  std::vector<mi::Subscription> subs = backend().Subscriptions(std::nullopt);
  ASSERT_EQ(subs.size(), 1u);
  EXPECT_EQ(subs[0].socket(), "udp:10.0.0.1:5");
  EXPECT_EQ(subs[0].expire, 30u);
  EXPECT_EQ(subs[0].subscribed_at, 1000);
  EXPECT_TRUE(registry().Wanted(test_event_));
  EXPECT_EQ(Stat("subscriptions"), 1u);
  // The wake descriptor told the delivery process to look at the new subscription.
  EXPECT_TRUE(Readable(consumer_->wake_fd(), 0));
  consumer_->ClearWake();

  const uint64_t generation = backend().subscriptions_generation();
  now_.store(1010);
  ASSERT_TRUE(
      InChild([&] { return backend().Subscribe(test_event_, udp_, "10.0.0.1:5", 7).ok(); }));
  EXPECT_NE(backend().subscriptions_generation(), generation);
  subs = backend().Subscriptions(test_event_);
  ASSERT_EQ(subs.size(), 1u);
  EXPECT_EQ(subs[0].expire, 7u);
  EXPECT_EQ(subs[0].subscribed_at, 1010);

  ASSERT_TRUE(backend().Subscribe(test_event_, udp_, "10.0.0.2:5", std::nullopt).ok());
  subs = backend().Subscriptions(std::nullopt);
  ASSERT_EQ(subs.size(), 2u);
  EXPECT_EQ(subs[0].address, "10.0.0.2:5");  // newest first
  EXPECT_FALSE(subs[0].expire.has_value());  // never expires

  std::optional<int64_t> next;
  EXPECT_EQ(backend().ExpireSubscriptions(&next), 0u);
  EXPECT_EQ(next, 1018);
  now_.store(1018);
  EXPECT_EQ(backend().Subscriptions(std::nullopt).size(), 1u);  // expired ones are hidden
  EXPECT_EQ(backend().ExpireSubscriptions(&next), 1u);
  EXPECT_FALSE(next.has_value());
  EXPECT_EQ(Stat("subscriptions"), 1u);

  ASSERT_TRUE(backend().Subscribe(test_event_, udp_, "10.0.0.2:5", 0).ok());
  EXPECT_EQ(Stat("subscriptions"), 0u);
  EXPECT_FALSE(registry().Wanted(test_event_));
}

TEST_F(EventBusTest, SubscriptionLimitsAreErrors) {
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(backend().Subscribe(test_event_, udp_, absl::StrCat("h:", i), 60).ok());
  }
  EXPECT_EQ(backend().Subscribe(test_event_, udp_, "h:5", 60).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(backend().Subscribe(test_event_, udp_, "h:0", 60).ok());  // a refresh
  EXPECT_TRUE(backend().Subscribe(test_event_, udp_, "h:5", 0).ok());   // nothing to remove
  EXPECT_EQ(backend()
                .Subscribe(test_event_, udp_, std::string(mi::kMaxEventAddressLength + 1, 'a'), 60)
                .code(),
            absl::StatusCode::kInvalidArgument);
  mi::LocalEventBackend other;
  mi::EventConsumer* foreign = *other.AddConsumer("other", 1 << 20);
  mi::EventTransport stranger{"udp", udp_.parse, foreign};
  EXPECT_EQ(backend().Subscribe(test_event_, stranger, "h:9", 60).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend().Subscribe(mi::kNoEvent, udp_, "h:9", 60).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(EventBusTest, LocalInterestIsCountedAndReset) {
  consumer_->AddInterest(test_event_);
  consumer_->AddInterest(test_event_);
  consumer_->RemoveInterest(test_event_);
  EXPECT_TRUE(registry().Wanted(test_event_));
  consumer_->RemoveInterest(test_event_);
  EXPECT_FALSE(registry().Wanted(test_event_));
  consumer_->RemoveInterest(test_event_);  // below zero is ignored
  consumer_->AddInterest(test_event_);
  EXPECT_TRUE(registry().Wanted(test_event_));
  // A stored subscription keeps the event wanted after the local interest is reset.
  ASSERT_TRUE(backend().Subscribe(test_event_, udp_, "h:1", 60).ok());
  consumer_->ResetLocalInterest();
  EXPECT_TRUE(registry().Wanted(test_event_));
}

TEST_F(EventBusTest, DeliveryFiguresAreShared) {
  ASSERT_TRUE(InChild([&] {
    consumer_->CountDeliveries(5, 2);
    return true;
  }));
  EXPECT_EQ(Stat("delivered_events"), 5u);
  EXPECT_EQ(Stat("failed_deliveries"), 2u);
}

TEST(EventPayloadTest, DecoderRefusesWhatTheEncoderDidNotWrite) {
  std::string payload;
  const std::vector<mi::EventArg> args = {"text", 12, ""};
  EncodeEventValues(args, payload);
  std::vector<EventValue> values;
  ASSERT_TRUE(DecodeEventValues(payload, values));
  EXPECT_THAT(values,
              ElementsAre(EventValue("text"), EventValue(int64_t{12}), EventValue(std::string())));
  for (size_t cut = 1; cut < payload.size(); ++cut) {
    std::vector<EventValue> partial;
    const bool ok = DecodeEventValues(std::string_view(payload).substr(0, cut), partial);
    // Only cuts at value boundaries decode.
    EXPECT_EQ(ok, cut == 9 || cut == 18) << cut;
  }
  EXPECT_FALSE(DecodeEventValues("x", values));
  EXPECT_FALSE(DecodeEventValues(std::string("s\xff\xff\xff\x7f", 5), values));
  EXPECT_TRUE(DecodeEventValues("", values));
  EXPECT_TRUE(values.empty());
}

}  // namespace
}  // namespace sipd
