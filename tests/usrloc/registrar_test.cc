// registrar: REGISTER processing (RFC 3261 10.3) through the handler the module
// registers with the core, on requests parsed by libosip2.
#include "sipd/modules/registrar/registrar.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "registry/dispatcher.h"
#include "registry/text_format.h"
#include "sipd/modules/usrloc/sqlite_store.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "tests/support/database_file_copy.h"
#include "tests/usrloc/test_support.h"

namespace sipd::registrar {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::MakeRegister;
using testing::TestSipRequest;

constexpr int64_t kNow = 1700000000;

class RegistrarTest : public ::testing::Test {
 protected:
  void Init(std::vector<std::pair<std::string, ParamValue>> ul_params = {},
            std::vector<std::pair<std::string, ParamValue>> reg_params = {}) {
    for (auto& [n, v] : ul_params) ASSERT_TRUE(ul_.SetParam(n, v).ok()) << n;
    // Most tests use contacts like sip:x@h that differ from the source address; keep
    // `received` out of their replies unless a test asks for it.
    ASSERT_TRUE(reg_.SetParam("store_received", int64_t{0}).ok());
    for (auto& [n, v] : reg_params) ASSERT_TRUE(reg_.SetParam(n, v).ok()) << n;
    ul_.set_clock([this] { return now_; });
    core_.AddModule(&ul_);
    core_.AddModule(&reg_);
    ASSERT_TRUE(ul_.Init(core_).ok());
    ASSERT_TRUE(reg_.Init(core_).ok());
    ASSERT_TRUE(core_.sip_handlers().contains("REGISTER"));
  }

  // Sends one REGISTER through the registered SIP handler; returns its (single) reply.
  TestSipRequest::Sent Send(const std::string& text, std::string source_ip = "127.0.0.1",
                            uint16_t source_port = 5070) {
    auto request = TestSipRequest::Parse(text, std::move(source_ip), source_port);
    EXPECT_NE(request, nullptr) << text;
    if (request == nullptr) return {};
    core_.sip_handlers()["REGISTER"](*request);
    EXPECT_EQ(request->replies.size(), 1u);
    return request->replies.empty() ? TestSipRequest::Sent{} : request->replies[0];
  }
  TestSipRequest::Sent Register(std::string_view user, std::string_view callid, uint32_t cseq,
                                std::vector<std::string> headers) {
    return Send(MakeRegister(user, callid, cseq, headers));
  }
  std::string Mi(std::string command, std::vector<std::string> args = {}) {
    mi::Request request{.command = std::move(command), .args = {}, .args_error = absl::OkStatus()};
    for (auto& a : args) request.args.push_back(mi::Argument{"", std::move(a)});
    return mi::RenderText(core_.NewDispatcher({})->Run(request).reply, "\t", true);
  }
  std::vector<std::string> Uris(std::string aor) {
    std::vector<std::string> out;
    const auto snapshot = ul_.usrloc().FindTable("location")->Get(aor);
    if (snapshot.has_value()) {
      for (const auto& c : snapshot->contacts) out.push_back(c.uri);
    }
    return out;
  }
  uint64_t Stat(std::string name) { return core_.stats().Value(name).value(); }

  int64_t now_ = kNow;
  testing::FakeCore core_;
  usrloc::UsrlocModule ul_;
  RegistrarModule reg_;
};

TEST_F(RegistrarTest, RegisterStoresBindingAndAnswersWithIt) {
  Init();
  auto reply = Register("alice", "c1@host", 1,
                        {"Contact: <sip:alice@127.0.0.1:5070>", "User-Agent: Phone/1.0",
                         "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS"});
  EXPECT_EQ(reply.code, 200);
  EXPECT_EQ(reply.reason, "OK");
  EXPECT_THAT(reply.Header("Contact"), ElementsAre("<sip:alice@127.0.0.1:5070>;expires=3600"));
  EXPECT_THAT(reply.Header("Date"), ElementsAre("Tue, 14 Nov 2023 22:13:20 GMT"));
  now_ += 100;
  EXPECT_EQ(Mi("ul_dump"),
            "200 OK\n"
            "Domain:: location table=512 records=1\n"
            "\tAOR:: alice\n"
            "\t\tContact:: sip:alice@127.0.0.1:5070 Q=\n"
            "\t\t\tExpires:: 3500\n"
            "\t\t\tCallid:: c1@host\n"
            "\t\t\tCseq:: 1\n"
            "\t\t\tUser-agent:: Phone/1.0\n"
            "\t\t\tState:: CS_NEW\n"
            "\t\t\tFlags:: 0\n"
            "\t\t\tCflags:: \n"
            "\t\t\tSocket:: udp:127.0.0.1:5060\n"
            "\t\t\tMethods:: 47\n"
            "\n");
  EXPECT_EQ(Stat("registered_users"), 1u);
  EXPECT_EQ(Stat("location-contacts"), 1u);
  EXPECT_EQ(Stat("accepted_regs"), 1u);
}

TEST_F(RegistrarTest, ExpiresFromParameterThenHeaderThenDefault) {
  Init({}, {{"default_expires", int64_t{1800}}});
  auto reply = Register(
      "a", "c", 1,
      {"Contact: <sip:p@h1>;expires=120, <sip:p@h2>", "Contact: <sip:p@h3>", "Expires: 600"});
  EXPECT_THAT(
      reply.Header("Contact"),
      ElementsAre("<sip:p@h1>;expires=120", "<sip:p@h2>;expires=600", "<sip:p@h3>;expires=600"));
  reply = Register("b", "c", 1, {"Contact: <sip:q@h>"});
  EXPECT_THAT(reply.Header("Contact"), ElementsAre("<sip:q@h>;expires=1800"));
}

TEST_F(RegistrarTest, OkListsAllBindingsWithRemainingExpiresAndQOrder) {
  Init();
  ASSERT_EQ(Register("a", "c1", 1, {"Contact: <sip:one@h>;q=0.5;expires=300"}).code, 200);
  now_ += 50;
  auto reply = Register("a", "c2", 1, {"Contact: <sip:two@h>;q=1.0;expires=600"});
  EXPECT_THAT(reply.Header("Contact"),
              ElementsAre("<sip:two@h>;expires=600;q=1", "<sip:one@h>;expires=250;q=0.5"));
  // A query (no Contact) lists them and changes nothing.
  now_ += 10;
  reply = Register("a", "c3", 1, {});
  EXPECT_EQ(reply.code, 200);
  EXPECT_THAT(reply.Header("Contact"),
              ElementsAre("<sip:two@h>;expires=590;q=1", "<sip:one@h>;expires=240;q=0.5"));
  EXPECT_THAT(Register("nobody", "c", 1, {}).Header("Contact"), IsEmpty());
}

TEST_F(RegistrarTest, ExpiresZeroRemovesOneBindingAndStarRemovesAll) {
  Init();
  ASSERT_EQ(Register("a", "c1", 1, {"Contact: <sip:one@h>, <sip:two@h>, <sip:three@h>"}).code, 200);
  auto reply = Register("a", "c1", 2, {"Contact: <sip:two@h>;expires=0"});
  EXPECT_EQ(reply.code, 200);
  EXPECT_THAT(Uris("a"), ElementsAre("sip:one@h", "sip:three@h"));
  EXPECT_EQ(reply.Header("Contact").size(), 2u);
  reply = Register("a", "c9", 1, {"Contact: *", "Expires: 0"});
  EXPECT_EQ(reply.code, 200);
  EXPECT_THAT(reply.Header("Contact"), IsEmpty());
  EXPECT_THAT(Uris("a"), IsEmpty());
  EXPECT_EQ(Stat("location-users"), 0u);
  EXPECT_EQ(Stat("location-contacts"), 0u);
  // Removing bindings that do not exist is fine.
  EXPECT_EQ(Register("a", "c9", 2, {"Contact: *", "Expires: 0"}).code, 200);
  EXPECT_EQ(Register("a", "c9", 3, {"Contact: <sip:x@h>;expires=0"}).code, 200);
}

TEST_F(RegistrarTest, CallIdAndCSeqOrdering) {
  Init();
  ASSERT_EQ(Register("a", "call-1", 10, {"Contact: <sip:one@h>;expires=300"}).code, 200);
  // Older CSeq with the same Call-ID: rejected, nothing changes.
  auto reply = Register("a", "call-1", 9, {"Contact: <sip:one@h>;expires=0"});
  EXPECT_EQ(reply.code, 400);
  EXPECT_THAT(reply.Header("P-Registrar-Error"), ElementsAre("Out of order request"));
  EXPECT_THAT(Uris("a"), ElementsAre("sip:one@h"));
  // Same CSeq: a retransmission, answered like the original.
  now_ += 5;
  reply = Register("a", "call-1", 10, {"Contact: <sip:one@h>;expires=300"});
  EXPECT_EQ(reply.code, 200);
  EXPECT_THAT(reply.Header("Contact"), ElementsAre("<sip:one@h>;expires=295"));
  // Higher CSeq updates.
  reply = Register("a", "call-1", 11, {"Contact: <sip:one@h>;expires=900"});
  EXPECT_THAT(reply.Header("Contact"), ElementsAre("<sip:one@h>;expires=900"));
  // Another Call-ID (e.g. a rebooted phone) may update whatever its CSeq.
  reply = Register("a", "call-2", 1, {"Contact: <sip:one@h>;expires=60"});
  EXPECT_THAT(reply.Header("Contact"), ElementsAre("<sip:one@h>;expires=60"));
  EXPECT_THAT(Mi("ul_dump"), HasSubstr("Callid:: call-2\n\t\t\tCseq:: 1\n"));
  // `*` also obeys the ordering.
  reply = Register("a", "call-2", 1, {"Contact: *", "Expires: 0"});
  EXPECT_EQ(reply.code, 400);
  EXPECT_THAT(Uris("a"), ElementsAre("sip:one@h"));
  // An expired binding is gone: no ordering check against it.
  now_ += 61;
  EXPECT_EQ(Register("a", "call-2", 1, {"Contact: <sip:one@h>;expires=60"}).code, 200);
}

TEST_F(RegistrarTest, IntervalTooBriefAndMaxExpires) {
  Init({}, {{"min_expires", int64_t{60}}, {"max_expires", int64_t{3600}}});
  ASSERT_EQ(Register("a", "c", 1, {"Contact: <sip:keep@h>"}).code, 200);
  auto reply = Register("a", "c", 2, {"Contact: <sip:new@h>;expires=30", "Contact: <sip:keep@h>"});
  EXPECT_EQ(reply.code, 423);
  EXPECT_EQ(reply.reason, "Interval Too Brief");
  EXPECT_THAT(reply.Header("Min-Expires"), ElementsAre("60"));
  EXPECT_THAT(Uris("a"), ElementsAre("sip:keep@h"));  // nothing changed
  reply = Register("a", "c", 3, {"Contact: <sip:new@h>", "Expires: 86400"});
  EXPECT_THAT(reply.Header("Contact"),
              ElementsAre("<sip:keep@h>;expires=3600", "<sip:new@h>;expires=3600"));
  // 0 is a removal, not a too-brief interval.
  EXPECT_EQ(Register("a", "c", 4, {"Contact: <sip:new@h>;expires=0"}).code, 200);
}

TEST_F(RegistrarTest, MaxContacts) {
  Init({}, {{"max_contacts", int64_t{2}}});
  ASSERT_EQ(Register("a", "c", 1, {"Contact: <sip:1@h>, <sip:2@h>"}).code, 200);
  auto reply = Register("a", "c", 2, {"Contact: <sip:3@h>"});
  EXPECT_EQ(reply.code, 503);
  EXPECT_THAT(reply.Header("P-Registrar-Error"), ElementsAre("Too many registered contacts"));
  EXPECT_THAT(Uris("a"), ElementsAre("sip:1@h", "sip:2@h"));
  EXPECT_EQ(Register("b", "c", 1, {"Contact: <sip:1@h>, <sip:2@h>, <sip:3@h>"}).code, 503);
  EXPECT_THAT(Uris("b"), IsEmpty());
  // Refreshing, or replacing one binding by another, stays within the limit.
  EXPECT_EQ(Register("a", "c", 3, {"Contact: <sip:1@h>, <sip:2@h>"}).code, 200);
  EXPECT_EQ(Register("a", "c", 4, {"Contact: <sip:1@h>;expires=0, <sip:3@h>"}).code, 200);
  EXPECT_THAT(Uris("a"), ElementsAre("sip:2@h", "sip:3@h"));
}

TEST_F(RegistrarTest, ValidHostsAndPortsAreAccepted) {
  Init();
  EXPECT_EQ(Register("a", "c", 1,
                     {"Contact: <sip:1@host-1.example.com.:5060>, <sip:2@[2001:db8::1]:5070>, "
                      "<sip:3@192.0.2.1>, <sip:4@localhost>"})
                .code,
            200);
  EXPECT_EQ(Uris("a").size(), 4u);
}

TEST_F(RegistrarTest, MaxContactsTotalAnswers503WithRetryAfter) {
  Init({}, {{"max_contacts_total", int64_t{3}}, {"retry_after", int64_t{30}}});
  ASSERT_EQ(Register("a", "c", 1, {"Contact: <sip:1@h>, <sip:2@h>"}).code, 200);
  ASSERT_EQ(Register("b", "c", 1, {"Contact: <sip:1@h>"}).code, 200);
  auto reply = Register("c", "c", 1, {"Contact: <sip:1@h>"});
  EXPECT_EQ(reply.code, 503);
  EXPECT_THAT(reply.Header("Retry-After"), ElementsAre("30"));
  EXPECT_THAT(reply.Header("P-Registrar-Error"), ElementsAre("Server registration limit reached"));
  EXPECT_THAT(Uris("c"), IsEmpty());
  // Refreshes and removals still work at the limit, and free room for others.
  EXPECT_EQ(Register("a", "c", 2, {"Contact: <sip:1@h>, <sip:2@h>"}).code, 200);
  EXPECT_EQ(Register("b", "c", 2, {"Contact: <sip:1@h>;expires=0"}).code, 200);
  EXPECT_EQ(Register("c", "c", 2, {"Contact: <sip:1@h>"}).code, 200);
  EXPECT_EQ(Stat("location-contacts"), 3u);
}

// Issue 9: one source address cannot fill the table (usrloc max_contacts_per_source):
// counted per source by every path that adds or removes contacts (REGISTER, Expires 0,
// ul_rm, expiry).
TEST_F(RegistrarTest, MaxContactsPerSourceAnswers503WithRetryAfter) {
  Init({{"max_contacts_per_source", int64_t{2}}},
       {{"store_received", int64_t{1}}, {"retry_after", int64_t{20}}});
  auto from = [&](std::string_view user, uint32_t cseq, std::string contact, uint16_t port) {
    return Send(MakeRegister(user, "c", cseq, {"Contact: " + contact}), "203.0.113.5", port);
  };
  ASSERT_EQ(from("a", 1, "<sip:a@192.168.1.20:5060>", 40000).code, 200);
  ASSERT_EQ(from("b", 1, "<sip:b@192.168.1.21:5060>", 40001).code, 200);
  EXPECT_EQ(ul_.usrloc().ContactsFromSource("203.0.113.5"), 2u);
  auto reply = from("c", 1, "<sip:c@192.168.1.22:5060>", 40002);
  EXPECT_EQ(reply.code, 503);
  EXPECT_THAT(reply.Header("Retry-After"), ElementsAre("20"));
  EXPECT_THAT(reply.Header("P-Registrar-Error"),
              ElementsAre("Too many registrations from this address"));
  EXPECT_THAT(Uris("c"), IsEmpty());
  // Another address is not affected; a contact that is its own source counts for it.
  EXPECT_EQ(
      Send(MakeRegister("c", "c", 1, {"Contact: <sip:c@198.51.100.7:5060>"}), "198.51.100.7", 5060)
          .code,
      200);
  EXPECT_EQ(ul_.usrloc().ContactsFromSource("198.51.100.7"), 1u);
  // Refreshing at the limit works; Expires 0 frees room.
  EXPECT_EQ(from("a", 2, "<sip:a@192.168.1.20:5060>", 40000).code, 200);
  EXPECT_EQ(from("a", 3, "<sip:a@192.168.1.20:5060>;expires=0", 40000).code, 200);
  EXPECT_EQ(from("d", 1, "<sip:d@192.168.1.23:5060>", 40003).code, 200);
  EXPECT_EQ(from("e", 1, "<sip:e@192.168.1.24:5060>", 40004).code, 503);
  // So do ul_rm and expiry.
  EXPECT_THAT(Mi("ul_rm", {"location", "b"}), HasSubstr("200 OK"));
  EXPECT_EQ(from("e", 1, "<sip:e@192.168.1.24:5060>", 40004).code, 200);
  now_ += 7200;
  ul_.usrloc().RunTimer();
  EXPECT_EQ(ul_.usrloc().ContactsFromSource("203.0.113.5"), 0u);
  EXPECT_EQ(ul_.usrloc().ContactsFromSource("198.51.100.7"), 0u);
  EXPECT_EQ(from("f", 1, "<sip:f@192.168.1.25:5060>", 40005).code, 200);
}

TEST_F(RegistrarTest, PathReceivedInstanceAreKept) {
  Init({}, {{"store_received", int64_t{1}}});
  auto reply =
      Send(MakeRegister("a", "c", 1,
                        {"Contact: <sip:a@192.168.1.20:5060>;+sip.instance=\"<urn:uuid:1>\"",
                         "Path: <sip:edge1.example.com;lr>", "Path: <sip:edge2.example.com;lr>",
                         "Supported: path"}),
           "203.0.113.5", 40000);
  EXPECT_EQ(reply.code, 200);
  EXPECT_THAT(
      reply.Header("Contact"),
      ElementsAre("<sip:a@192.168.1.20:5060>;expires=3600;received=\"sip:203.0.113.5:40000\""
                  ";+sip.instance=\"<urn:uuid:1>\""));
  EXPECT_THAT(reply.Header("Path"),
              ElementsAre("<sip:edge1.example.com;lr>,<sip:edge2.example.com;lr>"));
  const std::string dump = Mi("ul_dump");
  EXPECT_THAT(dump,
              HasSubstr("\t\t\tReceived:: sip:203.0.113.5:40000\n"
                        "\t\t\tPath:: <sip:edge1.example.com;lr>,<sip:edge2.example.com;lr>\n"));
  EXPECT_THAT(dump, HasSubstr("\t\t\tSIP_instance:: <urn:uuid:1>\n"));
  EXPECT_THAT(Mi("ul_show_contact", {"location", "a"}),
              HasSubstr(";received=<sip:203.0.113.5:40000>;path=<<sip:edge1.example.com;lr>,"));
  // Without Supported: path, the Path is stored but not echoed.
  reply = Register("b", "c", 1, {"Contact: <sip:b@127.0.0.1:5070>", "Path: <sip:e;lr>"});
  EXPECT_THAT(reply.Header("Path"), IsEmpty());
  // Same address as the source: no received.
  EXPECT_THAT(reply.Header("Contact"), ElementsAre("<sip:b@127.0.0.1:5070>;expires=3600"));
}

TEST_F(RegistrarTest, UseDomainMakesAorUserAtHost) {
  Init({{"use_domain", int64_t{1}}});
  std::string text = MakeRegister("alice", "c", 1, {"Contact: <sip:a@h>"});
  text.replace(text.find("To: <sip:alice@example.com>"), 27, "To: <sip:alice@EXAMPLE.com>");
  EXPECT_EQ(Send(text).code, 200);
  EXPECT_THAT(Uris("alice@example.com"), ElementsAre("sip:a@h"));
  EXPECT_THAT(Mi("ul_show_contact", {"location", "alice@example.com"}), HasSubstr("200 OK"));
}

// A malformed or refused REGISTER gets its 4xx and changes nothing.
struct BadCase {
  std::string name;
  std::string text;
  int code;
  std::string error;
};

TEST_F(RegistrarTest, MalformedRegisters) {
  Init();
  ASSERT_EQ(Register("alice", "c0", 1, {"Contact: <sip:existing@h>"}).code, 200);
  const std::string dump_before = Mi("ul_dump");
  auto without = [](std::string text, std::string_view header_start) {
    const size_t at = text.find(header_start);
    text.erase(at, text.find("\r\n", at) + 2 - at);
    return text;
  };
  auto with = [](std::vector<std::string> headers) {
    return MakeRegister("alice", "c1", 5, std::move(headers));
  };
  const std::string plain = with({"Contact: <sip:new@h>"});
  std::string bad_cseq = plain;
  bad_cseq.replace(bad_cseq.find("CSeq: 5 REGISTER"), 16, "CSeq: 5x REGISTER");
  std::string wrong_method = plain;
  wrong_method.replace(wrong_method.find("CSeq: 5 REGISTER"), 16, "CSeq: 5 INVITE");
  std::string tel_to = plain;
  tel_to.replace(tel_to.find("To: <sip:alice@example.com>"), 27, "To: <tel:+15551234>");
  std::string to_bad_host = plain;
  to_bad_host.replace(to_bad_host.find("To: <sip:alice@example.com>"), 27,
                      "To: <sip:alice@exa\x01mple.com>");
  std::string userless_to = plain;
  userless_to.replace(userless_to.find("To: <sip:alice@example.com>"), 27, "To: <sip:example.com>");
  const std::vector<BadCase> cases = {
      {"no To", without(plain, "To: "), 400, "To header not found"},
      {"tel To", tel_to, 400, "Error while parsing AOR"},
      {"To without user", userless_to, 400, "Error while parsing AOR"},
      {"no Call-ID", without(plain, "Call-ID: "), 400, "Call-ID header not found"},
      {"no CSeq", without(plain, "CSeq: "), 400, "CSeq header not found"},
      {"CSeq not a number", bad_cseq, 400, "Invalid CSeq number"},
      {"CSeq method", wrong_method, 400, "Invalid CSeq number"},
      {"Expires garbage", with({"Contact: <sip:new@h>", "Expires: soon"}), 400,
       "Expires parse error"},
      {"Expires negative", with({"Contact: <sip:new@h>", "Expires: -1"}), 400,
       "Expires parse error"},
      {"expires param garbage", with({"Contact: <sip:new@h>;expires=1h"}), 400,
       "Expires parse error"},
      {"q above 1", with({"Contact: <sip:new@h>;q=1.5"}), 400, "Invalid q value"},
      {"q garbage", with({"Contact: <sip:new@h>;q=high"}), 400, "Invalid q value"},
      {"star with expires", with({"Contact: *", "Expires: 60"}), 400,
       "* used in contact and expires is not zero"},
      {"star without Expires", with({"Contact: *"}), 400,
       "* used in contact and expires is not zero"},
      {"star and contact", with({"Contact: *", "Contact: <sip:new@h>", "Expires: 0"}), 400,
       "* used in contact and more than 1 contact"},
      {"contact too long", with({absl::StrCat("Contact: <sip:", std::string(600, 'x'), "@h>")}),
       400, "Contact/received too long"},
      {"unsupported Require", with({"Contact: <sip:new@h>", "Require: gruu, path"}), 420,
       "Unsupported extension required"},
      {"too brief", with({"Contact: <sip:new@h>;expires=1"}), 423, "Interval too brief"},
      // Hosts and ports that are not RFC 3261's (issue 9, hole 3: stored as they came).
      {"contact host byte", with({"Contact: <sip:x@127.0.0.\xbb:5999>"}), 400,
       "Bad host or port in Contact"},
      {"contact port byte",
       with({"Contact: <sip:x@127.0.0.1:59\xd6"
             "9>"}),
       400, "Bad host or port in Contact"},
      {"contact port range", with({"Contact: <sip:x@127.0.0.1:70000>"}), 400,
       "Bad host or port in Contact"},
      {"contact bad IPv4", with({"Contact: <sip:x@127.0.0.999>"}), 400,
       "Bad host or port in Contact"},
      {"contact label dash", with({"Contact: <sip:x@-host.example>"}), 400,
       "Bad host or port in Contact"},
      {"to host byte", to_bad_host, 400, "Bad host or port in AOR"},
  };
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto reply = Send(c.text);
    EXPECT_EQ(reply.code, c.code);
    EXPECT_THAT(reply.Header("P-Registrar-Error"), ElementsAre(c.error));
    EXPECT_THAT(reply.Header("Contact"), IsEmpty());
  }
  EXPECT_THAT(Send(with({"Contact: <sip:new@h>", "Require: gruu, path"})).Header("Unsupported"),
              ElementsAre("gruu"));
  EXPECT_EQ(Mi("ul_dump"), dump_before);
  EXPECT_EQ(Stat("rejected_regs"), cases.size() + 1);
  EXPECT_EQ(Stat("location-contacts"), 1u);
}

TEST_F(RegistrarTest, WriteThroughAnswersAfterCommit) {
  Init({{"db_mode", int64_t{1}}});
  ASSERT_EQ(Register("alice", "c", 1, {"Contact: <sip:a@h>"}).code, 200);
  // The reply was produced: the row must be committed already.
  auto store = usrloc::SqliteStore::Open({.path = core_.run_dir() + "/usrloc.sqlite"});
  ASSERT_TRUE(store.ok());
  const auto rows = (*store)->Load("location").value();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].aor, "alice");
  EXPECT_THAT(Mi("ul_dump"), HasSubstr("State:: CS_SYNC"));
}

TEST_F(RegistrarTest, TheDatabaseWritersOwnTimerCopiesTheWalIntoTheFile) {
  Init({{"db_mode", int64_t{1}}});
  // usrloc did not schedule it: the writer of its file did, once.
  const std::vector<std::function<void()>> writer_timers = core_.TimersNamed("db-writer");
  ASSERT_EQ(writer_timers.size(), 1u);
  ASSERT_EQ(Register("alice", "c", 1, {"Contact: <sip:a@h>"}).code, 200);
  // What the database file alone holds (a copy without its WAL).
  const std::string path = core_.run_dir() + "/usrloc.sqlite";
  auto file_alone = [&]() -> size_t {
    ::sipd::testing::DatabaseFileCopy copy(path, core_.run_dir() + "/file-alone.sqlite");
    auto store = usrloc::SqliteStore::Open({.path = copy.path()});
    EXPECT_TRUE(store.ok());
    return store.ok() ? (*store)->Load("location").value().size() : 0;
  };
  EXPECT_EQ(file_alone(), 0u);  // committed, still only in the WAL
  writer_timers[0]();
  EXPECT_EQ(file_alone(), 1u);
}

TEST_F(RegistrarTest, ModuleNeedsUsrlocAndChecksParameters) {
  testing::FakeCore core;
  RegistrarModule alone;
  absl::Status s = alone.Init(core);
  EXPECT_TRUE(absl::IsFailedPrecondition(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("usrloc"));
  RegistrarModule m;
  EXPECT_FALSE(m.SetParam("max_contacts", int64_t{-1}).ok());
  EXPECT_FALSE(m.SetParam("max_contacts", std::string("2")).ok());
  EXPECT_FALSE(m.SetParam("bogus", int64_t{1}).ok());
  EXPECT_TRUE(m.SetParam("min_expires", int64_t{0}).ok());
}

TEST_F(RegistrarTest, StatisticsGroup) {
  Init({}, {{"max_contacts", int64_t{5}}});
  EXPECT_EQ(Mi("get_statistics", {"registrar:"}),
            "200 OK\nregistrar:max_expires:: 0\nregistrar:max_contacts:: 5\n"
            "registrar:default_expire:: 3600\nregistrar:accepted_regs:: 0\n"
            "registrar:rejected_regs:: 0\n\n");
}

}  // namespace
}  // namespace sipd::registrar
