// Prepared-statement helpers shared by the stores that persist state in SQLite (usrloc's
// SqliteStore, dialog's DialogStore) and by StatementCache (group_commit.h): preparing
// with the project's error text, binding without copies, stepping through rows and
// reading columns without copies.
//
// Thread-safety: none of their own; a statement belongs to its connection's user.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sipd::sqlite {

struct StatementFinalizer {
  void operator()(sqlite3_stmt* stmt) const;
};
// A prepared statement owned by its holder: finalized when it goes (finalize it before
// closing the connection).
using Statement = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

// Prepares (the first statement of) `sql` on `db`. On error: Unavailable
// "prepare <sql>: <SQLite's message>"; sqlite3_errmsg(db) still tells the error, for a
// caller that words it its own way.
absl::StatusOr<Statement> Prepare(sqlite3* db, std::string_view sql);

// Bind parameter `index` (1-based) without copying: the statement must run (or be
// rebound) before the bytes die. SQLite's result code.
int BindText(sqlite3_stmt* stmt, int index, std::string_view text);
int BindBlob(sqlite3_stmt* stmt, int index, std::string_view bytes);
int BindInt(sqlite3_stmt* stmt, int index, int64_t value);

// Column `column` (0-based) of the current row, empty for NULL; valid until the next
// step, reset or finalize of `stmt`.
std::string_view ColumnText(sqlite3_stmt* stmt, int column);
std::string_view ColumnBlob(sqlite3_stmt* stmt, int column);

// Steps `stmt` until it has no more rows, calling `row` for each one. Returns the last
// sqlite3_step() result: SQLITE_DONE when every row was read, else the error code.
int StepRows(sqlite3_stmt* stmt, absl::FunctionRef<void(sqlite3_stmt*)> row);

// Runs a statement that returns no rows and resets it (so it keeps no lock). True when
// it ran to SQLITE_DONE; on false, sqlite3_errmsg() of its connection tells why.
bool StepDone(sqlite3_stmt* stmt);

}  // namespace sipd::sqlite
