// Where sipd keeps its files by default, shared by the daemon and its clients (sipctl
// finds the admin token there).
//
// Thread-safety: pure functions of the environment.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <string>

namespace sipd {

// $XDG_RUNTIME_DIR/sipd when XDG_RUNTIME_DIR is an absolute path, else /tmp/sipd-<euid>.
inline std::string DefaultRunDir() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/sipd";
  return "/tmp/sipd-" + std::to_string(geteuid());
}

// The run directory clients look in: $SIPD_RUN_DIR, else DefaultRunDir().
inline std::string ClientRunDir() {
  const char* dir = std::getenv("SIPD_RUN_DIR");
  if (dir != nullptr && dir[0] != '\0') return dir;
  return DefaultRunDir();
}

}  // namespace sipd
