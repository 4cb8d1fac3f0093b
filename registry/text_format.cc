#include "registry/text_format.h"

namespace sipd::mi {
namespace {

void AppendNodes(std::string& out, const Node& parent, int depth, std::string_view indent) {
  for (const auto& kid : parent.kids) {
    AppendNodeLine(out, *kid, depth, indent);
    AppendNodes(out, *kid, depth + 1, indent);
  }
}

}  // namespace

void AppendStatusLine(std::string& out, uint32_t code, std::string_view reason) {
  out.append(std::to_string(code)).append(" ").append(reason).push_back('\n');
}

void AppendNodeLine(std::string& out, const Node& node, int depth, std::string_view indent) {
  for (int i = 0; i < depth; ++i) out.append(indent);
  if (!node.name.empty()) out.append(node.name).append(":: ");
  out.append(node.value);
  for (const auto& attr : node.attributes) {
    out.append(" ").append(attr.name).append("=").append(attr.value);
  }
  out.push_back('\n');
}

std::string RenderText(const Reply& reply, std::string_view indent, bool final_empty_line) {
  std::string out;
  AppendStatusLine(out, reply.code, reply.text_reason());
  AppendNodes(out, reply.root, 0, indent);
  if (final_empty_line) out.push_back('\n');
  return out;
}

}  // namespace sipd::mi
