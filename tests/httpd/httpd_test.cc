// httpd against a real sipd: JSON-RPC 2.0 over POST /mi (single, batch, notifications,
// MI errors, protocol errors, limits), chunked streaming of ul_dump to a slow reader,
// 1,000 idle connections, /metrics (promtool when installed), the console's files and
// API.
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/httpd/http_test_client.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/temp_dir.h"

namespace sipd::httpd_test {
namespace {

using ::sipd::testing::SipdInstance;

constexpr int kContacts = 2000;

class HttpdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sipd_ = new SipdInstance({.grpc = false,
                              .extra_config = "loadmodule \"usrloc\"\n"
                                              "loadmodule \"mi_selftest\"\n"
                                              "loadmodule \"httpd\"\n"
                                              "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n"
                                              "modparam(\"httpd\", \"max_connections\", 1100)\n"
                                              "modparam(\"httpd\", \"stall_timeout\", 30)\n"});
    start_ = sipd_->Start();
  }
  static void TearDownTestSuite() {
    delete sipd_;
    sipd_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(start_.ok()) << start_ << sipd_->log();
    port_ = sipd_->listener_port("httpd", "http");
    ASSERT_GT(port_, 0) << sipd_->log();
  }

  // The JSON-RPC response to one request (HTTP 200 required).
  json Call(const std::string& method, json params = json::array()) {
    auto result = HttpPost(port_, RpcRequest(method, std::move(params)));
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return json();
    EXPECT_EQ(result->status, 200u) << result->body;
    return json::parse(result->body, nullptr, false);
  }

  // Adds `count` contacts (AOR userN) with batches of ul_add.
  void AddContacts(int count) {
    for (int first = 0; first < count; first += 1000) {
      json batch = json::array();
      for (int i = first; i < std::min(count, first + 1000); ++i) {
        batch.push_back(json{{"jsonrpc", "2.0"},
                             {"method", "ul_add"},
                             {"params",
                              {"location", absl::StrCat("user", i, "@example.com"),
                               absl::StrCat("sip:user", i, "@192.0.2.1:5060;transport=udp"), "0",
                               "1.00", "0", "0", "0", "0"}},
                             {"id", i}});
      }
      auto result = HttpPost(port_, batch.dump());
      ASSERT_TRUE(result.ok()) << result.status();
      const json replies = json::parse(result->body, nullptr, false);
      ASSERT_TRUE(replies.is_array()) << result->body.substr(0, 300);
      for (const json& reply : replies) {
        ASSERT_TRUE(reply.contains("result")) << reply.dump();
      }
    }
  }

  static SipdInstance* sipd_;
  static absl::Status start_;
  int port_ = 0;
};

SipdInstance* HttpdTest::sipd_ = nullptr;
absl::Status HttpdTest::start_;

TEST_F(HttpdTest, VersionIsTheReplyTreeAsJson) {
  const json reply = Call("version");
  ASSERT_TRUE(reply.is_object());
  EXPECT_EQ(reply["jsonrpc"], "2.0");
  EXPECT_EQ(reply["id"], 1);
  const json& result = reply["result"];
  EXPECT_EQ(result["code"], 200);
  EXPECT_EQ(result["reason"], "OK");
  ASSERT_TRUE(result["nodes"].is_array());
  ASSERT_FALSE(result["nodes"].empty());
  EXPECT_EQ(result["nodes"][0]["name"], "Server");
}

TEST_F(HttpdTest, PsListsTheHttpdProcess) {
  const json reply = Call("ps");
  bool found = false;
  for (const json& node : reply["result"]["nodes"]) {
    for (const json& attribute : node.value("attributes", json::array())) {
      if (attribute.value("name", "") == "Type" && attribute.value("value", "") == "HTTPD") {
        found = true;
      }
    }
  }
  EXPECT_TRUE(found) << reply.dump();
}

TEST_F(HttpdTest, NamedParamsAndStatistics) {
  const json reply = Call("get_statistics", json::array({"core:"}));
  ASSERT_TRUE(reply["result"]["nodes"].is_array()) << reply.dump();
  EXPECT_GT(reply["result"]["nodes"].size(), 3u);
  EXPECT_TRUE(absl::StartsWith(reply["result"]["nodes"][0]["name"].get<std::string>(), "core:"));
  const json named = Call("get_statistics", json{{"statistics", "core:"}});
  EXPECT_EQ(named["result"], reply["result"]);
}

TEST_F(HttpdTest, MiErrorsUseTheMiCodeAndReason) {
  const json unknown = Call("no_such_command");
  EXPECT_EQ(unknown["error"]["code"], 500) << unknown.dump();
  EXPECT_EQ(unknown["error"]["message"], "command 'no_such_command' not available");
  const json too_many = Call("help", json::array({"a", "b"}));
  EXPECT_EQ(too_many["error"]["code"], 400) << too_many.dump();
  EXPECT_EQ(too_many["error"]["message"], "Too few or too many arguments");
  const json bad_type = Call("get_statistics", json::array({json::array({1})}));
  EXPECT_EQ(bad_type["error"]["code"], 400) << bad_type.dump();
  EXPECT_TRUE(absl::StrContains(bad_type["error"]["message"].get<std::string>(), "parse error"))
      << bad_type.dump();
}

TEST_F(HttpdTest, MalformedJsonAndInvalidRequests) {
  struct Case {
    std::string body;
    int code;
  };
  const Case cases[] = {
      {"{\"jsonrpc\":\"2.0\",\"method\":", -32700},
      {"not json at all", -32700},
      {"", -32700},
      {std::string(100000, '['), -32700},
      {"{\"method\":\"version\",\"id\":1}", -32600},
      {"{\"jsonrpc\":\"2.0\",\"method\":7,\"id\":1}", -32600},
      {"{\"jsonrpc\":\"2.0\",\"method\":\"version\",\"id\":{}}", -32600},
      {"[]", -32600},
      {"42", -32600},
  };
  for (const Case& c : cases) {
    auto result = HttpPost(port_, c.body);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->status, 200u);
    const json reply = json::parse(result->body, nullptr, false);
    ASSERT_TRUE(reply.is_object()) << c.body.substr(0, 60) << " -> " << result->body;
    EXPECT_EQ(reply["error"]["code"], c.code) << c.body.substr(0, 60) << " -> " << result->body;
  }
  auto get = HttpGet(port_, "/mi");
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->status, 405u);
  // The connection still works after errors (keep-alive).
  auto connection = HttpConnection::Open(port_);
  ASSERT_TRUE(connection.ok());
  for (int i = 0; i < 3; ++i) {
    auto bad = (*connection)->Post("{oops");
    ASSERT_TRUE(bad.ok()) << bad.status();
    auto good = (*connection)->Post(RpcRequest("version"));
    ASSERT_TRUE(good.ok()) << good.status();
    EXPECT_TRUE(absl::StrContains(good->body, "\"result\"")) << good->body;
  }
}

TEST_F(HttpdTest, BatchWithNotificationsAndErrors) {
  const std::string body =
      "[" + RpcRequest("version", json::array(), 1) + "," +
      R"({"jsonrpc":"2.0","method":"version"},)" +  // notification: no response
      RpcRequest("nope", json::array(), "two") + "," + R"({"foo":1},)" +
      RpcRequest("uptime", json::array(), 3) + "]";
  auto result = HttpPost(port_, body);
  ASSERT_TRUE(result.ok());
  const json replies = json::parse(result->body, nullptr, false);
  ASSERT_TRUE(replies.is_array()) << result->body;
  ASSERT_EQ(replies.size(), 4u) << result->body;
  EXPECT_EQ(replies[0]["id"], 1);
  EXPECT_EQ(replies[0]["result"]["code"], 200);
  EXPECT_EQ(replies[1]["id"], "two");
  EXPECT_EQ(replies[1]["error"]["code"], 500);
  EXPECT_EQ(replies[2]["error"]["code"], -32600);
  EXPECT_EQ(replies[3]["id"], 3);

  auto silent = HttpPost(port_, R"([{"jsonrpc":"2.0","method":"version"}])");
  ASSERT_TRUE(silent.ok());
  EXPECT_EQ(silent->status, 204u);
  EXPECT_EQ(silent->body, "");
}

TEST_F(HttpdTest, BatchOf1000IsAnsweredAndOf10000IsRefused) {
  json batch = json::array();
  for (int i = 0; i < 1000; ++i) {
    batch.push_back(json{{"jsonrpc", "2.0"}, {"method", "version"}, {"id", i}});
  }
  auto result = HttpPost(port_, batch.dump());
  ASSERT_TRUE(result.ok());
  const json replies = json::parse(result->body, nullptr, false);
  ASSERT_TRUE(replies.is_array());
  ASSERT_EQ(replies.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(replies[i]["id"], i);

  for (int i = 1000; i < 10000; ++i) {
    batch.push_back(json{{"jsonrpc", "2.0"}, {"method", "version"}, {"id", i}});
  }
  auto refused = HttpPost(port_, batch.dump());
  ASSERT_TRUE(refused.ok());
  const json error = json::parse(refused->body, nullptr, false);
  EXPECT_EQ(error["error"]["code"], -32600) << refused->body;
  EXPECT_TRUE(absl::StrContains(error["error"]["message"].get<std::string>(), "10000"));
}

TEST_F(HttpdTest, TenMegabyteBodyIs413) {
  auto connection = HttpConnection::Open(port_);
  ASSERT_TRUE(connection.ok());
  const std::string body = "[" + std::string(10 << 20, ' ') + "]";
  auto result = (*connection)->Post(body);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, 413u);
  const json error = json::parse(result->body, nullptr, false);
  EXPECT_EQ(error["error"]["code"], -32600) << result->body;
  // The server is fine.
  EXPECT_EQ(Call("version")["result"]["code"], 200);
}

TEST_F(HttpdTest, AsyncCommandsWaitWithoutBlockingOthers) {
  auto slow = HttpConnection::Open(port_);
  ASSERT_TRUE(slow.ok());
  // Sent, not read yet: the reply comes from the timer process 300 ms later.
  http::request<http::string_body> request(http::verb::post, "/mi", 11);
  request.set(http::field::content_type, "application/json");
  request.body() = RpcRequest("async_echo", json::array({"300", "hello"}));
  request.prepare_payload();
  const std::string raw = absl::StrCat(
      "POST /mi HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ",
      request.body().size(), "\r\n\r\n", request.body());
  ASSERT_EQ(write((*slow)->fd(), raw.data(), raw.size()), static_cast<ssize_t>(raw.size()));
  EXPECT_EQ(Call("version")["result"]["code"], 200);
  auto reply = (*slow)->Read();
  ASSERT_TRUE(reply.ok()) << reply.status();
  const json echo = json::parse(reply->body, nullptr, false);
  EXPECT_EQ(echo["result"]["nodes"][0]["value"], "hello") << reply->body;

  const json failed = Call("async_fail", json::array({"10"}));
  EXPECT_EQ(failed["error"]["code"], 500) << failed.dump();
}

// A client that goes away while its async call waits: the call is cancelled at once and
// its async slot released (mi:async_pending back to 0), not at the call's deadline.
TEST_F(HttpdTest, AClientGoneWhileWaitingCancelsItsCall) {
  auto pending = [&]() -> int64_t {
    const json reply = Call("get_statistics", json::array({"async_pending"}));
    if (!reply.contains("result")) return -1;
    return std::stoll(reply["result"]["nodes"][0]["value"].get<std::string>());
  };
  ASSERT_EQ(pending(), 0);
  {
    auto connection = HttpConnection::Open(port_);
    ASSERT_TRUE(connection.ok());
    const std::string body = RpcRequest("async_never");
    const std::string raw = absl::StrCat(
        "POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
    ASSERT_EQ(write((*connection)->fd(), raw.data(), raw.size()), static_cast<ssize_t>(raw.size()));
    ASSERT_TRUE(sipd::testing::WaitUntil([&] { return pending() == 1; }, std::chrono::seconds(10)));
  }  // closed
  EXPECT_TRUE(sipd::testing::WaitUntil([&] { return pending() == 0; }, std::chrono::seconds(10)));
}

// Reads a chunked ul_dump slowly (a small receive buffer, paused after the first bytes)
// while other clients are served, then reads the rest: the JSON is whole and right.
TEST_F(HttpdTest, ChunkedUlDumpToASlowReader) {
  AddContacts(kContacts);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  const int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port_));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string body = RpcRequest("ul_dump");
  const std::string raw =
      absl::StrCat("POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(),
                   "\r\nConnection: close\r\n\r\n", body);
  ASSERT_EQ(write(fd, raw.data(), raw.size()), static_cast<ssize_t>(raw.size()));
  auto read_some = [&](std::string& into, size_t max) -> ssize_t {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 30000) != 1) return -1;
    char buffer[4096];
    const ssize_t n = read(fd, buffer, std::min(max, sizeof(buffer)));
    if (n > 0) into.append(buffer, static_cast<size_t>(n));
    return n;
  };
  std::string received;
  ASSERT_GT(read_some(received, 1024), 0);
  // The stream is stalled on us; everybody else is served meanwhile.
  for (int i = 0; i < 20; ++i) ASSERT_EQ(Call("version")["result"]["code"], 200);
  ssize_t n;
  while ((n = read_some(received, 4096)) > 0) {
  }
  close(fd);
  ASSERT_EQ(n, 0) << "the stream did not end";
  const size_t head_end = received.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  const std::string head = received.substr(0, head_end);
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(head), "transfer-encoding: chunked")) << head;
  // De-chunk with Beast's parser.
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 30);
  beast::error_code ec;
  size_t used = 0;
  while (!parser.is_done() && used < received.size()) {
    const size_t n = parser.put(asio::buffer(received.data() + used, received.size() - used), ec);
    ASSERT_FALSE(ec) << ec.message();
    if (n == 0) break;
    used += n;
  }
  ASSERT_TRUE(parser.is_done());
  const json reply = json::parse(parser.get().body(), nullptr, false);
  ASSERT_TRUE(reply.is_object()) << parser.get().body().substr(0, 200);
  ASSERT_TRUE(reply["result"]["nodes"].is_array());
  int aors = 0;
  std::function<void(const json&)> count = [&](const json& nodes) {
    for (const json& node : nodes) {
      if (node.value("name", "") == "AOR") ++aors;
      if (node.contains("kids")) count(node["kids"]);
    }
  };
  count(reply["result"]["nodes"]);
  EXPECT_GE(aors, kContacts);
}

TEST_F(HttpdTest, ThousandIdleConnectionsDoNotStallOthers) {
  struct rlimit limit {};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 1200 && limit.rlim_max >= 1200) {
    limit.rlim_cur = 1200;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0) << "descriptor " << i;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    idle.push_back(fd);
    // Half of them send half a request head and stop.
    if (i % 2 == 0) {
      ASSERT_EQ(write(fd, "POST /mi HTTP/1.1\r\n", 19), 19);
    }
  }
  for (int i = 0; i < 50; ++i) ASSERT_EQ(Call("version")["result"]["code"], 200);
  // They are still open (nothing was read from them, nothing closed them).
  pollfd p{idle.front(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  for (const int fd : idle) close(fd);
  EXPECT_EQ(Call("version")["result"]["code"], 200);
}

TEST_F(HttpdTest, MetricsInPrometheusFormat) {
  auto result = HttpGet(port_, "/metrics");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->status, 200u);
  EXPECT_TRUE(absl::StartsWith(result->content_type, "text/plain; version=0.0.4"));
  const std::string& text = result->body;
  EXPECT_TRUE(absl::StrContains(text, "# TYPE sipd_core_rcv_requests_total counter\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "# TYPE sipd_usrloc_registered_users gauge\n") ||
              absl::StrContains(text, " gauge\n"));
  EXPECT_TRUE(absl::StrContains(text, "process=\"HTTPD\"")) << text;
  EXPECT_TRUE(absl::StrContains(text, "# HELP sipd_core_rcv_requests_total core:rcv_requests"));

  if (system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool (Debian package prometheus) is not installed";
  }
  const std::string path = absl::StrCat(::testing::TempDir(), "/httpd_metrics.txt");
  std::ofstream(path) << text;
  const std::string command = absl::StrCat("promtool check metrics < ", path, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << output;
  std::remove(path.c_str());
}

TEST_F(HttpdTest, ConsoleFilesAndApi) {
  auto index = HttpGet(port_, "/");
  ASSERT_TRUE(index.ok());
  EXPECT_EQ(index->status, 200u);
  EXPECT_TRUE(absl::StartsWith(index->content_type, "text/html"));
  for (const char* bad : {"/../etc/passwd", "/%2e%2e/etc/passwd", "/no-such-file.js"}) {
    auto result = HttpGet(port_, bad);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->status, 404u) << bad;
  }
  auto commands = HttpGet(port_, "/api/commands");
  ASSERT_TRUE(commands.ok());
  const json list = json::parse(commands->body, nullptr, false);
  ASSERT_TRUE(list.is_array());
  bool found = false;
  for (const json& command : list) {
    if (command["name"] == "ul_dump") {
      found = true;
      EXPECT_EQ(command["module"], "usrloc");
      EXPECT_NE(std::find(command["flags"].begin(), command["flags"].end(), "streaming"),
                command["flags"].end());
    }
  }
  EXPECT_TRUE(found);
  auto processes = HttpGet(port_, "/api/processes");
  ASSERT_TRUE(processes.ok());
  EXPECT_TRUE(absl::StrContains(processes->body, "\"type\":\"HTTPD\"")) << processes->body;
  // The sampler has history (one sample at start-up at least).
  auto history = HttpGet(port_, "/api/statistics/history?stats=core:rcv_requests&last=10");
  ASSERT_TRUE(history.ok());
  const json h = json::parse(history->body, nullptr, false);
  ASSERT_EQ(h["series"].size(), 1u) << history->body;
  EXPECT_EQ(h["series"][0]["name"], "core:rcv_requests");
  EXPECT_EQ(h["series"][0]["counter"], true);
  EXPECT_GE(h["times"].size(), 1u);
}

}  // namespace
}  // namespace sipd::httpd_test

namespace sipd::httpd_test {
namespace {

// A client that asks for a big ul_dump and takes nothing: its stream waits (no thread,
// no lock), others are served meanwhile, and stall_timeout cuts it (httpd:stalled).
TEST(HttpdStallTest, AReaderThatTakesNothingIsCutAfterStallTimeout) {
  SipdInstance sipd({.grpc = false,
                     .extra_config = "loadmodule \"usrloc\"\n"
                                     "loadmodule \"httpd\"\n"
                                     "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n"
                                     "modparam(\"httpd\", \"processes\", 1)\n"
                                     "modparam(\"httpd\", \"stall_timeout\", 1)\n"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int port = sipd.listener_port("httpd", "http");
  for (int first = 0; first < 10000; first += 1000) {
    json batch = json::array();
    for (int i = first; i < first + 1000; ++i) {
      batch.push_back(
          json{{"jsonrpc", "2.0"},
               {"method", "ul_add"},
               {"params",
                {"location", absl::StrCat("user", i, "@example.com"),
                 absl::StrCat("sip:user", i, "@192.0.2.1:5060"), "0", "1.00", "0", "0", "0", "0"}},
               {"id", i}});
    }
    auto added = HttpPost(port, batch.dump());
    ASSERT_TRUE(added.ok() && added->status == 200);
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  const int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string body = RpcRequest("ul_dump");
  const std::string raw = absl::StrCat(
      "POST /mi HTTP/1.1\r\nHost: x\r\nContent-Length: ", body.size(), "\r\n\r\n", body);
  ASSERT_EQ(write(fd, raw.data(), raw.size()), static_cast<ssize_t>(raw.size()));
  auto stalled = [&]() -> int64_t {
    auto result = HttpPost(port, RpcRequest("get_statistics", json::array({"stalled"})));
    if (!result.ok()) return -1;
    const json reply = json::parse(result->body, nullptr, false);
    if (!reply.contains("result")) return -1;
    return std::stoll(reply["result"]["nodes"][0]["value"].get<std::string>());
  };
  EXPECT_EQ(stalled(), 0);  // served while the stream waits
  EXPECT_TRUE(sipd::testing::WaitUntil([&] { return stalled() == 1; }, std::chrono::seconds(30)));
  // What the client still reads ends before the chunked body's end.
  std::string received;
  char buffer[65536];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) break;
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    received.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  EXPECT_FALSE(absl::EndsWith(received, "0\r\n\r\n")) << received.size() << " bytes";
  EXPECT_GT(received.size(), 0u);
}

}  // namespace
}  // namespace sipd::httpd_test

namespace sipd::httpd_test {
namespace {

// Past max_connections a newcomer gets 503 and is closed; the ones inside go on.
TEST(HttpdLimitsTest, ConnectionsPastMaxConnectionsGet503) {
  SipdInstance sipd({.grpc = false,
                     .extra_config = "loadmodule \"httpd\"\n"
                                     "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n"
                                     "modparam(\"httpd\", \"processes\", 1)\n"
                                     "modparam(\"httpd\", \"max_connections\", 2)\n"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int port = sipd.listener_port("httpd", "http");
  auto first = HttpConnection::Open(port);
  auto second = HttpConnection::Open(port);
  ASSERT_TRUE(first.ok() && second.ok());
  // Both are accepted (a request on each proves it) before the third comes.
  ASSERT_TRUE((*first)->Post(RpcRequest("version")).ok());
  ASSERT_TRUE((*second)->Post(RpcRequest("version")).ok());
  auto third = HttpPost(port, RpcRequest("version"));
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->status, 503u);
  auto again = (*first)->Post(RpcRequest("version"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, 200u);
}

// A port already taken fails start-up with a clear error (the socket is bound by the
// attendant before the HTTPD processes are forked).
TEST(HttpdLimitsTest, BusyPortFailsStartUp) {
  const int taken = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(taken, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(taken, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(taken, 1), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(taken, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int port = ntohs(address.sin_port);
  SipdInstance sipd(
      {.grpc = false,
       .extra_config = absl::StrCat("loadmodule \"httpd\"\nmodparam(\"httpd\", \"listen\", "
                                    "\"127.0.0.1:",
                                    port, "\")\n")});
  const absl::Status status = sipd.Start();
  close(taken);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(
      absl::StrContains(sipd.log(), absl::StrCat("httpd: cannot listen on 127.0.0.1 port ", port)))
      << sipd.log();
}

}  // namespace
}  // namespace sipd::httpd_test

namespace sipd::httpd_test {
namespace {

// With the default security (a local caller without credentials is `read`): a mutating
// command is refused in the MI's form, and the admin token (Authorization: Bearer) runs
// it. The transport passes the peer (local: loopback) and the token; the dispatcher
// decides.
TEST(HttpdSecurityTest, LocalReadByDefaultAndBearerTokens) {
  SipdInstance sipd({.grpc = false,
                     .extra_config = "loadmodule \"usrloc\"\n"
                                     "loadmodule \"httpd\"\n"
                                     "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n",
                     .default_security = true});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int port = sipd.listener_port("httpd", "http");
  const std::string add = RpcRequest(
      "ul_add", {"location", "alice", "sip:alice@192.0.2.1", "0", "1.00", "0", "0", "0", "0"});
  auto read = HttpPost(port, RpcRequest("version"));
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(absl::StrContains(read->body, "\"result\"")) << read->body;
  auto refused = HttpPost(port, add);
  ASSERT_TRUE(refused.ok());
  const json error = json::parse(refused->body, nullptr, false);
  EXPECT_EQ(error["error"]["code"], 403) << refused->body;

  const std::string token = sipd.admin_token();
  ASSERT_FALSE(token.empty());
  auto connection = HttpConnection::Open(port);
  ASSERT_TRUE(connection.ok());
  auto with_token = (*connection)
                        ->Request(http::verb::post, "/mi", add, "application/json",
                                  {{"Authorization", "Bearer " + token}});
  ASSERT_TRUE(with_token.ok());
  EXPECT_TRUE(absl::StrContains(with_token->body, "\"result\"")) << with_token->body;
  auto bad_token = (*connection)
                       ->Request(http::verb::post, "/mi", add, "application/json",
                                 {{"Authorization", "Bearer not-a-token"}});
  ASSERT_TRUE(bad_token.ok());
  EXPECT_EQ(json::parse(bad_token->body, nullptr, false)["error"]["code"], 401) << bad_token->body;
}

// With require_auth even a local caller needs credentials, for /metrics and the console
// API too (the dispatcher decides, through the caller's context); the static console
// files stay public (they hold no data).
TEST(HttpdSecurityTest, RequireAuthCoversMetricsAndTheConsoleApi) {
  SipdInstance sipd({.grpc = false,
                     .extra_config = "modparam(\"mi\", \"require_auth\", 1)\n"
                                     "loadmodule \"httpd\"\n"
                                     "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n",
                     .default_security = true});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int port = sipd.listener_port("httpd", "http");
  for (const char* target : {"/metrics", "/api/commands", "/api/processes"}) {
    auto refused = HttpGet(port, target);
    ASSERT_TRUE(refused.ok());
    EXPECT_EQ(refused->status, 401u) << target << ": " << refused->body;
    auto connection = HttpConnection::Open(port);
    ASSERT_TRUE(connection.ok());
    auto allowed = (*connection)
                       ->Request(http::verb::get, target, "", "",
                                 {{"Authorization", "Bearer " + sipd.admin_token()}});
    ASSERT_TRUE(allowed.ok());
    EXPECT_EQ(allowed->status, 200u) << target;
  }
  auto page = HttpGet(port, "/");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->status, 200u);
  auto rpc = HttpPost(port, RpcRequest("version"));
  ASSERT_TRUE(rpc.ok());
  EXPECT_EQ(json::parse(rpc->body, nullptr, false)["error"]["code"], 401) << rpc->body;
}

}  // namespace
}  // namespace sipd::httpd_test

namespace sipd::httpd_test {
namespace {

using ::sipd::testing::RunShell;

// HTTPS: a CA, a server certificate for 127.0.0.1 and a client certificate (CN=noc) made
// with openssl at test time; curl is the client.
class HttpdTlsTest : public ::testing::Test {
 protected:
  void MakeCertificates() {
    ASSERT_TRUE(dir_.ok());
    pki_ = dir_.path();
    const std::string script = absl::StrCat(
        "set -e; cd ", pki_, "; ",
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
        "-subj /CN=sipd-test-ca; ",
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
        "-subj /CN=127.0.0.1; ",
        "printf 'subjectAltName=IP:127.0.0.1' > san.ext; ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile san.ext; ",
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=noc; ",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2");
    const auto [rc, out] = RunShell(script + " 2>&1");
    ASSERT_EQ(rc, 0) << out;
  }
  std::string TlsConfig(const std::string& client_auth) const {
    return absl::StrCat("loadmodule \"usrloc\"\nloadmodule \"httpd\"\n",
                        "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n",
                        "modparam(\"httpd\", \"tls_cert\", \"", pki_, "/server.pem\")\n",
                        "modparam(\"httpd\", \"tls_key\", \"", pki_, "/server.key\")\n",
                        "modparam(\"httpd\", \"tls_ca\", \"", pki_, "/ca.pem\")\n",
                        "modparam(\"httpd\", \"tls_client_auth\", \"", client_auth, "\")\n",
                        "modparam(\"mi\", \"cert_roles\", \"CN=noc=operate\")\n");
  }
  // curl's exit code and output for a JSON-RPC call of `method` to `url`.
  std::pair<int, std::string> Curl(const std::string& url, const std::string& method,
                                   const std::string& params, bool client_certificate) const {
    return RunShell(
        absl::StrCat("curl -sS --max-time 20 --cacert ", pki_, "/ca.pem ",
                     client_certificate
                         ? absl::StrCat("--cert ", pki_, "/client.pem --key ", pki_, "/client.key ")
                         : "",
                     "-H 'Content-Type: application/json' -d '{\"jsonrpc\":\"2.0\",\"method\":\"",
                     method, "\",\"params\":", params, ",\"id\":1}' ", url, " 2>&1"));
  }
  sipd::testing::TempDir dir_{"sipd-httpd-tls"};
  std::string pki_;
};

TEST_F(HttpdTlsTest, JsonRpcOverHttpsAndPlainHttpIsRefused) {
  MakeCertificates();
  SipdInstance sipd({.grpc = false, .extra_config = TlsConfig("none")});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int port = sipd.listener_port("httpd", "https");
  ASSERT_GT(port, 0) << sipd.log();
  const auto [rc, out] = Curl(absl::StrCat("https://127.0.0.1:", port, "/mi"), "version", "[]",
                              /*client_certificate=*/false);
  ASSERT_EQ(rc, 0) << out;
  const json reply = json::parse(out, nullptr, false);
  EXPECT_EQ(reply["result"]["code"], 200) << out;
  EXPECT_EQ(reply["result"]["nodes"][0]["name"], "Server") << out;
  const auto [plain_rc, plain_out] =
      Curl(absl::StrCat("http://127.0.0.1:", port, "/mi"), "version", "[]", false);
  EXPECT_NE(plain_rc, 0) << plain_out;
  EXPECT_FALSE(absl::StrContains(plain_out, "\"result\"")) << plain_out;
}

// tls_client_auth require: no certificate, no connection; with one, its verified subject
// reaches the dispatcher (cert_roles CN=noc=operate lets it run a mutating command a
// local caller without credentials may not).
TEST_F(HttpdTlsTest, RequiredClientCertificateAndItsSubject) {
  MakeCertificates();
  SipdInstance sipd(
      {.grpc = false, .extra_config = TlsConfig("require"), .default_security = true});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const std::string url =
      absl::StrCat("https://127.0.0.1:", sipd.listener_port("httpd", "https"), "/mi");
  const std::string add =
      "[\"location\",\"alice\",\"sip:alice@192.0.2.1\",\"0\",\"1.00\",\"0\",\"0\",\"0\",\"0\"]";
  const auto [anonymous_rc, anonymous_out] = Curl(url, "version", "[]", false);
  EXPECT_NE(anonymous_rc, 0) << anonymous_out;
  EXPECT_FALSE(absl::StrContains(anonymous_out, "\"result\"")) << anonymous_out;
  const auto [rc, out] = Curl(url, "ul_add", add, /*client_certificate=*/true);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "\"result\"")) << out;
}

// tls_client_auth optional: a caller without a certificate is a local caller without credentials
// (read only: ul_add refused with 403); the same call with the certificate runs.
TEST_F(HttpdTlsTest, OptionalClientCertificateGivesItsRole) {
  MakeCertificates();
  SipdInstance sipd(
      {.grpc = false, .extra_config = TlsConfig("optional"), .default_security = true});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const std::string url =
      absl::StrCat("https://127.0.0.1:", sipd.listener_port("httpd", "https"), "/mi");
  const std::string add =
      "[\"location\",\"bob\",\"sip:bob@192.0.2.1\",\"0\",\"1.00\",\"0\",\"0\",\"0\",\"0\"]";
  const auto [anonymous_rc, anonymous_out] = Curl(url, "ul_add", add, false);
  ASSERT_EQ(anonymous_rc, 0) << anonymous_out;
  EXPECT_EQ(json::parse(anonymous_out, nullptr, false)["error"]["code"], 403) << anonymous_out;
  const auto [rc, out] = Curl(url, "ul_add", add, /*client_certificate=*/true);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "\"result\"")) << out;
}

// A client that connects and never starts the handshake is cut after header_timeout
// (counted in httpd:timeouts).
TEST_F(HttpdTlsTest, AHandshakeNeverStartedIsCutAfterHeaderTimeout) {
  MakeCertificates();
  SipdInstance sipd(
      {.grpc = false,
       .extra_config = TlsConfig("none") + "modparam(\"httpd\", \"header_timeout\", 1)\n"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int port = sipd.listener_port("httpd", "https");
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  pollfd p{fd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 30000), 1);
  char byte;
  EXPECT_EQ(read(fd, &byte, 1), 0) << "closed by the server";
  close(fd);
  const auto [rc, out] = Curl(absl::StrCat("https://127.0.0.1:", port, "/mi"), "get_statistics",
                              "[\"timeouts\"]", false);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(json::parse(out, nullptr, false)["result"]["nodes"][0]["value"], "1") << out;
}

TEST_F(HttpdTlsTest, AKeyThatDoesNotLoadFailsStartUpNamingTheFile) {
  MakeCertificates();
  SipdInstance sipd(
      {.grpc = false,
       .extra_config = absl::StrCat(
           "loadmodule \"httpd\"\n", "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n",
           "modparam(\"httpd\", \"tls_cert\", \"", pki_, "/server.pem\")\n",
           "modparam(\"httpd\", \"tls_key\", \"", pki_, "/ca.pem\")\n")});
  EXPECT_FALSE(sipd.Start().ok());
  EXPECT_TRUE(
      absl::StrContains(sipd.log(), absl::StrCat("httpd: cannot load tls_key ", pki_, "/ca.pem")))
      << sipd.log();
}

TEST(HttpdExposureTest, NonLoopbackListenWithoutTlsFailsStartUp) {
  SipdInstance sipd({.grpc = false,
                     .extra_config = "loadmodule \"httpd\"\n"
                                     "modparam(\"httpd\", \"listen\", \"0.0.0.0:0\")\n"});
  EXPECT_FALSE(sipd.Start().ok());
  EXPECT_TRUE(absl::StrContains(sipd.log(),
                                "httpd: listen 0.0.0.0:0 is reachable from other hosts and has no "
                                "TLS: set tls_cert and tls_key"))
      << sipd.log();
}

TEST(HttpdExposureTest, InsecureAllowsItLoudly) {
  SipdInstance sipd({.grpc = false,
                     .extra_config = "loadmodule \"httpd\"\n"
                                     "modparam(\"httpd\", \"listen\", \"0.0.0.0:0\")\n"
                                     "modparam(\"httpd\", \"insecure\", 1)\n"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  EXPECT_TRUE(absl::StrContains(
      sipd.log(), "httpd: INSECURE: 0.0.0.0:0 is reachable from other hosts without TLS"))
      << sipd.log();
  auto reply = HttpPost(sipd.listener_port("httpd", "http"), RpcRequest("version"));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(absl::StrContains(reply->body, "\"result\"")) << reply->body;
}

}  // namespace
}  // namespace sipd::httpd_test
