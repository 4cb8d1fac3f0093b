// Who may run what: the role policy of the MI (read / operate / admin), decided from a
// command's declared flags alone (registry/command.h), so that a command's rights are
// stated once, where it is declared:
//
//   read     commands not flagged kMutating
//   operate  also kMutating commands, except those flagged kDangerous
//   admin    everything
//
// The refusal text is the same on every transport (each wraps it in its own error form:
// MI 403, gRPC PERMISSION_DENIED, XML-RPC fault 403).
#pragma once

#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "registry/call_context.h"
#include "registry/command.h"
#include "registry/events.h"

namespace sipd::mi {

// OK if `role` may run `command`; PermissionDenied with the reason otherwise.
// kUnset allows everything (no security layer); kNone allows nothing.
absl::Status CheckRole(Role role, const Command& command);

// OK if `role` may subscribe to `event` (its declared required_role; same rule for
// kUnset and kNone); PermissionDenied with the reason otherwise, the same text on every
// transport ("role 'read' may not subscribe to 'E_MI_AUDIT' (needs admin)").
absl::Status CheckEventRole(Role role, const Event& event);

// "read" / "operate" / "admin" (case-insensitive); nullopt otherwise.
std::optional<Role> ParseRole(std::string_view text);

}  // namespace sipd::mi
