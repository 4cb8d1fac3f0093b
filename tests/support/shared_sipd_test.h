// A GoogleTest fixture base for suites whose tests share one sipd (default options,
// mi_grpc loaded), started once before the suite's first test and stopped after its
// last:
//
//   class MyTest : public sipd::testing::SharedSipdTest<MyTest> {};
//   TEST_F(MyTest, Works) { ... sipd_->grpc_target() ... }
//
// `Suite` (the derived fixture) gives each suite its own instance. A suite whose SetUp()
// does more calls SharedSipdTest::SetUp() first and returns on HasFatalFailure().
//
// Header-only: it needs GoogleTest, which sipd_test_harness does not link.
//
// Thread-safety: as GoogleTest fixtures, for the test's main thread only.
#pragma once

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {

template <typename Suite>
class SharedSipdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sipd_ = new SipdInstance();
    const absl::Status status = sipd_->Start();
    ASSERT_TRUE(status.ok()) << status;
  }
  static void TearDownTestSuite() {
    delete sipd_;
    sipd_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(sipd_, nullptr); }

  static inline SipdInstance* sipd_ = nullptr;
};

}  // namespace sipd::testing
