#include "registry/dispatcher.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>

#include "absl/strings/str_cat.h"
#include "registry/statistics.h"
#include "registry/text_format.h"

namespace sipd::mi {
namespace {

using Arity = ParamSpec::Arity;

// A request as a transport that parsed its arguments passes it (args_error OK).
Request Req(std::string command, std::vector<Argument> args = {}) {
  return {.command = std::move(command), .args = std::move(args), .args_error = absl::OkStatus()};
}

class RecordingWriter : public ReplyWriter {
 public:
  void WriteStatus(const Reply& reply) override {
    out += std::to_string(reply.code) + " " + reply.reason + "\n";
  }
  void WriteNode(const Node& node, int depth) override { AppendNodeLine(out, node, depth, "\t"); }
  void EndFlush() override { out += "\n"; }
  void EndReply() override {
    out += "\n";
    ++ended;
  }
  std::string out;
  int ended = 0;
};

class DispatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(registry_
                    .Register({.name = "echo",
                               .module = "test",
                               .help = "echoes its arguments",
                               .params = {{"first", Arity::kRequired, ""},
                                          {"second", Arity::kOptional, ""}},
                               .handler =
                                   [](Call& call) {
                                     for (const auto& a : call.args()) {
                                       call.reply().root.AddKid(a.name, a.value);
                                     }
                                     return absl::OkStatus();
                                   }})
                    .ok());
    ASSERT_TRUE(registry_
                    .Register({.name = "noinput",
                               .module = "test",
                               .flags = kNoInput,
                               .handler =
                                   [](Call& call) {
                                     call.reply().root.AddKid("args",
                                                              std::to_string(call.arg_count()));
                                     return absl::OkStatus();
                                   }})
                    .ok());
    ASSERT_TRUE(registry_
                    .Register({.name = "fails",
                               .module = "test",
                               .flags = kNoInput,
                               .handler = [](Call&) { return absl::InternalError("boom"); }})
                    .ok());
    ASSERT_TRUE(
        registry_
            .Register({.name = "throws",
                       .module = "test",
                       .flags = kNoInput,
                       .handler = [](Call&) -> absl::Status { throw std::runtime_error("bad"); }})
            .ok());
    ASSERT_TRUE(registry_
                    .Register({.name = "cache_like",
                               .module = "test",
                               .params = {{"a", Arity::kRequired, ""}, {"b", Arity::kRequired, ""}},
                               .handler = [](Call&) { return absl::OkStatus(); },
                               .arg_error_code = 404,
                               .too_few_reason = "Too few arguments",
                               .too_many_reason = "Too many parameters"})
                    .ok());
    ASSERT_TRUE(registry_
                    .Register({.name = "many",
                               .module = "test",
                               .params = {{"x", Arity::kRequired, ""}, {"x", Arity::kRepeated, ""}},
                               .handler =
                                   [](Call& call) {
                                     call.reply().root.AddKid("n",
                                                              std::to_string(call.arg_count()));
                                     return absl::OkStatus();
                                   }})
                    .ok());
  }
  Registry registry_;
};

TEST_F(DispatchTest, UnknownCommandIsNotAvailable) {
  DispatchResult r = Dispatcher(registry_).Run(Req("nosuch"));
  EXPECT_EQ(r.outcome, Outcome::kNotAvailable);
  EXPECT_EQ(r.reply.code, 500u);
  EXPECT_EQ(r.reply.reason, "command 'nosuch' not available");
}

TEST_F(DispatchTest, LookupIsCaseSensitive) {
  EXPECT_EQ(Dispatcher(registry_).Run(Req("ECHO", {{"", "a"}})).outcome, Outcome::kNotAvailable);
}

TEST_F(DispatchTest, DuplicateRegistrationIsRejected) {
  absl::Status s = registry_.Register(
      {.name = "echo", .module = "other", .handler = [](Call&) { return absl::OkStatus(); }});
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry_.Find("echo")->module(), "test");
}

TEST_F(DispatchTest, RegistrationWithoutHandlerOrNameIsRejected) {
  EXPECT_FALSE(registry_.Register({.name = "x", .module = "m"}).ok());
  EXPECT_FALSE(
      registry_.Register({.name = "", .handler = [](Call&) { return absl::OkStatus(); }}).ok());
}

TEST_F(DispatchTest, ArgumentCountsComeFromTheDeclaration) {
  struct Case {
    std::string command;
    size_t nargs;
    uint32_t code;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"echo", 0, 400, "Too few or too many arguments"},
      {"echo", 1, 200, "OK"},
      {"echo", 2, 200, "OK"},
      {"echo", 3, 400, "Too few or too many arguments"},
      {"cache_like", 1, 404, "Too few arguments"},
      {"cache_like", 2, 200, "OK"},
      {"cache_like", 3, 404, "Too many parameters"},
      {"many", 0, 400, "Too few or too many arguments"},
      {"many", 1, 200, "OK"},
      {"many", 100, 200, "OK"},
  };
  for (const auto& c : cases) {
    Request req = Req(c.command, std::vector<Argument>(c.nargs, Argument{"", "v"}));
    DispatchResult r = Dispatcher(registry_).Run(req);
    EXPECT_EQ(r.outcome, Outcome::kReply);
    EXPECT_EQ(r.reply.code, c.code) << c.command << " with " << c.nargs;
    EXPECT_EQ(r.reply.reason, c.reason) << c.command << " with " << c.nargs;
  }
}

TEST_F(DispatchTest, NoInputCommandsIgnoreArguments) {
  DispatchResult r = Dispatcher(registry_).Run(Req("noinput", {{"", "a"}, {"", "b"}}));
  ASSERT_EQ(r.reply.root.kids.size(), 1u);
  EXPECT_EQ(r.reply.root.kids[0]->value, "0");
}

TEST_F(DispatchTest, HandlerErrorIsFailedOutcome) {
  DispatchResult r = Dispatcher(registry_).Run(Req("fails"));
  EXPECT_EQ(r.outcome, Outcome::kFailed);
  EXPECT_EQ(r.reply.reason, "command 'fails' failed");
}

TEST_F(DispatchTest, ExceptionBecomes500Reply) {
  DispatchResult r = Dispatcher(registry_).Run(Req("throws"));
  EXPECT_EQ(r.outcome, Outcome::kReply);
  EXPECT_EQ(r.reply.code, 500u);
  EXPECT_EQ(r.reply.reason, "Server Internal Error");
}

TEST_F(DispatchTest, CallsAreCounted) {
  const Command* echo = registry_.Find("echo");
  const uint64_t before = echo->calls();
  Dispatcher(registry_).Run(Req("echo", {{"", "a"}}));
  Dispatcher(registry_).Run(Req("echo"));  // wrong args still counts as a call
  EXPECT_EQ(echo->calls(), before + 2);
}

TEST_F(DispatchTest, WriterGetsWholeReplyExactlyOnce) {
  RecordingWriter w;
  DispatchResult r = Dispatcher(registry_).Run(Req("echo", {{"n", "v"}}), &w);
  EXPECT_EQ(r.outcome, Outcome::kReply);
  EXPECT_EQ(w.out, "200 OK\nn:: v\n\n");
  EXPECT_EQ(w.ended, 1);
}

TEST_F(DispatchTest, WriterIsNotUsedForTransportErrors) {
  RecordingWriter w;
  Dispatcher(registry_).Run(Req("nosuch"), &w);
  Dispatcher(registry_).Run(Req("fails"), &w);
  EXPECT_EQ(w.out, "");
  EXPECT_EQ(w.ended, 0);
}

TEST_F(DispatchTest, RegistrationOrderIsKept) {
  std::vector<std::string> names;
  for (const auto& c : registry_.commands()) names.push_back(c->name());
  EXPECT_EQ(names,
            (std::vector<std::string>{"echo", "noinput", "fails", "throws", "cache_like", "many"}));
}

// ---------------------------------------------------------------------------------------
// Async replies, streams, workers, hooks and figures.

// Waits (without sleeping blindly) until the dispatcher has something, then runs it.
void RunCompletionsUntil(Dispatcher& dispatcher, const std::function<bool()>& done) {
  while (!done()) {
    pollfd pfd{dispatcher.wake_fd(), POLLIN, 0};
    poll(&pfd, 1, 1000);
    dispatcher.RunCompletions();
  }
}

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Register({.name = "later",
              .params = {{"text", Arity::kOptional, ""}},
              .flags = kAsync,
              .handler = [this](Call& call) {
                absl::StatusOr<AsyncTicket> ticket = call.GoAsync();
                if (ticket.ok()) tickets_.push_back(*ticket);
                return absl::OkStatus();
              }});
    Register({.name = "stream",
              .params = {{"n", Arity::kRequired, ""}},
              .flags = kStreaming,
              .handler = [this](Call& call) {
                const int n = std::stoi(call.arg(0));
                call.reply().root.is_array = true;
                call.StreamWith(std::make_unique<CountingProducer>(n, &producers_alive_));
                return absl::OkStatus();
              }});
    Register({.name = "slow", .flags = kBlocking | kNoInput, .handler = [this](Call& call) {
                std::unique_lock<std::mutex> lock(mu_);
                cv_.wait(lock, [this] { return release_workers_; });
                call.reply().root.AddKid(
                    "thread",
                    std::to_string(std::hash<std::thread::id>()(std::this_thread::get_id())));
                return absl::OkStatus();
              }});
    Register({.name = "change",
              .params = {{"x", Arity::kRequired, ""}},
              .flags = kMutating,
              .handler = [](Call&) { return absl::OkStatus(); }});
    Register({.name = "early",
              .params = {{"x", Arity::kRequired, ""}},
              .handler =
                  [](Call& call) {
                    call.reply().root.AddKid("ran", call.arg(0));
                    return absl::OkStatus();
                  },
              .answer_before_args = [this]() -> std::optional<Reply> {
                if (!answer_early_) return std::nullopt;
                Reply reply;
                reply.reason = "answered early";
                return reply;
              }});
    Register(
        {.name = "noinput", .flags = kNoInput, .handler = [](Call&) { return absl::OkStatus(); }});
  }

  void Register(Command::Spec spec) {
    spec.module = "test";
    ASSERT_TRUE(registry_.Register(std::move(spec)).ok());
  }

  // Produces `n` nodes, one flush point every 10.
  class CountingProducer : public ReplyProducer {
   public:
    CountingProducer(int n, int* alive) : n_(n), alive_(alive) { ++*alive_; }
    ~CountingProducer() override { --*alive_; }
    absl::StatusOr<bool> Next(Call& call) override {
      while (i_ < n_) {
        call.reply().root.AddKid("n", std::to_string(i_));
        if (++i_ % 10 == 0) return false;
      }
      return true;
    }

   private:
    const int n_;
    int i_ = 0;
    int* alive_;
  };

  Registry registry_;
  std::vector<AsyncTicket> tickets_;
  int producers_alive_ = 0;
  bool answer_early_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  bool release_workers_ = false;
};

TEST_F(DispatcherTest, AsyncReplyArrivesThroughRunCompletions) {
  LocalAsyncBackend async;
  Dispatcher dispatcher(registry_, &async);
  int ready_calls = 0;
  std::unique_ptr<Exchange> exchange = dispatcher.Start({}, Req("later"), Delivery::kTree, nullptr,
                                                        [&ready_calls] { ++ready_calls; });
  ASSERT_FALSE(exchange->ready());
  ASSERT_EQ(tickets_.size(), 1u);
  EXPECT_EQ(dispatcher.running(), 1u);

  // The completer is another thread here (another process in sipd).
  std::thread completer([&] {
    Reply reply;
    reply.root.AddKid("answer", "42");
    EXPECT_TRUE(async.Complete(tickets_[0], &reply));
  });
  RunCompletionsUntil(dispatcher, [&] { return ready_calls > 0; });
  completer.join();
  ASSERT_TRUE(exchange->ready());
  EXPECT_EQ(ready_calls, 1);
  EXPECT_EQ(exchange->outcome(), Outcome::kReply);
  EXPECT_EQ(RenderText(exchange->reply(), "\t", false), "200 OK\nanswer:: 42\n");
  EXPECT_EQ(async.pending(), 0u);
  EXPECT_EQ(dispatcher.running(), 0u);
  // A second completion of the same ticket is refused.
  EXPECT_FALSE(async.Complete(tickets_[0], nullptr));
}

TEST_F(DispatcherTest, AsyncReplyIsWrittenIntoTheTransportsWriter) {
  Dispatcher dispatcher(registry_);
  RecordingWriter writer;
  bool ready = false;
  auto exchange =
      dispatcher.Start({}, Req("later"), Delivery::kWriter, &writer, [&ready] { ready = true; });
  EXPECT_EQ(writer.out, "");
  Reply reply;
  reply.root.AddKid("x", "y");
  ASSERT_TRUE(dispatcher.async().Complete(tickets_[0], &reply));
  RunCompletionsUntil(dispatcher, [&] { return ready; });
  EXPECT_EQ(writer.out, "200 OK\nx:: y\n\n");
}

TEST_F(DispatcherTest, AsyncCompletedWithNothingFails) {
  Dispatcher dispatcher(registry_);
  bool ready = false;
  auto exchange =
      dispatcher.Start({}, Req("later"), Delivery::kTree, nullptr, [&ready] { ready = true; });
  ASSERT_TRUE(dispatcher.async().Complete(tickets_[0], nullptr));
  RunCompletionsUntil(dispatcher, [&] { return ready; });
  EXPECT_EQ(exchange->outcome(), Outcome::kFailed);
  EXPECT_EQ(exchange->reply().reason, "command 'later' failed");
}

TEST_F(DispatcherTest, AsyncDeadlineReleasesTheSlot) {
  LocalAsyncBackend async;
  Dispatcher dispatcher(registry_, &async);
  CallContext context;
  context.deadline = std::chrono::steady_clock::now();  // already due
  bool ready = false;
  auto exchange =
      dispatcher.Start(context, Req("later"), Delivery::kTree, nullptr, [&ready] { ready = true; });
  EXPECT_LE(dispatcher.NextDeadline(), std::chrono::steady_clock::now());
  dispatcher.RunCompletions();
  ASSERT_TRUE(ready);
  EXPECT_EQ(exchange->outcome(), Outcome::kFailed);
  EXPECT_EQ(async.pending(), 0u);
  EXPECT_TRUE(exchange->context().cancel.cancelled());
  // The late reply finds nobody.
  Reply late;
  EXPECT_FALSE(async.Complete(tickets_[0], &late));
}

TEST_F(DispatcherTest, CancelReleasesTheSlotAndNoCallbackComes) {
  LocalAsyncBackend async;
  Dispatcher dispatcher(registry_, &async);
  bool ready = false;
  auto exchange =
      dispatcher.Start({}, Req("later"), Delivery::kTree, nullptr, [&ready] { ready = true; });
  ASSERT_EQ(async.pending(), 1u);
  exchange->Cancel();
  EXPECT_EQ(async.pending(), 0u);
  EXPECT_TRUE(exchange->context().cancel.cancelled());
  Reply late;
  EXPECT_FALSE(async.Complete(tickets_[0], &late));
  dispatcher.RunCompletions();
  EXPECT_FALSE(ready);
  EXPECT_EQ(dispatcher.running(), 0u);
}

TEST_F(DispatcherTest, DestroyingTheExchangeCancelsIt) {
  LocalAsyncBackend async;
  Dispatcher dispatcher(registry_, &async);
  dispatcher.Start({}, Req("later"), Delivery::kTree).reset();
  EXPECT_EQ(async.pending(), 0u);
}

TEST_F(DispatcherTest, TransportThatCannotWaitGets202Accepted) {
  Dispatcher dispatcher(registry_);
  CallContext context;
  context.can_wait_async = false;
  DispatchResult result = dispatcher.Run(context, Req("later"));
  EXPECT_EQ(result.outcome, Outcome::kReply);
  EXPECT_EQ(result.reply.code, 202u);
  EXPECT_EQ(result.reply.reason, "Accepted");
  EXPECT_TRUE(tickets_.empty());
}

TEST_F(DispatcherTest, ThousandPendingCallsCompletedInAnyOrder) {
  LocalAsyncBackend async;
  Dispatcher dispatcher(registry_, &async);
  constexpr int kCalls = 1000;
  std::vector<std::unique_ptr<Exchange>> exchanges;
  int ready = 0;
  for (int i = 0; i < kCalls; ++i) {
    exchanges.push_back(
        dispatcher.Start({}, Req("later"), Delivery::kTree, nullptr, [&ready] { ++ready; }));
  }
  ASSERT_EQ(tickets_.size(), static_cast<size_t>(kCalls));
  std::vector<int> order(kCalls);
  for (int i = 0; i < kCalls; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  std::thread completer([&] {
    for (int i : order) {
      Reply reply;
      reply.root.AddKid("i", std::to_string(i));
      EXPECT_TRUE(async.Complete(tickets_[i], &reply));
    }
  });
  RunCompletionsUntil(dispatcher, [&] { return ready == kCalls; });
  completer.join();
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(exchanges[i]->ready());
    EXPECT_EQ(exchanges[i]->reply().root.kids.at(0)->value, std::to_string(i));
  }
  EXPECT_EQ(async.pending(), 0u);
}

TEST_F(DispatcherTest, PulledStreamGivesOneFlushPerWriteNext) {
  Dispatcher dispatcher(registry_);
  auto exchange = dispatcher.Start({}, Req("stream", {{"", "25"}}), Delivery::kPull);
  ASSERT_TRUE(exchange->ready());
  RecordingWriter writer;
  int parts = 1;
  while (!exchange->WriteNext(writer)) ++parts;
  EXPECT_EQ(parts, 3);  // 10 + 10 + 5
  EXPECT_EQ(writer.ended, 1);
  std::string expected = "200 OK\n";
  for (int i = 0; i < 25; ++i) {
    expected += "n:: " + std::to_string(i) + "\n";
    if (i == 9 || i == 19) expected += "\n";  // EndFlush
  }
  EXPECT_EQ(writer.out, expected + "\n");
  EXPECT_EQ(producers_alive_, 0);
}

TEST_F(DispatcherTest, CancellingAStreamDropsItsProducerAtOnce) {
  Dispatcher dispatcher(registry_);
  auto exchange = dispatcher.Start({}, Req("stream", {{"", "1000"}}), Delivery::kPull);
  RecordingWriter writer;
  EXPECT_FALSE(exchange->WriteNext(writer));
  EXPECT_EQ(producers_alive_, 1);
  exchange->Cancel();
  EXPECT_EQ(producers_alive_, 0);
  const Command* stream = registry_.Find("stream");
  EXPECT_EQ(stream->calls(), 1u);
  EXPECT_EQ(stream->errors(), 1u);  // the caller went away
}

TEST_F(DispatcherTest, AFullWriterStopsAStream) {
  class SmallWriter : public RecordingWriter {
   public:
    bool full() const override { return out.size() > 40; }
  };
  Dispatcher dispatcher(registry_);
  SmallWriter writer;
  DispatchResult result = dispatcher.Run(Req("stream", {{"", "100000"}}), &writer);
  EXPECT_EQ(result.outcome, Outcome::kReply);
  EXPECT_LT(writer.out.size(), 200u);
  EXPECT_EQ(producers_alive_, 0);
}

TEST_F(DispatcherTest, WholeTreeOfAStreamHasEveryNode) {
  Dispatcher dispatcher(registry_);
  DispatchResult result = dispatcher.Run(Req("stream", {{"", "95"}}));
  EXPECT_EQ(result.reply.root.kids.size(), 95u);
}

TEST_F(DispatcherTest, BlockingCommandsRunOnAWorker) {
  Dispatcher dispatcher(registry_, nullptr, {.workers = 1, .max_queued = 1});
  bool ready = false;
  auto first =
      dispatcher.Start({}, Req("slow"), Delivery::kTree, nullptr, [&ready] { ready = true; });
  EXPECT_FALSE(first->ready());  // the caller's thread is free meanwhile
  // One more fits in the queue; the next is refused.
  auto second = dispatcher.Start({}, Req("slow"), Delivery::kTree);
  std::unique_ptr<Exchange> third;
  for (int i = 0; i < 100 && (third == nullptr || !third->ready()); ++i) {
    third = dispatcher.Start({}, Req("slow"), Delivery::kTree);
  }
  ASSERT_TRUE(third->ready());
  EXPECT_EQ(third->reply().code, 503u);
  {
    std::lock_guard<std::mutex> lock(mu_);
    release_workers_ = true;
  }
  cv_.notify_all();
  RunCompletionsUntil(dispatcher, [&] { return ready; });
  EXPECT_NE(first->reply().root.kids.at(0)->value,
            std::to_string(std::hash<std::thread::id>()(std::this_thread::get_id())));
}

TEST_F(DispatcherTest, AuthorizationHookDecidesOnEveryPath) {
  std::vector<std::string> asked;
  DispatchHooks hooks;
  hooks.authorize = [&asked](CallContext& context, const Command& command) {
    asked.push_back(command.name());
    if (command.has_flag(kMutating) && context.peer.role != Role::kAdmin) {
      return context.peer.principal.empty()
                 ? absl::UnauthenticatedError("authentication required")
                 : absl::PermissionDeniedError("role read may not run change");
    }
    return absl::OkStatus();
  };
  Dispatcher dispatcher(registry_, nullptr, {}, hooks);
  EXPECT_EQ(dispatcher.Run(Req("change", {{"", "1"}})).reply.code, 401u);
  CallContext reader;
  reader.peer.principal = "monitor";
  reader.peer.role = Role::kRead;
  DispatchResult denied = dispatcher.Run(reader, Req("change", {{"", "1"}}));
  EXPECT_EQ(denied.reply.code, 403u);
  EXPECT_EQ(denied.reply.reason, "role read may not run change");
  reader.peer.role = Role::kAdmin;
  EXPECT_EQ(dispatcher.Run(reader, Req("change", {{"", "1"}})).reply.code, 200u);
  dispatcher.Run(Req("noinput", {{"", "ignored"}}));
  dispatcher.Run(Req("nosuch"));  // unknown commands are not authorised: not available
  EXPECT_EQ(asked, (std::vector<std::string>{"change", "change", "change", "noinput"}));
}

TEST_F(DispatcherTest, RefusalAsksTheAuthorizationHookWithoutRunningOrAuditing) {
  std::vector<std::string> asked;
  std::vector<std::string> audited;
  DispatchHooks hooks;
  hooks.authorize = [&asked](CallContext& context, const Command& command) {
    asked.push_back(command.name());
    context.peer.principal = "monitor";
    return command.has_flag(kMutating) ? absl::PermissionDeniedError("role read may not run change")
                                       : absl::OkStatus();
  };
  hooks.audit = [&audited](const CallContext&, const Command& command, const Request&, uint32_t) {
    audited.push_back(command.name());
  };
  Dispatcher dispatcher(registry_, nullptr, {}, hooks);
  CallContext caller;
  std::optional<Reply> refused = dispatcher.Refusal(caller, "change");
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code, 403u);
  EXPECT_EQ(refused->reason, "role read may not run change");
  EXPECT_EQ(caller.peer.principal, "monitor");  // filled as for a call
  EXPECT_FALSE(dispatcher.Refusal(caller, "noinput").has_value());
  EXPECT_FALSE(dispatcher.Refusal(caller, "nosuch").has_value());  // a call would say so
  EXPECT_EQ(asked, (std::vector<std::string>{"change", "noinput"}));
  EXPECT_TRUE(audited.empty());  // nothing ran
}

TEST_F(DispatcherTest, AuditHookSeesMutatingCallsWithTheirCode) {
  std::vector<std::string> audited;
  DispatchHooks hooks;
  hooks.audit = [&audited](const CallContext& context, const Command& command,
                           const Request& request, uint32_t code) {
    audited.push_back(absl::StrCat(std::string(TransportName(context.transport)), " ",
                                   command.name(), " ", request.args.size(), " ", code));
  };
  Dispatcher dispatcher(registry_, nullptr, {}, hooks);
  CallContext fifo;
  fifo.transport = Transport::kFifo;
  dispatcher.Run(fifo, Req("change", {{"", "1"}}));
  dispatcher.Run(fifo, Req("change"));   // refused by the argument check: still audited
  dispatcher.Run(fifo, Req("noinput"));  // not mutating
  EXPECT_EQ(audited, (std::vector<std::string>{"fifo change 1 200", "fifo change 0 400"}));
}

TEST_F(DispatcherTest, ParseErrorsAreDecidedHere) {
  Dispatcher dispatcher(registry_);
  Request bad{"change", {}, absl::InvalidArgumentError("unterminated quote")};
  DispatchResult result = dispatcher.Run(bad);
  EXPECT_EQ(result.outcome, Outcome::kParseError);
  EXPECT_EQ(result.reply.reason, "parse error in command 'change'");
  bad.command = "noinput";  // no-input commands never look at their arguments
  EXPECT_EQ(dispatcher.Run(bad).outcome, Outcome::kReply);
  bad.command = "nosuch";
  EXPECT_EQ(dispatcher.Run(bad).outcome, Outcome::kNotAvailable);
}

TEST_F(DispatcherTest, AnswerBeforeArgumentsSkipsTheChecks) {
  Dispatcher dispatcher(registry_);
  EXPECT_EQ(dispatcher.Run(Req("early")).reply.code, 400u);
  answer_early_ = true;
  DispatchResult result = dispatcher.Run(Req("early"));
  EXPECT_EQ(result.reply.code, 200u);
  EXPECT_EQ(result.reply.reason, "answered early");
}

TEST_F(DispatcherTest, FiguresCountCallsErrorsAndTimeInStatistics) {
  std::vector<std::atomic<uint64_t>> cells(64);
  StatsRegistry stats({cells.data(), cells.size()});
  Dispatcher(registry_).Run(Req("change", {{"", "1"}}));  // counted locally before the move
  ASSERT_TRUE(registry_.UseFigureCells(stats).ok());
  Dispatcher dispatcher(registry_);
  dispatcher.Run(Req("change", {{"", "1"}}));
  dispatcher.Run(Req("change"));
  EXPECT_EQ(stats.Value("change_calls").value(), 3u);
  EXPECT_EQ(stats.Value("change_errors").value(), 1u);
  EXPECT_TRUE(stats.Value("change_time_us").ok());
  Node out;
  ASSERT_TRUE(stats.Collect("mi:", out));
  EXPECT_EQ(out.kids.size(), 3 * registry_.commands().size());
}

}  // namespace
}  // namespace sipd::mi
