// Module-parameter helpers shared by mi_fifo and mi_datagram: file modes and owners of
// the FIFO / UNIX socket they create (spec 3.1, 4.1).
//
// Thread-safety: plain functions; the getpwnam/getgrnam lookups are not reentrant and
// run only while the configuration is read (attendant, single-threaded).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "sipd/api/module.h"

namespace sipd::legacy {

// Mode and owner applied to a file a transport creates.
struct FileAccess {
  // Default 0600: only the daemon's user may talk to the transport (security by default;
  // OpenSIPS uses 0660).
  mode_t mode = 0600;
  std::optional<uid_t> uid;
  // Set by `*_group`; wins over user_group.
  std::optional<gid_t> gid;
  // The primary group of a user given by name (OpenSIPS: used unless a group is given).
  std::optional<gid_t> user_group;

  std::optional<gid_t> effective_gid() const { return gid ? gid : user_group; }
};

// Converts a mode parameter: an integer (the config reads 0600 as octal) or a string of
// octal digits. 0 becomes 0600 with a warning (as OpenSIPS). InvalidArgument naming the
// parameter for anything outside 0..07777.
absl::StatusOr<mode_t> ModeFromParam(std::string_view param, const ParamValue& value);

// `*_user`: a numeric uid or a user name (a name also sets user_group).
absl::Status SetUserFromParam(std::string_view param, const ParamValue& value, FileAccess* access);
// `*_group`: a numeric gid or a group name.
absl::Status SetGroupFromParam(std::string_view param, const ParamValue& value, FileAccess* access);

// chmod + chown (if an owner is set) of an open file (FIFO) descriptor.
absl::Status ApplyAccess(int fd, const std::string& path, const FileAccess& access);
// The same by path (UNIX sockets cannot be fchmod'ed). The caller has made sure `path`
// is the socket it just bound.
absl::Status ApplyAccessToPath(const std::string& path, const FileAccess& access);

// String value of a parameter, or InvalidArgument naming it.
absl::StatusOr<std::string> StringParam(std::string_view param, const ParamValue& value);
// Integer value in [min, max], or InvalidArgument naming it.
absl::StatusOr<int64_t> IntParam(std::string_view param, const ParamValue& value, int64_t min,
                                 int64_t max);

}  // namespace sipd::legacy
