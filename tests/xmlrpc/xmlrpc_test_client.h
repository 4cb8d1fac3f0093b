// A raw HTTP/XML-RPC client for the mi_xmlrpc tests: real TCP sockets, bytes exactly as
// the test writes them (so malformed requests can be sent), and xmlrpc-c only to build
// calls and parse methodResponse documents.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <xmlrpc-c/base.hpp>
#include <xmlrpc-c/xml.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sipd::xmlrpc::testing {

struct HttpResponse {
  int status = 0;
  std::string status_line;
  // Header names lower-cased.
  std::map<std::string, std::string> headers;
  std::string body;
  // Chunks of a chunked body (0 for a Content-Length body).
  int chunks = 0;
  bool ok = false;  // a complete response was read
};

// Outcome of an XML-RPC call: either a value or a fault.
struct CallOutcome {
  bool is_fault = false;
  int fault_code = 0;
  std::string fault_string;
  xmlrpc_c::value value;

  std::string String() const { return static_cast<std::string>(xmlrpc_c::value_string(value)); }
  std::vector<std::string> Strings() const {
    std::vector<std::string> out;
    for (const auto& item : xmlrpc_c::value_array(value).vectorValueValue()) {
      out.push_back(static_cast<std::string>(xmlrpc_c::value_string(item)));
    }
    return out;
  }
};

inline CallOutcome ParseOutcome(const std::string& xml) {
  xmlrpc_c::rpcOutcome outcome;
  xmlrpc_c::xml::parseResponse(xml, &outcome);
  CallOutcome result;
  if (outcome.succeeded()) {
    result.value = outcome.getResult();
  } else {
    result.is_fault = true;
    result.fault_code = static_cast<int>(outcome.getFault().getCode());
    result.fault_string = outcome.getFault().getDescription();
  }
  return result;
}

inline std::string MethodCall(const std::string& method, const xmlrpc_c::paramList& params = {}) {
  std::string xml;
  xmlrpc_c::xml::generateCall(method, params, &xml);
  return xml;
}

inline std::string StringParams(const std::string& method, const std::vector<std::string>& args) {
  xmlrpc_c::paramList params;
  for (const auto& arg : args) params.add(xmlrpc_c::value_string(arg));
  return MethodCall(method, params);
}

inline std::string PostRequest(std::string_view body, std::string_view extra_headers = {},
                               std::string_view content_type = "text/xml") {
  return absl::StrCat("POST /RPC2 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: sipd-test\r\n",
                      "Content-Type: ", std::string(content_type),
                      "\r\nContent-Length: ", body.size(), "\r\n", std::string(extra_headers),
                      "\r\n", std::string(body));
}

class RawConnection {
 public:
  RawConnection() = default;
  ~RawConnection() { Close(); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool Connect(int port, const char* host = "127.0.0.1") {
    Close();
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, host, &address.sin_addr);
    return connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }

  bool Send(std::string_view data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

  // True if the server closed the connection (EOF or reset) within `timeout`; whatever
  // else arrives meanwhile is discarded.
  bool WaitClosed(std::chrono::milliseconds timeout) {
    buffer_.clear();
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, 50) <= 0) continue;
      char chunk[4096];
      if (recv(fd_, chunk, sizeof(chunk), 0) <= 0) return true;
    }
    return false;
  }

  // Reads one response (Content-Length framed, or chunked: then `chunks` counts the
  // chunks), waiting at most `timeout`.
  HttpResponse ReadResponse(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    HttpResponse response;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t head_end = std::string::npos;
    size_t body_length = 0;
    bool chunked = false;
    size_t chunk_pos = 0;  // where the next chunk's size line starts (chunked)
    while (true) {
      if (head_end == std::string::npos) {
        const size_t end = buffer_.find("\r\n\r\n");
        if (end != std::string::npos) {
          head_end = end + 4;
          chunk_pos = head_end;
          ParseHead(buffer_.substr(0, end), response);
          const auto it = response.headers.find("content-length");
          if (it != response.headers.end()) (void)absl::SimpleAtoi(it->second, &body_length);
          const auto te = response.headers.find("transfer-encoding");
          chunked = te != response.headers.end() && te->second == "chunked";
        }
      }
      if (head_end != std::string::npos && !chunked && buffer_.size() >= head_end + body_length) {
        response.body = buffer_.substr(head_end, body_length);
        buffer_.erase(0, head_end + body_length);
        response.ok = true;
        return response;
      }
      while (head_end != std::string::npos && chunked) {
        const size_t line_end = buffer_.find("\r\n", chunk_pos);
        if (line_end == std::string::npos) break;
        size_t size = 0;
        if (!absl::SimpleHexAtoi(buffer_.substr(chunk_pos, line_end - chunk_pos), &size)) {
          return response;  // malformed
        }
        if (buffer_.size() < line_end + 2 + size + 2) break;
        if (buffer_.compare(line_end + 2 + size, 2, "\r\n") != 0) return response;
        if (size == 0) {
          buffer_.erase(0, line_end + 4);
          response.ok = true;
          return response;
        }
        response.body.append(buffer_, line_end + 2, size);
        ++response.chunks;
        chunk_pos = line_end + 2 + size + 2;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return response;
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[65536];
      const ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return response;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  // Sends a methodCall and parses the reply (HTTP must be 200).
  std::optional<CallOutcome> Call(const std::string& call_xml, HttpResponse* http = nullptr) {
    if (!Send(PostRequest(call_xml))) return std::nullopt;
    HttpResponse response = ReadResponse();
    if (http != nullptr) *http = response;
    if (!response.ok || response.status != 200) return std::nullopt;
    return ParseOutcome(response.body);
  }

 private:
  static void ParseHead(const std::string& head, HttpResponse& response) {
    size_t pos = head.find("\r\n");
    response.status_line = head.substr(0, pos);
    if (response.status_line.size() >= 12) {
      (void)absl::SimpleAtoi(response.status_line.substr(9, 3), &response.status);
    }
    while (pos != std::string::npos) {
      const size_t start = pos + 2;
      pos = head.find("\r\n", start);
      const std::string line = head.substr(start, pos == std::string::npos ? pos : pos - start);
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      response.headers[absl::AsciiStrToLower(line.substr(0, colon))] =
          std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }

  int fd_ = -1;
  std::string buffer_;
};

// One request on a fresh connection.
inline HttpResponse Exchange(int port, std::string_view raw_request) {
  RawConnection connection;
  if (!connection.Connect(port)) return {};
  connection.Send(raw_request);
  return connection.ReadResponse();
}

inline std::optional<CallOutcome> CallOnce(int port, const std::string& call_xml) {
  RawConnection connection;
  if (!connection.Connect(port)) return std::nullopt;
  return connection.Call(call_xml);
}

}  // namespace sipd::xmlrpc::testing
