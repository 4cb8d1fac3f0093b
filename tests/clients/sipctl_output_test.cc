// sipctl's renderers without a server.
#include <gtest/gtest.h>

#include "clients/sipctl/output.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace sipd::sipctl {
namespace {

mi::Reply SampleReply() {
  mi::Reply reply;
  reply.root.is_array = true;
  mi::Node& domain = reply.root.AddKid("Domain", "location");
  domain.AddAttribute("table", "512").AddAttribute("records", "1");
  domain.is_array = true;
  mi::Node& aor = domain.AddKid("AOR", "alice");
  aor.AddKid("Contact", "sip:alice@192.0.2.10").AddAttribute("Q", "");
  aor.AddKid("Cflags");
  reply.root.AddKid("", "nameless \"quoted\"\ttab\r\n\x01");
  return reply;
}

TEST(SipctlOutputTest, TextIsTheFifoLayoutWithoutTheFinalEmptyLine) {
  EXPECT_EQ(RenderReplyText(SampleReply()),
            "200 OK\n"
            "Domain:: location table=512 records=1\n"
            "\tAOR:: alice\n"
            "\t\tContact:: sip:alice@192.0.2.10 Q=\n"
            "\t\tCflags:: \n"
            "nameless \"quoted\"\ttab\r\n\x01\n");
}

TEST(SipctlOutputTest, JsonLayoutIsStable) {
  EXPECT_EQ(RenderReplyJson(SampleReply()),
            "{\"code\":200,\"reason\":\"OK\",\"nodes\":["
            "{\"name\":\"Domain\",\"value\":\"location\",\"attributes\":[{\"name\":\"table\","
            "\"value\":\"512\"},{\"name\":\"records\",\"value\":\"1\"}],\"kids\":["
            "{\"name\":\"AOR\",\"value\":\"alice\",\"kids\":["
            "{\"name\":\"Contact\",\"value\":\"sip:alice@192.0.2.10\",\"attributes\":[{\"name\":"
            "\"Q\"}]},{\"name\":\"Cflags\"}]}],\"is_array\":true},"
            "{\"value\":\"nameless \\\"quoted\\\"\\ttab\\r\\n\\u0001\"}],\"is_array\":true}\n");
  google::protobuf::Struct parsed;
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(RenderReplyJson(SampleReply()), &parsed).ok());
}

TEST(SipctlOutputTest, JsonStringEscapesAndRepairsUtf8) {
  EXPECT_EQ(JsonString("a\\b\"c"), "\"a\\\\b\\\"c\"");
  EXPECT_EQ(JsonString("caf\xC3\xA9"), "\"caf\xC3\xA9\"");
  EXPECT_EQ(JsonString("caf\xE9"), "\"caf\\ufffd\"");
  EXPECT_EQ(JsonString("\x7F"), "\"\\u007f\"");
}

TEST(SipctlOutputTest, StreamedNodeLine) {
  mi::v1::FlatNode node;
  node.set_depth(2);
  node.set_name("Expires");
  node.set_value("3581");
  EXPECT_EQ(RenderFlatNodeText(node), "\t\tExpires:: 3581\n");
}

TEST(SipctlOutputTest, CommandList) {
  mi::v1::ListCommandsResponse list;
  auto* ps = list.add_commands();
  ps->set_name("ps");
  ps->set_module("core");
  ps->set_no_input(true);
  auto* stats = list.add_commands();
  stats->set_name("get_statistics");
  stats->set_module("statistics");
  auto* param = stats->add_parameters();
  param->set_name("name");
  param->set_arity(mi::v1::ParameterInfo::REPEATED);
  EXPECT_EQ(RenderCommandListText(list), "ps\tcore\tno-input\nget_statistics\tstatistics\t-\n");
  google::protobuf::Struct parsed;
  const std::string json = "{\"list\":" + RenderCommandListJson(list) + "}";
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &parsed).ok()) << json;
}

}  // namespace
}  // namespace sipd::sipctl
