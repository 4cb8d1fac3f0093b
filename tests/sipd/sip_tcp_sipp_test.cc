// SIP over TCP driven by sipp (`-t t1`: one TCP connection): OPTIONS answered on the
// connection, and REGISTER end to end through the registrar with usrloc storing the
// receiving socket as tcp:IP:PORT (seen with ul_dump over the MI FIFO).
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

class SipTcpSippTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/sipd-tcp-sipp-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    work_ = dir;
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = false,
        .tcp = true,
        .extra_config = "loadmodule \"mi_fifo\"\n"
                        "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/fifo\")\n"
                        "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
                        "loadmodule \"usrloc\"\nloadmodule \"registrar\"\n"});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "sipd log:\n%s\n", sipd_->log().c_str());
    sipd_.reset();
    std::filesystem::remove_all(work_);
  }
  std::string Mi(const std::string& command, const std::vector<std::string>& args = {}) {
    auto client = legacy::FifoClient::Create(sipd_->tmp_dir() + "/fifo", sipd_->tmp_dir() + "/");
    if (!client.ok()) return client.status().ToString();
    auto reply = (*client)->Execute(command, args, 20s);
    return reply.ok() ? *reply : reply.status().ToString();
  }

  std::string work_;
  std::unique_ptr<SipdInstance> sipd_;
};

TEST_F(SipTcpSippTest, OptionsOverOneTcpConnection) {
  SippResult r =
      RunSipp(sipd_->tcp_port(), "options_uac.xml", {"-t", "t1", "-m", "200", "-r", "200"}, work_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(Mi("get_statistics", {"rcv_requests"}), HasSubstr("core:rcv_requests:: 200\n"));
}

TEST_F(SipTcpSippTest, RegisterOverTcpStoresTheTcpSocket) {
  SippResult r =
      RunSipp(sipd_->tcp_port(), "register.xml",
              {"-t", "t1", "-inf", ScenarioPath("users.csv"), "-m", "20", "-r", "50"}, work_);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string dump = Mi("ul_dump");
  EXPECT_THAT(dump, HasSubstr("AOR:: user01\n"));
  const std::string socket = absl::StrCat("Socket:: tcp:127.0.0.1:", sipd_->tcp_port(), "\n");
  size_t sockets = 0;
  for (size_t at = dump.find(socket); at != std::string::npos; at = dump.find(socket, at + 1)) {
    ++sockets;
  }
  EXPECT_EQ(sockets, 20u) << dump;
  EXPECT_THAT(Mi("get_statistics", {"registered_users"}),
              HasSubstr("usrloc:registered_users:: 20\n"));
}

}  // namespace
}  // namespace sipd::testing
