#include "sipd/modules/tm/sip_message.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace sipd::tm {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(absl::string_view(what.data(), what.size()));
}

// Digits only, no sign; nullopt on overflow beyond `max`.
std::optional<uint64_t> ParseDecimal(std::string_view text, uint64_t max) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > max) return std::nullopt;
  }
  return value;
}

// Splits "host[:port]" (IPv6 in brackets). False if malformed.
bool ParseHostPort(std::string_view text, std::string_view* host, uint16_t* port) {
  text = TrimWhitespace(text);
  if (text.empty()) return false;
  std::string_view rest;
  if (text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close < 2) return false;
    *host = text.substr(0, close + 1);
    rest = text.substr(close + 1);
  } else {
    const size_t colon = text.find(':');
    *host = text.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : text.substr(colon);
  }
  if (host->empty()) return false;
  for (char c : *host) {
    if (IsSpace(c) || c == '<' || c == '>' || c == '"' || c == ',' || c == '@') return false;
  }
  *port = 0;
  if (!rest.empty()) {
    if (rest.front() != ':') return false;
    std::optional<uint64_t> p = ParseDecimal(TrimWhitespace(rest.substr(1)), 65535);
    if (!p || *p == 0) return false;
    *port = static_cast<uint16_t>(*p);
  }
  return true;
}

struct NamedMethod {
  std::string_view name;
  Method method;
};
constexpr NamedMethod kMethods[] = {
    {"INVITE", Method::kInvite},     {"ACK", Method::kAck},
    {"CANCEL", Method::kCancel},     {"BYE", Method::kBye},
    {"REGISTER", Method::kRegister}, {"OPTIONS", Method::kOptions},
    {"INFO", Method::kInfo},         {"UPDATE", Method::kUpdate},
    {"PRACK", Method::kPrack},       {"SUBSCRIBE", Method::kSubscribe},
    {"NOTIFY", Method::kNotify},     {"REFER", Method::kRefer},
    {"MESSAGE", Method::kMessage},   {"PUBLISH", Method::kPublish},
};

struct NamedHeader {
  std::string_view name;
  HeaderType type;
};
constexpr NamedHeader kHeaders[] = {
    {"via", HeaderType::kVia},
    {"v", HeaderType::kVia},
    {"from", HeaderType::kFrom},
    {"f", HeaderType::kFrom},
    {"to", HeaderType::kTo},
    {"t", HeaderType::kTo},
    {"call-id", HeaderType::kCallId},
    {"i", HeaderType::kCallId},
    {"cseq", HeaderType::kCSeq},
    {"max-forwards", HeaderType::kMaxForwards},
    {"route", HeaderType::kRoute},
    {"record-route", HeaderType::kRecordRoute},
    {"contact", HeaderType::kContact},
    {"m", HeaderType::kContact},
    {"content-length", HeaderType::kContentLength},
    {"l", HeaderType::kContentLength},
    {"content-type", HeaderType::kContentType},
    {"c", HeaderType::kContentType},
    {"expires", HeaderType::kExpires},
    {"require", HeaderType::kRequire},
    {"proxy-require", HeaderType::kProxyRequire},
    {"supported", HeaderType::kSupported},
    {"k", HeaderType::kSupported},
    {"path", HeaderType::kPath},
    {"user-agent", HeaderType::kUserAgent},
    {"server", HeaderType::kServer},
};

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// The characters of a token (RFC 3261 25.1: alphanum / "-" / "." / "!" / "%" / "*" /
// "_" / "+" / "`" / "'" / "~"), by byte: every header name of every message is checked.
constexpr std::array<bool, 256> kTokenChars = [] {
  std::array<bool, 256> table{};
  for (int c = 0; c < 256; ++c) {
    table[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  }
  for (char c : std::string_view("-.!%*_+`'~")) table[static_cast<unsigned char>(c)] = true;
  return table;
}();

// A token (RFC 3261 25.1) as in header names and methods.
bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!kTokenChars[c]) return false;
  }
  return true;
}

}  // namespace

bool IsTokenChar(char c) { return kTokenChars[static_cast<unsigned char>(c)]; }

size_t FindTopLevel(std::string_view s, char c, size_t from) {
  bool quoted = false;
  int angle = 0;
  for (size_t i = from; i < s.size(); ++i) {
    const char ch = s[i];
    if (quoted) {
      if (ch == '\\' && i + 1 < s.size()) {
        ++i;
      } else if (ch == '"') {
        quoted = false;
      }
      continue;
    }
    if (ch == c && angle == 0) return i;
    if (ch == '"') {
      quoted = true;
    } else if (ch == '<') {
      ++angle;
    } else if (ch == '>') {
      if (angle > 0) --angle;
    }
  }
  return std::string_view::npos;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

Method ParseMethod(std::string_view text) {
  for (const NamedMethod& m : kMethods) {
    if (m.name == text) return m.method;
  }
  return Method::kOther;
}

HeaderType ClassifyHeader(std::string_view name) {
  // Only the names of its length and first letter are compared (every header line of
  // every message is classified).
  if (name.empty()) return HeaderType::kOther;
  const char first = Lower(name.front());
  for (const NamedHeader& h : kHeaders) {
    if (h.name.size() == name.size() && h.name.front() == first && EqualsIgnoreCase(h.name, name)) {
      return h.type;
    }
  }
  return HeaderType::kOther;
}

std::optional<std::string_view> ParamList::Get(std::string_view name) const {
  std::optional<std::string_view> out;
  ForEach([&](std::string_view key, std::string_view value) {
    if (!EqualsIgnoreCase(key, name)) return false;
    out = value;
    return true;
  });
  return out;
}

bool SipUri::is_sip() const {
  return EqualsIgnoreCase(scheme, "sip") || EqualsIgnoreCase(scheme, "sips");
}

std::string_view SipUri::bare_host() const {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

std::string_view SipUri::transport() const { return params.Get("transport").value_or(""); }

absl::StatusOr<SipUri> ParseUri(std::string_view text) {
  text = TrimWhitespace(text);
  SipUri uri;
  uri.text = text;
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return Invalid("URI without a scheme");
  uri.scheme = text.substr(0, colon);
  for (char c : uri.scheme) {
    if (!(IsAlnum(c) || c == '+' || c == '-' || c == '.')) {
      return Invalid("bad URI scheme");
    }
  }
  std::string_view rest = text.substr(colon + 1);
  if (!uri.is_sip()) return uri;  // tel:, urn:, ...: kept as text
  for (char c : rest) {
    if (IsSpace(c) || c == '<' || c == '>' || c == '"') return Invalid("bad character in URI");
  }
  const size_t question = rest.find('?');
  if (question != std::string_view::npos) {
    uri.headers = rest.substr(question + 1);
    rest = rest.substr(0, question);
  }
  const size_t at = rest.find('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    uri.user = userinfo.substr(0, userinfo.find(':'));
    if (uri.user.empty()) return Invalid("empty user in URI");
    rest = rest.substr(at + 1);
  }
  const size_t semicolon = rest.find(';');
  std::string_view hostport = rest.substr(0, semicolon);
  if (semicolon != std::string_view::npos) uri.params = ParamList(rest.substr(semicolon));
  if (!ParseHostPort(hostport, &uri.host, &uri.port)) return Invalid("bad host or port in URI");
  return uri;
}

absl::StatusOr<NameAddr> ParseNameAddr(std::string_view text) {
  text = TrimWhitespace(text);
  NameAddr out;
  out.text = text;
  if (text == "*") {
    out.star = true;
    return out;
  }
  const size_t open = FindTopLevel(text, '<');
  if (open != std::string_view::npos) {
    std::string_view display = TrimWhitespace(text.substr(0, open));
    if (!display.empty() && display.front() == '"') {
      if (display.size() < 2 || display.back() != '"') return Invalid("bad display name");
    }
    out.display = display;
    const size_t close = text.find('>', open);
    if (close == std::string_view::npos) return Invalid("missing '>'");
    auto uri = ParseUri(text.substr(open + 1, close - open - 1));
    if (!uri.ok()) return uri.status();
    out.uri = *uri;
    std::string_view params = TrimWhitespace(text.substr(close + 1));
    if (!params.empty() && params.front() != ';') return Invalid("garbage after '>'");
    out.params = ParamList(params);
    return out;
  }
  if (!text.empty() && text.front() == '"') return Invalid("display name without <URI>");
  // addr-spec: parameters after the URI belong to the header (RFC 3261 20.10).
  const size_t semicolon = text.find(';');
  auto uri = ParseUri(text.substr(0, semicolon));
  if (!uri.ok()) return uri.status();
  out.uri = *uri;
  if (semicolon != std::string_view::npos) out.params = ParamList(text.substr(semicolon));
  return out;
}

absl::StatusOr<Via> ParseVia(std::string_view text) {
  text = TrimWhitespace(text);
  Via via;
  via.text = text;
  // sent-protocol: "SIP" / "2.0" / transport, with optional LWS around the slashes.
  std::string_view rest = text;
  std::string_view parts[3];
  for (int i = 0; i < 3; ++i) {
    rest = TrimWhitespace(rest);
    size_t end = 0;
    while (end < rest.size() && !IsSpace(rest[end]) && rest[end] != '/') ++end;
    parts[i] = rest.substr(0, end);
    rest = TrimWhitespace(rest.substr(end));
    if (i < 2) {
      if (rest.empty() || rest.front() != '/') return Invalid("bad Via protocol");
      rest.remove_prefix(1);
    }
  }
  if (!EqualsIgnoreCase(parts[0], "SIP") || parts[1] != "2.0" || !IsToken(parts[2])) {
    return Invalid("bad Via protocol");
  }
  via.transport = parts[2];
  const size_t semicolon = rest.find(';');
  if (!ParseHostPort(rest.substr(0, semicolon), &via.host, &via.port)) {
    return Invalid("bad Via sent-by");
  }
  if (semicolon != std::string_view::npos) via.params = ParamList(rest.substr(semicolon));
  // One pass for the three parameters tm reads (the first of each counts, as in Get).
  bool branch = false;
  bool received = false;
  via.params.ForEach([&](std::string_view key, std::string_view value) {
    if (!branch && EqualsIgnoreCase(key, "branch")) {
      branch = true;
      via.branch = value;
    } else if (!received && EqualsIgnoreCase(key, "received")) {
      received = true;
      via.received = value;
    } else if (EqualsIgnoreCase(key, "rport")) {
      via.has_rport = true;
    }
    return branch && received && via.has_rport;
  });
  return via;
}

std::optional<std::string_view> ScanToTag(std::string_view message) {
  size_t pos = message.find("\r\n");
  if (pos == std::string_view::npos || pos == 0) return std::nullopt;  // 0: a leading CRLF
  pos += 2;
  while (pos < message.size()) {
    const size_t end = message.find("\r\n", pos);
    if (end == std::string_view::npos || end == pos) return std::nullopt;  // headers ended
    const std::string_view line = message.substr(pos, end - pos);
    pos = end + 2;
    if (IsSpace(line.front())) return std::nullopt;  // folded
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::string_view name = TrimWhitespace(line.substr(0, colon));
    if (!EqualsIgnoreCase(name, "to") && !EqualsIgnoreCase(name, "t")) continue;
    if (pos < message.size() && (message[pos] == ' ' || message[pos] == '\t')) {
      return std::nullopt;  // the To header goes on in a folded line
    }
    const std::string_view value = TrimWhitespace(line.substr(colon + 1));
    if (value.find('"') != std::string_view::npos) return std::nullopt;
    // The header's value as the parse reads it (ParseMandatory).
    absl::StatusOr<NameAddr> to = ParseNameAddr(value);
    if (!to.ok() || to->star) return std::nullopt;
    std::optional<std::string_view> tag = to->params.Get("tag");
    if (!tag.has_value() || tag->empty()) return std::nullopt;
    return tag;
  }
  return std::nullopt;
}

std::vector<std::string_view> SplitList(std::string_view value, size_t max_items) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= value.size() && out.size() < max_items) {
    const size_t comma = FindTopLevel(value, ',', start);
    std::string_view item = TrimWhitespace(value.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (!item.empty()) out.push_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

absl::StatusOr<SipMessage> SipMessage::Parse(std::string_view data, const Limits& limits) {
  if (data.size() > limits.max_size) return Invalid("message too big");
  SipMessage m;
  m.limits_ = limits;
  m.raw_ = std::make_unique<std::string>(data);
  const std::string_view raw = *m.raw_;

  // Leading CRLFs are tolerated (RFC 3261 7.5).
  size_t pos = 0;
  while (pos + 1 < raw.size() && raw[pos] == '\r' && raw[pos + 1] == '\n') pos += 2;
  const size_t line_end = raw.find("\r\n", pos);
  if (line_end == std::string_view::npos) return Invalid("no start line");
  m.start_line_ = raw.substr(pos, line_end + 2 - pos);
  if (absl::Status s = m.ParseStartLine(raw.substr(pos, line_end - pos)); !s.ok()) return s;

  pos = line_end + 2;
  // 16 headers (896 bytes) stay under glibc's large-chunk size (1 KB): a larger first
  // allocation made every parse consolidate malloc's fast bins.
  m.headers_.reserve(16);
  while (true) {
    if (pos >= raw.size()) return Invalid("no end of headers");
    if (raw.compare(pos, 2, "\r\n") == 0) {
      m.headers_end_ = pos;
      pos += 2;
      break;
    }
    // One header: its first line, then continuation lines starting with SP/HT.
    size_t end = raw.find("\r\n", pos);
    if (end == std::string_view::npos) return Invalid("no end of headers");
    while (end + 2 < raw.size() && (raw[end + 2] == ' ' || raw[end + 2] == '\t')) {
      end = raw.find("\r\n", end + 2);
      if (end == std::string_view::npos) return Invalid("no end of headers");
    }
    if (m.headers_.size() >= limits.max_headers) return Invalid("too many headers");
    const std::string_view line = raw.substr(pos, end + 2 - pos);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) return Invalid("header line without ':'");
    Header h;
    h.name = TrimWhitespace(line.substr(0, colon));
    if (!IsToken(h.name)) return Invalid("bad header name");
    h.value = TrimWhitespace(line.substr(colon + 1));
    h.line = line;
    h.type = ClassifyHeader(h.name);
    m.headers_.push_back(h);
    pos = end + 2;
  }

  // Body: Content-Length bytes (the datagram may carry more: ignored, RFC 3261 18.3).
  std::string_view rest = raw.substr(pos);
  if (const Header* cl = m.Find(HeaderType::kContentLength); cl != nullptr) {
    std::optional<uint64_t> length = ParseDecimal(cl->value, limits.max_size);
    if (!length) return Invalid("bad Content-Length");
    if (*length > rest.size()) return Invalid("Content-Length beyond the end of the message");
    rest = rest.substr(0, *length);
  }
  m.body_ = rest;
  m.ParseMandatory();
  return m;
}

absl::Status SipMessage::ParseStartLine(std::string_view line) {
  if (line.substr(0, 8) == "SIP/2.0 ") {
    std::string_view rest = line.substr(8);
    const size_t space = rest.find(' ');
    std::optional<uint64_t> code = ParseDecimal(rest.substr(0, space), 699);
    if (!code || *code < 100 || rest.substr(0, space).size() != 3) {
      return Invalid("bad status code");
    }
    status_ = static_cast<int>(*code);
    reason_ = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
    return absl::OkStatus();
  }
  const size_t first = line.find(' ');
  const size_t last = line.rfind(' ');
  if (first == std::string_view::npos || last <= first + 1 || line.substr(last + 1) != "SIP/2.0") {
    return Invalid("bad request line");
  }
  method_text_ = line.substr(0, first);
  if (!IsToken(method_text_)) return Invalid("bad method");
  method_ = ParseMethod(method_text_);
  request_uri_ = line.substr(first + 1, last - first - 1);
  if (request_uri_.find(' ') != std::string_view::npos) return Invalid("bad Request-URI");
  return absl::OkStatus();
}

void SipMessage::ParseMandatory() {
  auto note = [this](std::string text) {
    if (defect_.empty()) defect_ = std::move(text);
  };
  const Header* via = Find(HeaderType::kVia);
  if (via == nullptr) {
    note("Missing Via header");
  } else {
    const std::vector<std::string_view> items = SplitList(via->value, 1);
    auto parsed = items.empty() ? absl::StatusOr<Via>(Invalid("empty")) : ParseVia(items[0]);
    if (parsed.ok()) {
      top_via_ = *parsed;
      top_via_header_ = via;
    } else {
      note("Bad Via header");
    }
  }
  const Header* from = Find(HeaderType::kFrom);
  if (from == nullptr) {
    note("Missing From header");
  } else if (auto parsed = ParseNameAddr(from->value); parsed.ok() && !parsed->star) {
    from_ = *parsed;
    from_tag_ = from_.params.Get("tag").value_or("");
  } else {
    note("Bad From header");
  }
  const Header* to = Find(HeaderType::kTo);
  if (to == nullptr) {
    note("Missing To header");
  } else if (auto parsed = ParseNameAddr(to->value); parsed.ok() && !parsed->star) {
    to_ = *parsed;
    to_tag_ = to_.params.Get("tag").value_or("");
  } else {
    note("Bad To header");
  }
  const Header* call_id = Find(HeaderType::kCallId);
  if (call_id == nullptr || call_id->value.empty()) {
    note(call_id == nullptr ? "Missing Call-ID header" : "Bad Call-ID header");
  } else {
    call_id_ = call_id->value;
  }
  const Header* cseq = Find(HeaderType::kCSeq);
  if (cseq == nullptr) {
    note("Missing CSeq header");
  } else {
    const std::string_view value = cseq->value;
    size_t digits = 0;
    while (digits < value.size() && value[digits] >= '0' && value[digits] <= '9') ++digits;
    std::optional<uint64_t> number = ParseDecimal(value.substr(0, digits), 0xFFFFFFFFull);
    const std::string_view method = TrimWhitespace(value.substr(digits));
    if (!number || !IsToken(method)) {
      note("Bad CSeq header");
    } else {
      cseq_ = static_cast<uint32_t>(*number);
      cseq_method_text_ = method;
      cseq_method_ = ParseMethod(method);
      if (is_request() && method != method_text_) note("CSeq method does not match");
    }
  }
  if (const Header* mf = Find(HeaderType::kMaxForwards); mf != nullptr) {
    std::optional<uint64_t> value = ParseDecimal(mf->value, 255);
    if (value) {
      max_forwards_ = static_cast<int>(*value);
    } else {
      note("Bad Max-Forwards header");
    }
  }
}

std::string_view SipMessage::after_start_line() const {
  return raw().substr(start_line_.data() + start_line_.size() - raw_->data());
}

const Header* SipMessage::Find(HeaderType type) const {
  for (const Header& h : headers_) {
    if (h.type == type) return &h;
  }
  return nullptr;
}

const Header* SipMessage::FindByName(std::string_view name) const {
  for (const Header& h : headers_) {
    if (EqualsIgnoreCase(h.name, name)) return &h;
  }
  return nullptr;
}

absl::StatusOr<std::vector<Via>> SipMessage::Vias() const {
  std::vector<Via> out;
  for (const Header& h : headers_) {
    if (h.type != HeaderType::kVia) continue;
    for (std::string_view item : SplitList(h.value, limits_.max_entries)) {
      if (out.size() >= limits_.max_entries) return Invalid("too many Via entries");
      auto via = ParseVia(item);
      if (!via.ok()) return via.status();
      out.push_back(*via);
    }
  }
  return out;
}

absl::StatusOr<std::vector<NameAddr>> SipMessage::Entries(HeaderType type) const {
  std::vector<NameAddr> out;
  for (const Header& h : headers_) {
    if (h.type != type) continue;
    for (std::string_view item : SplitList(h.value, limits_.max_entries)) {
      if (out.size() >= limits_.max_entries) return Invalid("too many entries");
      auto entry = ParseNameAddr(item);
      if (!entry.ok()) return entry.status();
      out.push_back(*entry);
    }
  }
  return out;
}

absl::StatusOr<std::vector<NameAddr>> SipMessage::Routes() const {
  return Entries(HeaderType::kRoute);
}
absl::StatusOr<std::vector<NameAddr>> SipMessage::RecordRoutes() const {
  return Entries(HeaderType::kRecordRoute);
}
absl::StatusOr<std::vector<NameAddr>> SipMessage::Contacts() const {
  return Entries(HeaderType::kContact);
}

}  // namespace sipd::tm
