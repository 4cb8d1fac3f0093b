// Fuzz target: tm's MI commands with arguments from outside, as an MI transport runs
// them through the Dispatcher: t_uac_dlg (method, Request-URI, next hop, socket,
// headers, body: the request sipd builds and sends; async, answered when the
// transaction ends), t_uac_cancel, t_reply (code, reason, trans_id, To-tag, headers,
// body) and list_blacklists, on the real tm module (transactions in shared
// memory, timers, the blacklist) with a fake clock and a SIP transport that keeps what
// sipd sends. Inputs can answer sipd's requests as the callee, so that the async calls
// complete in every way (provisional, final, CANCEL, timeout, blacklisted hop).
//
// One input is a sequence of steps: op (1 byte), length (2 bytes, little endian),
// payload (tests/fuzz/fuzz_support.h):
//   op % 4 == 0  an MI command: payload byte 0 picks it (tm's and blacklists' commands
//                but t_hash, in registration order), the rest is its arguments separated by NUL
//                bytes (an argument may hold lines: t_uac_dlg's headers), after "$B", "$C", "$S",
//                "$T" in them are replaced by what sipd sent last (tests/fuzz/tm_fuzz_support.h):
//                t_uac_cancel can name the INVITE that t_uac_dlg sent;
//             1  a SIP message after the same replacements: from the callee side
//                (10.0.0.2:5060; replies that match sipd's client transactions), or with
//                op & 4 from the caller side (10.0.0.1:5070; requests that sipd relays,
//                relay_to_any being on, so that t_reply can answer them: "$X" names the
//                transaction of the request sipd relayed);
//             2  the callee answers the last request sipd sent with the code in the
//                first two payload bytes (100-699), as a well-formed reply;
//             3  the clock moves 10 ms x the first payload byte, timers running.
//
// Bounded state: after every input the clock passes every lifetime, so every
// transaction ends. That it does is checked: tm:inuse_transactions is 0 and every
// t_uac_dlg call has its reply (no MI caller waits forever); a miss traps, which
// libFuzzer reports as a crash. (Every input, not every few as in sip_proxy: the MI
// calls it keeps are memory, and an input that ends holding memory makes libFuzzer's
// leak check scan the whole heap.)
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "registry/dispatcher.h"
#include "sipd/core/sip_transport.h"
#include "sipd/modules/tm/tm.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/tm_fuzz_support.h"
#include "tests/usrloc/test_support.h"

namespace {

// sipd's two listen sockets (UDP and TCP on 127.0.0.1:5060); keeps what is sent.
class FakeSipTransport final : public sipd::SipTransport {
 public:
  FakeSipTransport() {
    for (sipd::SipProto proto : {sipd::SipProto::kUdp, sipd::SipProto::kTcp}) {
      sipd::SipSocket socket;
      socket.proto = proto;
      socket.address = sipd::SipAddress::FromIpPort("127.0.0.1", 5060).value();
      socket.name = proto == sipd::SipProto::kUdp ? "udp:127.0.0.1:5060" : "tcp:127.0.0.1:5060";
      sockets_.push_back(socket);
    }
  }
  const std::vector<sipd::SipSocket>& sockets() const override { return sockets_; }
  absl::Status Send(const sipd::SipDestination&, std::string_view message) override {
    last.Keep(message);
    return absl::OkStatus();
  }
  sipd::fuzz::LastSent last;

 private:
  std::vector<sipd::SipSocket> sockets_;
};

class TmCore final : public sipd::testing::FakeCore {
 public:
  sipd::SipTransport* sip_transport() override { return &transport; }
  sipd::SipMessageHandler SetSipMessageHandler(sipd::SipMessageHandler handler) override {
    sip_handler = std::move(handler);
    return {};
  }
  FakeSipTransport transport;
  sipd::SipMessageHandler sip_handler;
};

struct World {
  World() {
    spdlog::set_level(spdlog::level::off);
    tm = sipd::NewTmModuleWithClock([this] { return now; });
    // Short timers, so that a few clock steps reach every state. Host names are looked
    // up at a closed loopback port: refused at once, and nothing leaves the host.
    const std::string kNoDns = "127.0.0.1:1";
    for (auto& [name, value] :
         std::vector<std::pair<std::string, sipd::ParamValue>>{{"fr_timeout", int64_t{2}},
                                                               {"fr_inv_timeout", int64_t{3}},
                                                               {"wt_timer", int64_t{1}},
                                                               {"bl_timeout", int64_t{2}},
                                                               {"overload_queue", int64_t{0}},
                                                               {"relay_to_any", int64_t{1}},
                                                               {"dns_servers", kNoDns},
                                                               {"dns_timeout", int64_t{10}}}) {
      if (!tm->SetParam(name, value).ok()) std::abort();
    }
    core.AddModule(tm.get());
    if (!tm->Init(core).ok() || !core.sip_handler) std::abort();
    // Not t_hash: it reads no input, and its reply (all 65,536 buckets) would take most
    // of the target's time (the tm tests cover it).
    for (const std::string& name : sipd::fuzz::CommandsOf(core.mi(), "tm")) {
      if (name != "t_hash") commands.push_back(name);
    }
    for (const std::string& name : sipd::fuzz::CommandsOf(core.mi(), "blacklists")) {
      commands.push_back(name);
    }
    timers = core.TimersNamed("tm-utimer");
    if (commands.size() != 4 || timers.empty()) std::abort();
    dispatcher = core.NewDispatcher({});
  }

  void Mi(std::string_view payload) {
    if (payload.empty()) return;
    sipd::mi::Request request = sipd::fuzz::PickCommand(commands, static_cast<uint8_t>(payload[0]));
    payload.remove_prefix(1);
    sipd::fuzz::AddArgumentLines(core.transport.last.Substitute(payload), 8, request, '\0');
    calls.push_back(dispatcher->Start(context, std::move(request), sipd::mi::Delivery::kTree));
    dispatcher->RunCompletions();
  }

  void FromPeer(std::string_view bytes, const sipd::SipAddress& peer) {
    sipd::SipInbound inbound;
    inbound.bytes = bytes;
    inbound.source.proto = sipd::SipProto::kUdp;
    inbound.source.peer = peer;
    inbound.source.socket = 0;
    core.sip_handler(inbound);
    dispatcher->RunCompletions();
  }

  // The clock moves `ms` in steps of `step_ms`, the timers running after each.
  void Advance(int64_t ms, int64_t step_ms = 100) {
    const int64_t end = now + ms;
    while (now < end) {
      now = std::min(end, now + step_ms);
      for (auto& timer : timers) timer();
    }
    dispatcher->RunCompletions();
  }

  void Sweep() {
    // Past every lifetime (max_inv_lifetime 180 s), retransmission and wait timer, in
    // steps longer than each of the short timers set above.
    Advance(240000, 10000);
    // No transaction is left, and no MI caller is left waiting for one.
    sipd::fuzz::Check(core.stats().Value("inuse_transactions").value_or(1) == 0);
    for (const auto& call : calls) sipd::fuzz::Check(call->ready());
    calls.clear();
    calls.shrink_to_fit();  // nothing of the input is left on the heap
  }

  int64_t now = 1000000;
  const sipd::SipAddress caller = sipd::SipAddress::FromIpPort("10.0.0.1", 5070).value();
  const sipd::SipAddress callee = sipd::SipAddress::FromIpPort("10.0.0.2", 5060).value();
  TmCore core;
  std::unique_ptr<sipd::Module> tm;
  std::vector<std::string> commands;
  std::vector<std::function<void()>> timers;
  std::unique_ptr<sipd::mi::Dispatcher> dispatcher;
  const sipd::mi::CallContext context;  // an internal caller
  std::vector<std::unique_ptr<sipd::mi::Exchange>> calls;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& world = sipd::fuzz::Leaked<World>();
  sipd::fuzz::ForEachStep(data, size, [&world](const sipd::fuzz::Step& step) {
    const std::string_view payload = step.payload;
    switch (step.op % 4) {
      case 0:
        world.Mi(payload);
        break;
      case 1:
        world.FromPeer(world.core.transport.last.Substitute(payload),
                       (step.op & 4) != 0 ? world.caller : world.callee);
        break;
      case 2:
        if (auto reply =
                world.core.transport.last.AnswerToLastRequest(sipd::fuzz::ReplyCode(payload))) {
          world.FromPeer(*reply, world.callee);
        }
        break;
      case 3:
        world.Advance(payload.empty() ? 10 : 10 * int64_t{static_cast<uint8_t>(payload[0])});
        break;
    }
  });
  world.Sweep();
  return 0;
}
