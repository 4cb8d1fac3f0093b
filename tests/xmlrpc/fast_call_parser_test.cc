// Differential test of the request path's expat reader (fast_call_parser.h) against
// xmlrpc-c (LibraryParseCall): on every document the fast parser accepts, both must
// yield the same command and arguments. What it declines goes to xmlrpc-c anyway, so
// faults for malformed input stay the library's own by construction; the test also
// checks that the common shapes are indeed accepted (or the fast path would be dead).
#include "legacy-transports/xmlrpc/fast_call_parser.h"

#include <dlfcn.h>
#include <expat.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "legacy-transports/xmlrpc/xmlrpc_processor.h"
#include "tests/xmlrpc/bad_inputs.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::xmlrpc {
namespace {

using testing::MethodCall;
using testing::StringParams;

std::string Call(const std::string& method, const std::string& params_xml) {
  return absl::StrCat("<?xml version=\"1.0\"?><methodCall><methodName>", method,
                      "</methodName><params>", params_xml, "</params></methodCall>");
}

std::string Param(const std::string& value_xml) {
  return absl::StrCat("<param><value>", value_xml, "</value></param>");
}

// Documents the fast parser must accept (the shapes real clients send).
std::vector<std::string> CommonDocuments() {
  std::vector<std::string> docs = {
      MethodCall("version"),
      MethodCall("uptime"),
      StringParams("get_statistics", {"core:"}),
      StringParams("get_statistics", {"core:", "tm:", "usrloc:"}),
      StringParams("echo", {"<x>&amp;", "caf\xC3\xA9 ]]>", "A: 1\n\nB: 2", ""}),
      StringParams("t_uac_dlg", {"OPTIONS", "sip:a@b", ".", ".", "From: x\r\nTo: y\r\n"}),
      MethodCall("echo",
                 [] {
                   xmlrpc_c::paramList p;
                   p.add(xmlrpc_c::value_int(-42));
                   p.add(xmlrpc_c::value_int(2147483647));
                   p.add(xmlrpc_c::value_int(-2147483647 - 1));
                   p.add(xmlrpc_c::value_boolean(true));
                   p.add(xmlrpc_c::value_boolean(false));
                   p.add(xmlrpc_c::value_string("text"));
                   return p;
                 }()),
      // The spec 5.6 example (HTTP/1.0 clients of OpenSIPS).
      "<?xml version=\"1.0\"?><methodCall><methodName>get_statistics</methodName><params>"
      "<param><value><string>tm:</string></value></param></params></methodCall>",
      // Untyped values, pretty printing, no declaration, no params, empty params.
      Call("echo", Param("plain") + Param("") + Param(" spaced  ")),
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<methodCall>\n  <methodName>echo</methodName>\n"
      "  <params>\n    <param>\n      <value>\n        <string>a</string>\n      </value>\n"
      "    </param>\n  </params>\n</methodCall>\n",
      "<methodCall><methodName>uptime</methodName></methodCall>",
      "<methodCall><methodName>uptime</methodName><params/></methodCall>",
      "<methodCall><methodName>uptime</methodName><params></params></methodCall>",
      Call("echo", Param("<string/>") + Param("<value/>").substr(0, 0) + Param("<i4>007</i4>")),
      Call("echo", Param("<string>&#x0d;&#13;\r\n&lt;&gt;&amp;&quot;&apos;</string>")),
      Call("echo", Param("<string>\xE2\x82\xAC &#xFFFD; \xEF\xBF\xBD</string>")),
      Call("echo", Param("<int>-0</int>") + Param("<i4>0</i4>") + Param("<boolean>1</boolean>")),
      Call("echo", Param("tab\there\r\nline")),
      // The declarations skipped without expat, then whitespace before the root.
      "<?xml version='1.0'?>\n<methodCall><methodName>version</methodName></methodCall>",
      "<?xml version=\"1.0\" encoding=\"utf-8\"?><methodCall><methodName>version</methodName>"
      "</methodCall>",
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\r\n<methodCall><methodName>v</methodName>"
      "</methodCall>",
  };
  return docs;
}

// Documents of every other shape: the fast parser may decline them; if it accepts one,
// it must agree with xmlrpc-c.
std::vector<std::string> OtherDocuments() {
  std::vector<std::string> docs = {
      "",
      "not xml at all",
      "<methodCall><methodName>uptime</methodName>",
      "<?xml version=\"1.0\"?><methodCall></methodCall>",
      "<?xml version=\"1.0\"?><methodResponse><params/></methodResponse>",
      "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><methodCall><methodName>echo</methodName>"
      "<params><param><value>caf\xE9</value></param></params></methodCall>",
      "\xEF\xBB\xBF<methodCall><methodName>uptime</methodName></methodCall>",
      "<methodCall><methodName> uptime </methodName></methodCall>",
      "<methodCall><methodName></methodName></methodCall>",
      "<methodCall><methodName>a</methodName><methodName>b</methodName></methodCall>",
      "<methodCall><params/><methodName>uptime</methodName></methodCall>",
      "<methodCall><methodName>system.listMethods</methodName></methodCall>",
      "<methodCall x=\"1\"><methodName>uptime</methodName></methodCall>",
      "<methodCall><methodName>up<!-- c -->time</methodName></methodCall>",
      "<methodCall><methodName><![CDATA[uptime]]></methodName></methodCall>",
      "<methodCall><?pi x?><methodName>uptime</methodName></methodCall>",
      "<methodCall>junk<methodName>uptime</methodName></methodCall>",
      "<methodCall><methodName>uptime</methodName><extra/></methodCall>",
      "<methodCall><methodName>uptime</methodName></methodCall><trailing/>",
      "<methodCall><methodName>uptime</methodName></methodCall>junk",
      "<x:methodCall xmlns:x=\"u\"><x:methodName>uptime</x:methodName></x:methodCall>",
      Call("echo", "<param></param>"),
      Call("echo", "<param><value>a</value><value>b</value></param>"),
      Call("echo", "junk" + Param("a")),
      Call("echo", Param("x<string>a</string>")),
      Call("echo", Param("<string>a</string>x")),
      Call("echo", Param("<string>a</string><string>b</string>")),
      Call("echo", Param("<string><b>a</b></string>")),
      Call("echo", Param("<i4> 5</i4>") + Param("<i4>+5</i4>") + Param("<i4>5 </i4>")),
      Call("echo", Param("<i4></i4>")),
      Call("echo", Param("<i4>2147483648</i4>")),
      Call("echo", Param("<i4>-2147483649</i4>")),
      Call("echo", Param("<i4>99999999999999999999</i4>")),
      Call("echo", Param("<i4>0x10</i4>")),
      Call("echo", Param("<boolean>true</boolean>")),
      Call("echo", Param("<boolean>2</boolean>")),
      Call("echo", Param("<boolean></boolean>")),
      Call("echo", Param("<double>1.5</double>")),
      Call("echo", Param("<base64>cmF3AQ==</base64>")),
      Call("echo", Param("<dateTime.iso8601>20140603T16:22:20</dateTime.iso8601>")),
      Call("echo", Param("<array><data><value><i4>1</i4></value></data></array>")),
      Call("echo", Param("<struct></struct>")),
      Call("echo", Param("<nil/>")),
      Call("echo", Param("<i8>5</i8>")),
      Call("echo", Param("<string>&undefined;</string>")),
      Call("echo", Param("<string>\xFF\xFE</string>")),
      Call("echo", Param("<string>&#xFFFE;</string>")),
      Call("echo", Param("<string>&#0;</string>")),
      Call("echo", Param("<string>\x01</string>")),
      Call("echo", Param("<STRING>a</STRING>")),
      // xmlrpc-c refuses characters outside the Basic Multilingual Plane.
      Call("echo", Param("<string>\xF0\x9F\x98\x80</string>")),
      Call("echo", Param("<string>&#x1F600;</string>")),
      "<methodCall><methodName>\xF0\x9F\x98\x80</methodName></methodCall>",
      "<methodCall><methodName>a&#x0d;b</methodName></methodCall>",
      Call("echo", Param("a&#x0d;b&#13;&#13;&#10;c&#x0a;&#x0d;d")),
      // A skipped declaration followed by another one, or by junk.
      "<?xml version=\"1.0\"?><?xml version=\"1.0\"?><methodCall><methodName>v</methodName>"
      "</methodCall>",
      "<?xml version=\"1.0\"?>x<methodCall><methodName>v</methodName></methodCall>",
      "<?xml version=\"1.0\"?>",
      "<?xml version=\"1.0\" standalone=\"yes\"?><methodCall><methodName>v</methodName>"
      "</methodCall>",
      " <?xml version=\"1.0\"?><methodCall><methodName>v</methodName></methodCall>",
  };
  for (const testing::BadInput& bad : testing::BadInputs("uptime", "echo")) {
    const size_t body = bad.request.find("\r\n\r\n");
    if (body != std::string::npos) docs.push_back(bad.request.substr(body + 4));
  }
  return docs;
}

struct Result {
  bool accepted = false;
  mi::Request request;
};

Result Fast(FastCallParser& parser, const std::string& xml) {
  Result result;
  result.accepted = parser.Parse(xml, &result.request);
  return result;
}

Result Library(const std::string& xml) {
  Result result;
  result.accepted = LibraryParseCall(xml, &result.request);
  return result;
}

// The fast parser's answer is xmlrpc-c's, or it declined.
void ExpectAgrees(FastCallParser& parser, const std::string& xml, bool must_accept) {
  const Result fast = Fast(parser, xml);
  if (must_accept) {
    EXPECT_TRUE(fast.accepted) << xml;
  }
  if (!fast.accepted) return;
  const Result library = Library(xml);
  ASSERT_TRUE(library.accepted) << "fast parser accepted what xmlrpc-c refuses: " << xml;
  EXPECT_TRUE(library.request.args_error.ok()) << xml;
  EXPECT_EQ(fast.request.command, library.request.command) << xml;
  EXPECT_EQ(fast.request.args, library.request.args) << xml;
}

// libxmlrpc_xmlparse exports an XML_SetHashSalt of its own; ours must be expat's (the
// fast parser checks before it calls it, this test keeps the link order honest so that
// no system call per document creeps back).
TEST(FastCallParserTest, XmlSetHashSaltIsExpats) {
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&XML_SetHashSalt), &info), 0);
  EXPECT_THAT(info.dli_fname, ::testing::HasSubstr("libexpat"));
}

TEST(FastCallParserTest, AcceptsTheCommonShapesAndAgreesWithXmlrpcC) {
  FastCallParser parser;
  for (const std::string& xml : CommonDocuments()) ExpectAgrees(parser, xml, true);
}

TEST(FastCallParserTest, EveryOtherDocumentIsDeclinedOrAgrees) {
  FastCallParser parser;
  int declined = 0;
  for (const std::string& xml : OtherDocuments()) {
    ExpectAgrees(parser, xml, false);
    if (!Fast(parser, xml).accepted) ++declined;
  }
  EXPECT_GT(declined, 40);
}

// Random variants of the common documents: whitespace inserted between and inside
// elements, bytes replaced, truncations, element names swapped. Whatever the fast parser
// accepts must be what xmlrpc-c reads.
TEST(FastCallParserTest, RandomVariantsAgreeWithXmlrpcC) {
  FastCallParser parser;
  std::mt19937 random(20260611);
  const std::vector<std::string> seeds = CommonDocuments();
  static constexpr const char* kInserts[] = {
      " ",        "\n",      "\r\n",     "\t",       "x",         "<",
      ">",        "&amp;",   "&#x0d;",   "&#10;",    "<!--c-->",  "<b/>",
      "</a>",     "<value>", "</value>", "<string>", "</string>", "<i4>1</i4>",
      "\xC3\xA9", "\xFF",    "\"",       "<param>",  "</param>",  "<![CDATA[x]]>"};
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string xml = seeds[random() % seeds.size()];
    const int edits = 1 + static_cast<int>(random() % 3);
    for (int e = 0; e < edits && !xml.empty(); ++e) {
      const size_t at = random() % (xml.size() + 1);
      switch (random() % 4) {
        case 0:
        case 1:
          xml.insert(at, kInserts[random() % std::size(kInserts)]);
          break;
        case 2:
          if (at < xml.size()) xml[at] = static_cast<char>(random() % 256);
          break;
        default:
          xml.resize(at);
          break;
      }
    }
    const Result fast = Fast(parser, xml);
    if (!fast.accepted) continue;
    ++accepted;
    const Result library = Library(xml);
    ASSERT_TRUE(library.accepted) << "fast parser accepted what xmlrpc-c refuses: " << xml;
    ASSERT_EQ(fast.request.command, library.request.command) << xml;
    ASSERT_EQ(fast.request.args, library.request.args) << xml;
  }
  // Some variants (e.g. whitespace between elements) stay valid and are read fast.
  EXPECT_GT(accepted, 100);
}

// Random well-formed calls: random params of every accepted type with contents full of
// entities, character references, newlines and multi-byte characters, and random
// whitespace between the elements. Nearly all are read fast, all as xmlrpc-c reads them.
TEST(FastCallParserTest, RandomWellFormedCallsAgreeWithXmlrpcC) {
  FastCallParser parser;
  std::mt19937 random(7);
  static constexpr const char* kPieces[] = {
      "a",      "Z",    "0",      " ",      "\t",       "\n",           "\r\n",  "\r",
      "&amp;",  "&lt;", "&gt;",   "&quot;", "&apos;",   "&#x0d;",       "&#13;", "&#10;",
      "&#x0a;", "\n\n", "&#x41;", "&#233;", "\xC3\xA9", "\xE2\x82\xAC", "]]",    "-->",
      "\"",     "'",    ":"};
  static constexpr const char* kSpaces[] = {"", "", "", " ", "\n", "\r\n", "\t", "  \n  "};
  auto space = [&] { return std::string(kSpaces[random() % std::size(kSpaces)]); };
  auto text = [&] {
    std::string out;
    const int n = static_cast<int>(random() % 8);
    for (int i = 0; i < n; ++i) out += kPieces[random() % std::size(kPieces)];
    return out;
  };
  int accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string xml = random() % 2 ? "<?xml version=\"1.0\"?>" : "";
    xml += space() + "<methodCall>" + space() + "<methodName>cmd_" + std::to_string(i % 7) +
           "</methodName>" + space();
    if (random() % 5 != 0) {
      xml += "<params>" + space();
      const int params = static_cast<int>(random() % 5);
      for (int p = 0; p < params; ++p) {
        xml += "<param>" + space() + "<value>";
        switch (random() % 5) {
          case 0:
            xml += text();
            break;
          case 1:
            xml += space() + "<string>" + text() + "</string>" + space();
            break;
          case 2: {
            const std::string tag = random() % 2 ? "i4" : "int";
            xml += space() + "<" + tag + ">" + std::to_string(static_cast<int32_t>(random())) +
                   "</" + tag + ">" + space();
            break;
          }
          case 3:
            xml += space() + "<boolean>" + std::to_string(random() % 2) + "</boolean>" + space();
            break;
          default:
            xml += "<string/>";
            break;
        }
        xml += "</value>" + space() + "</param>" + space();
      }
      xml += "</params>" + space();
    }
    xml += "</methodCall>" + space();
    const Result fast = Fast(parser, xml);
    const Result library = Library(xml);
    if (!fast.accepted) continue;
    ++accepted;
    ASSERT_TRUE(library.accepted) << "fast parser accepted what xmlrpc-c refuses: " << xml;
    ASSERT_EQ(fast.request.command, library.request.command) << xml;
    ASSERT_EQ(fast.request.args, library.request.args) << xml;
  }
  EXPECT_GT(accepted, 4000);
}

// The processor end to end: its Parse() (fast path first) gives the request or the
// answer that xmlrpc-c alone gives, for every document above.
TEST(FastCallParserTest, ProcessorParseMatchesTheLibraryPath) {
  mi::Registry registry;
  mi::Dispatcher dispatcher(registry);
  XmlrpcProcessor processor(dispatcher, {});
  std::vector<std::string> docs = CommonDocuments();
  for (const std::string& xml : OtherDocuments()) docs.push_back(xml);
  for (const std::string& xml : docs) {
    mi::Request request;
    std::string response;
    const XmlrpcProcessor::Parsed parsed = processor.Parse(xml, &request, &response);
    mi::Request library_request;
    if (CheckXmlShape(xml, kMaxElementDepth).empty() && LibraryParseCall(xml, &library_request)) {
      ASSERT_EQ(parsed, XmlrpcProcessor::Parsed::kCall) << xml;
      EXPECT_EQ(request.command, library_request.command) << xml;
      EXPECT_EQ(request.args, library_request.args) << xml;
      EXPECT_EQ(request.args_error, library_request.args_error) << xml;
    } else {
      EXPECT_EQ(parsed, XmlrpcProcessor::Parsed::kAnswered) << xml;
    }
  }
}

}  // namespace
}  // namespace sipd::xmlrpc
