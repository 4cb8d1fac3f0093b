// The one dispatch path: every transport runs every command through Dispatch().
//
//   lookup -> argument checks -> handler -> (stream chunks) -> result
//
// Dispatch is the only place that looks a command up, checks its argument count against
// its declaration, runs the handler, turns exceptions into 500 replies, counts the call
// and logs it.
//
// Thread-safety: safe to call concurrently (the registry is read-only; handlers guard
// the shared state they touch).
#pragma once

#include "registry/command.h"
#include "registry/reply_writer.h"

namespace sipd::mi {

enum class Outcome {
  // reply is the command's reply (any code). If a writer was given it has been written
  // completely (status, nodes, EndReply).
  kReply,
  // The command is not loaded. reply = 500 "command 'X' not available"; nothing written.
  kNotAvailable,
  // The handler returned an error status ("returned nothing", spec 1.5).
  // reply = 500 "command 'X' failed"; nothing more written.
  kFailed,
};

struct DispatchResult {
  Outcome outcome = Outcome::kReply;
  Reply reply;
};

// Runs `request`. With `writer` == nullptr the whole tree is returned in result.reply;
// otherwise the reply is streamed through `writer` as the handler flushes, and finished
// after it returns (for Outcome::kReply only: the transport writes the other outcomes in
// its own error form).
DispatchResult Dispatch(const Registry& registry, const Request& request,
                        ReplyWriter* writer = nullptr);

}  // namespace sipd::mi
