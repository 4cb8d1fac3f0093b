// Fuzz target: the core's MI commands with arguments from outside, through the real
// Dispatcher: the statistics commands (get_statistics, reset_statistics: names, "group:"
// patterns), the local cache (cache_store, cache_fetch, cache_remove in
// shared memory: attribute and value sizes, expires, a full cache), debug's level, help's
// command name, the events commands (event_subscribe with event_datagram's udp: and
// unix: address parsers, expires; events_list, subscribers_list) and the argument-count
// checks of the commands that take none (kill included: the test core ignores it).
//
// Input: byte 0 picks the command (every command of the registry, in registration
// order; tests/fuzz/make_core_mi_seeds.py lists it), the rest is its arguments, one per
// line (at most 8). The reply goes to a
// writer that keeps nothing. Bounded state: the cache and the subscription table have
// small limits, and every kInputsPerSweep inputs both clocks pass every lifetime a
// command can set, so that stored entries and subscriptions expire and are swept.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "registry/dispatcher.h"
#include "sipd/core/event_bus.h"
#include "sipd/modules/core/core_commands.h"
#include "sipd/modules/event_datagram/event_datagram.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/usrloc/test_support.h"

namespace {

// The test core with the events of sipd (the shared-memory backend).
class EventsCore final : public sipd::testing::FakeCore {
 public:
  explicit EventsCore(const std::atomic<int64_t>& now_s) {
    auto events = sipd::SipdEvents::Create(
        shm(), {.max_subscriptions = 8, .now = [&now_s] { return now_s.load(); }});
    if (!events.ok()) std::abort();
    events_ = std::move(*events);
    if (!events_->RegisterStatistics(stats()).ok()) std::abort();
  }
  sipd::mi::EventRegistry* events() override { return &events_->registry(); }
  sipd::SipdEvents& bus() { return *events_; }

 private:
  std::unique_ptr<sipd::SipdEvents> events_;
};

struct World {
  // Subscribers' host names: the hosts file, then a closed loopback port as the name
  // server, so fuzzed names are refused at once and nothing leaves the host.
  sipd::tm::HostResolver resolver{{.servers = "127.0.0.1:1"}, [] { return int64_t{0}; }};

  World() {
    spdlog::set_level(spdlog::level::off);
    auto consumer = core.bus().backend().AddConsumer("event_datagram", 1 << 16);
    if (!consumer.ok()) std::abort();
    if (!core.bus()
             .registry()
             .AddTransport({"udp",
                            [this](std::string_view address) {
                              return sipd::event_datagram::ParseUdpAddress(address, &resolver);
                            },
                            *consumer})
             .ok() ||
        !core.bus()
             .registry()
             .AddTransport({"unix", sipd::event_datagram::ParseUnixAddress, *consumer})
             .ok()) {
      std::abort();
    }
    sipd::LocalCache::Options cache;
    cache.buckets = 8;
    cache.max_entries = 64;
    cache.max_bytes = 256 << 10;
    cache.now_ms = [this] { return now_ms.load(); };
    if (!sipd::RegisterCoreCommands(core, std::move(cache)).ok()) std::abort();
    for (const auto& command : core.mi().commands()) commands.push_back(command->name());
    dispatcher = core.NewDispatcher({});
  }

  static constexpr int kInputsPerSweep = 64;
  void Age() {
    if (++inputs % kInputsPerSweep != 0) return;
    // Past any expires a command can set (32-bit seconds).
    now_s += int64_t{1} << 33;
    now_ms += (int64_t{1} << 33) * 1000;
    core.RunTimers();  // the cache's expiry
    (void)core.bus().backend().ExpireSubscriptions(nullptr);
  }

  std::atomic<int64_t> now_s{1'800'000'000};
  std::atomic<int64_t> now_ms{1'000};
  EventsCore core{now_s};
  std::vector<std::string> commands;
  std::unique_ptr<sipd::mi::Dispatcher> dispatcher;
  uint64_t inputs = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World& world = sipd::fuzz::Leaked<World>();
  if (size == 0) return 0;
  const sipd::mi::Request request = sipd::fuzz::RequestFrom(
      world.commands, std::string_view(reinterpret_cast<const char*>(data), size), 8);
  sipd::fuzz::DiscardReply writer;
  (void)world.dispatcher->Run(request, &writer);
  world.Age();
  return 0;
}
