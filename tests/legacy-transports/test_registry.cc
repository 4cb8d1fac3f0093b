#include "tests/legacy-transports/test_registry.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace sipd::legacy::testing {
namespace {

using mi::Call;
using mi::Command;
using mi::ParamSpec;

size_t ArgAsSize(const Call& call, size_t index, size_t fallback) {
  size_t n = fallback;
  if (call.arg_count() > index && !absl::SimpleAtoi(call.arg(index), &n)) n = fallback;
  return n;
}

void AddContact(mi::Node& aor, const std::string& user) {
  mi::Node& contact = aor.AddKid("Contact", "sip:" + user + "@192.0.2.10:5060");
  contact.AddAttribute("Q", "");
  contact.AddKid("Expires", "3581");
  contact.AddKid("Callid", "3c2b7f0e@192.0.2.10");
  contact.AddKid("Cseq", "1203");
  contact.AddKid("User-agent", "Linphone/3.6");
  contact.AddKid("State", "CS_NEW");
  contact.AddKid("Flags", "0");
  contact.AddKid("Cflags", "");
  contact.AddKid("Socket", "udp:192.0.2.1:5060");
  contact.AddKid("Methods", "4294967295");
}

std::mutex held_mutex;
std::vector<mi::AsyncTicket> held_tickets;
std::atomic<int> cancels_seen{0};
std::atomic<int> cancel_waits_started{0};

void Register(mi::Registry& registry, Command::Spec spec) {
  if (spec.module.empty()) spec.module = "test";
  (void)registry.Register(std::move(spec));
}

}  // namespace

std::vector<mi::AsyncTicket> TakeHeldTickets() {
  std::lock_guard<std::mutex> lock(held_mutex);
  std::vector<mi::AsyncTicket> taken;
  taken.swap(held_tickets);
  return taken;
}

size_t HeldTicketCount() {
  std::lock_guard<std::mutex> lock(held_mutex);
  return held_tickets.size();
}

int CancelsSeen() { return cancels_seen.load(); }
int CancelWaitsStarted() { return cancel_waits_started.load(); }

std::unique_ptr<mi::Registry> NewTestRegistry() {
  auto registry = std::make_unique<mi::Registry>();
  const ParamSpec optional_n{"n", ParamSpec::Arity::kOptional, ""};
  const ParamSpec required_n{"n", ParamSpec::Arity::kRequired, ""};

  Register(*registry, {.name = "uptime", .flags = mi::kNoInput, .handler = [](Call& call) {
                         auto& root = call.reply().root;
                         root.AddKid("Now", "Tue Jun  3 16:22:20 2014");
                         root.AddKid("Up since", "Tue Jun  3 16:00:00 2014");
                         root.AddKid("Up time", "1340 [sec]");
                         return absl::OkStatus();
                       }});
  Register(*registry, {.name = "version", .flags = mi::kNoInput, .handler = [](Call& call) {
                         call.reply().root.AddKid("Server",
                                                  "OpenSIPS (1.11.11-notls (x86_64/linux))");
                         return absl::OkStatus();
                       }});
  Register(*registry, {.name = "ps", .flags = mi::kNoInput, .handler = [](Call& call) {
                         static const char* const kTypes[] = {"attendant",
                                                              "MI FIFO",
                                                              "SIP receiver udp:127.0.0.1:5060 ",
                                                              "SIP receiver udp:127.0.0.1:5060 ",
                                                              "time_keeper",
                                                              "timer: tm-utimer",
                                                              "TCP receiver",
                                                              "TCP main"};
                         auto& root = call.reply().root;
                         root.is_array = true;
                         for (int i = 0; i < 8; ++i) {
                           root.AddKid("Process")
                               .AddAttribute("ID", std::to_string(i))
                               .AddAttribute("PID", std::to_string(2831 + i))
                               .AddAttribute("Type", kTypes[i]);
                         }
                         return absl::OkStatus();
                       }});
  Register(*registry, {.name = "ul_dump", .flags = mi::kNoInput, .handler = [](Call& call) {
                         mi::Node& domain = call.reply().root.AddKid("Domain", "location");
                         domain.AddAttribute("table", "512").AddAttribute("records", "1");
                         AddContact(domain.AddKid("AOR", "alice"), "alice");
                         return absl::OkStatus();
                       }});
  Register(*registry, {.name = "ul_dump_many",
                       .params = {optional_n},
                       .flags = mi::kStreaming,
                       .handler = [](Call& call) {
                         const size_t n = ArgAsSize(call, 0, 120);
                         mi::Node& domain = call.reply().root.AddKid("Domain", "location");
                         domain.AddAttribute("table", "512");
                         domain.not_completed = true;  // usrloc never clears it (spec 1.7)
                         call.StreamWith(mi::MakeProducer(
                             [n, &domain, i = size_t{1}](Call&) mutable -> absl::StatusOr<bool> {
                               while (i <= n) {
                                 const std::string user = absl::StrFormat("a%03d", i);
                                 AddContact(domain.AddKid("AOR", user), user);
                                 if (i++ % 50 == 0) return false;
                               }
                               domain.AddAttribute("records", std::to_string(n));
                               return true;
                             }));
                         return absl::OkStatus();
                       }});
  Register(*registry, {.name = "table_missing", .handler = [](Call& call) {
                         call.reply() = mi::Reply::Error(404, "Table not found");
                         return absl::OkStatus();
                       }});
  Register(*registry, {.name = "fail", .handler = [](Call&) {
                         return absl::InternalError("test command fails on purpose");
                       }});
  Register(*registry, {.name = "echo",
                       .params = {{"arg", ParamSpec::Arity::kRepeated, ""}},
                       .handler = [](Call& call) {
                         for (const auto& arg : call.args()) {
                           call.reply().root.AddKid(arg.name, arg.value);
                         }
                         return absl::OkStatus();
                       }});
  Register(*registry, {.name = "help",
                       .params = {{"command", ParamSpec::Arity::kOptional, ""}},
                       .handler = [](Call& call) {
                         call.reply().root.AddKid(
                             "Usage", "help mi_cmd - returns information about 'mi_cmd'");
                         return absl::OkStatus();
                       }});
  for (const bool flushed : {false, true}) {
    Register(*registry,
             {.name = flushed ? "big_flushed" : "big",
              .params = {required_n},
              .flags = flushed ? uint32_t{mi::kStreaming} : 0u,
              .handler = [flushed](Call& call) {
                const size_t n = ArgAsSize(call, 0, 0);
                call.StreamWith(mi::MakeProducer(
                    [flushed, n, i = size_t{1}](Call& call) mutable -> absl::StatusOr<bool> {
                      const std::string value(96, 'x');
                      while (i <= n) {
                        call.reply().root.AddKid("line", value);
                        if (flushed && i++ % 50 == 0) return false;
                        if (!flushed) ++i;
                      }
                      return true;
                    }));
                return absl::OkStatus();
              }});
  }
  Register(*registry,
           {.name = "sleep", .params = {required_n}, .handler = [](Call& call) {
              std::this_thread::sleep_for(std::chrono::milliseconds(ArgAsSize(call, 0, 0)));
              return absl::OkStatus();
            }});
  Register(*registry, {.name = "whoami", .flags = mi::kNoInput, .handler = [](Call& call) {
                         const mi::CallContext& context = call.context();
                         auto& root = call.reply().root;
                         root.AddKid("transport", std::string(TransportName(context.transport)));
                         root.AddKid("uid", context.peer.uid_known()
                                                ? std::to_string(context.peer.uid)
                                                : std::string("unknown"));
                         root.AddKid("pid", std::to_string(context.peer.pid));
                         root.AddKid("address", context.peer.address);
                         return absl::OkStatus();
                       }});
  Register(*registry,
           {.name = "async_hold", .flags = mi::kAsync | mi::kNoInput, .handler = [](Call& call) {
              absl::StatusOr<mi::AsyncTicket> ticket = call.GoAsync();
              if (!ticket.ok()) return ticket.status();
              std::lock_guard<std::mutex> lock(held_mutex);
              held_tickets.push_back(*ticket);
              return absl::OkStatus();
            }});
  Register(
      *registry,
      {.name = "wait_for_cancel", .flags = mi::kBlocking | mi::kNoInput, .handler = [](Call& call) {
         ++cancel_waits_started;
         if (call.WaitCancelled(std::chrono::seconds(10))) ++cancels_seen;
         return absl::OkStatus();
       }});
  Register(*registry, {.name = "long_line", .params = {required_n}, .handler = [](Call& call) {
                         call.reply().root.AddKid("", std::string(ArgAsSize(call, 0, 0), 'v'));
                         return absl::OkStatus();
                       }});
  return registry;
}

}  // namespace sipd::legacy::testing
