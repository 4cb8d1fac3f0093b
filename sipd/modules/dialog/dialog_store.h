// The dialog table's rows in SQLite (dialog db_mode 1 and 2), written through the
// group-commit writer (sipd/modules/sqlite/group_commit.h).
//
// Schema (one row per confirmed dialog; the file may be shared with usrloc):
//   dialog(h_entry, h_id, version, state, callid, from_uri, to_uri, caller_tag,
//          caller_contact, caller_route_set, caller_bind_addr, caller_next_hop,
//          caller_cseq, has_callee, callee_tag, callee_contact, callee_route_set,
//          callee_bind_addr, callee_cseq, user_flags, start_time, timeout, profiles)
// `profiles` is a blob of (profile name, value) pairs: names, not indexes, so a
// profile that is no longer configured after a restart is simply dropped.
//
// Records are "upsert this dialog" (applied only if its version is not older than the
// row's) and "delete this dialog"; the table queues the changes of one dialog in the
// order they happened (dialog_table.h), so the last record wins and re-applying a batch
// (writer.h: a leader that died) leaves the same rows.
//
// Thread/process-safety: one DialogStore per module, used by the writer's leader (any
// process) under the writer's commit lock; the statement cache is per process.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/modules/dialog/dialog_info.h"
#include "sipd/modules/sqlite/group_commit.h"

namespace sipd::dialog {

class DialogStore final : public sqlite::GroupCommitWriter::Client {
 public:
  // `profile_names`: the configured profiles, by index (ProfileLink::profile).
  explicit DialogStore(std::vector<std::string> profile_names);

  // Encodes the change of `dialog` (removed: delete its row).
  std::string Encode(const DialogInfo& dialog, bool removed) const;

  absl::Status CreateSchema(sqlite3* db) override;
  absl::Status Apply(sqlite3* db, std::string_view record) override;
  void ConnectionClosing(sqlite3*) override { statements_.Drop(); }

  // Every row (any order), profiles mapped back to indexes. Rows that do not parse are
  // skipped with a warning.
  absl::StatusOr<std::vector<DialogInfo>> LoadAll(sqlite3* db) const;
  // Replaces every row by `dialogs` in one transaction (dlg_restore_db).
  absl::Status ReplaceAll(sqlite3* db, const std::vector<DialogInfo>& dialogs);

 private:
  absl::Status Upsert(sqlite3* db, const DialogInfo& d);
  absl::Status Delete(sqlite3* db, uint32_t h_entry, uint32_t h_id);

  std::vector<std::string> profile_names_;
  sqlite::StatementCache statements_;
};

}  // namespace sipd::dialog
