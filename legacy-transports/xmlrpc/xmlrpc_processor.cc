#include "legacy-transports/xmlrpc/xmlrpc_processor.h"

#include <xmlrpc-c/base.h>

#include <cstdio>
#include <exception>
#include <vector>
#include <xmlrpc-c/base.hpp>
#include <xmlrpc-c/registry.hpp>
#include <xmlrpc-c/xml.hpp>

#include "absl/strings/str_cat.h"
#include "registry/dispatch.h"
#include "registry/reply_writer.h"
#include "registry/text_format.h"
#include "spdlog/spdlog.h"

namespace sipd::xmlrpc {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence starting at `s[i]`, or 0 if it is not valid (or
// encodes a code point XML 1.0 forbids: surrogates, U+FFFE, U+FFFF).
size_t ValidUtf8Length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  size_t length;
  uint32_t code_point;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    length = 2;
    code_point = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    length = 3;
    code_point = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    length = 4;
    code_point = c & 0x07;
  } else {
    return 0;
  }
  if (i + length > s.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (byte(i + k) & 0x3F);
  }
  const bool overlong =
      (length == 3 && code_point < 0x800) || (length == 4 && code_point < 0x10000);
  if (overlong || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF) ||
      code_point == 0xFFFE || code_point == 0xFFFF) {
    return 0;
  }
  return length;
}

// A string value that keeps CR bytes (serialised as &#x0d;); the plain constructor would
// drop them.
xmlrpc_c::value_string XmlString(const std::string& text) {
  return xmlrpc_c::value_string(text, xmlrpc_c::value_string::nlCode_lf);
}

xmlrpc_c::fault MakeFault(int code, const std::string& text) {
  return xmlrpc_c::fault(SanitizeForXml(text), static_cast<xmlrpc_c::fault::code_t>(code));
}

// Collects the reply as Dispatch streams it: node lines go straight into the string (or
// array) as the handler flushes, so the tree is never held whole.
class XmlrpcReplyWriter : public mi::ReplyWriter {
 public:
  XmlrpcReplyWriter(ReplyOption option, size_t buffer_size) : option_(option) {
    if (option_ == ReplyOption::kString) text_.reserve(buffer_size);
  }

  void WriteStatus(const mi::Reply& /*reply*/) override {
    // The status line is never transmitted (spec 5.4); the code decides success later.
  }

  void WriteNode(const mi::Node& node, int /*depth*/) override {
    line_.clear();
    mi::AppendNodeLine(line_, node, 0, "");
    if (option_ == ReplyOption::kString) {
      text_.append(SanitizeForXml(line_));
    } else {
      elements_.push_back(XmlString(SanitizeForXml(line_)));
    }
  }

  xmlrpc_c::value Result() {
    if (option_ == ReplyOption::kString) return XmlString(text_);
    return xmlrpc_c::value_array(elements_);
  }

 private:
  const ReplyOption option_;
  std::string line_;
  std::string text_;
  std::vector<xmlrpc_c::value> elements_;
};

// Converts one XML-RPC param to an MI argument value (spec 5.3).
std::string ParamToArgument(const xmlrpc_c::value& param) {
  char number[64];
  switch (param.type()) {
    case xmlrpc_c::value::TYPE_STRING:
      return RewriteDoubleNewlines(static_cast<std::string>(xmlrpc_c::value_string(param)));
    case xmlrpc_c::value::TYPE_INT:
      snprintf(number, sizeof(number), "%d", static_cast<int>(xmlrpc_c::value_int(param)));
      return number;
    case xmlrpc_c::value::TYPE_BOOLEAN:
      return static_cast<bool>(xmlrpc_c::value_boolean(param)) ? "1" : "0";
    case xmlrpc_c::value::TYPE_DOUBLE:
      snprintf(number, sizeof(number), "%lf", static_cast<double>(xmlrpc_c::value_double(param)));
      return number;
    case xmlrpc_c::value::TYPE_BYTESTRING: {
      const std::vector<unsigned char> bytes = xmlrpc_c::value_bytestring(param).vectorUcharValue();
      return std::string(bytes.begin(), bytes.end());
    }
    default:
      throw MakeFault(-501, absl::StrCat("Unsupported value of type ",
                                         static_cast<int>(param.type()), " supplied"));
  }
}

// The xmlrpc-c "default method": every methodName that is not a system.* method of the
// library reaches MI here.
class MiDefaultMethod : public xmlrpc_c::defaultMethod {
 public:
  MiDefaultMethod(const mi::Registry& registry, const XmlrpcProcessor::Options& options)
      : registry_(registry), options_(options) {}

  void execute(const std::string& method_name, const xmlrpc_c::paramList& params,
               xmlrpc_c::value* result) override {
    try {
      Run(method_name, params, result);
    } catch (const xmlrpc_c::fault&) {
      throw;
    } catch (const std::exception& e) {
      spdlog::error("mi_xmlrpc: unexpected error running '{}': {}", method_name, e.what());
      throw MakeFault(-500, "Internal server error while processing request");
    }
  }

 private:
  void Run(const std::string& method_name, const xmlrpc_c::paramList& params,
           xmlrpc_c::value* result) const {
    const mi::Command* command = registry_.Find(method_name);
    const std::string not_available =
        absl::StrCat("Requested command (", method_name, ") is not available!");
    if (command == nullptr) throw MakeFault(-506, not_available);

    mi::Request request;
    request.command = method_name;
    if (!command->has_flag(mi::kNoInput)) {
      request.args.reserve(params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        request.args.push_back(mi::Argument{{}, ParamToArgument(params[i])});
      }
    }

    XmlrpcReplyWriter writer(options_.reply_option, options_.buffer_size);
    const mi::DispatchResult dispatched = mi::Dispatch(registry_, request, &writer);
    switch (dispatched.outcome) {
      case mi::Outcome::kNotAvailable:
        throw MakeFault(-506, not_available);
      case mi::Outcome::kFailed:
        throw MakeFault(-500, absl::StrCat("Command (", method_name, ") processing failed.\n"));
      case mi::Outcome::kReply:
        break;
    }
    if (!dispatched.reply.is_success()) {
      throw MakeFault(static_cast<int>(dispatched.reply.code),
                      dispatched.reply.reason.empty() ? "Error" : dispatched.reply.reason);
    }
    *result = writer.Result();
  }

  const mi::Registry& registry_;
  const XmlrpcProcessor::Options options_;
};

std::string FaultDocument(int code, const std::string& text) {
  std::string xml;
  xmlrpc_c::xml::generateResponse(xmlrpc_c::rpcOutcome(MakeFault(code, text)), &xml);
  return xml;
}

}  // namespace

std::string SanitizeForXml(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      out.push_back('\x7F');
      ++i;
      continue;
    }
    const size_t length = ValidUtf8Length(text, i);
    if (length == 0) {
      out.append(kReplacementCharacter);
      ++i;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  return out;
}

std::string RewriteDoubleNewlines(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' && i + 1 < text.size() && text[i + 1] == '\n') {
      out.append("\r\n");
      ++i;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::string CheckXmlShape(std::string_view xml, int max_element_depth) {
  // A lexical scan, not a parser: it only has to find markup declarations and measure
  // element depth; everything else is left to xmlrpc-c, which rejects malformed XML.
  auto skip_past = [&](size_t from, std::string_view terminator) {
    const size_t end = xml.find(terminator, from);
    return end == std::string_view::npos ? xml.size() : end + terminator.size();
  };
  int depth = 0;
  size_t i = 0;
  while (i < xml.size()) {
    i = xml.find('<', i);
    if (i == std::string_view::npos) break;
    const std::string_view rest = xml.substr(i);
    if (rest.starts_with("<?")) {
      i = skip_past(i + 2, "?>");
    } else if (rest.starts_with("<!--")) {
      i = skip_past(i + 4, "-->");
    } else if (rest.starts_with("<![CDATA[")) {
      i = skip_past(i + 9, "]]>");
    } else if (rest.starts_with("<!")) {
      return "DTDs and entity declarations (<!DOCTYPE>, <!ENTITY>) are not accepted";
    } else if (rest.starts_with("</")) {
      --depth;
      i = skip_past(i + 2, ">");
    } else {
      // Start tag: find its '>' outside quoted attribute values.
      char quote = 0;
      size_t k = i + 1;
      for (; k < xml.size(); ++k) {
        const char c = xml[k];
        if (quote != 0) {
          if (c == quote) quote = 0;
        } else if (c == '"' || c == '\'') {
          quote = c;
        } else if (c == '>') {
          break;
        }
      }
      if (k >= xml.size()) break;
      if (xml[k - 1] != '/' && ++depth > max_element_depth) {
        return absl::StrCat("XML elements nested deeper than ", max_element_depth);
      }
      i = k + 1;
    }
  }
  return {};
}

struct XmlrpcProcessor::Impl {
  xmlrpc_c::registry registry;
};

XmlrpcProcessor::XmlrpcProcessor(const mi::Registry& registry, Options options)
    : impl_(std::make_unique<Impl>()) {
  xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, options.max_xml_size);
  xmlrpc_limit_set(XMLRPC_NESTING_LIMIT_ID, kMaxValueNesting);
  impl_->registry.setDefaultMethod(
      xmlrpc_c::defaultMethodPtr(new MiDefaultMethod(registry, options)));
}

XmlrpcProcessor::~XmlrpcProcessor() = default;

std::string XmlrpcProcessor::Process(std::string_view call_xml) const {
  try {
    if (const std::string problem = CheckXmlShape(call_xml, kMaxElementDepth); !problem.empty()) {
      return FaultDocument(xmlrpc_c::fault::CODE_PARSE,
                           absl::StrCat("Call XML not a proper XML-RPC call.  ", problem));
    }
    std::string response;
    impl_->registry.processCall(std::string(call_xml), &response);
    return response;
  } catch (const std::exception& e) {
    spdlog::error("mi_xmlrpc: could not process a call: {}", e.what());
  }
  try {
    return FaultDocument(-500, "Internal server error while processing request");
  } catch (const std::exception&) {
    // Serialising a constant fault cannot really fail; keep the no-throw promise anyway.
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<methodResponse>\r\n<fault>\r\n"
           "<value><struct>\r\n<member><name>faultCode</name>\r\n<value><i4>-500</i4></value>"
           "</member>\r\n<member><name>faultString</name>\r\n<value><string>Internal server "
           "error while processing request</string></value></member>\r\n</struct></value>\r\n"
           "</fault>\r\n</methodResponse>\r\n";
  }
}

}  // namespace sipd::xmlrpc
