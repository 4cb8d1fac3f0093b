#include "legacy-transports/xmlrpc/fast_call_parser.h"

#include <dlfcn.h>
#include <expat.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/match.h"
#include "legacy-transports/xmlrpc/xmlrpc_processor.h"

namespace sipd::xmlrpc {
namespace {

// Where the reader is; each element may only appear where the grammar in the header
// allows it.
enum class Where {
  kDocument,
  kCall,
  kMethodName,
  kParams,
  kParam,
  kValue,
  kTyped,
  kCallDone,
};

enum class Type { kNone, kString, kInt, kBoolean };

bool IsXmlSpace(std::string_view text) {
  for (const char c : text) {
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  }
  return true;
}

// xmlrpc-c accepts only characters of the Basic Multilingual Plane (no 4-byte UTF-8).
bool OutsideBmp(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) >= 0xF0) return true;
  }
  return false;
}

// xmlrpc-c hands string values out with CR LF and lone CR (which can only come from
// character references: the XML parser already turned literal ones into LF) as LF.
void NormalizeNewlines(std::string* text) {
  if (text->find('\r') == std::string::npos) return;
  size_t out = 0;
  for (size_t i = 0; i < text->size(); ++i) {
    if ((*text)[i] == '\r') {
      (*text)[out++] = '\n';
      if (i + 1 < text->size() && (*text)[i + 1] == '\n') ++i;
    } else {
      (*text)[out++] = (*text)[i];
    }
  }
  text->resize(out);
}

// -?[0-9]+ within int32, printed as printf("%d") would.
bool ConvertInt(const std::string& text, std::string* out) {
  size_t i = 0;
  const bool negative = !text.empty() && text[0] == '-';
  if (negative) i = 1;
  if (i == text.size() || text.size() - i > 10) return false;
  int64_t value = 0;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    value = value * 10 + (text[i] - '0');
  }
  if (negative) value = -value;
  if (value < std::numeric_limits<int32_t>::min() || value > std::numeric_limits<int32_t>::max()) {
    return false;
  }
  char number[16];
  snprintf(number, sizeof(number), "%d", static_cast<int>(value));
  out->assign(number);
  return true;
}

// xmlrpc-c's bundled parser (libxmlrpc_xmlparse) exports an unprefixed XML_SetHashSalt
// of its own, for its own parser structure. Which definition a call binds to depends on
// the link order; calling the wrong one on an expat parser would corrupt it. So the salt
// is only set when the symbol is expat's (it is in our build: libexpat comes first);
// otherwise expat draws a salt from the system per document (one getrandom call).
bool HashSaltIsExpats() {
  static const bool is_expats = [] {
    Dl_info info{};
    return dladdr(reinterpret_cast<void*>(&XML_SetHashSalt), &info) != 0 &&
           info.dli_fname != nullptr && std::strstr(info.dli_fname, "libexpat") != nullptr;
  }();
  return is_expats;
}

}  // namespace

struct FastCallParser::State {
  XML_Parser parser = nullptr;
  mi::Request* request = nullptr;
  Where where = Where::kDocument;
  Type type = Type::kNone;
  bool have_name = false;
  bool have_params = false;
  bool have_value = false;
  bool ok = true;
  // Character data of the value (untyped) or of its typed child.
  std::string text;

  void Fail() {
    if (!ok) return;
    ok = false;
    XML_StopParser(parser, XML_FALSE);
  }

  void Start(const char* name, const char** attributes) {
    if (!ok) return;
    if (attributes[0] != nullptr) return Fail();
    switch (where) {
      case Where::kDocument:
        if (std::strcmp(name, "methodCall") != 0) return Fail();
        where = Where::kCall;
        return;
      case Where::kCall:
        if (!have_name && !have_params && std::strcmp(name, "methodName") == 0) {
          where = Where::kMethodName;
          text.clear();
          return;
        }
        if (have_name && !have_params && std::strcmp(name, "params") == 0) {
          where = Where::kParams;
          have_params = true;
          return;
        }
        return Fail();
      case Where::kParams:
        if (std::strcmp(name, "param") != 0) return Fail();
        where = Where::kParam;
        have_value = false;
        return;
      case Where::kParam:
        if (have_value || std::strcmp(name, "value") != 0) return Fail();
        where = Where::kValue;
        type = Type::kNone;
        text.clear();
        return;
      case Where::kValue:
        // Only whitespace may precede the typed element (it is not part of the value).
        if (type != Type::kNone || !IsXmlSpace(text)) return Fail();
        if (std::strcmp(name, "string") == 0) {
          type = Type::kString;
        } else if (std::strcmp(name, "i4") == 0 || std::strcmp(name, "int") == 0) {
          type = Type::kInt;
        } else if (std::strcmp(name, "boolean") == 0) {
          type = Type::kBoolean;
        } else {
          return Fail();
        }
        where = Where::kTyped;
        text.clear();
        return;
      case Where::kMethodName:
      case Where::kTyped:
      case Where::kCallDone:
        return Fail();
    }
  }

  void End() {
    if (!ok) return;
    switch (where) {
      case Where::kMethodName:
        for (const char c : text) {
          if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0xF0) {
            return Fail();
          }
        }
        request->command = text;
        have_name = true;
        where = Where::kCall;
        return;
      case Where::kTyped:
        where = Where::kValue;
        return;
      case Where::kValue: {
        std::string argument;
        switch (type) {
          case Type::kNone:
          case Type::kString:
            if (OutsideBmp(text)) return Fail();
            NormalizeNewlines(&text);
            argument = RewriteDoubleNewlines(text);
            break;
          case Type::kInt:
            if (!ConvertInt(text, &argument)) return Fail();
            break;
          case Type::kBoolean:
            if (text != "0" && text != "1") return Fail();
            argument = text;
            break;
        }
        request->args.push_back(mi::Argument{{}, std::move(argument)});
        have_value = true;
        where = Where::kParam;
        return;
      }
      case Where::kParam:
        if (!have_value) return Fail();
        where = Where::kParams;
        return;
      case Where::kParams:
        where = Where::kCall;
        return;
      case Where::kCall:
        if (!have_name) return Fail();
        where = Where::kCallDone;
        return;
      case Where::kDocument:
      case Where::kCallDone:
        return Fail();
    }
  }

  void Characters(const char* data, int length) {
    if (!ok) return;
    const std::string_view chunk(data, static_cast<size_t>(length));
    switch (where) {
      case Where::kMethodName:
      case Where::kTyped:
        text.append(chunk);
        return;
      case Where::kValue:
        // Untyped text, or whitespace around the typed element.
        if (type != Type::kNone && !IsXmlSpace(chunk)) return Fail();
        if (type == Type::kNone) text.append(chunk);
        return;
      default:
        if (!IsXmlSpace(chunk)) Fail();
        return;
    }
  }
};

namespace {

void OnStart(void* user, const XML_Char* name, const XML_Char** attributes) {
  static_cast<FastCallParser::State*>(user)->Start(name, attributes);
}
void OnEnd(void* user, const XML_Char* /*name*/) {
  static_cast<FastCallParser::State*>(user)->End();
}
void OnCharacters(void* user, const XML_Char* data, int length) {
  static_cast<FastCallParser::State*>(user)->Characters(data, length);
}
// Anything beyond the plain grammar: let xmlrpc-c decide.
void OnComment(void* user, const XML_Char* /*data*/) {
  static_cast<FastCallParser::State*>(user)->Fail();
}
void OnInstruction(void* user, const XML_Char* /*target*/, const XML_Char* /*data*/) {
  static_cast<FastCallParser::State*>(user)->Fail();
}
void OnCdata(void* user) { static_cast<FastCallParser::State*>(user)->Fail(); }
void OnDoctype(void* user, const XML_Char*, const XML_Char*, const XML_Char*, int) {
  static_cast<FastCallParser::State*>(user)->Fail();
}
void OnDeclaration(void* user, const XML_Char* /*version*/, const XML_Char* encoding,
                   int /*standalone*/) {
  if (encoding != nullptr && !absl::EqualsIgnoreCase(encoding, "UTF-8")) {
    static_cast<FastCallParser::State*>(user)->Fail();
  }
}

}  // namespace

FastCallParser::FastCallParser() : state_(std::make_unique<State>()) {}

FastCallParser::~FastCallParser() {
  if (state_->parser != nullptr) XML_ParserFree(state_->parser);
}

bool FastCallParser::Parse(std::string_view xml, mi::Request* request) {
  // A byte-order mark or a UTF-16 document: not ours.
  if (!xml.empty() && (static_cast<unsigned char>(xml[0]) >= 0xEF || xml[0] == '\0')) {
    return false;
  }
  if (xml.size() > 1 && xml[1] == '\0') return false;
  if (xml.size() > static_cast<size_t>(std::numeric_limits<int>::max())) return false;

  // The XML declarations clients send say nothing expat does not assume without one
  // (XML 1.0, UTF-8), yet processing one costs expat about as much as the rest of a
  // small call: skip these exact forms. Anything else (another encoding, standalone,
  // a declaration elsewhere) is still expat's to read.
  static constexpr std::string_view kPlainDeclarations[] = {
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "<?xml version=\"1.0\"?>",
      "<?xml version='1.0'?>", "<?xml version=\"1.0\" encoding=\"utf-8\"?>"};
  for (const std::string_view declaration : kPlainDeclarations) {
    if (xml.starts_with(declaration)) {
      xml.remove_prefix(declaration.size());
      // A second declaration right after would now look like the first one.
      if (xml.starts_with("<?")) return false;
      break;
    }
  }

  State& s = *state_;
  if (s.parser == nullptr) {
    s.parser = XML_ParserCreate(nullptr);
    if (s.parser == nullptr) return false;
  } else if (XML_ParserReset(s.parser, nullptr) != XML_TRUE) {
    return false;
  }
  // A fixed salt: expat would otherwise read the system's random source per document.
  // The salt protects hash tables of attribute names against collisions; we refuse
  // every attribute anyway.
  if (HashSaltIsExpats()) XML_SetHashSalt(s.parser, 0x5eed5a17);
  XML_SetUserData(s.parser, &s);
  XML_SetElementHandler(s.parser, OnStart, OnEnd);
  XML_SetCharacterDataHandler(s.parser, OnCharacters);
  XML_SetCommentHandler(s.parser, OnComment);
  XML_SetProcessingInstructionHandler(s.parser, OnInstruction);
  XML_SetStartCdataSectionHandler(s.parser, OnCdata);
  XML_SetStartDoctypeDeclHandler(s.parser, OnDoctype);
  XML_SetXmlDeclHandler(s.parser, OnDeclaration);

  s.request = request;
  s.where = Where::kDocument;
  s.type = Type::kNone;
  s.have_name = false;
  s.have_params = false;
  s.have_value = false;
  s.ok = true;
  request->command.clear();
  request->args.clear();
  request->args_error = absl::OkStatus();

  const XML_Status status =
      XML_Parse(s.parser, xml.data(), static_cast<int>(xml.size()), /*isFinal=*/XML_TRUE);
  s.request = nullptr;
  if (status != XML_STATUS_OK || !s.ok || s.where != Where::kCallDone) return false;
  if (request->command.empty() || request->command.starts_with("system.")) return false;
  return true;
}

}  // namespace sipd::xmlrpc
