// The MI FIFO transport (spec 3): request FIFO, text request parsing, reply FIFOs.
//
// Request framing (spec 3.2), read strictly sequentially:
//   :command:reply_name\n      reply FIFO = reply_dir + reply_name
//   argument lines             see legacy-transports/text/argument_parser.h
//   \n                         end of request
//
// Differences from OpenSIPS 1.11, all deliberate:
//   * An empty CRLF line (`\r\n`) also ends a request (1.11 skips it and hangs), unless
//     a quoted value is open (then the CRLF belongs to the value).
//   * After a parse error only the rest of the faulty request is discarded (1.11
//     discards one more request).
//   * A request that stays incomplete for `request_timeout` (no byte arrives) is
//     abandoned: `400 parse error in command 'X'\n` if its reply FIFO is open, and the
//     reader starts over with the next command line. A stuck or truncated client thus
//     cannot swallow the next client's request or block the FIFO forever.
//   * Reply FIFOs are written without blocking (see fifo_reply_writer.h); a client that
//     never reads costs at most `reply_timeout` of stall.
//   * A command line longer than 1023 bytes discards its whole request (1.11 reads the
//     remainder as the next command line).
//   * A single reply line longer than the 8 KB buffer is written in pieces.
//
// Errors written to the reply FIFO (single line, no empty line): `500 command 'X' not
// available`, `400 parse error in command 'X'`, `500 command 'X' failed`. A malformed
// command line, an unsafe reply name (empty, or containing `.`, `/` or `\`) or a reply
// FIFO that cannot be opened (5 attempts, 80 ms apart; it must be a FIFO with one link
// and not a symlink) get no reply; the request is discarded and logged.
//
// Thread-safety: a FifoServer is used by one thread (the MI FIFO process).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "legacy-transports/fifo/fifo_reply_writer.h"
#include "legacy-transports/text/argument_parser.h"
#include "legacy-transports/text/module_params.h"
#include "registry/dispatcher.h"

namespace sipd::legacy {

struct FifoConfig {
  // Path of the request FIFO (mandatory).
  std::string fifo_name;
  // Mode 0600 by default, owner inherited.
  FileAccess access;
  // Directory of the reply FIFOs, ending in '/'.
  std::string reply_dir = "/tmp/";
  std::string reply_indent = "\t";
  // Longest time a reply waits for the client to read (no progress).
  std::chrono::milliseconds reply_timeout{2000};
  // Longest silence inside an incomplete request; 0 = wait forever (1.11).
  std::chrono::milliseconds request_timeout{2000};
};

// Longest command line, LF included (spec 3.1: 1024-byte buffer).
inline constexpr size_t kFifoMaxCommandLine = 1024;

// Creates the request FIFO with config.access (mode independent of the umask): a stale
// FIFO at the path is replaced; a symlink or any other kind of file is refused with
// FailedPrecondition (nothing is removed).
absl::Status PrepareRequestFifo(const FifoConfig& config);

// FailedPrecondition unless `reply_dir` is an existing directory.
absl::Status CheckReplyDir(const std::string& reply_dir);

class FifoServer {
 public:
  FifoServer(const FifoConfig& config, mi::Dispatcher& dispatcher);
  ~FifoServer();
  FifoServer(const FifoServer&) = delete;
  FifoServer& operator=(const FifoServer&) = delete;

  // Opens the request FIFO for reading and keeps a write descriptor on it so the reader
  // never sees EOF. Creates the FIFO first if it is missing. FailedPrecondition if the
  // path is not a FIFO.
  absl::Status Open();

  // Serves requests until stopping() returns true. It is polled, and on_wakeup() is
  // called, at least every 200 ms. REQUIRES: Open() succeeded; SIGPIPE is ignored.
  void Run(const std::function<bool()>& stopping, const std::function<void()>& on_wakeup);

 private:
  enum class State {
    kIdle,       // expecting a command line
    kArguments,  // reading argument lines of a request whose reply FIFO is open
    kBadArgs,    // arguments did not parse: the dispatcher decides at the end
    kDiscard,    // skipping to the end of a rejected request
  };

  void ReadInput();
  void ProcessInput();
  size_t LineLimit() const;
  void OnOverlongLine();
  void HandleLine(std::string_view line);
  void HandleCommandLine(std::string_view line);
  void HandleArgumentLine(std::string_view line);
  void OnArgumentError(const absl::Status& why);
  void RunRequest();
  // How long poll() may wait: the poll interval, or less while a request is incomplete.
  int PollTimeoutMs() const;
  // Abandons a request that has been silent for request_timeout.
  void CheckRequestTimeout();
  bool RequestInProgress() const;
  // -1 if the reply FIFO cannot be used (logged).
  int OpenReplyFifo(std::string_view reply_name);
  void CloseReply();

  const FifoConfig& config_;
  mi::Dispatcher& dispatcher_;
  int read_fd_ = -1;
  int keep_fd_ = -1;
  int reply_fd_ = -1;

  static constexpr size_t kInputSize = 16384;
  std::unique_ptr<char[]> input_;
  size_t input_begin_ = 0;
  size_t input_end_ = 0;
  // Dropping the rest of an over-long line, up to its LF.
  bool skipping_line_ = false;
  std::chrono::steady_clock::time_point last_input_;

  State state_ = State::kIdle;
  mi::Request request_;
  ArgumentParser parser_{kFifoMaxArgumentBytes};
  FifoReplyWriter writer_;
  std::string reply_path_;
};

}  // namespace sipd::legacy
