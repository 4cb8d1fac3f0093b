// mi_fifo and mi_datagram inside a real sipd (started by the harness): processes, the
// by-hand FIFO exchange, datagram round trips, file modes, start-up refusals, the
// malformed-input tables and a transport process that dies alone.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <regex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/legacy-transports/in_process_servers.h"
#include "tests/legacy-transports/malformed_cases.h"
#include "tests/support/sipd_harness.h"

namespace sipd::legacy::testing {
namespace {

using ::sipd::testing::MakeSipRequest;
using ::sipd::testing::SipdInstance;
using ::sipd::testing::SipExchange;
using ::sipd::testing::SipStatusCode;
using ::sipd::testing::WaitUntil;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr char kFifoConfig[] = R"(
loadmodule "mi_fifo"
modparam("mi_fifo", "fifo_name", "{TMP_DIR}/sipd_fifo")
modparam("mi_fifo", "reply_dir", "{TMP_DIR}/")
modparam("mi_fifo", "request_timeout", 300)
modparam("mi_fifo", "reply_timeout", 500)
)";

// A UNIX socket and a loopback UDP socket served by the same two processes.
std::string DatagramConfig(int udp_port) {
  return absl::StrCat(
      "loadmodule \"mi_datagram\"\n"
      "modparam(\"mi_datagram\", \"socket_name\", \"{TMP_DIR}/mi.sock\")\n"
      "modparam(\"mi_datagram\", \"extra_socket_name\", \"udp:127.0.0.1:",
      udp_port,
      "\")\n"
      "modparam(\"mi_datagram\", \"children_count\", 2)\n");
}

std::string UdpOnlyDatagramConfig(int port) {
  return absl::StrCat("loadmodule \"mi_datagram\"\nmodparam(\"mi_datagram\", \"socket_name\", ",
                      "\"udp:127.0.0.1:", port, "\")\n");
}

// `get_statistics all` repeated: far more than a pipe buffer (64 KB) and a datagram.
std::vector<std::string> ManyAll() { return std::vector<std::string>(300, "all"); }

class SipdLegacyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = false, .extra_config = std::string(kFifoConfig) + DatagramConfig(0)});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    udp_port_ = sipd_->listener_port("mi_datagram", "udp");
    ASSERT_NE(udp_port_, 0);
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "sipd log:\n%s\n", sipd_->log().c_str());
  }
  std::string fifo() const { return sipd_->tmp_dir() + "/sipd_fifo"; }
  std::string reply_dir() const { return sipd_->tmp_dir() + "/"; }
  std::string socket() const { return sipd_->tmp_dir() + "/mi.sock"; }

  std::string Fifo(std::string_view command, const std::vector<std::string>& args = {}) {
    auto client = FifoClient::Create(fifo(), reply_dir());
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return "";
    absl::StatusOr<std::string> reply = (*client)->Execute(command, args);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.value_or("");
  }

  std::unique_ptr<SipdInstance> sipd_;
  int udp_port_ = 0;
};

TEST_F(SipdLegacyTest, PsListsTheTransportProcesses) {
  const std::string reply = Fifo("ps");
  ASSERT_EQ(reply.substr(0, 7), "200 OK\n");
  ASSERT_EQ(reply.substr(reply.size() - 2), "\n\n");
  const std::regex fifo_line(R"(\nProcess::  ID=\d+ PID=[1-9]\d* Type=MI FIFO\n)");
  EXPECT_TRUE(std::regex_search(reply, fifo_line)) << reply;
  const std::regex datagram_line(R"(Process::  ID=\d+ PID=[1-9]\d* Type=MI Datagram\n)");
  EXPECT_EQ(std::distance(std::sregex_iterator(reply.begin(), reply.end(), datagram_line),
                          std::sregex_iterator()),
            2)
      << reply;
}

TEST_F(SipdLegacyTest, RequestWrittenByHandIntoTheFifo) {
  // What an operator does with a shell: mkfifo, a reader, printf into the FIFO.
  const std::string script =
      absl::StrCat("cd ", sipd_->tmp_dir(), " && mkfifo -m 600 reply_fifo && ",
                   "{ timeout 5 cat reply_fifo > by_hand.out & } && ",
                   "printf ':ps:reply_fifo\\n\\n' > sipd_fifo && wait && rm -f reply_fifo");
  ASSERT_EQ(std::system(script.c_str()), 0);
  std::ifstream in(sipd_->tmp_dir() + "/by_hand.out", std::ios::binary);
  const std::string reply((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(reply.substr(0, 7), "200 OK\n");
  EXPECT_THAT(reply, HasSubstr("Process::  ID=0 PID="));
  EXPECT_THAT(reply, HasSubstr(" Type=attendant\n"));
  EXPECT_THAT(reply, HasSubstr(" Type=MI FIFO\n"));
  EXPECT_EQ(reply.substr(reply.size() - 2), "\n\n");
}

TEST_F(SipdLegacyTest, UptimeOverUnixDatagram) {
  auto client = DatagramClient::Unix(socket(), sipd_->tmp_dir());
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::string> reply = (*client)->Transact(":uptime:\n");
  ASSERT_TRUE(reply.ok()) << reply.status();
  const std::regex layout(
      "200 OK\nNow:: [A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\\d \\d\\d:\\d\\d:\\d\\d \\d{4}\n"
      "Up since:: [^\n]+\nUp time:: \\d+ \\[sec\\]\n");
  EXPECT_TRUE(std::regex_match(*reply, layout)) << *reply;
}

TEST_F(SipdLegacyTest, FifoAndSocketArePrivate) {
  struct stat st;
  ASSERT_EQ(lstat(fifo().c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(lstat(socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(SipdLegacyTest, FlushingCommandStreamsOverFifo) {
  // get_statistics with many selectors is large; the reply must arrive whole.
  const std::string reply = Fifo("get_statistics", ManyAll());
  ASSERT_EQ(reply.substr(0, 7), "200 OK\n");
  EXPECT_GT(reply.size(), 65536u);
  EXPECT_EQ(reply.substr(reply.size() - 2), "\n\n");
}

TEST_F(SipdLegacyTest, FifoMalformedInputTable) {
  RunFifoMalformedTable({.fifo = fifo(),
                         .reply_dir = reply_dir(),
                         .request_timeout = 300ms,
                         .reply_timeout = 500ms,
                         .large_command = "get_statistics",
                         .large_args = ManyAll()});
}

TEST_F(SipdLegacyTest, UnixDatagramMalformedInputTable) {
  std::string large = ":get_statistics:\n";
  for (const std::string& arg : ManyAll()) large += arg + "\n";
  RunDatagramMalformedTable(
      {.unix_path = socket(), .client_dir = sipd_->tmp_dir(), .large_request = large});
}

TEST_F(SipdLegacyTest, KilledTransportDiesAloneAndComesBack) {
  // Find the MI FIFO process from `ps` over the datagram transport.
  auto client = DatagramClient::Unix(socket(), sipd_->tmp_dir());
  ASSERT_TRUE(client.ok());
  absl::StatusOr<std::string> ps = (*client)->Transact(":ps:\n");
  ASSERT_TRUE(ps.ok());
  std::smatch match;
  const std::regex fifo_line(R"(PID=(\d+) Type=MI FIFO\n)");
  ASSERT_TRUE(std::regex_search(*ps, match, fifo_line)) << *ps;
  const pid_t fifo_pid = std::stoi(match[1]);
  ASSERT_EQ(kill(fifo_pid, SIGKILL), 0);
  // SIP and the datagram transport keep working meanwhile.
  auto sip = SipExchange(sipd_->sip_port(), MakeSipRequest("OPTIONS", sipd_->sip_port(), "k1"));
  ASSERT_TRUE(sip.ok()) << sip.status();
  EXPECT_EQ(SipStatusCode(*sip), 200);
  EXPECT_TRUE((*client)->Transact(":version:\n").ok());
  // The attendant restarts the FIFO process; it serves the same FIFO again.
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto fifo_client = FifoClient::Create(fifo(), reply_dir());
        return fifo_client.ok() && (*fifo_client)->Execute("version", {}, 300ms).ok();
      },
      10s));
}

TEST_F(SipdLegacyTest, UdpDatagramRoundTripAndMalformedInputTable) {
  auto client = DatagramClient::Udp("127.0.0.1", udp_port_);
  ASSERT_TRUE(client.ok());
  absl::StatusOr<std::string> reply = (*client)->Transact(":uptime:\n");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->substr(0, 12), "200 OK\nNow::");
  std::string large = ":get_statistics:\n";
  for (const std::string& arg : ManyAll()) large += arg + "\n";
  RunDatagramMalformedTable({.udp_port = udp_port_, .large_request = large});
}

TEST_F(SipdLegacyTest, RestartedFifoProcessRefusesAReplacedFifo) {
  // Someone replaces the request FIFO with a regular file; the MI FIFO process that the
  // attendant restarts refuses it and fails its start-up (it reports ready only once it
  // reads the FIFO), and the attendant logs why (and SIP keeps going).
  ASSERT_EQ(unlink(fifo().c_str()), 0);
  std::ofstream(fifo()) << "not a fifo";
  auto client = DatagramClient::Unix(socket(), sipd_->tmp_dir());
  ASSERT_TRUE(client.ok());
  absl::StatusOr<std::string> ps = (*client)->Transact(":ps:\n");
  ASSERT_TRUE(ps.ok());
  std::smatch match;
  ASSERT_TRUE(std::regex_search(*ps, match, std::regex(R"(PID=(\d+) Type=MI FIFO\n)")));
  ASSERT_EQ(kill(std::stoi(match[1]), SIGKILL), 0);
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string log = sipd_->log();
        return log.find("restart failed: process ") != std::string::npos &&
               log.find("(MI FIFO) failed to start: mi_fifo: '" + fifo() +
                        "' is not a FIFO: refusing to use it") != std::string::npos;
      },
      10s))
      << sipd_->log();
  auto sip = SipExchange(sipd_->sip_port(), MakeSipRequest("OPTIONS", sipd_->sip_port(), "r1"));
  ASSERT_TRUE(sip.ok()) << sip.status();
  std::ifstream in(fifo());
  std::string content;
  std::getline(in, content);
  EXPECT_EQ(content, "not a fifo") << "the file is left alone";
}

TEST(SipdStartupTest, BusyUdpPortFailsStartup) {
  // A port this test holds (bound to port 0, kept open).
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t length = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length), 0);
  const int port = ntohs(addr.sin_port);
  SipdInstance sipd({.grpc = false, .extra_config = UdpOnlyDatagramConfig(port)});
  EXPECT_FALSE(sipd.Start().ok());
  EXPECT_THAT(sipd.log(), HasSubstr("mi_datagram: cannot bind"));
  close(fd);
}

// fifo_name pointing at something that is not a FIFO: sipd refuses to start, leaves the
// file alone and says why.
class SipdFifoRefusalTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SipdFifoRefusalTest, RefusesToStart) {
  // The harness makes its temp dir in Start(): the target must exist before.
  TempDir dir;
  const std::string target = dir.Join("target");
  if (GetParam() == "regular file") {
    std::ofstream(target) << "precious";
  } else {
    ASSERT_EQ(symlink(dir.Join("elsewhere").c_str(), target.c_str()), 0);
  }
  SipdInstance sipd({.grpc = false,
                     .extra_config = absl::StrCat(
                         "loadmodule \"mi_fifo\"\nmodparam(\"mi_fifo\", \"fifo_name\", \"", target,
                         "\")\nmodparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n")});
  EXPECT_FALSE(sipd.Start().ok());
  EXPECT_THAT(sipd.log(), HasSubstr(GetParam() == "regular file"
                                        ? "exists and is not a FIFO: refusing to replace it"
                                        : "is a symbolic link: refusing to use it"));
  struct stat st;
  ASSERT_EQ(lstat(target.c_str(), &st), 0);
  EXPECT_EQ(GetParam() == "regular file", S_ISREG(st.st_mode));
}

INSTANTIATE_TEST_SUITE_P(NotAFifo, SipdFifoRefusalTest,
                         ::testing::Values("regular file", "symlink"), [](const auto& info) {
                           return info.param == "symlink" ? "Symlink" : "RegularFile";
                         });

TEST(SipdStartupTest, StaleFifoIsReplaced) {
  TempDir dir;
  const std::string path = dir.Join("sipd_fifo");
  ASSERT_EQ(mkfifo(path.c_str(), 0666), 0);
  struct stat before;
  ASSERT_EQ(lstat(path.c_str(), &before), 0);
  SipdInstance sipd({.grpc = false,
                     .extra_config = absl::StrCat(
                         "loadmodule \"mi_fifo\"\nmodparam(\"mi_fifo\", \"fifo_name\", \"", path,
                         "\")\nmodparam(\"mi_fifo\", \"reply_dir\", \"", dir.path(), "\")\n")});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  struct stat after;
  ASSERT_EQ(lstat(path.c_str(), &after), 0);
  EXPECT_TRUE(S_ISFIFO(after.st_mode));
  EXPECT_EQ(after.st_mode & 07777, 0600u);
  EXPECT_THAT(sipd.log(), HasSubstr("replaced stale FIFO"));
  auto client = FifoClient::Create(path, dir.path());
  ASSERT_TRUE(client.ok());
  absl::StatusOr<std::string> reply = (*client)->Execute("version");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->substr(0, 7), "200 OK\n");
  ASSERT_TRUE(sipd.Stop().ok());
  EXPECT_NE(lstat(path.c_str(), &after), 0) << "sipd removes its FIFO at shutdown";
}

}  // namespace
}  // namespace sipd::legacy::testing
