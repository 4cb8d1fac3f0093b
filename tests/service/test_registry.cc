#include "tests/service/test_registry.h"

#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"

namespace sipd::testing {
namespace {

using Arity = mi::ParamSpec::Arity;

int IntArg(const mi::Call& call, size_t i, int fallback) {
  int v = fallback;
  if (i < call.arg_count() && !absl::SimpleAtoi(call.arg(i), &v)) v = fallback;
  return v;
}

void MustRegister(mi::Registry& registry, mi::Command::Spec spec) {
  if (!registry.Register(std::move(spec)).ok()) std::abort();
}

}  // namespace

TestRegistry::TestRegistry() {
  MustRegister(registry, {.name = "version",
                          .module = "core",
                          .help = "prints the version",
                          .flags = mi::kNoInput,
                          .handler = [](mi::Call& call) {
                            call.reply().root.AddKid("Server", "sipd-test");
                            return absl::OkStatus();
                          }});
  MustRegister(registry, {.name = "echo",
                          .module = "test",
                          .params = {{"value", Arity::kRepeated, "echoed"}},
                          .handler = [](mi::Call& call) {
                            for (const auto& a : call.args()) {
                              call.reply().root.AddKid(a.name, a.value);
                            }
                            return absl::OkStatus();
                          }});
  MustRegister(registry, {.name = "code",
                          .module = "test",
                          .params = {{"code", Arity::kRequired, "MI code to answer"}},
                          .handler = [](mi::Call& call) {
                            const int code = IntArg(call, 0, 500);
                            call.reply() = mi::Reply::Error(code, "reason " + call.arg(0));
                            call.reply().root.AddKid("Detail", "x");
                            return absl::OkStatus();
                          }});
  MustRegister(registry,
               {.name = "fail", .module = "test", .flags = mi::kNoInput, .handler = [](mi::Call&) {
                  return absl::InternalError("test handler gives up");
                }});
  MustRegister(
      registry,
      {.name = "binary", .module = "test", .flags = mi::kNoInput, .handler = [](mi::Call& call) {
         call.reply().root.AddKid("User-agent", "caf\xE9 \xFF ok");
         return absl::OkStatus();
       }});
  MustRegister(registry, {.name = "big",
                          .module = "test",
                          .params = {{"bytes", Arity::kRequired, ""}},
                          .handler = [](mi::Call& call) {
                            call.reply().root.AddKid("Big", std::string(IntArg(call, 0, 0), 'b'));
                            return absl::OkStatus();
                          }});
  MustRegister(
      registry,
      {.name = "dump",
       .module = "test",
       .params = {{"records", Arity::kRequired, ""}, {"pad", Arity::kOptional, ""}},
       .flags = mi::kStreaming,
       .handler = [flushes = dump_flushes, finished = dump_finished](mi::Call& call) {
         const int records = IntArg(call, 0, 0);
         const int pad = IntArg(call, 1, 8);
         call.reply().root.is_array = true;
         call.StreamWith(mi::MakeProducer([flushes, finished, records, pad,
                                           i = 0](mi::Call& call) mutable -> absl::StatusOr<bool> {
           while (i < records) {
             mi::Node& rec = call.reply().root.AddKid("Record", std::to_string(i));
             rec.AddAttribute("n", std::to_string(i % 7));
             rec.AddKid("Data", std::string(pad, 'd'));
             if (++i % 50 == 0) {
               flushes->fetch_add(1);
               return false;
             }
           }
           finished->fetch_add(1);
           return true;
         }));
         return absl::OkStatus();
       }});
  MustRegister(registry,
               {.name = "slow",
                .module = "test",
                .params = {{"ms", Arity::kRequired, ""}},
                .flags = mi::kBlocking,
                .handler = [](mi::Call& call) {
                  std::this_thread::sleep_for(std::chrono::milliseconds(IntArg(call, 0, 0)));
                  call.reply().root.AddKid("Slept", call.arg(0));
                  return absl::OkStatus();
                }});
  MustRegister(registry, {.name = "park",
                          .module = "test",
                          .flags = mi::kAsync | mi::kNoInput,
                          .handler = [parked = parked](mi::Call& call) {
                            absl::StatusOr<mi::AsyncTicket> ticket = call.GoAsync();
                            if (!ticket.ok()) return ticket.status();
                            std::lock_guard<std::mutex> lock(parked->mu);
                            parked->tickets.push_back(*ticket);
                            return absl::OkStatus();
                          }});
  MustRegister(registry,
               {.name = "spin",
                .module = "test",
                .flags = mi::kBlocking | mi::kNoInput,
                .handler = [started = spin_started, cancelled = spin_cancelled](mi::Call& call) {
                  started->fetch_add(1);
                  if (call.WaitCancelled(std::chrono::seconds(30))) cancelled->fetch_add(1);
                  return absl::OkStatus();
                }});
  MustRegister(registry, {.name = "ps",
                          .module = "core",
                          .help = "lists all processes used by OpenSIPS",
                          .flags = mi::kNoInput,
                          .handler = [](mi::Call& call) {
                            call.reply().root.is_array = true;
                            call.reply()
                                .root.AddKid("Process")
                                .AddAttribute("ID", "0")
                                .AddAttribute("PID", std::to_string(getpid()))
                                .AddAttribute("Type", "attendant");
                            return absl::OkStatus();
                          }});
}

}  // namespace sipd::testing
