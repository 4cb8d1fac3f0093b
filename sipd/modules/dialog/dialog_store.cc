#include "sipd/modules/dialog/dialog_store.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "sipd/modules/sqlite/statement.h"
#include "spdlog/spdlog.h"

namespace sipd::dialog {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS dialog (
  h_entry INTEGER NOT NULL,
  h_id INTEGER NOT NULL,
  version INTEGER NOT NULL,
  state INTEGER NOT NULL,
  callid TEXT NOT NULL,
  from_uri TEXT NOT NULL,
  to_uri TEXT NOT NULL,
  caller_tag TEXT NOT NULL,
  caller_contact TEXT NOT NULL,
  caller_route_set TEXT NOT NULL,
  caller_bind_addr TEXT NOT NULL,
  caller_next_hop TEXT NOT NULL,
  caller_cseq INTEGER NOT NULL,
  has_callee INTEGER NOT NULL,
  callee_tag TEXT NOT NULL,
  callee_contact TEXT NOT NULL,
  callee_route_set TEXT NOT NULL,
  callee_bind_addr TEXT NOT NULL,
  callee_cseq INTEGER NOT NULL,
  user_flags INTEGER NOT NULL,
  start_time INTEGER NOT NULL,
  timeout INTEGER NOT NULL,
  profiles BLOB NOT NULL,
  PRIMARY KEY (h_entry, h_id)
) WITHOUT ROWID;
)sql";

enum Statement : size_t { kUpsert, kDelete };

enum RecordKind : uint8_t { kRecordUpsert = 1, kRecordDelete = 2 };

using sqlite::BindInt;
using sqlite::BindText;
using sqlite::ColumnText;

void WriteDialog(sqlite::RecordWriter& w, const DialogInfo& d,
                 const std::vector<std::string>& profile_names) {
  w.U32(d.h_entry);
  w.U32(d.h_id);
  w.U64(d.version);
  w.U8(static_cast<uint8_t>(d.state));
  w.Str(d.callid);
  w.Str(d.from_uri);
  w.Str(d.to_uri);
  w.Str(d.caller.tag);
  w.Str(d.caller.contact);
  w.Str(d.caller.route_set);
  w.Str(d.caller.bind_addr);
  w.Str(d.caller_next_hop);
  w.U32(d.caller.cseq);
  w.U8(d.callee.has_value() ? 1 : 0);
  const LegInfo empty;
  const LegInfo& callee = d.callee.has_value() ? *d.callee : empty;
  w.Str(callee.tag);
  w.Str(callee.contact);
  w.Str(callee.route_set);
  w.Str(callee.bind_addr);
  w.U32(callee.cseq);
  w.U32(d.user_flags);
  w.I64(d.start_time);
  w.I64(d.timeout);
  sqlite::RecordWriter profiles;
  for (const ProfileLink& p : d.profiles) {
    profiles.Str(p.profile < profile_names.size() ? profile_names[p.profile] : std::string());
    profiles.Str(p.value);
  }
  w.Str(profiles.Take());
}

bool ReadDialog(sqlite::RecordReader& r, DialogInfo& d, std::string& profiles) {
  uint8_t state = 0;
  uint8_t has_callee = 0;
  LegInfo callee;
  const bool ok = r.U32(d.h_entry) && r.U32(d.h_id) && r.U64(d.version) && r.U8(state) &&
                  r.Str(d.callid) && r.Str(d.from_uri) && r.Str(d.to_uri) && r.Str(d.caller.tag) &&
                  r.Str(d.caller.contact) && r.Str(d.caller.route_set) &&
                  r.Str(d.caller.bind_addr) && r.Str(d.caller_next_hop) && r.U32(d.caller.cseq) &&
                  r.U8(has_callee) && r.Str(callee.tag) && r.Str(callee.contact) &&
                  r.Str(callee.route_set) && r.Str(callee.bind_addr) && r.U32(callee.cseq) &&
                  r.U32(d.user_flags) && r.I64(d.start_time) && r.I64(d.timeout) && r.Str(profiles);
  if (!ok || state < 1 || state > 5) return false;
  d.state = static_cast<DialogState>(state);
  if (has_callee != 0) d.callee = std::move(callee);
  return true;
}

}  // namespace

DialogStore::DialogStore(std::vector<std::string> profile_names)
    : profile_names_(std::move(profile_names)),
      statements_({
          "INSERT INTO dialog (h_entry, h_id, version, state, callid, from_uri, to_uri, "
          "caller_tag, caller_contact, caller_route_set, caller_bind_addr, caller_next_hop, "
          "caller_cseq, has_callee, callee_tag, callee_contact, callee_route_set, "
          "callee_bind_addr, callee_cseq, user_flags, start_time, timeout, profiles) VALUES "
          "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, "
          "?19, ?20, ?21, ?22, ?23) ON CONFLICT (h_entry, h_id) DO UPDATE SET "
          "version=excluded.version, state=excluded.state, callid=excluded.callid, "
          "from_uri=excluded.from_uri, to_uri=excluded.to_uri, "
          "caller_tag=excluded.caller_tag, caller_contact=excluded.caller_contact, "
          "caller_route_set=excluded.caller_route_set, "
          "caller_bind_addr=excluded.caller_bind_addr, "
          "caller_next_hop=excluded.caller_next_hop, caller_cseq=excluded.caller_cseq, "
          "has_callee=excluded.has_callee, callee_tag=excluded.callee_tag, "
          "callee_contact=excluded.callee_contact, "
          "callee_route_set=excluded.callee_route_set, "
          "callee_bind_addr=excluded.callee_bind_addr, callee_cseq=excluded.callee_cseq, "
          "user_flags=excluded.user_flags, start_time=excluded.start_time, "
          "timeout=excluded.timeout, profiles=excluded.profiles "
          "WHERE excluded.version >= dialog.version",
          "DELETE FROM dialog WHERE h_entry=?1 AND h_id=?2",
      }) {}

std::string DialogStore::Encode(const DialogInfo& dialog, bool removed) const {
  sqlite::RecordWriter w;
  if (removed) {
    w.U8(kRecordDelete);
    w.U32(dialog.h_entry);
    w.U32(dialog.h_id);
  } else {
    w.U8(kRecordUpsert);
    WriteDialog(w, dialog, profile_names_);
  }
  return w.Take();
}

absl::Status DialogStore::CreateSchema(sqlite3* db) { return sqlite::Exec(db, kSchema); }

absl::Status DialogStore::Apply(sqlite3* db, std::string_view record) {
  sqlite::RecordReader r(record);
  uint8_t kind = 0;
  if (!r.U8(kind)) return absl::InvalidArgumentError("empty dialog record");
  if (kind == kRecordDelete) {
    uint32_t h_entry = 0;
    uint32_t h_id = 0;
    if (!r.U32(h_entry) || !r.U32(h_id)) return absl::InvalidArgumentError("bad dialog record");
    return Delete(db, h_entry, h_id);
  }
  DialogInfo d;
  std::string profiles;
  if (kind != kRecordUpsert || !ReadDialog(r, d, profiles)) {
    return absl::InvalidArgumentError("bad dialog record");
  }
  // The profile blob travels as encoded (names); Upsert binds it from the record.
  sqlite::RecordReader p(profiles);
  std::string name;
  std::string value;
  while (!p.done() && p.Str(name) && p.Str(value)) {
    for (size_t i = 0; i < profile_names_.size(); ++i) {
      if (profile_names_[i] == name) {
        d.profiles.push_back(ProfileLink{static_cast<uint16_t>(i), value});
        break;
      }
    }
  }
  return Upsert(db, d);
}

absl::Status DialogStore::Upsert(sqlite3* db, const DialogInfo& d) {
  absl::StatusOr<sqlite3_stmt*> prepared = statements_.Get(db, kUpsert);
  if (!prepared.ok()) return prepared.status();
  sqlite3_stmt* s = *prepared;
  const LegInfo empty;
  const LegInfo& callee = d.callee.has_value() ? *d.callee : empty;
  sqlite::RecordWriter profiles;
  for (const ProfileLink& p : d.profiles) {
    profiles.Str(p.profile < profile_names_.size() ? profile_names_[p.profile] : std::string());
    profiles.Str(p.value);
  }
  const std::string blob = profiles.Take();
  BindInt(s, 1, d.h_entry);
  BindInt(s, 2, d.h_id);
  BindInt(s, 3, static_cast<int64_t>(d.version));
  BindInt(s, 4, static_cast<int>(d.state));
  BindText(s, 5, d.callid);
  BindText(s, 6, d.from_uri);
  BindText(s, 7, d.to_uri);
  BindText(s, 8, d.caller.tag);
  BindText(s, 9, d.caller.contact);
  BindText(s, 10, d.caller.route_set);
  BindText(s, 11, d.caller.bind_addr);
  BindText(s, 12, d.caller_next_hop);
  BindInt(s, 13, d.caller.cseq);
  BindInt(s, 14, d.callee.has_value() ? 1 : 0);
  BindText(s, 15, callee.tag);
  BindText(s, 16, callee.contact);
  BindText(s, 17, callee.route_set);
  BindText(s, 18, callee.bind_addr);
  BindInt(s, 19, callee.cseq);
  BindInt(s, 20, d.user_flags);
  BindInt(s, 21, d.start_time);
  BindInt(s, 22, d.timeout);
  sqlite::BindBlob(s, 23, blob);
  if (!sqlite::StepDone(s)) {
    return absl::UnavailableError(absl::StrCat("write dialog: ", sqlite3_errmsg(db)));
  }
  return absl::OkStatus();
}

absl::Status DialogStore::Delete(sqlite3* db, uint32_t h_entry, uint32_t h_id) {
  absl::StatusOr<sqlite3_stmt*> prepared = statements_.Get(db, kDelete);
  if (!prepared.ok()) return prepared.status();
  sqlite3_stmt* s = *prepared;
  BindInt(s, 1, h_entry);
  BindInt(s, 2, h_id);
  if (!sqlite::StepDone(s)) {
    return absl::UnavailableError(absl::StrCat("delete dialog: ", sqlite3_errmsg(db)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DialogInfo>> DialogStore::LoadAll(sqlite3* db) const {
  absl::StatusOr<sqlite::Statement> prepared =
      sqlite::Prepare(db,
                      "SELECT h_entry, h_id, version, state, callid, from_uri, to_uri, "
                      "caller_tag, caller_contact, caller_route_set, caller_bind_addr, "
                      "caller_next_hop, caller_cseq, has_callee, callee_tag, callee_contact, "
                      "callee_route_set, callee_bind_addr, callee_cseq, user_flags, "
                      "start_time, timeout, profiles FROM dialog ORDER BY h_entry, h_id");
  if (!prepared.ok()) {
    return absl::UnavailableError(absl::StrCat("read dialogs: ", sqlite3_errmsg(db)));
  }
  std::vector<DialogInfo> out;
  const int rc = sqlite::StepRows(prepared->get(), [&](sqlite3_stmt* s) {
    DialogInfo d;
    d.h_entry = static_cast<uint32_t>(sqlite3_column_int64(s, 0));
    d.h_id = static_cast<uint32_t>(sqlite3_column_int64(s, 1));
    d.version = static_cast<uint64_t>(sqlite3_column_int64(s, 2));
    const int state = sqlite3_column_int(s, 3);
    if (state < 1 || state > 4) {
      spdlog::warn("dialog: database row {}:{} has state {}; skipped", d.h_entry, d.h_id, state);
      return;
    }
    d.state = static_cast<DialogState>(state);
    d.callid = ColumnText(s, 4);
    d.from_uri = ColumnText(s, 5);
    d.to_uri = ColumnText(s, 6);
    d.caller.tag = ColumnText(s, 7);
    d.caller.contact = ColumnText(s, 8);
    d.caller.route_set = ColumnText(s, 9);
    d.caller.bind_addr = ColumnText(s, 10);
    d.caller_next_hop = ColumnText(s, 11);
    d.caller.cseq = static_cast<uint32_t>(sqlite3_column_int64(s, 12));
    if (sqlite3_column_int(s, 13) != 0) {
      LegInfo callee;
      callee.tag = ColumnText(s, 14);
      callee.contact = ColumnText(s, 15);
      callee.route_set = ColumnText(s, 16);
      callee.bind_addr = ColumnText(s, 17);
      callee.cseq = static_cast<uint32_t>(sqlite3_column_int64(s, 18));
      d.callee = std::move(callee);
    }
    d.user_flags = static_cast<uint32_t>(sqlite3_column_int64(s, 19));
    d.start_time = sqlite3_column_int64(s, 20);
    d.timeout = sqlite3_column_int64(s, 21);
    sqlite::RecordReader p(sqlite::ColumnBlob(s, 22));
    std::string name;
    std::string value;
    while (!p.done() && p.Str(name) && p.Str(value)) {
      for (size_t i = 0; i < profile_names_.size(); ++i) {
        if (profile_names_[i] == name) {
          d.profiles.push_back(ProfileLink{static_cast<uint16_t>(i), value});
          break;
        }
      }
    }
    out.push_back(std::move(d));
  });
  prepared->reset();
  if (rc != SQLITE_DONE) {
    return absl::UnavailableError(absl::StrCat("read dialogs: ", sqlite3_errmsg(db)));
  }
  return out;
}

absl::Status DialogStore::ReplaceAll(sqlite3* db, const std::vector<DialogInfo>& dialogs) {
  absl::Status s = sqlite::Exec(db, "BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  s = sqlite::Exec(db, "DELETE FROM dialog");
  for (const DialogInfo& d : dialogs) {
    if (!s.ok()) break;
    s = Upsert(db, d);
  }
  if (s.ok()) s = sqlite::Exec(db, "COMMIT");
  if (!s.ok()) (void)sqlite::Exec(db, "ROLLBACK");
  return s;
}

}  // namespace sipd::dialog
