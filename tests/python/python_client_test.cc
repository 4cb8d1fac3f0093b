// Runs the Python client's tests (tests/python/test_sipd_mi_grpc.py) and the typed-stub
// tests (test_typed_stubs.py) against a real sipd
// (mi_grpc and mi_selftest loaded) started by the C++ harness, so that the Python side needs no
// config knowledge and no process outlives the test: the harness stops sipd (whole process group)
// in teardown, and the Python interpreter is a child that is waited for.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/support/sipd_harness.h"

namespace {

TEST(PythonClientTest, UnittestsPassAgainstRealSipd) {
  // mi_grpc on a free port; mi_selftest for the async commands of the Session tests;
  // usrloc for the typed LocationService.
  sipd::testing::SipdInstance sipd(sipd::testing::SipdInstance::Options{
      .extra_config = "loadmodule \"mi_selftest\"\nloadmodule \"usrloc\"\n"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const std::string command =
      absl::StrCat("cd '", SIPD_PYTHON_TEST_DIR, "' && SIPD_MI_TARGET='", sipd.grpc_target(),
                   "' SIPD_MI_STUBS_DIR='", SIPD_MI_PYTHON_GEN_DIR, "' PYTHONPATH='",
                   SIPD_MI_PYTHON_DIR, "' PYTHONDONTWRITEBYTECODE=1 ", SIPD_PYTHON,
                   " -m unittest -v test_sipd_mi_grpc test_typed_stubs 2>&1 < /dev/null");
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), pipe)) > 0) output.append(chunk, n);
  const int status = pclose(pipe);
  std::fputs(output.c_str(), stdout);  // the unittest -v report, for the CTest log
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 0) << output << "\n--- sipd log ---\n" << sipd.log();
  // The run must not have skipped everything (SIPD_MI_TARGET reached Python).
  EXPECT_EQ(output.find("skipped"), std::string::npos) << output;
  EXPECT_TRUE(sipd.Stop().ok()) << sipd.log();
}

}  // namespace
