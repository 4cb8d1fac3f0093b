// The HTTP framing of mi_xmlrpc (spec 5.2) as pure functions.
#include "legacy-transports/xmlrpc/http.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace sipd::xmlrpc {
namespace {

using ::testing::HasSubstr;

HttpRequestHead Parse(const std::string& head) {
  absl::StatusOr<HttpRequestHead> parsed = ParseRequestHead(head);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : HttpRequestHead{};
}

std::string Head(const std::string& request_line, const std::string& headers) {
  return request_line + "\r\n" + headers + "\r\n";
}

TEST(FindHeadEndTest, FindsCrLfAndBareLfTerminators) {
  EXPECT_EQ(FindHeadEnd("POST / HTTP/1.1\r\nA: b\r\n"), 0u);
  EXPECT_EQ(FindHeadEnd("POST / HTTP/1.1\r\nA: b\r\n\r\nbody"), 25u);
  EXPECT_EQ(FindHeadEnd("POST / HTTP/1.1\nA: b\n\nbody"), 22u);
  EXPECT_EQ(FindHeadEnd("POST / HTTP/1.1\r\n\r"), 0u);
}

TEST(ParseRequestHeadTest, ParsesRequestLineAndHeaders) {
  const HttpRequestHead head =
      Parse(Head("POST /RPC2 HTTP/1.1", "Content-Type:  text/xml \r\ncontent-length: 10\r\n"));
  EXPECT_EQ(head.method, "POST");
  EXPECT_EQ(head.target, "/RPC2");
  EXPECT_EQ(head.version, "HTTP/1.1");
  EXPECT_EQ(head.Header("content-type"), "text/xml");
  EXPECT_EQ(head.Header("Content-Length"), "10");
  EXPECT_FALSE(head.Header("Expect").has_value());
}

TEST(ParseRequestHeadTest, RejectsMalformedHeads) {
  for (const std::string& bad :
       {Head("POST /RPC2", ""), Head("POST /RPC2 HTTP/2.0", ""), Head("POST /RPC2 SIP/2.0", ""),
        Head("PO{ST /RPC2 HTTP/1.1", ""), Head("POST /RPC2 HTTP/1.1", "NoColon\r\n"),
        Head("POST /RPC2 HTTP/1.1", "A: b\r\n folded\r\n"),
        Head("POST /RPC2 HTTP/1.1", "Bad Name: x\r\n"), std::string("\r\n")}) {
    EXPECT_FALSE(ParseRequestHead(bad).ok()) << bad;
  }
}

TEST(KeepAliveTest, FollowsHttpVersionAndConnectionHeader) {
  EXPECT_TRUE(Parse(Head("POST /RPC2 HTTP/1.1", "")).WantsKeepAlive());
  EXPECT_FALSE(Parse(Head("POST /RPC2 HTTP/1.1", "Connection: Close\r\n")).WantsKeepAlive());
  EXPECT_FALSE(Parse(Head("POST /RPC2 HTTP/1.0", "")).WantsKeepAlive());
  EXPECT_TRUE(Parse(Head("POST /RPC2 HTTP/1.0", "Connection: Keep-Alive\r\n")).WantsKeepAlive());
  EXPECT_TRUE(Parse(Head("POST /RPC2 HTTP/1.1", "Expect: 100-continue\r\n")).ExpectsContinue());
}

int CheckStatus(const std::string& request_line, const std::string& headers,
                size_t max_body = 1000) {
  const auto [error, length] = CheckRpcRequest(Parse(Head(request_line, headers)), max_body);
  return error ? error->status : static_cast<int>(length);
}

TEST(CheckRpcRequestTest, AppliesTheRpc2HandlerChecksInOrder) {
  const std::string good = "Content-Type: text/xml\r\nContent-Length: 12\r\n";
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1", good), 12);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1",
                        "Content-Type: TEXT/XML; charset=\"utf-8\"\r\nContent-Length: 7\r\n"),
            7);
  EXPECT_EQ(CheckStatus("POST /other HTTP/1.1", good), 404);
  EXPECT_EQ(CheckStatus("GET /other HTTP/1.1", ""), 404);
  EXPECT_EQ(CheckStatus("GET /RPC2 HTTP/1.1", ""), 405);
  EXPECT_EQ(CheckStatus("PUT /RPC2 HTTP/1.1", good), 405);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1", "Content-Length: 12\r\n"), 400);
  EXPECT_EQ(
      CheckStatus("POST /RPC2 HTTP/1.1", "Content-Type: application/xml\r\nContent-Length: 12\r\n"),
      400);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1", "Content-Type: text/xml\r\n"), 411);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1",
                        "Content-Type: text/xml\r\nTransfer-Encoding: chunked\r\n"),
            411);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1", "Content-Type: text/xml\r\nContent-Length: 0\r\n"),
            400);
  EXPECT_EQ(
      CheckStatus("POST /RPC2 HTTP/1.1", "Content-Type: text/xml\r\nContent-Length: twelve\r\n"),
      400);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1", "Content-Type: text/xml\r\nContent-Length: -1\r\n"),
            400);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1",
                        "Content-Type: text/xml\r\nContent-Length: 5\r\nContent-Length: 6\r\n"),
            400);
  EXPECT_EQ(
      CheckStatus("POST /RPC2 HTTP/1.1", "Content-Type: text/xml\r\nContent-Length: 1001\r\n"),
      413);
  EXPECT_EQ(CheckStatus("POST /RPC2 HTTP/1.1",
                        "Content-Type: text/xml\r\nContent-Length: 99999999999999999999\r\n"),
            413);
}

TEST(ResponseTest, XmlResponseHeaders) {
  ResponseOptions options;
  options.keep_alive = true;
  options.keep_alive_timeout_s = 15;
  options.keep_alive_remaining = 29;
  options.date = 1401812540;  // Tue, 03 Jun 2014 16:22:20 GMT
  const std::string response = FormatXmlResponse("<x/>", options);
  EXPECT_EQ(response.substr(0, 17), "HTTP/1.1 200 OK\r\n");
  EXPECT_THAT(response, HasSubstr("\r\nDate: Tue, 03 Jun 2014 16:22:20 GMT\r\n"));
  EXPECT_THAT(response, HasSubstr("\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n"));
  EXPECT_THAT(response, HasSubstr("\r\nContent-Length: 4\r\n"));
  EXPECT_THAT(response,
              HasSubstr("\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=15, max=29\r\n"));
  EXPECT_THAT(response, ::testing::EndsWith("\r\n\r\n<x/>"));
  options.keep_alive = false;
  EXPECT_THAT(FormatXmlResponse("<x/>", options), HasSubstr("\r\nConnection: close\r\n"));
}

TEST(ResponseTest, ErrorResponseCloses) {
  const std::string response = FormatErrorResponse(HttpError{405, "only POST"}, 0);
  EXPECT_EQ(response.substr(0, 33), "HTTP/1.1 405 Method Not Allowed\r\n");
  EXPECT_THAT(response, HasSubstr("\r\nAllow: POST\r\n"));
  EXPECT_THAT(response, HasSubstr("\r\nConnection: close\r\n"));
  EXPECT_THAT(response, ::testing::EndsWith("\r\n\r\n405 Method Not Allowed: only POST\n"));
}

}  // namespace
}  // namespace sipd::xmlrpc
