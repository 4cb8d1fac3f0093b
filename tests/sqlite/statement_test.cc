// The prepared-statement helpers (sipd/modules/sqlite/statement.h) on an in-memory
// database: the prepare error text, binding and reading back text, blobs and integers
// (NULL reads as empty), stepping through rows and a failing step.
#include "sipd/modules/sqlite/statement.h"

#include <sqlite3.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/modules/sqlite/group_commit.h"

namespace sipd::sqlite {
namespace {

class StatementTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(sqlite3_open(":memory:", &db_), SQLITE_OK);
    ASSERT_TRUE(Exec(db_, "CREATE TABLE t (k INTEGER PRIMARY KEY, s TEXT, b BLOB)").ok());
  }
  void TearDown() override { sqlite3_close(db_); }
  sqlite3* db_ = nullptr;
};

TEST_F(StatementTest, PrepareErrorNamesTheStatementAndSqlitesMessage) {
  absl::StatusOr<Statement> s = Prepare(db_, "SELECT nope FROM missing");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(s.status().message(), "prepare SELECT nope FROM missing: no such table: missing");
}

TEST_F(StatementTest, BindsStepsAndReadsRowsBack) {
  absl::StatusOr<Statement> insert = Prepare(db_, "INSERT INTO t (k, s, b) VALUES (?1, ?2, ?3)");
  ASSERT_TRUE(insert.ok()) << insert.status();
  const std::string blob("a\0b", 3);
  ASSERT_EQ(BindInt(insert->get(), 1, int64_t{1} << 40), SQLITE_OK);
  ASSERT_EQ(BindText(insert->get(), 2, "text"), SQLITE_OK);
  ASSERT_EQ(BindBlob(insert->get(), 3, blob), SQLITE_OK);
  EXPECT_TRUE(StepDone(insert->get()));
  // StepDone reset the statement: it runs again with new bindings.
  ASSERT_EQ(BindInt(insert->get(), 1, 2), SQLITE_OK);
  ASSERT_EQ(sqlite3_bind_null(insert->get(), 2), SQLITE_OK);
  ASSERT_EQ(sqlite3_bind_null(insert->get(), 3), SQLITE_OK);
  EXPECT_TRUE(StepDone(insert->get()));
  // A duplicate key fails, and the connection tells why.
  EXPECT_FALSE(StepDone(insert->get()));
  EXPECT_THAT(sqlite3_errmsg(db_), ::testing::HasSubstr("UNIQUE"));

  absl::StatusOr<Statement> select = Prepare(db_, "SELECT k, s, b FROM t ORDER BY k");
  ASSERT_TRUE(select.ok()) << select.status();
  std::vector<std::string> rows;
  const int rc = StepRows(select->get(), [&](sqlite3_stmt* s) {
    rows.push_back(std::to_string(sqlite3_column_int64(s, 0)) + "|" +
                   std::string(ColumnText(s, 1)) + "|" + std::string(ColumnBlob(s, 2)));
  });
  EXPECT_EQ(rc, SQLITE_DONE);
  EXPECT_THAT(rows,
              ::testing::ElementsAre("2||", std::to_string(int64_t{1} << 40) + "|text|" + blob));
}

}  // namespace
}  // namespace sipd::sqlite
