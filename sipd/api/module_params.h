// Checks of modparam values shared by the modules (one text for one kind of mistake):
//   SIPD_ASSIGN_OR_RETURN(int64_t n, IntParam("usrloc", param, value, 1, 1 << 20));
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "sipd/api/module.h"

namespace sipd {

// The integer in `value` if it is one within [min, max]; else InvalidArgument
// "MODULE: parameter 'PARAM' must be an integer in [MIN, MAX]".
inline absl::StatusOr<int64_t> IntParam(std::string_view module, std::string_view param,
                                        const ParamValue& value, int64_t min, int64_t max) {
  const int64_t* v = std::get_if<int64_t>(&value);
  if (v == nullptr || *v < min || *v > max) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(module), ": parameter '",
                                                   std::string(param), "' must be an integer in [",
                                                   min, ", ", max, "]"));
  }
  return *v;
}

}  // namespace sipd
