// usrloc + registrar in a real sipd: sipp registers phones over UDP, the MI (gRPC and
// FIFO) sees them, restarts keep them, expiry and ul_rm remove them, and a REGISTER
// flood while ul_dump streams corrupts nothing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_fixture.h"
#include "tests/support/sipd_harness.h"
#include "tests/tm/sip_peers.h"
#include "tests/usrloc/older_layout.h"

namespace sipd::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using namespace std::chrono_literals;

constexpr int kUsers = 20;  // rows of tests/sip/users.csv

std::string ModuleConfig(const std::string& usrloc_params,
                         const std::string& registrar_params = "") {
  return absl::StrCat(
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
      "loadmodule \"usrloc\"\n",
      usrloc_params, "loadmodule \"registrar\"\n", registrar_params);
}

// StartSipd(extra) uses `extra` as the whole extra_config (ModuleConfig(...) builds it).
class UsrlocSipTest : public SipdFixture {
 protected:
  UsrlocSipTest() : SipdFixture("sipd-ul-sip", nullptr, 20s) {}

  SippResult Sipp(const std::string& scenario, std::vector<std::string> args) {
    return RunSipp(sipd_->sip_port(), scenario, std::move(args), work_);
  }
  SippResult RegisterUsers(const std::string& csv = "users.csv", int calls = kUsers) {
    return Sipp("register.xml", {"-inf", ScenarioPath(csv), "-m", absl::StrCat(calls), "-r", "50"});
  }
  std::map<std::string, std::vector<std::string>> Dump() {
    return DumpContacts(mi_->Execute("ul_dump").reply);
  }
  std::string Fifo(const std::string& command, const std::vector<std::string>& args = {}) {
    auto client =
        legacy::FifoClient::Create(sipd_->tmp_dir() + "/sipd_fifo", sipd_->tmp_dir() + "/");
    if (!client.ok()) return client.status().ToString();
    auto reply = (*client)->Execute(command, args, 20s);
    return reply.ok() ? *reply : reply.status().ToString();
  }
};

TEST_F(UsrlocSipTest, SippRegistrationsAreWhatTheMiShows) {
  StartSipd(ModuleConfig(""));
  EXPECT_EQ(mi_->Statistics({"usrloc:"}),
            (std::map<std::string, uint64_t>{{"usrloc:registered_users", 0},
                                             {"usrloc:location-users", 0},
                                             {"usrloc:location-contacts", 0},
                                             {"usrloc:location-expires", 0}}));
  SippResult sipp = RegisterUsers();
  ASSERT_EQ(sipp.exit_code, 0) << sipp.output;

  auto dump = Dump();
  ASSERT_THAT(dump, SizeIs(kUsers));
  for (int i = 0; i < kUsers; ++i) {
    const std::string user = absl::StrFormat("user%02d", i);
    ASSERT_TRUE(dump.contains(user)) << user;
    ASSERT_THAT(dump[user], SizeIs(1));
    EXPECT_THAT(dump[user][0], ::testing::StartsWith(absl::StrCat("sip:", user, "@127.0.0.1:")));
  }
  EXPECT_EQ(mi_->Statistics({"usrloc:"}),
            (std::map<std::string, uint64_t>{{"usrloc:registered_users", kUsers},
                                             {"usrloc:location-users", kUsers},
                                             {"usrloc:location-contacts", kUsers},
                                             {"usrloc:location-expires", 0}}));

  // The same over ExecuteStream and FIFO.
  EXPECT_EQ(DumpContacts(mi_->ExecuteStream("ul_dump").reply), dump);
  const std::string brief = Fifo("ul_dump", {"brief"});
  EXPECT_THAT(brief, ::testing::StartsWith("200 OK\nDomain:: location table=512 records=20\n"));
  EXPECT_THAT(brief, HasSubstr("\tAOR:: user07\n"));

  auto show = mi_->Execute("ul_show_contact", {"location", "user05@example.com"});
  ASSERT_EQ(show.Status(), "200 OK");
  ASSERT_THAT(show.reply.root.kids, SizeIs(1));
  EXPECT_THAT(show.reply.root.kids[0]->value,
              ::testing::MatchesRegex("<sip:user05@127.0.0.1:[0-9]+>;q=;expires=3[56][0-9][0-9];"
                                      "flags=0x0;cflags=0x0;socket=<udp:127.0.0.1:[0-9]+>;"
                                      "callid=<.+>;methods=0x2F;user_agent=<sipp-register>"));
  EXPECT_EQ(Fifo("ul_show_contact", {"location", "nobody"}), "404 AOR not found\n\n");

  // ul_add (9 arguments) adds a static contact beside them.
  EXPECT_EQ(mi_->Execute("ul_add", {"location", "static@example.com", "sip:static@192.0.2.1", "0",
                                    "1.00", "0", "0", "0", "4294967295"})
                .Status(),
            "200 OK");
  EXPECT_THAT(Dump(), SizeIs(kUsers + 1));
  EXPECT_EQ(mi_->Statistics({"registered_users"}).at("usrloc:registered_users"), kUsers + 1u);

  // Unregister everybody: `*` + Expires: 0.
  sipp = Sipp("unregister.xml", {"-inf", ScenarioPath("users.csv"), "-m", "20", "-r", "50"});
  ASSERT_EQ(sipp.exit_code, 0) << sipp.output;
  EXPECT_THAT(Dump(), ElementsAre(::testing::Pair("static", ElementsAre("sip:static@192.0.2.1"))));
}

TEST_F(UsrlocSipTest, UlRmThenTheNextRegisterRecreates) {
  StartSipd(ModuleConfig(""));
  ASSERT_EQ(RegisterUsers().exit_code, 0);
  EXPECT_EQ(mi_->Execute("ul_rm", {"location", "user03@example.com"}).Status(), "200 OK");
  EXPECT_EQ(mi_->Execute("ul_show_contact", {"location", "user03"}).Status(), "404 AOR not found");
  EXPECT_THAT(Dump(), SizeIs(kUsers - 1));
  auto dump = Dump();
  const std::string contact = dump["user04"][0];
  EXPECT_EQ(mi_->Execute("ul_rm_contact", {"location", "user04", "sip:nope@h"}).Status(),
            "404 Contact not found");
  EXPECT_EQ(mi_->Execute("ul_rm_contact", {"location", "user04", contact}).Status(), "200 OK");
  EXPECT_THAT(Dump(), SizeIs(kUsers - 2));
  EXPECT_EQ(mi_->Execute("ul_rm", {"nosuch", "user03"}).Status(), "404 Table not found");
  EXPECT_EQ(mi_->Execute("ul_rm", {"location"}).Status(), "400 Too few or too many arguments");

  ASSERT_EQ(RegisterUsers("one_user.csv", 1).exit_code, 0);
  dump = Dump();
  EXPECT_THAT(dump, SizeIs(kUsers - 1));
  EXPECT_THAT(dump["user03"], SizeIs(1));
  EXPECT_EQ(mi_->Statistics({"location-contacts"}).at("usrloc:location-contacts"), kUsers - 1u);
}

TEST_F(UsrlocSipTest, ExpiredContactsAreRemovedInTime) {
  StartSipd(ModuleConfig("modparam(\"usrloc\", \"timer_interval\", 1)\n",
                         "modparam(\"registrar\", \"min_expires\", 1)\n"));
  ASSERT_EQ(RegisterUsers("short_lived.csv", 5).exit_code, 0);  // Expires: 2
  ASSERT_EQ(RegisterUsers("one_user.csv", 1).exit_code, 0);     // Expires: 3600
  EXPECT_THAT(Dump(), SizeIs(6));
  EXPECT_TRUE(WaitUntil(
      [&] { return mi_->Statistics({"location-contacts"}).at("usrloc:location-contacts") == 1; },
      6s));
  EXPECT_THAT(Dump(), ElementsAre(::testing::Pair("user03", SizeIs(1))));
  auto stats = mi_->Statistics({"usrloc:"});
  EXPECT_EQ(stats["usrloc:location-expires"], 5u);
  EXPECT_EQ(stats["usrloc:registered_users"], 1u);
}

// What a restart (clean or kill -9) keeps, per db_mode.
class UsrlocRestartTest : public UsrlocSipTest {
 protected:
  std::string Config(int db_mode) {
    return ModuleConfig(absl::StrCat("modparam(\"usrloc\", \"db_mode\", ", db_mode,
                                     ")\nmodparam(\"usrloc\", \"db_url\", \"sqlite://", work_,
                                     "/location.sqlite\")\n"));
  }
  void KillMinusNine() {
    const pid_t group = sipd_->pid();
    ASSERT_GT(group, 0);
    ASSERT_EQ(kill(-group, SIGKILL), 0);
    (void)sipd_->WaitForExit(5s);
    ASSERT_TRUE(WaitUntil([&] { return ProcessGroupPids(group).empty(); }, 5s));
    sipd_.reset();
  }
};

TEST_F(UsrlocRestartTest, WriteThroughKeepsContactsAcrossCleanRestart) {
  StartSipd(Config(1));
  ASSERT_EQ(RegisterUsers().exit_code, 0);
  const auto before = Dump();
  ASSERT_TRUE(sipd_->Stop().ok());
  StartSipd(Config(1));
  EXPECT_EQ(Dump(), before);
  EXPECT_THAT(Fifo("ul_dump"), HasSubstr("State:: CS_SYNC"));
  EXPECT_EQ(mi_->Statistics({"registered_users"}).at("usrloc:registered_users"), kUsers);
}

TEST_F(UsrlocRestartTest, WriteThroughKeepsContactsAcrossKillMinusNine) {
  StartSipd(Config(1));
  ASSERT_EQ(RegisterUsers().exit_code, 0);  // every REGISTER got its 200 OK
  const auto before = Dump();
  KillMinusNine();
  StartSipd(Config(1));
  EXPECT_EQ(Dump(), before);
}

TEST_F(UsrlocRestartTest, WriteBackFlushesAtCleanShutdown) {
  StartSipd(Config(2) + "modparam(\"usrloc\", \"timer_interval\", 3600)\n");
  ASSERT_EQ(RegisterUsers().exit_code, 0);
  EXPECT_THAT(Fifo("ul_dump"), HasSubstr("State:: CS_NEW"));
  const auto before = Dump();
  ASSERT_TRUE(sipd_->Stop().ok());
  StartSipd(Config(2));
  EXPECT_EQ(Dump(), before);
  // ul_flush / ul_sync work with a database.
  EXPECT_EQ(mi_->Execute("ul_flush").Status(), "200 OK");
  EXPECT_EQ(mi_->Execute("ul_sync", {"location"}).Status(), "200 OK");
  EXPECT_EQ(mi_->Execute("ul_sync", {"location", "user01"}).Status(), "200 OK");
  EXPECT_EQ(mi_->Execute("ul_sync", {"location", "ghost"}).Status(), "404 AOR not found");
}

TEST_F(UsrlocRestartTest, WriteBackUlFlushThenKillMinusNine) {
  StartSipd(Config(2) + "modparam(\"usrloc\", \"timer_interval\", 3600)\n");
  ASSERT_EQ(RegisterUsers().exit_code, 0);
  const auto before = Dump();
  EXPECT_EQ(mi_->Execute("ul_flush").Status(), "200 OK");
  EXPECT_THAT(Fifo("ul_dump"), HasSubstr("State:: CS_SYNC"));
  KillMinusNine();
  StartSipd(Config(2));
  EXPECT_EQ(Dump(), before);
}

// An upgrade: a file an older sipd wrote (one row per contact in a usrloc_contact table)
// is packed at start-up, its contacts are served, and REGISTERs go on into it.
TEST_F(UsrlocRestartTest, AFileInTheOlderOneRowPerContactLayoutIsServedAfterAnUpgrade) {
  const int64_t expires = static_cast<int64_t>(time(nullptr)) + 3600;
  const std::string old_layout = absl::StrCat(usrloc::testing::OlderLayoutSchema(true), R"sql(
INSERT INTO usrloc_aor VALUES ('location', 'carol', 3), ('location', 'dave', 4);
INSERT INTO usrloc_contact VALUES
  ('location', 'carol', 'sip:carol@192.0.2.1:5060', 0, )sql",
                                              expires, R"sql(, 1000, 'c1', 7, 0, 0, 'old-phone', '',
   '', '', 4294967295, '', '', 1),
  ('location', 'carol', 'sip:carol@192.0.2.2:5060', 1, )sql",
                                              expires, R"sql(, 500, 'c2', 7, 0, 0, 'old-phone', '',
   '', '', 4294967295, '', '', 1),
  ('location', 'dave', 'sip:dave@192.0.2.3:5060', 0, )sql",
                                              expires, R"sql(, -1, 'd1', 9, 0, 0, 'old-phone', '',
   '', '', 4294967295, '', '', 1);
)sql");
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((work_ + "/location.sqlite").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, old_layout.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);

  StartSipd(Config(1));
  EXPECT_EQ(Dump(), (std::map<std::string, std::vector<std::string>>{
                        {"carol", {"sip:carol@192.0.2.1:5060", "sip:carol@192.0.2.2:5060"}},
                        {"dave", {"sip:dave@192.0.2.3:5060"}}}));
  ASSERT_EQ(RegisterUsers().exit_code, 0);
  const auto after = Dump();
  EXPECT_EQ(after.size(), static_cast<size_t>(kUsers) + 2);
  ASSERT_TRUE(sipd_->Stop().ok());
  StartSipd(Config(1));
  EXPECT_EQ(Dump(), after);
}

// Write-through with deferred replies (issue 8's group commit): the SIP worker queues the
// AOR's record with its 200 OK and goes on reading; whichever process commits the batch
// sends the replies after the COMMIT.
class UsrlocGroupCommitTest : public UsrlocRestartTest {
 protected:
  void StartSipd(std::string extra_config, bool tcp = false) {
    sipd_ = std::make_unique<SipdInstance>(
        SipdInstance::Options{.tcp = tcp, .extra_config = std::move(extra_config)});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    mi_ = std::make_unique<MiClient>(sipd_->grpc_target());
  }
  static std::string Register(const std::string& user, const std::string& transport, int local_port,
                              const std::string& branch) {
    const std::string host = absl::StrCat("127.0.0.1:", local_port);
    return "REGISTER sip:127.0.0.1 SIP/2.0\r\n"
           "Via: SIP/2.0/" +
           transport + " " + host + ";branch=z9hG4bK" + branch + "\r\n" + "From: <sip:" + user +
           "@example.com>;tag=f" + branch + "\r\n" + "To: <sip:" + user + "@example.com>\r\n" +
           "Call-ID: " + branch + "@test\r\n" + "CSeq: 1 REGISTER\r\n" + "Contact: <sip:" + user +
           "@" + host + ">\r\n" + "Expires: 3600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
  }
  // Contact rows in the database, read by a connection of the test's own (`aor` empty:
  // all of them).
  int Rows(const std::string& aor = "") {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2((work_ + "/location.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) !=
        SQLITE_OK) {
      sqlite3_close(db);
      return -1;
    }
    sqlite3_busy_timeout(db, 5000);
    const std::string sql =
        aor.empty() ? "SELECT count(*) FROM usrloc_contact"
                    : absl::StrCat("SELECT count(*) FROM usrloc_contact WHERE aor = '", aor, "'");
    sqlite3_stmt* statement = nullptr;
    int rows = -1;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK &&
        sqlite3_step(statement) == SQLITE_ROW) {
      rows = sqlite3_column_int(statement, 0);
    }
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return rows;
  }
};

TEST_F(UsrlocGroupCommitTest, ARegisterIsAnsweredOnlyOnceItsRowIsInTheDatabase) {
  StartSipd(Config(1), /*tcp=*/true);
  UdpPeer udp;
  for (int i = 0; i < 20; ++i) {
    const std::string user = absl::StrCat("udp", i);
    udp.SendTo(sipd_->sip_port(), Register(user, "UDP", udp.port(), absl::StrCat("u", i)));
    const std::string reply = udp.Receive(5s);
    ASSERT_EQ(SipStatusCode(reply), 200) << reply;
    EXPECT_THAT(reply, HasSubstr(absl::StrCat("Contact: <sip:", user, "@127.0.0.1:")));
    // The reply came after the COMMIT: another connection sees the row now.
    EXPECT_EQ(Rows(user), 1) << user;
  }
  // Over TCP the reply goes back on the connection the REGISTER came on.
  auto tcp = SipTcpClient::Connect(sipd_->tcp_port());
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  for (int i = 0; i < 10; ++i) {
    const std::string user = absl::StrCat("tcp", i);
    ASSERT_TRUE(
        (*tcp)->Write(Register(user, "TCP", (*tcp)->local_port(), absl::StrCat("t", i))).ok());
    absl::StatusOr<std::string> reply = (*tcp)->ReadMessage(5s);
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_EQ(SipStatusCode(*reply), 200) << *reply;
    EXPECT_EQ(Rows(user), 1) << user;
  }
  auto stats = mi_->Statistics({"registrar:", "usrloc:"});
  EXPECT_EQ(stats["registrar:accepted_regs"], 30u);
  EXPECT_GE(stats["usrloc:db_records"], 30u);
}

TEST_F(UsrlocGroupCommitTest, ManyRegistersFromSippAllAnsweredAllRowsPresentInBatches) {
  StartSipd(Config(1));
  constexpr int kCalls = 3000;
  SippResult sipp =
      Sipp("register_unique.xml", {"-m", absl::StrCat(kCalls), "-r", "3000", "-l", "50"});
  ASSERT_EQ(sipp.exit_code, 0) << sipp.output;  // every REGISTER got its 200 OK
  EXPECT_EQ(Rows(), kCalls);
  auto stats = mi_->Statistics({"usrloc:"});
  EXPECT_EQ(stats["usrloc:location-contacts"], static_cast<uint64_t>(kCalls));
  EXPECT_GE(stats["usrloc:db_records"], static_cast<uint64_t>(kCalls));
  // Batches of more than one record: fewer transactions than records.
  EXPECT_LT(stats["usrloc:db_commits"], stats["usrloc:db_records"]);
}

TEST_F(UsrlocGroupCommitTest, WithTmARetransmittedRegisterGetsTheStored200) {
  StartSipd(Config(1) + "loadmodule \"tm\"\n");
  UdpPeer udp;
  const std::string request = Register("alice", "UDP", udp.port(), "retrans1");
  udp.SendTo(sipd_->sip_port(), request);
  std::string first = udp.Receive(5s);
  ASSERT_EQ(SipStatusCode(first), 200) << first;
  EXPECT_EQ(Rows("alice"), 1);
  // The retransmission matches the server transaction: the stored 200 OK again, and no
  // second transaction.
  udp.SendTo(sipd_->sip_port(), request);
  const std::string second = udp.Receive(5s);
  EXPECT_EQ(second, first);
  auto stats = mi_->Statistics({"tm:", "registrar:"});
  EXPECT_EQ(stats["tm:UAS_transactions"], 1u);
  EXPECT_EQ(stats["registrar:accepted_regs"], 1u);
}

TEST_F(UsrlocSipTest, ConfigRejectsDbModeThree) {
  SipdInstance sipd({.grpc = false,
                     .extra_config = "loadmodule \"usrloc\"\n"
                                     "modparam(\"usrloc\", \"db_mode\", 3)\n"});
  absl::Status s = sipd.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(sipd.log(), HasSubstr("db_mode 3 (DB only) is not supported"));
}

// Many REGISTERs (unique AORs) while ul_dump streams over gRPC: every dump is
// consistent (each AOR once, with exactly its own contact) and nothing is lost.
TEST_F(UsrlocSipTest, RegisterFloodWhileDumpStreaming) {
  StartSipd(ModuleConfig("modparam(\"usrloc\", \"hash_size\", 4)\n"));
  constexpr int kCalls = 3000;
  std::atomic<bool> done{false};
  std::atomic<int> dumps{0};
  std::atomic<int> bad{0};
  std::string first_problem;
  std::thread dumper([&] {
    MiClient client(sipd_->grpc_target());
    while (!done.load()) {
      int chunks = 0;
      MiClient::Result r = client.ExecuteStream("ul_dump", {}, &chunks);
      if (r.code != 200) {
        if (bad++ == 0) first_problem = r.Status();
        continue;
      }
      std::set<std::string> seen;
      for (const auto& domain : r.reply.root.kids) {
        for (const auto& aor : domain->kids) {
          const bool duplicate = !seen.insert(aor->value).second;
          const bool consistent =
              aor->kids.size() == 1 &&
              absl::StartsWith(aor->kids[0]->value, absl::StrCat("sip:", aor->value, "@"));
          if (duplicate || !consistent) {
            if (bad++ == 0) first_problem = absl::StrCat("AOR ", aor->value);
          }
        }
      }
      ++dumps;
    }
  });
  SippResult sipp =
      Sipp("register_unique.xml", {"-m", absl::StrCat(kCalls), "-r", "1500", "-l", "200"});
  done = true;
  dumper.join();
  ASSERT_EQ(sipp.exit_code, 0) << sipp.output;
  EXPECT_EQ(bad.load(), 0) << first_problem;
  EXPECT_GT(dumps.load(), 0);
  int chunks = 0;
  auto final_dump = DumpContacts(mi_->ExecuteStream("ul_dump", {}, &chunks).reply);
  EXPECT_THAT(final_dump, SizeIs(kCalls));
  // Streamed as produced: at least one message per 50-AOR flush.
  EXPECT_GE(chunks, kCalls / 50);
  auto stats = mi_->Statistics({"usrloc:"});
  EXPECT_EQ(stats["usrloc:location-users"], static_cast<uint64_t>(kCalls));
  EXPECT_EQ(stats["usrloc:location-contacts"], static_cast<uint64_t>(kCalls));
}

// One dispatch path: the same ul_* replies on FIFO, datagram (no final empty line in
// 1.11, spec 4.3) and gRPC (code and reason).
TEST_F(UsrlocSipTest, SameRepliesOnEveryTransport) {
  StartSipd(ModuleConfig("") +
            absl::StrCat("loadmodule \"mi_datagram\"\nmodparam(\"mi_datagram\", \"socket_name\", "
                         "\"udp:127.0.0.1:0\")\n"
                         // UDP carries no identity: this test's commands need operate.
                         "modparam(\"mi_datagram\", \"udp_role\", \"admin\")\n"));
  ASSERT_EQ(RegisterUsers("one_user.csv", 1).exit_code, 0);
  ASSERT_EQ(mi_->Execute("ul_add",
                         {"location", "static", "sip:s@192.0.2.1", "0", "0.5", "0", "3", "5", "1"})
                .Status(),
            "200 OK");
  const int udp = sipd_->listener_port("mi_datagram", "udp");
  ASSERT_NE(udp, 0);
  auto datagram = legacy::DatagramClient::Udp("127.0.0.1", udp);
  ASSERT_TRUE(datagram.ok());
  const std::vector<std::vector<std::string>> cases = {
      {"ul_dump", "brief"},
      {"ul_show_contact", "location", "static"},
      {"ul_show_contact", "location", "nobody"},
      {"ul_show_contact", "aliases", "static"},
      {"ul_rm", "location"},
      {"ul_add", "location", "a", "sip:x@h", "0", "2", "0", "0", "0", "0"},
      {"ul_rm_contact", "location", "static", "sip:other@h"},
      {"ul_sync"},
      {"get_statistics", "usrloc:"},
  };
  for (const auto& c : cases) {
    const std::vector<std::string> args(c.begin() + 1, c.end());
    SCOPED_TRACE(c[0]);
    const std::string fifo = Fifo(c[0], args);
    std::string request = absl::StrCat(":", c[0], ":\n");
    for (const auto& a : args) absl::StrAppend(&request, a, "\n");
    auto reply = (*datagram)->Transact(request);
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(fifo, *reply + "\n");
    EXPECT_EQ(fifo.substr(0, fifo.find('\n')), mi_->Execute(c[0], args).Status());
  }
  // The static contact as every text transport shows it.
  EXPECT_THAT(Fifo("ul_show_contact", {"location", "static"}),
              ::testing::MatchesRegex("200 OK\nContact:: <sip:s@192.0.2.1>;q=0.5;expires=-[0-9]+;"
                                      "flags=0x3;cflags=0x5;socket=<NULL>;"
                                      "callid=<dfjrewr12386fd6-343@opensips.mi>;methods=0x1;"
                                      "user_agent=<OpenSIPS MI Server>\n\n"));
}

// Malformed REGISTERs over the wire: the right 4xx, and the table is unchanged.
TEST_F(UsrlocSipTest, MalformedRegistersOverUdp) {
  StartSipd(ModuleConfig(""));
  ASSERT_EQ(RegisterUsers("one_user.csv", 1).exit_code, 0);
  const auto before = Dump();
  struct Case {
    std::vector<std::string> headers;
    int code;
    std::string error;
  };
  const std::vector<Case> cases = {
      {{"Contact: <sip:x@127.0.0.1>", "Expires: soon"}, 400, "Expires parse error"},
      {{"Contact: <sip:x@127.0.0.1>;q=7"}, 400, "Invalid q value"},
      {{"Contact: *", "Expires: 3600"}, 400, "* used in contact and expires is not zero"},
      {{"Contact: *", "Contact: <sip:x@127.0.0.1>", "Expires: 0"},
       400,
       "* used in contact and more than 1 contact"},
      {{"Contact: <sip:x@127.0.0.1>;expires=10"}, 423, "Interval too brief"},
      {{"Contact: <sip:x@127.0.0.1>", "Require: foo"}, 420, "Unsupported extension required"},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.error);
    std::string request = absl::StrCat(
        "REGISTER sip:127.0.0.1:", sipd_->sip_port(),
        " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-bad", n,
        "\r\nMax-Forwards: 70\r\nFrom: <sip:user03@example.com>;tag=b", n,
        "\r\nTo: <sip:user03@example.com>\r\nCall-ID: bad-", n, "\r\nCSeq: 1 REGISTER\r\n");
    ++n;
    for (const auto& h : c.headers) absl::StrAppend(&request, h, "\r\n");
    absl::StrAppend(&request, "Content-Length: 0\r\n\r\n");
    auto reply = SipExchange(sipd_->sip_port(), request);
    ASSERT_TRUE(reply.ok()) << reply.status() << "\n" << request;
    EXPECT_EQ(SipStatusCode(*reply), c.code) << *reply;
    EXPECT_THAT(*reply, HasSubstr(absl::StrCat("P-Registrar-Error: ", c.error, "\r\n")));
  }
  EXPECT_EQ(Dump(), before);
}

}  // namespace
}  // namespace sipd::testing
