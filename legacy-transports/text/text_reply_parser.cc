#include "legacy-transports/text/text_reply_parser.h"

#include <charconv>
#include <vector>

#include "absl/strings/str_cat.h"

namespace sipd::legacy {
namespace {

bool IsAttributeKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

// Position of the next ` key=` boundary at or after `from`, or npos.
size_t NextAttribute(std::string_view text, size_t from) {
  for (size_t i = text.find(' ', from); i != std::string_view::npos; i = text.find(' ', i + 1)) {
    size_t j = i + 1;
    while (j < text.size() && IsAttributeKeyChar(text[j])) ++j;
    if (j > i + 1 && j < text.size() && text[j] == '=') return i;
  }
  return std::string_view::npos;
}

void ParseNodeBody(std::string_view body, mi::Node& node) {
  const size_t colons = body.find(":: ");
  if (colons != std::string_view::npos) {
    node.name = std::string(body.substr(0, colons));
    body.remove_prefix(colons + 3);
  }
  size_t attr = NextAttribute(body, 0);
  node.value = std::string(body.substr(0, attr));
  while (attr != std::string_view::npos) {
    const size_t eq = body.find('=', attr);
    const size_t next = NextAttribute(body, eq + 1);
    node.attributes.push_back(mi::Attribute{
        std::string(body.substr(attr + 1, eq - attr - 1)),
        std::string(body.substr(
            eq + 1, next == std::string_view::npos ? std::string_view::npos : next - eq - 1))});
    attr = next;
  }
}

}  // namespace

absl::StatusOr<mi::Reply> ParseTextReply(std::string_view text, std::string_view indent) {
  mi::Reply reply;
  bool have_status = false;
  // stack[d] = the node that receives kids at depth d (stack[0] = root).
  std::vector<mi::Node*> stack = {&reply.root};
  while (!text.empty()) {
    const size_t lf = text.find('\n');
    if (lf == std::string_view::npos) return absl::InvalidArgumentError("last line has no LF");
    std::string_view line = text.substr(0, lf);
    text.remove_prefix(lf + 1);
    if (line.empty()) continue;
    if (!have_status) {
      const size_t space = line.find(' ');
      auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), reply.code);
      if (ec != std::errc() || space == std::string_view::npos || end != line.data() + space) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad status line '", absl::string_view(line.data(), line.size()), "'"));
      }
      reply.reason = std::string(line.substr(space + 1));
      have_status = true;
      continue;
    }
    size_t depth = 0;
    if (!indent.empty()) {
      while (line.substr(0, indent.size()) == indent) {
        line.remove_prefix(indent.size());
        ++depth;
      }
    }
    if (depth >= stack.size()) {
      return absl::InvalidArgumentError(absl::StrCat("node at depth ", depth, " has no parent"));
    }
    stack.resize(depth + 1);
    mi::Node& node = stack.back()->AddKid({});
    ParseNodeBody(line, node);
    stack.push_back(&node);
  }
  if (!have_status) return absl::InvalidArgumentError("no status line");
  return reply;
}

}  // namespace sipd::legacy
