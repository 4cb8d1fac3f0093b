#include "registry/authorization.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace sipd::mi {

absl::Status CheckRole(Role role, const Command& command) {
  bool allowed = false;
  switch (role) {
    case Role::kUnset:
    case Role::kAdmin:
      allowed = true;
      break;
    case Role::kOperate:
      allowed = !command.has_flag(kDangerous);
      break;
    case Role::kRead:
      allowed = !command.has_flag(kMutating) && !command.has_flag(kDangerous);
      break;
    case Role::kNone:
      allowed = false;
      break;
  }
  if (allowed) return absl::OkStatus();
  const std::string_view needed = command.has_flag(kDangerous) ? "admin" : "operate";
  return absl::PermissionDeniedError(absl::StrCat("role '", std::string(RoleName(role)),
                                                  "' may not run '", command.name(), "' (needs ",
                                                  std::string(needed), ")"));
}

absl::Status CheckEventRole(Role role, const Event& event) {
  bool allowed = false;
  switch (role) {
    case Role::kUnset:
    case Role::kAdmin:
      allowed = true;
      break;
    case Role::kOperate:
      allowed = event.required_role() != Role::kAdmin;
      break;
    case Role::kRead:
      allowed = event.required_role() == Role::kRead || event.required_role() == Role::kUnset;
      break;
    case Role::kNone:
      allowed = false;
      break;
  }
  if (allowed) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("role '", std::string(RoleName(role)), "' may not subscribe to '", event.name(),
                   "' (needs ", std::string(RoleName(event.required_role())), ")"));
}

std::optional<Role> ParseRole(std::string_view text) {
  const std::string lower = absl::AsciiStrToLower(std::string(text));
  if (lower == "read") return Role::kRead;
  if (lower == "operate") return Role::kOperate;
  if (lower == "admin") return Role::kAdmin;
  return std::nullopt;
}

}  // namespace sipd::mi
