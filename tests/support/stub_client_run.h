// Runs a stub client written in another language (tests/go, tests/node) against a real
// sipd (mi_grpc, usrloc) started by the harness, so the client needs no configuration
// and no process outlives the test: sipd's whole process group is stopped in teardown
// and the client is a child that is waited for. The client's output goes to the test log.
//
// Header-only (GoogleTest, which sipd_test_harness does not link).
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {

// Runs `command` (a shell command line) with SIPD_GRPC_TARGET set to the sipd's mi_grpc
// address in front, and expects exit status 0 and no `not_expected` text (e.g. the
// client's "skipped" marker, which would mean the target did not reach it).
inline void RunStubClientAgainstSipd(const std::string& command, const std::string& not_expected) {
  SipdInstance sipd(SipdInstance::Options{.extra_config = "loadmodule \"usrloc\"\n"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const std::string line =
      absl::StrCat("SIPD_GRPC_TARGET='", sipd.grpc_target(), "' ", command, " 2>&1 < /dev/null");
  std::string output;
  FILE* pipe = popen(line.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, n);
  const int status = pclose(pipe);
  std::fputs(output.c_str(), stdout);  // the client's own report, for the CTest log
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output << "\n--- sipd log ---\n" << sipd.log();
  EXPECT_EQ(output.find(not_expected), std::string::npos) << output;
  EXPECT_TRUE(sipd.Stop().ok()) << sipd.log();
}

}  // namespace sipd::testing
