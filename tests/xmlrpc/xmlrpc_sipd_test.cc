// mi_xmlrpc inside a real sipd (tests/support/sipd_harness.h): raw HTTP, curl and
// Python's xmlrpc.client against the MI XMLRPC process, both reply options, faults, the
// malformed-input table, and start-up errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "legacy-transports/xmlrpc/server.h"
#include "tests/support/sipd_harness.h"
#include "tests/xmlrpc/bad_inputs.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::xmlrpc {
namespace {

using testing::CallOnce;
using testing::CallOutcome;
using ::testing::HasSubstr;
using testing::HttpResponse;
using testing::MethodCall;
using testing::ParseOutcome;
using testing::PostRequest;
using testing::RawConnection;
using testing::StringParams;

std::string XmlrpcConfig(int port, const std::string& extra = "") {
  return absl::StrCat("loadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"port\", ", port, ")\n",
                      extra);
}

// Runs a shell command and returns its stdout (and exit status).
std::string RunCommand(const std::string& command, int* status = nullptr) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return output;
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, n);
  const int rc = pclose(pipe);
  if (status != nullptr) *status = rc;
  return output;
}

class SipdXmlrpcTest : public ::testing::Test {
 protected:
  // One sipd per test case (suite-level would share state between tests).
  void StartSipd(const std::string& extra = "") {
    ::sipd::testing::SipdInstance::Options options;
    options.grpc = false;
    options.extra_config = XmlrpcConfig(0, extra);  // port 0: read back from the listeners
    sipd_ = std::make_unique<::sipd::testing::SipdInstance>(options);
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    port_ = sipd_->listener_port("mi_xmlrpc");
    ASSERT_NE(port_, 0) << sipd_->log();
    // The MI XMLRPC process listens as soon as it is forked (the socket was bound before).
    ASSERT_TRUE(::sipd::testing::WaitUntil(
        [&] { return CallOnce(port_, MethodCall("version")).has_value(); },
        std::chrono::seconds(10)))
        << sipd_->log();
  }

  void TearDown() override {
    if (sipd_ != nullptr) {
      const absl::Status stopped = sipd_->Stop();
      EXPECT_TRUE(stopped.ok()) << stopped << "\n" << sipd_->log();
    }
  }

  std::unique_ptr<::sipd::testing::SipdInstance> sipd_;
  int port_ = 0;
};

// Every line of a get_statistics reply is `core:<name>:: <number>`.
void ExpectCoreStatisticsLines(const std::string& text) {
  ASSERT_FALSE(text.empty());
  ASSERT_EQ(text.back(), '\n');
  const std::regex line_pattern("core:[A-Za-z0-9_]+:: [0-9]+");
  for (absl::string_view line : absl::StrSplit(text.substr(0, text.size() - 1), '\n')) {
    EXPECT_TRUE(std::regex_match(std::string(line), line_pattern)) << line;
  }
  EXPECT_THAT(text, HasSubstr("core:rcv_requests:: "));
}

TEST_F(SipdXmlrpcTest, GetStatisticsOverRawHttp) {
  StartSipd();
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  HttpResponse http;
  const std::optional<CallOutcome> outcome =
      connection.Call(StringParams("get_statistics", {"core:"}), &http);
  ASSERT_TRUE(outcome.has_value()) << http.status_line << http.body;
  ASSERT_FALSE(outcome->is_fault) << outcome->fault_string;
  ExpectCoreStatisticsLines(outcome->String());
  EXPECT_EQ(http.headers["content-type"], "text/xml; charset=\"utf-8\"");

  // Keep-alive: a second request on the same connection.
  const std::optional<CallOutcome> second = connection.Call(MethodCall("version"));
  ASSERT_TRUE(second.has_value());
  EXPECT_THAT(second->String(), ::testing::StartsWith("Server:: "));
}

TEST_F(SipdXmlrpcTest, GetStatisticsWithCurl) {
  if (access(XMLRPC_TEST_CURL, X_OK) != 0) GTEST_SKIP() << "no curl";
  StartSipd();
  const std::string body_path = sipd_->tmp_dir() + "/call.xml";
  std::ofstream(body_path) << StringParams("get_statistics", {"core:"});
  int status = 0;
  const std::string output =
      RunCommand(absl::StrCat(XMLRPC_TEST_CURL,
                              " -sS --max-time 10 -H 'Content-Type: text/xml' "
                              "--data-binary @",
                              body_path, " http://127.0.0.1:", port_, "/RPC2"),
                 &status);
  ASSERT_EQ(status, 0) << output;
  const CallOutcome outcome = ParseOutcome(output);
  ASSERT_FALSE(outcome.is_fault) << outcome.fault_string;
  ExpectCoreStatisticsLines(outcome.String());
}

TEST_F(SipdXmlrpcTest, PythonXmlrpcClient) {
  if (access(XMLRPC_TEST_PYTHON, X_OK) != 0) GTEST_SKIP() << "no python3";
  StartSipd();
  const std::string script_path = sipd_->tmp_dir() + "/client.py";
  std::ofstream(script_path) << absl::StrCat(
      "import sys, xmlrpc.client\n"
      "proxy = xmlrpc.client.ServerProxy('http://127.0.0.1:",
      port_,
      "/RPC2')\n"
      "sys.stdout.write(proxy.get_statistics('core:'))\n"
      "sys.stdout.write('--\\n')\n"
      "try:\n"
      "    proxy.nosuchcommand()\n"
      "except xmlrpc.client.Fault as fault:\n"
      "    print(fault.faultCode, fault.faultString)\n"
      "try:\n"
      "    proxy.help('nosuchcmd')\n"
      "except xmlrpc.client.Fault as fault:\n"
      "    print(fault.faultCode)\n"
      "print('system' if 'system.multicall' in proxy.system.listMethods() else 'none')\n");
  int status = 0;
  const std::string output =
      RunCommand(absl::StrCat(XMLRPC_TEST_PYTHON, " ", script_path, " 2>&1"), &status);
  ASSERT_EQ(status, 0) << output;
  const std::vector<std::string> parts = absl::StrSplit(output, "--\n");
  ASSERT_EQ(parts.size(), 2u) << output;
  ExpectCoreStatisticsLines(parts[0]);
  EXPECT_EQ(parts[1],
            "-506 Requested command (nosuchcommand) is not available!\n"
            "404\n"
            "system\n");
}

TEST_F(SipdXmlrpcTest, ReplyOptionArray) {
  StartSipd("modparam(\"mi_xmlrpc\", \"reply_option\", 1)\n");
  const std::optional<CallOutcome> outcome =
      CallOnce(port_, StringParams("get_statistics", {"core:"}));
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->is_fault) << outcome->fault_string;
  const std::vector<std::string> items = outcome->Strings();
  ASSERT_GT(items.size(), 1u);
  std::string joined;
  for (const std::string& item : items) {
    EXPECT_EQ(item.find('\n'), item.size() - 1) << item;  // one line per element
    joined += item;
  }
  ExpectCoreStatisticsLines(joined);
}

TEST_F(SipdXmlrpcTest, Faults) {
  StartSipd();
  std::optional<CallOutcome> outcome = CallOnce(port_, MethodCall("nosuchcmd"));
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->fault_code, -506);
  EXPECT_EQ(outcome->fault_string, "Requested command (nosuchcmd) is not available!");

  // A non-2xx MI code is the fault code, with the full reason.
  outcome = CallOnce(port_, StringParams("help", {"nosuchcmd"}));
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->fault_code, 404);
  EXPECT_FALSE(outcome->fault_string.empty());

  outcome = CallOnce(port_, StringParams("get_statistics", {"nosuch:stat"}));
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->fault_code, 404);
  EXPECT_EQ(outcome->fault_string, "Statistics Not Found");
}

TEST_F(SipdXmlrpcTest, PsListsTheXmlrpcProcess) {
  StartSipd();
  const std::optional<CallOutcome> outcome = CallOnce(port_, MethodCall("ps"));
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->is_fault) << outcome->fault_string;
  EXPECT_THAT(outcome->String(), HasSubstr(" Type=MI XMLRPC\n"));
}

TEST_F(SipdXmlrpcTest, BadInputGetsItsDocumentedAnswerAndSipdGoesOn) {
  StartSipd();
  for (const testing::BadInput& c : testing::BadInputs("version", "get_statistics")) {
    SCOPED_TRACE(c.name);
    RawConnection connection;
    ASSERT_TRUE(connection.Connect(port_));
    connection.Send(c.request);
    if (c.shutdown_write) connection.ShutdownWrite();
    const HttpResponse http = connection.ReadResponse();
    ASSERT_TRUE(http.ok) << sipd_->log();
    EXPECT_EQ(http.status, c.http_status) << http.body;
    if (c.http_status == 200) {
      const CallOutcome outcome = ParseOutcome(http.body);
      EXPECT_EQ(outcome.fault_code, c.fault_code) << outcome.fault_string;
    }
    const std::optional<CallOutcome> good = CallOnce(port_, MethodCall("version"));
    ASSERT_TRUE(good.has_value()) << sipd_->log();
    EXPECT_FALSE(good->is_fault);
  }
  // Nothing crashed: the MI XMLRPC process is the one that started.
  EXPECT_THAT(sipd_->log(), ::testing::Not(HasSubstr("restart")));
}

TEST_F(SipdXmlrpcTest, SilentClientDoesNotBlockOthers) {
  StartSipd("modparam(\"mi_xmlrpc\", \"header_timeout\", 2)\n");
  RawConnection silent;
  ASSERT_TRUE(silent.Connect(port_));
  for (int i = 0; i < 3; ++i) {
    const std::optional<CallOutcome> outcome = CallOnce(port_, MethodCall("version"));
    ASSERT_TRUE(outcome.has_value());
    EXPECT_FALSE(outcome->is_fault);
  }
  EXPECT_TRUE(silent.WaitClosed(std::chrono::seconds(10)));
}

// PID of the MI XMLRPC process according to `ps` over XML-RPC, or 0.
pid_t MiXmlrpcPid(int port) {
  const std::optional<CallOutcome> outcome = CallOnce(port, MethodCall("ps"));
  if (!outcome || outcome->is_fault) return 0;
  const std::regex pattern("PID=([0-9]+) Type=MI XMLRPC");
  std::smatch match;
  const std::string text = outcome->String();
  return std::regex_search(text, match, pattern) ? std::stoi(match[1]) : 0;
}

TEST_F(SipdXmlrpcTest, KilledProcessIsRestartedOnTheSameSocket) {
  StartSipd();
  const pid_t first = MiXmlrpcPid(port_);
  ASSERT_GT(first, 0);
  ASSERT_EQ(kill(first, SIGKILL), 0);
  // The attendant restarts it; the socket bound before the fork is served again.
  pid_t second = 0;
  EXPECT_TRUE(::sipd::testing::WaitUntil(
      [&] {
        second = MiXmlrpcPid(port_);
        return second > 0 && second != first;
      },
      std::chrono::seconds(10)))
      << sipd_->log();
  const std::optional<CallOutcome> outcome = CallOnce(port_, MethodCall("version"));
  ASSERT_TRUE(outcome.has_value());
  EXPECT_FALSE(outcome->is_fault);
}

TEST(SipdXmlrpcStartupTest, BusyPortFailsStartup) {
  absl::StatusOr<int> busy = OpenListenSocket("127.0.0.1", 0);
  ASSERT_TRUE(busy.ok());
  const int port = *BoundPort(*busy);
  ::sipd::testing::SipdInstance::Options options;
  options.grpc = false;
  options.extra_config = XmlrpcConfig(port);
  ::sipd::testing::SipdInstance sipd(options);
  const absl::Status started = sipd.Start();
  EXPECT_FALSE(started.ok());
  EXPECT_THAT(sipd.log(), HasSubstr(absl::StrCat("127.0.0.1:", port)));
  EXPECT_THAT(sipd.log(), HasSubstr("Address already in use"));
  close(*busy);
}

TEST(SipdXmlrpcStartupTest, BadParametersFailStartup) {
  for (const std::string& param :
       {std::string("modparam(\"mi_xmlrpc\", \"reply_option\", 2)"),
        std::string("modparam(\"mi_xmlrpc\", \"listen\", \"not-an-ip\")"),
        std::string("modparam(\"mi_xmlrpc\", \"max_connections\", 0)"),
        std::string("modparam(\"mi_xmlrpc\", \"nosuchparam\", 1)")}) {
    SCOPED_TRACE(param);
    ::sipd::testing::SipdInstance::Options options;
    options.grpc = false;
    options.extra_config = XmlrpcConfig(0, param + "\n");
    ::sipd::testing::SipdInstance sipd(options);
    EXPECT_FALSE(sipd.Start().ok());
    EXPECT_THAT(sipd.log(), HasSubstr("mi_xmlrpc"));
  }
}

}  // namespace
}  // namespace sipd::xmlrpc
