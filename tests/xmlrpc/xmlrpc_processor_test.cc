// mi_xmlrpc request mapping, reply rendering and faults (spec 5.3-5.5), golden where the
// spec shows bytes. No sockets: XmlrpcProcessor::Process() is methodCall in,
// methodResponse out.
#include "legacy-transports/xmlrpc/xmlrpc_processor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "tests/xmlrpc/test_commands.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::xmlrpc {
namespace {

using testing::CallOutcome;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::MethodCall;
using testing::ParseOutcome;

class ProcessorTest : public ::testing::Test {
 protected:
  ProcessorTest() { testing::RegisterTestCommands(registry_); }

  std::string Run(const std::string& xml, ReplyOption option = ReplyOption::kString) {
    XmlrpcProcessor::Options options;
    options.reply_option = option;
    mi::Dispatcher dispatcher(registry_);
    XmlrpcProcessor processor(dispatcher, options);
    return processor.Process(xml);
  }
  CallOutcome Call(const std::string& method, const xmlrpc_c::paramList& params = {},
                   ReplyOption option = ReplyOption::kString) {
    return ParseOutcome(Run(MethodCall(method, params), option));
  }
  CallOutcome CallXml(const std::string& xml) { return ParseOutcome(Run(xml)); }

  mi::Registry registry_;
};

constexpr char kXmlHead[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<methodResponse>\r\n";

TEST_F(ProcessorTest, GoldenUptimeStringReply) {
  // Spec 5.4: one <string>, node lines without indentation, no status line.
  EXPECT_EQ(Run(MethodCall("uptime")), std::string(kXmlHead) +
                                           "<params>\r\n"
                                           "<param><value><string>Now:: Tue Jun  3 16:22:20 2014\n"
                                           "Up since:: Tue Jun  3 16:00:00 2014\n"
                                           "Up time:: 1340 [sec]\n"
                                           "</string></value></param>\r\n"
                                           "</params>\r\n"
                                           "</methodResponse>\r\n");
}

TEST_F(ProcessorTest, GoldenUptimeArrayReply) {
  const std::string xml = Run(MethodCall("uptime"), ReplyOption::kArray);
  EXPECT_THAT(xml, HasSubstr("<value><string>Up time:: 1340 [sec]\n</string></value>"));
  EXPECT_THAT(ParseOutcome(xml).Strings(),
              ElementsAre("Now:: Tue Jun  3 16:22:20 2014\n",
                          "Up since:: Tue Jun  3 16:00:00 2014\n", "Up time:: 1340 [sec]\n"));
}

TEST_F(ProcessorTest, GoldenFaultDocument) {
  EXPECT_EQ(Run(MethodCall("nosuch")),
            std::string(kXmlHead) +
                "<fault>\r\n"
                "<value><struct>\r\n"
                "<member><name>faultCode</name>\r\n"
                "<value><i4>-506</i4></value></member>\r\n"
                "<member><name>faultString</name>\r\n"
                "<value><string>Requested command (nosuch) is not available!</string></value>"
                "</member>\r\n"
                "</struct></value>\r\n"
                "</fault>\r\n"
                "</methodResponse>\r\n");
}

TEST_F(ProcessorTest, TreeLosesDepthAndKeepsNodeLineFormat) {
  // Spec 2 node lines: `name:: value`, attributes ` n=v`, double space for a named
  // value-less node with attributes, `name:: ` for a named empty node, nameless value.
  EXPECT_EQ(Call("tree").String(),
            "Domain:: location table=512 records=1\n"
            "AOR:: alice\n"
            "Contact:: sip:alice@192.0.2.10:5060 Q=\n"
            "Expires:: 3581\n"
            "Cflags:: \n"
            "Process::  ID=0 PID=2831 Type=attendant\n"
            "0 Current=0 Total=0\n");
  EXPECT_THAT(
      Call("tree", {}, ReplyOption::kArray).Strings(),
      ElementsAre("Domain:: location table=512 records=1\n", "AOR:: alice\n",
                  "Contact:: sip:alice@192.0.2.10:5060 Q=\n", "Expires:: 3581\n", "Cflags:: \n",
                  "Process::  ID=0 PID=2831 Type=attendant\n", "0 Current=0 Total=0\n"));
}

TEST_F(ProcessorTest, FlushedReplyIsCompleteAndInOrder) {
  std::string expected;
  for (int i = 0; i < 120; ++i) absl::StrAppend(&expected, "Record:: ", i, "\nIndex:: ", i, "\n");
  EXPECT_EQ(Call("flusher").String(), expected);
  const std::vector<std::string> items = Call("flusher", {}, ReplyOption::kArray).Strings();
  ASSERT_EQ(items.size(), 240u);
  EXPECT_EQ(items[0], "Record:: 0\n");
  EXPECT_EQ(items[239], "Index:: 119\n");
}

TEST_F(ProcessorTest, ArrayModeBuildsAFreshArrayPerRequest) {
  XmlrpcProcessor::Options options;
  options.reply_option = ReplyOption::kArray;
  mi::Dispatcher dispatcher(registry_);
  XmlrpcProcessor processor(dispatcher, options);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ParseOutcome(processor.Process(MethodCall("flusher"))).Strings().size(), 240u);
  }
}

TEST_F(ProcessorTest, EmptyTreeIsEmptyStringOrEmptyArray) {
  EXPECT_EQ(Call("empty").String(), "");
  EXPECT_TRUE(Call("empty", {}, ReplyOption::kArray).Strings().empty());
}

TEST_F(ProcessorTest, Non200SuccessCodeIsStillSuccess) {
  EXPECT_EQ(Call("accepted").String(), "Queued:: yes\n");
}

TEST_F(ProcessorTest, UnsafeBytesAreMadeXmlSafe) {
  const std::string xml = Run(MethodCall("unsafe"));
  // CR is carried as a character reference, markup as entities (xmlrpc-c).
  EXPECT_THAT(xml, HasSubstr("Markup:: &lt;x&gt;&amp;amp;&#x0d;\nnext\n"));
  // (xmlrpc-c's own reader turns CR into LF, so the CR is checked in the XML above.)
  EXPECT_EQ(ParseOutcome(xml).String(),
            "Ctl:: a\x7F"
            "b\x7F"
            "c\td\n"
            "Markup:: <x>&amp;\nnext\n"
            "Bytes:: caf\xEF\xBF\xBD \xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD end\n");
}

TEST_F(ProcessorTest, ParamTypesMapToMiArguments) {
  xmlrpc_c::paramList params;
  params.add(xmlrpc_c::value_string("text"));
  params.add(xmlrpc_c::value_int(-42));
  params.add(xmlrpc_c::value_boolean(true));
  params.add(xmlrpc_c::value_boolean(false));
  params.add(xmlrpc_c::value_double(1.5));
  params.add(xmlrpc_c::value_bytestring(std::vector<unsigned char>{'r', 'a', 'w', 0x01}));
  EXPECT_EQ(Call("echo", params).String(), "text\n-42\n1\n0\n1.500000\nraw\x7F\n");
}

TEST_F(ProcessorTest, UntypedValueIsAString) {
  const CallOutcome outcome = CallXml(
      "<?xml version=\"1.0\"?><methodCall><methodName>echo</methodName><params>"
      "<param><value>plain</value></param></params></methodCall>");
  EXPECT_EQ(outcome.String(), "plain\n");
}

TEST_F(ProcessorTest, DoubleNewlineBecomesCrLfInStringArguments) {
  // The 1.11 hack (spec 5.3): every "\n\n" pair -> "\r\n"; CRLF arrives as LF.
  const std::string xml =
      Run("<?xml version=\"1.0\"?><methodCall><methodName>echo</methodName><params>"
          "<param><value><string>A: 1\n\nB: 2\n\n\nC\r\nD</string></value></param>"
          "</params></methodCall>");
  EXPECT_THAT(xml, HasSubstr("<string>A: 1&#x0d;\nB: 2&#x0d;\n\nC\nD\n</string>"));
  EXPECT_EQ(RewriteDoubleNewlines("\n\n\n\n"), "\r\n\r\n");
  EXPECT_EQ(RewriteDoubleNewlines("a\nb"), "a\nb");
}

TEST_F(ProcessorTest, UnsupportedParamTypesAreFault501) {
  struct Case {
    const char* value_xml;
    int type;
  } cases[] = {
      {"<dateTime.iso8601>20140603T16:22:20</dateTime.iso8601>", 3},
      {"<array><data><value><i4>1</i4></value></data></array>", 6},
      {"<struct><member><name>a</name><value><i4>1</i4></value></member></struct>", 7},
      {"<nil/>", 9},
      {"<i8>5</i8>", 10},
  };
  for (const Case& c : cases) {
    const CallOutcome outcome =
        CallXml(absl::StrCat("<?xml version=\"1.0\"?><methodCall><methodName>echo</methodName>"
                             "<params><param><value>",
                             c.value_xml, "</value></param></params></methodCall>"));
    ASSERT_TRUE(outcome.is_fault) << c.value_xml;
    EXPECT_EQ(outcome.fault_code, -501);
    EXPECT_EQ(outcome.fault_string,
              absl::StrCat("Unsupported value of type ", c.type, " supplied"));
  }
}

TEST_F(ProcessorTest, NoInputCommandIgnoresParamsEvenUnsupportedOnes) {
  xmlrpc_c::paramList params;
  params.add(xmlrpc_c::value_string("x"));
  params.add(xmlrpc_c::value_nil());
  EXPECT_EQ(Call("no_input", params).String(), "Args:: 0\n");
}

TEST_F(ProcessorTest, Faults) {
  CallOutcome outcome = Call("nosuch");
  EXPECT_EQ(outcome.fault_code, -506);
  EXPECT_EQ(outcome.fault_string, "Requested command (nosuch) is not available!");

  outcome = Call("fail");
  EXPECT_EQ(outcome.fault_code, -500);
  EXPECT_EQ(outcome.fault_string, "Command (fail) processing failed.\n");

  outcome = Call("not_found");
  EXPECT_EQ(outcome.fault_code, 404);
  EXPECT_EQ(outcome.fault_string, "AOR has no contacts");

  outcome = Call("no_reason");
  EXPECT_EQ(outcome.fault_code, 481);
  EXPECT_EQ(outcome.fault_string, "Error");

  outcome = Call("throws");
  EXPECT_EQ(outcome.fault_code, 500);
  EXPECT_EQ(outcome.fault_string, "Server Internal Error");

  outcome = Call("one_arg");
  EXPECT_EQ(outcome.fault_code, 400);
  EXPECT_EQ(outcome.fault_string, "Too few or too many arguments");

  // Commands are case-sensitive.
  EXPECT_EQ(Call("UPTIME").fault_code, -506);
}

TEST_F(ProcessorTest, IntrospectionIsAnsweredByTheLibrary) {
  const CallOutcome outcome = Call("system.listMethods");
  ASSERT_FALSE(outcome.is_fault);
  std::vector<std::string> methods = outcome.Strings();
  EXPECT_THAT(methods, ::testing::Contains("system.multicall"));
  EXPECT_THAT(methods, ::testing::Not(::testing::Contains("uptime")));
}

TEST_F(ProcessorTest, MalformedXmlIsParseFault) {
  for (const char* xml : {"", "not xml at all", "<methodCall><methodName>uptime</methodName>",
                          "<?xml version=\"1.0\"?><methodCall></methodCall>",
                          "<?xml version=\"1.0\"?><methodResponse><params/></methodResponse>"}) {
    const CallOutcome outcome = CallXml(xml);
    EXPECT_TRUE(outcome.is_fault) << xml;
    EXPECT_EQ(outcome.fault_code, -503) << xml;
  }
}

TEST_F(ProcessorTest, EntityExpansionBombIsRejectedBeforeParsing) {
  std::string bomb = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n";
  for (int i = 1; i <= 9; ++i) {
    absl::StrAppend(&bomb, " <!ENTITY lol", i, " \"");
    for (int k = 0; k < 10; ++k) {
      absl::StrAppend(&bomb, "&lol", i == 1 ? std::string() : std::to_string(i - 1), ";");
    }
    bomb += "\">\n";
  }
  bomb +=
      "]>\n<methodCall><methodName>echo</methodName><params><param><value><string>"
      "&lol9;</string></value></param></params></methodCall>";
  const CallOutcome outcome = CallXml(bomb);
  EXPECT_EQ(outcome.fault_code, -503);
  EXPECT_THAT(outcome.fault_string, HasSubstr("DOCTYPE"));
}

TEST_F(ProcessorTest, DeepNestingIsRejected) {
  // 10k nested arrays: beyond both our element-depth guard and xmlrpc-c's value limit.
  std::string xml =
      "<?xml version=\"1.0\"?><methodCall><methodName>echo</methodName><params>"
      "<param><value>";
  for (int i = 0; i < 10000; ++i) xml += "<array><data><value>";
  xml += "<i4>1</i4>";
  for (int i = 0; i < 10000; ++i) xml += "</value></data></array>";
  xml += "</value></param></params></methodCall>";
  CallOutcome outcome = CallXml(xml);
  EXPECT_EQ(outcome.fault_code, -503);
  EXPECT_THAT(outcome.fault_string, HasSubstr("nested deeper"));

  // 70 levels pass the element guard but not the library's value nesting limit (64).
  xml =
      "<?xml version=\"1.0\"?><methodCall><methodName>echo</methodName><params>"
      "<param><value>";
  for (int i = 0; i < 70; ++i) xml += "<array><data><value>";
  xml += "<i4>1</i4>";
  for (int i = 0; i < 70; ++i) xml += "</value></data></array>";
  xml += "</value></param></params></methodCall>";
  outcome = CallXml(xml);
  EXPECT_EQ(outcome.fault_code, -503);
  EXPECT_THAT(outcome.fault_string, HasSubstr("too deep"));
}

TEST(CheckXmlShapeTest, CountsOnlyRealElements) {
  EXPECT_EQ(CheckXmlShape("<a><b/><c x='>'>text</c><!-- <d><d><d> --><![CDATA[<e><e>]]></a>", 2),
            "");
  EXPECT_NE(CheckXmlShape("<a><b><c/></b></a>", 1), "");
  EXPECT_NE(CheckXmlShape("<!DOCTYPE x><a/>", 10), "");
  EXPECT_EQ(CheckXmlShape("<?xml version=\"1.0\"?><a/>", 1), "");
}

TEST(SanitizeForXmlTest, ReplacesControlBytesAndInvalidUtf8) {
  EXPECT_EQ(SanitizeForXml(std::string("a\0b", 3)),
            "a\x7F"
            "b");
  EXPECT_EQ(SanitizeForXml("tab\tlf\ncr\r"), "tab\tlf\ncr\r");
  EXPECT_EQ(SanitizeForXml("\xE2\x82\xAC \xF0\x9F\x98\x80"), "\xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(SanitizeForXml("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(SanitizeForXml("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(SanitizeForXml("\xE2\x82"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // truncated
}

// Successful replies are serialised by hand (xmlrpc_processor.h); they must stay byte for
// byte what xmlrpc-c writes for the same value.
std::string LibraryResponse(const xmlrpc_c::value& value) {
  std::string xml;
  xmlrpc_c::xml::generateResponse(xmlrpc_c::rpcOutcome(value), &xml);
  return xml;
}

TEST(XmlSerialiserTest, StringContentMatchesXmlrpcC) {
  std::mt19937 random(20141111);
  for (int i = 0; i < 3000; ++i) {
    std::string raw(random() % 40, '\0');
    for (char& c : raw) {
      // Mostly the interesting bytes, sometimes anything.
      static constexpr char kInteresting[] = "<>&\r\n\t\"' ]a\x7F\xC3\xA9";
      c = random() % 4 == 0 ? static_cast<char>(random() % 256)
                            : kInteresting[random() % (sizeof(kInteresting) - 1)];
    }
    const std::string text = SanitizeForXml(raw);
    std::string ours;
    AppendXmlStringContent(text, &ours);
    const std::string expected =
        LibraryResponse(xmlrpc_c::value_string(text, xmlrpc_c::value_string::nlCode_lf));
    ASSERT_EQ(absl::StrCat(kXmlHead, "<params>\r\n<param><value><string>", ours,
                           "</string></value></param>\r\n</params>\r\n</methodResponse>\r\n"),
              expected)
        << i;
  }
}

TEST_F(ProcessorTest, RepliesMatchXmlrpcCSerialiser) {
  const xmlrpc_c::paramList params = [] {
    xmlrpc_c::paramList list;
    list.add(xmlrpc_c::value_string("<x>&amp;"));
    list.add(xmlrpc_c::value_string("caf\xC3\xA9 ]]>"));
    return list;
  }();
  EXPECT_EQ(Run(MethodCall("echo", params)),
            LibraryResponse(xmlrpc_c::value_string("<x>&amp;\ncaf\xC3\xA9 ]]>\n")));
  EXPECT_EQ(Run(MethodCall("echo", params), ReplyOption::kArray),
            LibraryResponse(xmlrpc_c::value_array({xmlrpc_c::value_string("<x>&amp;\n"),
                                                   xmlrpc_c::value_string("caf\xC3\xA9 ]]>\n")})));
  EXPECT_EQ(Run(MethodCall("empty"), ReplyOption::kArray),
            LibraryResponse(xmlrpc_c::value_array(std::vector<xmlrpc_c::value>{})));
  EXPECT_EQ(Run(MethodCall("empty")), LibraryResponse(xmlrpc_c::value_string("")));
}

}  // namespace
}  // namespace sipd::xmlrpc
