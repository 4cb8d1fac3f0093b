// mi_xmlrpc inside a real sipd: async replies completed by another process (mi_selftest's
// async_echo / async_fail / async_never, completed by the timer process), cancellation
// by a closed connection, and a streamed ul_dump sent chunked (HTTP/1.1) or whole
// (HTTP/1.0), read by our raw client, Python's xmlrpc.client and curl.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/sipd_harness.h"
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

class SipdXmlrpcAsyncTest : public ::testing::Test {
 protected:
  void StartSipd(const std::string& extra = "") {
    ::sipd::testing::SipdInstance::Options options;
    options.grpc = false;
    options.extra_config =
        absl::StrCat("loadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"port\", 0)\n",
                     "loadmodule \"mi_selftest\"\n", extra);
    sipd_ = std::make_unique<::sipd::testing::SipdInstance>(options);
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    port_ = sipd_->listener_port("mi_xmlrpc");
    ASSERT_NE(port_, 0) << sipd_->log();
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

  // mi:async_pending (MI calls waiting for an async reply), or -1.
  int AsyncPending() {
    const std::optional<CallOutcome> outcome =
        CallOnce(port_, StringParams("get_statistics", {"async_pending"}));
    if (!outcome || outcome->is_fault) {
      ADD_FAILURE() << "get_statistics async_pending: "
                    << (outcome ? outcome->fault_string : std::string("no answer"));
      return -1;
    }
    const std::string text = outcome->String();
    const size_t colon = text.rfind(":: ");
    int value = -1;
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(text.substr(colon + 3)), &value)) {
      return -1;
    }
    return value;
  }

  std::unique_ptr<::sipd::testing::SipdInstance> sipd_;
  int port_ = 0;
};

TEST_F(SipdXmlrpcAsyncTest, AsyncEchoIsAnsweredWhenAnotherProcessCompletesIt) {
  StartSipd();
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  const std::optional<CallOutcome> outcome =
      connection.Call(StringParams("async_echo", {"50", "hello"}));
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->is_fault) << outcome->fault_string;
  EXPECT_EQ(outcome->String(), "echo:: hello\n");
  // The connection is kept for the next request.
  EXPECT_TRUE(connection.Call(MethodCall("version")).has_value());
}

TEST_F(SipdXmlrpcAsyncTest, AsyncFailIsTheAsyncFault) {
  StartSipd();
  const std::optional<CallOutcome> outcome = CallOnce(port_, StringParams("async_fail", {"20"}));
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->fault_code, -500);
  EXPECT_EQ(outcome->fault_string, "Command (async_fail) processing failed (async).\n");
}

TEST_F(SipdXmlrpcAsyncTest, ThousandConcurrentAsyncCallsHoldOnlyTheirConnections) {
  StartSipd();
  constexpr int kCalls = 1000;
  std::vector<std::unique_ptr<RawConnection>> callers;
  for (int i = 0; i < kCalls; ++i) {
    callers.push_back(std::make_unique<RawConnection>());
    ASSERT_TRUE(callers.back()->Connect(port_)) << i;
    // 8 s: all of them are pending together long before the first completes.
    ASSERT_TRUE(callers.back()->Send(
        PostRequest(StringParams("async_echo", {"8000", absl::StrCat("n", i)}))));
  }
  // While they wait, another client is served; the statistic sees them all pending.
  int pending = 0;
  ASSERT_TRUE(::sipd::testing::WaitUntil(
      [&] {
        pending = AsyncPending();
        return pending == kCalls;
      },
      std::chrono::seconds(20)))
      << "async_pending " << pending;
  const std::optional<CallOutcome> version = CallOnce(port_, MethodCall("version"));
  ASSERT_TRUE(version.has_value());
  EXPECT_FALSE(version->is_fault);
  // Every caller gets its own answer.
  for (int i = 0; i < kCalls; ++i) {
    const HttpResponse http = callers[i]->ReadResponse(std::chrono::seconds(30));
    ASSERT_TRUE(http.ok) << i;
    EXPECT_EQ(ParseOutcome(http.body).String(), absl::StrCat("echo:: n", i, "\n"));
  }
  EXPECT_TRUE(
      ::sipd::testing::WaitUntil([&] { return AsyncPending() == 0; }, std::chrono::seconds(10)));
}

TEST_F(SipdXmlrpcAsyncTest, ClosedConnectionsReleaseTheirPendingCalls) {
  StartSipd();
  constexpr int kCalls = 200;
  std::vector<std::unique_ptr<RawConnection>> callers;
  for (int i = 0; i < kCalls; ++i) {
    callers.push_back(std::make_unique<RawConnection>());
    ASSERT_TRUE(callers.back()->Connect(port_));
    ASSERT_TRUE(callers.back()->Send(PostRequest(MethodCall("async_never"))));
  }
  int pending = 0;
  ASSERT_TRUE(::sipd::testing::WaitUntil(
      [&] {
        pending = AsyncPending();
        return pending == kCalls;
      },
      std::chrono::seconds(20)))
      << "async_pending " << pending;
  callers.clear();  // the clients go away
  EXPECT_TRUE(::sipd::testing::WaitUntil(
      [&] {
        pending = AsyncPending();
        return pending == 0;
      },
      std::chrono::seconds(20)))
      << "async_pending " << pending;
  EXPECT_TRUE(CallOnce(port_, MethodCall("version")).has_value());
}

// Adds `count` AORs with one contact each (ul_add over XML-RPC).
void AddContacts(int port, int count) {
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port));
  for (int i = 0; i < count; ++i) {
    const std::optional<CallOutcome> outcome =
        connection.Call(StringParams("ul_add", {"location", absl::StrCat("user", i, "@example.com"),
                                                absl::StrCat("sip:user", i, "@192.0.2.1:5060"),
                                                "3600", "1.00", "x", "0", "0", "4294967295"}));
    ASSERT_TRUE(outcome.has_value()) << i;
    ASSERT_FALSE(outcome->is_fault) << outcome->fault_string;
  }
}

int CountLines(const std::string& text, const std::string& prefix) {
  int count = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, prefix)) ++count;
  }
  return count;
}

TEST_F(SipdXmlrpcAsyncTest, UlDumpIsStreamedChunkedAndWholeOnHttp10) {
  StartSipd("loadmodule \"usrloc\"\n");
  constexpr int kAors = 180;
  AddContacts(port_, kAors);

  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  ASSERT_TRUE(connection.Send(PostRequest(MethodCall("ul_dump"))));
  HttpResponse http = connection.ReadResponse(std::chrono::seconds(30));
  ASSERT_TRUE(http.ok);
  EXPECT_EQ(http.headers["transfer-encoding"], "chunked");
  EXPECT_GE(http.chunks, kAors / 50);  // one part per 50 records at least
  const std::string chunked_text = ParseOutcome(http.body).String();
  EXPECT_EQ(CountLines(chunked_text, "AOR:: "), kAors);
  EXPECT_EQ(CountLines(chunked_text, "Contact:: "), kAors);
  // The connection goes on.
  EXPECT_TRUE(connection.Call(MethodCall("version")).has_value());

  const std::string body = MethodCall("ul_dump");
  ASSERT_TRUE(connection.Connect(port_));
  ASSERT_TRUE(connection.Send(
      absl::StrCat("POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: ", body.size(),
                   "\r\n\r\n", body)));
  http = connection.ReadResponse(std::chrono::seconds(30));
  ASSERT_TRUE(http.ok);
  EXPECT_EQ(http.chunks, 0);
  EXPECT_FALSE(http.headers["content-length"].empty());
  const std::string whole_text = ParseOutcome(http.body).String();
  EXPECT_EQ(CountLines(whole_text, "AOR:: "), kAors);
}

// Runs a shell command and returns its stdout (and exit status).
std::string RunCommand(const std::string& command, int* status) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return output;
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, n);
  *status = pclose(pipe);
  return output;
}

TEST_F(SipdXmlrpcAsyncTest, ChunkedUlDumpReadsInPythonAndCurl) {
  StartSipd("loadmodule \"usrloc\"\n");
  AddContacts(port_, 120);
  if (access(XMLRPC_TEST_PYTHON, X_OK) == 0) {
    const std::string script = sipd_->tmp_dir() + "/dump.py";
    std::ofstream(script) << absl::StrCat(
        "import xmlrpc.client\n"
        "proxy = xmlrpc.client.ServerProxy('http://127.0.0.1:",
        port_,
        "/RPC2')\n"
        "text = proxy.ul_dump()\n"
        "print(sum(1 for l in text.split('\\n') if l.startswith('AOR:: ')))\n"
        "print(proxy.async_echo('10', 'py'), end='')\n");
    int status = 0;
    const std::string output =
        RunCommand(absl::StrCat(XMLRPC_TEST_PYTHON, " ", script, " 2>&1"), &status);
    EXPECT_EQ(status, 0) << output;
    EXPECT_EQ(output, "120\necho:: py\n");
  }
  if (access(XMLRPC_TEST_CURL, X_OK) == 0) {
    const std::string body = sipd_->tmp_dir() + "/dump.xml";
    std::ofstream(body) << MethodCall("ul_dump");
    int status = 0;
    const std::string output =
        RunCommand(absl::StrCat(XMLRPC_TEST_CURL,
                                " -sS --max-time 20 -H 'Content-Type: text/xml' --data-binary @",
                                body, " http://127.0.0.1:", port_, "/RPC2"),
                   &status);
    ASSERT_EQ(status, 0) << output;
    EXPECT_EQ(CountLines(ParseOutcome(output).String(), "AOR:: "), 120);
  }
}

}  // namespace
}  // namespace sipd::xmlrpc
