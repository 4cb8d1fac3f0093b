// JSON string literals from arbitrary bytes, shared by everything that writes JSON
// (httpd's JSON-RPC replies, sipctl --json): `"`, `\\` and control characters escaped,
// valid UTF-8 kept as is, each invalid byte replaced by U+FFFD.
#pragma once

#include <string>
#include <string_view>

namespace sipd::mi {

// Appends `text` as a JSON string literal (quotes included).
void AppendJsonString(std::string& out, std::string_view text);

}  // namespace sipd::mi
