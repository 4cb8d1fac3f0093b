// A private temporary directory for one test: created by the constructor, removed with
// everything in it by the destructor (after the fixture's TearDown, so processes the
// test started can be stopped first). Header-only: unit tests use it without linking
// the harness library (and so without depending on the sipd binary).
//
//   sipd::testing::TempDir dir("sipd-daemon-test");
//   ASSERT_TRUE(dir.ok());
//   WriteFile(dir.path() + "/sipd.cfg", ...);
//
// Thread-safety: one owner; path() may be read from any thread.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace sipd::testing {

class TempDir {
 public:
  // mkdtemp("/tmp/<prefix>-XXXXXX"): mode 0700. On failure path() is empty and ok() false.
  explicit TempDir(std::string_view prefix = "sipd-test") {
    std::string pattern = "/tmp/" + std::string(prefix) + "-XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) path_ = std::move(pattern);
  }
  ~TempDir() {
    std::error_code ignored;
    if (ok()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace sipd::testing
