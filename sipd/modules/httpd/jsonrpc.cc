#include "sipd/modules/httpd/jsonrpc.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sipd/modules/httpd/json_reply.h"

namespace sipd::httpd {
namespace {

// ordered_json keeps named params in the caller's order.
using json = nlohmann::ordered_json;

// An argument value as MI text; false when the JSON type has no MI form.
bool ArgumentText(const json& value, std::string& text) {
  if (value.is_string()) {
    text = value.get<std::string>();
    return true;
  }
  if (value.is_number() || value.is_boolean()) {
    text = value.dump();
    return true;
  }
  return false;
}

RpcCall ParseCall(const json& element) {
  RpcCall call;
  if (!element.is_object()) {
    call.invalid_response =
        JsonRpcError("null", kJsonRpcInvalidRequest, "Invalid Request: not an object");
    return call;
  }
  const auto id = element.find("id");
  if (id == element.end()) {
    call.notification = true;
  } else if (id->is_string() || id->is_number() || id->is_null()) {
    call.id_json = id->dump(-1, ' ', false, json::error_handler_t::replace);
  } else {
    call.invalid_response = JsonRpcError("null", kJsonRpcInvalidRequest,
                                         "Invalid Request: id must be a string, number or null");
    return call;
  }
  const auto version = element.find("jsonrpc");
  if (version == element.end() || !version->is_string() || version->get<std::string>() != "2.0") {
    call.invalid_response = JsonRpcError(call.id_json, kJsonRpcInvalidRequest,
                                         "Invalid Request: \"jsonrpc\" must be \"2.0\"");
    return call;
  }
  const auto method = element.find("method");
  if (method == element.end() || !method->is_string() || method->get<std::string>().empty()) {
    call.invalid_response = JsonRpcError(call.id_json, kJsonRpcInvalidRequest,
                                         "Invalid Request: \"method\" must be a non-empty string");
    return call;
  }
  call.request.command = method->get<std::string>();
  const auto params = element.find("params");
  if (params == element.end() || params->is_null()) return call;
  auto add = [&](std::string name, const json& value) {
    std::string text;
    if (!ArgumentText(value, text)) {
      if (call.request.args_error.ok()) {
        call.request.args_error = absl::InvalidArgumentError(absl::StrCat(
            "parameter ", name.empty() ? std::to_string(call.request.args.size() + 1) : name,
            " is ", value.type_name(), ", not a string or number"));
      }
      return;
    }
    call.request.args.push_back(mi::Argument{std::move(name), std::move(text)});
  };
  if (params->is_array()) {
    for (const json& value : *params) add("", value);
  } else if (params->is_object()) {
    for (const auto& [name, value] : params->items()) add(name, value);
  } else {
    call.request.args_error = absl::InvalidArgumentError("params must be an array or an object");
  }
  return call;
}

// Deepest array/object nesting in `body` (outside strings), stopping past `limit`: the
// parser recurses per level, so a body of a million '[' must be refused before it.
size_t NestingDepth(std::string_view body, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) break;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

constexpr size_t kMaxNesting = 32;

}  // namespace

RpcBody ParseJsonRpc(std::string_view body, size_t max_batch) {
  RpcBody out;
  if (NestingDepth(body, kMaxNesting) > kMaxNesting) {
    out.error_response =
        JsonRpcError("null", kJsonRpcParseError,
                     absl::StrCat("Parse error: JSON nested deeper than ", kMaxNesting, " levels"));
    return out;
  }
  const json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    out.error_response = JsonRpcError("null", kJsonRpcParseError, "Parse error: invalid JSON");
    return out;
  }
  if (!parsed.is_array()) {
    out.calls.push_back(ParseCall(parsed));
    return out;
  }
  out.batch = true;
  if (parsed.empty()) {
    out.error_response =
        JsonRpcError("null", kJsonRpcInvalidRequest, "Invalid Request: empty batch");
    return out;
  }
  if (parsed.size() > max_batch) {
    out.error_response = JsonRpcError("null", kJsonRpcInvalidRequest,
                                      absl::StrCat("Invalid Request: batch of ", parsed.size(),
                                                   " requests is over the limit of ", max_batch));
    return out;
  }
  out.calls.reserve(parsed.size());
  for (const json& element : parsed) out.calls.push_back(ParseCall(element));
  return out;
}

}  // namespace sipd::httpd
