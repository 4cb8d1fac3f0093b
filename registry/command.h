// MI command declarations and the command registry.
//
// A command is declared once (name, module, help, parameters, flags, handler); `which`,
// `help`, gRPC ListCommands/DescribeCommand and the argument checks of Dispatch() all
// read that one declaration.
//
// Thread-safety: commands are registered in the attendant before the first fork and the
// registry is read-only afterwards; Find()/commands() may be called from any thread.
// Per-command figures (calls, errors, time) are atomics; Registry::UseFigureCells()
// moves them into shared memory so that every process counts into the same cells.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "registry/async.h"
#include "registry/call_context.h"
#include "registry/tree.h"

namespace sipd::mi {

class Command;
class Call;
class StatsRegistry;
// registry/typed_method.h (protobuf): included only where typed methods are declared or
// served.
class TypedMethod;

// One request argument (spec 1.2). Either part may be empty, not both.
struct Argument {
  std::string name;
  std::string value;
  friend bool operator==(const Argument&, const Argument&) = default;
};

// A request as a transport parsed it. A transport that cannot parse the arguments still
// passes the command name, with `args_error` saying why: the dispatcher decides what
// that means (no-input commands run anyway, unknown commands are "not available", the
// rest get the transport's parse error).
struct Request {
  std::string command;
  std::vector<Argument> args;
  absl::Status args_error;
};

enum CommandFlag : uint32_t {
  // MI_NO_INPUT_FLAG: arguments are ignored and not checked.
  kNoInput = 1u << 0,
  // The command changes state (otherwise read-only).
  kMutating = 1u << 1,
  // MI_ASYNC_RPL_FLAG: may complete later from another process.
  kAsync = 1u << 2,
  // Produces its reply incrementally through a ReplyProducer (large output, spec 1.7).
  kStreaming = 1u << 3,
  // May block (disk I/O such as SQLite syncs): the dispatcher runs it on a worker
  // thread so the transport's loop keeps serving other clients.
  kBlocking = 1u << 4,
  // Mutating and disruptive for the whole server (kill, debug, reset_statistics,
  // ul_flush): only the admin role may run it (registry/authorization.h).
  kDangerous = 1u << 5,
};

struct ParamSpec {
  enum class Arity { kRequired, kOptional, kRepeated };
  std::string name;
  Arity arity = Arity::kRequired;
  std::string help;
  // The value is a secret (a password, a token): the audit log shows it as ***.
  bool secret = false;
};

// The rest of a streamed reply (spec 1.7), pulled by the dispatcher as the client can
// take it: a transport asks for the next part only when its buffer has drained, so a
// slow client costs a bounded buffer, no thread and no lock.
class ReplyProducer {
 public:
  virtual ~ReplyProducer() = default;
  // Appends the next part of the reply to call.reply(), normally up to the command's
  // next flush point (50 records in 1.11's commands). Returns true once the reply is
  // complete. An error status means "the command returned nothing" (spec 1.5).
  // REQUIRES: no lock is held between calls (a stream may wait for its client for as
  // long as the transport allows); the producer may be destroyed between any two calls
  // (client gone, cancelled).
  virtual absl::StatusOr<bool> Next(Call& call) = 0;
};

// What a handler sees while it runs.
class Call {
 public:
  // `args`, `context` and `reply` must outlive the call (the dispatcher keeps them).
  Call(const Command& command, const std::vector<Argument>& args, const CallContext& context,
       AsyncBackend* async, Reply& reply)
      : command_(command), args_(args), context_(context), async_(async), reply_(reply) {}

  const Command& command() const { return command_; }
  const std::vector<Argument>& args() const { return args_; }
  size_t arg_count() const { return args_.size(); }
  // Value of argument `i`. REQUIRES: i < arg_count().
  const std::string& arg(size_t i) const { return args_[i].value; }
  const CallContext& context() const { return context_; }
  // The caller went away or the call timed out: stop early (the reply is dropped).
  bool cancelled() const { return context_.cancel.cancelled(); }
  // Blocks a kBlocking handler until the call is cancelled or `timeout` passed; returns
  // cancelled().
  bool WaitCancelled(std::chrono::steady_clock::duration timeout) const {
    return context_.cancel.WaitFor(timeout);
  }

  Reply& reply() { return reply_; }

  // Streaming commands (kStreaming): the handler sets the status and whatever comes
  // first, then hands the rest to `producer`, which the dispatcher pulls from.
  void StreamWith(std::unique_ptr<ReplyProducer> producer) { producer_ = std::move(producer); }
  std::unique_ptr<ReplyProducer>& producer() { return producer_; }

  // Async commands (kAsync): the reply will come later through
  // AsyncBackend::Complete(ticket, ...) from any process; what the handler put in
  // reply() is discarded. FailedPrecondition when the transport cannot wait (the
  // dispatcher then answers `202 Accepted`, spec 8.3), ResourceExhausted when every
  // slot is taken, Unimplemented for a command not flagged kAsync.
  absl::StatusOr<AsyncTicket> GoAsync();
  const std::optional<AsyncTicket>& ticket() const { return ticket_; }
  // GoAsync() was refused because the transport cannot wait.
  bool async_refused() const { return async_refused_; }

 private:
  const Command& command_;
  const std::vector<Argument>& args_;
  const CallContext& context_;
  AsyncBackend* const async_;
  Reply& reply_;
  std::unique_ptr<ReplyProducer> producer_;
  std::optional<AsyncTicket> ticket_;
  bool async_refused_ = false;
};

// A ReplyProducer made of a function (for small streaming commands and tests).
std::unique_ptr<ReplyProducer> MakeProducer(std::function<absl::StatusOr<bool>(Call&)> next);

// A handler fills call.reply() (code, reason, nodes) and returns OK. Returning an error
// status means "the handler returned nothing" (spec 1.5): the transport answers with its
// generic failure text and the status message is logged.
using Handler = std::function<absl::Status(Call& call)>;

class Command {
 public:
  struct Spec {
    std::string name;
    std::string module;
    // Empty = none (`help` answers "not available for this command").
    std::string help;
    std::vector<ParamSpec> params;
    uint32_t flags = 0;
    Handler handler;
    // Reply to a wrong argument count. Most commands use 400 "Too few or too many
    // arguments"; the cache_* commands use 404 with two different texts.
    uint32_t arg_error_code = 400;
    std::string too_few_reason = std::string(kReasonBadArgCount);
    std::string too_many_reason = std::string(kReasonBadArgCount);
    // A reply given before the argument checks, when the command's answer does not
    // depend on its arguments in some state (ul_sync without a database, spec 8.1);
    // nullopt = check the arguments and run the handler.
    std::function<std::optional<Reply>()> answer_before_args;
    // Typed gRPC methods served by this command (registry/typed_method.h): conversions
    // between their messages and this command's arguments and reply tree, declared here
    // so that a command and its typed faces are one declaration.
    std::vector<std::shared_ptr<const TypedMethod>> typed;
  };

  // Per-command figures, counted by the dispatcher for every finished call.
  struct Figures {
    std::atomic<uint64_t>* calls;
    // Calls that ended in an MI code >= 400, "not available" excepted, or failed.
    std::atomic<uint64_t>* errors;
    // Total microseconds from dispatch to the end of the reply (async waits included).
    std::atomic<uint64_t>* time_us;
  };

  explicit Command(Spec spec);

  const std::string& name() const { return spec_.name; }
  const std::string& module() const { return spec_.module; }
  const std::string& help() const { return spec_.help; }
  const std::vector<ParamSpec>& params() const { return spec_.params; }
  uint32_t flags() const { return spec_.flags; }
  bool has_flag(CommandFlag f) const { return (spec_.flags & f) != 0; }
  const Spec& spec() const { return spec_; }

  size_t min_args() const { return min_args_; }
  // std::numeric_limits<size_t>::max() when a parameter repeats.
  size_t max_args() const { return max_args_; }

  uint64_t calls() const { return figures_.calls->load(std::memory_order_relaxed); }
  uint64_t errors() const { return figures_.errors->load(std::memory_order_relaxed); }
  uint64_t time_us() const { return figures_.time_us->load(std::memory_order_relaxed); }
  // Counts one finished call.
  void CountCall(bool error, uint64_t micros) const;

 private:
  friend class Registry;

  Spec spec_;
  size_t min_args_ = 0;
  size_t max_args_ = 0;
  // Local cells until Registry::UseFigureCells() points figures_ at shared ones.
  mutable std::atomic<uint64_t> local_cells_[3] = {0, 0, 0};
  Figures figures_{&local_cells_[0], &local_cells_[1], &local_cells_[2]};
};

// A typed method with the command it converts to (see registry/typed_method.h).
struct TypedBinding {
  const Command* command;
  const TypedMethod* method;
};

// A subsystem's health, asked by the gRPC health service (grpc.health.v1, name =
// `name`, e.g. "sipd.usrloc"): OK = serving; an error says why not (logged when the
// status changes). Checks run in the MI gRPC process, about once a second, one at a
// time on a thread of their own: they may block briefly (a database probe) but should
// answer within a second.
struct HealthCheck {
  std::string name;
  std::function<absl::Status()> check;
};

class Registry {
 public:
  // Adds a command. AlreadyExistsError for a duplicate name or a typed method already
  // declared, InvalidArgumentError for an empty name, a missing handler, or a typed
  // method that does not match its proto (TypedMethod::Check()).
  absl::Status Register(Command::Spec spec);

  // nullptr if no such command is loaded. Exact, case-sensitive match.
  const Command* Find(std::string_view name) const;

  // The typed method whose HTTP/2 path is `path` ("/sipd.core.v1.CoreService/GetUptime"),
  // or nullopt.
  std::optional<TypedBinding> FindTyped(std::string_view path) const;
  // Every typed method, in declaration order.
  const std::vector<TypedBinding>& typed_methods() const { return typed_; }
  // The services that have typed methods ("sipd.core.v1.CoreService", ...), in the order
  // their first method was declared.
  std::vector<std::string> typed_services() const;

  // Adds a health check (see HealthCheck). InvalidArgumentError for an empty name or
  // check; a second check of the same name is ANDed with the first.
  absl::Status AddHealthCheck(HealthCheck check);
  const std::vector<HealthCheck>& health_checks() const { return health_checks_; }

  // All commands in registration order.
  const std::vector<std::unique_ptr<Command>>& commands() const { return commands_; }

  // Moves every registered command's figures into counters of `stats` (group "mi":
  // `<command>_calls`, `<command>_errors`, `<command>_time_us`), so that all processes
  // count into the same shared cells and get_statistics shows them. Call once, after
  // the last command is registered and before the first fork.
  absl::Status UseFigureCells(StatsRegistry& stats);

 private:
  std::vector<std::unique_ptr<Command>> commands_;
  absl::flat_hash_map<std::string, const Command*> by_name_;
  std::vector<TypedBinding> typed_;
  absl::flat_hash_map<std::string, TypedBinding> typed_by_path_;
  std::vector<HealthCheck> health_checks_;
};

}  // namespace sipd::mi
