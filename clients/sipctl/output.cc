#include "clients/sipctl/output.h"

#include <cstdint>
#include <cstdio>
#include <vector>

#include "registry/json_text.h"
#include "registry/text_format.h"

namespace sipd::sipctl {
namespace {

class JsonObject {
 public:
  explicit JsonObject(std::string& out) : out_(out) { out_.push_back('{'); }
  ~JsonObject() { out_.push_back('}'); }
  std::string& Key(std::string_view key) {
    if (!first_) out_.push_back(',');
    first_ = false;
    out_.append(JsonString(key)).push_back(':');
    return out_;
  }
  void String(std::string_view key, std::string_view value) { Key(key).append(JsonString(value)); }
  void OptionalString(std::string_view key, std::string_view value) {
    if (!value.empty()) String(key, value);
  }

 private:
  std::string& out_;
  bool first_ = true;
};

void AppendNodeJson(std::string& out, const mi::Node& node) {
  JsonObject obj(out);
  obj.OptionalString("name", node.name);
  obj.OptionalString("value", node.value);
  if (!node.attributes.empty()) {
    std::string& o = obj.Key("attributes");
    o.push_back('[');
    for (size_t i = 0; i < node.attributes.size(); ++i) {
      if (i > 0) o.push_back(',');
      JsonObject attr(o);
      attr.OptionalString("name", node.attributes[i].name);
      attr.OptionalString("value", node.attributes[i].value);
    }
    o.push_back(']');
  }
  if (!node.kids.empty()) {
    std::string& o = obj.Key("kids");
    o.push_back('[');
    for (size_t i = 0; i < node.kids.size(); ++i) {
      if (i > 0) o.push_back(',');
      AppendNodeJson(o, *node.kids[i]);
    }
    o.push_back(']');
  }
  if (node.is_array) obj.Key("is_array").append("true");
}

std::vector<std::string> Flags(const mi::v1::CommandInfo& c) {
  std::vector<std::string> flags;
  if (c.no_input()) flags.push_back("no-input");
  if (c.mutating()) flags.push_back("mutating");
  if (c.async()) flags.push_back("async");
  if (c.streaming()) flags.push_back("streaming");
  return flags;
}

std::string_view ArityName(mi::v1::ParameterInfo::Arity arity) {
  switch (arity) {
    case mi::v1::ParameterInfo::REQUIRED:
      return "required";
    case mi::v1::ParameterInfo::OPTIONAL:
      return "optional";
    case mi::v1::ParameterInfo::REPEATED:
      return "repeated";
    default:
      return "unspecified";
  }
}

}  // namespace

std::string JsonString(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  mi::AppendJsonString(out, text);
  return out;
}

std::string RenderReplyText(const mi::Reply& reply) {
  return mi::RenderText(reply, mi::kDefaultIndent, /*final_empty_line=*/false);
}

std::string RenderReplyJson(const mi::Reply& reply) {
  std::string out;
  {
    JsonObject obj(out);
    obj.Key("code").append(std::to_string(reply.code));
    obj.String("reason", reply.reason);
    std::string& o = obj.Key("nodes");
    o.push_back('[');
    for (size_t i = 0; i < reply.root.kids.size(); ++i) {
      if (i > 0) o.push_back(',');
      AppendNodeJson(o, *reply.root.kids[i]);
    }
    o.push_back(']');
    if (reply.root.is_array) obj.Key("is_array").append("true");
  }
  out.push_back('\n');
  return out;
}

std::string RenderFlatNodeText(const mi::v1::FlatNode& flat) {
  mi::Node node(flat.name(), flat.value());
  for (const auto& a : flat.attributes()) node.AddAttribute(a.name(), a.value());
  std::string out;
  mi::AppendNodeLine(out, node, static_cast<int>(flat.depth()), mi::kDefaultIndent);
  return out;
}

std::string RenderCommandListText(const mi::v1::ListCommandsResponse& list) {
  std::string out;
  for (const auto& c : list.commands()) {
    out.append(c.name()).append("\t").append(c.module()).append("\t");
    const std::vector<std::string> flags = Flags(c);
    if (flags.empty()) out.append("-");
    for (size_t i = 0; i < flags.size(); ++i) {
      if (i > 0) out.push_back(',');
      out.append(flags[i]);
    }
    out.push_back('\n');
  }
  return out;
}

std::string RenderCommandListJson(const mi::v1::ListCommandsResponse& list) {
  std::string out = "[";
  for (int i = 0; i < list.commands_size(); ++i) {
    const auto& c = list.commands(i);
    if (i > 0) out.push_back(',');
    JsonObject obj(out);
    obj.String("name", c.name());
    obj.String("module", c.module());
    obj.String("help", c.help());
    std::string& params = obj.Key("parameters");
    params.push_back('[');
    for (int p = 0; p < c.parameters_size(); ++p) {
      if (p > 0) params.push_back(',');
      JsonObject param(params);
      param.String("name", c.parameters(p).name());
      param.String("arity", ArityName(c.parameters(p).arity()));
      param.String("help", c.parameters(p).help());
    }
    params.push_back(']');
    std::string& flags_out = obj.Key("flags");
    flags_out.push_back('[');
    const std::vector<std::string> flags = Flags(c);
    for (size_t f = 0; f < flags.size(); ++f) {
      if (f > 0) flags_out.push_back(',');
      flags_out.append(JsonString(flags[f]));
    }
    flags_out.push_back(']');
  }
  out.append("]\n");
  return out;
}

}  // namespace sipd::sipctl
