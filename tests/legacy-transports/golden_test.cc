// Golden byte-level tests of the FIFO and datagram reply layouts (spec 2, 3.4, 3.5, 3.6,
// 4.3, 4.4, 4.5, 10.1) through the real servers and clients, over the fixed-output test
// registry.
#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/legacy-transports/in_process_servers.h"

namespace sipd::legacy::testing {
namespace {

constexpr std::string_view kUlDumpBody =
    "Domain:: location table=512 records=1\n"
    "\tAOR:: alice\n"
    "\t\tContact:: sip:alice@192.0.2.10:5060 Q=\n"
    "\t\t\tExpires:: 3581\n"
    "\t\t\tCallid:: 3c2b7f0e@192.0.2.10\n"
    "\t\t\tCseq:: 1203\n"
    "\t\t\tUser-agent:: Linphone/3.6\n"
    "\t\t\tState:: CS_NEW\n"
    "\t\t\tFlags:: 0\n"
    "\t\t\tCflags:: \n"
    "\t\t\tSocket:: udp:192.0.2.1:5060\n"
    "\t\t\tMethods:: 4294967295\n";

constexpr std::string_view kPsBody =
    "Process::  ID=0 PID=2831 Type=attendant\n"
    "Process::  ID=1 PID=2832 Type=MI FIFO\n"
    "Process::  ID=2 PID=2833 Type=SIP receiver udp:127.0.0.1:5060 \n"
    "Process::  ID=3 PID=2834 Type=SIP receiver udp:127.0.0.1:5060 \n"
    "Process::  ID=4 PID=2835 Type=time_keeper\n"
    "Process::  ID=5 PID=2836 Type=timer: tm-utimer\n"
    "Process::  ID=6 PID=2837 Type=TCP receiver\n"
    "Process::  ID=7 PID=2838 Type=TCP main\n";

// One AOR of ul_dump_many as the text layout shows it.
std::string AorLines(int i) {
  const std::string user = absl::StrFormat("a%03d", i);
  return absl::StrFormat(
      "\tAOR:: %s\n"
      "\t\tContact:: sip:%s@192.0.2.10:5060 Q=\n"
      "\t\t\tExpires:: 3581\n\t\t\tCallid:: 3c2b7f0e@192.0.2.10\n\t\t\tCseq:: 1203\n"
      "\t\t\tUser-agent:: Linphone/3.6\n\t\t\tState:: CS_NEW\n\t\t\tFlags:: 0\n"
      "\t\t\tCflags:: \n\t\t\tSocket:: udp:192.0.2.1:5060\n\t\t\tMethods:: 4294967295\n",
      user, user);
}

class FifoGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fifo_.Start();
    auto client = FifoClient::Create(fifo_.fifo_name(), fifo_.reply_dir());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }
  std::string Run(std::string_view command, const std::vector<std::string>& args = {}) {
    absl::StatusOr<std::string> reply = client_->Execute(command, args);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.value_or("");
  }
  std::string Raw(const std::string& request) {
    absl::StatusOr<std::string> reply = client_->Transact(request);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.value_or("");
  }

  InProcessFifo fifo_;
  std::unique_ptr<FifoClient> client_;
};

TEST_F(FifoGoldenTest, TreeReplyEndsWithEmptyLine) {
  EXPECT_EQ(Run("uptime"),
            "200 OK\nNow:: Tue Jun  3 16:22:20 2014\nUp since:: Tue Jun  3 16:00:00 2014\n"
            "Up time:: 1340 [sec]\n\n");
}

TEST_F(FifoGoldenTest, ErrorTreeIsRenderedLikeAnyTree) {
  EXPECT_EQ(Run("table_missing"), "404 Table not found\n\n");
  EXPECT_EQ(Run("help", {"a", "b"}), "400 Too few or too many arguments\n\n");
}

TEST_F(FifoGoldenTest, TransportErrorsAreOneLineWithoutEmptyLine) {
  EXPECT_EQ(Run("no_such_command"), "500 command 'no_such_command' not available\n");
  EXPECT_EQ(Run("fail"), "500 command 'fail' failed\n");
  EXPECT_EQ(Run("echo", {"\"unterminated"}), "400 parse error in command 'echo'\n");
}

TEST_F(FifoGoldenTest, UlDumpLayoutOfSection2) {
  EXPECT_EQ(Run("ul_dump"), "200 OK\n" + std::string(kUlDumpBody) + "\n");
}

TEST_F(FifoGoldenTest, PsLayoutOfSection10) {
  EXPECT_EQ(Run("ps"), "200 OK\n" + std::string(kPsBody) + "\n");
}

TEST_F(FifoGoldenTest, FlushAddsAnEmptyLineAndLosesLateAttributes) {
  // Spec 3.6: 120 AORs flushed every 50; `records=` is lost on the flushed Domain line.
  std::string expected = "200 OK\nDomain:: location table=512\n";
  for (int i = 1; i <= 120; ++i) {
    expected += AorLines(i);
    if (i == 50 || i == 100) expected += "\n";
  }
  expected += "\n";
  EXPECT_EQ(Run("ul_dump_many", {"120"}), expected);
}

TEST_F(FifoGoldenTest, ArgumentsArriveAsParsed) {
  const std::string request = ":echo:" + client_->reply_name() +
                              "\n"
                              "OPTIONS\n"
                              "name::value\n"
                              ":: nameless\n"
                              "\"sip:[::1]\"\n"
                              "\"From: <sip:mi@example.com>;tag=a1\r\n"
                              "To: <sip:bob@example.com>\r\n"
                              "\"\n"
                              "\"say \\\"hi\\\"\"\n"
                              "\n";
  EXPECT_EQ(Raw(request),
            "200 OK\nOPTIONS\nname:: value\nnameless\nsip:[::1]\n"
            "From: <sip:mi@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\n"
            "say \"hi\"\n\n");
}

TEST_F(FifoGoldenTest, LineLongerThanTheBufferIsWrittenWhole) {
  const size_t size = 3 * FifoReplyWriter::kBufferSize + 17;
  EXPECT_EQ(Run("long_line", {std::to_string(size)}), "200 OK\n" + std::string(size, 'v') + "\n\n");
}

TEST_F(FifoGoldenTest, LargeReplyCrossesManyBuffers) {
  std::string expected = "200 OK\n";
  for (int i = 0; i < 5000; ++i) expected += "line:: " + std::string(96, 'x') + "\n";
  EXPECT_EQ(Run("big", {"5000"}), expected + "\n");
}

TEST(FifoIndentTest, ReplyIndentIsConfigurable) {
  for (const std::string indent : {"", "  "}) {
    InProcessFifo fifo;
    fifo.config().reply_indent = indent;
    fifo.Start();
    auto client = FifoClient::Create(fifo.fifo_name(), fifo.reply_dir());
    ASSERT_TRUE(client.ok());
    absl::StatusOr<std::string> reply = (*client)->Execute("ul_dump");
    ASSERT_TRUE(reply.ok()) << reply.status();
    const std::string expected = "200 OK\nDomain:: location table=512 records=1\n" + indent +
                                 "AOR:: alice\n" + indent + indent + "Contact:: sip:";
    EXPECT_EQ(reply->substr(0, expected.size()), expected) << "indent '" << indent << "'";
  }
}

// Datagram: the same layout without the final empty line (spec 4.3).
class DatagramGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Start();
    auto client = DatagramClient::Unix(server_.dir().Join("sipd_mi.sock"), server_.dir().path());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }
  std::string Handle(std::string_view request) {
    absl::StatusOr<std::string> reply = client_->Transact(request);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.value_or("");
  }
  InProcessDatagram server_{"{DIR}/sipd_mi.sock"};
  std::unique_ptr<DatagramClient> client_;
};

TEST_F(DatagramGoldenTest, VersionOfSection43) {
  EXPECT_EQ(Handle(":version:\n"), "200 OK\nServer:: OpenSIPS (1.11.11-notls (x86_64/linux))\n");
}

TEST_F(DatagramGoldenTest, TreesHaveNoFinalEmptyLine) {
  EXPECT_EQ(Handle(":ul_dump:\n"), "200 OK\n" + std::string(kUlDumpBody));
  EXPECT_EQ(Handle(":ps:\n"), "200 OK\n" + std::string(kPsBody));
  EXPECT_EQ(Handle(":table_missing:\n"), "404 Table not found\n");
  EXPECT_EQ(Handle(":help:\na\nb\n"), "400 Too few or too many arguments\n");
}

TEST_F(DatagramGoldenTest, ErrorsOfSection44) {
  EXPECT_EQ(Handle(":nope:\n"), "500 command not available\n");
  EXPECT_EQ(Handle(":version"), "500 command not available\n") << "missing colon";
  EXPECT_EQ(Handle(":version:"), "500 command not available\n") << "missing LF";
  EXPECT_EQ(Handle(":version:reply\n"), "500 command not available\n") << "reply name";
  EXPECT_EQ(Handle("version\n"), "500 command not available\n");
  EXPECT_EQ(Handle(""), "500 command not available\n");
  EXPECT_EQ(Handle(":echo:\n\"open"), "400 parse error in command\n");
  EXPECT_EQ(Handle(":fail:\n"), "500 command failed\n");
}

TEST_F(DatagramGoldenTest, FlushesAccumulateWithoutEmptyLines) {
  std::string expected = "200 OK\nDomain:: location table=512\n";
  for (int i = 1; i <= 60; ++i) expected += AorLines(i);
  EXPECT_EQ(Handle(":ul_dump_many:\n60\n"), expected);
}

TEST_F(DatagramGoldenTest, ArgumentsWithoutTrailingLfAndWithCrlf) {
  EXPECT_EQ(Handle(":echo:\r\na\r\n\r\nb::c"), "200 OK\na\nb:: c\n");
  EXPECT_EQ(Handle(":uptime:\n\"ignored"), Handle(":uptime:\n")) << "no-input ignores args";
}

TEST_F(DatagramGoldenTest, ReplyLimitIsTheWholeBuffer) {
  // 7 + n * 104 bytes: 629 lines = 65423 bytes fit, 630 do not.
  EXPECT_EQ(Handle(":big:\n629\n").size(), 7u + 629u * 104u);
  EXPECT_EQ(Handle(":big:\n630\n"), kDatagramTooLarge);
  EXPECT_EQ(Handle(":big_flushed:\n5000\n"), kDatagramTooLarge);
  EXPECT_EQ(Handle(":long_line:\n100000\n"), kDatagramTooLarge);
  // The next request is served normally.
  EXPECT_EQ(Handle(":version:\n"), "200 OK\nServer:: OpenSIPS (1.11.11-notls (x86_64/linux))\n");
}

TEST_F(DatagramGoldenTest, OversizedRequestIsAParseError) {
  EXPECT_EQ(Handle(":echo:\n" + std::string(kDatagramMaxSize, 'a')), kDatagramParseError);
}

TEST(DatagramSocketTest, UnixAndUdpRoundTrip) {
  {
    InProcessDatagram server("{DIR}/mi.sock");
    server.Start();
    auto client = DatagramClient::Unix(server.dir().Join("mi.sock"), server.dir().path());
    ASSERT_TRUE(client.ok()) << client.status();
    absl::StatusOr<std::string> reply = (*client)->Transact(":uptime:\n");
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply,
              "200 OK\nNow:: Tue Jun  3 16:22:20 2014\nUp since:: Tue Jun  3 16:00:00 2014\n"
              "Up time:: 1340 [sec]\n");
  }
  {
    InProcessDatagram server("udp:127.0.0.1:0");
    server.Start();
    const int port = server.udp_port();
    ASSERT_GT(port, 0);
    auto client = DatagramClient::Udp("127.0.0.1", port);
    ASSERT_TRUE(client.ok()) << client.status();
    absl::StatusOr<std::string> reply = (*client)->Transact(":version:\n");
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, "200 OK\nServer:: OpenSIPS (1.11.11-notls (x86_64/linux))\n");
  }
}

}  // namespace
}  // namespace sipd::legacy::testing
