#include "registry/statistics.h"

#include <gtest/gtest.h>

#include <array>

#include "registry/dispatcher.h"
#include "registry/text_format.h"

namespace sipd::mi {
namespace {

class StatisticsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rcv_ = *stats_.AddCounter("core", "rcv_requests");
    fwd_ = *stats_.AddCounter("core", "fwd_requests");
    ASSERT_TRUE(stats_.AddFunction("core", "timestamp", [] { return uint64_t{42}; }).ok());
    active_ = *stats_.AddCounter("dialog", "active_dialogs", kStatNoReset);
    stats_.AddGroup("dynamic");
    ASSERT_TRUE(stats_.RegisterCommands(registry_).ok());
  }
  std::string Run(std::vector<std::string> args, const char* command = "get_statistics") {
    Request req{.command = command, .args = {}, .args_error = absl::OkStatus()};
    for (auto& a : args) req.args.push_back({"", a});
    return RenderText(Dispatcher(registry_).Run(req).reply, "\t", true);
  }

  std::array<std::atomic<uint64_t>, 8> storage_{};
  StatsRegistry stats_{storage_};
  Registry registry_;
  Counter rcv_, fwd_, active_;
};

TEST_F(StatisticsTest, AllGroupAndBareNameSelectors) {
  rcv_.Inc(1520);
  active_.Inc(3);
  EXPECT_EQ(Run({"all"}),
            "200 OK\ncore:rcv_requests:: 1520\ncore:fwd_requests:: 0\ncore:timestamp:: 42\n"
            "dialog:active_dialogs:: 3\n\n");
  EXPECT_EQ(Run({"CORE:"}),
            "200 OK\ncore:rcv_requests:: 1520\ncore:fwd_requests:: 0\ncore:timestamp:: 42\n\n");
  EXPECT_EQ(Run({"RCV_Requests", "active_dialogs", "rcv_requests"}),
            "200 OK\ncore:rcv_requests:: 1520\ndialog:active_dialogs:: 3\n"
            "core:rcv_requests:: 1520\n\n");
}

TEST_F(StatisticsTest, UnknownEmptyAndQualifiedNamesAreSkipped) {
  EXPECT_EQ(Run({"nosuch"}), "404 Statistics Not Found\n\n");
  EXPECT_EQ(Run({"dynamic:"}), "404 Statistics Not Found\n\n");
  EXPECT_EQ(Run({"core:rcv_requests"}), "404 Statistics Not Found\n\n");
  EXPECT_EQ(Run({"", ":", "fwd_requests"}), "200 OK\ncore:fwd_requests:: 0\n\n");
  EXPECT_EQ(Run({}), "400 Too few or too many arguments\n\n");
}

TEST_F(StatisticsTest, ResetHonoursFlags) {
  rcv_.Inc(5);
  active_.Inc(5);
  EXPECT_EQ(Run({"rcv_requests", "active_dialogs", "timestamp"}, "reset_statistics"), "200 OK\n\n");
  EXPECT_EQ(rcv_.value(), 0u);
  EXPECT_EQ(active_.value(), 5u);
  EXPECT_EQ(Run({"active_dialogs"}, "reset_statistics"), "200 OK\n\n");
  EXPECT_EQ(Run({"nosuch"}, "reset_statistics"), "404 Statistics Not Found\n\n");
  EXPECT_EQ(Run({}, "reset_statistics"), "400 Too few or too many arguments\n\n");
}

TEST_F(StatisticsTest, StorageExhaustionAndDuplicatesAreErrors) {
  EXPECT_EQ(stats_.AddCounter("core", "rcv_requests").status().code(),
            absl::StatusCode::kAlreadyExists);
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(stats_.AddCounter("x", std::string("s").append(std::to_string(i))).ok());
  EXPECT_EQ(stats_.AddCounter("x", "overflow").status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(StatisticsTest, ValueAndFindCounter) {
  fwd_.Inc(7);
  EXPECT_EQ(*stats_.Value("FWD_REQUESTS"), 7u);
  EXPECT_EQ(*stats_.Value("timestamp"), 42u);
  EXPECT_FALSE(stats_.Value("nosuch").ok());
  EXPECT_TRUE(stats_.FindCounter("fwd_requests").valid());
  EXPECT_FALSE(stats_.FindCounter("timestamp").valid());
}

}  // namespace
}  // namespace sipd::mi
