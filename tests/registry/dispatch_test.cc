#include <gtest/gtest.h>

#include <stdexcept>

#include "registry/dispatcher.h"
#include "registry/text_format.h"

namespace sipd::mi {
namespace {

using Arity = ParamSpec::Arity;

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
  DispatchResult r = Dispatcher(registry_).Run({"nosuch", {}});
  EXPECT_EQ(r.outcome, Outcome::kNotAvailable);
  EXPECT_EQ(r.reply.code, 500u);
  EXPECT_EQ(r.reply.reason, "command 'nosuch' not available");
}

TEST_F(DispatchTest, LookupIsCaseSensitive) {
  EXPECT_EQ(Dispatcher(registry_).Run({"ECHO", {{"", "a"}}}).outcome, Outcome::kNotAvailable);
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
    Request req{c.command, std::vector<Argument>(c.nargs, Argument{"", "v"})};
    DispatchResult r = Dispatcher(registry_).Run(req);
    EXPECT_EQ(r.outcome, Outcome::kReply);
    EXPECT_EQ(r.reply.code, c.code) << c.command << " with " << c.nargs;
    EXPECT_EQ(r.reply.reason, c.reason) << c.command << " with " << c.nargs;
  }
}

TEST_F(DispatchTest, NoInputCommandsIgnoreArguments) {
  DispatchResult r = Dispatcher(registry_).Run({"noinput", {{"", "a"}, {"", "b"}}});
  ASSERT_EQ(r.reply.root.kids.size(), 1u);
  EXPECT_EQ(r.reply.root.kids[0]->value, "0");
}

TEST_F(DispatchTest, HandlerErrorIsFailedOutcome) {
  DispatchResult r = Dispatcher(registry_).Run({"fails", {}});
  EXPECT_EQ(r.outcome, Outcome::kFailed);
  EXPECT_EQ(r.reply.reason, "command 'fails' failed");
}

TEST_F(DispatchTest, ExceptionBecomes500Reply) {
  DispatchResult r = Dispatcher(registry_).Run({"throws", {}});
  EXPECT_EQ(r.outcome, Outcome::kReply);
  EXPECT_EQ(r.reply.code, 500u);
  EXPECT_EQ(r.reply.reason, "Server Internal Error");
}

TEST_F(DispatchTest, CallsAreCounted) {
  const Command* echo = registry_.Find("echo");
  const uint64_t before = echo->calls();
  Dispatcher(registry_).Run({"echo", {{"", "a"}}});
  Dispatcher(registry_).Run({"echo", {}});  // wrong args still counts as a call
  EXPECT_EQ(echo->calls(), before + 2);
}

TEST_F(DispatchTest, WriterGetsWholeReplyExactlyOnce) {
  RecordingWriter w;
  DispatchResult r = Dispatcher(registry_).Run({"echo", {{"n", "v"}}}, &w);
  EXPECT_EQ(r.outcome, Outcome::kReply);
  EXPECT_EQ(w.out, "200 OK\nn:: v\n\n");
  EXPECT_EQ(w.ended, 1);
}

TEST_F(DispatchTest, WriterIsNotUsedForTransportErrors) {
  RecordingWriter w;
  Dispatcher(registry_).Run({"nosuch", {}}, &w);
  Dispatcher(registry_).Run({"fails", {}}, &w);
  EXPECT_EQ(w.out, "");
  EXPECT_EQ(w.ended, 0);
}

TEST_F(DispatchTest, RegistrationOrderIsKept) {
  std::vector<std::string> names;
  for (const auto& c : registry_.commands()) names.push_back(c->name());
  EXPECT_EQ(names,
            (std::vector<std::string>{"echo", "noinput", "fails", "throws", "cache_like", "many"}));
}

}  // namespace
}  // namespace sipd::mi
