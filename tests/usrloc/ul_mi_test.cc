// The ul_* MI commands through the one Dispatch path, checked against the OpenSIPS 1.11
// text layout (spec 2, 8.1) byte for byte.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "registry/dispatcher.h"
#include "registry/reply_writer.h"
#include "registry/text_format.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "tests/usrloc/test_support.h"

namespace sipd::usrloc {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kNow = 1700000000;

// FIFO-like streaming writer: an empty line after every flush and at the end.
class TextWriter : public mi::ReplyWriter {
 public:
  void WriteStatus(const mi::Reply& reply) override {
    mi::AppendStatusLine(out, reply.code, reply.reason);
  }
  void WriteNode(const mi::Node& node, int depth) override {
    mi::AppendNodeLine(out, node, depth, "\t");
  }
  void EndFlush() override {
    out += "\n";
    ++flushes;
  }
  void EndReply() override { out += "\n"; }
  std::string out;
  int flushes = 0;
};

class UlMiTest : public ::testing::Test {
 protected:
  void Init(std::vector<std::pair<std::string, ParamValue>> params = {}) {
    module_ = std::make_unique<UsrlocModule>();
    for (auto& [name, value] : params) ASSERT_TRUE(module_->SetParam(name, value).ok()) << name;
    module_->set_clock([this] { return now_; });
    core_.AddModule(module_.get());
    ASSERT_TRUE(module_->Init(core_).ok());
  }

  mi::DispatchResult Run(std::string command, std::vector<std::string> args = {},
                         mi::ReplyWriter* writer = nullptr) {
    mi::Request request{.command = std::move(command), .args = {}, .args_error = absl::OkStatus()};
    for (auto& a : args) request.args.push_back(mi::Argument{"", std::move(a)});
    return core_.NewDispatcher({})->Run(request, writer);
  }
  // The FIFO text of a command run without streaming.
  std::string Text(std::string command, std::vector<std::string> args = {}) {
    mi::DispatchResult r = Run(std::move(command), std::move(args));
    if (r.outcome != mi::Outcome::kReply) return absl::StrCat("<outcome> ", r.reply.reason);
    return mi::RenderText(r.reply, "\t", true);
  }
  std::string Status(std::string command, std::vector<std::string> args = {}) {
    mi::DispatchResult r = Run(std::move(command), std::move(args));
    return absl::StrCat(r.reply.code, " ", r.reply.reason);
  }
  Usrloc& ul() { return module_->usrloc(); }

  int64_t now_ = kNow;
  testing::FakeCore core_;
  std::unique_ptr<UsrlocModule> module_;
};

TEST_F(UlMiTest, CommandsAreDeclaredInOpenSipsOrder) {
  Init();
  std::vector<std::string> names;
  for (const auto& c : core_.mi().commands()) {
    if (c->module() == "usrloc") names.push_back(c->name());
  }
  // 1.11's seven, then sipd's own two (behind the typed ListContacts and GetContacts).
  EXPECT_THAT(names,
              ::testing::ElementsAre("ul_rm", "ul_rm_contact", "ul_dump", "ul_flush", "ul_add",
                                     "ul_show_contact", "ul_sync", "ul_dump_page", "ul_dump_aor"));
  const mi::Command* dump = core_.mi().Find("ul_dump");
  EXPECT_TRUE(dump->has_flag(mi::kStreaming));
  EXPECT_TRUE(core_.mi().Find("ul_flush")->has_flag(mi::kNoInput));
  EXPECT_TRUE(dump->help().empty());  // spec 8: no help texts
}

TEST_F(UlMiTest, AddThenDumpIsByteExact) {
  Init();
  EXPECT_EQ(Text("ul_add", {"location", "alice@example.com", "sip:alice@192.0.2.10:5060", "3600",
                            "1.00", "0", "0", "0", "4294967295"}),
            "200 OK\n\n");
  now_ += 19;
  EXPECT_EQ(Text("ul_dump"),
            "200 OK\n"
            "Domain:: location table=512 records=1\n"
            "\tAOR:: alice\n"
            "\t\tContact:: sip:alice@192.0.2.10:5060 Q=1\n"
            "\t\t\tExpires:: 3581\n"
            "\t\t\tCallid:: dfjrewr12386fd6-343@opensips.mi\n"
            "\t\t\tCseq:: 1\n"
            "\t\t\tUser-agent:: OpenSIPS MI Server\n"
            "\t\t\tState:: CS_NEW\n"
            "\t\t\tFlags:: 0\n"
            "\t\t\tCflags:: \n"
            "\t\t\tMethods:: 4294967295\n"
            "\n");
  EXPECT_EQ(Text("ul_dump", {"BRIEF"}),
            "200 OK\nDomain:: location table=512 records=1\n\tAOR:: alice\n\n");
  // Any other single argument is a full dump; two are too many.
  EXPECT_THAT(Text("ul_dump", {"full"}), HasSubstr("Contact:: "));
  EXPECT_EQ(Text("ul_dump", {"brief", "x"}), "400 Too few or too many arguments\n\n");
  // The reply root and the Domain/AOR nodes are arrays (mi_json hint).
  mi::DispatchResult r = Run("ul_dump");
  EXPECT_TRUE(r.reply.root.is_array);
  EXPECT_TRUE(r.reply.root.kids[0]->is_array);
  EXPECT_TRUE(r.reply.root.kids[0]->kids[0]->is_array);
}

TEST_F(UlMiTest, DumpShowsPermanentExpiredQAndFlags) {
  Init({{"hash_size", int64_t{4}}});
  ASSERT_EQ(Status("ul_add", {"location", "bob", "sip:b1@h", "0", "0.5", "x", "3", "5", "9"}),
            "200 OK");
  ASSERT_EQ(Status("ul_add", {"location", "bob", "sip:b2@h", "10", "0.125", "x", "0", "0", "1"}),
            "200 OK");
  now_ += 11;
  const std::string dump = Text("ul_dump");
  EXPECT_THAT(dump, HasSubstr("Domain:: location table=16 records=1\n"));
  EXPECT_THAT(dump, HasSubstr("\t\tContact:: sip:b1@h Q=0.5\n\t\t\tExpires:: permanent\n"));
  EXPECT_THAT(dump, HasSubstr("\t\tContact:: sip:b2@h Q=0.125\n\t\t\tExpires:: expired\n"));
  EXPECT_THAT(dump, HasSubstr("\t\t\tFlags:: 3\n\t\t\tCflags:: 0 2\n\t\t\tMethods:: 9\n"));
}

TEST_F(UlMiTest, ShowContactFormat) {
  Init();
  ASSERT_EQ(Status("ul_add", {"location", "alice", "sip:alice@192.0.2.10:5060", "3600", "1", "0",
                              "0", "10", "4294967295"}),
            "200 OK");
  now_ += 19;
  EXPECT_EQ(Text("ul_show_contact", {"location", "alice@example.com"}),
            "200 OK\nContact:: <sip:alice@192.0.2.10:5060>;q=1;expires=3581;flags=0x0;"
            "cflags=0xA;socket=<NULL>;callid=<dfjrewr12386fd6-343@opensips.mi>;"
            "methods=0xFFFFFFFF;user_agent=<OpenSIPS MI Server>\n\n");
  EXPECT_TRUE(Run("ul_show_contact", {"location", "alice"}).reply.root.is_array);
  // A permanent contact shows a negative expires (contact_expiry - now).
  ASSERT_EQ(Status("ul_add", {"location", "perm", "sip:p@h", "0", "0", "0", "0", "0", "0"}),
            "200 OK");
  EXPECT_THAT(Text("ul_show_contact", {"location", "perm"}),
              HasSubstr(absl::StrCat(";q=0;expires=", -(kNow + 19), ";")));
}

TEST_F(UlMiTest, ShowContactErrors) {
  Init();
  EXPECT_EQ(Text("ul_show_contact", {"nosuch", "alice"}), "404 Table not found\n\n");
  EXPECT_EQ(Text("ul_show_contact", {"location", "alice"}), "404 AOR not found\n\n");
  EXPECT_EQ(Text("ul_show_contact", {"location"}), "400 Too few or too many arguments\n\n");
  ASSERT_EQ(Status("ul_add", {"location", "alice", "sip:a@h", "5", "1", "0", "0", "0", "0"}),
            "200 OK");
  now_ += 5;  // expired (not yet swept): the AOR exists but has no valid contact
  EXPECT_EQ(Text("ul_show_contact", {"location", "alice"}), "404 AOR has no contact\n\n");
}

TEST_F(UlMiTest, UseDomainRequiresDomainInAor) {
  Init({{"use_domain", int64_t{1}}});
  EXPECT_EQ(Status("ul_show_contact", {"location", "alice"}), "400 Domain missing in AOR");
  EXPECT_EQ(Status("ul_rm", {"location", "alice"}), "400 Domain missing in AOR");
  EXPECT_EQ(Status("ul_rm_contact", {"location", "alice", "sip:a@h"}), "400 Domain missing in AOR");
  EXPECT_EQ(Status("ul_add", {"location", "alice", "sip:a@h", "0", "1", "0", "0", "0", "0"}),
            "400 Domain missing in AOR");
  EXPECT_EQ(
      Status("ul_add", {"location", "alice@example.com", "sip:a@h", "0", "1", "0", "0", "0", "0"}),
      "200 OK");
  EXPECT_THAT(Text("ul_dump", {"brief"}), HasSubstr("AOR:: alice@example.com\n"));
  // Table errors come first.
  EXPECT_EQ(Status("ul_rm", {"aliases", "alice"}), "404 Table not found");
}

TEST_F(UlMiTest, AddArgumentErrors) {
  Init();
  EXPECT_EQ(Status("ul_add", {"location", "a", "sip:a@h", "0", "1", "0", "0", "0"}),
            "400 Too few or too many arguments");
  EXPECT_EQ(Status("ul_add", {"location", "a", "sip:a@h", "0", "1", "0", "0", "0", "0", "0"}),
            "400 Too few or too many arguments");
  EXPECT_EQ(Status("ul_add", {"xx", "a", "sip:a@h", "bad", "1", "0", "0", "0", "0"}),
            "404 Table not found");
  const std::vector<std::vector<std::string>> bad = {
      {"location", "a", "sip:a@h", "-1", "1", "0", "0", "0", "0"},
      {"location", "a", "sip:a@h", "10s", "1", "0", "0", "0", "0"},
      {"location", "a", "sip:a@h", "0", "1.5", "0", "0", "0", "0"},
      {"location", "a", "sip:a@h", "0", "0.1234", "0", "0", "0", "0"},
      {"location", "a", "sip:a@h", "0", "x", "0", "0", "0", "0"},
      {"location", "a", "sip:a@h", "0", "1", "0", "0x1", "0", "0"},
      {"location", "a", "sip:a@h", "0", "1", "0", "0", "a", "0"},
      {"location", "a", "sip:a@h", "0", "1", "0", "0", "0", "4294967296"},
      // A NUL byte (possible over gRPC) is no part of a SIP URI.
      {"location", "a", std::string("sip:a\0@h", 8), "0", "1", "0", "0", "0", "0"},
  };
  for (const auto& args : bad) {
    EXPECT_EQ(Status("ul_add", args), "400 Bad parameter") << absl::StrJoin(args, " ");
  }
  EXPECT_EQ(Text("ul_dump"), "200 OK\nDomain:: location table=512 records=0\n\n");
}

TEST_F(UlMiTest, AddUpdatesExistingContactKeepingCseq) {
  Init();
  ASSERT_TRUE(ul().Update(*ul().FindTable("location"), "alice",
                          [](bool, const std::vector<ContactInfo>&, std::vector<Edit>& edits) {
                            ContactInfo c;
                            c.uri = "sip:a@h";
                            c.callid = "reg-callid";
                            c.cseq = 77;
                            c.expires = kNow + 100;
                            c.socket = "udp:127.0.0.1:5060";
                            edits.push_back(Edit{Edit::Kind::kUpsert, c});
                            return absl::OkStatus();
                          })
                  .ok());
  ASSERT_EQ(Status("ul_add", {"location", "alice", "sip:a@h", "0", "0.5", "0", "0", "0", "1"}),
            "200 OK");
  const std::string dump = Text("ul_dump");
  EXPECT_THAT(dump, HasSubstr("Contact:: sip:a@h Q=0.5\n\t\t\tExpires:: permanent\n\t\t\t"
                              "Callid:: dfjrewr12386fd6-343@opensips.mi\n\t\t\tCseq:: 77\n"));
  EXPECT_THAT(dump, HasSubstr("Socket:: udp:127.0.0.1:5060\n"));
}

TEST_F(UlMiTest, RmAndRmContact) {
  Init();
  for (const char* uri : {"sip:a1@h", "sip:a2@h"}) {
    ASSERT_EQ(Status("ul_add", {"location", "alice", uri, "100", "1", "0", "0", "0", "0"}),
              "200 OK");
  }
  EXPECT_EQ(Status("ul_rm_contact", {"location", "alice", "sip:a3@h"}), "404 Contact not found");
  EXPECT_EQ(Status("ul_rm_contact", {"location", "bob", "sip:a1@h"}), "404 AOR not found");
  EXPECT_EQ(Status("ul_rm_contact", {"nosuch", "bob", "sip:a1@h"}), "404 Table not found");
  EXPECT_EQ(Status("ul_rm_contact", {"location", "alice"}), "400 Too few or too many arguments");
  // Compared exactly.
  EXPECT_EQ(Status("ul_rm_contact", {"location", "alice", "SIP:a1@h"}), "404 Contact not found");
  EXPECT_EQ(Status("ul_rm_contact", {"location", "alice", "sip:a1@h"}), "200 OK");
  EXPECT_EQ(core_.stats().Value("location-contacts").value(), 1u);
  EXPECT_EQ(Status("ul_rm", {"location", "alice@anything"}), "200 OK");
  EXPECT_EQ(Status("ul_show_contact", {"location", "alice"}), "404 AOR not found");
  // Removing an AOR that does not exist is not an error (as OpenSIPS).
  EXPECT_EQ(Status("ul_rm", {"location", "alice"}), "200 OK");
  EXPECT_EQ(Status("ul_rm", {"location"}), "400 Too few or too many arguments");
  EXPECT_EQ(Status("ul_rm", {"nosuch", "alice"}), "404 Table not found");
  EXPECT_EQ(core_.stats().Value("registered_users").value(), 0u);
}

TEST_F(UlMiTest, StatisticsFollowTheTable) {
  Init();
  EXPECT_EQ(Text("get_statistics", {"usrloc:"}),
            "200 OK\nusrloc:registered_users:: 0\nusrloc:location-users:: 0\n"
            "usrloc:location-contacts:: 0\nusrloc:location-expires:: 0\n\n");
  ASSERT_EQ(Status("ul_add", {"location", "a", "sip:1@h", "10", "1", "0", "0", "0", "0"}),
            "200 OK");
  ASSERT_EQ(Status("ul_add", {"location", "a", "sip:2@h", "100", "1", "0", "0", "0", "0"}),
            "200 OK");
  ASSERT_EQ(Status("ul_add", {"location", "b", "sip:3@h", "10", "1", "0", "0", "0", "0"}),
            "200 OK");
  EXPECT_EQ(Text("get_statistics", {"usrloc:"}),
            "200 OK\nusrloc:registered_users:: 2\nusrloc:location-users:: 2\n"
            "usrloc:location-contacts:: 3\nusrloc:location-expires:: 0\n\n");
  now_ += 10;
  EXPECT_EQ(Status("ul_flush"), "200 OK");  // runs the timer work: expiry
  EXPECT_EQ(Text("get_statistics", {"usrloc:"}),
            "200 OK\nusrloc:registered_users:: 1\nusrloc:location-users:: 1\n"
            "usrloc:location-contacts:: 1\nusrloc:location-expires:: 2\n\n");
  // users/contacts are NO_RESET, expires resets.
  EXPECT_EQ(Status("reset_statistics", {"location-users", "location-expires"}), "200 OK");
  EXPECT_EQ(Text("get_statistics", {"location-users", "location-expires"}),
            "200 OK\nusrloc:location-users:: 1\nusrloc:location-expires:: 0\n\n");
  // The timer registered by the module does the same work.
  ASSERT_EQ(core_.timers().size(), 1u);
  EXPECT_EQ(core_.timers()[0].first, "ul-timer");
  now_ += 1000;
  core_.RunTimers();
  EXPECT_EQ(core_.stats().Value("location-contacts").value(), 0u);
  EXPECT_EQ(core_.stats().Value("location-expires").value(), 1u);
}

TEST_F(UlMiTest, SyncWithoutDatabase) {
  Init();
  for (auto args : std::vector<std::vector<std::string>>{{}, {"location"}, {"x", "y", "z"}}) {
    EXPECT_EQ(Text("ul_sync", args), "200 Contacts already synced\n\n");
  }
}

TEST_F(UlMiTest, SyncWithDatabase) {
  Init({{"db_mode", int64_t{2}}});
  EXPECT_EQ(Status("ul_sync"), "400 Too few or too many arguments");
  // The declaration (table [aor]) is checked before the table is looked up; 1.11 looks
  // the table up first and would say 404 here.
  EXPECT_EQ(Status("ul_sync", {"nosuch", "a", "b"}), "400 Too few or too many arguments");
  EXPECT_EQ(Status("ul_sync", {"nosuch", "a"}), "404 Table not found");
  EXPECT_EQ(Status("ul_sync", {"location", "a", "b"}), "400 Too few or too many arguments");
  EXPECT_EQ(Status("ul_sync", {"location", "alice"}), "404 AOR not found");
  ASSERT_EQ(Status("ul_add", {"location", "alice", "sip:1@h", "100", "1", "0", "0", "0", "0"}),
            "200 OK");
  EXPECT_THAT(Text("ul_dump"), HasSubstr("State:: CS_NEW"));
  EXPECT_EQ(Status("ul_sync", {"location", "alice"}), "200 OK");
  EXPECT_THAT(Text("ul_dump"), HasSubstr("State:: CS_SYNC"));
  EXPECT_EQ(Status("ul_sync", {"location"}), "200 OK");
  EXPECT_EQ(Status("ul_sync", {"location", "alice@example.com"}), "200 OK");
}

TEST_F(UlMiTest, DumpFlushesEveryFiftyAors) {
  Init();
  for (int i = 0; i < 120; ++i) {
    ASSERT_EQ(Status("ul_add", {"location", absl::StrCat("u", 1000 + i), "sip:x@h", "0", "1", "0",
                                "0", "0", "0"}),
              "200 OK");
  }
  TextWriter writer;
  mi::DispatchResult r = Run("ul_dump", {"brief"}, &writer);
  ASSERT_EQ(r.outcome, mi::Outcome::kReply);
  EXPECT_EQ(writer.flushes, 2);
  // The first Domain line was written by the first flush, before `records` existed.
  EXPECT_THAT(writer.out, ::testing::StartsWith("200 OK\nDomain:: location table=512\n\tAOR:: "));
  const std::vector<std::string> lines = absl::StrSplit(writer.out, '\n');
  // status + Domain + 120 AORs, two flush lines, final empty line (+ split tail).
  ASSERT_EQ(lines.size(), 1u + 1u + 120u + 2u + 1u + 1u);
  EXPECT_EQ(lines[2 + 50], "");           // after the 50th AOR
  EXPECT_EQ(lines[2 + 50 + 1 + 50], "");  // after the 100th
  // A whole tree (gRPC Execute) is the tree the streaming transports show: no records.
  EXPECT_EQ(Run("ul_dump", {"brief"}).reply.root.kids.front()->attributes,
            (std::vector<mi::Attribute>{{"table", "512"}}));
}

TEST_F(UlMiTest, DumpWithSeveralDomainsMatchesOpenSipsFlushing) {
  Init();
  ASSERT_TRUE(ul().AddTable("aliases").ok());
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(Status("ul_add", {"location", absl::StrCat("u", 100 + i), "sip:x@h", "0", "1", "0",
                                "0", "0", "0"}),
              "200 OK");
  }
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(Status("ul_add",
                     {"aliases", absl::StrCat("a", i), "sip:y@h", "0", "1", "0", "0", "0", "0"}),
              "200 OK");
  }
  TextWriter writer;
  Run("ul_dump", {"brief"}, &writer);
  EXPECT_EQ(writer.flushes, 1);
  EXPECT_THAT(writer.out, HasSubstr("Domain:: location table=512\n"));
  // Later domains are only written at the end, so they keep `records`.
  EXPECT_THAT(writer.out, HasSubstr("\nDomain:: aliases table=512 records=3\n\tAOR:: a"));
  EXPECT_THAT(writer.out, Not(HasSubstr("records=60")));
  EXPECT_EQ(core_.stats().Value("aliases-users").value(), 3u);
}

TEST_F(UlMiTest, ParameterErrors) {
  UsrlocModule m;
  EXPECT_THAT(std::string(m.SetParam("db_mode", int64_t{3}).message()), HasSubstr("db_mode 3"));
  EXPECT_FALSE(m.SetParam("db_mode", int64_t{4}).ok());
  EXPECT_FALSE(m.SetParam("db_mode", std::string("1")).ok());
  EXPECT_FALSE(m.SetParam("hash_size", int64_t{0}).ok());
  EXPECT_FALSE(m.SetParam("timer_interval", int64_t{0}).ok());
  EXPECT_FALSE(m.SetParam("db_synchronous", std::string("sometimes")).ok());
  EXPECT_FALSE(m.SetParam("nope", int64_t{1}).ok());
  EXPECT_TRUE(m.SetParam("db_synchronous", std::string("FULL")).ok());
  EXPECT_TRUE(m.SetParam("db_url", std::string("sqlite:///tmp/x.sqlite")).ok());
}

}  // namespace
}  // namespace sipd::usrloc
