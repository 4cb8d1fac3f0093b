#include "sipd/modules/registrar/registrar.h"

#include <osipparser2/osip_parser.h>
#include <strings.h>

#include <algorithm>
#include <ctime>
#include <optional>
#include <set>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "registry/status_macros.h"
#include "sipd/core/sip_uri.h"
#include "spdlog/spdlog.h"

namespace sipd::registrar {
namespace {

using usrloc::ContactInfo;
using usrloc::Edit;

// Why a REGISTER was refused (the P-Registrar-Error text) and the SIP answer.
struct Rejection {
  // A constructor, not aggregate initialisation, so that `Rejection{400, "text"}` leaves
  // no field unnamed (clang's -Wmissing-field-initializers).
  Rejection(int reply_code = 400, std::string reason = {}, std::vector<std::string> extra = {})
      : code(reply_code), text(std::move(reason)), headers(std::move(extra)) {}
  int code;
  std::string text;
  std::vector<std::string> headers;
};

std::string_view ReasonPhrase(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 420:
      return "Bad Extension";
    case 423:
      return "Interval Too Brief";
    case 500:
      return "Server Internal Error";
    case 503:
      return "Service Unavailable";
  }
  return "Error";
}

RegisterReply ToReply(Rejection r) {
  RegisterReply reply;
  reply.code = r.code;
  reply.reason = std::string(ReasonPhrase(r.code));
  reply.headers = std::move(r.headers);
  reply.headers.push_back(absl::StrCat("P-Registrar-Error: ", r.text));
  return reply;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string_view Unquote(std::string_view s) {
  if (s.size() >= 2 && s.front() == '"' && s.back() == '"') return s.substr(1, s.size() - 2);
  return s;
}

// delta-seconds: digits only; values beyond 2^32-1 are taken as 2^32-1 (RFC 3261 20.19).
std::optional<uint32_t> ParseDelta(std::string_view text) {
  text = Trim(text);
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = std::min<uint64_t>(value * 10 + static_cast<uint64_t>(c - '0'), 0xFFFFFFFFull);
  }
  return static_cast<uint32_t>(value);
}

// Values of every generic header named `name` (or its compact form), in order.
std::vector<std::string_view> HeaderValues(osip_message_t* msg, const char* name,
                                           const char* compact = nullptr) {
  std::vector<std::string_view> out;
  for (int i = 0; i < osip_list_size(&msg->headers); ++i) {
    auto* h = static_cast<osip_header_t*>(osip_list_get(&msg->headers, i));
    if (h == nullptr || h->hname == nullptr) continue;
    if (strcasecmp(h->hname, name) == 0 ||
        (compact != nullptr && strcasecmp(h->hname, compact) == 0)) {
      out.emplace_back(h->hvalue != nullptr ? h->hvalue : "");
    }
  }
  return out;
}

// Comma-separated tokens of all headers `name`, trimmed, empty ones dropped.
std::vector<std::string> HeaderTokens(osip_message_t* msg, const char* name,
                                      const char* compact = nullptr) {
  std::vector<std::string> out;
  for (std::string_view value : HeaderValues(msg, name, compact)) {
    for (absl::string_view token :
         absl::StrSplit(absl::string_view(value.data(), value.size()), ',')) {
      std::string_view t = Trim(std::string_view(token.data(), token.size()));
      if (!t.empty()) out.emplace_back(t);
    }
  }
  return out;
}

// OpenSIPS method bits (parser/msg_parser.h METHOD_*).
uint32_t MethodBit(std::string_view method) {
  static constexpr std::pair<std::string_view, uint32_t> kBits[] = {
      {"INVITE", 1},    {"CANCEL", 2},   {"ACK", 4},        {"BYE", 8},        {"INFO", 16},
      {"OPTIONS", 32},  {"UPDATE", 64},  {"REGISTER", 128}, {"MESSAGE", 256},  {"SUBSCRIBE", 512},
      {"NOTIFY", 1024}, {"PRACK", 2048}, {"REFER", 4096},   {"PUBLISH", 8192},
  };
  for (const auto& [name, bit] : kBits) {
    if (absl::EqualsIgnoreCase(absl::string_view(name.data(), name.size()),
                               absl::string_view(method.data(), method.size()))) {
      return bit;
    }
  }
  return 16384;  // METHOD_OTHER
}

// The Allow bitmask, or every method when the UA sent no Allow (OpenSIPS ALL_METHODS).
uint32_t AllowedMethods(osip_message_t* msg) {
  std::vector<std::string> methods;
  for (int i = 0; i < osip_list_size(&msg->allows); ++i) {
    auto* allow = static_cast<osip_allow_t*>(osip_list_get(&msg->allows, i));
    if (allow != nullptr && allow->value != nullptr) {
      for (absl::string_view m : absl::StrSplit(allow->value, ',')) {
        std::string_view t = Trim(std::string_view(m.data(), m.size()));
        if (!t.empty()) methods.emplace_back(t);
      }
    }
  }
  for (std::string& m : HeaderTokens(msg, "allow")) methods.push_back(std::move(m));
  if (methods.empty() && osip_list_size(&msg->allows) == 0 && HeaderValues(msg, "allow").empty()) {
    return usrloc::kAllMethods;
  }
  uint32_t bits = 0;
  for (const std::string& m : methods) bits |= MethodBit(m);
  return bits;
}

const char* ContactParam(osip_contact_t* contact, const char* name, bool* present) {
  osip_generic_param_t* param = nullptr;
  *present = osip_contact_param_get_byname(contact, const_cast<char*>(name), &param) == 0 &&
             param != nullptr;
  return *present && param->gvalue != nullptr ? param->gvalue : "";
}

std::string UriToString(osip_uri_t* uri) {
  char* text = nullptr;
  if (osip_uri_to_str(uri, &text) != 0 || text == nullptr) return {};
  std::string out(text);
  osip_free(text);
  return out;
}

// RFC 1123 date for the Date header.
std::string HttpDate(int64_t now) {
  const std::time_t t = static_cast<std::time_t>(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

// One binding requested by the REGISTER.
struct Binding {
  ContactInfo info;
  bool remove = false;
};

// Everything taken from the request before the table is touched.
struct ParsedRegister {
  std::string aor;
  std::string callid;
  uint32_t cseq = 0;
  bool star = false;
  bool query = false;  // no Contact at all: just list the bindings
  bool supports_path = false;
  std::string path;
  std::vector<Binding> bindings;
};

}  // namespace

Registrar::Registrar(Options options, usrloc::Usrloc& usrloc, usrloc::LocationTable& table,
                     Counters counters)
    : options_(options), usrloc_(usrloc), table_(table), counters_(counters) {}

namespace {

// Steps 1-5 of the header comment. Returns the parsed request or the rejection.
std::variant<ParsedRegister, Rejection> Parse(SipRequest& request, const Options& options,
                                              bool use_domain, int64_t now) {
  osip_message_t* msg = request.message();
  ParsedRegister out;

  // Require: we support `path` only (RFC 3261 8.2.2.3).
  std::vector<std::string> unsupported;
  for (std::string& option : HeaderTokens(msg, "require")) {
    if (!absl::EqualsIgnoreCase(option, "path")) unsupported.push_back(std::move(option));
  }
  if (!unsupported.empty()) {
    return Rejection{420,
                     "Unsupported extension required",
                     {absl::StrCat("Unsupported: ", absl::StrJoin(unsupported, ", "))}};
  }
  for (const std::string& option : HeaderTokens(msg, "supported", "k")) {
    if (absl::EqualsIgnoreCase(option, "path")) out.supports_path = true;
  }

  // The AOR, from To.
  if (msg->to == nullptr || msg->to->url == nullptr) {
    return Rejection{400, "To header not found"};
  }
  osip_uri_t* to = msg->to->url;
  if (to->scheme == nullptr ||
      (strcasecmp(to->scheme, "sip") != 0 && strcasecmp(to->scheme, "sips") != 0) ||
      to->username == nullptr || to->username[0] == '\0' || to->host == nullptr ||
      to->host[0] == '\0') {
    return Rejection{400, "Error while parsing AOR"};
  }
  if (!IsValidSipHost(to->host) || (to->port != nullptr && !IsValidSipPort(to->port))) {
    return Rejection{400, "Bad host or port in AOR"};
  }
  out.aor = to->username;
  if (use_domain) absl::StrAppend(&out.aor, "@", absl::AsciiStrToLower(to->host));
  if (out.aor.size() > usrloc::kMaxAorLength) {
    return Rejection{400, "Address Of Record too long"};
  }

  // Call-ID and CSeq.
  if (msg->call_id == nullptr || msg->call_id->number == nullptr) {
    return Rejection{400, "Call-ID header not found"};
  }
  out.callid = msg->call_id->number;
  if (msg->call_id->host != nullptr) absl::StrAppend(&out.callid, "@", msg->call_id->host);
  if (out.callid.size() > usrloc::kMaxFieldLength) return Rejection{400, "Callid too long"};
  if (msg->cseq == nullptr || msg->cseq->number == nullptr) {
    return Rejection{400, "CSeq header not found"};
  }
  std::optional<uint32_t> cseq = usrloc::ParseUint32(Trim(msg->cseq->number));
  if (!cseq.has_value() || msg->cseq->method == nullptr ||
      strcasecmp(msg->cseq->method, "REGISTER") != 0) {
    return Rejection{400, "Invalid CSeq number"};
  }
  out.cseq = *cseq;

  // Expires header.
  std::optional<uint32_t> header_expires;
  std::vector<std::string_view> expires_headers = HeaderValues(msg, "expires");
  if (!expires_headers.empty()) {
    header_expires = ParseDelta(expires_headers.front());
    if (!header_expires.has_value()) return Rejection{400, "Expires parse error"};
  }

  // Path.
  std::vector<std::string_view> paths = HeaderValues(msg, "path");
  std::vector<std::string> path_parts;
  for (std::string_view p : paths) path_parts.emplace_back(Trim(p));
  out.path = absl::StrJoin(path_parts, ",");
  if (out.path.size() > usrloc::kMaxFieldLength) return Rejection{400, "Path too long"};

  // Contacts.
  const int contacts = osip_list_size(&msg->contacts);
  if (contacts == 0) {
    out.query = true;
    return out;
  }
  for (int i = 0; i < contacts; ++i) {
    auto* c = static_cast<osip_contact_t*>(osip_list_get(&msg->contacts, i));
    if (c != nullptr && c->url == nullptr && c->displayname != nullptr &&
        std::string_view(c->displayname) == "*") {
      out.star = true;
    }
  }
  if (out.star) {
    if (contacts > 1) return Rejection{400, "* used in contact and more than 1 contact"};
    if (!header_expires.has_value() || *header_expires != 0) {
      return Rejection{400, "* used in contact and expires is not zero"};
    }
    return out;
  }

  std::string user_agent;
  if (std::vector<std::string_view> ua = HeaderValues(msg, "user-agent"); !ua.empty()) {
    user_agent = std::string(Trim(ua.front()).substr(0, usrloc::kMaxFieldLength));
  }
  const uint32_t methods = AllowedMethods(msg);
  const std::string source_ip = request.source_ip();
  const uint16_t source_port = request.source_port();

  for (int i = 0; i < contacts; ++i) {
    auto* c = static_cast<osip_contact_t*>(osip_list_get(&msg->contacts, i));
    if (c == nullptr || c->url == nullptr) return Rejection{400, "Contact parse error"};
    if (c->url->host == nullptr || !IsValidSipHost(c->url->host) ||
        (c->url->port != nullptr && !IsValidSipPort(c->url->port))) {
      return Rejection{400, "Bad host or port in Contact"};
    }
    Binding b;
    b.info.uri = UriToString(c->url);
    if (b.info.uri.empty()) return Rejection{400, "Contact parse error"};
    if (b.info.uri.size() > usrloc::kMaxFieldLength) {
      return Rejection{400, "Contact/received too long"};
    }

    bool present = false;
    uint32_t expires = options.default_expires;
    const char* expires_param = ContactParam(c, "expires", &present);
    if (present) {
      std::optional<uint32_t> v = ParseDelta(expires_param);
      if (!v.has_value()) return Rejection{400, "Expires parse error"};
      expires = *v;
    } else if (header_expires.has_value()) {
      expires = *header_expires;
    }
    if (expires != 0 && options.min_expires != 0 && expires < options.min_expires) {
      return Rejection{
          423, "Interval too brief", {absl::StrCat("Min-Expires: ", options.min_expires)}};
    }
    if (options.max_expires != 0 && expires > options.max_expires) expires = options.max_expires;
    b.remove = expires == 0;
    b.info.expires = now + expires;

    const char* q = ContactParam(c, "q", &present);
    if (present) {
      std::optional<int32_t> v = usrloc::ParseQ(Trim(q));
      if (!v.has_value()) return Rejection{400, "Invalid q value"};
      b.info.q = *v;
    }
    b.info.instance = std::string(Unquote(Trim(ContactParam(c, "+sip.instance", &present))));
    if (b.info.instance.size() > usrloc::kMaxFieldLength) {
      return Rejection{400, "Contact/received too long"};
    }

    b.info.callid = out.callid;
    b.info.cseq = out.cseq;
    b.info.user_agent = user_agent;
    b.info.path = out.path;
    b.info.socket = request.socket();
    b.info.methods = methods;
    b.info.last_modified = now;
    if (c->url->host != nullptr) {
      const std::string contact_host = c->url->host;
      const int default_port =
          c->url->scheme != nullptr && strcasecmp(c->url->scheme, "sips") == 0 ? 5061 : 5060;
      const int contact_port = c->url->port != nullptr ? atoi(c->url->port) : default_port;
      std::string_view bare_host = contact_host;
      if (bare_host.size() > 2 && bare_host.front() == '[') {
        bare_host = bare_host.substr(1, bare_host.size() - 2);
      }
      if (options.store_received && (bare_host != source_ip || contact_port != source_port)) {
        b.info.received = source_ip.find(':') != std::string::npos
                              ? absl::StrCat("sip:[", source_ip, "]:", source_port)
                              : absl::StrCat("sip:", source_ip, ":", source_port);
      }
    }
    // A URI given twice counts once, with its last parameters.
    auto same = std::find_if(out.bindings.begin(), out.bindings.end(),
                             [&](const Binding& other) { return other.info.uri == b.info.uri; });
    if (same != out.bindings.end()) out.bindings.erase(same);
    out.bindings.push_back(std::move(b));
  }
  return out;
}

}  // namespace

RegisterReply Registrar::Process(SipRequest& request) { return Process(request, nullptr); }

RegisterReply Registrar::Process(SipRequest& request, std::optional<usrloc::AorSnapshot>* pending) {
  const int64_t now = usrloc_.Now();
  auto parsed_or = Parse(request, options_, usrloc_.options().use_domain, now);
  if (std::holds_alternative<Rejection>(parsed_or)) {
    if (counters_.rejected.valid()) counters_.rejected.Inc();
    return ToReply(std::get<Rejection>(std::move(parsed_or)));
  }
  ParsedRegister& req = std::get<ParsedRegister>(parsed_or);

  std::vector<ContactInfo> bindings;
  if (req.query) {
    std::optional<usrloc::AorSnapshot> current = table_.Get(req.aor);
    if (current.has_value()) bindings = std::move(current->contacts);
  } else {
    std::optional<Rejection> rejection;
    auto applied = usrloc_.Update(
        table_, req.aor,
        [&](bool, const std::vector<ContactInfo>& current, std::vector<Edit>& edits) {
          auto out_of_order = [&]() {
            rejection = Rejection{400, "Out of order request"};
            return absl::AbortedError("out of order");
          };
          if (req.star) {
            for (const ContactInfo& c : current) {
              if (c.Valid(now) && c.callid == req.callid && c.cseq >= req.cseq) {
                return out_of_order();
              }
            }
            for (const ContactInfo& c : current) {
              edits.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = c.uri}});
            }
            return absl::OkStatus();
          }
          std::set<std::string_view> valid_before;
          for (const ContactInfo& c : current) {
            if (c.Valid(now)) valid_before.insert(c.uri);
          }
          std::set<std::string_view> valid_after = valid_before;
          for (const Binding& b : req.bindings) {
            const ContactInfo* existing = nullptr;
            for (const ContactInfo& c : current) {
              if (c.uri == b.info.uri) {
                existing = &c;
                break;
              }
            }
            const bool live = existing != nullptr && existing->Valid(now);
            if (live && existing->callid == req.callid) {
              if (req.cseq < existing->cseq) return out_of_order();
              if (req.cseq == existing->cseq) continue;  // retransmission: unchanged
            }
            if (b.remove) {
              if (existing != nullptr) {
                edits.push_back(Edit{Edit::Kind::kRemove, ContactInfo{.uri = b.info.uri}});
              }
              valid_after.erase(b.info.uri);
            } else {
              edits.push_back(Edit{Edit::Kind::kUpsert, b.info});
              valid_after.insert(b.info.uri);
            }
          }
          if (options_.max_contacts != 0 && valid_after.size() > options_.max_contacts &&
              valid_after.size() > valid_before.size()) {
            rejection = Rejection{503, "Too many registered contacts"};
            return absl::ResourceExhaustedError("too many contacts");
          }
          // The server-wide limit (unauthenticated REGISTERs must not fill shared
          // memory); checked under this AOR's lock only, so concurrent REGISTERs for
          // other AORs may overshoot it by a few.
          const size_t added = valid_after.size() > valid_before.size()
                                   ? valid_after.size() - valid_before.size()
                                   : 0;
          if (added > 0 && options_.max_contacts_total != 0 &&
              table_.contacts() + added > options_.max_contacts_total) {
            rejection = Rejection{503,
                                  "Server registration limit reached",
                                  {absl::StrCat("Retry-After: ", options_.retry_after)}};
            return absl::ResourceExhaustedError("registration limit");
          }
          // The per-source limit (usrloc's max_contacts_per_source): one address cannot
          // take the whole table either.
          if (added > 0 && usrloc_.max_contacts_per_source() != 0 &&
              usrloc_.ContactsFromSource(request.source_ip()) + added >
                  usrloc_.max_contacts_per_source()) {
            rejection = Rejection{503,
                                  "Too many registrations from this address",
                                  {absl::StrCat("Retry-After: ", options_.retry_after)}};
            return absl::ResourceExhaustedError("source registration limit");
          }
          return absl::OkStatus();
        },
        pending != nullptr ? usrloc::Usrloc::CommitMode::kLater
                           : usrloc::Usrloc::CommitMode::kWait);
    if (rejection.has_value()) {
      if (counters_.rejected.valid()) counters_.rejected.Inc();
      return ToReply(std::move(*rejection));
    }
    if (!applied.ok()) {
      spdlog::error("registrar: saving {} failed: {}", req.aor, applied.status().ToString());
      if (counters_.rejected.valid()) counters_.rejected.Inc();
      return ToReply(Rejection{500, "Error while inserting contact"});
    }
    if (!applied->persisted.ok()) {
      if (counters_.rejected.valid()) counters_.rejected.Inc();
      return ToReply(Rejection{500, "Error while writing the location database"});
    }
    if (applied->commit_pending) {
      pending->emplace(applied->result.after);
    }
    bindings = std::move(applied->result.after.contacts);
  }

  RegisterReply reply;
  for (const ContactInfo& c : bindings) {
    if (!c.Valid(now)) continue;
    std::string header = absl::StrCat("Contact: <", c.uri, ">");
    if (c.expires != 0) absl::StrAppend(&header, ";expires=", c.expires - now);
    if (c.q != usrloc::kQUnspecified) absl::StrAppend(&header, ";q=", usrloc::FormatQ(c.q));
    if (!c.received.empty()) absl::StrAppend(&header, ";received=\"", c.received, "\"");
    if (!c.instance.empty()) absl::StrAppend(&header, ";+sip.instance=\"", c.instance, "\"");
    reply.headers.push_back(std::move(header));
  }
  if (req.supports_path && !req.path.empty()) {
    reply.headers.push_back(absl::StrCat("Path: ", req.path));
  }
  reply.headers.push_back(absl::StrCat("Date: ", HttpDate(now)));
  // A pending commit is counted when it is acknowledged.
  if (counters_.accepted.valid() && (pending == nullptr || !pending->has_value())) {
    counters_.accepted.Inc();
  }
  return reply;
}

namespace {

// A deferred REGISTER's acknowledgment: the token of its way back and its 200 OK.
std::string EncodeAck(std::string_view token, const RegisterReply& reply) {
  sqlite::RecordWriter w;
  w.Str(token);
  w.U32(static_cast<uint32_t>(reply.code));
  w.Str(reply.reason);
  w.U32(static_cast<uint32_t>(reply.headers.size()));
  for (const std::string& h : reply.headers) w.Str(h);
  return w.Take();
}

bool DecodeAck(std::string_view ack, std::string& token, RegisterReply& reply) {
  sqlite::RecordReader r(ack);
  uint32_t code = 0;
  uint32_t headers = 0;
  if (!r.Str(token) || !r.U32(code) || !r.Str(reply.reason) || !r.U32(headers)) return false;
  reply.code = static_cast<int>(code);
  reply.headers.resize(headers);
  for (std::string& h : reply.headers) {
    if (!r.Str(h)) return false;
  }
  return r.done();
}

RegisterReply CommitFailed() {
  return ToReply(Rejection{500, "Error while writing the location database"});
}

}  // namespace

void Registrar::Handle(SipRequest& request) {
  std::optional<usrloc::AorSnapshot> pending;
  RegisterReply reply = Process(request, &pending);
  if (pending.has_value()) {
    absl::StatusOr<std::string> token = request.Defer();
    if (token.ok()) {
      // A UDP worker commits when it has read every waiting datagram (a SIP idle
      // handler), so the batch holds everything that arrived meanwhile; a TCP receiver
      // serves many connections and leads at once.
      const bool udp = absl::StartsWith(request.socket(), "udp:");
      if (usrloc_.CommitLater(table_, *pending, EncodeAck(*token, reply), !udp).ok()) return;
      // Not queued (shared memory full): commit here, answer through the token.
      absl::Status committed = usrloc_.CommitNow(table_, *pending);
      Acknowledge(EncodeAck(*token, reply), committed);
      return;
    }
    // This request cannot be answered later: commit and wait.
    if (usrloc_.CommitNow(table_, *pending).ok()) {
      if (counters_.accepted.valid()) counters_.accepted.Inc();
    } else {
      if (counters_.rejected.valid()) counters_.rejected.Inc();
      reply = CommitFailed();
    }
  }
  absl::Status s = request.Reply(reply.code, reply.reason, reply.headers);
  if (!s.ok()) spdlog::warn("registrar: cannot send {} reply: {}", reply.code, s.ToString());
}

void Registrar::Acknowledge(std::string_view ack, const absl::Status& committed) {
  std::string token;
  RegisterReply reply;
  if (!DecodeAck(ack, token, reply)) {
    spdlog::error("registrar: unreadable deferred reply ({} bytes)", ack.size());
    return;
  }
  if (committed.ok()) {
    if (counters_.accepted.valid()) counters_.accepted.Inc();
  } else {
    if (counters_.rejected.valid()) counters_.rejected.Inc();
    reply = CommitFailed();
  }
  absl::Status s = SendDeferredReply(token, reply.code, reply.reason, reply.headers);
  if (!s.ok()) {
    spdlog::warn("registrar: cannot send deferred {} reply: {}", reply.code, s.ToString());
  }
}

// ---------------------------------------------------------------------------------------

absl::Status RegistrarModule::SetParam(std::string_view param, const ParamValue& value) {
  const int64_t* v = std::get_if<int64_t>(&value);
  auto bad = [&](std::string_view range) {
    return absl::InvalidArgumentError(absl::StrCat("registrar: parameter ", std::string(param),
                                                   " must be an integer ", std::string(range)));
  };
  if (param == "default_expires" || param == "min_expires" || param == "max_expires" ||
      param == "max_contacts" || param == "max_contacts_total" || param == "retry_after") {
    if (v == nullptr || *v < 0 || *v > 0xFFFFFFFFll) return bad("in [0, 4294967295]");
    const auto u = static_cast<uint32_t>(*v);
    if (param == "default_expires") options_.default_expires = u;
    if (param == "min_expires") options_.min_expires = u;
    if (param == "max_expires") options_.max_expires = u;
    if (param == "max_contacts") options_.max_contacts = u;
    if (param == "max_contacts_total") options_.max_contacts_total = u;
    if (param == "retry_after") options_.retry_after = u;
    return absl::OkStatus();
  }
  if (param == "store_received") {
    if (v == nullptr || (*v != 0 && *v != 1)) return bad("0 or 1");
    options_.store_received = *v == 1;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("registrar: unknown parameter ", std::string(param)));
}

absl::Status RegistrarModule::Init(Core& core) {
  auto* ul_module = dynamic_cast<usrloc::UsrlocModule*>(core.FindModule("usrloc"));
  if (ul_module == nullptr) {
    return absl::FailedPreconditionError(
        "registrar: module usrloc is required (loadmodule \"usrloc\" before \"registrar\")");
  }
  usrloc::Usrloc& ul = ul_module->usrloc();
  usrloc::LocationTable* table = ul.FindTable(usrloc::kDefaultTable);
  if (table == nullptr) return absl::InternalError("registrar: usrloc has no table location");
  if (options_.max_expires != 0 && options_.default_expires > options_.max_expires) {
    return absl::InvalidArgumentError("registrar: default_expires must not be above max_expires");
  }
  if (options_.default_expires != 0 && options_.default_expires < options_.min_expires) {
    return absl::InvalidArgumentError("registrar: default_expires must not be below min_expires");
  }
  // Statistics as OpenSIPS's registrar exports them.
  const Options* o = &options_;
  SIPD_RETURN_IF_ERROR(core.stats().AddFunction("registrar", "max_expires",
                                                [o] { return uint64_t{o->max_expires}; }));
  SIPD_RETURN_IF_ERROR(core.stats().AddFunction("registrar", "max_contacts",
                                                [o] { return uint64_t{o->max_contacts}; }));
  SIPD_RETURN_IF_ERROR(core.stats().AddFunction("registrar", "default_expire",
                                                [o] { return uint64_t{o->default_expires}; }));
  Registrar::Counters counters;
  SIPD_ASSIGN_OR_RETURN(counters.accepted, core.stats().AddCounter("registrar", "accepted_regs"));
  SIPD_ASSIGN_OR_RETURN(counters.rejected, core.stats().AddCounter("registrar", "rejected_regs"));
  registrar_ = std::make_unique<Registrar>(options_, ul, *table, counters);
  Registrar* r = registrar_.get();
  ul.SetAckHandler(
      [r](std::string_view ack, const absl::Status& committed) { r->Acknowledge(ack, committed); });
  core.AddSipHandler("REGISTER", [r](SipRequest& request) { r->Handle(request); });
  spdlog::info("registrar: expires default {} min {} max {}, max_contacts {}",
               options_.default_expires, options_.min_expires, options_.max_expires,
               options_.max_contacts);
  return absl::OkStatus();
}

}  // namespace sipd::registrar

namespace sipd {
std::unique_ptr<Module> NewRegistrarModule() {
  return std::make_unique<registrar::RegistrarModule>();
}
}  // namespace sipd
