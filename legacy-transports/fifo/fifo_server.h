// The MI FIFO transport (spec 3): request FIFO, text request parsing, reply FIFOs.
//
// Request framing (spec 3.2), read strictly sequentially (the request FIFO is one byte
// stream shared by every client):
//   :command:reply_name\n      reply FIFO = reply_dir + reply_name
//   argument lines             see legacy-transports/text/argument_parser.h
//   \n                         end of request
//
// The process is one event loop (epoll) over the request FIFO, every reply FIFO that is
// still being written or waited on, and the dispatcher's wake descriptor:
//
//   request FIFO readable -> parse -> open the reply FIFO (non-blocking) -> Start(kPull)
//   reply FIFO writable   -> write what is buffered -> below the low-water mark: pull the
//                            next part of the reply (WriteNext) -> ... -> close (EOF)
//   wake_fd / deadline    -> RunCompletions(): a worker or an async reply is ready
//   timers                -> reply FIFO open retries, stall and total deadlines
//
// Many requests are in flight at once: a client that reads slowly, or not at all, holds
// only its own reply; every other client is served meanwhile. Per client the server keeps
// a record (about 300 bytes), the reply FIFO path, the call (the dispatcher's exchange)
// and an output buffer. A streamed reply (ul_dump: 50 records per part) is pulled part by
// part only when the buffer has drained below kFifoLowWater (8 KB), so a stalled client
// costs at most the low-water mark plus one part (about 20-40 KB for ul_dump) in this
// process and nothing in the producer (it holds no lock and no thread between parts).
// An unstreamed reply is one part: the handler built it whole, it is rendered whole and
// its tree freed. The kernel keeps up to a pipe buffer (64 KB) in the reply FIFO.
//
// A client is cut (exchange cancelled: async slot released, stream dropped; reply FIFO
// closed; logged) when:
//   * its reply FIFO took no byte for `reply_timeout` while output was waiting (stall);
//   * its reply is not complete `reply_deadline` after its request ended (total deadline;
//     also the deadline of an async or worker call);
//   * its reader went away (EPIPE / EPOLLERR): this also reaches a handler still running
//     (its cancellation token) and an async call waiting for its reply.
//
// Differences from OpenSIPS 1.11, all deliberate:
//   * Requests do not wait for each other (1.11 serves one request at a time and writes
//     replies in blocking mode). Requests naming the same reply FIFO are still answered
//     one after the other (their bytes never interleave).
//   * Async commands (spec 3.7): 1.11 does not open the reply FIFO for them and the
//     completing process (a SIP worker, the timer) opens and writes it. sipd opens it
//     before the call like for any command and keeps it in the MI FIFO process; the
//     completion comes back through shared memory and the dispatcher's wake-up, and this
//     process writes it. A reader that goes away meanwhile cancels the call.
//   * The reply FIFO open is retried (ENXIO, 5 attempts 80 ms apart) from loop timers,
//     never by sleeping; the request's arguments are read meanwhile.
//   * An empty CRLF line (`\r\n`) also ends a request (1.11 skips it and hangs), unless
//     a quoted value is open (then the CRLF belongs to the value).
//   * After a parse error only the rest of the faulty request is discarded (1.11
//     discards one more request).
//   * A request that stays incomplete for `request_timeout` (no byte arrives) is
//     abandoned: `400 parse error in command 'X'\n` if its reply FIFO is open, and the
//     reader starts over with the next command line.
//   * A request cut short by another client (resynchronisation): when the FIFO was found
//     empty while a request was incomplete (the sender paused), and the next bytes that
//     arrive begin with a line of the strict command-line form `:name:reply\n` (name of
//     [A-Za-z0-9_], reply of [A-Za-z0-9_-], CRLF accepted), that line starts a new
//     request: the incomplete one (even mid-line) gets `400 parse error in command 'X'\n`
//     if its reply FIFO is open, and the new one runs. Without this a sender that never
//     writes its final empty line would swallow the next client's command line as an
//     argument. An argument line of that form written by the same client after a pause
//     is thus taken as a new request: quote it.
//   * A command line longer than 1023 bytes discards its whole request (1.11 reads the
//     remainder as the next command line).
//   * A single reply line longer than the 8 KB buffer is written whole.
//
// Errors written to the reply FIFO (single line, no empty line): `500 command 'X' not
// available`, `400 parse error in command 'X'`, `500 command 'X' failed`. A malformed
// command line, an unsafe reply name (empty, or containing `.`, `/` or `\`) or a reply
// FIFO that cannot be opened (5 attempts, 80 ms apart; it must be a FIFO with one link
// and not a symlink) get no reply; the request is discarded and logged. So is a request
// beyond kFifoMaxClients requests in flight.
//
// Thread-safety: a FifoServer is used by one thread (the MI FIFO process).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
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
  // Longest time a reply may wait for the client to read (no progress) before the client
  // is cut.
  std::chrono::milliseconds reply_timeout{2000};
  // Longest time from the end of a request to the end of its reply (async wait and
  // streaming included) before the client is cut.
  std::chrono::milliseconds reply_deadline{60000};
  // Longest silence inside an incomplete request; 0 = wait forever (1.11).
  std::chrono::milliseconds request_timeout{2000};
};

// Longest command line, LF included (spec 3.1: 1024-byte buffer).
inline constexpr size_t kFifoMaxCommandLine = 1024;
// The next part of a streamed reply is pulled when less than this is waiting.
inline constexpr size_t kFifoLowWater = FifoReplyWriter::kBufferSize;
// Requests in flight at once (parsed, not fully answered); more are discarded, logged.
inline constexpr size_t kFifoMaxClients = 4096;

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
  // called, at least every 200 ms. Returns an error only if the event loop itself fails.
  // Every client still in flight is cancelled on return. REQUIRES: Open() succeeded;
  // SIGPIPE is ignored.
  absl::Status Run(const std::function<bool()>& stopping, const std::function<void()>& on_wakeup);

  // Requests in flight that wait for something (their reply FIFO, their call, their
  // reader). May be read from any thread (tests).
  size_t clients_in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  // Fuzzing: `bytes` as if read from the request FIFO (in reads of at most the input
  // buffer's size), then a pause. Needs no Open(): reply FIFOs that cannot be opened
  // discard their requests as in service.
  void FeedForFuzzing(std::string_view bytes);

 private:
  using Clock = std::chrono::steady_clock;
  struct Client;

  enum class State {
    kIdle,       // expecting a command line
    kArguments,  // reading argument lines of a request
    kBadArgs,    // arguments did not parse: the dispatcher decides at the end
    kDiscard,    // skipping to the end of a rejected request
  };

  // --- request FIFO ---
  void ReadInput();
  // `n` bytes were appended at input_end_ by a read that had `room`: processes them.
  // False when the read drained the FIFO (a pause follows).
  bool TakeInput(size_t n, size_t room);
  // A pause was seen and `fresh` (bytes just read) begins a new request: abandons the
  // incomplete one. Returns true if it did.
  bool ResyncOnNewCommandLine(std::string_view fresh);
  void ProcessInput();
  size_t LineLimit() const;
  void OnOverlongLine();
  void HandleLine(std::string_view line);
  void HandleCommandLine(std::string_view line);
  void HandleArgumentLine(std::string_view line);
  void OnArgumentError(const absl::Status& why);
  void EndRequest();
  // Gives up the request being read; `answer` = write `400 parse error` to its reply FIFO.
  void AbandonRequest(bool answer);
  bool RequestInProgress() const;
  void CheckRequestTimeout(Clock::time_point now);

  // --- clients ---
  std::unique_ptr<Client> NewClient();
  void Recycle(std::unique_ptr<Client> client);
  // One non-blocking open attempt of the reply FIFO: true when open, false when the
  // client should try again later (ENXIO); a client that cannot be served is marked
  // failed (logged).
  bool TryOpenReply(Client& client);
  // The request of `client` is complete: serve it now, or park it until its reply FIFO
  // is open or free.
  void Admit(std::unique_ptr<Client> client);
  // Starts the call and writes what it can. Returns true if the client was parked
  // (still at work), false if it is done.
  bool Dispatch(std::unique_ptr<Client> client);
  // Writes `client`'s reply as far as the reader takes it. True when the reply is
  // complete (or the client is gone: then `client.failed` says why).
  bool Pump(Client& client);
  // Renders the next part of the reply into the client's buffer.
  void FillOutput(Client& client);
  // Keeps a client that waits for something; false if it could not be kept (then it is
  // gone, logged).
  bool Park(std::unique_ptr<Client> client);
  std::unique_ptr<Client> Unpark(uint64_t id);
  bool Watch(Client& client);
  // The parked client is done (answered, or cut with `why` non-empty): cancels its call,
  // closes its reply FIFO, starts the next request for the same reply FIFO.
  void Finish(uint64_t id, std::string_view why);
  void StartNext(const std::string& path);
  void OnClientEvent(uint64_t id, uint32_t events);
  void OnReady();
  void ArmTimer(Clock::time_point when);
  void RunTimers(Clock::time_point now);
  int TimeoutMs(Clock::time_point now, Clock::time_point async_deadline) const;
  void CancelAll();

  const FifoConfig& config_;
  mi::Dispatcher& dispatcher_;
  int read_fd_ = -1;
  int keep_fd_ = -1;
  int epoll_fd_ = -1;

  static constexpr size_t kInputSize = 16384;
  std::unique_ptr<char[]> input_;
  size_t input_begin_ = 0;
  size_t input_end_ = 0;
  // Dropping the rest of an over-long line, up to its LF.
  bool skipping_line_ = false;
  // The FIFO was found empty while a request was incomplete (see the resync rule).
  bool paused_ = false;
  Clock::time_point last_input_;
  // When the last bytes were read (or a request timed out).
  Clock::time_point read_at_;

  State state_ = State::kIdle;
  // The request being read (its reply FIFO may be open already).
  std::unique_ptr<Client> current_;
  ArgumentParser parser_{kFifoMaxArgumentBytes};
  FifoReplyWriter writer_;

  uint64_t next_id_ = 2;  // 0 and 1 tag the request FIFO and the wake descriptor
  // Clients waiting for something: their reply FIFO to open or free up, their call, or
  // their reader.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Client>> clients_;
  std::atomic<size_t> in_flight_{0};
  // Reply FIFO path -> how many parked clients use it. A request for a path in here waits
  // (kQueued) until the earlier ones are answered.
  absl::flat_hash_map<std::string, size_t> path_users_;
  // Clients whose call became ready inside RunCompletions().
  std::vector<uint64_t> ready_;
  std::vector<std::unique_ptr<Client>> spare_;
  // When RunTimers() is due next.
  Clock::time_point next_timer_ = Clock::time_point::max();
};

}  // namespace sipd::legacy
