#include "registry/proto_convert.h"

#include <gtest/gtest.h>

#include "registry/text_format.h"

namespace sipd::mi {
namespace {

Reply SampleReply() {
  Reply r = Reply::Error(404, "AOR not found");
  r.root.is_array = true;
  Node& d = r.root.AddKid("Domain", "location");
  d.is_array = true;
  d.AddAttribute("table", "512").AddAttribute("records", "");
  Node& aor = d.AddKid("AOR", "alice");
  aor.AddKid("Contact", "sip:alice@192.0.2.10\r\nmulti-line").AddAttribute("Q", "");
  aor.AddKid("", "nameless");
  r.root.AddKid("", std::string("bin\0ary", 7));
  return r;
}

TEST(ProtoConvertTest, ReplyRoundTrip) {
  Reply r = SampleReply();
  v1::Reply p = ToProto(r);
  EXPECT_EQ(p.code(), 404u);
  EXPECT_EQ(p.nodes_size(), 2);
  EXPECT_TRUE(p.is_array());
  Reply back = FromProto(p);
  EXPECT_TRUE(back == r);
  // Also through the wire bytes.
  v1::Reply parsed;
  ASSERT_TRUE(parsed.ParseFromString(p.SerializeAsString()));
  EXPECT_TRUE(FromProto(parsed) == r);
}

TEST(ProtoConvertTest, RequestParamsComeBeforeNamedArgs) {
  v1::ExecuteRequest req;
  req.set_command("get_statistics");
  req.add_params("core:");
  auto* a = req.add_args();
  a->set_name("n");
  a->set_value("v");
  Request r = FromProto(req);
  EXPECT_EQ(r.command, "get_statistics");
  ASSERT_EQ(r.args.size(), 2u);
  EXPECT_EQ(r.args[0], (Argument{"", "core:"}));
  EXPECT_EQ(r.args[1], (Argument{"n", "v"}));
  Request again = FromProto(ToProto(r));
  EXPECT_EQ(again.args, r.args);
}

TEST(ProtoConvertTest, CommandInfoMirrorsTheDeclaration) {
  Command c({.name = "ul_dump",
             .module = "usrloc",
             .params = {{"brief", ParamSpec::Arity::kOptional, "only AORs"}},
             .flags = kStreaming,
             .handler = [](Call&) { return absl::OkStatus(); }});
  v1::CommandInfo info = ToProto(c);
  EXPECT_EQ(info.name(), "ul_dump");
  EXPECT_EQ(info.module(), "usrloc");
  ASSERT_EQ(info.parameters_size(), 1);
  EXPECT_EQ(info.parameters(0).arity(), v1::ParameterInfo::OPTIONAL);
  EXPECT_TRUE(info.streaming());
  EXPECT_FALSE(info.no_input());
}

// Streams a reply line by line into chunks (as ExecuteStream does) and reassembles it.
TEST(ProtoConvertTest, FlatChunksReassembleToTheSameTree) {
  Reply r = SampleReply();
  std::vector<v1::ReplyChunk> chunks(1);
  chunks[0].set_has_status(true);
  chunks[0].set_code(r.code);
  chunks[0].set_reason(r.reason);
  chunks[0].set_is_array(r.root.is_array);
  int line = 0;
  std::function<void(const Node&, int)> walk = [&](const Node& parent, int depth) {
    for (const auto& kid : parent.kids) {
      if (++line % 2 == 0) chunks.emplace_back();  // split across chunks
      ToFlatNode(*kid, depth, chunks.back().add_nodes());
      walk(*kid, depth + 1);
    }
  };
  walk(r.root, 0);
  ChunkAssembler assembler;
  for (const auto& c : chunks) ASSERT_TRUE(assembler.Add(c).ok());
  EXPECT_TRUE(assembler.Take() == r);
}

TEST(ProtoConvertTest, InconsistentChunksAreRejected) {
  v1::ReplyChunk no_status;
  no_status.add_nodes()->set_name("x");
  EXPECT_FALSE(ChunkAssembler().Add(no_status).ok());

  v1::ReplyChunk skip;
  skip.set_has_status(true);
  skip.set_code(200);
  skip.add_nodes()->set_depth(1);
  EXPECT_FALSE(ChunkAssembler().Add(skip).ok());
}

}  // namespace
}  // namespace sipd::mi
