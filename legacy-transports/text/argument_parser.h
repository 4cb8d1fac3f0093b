// Argument lines of the OpenSIPS text MI request syntax, shared by FIFO and datagram
// (spec 3.2 rules 2-7, 4.2).
//
// One line = one argument node:
//   value                      nameless node (trimmed)
//   name::value                named node (name right-trimmed, value trimmed)
//   name::                     name-only node
//   :: value                   empty name -> nameless node
//   "quoted value"             `\"` is an escaped quote; no other escapes
//   name::"quoted value"
// A quoted value without its closing quote continues on the next line and the line
// break bytes (LF or CRLF) become part of the value: this is how SIP header blocks are
// passed. A value containing `::` or `"` must be quoted (IPv6: `sip:[::1]`).
//
// Errors (all InvalidArgument, reported by the transports as "400 parse error"):
// a `"` inside an unquoted name or value, text after a closing quote, an empty line
// inside a quoted value, a node with neither name nor value (`""`, `::`), arguments
// longer than the byte limit, and a quoted value still open at the end of the request.
//
// Deliberate difference from 1.11: a value may start with `\"` (1.11 skips the escape
// check for the second byte of a quoted value and rejects it).
//
// Thread-safety: one parser per thread; it keeps per-request state.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "registry/command.h"

namespace sipd::legacy {

// FIFO: all argument bytes of one request, line ends included (spec 3.1).
inline constexpr size_t kFifoMaxArgumentBytes = 8192;

class ArgumentParser {
 public:
  explicit ArgumentParser(size_t max_bytes) : max_bytes_(max_bytes) {}

  // Starts a request whose arguments are appended to `*args` (cleared first; its
  // capacity is kept so a reused vector does not allocate).
  void Begin(std::vector<mi::Argument>* args);

  // Feeds one line including its line end (LF or CRLF) if it has one (the last line of
  // a datagram may have none). Lines that are blank outside a quoted value are skipped.
  // After an error the request is broken: further lines are ignored until Begin().
  absl::Status FeedLine(std::string_view line);

  // Ends the request. InvalidArgument if a quoted value is still open.
  absl::Status Finish();

  // True while a quoted value is open (the next line continues it).
  bool in_quoted_value() const { return in_quote_; }

  // Parses a whole argument block (datagram body): every line, then Finish().
  absl::Status ParseAll(std::string_view text, std::vector<mi::Argument>* args);

 private:
  // Scans quoted-value bytes (after the opening quote, or a continuation line).
  absl::Status ScanQuoted(std::string_view segment);
  absl::Status AddNode(std::string_view name, std::string_view value);
  absl::Status Fail(std::string_view why);

  const size_t max_bytes_;
  std::vector<mi::Argument>* args_ = nullptr;
  size_t bytes_ = 0;
  bool in_quote_ = false;
  bool failed_ = false;
};

}  // namespace sipd::legacy
