// The malformed-input table shared by the in-process server test and the sipd test:
// each bad request with the HTTP status (or, for 200, the XML-RPC fault code) that
// mi_xmlrpc documents for it (spec 5.2/5.3 and legacy-transports/xmlrpc/*.h).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::xmlrpc::testing {

struct BadInput {
  std::string name;
  std::string request;
  // Expected HTTP status; for 200 the expected fault code.
  int http_status;
  int fault_code = 0;
  // Half-close after sending (the client is done talking).
  bool shutdown_write = false;
};

inline std::string XmlBody(const std::string& body) { return PostRequest(body); }

inline std::string NestedArrays(int depth) {
  std::string xml =
      "<?xml version=\"1.0\"?><methodCall><methodName>echo</methodName><params>"
      "<param><value>";
  for (int i = 0; i < depth; ++i) xml += "<array><data><value>";
  xml += "<i4>1</i4>";
  for (int i = 0; i < depth; ++i) xml += "</value></data></array>";
  return xml + "</value></param></params></methodCall>";
}

inline std::string BillionLaughs() {
  std::string bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol0 \"lol\">\n";
  for (int i = 1; i <= 9; ++i) {
    absl::StrAppend(&bomb, " <!ENTITY lol", i, " \"");
    for (int k = 0; k < 10; ++k) absl::StrAppend(&bomb, "&lol", i - 1, ";");
    bomb += "\">\n";
  }
  return bomb +
         "]>\n<methodCall><methodName>echo</methodName><params><param><value><string>&lol9;"
         "</string></value></param></params></methodCall>";
}

// Each bad input with its documented answer. `command` is a command without arguments,
// `param_command` one that accepts any number of arguments (for the param-type cases).
inline std::vector<BadInput> BadInputs(const std::string& command,
                                       const std::string& param_command) {
  const std::string call = MethodCall(command);
  auto one_param = [&](const std::string& value_xml) {
    return "<?xml version=\"1.0\"?><methodCall><methodName>" + param_command +
           "</methodName><params><param><value>" + value_xml +
           "</value></param></params></methodCall>";
  };
  std::vector<BadInput> cases = {
      {"malformed_xml", XmlBody("<?xml version=\"1.0\"?><methodCall><methodName>" + command), 200,
       -503},
      {"not_xml", XmlBody("hello"), 200, -503},
      {"billion_laughs", XmlBody(BillionLaughs()), 200, -503},
      {"deep_nesting_10k", XmlBody(NestedArrays(10000)), 200, -503},
      {"array_param", XmlBody(one_param("<array><data/></array>")), 200, -501},
      {"struct_param", XmlBody(one_param("<struct></struct>")), 200, -501},
      {"nil_param", XmlBody(one_param("<nil/>")), 200, -501},
      {"wrong_content_type", PostRequest(call, "", "application/json"), 400},
      {"missing_content_type",
       absl::StrCat("POST /RPC2 HTTP/1.1\r\nContent-Length: ", call.size(), "\r\n\r\n", call), 400},
      {"missing_content_length", "POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\n\r\n" + call,
       411},
      {"chunked",
       "POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n", 411},
      {"zero_content_length",
       "POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: 0\r\n\r\n", 400},
      {"non_numeric_content_length",
       "POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: abc\r\n\r\n" + call, 400},
      {"oversized_body_2mb",
       absl::StrCat("POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: ",
                    2 * 1024 * 1024, "\r\n\r\n", std::string(2 * 1024 * 1024, 'x')),
       413},
      {"get", "GET /RPC2 HTTP/1.1\r\nHost: x\r\n\r\n", 405},
      {"wrong_path",
       absl::StrCat("POST /index.html HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: ",
                    call.size(), "\r\n\r\n", call),
       404},
      {"garbage_request_line", "\x16\x03\x01 hello\r\n\r\n", 400},
      {"http2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400},
      {"huge_head", "POST /RPC2 HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n", 431},
      {"truncated_body_then_close",
       absl::StrCat("POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: ",
                    call.size(), "\r\n\r\n", call.substr(0, call.size() / 2)),
       400, 0, true},
      {"truncated_head_then_close", "POST /RPC2 HTTP/1.1\r\nContent-Ty", 400, 0, true},
  };
  return cases;
}

}  // namespace sipd::xmlrpc::testing
