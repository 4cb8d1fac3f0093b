// Reads the MI text reply layout (spec 2) back into a reply tree: for tests and tools
// that compare what different transports said.
//
// Accepted input: a status line `<code> <reason>`, node lines whose depth is the number
// of leading `indent` units, and any number of empty lines (FIFO's final and per-flush
// empty lines are skipped). A transport error line (`500 command 'x' not available`)
// is a reply with that code and reason and no nodes.
//
// The text layout is not fully reversible; this parser decides as follows:
//   * the name is the text before the first `:: ` (a node without `:: ` is nameless);
//   * attributes start at every ` key=` where key is one or more of [A-Za-z0-9_-]; an
//     attribute value runs to the next such boundary or the end of the line (so values
//     with spaces, like `Type=SIP receiver udp:127.0.0.1:5060 `, survive);
//   * a value that itself contains ` key=`, or a multi-line value, is misread.
// is_array is never set (the text layout does not carry it).
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "registry/tree.h"

namespace sipd::legacy {

absl::StatusOr<mi::Reply> ParseTextReply(std::string_view text, std::string_view indent = "\t");

}  // namespace sipd::legacy
