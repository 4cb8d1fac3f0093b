// A SIP message as the transaction layer and the proxy see it (RFC 3261 section 7).
//
// Why not libosip2 here: the proxy relays a message by copying its bytes with a few
// edits (request line, one Via added, Max-Forwards, Route/Record-Route), the way
// OpenSIPS applies "lumps" to the received buffer. That needs the exact position of
// every header, one pass over the bytes and no allocation per header field; a parse
// that rebuilds the message from a tree would be slower and would not forward unknown
// headers byte for byte. libosip2 stays for the registrar (SipRequest, sipd/core/sip.h).
//
// SipMessage::Parse() reads the start line, splits the header section into lines
// (folded continuation lines belong to their header; compact names are recognised),
// parses the headers the transaction layer needs (top Via, From, To, Call-ID, CSeq,
// Max-Forwards, Content-Length) and finds the body. Anything else is parsed on demand
// (Routes(), Contacts(), Vias(), ...). A message that is readable but lacks or garbles
// a mandatory header parses with defect() naming the problem, so the caller can still
// answer 400 when the headers needed for a reply are there.
//
// Bounds (hostile input): the message size, the number of header lines, and the
// number of Via/Route entries read are limited by Limits; beyond them Parse() fails or
// sets a defect. All work is linear in the size of the message.
//
// Every string_view returned points into the message's own copy of the bytes and stays
// valid for the message's lifetime (moves included; copies are not allowed).
//
// Thread-safety: a parsed message is immutable; const methods may be used from any
// thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sipd::tm {

enum class Method : uint8_t {
  kOther,
  kInvite,
  kAck,
  kCancel,
  kBye,
  kRegister,
  kOptions,
  kInfo,
  kUpdate,
  kPrack,
  kSubscribe,
  kNotify,
  kRefer,
  kMessage,
  kPublish,
};
// Methods are case-sensitive (RFC 3261 7.1): "invite" is kOther.
Method ParseMethod(std::string_view text);

enum class HeaderType : uint8_t {
  kOther,
  kVia,
  kFrom,
  kTo,
  kCallId,
  kCSeq,
  kMaxForwards,
  kRoute,
  kRecordRoute,
  kContact,
  kContentLength,
  kContentType,
  kExpires,
  kRequire,
  kProxyRequire,
  kSupported,
  kPath,
  kUserAgent,
  kServer,
};
// Case-insensitive, full and compact names (v, f, t, i, m, l, c, k).
HeaderType ClassifyHeader(std::string_view name);

// A URI parameter list ";a=b;lr;transport=tcp" (or header params of a name-addr).
// Lookups are case-insensitive on the name.
class ParamList {
 public:
  ParamList() = default;
  explicit ParamList(std::string_view text) : text_(text) {}
  // The value of `name`; present = the parameter exists (maybe without a value).
  std::optional<std::string_view> Get(std::string_view name) const;
  bool Has(std::string_view name) const { return Get(name).has_value(); }
  // Calls visit(name, value) for each parameter in order (value "" without '='; both
  // trimmed) until it returns true or a parameter does not start with ';'.
  template <typename Visit>
  void ForEach(Visit visit) const;
  std::string_view text() const { return text_; }

 private:
  std::string_view text_;  // starts with ';' or is empty
};

// A character of a token (RFC 3261 25.1: alphanum / "-" / "." / "!" / "%" / "*" / "_" /
// "+" / "`" / "'" / "~").
bool IsTokenChar(char c);
// Case-insensitive ASCII comparison.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
// Strips spaces, tabs, CR and LF at both ends.
std::string_view TrimWhitespace(std::string_view s);
// The position of the first `c` at top level (outside quotes and <>) at or after
// `from`, or npos.
size_t FindTopLevel(std::string_view s, char c, size_t from = 0);

template <typename Visit>
void ParamList::ForEach(Visit visit) const {
  std::string_view rest = text_;
  while (!rest.empty() && rest.front() == ';') {
    rest.remove_prefix(1);
    const size_t end = FindTopLevel(rest, ';');
    const std::string_view param = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    const size_t eq = param.find('=');
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view() : TrimWhitespace(param.substr(eq + 1));
    if (visit(TrimWhitespace(param.substr(0, eq)), value)) return;
  }
}

// sip:/sips: URI (RFC 3261 19.1), other schemes keep only scheme and text.
struct SipUri {
  std::string_view text;    // the whole URI
  std::string_view scheme;  // lower-case expected: "sip", "sips", "tel", ...
  std::string_view user;    // without the password; empty if none
  std::string_view host;    // IPv6 with its brackets: "[::1]"
  uint16_t port = 0;        // 0 = not given
  ParamList params;
  std::string_view headers;  // after '?', without it

  bool is_sip() const;  // sip or sips (case-insensitive)
  // `host` without IPv6 brackets.
  std::string_view bare_host() const;
  // ";transport=" value (empty = none).
  std::string_view transport() const;
  bool lr() const { return params.Has("lr"); }
};
// InvalidArgument for a malformed URI (missing scheme, empty host, bad port, ...).
absl::StatusOr<SipUri> ParseUri(std::string_view text);

// One name-addr / addr-spec with header parameters: From, To, Contact, Route entries.
struct NameAddr {
  std::string_view text;  // the whole entry
  std::string_view display;
  SipUri uri;
  ParamList params;   // header parameters (after '>' or after an addr-spec)
  bool star = false;  // Contact: *
};
absl::StatusOr<NameAddr> ParseNameAddr(std::string_view text);

// One via-parm (RFC 3261 20.42).
struct Via {
  std::string_view text;       // the whole via-parm
  std::string_view transport;  // "UDP", "TCP", ...
  std::string_view host;       // sent-by host (IPv6 with brackets)
  uint16_t port = 0;           // 0 = not given
  ParamList params;
  std::string_view branch;  // empty if absent
  bool has_rport = false;   // RFC 3581
  std::string_view received;
};
absl::StatusOr<Via> ParseVia(std::string_view text);

// Splits a header value at top-level commas (outside quotes and <>), trimmed; empty
// elements dropped. At most `max_items` items (the rest is ignored).
std::vector<std::string_view> SplitList(std::string_view value, size_t max_items = 1000);

// The To-tag of a message from a light scan of its header lines, without a parse: for
// a path that must cost less than one (the ACK of a stateless 503 under overload).
// nullopt whenever the scan cannot be sure (a folded line, a quoted display name, no To
// header, no tag): the caller parses then. When both find a tag, it is the one
// SipMessage::Parse() gives (fuzz_sip_proxy checks this).
std::optional<std::string_view> ScanToTag(std::string_view message);

struct Header {
  HeaderType type = HeaderType::kOther;
  std::string_view name;   // as written
  std::string_view value;  // trimmed, may contain folded line breaks
  std::string_view line;   // from the name to the end of its CRLF (continuations included)
};

class SipMessage {
 public:
  struct Limits {
    size_t max_size = 65535;
    size_t max_headers = 256;
    // Via and Route/Record-Route entries read by Vias()/Routes()/RecordRoutes().
    size_t max_entries = 64;
  };

  // InvalidArgument when the bytes are not a SIP message at all (no start line, no
  // end of headers, too big, too many headers, Content-Length beyond the data). A
  // message that parses may still have a defect().
  static absl::StatusOr<SipMessage> Parse(std::string_view data, const Limits& limits);
  static absl::StatusOr<SipMessage> Parse(std::string_view data) { return Parse(data, Limits()); }

  SipMessage(SipMessage&&) = default;
  SipMessage& operator=(SipMessage&&) = default;
  SipMessage(const SipMessage&) = delete;
  SipMessage& operator=(const SipMessage&) = delete;

  // Empty when the mandatory headers are present and readable; otherwise what is wrong,
  // e.g. "Missing Call-ID header", "Bad CSeq header".
  std::string_view defect() const { return defect_; }

  bool is_request() const { return status_ == 0; }
  // Requests.
  std::string_view method_text() const { return method_text_; }
  Method method() const { return method_; }
  std::string_view request_uri() const { return request_uri_; }
  // Replies.
  int status() const { return status_; }
  std::string_view reason() const { return reason_; }

  std::string_view raw() const { return *raw_; }
  // The start line with its CRLF.
  std::string_view start_line() const { return start_line_; }
  // From the first header to the end of the message (what t_uac_dlg shows, spec 8.3).
  std::string_view after_start_line() const;
  const std::vector<Header>& headers() const { return headers_; }
  // The first header of `type`, or nullptr.
  const Header* Find(HeaderType type) const;
  // The first header named `name` (case-insensitive; compact forms not applied).
  const Header* FindByName(std::string_view name) const;
  // Where the header section ends: the offset of the empty line's CRLF in raw().
  size_t headers_end() const { return headers_end_; }
  std::string_view body() const { return body_; }

  // Parsed mandatory headers (meaningful when defect() is empty; the ones that were
  // read are set even when another one is missing).
  const Via& top_via() const { return top_via_; }
  // The Via header line holding the top via-parm.
  const Header* top_via_header() const { return top_via_header_; }
  std::string_view call_id() const { return call_id_; }
  uint32_t cseq() const { return cseq_; }
  Method cseq_method() const { return cseq_method_; }
  std::string_view cseq_method_text() const { return cseq_method_text_; }
  const NameAddr& from() const { return from_; }
  const NameAddr& to() const { return to_; }
  std::string_view from_tag() const { return from_tag_; }
  std::string_view to_tag() const { return to_tag_; }
  // -1 when absent.
  int max_forwards() const { return max_forwards_; }
  bool has_via() const { return top_via_header_ != nullptr; }

  // On demand, in message order, bounded by Limits::max_entries. Malformed entries
  // make the call fail.
  absl::StatusOr<std::vector<Via>> Vias() const;
  absl::StatusOr<std::vector<NameAddr>> Routes() const;
  absl::StatusOr<std::vector<NameAddr>> RecordRoutes() const;
  absl::StatusOr<std::vector<NameAddr>> Contacts() const;
  // Parsed Request-URI (requests only).
  absl::StatusOr<SipUri> RequestUri() const { return ParseUri(request_uri_); }

 private:
  SipMessage() = default;
  absl::Status ParseStartLine(std::string_view line);
  void ParseMandatory();
  absl::StatusOr<std::vector<NameAddr>> Entries(HeaderType type) const;

  std::unique_ptr<std::string> raw_;
  Limits limits_;
  std::string defect_;
  std::string_view start_line_;
  std::string_view method_text_;
  Method method_ = Method::kOther;
  std::string_view request_uri_;
  int status_ = 0;
  std::string_view reason_;
  std::vector<Header> headers_;
  size_t headers_end_ = 0;
  std::string_view body_;

  Via top_via_;
  const Header* top_via_header_ = nullptr;
  std::string_view call_id_;
  uint32_t cseq_ = 0;
  Method cseq_method_ = Method::kOther;
  std::string_view cseq_method_text_;
  NameAddr from_;
  NameAddr to_;
  std::string_view from_tag_;
  std::string_view to_tag_;
  int max_forwards_ = -1;
};

}  // namespace sipd::tm
