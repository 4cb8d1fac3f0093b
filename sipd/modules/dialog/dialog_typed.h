// The typed face of the dialog MI commands: sipd.dialog.v1.DialogService
// (proto/sipd/dialog/v1/dialog.proto). Each function returns the typed method that
// RegisterMiCommands() declares on one command (registry/typed_method.h): conversions
// between the typed messages and that command's arguments and reply tree, nothing else.
//
//   ListDialogs        dlg_list_ctx index count (offset paging; dlg_counter -> total_size)
//   StreamDialogs      dlg_list_ctx (pulled; items = the dialog nodes)
//   GetDialog          dlg_list_ctx callid [from_tag]
//   EndDialog          dlg_end_dlg h_entry h_id [extra_hdrs]
//   GetProfileSize     profile_get_size profile [value]
//   ListProfileDialogs profile_list_dlgs profile [value] (pulled; items = dialog nodes)
//   ListProfiles       list_all_profiles
//
// The listings use dlg_list_ctx rather than dlg_list: the same dialogs, plus the
// `context` kid with the profile links (Dialog.profiles).
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "registry/command.h"
#include "registry/tree.h"

namespace sipd::dialog {

namespace v1 {
class Dialog;
}  // namespace v1

std::shared_ptr<const mi::TypedMethod> ListDialogsMethod();
std::shared_ptr<const mi::TypedMethod> StreamDialogsMethod();
std::shared_ptr<const mi::TypedMethod> GetDialogMethod();
std::shared_ptr<const mi::TypedMethod> EndDialogMethod();
std::shared_ptr<const mi::TypedMethod> GetProfileSizeMethod();
std::shared_ptr<const mi::TypedMethod> ListProfileDialogsMethod();
std::shared_ptr<const mi::TypedMethod> ListProfilesMethod();

// A `dialog` node of dlg_list / dlg_list_ctx / profile_list_dlgs (spec 8.2) as a typed
// Dialog. InternalError naming the line that does not parse.
absl::Status DialogFromNode(const mi::Node& node, v1::Dialog* out);

}  // namespace sipd::dialog
