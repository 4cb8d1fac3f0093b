// SipMessage: the proxy's parser (sipd/modules/tm/sip_message.h).
#include "sipd/modules/tm/sip_message.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sipd::tm {
namespace {

using ::testing::HasSubstr;

std::string Invite(std::string_view extra = "", std::string_view body = "") {
  return absl::StrCat(
      "INVITE sip:bob@example.com SIP/2.0\r\n"
      "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
      "v: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKold, SIP/2.0/TCP [::1]:5080;branch=z9hG4bKolder\r\n"
      "Max-Forwards: 70\r\n"
      "To: Bob <sip:bob@example.com>\r\n"
      "From: \"Alice, A.\" <sip:alice@example.com;transport=udp>;tag=1928301774\r\n"
      "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
      "CSeq: 314159 INVITE\r\n"
      "Contact: <sip:alice@10.0.0.1:5070>\r\n",
      std::string(extra), "Content-Length: ", body.size(), "\r\n\r\n", std::string(body));
}

TEST(SipMessageTest, ParsesARequest) {
  auto m = SipMessage::Parse(Invite("", "v=0\r\n"));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->defect().empty()) << m->defect();
  EXPECT_TRUE(m->is_request());
  EXPECT_EQ(m->method(), Method::kInvite);
  EXPECT_EQ(m->method_text(), "INVITE");
  EXPECT_EQ(m->request_uri(), "sip:bob@example.com");
  EXPECT_EQ(m->top_via().transport, "UDP");
  EXPECT_EQ(m->top_via().host, "10.0.0.1");
  EXPECT_EQ(m->top_via().port, 5070);
  EXPECT_EQ(m->top_via().branch, "z9hG4bK776asdhds");
  EXPECT_TRUE(m->top_via().has_rport);
  EXPECT_EQ(m->call_id(), "a84b4c76e66710@pc33.example.com");
  EXPECT_EQ(m->cseq(), 314159u);
  EXPECT_EQ(m->cseq_method(), Method::kInvite);
  EXPECT_EQ(m->from_tag(), "1928301774");
  EXPECT_EQ(m->to_tag(), "");
  EXPECT_EQ(m->from().display, "\"Alice, A.\"");
  EXPECT_EQ(m->from().uri.user, "alice");
  EXPECT_EQ(m->from().uri.transport(), "udp");
  EXPECT_EQ(m->to().uri.host, "example.com");
  EXPECT_EQ(m->max_forwards(), 70);
  EXPECT_EQ(m->body(), "v=0\r\n");
  EXPECT_EQ(m->start_line(), "INVITE sip:bob@example.com SIP/2.0\r\n");
  EXPECT_THAT(std::string(m->after_start_line()), ::testing::StartsWith("Via: SIP/2.0/UDP"));

  auto vias = m->Vias();
  ASSERT_TRUE(vias.ok());
  ASSERT_EQ(vias->size(), 3u);
  EXPECT_EQ((*vias)[1].host, "10.0.0.2");
  EXPECT_EQ((*vias)[1].port, 0);
  EXPECT_EQ((*vias)[2].host, "[::1]");
  EXPECT_EQ((*vias)[2].transport, "TCP");
  auto contacts = m->Contacts();
  ASSERT_TRUE(contacts.ok());
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_EQ((*contacts)[0].uri.port, 5070);
}

TEST(SipMessageTest, ParsesAReply) {
  auto m = SipMessage::Parse(
      "SIP/2.0 180 Ringing\r\n"
      "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1\r\n"
      "To: <sip:bob@example.com>;tag=a6c85cf\r\n"
      "From: <sip:alice@example.com>;tag=1928301774\r\n"
      "i: x@y\r\n"
      "CSeq: 1 INVITE\r\n"
      "Record-Route: <sip:p2.example.com;lr>,<sip:p1.example.com;lr>\r\n"
      "Record-Route: <sip:p0.example.com;lr>\r\n"
      "l: 0\r\n\r\n");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->defect().empty()) << m->defect();
  EXPECT_FALSE(m->is_request());
  EXPECT_EQ(m->status(), 180);
  EXPECT_EQ(m->reason(), "Ringing");
  EXPECT_EQ(m->to_tag(), "a6c85cf");
  EXPECT_EQ(m->call_id(), "x@y");
  auto rr = m->RecordRoutes();
  ASSERT_TRUE(rr.ok());
  ASSERT_EQ(rr->size(), 3u);
  EXPECT_EQ((*rr)[0].uri.host, "p2.example.com");
  EXPECT_TRUE((*rr)[0].uri.lr());
  EXPECT_EQ((*rr)[2].uri.host, "p0.example.com");
}

TEST(SipMessageTest, FoldedHeadersAndLeadingCrlf) {
  auto m = SipMessage::Parse(
      "\r\nOPTIONS sip:127.0.0.1 SIP/2.0\r\n"
      "Via: SIP/2.0/UDP 10.0.0.1\r\n ;branch=z9hG4bKfold\r\n"
      "To: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: 1\r\nCSeq: 2 OPTIONS\r\n\r\n");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(m->defect().empty()) << m->defect();
  EXPECT_EQ(m->top_via().branch, "z9hG4bKfold");
  EXPECT_EQ(m->max_forwards(), -1);
}

TEST(SipMessageTest, DefectsNameTheHeader) {
  auto m = SipMessage::Parse(
      "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
      "To: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCSeq: 2 BYE\r\n\r\n");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->defect(), "Missing Call-ID header");
  EXPECT_TRUE(m->has_via());

  auto bad_cseq = SipMessage::Parse(
      "BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
      "To: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: 1\r\nCSeq: 2 INVITE\r\n\r\n");
  ASSERT_TRUE(bad_cseq.ok());
  EXPECT_EQ(bad_cseq->defect(), "CSeq method does not match");

  auto bad_mf = SipMessage::Parse(Invite("Max-Forwards: lots\r\n"));
  ASSERT_TRUE(bad_mf.ok());
  EXPECT_EQ(bad_mf->max_forwards(), 70);  // the first one counts
  auto bad_via = SipMessage::Parse(
      "BYE sip:a@b SIP/2.0\r\nVia: HTTP/1.1 h\r\n"
      "To: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: 1\r\nCSeq: 2 BYE\r\n\r\n");
  ASSERT_TRUE(bad_via.ok());
  EXPECT_EQ(bad_via->defect(), "Bad Via header");
  EXPECT_FALSE(bad_via->has_via());
}

TEST(SipMessageTest, RejectsWhatIsNotSip) {
  EXPECT_FALSE(SipMessage::Parse("").ok());
  EXPECT_FALSE(SipMessage::Parse("hello").ok());
  EXPECT_FALSE(SipMessage::Parse("GET / HTTP/1.1\r\n\r\n").ok());
  EXPECT_FALSE(SipMessage::Parse("SIP/2.0 99 Low\r\n\r\n").ok());
  EXPECT_FALSE(SipMessage::Parse("SIP/2.0 1000 High\r\n\r\n").ok());
  EXPECT_FALSE(SipMessage::Parse("INVITE sip:a SIP/2.0\r\nVia: x\r\n").ok());  // no end
  EXPECT_FALSE(SipMessage::Parse("INVITE sip:a SIP/2.0\r\nnocolon\r\n\r\n").ok());
  // Content-Length beyond the datagram.
  EXPECT_FALSE(SipMessage::Parse(Invite("", "").replace(Invite().find("Content-Length: 0"), 17,
                                                        "Content-Length: 9"))
                   .ok());
}

TEST(SipMessageTest, BodyIsCutAtContentLength) {
  std::string text = Invite("", "abc") + "trailing garbage";
  auto m = SipMessage::Parse(text);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->body(), "abc");
}

TEST(SipMessageTest, TenThousandHeadersAreRefusedQuickly) {
  std::string text = Invite();
  std::string many;
  for (int i = 0; i < 10000; ++i) absl::StrAppend(&many, "X-H", i, ": v\r\n");
  text.insert(text.find("Content-Length"), many);
  SipMessage::Limits limits;
  limits.max_size = 1 << 20;
  auto m = SipMessage::Parse(text, limits);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("too many headers"));
  // And over the default size limit, simply too big.
  EXPECT_FALSE(SipMessage::Parse(std::string(70000, 'a')).ok());
}

TEST(SipMessageTest, Uris) {
  auto uri = ParseUri("sip:+1-212;phone-context=x@[2001:db8::1]:5061;transport=TCP;lr?subject=a");
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(uri->user, "+1-212;phone-context=x");
  EXPECT_EQ(uri->host, "[2001:db8::1]");
  EXPECT_EQ(uri->bare_host(), "2001:db8::1");
  EXPECT_EQ(uri->port, 5061);
  EXPECT_EQ(uri->transport(), "TCP");
  EXPECT_TRUE(uri->lr());
  EXPECT_EQ(uri->headers, "subject=a");
  EXPECT_TRUE(ParseUri("tel:+1234").ok());
  EXPECT_FALSE(ParseUri("sip:").ok());
  EXPECT_FALSE(ParseUri("sip:a@").ok());
  EXPECT_FALSE(ParseUri("sip:host:0").ok());
  EXPECT_FALSE(ParseUri("sip:host:70000").ok());
  EXPECT_FALSE(ParseUri("nocolon").ok());
  EXPECT_FALSE(ParseUri("sip:a b@c").ok());
}

TEST(SipMessageTest, NameAddrs) {
  auto a = ParseNameAddr("sip:alice@a.com;tag=x");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->uri.text, "sip:alice@a.com");
  EXPECT_EQ(a->params.Get("tag").value_or("?"), "x");
  auto b = ParseNameAddr("\"A <b>\" <sip:alice@a.com;lr>;expires=60;q=0.5");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(b->uri.lr());
  EXPECT_EQ(b->params.Get("expires").value_or("?"), "60");
  EXPECT_TRUE(ParseNameAddr("*")->star);
  EXPECT_FALSE(ParseNameAddr("<sip:a@b").ok());
  EXPECT_FALSE(ParseNameAddr("\"x\" sip:a@b").ok());
  EXPECT_EQ(SplitList(" <sip:a,b@c>, \"x,y\" <sip:d>,,e "),
            (std::vector<std::string_view>{"<sip:a,b@c>", "\"x,y\" <sip:d>", "e"}));
}

TEST(SipMessageTest, MethodsAndHeaderNames) {
  EXPECT_EQ(ParseMethod("CANCEL"), Method::kCancel);
  EXPECT_EQ(ParseMethod("invite"), Method::kOther);
  EXPECT_EQ(ClassifyHeader("CALL-ID"), HeaderType::kCallId);
  EXPECT_EQ(ClassifyHeader("m"), HeaderType::kContact);
  EXPECT_EQ(ClassifyHeader("Record-Route"), HeaderType::kRecordRoute);
  EXPECT_EQ(ClassifyHeader("X-Foo"), HeaderType::kOther);
}

// An ACK with `to` as its To header line (and `extra` lines after it).
std::string Ack(std::string_view to, std::string_view extra = "") {
  return absl::StrCat(
      "ACK sip:bob@example.com SIP/2.0\r\n"
      "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK776asdhds\r\n"
      "From: <sip:alice@example.com>;tag=1928301774\r\n",
      std::string(to), "\r\n", std::string(extra),
      "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
      "CSeq: 314159 ACK\r\n"
      "Content-Length: 0\r\n\r\n");
}

TEST(SipMessageTest, ScanToTagFindsTheTagTheParseFinds) {
  for (const std::string to :
       {"To: <sip:bob@example.com>;tag=abc", "t: <sip:bob@example.com> ; TAG = abc ;x=y",
        "TO : Bob <sip:bob@example.com;lr>;x;tag=abc", "To: sip:bob@example.com;tag=abc",
        "to:<sip:bob@example.com;tag=not-this>;tag=abc"}) {
    const std::string ack = Ack(to);
    auto parsed = SipMessage::Parse(ack);
    ASSERT_TRUE(parsed.ok() && parsed->defect().empty()) << to;
    ASSERT_EQ(parsed->to_tag(), "abc") << to;
    EXPECT_EQ(ScanToTag(ack).value_or("?"), "abc") << to;
  }
}

TEST(SipMessageTest, ScanToTagGivesUpWhereItCannotBeSure) {
  // No tag, or only a URI parameter named tag.
  EXPECT_FALSE(ScanToTag(Ack("To: <sip:bob@example.com>")).has_value());
  EXPECT_FALSE(ScanToTag(Ack("To: <sip:bob@example.com;tag=x>")).has_value());
  EXPECT_FALSE(ScanToTag(Ack("To: <sip:bob@example.com>;tag=")).has_value());
  // Quoted display names, folded lines, an unclosed '<', garbage after '>': the parse
  // decides.
  EXPECT_FALSE(ScanToTag(Ack("To: \"B>;tag=x\" <sip:bob@example.com>;tag=y")).has_value());
  EXPECT_FALSE(ScanToTag(Ack("To: <sip:bob@example.com>", " ;tag=abc\r\n")).has_value());
  EXPECT_FALSE(ScanToTag(Ack("To:\r\n <sip:bob@example.com>;tag=abc")).has_value());
  EXPECT_FALSE(ScanToTag(Ack("To: <sip:bob@example.com;tag=abc")).has_value());
  EXPECT_FALSE(ScanToTag(Ack("To: <sip:bob@example.com> x;tag=abc")).has_value());
  // No To header among the headers; one in the body does not count.
  EXPECT_FALSE(
      ScanToTag("ACK sip:b@c SIP/2.0\r\nCall-ID: x\r\n\r\nTo: <sip:b@c>;tag=a\r\n").has_value());
  EXPECT_FALSE(ScanToTag("ACK sip:b@c SIP/2.0\r\nTo: <sip:b@c>;tag=a").has_value());
  EXPECT_FALSE(ScanToTag("").has_value());
  EXPECT_FALSE(ScanToTag("\r\nACK sip:b@c SIP/2.0\r\nTo: <sip:b@c>;tag=a\r\n\r\n").has_value());
}

}  // namespace
}  // namespace sipd::tm
