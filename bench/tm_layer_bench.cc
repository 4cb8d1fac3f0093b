// tm's transaction layer in one process, without sockets: what sipd's own code costs
// per call, accepted or refused under overload (Google Benchmark). Results:
// bench/RESULTS.md, section "Overload: what a refusal costs inside sipd".
//
//   tm_layer_bench [--benchmark_repetitions=N] [--benchmark_filter=...]
//
// The messages are sipp's (tests/sip/uac_call.xml, uas_call.xml): INVITE with SDP,
// 100/180/200 from the callee, ACK, BYE, 200. The transport keeps nothing, the clock is
// fixed (no timer runs), so one time unit is the layer's work for one call:
// - AcceptedCall: INVITE -> 100 + relay; 180, 200 relayed; ACK and BYE relayed
//   statelessly / statefully, 200 for the BYE relayed (7 messages in, 8 out);
// - RefusedCall: the overload flag is up; INVITE -> stateless 503, its ACK absorbed.
// System calls come on top (the pinned UDP echo floor is ~6 us per receive + send).
#include <atomic>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "registry/statistics.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip_receiver.h"
#include "sipd/modules/tm/blacklist.h"
#include "sipd/modules/tm/transaction_layer.h"
#include "spdlog/spdlog.h"

namespace sipd::tm {
namespace {

// Keeps what was sent (the bench clears it every batch).
class KeepTransport final : public Transport {
 public:
  absl::Status Send(const Destination&, std::string_view bytes) override {
    sent.emplace_back(bytes);
    return absl::OkStatus();
  }
  std::vector<std::string> sent;
};

class RelayAll final : public Router {
 public:
  RouteDecision Route(const SipMessage& request, const Inbound&) override {
    RouteDecision d;
    if (!request.to_tag().empty()) {
      d.kind = RouteDecision::Kind::kRelay;  // in dialog: to the callee's contact
    } else {
      d.kind = RouteDecision::Kind::kRelay;
      d.record_route = true;
    }
    Destination to;
    (void)MakeDestination(Proto::kUdp, "127.0.0.1", 5070, &to);
    d.targets.push_back(Target{"sip:bob@127.0.0.1:5070", to, {}});
    return d;
  }
  bool IsMe(std::string_view host, uint16_t port) const override {
    return host == "127.0.0.1" && port == 5060;
  }
};

struct World {
  World() {
    spdlog::set_level(spdlog::level::off);
    shm = std::move(SharedMemory::Create(64u << 20).value());
    cells = static_cast<std::atomic<uint64_t>*>(shm->Allocate(sizeof(std::atomic<uint64_t>) * 256));
    for (int i = 0; i < 256; ++i) new (&cells[i]) std::atomic<uint64_t>(0);
    stats = std::make_unique<mi::StatsRegistry>(std::span<std::atomic<uint64_t>>(cells, 256));
    (void)RegisterCoreStats(
        *stats, [] { return uint64_t{0}; }, sip_counters);
    (void)RegisterSlStats(*stats, sip_counters);
    auto counters = RegisterLayerStatistics(*stats);
    table = std::move(TransactionTable::Create(*shm, counters->inuse, now).value());
    blacklist = std::move(Blacklist::Create(*shm, 16).value());
    LayerOptions options;
    options.sockets = {LocalSocket{Proto::kUdp, "127.0.0.1", 5060, 0}};
    options.to_tag_prefix = std::string(1, 't');  // not = "t": GCC 12 -Wrestrict false positive
    layer = std::make_unique<TransactionLayer>(
        options, *table, transport, router, callbacks, *counters, [this] { return now; },
        blacklist.get());
    overloaded = static_cast<std::atomic<bool>*>(shm->Allocate(sizeof(std::atomic<bool>)));
    new (overloaded) std::atomic<bool>(false);
    layer->set_overload_flag(overloaded);
  }

  Inbound From(uint16_t port) const {
    Inbound in;
    in.peer = Peer{Proto::kUdp, "127.0.0.1", port, "udp:127.0.0.1:5060", 0};
    (void)MakeDestination(Proto::kUdp, "127.0.0.1", port, &in.source);
    return in;
  }

  int64_t now = 1'000'000;
  std::unique_ptr<SharedMemory> shm;
  std::atomic<uint64_t>* cells = nullptr;
  std::unique_ptr<mi::StatsRegistry> stats;
  SipCounters sip_counters;
  std::unique_ptr<TransactionTable> table;
  std::unique_ptr<Blacklist> blacklist;
  KeepTransport transport;
  RelayAll router;
  Callbacks callbacks;
  std::unique_ptr<TransactionLayer> layer;
  std::atomic<bool>* overloaded = nullptr;
};

constexpr absl::string_view kSdp =
    "v=0\r\no=alice 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

std::string Invite(uint64_t n) {
  return absl::StrCat(
      "INVITE sip:bob0@127.0.0.1:5060 SIP/2.0\r\n"
      "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-4711-",
      n,
      "-0\r\n"
      "From: sipp <sip:alice@127.0.0.1:5062>;tag=4711SIPpTag00",
      n,
      "\r\n"
      "To: <sip:bob0@127.0.0.1:5060>\r\n"
      "Call-ID: ",
      n,
      "-4711@127.0.0.1\r\n"
      "CSeq: 1 INVITE\r\n"
      "Contact: <sip:alice@127.0.0.1:5062;transport=UDP>\r\n"
      "Max-Forwards: 70\r\n"
      "Subject: sipd proxy test\r\n"
      "Content-Type: application/sdp\r\n"
      "Content-Length: ",
      kSdp.size(), "\r\n\r\n", kSdp);
}

// The To-tag of a reply.
std::string ToTag(std::string_view reply) {
  const size_t to = reply.find("\r\nTo:");
  const size_t tag = to == std::string_view::npos ? to : reply.find(";tag=", to);
  if (tag == std::string_view::npos) return "";
  const std::string_view rest = reply.substr(tag + 5);
  return std::string(rest.substr(0, rest.find("\r\n")));
}

// Messages are built in batches outside the timed parts (pausing the timer per message
// would cost more than the message).
constexpr int64_t kBatch = 1000;

void RefusedCall(benchmark::State& state) {
  World w;
  w.overloaded->store(true);
  const Inbound caller = w.From(5062);
  uint64_t n = 0;
  std::vector<std::string> invites(kBatch), acks(kBatch);
  while (state.KeepRunningBatch(kBatch)) {
    state.PauseTiming();
    for (int64_t i = 0; i < kBatch; ++i) invites[i] = Invite(n + i);
    w.transport.sent.clear();
    state.ResumeTiming();
    for (const std::string& invite : invites) w.layer->HandleMessage(invite, caller);
    state.PauseTiming();
    for (int64_t i = 0; i < kBatch; ++i) {
      const uint64_t c = n + i;
      acks[i] = absl::StrCat(
          "ACK sip:bob0@127.0.0.1:5060 SIP/2.0\r\n"
          "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-4711-",
          c,
          "-0\r\n"
          "From: sipp <sip:alice@127.0.0.1:5062>;tag=4711SIPpTag00",
          c, "\r\nTo: <sip:bob0@127.0.0.1:5060>;tag=", ToTag(w.transport.sent[i]),
          "\r\nCall-ID: ", c,
          "-4711@127.0.0.1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    }
    state.ResumeTiming();
    for (const std::string& ack : acks) w.layer->HandleMessage(ack, caller);
    n += kBatch;
  }
  if (w.stats->Value("UAS_transactions").value_or(1) != 0 ||
      w.stats->Value("5xx_replies").value_or(0) != n) {
    state.SkipWithError("not every INVITE was refused");
  }
}
BENCHMARK(RefusedCall);

void AcceptedCall(benchmark::State& state) {
  World w;
  const Inbound caller = w.From(5062);
  const Inbound callee = w.From(5070);
  uint64_t n = 0;
  std::vector<std::string> invites(kBatch), replies(2 * kBatch), requests(2 * kBatch),
      bye_oks(kBatch);
  auto from = [](uint64_t c) {
    return absl::StrCat("sipp <sip:alice@127.0.0.1:5062>;tag=4711SIPpTag00", c);
  };
  auto call_id = [](uint64_t c) { return absl::StrCat(c, "-4711@127.0.0.1"); };
  // The Vias of a relayed request, as the UAS copies them into its replies.
  auto vias = [](std::string_view relayed) {
    const size_t start = relayed.find("\r\nVia:") + 2;
    return std::string(relayed.substr(start, relayed.find("\r\nFrom:") + 2 - start));
  };
  while (state.KeepRunningBatch(kBatch)) {
    state.PauseTiming();
    for (int64_t i = 0; i < kBatch; ++i) invites[i] = Invite(n + i);
    w.transport.sent.clear();
    state.ResumeTiming();
    for (const std::string& invite : invites) w.layer->HandleMessage(invite, caller);
    state.PauseTiming();
    for (int64_t i = 0; i < kBatch; ++i) {
      const uint64_t c = n + i;
      const std::string v = vias(w.transport.sent[2 * i + 1]);  // 100 Trying, then the relay
      auto reply = [&](int code, absl::string_view reason, absl::string_view extra) {
        return absl::StrCat("SIP/2.0 ", code, " ", reason, "\r\n", v, "From: ", from(c),
                            "\r\nTo: <sip:bob0@127.0.0.1:5060>;tag=", c,
                            "SIPpTag01\r\nCall-ID: ", call_id(c), "\r\nCSeq: 1 INVITE\r\n", extra,
                            "Content-Length: 0\r\n\r\n");
      };
      replies[2 * i] = reply(180, "Ringing", "");
      replies[2 * i + 1] = reply(200, "OK",
                                 "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
                                 "Contact: <sip:bob@127.0.0.1:5070>\r\n");
    }
    state.ResumeTiming();
    for (const std::string& reply : replies) w.layer->HandleMessage(reply, callee);
    state.PauseTiming();
    for (int64_t i = 0; i < kBatch; ++i) {
      const uint64_t c = n + i;
      auto in_dialog = [&](absl::string_view method, int cseq, int branch) {
        return absl::StrCat(method, " sip:bob@127.0.0.1:5070 SIP/2.0\r\n",
                            "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-4711-", c, "-", branch,
                            "\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: ", from(c),
                            "\r\nTo: <sip:bob0@127.0.0.1:5060>;tag=", c,
                            "SIPpTag01\r\nCall-ID: ", call_id(c), "\r\nCSeq: ", cseq, " ", method,
                            "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
      };
      requests[2 * i] = in_dialog("ACK", 1, 5);
      requests[2 * i + 1] = in_dialog("BYE", 2, 7);
    }
    w.transport.sent.clear();
    state.ResumeTiming();
    for (const std::string& request : requests) w.layer->HandleMessage(request, caller);
    state.PauseTiming();
    for (int64_t i = 0; i < kBatch; ++i) {
      const uint64_t c = n + i;
      bye_oks[i] = absl::StrCat("SIP/2.0 200 OK\r\n", vias(w.transport.sent[2 * i + 1]),
                                "From: ", from(c), "\r\nTo: <sip:bob0@127.0.0.1:5060>;tag=", c,
                                "SIPpTag01\r\nCall-ID: ", call_id(c),
                                "\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n");
    }
    state.ResumeTiming();
    for (const std::string& ok : bye_oks) w.layer->HandleMessage(ok, callee);
    state.PauseTiming();
    // The batch's transactions end, as their timers would end them.
    w.now += 64 * 500 + 10'000;
    w.layer->RunTimers();
    n += kBatch;
    state.ResumeTiming();
  }
  if (w.stats->Value("UAS_transactions").value_or(0) != 2 * n ||
      w.stats->Value("fwd_replies").value_or(0) != 3 * n) {
    state.SkipWithError("not every call was relayed");
  }
}
BENCHMARK(AcceptedCall);

}  // namespace
}  // namespace sipd::tm

BENCHMARK_MAIN();
