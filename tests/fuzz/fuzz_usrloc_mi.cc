// Fuzz target: the usrloc MI commands (ul_add, ul_rm, ul_rm_contact, ul_show_contact,
// ul_dump, ul_dump_page, ul_flush, ...; sipd/modules/usrloc/ul_mi.cc) with arguments
// from outside, through the real Dispatcher, on a small location table in shared
// memory: the argument checks of every command (AORs, contact URIs, expires, q, flags,
// page tokens and the cursor a forged token gives) and what the commands then do.
//
// Input: byte 0 picks the command (among those of module usrloc, in registration
// order), the rest is its arguments, one per line (at most 12). The reply goes to a
// writer that keeps nothing. Bounded state: every kInputsPerSweep inputs the clock
// passes every expiry, the timer sweeps, and ul_rm removes the permanent contacts left.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "registry/dispatcher.h"
#include "registry/reply_writer.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "spdlog/spdlog.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/usrloc/test_support.h"

namespace {

struct World {
  World() {
    spdlog::set_level(spdlog::level::off);
    (void)usrloc.SetParam("hash_size", int64_t{4});
    usrloc.set_clock([this] { return now; });
    core.AddModule(&usrloc);
    if (!usrloc.Init(core).ok()) std::abort();
    commands = sipd::fuzz::CommandsOf(core.mi(), "usrloc");
    if (commands.empty()) std::abort();
    dispatcher = core.NewDispatcher({});
  }

  static constexpr int kInputsPerSweep = 64;
  void Age() {
    if (++inputs % kInputsPerSweep != 0) return;
    now += 400 * 24 * 3600;  // past any expires a command can set
    usrloc.usrloc().RunTimer();
    // ul_add also adds permanent contacts (expires 0): ul_rm every AOR left.
    sipd::usrloc::LocationTable* table = usrloc.usrloc().FindTable("location");
    if (table == nullptr) std::abort();
    sipd::usrloc::LocationTable::Cursor cursor;
    std::vector<sipd::usrloc::AorSnapshot> aors;
    while (!cursor.done) table->CopyChunk(cursor, 64, false, aors);
    for (const auto& aor : aors) {
      sipd::mi::Request remove =
          sipd::fuzz::MakeRequest("ul_rm", {{"", "location"}, {"", aor.aor}});
      sipd::fuzz::DiscardReply writer;
      (void)dispatcher->Run(remove, &writer);
    }
  }

  sipd::testing::FakeCore core;
  sipd::usrloc::UsrlocModule usrloc;
  std::vector<std::string> commands;
  std::unique_ptr<sipd::mi::Dispatcher> dispatcher;
  int64_t now = 1'800'000'000;
  uint64_t inputs = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World world;
  if (size == 0) return 0;
  const sipd::mi::Request request = sipd::fuzz::RequestFrom(
      world.commands, std::string_view(reinterpret_cast<const char*>(data), size), 12);
  sipd::fuzz::DiscardReply writer;
  (void)world.dispatcher->Run(request, &writer);
  world.Age();
  return 0;
}
