#include <linux/sock_diag.h>
#include <osipparser2/osip_parser.h>
#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "registry/status_macros.h"
#include "sipd/core/clock.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip.h"
#include "sipd/core/sip_receiver.h"
#include "sipd/core/sip_transport.h"
#include "sipd/core/sip_transport_impl.h"
#include "sipd/modules/registrar/registrar.h"
#include "sipd/modules/tm/blacklist.h"
#include "sipd/modules/tm/overload_detector.h"
#include "sipd/modules/tm/proxy.h"
#include "sipd/modules/tm/sip_builder.h"
#include "sipd/modules/tm/tm.h"
#include "sipd/modules/tm/tm_api.h"
#include "sipd/modules/tm/transaction_layer.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "spdlog/spdlog.h"

namespace sipd::tm {
namespace {

using mi::Call;
using Arity = mi::ParamSpec::Arity;

absl::string_view Absl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// tm's Transport on top of the core's SipTransport.
class CoreTransport final : public Transport {
 public:
  explicit CoreTransport(SipTransport& transport) : transport_(transport) {}
  absl::Status Send(const Destination& to, std::string_view bytes) override {
    return transport_.Send(ToSip(to), bytes);
  }
  void SendBatch(const std::vector<std::pair<Destination, std::string>>& messages) override {
    std::vector<SipOutbound> out;
    out.reserve(messages.size());
    for (const auto& [to, bytes] : messages) out.push_back(SipOutbound{ToSip(to), bytes});
    transport_.SendBatch(out);
  }

 private:
  static SipDestination ToSip(const Destination& to) {
    SipDestination d;
    d.proto = to.proto == Proto::kTcp ? SipProto::kTcp : SipProto::kUdp;
    d.address = SipAddress::FromSockaddr(&to.address.generic, to.length());
    d.socket = to.socket;
    d.connection = to.connection;
    return d;
  }

  SipTransport& transport_;
};

Destination FromSource(const SipSource& source) {
  Destination d;
  d.proto = source.proto == SipProto::kTcp ? Proto::kTcp : Proto::kUdp;
  d.socket = static_cast<uint16_t>(std::max(source.socket, 0));
  d.connection = source.connection;
  std::memcpy(&d.address, &source.peer.storage,
              std::min<size_t>(sizeof(d.address), sizeof(source.peer.storage)));
  return d;
}

// The registrar's view of a REGISTER (sipd/core/sip.h), parsed by libosip2 on demand;
// Reply goes through tm's server transaction.
class RegisterRequest final : public SipRequest {
 public:
  RegisterRequest(LocalRequest& local, osip_message_t* message)
      : local_(local),
        message_(message),
        method_(local.message().method_text()),
        socket_(local.inbound().peer.socket) {
    std::memcpy(&source_, &local.inbound().source.address,
                std::min(sizeof(source_), sizeof(local.inbound().source.address)));
  }
  osip_message_t* message() override { return message_; }
  const std::string& method() const override { return method_; }
  std::string_view raw() const override { return local_.message().raw(); }
  const sockaddr_storage& source() const override { return source_; }
  std::string source_ip() const override { return local_.inbound().peer.ip; }
  uint16_t source_port() const override { return local_.inbound().peer.port; }
  const std::string& socket() const override { return socket_; }
  absl::Status Reply(int code, std::string_view reason,
                     const std::vector<std::string>& extra_headers,
                     std::string_view body) override {
    return local_.Reply(code, reason, extra_headers, body);
  }
  // 'T' + "index:label": answered later through the server transaction (TmApi::Reply).
  absl::StatusOr<std::string> Defer() override {
    absl::StatusOr<TransactionId> id = local_.Defer();
    if (!id.ok()) return id.status();
    return absl::StrCat("T", id->ToString());
  }

 private:
  LocalRequest& local_;
  osip_message_t* message_;
  std::string method_;
  std::string socket_;
  sockaddr_storage source_{};
};

struct OsipDeleter {
  void operator()(osip_message_t* m) const { osip_message_free(m); }
};

std::optional<int64_t> ParseInt(std::string_view text) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// A header block as the MI passes it: "." = none; lines split at LF (CR dropped).
std::vector<std::string> HeaderLines(std::string_view block) {
  std::vector<std::string> out;
  if (block == ".") return out;
  for (absl::string_view line : absl::StrSplit(Absl(block), '\n')) {
    while (!line.empty() && (line.back() == '\r')) line.remove_suffix(1);
    if (!line.empty()) out.emplace_back(line);
  }
  return out;
}

// The five nodes of a t_uac_dlg reply (spec 8.3).
mi::Reply UacDlgReply(const UacResult& r) {
  mi::Reply reply;
  reply.root.AddKid("", absl::StrCat(r.code, " ", Absl(r.reason)));
  std::string target = ".";
  std::string next_hop = ".";
  std::string route = ".";
  if (r.reply != nullptr && r.code >= 200 && r.code < 300) {
    auto contacts = r.reply->Contacts();
    if (contacts.ok() && !contacts->empty() && !(*contacts)[0].star) {
      target = std::string((*contacts)[0].uri.text);
    }
    auto rr = r.reply->RecordRoutes();
    if (rr.ok() && !rr->empty()) {
      std::vector<std::string> set;
      for (auto it = rr->rbegin(); it != rr->rend(); ++it) set.emplace_back(it->text);
      route = absl::StrCat("Route: ", absl::StrJoin(set, ", "));
      const NameAddr& first = rr->back();
      if (first.uri.lr()) {
        next_hop = std::string(first.uri.text);
      } else {
        next_hop = std::string(first.uri.text);
        if (target != ".") absl::StrAppend(&route, "<", target, ">");  // strict router
      }
    } else if (target != ".") {
      next_hop = target;
    }
  }
  reply.root.AddKid("", target);
  reply.root.AddKid("", next_hop);
  reply.root.AddKid("", route);
  reply.root.AddKid("", r.reply != nullptr ? std::string(r.reply->after_start_line()) : ".");
  return reply;
}

class TmModule final : public Module, public TmApi {
 public:
  // `clock_ms`: monotonic milliseconds (tests and fuzz targets pass a fake clock).
  explicit TmModule(std::function<int64_t()> clock_ms = [] { return MonotonicMs(); })
      : clock_(std::move(clock_ms)) {}

  std::string_view name() const override { return "tm"; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    const int64_t* n = std::get_if<int64_t>(&value);
    const std::string* s = std::get_if<std::string>(&value);
    auto bad = [&](std::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("tm: parameter ", Absl(param), " must be ", Absl(what)));
    };
    auto ms = [&](int64_t* out, int64_t scale, int64_t min, int64_t max) {
      if (n == nullptr || *n < min || *n > max) {
        return bad(absl::StrCat("an integer in [", min, ", ", max, "]"));
      }
      *out = *n * scale;
      return absl::OkStatus();
    };
    if (param == "T1_timer") return ms(&layer_options_.t1_ms, 1, 10, 60000);
    if (param == "T2_timer") return ms(&layer_options_.t2_ms, 1, 10, 600000);
    if (param == "fr_timeout") return ms(&layer_options_.fr_timeout_ms, 1000, 1, 3600);
    if (param == "fr_inv_timeout") return ms(&layer_options_.fr_inv_timeout_ms, 1000, 1, 3600);
    if (param == "wt_timer") return ms(&layer_options_.wait_ms, 1000, 0, 3600);
    if (param == "max_inv_lifetime") {
      return ms(&layer_options_.max_inv_lifetime_ms, 1, 100, 3600000);
    }
    if (param == "max_noninv_lifetime") {
      return ms(&layer_options_.max_noninv_lifetime_ms, 1, 100, 3600000);
    }
    if (param == "bl_timeout") return ms(&layer_options_.blacklist_ms, 1000, 0, 86400);
    if (param == "bl_size") {
      int64_t size = 0;
      SIPD_RETURN_IF_ERROR(ms(&size, 1, 1, 65536));
      bl_size_ = static_cast<size_t>(size);
      return absl::OkStatus();
    }
    if (param == "overload_delay") {
      return ms(&layer_options_.overload_delay_ms, 1, 0, 60000);
    }
    if (param == "overload_queue") {
      int64_t percent = 0;
      SIPD_RETURN_IF_ERROR(ms(&percent, 1, 0, 100));
      overload_queue_percent_ = static_cast<int>(percent);
      return absl::OkStatus();
    }
    if (param == "overload_sustain") {
      return ms(&overload_sustain_ms_, 1, 0, 10000);
    }
    if (std::optional<absl::Status> dns = SetResolverParam(resolver_options_, param, n, s);
        dns.has_value()) {
      if (dns->ok()) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("tm: parameter ", Absl(param), " ", dns->message()));
    }
    if (param == "relay_to_any") {
      if (n == nullptr || (*n != 0 && *n != 1)) return bad("0 or 1");
      proxy_options_.relay_to_any = *n == 1;
      return absl::OkStatus();
    }
    if (param == "domains") {
      if (s == nullptr) return bad("a string of comma-separated domains");
      for (absl::string_view d : absl::StrSplit(*s, ',', absl::SkipWhitespace())) {
        std::string domain(absl::StripAsciiWhitespace(d));
        if (!domain.empty()) proxy_options_.domains.push_back(absl::AsciiStrToLower(domain));
      }
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat("tm: unknown parameter ", Absl(param)));
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    SipTransport* sip = core.sip_transport();
    if (sip == nullptr) return absl::FailedPreconditionError("tm: this core has no SIP transport");
    std::vector<LocalSocket> sockets;
    for (size_t i = 0; i < sip->sockets().size(); ++i) {
      const SipSocket& s = sip->sockets()[i];
      sockets.push_back(LocalSocket{s.proto == SipProto::kTcp ? Proto::kTcp : Proto::kUdp,
                                    s.address.ip(), s.address.port(), static_cast<uint16_t>(i)});
    }
    if (sockets.empty()) return absl::FailedPreconditionError("tm: no SIP listen socket");
    layer_options_.sockets = sockets;
    resolver_ = std::make_unique<HostResolver>(resolver_options_, clock_);
    layer_options_.resolver = resolver_.get();
    proxy_options_.resolver = resolver_.get();
    layer_options_.server = "sipd";
    char prefix[9];
    std::snprintf(prefix, sizeof(prefix), "%08x", static_cast<unsigned>(std::random_device{}()));
    layer_options_.to_tag_prefix = prefix;
    proxy_options_.sockets = sockets;

    SIPD_ASSIGN_OR_RETURN(LayerCounters counters, RegisterLayerStatistics(core.stats()));
    SIPD_ASSIGN_OR_RETURN(table_, TransactionTable::Create(core.shm(), counters.inuse, clock_()));
    SIPD_ASSIGN_OR_RETURN(blacklist_, Blacklist::Create(core.shm(), bl_size_));
    transport_ = std::make_unique<CoreTransport>(*sip);

    // Local handlers: REGISTER -> the registrar (found at first use: it may be loaded
    // after tm).
    absl::flat_hash_map<std::string, LocalHandler> handlers;
    handlers["REGISTER"] = [this](LocalRequest& request) { HandleRegister(request); };
    std::vector<std::string> allow = {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"};
    if (core.FindModule("registrar") != nullptr) allow.push_back("REGISTER");
    proxy_options_.allow_header = absl::StrCat("Allow: ", absl::StrJoin(allow, ", "));
    proxy_options_.options_headers = {proxy_options_.allow_header, "Accept: application/sdp",
                                      "Supported: "};
    proxy_ = std::make_unique<Proxy>(
        proxy_options_,
        [this](std::string_view user, std::string_view host) { return Lookup(user, host); },
        std::move(handlers));
    layer_ = std::make_unique<TransactionLayer>(layer_options_, *table_, *transport_, *proxy_,
                                                callbacks_, counters, clock_, blacklist_.get());
    if (tracer_ != nullptr) layer_->set_tracer(tracer_);
    mi_completion_ = layer_->RegisterCompletion(
        [this](const UacResult& result, std::string_view data) { CompleteMi(result, data); });

    // Overload control. By age: the workers need each datagram's arrival time. By queue:
    // the timer process watches the UDP receive queues.
    std::vector<const UdpListener*> udp;
    if (auto* impl = dynamic_cast<SipTransportImpl*>(sip); impl != nullptr) {
      for (size_t i = 0; i < sip->sockets().size(); ++i) {
        if (const UdpListener* l = impl->udp(static_cast<int>(i)); l != nullptr) udp.push_back(l);
      }
    }
    if (layer_options_.overload_delay_ms > 0) {
      for (const UdpListener* l : udp) l->EnableReceiveTimestamps();
    }
    overloaded_ = core.shm().Construct<std::atomic<bool>>(false);
    SIPD_RETURN_IF_ERROR(core.stats().AddFunction(
        "tm", "overloaded", [flag = overloaded_]() -> uint64_t { return flag->load() ? 1 : 0; },
        "1 while new INVITEs are refused because the UDP receive queues stay full "
        "(overload_queue; not in 1.11)"));
    if (overload_queue_percent_ > 0) {
      for (const UdpListener* l : udp) udp_fds_.push_back(l->fd());
      layer_->set_overload_flag(overloaded_);
      detector_.emplace(overload_queue_percent_, overload_sustain_ms_);
    }
    core.SetSipMessageHandler([this](const SipInbound& inbound) { Handle(inbound); });
    if (overload_queue_percent_ > 0 || layer_options_.overload_delay_ms > 0) {
      // The 503s a worker held back under overload leave before it waits again.
      AddSipIdleHandler([this] { return layer_->refusals_held(); },
                        [this] { layer_->FlushRefusals(); });
    }
    // REGISTERs the registrar answers after usrloc's group commit, from any process.
    RegisterDeferredReplySender(
        'T', [this](std::string_view token, int code, std::string_view reason,
                    const std::vector<std::string>& headers, std::string_view body) {
          std::optional<TransactionId> id = TransactionId::Parse(token.substr(1));
          if (!id) return absl::InvalidArgumentError("malformed deferred reply token");
          return Reply(*id, code, reason, headers, body);
        });
    core.AddTimer("tm-utimer", std::chrono::milliseconds(TransactionTable::kTickMs), [this] {
      WatchQueues();
      layer_->RunTimers();
    });
    SIPD_RETURN_IF_ERROR(RegisterCommands(core));
    spdlog::info("tm: T1 {} ms, T2 {} ms, fr_timeout {} s, fr_inv_timeout {} s, wt_timer {} s",
                 layer_options_.t1_ms, layer_options_.t2_ms, layer_options_.fr_timeout_ms / 1000,
                 layer_options_.fr_inv_timeout_ms / 1000, layer_options_.wait_ms / 1000);
    return absl::OkStatus();
  }

  // Timer process: the overload flag follows the fullest UDP receive queue
  // (overload_detector.h: on once it stayed above overload_queue % for overload_sustain
  // ms, off below a third of it).
  void WatchQueues() {
    if (udp_fds_.empty() || !detector_.has_value()) return;
    double fullest = 0;
    for (int fd : udp_fds_) {
      uint32_t info[SK_MEMINFO_VARS] = {};
      socklen_t length = sizeof(info);
      if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, info, &length) != 0) continue;
      const uint32_t limit = info[SK_MEMINFO_RCVBUF];
      if (limit > 0) fullest = std::max(fullest, 100.0 * info[SK_MEMINFO_RMEM_ALLOC] / limit);
    }
    const int64_t now_ms = MonotonicMs();
    const bool was = detector_->on();
    const int64_t above_for = detector_->above_for_ms(now_ms);
    const bool now = detector_->Sample(fullest, now_ms);
    if (now == was) return;
    overloaded_->store(now);
    if (now) {
      spdlog::warn(
          "tm: overloaded (UDP receive queue {:.0f}% full, at or above {}% for {} ms): new "
          "INVITEs get 503",
          fullest, overload_queue_percent_, above_for);
    } else {
      spdlog::info("tm: no longer overloaded");
    }
  }

  // --- TmApi ---
  Callbacks& callbacks() override { return callbacks_; }
  uint32_t RegisterCompletion(std::string name, Completion fn) override {
    if (layer_ == nullptr) {
      spdlog::error("tm: completion {} registered before tm's Init (load tm first)", name);
      return 0;
    }
    return layer_->RegisterCompletion(std::move(fn));
  }
  absl::StatusOr<TransactionId> SendRequest(const UacRequest& request) override {
    if (layer_ == nullptr) return absl::FailedPreconditionError("tm is not initialised");
    return layer_->SendRequest(request);
  }
  absl::Status Reply(TransactionId id, int code, std::string_view reason,
                     const std::vector<std::string>& headers, std::string_view body) override {
    if (layer_ == nullptr) return absl::FailedPreconditionError("tm is not initialised");
    return layer_->Reply(id, code, reason, {}, headers, body);
  }
  void SetTracer(Tracer* tracer) override {
    tracer_ = tracer;
    if (layer_ != nullptr) layer_->set_tracer(tracer);
  }

 private:
  void Handle(const SipInbound& inbound) {
    Inbound in;
    in.source = FromSource(inbound.source);
    in.queued_us = inbound.queued_us;
    in.peer.proto = in.source.proto;
    in.peer.ip = inbound.source.peer.ip();
    in.peer.port = inbound.source.peer.port();
    in.peer.connection = inbound.source.connection;
    if (inbound.source.socket >= 0 &&
        static_cast<size_t>(inbound.source.socket) < core_->listen().size()) {
      in.peer.socket = core_->listen()[static_cast<size_t>(inbound.source.socket)];
    }
    layer_->HandleMessage(inbound.bytes, in);
  }

  void HandleRegister(LocalRequest& request) {
    auto* module = dynamic_cast<registrar::RegistrarModule*>(core_->FindModule("registrar"));
    if (module == nullptr) {
      (void)request.Reply(405, "Method Not Allowed", {proxy_options_.allow_header});
      return;
    }
    osip_message_t* raw = nullptr;
    if (osip_message_init(&raw) != 0 || raw == nullptr) {
      (void)request.Reply(500, "Server Internal Error");
      return;
    }
    std::unique_ptr<osip_message_t, OsipDeleter> message(raw);
    const std::string_view bytes = request.message().raw();
    if (osip_message_parse(raw, bytes.data(), bytes.size()) != 0) {
      (void)request.Reply(400, "Bad Request");
      return;
    }
    RegisterRequest adapter(request, raw);
    module->registrar().Handle(adapter);
  }

  std::optional<std::vector<Binding>> Lookup(std::string_view user, std::string_view host) {
    auto* module = dynamic_cast<usrloc::UsrlocModule*>(core_->FindModule("usrloc"));
    if (module == nullptr) return std::nullopt;
    usrloc::Usrloc& ul = module->usrloc();
    usrloc::LocationTable* table = ul.FindTable(usrloc::kDefaultTable);
    if (table == nullptr) return std::nullopt;
    const std::string aor =
        ul.options().use_domain ? absl::StrCat(Absl(user), "@", Absl(host)) : std::string(user);
    std::optional<usrloc::AorSnapshot> snapshot = table->Get(aor);
    if (!snapshot) return std::nullopt;
    const int64_t now = ul.Now();
    std::vector<Binding> out;
    for (const usrloc::ContactInfo& c : snapshot->contacts) {
      out.push_back(Binding{.uri = c.uri,
                            .received = c.received,
                            .path = c.path,
                            .socket = c.socket,
                            .q = c.q,
                            .methods = c.methods,
                            .valid = c.Valid(now)});
    }
    return out;
  }

  // --- MI ---

  absl::Status RegisterCommands(Core& core) {
    std::vector<mi::Command::Spec> specs;
    specs.push_back(
        {.name = "t_uac_dlg",
         .module = "tm",
         .params = {{"method", Arity::kRequired, "SIP method"},
                    {"ruri", Arity::kRequired, "Request-URI"},
                    {"next_hop", Arity::kRequired, "next hop URI or ."},
                    {"socket", Arity::kRequired, "[proto:]host[:port] of a local socket or ."},
                    {"headers", Arity::kRequired, "CRLF-separated headers (From, To, ...) or ."},
                    {"body", Arity::kOptional, "message body (needs Content-Type)"}},
         .flags = mi::kAsync | mi::kMutating,
         .handler = [this](Call& call) { return UacDlg(call); }});
    specs.push_back({.name = "t_uac_cancel",
                     .module = "tm",
                     .params = {{"callid", Arity::kRequired, "Call-ID of the INVITE"},
                                {"cseq", Arity::kRequired, "CSeq number of the INVITE"}},
                     .flags = mi::kMutating,
                     .handler = [this](Call& call) { return UacCancel(call); }});
    specs.push_back(
        {.name = "t_hash", .module = "tm", .flags = mi::kNoInput, .handler = [this](Call& call) {
           return Hash(call);
         }});
    specs.push_back({.name = "t_reply",
                     .module = "tm",
                     .params = {{"code", Arity::kRequired, "reply code"},
                                {"reason", Arity::kRequired, "reason phrase"},
                                {"trans_id", Arity::kRequired, "index:label"},
                                {"to_tag", Arity::kRequired, "To tag or ."},
                                {"new_headers", Arity::kRequired, "extra headers or ."},
                                {"body", Arity::kOptional, "body"}},
                     .flags = mi::kMutating,
                     .handler = [this](Call& call) { return TReply(call); }});
    specs.push_back({.name = "list_blacklists",
                     .module = "blacklists",
                     .help = "lists all the defined (static or learned) blacklists",
                     .flags = mi::kNoInput,
                     .handler = [this](Call& call) { return ListBlacklists(call); }});
    for (auto& spec : specs) SIPD_RETURN_IF_ERROR(core.mi().Register(std::move(spec)));
    return absl::OkStatus();
  }

  absl::Status UacDlg(Call& call) {
    UacRequest request;
    request.method = call.arg(0);
    request.request_uri = call.arg(1);
    request.next_hop = call.arg(2) == "." ? "" : call.arg(2);
    request.socket = call.arg(3) == "." ? "" : call.arg(3);
    const std::vector<std::string> lines = HeaderLines(call.arg(4));
    request.headers = absl::StrJoin(lines, "\r\n");
    if (call.arg_count() > 5) request.body = call.arg(5);
    request.completion = mi_completion_;
    absl::StatusOr<TransactionLayer::PreparedRequest> prepared = layer_->Prepare(request);
    if (!prepared.ok()) {
      const std::string text(prepared.status().message());
      if (prepared.status().code() == absl::StatusCode::kUnavailable) {
        call.reply().root.AddKid("", "478 Unresolvable destination (478/MI/UAC)");
        return absl::OkStatus();
      }
      const uint32_t code =
          prepared.status().code() == absl::StatusCode::kNotFound || text == "Invalid local socket"
              ? 404
              : 400;
      // 1.11 sends two of these reasons one byte short on FIFO/datagram (spec 1.3).
      const size_t cut =
          (text == "Content-Type missing" || text == "Content-Length disallowed") ? 1 : 0;
      call.reply() = mi::Reply::ErrorTruncatedOnText(code, text, cut);
      return absl::OkStatus();
    }
    absl::StatusOr<mi::AsyncTicket> ticket = call.GoAsync();
    if (!ticket.ok() && !call.async_refused()) {
      call.reply() = mi::Reply::Error(503, std::string(ticket.status().message()));
      return absl::OkStatus();
    }
    // Without a ticket (202 Accepted) the request still goes; nobody waits for it.
    prepared->request.completion_data = ticket.ok() ? ticket->ToString() : "";
    absl::StatusOr<TransactionId> id = layer_->Launch(*std::move(prepared));
    if (!id.ok() && ticket.ok()) {
      mi::Reply failed;
      failed.root.AddKid("", "477 Send failed (477/MI/UAC)");
      core_->async().Complete(*ticket, &failed);
    }
    return absl::OkStatus();
  }

  void CompleteMi(const UacResult& result, std::string_view data) {
    std::optional<mi::AsyncTicket> ticket = mi::AsyncTicket::Parse(data);
    if (!ticket || !ticket->valid()) return;
    mi::Reply reply = UacDlgReply(result);
    if (!core_->async().Complete(*ticket, &reply)) {
      spdlog::debug("tm: the MI caller of t_uac_dlg {} is gone", ticket->ToString());
    }
  }

  absl::Status UacCancel(Call& call) {
    std::optional<int64_t> cseq = ParseInt(call.arg(1));
    if (!cseq || *cseq < 0 || *cseq > 0xFFFFFFFFll ||
        !layer_->CancelLocal(call.arg(0), static_cast<uint32_t>(*cseq)).ok()) {
      call.reply() = mi::Reply::Error(481, "No such transaction");
    }
    return absl::OkStatus();
  }

  absl::Status Hash(Call& call) {
    mi::Node& root = call.reply().root;
    root.kids.reserve(kBuckets);
    for (uint32_t i = 0; i < kBuckets; ++i) {
      root.AddKid("", absl::StrCat(i))
          .AddAttribute("Current", absl::StrCat(table_->current(i)))
          .AddAttribute("Total", absl::StrCat(table_->total(i)));
    }
    return absl::OkStatus();
  }

  absl::Status TReply(Call& call) {
    std::optional<int64_t> code = ParseInt(call.arg(0));
    if (!code || *code < 100 || *code >= 700) {
      call.reply() = mi::Reply::Error(400, "Invalid reply code");
      return absl::OkStatus();
    }
    const std::string& trans = call.arg(2);
    const size_t colon = trans.find(':');
    if (colon == std::string::npos) {
      call.reply() = mi::Reply::Error(400, "Invalid trans_id");
      return absl::OkStatus();
    }
    std::optional<int64_t> index = ParseInt(std::string_view(trans).substr(0, colon));
    if (!index || *index < 0 || *index >= kBuckets) {
      call.reply() = mi::Reply::Error(400, "Invalid index in trans_id");
      return absl::OkStatus();
    }
    std::optional<int64_t> label = ParseInt(std::string_view(trans).substr(colon + 1));
    if (!label || *label <= 0 || *label > 0xFFFFFFFFll) {
      call.reply() = mi::Reply::Error(400, "Invalid label in trans_id");
      return absl::OkStatus();
    }
    // The reason, To-tag and headers are checked by TransactionLayer::Reply (nothing
    // that could end a line): refused there, they get 500 "Reply failed" below.
    const std::string& reason = call.arg(1);
    const std::string to_tag = call.arg(3) == "." ? "" : call.arg(3);
    const std::vector<std::string> headers = HeaderLines(call.arg(4));
    const std::string body = call.arg_count() > 5 ? call.arg(5) : "";
    absl::Status status =
        layer_->Reply(TransactionId{static_cast<uint32_t>(*index), static_cast<uint32_t>(*label)},
                      static_cast<int>(*code), reason, to_tag, headers, body);
    if (status.code() == absl::StatusCode::kNotFound) {
      call.reply() = mi::Reply::Error(404, "Transaction not found");
    } else if (!status.ok()) {
      call.reply() = mi::Reply::Error(500, "Reply failed");
    }
    return absl::OkStatus();
  }

  absl::Status ListBlacklists(Call& call) {
    const int64_t now = clock_();
    mi::Node& list = call.reply().root.AddKid("List", "failed_destinations");
    list.AddAttribute("owner", "0").AddAttribute("flags", "6");  // BL_DO_EXPIRE|BL_BY_DEFAULT
    for (const Blacklist::Entry& e : blacklist_->Snapshot(now)) {
      mi::Node& rule = list.AddKid("Rule");
      rule.AddAttribute("flags", "0");
      const bool v6 = e.destination.address.generic.sa_family == AF_INET6;
      rule.AddKid("IP", e.destination.ip());
      rule.AddKid("Mask", v6 ? "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" : "255.255.255.255");
      rule.AddKid("Proto", e.destination.proto == Proto::kTcp ? "2" : "1");
      rule.AddKid("Port", absl::StrCat(e.destination.port()));
      rule.AddKid("Expire", absl::StrCat((e.expires_ms - now + 999) / 1000));
    }
    return absl::OkStatus();
  }

  std::function<int64_t()> clock_;
  Core* core_ = nullptr;
  LayerOptions layer_options_;
  ProxyOptions proxy_options_;
  size_t bl_size_ = 256;
  ResolverOptions resolver_options_;
  std::unique_ptr<HostResolver> resolver_;
  Callbacks callbacks_;
  std::unique_ptr<TransactionTable> table_;
  std::unique_ptr<Blacklist> blacklist_;
  std::unique_ptr<CoreTransport> transport_;
  std::unique_ptr<Proxy> proxy_;
  std::unique_ptr<TransactionLayer> layer_;
  uint32_t mi_completion_ = 0;
  int overload_queue_percent_ = 30;
  int64_t overload_sustain_ms_ = 100;
  std::optional<OverloadDetector> detector_;  // timer process; set when overload_queue > 0
  std::atomic<bool>* overloaded_ = nullptr;
  std::vector<int> udp_fds_;
  Tracer* tracer_ = nullptr;
};

}  // namespace
}  // namespace sipd::tm

namespace sipd {
std::unique_ptr<Module> NewTmModule() { return std::make_unique<tm::TmModule>(); }
std::unique_ptr<Module> NewTmModuleWithClock(std::function<int64_t()> clock_ms) {
  return std::make_unique<tm::TmModule>(std::move(clock_ms));
}
}  // namespace sipd
