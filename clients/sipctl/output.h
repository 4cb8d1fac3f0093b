// How sipctl prints replies: the MI text layout shared with the FIFO transport, or a
// stable JSON form.
//
// Text: `<code> <reason>` then one line per node (spec section 2: TAB indentation,
// `name:: value attr=value`), no trailing empty line (the FIFO's final empty line is an
// end-of-reply marker, which a process exit makes unnecessary).
//
// JSON: {"code":200,"reason":"OK","nodes":[NODE...]} plus "is_array":true when the
// root's kids form an array; NODE = {"name":..,"value":..,"attributes":[{"name":..,
// "value":..}],"kids":[NODE...],"is_array":true}, each key present only when non-empty
// (MI does not distinguish empty from absent). Keys always appear in that order.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "registry/tree.h"
#include "sipd/mi/v1/mi.pb.h"

namespace sipd::sipctl {

std::string RenderReplyText(const mi::Reply& reply);
std::string RenderReplyJson(const mi::Reply& reply);

// One streamed node line (for --stream), in the text layout.
std::string RenderFlatNodeText(const mi::v1::FlatNode& node);

// `sipctl list`: one line per command, `name<TAB>module<TAB>flags` where flags is a
// comma-separated subset of no-input,mutating,async,streaming or `-`.
std::string RenderCommandListText(const mi::v1::ListCommandsResponse& list);
// JSON array of {"name","module","help","parameters":[{"name","arity","help"}],
// "flags":[...]} in registration order.
std::string RenderCommandListJson(const mi::v1::ListCommandsResponse& list);

// A JSON string literal for `text` (quotes included). Invalid UTF-8 becomes U+FFFD.
std::string JsonString(std::string_view text);

}  // namespace sipd::sipctl
