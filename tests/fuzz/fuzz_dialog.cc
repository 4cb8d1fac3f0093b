// Fuzz target: the dialog module (sipd/modules/dialog) as tm drives it, with SIP text and
// MI arguments from outside: initial INVITEs and in-dialog requests relayed through the
// real tm callback lists (the module reads Call-ID, tags, CSeq, Contact, Record-Route,
// Route, and the profile values from the From user and the Request-URI user), replies
// and the end of transactions, the dialog timer, and the dialog MI commands (dlg_list,
// dlg_list_ctx, dlg_end_dlg with its h_entry/h_id and extra headers, the profile
// commands, ...) through the real Dispatcher. tm is the unit tests' double
// (tests/dialog/fake_tm.h): the BYEs the module sends are recorded, not sent.
//
// One input is a sequence of steps: op (1 byte), length (2 bytes, little endian),
// payload:
//   op % 6 == 0  relay the payload as a request (its cookie becomes the current one);
//             1  the payload is a reply to the current INVITE transaction;
//             2  sipd answers the current transaction itself (408);
//             3  the current transaction ends (final code 200 + first payload byte);
//             4  an MI command: payload byte 0 picks it (module dialog's, in
//                registration order), the rest is its arguments, one per line, where
//                "$E" and "$I" become the h_entry and h_id of the current dialog (the
//                fuzzer cannot guess them);
//             5  the clock moves the first payload byte's seconds; the timer runs.
// Bounded state: every kInputsPerSweep inputs the clock passes every dialog lifetime
// and the setup limit, and the timer ends every dialog. That it does is checked
// (dlg_list is empty): a dialog left behind traps, which libFuzzer reports as a crash.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "registry/dispatcher.h"
#include "registry/reply_writer.h"
#include "sipd/modules/dialog/dialog.h"
#include "spdlog/spdlog.h"
#include "tests/dialog/fake_tm.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/usrloc/test_support.h"

namespace {

struct World {
  World() {
    spdlog::set_level(spdlog::level::off);
    core.AddModule(&tm);
    for (auto& [name, value] : std::vector<std::pair<std::string, sipd::ParamValue>>{
             {"hash_size", int64_t{16}},
             {"default_timeout", int64_t{60}},
             {"profiles_with_value", std::string("caller/from_user; callee/ruri_user")},
             {"profiles_no_value", std::string("inbound")}}) {
      if (!module.SetParam(name, value).ok()) std::abort();
    }
    module.set_clock([this] { return now; });
    core.AddModule(&module);
    if (!module.Init(core).ok()) std::abort();
    commands = sipd::fuzz::CommandsOf(core.mi(), "dialog");
    if (commands.empty()) std::abort();
    timers = core.TimersNamed("dlg-timer");
    if (timers.empty()) std::abort();
    dispatcher = core.NewDispatcher({});
  }

  void RunTimers() {
    for (auto& timer : timers) timer();
  }

  void Mi(std::string_view payload) {
    if (payload.empty()) return;
    sipd::mi::Request request = sipd::fuzz::RequestFrom(commands, payload, 12);
    for (sipd::mi::Argument& arg : request.args) {
      arg.value = absl::StrReplaceAll(arg.value, {{"$E", absl::StrCat(cookie >> 32)},
                                                  {"$I", absl::StrCat(cookie & 0xFFFFFFFFu)}});
    }
    sipd::fuzz::DiscardReply writer;
    (void)dispatcher->Run(request, &writer);
  }

  static constexpr int kInputsPerSweep = 32;
  void Age() {
    tm.sent.clear();
    if (++inputs % kInputsPerSweep != 0) return;
    now += sipd::dialog::kSetupLimit + 3600;  // past the setup limit and every timeout
    RunTimers();
    tm.sent.clear();
    // No input may leave a dialog behind: dlg_list shows none.
    const sipd::mi::DispatchResult list =
        dispatcher->Run(sipd::fuzz::MakeRequest("dlg_list"), nullptr);
    sipd::fuzz::Check(list.reply.code == 200 && list.reply.root.kids.empty());
  }

  sipd::testing::FakeCore core;
  sipd::testing::FakeTm tm;
  sipd::dialog::DialogModule module;
  std::vector<std::string> commands;
  std::vector<std::function<void()>> timers;
  std::unique_ptr<sipd::mi::Dispatcher> dispatcher;
  int64_t now = 1'800'000'000;
  uint64_t inputs = 0;
  uint64_t cookie = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World world;
  sipd::fuzz::ForEachStep(data, size, [](const sipd::fuzz::Step& step) {
    const uint8_t op = step.op;
    const std::string_view payload = step.payload;
    switch (op % 6) {
      case 0: {
        const sipd::testing::FakeTm::Relayed relayed =
            world.tm.Relay(payload, sipd::testing::CallerPeer());
        if (relayed.cookie != 0) world.cookie = relayed.cookie;
        break;
      }
      case 1:
        world.tm.Reply(payload, world.cookie);
        break;
      case 2:
        world.tm.LocalReply(408, world.cookie);
        break;
      case 3:
        world.tm.End(world.cookie, 200 + (payload.empty() ? 0 : static_cast<uint8_t>(payload[0])));
        break;
      case 4:
        world.Mi(payload);
        break;
      case 5:
        world.now += payload.empty() ? 1 : static_cast<uint8_t>(payload[0]);
        world.RunTimers();
        break;
    }
  });
  world.Age();
  return 0;
}
