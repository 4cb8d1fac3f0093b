#include "legacy-transports/text/text_reply_parser.h"

#include <gtest/gtest.h>

#include "registry/text_format.h"

namespace sipd::legacy {
namespace {

mi::Reply SampleReply() {
  mi::Reply reply;
  reply.root.AddKid("Process")
      .AddAttribute("ID", "0")
      .AddAttribute("PID", "12")
      .AddAttribute("Type", "SIP receiver udp:127.0.0.1:5060 ");
  mi::Node& domain = reply.root.AddKid("Domain", "location");
  domain.AddAttribute("table", "512").AddAttribute("records", "1");
  mi::Node& contact = domain.AddKid("AOR", "alice").AddKid("Contact", "sip:alice@h:5060");
  contact.AddAttribute("Q", "");
  contact.AddKid("Cflags", "");
  reply.root.AddKid("", "0").AddAttribute("Current", "0").AddAttribute("Total", "3");
  reply.root.AddKid("core:rcv_requests", "15");
  reply.root.AddKid("", "k = [v w]");
  reply.root.AddKid("Up time", "1340 [sec]");
  return reply;
}

TEST(TextReplyParserTest, RoundTripsTheLayout) {
  const mi::Reply reply = SampleReply();
  for (const bool final_empty_line : {true, false}) {
    absl::StatusOr<mi::Reply> parsed =
        ParseTextReply(mi::RenderText(reply, "\t", final_empty_line));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, reply) << mi::RenderText(*parsed, "\t", true);
  }
}

TEST(TextReplyParserTest, FlushEmptyLinesAndOtherIndents) {
  absl::StatusOr<mi::Reply> parsed =
      ParseTextReply("200 OK\nDomain:: d\n  AOR:: a\n\n  AOR:: b\n\n", "  ");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->root.kids.size(), 1u);
  EXPECT_EQ(parsed->root.kids[0]->kids.size(), 2u);
}

TEST(TextReplyParserTest, TransportErrorLine) {
  absl::StatusOr<mi::Reply> parsed = ParseTextReply("500 command 'x' not available\n");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->code, 500u);
  EXPECT_EQ(parsed->reason, "command 'x' not available");
  EXPECT_TRUE(parsed->root.kids.empty());
  parsed = ParseTextReply("200 \n");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->reason, "");
}

TEST(TextReplyParserTest, Rejects) {
  EXPECT_FALSE(ParseTextReply("").ok());
  EXPECT_FALSE(ParseTextReply("OK\n").ok());
  EXPECT_FALSE(ParseTextReply("200 OK\n\t\tdeep\n").ok());
  EXPECT_FALSE(ParseTextReply("200 OK\nno lf").ok());
}

}  // namespace
}  // namespace sipd::legacy
