// The MI text layout shared by FIFO, datagram, XML-RPC and sipctl (spec section 2).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "registry/tree.h"

namespace sipd::mi {

inline constexpr std::string_view kDefaultIndent = "\t";

// Appends `<code> <reason>\n`.
void AppendStatusLine(std::string& out, uint32_t code, std::string_view reason);

// Appends `<indent x depth>[<name>:: ][<value>]{ <attr>=<value>}\n`.
void AppendNodeLine(std::string& out, const Node& node, int depth, std::string_view indent);

// Renders a whole reply: status line, node lines, and (if `final_empty_line`) one
// empty line, as FIFO writes it.
std::string RenderText(const Reply& reply, std::string_view indent, bool final_empty_line);

}  // namespace sipd::mi
