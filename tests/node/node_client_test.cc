// The Node stub client (tests/node/typed_client.test.mjs: @grpc/grpc-js, @grpc/proto-loader)
// against a real sipd.
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/support/stub_client_run.h"

namespace {

TEST(NodeClientTest, TypedServicesFromGrpcJs) {
  sipd::testing::RunStubClientAgainstSipd(
      absl::StrCat("SIPD_PROTO_DIR='", SIPD_PROTO_DIR, "' '", NODE_BINARY, "' --test '",
                   NODE_TEST_FILE, "'"),
      "# skipped 1");
}

}  // namespace
