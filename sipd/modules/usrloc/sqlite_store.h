// Persistence of usrloc tables in an embedded SQLite database (db_mode 1 and 2).
//
// Schema (one database file for all usrloc tables):
//   usrloc_aor(table_name, aor, version, contacts)   -- one row per AOR: the newest
//                                                       version written and its contacts
//                                                       (a JSON array of arrays)
//   usrloc_contact                                   -- a view: one row per contact,
//                                                       the columns of older versions
// An AOR is always written whole ("snapshot"): its row is replaced by the snapshot's in
// one statement, unless the stored version is newer. That makes writes
// from different processes commute: whatever order two processes commit their snapshots
// of one AOR in, the database ends with the newest one. A version row stays after its
// AOR is emptied so a late, older snapshot cannot resurrect it; empty rows are pruned at
// start-up, when no other writer runs.
//
// Durability: WAL journal. synchronous=NORMAL (default) syncs the WAL only at
// checkpoints: a committed transaction survives the death of any sipd process (kill -9),
// but an OS crash or power loss may roll back the last transactions. synchronous=FULL
// fsyncs on every commit and survives those too, at a cost per commit.
//
// In sipd the store does not own its connection: usrloc's writes go through the
// group-commit writer (sipd/modules/sqlite/group_commit.h), which batches the changes of
// every process into shared transactions and lends its connection (Borrow()) to the
// row-level calls (WriteRow inside the writer's transaction; Load, Prune, MaxVersion
// and DeleteAorsExcept under its commit lock). Open() makes a store that owns its
// connection (tools, tests).
//
// Thread/process-safety: one SqliteStore per process (never carried across fork: open it
// after the fork). Owning stores serialise their write transactions on a robust mutex
// in shared memory (`writer_lock`), so SQLite's own busy waiting is only a fallback for
// outside writers (busy_timeout).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/core/shm.h"
#include "sipd/modules/sqlite/statement.h"
#include "sipd/modules/usrloc/contact.h"

struct sqlite3;
struct sqlite3_stmt;

namespace sipd::usrloc {

class SqliteStore {
 public:
  enum class Synchronous { kNormal, kFull };

  struct Options {
    std::string path;
    Synchronous synchronous = Synchronous::kNormal;
    int busy_timeout_ms = 5000;
    // Process-shared lock serialising writers (may be nullptr: then only SQLite's locking).
    RobustMutex* writer_lock = nullptr;
  };

  // Opens (creating if needed) the database and its schema.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const Options& options);
  // A store on a connection owned by someone else (the group-commit writer), which must
  // outlive it; the schema must exist (CreateSchema()). Write() then runs without the
  // writer lock; prefer WriteRows() inside the owner's transaction.
  static std::unique_ptr<SqliteStore> Borrow(sqlite3* db, std::string path);
  // Creates the table and view if needed and packs the usrloc_contact table written by
  // an older sipd into usrloc_aor.contacts, keeping its rows. REQUIRES: inside a write
  // transaction on `db`. Cheap when the tables are current (one read of the schema).
  static absl::Status CreateSchema(sqlite3* db);
  ~SqliteStore();
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Writes the snapshots of `table` in one transaction. A snapshot is skipped when the
  // stored version of its AOR is newer, or equal unless `force` (ul_sync rewrites rows
  // that claim to be current). An empty snapshot deletes the AOR's contacts.
  absl::Status Write(std::string_view table, std::span<const AorSnapshot> snapshots,
                     bool force = false);
  // The rows of Write(), inside a transaction the caller opened.
  absl::Status WriteRows(std::string_view table, std::span<const AorSnapshot> snapshots,
                         bool force = false);
  // One AOR's row as WriteRows() writes it, with its contacts already encoded by
  // EncodeContacts() (so that a caller can encode them before taking a commit lock).
  absl::Status WriteRow(std::string_view table, std::string_view aor, uint64_t version,
                        std::string_view contacts, bool force = false);
  // The `contacts` column's text for `contacts`: a JSON array of one array per contact.
  static std::string EncodeContacts(std::span<const ContactInfo> contacts);

  // What Load() skipped as unreadable (a row edited by hand, say), also logged: rows
  // with no readable contact (not JSON, or no array in it), and elements of JSON rows
  // that are not contacts (not arrays). The AOR's next write replaces such a row.
  struct Skipped {
    int64_t rows = 0;
    int64_t elements = 0;
  };
  // Every AOR of `table` that has contacts, with the contacts in stored q order.
  // Contact states are not meaningful here.
  absl::StatusOr<std::vector<AorSnapshot>> Load(std::string_view table, Skipped* skipped = nullptr);

  // Highest version stored (0 for an empty database).
  absl::StatusOr<uint64_t> MaxVersion();

  // Start-up housekeeping (no concurrent writers): deletes contacts that expired at or
  // before `now` and version rows of AORs without contacts.
  absl::Status Prune(int64_t now);

  // For a full-table sync: deletes the contacts of every AOR of `table` that is not in
  // `keep` and whose stored version is <= `max_version` (newer ones were written
  // meanwhile by others and are left alone).
  absl::Status DeleteAorsExcept(std::string_view table,
                                const absl::flat_hash_set<std::string>& keep, uint64_t max_version);

  // Takes and releases the write lock (BEGIN IMMEDIATE; ROLLBACK): fails when the file
  // is gone, locked by an outside writer past busy_timeout, or not a database. Writes
  // nothing (so a full disk only shows in real writes).
  absl::Status CheckWritable();

  const std::string& path() const { return path_; }

 private:
  SqliteStore(sqlite3* db, std::string path, RobustMutex* writer_lock, bool owns)
      : db_(db), path_(std::move(path)), writer_lock_(writer_lock), owns_(owns) {}
  absl::Status Exec(const char* sql);
  absl::StatusOr<sqlite::Statement> Prepare(const char* sql);
  absl::Status Error(std::string_view what) const;
  // Runs `body` inside BEGIN IMMEDIATE ... COMMIT under the writer lock.
  template <typename Body>
  absl::Status InTransaction(Body body);

  sqlite3* db_;
  std::string path_;
  RobustMutex* writer_lock_;
  bool owns_;
  sqlite::Statement upsert_aor_;
};

}  // namespace sipd::usrloc
