// Fuzz target: one UDP datagram through the SIP stack a receiver runs (StatelessSipStack:
// libosip2 parsing, the core's stateless answers, counters) and, for REGISTER, the
// registrar's decisions and the location table (shared memory, usrloc without a
// database), exactly as a SIP worker process runs them. Replies go to a socket of this
// process that is drained after each input.
//
// Speed and bounded state: the world (shared memory, tables, sockets) is created once.
// The location table is small (16 slots, at most 16 contacts in all, so the 503 limit is
// reached) and usrloc runs on a fake clock that jumps past max_expires every
// kInputsPerSweep inputs, after which the timer sweeps everything away: bindings live
// long enough for refreshes and removals by later inputs, but no input pays for the
// contacts of thousands before it (each REGISTER copies its AOR for the 200 OK).
#include <netinet/in.h>
#include <osipparser2/osip_parser.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "sipd/core/logging.h"
#include "sipd/core/sip_receiver.h"
#include "sipd/core/sip_transport_impl.h"
#include "sipd/modules/registrar/registrar.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "spdlog/spdlog.h"
#include "tests/usrloc/test_support.h"

namespace {

struct World {
  World() {
    parser_init();
    (void)usrloc.SetParam("hash_size", int64_t{4});
    usrloc.set_clock([this] { return now; });
    (void)registrar.SetParam("max_contacts_total", int64_t{16});
    (void)registrar.SetParam("max_expires", int64_t{3600});
    core.AddModule(&usrloc);
    core.AddModule(&registrar);
    if (!usrloc.Init(core).ok() || !registrar.Init(core).ok()) std::abort();
    if (!sipd::RegisterCoreStats(
             core.stats(), [] { return uint64_t{0}; }, counters)
             .ok() ||
        !sipd::RegisterSlStats(core.stats(), counters).ok()) {
      std::abort();
    }
    for (auto& [method, handler] : core.sip_handlers()) handlers[method] = handler;
    auto address = sipd::ParseListenAddress("udp:127.0.0.1:0");
    auto opened = sipd::SipTransportImpl::Open({*address});
    if (!opened.ok()) std::abort();
    transport = std::move(*opened);
    stack = std::make_unique<sipd::StatelessSipStack>(*transport, counters, handlers, "fuzz",
                                                      "sipd/fuzz");
    // Where replies go: a socket of ours, drained after every input.
    peer = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(peer, reinterpret_cast<sockaddr*>(&any), sizeof(any));
    socklen_t length = sizeof(any);
    getsockname(peer, reinterpret_cast<sockaddr*>(&any), &length);
    source.proto = sipd::SipProto::kUdp;
    source.peer = sipd::SipAddress::FromIpPort("127.0.0.1", ntohs(any.sin_port)).value();
    source.socket = 0;
  }
  ~World() { close(peer); }

  static constexpr int kInputsPerSweep = 64;

  // After every kInputsPerSweep inputs: every binding expires and the timer removes it.
  void Age() {
    if (++inputs % kInputsPerSweep != 0) return;
    now += 2 * 3600;
    usrloc.usrloc().RunTimer();
  }

  void Drain() {
    char buffer[65536];
    while (recv(peer, buffer, sizeof(buffer), 0) > 0) {
    }
  }

  sipd::testing::FakeCore core;
  sipd::usrloc::UsrlocModule usrloc;
  sipd::registrar::RegistrarModule registrar;
  sipd::SipCounters counters;
  sipd::SipHandlerMap handlers;
  std::unique_ptr<sipd::SipTransportImpl> transport;
  std::unique_ptr<sipd::StatelessSipStack> stack;
  int peer = -1;
  sipd::SipSource source;
  int64_t now = 1'800'000'000;
  uint64_t inputs = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);  // modules log what they refuse
    // libosip2 prints every parse error to stderr unless its traces go to spdlog, as
    // sipd routes them (writing them cost three quarters of the time).
    sipd::RouteOsipTraces();
    return true;
  }();
  (void)quiet;
  static World world;
  world.stack->Handle(
      sipd::SipInbound{std::string_view(reinterpret_cast<const char*>(data), size), world.source});
  world.Drain();
  world.Age();
  return 0;
}
