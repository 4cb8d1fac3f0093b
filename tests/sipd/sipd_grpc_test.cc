// Integration tests of the daemon seen through the MI (gRPC transport, generated stubs):
// SIP traffic moves the core/sl counters, `ps` shows the process table of spec 10.1,
// supervision restarts processes into the same slot, `debug` reaches every process,
// `kill` and Ctrl-C stop everything.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/support/sipd_harness.h"

namespace {

namespace v1 = ::sipd::mi::v1;
using ::sipd::testing::MakeSipRequest;
using ::sipd::testing::ProcessAlive;
using ::sipd::testing::ProcessGroupPids;
using ::sipd::testing::SendDatagram;
using ::sipd::testing::SipdInstance;
using ::sipd::testing::SipExchange;
using ::sipd::testing::SipStatusCode;
using ::sipd::testing::WaitUntil;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

struct PsEntry {
  int id = -1;
  int pid = 0;
  std::string type;
};

class SipdGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(sipd_.Start().ok()) << sipd_.log();
    Connect();
  }
  // SIPD_TEST_LOG=1 prints sipd's log after every test, not only after failures.
  void TearDown() override {
    if (HasFailure() || getenv("SIPD_TEST_LOG"))
      std::fprintf(stderr, "sipd log:\n%s\n", sipd_.log().c_str());
  }

  void Connect() {
    stub_ = v1::Management::NewStub(
        grpc::CreateChannel(sipd_.grpc_target(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Execute(const std::string& command, const std::vector<std::string>& params,
                       v1::Reply* reply) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    v1::ExecuteRequest request;
    request.set_command(command);
    for (const auto& p : params) request.add_params(p);
    return stub_->Execute(&context, request, reply);
  }

  // get_statistics as a name -> value map ("core:rcv_requests" -> 3).
  std::map<std::string, uint64_t> Statistics(const std::vector<std::string>& selectors) {
    v1::Reply reply;
    grpc::Status status = Execute("get_statistics", selectors, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::map<std::string, uint64_t> out;
    for (const auto& node : reply.nodes()) {
      uint64_t value = 0;
      EXPECT_TRUE(absl::SimpleAtoi(node.value(), &value)) << node.name();
      out[node.name()] = value;
    }
    return out;
  }

  // `ps` parsed from the attributes of its Process nodes.
  std::vector<PsEntry> Ps() {
    v1::Reply reply;
    grpc::Status status = Execute("ps", {}, &reply);
    EXPECT_TRUE(status.ok()) << status.error_message();
    std::vector<PsEntry> out;
    for (const auto& node : reply.nodes()) {
      PsEntry e;
      for (const auto& a : node.attributes()) {
        if (a.name() == "ID") e.id = std::stoi(a.value());
        if (a.name() == "PID") e.pid = std::stoi(a.value());
        if (a.name() == "Type") e.type = a.value();
      }
      out.push_back(e);
    }
    return out;
  }

  bool GrpcAnswers() {
    v1::Reply reply;
    return Execute("uptime", {}, &reply).ok();
  }

  SipdInstance sipd_{SipdInstance::Options{.grpc = true, .children = 2}};
  std::unique_ptr<v1::Management::Stub> stub_;
};

TEST_F(SipdGrpcTest, SipTrafficMovesCoreAndSlCounters) {
  const int port = sipd_.sip_port();
  for (int i = 0; i < 3; ++i) {
    auto reply = SipExchange(port, MakeSipRequest("OPTIONS", port, absl::StrCat("c", i)));
    ASSERT_TRUE(reply.ok());
    EXPECT_EQ(SipStatusCode(*reply), 200);
  }
  auto invite = SipExchange(port, MakeSipRequest("INVITE", port, "inv"));
  ASSERT_TRUE(invite.ok());
  EXPECT_EQ(SipStatusCode(*invite), 501);
  ASSERT_TRUE(SendDatagram(port, "complete garbage").ok());
  ASSERT_TRUE(SendDatagram(port, MakeSipRequest("ACK", port, "ack")).ok());

  std::map<std::string, uint64_t> stats;
  // The garbage and the ACK get no answer: wait until a worker has counted them.
  ASSERT_TRUE(WaitUntil(
      [&] {
        stats = Statistics({"core:", "sl:"});
        return stats["core:bad_msg_hdr"] == 1 && stats["sl:received_ACKs"] == 1;
      },
      3s));
  EXPECT_EQ(stats["core:rcv_requests"], 5u);
  EXPECT_EQ(stats["core:unsupported_methods"], 1u);
  EXPECT_EQ(stats["core:err_requests"], 1u);
  EXPECT_EQ(stats["core:drop_requests"], 1u);
  EXPECT_EQ(stats["sl:2xx_replies"], 3u);
  EXPECT_EQ(stats["sl:5xx_replies"], 1u);
  EXPECT_EQ(stats["sl:sent_replies"], 4u);
  EXPECT_EQ(stats["sl:sent_err_replies"], 1u);

  // Groups in the order of spec 7.4 and real process figures.
  v1::Reply all;
  ASSERT_TRUE(Execute("get_statistics", {"all"}, &all).ok());
  std::vector<std::string> groups;
  for (const auto& node : all.nodes()) {
    const std::string group = node.name().substr(0, node.name().find(':'));
    if (groups.empty() || groups.back() != group) groups.push_back(group);
  }
  ASSERT_GE(groups.size(), 7u);
  EXPECT_EQ(std::vector<std::string>(groups.begin(), groups.begin() + 4),
            (std::vector<std::string>{"shmem", "core", "net", "sl"}));
  EXPECT_EQ(std::vector<std::string>(groups.end() - 3, groups.end()),
            (std::vector<std::string>{"pkmem", "load", "mi"}));
  auto pk = Statistics({"2-real_used_size", "2-max_used_size", "shmem:", "load:"});
  EXPECT_GT(pk["pkmem:2-real_used_size"], 0u);
  EXPECT_GE(pk["pkmem:2-max_used_size"], pk["pkmem:2-real_used_size"]);
  EXPECT_EQ(pk["shmem:total_size"], 64u * 1024 * 1024);
  EXPECT_EQ(pk.count(absl::StrCat("load:udp:127.0.0.1:", port, "-load")), 1u);
}

TEST_F(SipdGrpcTest, PsShowsTheProcessTable) {
  const std::vector<PsEntry> ps = Ps();
  ASSERT_EQ(ps.size(), 5u);
  const std::string sip = absl::StrCat("SIP receiver udp:127.0.0.1:", sipd_.sip_port(), " ");
  EXPECT_EQ(ps[0].type, "attendant");
  EXPECT_EQ(ps[0].pid, sipd_.pid());
  EXPECT_EQ(ps[1].type, "MI gRPC");
  EXPECT_EQ(ps[2].type, sip);
  EXPECT_EQ(ps[3].type, sip);
  EXPECT_TRUE(absl::StartsWith(ps[4].type, "timer")) << ps[4].type;
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(ps[i].id, static_cast<int>(i));
    EXPECT_TRUE(ProcessAlive(ps[i].pid)) << i;
  }
}

TEST_F(SipdGrpcTest, KilledWorkerComesBackInTheSameSlot) {
  const std::vector<PsEntry> before = Ps();
  ASSERT_EQ(before.size(), 5u);
  ASSERT_EQ(kill(before[3].pid, SIGKILL), 0);
  std::vector<PsEntry> after;
  ASSERT_TRUE(WaitUntil(
      [&] {
        after = Ps();
        return after.size() == 5 && after[3].pid != 0 && after[3].pid != before[3].pid;
      },
      5s));
  EXPECT_EQ(after[3].type, before[3].type);
  EXPECT_EQ(after[2].pid, before[2].pid);
  auto reply = SipExchange(sipd_.sip_port(), MakeSipRequest("OPTIONS", sipd_.sip_port(), "k"));
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(SipStatusCode(*reply), 200);
}

TEST_F(SipdGrpcTest, KilledGrpcProcessIsRestarted) {
  const std::vector<PsEntry> before = Ps();
  ASSERT_EQ(before.size(), 5u);
  ASSERT_EQ(before[1].type, "MI gRPC");
  ASSERT_EQ(kill(before[1].pid, SIGKILL), 0);
  ASSERT_TRUE(WaitUntil([&] { return !ProcessAlive(before[1].pid); }, 3s));
  // A fresh channel per attempt: a channel created while the port was closed would
  // wait out gRPC's reconnect back-off.
  ASSERT_TRUE(WaitUntil(
      [&] {
        Connect();
        return GrpcAnswers();
      },
      8s))
      << "gRPC did not come back";
  const std::vector<PsEntry> after = Ps();
  ASSERT_EQ(after.size(), 5u);
  EXPECT_EQ(after[1].type, "MI gRPC");
  EXPECT_NE(after[1].pid, before[1].pid);
  EXPECT_THAT(sipd_.log(), HasSubstr("(MI gRPC)"));
}

TEST_F(SipdGrpcTest, DebugCommandChangesTheLevelInEveryProcess) {
  const int port = sipd_.sip_port();
  const std::string reply_datagram =
      "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-x\r\n"
      "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: dbg\r\nCSeq: 1 INVITE\r\n"
      "Content-Length: 0\r\n\r\n";
  // At level 3 (info) workers do not log dropped replies.
  ASSERT_TRUE(SendDatagram(port, reply_datagram).ok());
  ASSERT_TRUE(WaitUntil([&] { return Statistics({"rcv_replies"})["core:rcv_replies"] == 1; }, 3s));
  EXPECT_THAT(sipd_.log(), Not(HasSubstr("dropped a 180 reply")));

  v1::Reply reply;
  ASSERT_TRUE(Execute("debug", {"4"}, &reply).ok());
  ASSERT_EQ(reply.code(), 200u);
  // Every worker applies the shared level within one wake-up (200 ms); send a few so
  // both workers see one.
  ASSERT_TRUE(WaitUntil(
      [&] {
        (void)SendDatagram(port, reply_datagram);
        return absl::StrContains(sipd_.log(), "dropped a 180 reply");
      },
      3s));
  ASSERT_TRUE(Execute("debug", {}, &reply).ok());
  ASSERT_EQ(reply.nodes_size(), 1);
  EXPECT_EQ(reply.nodes(0).value(), "4");
}

TEST_F(SipdGrpcTest, KillCommandStopsTheDaemon) {
  const pid_t attendant = sipd_.pid();
  v1::Reply reply;
  (void)Execute("kill", {}, &reply);  // the answer may or may not arrive
  auto status = sipd_.WaitForExit(8s);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  EXPECT_TRUE(WaitUntil([&] { return ProcessGroupPids(attendant).empty(); }, 2s));
  EXPECT_FALSE(std::ifstream(sipd_.run_dir() + "/sipd.pid").good());
}

TEST_F(SipdGrpcTest, CtrlCStopsEverythingCleanly) {
  const pid_t attendant = sipd_.pid();
  // The terminal sends SIGINT to the whole foreground process group.
  ASSERT_EQ(kill(-attendant, SIGINT), 0);
  auto status = sipd_.WaitForExit(8s);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  EXPECT_TRUE(WaitUntil([&] { return ProcessGroupPids(attendant).empty(); }, 2s));
  EXPECT_THAT(sipd_.log(), HasSubstr("sipd stopped"));
  EXPECT_THAT(sipd_.log(), Not(HasSubstr("restarting")));
}

}  // namespace

namespace {

// Field 19 of /proc/PID/stat: the nice value.
int NiceOf(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) may contain spaces: fields after it start past the ')'.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 19 && rest >> field; ++i) {
  }
  return std::stoi(field);
}

// Starts a sipd with `extra_config` and expects the MI gRPC process at `mi_nice` and every
// other process (attendant, timer, SIP receiver) at 0.
void ExpectNiceValues(const std::string& extra_config, int mi_nice) {
  SipdInstance sipd(
      SipdInstance::Options{.grpc = true, .children = 1, .extra_config = extra_config});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  auto stub = v1::Management::NewStub(
      grpc::CreateChannel(sipd.grpc_target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 5s);
  v1::ExecuteRequest request;
  request.set_command("ps");
  v1::Reply reply;
  ASSERT_TRUE(stub->Execute(&context, request, &reply).ok());
  int checked = 0;
  for (const auto& node : reply.nodes()) {
    int pid = 0;
    std::string type;
    for (const auto& a : node.attributes()) {
      if (a.name() == "PID") pid = std::stoi(a.value());
      if (a.name() == "Type") type = a.value();
    }
    SCOPED_TRACE(type);
    EXPECT_EQ(NiceOf(pid), type == "MI gRPC" ? mi_nice : 0);
    ++checked;
  }
  EXPECT_EQ(checked, 4);
}

TEST(SipdMiNiceTest, MiNiceLowersOnlyModuleProcesses) { ExpectNiceValues("mi_nice = 10\n", 10); }

// The default: the MI yields the CPU to SIP (sipd/core/config.h, mi_nice).
TEST(SipdMiNiceTest, MiProcessesRunAtNice19ByDefault) { ExpectNiceValues("", 19); }

TEST(SipdMiNiceTest, MiNiceZeroKeepsTheSipWorkersPriority) { ExpectNiceValues("mi_nice = 0\n", 0); }

}  // namespace
