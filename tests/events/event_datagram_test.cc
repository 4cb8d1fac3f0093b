// event_datagram's payload, byte for byte against the 1.11 format
// (modules/event_datagram/event_datagram.c, datagram_build_params), and its address
// parsers (datagram_parse: udp HOST:PORT, unix PATH).
#include "sipd/modules/event_datagram/event_datagram.h"

#include <gtest/gtest.h>

namespace sipd::event_datagram {
namespace {

using mi::Event;
using mi::EventValue;

// What 1.11 writes, spelled out by its rules: name LF; per parameter `name::` then the
// value (a string containing LF in quotes, each quote escaped with a backslash; an int
// through int2str(unsigned long)) then LF; a final LF.
TEST(EventDatagramPayloadTest, AorInsertAs111) {
  const Event event(4, {.name = "E_UL_AOR_INSERT", .params = {{"aor", ""}}});
  EXPECT_EQ(EncodePayload(event, {EventValue("alice")}), "E_UL_AOR_INSERT\naor::alice\n\n");
}

TEST(EventDatagramPayloadTest, QuotingEscapingEmptyAndIntegersAs111) {
  const Event event(0, {.name = "E_X",
                        .params = {{"plain", ""},
                                   {"quote", ""},
                                   {"multi", ""},
                                   {"both", ""},
                                   {"empty", ""},
                                   {"number", ""},
                                   {"negative", ""},
                                   {"spaces", ""}}});
  const std::string payload = EncodePayload(
      event, {EventValue("sip:a@b;x=y"), EventValue("say \"hi\""), EventValue("line1\nline2"),
              EventValue("a\"b\n\"c\""), EventValue(std::string()), EventValue(int64_t{3600}),
              EventValue(int64_t{-1}), EventValue("Linphone/3.6 (belle-sip)")});
  EXPECT_EQ(payload,
            "E_X\n"
            "plain::sip:a@b;x=y\n"
            "quote::say \"hi\"\n"            // no LF: written as it is
            "multi::\"line1\nline2\"\n"      // LF: quoted
            "both::\"a\\\"b\n\\\"c\\\"\"\n"  // quoted, every quote escaped
            "empty::\n"                      // empty string: nothing
            "number::3600\n"
            "negative::18446744073709551615\n"  // int2str((unsigned long)-1)
            "spaces::Linphone/3.6 (belle-sip)\n"
            "\n");
}

TEST(EventDatagramPayloadTest, NoParametersAndNamelessExtras) {
  const Event bare(1, {.name = "E_BARE"});
  EXPECT_EQ(EncodePayload(bare, {}), "E_BARE\n\n");
  // 1.11 writes a parameter without a name as its value alone.
  EXPECT_EQ(EncodePayload(bare, {EventValue("x"), EventValue(int64_t{2})}), "E_BARE\nx\n2\n\n");
  const Event one(2, {.name = "E_ONE", .params = {{"a", ""}, {"b", ""}}});
  EXPECT_EQ(EncodePayload(one, {EventValue("x")}), "E_ONE\na::x\n\n");
}

TEST(EventDatagramAddressTest, UdpAs111) {
  // Names come from the hosts file; the name server is a closed port, so a name it would
  // have to answer fails at once and nothing leaves the host.
  tm::HostResolver resolver({.servers = "127.0.0.1:1"}, [] { return int64_t{0}; });
  auto parse = [&](std::string_view address) { return ParseUdpAddress(address, &resolver); };
  EXPECT_EQ(*parse("127.0.0.1:8888"), "127.0.0.1:8888");
  EXPECT_EQ(*parse("127.0.0.1:08888"), "127.0.0.1:8888");  // printed as a number
  EXPECT_EQ(*parse("localhost:9"), "localhost:9");         // the text as given
  EXPECT_EQ(*parse("[::1]:5000"), "[::1]:5000");           // sipd's extension
  for (const char* bad :
       {"", "127.0.0.1", ":8888", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
        "127.0.0.1:123456", "127.0.0.1:88a", "127.0.0.1:-1", "no-such-host.invalid:5", "[::1]",
        "[::1]5000", "[nonsense]:5", "::1:5000"}) {
    EXPECT_FALSE(parse(bad).ok()) << bad;
  }
}

TEST(EventDatagramAddressTest, WithoutAResolverOnlyNumericHostsAreTaken) {
  EXPECT_EQ(*ParseUdpAddress("127.0.0.1:9", nullptr), "127.0.0.1:9");
  EXPECT_EQ(*ParseUdpAddress("[::1]:9", nullptr), "[::1]:9");
  absl::StatusOr<std::string> named = ParseUdpAddress("localhost:9", nullptr);
  ASSERT_FALSE(named.ok());
  EXPECT_EQ(named.status().message(), "cannot resolve host localhost: not an IPv4 address");
}

TEST(EventDatagramAddressTest, UnixAs111) {
  EXPECT_EQ(*ParseUnixAddress("/tmp/listener.sock"), "/tmp/listener.sock");
  EXPECT_EQ(*ParseUnixAddress("relative/path"), "relative/path");
  EXPECT_EQ(*ParseUnixAddress("/does/not/exist"), "/does/not/exist");  // checked when sending
  EXPECT_FALSE(ParseUnixAddress("").ok());
  EXPECT_FALSE(ParseUnixAddress(std::string(108, 'a')).ok());  // sun_path holds 107 + NUL
  EXPECT_TRUE(ParseUnixAddress(std::string(107, 'a')).ok());
  EXPECT_FALSE(ParseUnixAddress(std::string("a\0b", 3)).ok());
}

}  // namespace
}  // namespace sipd::event_datagram
