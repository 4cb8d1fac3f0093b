// The tm callback API (sipd/modules/tm/tm_api.h) as another module uses it: register
// callbacks, let tm run them with real parsed messages.
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/modules/tm/tm_api.h"

namespace sipd::tm {
namespace {

using ::testing::ElementsAre;

constexpr std::string_view kInvite =
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK776asdhds\r\n"
    "To: <sip:bob@example.com>\r\n"
    "From: <sip:alice@example.com>;tag=1928301774\r\n"
    "Call-ID: call-1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n";

constexpr std::string_view kRinging =
    "SIP/2.0 180 Ringing\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK776asdhds\r\n"
    "To: <sip:bob@example.com>;tag=b1\r\n"
    "From: <sip:alice@example.com>;tag=1928301774\r\n"
    "Call-ID: call-1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n";

TEST(TmCallbacksTest, RelayCallbacksSeeTheRequestAndShapeTheRelay) {
  Callbacks callbacks;
  std::vector<std::string> seen;
  callbacks.OnRelay([&](RequestEvent& e) {
    seen.push_back(std::string(e.request().call_id()));
    EXPECT_FALSE(e.in_dialog());
    EXPECT_EQ(e.transaction().ToString(), "17:3");
    EXPECT_THAT(e.targets(), ElementsAre("sip:bob@10.0.0.9:5060"));
    e.set_cookie(42);
    e.AddRecordRouteParam("did=ab12");
  });
  callbacks.OnRelay([&](RequestEvent& e) {
    EXPECT_EQ(e.cookie(), 42u);  // later callbacks see what earlier ones set
    e.Refuse(486, "Busy Here");
    e.Refuse(500, "ignored: the first refusal wins");
  });

  auto invite = SipMessage::Parse(kInvite);
  ASSERT_TRUE(invite.ok());
  Peer source{.proto = Proto::kUdp, .ip = "10.0.0.1", .port = 5070, .socket = "udp:10.0.0.2:5060"};
  RequestEvent event(*invite, source, TransactionId{17, 3}, {"sip:bob@10.0.0.9:5060"});
  ASSERT_TRUE(callbacks.has_relay());
  callbacks.RunRelay(event);

  EXPECT_THAT(seen, ElementsAre("call-1"));
  EXPECT_EQ(event.cookie(), 42u);
  EXPECT_THAT(event.record_route_params(), ElementsAre("did=ab12"));
  ASSERT_TRUE(event.refusal().has_value());
  EXPECT_EQ(event.refusal()->first, 486);
  EXPECT_EQ(event.refusal()->second, "Busy Here");
}

TEST(TmCallbacksTest, ReplyAndEndCallbacksCarryTheCookie) {
  Callbacks callbacks;
  EXPECT_FALSE(callbacks.has_reply());
  std::vector<std::string> log;
  callbacks.OnReply([&](const ReplyEvent& e) {
    log.push_back(absl::StrCat("reply ", e.code, " cookie ", e.cookie, " branch ", e.branch,
                               e.forwarded ? " forwarded" : "",
                               e.reply != nullptr ? " to-tag " : " local",
                               std::string(e.reply != nullptr ? e.reply->to_tag() : "")));
  });
  callbacks.OnEnd([&](const EndEvent& e) {
    log.push_back(absl::StrCat("end ", e.transaction.ToString(), " final ", e.final_code,
                               " cookie ", e.cookie));
  });

  auto ringing = SipMessage::Parse(kRinging);
  ASSERT_TRUE(ringing.ok());
  ReplyEvent received{.transaction = {17, 3},
                      .cookie = 42,
                      .method = Method::kInvite,
                      .call_id = ringing->call_id(),
                      .from_tag = ringing->from_tag(),
                      .code = 180,
                      .reason = ringing->reason(),
                      .reply = &*ringing,
                      .branch = 0,
                      .forwarded = true};
  callbacks.RunReply(received);
  ReplyEvent timeout{.transaction = {17, 3},
                     .cookie = 42,
                     .method = Method::kInvite,
                     .code = 408,
                     .reason = "Request Timeout",
                     .forwarded = true};
  callbacks.RunReply(timeout);
  callbacks.RunEnd(
      EndEvent{.transaction = {17, 3}, .cookie = 42, .method = Method::kInvite, .final_code = 408});

  EXPECT_THAT(log, ElementsAre("reply 180 cookie 42 branch 0 forwarded to-tag b1",
                               "reply 408 cookie 42 branch -1 forwarded local",
                               "end 17:3 final 408 cookie 42"));
}

TEST(TmCallbacksTest, AThrowingCallbackDoesNotStopTheOthers) {
  Callbacks callbacks;
  int calls = 0;
  callbacks.OnEnd([](const EndEvent&) { throw std::runtime_error("boom"); });
  callbacks.OnEnd([&](const EndEvent&) { ++calls; });
  callbacks.RunEnd(EndEvent{});
  EXPECT_EQ(calls, 1);
}

TEST(TmCallbacksTest, TransactionIds) {
  EXPECT_EQ(TransactionId::Parse("65535:4294967295"), (TransactionId{65535, 4294967295u}));
  EXPECT_FALSE(TransactionId::Parse("12").has_value());
  EXPECT_FALSE(TransactionId::Parse(":1").has_value());
  EXPECT_FALSE(TransactionId::Parse("1:").has_value());
  EXPECT_FALSE(TransactionId::Parse("1:x").has_value());
  EXPECT_FALSE(TransactionId{}.valid());
}

}  // namespace
}  // namespace sipd::tm
