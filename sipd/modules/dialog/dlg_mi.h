// The dialog module's MI commands (spec 8.2), in 1.11's export order: dlg_list,
// dlg_list_ctx, dlg_end_dlg, dlg_db_sync, dlg_restore_db, profile_get_size,
// profile_list_dlgs, profile_get_values, list_all_profiles.
//
// dlg_list, dlg_list_ctx and profile_list_dlgs stream (kStreaming): each part copies at
// most 50 dialogs out of the table (holding one bucket lock at a time, never between
// parts) and ends at a flush point after every 50th dialog, as 1.11 flushes. Deviations
// from 1.11 (observable):
//   - dlg_list_ctx's `context` node has no `values` kid (sipd has no script, so dialogs
//     carry no variables); `profiles` lists the dialog's profile links;
//   - a dialog has at most one callee leg (the one of the 2xx, or of the first early
//     reply with a To-tag), so CALLEES holds at most one `callee`;
//   - dlg_end_dlg of a dialog that is not confirmed answers 500 "Operation failed"
//     (1.11 tried to send a BYE without a callee leg and failed the same way);
//   - the profile commands count by walking the table (no per-value counters to drift).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "registry/command.h"
#include "registry/tree.h"
#include "sipd/modules/dialog/dialog_info.h"
#include "sipd/modules/dialog/profiles.h"

namespace sipd::dialog {

class Dialogs;

// Appends one `dialog` node (spec 8.2) for `d` to `parent`; `with_context` adds the
// dlg_list_ctx `context` kid.
void AppendDialogNode(mi::Node& parent, const DialogInfo& d, bool with_context,
                      const std::vector<ProfileSpec>& profiles);
void AppendDialogNode(mi::Node& parent, const DialogChunk& chunk, const DialogChunk::Dialog& d,
                      bool with_context, const std::vector<ProfileSpec>& profiles);

// "YYYY-MM-DD HH:MM:SS" in local time.
std::string FormatDate(int64_t unix_time);

absl::Status RegisterMiCommands(Dialogs& dialogs, mi::Registry& registry);

}  // namespace sipd::dialog
