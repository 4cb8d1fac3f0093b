#include "sipd/modules/usrloc/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"
#include "sipd/modules/sqlite/group_commit.h"
#include "sipd/modules/sqlite/statement.h"
#include "spdlog/spdlog.h"

namespace sipd::usrloc {
namespace {

// One row per AOR: its version and its contacts, packed as a JSON array of arrays (one
// B-tree write per REGISTER instead of two: the writer's batches dirty half the pages).
// usrloc_contact, the one-row-per-contact layout of older sipd versions, is now a view
// over the packed column with the same columns, so SQL that reads it keeps working.
// A contact's array holds its fields in kFields' order: the writer, the reader, the view,
// the upgrade and Prune all take their element positions from there.

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS usrloc_aor (\n"
    "  table_name TEXT NOT NULL,\n  aor TEXT NOT NULL,\n  version INTEGER NOT NULL,\n"
    "  contacts TEXT NOT NULL DEFAULT '[]',\n"
    "  PRIMARY KEY (table_name, aor)\n) WITHOUT ROWID;\n";

// Appends `text` as a JSON string: quote, backslash and control characters escaped, every
// other byte as it is (SQLite's JSON functions read such text back byte for byte).
void AppendJsonString(std::string_view text, std::string& out) {
  out.push_back('"');
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (byte < 0x20) {
      constexpr char kHex[] = "0123456789abcdef";
      out.append("\\u00");
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

using sqlite::BindInt;
using sqlite::BindText;
using sqlite::ColumnText;

// One element of a contact's array: its column in usrloc_contact (the view's, and the
// older table's), how it is written into the array, and how it is read back from a
// statement's column.
struct Field {
  const char* column;
  void (*append)(const ContactInfo& c, std::string& out);
  void (*read)(ContactInfo& c, sqlite3_stmt* s, int col);
};
template <std::string ContactInfo::*member>
constexpr Field Text(const char* column) {
  return {column, [](const ContactInfo& c, std::string& out) { AppendJsonString(c.*member, out); },
          [](ContactInfo& c, sqlite3_stmt* s, int col) { c.*member = ColumnText(s, col); }};
}
template <auto member>  // an integer member of ContactInfo
constexpr Field Integer(const char* column) {
  return {column, [](const ContactInfo& c, std::string& out) { absl::StrAppend(&out, c.*member); },
          [](ContactInfo& c, sqlite3_stmt* s, int col) {
            c.*member = static_cast<std::remove_reference_t<decltype(c.*member)>>(
                sqlite3_column_int64(s, col));
          }};
}
constexpr Field kFields[] = {
    Text<&ContactInfo::uri>("contact"),
    Integer<&ContactInfo::expires>("expires"),
    Integer<&ContactInfo::q>("q"),
    Text<&ContactInfo::callid>("callid"),
    Integer<&ContactInfo::cseq>("cseq"),
    Integer<&ContactInfo::flags>("flags"),
    Integer<&ContactInfo::cflags>("cflags"),
    Text<&ContactInfo::user_agent>("user_agent"),
    Text<&ContactInfo::received>("received"),
    Text<&ContactInfo::path>("path"),
    Text<&ContactInfo::socket>("socket"),
    Integer<&ContactInfo::methods>("methods"),
    Text<&ContactInfo::instance>("sip_instance"),
    Text<&ContactInfo::attr>("attr"),
    Integer<&ContactInfo::last_modified>("last_modified"),
};

// The position of `column` in a contact's array.
constexpr size_t Element(std::string_view column) {
  for (size_t i = 0; i < std::size(kFields); ++i) {
    if (column == kFields[i].column) return i;
  }
  throw "no such contact field";  // a compile-time error where used in a constant
}
constexpr size_t kExpires = Element("expires");

// As sqlite_master keeps it, so that CreateSchema() can tell a view of another version
// and replace it.
const std::string& ContactView() {
  static const std::string* view = [] {
    auto* sql = new std::string(
        "CREATE VIEW usrloc_contact AS SELECT a.table_name AS table_name, a.aor AS aor, ");
    for (size_t i = 0; i < std::size(kFields); ++i) {
      absl::StrAppend(sql, "c.value->>", i, " AS ", kFields[i].column, ", ");
      if (i == 0) absl::StrAppend(sql, "c.key AS position, ");
    }
    sql->resize(sql->size() - 2);
    // A row whose `contacts` is not JSON (edited by hand, say) or an element that is not
    // an array is left out, as Load() skips it: not an error that would stop a restart.
    absl::StrAppend(sql,
                    " FROM usrloc_aor a, json_each(a.contacts) c WHERE json_valid(a.contacts) "
                    "AND c.type = 'array'");
    return sql;
  }();
  return *view;
}

// Databases written by an older sipd: usrloc_aor without `contacts`, and usrloc_contact a
// table (rowid or WITHOUT ROWID) of one row per contact. Packed once, inside the caller's
// write transaction, keeping every contact in its stored order.
constexpr const char* kAddContactsColumn =
    "ALTER TABLE usrloc_aor ADD COLUMN contacts TEXT NOT NULL DEFAULT '[]';\n";
std::string PackContactTable() {
  std::string columns;
  for (const Field& f : kFields) absl::StrAppend(&columns, columns.empty() ? "" : ", ", f.column);
  return absl::StrCat(
      "UPDATE usrloc_aor SET contacts = (SELECT json_group_array(json_array(", columns,
      ")) FROM (SELECT * FROM usrloc_contact c WHERE c.table_name = usrloc_aor.table_name AND "
      "c.aor = usrloc_aor.aor ORDER BY c.position));\nDROP TABLE usrloc_contact;\n");
}

// Appends the contacts as the view reads them: a JSON array of one array per contact.
void AppendContacts(std::span<const ContactInfo> contacts, std::string& out) {
  out.push_back('[');
  for (const ContactInfo& c : contacts) {
    if (&c != contacts.data()) out.push_back(',');
    out.push_back('[');
    for (const Field& f : kFields) {
      if (&f != kFields) out.push_back(',');
      f.append(c, out);
    }
    out.push_back(']');
  }
  out.push_back(']');
}

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
  // What an older sipd left: usrloc_aor without `contacts`; usrloc_contact as a table, or
  // as a view defined otherwise.
  absl::StatusOr<sqlite::Statement> layout = sqlite::Prepare(
      db,
      "SELECT NOT EXISTS (SELECT 1 FROM pragma_table_info('usrloc_aor') WHERE name = "
      "'contacts'), EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
      "'usrloc_contact'), (SELECT sql FROM sqlite_master WHERE type = 'view' AND name = "
      "'usrloc_contact')");
  if (!layout.ok()) return layout.status();
  bool no_contacts_column = false;
  bool contact_table = false;
  std::string view;
  const int rc = sqlite::StepRows(layout->get(), [&](sqlite3_stmt* row) {
    no_contacts_column = sqlite3_column_int(row, 0) != 0;
    contact_table = sqlite3_column_int(row, 1) != 0;
    view = ColumnText(row, 2);
  });
  if (rc != SQLITE_DONE) {
    return absl::UnavailableError(
        absl::StrCat("usrloc database: cannot read the schema: ", sqlite3_errmsg(db)));
  }
  layout->reset();
  if (no_contacts_column) SIPD_RETURN_IF_ERROR(sqlite::Exec(db, kAddContactsColumn));
  if (contact_table) {
    spdlog::info("usrloc: packing usrloc_contact's rows into usrloc_aor.contacts (once)");
    SIPD_RETURN_IF_ERROR(sqlite::Exec(db, PackContactTable().c_str()));
  }
  if (view == ContactView()) return absl::OkStatus();
  SIPD_RETURN_IF_ERROR(sqlite::Exec(db, "DROP VIEW IF EXISTS usrloc_contact"));
  return sqlite::Exec(db, ContactView().c_str());
}

SqliteStore::~SqliteStore() {
  // Finalized before the connection closes (sqlite3_close refuses while any is left).
  upsert_aor_.reset();
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
  std::string contacts;  // one buffer for the whole batch
  for (const AorSnapshot& snapshot : snapshots) {
    contacts.clear();
    AppendContacts(snapshot.contacts, contacts);
    SIPD_RETURN_IF_ERROR(WriteRow(table, snapshot.aor, snapshot.version, contacts, force));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::WriteRow(std::string_view table, std::string_view aor, uint64_t version,
                                   std::string_view contacts, bool force) {
  // Prepared once per connection; a failed prepare is retried on the next call. Writes
  // the AOR only when the snapshot is newer than the stored one (or as new and forced).
  if (upsert_aor_ == nullptr) {
    absl::StatusOr<sqlite::Statement> prepared = Prepare(
        "INSERT INTO usrloc_aor (table_name, aor, version, contacts) VALUES (?1, ?2, ?3, ?5) "
        "ON CONFLICT (table_name, aor) DO UPDATE SET version=excluded.version, "
        "contacts=excluded.contacts WHERE excluded.version > usrloc_aor.version "
        "OR (?4 AND excluded.version = usrloc_aor.version)");
    if (!prepared.ok()) return prepared.status();
    upsert_aor_ = *std::move(prepared);
  }
  sqlite3_stmt* const upsert = upsert_aor_.get();
  sqlite3_reset(upsert);
  BindText(upsert, 1, table);
  BindText(upsert, 2, aor);
  BindInt(upsert, 3, static_cast<int64_t>(version));
  BindInt(upsert, 4, force ? 1 : 0);
  BindText(upsert, 5, contacts);
  if (sqlite3_step(upsert) != SQLITE_DONE) return Error("write AOR");
  return absl::OkStatus();
}

std::string SqliteStore::EncodeContacts(std::span<const ContactInfo> contacts) {
  std::string out;
  AppendContacts(contacts, out);
  return out;
}

absl::StatusOr<std::vector<AorSnapshot>> SqliteStore::Load(std::string_view table,
                                                           Skipped* skipped) {
  // One row per field (each contact's array parsed once, where `c.value->>N` parsed it
  // for every field), in the primary key's order, so without a sort; json_each gives an
  // AOR's contacts in their stored order, which the position (c.key) checks. Elements
  // that are not arrays, or empty ones, come as one row without a field, to be counted.
  auto prepared = Prepare(
      "SELECT a.aor, a.version, c.key, f.key, f.atom, f.key IS NOT NULL "
      "FROM usrloc_aor a JOIN json_each(a.contacts) c LEFT JOIN json_each(CASE WHEN c.type = "
      "'array' THEN c.value ELSE '[]' END) f "
      "WHERE json_valid(a.contacts) AND a.table_name=?1 ORDER BY a.aor");
  if (!prepared.ok()) return prepared.status();
  BindText(prepared->get(), 1, table);
  std::vector<AorSnapshot> out;
  std::vector<std::pair<int64_t, ContactInfo>> contacts;  // out.back()'s, with positions
  const auto by_position = [](const auto& a, const auto& b) { return a.first < b.first; };
  const auto finish_aor = [&] {
    if (out.empty()) return;
    if (!std::is_sorted(contacts.begin(), contacts.end(), by_position)) {
      std::stable_sort(contacts.begin(), contacts.end(), by_position);
    }
    for (auto& [position, contact] : contacts) out.back().contacts.push_back(std::move(contact));
    contacts.clear();
  };
  Skipped found;
  const int rc = sqlite::StepRows(prepared->get(), [&](sqlite3_stmt* s) {
    if (sqlite3_column_int(s, 5) == 0) {  // the LEFT JOIN's one row for such an element
      ++found.elements;
      return;
    }
    std::string_view aor = ColumnText(s, 0);
    const int64_t position = sqlite3_column_int64(s, 2);
    if (out.empty() || out.back().aor != aor) {
      finish_aor();
      out.emplace_back();
      out.back().aor = std::string(aor);
      out.back().version = static_cast<uint64_t>(sqlite3_column_int64(s, 1));
    }
    if (contacts.empty() || contacts.back().first != position) {
      contacts.emplace_back(position, ContactInfo{}).second.state = ContactState::kSync;
    }
    ContactInfo& c = contacts.back().second;
    const int field = sqlite3_column_int(s, 3);
    if (field >= 0 && field < static_cast<int>(std::size(kFields))) kFields[field].read(c, s, 4);
  });
  prepared->reset();
  if (rc != SQLITE_DONE) return Error("load contacts");
  finish_aor();
  // Rows skipped as unreadable: the rows with contacts less the AORs read.
  auto rows = Prepare("SELECT count(*) FROM usrloc_aor WHERE table_name=?1 AND contacts != '[]'");
  if (!rows.ok()) return rows.status();
  BindText(rows->get(), 1, table);
  int64_t stored = 0;
  if (sqlite::StepRows(rows->get(), [&](sqlite3_stmt* row) {
        stored = sqlite3_column_int64(row, 0);
      }) != SQLITE_DONE) {
    return Error("count AORs");
  }
  rows->reset();
  found.rows = std::max<int64_t>(0, stored - static_cast<int64_t>(out.size()));
  if (found.rows > 0 || found.elements > 0) {
    spdlog::error(
        "usrloc: table {} in {}: {} AOR row(s) with no readable contact (not a JSON array of "
        "arrays) and {} element(s) that are not contacts (not arrays) were skipped; the AOR's "
        "next write replaces such a row",
        std::string(table), path_, found.rows, found.elements);
  }
  if (skipped != nullptr) *skipped = found;
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
  // Expired contacts go, and so do elements that are not contacts (arrays); a row that
  // is not JSON at all is left as it is (Load skips it; the AOR's next write replaces it).
  const std::string sql = absl::StrCat(
      "UPDATE usrloc_aor SET contacts = (SELECT json_group_array(json(c.value)) FROM "
      "json_each(usrloc_aor.contacts) c WHERE c.type = 'array' AND (c.value->>",
      kExpires, " = 0 OR c.value->>", kExpires, " > ", now,
      ")) WHERE json_valid(contacts) AND EXISTS (SELECT 1 FROM json_each(usrloc_aor.contacts) "
      "c WHERE c.type != 'array' OR (c.value->>",
      kExpires, " != 0 AND c.value->>", kExpires, " <= ", now,
      ")); DELETE FROM usrloc_aor WHERE contacts = '[]';");
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
      "UPDATE usrloc_aor SET contacts = '[]' WHERE table_name=?1 AND aor=?2 AND version <= ?3");
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
