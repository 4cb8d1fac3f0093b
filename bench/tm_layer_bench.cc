// tm's transaction layer in one process, without sockets: what sipd's own code costs
// per call, accepted or refused under overload (Google Benchmark). Results:
// bench/RESULTS.md, section "Overload: what a refusal costs inside sipd".
//
//   tm_layer_bench [--benchmark_repetitions=N] [--benchmark_filter=...]
//
// The messages are sipp's (tests/sip/uac_call.xml, uas_call.xml): INVITE with SDP,
// 100/180/200 from the callee, ACK, BYE, 200. Messages are built in batches of 1,000
// outside the timed parts, from what the layer sent (kept by the transport, cleared every
// batch); the clock stands still and jumps past every timer between batches, so one time
// unit is the layer's work for one call:
// - AcceptedCall: INVITE -> 100 + relay; 180, 200 relayed; ACK and BYE relayed
//   statelessly / statefully, 200 for the BYE relayed (7 messages in, 8 out);
// - RefusedCall: the overload flag is up; INVITE -> stateless 503, its ACK absorbed.
// System calls come on top (the pinned UDP echo floor is ~6 us per receive + send).
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "sipd/modules/tm/transaction_layer.h"
#include "spdlog/spdlog.h"
#include "tests/tm/layer_parts.h"

namespace sipd::tm {
namespace {

// Keeps what was sent since the last batch.
class KeepTransport final : public Transport {
 public:
  absl::Status Send(const Destination&, std::string_view bytes) override {
    sent.emplace_back(bytes);
    return absl::OkStatus();
  }
  std::vector<std::string> sent;
};

// Every request to the callee's contact; Record-Route on the initial ones.
class RelayAll final : public Router {
 public:
  RouteDecision Route(const SipMessage& request, const Inbound&) override {
    RouteDecision d;
    d.kind = RouteDecision::Kind::kRelay;
    d.record_route = request.to_tag().empty();
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
    LayerOptions options;
    options.sockets = {LocalSocket{Proto::kUdp, "127.0.0.1", 5060, 0}};
    options.to_tag_prefix = std::string(1, 't');  // not = "t": GCC 12 -Wrestrict false positive
    layer = std::make_unique<TransactionLayer>(
        options, *parts.table, transport, router, callbacks, parts.counters, [this] { return now; },
        parts.blacklist.get());
    layer->set_overload_flag(&overloaded);
  }

  static Inbound From(uint16_t port) {
    Inbound in;
    in.peer = Peer{Proto::kUdp, "127.0.0.1", port, "udp:127.0.0.1:5060", 0};
    (void)MakeDestination(Proto::kUdp, "127.0.0.1", port, &in.source);
    return in;
  }

  // Builds kBatch messages with make(i) outside the timed part (from what the layer sent
  // before), then hands them to the layer, as coming from `from`, inside it.
  static constexpr int64_t kBatch = 1000;
  template <typename Make>
  void Feed(benchmark::State& state, const Inbound& from, int64_t per_call, Make make) {
    state.PauseTiming();
    batch.clear();  // the last batch's strings are freed here, not in the timed part
    for (int64_t i = 0; i < kBatch; ++i) {
      for (int64_t k = 0; k < per_call; ++k) batch.push_back(make(i, k));
    }
    transport.sent.clear();
    state.ResumeTiming();
    for (const std::string& message : batch) layer->HandleMessage(message, from);
    // Held 503s leave, as a worker's idle handler sends them when its queue is empty.
    layer->FlushRefusals();
  }

  int64_t now = 1'000'000;
  LayerParts parts{now};
  KeepTransport transport;
  RelayAll router;
  Callbacks callbacks;
  std::atomic<bool> overloaded{false};
  std::unique_ptr<TransactionLayer> layer;
  std::vector<std::string> batch;  // Feed's messages
};

// Call c's messages, as sipp writes them.
constexpr absl::string_view kSdp =
    "v=0\r\no=alice 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

// From, To (with `to_tag` if any) and Call-ID of call c.
std::string DialogHeaders(uint64_t c, absl::string_view to_tag) {
  return absl::StrCat("From: sipp <sip:alice@127.0.0.1:5062>;tag=4711SIPpTag00", c,
                      "\r\nTo: <sip:bob0@127.0.0.1:5060>", to_tag.empty() ? "" : ";tag=", to_tag,
                      "\r\nCall-ID: ", c, "-4711@127.0.0.1\r\n");
}

// A request of the caller: `branch` numbers its Via branch.
std::string CallerRequest(absl::string_view method, absl::string_view uri, uint64_t c, int branch,
                          absl::string_view to_tag, int cseq, absl::string_view extra = "",
                          absl::string_view body = "") {
  return absl::StrCat(
      method, " ", uri, " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-4711-", c, "-",
      branch, "\r\n", DialogHeaders(c, to_tag), "CSeq: ", cseq, " ", method,
      "\r\nMax-Forwards: 70\r\n", extra, "Content-Length: ", body.size(), "\r\n\r\n", body);
}

std::string Invite(uint64_t c) {
  return CallerRequest("INVITE", "sip:bob0@127.0.0.1:5060", c, 0, "", 1,
                       "Contact: <sip:alice@127.0.0.1:5062;transport=UDP>\r\n"
                       "Subject: sipd proxy test\r\nContent-Type: application/sdp\r\n",
                       kSdp);
}

// The callee's tag in call c.
std::string CalleeTag(uint64_t c) { return absl::StrCat(c, "SIPpTag01"); }

// The callee's reply to a request sipd relayed to it (its Vias copied).
std::string CalleeReply(std::string_view relayed, int code, absl::string_view reason, uint64_t c,
                        absl::string_view cseq, absl::string_view extra = "") {
  const size_t start = relayed.find("\r\nVia:") + 2;
  const absl::string_view vias(relayed.data() + start, relayed.find("\r\nFrom:") + 2 - start);
  return absl::StrCat("SIP/2.0 ", code, " ", reason, "\r\n", vias, DialogHeaders(c, CalleeTag(c)),
                      "CSeq: ", cseq, "\r\n", extra, "Content-Length: 0\r\n\r\n");
}

void RefusedCall(benchmark::State& state) {
  World w;
  w.overloaded.store(true);
  const Inbound caller = World::From(5062);
  uint64_t n = 0;
  while (state.KeepRunningBatch(World::kBatch)) {
    w.Feed(state, caller, 1, [&](int64_t i, int64_t) { return Invite(n + i); });
    if (w.transport.sent.size() != World::kBatch) {
      state.SkipWithError("an INVITE got no 503");
      break;
    }
    // The ACK of each 503 (the only thing each INVITE got).
    w.Feed(state, caller, 1, [&](int64_t i, int64_t) {
      return CallerRequest("ACK", "sip:bob0@127.0.0.1:5060", n + i, 0,
                           std::string(ScanToTag(w.transport.sent[i]).value_or("")), 1);
    });
    n += World::kBatch;
  }
  if (w.parts.Stat("UAS_transactions") != 0 || w.parts.Stat("5xx_replies") != n ||
      w.parts.Stat("received_ACKs") != n) {
    state.SkipWithError("not every INVITE was refused");
  }
}
BENCHMARK(RefusedCall);

void AcceptedCall(benchmark::State& state) {
  World w;
  const Inbound caller = World::From(5062);
  const Inbound callee = World::From(5070);
  const std::string route = "Route: <sip:127.0.0.1:5060;lr>\r\n";
  uint64_t n = 0;
  while (state.KeepRunningBatch(World::kBatch)) {
    w.Feed(state, caller, 1, [&](int64_t i, int64_t) { return Invite(n + i); });
    // 180 and 200 to each relayed INVITE (sent: 100 Trying, then the relay).
    w.Feed(state, callee, 2, [&](int64_t i, int64_t k) {
      const std::string& relayed = w.transport.sent[2 * i + 1];
      return k == 0 ? CalleeReply(relayed, 180, "Ringing", n + i, "1 INVITE")
                    : CalleeReply(relayed, 200, "OK", n + i, "1 INVITE",
                                  "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
                                  "Contact: <sip:bob@127.0.0.1:5070>\r\n");
    });
    // ACK and BYE in the dialog.
    w.Feed(state, caller, 2, [&](int64_t i, int64_t k) {
      return k == 0 ? CallerRequest("ACK", "sip:bob@127.0.0.1:5070", n + i, 5, CalleeTag(n + i), 1,
                                    route)
                    : CallerRequest("BYE", "sip:bob@127.0.0.1:5070", n + i, 7, CalleeTag(n + i), 2,
                                    route);
    });
    // 200 to each relayed BYE (sent: the ACK, then the BYE).
    w.Feed(state, callee, 1, [&](int64_t i, int64_t) {
      return CalleeReply(w.transport.sent[2 * i + 1], 200, "OK", n + i, "2 BYE");
    });
    state.PauseTiming();
    // The batch's transactions end, as their timers would end them.
    w.now += 64 * 500 + 10'000;
    w.layer->RunTimers();
    n += World::kBatch;
    state.ResumeTiming();
  }
  if (w.parts.Stat("UAS_transactions") != 2 * n || w.parts.Stat("fwd_replies") != 3 * n) {
    state.SkipWithError("not every call was relayed");
  }
}
BENCHMARK(AcceptedCall);

}  // namespace
}  // namespace sipd::tm

BENCHMARK_MAIN();
