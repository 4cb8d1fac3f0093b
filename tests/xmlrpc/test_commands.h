// MI commands with known replies for the mi_xmlrpc unit tests (no daemon needed).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "registry/command.h"

namespace sipd::xmlrpc::testing {

// A gate that the `wait_gate` command waits on; the test opens it.
class Gate {
 public:
  void Open() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  void Close() {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = false;
  }
  bool WaitOpen(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, timeout, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

inline Gate& TestGate() {
  static Gate gate;
  return gate;
}

// Tickets of `later` calls waiting for the test to complete them.
class PendingTickets {
 public:
  void Add(mi::AsyncTicket ticket) {
    std::lock_guard<std::mutex> lock(mutex_);
    tickets_.push_back(ticket);
  }
  std::vector<mi::AsyncTicket> TakeAll() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::exchange(tickets_, {});
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return tickets_.size();
  }

 private:
  std::mutex mutex_;
  std::vector<mi::AsyncTicket> tickets_;
};

inline PendingTickets& TestTickets() {
  static PendingTickets tickets;
  return tickets;
}

inline void RegisterTestCommands(mi::Registry& registry) {
  auto add = [&](std::string name, mi::Handler handler, uint32_t flags = 0,
                 std::vector<mi::ParamSpec> params = {}) {
    mi::Command::Spec spec;
    spec.name = std::move(name);
    spec.module = "test";
    spec.handler = std::move(handler);
    spec.flags = flags;
    spec.params = std::move(params);
    (void)registry.Register(std::move(spec));
  };
  const std::vector<mi::ParamSpec> any_args = {
      {"arg", mi::ParamSpec::Arity::kRepeated, "anything"}};

  // The spec 5.4 uptime example.
  add(
      "uptime",
      [](mi::Call& call) {
        call.reply().root.AddKid("Now", "Tue Jun  3 16:22:20 2014");
        call.reply().root.AddKid("Up since", "Tue Jun  3 16:00:00 2014");
        call.reply().root.AddKid("Up time", "1340 [sec]");
        return absl::OkStatus();
      },
      mi::kNoInput);
  // One nameless node per argument, showing the bytes MI received.
  add(
      "echo",
      [](mi::Call& call) {
        for (size_t i = 0; i < call.arg_count(); ++i) call.reply().root.AddKid("", call.arg(i));
        return absl::OkStatus();
      },
      0, any_args);
  // Counts its arguments (even zero).
  add(
      "count",
      [](mi::Call& call) {
        call.reply().root.AddKid("Args", std::to_string(call.arg_count()));
        return absl::OkStatus();
      },
      0, any_args);
  // A nested tree with attributes (spec 2 example, usrloc-like); depth is lost on XML-RPC.
  add(
      "tree",
      [](mi::Call& call) {
        mi::Node& domain = call.reply().root.AddKid("Domain", "location");
        domain.AddAttribute("table", "512").AddAttribute("records", "1");
        mi::Node& aor = domain.AddKid("AOR", "alice");
        mi::Node& contact = aor.AddKid("Contact", "sip:alice@192.0.2.10:5060");
        contact.AddAttribute("Q", "");
        contact.AddKid("Expires", "3581");
        contact.AddKid("Cflags", "");
        call.reply()
            .root.AddKid("Process", "")
            .AddAttribute("ID", "0")
            .AddAttribute("PID", "2831")
            .AddAttribute("Type", "attendant");
        call.reply().root.AddKid("", "0").AddAttribute("Current", "0").AddAttribute("Total", "0");
        return absl::OkStatus();
      },
      mi::kNoInput);
  // 120 records, flushed every 50 (the way ul_dump streams).
  add(
      "flusher",
      [](mi::Call& call) {
        call.StreamWith(mi::MakeProducer([i = 0](mi::Call& call) mutable -> absl::StatusOr<bool> {
          while (i < 120) {
            call.reply()
                .root.AddKid("Record", std::to_string(i))
                .AddKid("Index", std::to_string(i));
            if (i++ % 50 == 49) return false;
          }
          return true;
        }));
        return absl::OkStatus();
      },
      mi::kNoInput | mi::kStreaming);
  add(
      "fail", [](mi::Call&) { return absl::InternalError("deliberate"); }, mi::kNoInput);
  add(
      "throws", [](mi::Call&) -> absl::Status { throw std::runtime_error("deliberate"); },
      mi::kNoInput);
  add(
      "not_found",
      [](mi::Call& call) {
        call.reply() = mi::Reply::Error(404, "AOR has no contacts");
        return absl::OkStatus();
      },
      mi::kNoInput);
  add(
      "no_reason",
      [](mi::Call& call) {
        call.reply() = mi::Reply::Error(481, "");
        return absl::OkStatus();
      },
      mi::kNoInput);
  add(
      "accepted",
      [](mi::Call& call) {
        call.reply().code = 202;
        call.reply().reason = "Accepted";
        call.reply().root.AddKid("Queued", "yes");
        return absl::OkStatus();
      },
      mi::kNoInput);
  add(
      "empty", [](mi::Call&) { return absl::OkStatus(); }, mi::kNoInput);
  // Bytes that are not safe in XML: control characters, CR, markup, invalid UTF-8.
  add(
      "unsafe",
      [](mi::Call& call) {
        call.reply().root.AddKid("Ctl", std::string("a\x01"
                                                    "b\x1f"
                                                    "c\td",
                                                    7));
        call.reply().root.AddKid("Markup", "<x>&amp;\r\nnext");
        call.reply().root.AddKid("Bytes", "caf\xE9 \xC3\xA9 \xFF\xFE end");
        return absl::OkStatus();
      },
      mi::kNoInput);
  // Takes no input: whatever params come are ignored (even unsupported types).
  add(
      "no_input",
      [](mi::Call& call) {
        call.reply().root.AddKid("Args", std::to_string(call.arg_count()));
        return absl::OkStatus();
      },
      mi::kNoInput);
  // Exactly one argument.
  add("one_arg",
      [](mi::Call& call) {
        call.reply().root.AddKid("Arg", call.arg(0));
        return absl::OkStatus();
      },
      0, {{"value", mi::ParamSpec::Arity::kRequired, "a value"}});
  // Blocks until the test opens the gate (at most 10 s): for the concurrency tests. It
  // is flagged blocking, so a dispatcher with workers runs it off the transport's loop.
  add(
      "wait_gate",
      [](mi::Call& call) {
        const bool opened = TestGate().WaitOpen(std::chrono::seconds(10));
        call.reply().root.AddKid("Gate", opened ? "opened" : "timed out");
        return absl::OkStatus();
      },
      mi::kNoInput | mi::kBlocking);
  // Async: the reply comes when the test completes the ticket (TestTickets()).
  add(
      "later",
      [](mi::Call& call) {
        absl::StatusOr<mi::AsyncTicket> ticket = call.GoAsync();
        if (ticket.ok()) TestTickets().Add(*ticket);
        return absl::OkStatus();
      },
      mi::kNoInput | mi::kAsync);
}

}  // namespace sipd::xmlrpc::testing
