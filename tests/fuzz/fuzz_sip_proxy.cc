// Fuzz target: SIP messages through the stateful proxy, as a SIP worker runs them: tm's
// parser (SipMessage), the transaction layer (matching, state machines, timers,
// CANCEL, ACK, forking, the blacklist, overload shedding, transactions in shared
// memory) and the proxy's routing (served domains, location lookup, loose routing,
// Path). What sipd sends goes to a transport that keeps the last request and reply, so
// that inputs can answer them.
//
// One input is a sequence of steps, each `op` (1 byte), `length` (2 bytes, little
// endian) and `length` bytes of payload (cut at the end of the input):
//   op & 7 == 0  the payload is a message from the caller side (10.0.0.1:5070);
//             1  from the callee side (10.0.0.2:5060);
//             2  from the callee side, after "$B", "$C" and "$T" in it are replaced by
//                the top Via branch and the Call-ID of the last request sipd sent and
//                the To-tag of the last reply it sent, so that replies can match sipd's
//                client transactions (the fuzzer cannot guess sipd's branches);
//             3  the same, from the caller side (an ACK or CANCEL for sipd's replies);
//             4  the clock moves 10 ms x the first payload byte, timers running;
//             5  the callee answers the last request sipd sent with the code in the
//                first two payload bytes (100-699), as a well-formed reply;
//   op & 8       over TCP instead of UDP;
//   op >> 4      how long the message waited in the receive queue, in 100 ms steps
//                (overload_delay is 500 ms here, so late INVITEs are shed).
//
// Checked besides: ScanToTag (the ACK fast path) agrees with the parse on every message.
//
// Bounded state: the world (shared memory, table, layer) is made once; every
// kInputsPerSweep inputs the clock moves past every lifetime, so every transaction
// ends and the table empties. That it does is checked (tm:inuse_transactions is 0):
// a transaction left behind traps, which libFuzzer reports as a crash.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "sipd/core/logging.h"
#include "sipd/modules/tm/proxy.h"
#include "sipd/modules/tm/sip_message.h"
#include "sipd/modules/tm/transaction_layer.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/tm_fuzz_support.h"
#include "tests/tm/layer_parts.h"

namespace {

using sipd::tm::Destination;
using sipd::tm::Proto;

// Keeps the last request and the last reply sipd sent.
class LastSentTransport final : public sipd::tm::Transport {
 public:
  absl::Status Send(const Destination&, std::string_view bytes) override {
    last.Keep(bytes);
    return absl::OkStatus();
  }
  sipd::fuzz::LastSent last;
};

struct World {
  World() {
    spdlog::set_level(spdlog::level::off);
    const std::vector<sipd::tm::LocalSocket> sockets = {
        sipd::tm::LocalSocket{Proto::kUdp, "127.0.0.1", 5060, 0},
        sipd::tm::LocalSocket{Proto::kTcp, "127.0.0.1", 5060, 1}};
    sipd::tm::ProxyOptions proxy_options;
    proxy_options.domains = {"example.com"};
    proxy_options.sockets = sockets;
    proxy_options.options_headers = {"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"};
    proxy_options.allow_header = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER";
    absl::flat_hash_map<std::string, sipd::tm::LocalHandler> handlers;
    handlers["REGISTER"] = [](sipd::tm::LocalRequest& request) {
      (void)request.Reply(200, "OK", {"Contact: <sip:bob@10.0.0.2:5060>;expires=60"});
    };
    proxy = std::make_unique<sipd::tm::Proxy>(
        proxy_options,
        [](std::string_view user,
           std::string_view) -> std::optional<std::vector<sipd::tm::Binding>> {
          // bob: two contacts (UDP and TCP, parallel forking); carol: behind NAT with a
          // Path; dave: registered for REGISTER only; anyone else: not found.
          if (user == "bob") {
            return std::vector<sipd::tm::Binding>{
                {.uri = "sip:bob@10.0.0.2:5060", .q = 1000},
                {.uri = "sip:bob@10.0.0.3:5062;transport=tcp", .q = 500}};
          }
          if (user == "carol") {
            return std::vector<sipd::tm::Binding>{{.uri = "sip:carol@192.168.1.9:5060",
                                                   .received = "sip:10.0.0.2:40000",
                                                   .path = "<sip:10.0.0.9;lr>"}};
          }
          if (user == "dave") {
            return std::vector<sipd::tm::Binding>{
                {.uri = "sip:dave@10.0.0.4", .methods = sipd::tm::MethodBit("REGISTER")}};
          }
          return std::nullopt;
        },
        std::move(handlers));

    sipd::tm::LayerOptions options;
    // Short timers, so that a few clock steps reach every state.
    options.fr_timeout_ms = 2000;
    options.fr_inv_timeout_ms = 3000;
    options.wait_ms = 1000;
    options.max_inv_lifetime_ms = 5000;
    options.max_noninv_lifetime_ms = 4000;
    options.blacklist_ms = 2000;
    options.overload_delay_ms = 500;
    options.to_tag_prefix = "sipd";
    options.server = "sipd-fuzz";
    options.sockets = sockets;
    options.options_headers = proxy_options.options_headers;
    layer = std::make_unique<sipd::tm::TransactionLayer>(
        options, *parts.table, transport, *proxy, callbacks, parts.counters, [this] { return now; },
        parts.blacklist.get());
  }

  void Deliver(std::string_view bytes, bool from_callee, bool tcp, int64_t queued_us) {
    const Proto proto = tcp ? Proto::kTcp : Proto::kUdp;
    sipd::tm::Inbound in;
    const char* ip = from_callee ? "10.0.0.2" : "10.0.0.1";
    const uint16_t port = from_callee ? 5060 : 5070;
    in.peer = sipd::tm::Peer{proto, ip, port, tcp ? "tcp:127.0.0.1:5060" : "udp:127.0.0.1:5060",
                             tcp ? uint64_t{7} : uint64_t{0}};
    if (!sipd::tm::MakeDestination(proto, ip, port, &in.source)) std::abort();
    in.source.socket = tcp ? 1 : 0;
    in.queued_us = queued_us;
    // The scan that spares a refused call's ACK the parse finds the tag the parse finds.
    if (const std::optional<std::string_view> tag = sipd::tm::ScanToTag(bytes)) {
      auto parsed = sipd::tm::SipMessage::Parse(bytes);
      if (parsed.ok() && (parsed->defect().empty() || !parsed->to_tag().empty())) {
        sipd::fuzz::Check(parsed->to_tag() == *tag);
      }
    }
    layer->HandleMessage(bytes, in);
    layer->FlushRefusals();  // as a UDP worker does when nothing more is waiting
  }

  // The callee's well-formed answer to the last request sipd sent.
  void Answer(int code, bool tcp) {
    if (auto reply = transport.last.AnswerToLastRequest(code)) {
      Deliver(*reply, /*from_callee=*/true, tcp, 0);
    }
  }

  void Advance(int64_t ms) {
    const int64_t end = now + ms;
    while (now < end) {
      now = std::min(end, now + 100);
      layer->RunTimers();
    }
  }

  static constexpr int kInputsPerSweep = 32;
  void Age() {
    if (++inputs % kInputsPerSweep != 0) return;
    Advance(120000);  // past every lifetime, wait timer and 64*T1 (D, J, L): the table empties
    // No input may leave a transaction behind (issue 8: "no stuck transaction").
    sipd::fuzz::Check(parts.Stat("inuse_transactions") == 0);
  }

  int64_t now = 1000000;
  uint64_t inputs = 0;
  sipd::tm::LayerParts parts{now};
  std::unique_ptr<sipd::tm::Proxy> proxy;
  sipd::tm::Callbacks callbacks;
  LastSentTransport transport;
  std::unique_ptr<sipd::tm::TransactionLayer> layer;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& world = sipd::fuzz::Leaked<World>();
  sipd::fuzz::ForEachStep(data, size, [&world](const sipd::fuzz::Step& step) {
    const uint8_t op = step.op;
    const std::string_view payload = step.payload;
    const bool tcp = (op & 8) != 0;
    const int64_t queued_us = int64_t{op >> 4} * 100000;
    switch (op & 7) {
      case 0:
      case 1:
        world.Deliver(payload, (op & 7) == 1, tcp, queued_us);
        break;
      case 2:
      case 3:
        world.Deliver(world.transport.last.Substitute(payload), (op & 7) == 2, tcp, queued_us);
        break;
      case 4:
        world.Advance(payload.empty() ? 10 : 10 * int64_t{static_cast<uint8_t>(payload[0])});
        break;
      case 5:
        world.Answer(sipd::fuzz::ReplyCode(payload), tcp);
        break;
      default:
        break;
    }
  });
  world.Age();
  return 0;
}
