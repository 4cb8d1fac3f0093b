#include "sipd/modules/usrloc/sqlite_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"
#include "sipd/modules/sqlite/group_commit.h"
#include "sipd/modules/sqlite/statement.h"
#include "spdlog/spdlog.h"

namespace sipd::usrloc {
namespace {

// usrloc_contact's columns; the table is keyed by its primary key alone (WITHOUT ROWID):
// one B-tree per write instead of a rowid table plus the key's index.
#define SIPD_USRLOC_CONTACT_COLUMNS                                                      \
  "  table_name TEXT NOT NULL,\n  aor TEXT NOT NULL,\n  contact TEXT NOT NULL,\n"        \
  "  position INTEGER NOT NULL,\n  expires INTEGER NOT NULL,\n  q INTEGER NOT NULL,\n"   \
  "  callid TEXT NOT NULL,\n  cseq INTEGER NOT NULL,\n  flags INTEGER NOT NULL,\n"       \
  "  cflags INTEGER NOT NULL,\n  user_agent TEXT NOT NULL,\n  received TEXT NOT NULL,\n" \
  "  path TEXT NOT NULL,\n  socket TEXT NOT NULL,\n  methods INTEGER NOT NULL,\n"        \
  "  sip_instance TEXT NOT NULL,\n  attr TEXT NOT NULL,\n"                               \
  "  last_modified INTEGER NOT NULL,\n  PRIMARY KEY (table_name, aor, contact)\n"

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS usrloc_aor (\n"
    "  table_name TEXT NOT NULL,\n  aor TEXT NOT NULL,\n  version INTEGER NOT NULL,\n"
    "  PRIMARY KEY (table_name, aor)\n) WITHOUT ROWID;\n"
    "CREATE TABLE IF NOT EXISTS usrloc_contact (\n" SIPD_USRLOC_CONTACT_COLUMNS
    ") WITHOUT ROWID;\n";

// Databases written before usrloc_contact became WITHOUT ROWID: the same columns and key
// in a rowid table. Rebuilt once, inside the caller's write transaction.
constexpr const char* kMigrateContactTable =
    "CREATE TABLE usrloc_contact_rebuilt (\n" SIPD_USRLOC_CONTACT_COLUMNS
    ") WITHOUT ROWID;\n"
    "INSERT INTO usrloc_contact_rebuilt (table_name, aor, contact, position, expires, q, "
    "callid, cseq, flags, cflags, user_agent, received, path, socket, methods, sip_instance, "
    "attr, last_modified) SELECT table_name, aor, contact, position, expires, q, callid, cseq, "
    "flags, cflags, user_agent, received, path, socket, methods, sip_instance, attr, "
    "last_modified FROM usrloc_contact;\n"
    "DROP TABLE usrloc_contact;\n"
    "ALTER TABLE usrloc_contact_rebuilt RENAME TO usrloc_contact;\n";
#undef SIPD_USRLOC_CONTACT_COLUMNS

using sqlite::BindInt;
using sqlite::BindText;
using sqlite::ColumnText;

class WriterGuard {
 public:
  explicit WriterGuard(RobustMutex* mutex) : mutex_(mutex) {
    if (mutex_ != nullptr && mutex_->Lock()) {
      spdlog::warn("usrloc: a process died while writing the database (SQLite rolled it back)");
    }
  }
  ~WriterGuard() {
    if (mutex_ != nullptr) mutex_->Unlock();
  }
  WriterGuard(const WriterGuard&) = delete;
  WriterGuard& operator=(const WriterGuard&) = delete;

 private:
  RobustMutex* mutex_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const Options& options) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(options.path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::UnavailableError(
        absl::StrCat("cannot open usrloc database ", options.path, ": ", message));
  }
  auto store = std::unique_ptr<SqliteStore>(
      new SqliteStore(db, options.path, options.writer_lock, /*owns=*/true));
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  absl::Status s = store->Exec("PRAGMA journal_mode=WAL");
  if (s.ok()) {
    s = store->Exec(options.synchronous == Synchronous::kFull ? "PRAGMA synchronous=FULL"
                                                              : "PRAGMA synchronous=NORMAL");
  }
  if (s.ok()) {
    s = store->InTransaction([&] { return CreateSchema(db); });
  }
  if (!s.ok()) return s;
  return store;
}

std::unique_ptr<SqliteStore> SqliteStore::Borrow(sqlite3* db, std::string path) {
  return std::unique_ptr<SqliteStore>(
      new SqliteStore(db, std::move(path), /*writer_lock=*/nullptr, /*owns=*/false));
}

absl::Status SqliteStore::CreateSchema(sqlite3* db) {
  SIPD_RETURN_IF_ERROR(sqlite::Exec(db, kSchema));
  absl::StatusOr<sqlite::Statement> layout =
      sqlite::Prepare(db,
                      "SELECT count(*) FROM sqlite_master WHERE type='table' AND "
                      "name='usrloc_contact' AND sql NOT LIKE '%WITHOUT ROWID%'");
  if (!layout.ok()) return layout.status();
  bool rowid_table = false;
  const int rc = sqlite::StepRows(
      layout->get(), [&](sqlite3_stmt* row) { rowid_table = sqlite3_column_int(row, 0) > 0; });
  if (rc != SQLITE_DONE) {
    return absl::UnavailableError(
        absl::StrCat("usrloc database: cannot read the schema: ", sqlite3_errmsg(db)));
  }
  if (!rowid_table) return absl::OkStatus();
  spdlog::info("usrloc: rebuilding usrloc_contact as a WITHOUT ROWID table (once)");
  return sqlite::Exec(db, kMigrateContactTable);
}

SqliteStore::~SqliteStore() {
  // Finalized before the connection closes (sqlite3_close refuses while any is left).
  for (sqlite::Statement* stmt : {&upsert_version_, &delete_contacts_, &insert_contact_}) {
    stmt->reset();
  }
  if (owns_) sqlite3_close(db_);
}

absl::Status SqliteStore::Error(std::string_view what) const {
  return absl::UnavailableError(absl::StrCat("usrloc database ", path_, ": ",
                                             absl::string_view(what.data(), what.size()), ": ",
                                             sqlite3_errmsg(db_)));
}

absl::Status SqliteStore::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error != nullptr ? error : "unknown error";
    sqlite3_free(error);
    return absl::UnavailableError(
        absl::StrCat("usrloc database ", path_, ": ", message, " (in: ", sql, ")"));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::CheckWritable() {
  WriterGuard guard(writer_lock_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  return Exec("ROLLBACK");
}

absl::StatusOr<sqlite::Statement> SqliteStore::Prepare(const char* sql) {
  absl::StatusOr<sqlite::Statement> stmt = sqlite::Prepare(db_, sql);
  if (!stmt.ok()) return Error(absl::StrCat("prepare ", sql));
  return stmt;
}

template <typename Body>
absl::Status SqliteStore::InTransaction(Body body) {
  WriterGuard guard(writer_lock_);
  absl::Status s = Exec("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  s = body();
  if (s.ok()) s = Exec("COMMIT");
  if (!s.ok()) {
    char* error = nullptr;
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, &error);
    sqlite3_free(error);
  }
  return s;
}

absl::Status SqliteStore::Write(std::string_view table, std::span<const AorSnapshot> snapshots,
                                bool force) {
  if (snapshots.empty()) return absl::OkStatus();
  return InTransaction([&]() { return WriteRows(table, snapshots, force); });
}

absl::Status SqliteStore::WriteRows(std::string_view table, std::span<const AorSnapshot> snapshots,
                                    bool force) {
  if (snapshots.empty()) return absl::OkStatus();
  // Prepared once per connection; a failed prepare is retried on the next call.
  const std::pair<sqlite::Statement*, const char*> statements[] = {
      // Writes the version and reports a change only when the snapshot is newer than the
      // stored one (or as new and forced): sqlite3_changes() is 0 otherwise.
      {&upsert_version_,
       "INSERT INTO usrloc_aor (table_name, aor, version) VALUES (?1, ?2, ?3) "
       "ON CONFLICT (table_name, aor) DO UPDATE SET version=excluded.version "
       "WHERE excluded.version > usrloc_aor.version "
       "OR (?4 AND excluded.version = usrloc_aor.version)"},
      {&delete_contacts_, "DELETE FROM usrloc_contact WHERE table_name=?1 AND aor=?2"},
      {&insert_contact_,
       "INSERT OR REPLACE INTO usrloc_contact (table_name, aor, contact, position, expires, q, "
       "callid, cseq, flags, cflags, user_agent, received, path, socket, methods, "
       "sip_instance, attr, last_modified) VALUES "
       "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"},
  };
  for (const auto& [stmt, sql] : statements) {
    if (*stmt != nullptr) continue;
    absl::StatusOr<sqlite::Statement> prepared = Prepare(sql);
    if (!prepared.ok()) return prepared.status();
    *stmt = *std::move(prepared);
  }
  sqlite3_stmt* const upsert_version = upsert_version_.get();
  sqlite3_stmt* const delete_contacts = delete_contacts_.get();
  sqlite3_stmt* const insert_contact = insert_contact_.get();
  {
    for (const AorSnapshot& snapshot : snapshots) {
      sqlite3_reset(upsert_version);
      BindText(upsert_version, 1, table);
      BindText(upsert_version, 2, snapshot.aor);
      BindInt(upsert_version, 3, static_cast<int64_t>(snapshot.version));
      BindInt(upsert_version, 4, force ? 1 : 0);
      if (sqlite3_step(upsert_version) != SQLITE_DONE) return Error("write version");
      if (sqlite3_changes(db_) == 0) continue;  // the stored snapshot is as new or newer

      sqlite3_reset(delete_contacts);
      BindText(delete_contacts, 1, table);
      BindText(delete_contacts, 2, snapshot.aor);
      if (sqlite3_step(delete_contacts) != SQLITE_DONE) return Error("delete contacts");

      int position = 0;
      for (const ContactInfo& c : snapshot.contacts) {
        sqlite3_stmt* s = insert_contact;
        sqlite3_reset(s);
        BindText(s, 1, table);
        BindText(s, 2, snapshot.aor);
        BindText(s, 3, c.uri);
        BindInt(s, 4, position++);
        BindInt(s, 5, c.expires);
        BindInt(s, 6, c.q);
        BindText(s, 7, c.callid);
        BindInt(s, 8, c.cseq);
        BindInt(s, 9, c.flags);
        BindInt(s, 10, c.cflags);
        BindText(s, 11, c.user_agent);
        BindText(s, 12, c.received);
        BindText(s, 13, c.path);
        BindText(s, 14, c.socket);
        BindInt(s, 15, c.methods);
        BindText(s, 16, c.instance);
        BindText(s, 17, c.attr);
        BindInt(s, 18, c.last_modified);
        if (sqlite3_step(s) != SQLITE_DONE) return Error("insert contact");
      }
    }
    return absl::OkStatus();
  }
}

absl::StatusOr<std::vector<AorSnapshot>> SqliteStore::Load(std::string_view table) {
  auto prepared = Prepare(
      "SELECT c.aor, a.version, c.contact, c.expires, c.q, c.callid, c.cseq, c.flags, "
      "c.cflags, c.user_agent, c.received, c.path, c.socket, c.methods, c.sip_instance, "
      "c.attr, c.last_modified FROM usrloc_contact c JOIN usrloc_aor a "
      "ON a.table_name=c.table_name AND a.aor=c.aor WHERE c.table_name=?1 "
      "ORDER BY c.aor, c.position");
  if (!prepared.ok()) return prepared.status();
  BindText(prepared->get(), 1, table);
  std::vector<AorSnapshot> out;
  const int rc = sqlite::StepRows(prepared->get(), [&](sqlite3_stmt* s) {
    std::string aor(ColumnText(s, 0));
    if (out.empty() || out.back().aor != aor) {
      out.emplace_back();
      out.back().aor = std::move(aor);
      out.back().version = static_cast<uint64_t>(sqlite3_column_int64(s, 1));
    }
    ContactInfo c;
    c.uri = ColumnText(s, 2);
    c.expires = sqlite3_column_int64(s, 3);
    c.q = sqlite3_column_int(s, 4);
    c.callid = ColumnText(s, 5);
    c.cseq = static_cast<uint32_t>(sqlite3_column_int64(s, 6));
    c.flags = static_cast<uint32_t>(sqlite3_column_int64(s, 7));
    c.cflags = static_cast<uint32_t>(sqlite3_column_int64(s, 8));
    c.user_agent = ColumnText(s, 9);
    c.received = ColumnText(s, 10);
    c.path = ColumnText(s, 11);
    c.socket = ColumnText(s, 12);
    c.methods = static_cast<uint32_t>(sqlite3_column_int64(s, 13));
    c.instance = ColumnText(s, 14);
    c.attr = ColumnText(s, 15);
    c.last_modified = sqlite3_column_int64(s, 16);
    c.state = ContactState::kSync;
    out.back().contacts.push_back(std::move(c));
  });
  prepared->reset();
  if (rc != SQLITE_DONE) return Error("load contacts");
  return out;
}

absl::StatusOr<uint64_t> SqliteStore::MaxVersion() {
  auto prepared = Prepare("SELECT COALESCE(MAX(version), 0) FROM usrloc_aor");
  if (!prepared.ok()) return prepared.status();
  sqlite3_stmt* s = prepared->get();
  uint64_t version = 0;
  const int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) version = static_cast<uint64_t>(sqlite3_column_int64(s, 0));
  prepared->reset();
  if (rc != SQLITE_ROW) return Error("read max version");
  return version;
}

absl::Status SqliteStore::Prune(int64_t now) {
  const std::string sql = absl::StrCat(
      "DELETE FROM usrloc_contact WHERE expires != 0 AND expires <= ", now,
      "; DELETE FROM usrloc_aor WHERE NOT EXISTS (SELECT 1 FROM usrloc_contact c WHERE "
      "c.table_name=usrloc_aor.table_name AND c.aor=usrloc_aor.aor);");
  return InTransaction([&]() { return Exec(sql.c_str()); });
}

absl::Status SqliteStore::DeleteAorsExcept(std::string_view table,
                                           const absl::flat_hash_set<std::string>& keep,
                                           uint64_t max_version) {
  auto listed = Prepare("SELECT aor FROM usrloc_aor WHERE table_name=?1 AND version<=?2");
  if (!listed.ok()) return listed.status();
  BindText(listed->get(), 1, table);
  BindInt(listed->get(), 2, static_cast<int64_t>(max_version));
  std::vector<std::string> stale;
  const int rc = sqlite::StepRows(listed->get(), [&](sqlite3_stmt* s) {
    std::string aor(ColumnText(s, 0));
    if (!keep.contains(aor)) stale.push_back(std::move(aor));
  });
  listed->reset();
  if (rc != SQLITE_DONE) return Error("list AORs");
  if (stale.empty()) return absl::OkStatus();
  // The version row stays (see the file comment); the contacts go only if nobody wrote
  // a newer snapshot since the listing.
  auto prepared = Prepare(
      "DELETE FROM usrloc_contact WHERE table_name=?1 AND aor=?2 AND (SELECT version FROM "
      "usrloc_aor a WHERE a.table_name=?1 AND a.aor=?2) <= ?3");
  if (!prepared.ok()) return prepared.status();
  sqlite3_stmt* del = prepared->get();
  absl::Status status = InTransaction([&]() -> absl::Status {
    for (const std::string& aor : stale) {
      sqlite3_reset(del);
      BindText(del, 1, table);
      BindText(del, 2, aor);
      BindInt(del, 3, static_cast<int64_t>(max_version));
      if (sqlite3_step(del) != SQLITE_DONE) return Error("delete contacts");
    }
    return absl::OkStatus();
  });
  prepared->reset();
  return status;
}

}  // namespace sipd::usrloc
