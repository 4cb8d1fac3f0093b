// The transaction layer of tm (RFC 3261 section 17, with RFC 6026's Accepted state) and
// the stateful relaying of section 16: what a SIP worker does with each message, what
// the timer process does every tick, and the requests sipd sends itself.
//
// Requests. A request is matched to a server transaction by its 17.2.3 key (top Via
// branch + sent-by, method; ACK and CANCEL match the INVITE). A retransmission gets the
// last reply again (or nothing yet) and never a second transaction: matching and
// creation happen under one bucket lock. A new request gets a cell; an INVITE gets
// 100 Trying at once. Then: Max-Forwards 0 -> 483, a loop (sipd's own Via with the
// same loop hash, 16.3.4) -> 482, else the Router decides: a reply, a local handler
// (REGISTER -> registrar, OPTIONS to sipd), or relaying to targets (parallel forking,
// one branch per target). CANCEL: 200 at once, then CANCEL on every branch that had a
// provisional reply (later ones as soon as they do); CANCEL without a transaction ->
// 481. ACK for a non-2xx final reply ends the server transaction; any other ACK is
// forwarded statelessly (end to end) when the Router has a target, else dropped.
//
// Replies. sipd's branch parameter names the cell and branch (sip_builder.h); anything
// else, or a branch that does not match a live cell exactly, is dropped (a forged or
// late reply). 100 is hop by hop; other provisional replies go upstream; every 2xx to
// INVITE goes upstream at once and the other branches are cancelled; a non-2xx final
// reply to INVITE is ACKed on its branch; when every branch has a final reply the best
// one goes upstream (6xx at once, else the lowest class; 503 becomes 500; a made-up
// reply of a cancelled transaction is 487).
//
// Timers (fed by RunTimers() in the timer process): A/E retransmit a branch over UDP
// (T1 doubling; E capped at T2), B/F end a branch with no final reply after fr_timeout
// (408; an INVITE's destination that never answered goes on the blacklist), C ends an
// INVITE branch fr_inv_timeout after its provisional reply (CANCEL + 408), G retransmits
// a non-2xx final reply to INVITE over UDP until the ACK, H gives up on that ACK after
// 64*T1. Then every cell stays for wt_timer (absorbs retransmissions; replaces timers D,
// I, J, K, L, M, whose RFC values for UDP are up to 32 s, like OpenSIPS's wt_timer) and
// is deleted.
//
// Locks and processes: see transaction_table.h. This object is built in the attendant
// and used by every process after the fork; it holds no mutable process-local state
// other than what each call keeps on its stack.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "registry/statistics.h"
#include "sipd/modules/tm/blacklist.h"
#include "sipd/modules/tm/resolver.h"
#include "sipd/modules/tm/sip_message.h"
#include "sipd/modules/tm/tm_api.h"
#include "sipd/modules/tm/transaction_table.h"

namespace sipd::tm {

// A local socket sipd sends from and puts in Via / Record-Route.
struct LocalSocket {
  Proto proto = Proto::kUdp;
  std::string ip;  // numeric, without brackets
  uint16_t port = 0;
  uint16_t index = 0;  // the transport's index (Destination::socket)
  // "udp:IP:PORT" ([v6] bracketed).
  std::string name() const;
  // "IP:PORT" ([v6] bracketed).
  std::string host_port() const;
  bool ipv6() const { return ip.find(':') != std::string::npos; }
};

// What tm needs from the SIP transport (sipd/core/sip_transport.h in sipd; a fake in
// unit tests).
class Transport {
 public:
  virtual ~Transport() = default;
  // Sends without blocking. An error means the message did not leave.
  virtual absl::Status Send(const Destination& to, std::string_view bytes) = 0;
  // Sends several messages together where the transport can (SipTransport::SendBatch:
  // one system call, and one wake-up of a sleeping receiver, for a run of UDP messages).
  // A message that cannot go is skipped. Default: one Send() each.
  virtual void SendBatch(const std::vector<std::pair<Destination, std::string>>& messages) {
    for (const auto& [to, bytes] : messages) (void)Send(to, bytes);
  }
};

// Where a message came from, as the transport reports it.
struct Inbound {
  Peer peer;
  // Where replies go back: the source address (UDP), the connection (TCP).
  Destination source;
  // How long the message waited in the receive queue (SipInbound::queued_us); 0 if unknown.
  int64_t queued_us = 0;
};

// A request a local handler answers (registrar, OPTIONS to sipd).
class LocalRequest {
 public:
  virtual ~LocalRequest() = default;
  virtual const SipMessage& message() const = 0;
  virtual const Inbound& inbound() const = 0;
  // Sends the final reply through the server transaction (retransmissions of the
  // request get it again). `headers` are lines without CRLF. Only the first call counts.
  virtual absl::Status Reply(int code, std::string_view reason,
                             const std::vector<std::string>& headers = {},
                             std::string_view body = {}) = 0;
  // The handler answers later, possibly from another process, with
  // TransactionLayer::Reply(id) (TmApi::Reply): tm sends no automatic 500 when the
  // handler returns; meanwhile retransmissions are absorbed, and once answered they get
  // the stored reply. If nobody answers, the transaction ends at max_noninv_lifetime
  // with 408. FailedPrecondition if already answered.
  virtual absl::StatusOr<TransactionId> Defer() = 0;
};
using LocalHandler = std::function<void(LocalRequest&)>;

struct Target {
  std::string request_uri;
  Destination destination;
  // Route values to put in front of the request's own (Path of the contact).
  std::vector<std::string> routes;
};

struct RouteDecision {
  enum class Kind { kReply, kRelay, kLocal, kDrop };
  Kind kind = Kind::kReply;
  // kReply
  int code = 500;
  std::string reason = "Server Internal Error";
  std::vector<std::string> headers;
  // kRelay
  std::vector<Target> targets;
  int pop_routes = 0;         // Route entries naming sipd (loose routing)
  bool record_route = false;  // insert sipd's Record-Route
  // kLocal
  LocalHandler handler;
};

// The proxy's policy (proxy.h): where a request goes.
class Router {
 public:
  virtual ~Router() = default;
  virtual RouteDecision Route(const SipMessage& request, const Inbound& from) = 0;
  // Whether host[:port] is one of sipd's own addresses (Via and Route checks).
  virtual bool IsMe(std::string_view host, uint16_t port) const = 0;
};

struct LayerOptions {
  int64_t t1_ms = 500;
  int64_t t2_ms = 4000;
  int64_t fr_timeout_ms = 30000;       // B and F
  int64_t fr_inv_timeout_ms = 120000;  // C
  int64_t wait_ms = 5000;              // wt_timer
  // A transaction with no final reply by then is answered 408 (487 if cancelled).
  int64_t max_inv_lifetime_ms = 180000;
  int64_t max_noninv_lifetime_ms = 32000;
  int64_t blacklist_ms = 60000;  // bl_timeout; 0 = no blacklisting
  // overload_delay: a new INVITE outside a dialog that waited longer than this in the
  // receive queue is refused with 503 (see set_overload_flag); 0 = never for this reason
  // (the default: see tm's README, "Overload").
  int64_t overload_delay_ms = 0;
  std::string server;                  // Server header of local replies; empty = none
  std::string to_tag_prefix = "sipd";  // start of every To-tag tm makes
  std::vector<LocalSocket> sockets;
  // Extra headers of the 200 to OPTIONS for sipd (Allow, Accept, ...).
  std::vector<std::string> options_headers;
  // Host names in next hops (ResolveUri); null: numeric hosts only. Outlives the layer.
  HostResolver* resolver = nullptr;
};

// tm and sl/core statistics (spec 7.4/7.5). Invalid counters are not counted.
struct LayerCounters {
  mi::Counter received_replies, relayed_replies, local_replies, uas_transactions, uac_transactions;
  mi::Counter final_by_class[5];  // 2xx .. 6xx
  // core
  mi::Counter rcv_requests, rcv_replies, fwd_requests, fwd_replies, drop_requests, drop_replies,
      err_requests, err_replies, bad_msg_hdr;
  // sl: replies sipd sends without a transaction
  mi::Counter sl_replies_by_class[6], sl_sent_replies, sl_sent_err_replies, sl_received_acks;
  // tm:inuse_transactions (counted by the TransactionTable)
  mi::Counter inuse;
  // tm:overload_refused (not in 1.11): new INVITEs refused with 503 under overload
  mi::Counter overload_refused;
};

// Registers group `tm` (spec 7.5: received_replies, relayed_replies, local_replies,
// UAS_transactions, UAC_transactions, 2xx..6xx_transactions, inuse_transactions; and
// overload_refused, which 1.11 does not have) and finds the core and sl counters the
// daemon registered (invalid if absent).
absl::StatusOr<LayerCounters> RegisterLayerStatistics(mi::StatsRegistry& stats);

class TransactionLayer {
 public:
  // CLOCK_MONOTONIC milliseconds (the same clock in every process); injectable.
  using Clock = std::function<int64_t()>;

  // Every reference must outlive the layer. `blacklist` may be null.
  TransactionLayer(LayerOptions options, TransactionTable& table, Transport& transport,
                   Router& router, const Callbacks& callbacks, LayerCounters counters, Clock clock,
                   Blacklist* blacklist);

  // One message from the transport (a datagram, or one framed TCP message). Never
  // throws.
  void HandleMessage(std::string_view bytes, const Inbound& from);
  // Sends the 503s held back from overload refusals. A UDP worker calls it before it
  // waits for the next datagram (AddSipIdleHandler, sipd/core/sip.h); without
  // that call they still leave once kRefusalBatch are held, or with the first message
  // handled kRefusalHoldMs after the oldest.
  void FlushRefusals();
  bool refusals_held() const { return !refusals_.empty(); }
  // Under overload a refused INVITE's 503 over UDP is held back and sent with others in
  // one batch (Transport::SendBatch): a refusal must cost far less than the call it
  // refuses, and a send that wakes a sleeping peer on another CPU costs as much as the
  // rest of the refusal here (bench/RESULTS.md, "Overload: 503s sent in batches").
  static constexpr size_t kRefusalBatch = 32;
  static constexpr int64_t kRefusalHoldMs = 2;
  // Timer process: runs every due timer. Returns how many ran.
  size_t RunTimers();

  // TmApi::RegisterCompletion / SendRequest.
  uint32_t RegisterCompletion(Completion fn);
  absl::StatusOr<TransactionId> SendRequest(const UacRequest& request);
  // SendRequest in two steps, so that a caller can check a request before it commits to
  // waiting for it (t_uac_dlg answers argument errors at once): Prepare checks and
  // resolves (errors as SendRequest's, nothing is created), Launch creates the
  // transaction and sends.
  struct PreparedRequest {
    UacRequest request;
    std::vector<std::string> lines;
    std::string call_id;
    uint32_t cseq = 0;
    Destination destination;
  };
  absl::StatusOr<PreparedRequest> Prepare(const UacRequest& request) const;
  absl::StatusOr<TransactionId> Launch(PreparedRequest prepared);

  // t_reply: a final (or provisional) reply to a server transaction that has no final
  // reply yet. NotFound if there is no such transaction, FailedPrecondition if it is
  // local or already answered.
  absl::Status Reply(TransactionId id, int code, std::string_view reason, std::string_view to_tag,
                     const std::vector<std::string>& headers, std::string_view body);
  // t_uac_cancel: cancels the local INVITE transaction with this Call-ID and CSeq.
  // NotFound if none is pending.
  absl::Status CancelLocal(std::string_view call_id, uint32_t cseq);

  // Enables sip_trace-style recording (nullptr = off). Set before the fork.
  void set_tracer(Tracer* tracer) { tracer_ = tracer; }
  // Overload control: while *flag is true (set by whoever watches the receive queues, in
  // shared memory), a new INVITE outside a dialog is refused statelessly with
  // `503 Service Unavailable` + `Retry-After`, so that the calls in progress (their
  // replies, ACKs, BYEs) keep the capacity. Set before the fork; nullptr = never. Such an
  // INVITE is refused the same way, flag or not, when it waited in the receive queue
  // longer than LayerOptions::overload_delay_ms.
  void set_overload_flag(const std::atomic<bool>* flag) { overloaded_ = flag; }
  const LayerOptions& options() const { return options_; }
  TransactionTable& table() { return table_; }
  int64_t now() const { return clock_(); }

  // Implementation details shared by the .cc helpers.
  struct Work;

 private:
  class LocalRequestImpl;

  // Whether a new INVITE from `from` is to be refused (the overload flag, or it waited
  // longer than overload_delay_ms in the receive queue).
  bool Overloaded(const Inbound& from) const;
  void HandleRequest(const SipMessage& request, const Inbound& from);
  void HandleReply(const SipMessage& reply, const Inbound& from);
  void HandleAck(const SipMessage& ack, const Inbound& from);
  void HandleCancel(const SipMessage& cancel, const Inbound& from);
  // An ACK whose To-tag is one of sipd's stateless replies' (ScanToTag, no parse): it
  // matches no transaction and is only counted.
  bool IsAckOfStatelessReply(std::string_view bytes) const;
  void HandleDefect(const SipMessage& message, const Inbound& from);
  void Relay(TransactionId id, const SipMessage& request, const Inbound& from,
             RouteDecision decision);
  void ForwardStateless(const SipMessage& request, const Inbound& from,
                        const RouteDecision& decision);
  // A final (or provisional) reply made by sipd for server transaction `id`.
  absl::Status LocalReply(TransactionId id, int code, std::string_view reason,
                          std::string_view to_tag, const std::vector<std::string>& headers,
                          std::string_view body);
  // A reply without a transaction (sl).
  void StatelessReply(const SipMessage& request, const Inbound& from, int code,
                      std::string_view reason, const std::vector<std::string>& headers = {});
  std::string StatelessReplyText(const SipMessage& request, int code, std::string_view reason,
                                 const std::vector<std::string>& headers) const;
  void CountStatelessReply(int code);
  // The stateless 503 that refuses a new INVITE under overload: held back over UDP
  // (FlushRefusals), sent at once over TCP.
  void Refuse(const SipMessage& invite, const Inbound& from);
  void RunTimer(const DueTimer& due);

  // Under the bucket lock of `cell`.
  void SendFinalUpstream(Cell& cell, std::string bytes, int code, Work& work);
  void CancelBranches(Cell& cell, Work& work);
  void CancelBranch(Cell& cell, uint32_t branch, Work& work);
  void BranchFinished(Cell& cell, uint32_t branch, int code, const SipMessage* reply, Work& work);
  void ChooseFinal(Cell& cell, Work& work);
  void EndCell(Cell& cell);
  void LocalCompletion(Cell& cell, uint32_t branch, int code, std::string_view reason,
                       bool received, Work& work);

  // After the unlock: sends, traces, callbacks, completions.
  // `received` (and `received_from`, where it came from): the reply being handled, if any.
  void Finish(Work& work, const SipMessage* received, const Peer* received_from = nullptr);
  // Sends; a failure is logged (debug) and returned.
  absl::Status SendLogged(const Destination& to, std::string_view bytes);
  void SendNow(const Destination& to, std::string_view bytes);
  // Under the bucket lock: sends at once (UDP and TCP sends never wait), so that the
  // order of two sends made under one transaction's lock is the order on the wire;
  // Finish() traces it.
  void SendUnderLock(const Destination& to, std::string bytes, Work& work);
  void Trace(bool incoming, std::string_view bytes, const Destination& peer);

  // The To-tag of a reply to the transaction (or request) `key`: "<prefix>.<8 hex>", and
  // of a stateless reply "<prefix>.s<8 hex>", whose ACK needs no parse (HandleMessage).
  std::string ToTag(std::string_view key) const;
  std::string StatelessToTag(std::string_view key) const;
  const LocalSocket* SocketFor(const Destination& to) const;
  std::string ViaFor(const Destination& to, std::string_view branch) const;
  bool IsLoop(const SipMessage& request) const;

  LayerOptions options_;
  TransactionTable& table_;
  Transport& transport_;
  Router& router_;
  const Callbacks& callbacks_;
  LayerCounters counters_;
  Clock clock_;
  Blacklist* blacklist_;
  Tracer* tracer_ = nullptr;
  const std::atomic<bool>* overloaded_ = nullptr;
  std::vector<Completion> completions_;
  // How sipd's To-tags start: "<to_tag_prefix>." and, for stateless replies,
  // "<to_tag_prefix>.s" (ToTag, StatelessToTag; the ACK checks when a prefix is set).
  const std::string tag_start_;
  const std::string stateless_tag_start_;
  // This process's 503s held back (Refuse), and when the oldest was.
  std::vector<std::pair<Destination, std::string>> refusals_;
  int64_t refusals_since_ms_ = 0;
};

// Where a URI leads (RFC 3263 without NAPTR/SRV): ;transport= (udp by default; tcp; no
// TLS), the host (numeric, or a name `resolver` resolves: resolver.h, bounded in time and
// cached; with no resolver a name is NotFound), the port (5060 by default), and the
// first local socket of that protocol and address family (or `preferred_socket`, a
// "proto:IP:PORT" name, when it fits). Of a name's addresses, the first of a family sipd
// has a socket of that protocol for.
absl::StatusOr<Destination> ResolveUri(const SipUri& uri, const std::vector<LocalSocket>& sockets,
                                       HostResolver* resolver,
                                       std::string_view preferred_socket = {});

}  // namespace sipd::tm
