#include "legacy-transports/xmlrpc/xmlrpc_processor.h"

#include <poll.h>
#include <xmlrpc-c/base.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <vector>
#include <xmlrpc-c/base.hpp>
#include <xmlrpc-c/registry.hpp>
#include <xmlrpc-c/xml.hpp>

#include "absl/strings/str_cat.h"
#include "legacy-transports/xmlrpc/fast_call_parser.h"
#include "registry/dispatcher.h"
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

// The fixed parts of a successful methodResponse, byte for byte as xmlrpc-c 1.x writes
// them (spec 5.2); GoldenUptimeStringReply and the serialiser equivalence test pin them.
constexpr std::string_view kResponseHead =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<methodResponse>\r\n<params>\r\n"
    "<param><value>";
constexpr std::string_view kResponseTail = "</value></param>\r\n</params>\r\n</methodResponse>\r\n";

constexpr std::string_view kInternalError = "Internal server error while processing request";

// Collects a reply as xmlrpc-c values, for calls that go through the library's registry
// (system.multicall runs MI commands through the default method).
class ValueReplyWriter : public mi::ReplyWriter {
 public:
  explicit ValueReplyWriter(ReplyOption option) : option_(option) {}

  void WriteStatus(const mi::Reply& /*reply*/) override {}

  void WriteNode(const mi::Node& node, int /*depth*/) override {
    line_.clear();
    mi::AppendNodeLine(line_, node, 0, "");
    const size_t start = text_.size();
    AppendSanitizedForXml(line_, &text_);
    if (option_ == ReplyOption::kArray) elements_.push_back(XmlString(text_.substr(start)));
  }

  xmlrpc_c::value Value() const {
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

// The MI request of a call xmlrpc-c parsed. A param of an unsupported type is this
// transport's parse error; whether it matters (a no-input command ignores its params) is
// the dispatcher's decision.
void ToRequest(const std::string& method_name, const xmlrpc_c::paramList& params,
               mi::Request* request) {
  request->command = method_name;
  request->args.clear();
  request->args_error = absl::OkStatus();
  request->args.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    try {
      request->args.push_back(mi::Argument{{}, ParamToArgument(params[i])});
    } catch (const xmlrpc_c::fault& fault) {
      request->args_error = absl::InvalidArgumentError(fault.getDescription());
      break;
    }
  }
}

std::string NotAvailable(const std::string& method_name) {
  return absl::StrCat("Requested command (", method_name, ") is not available!");
}

// The fault of a finished call that is not a success (see xmlrpc_processor.h).
xmlrpc_c::fault OutcomeFault(mi::Outcome outcome, const std::string& command,
                             const mi::Reply& reply, const absl::Status& args_error,
                             bool waited_async) {
  switch (outcome) {
    case mi::Outcome::kNotAvailable:
      return MakeFault(-506, NotAvailable(command));
    case mi::Outcome::kParseError:
      return MakeFault(-501, std::string(args_error.message()));
    case mi::Outcome::kFailed:
      return MakeFault(-500, absl::StrCat("Command (", command, ") processing failed",
                                          waited_async ? " (async)" : "", ".\n"));
    case mi::Outcome::kReply:
      break;
  }
  return MakeFault(static_cast<int>(reply.code), reply.reason.empty() ? "Error" : reply.reason);
}

// Who sent the document xmlrpc-c's registry is running on this thread (set around
// processCall, read by MiDefaultMethod).
thread_local const mi::CallContext* g_current_caller = nullptr;

class CurrentCaller {
 public:
  explicit CurrentCaller(const mi::CallContext* caller) : previous_(g_current_caller) {
    g_current_caller = caller;
  }
  ~CurrentCaller() { g_current_caller = previous_; }

 private:
  const mi::CallContext* previous_;
};

// xmlrpc-c's "default method": every methodName that is not a system.* method of the
// library reaches MI through it when a call takes the library's path (system.multicall).
// It runs the command to its end synchronously; such a call cannot wait for an async
// reply (async commands answer `202 Accepted`, spec 8.3).
class MiDefaultMethod : public xmlrpc_c::defaultMethod {
 public:
  MiDefaultMethod(mi::Dispatcher& dispatcher, const XmlrpcProcessor::Options& options)
      : dispatcher_(dispatcher), options_(options) {}

  void execute(const std::string& method_name, const xmlrpc_c::paramList& params,
               xmlrpc_c::value* result) override {
    try {
      mi::Request request;
      ToRequest(method_name, params, &request);
      const absl::Status args_error = request.args_error;
      mi::CallContext context;
      if (g_current_caller != nullptr) context = *g_current_caller;
      context.transport = mi::Transport::kXmlrpc;
      context.can_wait_async = false;
      ValueReplyWriter writer(options_.reply_option);
      const mi::DispatchResult dispatched = dispatcher_.Run(context, std::move(request), &writer);
      if (dispatched.outcome != mi::Outcome::kReply || !dispatched.reply.is_success()) {
        throw OutcomeFault(dispatched.outcome, method_name, dispatched.reply, args_error, false);
      }
      *result = writer.Value();
    } catch (const xmlrpc_c::fault&) {
      throw;
    } catch (const std::exception& e) {
      spdlog::error("mi_xmlrpc: unexpected error running '{}': {}", method_name, e.what());
      throw MakeFault(-500, std::string(kInternalError));
    }
  }

 private:
  mi::Dispatcher& dispatcher_;
  const XmlrpcProcessor::Options options_;
};

void AppendFaultXml(const xmlrpc_c::fault& fault, std::string* out) {
  std::string xml;
  xmlrpc_c::xml::generateResponse(xmlrpc_c::rpcOutcome(fault), &xml);
  out->append(xml);
}

// The fault for "anything unexpected", even if serialising fails.
void AppendInternalErrorFault(std::string* out) {
  const size_t start = out->size();
  try {
    AppendFaultXml(MakeFault(-500, std::string(kInternalError)), out);
  } catch (const std::exception&) {
    // Serialising a constant fault cannot really fail; keep the no-throw promise anyway.
    out->resize(start);
    out->append(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<methodResponse>\r\n<fault>\r\n"
        "<value><struct>\r\n<member><name>faultCode</name>\r\n<value><i4>-500</i4></value>"
        "</member>\r\n<member><name>faultString</name>\r\n<value><string>Internal server "
        "error while processing request</string></value></member>\r\n</struct></value>\r\n"
        "</fault>\r\n</methodResponse>\r\n");
  }
}

}  // namespace

void AppendSanitizedForXml(std::string_view text, std::string* out) {
  out->reserve(out->size() + text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x80) {
      // Fast path: printable ASCII runs are copied as they are.
      size_t end = i + 1;
      while (end < text.size() && static_cast<unsigned char>(text[end]) >= 0x20 &&
             static_cast<unsigned char>(text[end]) < 0x80) {
        ++end;
      }
      out->append(text.substr(i, end - i));
      i = end;
      continue;
    }
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      out->push_back('\x7F');
      ++i;
      continue;
    }
    const size_t length = ValidUtf8Length(text, i);
    if (length == 0) {
      out->append(kReplacementCharacter);
      ++i;
    } else {
      out->append(text.substr(i, length));
      i += length;
    }
  }
}

std::string SanitizeForXml(std::string_view text) {
  std::string out;
  AppendSanitizedForXml(text, &out);
  return out;
}

void AppendXmlStringContent(std::string_view text, std::string* out) {
  out->reserve(out->size() + text.size());
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    std::string_view entity;
    switch (text[i]) {
      case '<':
        entity = "&lt;";
        break;
      case '>':
        entity = "&gt;";
        break;
      case '&':
        entity = "&amp;";
        break;
      case '\r':
        entity = "&#x0d;";
        break;
      default:
        continue;
    }
    out->append(text.substr(start, i - start)).append(entity);
    start = i + 1;
  }
  out->append(text.substr(start));
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

void ResponseWriter::WriteStatus(const mi::Reply& reply) {
  failed_ = !reply.is_success();
  if (failed_) return;
  out_->append(kResponseHead);
  out_->append(option_ == ReplyOption::kString ? std::string_view("<string>")
                                               : std::string_view("<array><data>\r\n"));
}

void ResponseWriter::WriteNode(const mi::Node& node, int /*depth*/) {
  if (failed_) return;
  line_.clear();
  mi::AppendNodeLine(line_, node, 0, "");
  safe_.clear();
  AppendSanitizedForXml(line_, &safe_);
  if (option_ == ReplyOption::kString) {
    AppendXmlStringContent(safe_, out_);
    return;
  }
  out_->append("<value><string>");
  AppendXmlStringContent(safe_, out_);
  out_->append("</string></value>\r\n");
}

void ResponseWriter::EndReply() {
  if (failed_) return;
  out_->append(option_ == ReplyOption::kString ? std::string_view("</string>")
                                               : std::string_view("</data></array>"));
  out_->append(kResponseTail);
}

struct XmlrpcProcessor::Impl {
  xmlrpc_c::registry registry;
  xmlrpc_c::defaultMethodPtr mi_method;
};

XmlrpcProcessor::XmlrpcProcessor(mi::Dispatcher& dispatcher, Options options)
    : options_(options), dispatcher_(dispatcher), impl_(std::make_unique<Impl>()) {
  xmlrpc_limit_set(XMLRPC_XML_SIZE_LIMIT_ID, options.max_xml_size);
  xmlrpc_limit_set(XMLRPC_NESTING_LIMIT_ID, kMaxValueNesting);
  // Owned by the registry (and by this reference-counted pointer).
  impl_->mi_method = xmlrpc_c::defaultMethodPtr(new MiDefaultMethod(dispatcher, options));
  impl_->registry.setDefaultMethod(impl_->mi_method);
}

XmlrpcProcessor::~XmlrpcProcessor() = default;

XmlrpcProcessor::Parsed XmlrpcProcessor::Parse(std::string_view call_xml, mi::Request* request,
                                               std::string* response,
                                               const mi::CallContext* caller) const {
  const size_t start = response->size();
  try {
    // The fast reader needs no guard: it stops at a DTD and below the 5th element level.
    thread_local FastCallParser fast_parser;
    if (fast_parser.Parse(call_xml, request)) return Parsed::kCall;
    if (const std::string problem = CheckXmlShape(call_xml, kMaxElementDepth); !problem.empty()) {
      AppendFaultXml(MakeFault(xmlrpc_c::fault::CODE_PARSE,
                               absl::StrCat("Call XML not a proper XML-RPC call.  ", problem)),
                     response);
      return Parsed::kAnswered;
    }
    if (LibraryParseCall(call_xml, request)) return Parsed::kCall;
    const std::string call(call_xml);
    // Parse faults and the library's own system.* methods (introspection, multicall,
    // which may call MI through the default method) take xmlrpc-c's whole path.
    std::string answer;
    {
      CurrentCaller current(caller);
      impl_->registry.processCall(call, &answer);
    }
    response->append(answer);
    return Parsed::kAnswered;
  } catch (const std::exception& e) {
    spdlog::error("mi_xmlrpc: could not process a call: {}", e.what());
  }
  response->resize(start);
  AppendInternalErrorFault(response);
  return Parsed::kAnswered;
}

bool XmlrpcProcessor::IsFault(mi::Exchange& exchange) {
  return exchange.outcome() != mi::Outcome::kReply || !exchange.reply().is_success();
}

void XmlrpcProcessor::AppendFault(mi::Exchange& exchange, const absl::Status& args_error,
                                  bool waited_async, std::string* out) const {
  const size_t start = out->size();
  try {
    AppendFaultXml(OutcomeFault(exchange.outcome(), exchange.command_name(), exchange.reply(),
                                args_error, waited_async),
                   out);
    return;
  } catch (const std::exception& e) {
    spdlog::error("mi_xmlrpc: could not write a fault: {}", e.what());
  }
  out->resize(start);
  AppendInternalErrorFault(out);
}

std::string XmlrpcProcessor::Process(std::string_view call_xml) const {
  std::string response;
  Process(call_xml, &response);
  return response;
}

void XmlrpcProcessor::Process(std::string_view call_xml, std::string* out) const {
  mi::Request request;
  if (Parse(call_xml, &request, out) == Parsed::kAnswered) return;
  const absl::Status args_error = request.args_error;
  mi::CallContext context;
  context.transport = mi::Transport::kXmlrpc;
  std::unique_ptr<mi::Exchange> exchange =
      dispatcher_.Start(context, std::move(request), mi::Delivery::kPull);
  const bool waited_async = !exchange->ready();
  while (!exchange->ready()) {
    const auto deadline = dispatcher_.NextDeadline();
    int timeout_ms = 100;
    if (deadline != mi::Dispatcher::Clock::time_point::max()) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - mi::Dispatcher::Clock::now())
              .count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, 100));
    }
    pollfd pfd{dispatcher_.wake_fd(), POLLIN, 0};
    poll(&pfd, 1, timeout_ms);
    dispatcher_.RunCompletions();
  }
  const size_t start = out->size();
  if (!IsFault(*exchange)) {
    ResponseWriter writer(options_.reply_option);
    writer.SetOutput(out);
    while (!exchange->WriteNext(writer)) {
    }
    if (exchange->outcome() == mi::Outcome::kReply) return;
    out->resize(start);  // the stream failed midway
  }
  AppendFault(*exchange, args_error, waited_async, out);
}

bool LibraryParseCall(std::string_view call_xml, mi::Request* request) {
  std::string method_name;
  xmlrpc_c::paramList params;
  try {
    xmlrpc_c::xml::parseCall(std::string(call_xml), &method_name, &params);
  } catch (const std::exception&) {
    return false;
  }
  if (method_name.starts_with("system.")) return false;
  ToRequest(method_name, params, request);
  return true;
}

void AppendFaultDocument(int code, const std::string& text, std::string* out) {
  AppendFaultXml(MakeFault(code, text), out);
}

}  // namespace sipd::xmlrpc
