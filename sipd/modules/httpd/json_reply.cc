#include "sipd/modules/httpd/json_reply.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "registry/json_text.h"

namespace sipd::httpd {

void AppendJsonString(std::string& out, std::string_view text) { mi::AppendJsonString(out, text); }

std::string JsonString(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  AppendJsonString(out, text);
  return out;
}

std::string JsonRpcError(std::string_view id_json, int64_t code, std::string_view message) {
  std::string out =
      absl::StrCat("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":", code, ",\"message\":");
  AppendJsonString(out, message);
  out.append("},\"id\":").append(id_json).append("}");
  return out;
}

void JsonRpcReplyWriter::WriteStatus(const mi::Reply& reply) {
  std::string& out = *out_;
  started_ = true;
  error_ = !reply.is_success();
  if (error_) {
    absl::StrAppend(&out, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":", reply.code, ",\"message\":");
    AppendJsonString(out, reply.reason);
    return;  // "data":{"nodes":[ opens with the first node
  }
  absl::StrAppend(&out, "{\"jsonrpc\":\"2.0\",\"result\":{\"code\":", reply.code, ",\"reason\":");
  AppendJsonString(out, reply.reason);
  if (reply.root.is_array) out.append(",\"is_array\":true");
  out.append(",\"nodes\":[");
  nodes_open_ = true;
}

void JsonRpcReplyWriter::CloseTo(size_t depth) {
  std::string& out = *out_;
  while (open_.size() > depth) {
    if (open_.back().kids_open) out.push_back(']');
    out.push_back('}');
    open_.pop_back();
  }
}

void JsonRpcReplyWriter::WriteNode(const mi::Node& node, int depth) {
  std::string& out = *out_;
  if (!nodes_open_) {  // first node of an error reply
    out.append(",\"data\":{\"nodes\":[");
    nodes_open_ = true;
  }
  // Pre-order guarantees a written parent; stay valid JSON even if a writer bug broke it.
  const size_t d = std::min(static_cast<size_t>(depth < 0 ? 0 : depth), open_.size());
  CloseTo(d);
  if (d == 0) {
    if (wrote_top_) out.push_back(',');
    wrote_top_ = true;
  } else if (OpenNode& parent = open_[d - 1]; !parent.kids_open) {
    if (parent.has_key) out.push_back(',');
    out.append("\"kids\":[");
    parent.kids_open = true;
  } else {
    out.push_back(',');
  }
  out.push_back('{');
  bool first = true;
  auto key = [&](std::string_view k) {
    if (!first) out.push_back(',');
    first = false;
    out.push_back('"');
    out.append(k);
    out.append("\":");
  };
  if (!node.name.empty()) {
    key("name");
    AppendJsonString(out, node.name);
  }
  if (!node.value.empty()) {
    key("value");
    AppendJsonString(out, node.value);
  }
  if (!node.attributes.empty()) {
    key("attributes");
    out.push_back('[');
    for (size_t i = 0; i < node.attributes.size(); ++i) {
      if (i > 0) out.push_back(',');
      out.push_back('{');
      const auto& a = node.attributes[i];
      if (!a.name.empty()) {
        out.append("\"name\":");
        AppendJsonString(out, a.name);
      }
      if (!a.value.empty()) {
        if (!a.name.empty()) out.push_back(',');
        out.append("\"value\":");
        AppendJsonString(out, a.value);
      }
      out.push_back('}');
    }
    out.push_back(']');
  }
  if (node.is_array) {
    key("is_array");
    out.append("true");
  }
  open_.push_back(OpenNode{.kids_open = false, .has_key = !first});
}

void JsonRpcReplyWriter::EndReply() {
  std::string& out = *out_;
  CloseTo(0);
  if (error_) {
    if (nodes_open_) out.append("]}");
    out.push_back('}');
  } else {
    out.append("]}");
  }
  absl::StrAppend(&out, ",\"id\":", id_json_, "}");
  finished_ = true;
}

}  // namespace sipd::httpd
