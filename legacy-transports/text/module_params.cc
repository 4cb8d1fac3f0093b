#include "legacy-transports/text/module_params.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sipd::legacy {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

absl::Status BadParam(std::string_view param, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("parameter '", AbslView(param), "': ", AbslView(why)));
}

// Parses an all-digits string in `base`; nullopt otherwise.
std::optional<int64_t> ParseNumber(const std::string& text, int base) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, base);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

}  // namespace

absl::StatusOr<std::string> StringParam(std::string_view param, const ParamValue& value) {
  if (const auto* s = std::get_if<std::string>(&value)) return *s;
  return BadParam(param, "expects a string");
}

absl::StatusOr<int64_t> IntParam(std::string_view param, const ParamValue& value, int64_t min,
                                 int64_t max) {
  const auto* v = std::get_if<int64_t>(&value);
  if (v == nullptr) return BadParam(param, "expects an integer");
  if (*v < min || *v > max) {
    return BadParam(param, absl::StrCat("value ", *v, " is outside ", min, "..", max));
  }
  return *v;
}

absl::StatusOr<mode_t> ModeFromParam(std::string_view param, const ParamValue& value) {
  int64_t mode = 0;
  if (const auto* s = std::get_if<std::string>(&value)) {
    std::optional<int64_t> parsed = ParseNumber(*s, 8);
    if (!parsed) return BadParam(param, absl::StrCat("'", *s, "' is not an octal mode"));
    mode = *parsed;
  } else {
    mode = std::get<int64_t>(value);
  }
  if (mode < 0 || mode > 07777) {
    return BadParam(param, absl::StrCat("mode ", mode, " is outside 0..07777"));
  }
  if (mode == 0) {
    spdlog::warn("parameter '{}' is 0: using 0600 instead", param);
    mode = 0600;
  }
  return static_cast<mode_t>(mode);
}

absl::Status SetUserFromParam(std::string_view param, const ParamValue& value, FileAccess* access) {
  if (const auto* id = std::get_if<int64_t>(&value)) {
    if (*id < 0) return BadParam(param, "negative uid");
    access->uid = static_cast<uid_t>(*id);
    return absl::OkStatus();
  }
  const std::string& name = std::get<std::string>(value);
  if (std::optional<int64_t> id = ParseNumber(name, 10)) {
    access->uid = static_cast<uid_t>(*id);
    return absl::OkStatus();
  }
  const passwd* pw = getpwnam(name.c_str());
  if (pw == nullptr) return BadParam(param, absl::StrCat("unknown user '", name, "'"));
  access->uid = pw->pw_uid;
  access->user_group = pw->pw_gid;
  return absl::OkStatus();
}

absl::Status SetGroupFromParam(std::string_view param, const ParamValue& value,
                               FileAccess* access) {
  if (const auto* id = std::get_if<int64_t>(&value)) {
    if (*id < 0) return BadParam(param, "negative gid");
    access->gid = static_cast<gid_t>(*id);
    return absl::OkStatus();
  }
  const std::string& name = std::get<std::string>(value);
  if (std::optional<int64_t> id = ParseNumber(name, 10)) {
    access->gid = static_cast<gid_t>(*id);
    return absl::OkStatus();
  }
  const group* gr = getgrnam(name.c_str());
  if (gr == nullptr) return BadParam(param, absl::StrCat("unknown group '", name, "'"));
  access->gid = gr->gr_gid;
  return absl::OkStatus();
}

absl::Status ApplyAccess(int fd, const std::string& path, const FileAccess& access) {
  if (fchmod(fd, access.mode) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("chmod ", path, ": ", std::strerror(errno)));
  }
  const std::optional<gid_t> gid = access.effective_gid();
  if ((access.uid || gid) && fchown(fd, access.uid.value_or(static_cast<uid_t>(-1)),
                                    gid.value_or(static_cast<gid_t>(-1))) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("chown ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ApplyAccessToPath(const std::string& path, const FileAccess& access) {
  if (chmod(path.c_str(), access.mode) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("chmod ", path, ": ", std::strerror(errno)));
  }
  const std::optional<gid_t> gid = access.effective_gid();
  if ((access.uid || gid) && lchown(path.c_str(), access.uid.value_or(static_cast<uid_t>(-1)),
                                    gid.value_or(static_cast<gid_t>(-1))) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("chown ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace sipd::legacy
