// The flush algorithm of spec 1.7 and its FIFO rendering (spec 3.6).
#include <gtest/gtest.h>

#include <cstdio>

#include "absl/strings/str_replace.h"
#include "registry/dispatcher.h"
#include "registry/text_format.h"

namespace sipd::mi {
namespace {

// A request as a transport that parsed its arguments passes it (args_error OK).
Request Req(std::string command, std::vector<Argument> args = {}) {
  return {.command = std::move(command), .args = std::move(args), .args_error = absl::OkStatus()};
}

class TextWriter : public ReplyWriter {
 public:
  void WriteStatus(const Reply& reply) override { AppendStatusLine(out, reply.code, reply.reason); }
  void WriteNode(const Node& node, int depth) override { AppendNodeLine(out, node, depth, "\t"); }
  void EndFlush() override {
    out += "\n";
    ++flushes;
  }
  void EndReply() override { out += "\n"; }
  std::string out;
  int flushes = 0;
};

std::string AorName(int i) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "a%03d", i);
  return buf;
}

// Emulates usrloc's ul_dump: Domain marked not completed, a flush every 50 AORs,
// `records` added only after the domain is done.
Registry DumpRegistry(int aors, int domains) {
  Registry registry;
  absl::Status s = registry.Register(
      {.name = "dump",
       .module = "test",
       .flags = kNoInput | kStreaming,
       .handler = [aors, domains](Call& call) {
         call.reply().root.is_array = true;
         call.StreamWith(
             MakeProducer([aors, domains, d = 0, i = 1, domain = static_cast<Node*>(nullptr)](
                              Call& call) mutable -> absl::StatusOr<bool> {
               for (; d < domains; ++d, i = 1, domain = nullptr) {
                 if (domain == nullptr) {
                   domain = &call.reply().root.AddKid("Domain", d == 0 ? "location" : "aliases");
                   domain->not_completed = true;
                   domain->AddAttribute("table", "512");
                 }
                 while (i <= aors) {
                   domain->AddKid("AOR", AorName(i));
                   if (i++ % 50 == 0) return false;  // flush point
                 }
                 domain->AddAttribute("records", std::to_string(aors));
               }
               return true;
             }));
         return absl::OkStatus();
       }});
  EXPECT_TRUE(s.ok());
  return registry;
}

TEST(FlushTest, FifoLayoutOf120AorDumpMatchesSpec36) {
  Registry registry = DumpRegistry(120, 1);
  TextWriter w;
  DispatchResult r = Dispatcher(registry).Run(Req("dump"), &w);
  ASSERT_EQ(r.outcome, Outcome::kReply);
  std::string expected = "200 OK\nDomain:: location table=512\n";
  for (int i = 1; i <= 120; ++i) {
    expected += "\tAOR:: " + AorName(i) + "\n";
    if (i == 50 || i == 100) expected += "\n";
  }
  expected += "\n";
  EXPECT_EQ(w.out, expected);
  EXPECT_EQ(w.flushes, 2);
}

TEST(FlushTest, FlushDetachesWrittenNodesSoTheTreeStaysSmall) {
  Registry registry;
  size_t max_kids_seen = 0;
  ASSERT_TRUE(
      registry
          .Register({.name = "big",
                     .module = "test",
                     .flags = kNoInput | kStreaming,
                     .handler =
                         [&max_kids_seen](Call& call) {
                           call.StreamWith(MakeProducer(
                               [&max_kids_seen, i = 0](Call& call) mutable -> absl::StatusOr<bool> {
                                 while (i < 10000) {
                                   call.reply().root.AddKid("n", std::to_string(i));
                                   max_kids_seen =
                                       std::max(max_kids_seen, call.reply().root.kids.size());
                                   if (i++ % 50 == 49) return false;
                                 }
                                 return true;
                               }));
                           return absl::OkStatus();
                         }})
          .ok());
  TextWriter w;
  Dispatcher(registry).Run(Req("big"), &w);
  EXPECT_LE(max_kids_seen, 50u);
  EXPECT_NE(w.out.find("n:: 9999\n"), std::string::npos);
}

TEST(FlushTest, SecondDomainOnlyInFinalWriteWithItsRecords) {
  Registry registry = DumpRegistry(10, 2);
  TextWriter w;
  Dispatcher(registry).Run(Req("dump"), &w);
  // No flush happened (10 < 50): both domains are complete in the final write.
  EXPECT_NE(w.out.find("Domain:: location table=512 records=10\n"), std::string::npos);
  EXPECT_NE(w.out.find("Domain:: aliases table=512 records=10\n"), std::string::npos);
}

// Delivery::kTree (gRPC Execute) returns the whole tree, and it is the tree a streaming
// transport shows: the first Domain line went out with the first flush, before
// `records` was added, so `records` is lost on every transport alike (spec 1.7).
TEST(FlushTest, WithoutWriterTheWholeTreeIsWhatAStreamShows) {
  Registry registry = DumpRegistry(120, 2);
  DispatchResult r = Dispatcher(registry).Run(Req("dump"));
  ASSERT_EQ(r.reply.root.kids.size(), 2u);
  EXPECT_EQ(r.reply.root.kids[0]->kids.size(), 120u);
  EXPECT_EQ(r.reply.root.kids[0]->attributes, (std::vector<Attribute>{{"table", "512"}}));
  // The second domain is only written at the end: it keeps `records`.
  EXPECT_EQ(r.reply.root.kids[1]->attributes,
            (std::vector<Attribute>{{"table", "512"}, {"records", "120"}}));

  TextWriter w;
  Dispatcher(registry).Run(Req("dump"), &w);
  std::string from_tree = "200 OK\n";
  for (const auto& domain : r.reply.root.kids) {
    from_tree += "Domain:: " + domain->value;
    for (const auto& a : domain->attributes) from_tree += " " + a.name + "=" + a.value;
    from_tree += "\n";
    for (const auto& aor : domain->kids) from_tree += "\tAOR:: " + aor->value + "\n";
  }
  // The same text once the flush marks (empty lines) are taken out.
  std::string streamed = w.out;
  while (absl::StrReplaceAll({{"\n\n", "\n"}}, &streamed) > 0) {
  }
  EXPECT_EQ(streamed, from_tree);
}

}  // namespace
}  // namespace sipd::mi
