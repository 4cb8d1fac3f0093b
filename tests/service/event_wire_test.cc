// service/event_wire.h: the hand-built SubscribeResponse bytes parse back, with the
// generated code, as the message they stand for.
#include "service/event_wire.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "sipd/events/v1/events.pb.h"

namespace sipd::service {
namespace {

namespace eventsv1 = ::sipd::events::v1;
using google::protobuf::util::MessageDifferencer;
using google::protobuf::util::TimeUtil;
using Params = std::vector<std::pair<std::string_view, std::string_view>>;

eventsv1::Event Expected(const std::string& name, int64_t time_ns, const Params& params,
                         uint64_t seq) {
  eventsv1::Event event;
  event.set_name(name);
  *event.mutable_time() = TimeUtil::NanosecondsToTimestamp(time_ns);
  event.set_seq(seq);
  for (const auto& [key, value] : params) (*event.mutable_params())[std::string(key)] = value;
  return event;
}

TEST(EventWireTest, OneEventParsesBack) {
  const Params params = {{"aor", "alice@example.com"}};
  const int64_t time_ns = 1795000000123456789;
  const std::string body = EncodeEventBody("E_UL_AOR_INSERT", time_ns, params);
  const std::string bytes = EncodeSubscribeResponse({{body, 7}}, 0, 0);

  eventsv1::SubscribeResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));
  eventsv1::SubscribeResponse expected;
  *expected.add_events() = Expected("E_UL_AOR_INSERT", time_ns, params, 7);
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, expected)) << parsed.DebugString();
}

TEST(EventWireTest, AwkwardValuesSeqAbove32BitsAndCounters) {
  // LF, quotes, backslash, UTF-8, an empty value, a long value (length varint > 1 byte).
  const std::string long_value(300, 'x');
  const Params params = {{"aor", "line1\nline2 \"quoted\" back\\slash"},
                         {"uri", "sip:\xc3\xa9t\xc3\xa9@\xe4\xbe\x8b.jp"},
                         {"user_agent", ""},
                         {"received", long_value}};
  const uint64_t big_seq = (uint64_t{1} << 32) + 5;
  const uint64_t max_seq = UINT64_MAX;
  const std::string first = EncodeEventBody("E_UL_CONTACT_INSERT", 1, params);
  const std::string second = EncodeEventBody("E_UL_AOR_DELETE", 0, {{"aor", ""}});

  const std::string bytes =
      EncodeSubscribeResponse({{first, big_seq}, {second, max_seq}}, 3, (uint64_t{1} << 40));
  eventsv1::SubscribeResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(bytes));

  eventsv1::SubscribeResponse expected;
  *expected.add_events() = Expected("E_UL_CONTACT_INSERT", 1, params, big_seq);
  *expected.add_events() = Expected("E_UL_AOR_DELETE", 0, {{"aor", ""}}, max_seq);
  expected.set_dropped(3);
  expected.set_total_dropped(uint64_t{1} << 40);
  EXPECT_TRUE(MessageDifferencer::Equals(parsed, expected)) << parsed.DebugString();
  EXPECT_EQ(parsed.events(0).params().at("user_agent"), "");
  EXPECT_EQ(parsed.events(0).params().at("aor"), "line1\nline2 \"quoted\" back\\slash");
}

TEST(EventWireTest, OnlyCountersAndNegativeTime) {
  eventsv1::SubscribeResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(EncodeSubscribeResponse({}, 1, 1)));
  EXPECT_EQ(parsed.events_size(), 0);
  EXPECT_EQ(parsed.dropped(), 1u);
  EXPECT_EQ(parsed.total_dropped(), 1u);
  EXPECT_TRUE(EncodeSubscribeResponse({}, 0, 0).empty());

  const std::string body = EncodeEventBody("E", -1500000000, {});
  ASSERT_TRUE(parsed.ParseFromString(EncodeSubscribeResponse({{body, 1}}, 0, 0)));
  EXPECT_EQ(TimeUtil::TimestampToNanoseconds(parsed.events(0).time()), -1500000000);
  EXPECT_EQ(parsed.events(0).time().nanos(), 500000000);
}

TEST(EventWireTest, InvalidUtf8BecomesReplacementCharacter) {
  const std::string body = EncodeEventBody("E_UL_CONTACT_INSERT", 5, {{"user_agent", "ab\xff"}});
  eventsv1::SubscribeResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(EncodeSubscribeResponse({{body, 1}}, 0, 0)));
  EXPECT_EQ(parsed.events(0).params().at("user_agent"), "ab\xef\xbf\xbd");
}

}  // namespace
}  // namespace sipd::service
