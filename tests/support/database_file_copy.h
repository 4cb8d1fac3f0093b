// A copy of an SQLite database file alone, without its WAL: what checkpoints have copied
// into the file so far (a reader of the copy sees nothing that is still only in the WAL).
// The copy, and the -wal/-shm files SQLite makes beside it, go with the object.
// Header-only, for unit tests.
//
//   sipd::testing::DatabaseFileCopy alone(dir + "/usrloc.sqlite", dir + "/alone.sqlite");
//   ... open alone.path() and read it ...
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

namespace sipd::testing {

class DatabaseFileCopy {
 public:
  DatabaseFileCopy(const std::string& database, std::string copy) : path_(std::move(copy)) {
    std::filesystem::copy_file(database, path_, std::filesystem::copy_options::overwrite_existing);
    Remove(path_ + "-wal");
  }
  ~DatabaseFileCopy() {
    for (const char* suffix : {"", "-wal", "-shm"}) Remove(path_ + suffix);
  }
  DatabaseFileCopy(const DatabaseFileCopy&) = delete;
  DatabaseFileCopy& operator=(const DatabaseFileCopy&) = delete;

  const std::string& path() const { return path_; }

 private:
  static void Remove(const std::string& path) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  std::string path_;
};

}  // namespace sipd::testing
