// Integration tests: a real sipd started by the harness (without mi_grpc), real UDP
// sockets, a real SIP peer (sipsak), real signals.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/sipd_harness.h"

namespace {

using ::sipd::testing::ChildPids;
using ::sipd::testing::MakeSipRequest;
using ::sipd::testing::ProcessAlive;
using ::sipd::testing::ProcessGroupPids;
using ::sipd::testing::RunShell;
using ::sipd::testing::SipdInstance;
using ::sipd::testing::SipExchange;
using ::sipd::testing::SipStatusCode;
using ::sipd::testing::WaitUntil;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string Comm(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/comm"));
  std::string name;
  std::getline(in, name);
  return name;
}

std::vector<pid_t> ChildrenNamed(pid_t parent, const std::string& comm) {
  std::vector<pid_t> out;
  for (pid_t pid : ChildPids(parent)) {
    if (Comm(pid) == comm) out.push_back(pid);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string WriteTempConfig(const std::string& text) {
  char path[] = "/tmp/sipd-cfg-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return "";
  const ssize_t written = write(fd, text.data(), text.size());
  close(fd);
  return written == static_cast<ssize_t>(text.size()) ? path : "";
}

class SipdTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(sipd_.Start().ok()) << sipd_.log(); }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "sipd log:\n%s\n", sipd_.log().c_str());
  }

  int Options(const std::string& call_id) {
    auto reply =
        SipExchange(sipd_.sip_port(), MakeSipRequest("OPTIONS", sipd_.sip_port(), call_id));
    return reply.ok() ? SipStatusCode(*reply) : -1;
  }

  SipdInstance sipd_{SipdInstance::Options{.grpc = false, .children = 2}};
};

TEST(SipdCommandLine, VersionPrintsVersionAndPlatform) {
  auto [status, output] = RunShell(absl::StrCat(SIPD_BINARY_PATH, " -V"));
  EXPECT_EQ(status, 0);
  EXPECT_THAT(output,
              ::testing::MatchesRegex("sipd [0-9]+\\.[0-9]+\\.[0-9]+ \\([^/ ]+/[a-z]+\\)\n"));
}

TEST(SipdCommandLine, CheckAcceptsGoodConfig) {
  const std::string path = WriteTempConfig(
      "listen = udp:127.0.0.1:5060\nchildren = 2\nlog_level = 3\nrun_dir = \"/tmp/x\"\n");
  ASSERT_FALSE(path.empty());
  auto [status, output] = RunShell(absl::StrCat(SIPD_BINARY_PATH, " -c -f ", path));
  unlink(path.c_str());
  EXPECT_EQ(status, 0) << output;
}

TEST(SipdCommandLine, CheckRejectsBadConfigWithFileAndLine) {
  const std::string path =
      WriteTempConfig("listen = udp:127.0.0.1:5060\nchildren = 2\nbogus = 1\n");
  ASSERT_FALSE(path.empty());
  auto [status, output] = RunShell(absl::StrCat(SIPD_BINARY_PATH, " -c -f ", path));
  unlink(path.c_str());
  EXPECT_EQ(status, 1);
  EXPECT_THAT(output, HasSubstr(absl::StrCat(path, ":3: unknown key 'bogus'")));
}

// event_datagram's name-server limits, as tm's: a try of at least 10 ms, 1 to 10 tries.
TEST(SipdCommandLine, EventDatagramDnsLimitsAreChecked) {
  for (const auto& [line, why] : std::vector<std::pair<std::string, std::string>>{
           {"modparam(\"event_datagram\", \"dns_timeout\", 5)",
            "parameter dns_timeout must be an integer in [10, 30000]"},
           {"modparam(\"event_datagram\", \"dns_tries\", 11)",
            "parameter dns_tries must be an integer in [1, 10]"},
           {"modparam(\"event_datagram\", \"dns_neg_ttl\", -1)",
            "parameter dns_neg_ttl must be an integer in [0, 86400]"},
           {"modparam(\"event_datagram\", \"dns_servers\", 53)",
            "parameter dns_servers must be a string of IP[:PORT] name servers"}}) {
    SCOPED_TRACE(line);
    const std::string path = WriteTempConfig(
        absl::StrCat("listen = udp:127.0.0.1:5060\nloadmodule \"event_datagram\"\n", line, "\n"));
    ASSERT_FALSE(path.empty());
    auto [status, output] = RunShell(absl::StrCat(SIPD_BINARY_PATH, " -c -f ", path));
    unlink(path.c_str());
    EXPECT_EQ(status, 1);
    EXPECT_THAT(output, HasSubstr(":3: modparam(\"event_datagram\""));
    EXPECT_THAT(output, HasSubstr(absl::StrCat("event_datagram: ", why)));
  }
  const std::string good = WriteTempConfig(
      "listen = udp:127.0.0.1:5060\nloadmodule \"event_datagram\"\n"
      "modparam(\"event_datagram\", \"dns_timeout\", 10)\n"
      "modparam(\"event_datagram\", \"dns_tries\", 10)\n"
      "modparam(\"event_datagram\", \"dns_servers\", \"127.0.0.1:53\")\n");
  ASSERT_FALSE(good.empty());
  auto [status, output] = RunShell(absl::StrCat(SIPD_BINARY_PATH, " -c -f ", good));
  unlink(good.c_str());
  EXPECT_EQ(status, 0) << output;
}

TEST(SipdCommandLine, UnknownModuleFailsCleanly) {
  const std::string path =
      WriteTempConfig("listen = udp:127.0.0.1:5060\nloadmodule \"no_such_module\"\n");
  ASSERT_FALSE(path.empty());
  auto [status, output] = RunShell(absl::StrCat(SIPD_BINARY_PATH, " -c -f ", path));
  unlink(path.c_str());
  EXPECT_EQ(status, 1);
  EXPECT_THAT(output, HasSubstr(":2: unknown module \"no_such_module\""));
}

TEST(SipdCommandLine, PortInUseFailsStartUpLoudly) {
  SipdInstance first({.grpc = false, .children = 1});
  ASSERT_TRUE(first.Start().ok()) << first.log();
  const std::string path =
      WriteTempConfig(absl::StrCat("listen = udp:127.0.0.1:", first.sip_port(),
                                   "\nchildren = 1\nrun_dir = \"", first.tmp_dir(), "/run2\"\n"));
  auto [status, output] = RunShell(absl::StrCat(SIPD_BINARY_PATH, " -f ", path));
  unlink(path.c_str());
  EXPECT_EQ(status, 1);
  EXPECT_THAT(output, HasSubstr("Address already in use"));
}

TEST_F(SipdTest, StartsAllProcessesAndWritesPidFile) {
  std::ifstream pid_file(sipd_.run_dir() + "/sipd.pid");
  pid_t pid = 0;
  pid_file >> pid;
  EXPECT_EQ(pid, sipd_.pid());
  // 2 SIP receivers + the timer process.
  EXPECT_EQ(ChildrenNamed(sipd_.pid(), "sipd:sip").size(), 2u);
  EXPECT_EQ(ChildrenNamed(sipd_.pid(), "sipd:timer").size(), 1u);
  EXPECT_EQ(ChildPids(sipd_.pid()).size(), 3u);
}

TEST_F(SipdTest, OptionsGets200WithHeaders) {
  auto reply = SipExchange(sipd_.sip_port(), MakeSipRequest("OPTIONS", sipd_.sip_port(), "opt1"));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(SipStatusCode(*reply), 200) << *reply;
  EXPECT_THAT(*reply, HasSubstr("Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-opt1\r\n"));
  EXPECT_THAT(*reply, HasSubstr("From: <sip:tester@127.0.0.1>;tag=t-opt1\r\n"));
  EXPECT_THAT(*reply, ::testing::ContainsRegex("To: <sip:127.0.0.1:[0-9]+>;tag=[0-9a-f.]+\r\n"));
  EXPECT_THAT(*reply, HasSubstr("Call-ID: opt1\r\n"));
  EXPECT_THAT(*reply, HasSubstr("CSeq: 1 OPTIONS\r\n"));
  EXPECT_THAT(*reply, HasSubstr("Allow: OPTIONS, ACK"));
  EXPECT_THAT(*reply, HasSubstr("Accept: "));
  EXPECT_THAT(*reply, HasSubstr("Supported:"));
  EXPECT_THAT(*reply, HasSubstr("Server: sipd/"));
  EXPECT_TRUE(absl::EndsWith(*reply, "Content-Length: 0\r\n\r\n")) << *reply;
}

TEST_F(SipdTest, SipsakOptionsGets200) {
  auto [status, output] = RunShell(absl::StrCat("sipsak -v -s sip:127.0.0.1:", sipd_.sip_port()));
  EXPECT_EQ(status, 0) << output;
  EXPECT_THAT(output, HasSubstr("200 OK"));
}

TEST_F(SipdTest, InviteGets501) {
  auto reply = SipExchange(sipd_.sip_port(), MakeSipRequest("INVITE", sipd_.sip_port(), "inv1"));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(SipStatusCode(*reply), 501) << *reply;
  EXPECT_THAT(*reply, HasSubstr("CSeq: 1 INVITE\r\n"));
}

TEST_F(SipdTest, MissingCallIdGets400) {
  std::string request = MakeSipRequest("OPTIONS", sipd_.sip_port(), "nocid");
  const size_t at = request.find("Call-ID: nocid\r\n");
  request.erase(at, std::string("Call-ID: nocid\r\n").size());
  auto reply = SipExchange(sipd_.sip_port(), request);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(SipStatusCode(*reply), 400) << *reply;
  EXPECT_THAT(*reply, HasSubstr("Missing Call-ID header"));
}

TEST_F(SipdTest, MalformedDatagramsDoNotHurtWorkers) {
  const std::vector<pid_t> workers = ChildrenNamed(sipd_.pid(), "sipd:sip");
  ASSERT_EQ(workers.size(), 2u);

  std::string binary;
  for (int i = 0; i < 3000; ++i) binary.push_back(static_cast<char>((i * 131) & 0xff));
  const std::string options = MakeSipRequest("OPTIONS", sipd_.sip_port(), "bad");
  const std::vector<std::string> garbage = {
      "garbage",
      "",
      "\r\n\r\n",
      options.substr(0, options.size() / 2),  // truncated header
      "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: nonsense\r\n\r\n",
      "OPTIONS  SIP/2.0\r\n\r\n",
      "SIP/2.0 200 OK\r\nbroken",
      "OPTIONS sip:x SIP/2.0\r\n" + std::string(65000, 'A'),  // ~64 KB
      std::string(65507, '\xff'),                             // largest IPv4 datagram
      binary,
      std::string("OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\0\0\0\r\n\r\n", 45),
  };
  for (const auto& datagram : garbage) {
    ASSERT_TRUE(sipd::testing::SendDatagram(sipd_.sip_port(), datagram).ok());
  }
  // Both workers still answer (send enough requests that each one handles some).
  for (int i = 0; i < 6; ++i) EXPECT_EQ(Options(absl::StrCat("after-bad-", i)), 200);
  EXPECT_EQ(ChildrenNamed(sipd_.pid(), "sipd:sip"), workers);
}

TEST_F(SipdTest, KilledWorkerIsReplacedAndSipStillAnswered) {
  const std::vector<pid_t> workers = ChildrenNamed(sipd_.pid(), "sipd:sip");
  ASSERT_EQ(workers.size(), 2u);
  ASSERT_EQ(kill(workers[0], SIGKILL), 0);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto now = ChildrenNamed(sipd_.pid(), "sipd:sip");
        return now.size() == 2 && std::find(now.begin(), now.end(), workers[0]) == now.end();
      },
      5s))
      << "no replacement worker";
  EXPECT_THAT(sipd_.log(), HasSubstr("was killed by signal 9"));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Options(absl::StrCat("after-kill-", i)), 200);
}

TEST_F(SipdTest, SigtermStopsEveryChildAndRemovesPidFile) {
  const pid_t attendant = sipd_.pid();
  const std::vector<pid_t> children = ChildPids(attendant);
  ASSERT_EQ(children.size(), 3u);
  ASSERT_EQ(kill(attendant, SIGTERM), 0);
  auto status = sipd_.WaitForExit(8s);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  for (pid_t child : children) EXPECT_FALSE(ProcessAlive(child)) << child;
  EXPECT_TRUE(ProcessGroupPids(attendant).empty());
  EXPECT_FALSE(std::ifstream(sipd_.run_dir() + "/sipd.pid").good());
  EXPECT_THAT(sipd_.log(), HasSubstr("sipd stopped"));
}

TEST_F(SipdTest, SigkillOfAttendantLeavesNoOrphans) {
  const pid_t attendant = sipd_.pid();
  const std::vector<pid_t> children = ChildPids(attendant);
  ASSERT_EQ(children.size(), 3u);
  ASSERT_EQ(kill(attendant, SIGKILL), 0);
  auto status = sipd_.WaitForExit(5s);
  ASSERT_TRUE(status.ok()) << status.status();
  // WaitForExit SIGKILLs the group afterwards; check before that could race, so
  // look at the children directly: PDEATHSIG made them exit on their own.
  EXPECT_TRUE(WaitUntil(
      [&] {
        return std::none_of(children.begin(), children.end(),
                            [](pid_t p) { return ProcessAlive(p); });
      },
      3s));
}

}  // namespace
