#include "clients/sipctl/output.h"

#include <cstdint>
#include <cstdio>
#include <vector>

#include "registry/text_format.h"

namespace sipd::sipctl {
namespace {

// Length of a valid UTF-8 sequence at `i`, 0 if invalid.
size_t Utf8Length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const auto cont = [&](size_t k, uint8_t lo, uint8_t hi) {
    return k < s.size() && b(k) >= lo && b(k) <= hi;
  };
  const uint8_t b0 = b(i);
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(i + 1, 0x80, 0xBF) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    const uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2, 0x80, 0xBF) ? 3 : 0;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    const uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2, 0x80, 0xBF) && cont(i + 3, 0x80, 0xBF) ? 4 : 0;
  }
  return 0;
}

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
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t n = Utf8Length(text, i);
      if (n == 0) {
        out.append("\\ufffd");
        ++i;
      } else {
        out.append(text.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out.append("\\u00");
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xF]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
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
