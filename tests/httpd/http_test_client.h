// A small blocking HTTP/1.1 client for httpd tests (Boost.Beast over a POSIX socket with
// receive/send timeouts, so a stalled server fails the test instead of hanging it).
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace sipd::httpd_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using json = nlohmann::json;

struct HttpResult {
  unsigned status = 0;
  std::string content_type;
  bool chunked = false;
  std::string body;
};

// One keep-alive connection to 127.0.0.1:port.
class HttpConnection {
 public:
  static absl::StatusOr<std::unique_ptr<HttpConnection>> Open(
      int port, std::chrono::seconds timeout = std::chrono::seconds(30)) {
    auto connection = std::unique_ptr<HttpConnection>(new HttpConnection());
    beast::error_code ec;
    connection->socket_.connect(
        asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)),
        ec);
    if (ec) return absl::UnavailableError(absl::StrCat("connect: ", ec.message()));
    struct timeval tv {
      static_cast<time_t>(timeout.count()), 0
    };
    setsockopt(connection->socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(connection->socket_.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return connection;
  }

  absl::StatusOr<HttpResult> Request(
      http::verb verb, const std::string& target, const std::string& body = "",
      const std::string& content_type = "application/json",
      const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    http::request<http::string_body> request(verb, target, 11);
    request.set(http::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) request.set(name, value);
    if (verb == http::verb::post) request.set(http::field::content_type, content_type);
    request.body() = body;
    request.prepare_payload();
    beast::error_code ec;
    http::write(socket_, request, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("write: ", ec.message()));
    return Read();
  }

  absl::StatusOr<HttpResult> Read() {
    http::response_parser<http::string_body> parser;
    parser.body_limit(1ull << 30);
    beast::error_code ec;
    http::read(socket_, buffer_, parser, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("read: ", ec.message()));
    HttpResult result;
    result.status = parser.get().result_int();
    result.content_type = std::string(parser.get()[http::field::content_type]);
    result.chunked = parser.get().chunked();
    result.body = std::move(parser.get().body());
    return result;
  }

  absl::StatusOr<HttpResult> Post(const std::string& body) {
    return Request(http::verb::post, "/mi", body);
  }
  absl::StatusOr<HttpResult> Get(const std::string& target) {
    return Request(http::verb::get, target);
  }

  int fd() { return socket_.native_handle(); }

 private:
  HttpConnection() : socket_(io_) {}
  asio::io_context io_;
  asio::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
};

// One request on a fresh connection.
inline absl::StatusOr<HttpResult> HttpPost(int port, const std::string& body) {
  auto connection = HttpConnection::Open(port);
  if (!connection.ok()) return connection.status();
  return (*connection)->Post(body);
}
inline absl::StatusOr<HttpResult> HttpGet(int port, const std::string& target) {
  auto connection = HttpConnection::Open(port);
  if (!connection.ok()) return connection.status();
  return (*connection)->Get(target);
}

// {"jsonrpc":"2.0","method":M,"params":P,"id":ID}
inline std::string RpcRequest(const std::string& method, json params = json::array(), json id = 1) {
  return json{{"jsonrpc", "2.0"}, {"method", method}, {"params", params}, {"id", id}}.dump();
}

}  // namespace sipd::httpd_test
