#include "sipd/core/sip_receiver.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <osipparser2/osip_parser.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"
#include "sipd/core/sip.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

// Larger than any UDP payload (65507 bytes over IPv4, 65527 over IPv6).
constexpr size_t kReceiveBufferSize = 65536;

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Microseconds between the kernel's receive stamp of a datagram (SO_TIMESTAMPNS, wall
// clock) and now; 0 without a stamp, or when the wall clock stepped back.
int64_t QueuedMicros(const msghdr& message) {
  for (const cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr;
       c = CMSG_NXTHDR(const_cast<msghdr*>(&message), const_cast<cmsghdr*>(c))) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPNS) continue;
    timespec stamp{};
    std::memcpy(&stamp, CMSG_DATA(c), sizeof(stamp));
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    const int64_t waited = (static_cast<int64_t>(now.tv_sec) - stamp.tv_sec) * 1000000 +
                           (now.tv_nsec - stamp.tv_nsec) / 1000;
    return std::max<int64_t>(waited, 0);
  }
  return 0;
}

struct OsipMessageDeleter {
  void operator()(osip_message_t* m) const { osip_message_free(m); }
};
using OsipMessagePtr = std::unique_ptr<osip_message_t, OsipMessageDeleter>;

// nullptr if libosip2 cannot parse the datagram.
OsipMessagePtr Parse(std::string_view data) {
  osip_message_t* raw = nullptr;
  if (osip_message_init(&raw) != 0 || raw == nullptr) return nullptr;
  OsipMessagePtr message(raw);
  if (osip_message_parse(raw, data.data(), data.size()) != 0) return nullptr;
  return message;
}

// Appends the libosip2 serialisation of a header (freed right away).
template <typename T>
bool AppendHeader(std::string& out, std::string_view name, T* header,
                  int (*to_str)(const T*, char**)) {
  if (header == nullptr) return false;
  char* text = nullptr;
  if (to_str(header, &text) != 0 || text == nullptr) return false;
  absl::StrAppend(&out, AbslView(name), ": ", text, "\r\n");
  osip_free(text);
  return true;
}

// RFC 5626 keep-alives ("\r\n\r\n") and empty datagrams are not SIP messages.
bool IsKeepAlive(std::string_view data) {
  return data.find_first_not_of("\r\n") == std::string_view::npos;
}

bool HasLineBreak(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

uint64_t Fnv1a(uint64_t hash, const char* s) {
  if (s == nullptr) return hash;
  for (; *s != '\0'; ++s) {
    hash ^= static_cast<unsigned char>(*s);
    hash *= 1099511628211ull;
  }
  return hash;
}

// What a header check found missing, or nullptr.
const char* MissingHeader(osip_message_t* m) {
  if (osip_list_size(&m->vias) <= 0) return "Via";
  if (m->from == nullptr) return "From";
  if (m->to == nullptr) return "To";
  if (m->call_id == nullptr) return "Call-ID";
  if (m->cseq == nullptr) return "CSeq";
  return nullptr;
}

class SipRequestImpl final : public SipRequest {
 public:
  SipRequestImpl(StatelessSipStack& stack, osip_message_t* message, const SipInbound& inbound,
                 const std::string& socket)
      : stack_(stack),
        message_(message),
        method_(message->sip_method != nullptr ? message->sip_method : ""),
        inbound_(inbound),
        socket_(socket) {}

  osip_message_t* message() override { return message_; }
  const std::string& method() const override { return method_; }
  std::string_view raw() const override { return inbound_.bytes; }
  const sockaddr_storage& source() const override { return inbound_.source.peer.storage; }
  std::string source_ip() const override { return inbound_.source.peer.ip(); }
  uint16_t source_port() const override { return inbound_.source.peer.port(); }
  const std::string& socket() const override { return socket_; }

  absl::Status Reply(int code, std::string_view reason,
                     const std::vector<std::string>& extra_headers,
                     std::string_view body) override {
    return stack_.SendReply(message_, inbound_.source, code, reason, extra_headers, body);
  }
  absl::StatusOr<std::string> Defer() override {
    return stack_.DeferredToken(message_, inbound_.source);
  }

 private:
  StatelessSipStack& stack_;
  osip_message_t* message_;
  std::string method_;
  const SipInbound& inbound_;
  const std::string& socket_;
};

// Reason and extra header lines of a local reply must not break its header block.
absl::Status CheckReplyLines(std::string_view reason,
                             const std::vector<std::string>& extra_headers) {
  if (HasLineBreak(reason)) return absl::InvalidArgumentError("reason contains a line break");
  for (const auto& h : extra_headers) {
    if (HasLineBreak(h)) return absl::InvalidArgumentError("header contains a line break");
  }
  return absl::OkStatus();
}

// Ends a stateless reply whose status line and copied headers are in `out` (extra
// headers, Server, Content-Length, body), sends it back to `source` and counts it in sl.
// `what` ("" or "deferred ") names it in the warning when it cannot be sent.
absl::Status FinishAndSendReply(SipTransport& transport, const SipCounters& counters,
                                const SipSource& source, std::string& out, int code,
                                const std::vector<std::string>& extra_headers,
                                std::string_view server, std::string_view body,
                                std::string_view what) {
  for (const auto& h : extra_headers) absl::StrAppend(&out, h, "\r\n");
  absl::StrAppend(&out, "Server: ", AbslView(server), "\r\nContent-Length: ", body.size(),
                  "\r\n\r\n", AbslView(body));
  absl::Status sent = transport.Send(SipDestination::ReplyTo(source), out);
  if (!sent.ok()) {
    spdlog::warn("cannot send {}{} reply to {}:{}: {}", what, code, SipProtoName(source.proto),
                 source.peer.ToString(), std::string(sent.message()));
    return sent;
  }
  counters.replies_by_class[code / 100 - 1].Inc();
  counters.sent_replies.Inc();
  if (code >= 300) counters.sent_err_replies.Inc();
  return absl::OkStatus();
}

}  // namespace

absl::Status RegisterCoreStats(mi::StatsRegistry& stats, std::function<uint64_t()> timestamp_fn,
                               SipCounters& c) {
  stats.AddGroup("core");
  struct Entry {
    const char* name;
    mi::Counter* counter;
  };
  const Entry entries[] = {
      {"rcv_requests", &c.rcv_requests},   {"rcv_replies", &c.rcv_replies},
      {"fwd_requests", &c.fwd_requests},   {"fwd_replies", &c.fwd_replies},
      {"drop_requests", &c.drop_requests}, {"drop_replies", &c.drop_replies},
      {"err_requests", &c.err_requests},   {"err_replies", &c.err_replies},
      {"bad_URIs_rcvd", &c.bad_uris_rcvd}, {"unsupported_methods", &c.unsupported_methods},
      {"bad_msg_hdr", &c.bad_msg_hdr},
  };
  for (const Entry& e : entries) {
    SIPD_ASSIGN_OR_RETURN(*e.counter, stats.AddCounter("core", e.name));
  }
  return stats.AddFunction("core", "timestamp", std::move(timestamp_fn));
}

absl::Status RegisterSlStats(mi::StatsRegistry& stats, SipCounters& c) {
  stats.AddGroup("sl");
  for (int i = 0; i < 6; ++i) {
    SIPD_ASSIGN_OR_RETURN(c.replies_by_class[i],
                          stats.AddCounter("sl", absl::StrCat(i + 1, "xx_replies")));
  }
  SIPD_ASSIGN_OR_RETURN(c.sent_replies, stats.AddCounter("sl", "sent_replies"));
  SIPD_ASSIGN_OR_RETURN(c.sent_err_replies, stats.AddCounter("sl", "sent_err_replies"));
  SIPD_ASSIGN_OR_RETURN(c.received_acks, stats.AddCounter("sl", "received_ACKs"));
  return absl::OkStatus();
}

std::string SockaddrIp(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(address).sin_addr, text, sizeof(text));
  } else if (address.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(address).sin6_addr, text,
              sizeof(text));
  }
  return text;
}

uint16_t SockaddrPort(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  }
  return 0;
}

int ProbeReceiveBuffer(int fd, int max_buffer) {
  // OpenSIPS's probe_max_receive_buffer(): double while the kernel grants it, then grow
  // linearly; Linux silently caps at net.core.rmem_max, so every step is verified.
  constexpr int kIncrement = 2048;
  int initial = 0;
  socklen_t length = sizeof(initial);
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &initial, &length) != 0) return 0;
  if (initial <= 0) initial = kIncrement;
  int phase = 0;
  for (int64_t wanted = initial;;) {
    wanted = phase == 0 ? wanted * 2 : wanted + kIncrement;
    if (wanted > max_buffer) {
      if (phase == 1) break;
      phase = 1;
      wanted /= 2;
      continue;
    }
    const int request = static_cast<int>(wanted);
    int verified = 0;
    length = sizeof(verified);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &request, sizeof(request)) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &verified, &length) != 0 || verified < request) {
      if (phase == 1) break;
      phase = 1;
      wanted /= 2;
      continue;
    }
  }
  int final_size = 0;
  length = sizeof(final_size);
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &final_size, &length);
  return final_size;
}

absl::StatusOr<std::unique_ptr<UdpListener>> UdpListener::Open(const ListenAddress& address,
                                                               int max_buffer) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (address.ipv6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(storage);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(address.port);
    inet_pton(AF_INET6, address.ip.c_str(), &a.sin6_addr);
    length = sizeof(a);
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(storage);
    a.sin_family = AF_INET;
    a.sin_port = htons(address.port);
    inet_pton(AF_INET, address.ip.c_str(), &a.sin_addr);
    length = sizeof(a);
  }
  const int fd = socket(storage.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create a UDP socket for ", address.ToString(),
                                            ": ", std::strerror(errno)));
  }
  if (address.ipv6) {
    const int on = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
  }
  // Workers wake up at least every 200 ms to notice shutdown and log level changes.
  const timeval timeout{0, 200 * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  // No SO_REUSEADDR: a port already in use must fail start-up.
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    const int error = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot bind ", address.ToString(), ": ", std::strerror(error)));
  }
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_length);
  ListenAddress actual = address;
  actual.port = SockaddrPort(bound);
  std::unique_ptr<UdpListener> listener(new UdpListener(fd, actual.ToString(), actual.port));
  struct stat st {};
  if (fstat(fd, &st) == 0) listener->inode_ = st.st_ino;
  // Bursts should queue rather than drop while every worker is busy.
  if (max_buffer > 0) {
    listener->receive_buffer_ = ProbeReceiveBuffer(fd, max_buffer);
    spdlog::info("using a UDP receive buffer of {} kb on {} (maxbuffer {})",
                 listener->receive_buffer_ / 1024, listener->name(), max_buffer);
  } else {
    socklen_t length = sizeof(listener->receive_buffer_);
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &listener->receive_buffer_, &length);
  }
  return listener;
}

UdpListener::~UdpListener() { close(fd_); }

void UdpListener::EnableReceiveTimestamps() const {
  const int on = 1;
  if (setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0) {
    spdlog::warn("{}: no receive timestamps ({}): queueing delays read as 0", name_,
                 std::strerror(errno));
  }
}

uint64_t UdpListener::QueuedBytes() const {
  int queued = 0;
  if (ioctl(fd_, SIOCOUTQ, &queued) != 0 || queued < 0) return 0;
  return static_cast<uint64_t>(queued);
}

StatelessSipStack::StatelessSipStack(SipTransport& transport, const SipCounters& counters,
                                     const SipHandlerMap& handlers, std::string to_tag_prefix,
                                     std::string server_header)
    : transport_(transport),
      counters_(counters),
      handlers_(handlers),
      to_tag_prefix_(std::move(to_tag_prefix)),
      server_header_(std::move(server_header)) {
  std::vector<std::string> methods = {"OPTIONS", "ACK"};
  std::vector<std::string> extra;
  for (const auto& [method, handler] : handlers_) {
    if (std::find(methods.begin(), methods.end(), method) == methods.end()) {
      extra.push_back(method);
    }
  }
  std::sort(extra.begin(), extra.end());
  methods.insert(methods.end(), extra.begin(), extra.end());
  allow_header_ = "Allow: ";
  for (size_t i = 0; i < methods.size(); ++i) {
    if (i > 0) allow_header_ += ", ";
    allow_header_ += methods[i];
  }
  // Built once: the hot path only copies them into the reply buffer.
  options_headers_ = {allow_header_, "Accept: application/sdp", "Supported: "};
  not_implemented_headers_ = {allow_header_};
  reply_buffer_.reserve(4096);
}

StatelessSipStack::~StatelessSipStack() = default;

const std::string& StatelessSipStack::SocketName(int socket) const {
  static const std::string kNone;
  const std::vector<SipSocket>& sockets = transport_.sockets();
  if (socket < 0 || static_cast<size_t>(socket) >= sockets.size()) return kNone;
  return sockets[static_cast<size_t>(socket)].name;
}

void StatelessSipStack::Handle(const SipInbound& inbound) {
  const std::string_view data = inbound.bytes;
  try {
    if (IsKeepAlive(data)) return;
    OsipMessagePtr message = Parse(data);
    if (message == nullptr) {
      HandleUnparsable(inbound);
      return;
    }
    if (!MSG_IS_REQUEST(message.get())) {
      // A stateless server has no transaction to match replies to.
      counters_.rcv_replies.Inc();
      counters_.drop_replies.Inc();
      if (spdlog::should_log(spdlog::level::debug)) {
        spdlog::debug("dropped a {} reply from {}", message->status_code,
                      inbound.source.peer.ToString());
      }
      return;
    }
    counters_.rcv_requests.Inc();
    HandleRequest(message.get(), inbound);
  } catch (const std::exception& e) {
    spdlog::error("SIP message from {} not handled: {}", inbound.source.peer.ToString(), e.what());
  } catch (...) {
    spdlog::error("SIP message from {} not handled: unknown exception",
                  inbound.source.peer.ToString());
  }
}

void StatelessSipStack::HandleUnparsable(const SipInbound& inbound) {
  const std::string_view data = inbound.bytes;
  if (data.substr(0, 8) == "SIP/2.0 ") {
    counters_.bad_msg_hdr.Inc();
    counters_.err_replies.Inc();
    counters_.drop_replies.Inc();
    return;
  }
  // Is it a well-formed request line with a bad Request-URI?
  const size_t line_end = data.find("\r\n");
  const std::string_view line = data.substr(0, line_end);
  const size_t first_space = line.find(' ');
  const size_t last_space = line.rfind(' ');
  if (line_end != std::string_view::npos && first_space != std::string_view::npos &&
      last_space > first_space + 1 && line.substr(last_space + 1) == "SIP/2.0") {
    const std::string method(line.substr(0, first_space));
    const std::string uri_text(line.substr(first_space + 1, last_space - first_space - 1));
    osip_uri_t* uri = nullptr;
    osip_uri_init(&uri);
    const bool uri_ok = osip_uri_parse(uri, uri_text.c_str()) == 0;
    osip_uri_free(uri);
    if (!uri_ok) {
      counters_.bad_uris_rcvd.Inc();
      counters_.err_requests.Inc();
      // Reparse with a placeholder URI to learn where to send "400 Bad Request-URI".
      std::string patched =
          absl::StrCat(method, " sip:invalid SIP/2.0", AbslView(data.substr(line_end)));
      OsipMessagePtr message = Parse(patched);
      if (message != nullptr && MSG_IS_REQUEST(message.get()) && method != "ACK" &&
          MissingHeader(message.get()) == nullptr) {
        (void)SendReply(message.get(), inbound.source, 400, "Bad Request-URI", {}, {});
      } else {
        counters_.drop_requests.Inc();
      }
      return;
    }
  }
  counters_.bad_msg_hdr.Inc();
  counters_.err_requests.Inc();
  counters_.drop_requests.Inc();
  if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug("dropped an unparsable message of {} bytes from {}", data.size(),
                  inbound.source.peer.ToString());
  }
}

void StatelessSipStack::Reject(const SipInbound& headers, int code, std::string_view reason) {
  try {
    counters_.err_requests.Inc();
    // Parse the header block without its Content-Length (the body is not there).
    std::string text;
    text.reserve(headers.bytes.size());
    size_t at = 0;
    while (at < headers.bytes.size()) {
      size_t end = headers.bytes.find("\r\n", at);
      end = end == std::string_view::npos ? headers.bytes.size() : end + 2;
      const std::string_view line = headers.bytes.substr(at, end - at);
      const size_t colon = line.find(':');
      const std::string_view name =
          colon == std::string_view::npos ? std::string_view() : line.substr(0, colon);
      const absl::string_view trimmed = absl::StripTrailingAsciiWhitespace(AbslView(name));
      if (!absl::EqualsIgnoreCase(trimmed, "Content-Length") &&
          !absl::EqualsIgnoreCase(trimmed, "l")) {
        text.append(line);
      }
      at = end;
    }
    OsipMessagePtr message = Parse(text);
    if (message != nullptr && MSG_IS_REQUEST(message.get()) &&
        MissingHeader(message.get()) == nullptr && message->sip_method != nullptr &&
        std::strcmp(message->sip_method, "ACK") != 0) {
      (void)SendReply(message.get(), headers.source, code, reason, {}, {});
      return;
    }
    counters_.drop_requests.Inc();
  } catch (const std::exception& e) {
    spdlog::error("cannot answer {} to {}: {}", code, headers.source.peer.ToString(), e.what());
  }
}

void StatelessSipStack::HandleRequest(osip_message_t* message, const SipInbound& inbound) {
  const char* method = message->sip_method != nullptr ? message->sip_method : "";
  const bool is_ack = std::strcmp(method, "ACK") == 0;
  if (const char* missing = MissingHeader(message); missing != nullptr) {
    counters_.err_requests.Inc();
    if (!is_ack && osip_list_size(&message->vias) > 0) {
      const std::string warning =
          absl::StrCat("Warning: 399 sipd \"Missing ", missing, " header\"");
      (void)SendReply(message, inbound.source, 400, "Bad Request", {warning}, {});
    } else {
      counters_.drop_requests.Inc();
    }
    return;
  }

  if (auto it = handlers_.find(method); it != handlers_.end()) {
    SipRequestImpl request(*this, message, inbound, SocketName(inbound.source.socket));
    it->second(request);
    return;
  }
  if (is_ack) {
    counters_.received_acks.Inc();
    return;
  }
  if (std::strcmp(method, "OPTIONS") == 0) {
    (void)SendReply(message, inbound.source, 200, "OK", options_headers_, {});
    return;
  }
  counters_.unsupported_methods.Inc();
  (void)SendReply(message, inbound.source, 501, "Not Implemented", not_implemented_headers_, {});
}

std::string StatelessSipStack::ToTag(osip_message_t* message) const {
  // Deterministic: a retransmission gets the same tag from any worker.
  uint64_t hash = 1469598103934665603ull;
  if (message->call_id != nullptr) {
    hash = Fnv1a(hash, message->call_id->number);
    hash = Fnv1a(hash, message->call_id->host);
  }
  // osip_from_get_tag/osip_to_get_tag pass the literal "tag" for libosip2's `char* name`
  // (only read), which C++ does not allow: the *_param_get_byname forms with a cast instead.
  osip_generic_param_t* from_tag = nullptr;
  if (message->from != nullptr &&
      osip_from_param_get_byname(message->from, const_cast<char*>("tag"), &from_tag) == 0 &&
      from_tag != nullptr) {
    hash = Fnv1a(hash, from_tag->gvalue);
  }
  if (message->cseq != nullptr) hash = Fnv1a(hash, message->cseq->number);
  osip_via_t* via = nullptr;
  osip_generic_param_t* branch = nullptr;
  if (osip_message_get_via(message, 0, &via) >= 0 && via != nullptr &&
      osip_via_param_get_byname(via, const_cast<char*>("branch"), &branch) == 0 &&
      branch != nullptr) {
    hash = Fnv1a(hash, branch->gvalue);
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return absl::StrCat(to_tag_prefix_, ".", hex);
}

absl::Status StatelessSipStack::SendReply(osip_message_t* message, const SipSource& source,
                                          int code, std::string_view reason,
                                          const std::vector<std::string>& extra_headers,
                                          std::string_view body) {
  if (code < 100 || code > 699) {
    return absl::InvalidArgumentError(absl::StrCat("bad SIP status code ", code));
  }
  SIPD_RETURN_IF_ERROR(CheckReplyLines(reason, extra_headers));
  std::string& out = reply_buffer_;
  out.clear();
  absl::StrAppend(&out, "SIP/2.0 ", code, " ", AbslView(reason), "\r\n");
  AppendReplyHead(out, message, code);
  return FinishAndSendReply(transport_, counters_, source, out, code, extra_headers, server_header_,
                            body, "");
}

void StatelessSipStack::AppendReplyHead(std::string& out, osip_message_t* message, int code) const {
  for (int i = 0; i < osip_list_size(&message->vias); ++i) {
    osip_via_t* via = nullptr;
    if (osip_message_get_via(message, i, &via) < 0) break;
    AppendHeader(out, "Via", via, &osip_via_to_str);
  }
  AppendHeader(out, "From", message->from, &osip_from_to_str);
  if (message->to != nullptr) {
    char* to = nullptr;
    if (osip_to_to_str(message->to, &to) == 0 && to != nullptr) {
      absl::StrAppend(&out, "To: ", to);
      osip_free(to);
      osip_generic_param_t* tag = nullptr;
      // RFC 3261 8.2.6.2: no tag on 100 Trying; otherwise add one if the request had none.
      // osip_to_get_tag, without its string literal as char* (see ToTag).
      if (code > 100 &&
          osip_to_param_get_byname(message->to, const_cast<char*>("tag"), &tag) != 0) {
        absl::StrAppend(&out, ";tag=", ToTag(message));
      }
      out += "\r\n";
    }
  }
  AppendHeader(out, "Call-ID", message->call_id, &osip_call_id_to_str);
  AppendHeader(out, "CSeq", message->cseq, &osip_cseq_to_str);
}

// ---------------------------------------------------------------------------------------
// Deferred replies.

namespace {

std::array<DeferredReplySender, 256>& DeferredSenders() {
  static auto* senders = new std::array<DeferredReplySender, 256>();
  return *senders;
}

template <typename T>
void PutRaw(std::string& out, const T& value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));
}
template <typename T>
bool GetRaw(std::string_view& in, T& value) {
  if (in.size() < sizeof(value)) return false;
  std::memcpy(&value, in.data(), sizeof(value));
  in.remove_prefix(sizeof(value));
  return true;
}
void PutText(std::string& out, std::string_view text) {
  PutRaw(out, static_cast<uint32_t>(text.size()));
  out.append(text.data(), text.size());
}
bool GetText(std::string_view& in, std::string_view& text) {
  uint32_t n = 0;
  if (!GetRaw(in, n) || in.size() < n) return false;
  text = in.substr(0, n);
  in.remove_prefix(n);
  return true;
}

// 'S' token: proto, socket, connection, peer address, server header, header block.
absl::Status SendStatelessDeferred(SipTransport& transport, const SipCounters& counters,
                                   std::string_view token, int code, std::string_view reason,
                                   const std::vector<std::string>& extra_headers,
                                   std::string_view body) {
  if (code < 200 || code > 699) {
    return absl::InvalidArgumentError(absl::StrCat("not a final SIP status code: ", code));
  }
  SIPD_RETURN_IF_ERROR(CheckReplyLines(reason, extra_headers));
  std::string_view in = token.substr(1);
  uint8_t proto = 0;
  int32_t socket = -1;
  uint64_t connection = 0;
  std::string_view address;
  std::string_view server;
  std::string_view head;
  if (!GetRaw(in, proto) || !GetRaw(in, socket) || !GetRaw(in, connection) ||
      !GetText(in, address) || address.size() > sizeof(sockaddr_storage) || !GetText(in, server) ||
      !GetText(in, head) || !in.empty()) {
    return absl::InvalidArgumentError("malformed deferred reply token");
  }
  SipSource source;
  source.proto = proto == static_cast<uint8_t>(SipProto::kTcp) ? SipProto::kTcp : SipProto::kUdp;
  source.socket = socket;
  source.connection = connection;
  source.peer = SipAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(address.data()),
                                         static_cast<socklen_t>(address.size()));
  std::string out;
  out.reserve(head.size() + 256 + body.size());
  absl::StrAppend(&out, "SIP/2.0 ", code, " ", AbslView(reason), "\r\n", AbslView(head));
  return FinishAndSendReply(transport, counters, source, out, code, extra_headers, server, body,
                            "deferred ");
}

}  // namespace

std::string StatelessSipStack::DeferredToken(osip_message_t* message,
                                             const SipSource& source) const {
  std::string head;
  AppendReplyHead(head, message, 200);
  std::string token(1, 'S');
  PutRaw(token, static_cast<uint8_t>(source.proto));
  PutRaw(token, static_cast<int32_t>(source.socket));
  PutRaw(token, source.connection);
  PutText(token, std::string_view(reinterpret_cast<const char*>(&source.peer.storage),
                                  source.peer.length));
  PutText(token, server_header_);
  PutText(token, head);
  return token;
}

void RegisterStatelessDeferredReplies(SipTransport& transport, const SipCounters& counters) {
  RegisterDeferredReplySender(
      'S', [&transport, &counters](std::string_view token, int code, std::string_view reason,
                                   const std::vector<std::string>& extra_headers,
                                   std::string_view body) {
        return SendStatelessDeferred(transport, counters, token, code, reason, extra_headers, body);
      });
}

namespace {
struct IdleHandler {
  std::function<bool()> pending;
  std::function<void()> run;
};
std::vector<IdleHandler>& IdleHandlers() {
  static auto* handlers = new std::vector<IdleHandler>();
  return *handlers;
}
}  // namespace

void AddSipIdleHandler(std::function<bool()> pending, std::function<void()> run) {
  IdleHandlers().push_back(IdleHandler{std::move(pending), std::move(run)});
}

bool SipIdleWorkPending() {
  for (const IdleHandler& handler : IdleHandlers()) {
    if (handler.pending()) return true;
  }
  return false;
}

void RunSipIdleHandlers() {
  for (const IdleHandler& handler : IdleHandlers()) {
    try {
      if (handler.pending()) handler.run();
    } catch (const std::exception& e) {
      spdlog::error("SIP idle handler failed: {}", e.what());
    }
  }
}

void RegisterDeferredReplySender(char kind, DeferredReplySender sender) {
  DeferredSenders()[static_cast<unsigned char>(kind)] = std::move(sender);
}

absl::Status SendDeferredReply(std::string_view token, int code, std::string_view reason,
                               const std::vector<std::string>& extra_headers,
                               std::string_view body) {
  if (token.empty()) return absl::InvalidArgumentError("empty deferred reply token");
  const DeferredReplySender& sender = DeferredSenders()[static_cast<unsigned char>(token[0])];
  if (!sender) return absl::InvalidArgumentError("no SIP stack sends this deferred reply");
  return sender(token, code, reason, extra_headers, body);
}

UdpReceiver::UdpReceiver(const UdpListener& listener, int socket, const SipMessageHandler& handler,
                         std::atomic<uint8_t>* busy)
    : listener_(listener),
      socket_(socket),
      handler_(handler),
      busy_(busy),
      receive_buffer_(new char[kReceiveBufferSize]) {}

UdpReceiver::~UdpReceiver() = default;

void UdpReceiver::Run(Core& core) {
  char* buffer = receive_buffer_.get();
  SipInbound inbound;
  inbound.source.proto = SipProto::kUdp;
  inbound.source.socket = socket_;
  // A message was handled since the idle handlers last ran and they have work: before
  // blocking, look without waiting whether another one is there, and run them if not.
  bool handled = false;
  sockaddr_storage source{};
  iovec data{buffer, kReceiveBufferSize};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  while (!core.stopping()) {
    core.SyncLogLevel();
    const bool peek = handled && SipIdleWorkPending();
    message.msg_name = &source;
    message.msg_namelen = sizeof(source);
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
    const ssize_t n = recvmsg(listener_.fd(), &message, MSG_TRUNC | (peek ? MSG_DONTWAIT : 0));
    if (n < 0) {
      if (peek && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        handled = false;
        RunSipIdleHandlers();
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      spdlog::error("recvmsg on {} failed: {}", listener_.name(), std::strerror(errno));
      usleep(100 * 1000);  // a persistent error must not spin
      continue;
    }
    const size_t length = std::min(static_cast<size_t>(n), kReceiveBufferSize);
    inbound.bytes = std::string_view(buffer, length);
    inbound.source.peer =
        SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&source), message.msg_namelen);
    inbound.queued_us = QueuedMicros(message);
    if (busy_ != nullptr) busy_->store(1, std::memory_order_relaxed);
    try {
      handler_(inbound);
    } catch (const std::exception& e) {
      spdlog::error("SIP message from {} not handled: {}", inbound.source.peer.ToString(),
                    e.what());
    }
    if (busy_ != nullptr) busy_->store(0, std::memory_order_relaxed);
    handled = true;
  }
}

}  // namespace sipd
