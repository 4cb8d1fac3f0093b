// mi::Dispatcher: the one door. Every transport hands every request to Start() and
// only parses bytes and writes replies; every policy decision is made here:
//
//   lookup ("not available") -> authorization hook -> no-input rule -> parse errors
//   -> answer_before_args -> argument checks -> inline or worker -> handler
//   -> (async wait | pulled stream | whole reply) -> figures and audit hook
//
// A call is an Exchange. Start() returns it either ready (the common, synchronous case:
// nothing to wait for) or running (on a worker thread, or waiting for an async reply
// from another process); the transport then keeps its caller, goes on serving others,
// and is told through the `on_ready` callback, which runs inside RunCompletions() on
// the transport's own thread. RunCompletions() is due whenever wake_fd() is readable
// and at NextDeadline() (async timeouts).
//
// Replies reach the transport in one of three ways (Delivery):
//   kPull    the transport calls Exchange::WriteNext() each time its client has taken
//            the previous part; a streaming command produces its next part only then
//            (FIFO, gRPC ExecuteStream). A waiting stream holds no thread and no lock.
//   kWriter  the whole reply is written into the transport's ReplyWriter before the
//            exchange is ready (datagram, XML-RPC); the writer can stop a stream early
//            by reporting full().
//   kTree    the whole tree is in Exchange::reply() when ready (gRPC Execute).
//
// Outcomes the transport writes in its own error form: kNotAvailable (unknown command),
// kParseError (its arguments did not parse), kFailed (the handler returned nothing,
// threw nothing useful, or the async reply never came). Everything else is kReply with
// an MI code: the command's own, or the dispatcher's 401/403 (authorization), 400 (argument
// count), 202 (async command on a transport that cannot wait), 503 (worker queue full).
//
// Thread-safety: Start() may be called from several threads at once (gRPC); an
// Exchange belongs to the thread that started it (or one thread at a time, e.g. a gRPC
// call's serialised callbacks); RunCompletions() runs the callbacks on its caller's
// thread and may run concurrently with Start() and with Cancel() of another exchange.
// In a multi-threaded transport `on_ready` can run on the RunCompletions() thread before
// Start() has returned: guard the transport's call object with its own lock. To know
// when the call object may be freed, use callback_expected() and Cancel()'s result:
// exactly one of "on_ready runs" and "Cancel() returns true" happens for such an
// exchange, so the object stays alive until its callback has run or was prevented.
// Single-threaded transports (one loop calls Start, RunCompletions and Cancel) have none
// of these races.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "registry/async.h"
#include "registry/call_context.h"
#include "registry/command.h"
#include "registry/reply_writer.h"
#include "registry/worker_pool.h"

namespace sipd::mi {

enum class Outcome {
  // reply() is the reply to write (any code).
  kReply,
  // Unknown command; reply() = 500 "command 'X' not available".
  kNotAvailable,
  // The transport's arguments did not parse; reply() = 400 "parse error in command 'X'".
  kParseError,
  // No reply ("returned nothing", spec 1.5; an async reply that failed or timed out);
  // reply() = 500 "command 'X' failed".
  kFailed,
};

enum class Delivery { kPull, kWriter, kTree };

struct DispatcherOptions {
  // Threads for calls that may block (see worker_pool.h); 0 = run them inline.
  size_t workers = 0;
  size_t max_queued = 256;
  // Longest wait for an async reply when the caller set no earlier deadline (1.11's
  // XML-RPC waits 240 s).
  std::chrono::milliseconds async_timeout{240000};
};

struct DispatchHooks {
  // Decides whether the caller may run the command, from the command's declared flags
  // and the caller's credentials; fills context.peer.principal and .role with who the
  // caller turned out to be. OK, or PermissionDenied (-> 403) / Unauthenticated (-> 401)
  // whose message is the reason text. Called on every path; empty = allow everything.
  std::function<absl::Status(CallContext&, const Command&)> authorize;
  // Called once per finished (or refused) call of a command flagged kMutating, with
  // the final MI code (0 when the caller went away first).
  std::function<void(const CallContext&, const Command&, const Request&, uint32_t code)> audit;
};

class Dispatcher;
struct CallState;

class Exchange {
 public:
  using ReadyFn = std::function<void()>;

  // A call still running is cancelled (see Cancel()).
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // The reply (or the outcome) is there to be written.
  bool ready() const;
  // REQUIRES: ready(). May turn from kReply to kFailed during a pulled stream (then the
  // part already written stays written; the transport appends its failure form).
  Outcome outcome() const;
  const std::string& command_name() const;
  // nullptr for kNotAvailable.
  const Command* command() const;
  const CallContext& context() const;
  // REQUIRES: ready(). Code and reason always; the nodes that are not written yet.
  Reply& reply();

  // kPull: writes the next part of a kReply reply into `writer` (the status line first,
  // then one flush of a streamed reply, spec 1.7: EndFlush() after each part but the
  // last, EndReply() after the last). Returns true when nothing more remains, or when a
  // stream failed midway (outcome() is kFailed then). kWriter/kTree: nothing to do,
  // returns true. REQUIRES: ready().
  bool WriteNext(ReplyWriter& writer);

  // True when Start() returned the exchange not ready with an on_ready: exactly one of
  // "on_ready is called" and "a later Cancel() returns true" then happens.
  bool callback_expected() const { return callback_expected_; }

  // The caller is gone: trips the call's cancellation token, releases an async slot,
  // drops a stream's producer. Returns true if this prevented a pending on_ready call
  // (false if there was none, or it has already started on another thread: it then
  // runs to its end). Idempotent.
  bool Cancel();

 private:
  friend class Dispatcher;
  Exchange(Dispatcher* dispatcher, std::shared_ptr<CallState> state)
      : dispatcher_(dispatcher), state_(std::move(state)) {}

  Dispatcher* dispatcher_;
  std::shared_ptr<CallState> state_;
  bool callback_expected_ = false;
};

struct DispatchResult {
  Outcome outcome = Outcome::kReply;
  Reply reply;
};

class Dispatcher {
 public:
  using Clock = std::chrono::steady_clock;

  // `async` may be null: a LocalAsyncBackend is made for this dispatcher. `registry`
  // and `async` must outlive it.
  explicit Dispatcher(const Registry& registry, AsyncBackend* async = nullptr,
                      DispatcherOptions options = {}, DispatchHooks hooks = {});
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Starts `request`. With Delivery::kWriter, `writer` receives the whole reply (see
  // file comment) and must stay untouched by the transport until ready(). `on_ready`
  // is called later, from RunCompletions(), only if the exchange was not ready when
  // Start() returned.
  std::unique_ptr<Exchange> Start(CallContext context, Request request, Delivery delivery,
                                  ReplyWriter* writer = nullptr, Exchange::ReadyFn on_ready = {});

  // Readable when RunCompletions() has work.
  int wake_fd() const { return async_->wake_fd(); }
  // Delivers finished worker calls and async replies, and times out async calls whose
  // deadline passed: each becomes ready and its on_ready runs here.
  void RunCompletions();
  // The earliest async deadline (Clock::time_point::max() if none).
  Clock::time_point NextDeadline() const;

  // Runs a request to its end on the calling thread (waiting on wake_fd() for an async
  // reply): for in-process callers and tests. With `writer` the reply is written into
  // it (Delivery::kWriter), else returned whole.
  DispatchResult Run(const CallContext& context, Request request, ReplyWriter* writer = nullptr);
  DispatchResult Run(Request request, ReplyWriter* writer = nullptr);

  // Whether the caller may run `command`, by the authorize hook alone: nothing runs and
  // nothing is counted or audited (for routes that show what a command's callers may
  // see, like httpd's /metrics). nullopt when allowed, or when there is no such command;
  // else the 401/403 reply a call would get. Fills context.peer as a call does.
  std::optional<Reply> Refusal(CallContext& context, std::string_view command) const;

  const Registry& registry() const { return registry_; }
  AsyncBackend& async() { return *async_; }
  // Calls waiting for an async reply or a worker (for tests and ps-like figures).
  size_t running() const;

 private:
  friend class Exchange;

  // The authorize hook's verdict on `command` as a 401/403 reply (logged); nullopt if
  // allowed.
  std::optional<Reply> Refuse(CallContext& context, const Command& command) const;
  void Finish(CallState& state, Outcome outcome, Reply reply);
  void RunHandler(const std::shared_ptr<CallState>& state);
  void AfterHandler(const std::shared_ptr<CallState>& state);
  void PullWhole(CallState& state);
  void CompleteAsync(CallState& state, AsyncResult result);
  void MarkReady(CallState& state);
  void Account(CallState& state);
  bool Cancel(CallState& state);

  const Registry& registry_;
  std::unique_ptr<LocalAsyncBackend> own_async_;
  AsyncBackend* async_;
  const DispatcherOptions options_;
  const DispatchHooks hooks_;
  std::unique_ptr<WorkerPool> pool_;

  mutable std::mutex mu_;
  // Calls waiting for an async reply, by ticket slot.
  std::map<uint32_t, std::shared_ptr<CallState>> waiting_;
  // Calls whose worker finished, to be made ready by RunCompletions().
  std::vector<std::shared_ptr<CallState>> finished_;
  size_t on_workers_ = 0;
};

}  // namespace sipd::mi
