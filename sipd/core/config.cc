#include "sipd/core/config.h"

#include <arpa/inet.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"
#include "registry/status_macros.h"

namespace sipd {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

struct Token {
  enum Kind { kWord, kString, kPunct, kEnd } kind = kEnd;
  std::string text;
  int line = 0;
};

bool IsPunct(char c) { return c == '=' || c == '(' || c == ')' || c == ',' || c == ';'; }

// Splits the text into words, quoted strings and punctuation; `#` starts a comment.
class Lexer {
 public:
  Lexer(std::string_view text, std::string_view file) : text_(text), file_(file) {}

  absl::StatusOr<std::vector<Token>> Run() {
    std::vector<Token> tokens;
    while (true) {
      SkipSpaceAndComments();
      if (pos_ >= text_.size()) break;
      const char c = text_[pos_];
      if (c == '"') {
        auto s = QuotedString();
        if (!s.ok()) return s.status();
        tokens.push_back(Token{Token::kString, *std::move(s), line_});
      } else if (IsPunct(c)) {
        tokens.push_back(Token{Token::kPunct, std::string(1, c), line_});
        ++pos_;
      } else {
        const size_t start = pos_;
        while (pos_ < text_.size() && !IsSpace(text_[pos_]) && !IsPunct(text_[pos_]) &&
               text_[pos_] != '"' && text_[pos_] != '#') {
          ++pos_;
        }
        tokens.push_back(
            Token{Token::kWord, std::string(text_.substr(start, pos_ - start)), line_});
      }
    }
    // Errors about a missing token point at the line of the last one seen.
    tokens.push_back(Token{Token::kEnd, "", tokens.empty() ? line_ : tokens.back().line});
    return tokens;
  }

 private:
  static bool IsSpace(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
  }

  void SkipSpaceAndComments() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '\n') {
        ++line_;
        ++pos_;
      } else if (IsSpace(c)) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  absl::StatusOr<std::string> QuotedString() {
    const int start_line = line_;
    ++pos_;  // opening quote
    std::string out;
    while (pos_ < text_.size()) {
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (c == '\n') break;  // strings do not span lines
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= text_.size()) break;
      const char e = text_[pos_++];
      switch (e) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 't':
          out.push_back('\t');
          break;
        default:
          return absl::InvalidArgumentError(absl::StrCat(
              AbslView(file_), ":", start_line, ": unknown escape sequence \\", std::string(1, e)));
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(file_), ":", start_line, ": missing closing quote"));
  }

  std::string_view text_;
  std::string_view file_;
  size_t pos_ = 0;
  int line_ = 1;
};

// Decimal, negative, octal (leading 0) or hex (0x) integer; the whole word must be used.
std::optional<int64_t> ParseInteger(const std::string& word) {
  if (word.empty()) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(word.c_str(), &end, 0);
  if (errno != 0 || end == word.c_str() || *end != '\0') return std::nullopt;
  return static_cast<int64_t>(v);
}

// Strips a directory and a ".so" suffix: loadmodule "modules/mi_fifo/mi_fifo.so".
std::string ModuleNameFromPath(std::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash != std::string_view::npos) path.remove_prefix(slash + 1);
  if (path.size() > 3 && path.substr(path.size() - 3) == ".so") path.remove_suffix(3);
  return std::string(path);
}

class Parser {
 public:
  Parser(std::vector<Token> tokens, std::string_view file, const ModuleFactory& factory,
         const ParseOptions& options)
      : tokens_(std::move(tokens)), file_(file), factory_(factory), options_(options) {
    config_.file = std::string(file);
  }

  absl::StatusOr<Config> Run() {
    while (Peek().kind != Token::kEnd) {
      const Token& t = Next();
      if (t.kind != Token::kWord) {
        return Error(t.line, absl::StrCat("unexpected '", t.text, "' at start of statement"));
      }
      absl::Status s;
      if (t.text == "loadmodule") {
        s = LoadModule(t);
      } else if (t.text == "modparam") {
        s = ModParam(t);
      } else {
        s = Assignment(t);
      }
      if (!s.ok()) return s;
      // Optional statement terminator.
      if (Peek().kind == Token::kPunct && Peek().text == ";") Next();
    }
    // run_dir is final now: ${run_dir} can be expanded.
    for (PendingParam& pending : pending_params_) {
      SIPD_RETURN_IF_ERROR(ApplyParam(pending));
    }
    if (config_.listen.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(AbslView(file_), ": no listen socket configured (listen = udp:IP:PORT)"));
    }
    return std::move(config_);
  }

 private:
  const Token& Peek() const { return tokens_[pos_]; }
  const Token& Next() {
    const Token& t = tokens_[pos_];
    if (t.kind != Token::kEnd) ++pos_;
    return t;
  }

  absl::Status Error(int line, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(file_), ":", line, ": ", AbslView(what)));
  }

  static std::string Describe(const Token& t) {
    switch (t.kind) {
      case Token::kEnd:
        return "end of file";
      case Token::kString:
        return absl::StrCat("\"", t.text, "\"");
      default:
        return absl::StrCat("'", t.text, "'");
    }
  }

  absl::Status Expect(std::string_view punct, std::string_view context) {
    const Token& t = Peek();
    if (t.kind == Token::kPunct && t.text == punct) {
      Next();
      return absl::OkStatus();
    }
    return Error(t.line, absl::StrCat("expected '", AbslView(punct), "' ", AbslView(context),
                                      ", got ", Describe(t)));
  }

  absl::StatusOr<std::string> ExpectString(std::string_view context) {
    const Token& t = Peek();
    if (t.kind != Token::kString) {
      return Error(t.line, absl::StrCat("expected a quoted string ", AbslView(context), ", got ",
                                        Describe(t)));
    }
    return Next().text;
  }

  absl::Status LoadModule(const Token& keyword) {
    SIPD_ASSIGN_OR_RETURN(std::string path, ExpectString("after loadmodule"));
    const std::string name = ModuleNameFromPath(path);
    for (const auto& m : config_.modules) {
      if (m.name == name) {
        return Error(keyword.line, absl::StrCat("module \"", name,
                                                "\" loaded twice (first at line ", m.line, ")"));
      }
    }
    std::unique_ptr<Module> module = factory_ ? factory_(name) : nullptr;
    if (module == nullptr) {
      std::string known;
      if (!options_.known_modules.empty()) {
        known = absl::StrCat("; sipd has: ", absl::StrJoin(options_.known_modules, ", "));
      }
      return Error(keyword.line, absl::StrCat("unknown module \"", name, "\"", known));
    }
    config_.modules.push_back(LoadedModule{name, keyword.line, std::move(module), {}});
    return absl::OkStatus();
  }

  absl::Status ModParam(const Token& keyword) {
    absl::Status s = Expect("(", "after modparam");
    if (!s.ok()) return s;
    SIPD_ASSIGN_OR_RETURN(std::string module_name, ExpectString("(module name)"));
    s = Expect(",", "after the module name");
    if (!s.ok()) return s;
    SIPD_ASSIGN_OR_RETURN(std::string param, ExpectString("(parameter name)"));
    s = Expect(",", "after the parameter name");
    if (!s.ok()) return s;
    const Token& v = Next();
    ParamValue value;
    if (v.kind == Token::kString) {
      value = v.text;
    } else if (v.kind == Token::kWord) {
      std::optional<int64_t> i = ParseInteger(v.text);
      if (!i) {
        return Error(v.line, absl::StrCat("bad integer '", v.text, "' (quote string values: \"",
                                          v.text, "\")"));
      }
      value = *i;
    } else {
      return Error(v.line,
                   absl::StrCat("expected a quoted string or an integer value, got ", Describe(v)));
    }
    s = Expect(")", "to close modparam");
    if (!s.ok()) return s;

    const std::string name = ModuleNameFromPath(module_name);
    if (name == "mi") {  // built in: MI security (sipd/core/mi_security.h)
      pending_params_.push_back(PendingParam{kMiModule, param, std::move(value), keyword.line});
      return absl::OkStatus();
    }
    for (size_t i = 0; i < config_.modules.size(); ++i) {
      LoadedModule& m = config_.modules[i];
      if (m.name != name) continue;
      m.params.push_back(
          ParamLine{param, v.kind == Token::kString ? absl::StrCat("\"", v.text, "\"") : v.text,
                    keyword.line});
      pending_params_.push_back(PendingParam{i, param, std::move(value), keyword.line});
      return absl::OkStatus();
    }
    return Error(keyword.line, absl::StrCat("modparam for module \"", name,
                                            "\" which is not loaded (loadmodule it first)"));
  }

  // PendingParam.module of modparam("mi", ...).
  static constexpr size_t kMiModule = static_cast<size_t>(-1);

  // A modparam whose SetParam waits for the end of the file (for ${run_dir}).
  struct PendingParam {
    size_t module;
    std::string param;
    ParamValue value;
    int line;
  };

  absl::Status ApplyParam(PendingParam& pending) {
    const bool mi = pending.module == kMiModule;
    const std::string& name = mi ? std::string("mi") : config_.modules[pending.module].name;
    if (std::string* text = std::get_if<std::string>(&pending.value)) {
      *text = absl::StrReplaceAll(*text, {{"${run_dir}", config_.run_dir}});
      if (text->find("${") != std::string::npos) {
        return Error(pending.line, absl::StrCat("modparam(\"", name, "\", \"", pending.param,
                                                "\"): unknown placeholder in \"", *text,
                                                "\" (the only one is ${run_dir})"));
      }
    }
    absl::Status set =
        mi ? SetMiSecurityParam(pending.param, pending.value, &config_.mi_security)
           : config_.modules[pending.module].module->SetParam(pending.param, pending.value);
    if (!set.ok()) {
      if (mi) return Error(pending.line, std::string(set.message()));
      return Error(pending.line, absl::StrCat("modparam(\"", name, "\", \"", pending.param,
                                              "\"): ", set.message()));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> IntegerValue(const Token& key, int64_t min, int64_t max) {
    const Token& v = Next();
    if (v.kind != Token::kWord) {
      return Error(v.line, absl::StrCat(key.text, ": expected an integer, got ", Describe(v)));
    }
    std::optional<int64_t> i = ParseInteger(v.text);
    if (!i) return Error(v.line, absl::StrCat(key.text, ": bad integer '", v.text, "'"));
    if (*i < min || *i > max) {
      return Error(v.line,
                   absl::StrCat(key.text, ": ", *i, " is out of range [", min, ", ", max, "]"));
    }
    return *i;
  }

  absl::StatusOr<std::string> TextValue(const Token& key) {
    const Token& v = Next();
    if (v.kind != Token::kWord && v.kind != Token::kString) {
      return Error(v.line, absl::StrCat(key.text, ": expected a value, got ", Describe(v)));
    }
    if (v.text.empty()) return Error(v.line, absl::StrCat(key.text, ": empty value"));
    return v.text;
  }

  absl::Status Assignment(const Token& key) {
    static constexpr std::string_view kKeys[] = {"listen",
                                                 "children",
                                                 "log_level",
                                                 "debug",
                                                 "run_dir",
                                                 "shm_size",
                                                 "mi_nice",
                                                 "mi_async_slots",
                                                 "exec_msg_threshold",
                                                 "shm_threshold",
                                                 "pkg_threshold",
                                                 "maxbuffer",
                                                 "tcp_children",
                                                 "tcp_max_connections",
                                                 "tcp_connection_lifetime",
                                                 "tcp_max_msg_size",
                                                 "tcp_header_timeout",
                                                 "tcp_connect_timeout",
                                                 "tcp_send_timeout",
                                                 "tcp_max_send_queue"};
    bool known = false;
    for (std::string_view k : kKeys) known |= (key.text == k);
    if (!known) {
      if (Peek().kind == Token::kPunct && Peek().text == "=") {
        return Error(key.line, absl::StrCat("unknown key '", key.text, "'"));
      }
      return Error(key.line, absl::StrCat("syntax error: unknown statement '", key.text, "'"));
    }
    absl::Status s = Expect("=", absl::StrCat("after '", key.text, "'"));
    if (!s.ok()) return s;

    if (key.text == "listen") {
      SIPD_ASSIGN_OR_RETURN(std::string text, TextValue(key));
      absl::StatusOr<ListenAddress> addr = ParseListenAddress(text);
      if (!addr.ok()) return Error(key.line, absl::StrCat("listen: ", addr.status().message()));
      for (const auto& l : config_.listen) {
        if (l.proto == addr->proto && l.ip == addr->ip && l.port == addr->port && addr->port != 0) {
          return Error(key.line, absl::StrCat("listen: ", addr->ToString(), " given twice"));
        }
      }
      addr->line = key.line;
      config_.listen.push_back(*std::move(addr));
    } else if (key.text == "children") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 1, 256));
      config_.children = static_cast<int>(v);
    } else if (key.text == "log_level" || key.text == "debug") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, -3, 10));
      config_.log_level = static_cast<int>(v);
    } else if (key.text == "run_dir") {
      SIPD_ASSIGN_OR_RETURN(std::string v, TextValue(key));
      if (v.find("${") != std::string::npos) {
        return Error(key.line, "run_dir: placeholders are not allowed here");
      }
      config_.run_dir = std::move(v);
      config_.run_dir_line = key.line;
    } else if (key.text == "shm_size") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 1, 65536));
      config_.shm_size_mb = v;
    } else if (key.text == "mi_nice") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 0, 19));
      config_.mi_nice = static_cast<int>(v);
    } else if (key.text == "mi_async_slots") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 16, 1 << 20));
      config_.mi_async_slots = static_cast<size_t>(v);
    } else if (key.text == "exec_msg_threshold") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 0, 3600LL * 1000 * 1000));
      config_.exec_msg_threshold_us = v;
    } else if (key.text == "shm_threshold") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 0, 100));
      config_.shm_threshold = static_cast<int>(v);
    } else if (key.text == "pkg_threshold") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 0, 100));
      config_.pkg_threshold = static_cast<int>(v);
    } else if (key.text == "maxbuffer") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, 0, 256 << 20));
      config_.maxbuffer = static_cast<int>(v);
    } else {
      // tcp_*: name, range, field.
      struct TcpKey {
        std::string_view name;
        int64_t min, max;
        int TcpConfig::*field;
      };
      static constexpr TcpKey kTcpKeys[] = {
          {"tcp_children", 1, 256, &TcpConfig::children},
          {"tcp_max_connections", 1, 1 << 20, &TcpConfig::max_connections},
          {"tcp_connection_lifetime", 1, 86400 * 7, &TcpConfig::connection_lifetime_s},
          {"tcp_max_msg_size", 512, 64 << 20, &TcpConfig::max_msg_size},
          {"tcp_header_timeout", 1, 3600, &TcpConfig::header_timeout_s},
          {"tcp_connect_timeout", 1, 600000, &TcpConfig::connect_timeout_ms},
          {"tcp_send_timeout", 1, 3600000, &TcpConfig::send_timeout_ms},
          {"tcp_max_send_queue", 1024, 1 << 30, &TcpConfig::max_send_queue},
      };
      for (const TcpKey& k : kTcpKeys) {
        if (key.text != k.name) continue;
        SIPD_ASSIGN_OR_RETURN(int64_t v, IntegerValue(key, k.min, k.max));
        config_.tcp.*k.field = static_cast<int>(v);
      }
    }
    return absl::OkStatus();
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  std::string_view file_;
  const ModuleFactory& factory_;
  const ParseOptions& options_;
  Config config_;
  std::vector<PendingParam> pending_params_;
};

}  // namespace

std::string ListenAddress::ToString() const {
  const std::string_view scheme = SipProtoName(proto);
  return ipv6 ? absl::StrCat(AbslView(scheme), ":[", ip, "]:", port)
              : absl::StrCat(AbslView(scheme), ":", ip, ":", port);
}

absl::StatusOr<ListenAddress> ParseListenAddress(std::string_view text) {
  std::string_view rest = text;
  ListenAddress out;
  if (rest.substr(0, 4) == "udp:") {
    rest.remove_prefix(4);
  } else if (rest.substr(0, 4) == "tcp:") {
    rest.remove_prefix(4);
    out.proto = SipProto::kTcp;
  } else if ((rest.size() > 4 && rest[3] == ':' && rest.substr(0, 3) == "tls") ||
             rest.substr(0, 5) == "sctp:") {
    return absl::InvalidArgumentError(
        absl::StrCat("'", AbslView(text), "': only udp and tcp listeners are supported"));
  }
  std::string_view host;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("'", AbslView(text), "': expected udp:[IPv6]:PORT or tcp:[IPv6]:PORT"));
    }
    host = rest.substr(1, close - 1);
    port = rest.substr(close + 2);
    out.ipv6 = true;
  } else {
    const size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", AbslView(text), "': expected udp:IP:PORT or tcp:IP:PORT"));
    }
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  out.ip = std::string(host);
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(out.ipv6 ? AF_INET6 : AF_INET, out.ip.c_str(), buf) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", AbslView(text), "': '", out.ip, "' is not a numeric IP address"));
  }
  uint32_t port_number = 0;
  if (!absl::SimpleAtoi(AbslView(port), &port_number) || port_number > 65535 ||
      port.find_first_not_of("0123456789") != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", AbslView(text), "': bad port '", AbslView(port), "'"));
  }
  out.port = static_cast<uint16_t>(port_number);
  return out;
}

absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view file_name,
                                   const ModuleFactory& factory, const ParseOptions& options) {
  absl::StatusOr<std::vector<Token>> tokens = Lexer(text, file_name).Run();
  if (!tokens.ok()) return tokens.status();
  return Parser(*std::move(tokens), file_name, factory, options).Run();
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path, const ModuleFactory& factory,
                                      const ParseOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open config file: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path, factory, options);
}

}  // namespace sipd
