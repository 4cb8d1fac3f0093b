// The small HTTP/1.1 framing mi_xmlrpc needs (spec 5.2): parse a request head, decide
// whether it is an acceptable `POST /RPC2` XML-RPC call, and format responses.
//
// We frame HTTP ourselves (instead of using xmlrpc-c's Abyss server or Boost.Beast) so
// that every limit and every answer is ours: header size (431 measured on the head as
// sent), body size, the order of the RPC2 checks (404, 405, 400, 411, 400, 413), lenient
// bare-LF heads, and no allocation per request (Beast's header container allocates per
// field). The event loop is server.cc's; xmlrpc-c and expat only read and write XML.
//
// Everything here is a pure function of its inputs (no I/O), so it is unit-tested
// directly; server.cc does the socket work.
#pragma once

#include <cstddef>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sipd::xmlrpc {

// Largest accepted request head (request line + headers). Larger -> 431 and close.
inline constexpr size_t kMaxHeadSize = 16 * 1024;

// The only path served (as xmlrpc-c's RPC2 handler).
inline constexpr std::string_view kRpcPath = "/RPC2";

struct HttpRequestHead {
  std::string method;
  std::string target;
  // "HTTP/1.0" or "HTTP/1.1" (other versions are rejected by ParseRequestHead).
  std::string version;
  // In arrival order; names as sent (compare case-insensitively).
  std::vector<std::pair<std::string, std::string>> headers;

  // Value of the first header called `name` (case-insensitive), if any.
  std::optional<std::string_view> Header(std::string_view name) const;
  // HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
  bool WantsKeepAlive() const;
  // `Expect: 100-continue` was sent (curl does for bodies > 1 KiB).
  bool ExpectsContinue() const;
};

// Finds the end of the head in `buffer`: returns the number of bytes of the head
// including its terminating empty line (CRLF CRLF, or LF LF from lenient clients), or 0
// if the head is not complete yet.
size_t FindHeadEnd(std::string_view buffer);

// Parses a complete head (as delimited by FindHeadEnd). InvalidArgumentError for a
// malformed request line or header line, or an HTTP version other than 1.0/1.1.
absl::StatusOr<HttpRequestHead> ParseRequestHead(std::string_view head);
// The same into `*result`, reusing its strings' storage (a connection parses every
// request into one object, so a request costs no allocation). `*result` is unspecified
// after an error.
absl::Status ParseRequestHead(std::string_view head, HttpRequestHead* result);

// An HTTP-level rejection: status code and a one-line plain-text reason.
struct HttpError {
  int status = 400;
  std::string message;
};

// Applies the checks of spec 5.2 in the order xmlrpc-c's RPC2 handler applies them:
//   path != /RPC2 -> 404; method != POST -> 405; Content-Type base type not text/xml
//   -> 400; Transfer-Encoding (chunked bodies are not supported) or no Content-Length
//   -> 411; Content-Length 0, non-numeric or conflicting -> 400; Content-Length >
//   `max_body_size` -> 413.
// On success returns the body length.
std::pair<std::optional<HttpError>, size_t> CheckRpcRequest(const HttpRequestHead& head,
                                                            size_t max_body_size);

// Standard reason phrase for the status codes this transport sends.
std::string_view ReasonPhrase(int status);

// RFC 7231 IMF-fixdate, e.g. "Tue, 03 Jun 2014 16:22:20 GMT".
std::string HttpDate(std::time_t when);

struct ResponseOptions {
  // Keep the connection open: `Connection: Keep-Alive` plus
  // `Keep-Alive: timeout=<keep_alive_timeout_s>[, max=<keep_alive_remaining>]` (max only
  // when keep_alive_remaining >= 0, i.e. the server caps requests per connection);
  // otherwise `Connection: close`.
  bool keep_alive = false;
  int keep_alive_timeout_s = 15;
  int keep_alive_remaining = -1;
  std::time_t date = 0;
};

// A 200 response carrying an XML-RPC methodResponse.
std::string FormatXmlResponse(std::string_view xml, const ResponseOptions& options);
// The same, appended to `*out` (so that a caller can reuse one buffer).
void AppendXmlResponse(std::string_view xml, const ResponseOptions& options, std::string* out);
// The head of a 200 response whose body follows in HTTP/1.1 chunks
// (`Transfer-Encoding: chunked`), appended to `*out`.
void AppendChunkedResponseHead(const ResponseOptions& options, std::string* out);

// An error response with a short text/plain body (`<status> <phrase>: <message>`).
// Error responses always close the connection.
std::string FormatErrorResponse(const HttpError& error, std::time_t date);

// The interim response sent after `Expect: 100-continue` when the head is acceptable.
inline constexpr std::string_view kContinueResponse = "HTTP/1.1 100 Continue\r\n\r\n";

// The `Server:` header value.
std::string_view ServerHeader();

}  // namespace sipd::xmlrpc
