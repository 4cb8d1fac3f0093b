// The sipd configuration the dialog integration suites share: usrloc, registrar, tm
// (wt_timer 1 s) and dialog with one valued and one plain profile.
#pragma once

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace sipd::testing {

// The dialog modules, then `extra`.
inline std::string DialogModulesConfig(std::string_view extra = "") {
  return absl::StrCat(
      "loadmodule \"usrloc\"\n"
      "loadmodule \"registrar\"\n"
      "loadmodule \"tm\"\n"
      "modparam(\"tm\", \"wt_timer\", 1)\n"
      "loadmodule \"dialog\"\n"
      "modparam(\"dialog\", \"profiles_with_value\", \"caller/from_user; callee/ruri_user\")\n"
      "modparam(\"dialog\", \"profiles_no_value\", \"inbound\")\n",
      std::string(extra));
}

}  // namespace sipd::testing
