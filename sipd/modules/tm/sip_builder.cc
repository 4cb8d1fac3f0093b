#include "sipd/modules/tm/sip_builder.h"

#include <charconv>
#include <cstdio>

namespace sipd::tm {
namespace {

constexpr std::string_view kMagicCookie = "z9hG4bK";

void Append(std::string& out, std::string_view a) { out.append(a.data(), a.size()); }

// Appends "Name: value\r\n".
void AppendHeader(std::string& out, std::string_view name, std::string_view value) {
  Append(out, name);
  out += ": ";
  Append(out, value);
  out += "\r\n";
}

void AppendNumber(std::string& out, uint64_t value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, static_cast<size_t>(end - digits));
}

void AppendHex(std::string& out, uint32_t value) {
  char digits[16];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value, 16);
  out.append(digits, static_cast<size_t>(end - digits));
}

// The part of header `h` starting after its first list element (", rest"), i.e. the
// remaining elements, trimmed; empty if there is only one.
std::string_view AfterFirstElement(const Header& h, std::string_view first) {
  const char* end_of_first = first.data() + first.size();
  std::string_view rest(end_of_first, h.value.data() + h.value.size() - end_of_first);
  rest = TrimWhitespace(rest);
  if (!rest.empty() && rest.front() == ',') rest.remove_prefix(1);
  return TrimWhitespace(rest);
}

// The body section of `m` with the empty line: "\r\n" + body.
std::string_view BodySection(const SipMessage& m) {
  std::string_view raw = m.raw();
  return raw.substr(m.headers_end());
}

bool IsHex(std::string_view s) {
  if (s.empty() || s.size() > 8) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

uint32_t Fnv1a32(std::string_view data, uint32_t hash) {
  for (unsigned char c : data) {
    hash ^= c;
    hash *= 16777619u;
  }
  return hash;
}

uint32_t LoopHash(const SipMessage& request) {
  uint32_t h = Fnv1a32(request.request_uri());
  h = Fnv1a32("|", h);
  h = Fnv1a32(request.from_tag(), h);
  h = Fnv1a32("|", h);
  h = Fnv1a32(request.to_tag(), h);
  h = Fnv1a32("|", h);
  h = Fnv1a32(request.call_id(), h);
  char cseq[16];
  auto [end, ec] = std::to_chars(cseq, cseq + sizeof(cseq), request.cseq());
  return Fnv1a32(std::string_view(cseq, static_cast<size_t>(end - cseq)), h);
}

std::string MakeBranch(uint32_t loop_hash, uint32_t index, uint32_t label, uint32_t branch) {
  std::string out(kMagicCookie);
  out.reserve(48);
  AppendHex(out, loop_hash);
  out += '.';
  AppendHex(out, index);
  out += '.';
  AppendHex(out, label);
  out += '.';
  AppendHex(out, branch);
  return out;
}

bool ParseBranch(std::string_view branch, BranchParts* parts) {
  if (branch.substr(0, kMagicCookie.size()) != kMagicCookie) return false;
  branch.remove_prefix(kMagicCookie.size());
  uint32_t values[4];
  for (int i = 0; i < 4; ++i) {
    const size_t dot = branch.find('.');
    std::string_view field = branch.substr(0, dot);
    if (!IsHex(field)) return false;
    std::from_chars(field.data(), field.data() + field.size(), values[i], 16);
    if (i < 3) {
      if (dot == std::string_view::npos) return false;
      branch.remove_prefix(dot + 1);
    } else if (dot != std::string_view::npos) {
      return false;
    }
  }
  *parts = BranchParts{values[0], values[1], values[2], values[3]};
  return true;
}

std::string BuildRelayedRequest(const SipMessage& request, const RelayEdits& edits) {
  std::string out;
  out.reserve(request.raw().size() + 256);
  Append(out, request.method_text());
  out += ' ';
  Append(out, edits.request_uri.empty() ? request.request_uri() : edits.request_uri);
  out += " SIP/2.0\r\n";
  AppendHeader(out, "Via", edits.via);
  for (const std::string& rr : edits.record_routes) AppendHeader(out, "Record-Route", rr);
  bool wrote_max_forwards = false;
  bool wrote_routes = edits.routes.empty();
  int to_pop = edits.pop_routes;
  auto write_routes = [&] {
    if (wrote_routes) return;
    for (const std::string& r : edits.routes) AppendHeader(out, "Route", r);
    wrote_routes = true;
  };
  for (const Header& h : request.headers()) {
    switch (h.type) {
      case HeaderType::kVia:
        if (&h == request.top_via_header() && !edits.top_via_params.empty()) {
          // Insert the parameters right after the top via-parm (other via-parms may
          // follow on the same line).
          const std::string_view via = request.top_via().text;
          const size_t split = static_cast<size_t>(via.data() + via.size() - h.line.data());
          Append(out, h.line.substr(0, split));
          Append(out, edits.top_via_params);
          Append(out, h.line.substr(split));
        } else {
          Append(out, h.line);
        }
        break;
      case HeaderType::kMaxForwards:
        if (!wrote_max_forwards) {
          out += "Max-Forwards: ";
          AppendNumber(out, static_cast<uint64_t>(edits.max_forwards));
          out += "\r\n";
          wrote_max_forwards = true;
        }
        break;
      case HeaderType::kRoute: {
        write_routes();
        if (to_pop == 0) {
          Append(out, h.line);
          break;
        }
        // Drop the first `to_pop` entries; keep the rest of this line.
        std::string_view rest = h.value;
        while (to_pop > 0) {
          const std::vector<std::string_view> items = SplitList(rest, 1);
          if (items.empty()) {
            rest = {};
            break;
          }
          const char* after = items[0].data() + items[0].size();
          rest = TrimWhitespace(std::string_view(after, rest.data() + rest.size() - after));
          if (!rest.empty() && rest.front() == ',') rest.remove_prefix(1);
          rest = TrimWhitespace(rest);
          --to_pop;
          if (rest.empty()) break;
        }
        if (!rest.empty()) AppendHeader(out, h.name, rest);
        break;
      }
      default:
        Append(out, h.line);
    }
  }
  write_routes();
  if (!wrote_max_forwards) {
    out += "Max-Forwards: ";
    AppendNumber(out, static_cast<uint64_t>(edits.max_forwards));
    out += "\r\n";
  }
  Append(out, BodySection(request));
  return out;
}

std::string BuildForwardedReply(const SipMessage& reply) {
  std::string out;
  out.reserve(reply.raw().size());
  Append(out, reply.start_line());
  for (const Header& h : reply.headers()) {
    if (&h == reply.top_via_header()) {
      std::string_view rest = AfterFirstElement(h, reply.top_via().text);
      if (!rest.empty()) AppendHeader(out, h.name, rest);
      continue;
    }
    Append(out, h.line);
  }
  Append(out, BodySection(reply));
  return out;
}

std::string BuildLocalReply(const SipMessage& request, int code, std::string_view reason,
                            std::string_view to_tag, const std::vector<std::string>& extra_headers,
                            std::string_view body, std::string_view server) {
  std::string out;
  out.reserve(512 + body.size());
  out += "SIP/2.0 ";
  AppendNumber(out, static_cast<uint64_t>(code));
  out += ' ';
  Append(out, reason);
  out += "\r\n";
  for (const Header& h : request.headers()) {
    switch (h.type) {
      case HeaderType::kVia:
      case HeaderType::kFrom:
      case HeaderType::kCallId:
      case HeaderType::kCSeq:
        Append(out, h.line);
        break;
      case HeaderType::kTo:
        if (code > 100 && request.to_tag().empty() && !to_tag.empty()) {
          out += "To: ";
          Append(out, h.value);
          out += ";tag=";
          Append(out, to_tag);
          out += "\r\n";
        } else {
          Append(out, h.line);
        }
        break;
      default:
        break;
    }
  }
  for (const std::string& extra : extra_headers) {
    Append(out, extra);
    out += "\r\n";
  }
  if (!server.empty()) AppendHeader(out, "Server", server);
  out += "Content-Length: ";
  AppendNumber(out, body.size());
  out += "\r\n\r\n";
  Append(out, body);
  return out;
}

namespace {

// Request line, top Via, Route headers, Max-Forwards, From, `to` line, Call-ID, CSeq for
// `method`, Content-Length 0: the shape shared by ACK and CANCEL.
std::string BuildHopByHop(const SipMessage& request, std::string_view method,
                          std::string_view to_line) {
  std::string out;
  out.reserve(512);
  Append(out, method);
  out += ' ';
  Append(out, request.request_uri());
  out += " SIP/2.0\r\n";
  if (request.top_via_header() != nullptr) {
    AppendHeader(out, "Via", request.top_via().text);
  }
  for (const Header& h : request.headers()) {
    if (h.type == HeaderType::kRoute) Append(out, h.line);
  }
  out += "Max-Forwards: 70\r\n";
  for (const Header& h : request.headers()) {
    if (h.type == HeaderType::kFrom || h.type == HeaderType::kCallId) Append(out, h.line);
  }
  Append(out, to_line);
  out += "CSeq: ";
  AppendNumber(out, request.cseq());
  out += ' ';
  Append(out, method);
  out += "\r\nContent-Length: 0\r\n\r\n";
  return out;
}

std::string ToLine(const SipMessage& m) {
  const Header* to = m.Find(HeaderType::kTo);
  return to == nullptr ? std::string() : std::string(to->line);
}

}  // namespace

std::string BuildAckForNon2xx(const SipMessage& request, const SipMessage& reply) {
  return BuildHopByHop(request, "ACK", ToLine(reply));
}

std::string BuildCancel(const SipMessage& request) {
  return BuildHopByHop(request, "CANCEL", ToLine(request));
}

absl::StatusOr<std::string> BuildAckFor2xx(const SipMessage& request, const SipMessage& reply,
                                           std::string_view via, std::string* next_hop) {
  auto contacts = reply.Contacts();
  if (!contacts.ok() || contacts->empty() || (*contacts)[0].star) {
    return absl::InvalidArgumentError("2xx without a Contact");
  }
  auto record_routes = reply.RecordRoutes();
  if (!record_routes.ok()) return record_routes.status();
  std::vector<std::string_view> routes;  // the route set: Record-Route reversed
  for (auto it = record_routes->rbegin(); it != record_routes->rend(); ++it) {
    routes.push_back(it->text);
  }
  std::string_view target = (*contacts)[0].uri.text;
  std::string_view request_uri = target;
  std::string strict_last;
  if (!routes.empty() && !record_routes->back().uri.lr()) {
    // Strict router: it becomes the Request-URI; the remote target goes last.
    request_uri = record_routes->back().uri.text;
    routes.erase(routes.begin());
    strict_last.reserve(target.size() + 2);
    strict_last += '<';
    Append(strict_last, target);
    strict_last += '>';
  }
  *next_hop = std::string(routes.empty() || !strict_last.empty() ? request_uri
                                                                 : record_routes->back().uri.text);
  std::string out;
  out.reserve(512);
  out += "ACK ";
  Append(out, request_uri);
  out += " SIP/2.0\r\n";
  AppendHeader(out, "Via", via);
  for (std::string_view r : routes) AppendHeader(out, "Route", r);
  if (!strict_last.empty()) AppendHeader(out, "Route", strict_last);
  out += "Max-Forwards: 70\r\n";
  for (const Header& h : request.headers()) {
    if (h.type == HeaderType::kFrom || h.type == HeaderType::kCallId) Append(out, h.line);
  }
  out += ToLine(reply);
  out += "CSeq: ";
  AppendNumber(out, request.cseq());
  out += " ACK\r\nContent-Length: 0\r\n\r\n";
  return out;
}

}  // namespace sipd::tm
