// The Go stub client (tests/go/typed_client_test.go, built offline into GO_TEST_BINARY by
// tests/go/CMakeLists.txt) against a real sipd.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/support/stub_client_run.h"

namespace {

TEST(GoClientTest, TypedServicesFromGeneratedGoStubs) {
  sipd::testing::RunStubClientAgainstSipd(absl::StrCat("'", GO_TEST_BINARY, "' -test.v"),
                                          "--- SKIP");
}

}  // namespace
