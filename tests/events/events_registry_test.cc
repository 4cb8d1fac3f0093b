// The event registry and the three 1.11 commands (registry/events.h), run through the
// Dispatcher against a LocalEventBackend with a fake clock: replies byte for byte as
// FIFO prints them, 1.11's codes and texts, re-subscription, expiry, expire 0, flushes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "registry/dispatcher.h"
#include "registry/events.h"
#include "registry/text_format.h"

namespace sipd::mi {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Writes what a FIFO writes: status, node lines, an empty line per flush and at the end.
class FifoLikeWriter : public ReplyWriter {
 public:
  void WriteStatus(const Reply& reply) override {
    AppendStatusLine(out, reply.code, reply.text_reason());
  }
  void WriteNode(const Node& node, int depth) override {
    AppendNodeLine(out, node, depth, kDefaultIndent);
  }
  void EndFlush() override {
    out += "\n";
    ++flushes;
  }
  void EndReply() override { out += "\n"; }
  std::string out;
  int flushes = 0;
};

class EventCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    events_.SetBackend(&backend_);
    ASSERT_TRUE(events_.Publish({.name = "E_CORE_THRESHOLD", .module = "core"}).ok());
    ASSERT_TRUE(events_.Publish({.name = "E_TEST", .module = "test", .params = {{"a", ""}}}).ok());
    auto consumer = backend_.AddConsumer("test", 1 << 20);
    ASSERT_TRUE(consumer.ok());
    consumer_ = *consumer;
    // "udp": HOST:PORT with digits; "unix": anything not empty.
    ASSERT_TRUE(events_
                    .AddTransport({"udp",
                                   [](std::string_view a) -> absl::StatusOr<std::string> {
                                     const size_t colon = a.find(':');
                                     if (colon == std::string_view::npos || colon == 0 ||
                                         a.substr(colon + 1).empty()) {
                                       return absl::InvalidArgumentError("bad");
                                     }
                                     return std::string(a);
                                   },
                                   consumer_})
                    .ok());
    ASSERT_TRUE(events_
                    .AddTransport({"unix",
                                   [](std::string_view a) -> absl::StatusOr<std::string> {
                                     if (a.empty()) return absl::InvalidArgumentError("bad");
                                     return std::string(a);
                                   },
                                   consumer_})
                    .ok());
    for (auto& spec : EventCommandSpecs(events_)) ASSERT_TRUE(registry_.Register(spec).ok());
    dispatcher_ = std::make_unique<Dispatcher>(registry_);
  }

  // The reply as FIFO would print it.
  std::string Fifo(const std::string& command, const std::vector<std::string>& args = {},
                   int* flushes = nullptr) {
    Request request{.command = command};
    for (const auto& a : args) request.args.push_back({"", a});
    FifoLikeWriter writer;
    CallContext context;
    auto exchange = dispatcher_->Start(context, std::move(request), Delivery::kPull);
    EXPECT_TRUE(exchange->ready());
    if (exchange->outcome() != Outcome::kReply) return "outcome " + exchange->reply().reason;
    while (!exchange->WriteNext(writer)) {
    }
    if (flushes != nullptr) *flushes = writer.flushes;
    return writer.out;
  }

  int64_t now_ = 1000;
  LocalEventBackend backend_{[this] { return now_; }};
  EventRegistry events_;
  EventConsumer* consumer_ = nullptr;
  Registry registry_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST(EventRegistryTest, PublishAssignsIdsInOrderAndChecksDeclarations) {
  EventRegistry events;
  EXPECT_EQ(*events.Publish({.name = "E_A"}), 0);
  EXPECT_EQ(*events.Publish({.name = "E_B", .params = {{"x", ""}, {"y", ""}}}), 1);
  EXPECT_EQ(events.Publish({.name = "E_A"}).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(events.Publish({.name = ""}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events.Publish({.name = "E C"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events.Publish({.name = std::string(65, 'E')}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events.Publish({.name = "E_D", .params = {{"x", ""}, {"x", ""}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_NE(events.Find("E_B"), nullptr);
  EXPECT_EQ(events.Find("E_B")->params().size(), 2u);
  EXPECT_EQ(events.Find("e_b"), nullptr);
  EXPECT_EQ(events.Get(1)->name(), "E_B");
  EXPECT_EQ(events.Get(2), nullptr);
  EXPECT_EQ(events.Get(kNoEvent), nullptr);
  for (size_t i = events.events().size(); i < kMaxEvents; ++i) {
    ASSERT_TRUE(events.Publish({.name = absl::StrCat("E_", i)}).ok());
  }
  EXPECT_EQ(events.Publish({.name = "E_ONE_TOO_MANY"}).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(EventRegistryTest, RaiseWithoutBackendOrListenerDoesNothing) {
  EventRegistry events;
  const EventId id = *events.Publish({.name = "E_A", .params = {{"x", ""}}});
  EXPECT_FALSE(events.Wanted(id));
  events.Raise(id, {"nobody"});  // no backend: a no-op
  LocalEventBackend backend;
  events.SetBackend(&backend);
  EventConsumer* consumer = *backend.AddConsumer("c", 1 << 20);
  events.Raise(id, {"nobody listens"});
  consumer->AddInterest(id);
  EXPECT_TRUE(events.Wanted(id));
  events.Raise(id, {"listened"});
  events.Raise(kNoEvent, {"ignored"});
  RaisedEvent event;
  ASSERT_TRUE(consumer->Pop(event));
  EXPECT_EQ(event.id, id);
  EXPECT_THAT(event.values, ElementsAre(EventValue(std::string("listened"))));
  EXPECT_GT(event.raised_at_ns, 0);
  EXPECT_FALSE(consumer->Pop(event));
  consumer->RemoveInterest(id);
  consumer->RemoveInterest(id);  // more removals than additions are ignored
  EXPECT_FALSE(events.Wanted(id));
}

TEST(EventRegistryTest, TransportsNeedProtocolParserConsumerAndAreUnique) {
  EventRegistry events;
  LocalEventBackend backend;
  EventConsumer* consumer = *backend.AddConsumer("c", 1 << 20);
  auto parse = [](std::string_view a) -> absl::StatusOr<std::string> { return std::string(a); };
  EXPECT_TRUE(events.AddTransport({"udp", parse, consumer}).ok());
  EXPECT_EQ(events.AddTransport({"udp", parse, consumer}).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(events.AddTransport({"", parse, consumer}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events.AddTransport({"a:b", parse, consumer}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events.AddTransport({"tcp", nullptr, consumer}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(events.AddTransport({"tcp", parse, nullptr}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(events.FindTransport("udp"), nullptr);
  EXPECT_EQ(events.FindTransport("tcp"), nullptr);
}

TEST_F(EventCommandsTest, EventsListAsFifoPrintsIt) {
  EXPECT_EQ(Fifo("events_list"), "200 OK\nEvent:: E_CORE_THRESHOLD id=0\nEvent:: E_TEST id=1\n\n");
  // No input: arguments are ignored (MI_NO_INPUT_FLAG).
  EXPECT_EQ(Fifo("events_list", {"x"}), Fifo("events_list"));
}

TEST_F(EventCommandsTest, EventsListFlushesAfterEveryFiftyEvents) {
  for (int i = 2; i < 100; ++i) {
    ASSERT_TRUE(events_.Publish({.name = absl::StrCat("E_", i)}).ok());
  }
  int flushes = 0;
  const std::string out = Fifo("events_list", {}, &flushes);
  // 100 events: a flush after the 50th and the 100th (1.11 flushes at (i + 1) % 50 == 0),
  // each an empty line on FIFO, then the final empty line.
  EXPECT_EQ(flushes, 2);
  EXPECT_THAT(out, HasSubstr("Event:: E_49 id=49\n\nEvent:: E_50 id=50\n"));
  EXPECT_TRUE(out.ends_with("Event:: E_99 id=99\n\n\n")) << out;
}

TEST_F(EventCommandsTest, SubscribeTextsAndCodesAs111) {
  EXPECT_EQ(Fifo("event_subscribe", {"E_TEST", "udp:127.0.0.1:8888"}), "200 OK\n\n");
  // Missing or empty values: 400 MI_MISSING_PARM.
  EXPECT_EQ(Fifo("event_subscribe", {"E_TEST"}), "400 Too few or too many arguments\n\n");
  EXPECT_EQ(Fifo("event_subscribe"), "400 Too few or too many arguments\n\n");
  EXPECT_EQ(Fifo("event_subscribe", {"", "udp:127.0.0.1:8888"}),
            "400 Too few or too many arguments\n\n");
  EXPECT_EQ(Fifo("event_subscribe", {"E_TEST", ""}), "400 Too few or too many arguments\n\n");
  // Everything else wrong: 400 Bad parameter.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"E_NOPE", "udp:127.0.0.1:8888"},
           {"e_test", "udp:127.0.0.1:8888"},
           {"E_TEST", "tcp:127.0.0.1:8888"},
           {"E_TEST", "udp"},
           {"E_TEST", "udp:"},
           {"E_TEST", "udp:127.0.0.1"},
           {"E_TEST", "unix:"},
           {"E_TEST", "udp:127.0.0.1:8888", "soon"},
           {"E_TEST", "udp:127.0.0.1:8888", ""},
           {"E_TEST", "udp:127.0.0.1:8888", "-1"},
           {"E_TEST", "udp:127.0.0.1:8888", "4294967296"},
           {"E_TEST", std::string("unix:/") + std::string(400, 'x')},
       }) {
    EXPECT_EQ(Fifo("event_subscribe", args), "400 Bad parameter\n\n") << args[1];
  }
  EXPECT_EQ(backend_.Subscriptions(std::nullopt).size(), 1u);
}

TEST_F(EventCommandsTest, SubscribersListAsFifoPrintsIt) {
  EXPECT_EQ(Fifo("subscribers_list"), "200 OK\n\n");
  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "udp:127.0.0.1:8888"}), "200 OK\n\n");
  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/listener", "60"}), "200 OK\n\n");
  ASSERT_EQ(Fifo("event_subscribe", {"E_CORE_THRESHOLD", "udp:10.0.0.1:9"}), "200 OK\n\n");
  // Events in publication order, newest subscriber first (1.11 prepends).
  EXPECT_EQ(Fifo("subscribers_list"),
            "200 OK\n"
            "Event:: E_CORE_THRESHOLD id=0\n"
            "\tSubscriber::  socket=udp:10.0.0.1:9 expire=3600\n"
            "Event:: E_TEST id=1\n"
            "\tSubscriber::  socket=unix:/tmp/listener expire=60\n"
            "\tSubscriber::  socket=udp:127.0.0.1:8888 expire=3600\n"
            "\n");
  EXPECT_EQ(Fifo("subscribers_list", {"E_CORE_THRESHOLD"}),
            "200 OK\n"
            "Event:: E_CORE_THRESHOLD id=0\n"
            "\tSubscriber::  socket=udp:10.0.0.1:9 expire=3600\n"
            "\n");
  EXPECT_EQ(Fifo("subscribers_list", {"E_TEST", "udp:127.0.0.1:8888"}),
            "200 OK\n"
            "Event:: E_TEST id=1\n"
            "\tSubscriber::  socket=udp:127.0.0.1:8888 expire=3600\n"
            "\n");
  EXPECT_EQ(Fifo("subscribers_list", {"E_NOPE"}), "404 Event not published\n\n");
  EXPECT_EQ(Fifo("subscribers_list", {"E_TEST", "udp:127.0.0.1:1"}),
            "404 Subscriber does not exist\n\n");
  EXPECT_EQ(Fifo("subscribers_list", {"E_TEST", "tcp:127.0.0.1:1"}),
            "404 Subscriber does not exist\n\n");
  EXPECT_EQ(Fifo("subscribers_list", {"E_TEST", "udp:127.0.0.1:8888", "x"}),
            "400 Too few or too many arguments\n\n");
  // An event without subscribers: 200 and nothing (1.11 prints events with subscribers).
  ASSERT_TRUE(events_.Publish({.name = "E_QUIET"}).ok());
  EXPECT_EQ(Fifo("subscribers_list", {"E_QUIET"}), "200 OK\n\n");
}

TEST_F(EventCommandsTest, ResubscribingRefreshesTheExpiryAndZeroUnsubscribes) {
  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "udp:127.0.0.1:8888", "10"}), "200 OK\n\n");
  now_ += 8;
  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "udp:127.0.0.1:8888", "5"}), "200 OK\n\n");
  std::vector<Subscription> subs = backend_.Subscriptions(std::nullopt);
  ASSERT_EQ(subs.size(), 1u);
  EXPECT_EQ(subs[0].expire, 5u);
  EXPECT_EQ(subs[0].subscribed_at, 1008);
  // 1.11: expired once subscription_time + expire < now.
  now_ = 1013;
  EXPECT_EQ(backend_.Subscriptions(std::nullopt).size(), 1u);
  EXPECT_TRUE(events_.Wanted(1));
  now_ = 1014;
  EXPECT_EQ(Fifo("subscribers_list"), "200 OK\n\n");
  std::optional<int64_t> next;
  EXPECT_EQ(backend_.ExpireSubscriptions(&next), 1u);
  EXPECT_FALSE(next.has_value());
  EXPECT_FALSE(events_.Wanted(1));

  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/a"}), "200 OK\n\n");
  EXPECT_TRUE(events_.Wanted(1));
  const uint64_t generation = backend_.subscriptions_generation();
  EXPECT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/a", "0"}), "200 OK\n\n");
  EXPECT_NE(backend_.subscriptions_generation(), generation);
  EXPECT_EQ(Fifo("subscribers_list"), "200 OK\n\n");
  EXPECT_FALSE(events_.Wanted(1));
  // Unsubscribing what is not subscribed is fine too (1.11 answers 200 as well).
  EXPECT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/b", "0"}), "200 OK\n\n");
}

TEST_F(EventCommandsTest, NextExpiryIsTheFirstSecondAfterTheEarliestSubscription) {
  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/a", "30"}), "200 OK\n\n");
  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/b", "20"}), "200 OK\n\n");
  std::optional<int64_t> next;
  EXPECT_EQ(backend_.ExpireSubscriptions(&next), 0u);
  EXPECT_EQ(next, 1021);
}

TEST_F(EventCommandsTest, FullTableIsAnInternalError) {
  backend_.set_max_subscriptions(1);
  ASSERT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/a"}), "200 OK\n\n");
  // 1.11 returns NULL on an internal error: the transport's "failed" form.
  Request request{.command = "event_subscribe", .args = {{"", "E_TEST"}, {"", "unix:/tmp/b"}}};
  DispatchResult result = dispatcher_->Run(std::move(request));
  EXPECT_EQ(result.outcome, Outcome::kFailed);
  // Refreshing the existing one still works.
  EXPECT_EQ(Fifo("event_subscribe", {"E_TEST", "unix:/tmp/a"}), "200 OK\n\n");
}

TEST_F(EventCommandsTest, SubscribersListFlushesAfterEveryFiftySubscribers) {
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(Fifo("event_subscribe",
                   {i < 30 ? "E_CORE_THRESHOLD" : "E_TEST", absl::StrCat("unix:/tmp/s", i)}),
              "200 OK\n\n");
  }
  int flushes = 0;
  const std::string out = Fifo("subscribers_list", {}, &flushes);
  EXPECT_EQ(flushes, 1);
  // The flush comes after the 50th subscriber, in the middle of E_TEST's list; the rest
  // of that list follows under the same Event line.
  EXPECT_THAT(out, HasSubstr("socket=unix:/tmp/s40 expire=3600\n\n\tSubscriber::  "
                             "socket=unix:/tmp/s39 expire=3600\n"));
  size_t lines = 0;
  for (char c : out) lines += c == '\n' ? 1 : 0;
  EXPECT_EQ(lines, 1u + 2 + 60 + 1 + 1);  // status, events, subscribers, flush, end
}

TEST_F(EventCommandsTest, HelpTextsAndFlagsAs111) {
  EXPECT_EQ(registry_.Find("event_subscribe")->help(),
            "subscribes an event to the Event Interface");
  EXPECT_EQ(registry_.Find("events_list")->help(),
            "lists all the events advertised through the Event Interface");
  EXPECT_EQ(registry_.Find("subscribers_list")->help(),
            "lists all the Event Interface subscribers; Params: [ event [ subscriber ]]");
  for (const auto& c : registry_.commands()) EXPECT_EQ(c->module(), "core");
  EXPECT_TRUE(registry_.Find("event_subscribe")->has_flag(kMutating));
  EXPECT_TRUE(registry_.Find("events_list")->has_flag(kNoInput));
}

TEST_F(EventCommandsTest, QueueOfALocalConsumerIsBounded) {
  auto small = backend_.AddConsumer("small", 256 * 2);  // two events
  ASSERT_TRUE(small.ok());
  (*small)->AddInterest(1);
  for (int i = 0; i < 5; ++i) events_.Raise(1, {i});
  EXPECT_EQ((*small)->dropped(), 3u);
  RaisedEvent event;
  ASSERT_TRUE((*small)->Pop(event));
  EXPECT_THAT(event.values, ElementsAre(EventValue(int64_t{0})));
}

}  // namespace
}  // namespace sipd::mi
