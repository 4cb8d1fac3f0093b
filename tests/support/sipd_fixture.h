// A GoogleTest fixture base for integration suites whose tests each start their own real
// sipd (with modules loaded through extra_config) and talk to it over the gRPC MI:
//
//   class TmSipTest : public sipd::testing::SipdFixture {
//    protected:
//     TmSipTest() : SipdFixture("sipd-tm-sip", TmConfig, std::chrono::seconds(20)) {}
//   };
//   TEST_F(TmSipTest, Works) {
//     StartSipd();  // sipd_ with TmConfig(""), mi_ on its gRPC target
//     EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
//   }
//
// It owns the test's temp dir (temp_, work_ = its path; SetUp asserts it exists), the
// sipd (sipd_) and an MiClient on it (mi_). TearDown prints sipd's log when the test
// failed, then stops sipd. A suite whose SetUp() does more calls SipdFixture::SetUp()
// first and returns on HasFatalFailure(); one whose TearDown() must stop its own
// processes before sipd calls PrintLogOnFailure() and resets sipd_ itself.
//
// Header-only: it needs GoogleTest and the gRPC MiClient (tests/support/sip_support.h),
// which sipd_test_harness does not link.
//
// Thread-safety: as GoogleTest fixtures, for the test's main thread only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_until.h"

namespace sipd::testing {

class SipdFixture : public ::testing::Test {
 protected:
  // Builds sipd's extra_config from what a test passes to StartSipd().
  using ConfigBuilder = std::function<std::string(std::string_view extra)>;

  // `temp_prefix` names the temp dir; `config` (none: `extra` verbatim) builds the
  // extra_config; `stat_timeout` is WaitForStat's default timeout.
  SipdFixture(std::string_view temp_prefix, ConfigBuilder config,
              std::chrono::milliseconds stat_timeout)
      : temp_(temp_prefix), config_(std::move(config)), stat_timeout_(stat_timeout) {}

  void SetUp() override { ASSERT_TRUE(temp_.ok()); }
  void TearDown() override {
    PrintLogOnFailure();
    sipd_.reset();
  }

  // sipd's log on stderr when the test has failed so far.
  void PrintLogOnFailure() {
    if (HasFailure() && sipd_ != nullptr) {
      std::fprintf(stderr, "sipd log:\n%s\n", sipd_->log().c_str());
    }
  }

  // A new sipd with the config built from `extra`, started, and mi_ on it.
  void StartSipd(std::string_view extra = "") {
    sipd_ = std::make_unique<SipdInstance>(
        SipdInstance::Options{.extra_config = config_ ? config_(extra) : std::string(extra)});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    mi_ = std::make_unique<MiClient>(sipd_->grpc_target());
  }
  // Stop and start the same sipd (same config, run_dir and FIFO; new ports).
  void Restart() {
    ASSERT_TRUE(sipd_->Stop().ok()) << sipd_->log();
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    mi_ = std::make_unique<MiClient>(sipd_->grpc_target());
  }

  // The statistic whose key ends with ":" + name (get_statistics of `name`); 999999
  // if there is none.
  uint64_t Stat(const std::string& name) {
    for (const auto& [key, value] : mi_->Statistics({name})) {
      if (absl::EndsWith(key, ":" + name)) return value;
    }
    return 999999;
  }
  // Whether Stat(name) == value within `timeout` (the suite's default if none).
  bool WaitForStat(const std::string& name, uint64_t value) {
    return WaitForStat(name, value, stat_timeout_);
  }
  bool WaitForStat(const std::string& name, uint64_t value, std::chrono::milliseconds timeout) {
    return WaitUntil([&] { return Stat(name) == value; }, timeout);
  }
  // ul_add of a permanent contact sip:USER@127.0.0.1:PORT for `user` (asserts 200).
  void Register(const std::string& user, int port) {
    auto r =
        mi_->Execute("ul_add", {"location", user, absl::StrCat("sip:", user, "@127.0.0.1:", port),
                                "0", "1.00", "0", "0", "0", "4294967295"});
    ASSERT_EQ(r.code, 200u) << r.Status();
  }

  TempDir temp_;
  const std::string work_ = temp_.path();
  std::unique_ptr<SipdInstance> sipd_;
  std::unique_ptr<MiClient> mi_;

 private:
  ConfigBuilder config_;
  std::chrono::milliseconds stat_timeout_;
};

}  // namespace sipd::testing
