// Helpers the fuzz targets share: an invariant check that libFuzzer reports as a
// crash, a reply writer that keeps nothing, MI arguments one per line, and the
// "steps" input format of the targets that replay a sequence of events.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_split.h"
#include "registry/command.h"
#include "registry/reply_writer.h"

namespace sipd::fuzz {

// The target's world, made at the first input and never destroyed (libFuzzer exits
// without unwinding, and a world holds shared memory and processes' state).
template <typename World>
World& Leaked() {
  static World* world = new World();
  return *world;
}

// A broken invariant: traps (libFuzzer reports it as a crash and keeps the input).
inline void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// Takes a reply and keeps nothing (the targets check behaviour, not reply text).
class DiscardReply final : public mi::ReplyWriter {
 public:
  void WriteStatus(const mi::Reply&) override {}
  void WriteNode(const mi::Node&, int) override {}
};

// The names of module `module`'s MI commands, in registration order.
inline std::vector<std::string> CommandsOf(const mi::Registry& registry, std::string_view module) {
  std::vector<std::string> names;
  for (const auto& command : registry.commands()) {
    if (command->module() == module) names.push_back(command->name());
  }
  return names;
}

// A request (no args_error).
inline mi::Request MakeRequest(std::string command, std::vector<mi::Argument> args = {}) {
  mi::Request request;
  request.command = std::move(command);
  request.args = std::move(args);
  return request;
}

// A request for one of `commands` (not empty), picked by `byte`, without arguments.
inline mi::Request PickCommand(const std::vector<std::string>& commands, uint8_t byte) {
  return MakeRequest(commands[byte % commands.size()]);
}

// Appends the lines of `text` (split at `separator`, LF unless said) to `request` as
// positional arguments, at most `max` in all.
inline void AddArgumentLines(std::string_view text, size_t max, mi::Request& request,
                             char separator = '\n') {
  if (text.empty()) return;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(text.data(), text.size()), separator)) {
    if (request.args.size() >= max) break;
    request.args.push_back(mi::Argument{"", std::string(line)});
  }
}

// The request an MI input spells: its first byte picks one of `commands` (PickCommand),
// the rest are its arguments (AddArgumentLines). REQUIRES: !payload.empty().
inline mi::Request RequestFrom(const std::vector<std::string>& commands, std::string_view payload,
                               size_t max_args) {
  mi::Request request = PickCommand(commands, static_cast<uint8_t>(payload[0]));
  AddArgumentLines(payload.substr(1), max_args, request);
  return request;
}

// One step of a "steps" input: op (1 byte), length (2 bytes, little endian), then that
// many payload bytes, cut at the end of the input.
struct Step {
  uint8_t op = 0;
  std::string_view payload;
};

// Reads the step at `*pos` and moves past it; false when no whole header is left.
inline bool NextStep(const uint8_t* data, size_t size, size_t* pos, Step* step) {
  if (*pos + 3 > size) return false;
  const size_t at = *pos;
  const size_t length = std::min<size_t>(data[at + 1] | (data[at + 2] << 8), size - at - 3);
  step->op = data[at];
  step->payload = std::string_view(reinterpret_cast<const char*>(data) + at + 3, length);
  *pos = at + 3 + length;
  return true;
}

// Calls `fn(step)` for every whole step of the input, in order.
template <typename Fn>
void ForEachStep(const uint8_t* data, size_t size, Fn fn) {
  size_t pos = 0;
  Step step;
  while (NextStep(data, size, &pos, &step)) fn(step);
}

}  // namespace sipd::fuzz
