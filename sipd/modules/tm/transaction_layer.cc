#include "sipd/modules/tm/transaction_layer.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"
#include "sipd/core/clock.h"
#include "sipd/modules/tm/sip_builder.h"
#include "spdlog/spdlog.h"

namespace sipd::tm {

namespace {

// A control character but HTAB (RFC 3261 25.1 allows no other in a header line or a
// reason phrase). In text a caller gives for a line sipd sends, a bare CR would end the
// line early for a lenient peer, which would read the rest as headers of the caller's
// choosing.
bool HasControlCharacter(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f;
  });
}

constexpr std::string_view kMagicCookie = "z9hG4bK";

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

void Count(const mi::Counter& c, uint64_t n = 1) {
  if (c.valid()) c.Inc(n);
}

std::string_view DefaultReason(int code) {
  switch (code) {
    case 100:
      return "Trying";
    case 200:
      return "OK";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 408:
      return "Request Timeout";
    case 480:
      return "Temporarily Unavailable";
    case 481:
      return "Call/Transaction Does Not Exist";
    case 482:
      return "Loop Detected";
    case 483:
      return "Too Many Hops";
    case 487:
      return "Request Terminated";
    case 500:
      return "Server Internal Error";
    case 503:
      return "Service Unavailable";
  }
  return "Unknown";
}

// The 17.2.3 key of a request: top Via branch + sent-by (RFC 3261 branches); the RFC
// 2543 fallback is a best effort (Call-ID, From tag, CSeq number, top Via).
std::string ServerKey(const SipMessage& m) {
  const Via& via = m.top_via();
  std::string key;
  key.reserve(via.branch.size() + via.host.size() + 8);
  if (via.branch.substr(0, kMagicCookie.size()) == kMagicCookie) {
    key.append(via.branch);
    key += '|';
    key.append(via.host);
    key += ':';
    key += std::to_string(via.port);
  } else {
    absl::StrAppend(&key, "2543|", Absl(m.call_id()), "|", Absl(m.from_tag()), "|", m.cseq(), "|",
                    Absl(via.text));
  }
  return key;
}

uint32_t BucketOf(std::string_view key) { return Fnv1a32(key) % kBuckets; }

Cell* FindServer(Bucket& bucket, std::string_view key, Method method) {
  for (Cell* c = bucket.first.load(std::memory_order_acquire); c != nullptr;
       c = c->next.load(std::memory_order_acquire)) {
    if (!c->local && c->method == method && c->key.view() == key) return c;
  }
  return nullptr;
}

TimerLink* LinkOf(Cell& cell, TimerKind kind, uint8_t branch) {
  switch (kind) {
    case TimerKind::kServerRetransmit:
      return &cell.server_retransmit;
    case TimerKind::kWait:
      return &cell.wait;
    default:
      break;
  }
  if (branch >= cell.branch_count) return nullptr;
  Branch& b = cell.branches[branch];
  switch (kind) {
    case TimerKind::kBranchRetransmit:
      return &b.retransmit;
    case TimerKind::kBranchTimeout:
      return &b.timeout;
    case TimerKind::kCancelRetransmit:
      return &b.cancel_retransmit;
    case TimerKind::kCancelTimeout:
      return &b.cancel_timeout;
    default:
      return nullptr;
  }
}

// Preference of a final reply when choosing among branches (16.7.6): 6xx first, then the
// lowest class; lower is better.
int Rank(int code) {
  if (code >= 600) return 0;
  if (code >= 200 && code < 300) return 1;
  return code / 100;  // 3, 4, 5
}

std::string RandomHex(size_t bytes) {
  static thread_local std::mt19937_64 engine(std::random_device{}());
  std::string out;
  static constexpr char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < bytes; ++i) {
    const auto v = static_cast<uint8_t>(engine());
    out += kHex[v >> 4];
    out += kHex[v & 15];
  }
  return out;
}

std::string Hex32(uint32_t v) { return absl::StrCat(absl::Hex(v, absl::kZeroPad8)); }

}  // namespace

std::string LocalSocket::name() const {
  return absl::StrCat(std::string(ProtoName(proto)), ":", host_port());
}

std::string LocalSocket::host_port() const {
  return ipv6() ? absl::StrCat("[", ip, "]:", port) : absl::StrCat(ip, ":", port);
}

absl::StatusOr<Destination> ResolveUri(const SipUri& uri, const std::vector<LocalSocket>& sockets,
                                       HostResolver* resolver, std::string_view preferred_socket) {
  if (!uri.is_sip()) {
    return absl::InvalidArgumentError(absl::StrCat("not a SIP URI: ", Absl(uri.text)));
  }
  if (EqualsIgnoreCase(uri.scheme, "sips")) {
    return absl::UnimplementedError("sips: URIs are not supported (no TLS)");
  }
  Proto proto = Proto::kUdp;
  const std::string_view transport = uri.transport();
  if (EqualsIgnoreCase(transport, "tcp")) {
    proto = Proto::kTcp;
  } else if (!transport.empty() && !EqualsIgnoreCase(transport, "udp")) {
    return absl::UnimplementedError(
        absl::StrCat("transport ", Absl(transport), " is not supported"));
  }
  const uint16_t port = uri.port != 0 ? uri.port : 5060;
  Destination d;
  if (!MakeDestination(proto, uri.bare_host(), port, &d)) {
    const std::string_view host = uri.bare_host();
    if (resolver == nullptr) {
      return absl::NotFoundError(absl::StrCat("cannot resolve ", Absl(host), ": no resolver"));
    }
    SIPD_ASSIGN_OR_RETURN(std::vector<SocketAddress> addresses, resolver->Resolve(host));
    // The first address of a family sipd has a socket of this protocol for.
    auto reachable = [&](const SocketAddress& a) {
      const bool v6 = a.generic.sa_family == AF_INET6;
      return std::any_of(sockets.begin(), sockets.end(),
                         [&](const LocalSocket& s) { return s.proto == proto && s.ipv6() == v6; });
    };
    auto usable = std::find_if(addresses.begin(), addresses.end(), reachable);
    d.address = usable != addresses.end() ? *usable : addresses.front();
    d.proto = proto;
    if (d.address.generic.sa_family == AF_INET) {
      d.address.v4.sin_port = htons(port);
    } else {
      d.address.v6.sin6_port = htons(port);
    }
  }
  const bool v6 = d.address.generic.sa_family == AF_INET6;
  const LocalSocket* chosen = nullptr;
  for (const LocalSocket& s : sockets) {
    if (s.proto != proto || s.ipv6() != v6) continue;
    if (!preferred_socket.empty() && s.name() == preferred_socket) {
      chosen = &s;
      break;
    }
    if (chosen == nullptr) chosen = &s;
  }
  if (chosen == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("no local ", std::string(ProtoName(proto)),
                                                      v6 ? " IPv6" : " IPv4", " socket"));
  }
  d.socket = chosen->index;
  return d;
}

// What to do once the bucket lock is released.
struct TransactionLayer::Work {
  struct Send {
    Destination to;
    std::string bytes;
  };
  struct PendingReply {
    TransactionId id;
    uint64_t cookie = 0;
    Method method = Method::kOther;
    std::string call_id;
    std::string from_tag;
    int code = 0;
    std::string reason;
    const SipMessage* message = nullptr;  // null: made up
    bool is_received = false;             // message = the reply being handled
    int branch = -1;
    bool forwarded = false;
    bool local = false;
  };
  struct PendingCompletion {
    uint32_t completion = 0;
    std::string data;
    TransactionId id;
    uint64_t cookie = 0;
    int code = 0;
    std::string reason;
    bool received = false;
    std::string request;
  };
  std::vector<Send> sends;
  // Sent already, under the bucket lock (SendUnderLock); Finish only traces them.
  std::vector<Send> sent;
  std::vector<PendingReply> replies;
  std::vector<PendingCompletion> completions;
  std::vector<EndEvent> ends;
  // Destinations to blacklist, each with why (for the log).
  struct Blacklisting {
    Destination to;
    std::string why;
  };
  std::vector<Blacklisting> blacklist;
  // Local INVITEs answered 2xx: the request as sent (the ACK is built after the unlock).
  std::vector<std::string> ack_2xx;
  // Stored replies parsed again (chosen finals), referenced by `replies`.
  std::vector<std::unique_ptr<SipMessage>> messages;
  // Branches whose send failed (filled by Finish).
  std::vector<std::pair<TransactionId, uint32_t>> failed;
  // Parallel to `sends`: the branch a send belongs to (-1: none).
  std::vector<std::pair<TransactionId, int>> send_branch;

  void Add(const Destination& to, std::string bytes, TransactionId id = {}, int branch = -1) {
    sends.push_back(Send{to, std::move(bytes)});
    send_branch.emplace_back(id, branch);
  }
};

// A request answered by a local handler: its Reply goes through the transaction.
class TransactionLayer::LocalRequestImpl final : public LocalRequest {
 public:
  LocalRequestImpl(TransactionLayer& layer, TransactionId id, const SipMessage& message,
                   const Inbound& inbound)
      : layer_(layer), id_(id), message_(message), inbound_(inbound) {}
  const SipMessage& message() const override { return message_; }
  const Inbound& inbound() const override { return inbound_; }
  absl::Status Reply(int code, std::string_view reason, const std::vector<std::string>& headers,
                     std::string_view body) override {
    if (replied_) return absl::FailedPreconditionError("already replied");
    if (code < 200 || code > 699) return absl::InvalidArgumentError("final replies only");
    for (const std::string& h : headers) {
      if (h.find_first_of("\r\n") != std::string::npos) {
        return absl::InvalidArgumentError("header contains a line break");
      }
    }
    if (reason.find_first_of("\r\n") != std::string_view::npos) {
      return absl::InvalidArgumentError("reason contains a line break");
    }
    replied_ = true;
    return layer_.LocalReply(id_, code, reason, {}, headers, body);
  }
  absl::StatusOr<TransactionId> Defer() override {
    if (replied_) return absl::FailedPreconditionError("already replied");
    replied_ = true;
    return id_;
  }
  bool replied() const { return replied_; }

 private:
  TransactionLayer& layer_;
  TransactionId id_;
  const SipMessage& message_;
  const Inbound& inbound_;
  bool replied_ = false;
};

TransactionLayer::TransactionLayer(LayerOptions options, TransactionTable& table,
                                   Transport& transport, Router& router, const Callbacks& callbacks,
                                   LayerCounters counters, Clock clock, Blacklist* blacklist)
    : options_(std::move(options)),
      table_(table),
      transport_(transport),
      router_(router),
      callbacks_(callbacks),
      counters_(counters),
      clock_(clock ? std::move(clock) : Clock(&MonotonicMs)),
      blacklist_(blacklist),
      tag_start_(absl::StrCat(options_.to_tag_prefix, ".")),
      stateless_tag_start_(absl::StrCat(options_.to_tag_prefix, ".s")) {}

uint32_t TransactionLayer::RegisterCompletion(Completion fn) {
  completions_.push_back(std::move(fn));
  return static_cast<uint32_t>(completions_.size());
}

std::string TransactionLayer::ToTag(std::string_view key) const {
  return absl::StrCat(tag_start_, absl::Hex(Fnv1a32(key), absl::kZeroPad8));
}

std::string TransactionLayer::StatelessToTag(std::string_view key) const {
  return absl::StrCat(stateless_tag_start_, absl::Hex(Fnv1a32(key), absl::kZeroPad8));
}

const LocalSocket* TransactionLayer::SocketFor(const Destination& to) const {
  for (const LocalSocket& s : options_.sockets) {
    if (s.index == to.socket) return &s;
  }
  return options_.sockets.empty() ? nullptr : &options_.sockets.front();
}

std::string TransactionLayer::ViaFor(const Destination& to, std::string_view branch) const {
  const LocalSocket* socket = SocketFor(to);
  return absl::StrCat("SIP/2.0/", to.proto == Proto::kTcp ? "TCP " : "UDP ",
                      socket != nullptr ? socket->host_port() : "127.0.0.1",
                      ";branch=", Absl(branch));
}

bool TransactionLayer::IsLoop(const SipMessage& request) const {
  auto vias = request.Vias();
  if (!vias.ok()) return false;
  const uint32_t hash = LoopHash(request);
  for (const Via& via : *vias) {
    BranchParts parts;
    if (ParseBranch(via.branch, &parts) && parts.loop_hash == hash &&
        router_.IsMe(via.host, via.port)) {
      return true;
    }
  }
  return false;
}

void TransactionLayer::Trace(bool incoming, std::string_view bytes, const Destination& peer) {
  if (tracer_ == nullptr || !tracer_->enabled()) return;
  TraceRecord record;
  record.incoming = incoming;
  record.bytes = bytes;
  record.proto = peer.proto;
  record.peer_ip = peer.ip();
  record.peer_port = peer.port();
  if (const LocalSocket* socket = SocketFor(peer); socket != nullptr) {
    record.local_ip = socket->ip;
    record.local_port = socket->port;
  }
  tracer_->Trace(record);
}

absl::Status TransactionLayer::SendLogged(const Destination& to, std::string_view bytes) {
  absl::Status status = transport_.Send(to, bytes);
  if (!status.ok()) {
    spdlog::debug("tm: send to {} failed: {}", to.ToString(), std::string(status.message()));
  }
  return status;
}

void TransactionLayer::SendNow(const Destination& to, std::string_view bytes) {
  (void)SendLogged(to, bytes);
  Trace(false, bytes, to);
}

void TransactionLayer::SendUnderLock(const Destination& to, std::string bytes, Work& work) {
  (void)SendLogged(to, bytes);
  work.sent.push_back(Work::Send{to, std::move(bytes)});
}

void TransactionLayer::HandleMessage(std::string_view bytes, const Inbound& from) {
  try {
    // 503s held back while the receive queue never empties leave after kRefusalHoldMs.
    if (!refusals_.empty() && clock_() - refusals_since_ms_ >= kRefusalHoldMs) FlushRefusals();
    if (bytes.find_first_not_of("\r\n") == std::string_view::npos) return;  // keep-alive
    if (IsAckOfStatelessReply(bytes)) {
      // Absorbed without a parse: under overload every refused call ends with one.
      Trace(true, bytes, from.source);
      Count(counters_.rcv_requests);
      Count(counters_.sl_received_acks);
      return;
    }
    const bool looks_like_reply = bytes.substr(0, 8) == "SIP/2.0 ";
    auto parsed = SipMessage::Parse(bytes);
    Trace(true, bytes, from.source);
    if (!parsed.ok()) {
      Count(counters_.bad_msg_hdr);
      if (looks_like_reply) {
        Count(counters_.rcv_replies);
        Count(counters_.err_replies);
        Count(counters_.drop_replies);
      } else {
        Count(counters_.rcv_requests);
        Count(counters_.err_requests);
        Count(counters_.drop_requests);
      }
      if (spdlog::should_log(spdlog::level::debug)) {
        spdlog::debug("tm: dropped {} bytes from {}:{}: {}", bytes.size(), from.peer.ip,
                      from.peer.port, std::string(parsed.status().message()));
      }
      return;
    }
    const SipMessage& message = *parsed;
    if (message.is_request()) {
      Count(counters_.rcv_requests);
      if (!message.defect().empty()) {
        HandleDefect(message, from);
      } else if (message.method() == Method::kAck) {
        HandleAck(message, from);
      } else if (message.method() == Method::kCancel) {
        HandleCancel(message, from);
      } else {
        HandleRequest(message, from);
      }
    } else {
      Count(counters_.rcv_replies);
      if (!message.defect().empty()) {
        Count(counters_.err_replies);
        Count(counters_.drop_replies);
        return;
      }
      HandleReply(message, from);
    }
  } catch (const std::exception& e) {
    spdlog::error("tm: message from {}:{} not handled: {}", from.peer.ip, from.peer.port, e.what());
  } catch (...) {
    spdlog::error("tm: message from {}:{} not handled: unknown exception", from.peer.ip,
                  from.peer.port);
  }
}

bool TransactionLayer::IsAckOfStatelessReply(std::string_view bytes) const {
  if (options_.to_tag_prefix.empty() || !bytes.starts_with("ACK ")) return false;
  const std::optional<std::string_view> tag = ScanToTag(bytes);
  return tag.has_value() && tag->starts_with(stateless_tag_start_);
}

void TransactionLayer::HandleDefect(const SipMessage& message, const Inbound& from) {
  Count(counters_.err_requests);
  if (message.method() == Method::kAck || !message.has_via()) {
    Count(counters_.drop_requests);
    return;
  }
  StatelessReply(message, from, 400, "Bad Request",
                 {absl::StrCat("Warning: 399 sipd \"", Absl(message.defect()), "\"")});
}

std::string TransactionLayer::StatelessReplyText(const SipMessage& request, int code,
                                                 std::string_view reason,
                                                 const std::vector<std::string>& headers) const {
  const std::string tag_key = absl::StrCat(Absl(request.call_id()), "|", Absl(request.from_tag()),
                                           "|", Absl(request.top_via().branch));
  return BuildLocalReply(request, code, reason, StatelessToTag(tag_key), headers, {},
                         options_.server);
}

void TransactionLayer::StatelessReply(const SipMessage& request, const Inbound& from, int code,
                                      std::string_view reason,
                                      const std::vector<std::string>& headers) {
  SendNow(from.source, StatelessReplyText(request, code, reason, headers));
  CountStatelessReply(code);
}

void TransactionLayer::CountStatelessReply(int code) {
  Count(counters_.sl_replies_by_class[code / 100 - 1]);
  Count(counters_.sl_sent_replies);
  if (code >= 300) Count(counters_.sl_sent_err_replies);
}

void TransactionLayer::Refuse(const SipMessage& invite, const Inbound& from) {
  Count(counters_.overload_refused);
  static const std::vector<std::string> headers = {"Retry-After: 1"};
  if (from.source.proto != Proto::kUdp) {
    StatelessReply(invite, from, 503, "Service Unavailable", headers);
    return;
  }
  std::string bytes = StatelessReplyText(invite, 503, "Service Unavailable", headers);
  Trace(false, bytes, from.source);
  CountStatelessReply(503);
  if (refusals_.empty()) refusals_since_ms_ = clock_();
  refusals_.emplace_back(from.source, std::move(bytes));
  if (refusals_.size() >= kRefusalBatch) FlushRefusals();
}

void TransactionLayer::FlushRefusals() {
  if (refusals_.empty()) return;
  transport_.SendBatch(refusals_);
  refusals_.clear();
}

bool TransactionLayer::Overloaded(const Inbound& from) const {
  if (overloaded_ != nullptr && overloaded_->load(std::memory_order_relaxed)) return true;
  // The queue's age, not its length, is what callers feel: an INVITE that waited this
  // long is answered late, and taking it would make every call behind it later still.
  return options_.overload_delay_ms > 0 && from.queued_us > options_.overload_delay_ms * 1000;
}

void TransactionLayer::HandleRequest(const SipMessage& request, const Inbound& from) {
  const std::string key = ServerKey(request);
  const uint32_t index = BucketOf(key);
  const int64_t now = clock_();
  // A new call that overload sheds, unless its INVITE already has a transaction.
  const bool shed =
      request.method() == Method::kInvite && request.to_tag().empty() && Overloaded(from);
  if (shed && table_.current(index) == 0) {
    // Overloaded, and the INVITE's bucket holds no transaction at all: decided as below,
    // without the bucket lock (a refusal must cost far less than the call it sheds). A
    // cell another worker makes for the same key at this moment is the race a refusal
    // already has with a retransmission accepted once the overload ends.
    if (!table_.RecentlyEnded(TransactionTable::Fingerprint(key), now)) Refuse(request, from);
    return;
  }
  Work work;
  TransactionId id;
  {
    Bucket& bucket = table_.LockBucket(index, now);
    Cell* cell = FindServer(bucket, key, request.method());
    if (cell == nullptr && request.method() == Method::kInvite &&
        table_.RecentlyEnded(TransactionTable::Fingerprint(key), now)) {
      // A late retransmission of an INVITE whose transaction ended: absorbed.
      table_.UnlockBucket(bucket);
      return;
    }
    if (cell == nullptr && shed) {
      // Overloaded: shed new calls, keep the ones in progress.
      table_.UnlockBucket(bucket);
      Refuse(request, from);
      return;
    }
    if (cell != nullptr) {
      // A retransmission: the last reply again (none yet, or RFC 6026 Accepted: absorb).
      if (!cell->last_reply.empty() && cell->server_state != ServerState::kAccepted) {
        work.Add(cell->source, std::string(cell->last_reply.view()));
      }
      table_.UnlockBucket(bucket);
      Finish(work, nullptr);
      return;
    }
    cell = table_.NewCell(bucket, index, 0);
    bool stored = cell != nullptr;
    if (stored) {
      cell->method = request.method();
      cell->cseq = request.cseq();
      cell->loop_hash = LoopHash(request);
      cell->created_ms = now;
      cell->source = from.source;
      cell->server_state = ServerState::kTrying;
      stored = table_.Assign(cell->key, key) && table_.Assign(cell->call_id, request.call_id()) &&
               table_.Assign(cell->from_tag, request.from_tag()) &&
               table_.Assign(cell->request, request.raw());
      if (stored && request.method() == Method::kInvite) {
        std::string trying = BuildLocalReply(request, 100, "Trying", {}, {}, {}, options_.server);
        stored = table_.Assign(cell->last_reply, trying);
        cell->server_state = ServerState::kProceeding;
        work.Add(cell->source, std::move(trying));
      }
      if (!stored) {
        table_.DeleteCell(bucket, cell);
      } else {
        id = TransactionId{index, cell->label};
        // A guard: a transaction answered by nobody ends at its maximum lifetime.
        table_.Arm(cell->wait,
                   now + (cell->method == Method::kInvite ? options_.max_inv_lifetime_ms
                                                          : options_.max_noninv_lifetime_ms));
      }
    }
    table_.UnlockBucket(bucket);
    if (!stored) {
      spdlog::warn("tm: shared memory is full; {} from {}:{} answered 500 statelessly",
                   std::string(request.method_text()), from.peer.ip, from.peer.port);
      StatelessReply(request, from, 500, "Server Internal Error");
      return;
    }
  }
  Count(counters_.uas_transactions);
  if (!work.sends.empty()) Count(counters_.local_replies);
  Finish(work, nullptr);

  if (request.max_forwards() == 0) {
    (void)LocalReply(id, 483, "Too Many Hops", {}, {}, {});
    return;
  }
  if (IsLoop(request)) {
    (void)LocalReply(id, 482, "Loop Detected", {}, {}, {});
    return;
  }
  RouteDecision decision = router_.Route(request, from);
  switch (decision.kind) {
    case RouteDecision::Kind::kReply:
      (void)LocalReply(id, decision.code, decision.reason, {}, decision.headers, {});
      return;
    case RouteDecision::Kind::kLocal: {
      LocalRequestImpl local(*this, id, request, from);
      if (decision.handler) decision.handler(local);
      if (!local.replied()) (void)LocalReply(id, 500, "Server Internal Error", {}, {}, {});
      return;
    }
    case RouteDecision::Kind::kDrop: {
      Bucket& bucket = table_.LockBucket(id.index, clock_());
      if (Cell* cell = table_.FindByLabel(bucket, id.label); cell != nullptr) EndCell(*cell);
      table_.UnlockBucket(bucket);
      Count(counters_.drop_requests);
      return;
    }
    case RouteDecision::Kind::kRelay:
      Relay(id, request, from, std::move(decision));
      return;
  }
}

void TransactionLayer::EndCell(Cell& cell) {
  cell.final_sent = true;
  cell.server_state = ServerState::kTerminated;
  table_.Disarm(cell.server_retransmit);
  table_.Arm(cell.wait, clock_() + options_.wait_ms);
}

void TransactionLayer::Relay(TransactionId id, const SipMessage& request, const Inbound& from,
                             RouteDecision decision) {
  if (decision.targets.empty()) {
    (void)LocalReply(id, 480, "Temporarily Unavailable", {}, {}, {});
    return;
  }
  if (decision.targets.size() > kMaxBranches) decision.targets.resize(kMaxBranches);
  uint64_t cookie = 0;
  std::vector<std::string> rr_params;
  if (callbacks_.has_relay()) {
    std::vector<std::string> uris;
    for (const Target& t : decision.targets) uris.push_back(t.request_uri);
    RequestEvent event(request, from.peer, id, std::move(uris));
    callbacks_.RunRelay(event);
    if (event.refusal().has_value()) {
      const int code = std::clamp(event.refusal()->first, 300, 699);
      (void)LocalReply(id, code, event.refusal()->second, {}, {}, {});
      return;
    }
    cookie = event.cookie();
    rr_params = event.record_route_params();
  }

  // Build every branch before taking the lock.
  const size_t n = decision.targets.size();
  const uint32_t loop_hash = LoopHash(request);
  const int max_forwards = request.max_forwards() < 0 ? 70 : request.max_forwards() - 1;
  std::string via_params;
  std::string_view via_host = request.top_via().host;
  if (via_host.size() >= 2 && via_host.front() == '[') {
    via_host = via_host.substr(1, via_host.size() - 2);
  }
  if (request.top_via().received.empty() && !from.peer.ip.empty() && via_host != from.peer.ip) {
    via_params = absl::StrCat(";received=", from.peer.ip);
  }
  std::string rr_suffix;
  for (const std::string& p : rr_params) absl::StrAppend(&rr_suffix, ";", p);
  auto record_route_of = [&](const Destination& d) {
    const LocalSocket* s = SocketFor(d);
    if (s == nullptr) return std::string();
    return absl::StrCat("<sip:", s->host_port(), s->proto == Proto::kTcp ? ";transport=tcp" : "",
                        ";lr", rr_suffix, ">");
  };
  std::vector<std::string> bytes(n);
  std::vector<bool> blocked(n, false);
  for (size_t i = 0; i < n; ++i) {
    const Target& t = decision.targets[i];
    RelayEdits edits;
    edits.request_uri = t.request_uri;
    const std::string via =
        ViaFor(t.destination, MakeBranch(loop_hash, id.index, id.label, static_cast<uint32_t>(i)));
    edits.via = via;
    edits.top_via_params = via_params;
    edits.pop_routes = decision.pop_routes;
    if (decision.record_route) {
      const std::string out = record_route_of(t.destination);
      const std::string in = record_route_of(from.source);
      if (!out.empty()) edits.record_routes.push_back(out);
      if (!in.empty() && in != out) edits.record_routes.push_back(in);
    }
    edits.routes = t.routes;
    edits.max_forwards = max_forwards;
    bytes[i] = BuildRelayedRequest(request, edits);
    blocked[i] = blacklist_ != nullptr && blacklist_->Contains(t.destination, clock_());
  }

  Work work;
  const int64_t now = clock_();
  Bucket& bucket = table_.LockBucket(id.index, now);
  Cell* cell = table_.FindByLabel(bucket, id.label);
  if (cell == nullptr || cell->final_sent) {  // answered meanwhile (t_reply)
    table_.UnlockBucket(bucket);
    return;
  }
  cell->cookie = cookie;
  if (cell->canceled) {
    // CANCEL came while routing: the INVITE is answered 487 and never relayed.
    auto original = SipMessage::Parse(cell->request.view());
    if (original.ok()) {
      SendFinalUpstream(*cell,
                        BuildLocalReply(*original, 487, "Request Terminated",
                                        ToTag(cell->key.view()), {}, {}, options_.server),
                        487, work);
      Count(counters_.local_replies);
    }
    table_.UnlockBucket(bucket);
    Finish(work, nullptr);
    return;
  }
  if (!table_.SetBranchCount(*cell, static_cast<uint32_t>(n))) {
    table_.UnlockBucket(bucket);
    (void)LocalReply(id, 500, "Server Internal Error", {}, {}, {});
    return;
  }
  const bool invite = cell->method == Method::kInvite;
  size_t sent = 0;
  for (size_t i = 0; i < n; ++i) {
    Branch& br = cell->branches[i];
    br.destination = decision.targets[i].destination;
    if (blocked[i] || !table_.Assign(br.request, bytes[i])) {
      br.failed_to_send = true;
      continue;
    }
    br.state = BranchState::kCalling;
    if (br.destination.proto == Proto::kUdp) {
      br.retransmit_ms = static_cast<uint32_t>(options_.t1_ms);
      table_.Arm(br.retransmit, now + options_.t1_ms);
    }
    table_.Arm(br.timeout, now + options_.fr_timeout_ms);
    work.Add(br.destination, std::move(bytes[i]), id, static_cast<int>(i));
    ++sent;
  }
  (void)invite;
  // Branches that could not go out (blacklisted, memory) end at once with 503.
  for (size_t i = 0; i < n; ++i) {
    if (cell->branches[i].failed_to_send) {
      BranchFinished(*cell, static_cast<uint32_t>(i), 503, nullptr, work);
    }
  }
  table_.UnlockBucket(bucket);
  Count(counters_.fwd_requests, sent);
  Finish(work, nullptr);
}

void TransactionLayer::ForwardStateless(const SipMessage& request, const Inbound& from,
                                        const RouteDecision& decision) {
  if (decision.targets.empty()) {
    Count(counters_.drop_requests);
    return;
  }
  const Target& t = decision.targets.front();
  if (callbacks_.has_relay()) {
    RequestEvent event(request, from.peer, TransactionId{}, {t.request_uri});
    callbacks_.RunRelay(event);
  }
  // 16.11: a stateless branch is a function of the received one, so retransmissions
  // get the same.
  const std::string branch =
      absl::StrCat(Absl(kMagicCookie), Hex32(Fnv1a32(request.top_via().branch)), "-",
                   Hex32(Fnv1a32(request.top_via().host)), "-s");
  RelayEdits edits;
  edits.request_uri = t.request_uri;
  const std::string via = ViaFor(t.destination, branch);
  edits.via = via;
  edits.pop_routes = decision.pop_routes;
  edits.routes = t.routes;
  edits.max_forwards = request.max_forwards() < 0 ? 70 : request.max_forwards() - 1;
  SendNow(t.destination, BuildRelayedRequest(request, edits));
  Count(counters_.fwd_requests);
}

void TransactionLayer::HandleAck(const SipMessage& ack, const Inbound& from) {
  const std::string key = ServerKey(ack);
  const int64_t now = clock_();
  {
    Bucket& bucket = table_.LockBucket(BucketOf(key), now);
    Cell* cell = FindServer(bucket, key, Method::kInvite);
    if (cell != nullptr && (cell->server_state == ServerState::kCompleted ||
                            cell->server_state == ServerState::kConfirmed ||
                            cell->server_state == ServerState::kTerminated)) {
      // The ACK for sipd's non-2xx final reply (hop by hop): absorbed.
      if (cell->server_state == ServerState::kCompleted) {
        cell->server_state = ServerState::kConfirmed;
        table_.Disarm(cell->server_retransmit);
        table_.Arm(cell->wait, now + options_.wait_ms);
      }
      table_.UnlockBucket(bucket);
      return;
    }
    table_.UnlockBucket(bucket);
  }
  // An ACK for a final reply sipd made itself without a transaction (a stateless 503 under
  // overload, a 500 when shared memory was full; most are absorbed before the parse, see
  // IsAckOfStatelessReply) or whose transaction already went: its To-tag is one of
  // sipd's (every reply sipd makes is non-2xx for INVITE). Absorbed.
  if (!options_.to_tag_prefix.empty() && std::string_view(ack.to_tag()).starts_with(tag_start_)) {
    Count(counters_.sl_received_acks);
    return;
  }
  // An ACK for a 2xx (end to end) or for nothing known.
  if (ack.max_forwards() == 0) {
    Count(counters_.drop_requests);
    return;
  }
  RouteDecision decision = router_.Route(ack, from);
  if (decision.kind == RouteDecision::Kind::kRelay) {
    ForwardStateless(ack, from, decision);
    return;
  }
  Count(counters_.sl_received_acks);
}

void TransactionLayer::HandleCancel(const SipMessage& cancel, const Inbound& from) {
  const std::string key = ServerKey(cancel);
  const int64_t now = clock_();
  Work work;
  Bucket& bucket = table_.LockBucket(BucketOf(key), now);
  Cell* cell = FindServer(bucket, key, Method::kInvite);
  if (cell == nullptr) {
    table_.UnlockBucket(bucket);
    StatelessReply(cancel, from, 481, "Call/Transaction Does Not Exist");
    return;
  }
  work.Add(from.source,
           BuildLocalReply(cancel, 200, "OK", ToTag(cell->key.view()), {}, {}, options_.server));
  if (!cell->final_sent) {
    cell->canceled = true;
    cell->cancel_branches = true;
    CancelBranches(*cell, work);
  }
  table_.UnlockBucket(bucket);
  Count(counters_.local_replies);
  Finish(work, nullptr);
}

void TransactionLayer::HandleReply(const SipMessage& reply, const Inbound& from) {
  BranchParts parts;
  if (!reply.has_via() || !ParseBranch(reply.top_via().branch, &parts) || parts.index >= kBuckets) {
    Count(counters_.drop_replies);
    return;
  }
  const int64_t now = clock_();
  Work work;
  Bucket& bucket = table_.LockBucket(parts.index, now);
  Cell* cell = table_.FindByLabel(bucket, parts.label);
  if (cell == nullptr || parts.branch >= cell->branch_count || parts.loop_hash != cell->loop_hash ||
      reply.cseq() != cell->cseq) {
    table_.UnlockBucket(bucket);
    Count(counters_.drop_replies);
    return;
  }
  Count(counters_.received_replies);
  const TransactionId id{parts.index, parts.label};
  const uint32_t b = parts.branch;
  Branch& br = cell->branches[b];
  const int code = reply.status();
  auto event = [&](bool forwarded) {
    Work::PendingReply e;
    e.id = id;
    e.cookie = cell->cookie;
    e.method = cell->method;
    e.call_id = std::string(cell->call_id.view());
    e.from_tag = std::string(cell->from_tag.view());
    e.code = code;
    e.reason = std::string(reply.reason());
    e.is_received = true;
    e.branch = static_cast<int>(b);
    e.forwarded = forwarded;
    e.local = cell->local;
    work.replies.push_back(std::move(e));
  };

  if (reply.cseq_method() == Method::kCancel) {
    if (br.cancel_sent && code >= 200) {
      table_.Disarm(br.cancel_retransmit);
      table_.Disarm(br.cancel_timeout);
    }
    table_.UnlockBucket(bucket);
    return;
  }
  if (reply.cseq_method() != cell->method) {
    table_.UnlockBucket(bucket);
    Count(counters_.drop_replies);
    return;
  }
  const bool invite = cell->method == Method::kInvite;
  if (br.state == BranchState::kCompleted) {
    // A retransmitted final reply, or a late one.
    if (invite && code >= 300 && !br.ack.empty()) {
      work.Add(br.destination, std::string(br.ack.view()));
    } else if (invite && code < 300 && code >= 200) {
      if (cell->local) {
        work.ack_2xx.push_back(std::string(br.request.view()));
      } else {
        // 2xx retransmissions (and 2xx of other forks) go upstream statelessly.
        work.Add(cell->source, BuildForwardedReply(reply));
        Count(counters_.relayed_replies);
        Count(counters_.fwd_replies);
        event(true);
      }
    }
    table_.UnlockBucket(bucket);
    Finish(work, &reply, &from.peer);
    return;
  }
  if (code < 200) {
    if (br.state == BranchState::kCalling) br.state = BranchState::kProceeding;
    br.code = static_cast<int16_t>(code);
    if (invite) {
      table_.Disarm(br.retransmit);
      table_.Arm(br.timeout, now + options_.fr_inv_timeout_ms);
      if (cell->cancel_branches && !br.cancel_sent) CancelBranch(*cell, b, work);
    } else {
      br.retransmit_ms = static_cast<uint32_t>(options_.t2_ms);
    }
    const bool forward = !cell->local && code > 100 && !cell->final_sent;
    if (forward) {
      std::string bytes = BuildForwardedReply(reply);
      (void)table_.Assign(cell->last_reply, bytes);
      cell->server_state = ServerState::kProceeding;
      // Sent before the unlock (the send never waits): a final reply that another worker
      // handles at the same moment goes out after its own unlock, so it cannot overtake
      // this one, and nothing provisional follows the final (RFC 3261 16.7 step 5).
      SendUnderLock(cell->source, std::move(bytes), work);
      Count(counters_.relayed_replies);
      Count(counters_.fwd_replies);
    }
    event(forward);
  } else {
    BranchFinished(*cell, b, code, &reply, work);
  }
  table_.UnlockBucket(bucket);
  Finish(work, &reply, &from.peer);
}

void TransactionLayer::BranchFinished(Cell& cell, uint32_t b, int code, const SipMessage* reply,
                                      Work& work) {
  Branch& br = cell.branches[b];
  const TransactionId id{cell.index, cell.label};
  const bool invite = cell.method == Method::kInvite;
  br.state = BranchState::kCompleted;
  br.code = static_cast<int16_t>(code);
  table_.Disarm(br.retransmit);
  table_.Disarm(br.timeout);
  if (reply != nullptr && invite && code >= 300) {
    auto request = SipMessage::Parse(br.request.view());
    if (request.ok()) {
      std::string ack = BuildAckForNon2xx(*request, *reply);
      (void)table_.Assign(br.ack, ack);
      work.Add(br.destination, std::move(ack));
    }
  }
  if (reply != nullptr && code == 503) {
    work.blacklist.push_back(
        {br.destination, absl::StrCat("503 to ", Absl(reply->cseq_method_text()))});
  }
  // A relayed branch never sends its request again (nor a CANCEL for it): free it.
  // Local cells keep it for the ACK of a retransmitted 2xx and for the completion.
  if (!cell.local) table_.Release(br.request);

  Work::PendingReply e;
  e.id = id;
  e.cookie = cell.cookie;
  e.method = cell.method;
  e.call_id = std::string(cell.call_id.view());
  e.from_tag = std::string(cell.from_tag.view());
  e.code = code;
  e.reason = reply != nullptr ? std::string(reply->reason()) : std::string(DefaultReason(code));
  e.is_received = reply != nullptr;
  e.branch = static_cast<int>(b);
  e.local = cell.local;

  if (cell.local) {
    e.forwarded = !cell.final_sent;
    work.replies.push_back(std::move(e));
    LocalCompletion(cell, b, code, reply != nullptr ? reply->reason() : DefaultReason(code),
                    reply != nullptr, work);
    return;
  }
  const bool success = code >= 200 && code < 300;
  if (reply != nullptr && success && (invite || !cell.final_sent)) {
    // Every 2xx to INVITE goes upstream at once; the first 2xx to anything else.
    std::string bytes = BuildForwardedReply(*reply);
    if (!cell.final_sent) {
      SendFinalUpstream(cell, std::move(bytes), code, work);
    } else {
      work.Add(cell.source, std::move(bytes));
    }
    Count(counters_.relayed_replies);
    Count(counters_.fwd_replies);
    e.forwarded = true;
    work.replies.push_back(std::move(e));
    if (invite) {
      cell.cancel_branches = true;
      CancelBranches(cell, work);
    }
    return;
  }
  if (reply != nullptr) (void)table_.Assign(br.reply, reply->raw());
  const size_t event_index = work.replies.size();
  work.replies.push_back(std::move(e));
  if (cell.final_sent) return;
  if (invite && code >= 600) {
    cell.cancel_branches = true;
    CancelBranches(cell, work);
  }
  bool all_done = true;
  for (uint32_t i = 0; i < cell.branch_count; ++i) {
    if (cell.branches[i].state != BranchState::kCompleted) all_done = false;
  }
  if (all_done || (invite && code >= 600)) {
    ChooseFinal(cell, work);
    // The event of this branch says whether its reply was the one sent upstream.
    (void)event_index;
  }
}

void TransactionLayer::ChooseFinal(Cell& cell, Work& work) {
  int best = -1;
  for (uint32_t i = 0; i < cell.branch_count; ++i) {
    const Branch& br = cell.branches[i];
    if (br.state != BranchState::kCompleted) continue;
    if (best < 0) {
      best = static_cast<int>(i);
      continue;
    }
    const Branch& current = cell.branches[best];
    const int r = Rank(br.code);
    const int rc = Rank(current.code);
    // Lower class wins; within a class a received reply beats a made-up one.
    if (r < rc || (r == rc && !br.reply.empty() && current.reply.empty())) {
      best = static_cast<int>(i);
    }
  }
  if (best < 0) return;
  Branch& chosen = cell.branches[best];
  const TransactionId id{cell.index, cell.label};
  // 6xx from an INVITE branch is sent even when other branches are still pending.
  absl::StatusOr<SipMessage> parsed_reply = absl::InvalidArgumentError("none");
  if (!chosen.reply.empty() && chosen.code != 503)
    parsed_reply = SipMessage::Parse(chosen.reply.view());
  if (parsed_reply.ok()) {
    auto stored = std::make_unique<SipMessage>(std::move(*parsed_reply));
    std::string bytes = BuildForwardedReply(*stored);
    const int code = stored->status();
    SendFinalUpstream(cell, std::move(bytes), code, work);
    Count(counters_.relayed_replies);
    Count(counters_.fwd_replies);
    // Mark this branch's event as forwarded if it is in this batch, else report it.
    bool marked = false;
    for (auto& e : work.replies) {
      if (e.id == id && e.branch == best && e.code == code) {
        e.forwarded = true;
        if (!e.is_received) e.message = stored.get();
        marked = true;
      }
    }
    if (!marked) {
      Work::PendingReply e;
      e.id = id;
      e.cookie = cell.cookie;
      e.method = cell.method;
      e.call_id = std::string(cell.call_id.view());
      e.from_tag = std::string(cell.from_tag.view());
      e.code = code;
      e.reason = std::string(stored->reason());
      e.message = stored.get();
      e.branch = best;
      e.forwarded = true;
      work.replies.push_back(std::move(e));
    }
    work.messages.push_back(std::move(stored));
    return;
  }
  // A made-up final: the branch's own code (408, 503 -> 500 per 16.7.6), 487 if cancelled.
  int code = chosen.code;
  if (code == 503 && !chosen.reply.empty()) code = 500;
  if (cell.canceled) code = 487;
  auto original = SipMessage::Parse(cell.request.view());
  if (!original.ok()) return;
  std::string bytes = BuildLocalReply(*original, code, DefaultReason(code), ToTag(cell.key.view()),
                                      {}, {}, options_.server);
  SendFinalUpstream(cell, std::move(bytes), code, work);
  Count(counters_.local_replies);
  Work::PendingReply e;
  e.id = id;
  e.cookie = cell.cookie;
  e.method = cell.method;
  e.call_id = std::string(cell.call_id.view());
  e.from_tag = std::string(cell.from_tag.view());
  e.code = code;
  e.reason = std::string(DefaultReason(code));
  e.branch = -1;
  e.forwarded = true;
  work.replies.push_back(std::move(e));
}

void TransactionLayer::SendFinalUpstream(Cell& cell, std::string bytes, int code, Work& work) {
  const int64_t now = clock_();
  cell.final_sent = true;
  cell.final_code = static_cast<int16_t>(code);
  // Local replies are built from the request; there will be none after the final one.
  table_.Release(cell.request);
  (void)table_.Assign(cell.last_reply, bytes);
  work.Add(cell.source, std::move(bytes));
  if (code >= 200 && code < 700) Count(counters_.final_by_class[code / 100 - 2]);
  if (cell.method == Method::kInvite) {
    if (code >= 300) {
      cell.server_state = ServerState::kCompleted;
      if (cell.source.proto == Proto::kUdp) {
        cell.server_retransmit_ms = static_cast<uint32_t>(options_.t1_ms);
        table_.Arm(cell.server_retransmit, now + options_.t1_ms);
      }
      table_.Arm(cell.wait, now + 64 * options_.t1_ms);  // H
    } else {
      cell.server_state = ServerState::kAccepted;
      table_.Arm(cell.wait, now + options_.wait_ms);
    }
    cell.cancel_branches = true;
    CancelBranches(cell, work);
  } else {
    cell.server_state = ServerState::kCompleted;
    table_.Arm(cell.wait, now + options_.wait_ms);
  }
}

void TransactionLayer::CancelBranches(Cell& cell, Work& work) {
  if (cell.method != Method::kInvite) return;
  for (uint32_t i = 0; i < cell.branch_count; ++i) {
    const Branch& br = cell.branches[i];
    if (br.state == BranchState::kProceeding && !br.cancel_sent) CancelBranch(cell, i, work);
  }
}

void TransactionLayer::CancelBranch(Cell& cell, uint32_t b, Work& work) {
  Branch& br = cell.branches[b];
  auto request = SipMessage::Parse(br.request.view());
  if (!request.ok()) return;
  std::string cancel = BuildCancel(*request);
  br.cancel_sent = true;
  if (!table_.Assign(br.cancel, cancel)) return;
  const int64_t now = clock_();
  if (br.destination.proto == Proto::kUdp) {
    br.cancel_retransmit_ms = static_cast<uint32_t>(options_.t1_ms);
    table_.Arm(br.cancel_retransmit, now + options_.t1_ms);
  }
  table_.Arm(br.cancel_timeout, now + options_.fr_timeout_ms);
  work.Add(br.destination, std::move(cancel));
  Count(counters_.fwd_requests);
}

void TransactionLayer::LocalCompletion(Cell& cell, uint32_t b, int code, std::string_view reason,
                                       bool received, Work& work) {
  if (cell.final_sent) return;
  cell.final_sent = true;
  cell.final_code = static_cast<int16_t>(code);
  if (code >= 200 && code < 700) Count(counters_.final_by_class[code / 100 - 2]);
  Branch& br = cell.branches[b];
  if (cell.completion != 0) {
    Work::PendingCompletion c;
    c.completion = cell.completion;
    c.data = std::string(cell.completion_data.view());
    c.id = TransactionId{cell.index, cell.label};
    c.cookie = cell.cookie;
    c.code = code;
    c.reason = std::string(reason);
    c.received = received;
    c.request = std::string(br.request.view());
    work.completions.push_back(std::move(c));
  }
  if (received && cell.method == Method::kInvite && code >= 200 && code < 300) {
    work.ack_2xx.push_back(std::string(br.request.view()));
  }
  if (cell.method == Method::kInvite) {
    cell.cancel_branches = true;
    CancelBranches(cell, work);
  }
  table_.Arm(cell.wait, clock_() + options_.wait_ms);
}

void TransactionLayer::Finish(Work& work, const SipMessage* received, const Peer* received_from) {
  const int64_t now = clock_();
  for (const Work::Blacklisting& b : work.blacklist) {
    if (blacklist_ == nullptr || options_.blacklist_ms <= 0) break;
    if (!blacklist_->Contains(b.to, now)) {
      spdlog::warn("tm: {}:{} blacklisted for {} ms ({})", b.to.ip(), b.to.port(),
                   options_.blacklist_ms, b.why);
    }
    blacklist_->Add(b.to, now + options_.blacklist_ms);
  }
  for (const Work::Send& s : work.sent) Trace(false, s.bytes, s.to);
  for (size_t i = 0; i < work.sends.size(); ++i) {
    const Work::Send& s = work.sends[i];
    const absl::Status status = SendLogged(s.to, s.bytes);
    Trace(false, s.bytes, s.to);
    if (!status.ok()) {
      const auto& [id, branch] = work.send_branch[i];
      if (branch >= 0) work.failed.emplace_back(id, static_cast<uint32_t>(branch));
    }
  }
  for (const std::string& request_bytes : work.ack_2xx) {
    if (received == nullptr) continue;
    auto request = SipMessage::Parse(request_bytes);
    if (!request.ok()) continue;
    const std::string branch = absl::StrCat(
        Absl(kMagicCookie), Hex32(Fnv1a32(received->to_tag(), Fnv1a32(request_bytes))), "-ack");
    // The Via of the request names the socket; the ACK goes where the next hop says.
    std::string next_hop;
    auto vias = request->Vias();
    std::string via =
        vias.ok() && !vias->empty()
            ? absl::StrCat(
                  "SIP/2.0/", Absl((*vias)[0].transport), " ", Absl((*vias)[0].host),
                  (*vias)[0].port != 0 ? absl::StrCat(":", (*vias)[0].port) : std::string(),
                  ";branch=", branch)
            : std::string();
    auto ack = BuildAckFor2xx(*request, *received, via, &next_hop);
    if (!ack.ok()) continue;
    auto uri = ParseUri(next_hop);
    if (!uri.ok()) continue;
    auto destination = ResolveUri(*uri, options_.sockets, options_.resolver);
    if (!destination.ok()) continue;
    SendNow(*destination, *ack);
  }
  for (const auto& [id, branch] : work.failed) {
    Work more;
    Bucket& bucket = table_.LockBucket(id.index, now);
    Cell* cell = table_.FindByLabel(bucket, id.label);
    if (cell != nullptr && branch < cell->branch_count &&
        cell->branches[branch].state != BranchState::kCompleted) {
      cell->branches[branch].failed_to_send = true;
      BranchFinished(*cell, branch, 503, nullptr, more);
    }
    table_.UnlockBucket(bucket);
    Finish(more, nullptr);
  }
  if (callbacks_.has_reply()) {
    for (const Work::PendingReply& p : work.replies) {
      ReplyEvent e;
      e.transaction = p.id;
      e.cookie = p.cookie;
      e.method = p.method;
      e.call_id = p.call_id;
      e.from_tag = p.from_tag;
      e.code = p.code;
      e.reason = p.reason;
      e.reply = p.is_received ? received : p.message;
      e.source = p.is_received ? received_from : nullptr;
      e.branch = p.branch;
      e.forwarded = p.forwarded;
      e.local = p.local;
      callbacks_.RunReply(e);
    }
  }
  for (const Work::PendingCompletion& c : work.completions) {
    if (c.completion == 0 || c.completion > completions_.size()) continue;
    UacResult result;
    result.transaction = c.id;
    result.cookie = c.cookie;
    result.code = c.code;
    result.reason = c.reason;
    result.reply = c.received ? received : nullptr;
    result.request = c.request;
    try {
      completions_[c.completion - 1](result, c.data);
    } catch (const std::exception& e) {
      spdlog::error("tm: completion failed: {}", e.what());
    }
  }
  if (callbacks_.has_end()) {
    for (const EndEvent& e : work.ends) callbacks_.RunEnd(e);
  }
}

absl::Status TransactionLayer::LocalReply(TransactionId id, int code, std::string_view reason,
                                          std::string_view to_tag,
                                          const std::vector<std::string>& headers,
                                          std::string_view body) {
  Work work;
  Bucket& bucket = table_.LockBucket(id.index, clock_());
  Cell* cell = table_.FindByLabel(bucket, id.label);
  if (cell == nullptr) {
    table_.UnlockBucket(bucket);
    return absl::NotFoundError("Transaction not found");
  }
  if (cell->local || cell->final_sent) {
    table_.UnlockBucket(bucket);
    return absl::FailedPreconditionError("Transaction already answered");
  }
  auto request = SipMessage::Parse(cell->request.view());
  if (!request.ok()) {
    table_.UnlockBucket(bucket);
    return absl::InternalError("stored request unreadable");
  }
  std::string bytes =
      BuildLocalReply(*request, code, reason, to_tag.empty() ? ToTag(cell->key.view()) : to_tag,
                      headers, body, options_.server);
  if (code >= 200) {
    SendFinalUpstream(*cell, std::move(bytes), code, work);
  } else {
    (void)table_.Assign(cell->last_reply, bytes);
    cell->server_state = ServerState::kProceeding;
    SendUnderLock(cell->source, std::move(bytes), work);  // ahead of any final
  }
  Work::PendingReply e;
  e.id = id;
  e.cookie = cell->cookie;
  e.method = cell->method;
  e.call_id = std::string(cell->call_id.view());
  e.from_tag = std::string(cell->from_tag.view());
  e.code = code;
  e.reason = std::string(reason);
  e.forwarded = true;
  work.replies.push_back(std::move(e));
  table_.UnlockBucket(bucket);
  Count(counters_.local_replies);
  Finish(work, nullptr);
  return absl::OkStatus();
}

absl::Status TransactionLayer::Reply(TransactionId id, int code, std::string_view reason,
                                     std::string_view to_tag,
                                     const std::vector<std::string>& headers,
                                     std::string_view body) {
  if (id.index >= kBuckets) return absl::NotFoundError("Transaction not found");
  // What the caller gives goes into the reply's lines as it is: nothing may end a line.
  if (HasControlCharacter(reason) ||
      !std::all_of(to_tag.begin(), to_tag.end(), [](char c) { return IsTokenChar(c); })) {
    return absl::InvalidArgumentError("bad reason or To-tag");
  }
  for (const std::string& line : headers) {
    if (HasControlCharacter(line) || line.find(':') == std::string::npos) {
      return absl::InvalidArgumentError("bad header line");
    }
  }
  return LocalReply(id, code, reason, to_tag, headers, body);
}

absl::Status TransactionLayer::CancelLocal(std::string_view call_id, uint32_t cseq) {
  Work work;
  const uint32_t index = BucketOf(call_id);
  Bucket& bucket = table_.LockBucket(index, clock_());
  Cell* found = nullptr;
  for (Cell* c = bucket.first.load(std::memory_order_acquire); c != nullptr;
       c = c->next.load(std::memory_order_acquire)) {
    if (c->local && c->method == Method::kInvite && c->cseq == cseq && !c->final_sent &&
        c->call_id.view() == call_id) {
      found = c;
      break;
    }
  }
  if (found != nullptr) {
    found->canceled = true;
    found->cancel_branches = true;
    CancelBranches(*found, work);
  }
  table_.UnlockBucket(bucket);
  Finish(work, nullptr);
  return found != nullptr ? absl::OkStatus() : absl::NotFoundError("No such transaction");
}

size_t TransactionLayer::RunTimers() {
  const int64_t now = clock_();
  table_.RebuildIfNeeded(now);
  std::vector<DueTimer> due;
  table_.CollectDue(now, due);
  for (const DueTimer& d : due) RunTimer(d);
  return due.size();
}

void TransactionLayer::RunTimer(const DueTimer& due) {
  const int64_t now = clock_();
  Work work;
  Bucket& bucket = table_.LockBucket(due.index, now);
  Cell* cell = table_.FindByLabel(bucket, due.label);
  TimerLink* link = cell != nullptr ? LinkOf(*cell, due.kind, due.branch) : nullptr;
  if (link == nullptr || link->armed || link->generation != due.generation) {
    table_.UnlockBucket(bucket);  // disarmed or re-armed meanwhile
    return;
  }
  const bool invite = cell->method == Method::kInvite;
  switch (due.kind) {
    case TimerKind::kWait: {
      if (!cell->final_sent) {
        // The maximum lifetime: answer 408 (487 if cancelled) and wait as usual.
        if (cell->local) {
          const uint32_t b = cell->branch_count > 0 ? 0 : 0;
          if (cell->branch_count > 0) {
            BranchFinished(*cell, b, 408, nullptr, work);
          } else {
            LocalCompletion(*cell, b, 408, DefaultReason(408), false, work);
          }
        } else {
          for (uint32_t i = 0; i < cell->branch_count; ++i) {
            Branch& br = cell->branches[i];
            if (br.state == BranchState::kCompleted) continue;
            table_.Disarm(br.retransmit);
            table_.Disarm(br.timeout);
            br.state = BranchState::kCompleted;
            br.code = 408;
          }
          const int code = cell->canceled ? 487 : 408;
          auto original = SipMessage::Parse(cell->request.view());
          if (original.ok()) {
            SendFinalUpstream(*cell,
                              BuildLocalReply(*original, code, DefaultReason(code),
                                              ToTag(cell->key.view()), {}, {}, options_.server),
                              code, work);
            Count(counters_.local_replies);
          } else {
            EndCell(*cell);
          }
        }
        if (!cell->wait.armed) table_.Arm(cell->wait, now + options_.wait_ms);
        break;
      }
      if (!cell->local && cell->method == Method::kInvite) {
        // Late retransmissions of this INVITE stay absorbed for the rest of timer B of
        // its sender (64*T1 after it came).
        table_.RememberEnded(
            TransactionTable::Fingerprint(cell->key.view()), now,
            std::max(now, cell->created_ms + 64 * options_.t1_ms) + options_.t2_ms);
      }
      EndEvent end;
      end.transaction = TransactionId{cell->index, cell->label};
      end.cookie = cell->cookie;
      end.method = cell->method;
      end.final_code = cell->final_code;
      end.local = cell->local;
      work.ends.push_back(end);
      table_.DeleteCell(bucket, cell);
      break;
    }
    case TimerKind::kServerRetransmit:
      if (cell->server_state == ServerState::kCompleted && !cell->last_reply.empty()) {
        work.Add(cell->source, std::string(cell->last_reply.view()));
        cell->server_retransmit_ms = static_cast<uint32_t>(
            std::min<int64_t>(2 * cell->server_retransmit_ms, options_.t2_ms));
        table_.Arm(cell->server_retransmit, now + cell->server_retransmit_ms);
      }
      break;
    case TimerKind::kBranchRetransmit: {
      Branch& br = cell->branches[due.branch];
      const bool waiting =
          br.state == BranchState::kCalling || (!invite && br.state == BranchState::kProceeding);
      if (waiting && !br.request.empty()) {
        work.Add(br.destination, std::string(br.request.view()));
        if (invite) {
          br.retransmit_ms *= 2;
        } else if (br.state == BranchState::kCalling) {
          br.retransmit_ms =
              static_cast<uint32_t>(std::min<int64_t>(2 * br.retransmit_ms, options_.t2_ms));
        } else {
          br.retransmit_ms = static_cast<uint32_t>(options_.t2_ms);
        }
        table_.Arm(br.retransmit, now + br.retransmit_ms);
      }
      break;
    }
    case TimerKind::kBranchTimeout: {
      Branch& br = cell->branches[due.branch];
      if (br.state == BranchState::kCompleted) break;
      if (br.state == BranchState::kCalling) {
        // Only an INVITE that got no answer at all blacklists its destination (Kamailio's
        // default too: tm.blst_methods_add = INVITE). A live peer can leave a BYE
        // unanswered (a call it already ended), or its reply can be lost; blacklisting it
        // would refuse every new call to it for bl_timeout: under overload that turned
        // lost replies into an outage.
        if (invite) work.blacklist.push_back({br.destination, "no answer to INVITE"});
      } else if (invite && !br.cancel_sent) {
        CancelBranch(*cell, due.branch, work);  // timer C
      }
      BranchFinished(*cell, due.branch, 408, nullptr, work);
      break;
    }
    case TimerKind::kCancelRetransmit: {
      Branch& br = cell->branches[due.branch];
      if (br.cancel_timeout.armed && !br.cancel.empty()) {
        work.Add(br.destination, std::string(br.cancel.view()));
        br.cancel_retransmit_ms =
            static_cast<uint32_t>(std::min<int64_t>(2 * br.cancel_retransmit_ms, options_.t2_ms));
        table_.Arm(br.cancel_retransmit, now + br.cancel_retransmit_ms);
      }
      break;
    }
    case TimerKind::kCancelTimeout:
      table_.Disarm(cell->branches[due.branch].cancel_retransmit);
      break;
  }
  table_.UnlockBucket(bucket);
  Finish(work, nullptr);
}

absl::StatusOr<TransactionLayer::PreparedRequest> TransactionLayer::Prepare(
    const UacRequest& uac) const {
  auto bad = [](std::string_view text) {
    return absl::InvalidArgumentError(absl::string_view(text.data(), text.size()));
  };
  if (uac.method.empty() ||
      !std::all_of(uac.method.begin(), uac.method.end(), [](char c) { return IsTokenChar(c); })) {
    return bad("Invalid method");
  }
  if (uac.method == "ACK" || uac.method == "CANCEL") return bad("Invalid method");
  auto ruri = ParseUri(uac.request_uri);
  if (!ruri.ok() || !ruri->is_sip()) return bad("Invalid RURI");
  std::optional<SipUri> next_hop;
  if (!uac.next_hop.empty()) {
    auto hop = ParseUri(uac.next_hop);
    if (!hop.ok() || !hop->is_sip()) return bad("Invalid NEXTHOP");
    next_hop = *hop;
  }
  std::string socket_name;
  if (!uac.socket.empty()) {
    std::string_view s = uac.socket;
    std::string proto = "udp";
    if (s.substr(0, 4) == "udp:" || s.substr(0, 4) == "tcp:") {
      proto = std::string(s.substr(0, 3));
      s.remove_prefix(4);
    }
    // The URI's views point into this string: it must outlive `hostport`.
    const std::string socket_uri = absl::StrCat("sip:", Absl(s));
    auto hostport = ParseUri(socket_uri);
    if (!hostport.ok() || !hostport->user.empty() || !hostport->params.text().empty()) {
      return bad("Invalid local socket");
    }
    const LocalSocket* found = nullptr;
    for (const LocalSocket& ls : options_.sockets) {
      if (std::string(ProtoName(ls.proto)) == proto && ls.ip == hostport->bare_host() &&
          (hostport->port == 0 || hostport->port == ls.port)) {
        found = &ls;
        break;
      }
    }
    if (found == nullptr) return absl::NotFoundError("Local socket not found");
    socket_name = found->name();
  }

  // Header lines.
  std::vector<std::string> lines;
  {
    std::string_view rest = uac.headers;
    while (!rest.empty()) {
      size_t end = rest.find('\n');
      std::string_view line = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
      while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) continue;
      if (HasControlCharacter(line)) return bad("Bad headers");
      if (!lines.empty() && (line.front() == ' ' || line.front() == '\t')) {
        absl::StrAppend(&lines.back(), " ", Absl(TrimWhitespace(line)));  // folded
        continue;
      }
      lines.emplace_back(line);
    }
  }
  int from_at = -1, to_at = -1, call_id_at = -1, cseq_at = -1;
  bool content_type = false, content_length = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos || colon == 0) return bad("Bad headers");
    const std::string_view name = TrimWhitespace(std::string_view(lines[i]).substr(0, colon));
    if (!std::all_of(name.begin(), name.end(), [](char c) { return IsTokenChar(c); })) {
      return bad("Bad headers");
    }
    switch (ClassifyHeader(name)) {
      case HeaderType::kFrom:
        from_at = static_cast<int>(i);
        break;
      case HeaderType::kTo:
        to_at = static_cast<int>(i);
        break;
      case HeaderType::kCallId:
        call_id_at = static_cast<int>(i);
        break;
      case HeaderType::kCSeq:
        cseq_at = static_cast<int>(i);
        break;
      case HeaderType::kContentType:
        content_type = true;
        break;
      case HeaderType::kContentLength:
        content_length = true;
        break;
      case HeaderType::kVia:
        return bad("Bad headers");
      default:
        break;
    }
  }
  if (!uac.body.empty() && !content_type) return bad("Content-Type missing");
  if (content_length) return bad("Content-Length disallowed");
  if (to_at < 0) return bad("To missing");
  if (from_at < 0) return bad("From missing");
  auto value_of = [&](int at) {
    const std::string& l = lines[static_cast<size_t>(at)];
    return std::string(TrimWhitespace(std::string_view(l).substr(l.find(':') + 1)));
  };
  {
    const std::string from_value = value_of(from_at);
    auto from = ParseNameAddr(from_value);
    if (!from.ok() || from->star) return bad("Error in From");
    if (!from->params.Has("tag")) {
      lines[static_cast<size_t>(from_at)] =
          absl::StrCat("From: ", from_value, ";tag=", RandomHex(8));
    }
    auto to = ParseNameAddr(value_of(to_at));
    if (!to.ok() || to->star) return bad("Bad headers");
  }
  uint32_t cseq = 1;
  if (cseq_at >= 0) {
    const std::string value = value_of(cseq_at);
    size_t digits = 0;
    while (digits < value.size() && value[digits] >= '0' && value[digits] <= '9') ++digits;
    if (digits == 0 || digits > 10 || std::stoull(value.substr(0, digits)) > 0xFFFFFFFFull) {
      return bad("Bad CSeq number");
    }
    cseq = static_cast<uint32_t>(std::stoull(value.substr(0, digits)));
    if (TrimWhitespace(std::string_view(value).substr(digits)) != uac.method) {
      return bad("CSeq method mismatch");
    }
  } else {
    lines.push_back(absl::StrCat("CSeq: ", cseq, " ", uac.method));
  }
  std::string call_id;
  if (call_id_at >= 0) {
    call_id = value_of(call_id_at);
    if (call_id.empty()) return bad("Bad headers");
  } else {
    call_id = absl::StrCat(RandomHex(12), "@sipd");
    lines.push_back(absl::StrCat("Call-ID: ", call_id));
  }
  if (uac.completion > completions_.size()) return bad("unknown completion");
  if (uac.completion_data.size() > kMaxCompletionData) return bad("completion data too long");

  // Where it goes: next hop, else the first Route if it is a loose router, else the
  // Request-URI.
  SipUri hop = next_hop.value_or(*ruri);
  std::string route_hop;
  if (!next_hop) {
    for (const std::string& l : lines) {
      const size_t colon = l.find(':');
      if (ClassifyHeader(TrimWhitespace(std::string_view(l).substr(0, colon))) !=
          HeaderType::kRoute) {
        continue;
      }
      std::vector<std::string_view> items = SplitList(std::string_view(l).substr(colon + 1), 1);
      if (items.empty()) break;
      auto route = ParseNameAddr(items[0]);
      if (route.ok() && route->uri.lr()) {
        route_hop = std::string(route->uri.text);
      }
      break;
    }
  }
  if (!route_hop.empty()) hop = *ParseUri(route_hop);
  auto destination = ResolveUri(hop, options_.sockets, options_.resolver, socket_name);
  if (!destination.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach ", Absl(hop.text), ": ", destination.status().message()));
  }
  const LocalSocket* local = SocketFor(*destination);
  const std::string self = local != nullptr ? local->host_port() : "127.0.0.1";
  for (std::string& l : lines) {
    for (size_t at = l.find("!!"); at != std::string::npos; at = l.find("!!", at + self.size())) {
      l.replace(at, 2, self);
    }
  }

  PreparedRequest prepared;
  prepared.request = uac;
  prepared.lines = std::move(lines);
  prepared.call_id = std::move(call_id);
  prepared.cseq = cseq;
  prepared.destination = *destination;
  return prepared;
}

absl::StatusOr<TransactionId> TransactionLayer::SendRequest(const UacRequest& uac) {
  absl::StatusOr<PreparedRequest> prepared = Prepare(uac);
  if (!prepared.ok()) return prepared.status();
  return Launch(*std::move(prepared));
}

absl::StatusOr<TransactionId> TransactionLayer::Launch(PreparedRequest prepared) {
  auto bad = [](std::string_view text) {
    return absl::InvalidArgumentError(absl::string_view(text.data(), text.size()));
  };
  const UacRequest& uac = prepared.request;
  const std::vector<std::string>& lines = prepared.lines;
  const std::string& call_id = prepared.call_id;
  const uint32_t cseq = prepared.cseq;
  const Destination* destination = &prepared.destination;
  const uint32_t index = BucketOf(call_id);
  const int64_t now = clock_();
  TransactionId id;
  std::string bytes;
  {
    Bucket& bucket = table_.LockBucket(index, now);
    Cell* cell = table_.NewCell(bucket, index, 1);
    if (cell == nullptr) {
      table_.UnlockBucket(bucket);
      return absl::ResourceExhaustedError("shared memory is full");
    }
    cell->local = true;
    cell->method = ParseMethod(uac.method);
    cell->cseq = cseq;
    cell->loop_hash = Fnv1a32(call_id) ^ cseq;
    cell->cookie = uac.cookie;
    cell->completion = uac.completion;
    cell->created_ms = now;
    id = TransactionId{index, cell->label};
    bytes = absl::StrCat(uac.method, " ", uac.request_uri, " SIP/2.0\r\nVia: ",
                         ViaFor(*destination, MakeBranch(cell->loop_hash, index, cell->label, 0)),
                         "\r\nMax-Forwards: 70\r\n");
    for (const std::string& l : lines) absl::StrAppend(&bytes, l, "\r\n");
    absl::StrAppend(&bytes, "Content-Length: ", uac.body.size(), "\r\n\r\n", uac.body);
    Branch& br = cell->branches[0];
    br.destination = *destination;
    auto from = SipMessage::Parse(bytes);
    const bool stored = from.ok() && table_.Assign(br.request, bytes) &&
                        table_.Assign(cell->call_id, call_id) &&
                        table_.Assign(cell->from_tag, from->from_tag()) &&
                        table_.Assign(cell->completion_data, uac.completion_data);
    if (!stored) {
      table_.DeleteCell(bucket, cell);
      table_.UnlockBucket(bucket);
      return from.ok() ? absl::ResourceExhaustedError("shared memory is full") : bad("Bad headers");
    }
    // The request as sent must name method and CSeq alike (a header block could hide
    // a second CSeq).
    if (from->cseq_method_text() != uac.method || !from->defect().empty()) {
      table_.DeleteCell(bucket, cell);
      table_.UnlockBucket(bucket);
      return bad("Bad headers");
    }
    br.state = BranchState::kCalling;
    if (br.destination.proto == Proto::kUdp) {
      br.retransmit_ms = static_cast<uint32_t>(options_.t1_ms);
      table_.Arm(br.retransmit, now + options_.t1_ms);
    }
    table_.Arm(br.timeout, now + options_.fr_timeout_ms);
    table_.Arm(cell->wait,
               now + (cell->method == Method::kInvite ? options_.max_inv_lifetime_ms
                                                      : options_.max_noninv_lifetime_ms));
    table_.UnlockBucket(bucket);
  }
  absl::Status sent = transport_.Send(*destination, bytes);
  Trace(false, bytes, *destination);
  if (!sent.ok()) {
    Bucket& bucket = table_.LockBucket(index, clock_());
    if (Cell* cell = table_.FindByLabel(bucket, id.label); cell != nullptr) {
      table_.DeleteCell(bucket, cell);
    }
    table_.UnlockBucket(bucket);
    return absl::UnavailableError(absl::StrCat("Send failed: ", sent.message()));
  }
  Count(counters_.uac_transactions);
  Count(counters_.fwd_requests);
  return id;
}

absl::StatusOr<LayerCounters> RegisterLayerStatistics(mi::StatsRegistry& stats) {
  LayerCounters c;
  stats.AddGroup("tm");
  SIPD_ASSIGN_OR_RETURN(c.received_replies, stats.AddCounter("tm", "received_replies"));
  SIPD_ASSIGN_OR_RETURN(c.relayed_replies, stats.AddCounter("tm", "relayed_replies"));
  SIPD_ASSIGN_OR_RETURN(c.local_replies, stats.AddCounter("tm", "local_replies"));
  SIPD_ASSIGN_OR_RETURN(c.uas_transactions, stats.AddCounter("tm", "UAS_transactions"));
  SIPD_ASSIGN_OR_RETURN(c.uac_transactions, stats.AddCounter("tm", "UAC_transactions"));
  for (int i = 0; i < 5; ++i) {
    SIPD_ASSIGN_OR_RETURN(c.final_by_class[i],
                          stats.AddCounter("tm", absl::StrCat(i + 2, "xx_transactions")));
  }
  SIPD_ASSIGN_OR_RETURN(c.inuse, stats.AddCounter("tm", "inuse_transactions", mi::kStatNoReset));
  SIPD_ASSIGN_OR_RETURN(
      c.overload_refused,
      stats.AddCounter("tm", "overload_refused", 0,
                       "new INVITEs refused with 503 because sipd was overloaded (not in 1.11)"));
  c.rcv_requests = stats.FindCounter("rcv_requests");
  c.rcv_replies = stats.FindCounter("rcv_replies");
  c.fwd_requests = stats.FindCounter("fwd_requests");
  c.fwd_replies = stats.FindCounter("fwd_replies");
  c.drop_requests = stats.FindCounter("drop_requests");
  c.drop_replies = stats.FindCounter("drop_replies");
  c.err_requests = stats.FindCounter("err_requests");
  c.err_replies = stats.FindCounter("err_replies");
  c.bad_msg_hdr = stats.FindCounter("bad_msg_hdr");
  for (int i = 0; i < 6; ++i) {
    c.sl_replies_by_class[i] = stats.FindCounter(absl::StrCat(i + 1, "xx_replies"));
  }
  c.sl_sent_replies = stats.FindCounter("sent_replies");
  c.sl_sent_err_replies = stats.FindCounter("sent_err_replies");
  c.sl_received_acks = stats.FindCounter("received_ACKs");
  return c;
}

}  // namespace sipd::tm
