// Spec 3.2 argument-line rules, one case per rule and example.
#include "legacy-transports/text/argument_parser.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace sipd::legacy {
namespace {

using mi::Argument;
using ::testing::ElementsAre;

std::vector<Argument> ParseOk(std::string_view text, size_t limit = kFifoMaxArgumentBytes) {
  ArgumentParser parser(limit);
  std::vector<Argument> args;
  absl::Status status = parser.ParseAll(text, &args);
  EXPECT_TRUE(status.ok()) << status << " for '" << text << "'";
  return args;
}

absl::Status ParseError(std::string_view text, size_t limit = kFifoMaxArgumentBytes) {
  ArgumentParser parser(limit);
  std::vector<Argument> args;
  return parser.ParseAll(text, &args);
}

TEST(ArgumentParserTest, PositionalValuesAreTrimmed) {
  EXPECT_THAT(ParseOk("core:\ntm:\n"), ElementsAre(Argument{"", "core:"}, Argument{"", "tm:"}));
  EXPECT_THAT(ParseOk("  location \t\r\nalice@example.com\n"),
              ElementsAre(Argument{"", "location"}, Argument{"", "alice@example.com"}));
}

TEST(ArgumentParserTest, BlankLinesAreSkipped) {
  EXPECT_THAT(ParseOk("a\n  \n\t\r\nb"), ElementsAre(Argument{"", "a"}, Argument{"", "b"}));
}

TEST(ArgumentParserTest, NameValue) {
  EXPECT_THAT(ParseOk("name::value\n"), ElementsAre(Argument{"name", "value"}));
  EXPECT_THAT(ParseOk("name \t::  value  \r\n"), ElementsAre(Argument{"name", "value"}));
  EXPECT_THAT(ParseOk("name::\n"), ElementsAre(Argument{"name", ""}));
  // Only the first `::` separates.
  EXPECT_THAT(ParseOk("a::b::c\n"), ElementsAre(Argument{"a", "b::c"}));
}

TEST(ArgumentParserTest, EmptyNameWithValue) {
  EXPECT_THAT(ParseOk(":: value\n"), ElementsAre(Argument{"", "value"}));
}

TEST(ArgumentParserTest, UnquotedIpv6IsSplitAtTheColons) {
  // Spec 3.2 rule 5: `sip:[::1]` unquoted is name `sip:[`, value `1]`.
  EXPECT_THAT(ParseOk("sip:[::1]\n"), ElementsAre(Argument{"sip:[", "1]"}));
  EXPECT_THAT(ParseOk("\"sip:[::1]\"\n"), ElementsAre(Argument{"", "sip:[::1]"}));
}

TEST(ArgumentParserTest, QuotedValues) {
  EXPECT_THAT(ParseOk("\"a b  c\"\n"), ElementsAre(Argument{"", "a b  c"}));
  EXPECT_THAT(ParseOk("  \"x\"  \t\r\n"), ElementsAre(Argument{"", "x"}));
  EXPECT_THAT(ParseOk("n::\"v::w\"\n"), ElementsAre(Argument{"n", "v::w"}));
  EXPECT_THAT(ParseOk("n::\"\"\n"), ElementsAre(Argument{"n", ""}));
}

TEST(ArgumentParserTest, EscapedQuote) {
  EXPECT_THAT(ParseOk(R"("say \"hi\" now")"
                      "\n"),
              ElementsAre(Argument{"", R"(say "hi" now)"}));
  // Any other backslash stays literally.
  EXPECT_THAT(ParseOk(R"("a\nb\\c")"
                      "\n"),
              ElementsAre(Argument{"", R"(a\nb\\c)"}));
  // Unlike 1.11, a value may start with an escaped quote.
  EXPECT_THAT(ParseOk(R"("\"x")"
                      "\n"),
              ElementsAre(Argument{"", "\"x"}));
}

TEST(ArgumentParserTest, MultiLineQuotedHeaderBlock) {
  // The t_uac_dlg example of spec 3.2.
  const std::string text =
      "OPTIONS\n"
      "sip:bob@example.com\n"
      ".\n"
      ".\n"
      "\"From: <sip:mi@example.com>;tag=a1\r\n"
      "To: <sip:bob@example.com>\r\n"
      "\"\n";
  EXPECT_THAT(ParseOk(text),
              ElementsAre(Argument{"", "OPTIONS"}, Argument{"", "sip:bob@example.com"},
                          Argument{"", "."}, Argument{"", "."},
                          Argument{"",
                                   "From: <sip:mi@example.com>;tag=a1\r\n"
                                   "To: <sip:bob@example.com>\r\n"}));
}

TEST(ArgumentParserTest, MultiLineKeepsLfAndLeadingBlanks) {
  EXPECT_THAT(ParseOk("\"line1\n  line2\"\n"), ElementsAre(Argument{"", "line1\n  line2"}));
  // A lone CRLF inside a quoted value is data.
  EXPECT_THAT(ParseOk("\"a\r\n\r\nb\"\n"), ElementsAre(Argument{"", "a\r\n\r\nb"}));
}

TEST(ArgumentParserTest, Errors) {
  EXPECT_FALSE(ParseError("\"\"\n").ok()) << "empty quoted value: neither name nor value";
  EXPECT_FALSE(ParseError(":: \"\"\n").ok());
  EXPECT_FALSE(ParseError("::\n").ok());
  EXPECT_FALSE(ParseError("a\"b\n").ok()) << "quote inside an unquoted value";
  EXPECT_FALSE(ParseError("n\"x::v\n").ok()) << "quote inside a name";
  EXPECT_FALSE(ParseError("n::v\"\n").ok());
  EXPECT_FALSE(ParseError("\"abc\" d\n").ok()) << "text after the closing quote";
  EXPECT_FALSE(ParseError("\"abc\n").ok()) << "unterminated";
  EXPECT_FALSE(ParseError("\"abc\n\ndef\"\n").ok()) << "empty line inside a quoted value";
}

TEST(ArgumentParserTest, ByteLimit) {
  EXPECT_TRUE(ParseError(std::string(8191, 'a') + "\n").ok());
  EXPECT_FALSE(ParseError(std::string(8192, 'a') + "\n").ok());
  EXPECT_FALSE(ParseError(std::string(5000, 'a') + "\n" + std::string(5000, 'b') + "\n").ok());
}

TEST(ArgumentParserTest, LineByLineFeeding) {
  ArgumentParser parser(kFifoMaxArgumentBytes);
  std::vector<Argument> args;
  parser.Begin(&args);
  ASSERT_TRUE(parser.FeedLine("\"first\r\n").ok());
  EXPECT_TRUE(parser.in_quoted_value());
  ASSERT_TRUE(parser.FeedLine("second\"\r\n").ok());
  EXPECT_FALSE(parser.in_quoted_value());
  ASSERT_TRUE(parser.Finish().ok());
  EXPECT_THAT(args, ElementsAre(Argument{"", "first\r\nsecond"}));
  // The vector is reused by the next request.
  parser.Begin(&args);
  EXPECT_TRUE(args.empty());
}

}  // namespace
}  // namespace sipd::legacy
