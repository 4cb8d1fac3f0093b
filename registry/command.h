// MI command declarations and the command registry.
//
// A command is declared once (name, module, help, parameters, flags, handler); `which`,
// `help`, gRPC ListCommands/DescribeCommand and the argument checks of Dispatch() all
// read that one declaration.
//
// Thread-safety: commands are registered in the attendant before the first fork and the
// registry is read-only afterwards; Find()/commands() may be called from any thread.
// Call counters are atomic and per process.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "registry/tree.h"

namespace sipd::mi {

class ReplyWriter;
class Command;

// One request argument (spec 1.2). Either part may be empty, not both.
struct Argument {
  std::string name;
  std::string value;
  friend bool operator==(const Argument&, const Argument&) = default;
};

struct Request {
  std::string command;
  std::vector<Argument> args;
};

enum CommandFlag : uint32_t {
  // MI_NO_INPUT_FLAG: arguments are ignored and not checked.
  kNoInput = 1u << 0,
  // The command changes state (otherwise read-only).
  kMutating = 1u << 1,
  // MI_ASYNC_RPL_FLAG: may complete later from another process.
  kAsync = 1u << 2,
  // Flushes its reply incrementally (large output).
  kStreaming = 1u << 3,
};

struct ParamSpec {
  enum class Arity { kRequired, kOptional, kRepeated };
  std::string name;
  Arity arity = Arity::kRequired;
  std::string help;
};

// What a handler sees while it runs.
class Call {
 public:
  Call(const Command& command, const std::vector<Argument>& args, ReplyWriter* writer)
      : command_(command), args_(args), writer_(writer) {}

  const Command& command() const { return command_; }
  const std::vector<Argument>& args() const { return args_; }
  size_t arg_count() const { return args_.size(); }
  // Value of argument `i`. REQUIRES: i < arg_count().
  const std::string& arg(size_t i) const { return args_[i].value; }

  Reply& reply() { return reply_; }

  // Sends the finished part of reply() to the transport if it streams (spec 1.7);
  // a no-op for transports that want the whole tree.
  void Flush();
  bool streaming() const { return writer_ != nullptr; }

 private:
  const Command& command_;
  const std::vector<Argument>& args_;
  ReplyWriter* writer_;
  Reply reply_;
};

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

  uint64_t calls() const { return calls_.load(std::memory_order_relaxed); }
  void CountCall() const { calls_.fetch_add(1, std::memory_order_relaxed); }

 private:
  Spec spec_;
  size_t min_args_ = 0;
  size_t max_args_ = 0;
  mutable std::atomic<uint64_t> calls_{0};
};

class Registry {
 public:
  // Adds a command. AlreadyExistsError for a duplicate name, InvalidArgumentError for an
  // empty name or a missing handler.
  absl::Status Register(Command::Spec spec);

  // nullptr if no such command is loaded. Exact, case-sensitive match.
  const Command* Find(std::string_view name) const;

  // All commands in registration order.
  const std::vector<std::unique_ptr<Command>>& commands() const { return commands_; }

 private:
  std::vector<std::unique_ptr<Command>> commands_;
  absl::flat_hash_map<std::string, const Command*> by_name_;
};

}  // namespace sipd::mi
