// The mi_xmlrpc HTTP server in-process, over real loopback sockets: keep-alive, the
// malformed-input table, slow/silent/dead clients, the connection cap and clean stop.
// (tests/xmlrpc/xmlrpc_sipd_test.cc runs the same transport inside a real sipd.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "legacy-transports/xmlrpc/server.h"
#include "tests/support/sipd_harness.h"
#include "tests/xmlrpc/bad_inputs.h"
#include "tests/xmlrpc/test_commands.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::xmlrpc {
namespace {

using testing::CallOnce;
using testing::CallOutcome;
using testing::Exchange;
using ::testing::HasSubstr;
using testing::HttpResponse;
using testing::MethodCall;
using testing::ParseOutcome;
using testing::PostRequest;
using testing::RawConnection;

class ServerTest : public ::testing::Test {
 protected:
  void Start(ServerOptions options = {}) {
    testing::RegisterTestCommands(registry_);
    XmlrpcProcessor::Options processor_options;
    processor_options.max_xml_size = options.max_body_size;
    mi::DispatcherOptions dispatcher_options;
    dispatcher_options.workers = 2;
    dispatcher_options.async_timeout = async_timeout_;
    dispatcher_ = std::make_unique<mi::Dispatcher>(registry_, &async_, dispatcher_options);
    processor_ = std::make_unique<XmlrpcProcessor>(*dispatcher_, processor_options);
    absl::StatusOr<int> fd = OpenListenSocket("127.0.0.1", 0);
    ASSERT_TRUE(fd.ok()) << fd.status();
    listen_fd_ = *fd;
    port_ = *BoundPort(listen_fd_);
    server_ = std::make_unique<XmlrpcServer>(listen_fd_, options, *processor_, *dispatcher_);
    ASSERT_TRUE(server_->Open().ok());
    thread_ = std::thread([this] {
      server_->Run([this] { return stop_.load(); }, [this] { wakeups_.fetch_add(1); });
    });
  }

  void TearDown() override {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    server_.reset();
    if (listen_fd_ >= 0) close(listen_fd_);
  }

  // The server still answers a good call on a fresh connection.
  void ExpectHealthy() {
    const std::optional<CallOutcome> outcome = CallOnce(port_, MethodCall("uptime"));
    ASSERT_TRUE(outcome.has_value());
    EXPECT_FALSE(outcome->is_fault);
    EXPECT_THAT(outcome->String(), HasSubstr("Up time:: 1340 [sec]\n"));
  }

  mi::Registry registry_;
  mi::LocalAsyncBackend async_;
  std::chrono::milliseconds async_timeout_{240000};
  std::unique_ptr<mi::Dispatcher> dispatcher_;
  std::unique_ptr<XmlrpcProcessor> processor_;
  std::unique_ptr<XmlrpcServer> server_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> wakeups_{0};
  int listen_fd_ = -1;
  int port_ = 0;
};

TEST_F(ServerTest, AnswersACallWithXmlOverHttp11) {
  Start();
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  HttpResponse http;
  const std::optional<CallOutcome> outcome =
      connection.Call(testing::StringParams("echo", {"core:"}), &http);
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->String(), "core:\n");
  EXPECT_EQ(http.status_line, "HTTP/1.1 200 OK");
  EXPECT_EQ(http.headers["content-type"], "text/xml; charset=\"utf-8\"");
  EXPECT_EQ(http.headers["connection"], "Keep-Alive");
  EXPECT_EQ(http.headers["keep-alive"], "timeout=15");  // no cap on requests
  EXPECT_THAT(http.headers["server"], HasSubstr("sipd/"));
  EXPECT_FALSE(http.headers["date"].empty());
}

TEST_F(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  Start();
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  for (int i = 0; i < 3; ++i) {
    HttpResponse http;
    const std::optional<CallOutcome> outcome =
        connection.Call(testing::StringParams("echo", {std::to_string(i)}), &http);
    ASSERT_TRUE(outcome.has_value()) << i;
    EXPECT_EQ(outcome->String(), std::to_string(i) + "\n");
    EXPECT_EQ(http.headers["keep-alive"], "timeout=15");
  }
  // Pipelined: two requests in one write, two replies in order.
  ASSERT_TRUE(connection.Send(PostRequest(testing::StringParams("echo", {"a"})) +
                              PostRequest(testing::StringParams("echo", {"b"}))));
  EXPECT_EQ(ParseOutcome(connection.ReadResponse().body).String(), "a\n");
  EXPECT_EQ(ParseOutcome(connection.ReadResponse().body).String(), "b\n");
  // A fault keeps the connection too.
  const std::optional<CallOutcome> fault = connection.Call(MethodCall("nosuch"));
  ASSERT_TRUE(fault.has_value());
  EXPECT_EQ(fault->fault_code, -506);
  EXPECT_TRUE(connection.Call(MethodCall("uptime")).has_value());
}

TEST_F(ServerTest, KeepAliveEndsAtMaxRequestsAndOnRequest) {
  ServerOptions options;
  options.keep_alive_max = 3;
  Start(options);
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  HttpResponse http;
  ASSERT_TRUE(connection.Call(MethodCall("uptime"), &http).has_value());
  ASSERT_TRUE(connection.Call(MethodCall("uptime"), &http).has_value());
  EXPECT_EQ(http.headers["keep-alive"], "timeout=15, max=1");
  ASSERT_TRUE(connection.Call(MethodCall("uptime"), &http).has_value());
  EXPECT_EQ(http.headers["connection"], "close");
  EXPECT_TRUE(connection.WaitClosed(std::chrono::seconds(5)));

  // Connection: close from the client.
  ASSERT_TRUE(connection.Connect(port_));
  ASSERT_TRUE(connection.Send(PostRequest(MethodCall("uptime"), "Connection: close\r\n")));
  http = connection.ReadResponse();
  EXPECT_EQ(http.status, 200);
  EXPECT_EQ(http.headers["connection"], "close");
  EXPECT_TRUE(connection.WaitClosed(std::chrono::seconds(5)));

  // HTTP/1.0 without keep-alive (as the spec 5.6 example request).
  const std::string body =
      "<?xml version=\"1.0\"?><methodCall><methodName>echo</methodName><params><param><value>"
      "<string>tm:</string></value></param></params></methodCall>";
  ASSERT_TRUE(connection.Connect(port_));
  ASSERT_TRUE(connection.Send(
      absl::StrCat("POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: ", body.size(),
                   "\r\n\r\n", body)));
  http = connection.ReadResponse();
  EXPECT_EQ(http.status, 200);
  EXPECT_EQ(ParseOutcome(http.body).String(), "tm:\n");
  EXPECT_EQ(http.headers["connection"], "close");
  EXPECT_TRUE(connection.WaitClosed(std::chrono::seconds(5)));
}

TEST_F(ServerTest, ExpectContinueGetsAnInterimResponse) {
  Start();
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  const std::string body = MethodCall("uptime");
  ASSERT_TRUE(connection.Send(absl::StrCat(
      "POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nExpect: 100-continue\r\nContent-Length: ",
      body.size(), "\r\n\r\n")));
  HttpResponse interim = connection.ReadResponse();
  EXPECT_EQ(interim.status_line, "HTTP/1.1 100 Continue");
  ASSERT_TRUE(connection.Send(body));
  HttpResponse http = connection.ReadResponse();
  EXPECT_EQ(http.status, 200);
  EXPECT_FALSE(ParseOutcome(http.body).is_fault);
}

TEST_F(ServerTest, RequestSentByteByByteIsServed) {
  Start();
  for (const std::string& terminator : {std::string("\r\n\r\n"), std::string("\n\n")}) {
    RawConnection connection;
    ASSERT_TRUE(connection.Connect(port_));
    const int one = 1;
    setsockopt(connection.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const std::string body = MethodCall("uptime");
    const std::string request = absl::StrCat(
        "POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: ", body.size(),
        terminator, body);
    for (const char c : request) ASSERT_TRUE(connection.Send(std::string_view(&c, 1)));
    const HttpResponse http = connection.ReadResponse();
    EXPECT_EQ(http.status, 200) << http.body;
    EXPECT_FALSE(ParseOutcome(http.body).is_fault);
  }
}

TEST_F(ServerTest, BadInputGetsItsDocumentedAnswerAndTheServerGoesOn) {
  Start();
  for (const testing::BadInput& c : testing::BadInputs("uptime", "echo")) {
    SCOPED_TRACE(c.name);
    RawConnection connection;
    ASSERT_TRUE(connection.Connect(port_));
    // A send may fail once the server answered and closed (413, 431): the reply counts.
    connection.Send(c.request);
    if (c.shutdown_write) connection.ShutdownWrite();
    const HttpResponse http = connection.ReadResponse();
    ASSERT_TRUE(http.ok);
    EXPECT_EQ(http.status, c.http_status) << http.body;
    if (c.http_status == 200) {
      const CallOutcome outcome = ParseOutcome(http.body);
      EXPECT_TRUE(outcome.is_fault);
      EXPECT_EQ(outcome.fault_code, c.fault_code) << outcome.fault_string;
      // Faults keep the connection usable.
      EXPECT_TRUE(connection.Call(MethodCall("uptime")).has_value());
    } else {
      EXPECT_EQ(http.headers.at("connection"), "close");
      EXPECT_TRUE(connection.WaitClosed(std::chrono::seconds(5)));
    }
    ExpectHealthy();
  }
}

TEST_F(ServerTest, SilentClientDoesNotBlockOthersAndIsTimedOut) {
  ServerOptions options;
  options.header_timeout = std::chrono::seconds(1);
  Start(options);
  RawConnection silent;
  ASSERT_TRUE(silent.Connect(port_));
  RawConnection half;  // sends half a head, then nothing
  ASSERT_TRUE(half.Connect(port_));
  ASSERT_TRUE(half.Send("POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\n"));
  ExpectHealthy();
  ExpectHealthy();
  // The silent one is dropped without a word; the half one gets 408.
  EXPECT_TRUE(silent.WaitClosed(std::chrono::seconds(5)));
  const HttpResponse http = half.ReadResponse(std::chrono::seconds(5));
  EXPECT_EQ(http.status, 408);
  ExpectHealthy();
}

TEST_F(ServerTest, SlowCommandDoesNotBlockOtherConnections) {
  Start();
  testing::TestGate().Close();
  RawConnection waiter;
  ASSERT_TRUE(waiter.Connect(port_));
  ASSERT_TRUE(waiter.Send(PostRequest(MethodCall("wait_gate"))));
  // While `wait_gate` blocks its connection, other connections get their answers.
  ExpectHealthy();
  ExpectHealthy();
  pollfd pfd{waiter.fd(), POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 0), 0) << "wait_gate answered before the gate opened";
  testing::TestGate().Open();
  const HttpResponse http = waiter.ReadResponse();
  EXPECT_EQ(ParseOutcome(http.body).String(), "Gate:: opened\n");
}

TEST_F(ServerTest, ClientGoneDuringABlockingCallLeavesTheServerHealthy) {
  Start();
  testing::TestGate().Close();
  size_t calls = 0;
  for (const char* version : {"HTTP/1.0", "HTTP/1.1"}) {
    ++calls;  // the cancelled calls stay on their workers until the gate opens
    const std::string body = MethodCall("wait_gate");
    RawConnection waiter;
    ASSERT_TRUE(waiter.Connect(port_));
    ASSERT_TRUE(waiter.Send(absl::StrCat(
        "POST /RPC2 ", version, "\r\nContent-Type: text/xml\r\nContent-Length: ", body.size(),
        "\r\n\r\n", body)));
    ASSERT_TRUE(::sipd::testing::WaitUntil([&] { return dispatcher_->running() == calls; },
                                           std::chrono::seconds(5)));
    waiter.Close();  // gone while a worker runs its call
    ASSERT_TRUE(::sipd::testing::WaitUntil([&] { return server_->active_connections() == 0; },
                                           std::chrono::seconds(5)));
  }
  testing::TestGate().Open();
  ASSERT_TRUE(::sipd::testing::WaitUntil([&] { return dispatcher_->running() == 0; },
                                         std::chrono::seconds(15)));
  ExpectHealthy();
}

TEST_F(ServerTest, ClientThatNeverReadsItsRepliesDoesNotBlockOthers) {
  Start();
  RawConnection hog;
  ASSERT_TRUE(hog.Connect(port_));
  std::string many;
  for (int i = 0; i < 200; ++i) many += PostRequest(MethodCall("flusher"));
  ASSERT_TRUE(hog.Send(many));  // replies (~1.4 MB) pile up unread
  for (int i = 0; i < 3; ++i) ExpectHealthy();
}

TEST_F(ServerTest, AtTheConnectionLimitTheOldestIdleConnectionMakesRoom) {
  ServerOptions options;
  options.max_connections = 2;
  Start(options);
  RawConnection first, second;
  ASSERT_TRUE(first.Connect(port_));
  ASSERT_TRUE(first.Call(MethodCall("uptime")).has_value());
  ASSERT_TRUE(second.Connect(port_));
  ASSERT_TRUE(second.Call(MethodCall("uptime")).has_value());
  // Both are idle: a newcomer is served, and the oldest idle one was closed for it.
  ExpectHealthy();
  EXPECT_TRUE(first.WaitClosed(std::chrono::seconds(5)));
  EXPECT_TRUE(second.Call(MethodCall("uptime")).has_value());
}

TEST_F(ServerTest, AtTheConnectionLimitWithNoIdleConnectionNewcomersGet503) {
  ServerOptions options;
  options.max_connections = 2;
  Start(options);
  // Two connections in the middle of a request head: not idle, not evicted.
  RawConnection first, second;
  ASSERT_TRUE(first.Connect(port_));
  ASSERT_TRUE(first.Send("POST /RPC2 HTTP/1.1\r\n"));
  ASSERT_TRUE(second.Connect(port_));
  ASSERT_TRUE(second.Send("POST /RPC2 HTTP/1.1\r\n"));
  ASSERT_TRUE(::sipd::testing::WaitUntil([&] { return server_->active_connections() == 2; },
                                         std::chrono::seconds(5)));
  const HttpResponse refused = Exchange(port_, PostRequest(MethodCall("uptime")));
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.headers.at("retry-after"), "1");
  // The accepted ones are still served, and once they leave others are served again.
  ASSERT_TRUE(first.Send(
      absl::StrCat("Content-Type: text/xml\r\nContent-Length: ", MethodCall("uptime").size(),
                   "\r\n\r\n", MethodCall("uptime"))));
  EXPECT_EQ(first.ReadResponse().status, 200);
  second.Close();
  ExpectHealthy();
}

TEST_F(ServerTest, PerPeerLimitEvictsThatPeersIdleConnection) {
  ServerOptions options;
  options.max_connections_per_peer = 1;
  Start(options);
  RawConnection first;
  ASSERT_TRUE(first.Connect(port_));
  ASSERT_TRUE(first.Call(MethodCall("uptime")).has_value());
  ExpectHealthy();
  EXPECT_TRUE(first.WaitClosed(std::chrono::seconds(5)));
}

TEST_F(ServerTest, StopsPromptlyWithIdleConnectionsOpen) {
  Start();
  RawConnection idle;
  ASSERT_TRUE(idle.Connect(port_));
  ASSERT_TRUE(idle.Call(MethodCall("uptime")).has_value());
  const auto start = std::chrono::steady_clock::now();
  stop_.store(true);
  thread_.join();
  // Generous bound: this checks "does not wait for the 15 s idle timeout", not speed.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_GT(wakeups_.load(), 0);
  EXPECT_TRUE(idle.WaitClosed(std::chrono::seconds(5)));
}

TEST_F(ServerTest, WritesAnAccessLog) {
  char dir_template[] = "/tmp/sipd-xmlrpc-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string log_file = std::string(dir_template) + "/access.log";
  ServerOptions options;
  options.log_file = log_file;
  Start(options);
  ExpectHealthy();
  EXPECT_EQ(Exchange(port_, "GET /RPC2 HTTP/1.1\r\n\r\n").status, 405);
  stop_.store(true);
  thread_.join();
  server_.reset();
  std::ifstream in(log_file);
  std::stringstream content;
  content << in.rdbuf();
  EXPECT_THAT(content.str(), HasSubstr("127.0.0.1 - - ["));
  EXPECT_THAT(content.str(), HasSubstr("\"POST /RPC2 HTTP/1.1\" 200 "));
  EXPECT_THAT(content.str(), HasSubstr("\"GET /RPC2 HTTP/1.1\" 405 "));
  unlink(log_file.c_str());
  rmdir(dir_template);
}

// The text `flusher` answers (120 records, streamed 50 at a time).
std::string FlusherText() {
  std::string text;
  for (int i = 0; i < 120; ++i) absl::StrAppend(&text, "Record:: ", i, "\nIndex:: ", i, "\n");
  return text;
}

TEST_F(ServerTest, StreamedReplyIsChunkedOnHttp11AndWholeOnHttp10) {
  Start();
  RawConnection connection;
  ASSERT_TRUE(connection.Connect(port_));
  ASSERT_TRUE(connection.Send(PostRequest(MethodCall("flusher"))));
  HttpResponse http = connection.ReadResponse();
  ASSERT_TRUE(http.ok);
  EXPECT_EQ(http.headers["transfer-encoding"], "chunked");
  EXPECT_EQ(http.headers.count("content-length"), 0u);
  EXPECT_GE(http.chunks, 3);  // one per pulled part
  EXPECT_EQ(ParseOutcome(http.body).String(), FlusherText());
  // Byte for byte the document of the in-process path.
  EXPECT_EQ(http.body, processor_->Process(MethodCall("flusher")));
  // Keep-alive goes on after a chunked reply.
  EXPECT_TRUE(connection.Call(MethodCall("uptime")).has_value());

  const std::string body = MethodCall("flusher");
  ASSERT_TRUE(connection.Connect(port_));
  ASSERT_TRUE(connection.Send(
      absl::StrCat("POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: ", body.size(),
                   "\r\n\r\n", body)));
  http = connection.ReadResponse();
  ASSERT_TRUE(http.ok);
  EXPECT_EQ(http.headers.count("transfer-encoding"), 0u);
  EXPECT_EQ(http.chunks, 0);
  EXPECT_EQ(ParseOutcome(http.body).String(), FlusherText());
}

TEST_F(ServerTest, AsyncReplyHoldsOnlyItsConnection) {
  Start();
  testing::TestTickets().TakeAll();
  RawConnection waiter;
  ASSERT_TRUE(waiter.Connect(port_));
  ASSERT_TRUE(waiter.Send(PostRequest(MethodCall("later"))));
  ASSERT_TRUE(::sipd::testing::WaitUntil([] { return testing::TestTickets().size() == 1; },
                                         std::chrono::seconds(5)));
  // While `later` waits, other connections get their answers.
  ExpectHealthy();
  ExpectHealthy();
  pollfd pfd{waiter.fd(), POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 0), 0) << "later answered before it was completed";
  mi::Reply reply;
  reply.root.AddKid("Done", "yes");
  for (const mi::AsyncTicket& ticket : testing::TestTickets().TakeAll()) {
    EXPECT_TRUE(async_.Complete(ticket, &reply));
  }
  const HttpResponse http = waiter.ReadResponse();
  EXPECT_EQ(ParseOutcome(http.body).String(), "Done:: yes\n");
  // The connection is usable again.
  EXPECT_TRUE(waiter.Call(MethodCall("uptime")).has_value());
}

TEST_F(ServerTest, AsyncFailureAndTimeoutAreTheAsyncFault) {
  async_timeout_ = std::chrono::milliseconds(300);
  Start();
  testing::TestTickets().TakeAll();
  RawConnection failed;
  ASSERT_TRUE(failed.Connect(port_));
  ASSERT_TRUE(failed.Send(PostRequest(MethodCall("later"))));
  ASSERT_TRUE(::sipd::testing::WaitUntil([] { return testing::TestTickets().size() == 1; },
                                         std::chrono::seconds(5)));
  for (const mi::AsyncTicket& ticket : testing::TestTickets().TakeAll()) {
    EXPECT_TRUE(async_.Complete(ticket, nullptr));  // "completed with nothing"
  }
  CallOutcome outcome = ParseOutcome(failed.ReadResponse().body);
  EXPECT_EQ(outcome.fault_code, -500);
  EXPECT_EQ(outcome.fault_string, "Command (later) processing failed (async).\n");
  // Never completed: the dispatcher's async timeout ends it with the same fault.
  const std::optional<CallOutcome> timed_out = failed.Call(MethodCall("later"));
  ASSERT_TRUE(timed_out.has_value());
  EXPECT_EQ(timed_out->fault_code, -500);
  EXPECT_EQ(async_.pending(), 0u);
}

TEST_F(ServerTest, ClosingTheConnectionCancelsItsAsyncCalls) {
  Start();
  testing::TestTickets().TakeAll();
  constexpr int kCalls = 50;
  std::vector<std::unique_ptr<RawConnection>> connections;
  for (int i = 0; i < kCalls; ++i) {
    connections.push_back(std::make_unique<RawConnection>());
    ASSERT_TRUE(connections.back()->Connect(port_));
    ASSERT_TRUE(connections.back()->Send(PostRequest(MethodCall("later"))));
  }
  ASSERT_TRUE(::sipd::testing::WaitUntil([&] { return async_.pending() == kCalls; },
                                         std::chrono::seconds(10)));
  connections.clear();
  // Every slot is released without any completion.
  EXPECT_TRUE(
      ::sipd::testing::WaitUntil([&] { return async_.pending() == 0; }, std::chrono::seconds(10)));
  EXPECT_TRUE(::sipd::testing::WaitUntil([&] { return dispatcher_->running() == 0; },
                                         std::chrono::seconds(10)));
  ExpectHealthy();
}

TEST_F(ServerTest, SlowReaderOfAStreamIsCutAndOthersAreServed) {
  ServerOptions options;
  options.stall_timeout = std::chrono::milliseconds(500);
  Start(options);
  RawConnection hog;
  ASSERT_TRUE(hog.Connect(port_));
  // A small receive buffer so that the stream stalls early.
  const int small = 4096;
  setsockopt(hog.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  std::string many;
  for (int i = 0; i < 400; ++i) many += PostRequest(MethodCall("flusher"));
  // (~1.5 MB of replies, far beyond the server's socket buffer; the send blocks until
  // the server stops reading and then until it cuts the connection.)
  std::thread sender([&] { hog.Send(many); });
  ExpectHealthy();
  // Never read: cut by the stall timeout.
  EXPECT_TRUE(::sipd::testing::WaitUntil([&] { return server_->active_connections() == 0; },
                                         std::chrono::seconds(10)));
  sender.join();
  ExpectHealthy();
}

TEST(OpenListenSocketTest, BusyPortAndBadAddressFailLoudly) {
  absl::StatusOr<int> first = OpenListenSocket("127.0.0.1", 0);
  ASSERT_TRUE(first.ok());
  const int port = *BoundPort(*first);
  absl::StatusOr<int> second = OpenListenSocket("127.0.0.1", port);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(absl::StrCat("127.0.0.1:", port)));
  close(*first);
  EXPECT_EQ(OpenListenSocket("localhost", 0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sipd::xmlrpc
