#include "registry/tree.h"

#include <gtest/gtest.h>

#include "registry/text_format.h"

namespace sipd::mi {
namespace {

TEST(TreeTest, AddKidReferencesStayValidWhileSiblingsAreAdded) {
  Reply reply;
  Node& first = reply.root.AddKid("Domain", "location");
  for (int i = 0; i < 1000; ++i) reply.root.AddKid("x", std::to_string(i));
  first.AddKid("AOR", "alice");
  ASSERT_EQ(reply.root.kids[0]->kids.size(), 1u);
  EXPECT_EQ(reply.root.kids[0]->kids[0]->value, "alice");
}

TEST(TreeTest, EqualityIgnoresFlushStateButNotContent) {
  Node a("n", "v");
  a.AddAttribute("k", "1");
  Node b("n", "v");
  b.AddAttribute("k", "1");
  b.written = true;
  b.not_completed = true;
  EXPECT_TRUE(a == b);
  b.AddKid("kid");
  EXPECT_FALSE(a == b);
  Node c("n", "v");
  c.AddAttribute("k", "2");
  EXPECT_FALSE(a == c);
}

TEST(TreeTest, CloneIsDeep) {
  Reply r = Reply::Error(404, "AOR not found");
  r.root.AddKid("a", "1").AddKid("b", "2").AddAttribute("x", "y");
  Reply copy = r.Clone();
  EXPECT_TRUE(copy == r);
  copy.root.kids[0]->kids[0]->value = "changed";
  EXPECT_FALSE(copy == r);
}

TEST(TextFormatTest, NodeLineLayoutMatchesSpecSection2) {
  struct Case {
    const char* name;
    const char* value;
    std::vector<Attribute> attrs;
    int depth;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"Process",
       "",
       {{"ID", "0"}, {"PID", "2831"}, {"Type", "attendant"}},
       0,
       "Process::  ID=0 PID=2831 Type=attendant\n"},
      {"CALLEES", "", {}, 0, "CALLEES:: \n"},
      {"", "0", {{"Current", "0"}, {"Total", "0"}}, 0, "0 Current=0 Total=0\n"},
      {"Contact",
       "sip:alice@192.0.2.10:5060",
       {{"Q", ""}},
       2,
       "\t\tContact:: sip:alice@192.0.2.10:5060 Q=\n"},
      {"Cflags", "", {}, 3, "\t\t\tCflags:: \n"},
      {"", "Value not found", {}, 0, "Value not found\n"},
      {"Up time", "1340 [sec]", {}, 0, "Up time:: 1340 [sec]\n"},
  };
  for (const auto& c : cases) {
    Node n(c.name, c.value);
    n.attributes = c.attrs;
    std::string out;
    AppendNodeLine(out, n, c.depth, "\t");
    EXPECT_EQ(out, c.expected) << c.name;
  }
}

TEST(TextFormatTest, RenderTextWholeReply) {
  Reply r;
  Node& d = r.root.AddKid("Domain", "location");
  d.AddAttribute("table", "512").AddAttribute("records", "1");
  Node& aor = d.AddKid("AOR", "alice");
  aor.AddKid("Contact", "sip:alice@192.0.2.10:5060").AddAttribute("Q", "");
  EXPECT_EQ(RenderText(r, "\t", true),
            "200 OK\nDomain:: location table=512 records=1\n\tAOR:: alice\n"
            "\t\tContact:: sip:alice@192.0.2.10:5060 Q=\n\n");
  EXPECT_EQ(RenderText(r, "", false),
            "200 OK\nDomain:: location table=512 records=1\nAOR:: alice\n"
            "Contact:: sip:alice@192.0.2.10:5060 Q=\n");
}

TEST(TextFormatTest, StatusLineWithoutReasonKeepsTrailingSpace) {
  std::string out;
  AppendStatusLine(out, 200, "");
  EXPECT_EQ(out, "200 \n");
}

}  // namespace
}  // namespace sipd::mi

namespace sipd::mi {
namespace {

TEST(TextFormatTest, TruncatedReasonsOnlyOnTextTransports) {
  Reply r = Reply::ErrorTruncatedOnText(404, "AOR has no contacts", 1);
  EXPECT_EQ(r.reason, "AOR has no contacts");
  EXPECT_EQ(r.text_reason(), "AOR has no contact");
  EXPECT_EQ(RenderText(r, "\t", true), "404 AOR has no contact\n\n");
  EXPECT_EQ(r.Clone().text_reason(), "AOR has no contact");
  EXPECT_EQ(Reply::ErrorTruncatedOnText(400, "ab", 5).text_reason(), "");
  EXPECT_EQ(Reply::Error(404, "AOR not found").text_reason(), "AOR not found");
}

}  // namespace
}  // namespace sipd::mi
