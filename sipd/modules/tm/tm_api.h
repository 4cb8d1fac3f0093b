// What module tm offers to other modules (dialog first): callbacks on the life of the
// transactions sipd relays, and requests sent by sipd itself (UAC).
//
// Getting it: in your module's Init(), `tm::TmApi* tm = tm::FindTmApi(core);` (nullptr
// when tm is not loaded; load tm before your module). Register callbacks and
// completions there, in the attendant before the fork: every process then has the same
// lists, so an event is handled by whichever process meets it.
//
// Events, in the order a call meets them (each with the transaction's `cookie`, a
// 64-bit value a callback may store in the transaction at kRelay and that every later
// event of that transaction carries; the dialog module can put its dialog id there):
//   OnRelay      a request sipd is about to relay statefully (initial INVITE, BYE,
//                re-INVITE, ...) or to forward end to end (ACK for a 2xx, which has no
//                transaction: transaction() is invalid, cookie and Refuse ignored).
//                Runs after routing chose the targets and before the first branch is
//                sent. A callback may set the cookie, add parameters to sipd's
//                Record-Route (initial requests only; e.g. "did=ab12") or refuse the
//                request (sipd answers that code instead of relaying).
//   OnReply      every reply sipd receives for a relayed or locally sent transaction
//                (one per branch; provisional, 2xx retransmissions to the first 2xx
//                excepted) and every final reply sipd makes up itself (408 on timeout,
//                487, 503, t_reply: reply() is nullptr then). forwarded() says whether
//                the reply goes upstream (provisional replies but 100, every 2xx to
//                INVITE, the chosen final reply).
//   OnEnd        the transaction is deleted (after its wait timer); the last event
//                carrying its cookie.
// Requests that match an existing transaction (retransmissions, hop-by-hop ACKs for
// non-2xx replies, CANCEL) raise no OnRelay: the transaction absorbs them.
//
// Processes and locks: callbacks run in the process that meets the event (a SIP
// worker for requests and received replies, the timer process for timeouts and OnEnd,
// an MI process for t_reply), never with a tm lock held, so they may call SendRequest
// and take their own locks. They must not block for long: the SIP worker waits.
// The SipMessage passed to them lives until the callback returns.
//
// Thread/process-safety: registration (Add*, RegisterCompletion) only in Init();
// SendRequest from any sipd process after the fork.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "sipd/modules/tm/sip_message.h"

namespace sipd {
class Core;
}

namespace sipd::tm {

enum class Proto : uint8_t { kUdp, kTcp };
std::string_view ProtoName(Proto proto);  // "udp", "tcp"

// A transaction of the shared table, as t_reply names it: "index:label" in decimal
// (index = hash bucket 0..65535, label unique in the bucket, never 0).
struct TransactionId {
  uint32_t index = 0;
  uint32_t label = 0;
  bool valid() const { return label != 0; }
  std::string ToString() const;
  // "index:label" -> id; nullopt if malformed.
  static std::optional<TransactionId> Parse(std::string_view text);
  friend bool operator==(const TransactionId&, const TransactionId&) = default;
};

// Where a message came from.
struct Peer {
  Proto proto = Proto::kUdp;
  std::string ip;
  uint16_t port = 0;
  // The local listen socket that received it, "udp:127.0.0.1:5060".
  std::string socket;
  // TCP: the connection it came on (0 for UDP).
  uint64_t connection = 0;
};

class RequestEvent {
 public:
  RequestEvent(const SipMessage& request, const Peer& source, TransactionId transaction,
               std::vector<std::string> targets, uint64_t cookie = 0)
      : request_(request),
        source_(source),
        transaction_(transaction),
        targets_(std::move(targets)),
        cookie_(cookie) {}

  // The request as received (before sipd's changes).
  const SipMessage& request() const { return request_; }
  const Peer& source() const { return source_; }
  // Invalid for an ACK to a 2xx (no transaction).
  TransactionId transaction() const { return transaction_; }
  // A To-tag: the request belongs to a dialog (BYE, re-INVITE, ACK, ...).
  bool in_dialog() const { return !request_.to_tag().empty(); }
  // The Request-URI of each branch sipd will send (one per contact when forking).
  const std::vector<std::string>& targets() const { return targets_; }

  uint64_t cookie() const { return cookie_; }
  void set_cookie(uint64_t cookie) { cookie_ = cookie; }

  // Appended to the URI of sipd's Record-Route as ";<param>" (e.g. "did=ab12").
  // Effective for initial requests that sipd record-routes (INVITE, SUBSCRIBE, REFER).
  void AddRecordRouteParam(std::string_view param) { rr_params_.emplace_back(param); }
  const std::vector<std::string>& record_route_params() const { return rr_params_; }

  // Answer `code` (300..699) with `reason` instead of relaying. The first refusal wins.
  void Refuse(int code, std::string_view reason) {
    if (!refusal_) refusal_.emplace(code, std::string(reason));
  }
  const std::optional<std::pair<int, std::string>>& refusal() const { return refusal_; }

 private:
  const SipMessage& request_;
  const Peer& source_;
  TransactionId transaction_;
  std::vector<std::string> targets_;
  uint64_t cookie_;
  std::vector<std::string> rr_params_;
  std::optional<std::pair<int, std::string>> refusal_;
};

struct ReplyEvent {
  TransactionId transaction;
  uint64_t cookie = 0;
  // Of the transaction's request.
  Method method = Method::kOther;
  std::string_view call_id;
  std::string_view from_tag;
  int code = 0;
  std::string_view reason;
  // The reply as received; nullptr when sipd made it up (timeout 408, 487, t_reply...).
  const SipMessage* reply = nullptr;
  // Where a received reply came from (its source and the local socket that got it);
  // nullptr when sipd made it up.
  const Peer* source = nullptr;
  // The branch it came from (0-based); -1 for a reply sipd made up.
  int branch = -1;
  // The reply goes upstream (to the UAC, or to the MI caller of t_uac_dlg).
  bool forwarded = false;
  // The transaction was created by sipd itself (SendRequest, t_uac_dlg).
  bool local = false;
};

struct EndEvent {
  TransactionId transaction;
  uint64_t cookie = 0;
  Method method = Method::kOther;
  // The final reply sent upstream (or received, for a local transaction); 0 if none.
  int final_code = 0;
  bool local = false;
};

// The callback lists. tm owns one; other modules add to it in Init().
class Callbacks {
 public:
  using RelayFn = std::function<void(RequestEvent&)>;
  using ReplyFn = std::function<void(const ReplyEvent&)>;
  using EndFn = std::function<void(const EndEvent&)>;

  void OnRelay(RelayFn fn) { relay_.push_back(std::move(fn)); }
  void OnReply(ReplyFn fn) { reply_.push_back(std::move(fn)); }
  void OnEnd(EndFn fn) { end_.push_back(std::move(fn)); }

  // Called by tm (registration order; a callback that throws is logged and skipped).
  void RunRelay(RequestEvent& event) const;
  void RunReply(const ReplyEvent& event) const;
  void RunEnd(const EndEvent& event) const;

  bool has_relay() const { return !relay_.empty(); }
  bool has_reply() const { return !reply_.empty(); }
  bool has_end() const { return !end_.empty(); }

 private:
  std::vector<RelayFn> relay_;
  std::vector<ReplyFn> reply_;
  std::vector<EndFn> end_;
};

// A request sipd sends itself (t_uac_dlg, dlg_end_dlg's BYEs).
struct UacRequest {
  std::string method;
  std::string request_uri;
  // Where to send it, as a URI; empty = the first Route header if it is a loose
  // router, else the Request-URI.
  std::string next_hop;
  // The local socket ("udp:IP:PORT" or "IP:PORT"); empty = the first listen socket of
  // the protocol the next hop asks for.
  std::string socket;
  // Header lines separated by CRLF (a trailing CRLF is optional). From and To are
  // required; Call-ID, CSeq and the From tag are generated when absent; "!!" is
  // replaced by the sending socket's IP:PORT. A body requires Content-Type and forbids
  // Content-Length (tm adds it).
  std::string headers;
  std::string body;
  uint64_t cookie = 0;
  // From RegisterCompletion(); 0 = nobody waits for the final reply.
  uint32_t completion = 0;
  // Handed to the completion; at most kMaxCompletionData bytes.
  std::string completion_data;
};
inline constexpr size_t kMaxCompletionData = 256;

struct UacResult {
  TransactionId transaction;
  uint64_t cookie = 0;
  int code = 0;
  std::string_view reason;
  // The final reply; nullptr for a reply sipd made up (408 Request Timeout, 503 when
  // the destination is blacklisted or the send failed).
  const SipMessage* reply = nullptr;
  // The request as sent on the branch that answered (for route-set computations).
  std::string_view request;
};

// Runs in the process that receives (or times out) the final reply, with no tm lock
// held. `data` is UacRequest::completion_data.
using Completion = std::function<void(const UacResult& result, std::string_view data)>;

// One message sipd received or sent (sip_trace, spec 8.4).
struct TraceRecord {
  bool incoming = false;
  std::string_view bytes;
  Proto proto = Proto::kUdp;
  std::string peer_ip;  // where it came from / goes to
  uint16_t peer_port = 0;
  std::string local_ip;  // sipd's socket
  uint16_t local_port = 0;
};

// Records messages. Called outside every tm lock, in the process that handles the
// message; Trace() only runs while enabled() is true (checked per message, so it must
// be cheap).
class Tracer {
 public:
  virtual ~Tracer() = default;
  virtual bool enabled() const = 0;
  virtual void Trace(const TraceRecord& record) = 0;
};

class TmApi {
 public:
  virtual ~TmApi() = default;

  virtual Callbacks& callbacks() = 0;
  // REQUIRES: Init() time. Returns the id to put in UacRequest::completion (never 0).
  virtual uint32_t RegisterCompletion(std::string name, Completion fn) = 0;
  // Creates a client transaction and sends the request; the completion (if any) runs
  // once with the final reply. Errors: InvalidArgument naming what is wrong with the
  // request (spec 8.3 texts, e.g. "To missing"), Unavailable when it could not be sent
  // (the completion then does not run), ResourceExhausted when shared memory is full.
  virtual absl::StatusOr<TransactionId> SendRequest(const UacRequest& request) = 0;
  // Answers server transaction `id` (t_reply's Reply(): tm's own To-tag; the reply is
  // stored, so retransmissions of the request get it again), from any sipd process:
  // the way a local handler that deferred its answer (LocalRequest::Defer, or
  // SipRequest::Defer for the registrar) replies later. NotFound if there is no such
  // transaction, FailedPrecondition if it is local or already answered.
  virtual absl::Status Reply(TransactionId id, int code, std::string_view reason,
                             const std::vector<std::string>& headers, std::string_view body) = 0;
  // REQUIRES: Init() time. Every message tm receives or sends goes to `tracer` (one
  // tracer; nullptr removes it). The tracer must outlive tm.
  virtual void SetTracer(Tracer* tracer) = 0;
};

// The loaded tm's API, or nullptr.
TmApi* FindTmApi(Core& core);

}  // namespace sipd::tm
