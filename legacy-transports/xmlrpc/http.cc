#include "legacy-transports/xmlrpc/http.h"

#include <time.h>

#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "registry/status_macros.h"
#include "sipd_version.h"

namespace sipd::xmlrpc {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

bool IsTokenChar(char c) {
  // RFC 7230 tchar.
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// True if the comma-separated header value contains `token` (case-insensitive).
bool HasToken(std::string_view value, std::string_view token) {
  for (absl::string_view part : absl::StrSplit(AbslView(value), ',')) {
    if (absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(part), AbslView(token))) return true;
  }
  return false;
}

}  // namespace

std::optional<std::string_view> HttpRequestHead::Header(std::string_view name) const {
  for (const auto& [header_name, value] : headers) {
    if (absl::EqualsIgnoreCase(header_name, AbslView(name))) return std::string_view(value);
  }
  return std::nullopt;
}

bool HttpRequestHead::WantsKeepAlive() const {
  const auto connection = Header("Connection");
  if (version == "HTTP/1.1") return !connection || !HasToken(*connection, "close");
  return connection && HasToken(*connection, "keep-alive");
}

bool HttpRequestHead::ExpectsContinue() const {
  const auto expect = Header("Expect");
  return expect && HasToken(*expect, "100-continue");
}

size_t FindHeadEnd(std::string_view buffer) {
  // The head ends at the first empty line; lines end in LF with an optional CR.
  const size_t lf_lf = buffer.find("\n\n");
  const size_t lf_crlf = buffer.find("\n\r\n");
  if (lf_lf == std::string_view::npos && lf_crlf == std::string_view::npos) return 0;
  if (lf_crlf == std::string_view::npos || (lf_lf != std::string_view::npos && lf_lf < lf_crlf)) {
    return lf_lf + 2;
  }
  return lf_crlf + 3;
}

absl::StatusOr<HttpRequestHead> ParseRequestHead(std::string_view head) {
  HttpRequestHead result;
  SIPD_RETURN_IF_ERROR(ParseRequestHead(head, &result));
  return result;
}

absl::Status ParseRequestHead(std::string_view head, HttpRequestHead* result) {
  // Lines end in LF with an optional CR; the terminating empty line(s) are dropped.
  size_t pos = 0;
  auto next_line = [&](std::string_view* line) {
    if (pos >= head.size()) return false;
    size_t lf = head.find('\n', pos);
    if (lf == std::string_view::npos) lf = head.size();
    *line = head.substr(pos, lf - pos);
    if (!line->empty() && line->back() == '\r') line->remove_suffix(1);
    pos = lf + 1;
    return true;
  };
  std::string_view line;
  if (head.find_first_not_of("\r\n") == std::string_view::npos) {
    return absl::InvalidArgumentError("empty request");
  }
  next_line(&line);

  // Request line: exactly three space-separated parts (runs of spaces count as one).
  std::string_view parts[3];
  size_t count = 0;
  for (size_t i = 0; i < line.size();) {
    if (line[i] == ' ') {
      ++i;
      continue;
    }
    size_t end = line.find(' ', i);
    if (end == std::string_view::npos) end = line.size();
    if (count == 3) return absl::InvalidArgumentError("malformed request line");
    parts[count++] = line.substr(i, end - i);
    i = end;
  }
  if (count != 3 || !IsToken(parts[0])) return absl::InvalidArgumentError("malformed request line");
  result->method.assign(parts[0]);
  result->target.assign(parts[1]);
  result->version.assign(parts[2]);
  if (result->version != "HTTP/1.1" && result->version != "HTTP/1.0") {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported HTTP version ", AbslView(parts[2])));
  }

  size_t headers = 0;
  while (next_line(&line)) {
    if (line.empty()) {
      // Only the terminating empty line(s) may be empty; anything after them is not ours.
      std::string_view rest;
      bool only_empty = true;
      while (next_line(&rest)) only_empty = only_empty && rest.empty();
      if (!only_empty) return absl::InvalidArgumentError("malformed header line");
      break;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      // Obsolete line folding (RFC 7230 3.2.4): rejecting it is allowed and safest.
      return absl::InvalidArgumentError("folded header line");
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || !IsToken(line.substr(0, colon))) {
      return absl::InvalidArgumentError("malformed header line");
    }
    if (headers == result->headers.size()) result->headers.emplace_back();
    auto& [name, value] = result->headers[headers++];
    name.assign(line.substr(0, colon));
    const absl::string_view stripped = absl::StripAsciiWhitespace(AbslView(line.substr(colon + 1)));
    value.assign(stripped.data(), stripped.size());
  }
  result->headers.resize(headers);
  return absl::OkStatus();
}

std::pair<std::optional<HttpError>, size_t> CheckRpcRequest(const HttpRequestHead& head,
                                                            size_t max_body_size) {
  auto fail = [](int status, std::string message) {
    return std::pair<std::optional<HttpError>, size_t>(HttpError{status, std::move(message)}, 0);
  };
  if (head.target != kRpcPath) return fail(404, "only /RPC2 is served");
  if (head.method != "POST") return fail(405, "only POST is allowed");

  const auto content_type = head.Header("Content-Type");
  if (!content_type) return fail(400, "no Content-Type (text/xml required)");
  const absl::string_view base_type = absl::StripAsciiWhitespace(
      absl::string_view(AbslView(*content_type)).substr(0, AbslView(*content_type).find(';')));
  if (!absl::EqualsIgnoreCase(base_type, "text/xml")) {
    return fail(400, absl::StrCat("Content-Type '", base_type, "' is not text/xml"));
  }

  if (head.Header("Transfer-Encoding")) {
    return fail(411, "Transfer-Encoding is not supported; send Content-Length");
  }
  std::optional<size_t> length;
  bool saw_length = false;
  for (const auto& [name, value] : head.headers) {
    if (!absl::EqualsIgnoreCase(name, "Content-Length")) continue;
    saw_length = true;
    if (value.empty() || value.size() > 20 ||
        value.find_first_not_of("0123456789") != std::string::npos) {
      return fail(400, "Content-Length is not a number");
    }
    // Saturate instead of overflowing: a huge length is still "too large" below.
    size_t parsed = 0;
    for (char c : value) {
      const size_t digit = static_cast<size_t>(c - '0');
      parsed = parsed > (std::numeric_limits<size_t>::max() - digit) / 10
                   ? std::numeric_limits<size_t>::max()
                   : parsed * 10 + digit;
    }
    if (length && *length != parsed) return fail(400, "conflicting Content-Length headers");
    length = parsed;
  }
  if (!saw_length) return fail(411, "Content-Length required");
  if (*length == 0) return fail(400, "empty body (Content-Length: 0)");
  if (*length > max_body_size) {
    return fail(413, absl::StrCat("body of ", *length, " bytes exceeds the limit of ",
                                  max_body_size, " bytes"));
  }
  return {std::nullopt, *length};
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

std::string HttpDate(std::time_t when) {
  struct tm tm_utc;
  gmtime_r(&when, &tm_utc);
  // strftime's %a/%b are locale-dependent; HTTP wants the English names.
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buffer[64];
  snprintf(buffer, sizeof(buffer), "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm_utc.tm_wday],
           tm_utc.tm_mday, kMonths[tm_utc.tm_mon], tm_utc.tm_year + 1900, tm_utc.tm_hour,
           tm_utc.tm_min, tm_utc.tm_sec);
  return buffer;
}

std::string_view ServerHeader() {
  static const std::string kServer = absl::StrCat("sipd/", SIPD_VERSION, " mi_xmlrpc");
  return kServer;
}

std::string FormatXmlResponse(std::string_view xml, const ResponseOptions& options) {
  std::string out;
  AppendXmlResponse(xml, options, &out);
  return out;
}

namespace {

// The head lines every 200 response shares, up to and excluding the framing header.
void AppendCommonHead(const ResponseOptions& options, std::string* out) {
  // The Date text changes once a second; formatting it costs more than the rest of the
  // head, so each thread keeps the last one.
  thread_local std::time_t cached_date = -1;
  thread_local std::string cached_date_text;
  if (options.date != cached_date) {
    cached_date_text = HttpDate(options.date);
    cached_date = options.date;
  }
  absl::StrAppend(out, "HTTP/1.1 200 OK\r\nDate: ", cached_date_text,
                  "\r\nServer: ", AbslView(ServerHeader()),
                  "\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n");
}

void AppendConnectionHeaders(const ResponseOptions& options, std::string* out) {
  if (options.keep_alive) {
    absl::StrAppend(out,
                    "Connection: Keep-Alive\r\nKeep-Alive: timeout=", options.keep_alive_timeout_s);
    if (options.keep_alive_remaining >= 0) {
      absl::StrAppend(out, ", max=", options.keep_alive_remaining);
    }
    out->append("\r\n\r\n");
  } else {
    out->append("Connection: close\r\n\r\n");
  }
}

}  // namespace

void AppendXmlResponse(std::string_view xml, const ResponseOptions& options, std::string* out) {
  out->reserve(out->size() + 256 + xml.size());
  AppendCommonHead(options, out);
  absl::StrAppend(out, "Content-Length: ", xml.size(), "\r\n");
  AppendConnectionHeaders(options, out);
  out->append(xml);
}

void AppendChunkedResponseHead(const ResponseOptions& options, std::string* out) {
  AppendCommonHead(options, out);
  out->append("Transfer-Encoding: chunked\r\n");
  AppendConnectionHeaders(options, out);
}

std::string FormatErrorResponse(const HttpError& error, std::time_t date) {
  const std::string body = absl::StrCat(error.status, " ", AbslView(ReasonPhrase(error.status)),
                                        ": ", error.message, "\n");
  std::string out =
      absl::StrCat("HTTP/1.1 ", error.status, " ", AbslView(ReasonPhrase(error.status)),
                   "\r\nDate: ", HttpDate(date), "\r\nServer: ", AbslView(ServerHeader()), "\r\n");
  if (error.status == 405) out.append("Allow: POST\r\n");
  if (error.status == 503) out.append("Retry-After: 1\r\n");
  absl::StrAppend(&out, "Content-Type: text/plain\r\nContent-Length: ", body.size(),
                  "\r\nConnection: close\r\n\r\n", body);
  return out;
}

}  // namespace sipd::xmlrpc
