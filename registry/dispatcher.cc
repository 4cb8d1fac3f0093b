#include "registry/dispatcher.h"

#include <poll.h>

#include <algorithm>
#include <exception>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "registry/log_limit.h"
#include "spdlog/spdlog.h"

namespace sipd::mi {

// One call from Start() to its end. Shared by the Exchange (the transport's handle) and
// whatever runs the call: a worker thread, or the dispatcher's table of calls waiting
// for an async reply.
struct CallState {
  using Clock = std::chrono::steady_clock;
  enum class Phase { kRunning, kReady, kCancelled };

  CallContext context;
  Request request;
  const Command* command = nullptr;
  Delivery delivery = Delivery::kTree;
  ReplyWriter* writer = nullptr;
  Exchange::ReadyFn on_ready;

  Reply reply;
  Outcome outcome = Outcome::kReply;
  // Alive while the handler runs and while a pulled stream has more to give.
  std::unique_ptr<Call> call;
  std::optional<AsyncTicket> ticket;
  Clock::time_point start;
  Clock::time_point deadline = Clock::time_point::max();
  // Guarded by Dispatcher::mu_ once the call left the starting thread.
  Phase phase = Phase::kRunning;
  // on_ready is still to be called (RunCompletions clears it just before calling it,
  // Cancel() when it prevents the call); guarded by Dispatcher::mu_.
  bool callback_pending = false;
  // A worker thread owns `call` (guarded by Dispatcher::mu_).
  bool on_worker = false;
  bool accounted = false;
};

namespace {

using Clock = std::chrono::steady_clock;

Reply NotAvailable(const std::string& command) {
  return Reply::Error(500, absl::StrCat("command '", command, "' not available"));
}
Reply ParseError(const std::string& command) {
  return Reply::Error(400, absl::StrCat("parse error in command '", command, "'"));
}
Reply Failed(const std::string& command) {
  return Reply::Error(500, absl::StrCat("command '", command, "' failed"));
}
Reply Accepted() {
  Reply reply;
  reply.code = 202;
  reply.reason = "Accepted";
  return reply;
}

// What a wrong argument count lacks or has too much, by declared parameter.
std::vector<ArgumentProblem> ArgumentCountProblems(const Command& command, size_t count) {
  std::vector<ArgumentProblem> problems;
  if (count < command.min_args()) {
    size_t index = 0;
    for (const ParamSpec& param : command.params()) {
      if (param.arity == ParamSpec::Arity::kRequired && index >= count) {
        problems.push_back(ArgumentProblem{param.name, "missing"});
      }
      ++index;
    }
  } else {
    problems.push_back(ArgumentProblem{
        "", absl::StrCat(count, " arguments given, at most ", command.max_args(), " taken")});
  }
  return problems;
}

bool IsError(const CallState& state) {
  return state.outcome == Outcome::kFailed || state.outcome == Outcome::kParseError ||
         (state.outcome == Outcome::kReply && state.reply.code >= 400);
}

// Runs the producer to its end, flushing into the transport's writer until it is full
// (kWriter), or (kTree) into a TreeBuilder, so that the whole tree is the one the
// streaming transports show (registry/reply_writer.h). False if the producer failed.
bool Drain(CallState& state) {
  std::unique_ptr<ReplyProducer>& producer = state.call->producer();
  std::optional<TreeBuilder> tree;
  while (producer != nullptr) {
    if (state.context.cancel.cancelled()) return false;
    if (state.writer != nullptr && state.writer->full()) break;
    absl::StatusOr<bool> done;
    try {
      done = producer->Next(*state.call);
    } catch (const std::exception& e) {
      done = absl::InternalError(e.what());
    }
    if (!done.ok()) {
      spdlog::warn("MI: stream of '{}' failed: {}", state.command->name(),
                   done.status().ToString());
      producer.reset();
      return false;
    }
    if (*done) {
      producer.reset();
      break;
    }
    if (state.writer != nullptr) {
      FlushReply(state.reply, *state.writer);
      state.writer->EndFlush();
    } else {
      if (!tree.has_value()) tree.emplace();
      FlushReply(state.reply, *tree);
    }
  }
  producer.reset();
  if (tree.has_value()) {
    FinishReply(state.reply, *tree);
    state.reply = tree->Take();
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Exchange

Exchange::~Exchange() { Cancel(); }

bool Exchange::ready() const {
  std::lock_guard<std::mutex> lock(dispatcher_->mu_);
  return state_->phase == CallState::Phase::kReady;
}

Outcome Exchange::outcome() const { return state_->outcome; }

const std::string& Exchange::command_name() const { return state_->request.command; }

const Command* Exchange::command() const { return state_->command; }

const CallContext& Exchange::context() const { return state_->context; }

Reply& Exchange::reply() { return state_->reply; }

bool Exchange::WriteNext(ReplyWriter& writer) {
  CallState& state = *state_;
  if (state.delivery != Delivery::kPull || state.outcome != Outcome::kReply || state.accounted) {
    return true;
  }
  std::unique_ptr<ReplyProducer>* producer =
      state.call != nullptr && state.call->producer() != nullptr ? &state.call->producer()
                                                                 : nullptr;
  if (producer != nullptr) {
    absl::StatusOr<bool> done;
    try {
      done = (*producer)->Next(*state.call);
    } catch (const std::exception& e) {
      done = absl::InternalError(e.what());
    }
    if (!done.ok()) {
      spdlog::warn("MI: stream of '{}' failed: {}", state.command->name(),
                   done.status().ToString());
      state.call.reset();
      state.outcome = Outcome::kFailed;
      state.reply = Failed(state.request.command);
      dispatcher_->Account(state);
      return true;
    }
    if (!*done) {
      FlushReply(state.reply, writer);
      writer.EndFlush();
      return false;
    }
  }
  state.call.reset();
  FinishReply(state.reply, writer);
  dispatcher_->Account(state);
  return true;
}

bool Exchange::Cancel() { return state_ != nullptr && dispatcher_->Cancel(*state_); }

// ---------------------------------------------------------------------------------------
// Dispatcher

Dispatcher::Dispatcher(const Registry& registry, AsyncBackend* async, DispatcherOptions options,
                       DispatchHooks hooks)
    : registry_(registry),
      own_async_(async == nullptr ? std::make_unique<LocalAsyncBackend>() : nullptr),
      async_(async == nullptr ? own_async_.get() : async),
      options_(options),
      hooks_(std::move(hooks)) {
  if (options_.workers > 0) {
    pool_ = std::make_unique<WorkerPool>(options_.workers, options_.max_queued);
  }
}

Dispatcher::~Dispatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [slot, state] : waiting_) {
      state->context.cancel.Cancel();
      async_->Release(*state->ticket);
    }
    waiting_.clear();
  }
  if (pool_ != nullptr) pool_->Stop();
}

std::optional<Reply> Dispatcher::Refuse(CallContext& context, const Command& command) const {
  if (!hooks_.authorize) return std::nullopt;
  absl::Status allowed = hooks_.authorize(context, command);
  if (allowed.ok()) return std::nullopt;
  const uint32_t code = absl::IsUnauthenticated(allowed) ? 401 : 403;
  SIPD_LOG_LIMITED(spdlog::level::info, "MI: '{}' refused over {} to '{}': {}", command.spec().name,
                   TransportName(context.transport), context.peer.principal,
                   std::string(allowed.message()));
  return Reply::Error(code, std::string(allowed.message()));
}

std::optional<Reply> Dispatcher::Refusal(CallContext& context, std::string_view name) const {
  const Command* command = registry_.Find(name);
  if (command == nullptr) return std::nullopt;
  return Refuse(context, *command);
}

std::unique_ptr<Exchange> Dispatcher::Start(CallContext context, Request request, Delivery delivery,
                                            ReplyWriter* writer, Exchange::ReadyFn on_ready) {
  auto state = std::make_shared<CallState>();
  state->start = Clock::now();
  state->context = std::move(context);
  state->request = std::move(request);
  state->delivery = delivery;
  state->writer = delivery == Delivery::kWriter ? writer : nullptr;
  state->on_ready = std::move(on_ready);
  state->callback_pending = static_cast<bool>(state->on_ready);
  std::unique_ptr<Exchange> exchange(new Exchange(this, state));
  const std::string& name = state->request.command;

  const Command* command = registry_.Find(name);
  if (command == nullptr) {
    spdlog::debug("MI: command '{}' not available", name);
    Finish(*state, Outcome::kNotAvailable, NotAvailable(name));
    return exchange;
  }
  state->command = command;
  const Command::Spec& spec = command->spec();

  if (std::optional<Reply> refused = Refuse(state->context, *command)) {
    Finish(*state, Outcome::kReply, *std::move(refused));
    return exchange;
  }

  if (command->has_flag(kNoInput)) {
    // 1.11 never parses the arguments of a no-input command: they are ignored even when
    // they do not parse.
    state->request.args.clear();
    state->request.args_error = absl::OkStatus();
  } else if (!state->request.args_error.ok()) {
    SIPD_LOG_LIMITED(spdlog::level::warn, "MI: parse error in command '{}': {}", name,
                     std::string(state->request.args_error.message()));
    Finish(*state, Outcome::kParseError, ParseError(name));
    return exchange;
  }

  if (spec.answer_before_args) {
    if (std::optional<Reply> early = spec.answer_before_args()) {
      Finish(*state, Outcome::kReply, std::move(*early));
      return exchange;
    }
  }
  const size_t count = state->request.args.size();
  if (!command->has_flag(kNoInput) &&
      (count < command->min_args() || count > command->max_args())) {
    Reply refusal =
        Reply::Error(spec.arg_error_code,
                     count < command->min_args() ? spec.too_few_reason : spec.too_many_reason);
    refusal.bad_arguments = ArgumentCountProblems(*command, count);
    Finish(*state, Outcome::kReply, std::move(refusal));
    return exchange;
  }

  spdlog::debug("MI: running '{}' with {} argument(s) over {}", name, count,
                TransportName(state->context.transport));
  const bool on_worker =
      pool_ != nullptr && (command->has_flag(kBlocking) ||
                           (command->has_flag(kStreaming) && delivery != Delivery::kPull));
  if (on_worker) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++on_workers_;
      state->on_worker = true;
    }
    const bool queued = pool_->TrySubmit([this, state] {
      if (!state->context.cancel.cancelled()) {
        RunHandler(state);
      }
      std::lock_guard<std::mutex> lock(mu_);
      --on_workers_;
      state->on_worker = false;
      if (state->phase == CallState::Phase::kCancelled) return;
      if (state->ticket.has_value()) return;  // waiting for its async reply now
      if (state->call != nullptr && state->call->ticket().has_value()) return;
      finished_.push_back(state);
      async_->WakeSelf();
    });
    if (queued) {
      exchange->callback_expected_ = static_cast<bool>(state->on_ready);
      return exchange;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      --on_workers_;
      state->on_worker = false;
    }
    spdlog::warn("MI: '{}' refused: {} calls already queued for the workers", name,
                 options_.max_queued);
    Finish(*state, Outcome::kReply, Reply::Error(503, "Too many MI calls in progress"));
    return exchange;
  }
  RunHandler(state);
  if (state->call != nullptr && state->call->ticket().has_value()) {
    exchange->callback_expected_ = static_cast<bool>(state->on_ready);
    return exchange;  // async: ready later
  }
  MarkReady(*state);
  return exchange;
}

void Dispatcher::RunHandler(const std::shared_ptr<CallState>& state) {
  const Command& command = *state->command;
  state->call =
      std::make_unique<Call>(command, state->request.args, state->context, async_, state->reply);
  absl::Status status;
  try {
    status = command.spec().handler(*state->call);
  } catch (const std::exception& e) {
    spdlog::error("MI: command '{}' threw: {}", command.name(), e.what());
    state->call->producer().reset();
    state->reply = Reply::Error(500, kReasonInternalError);
  } catch (...) {
    spdlog::error("MI: command '{}' threw an unknown exception", command.name());
    state->call->producer().reset();
    state->reply = Reply::Error(500, kReasonInternalError);
  }
  if (!status.ok()) {
    spdlog::warn("MI: command '{}' failed: {}", command.name(), status.ToString());
    if (state->call->ticket().has_value()) async_->Release(*state->call->ticket());
    state->call.reset();
    state->outcome = Outcome::kFailed;
    state->reply = Failed(command.name());
    return;
  }
  AfterHandler(state);
}

void Dispatcher::AfterHandler(const std::shared_ptr<CallState>& state) {
  Call& call = *state->call;
  if (call.ticket().has_value()) {
    // The reply comes later, from whichever process completes the ticket.
    call.producer().reset();
    const Clock::time_point limit = state->start + options_.async_timeout;
    state->deadline = std::min(state->context.deadline, limit);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (state->phase == CallState::Phase::kCancelled) {
        async_->Release(*call.ticket());
        return;
      }
      state->ticket = call.ticket();
      waiting_[state->ticket->slot] = state;
    }
    // The completer may have been faster than the line above: look again.
    async_->WakeSelf();
    return;
  }
  if (call.async_refused()) {
    call.producer().reset();
    state->reply = Accepted();
  }
  PullWhole(*state);
}

void Dispatcher::PullWhole(CallState& state) {
  if (state.delivery == Delivery::kPull) {
    if (state.call != nullptr && state.call->producer() == nullptr) state.call.reset();
    return;  // the transport pulls
  }
  if (state.call != nullptr && !Drain(state)) {
    state.call.reset();
    if (state.context.cancel.cancelled()) return;
    state.outcome = Outcome::kFailed;
    state.reply = Failed(state.request.command);
    return;
  }
  state.call.reset();
  if (state.writer != nullptr && state.outcome == Outcome::kReply) {
    FinishReply(state.reply, *state.writer);
  }
}

void Dispatcher::Finish(CallState& state, Outcome outcome, Reply reply) {
  state.outcome = outcome;
  state.reply = std::move(reply);
  if (state.writer != nullptr && outcome == Outcome::kReply) {
    FinishReply(state.reply, *state.writer);
  }
  MarkReady(state);
}

void Dispatcher::MarkReady(CallState& state) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state.phase == CallState::Phase::kCancelled) return;
    state.phase = CallState::Phase::kReady;
    // Ready within Start(): the transport writes it at once, no callback comes.
    state.callback_pending = false;
  }
  // A pulled reply is accounted when its last part is written.
  if (state.delivery != Delivery::kPull || state.outcome != Outcome::kReply) Account(state);
}

void Dispatcher::Account(CallState& state) {
  if (state.accounted) return;
  state.accounted = true;
  if (state.command == nullptr) return;
  const bool gone = state.phase == CallState::Phase::kCancelled;
  const auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - state.start);
  state.command->CountCall(gone || IsError(state), static_cast<uint64_t>(micros.count()));
  if (hooks_.audit && state.command->has_flag(kMutating)) {
    uint32_t code = gone ? 0 : state.reply.code;
    if (!gone && state.outcome == Outcome::kParseError) code = 400;
    hooks_.audit(state.context, *state.command, state.request, code);
  }
}

void Dispatcher::CompleteAsync(CallState& state, AsyncResult result) {
  state.ticket.reset();
  if (!result.has_value()) {
    state.outcome = Outcome::kFailed;
    state.reply = Failed(state.request.command);
  } else {
    state.outcome = Outcome::kReply;
    state.reply = std::move(*result);
  }
  state.call.reset();
  if (state.writer != nullptr && state.outcome == Outcome::kReply) {
    FinishReply(state.reply, *state.writer);
  }
}

void Dispatcher::RunCompletions() {
  async_->ClearWake();
  std::vector<std::shared_ptr<CallState>> ready;
  std::vector<std::pair<std::shared_ptr<CallState>, AsyncResult>> replies;
  std::vector<std::shared_ptr<CallState>> expired;
  const Clock::time_point now = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    ready.swap(finished_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      CallState& state = *it->second;
      if (std::optional<AsyncResult> result = async_->TryTake(*state.ticket)) {
        replies.emplace_back(it->second, std::move(*result));
        it = waiting_.erase(it);
      } else if (state.deadline <= now) {
        async_->Release(*state.ticket);
        expired.push_back(it->second);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& [state, result] : replies) {
    CompleteAsync(*state, std::move(result));
    ready.push_back(state);
  }
  for (auto& state : expired) {
    spdlog::warn("MI: no async reply for '{}' in time", state->request.command);
    state->context.cancel.Cancel();
    CompleteAsync(*state, std::nullopt);
    ready.push_back(state);
  }
  for (auto& state : ready) {
    bool call_back;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (state->phase == CallState::Phase::kCancelled) continue;
      state->phase = CallState::Phase::kReady;
      call_back = state->callback_pending;
      state->callback_pending = false;
    }
    if (state->delivery != Delivery::kPull || state->outcome != Outcome::kReply) Account(*state);
    if (call_back) state->on_ready();
  }
}

Dispatcher::Clock::time_point Dispatcher::NextDeadline() const {
  std::lock_guard<std::mutex> lock(mu_);
  Clock::time_point next = Clock::time_point::max();
  for (const auto& [slot, state] : waiting_) next = std::min(next, state->deadline);
  return next;
}

size_t Dispatcher::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiting_.size() + on_workers_;
}

bool Dispatcher::Cancel(CallState& state) {
  bool prevented;
  {
    std::lock_guard<std::mutex> lock(mu_);
    prevented = state.callback_pending;
    state.callback_pending = false;
    if (state.phase == CallState::Phase::kCancelled) return prevented;
    const bool finished = state.phase == CallState::Phase::kReady && state.accounted;
    state.context.cancel.Cancel();
    if (state.ticket.has_value()) {
      auto it = waiting_.find(state.ticket->slot);
      if (it != waiting_.end() && it->second.get() == &state) waiting_.erase(it);
      async_->Release(*state.ticket);
      state.ticket.reset();
    }
    if (finished) return prevented;
    state.phase = CallState::Phase::kCancelled;
  }
  // A pulled stream's producer goes now (it holds no lock, but may hold memory); a
  // worker still running the handler sees the token and stops by itself.
  bool owned_here;
  {
    std::lock_guard<std::mutex> lock(mu_);
    owned_here = !state.on_worker;
  }
  if (owned_here) state.call.reset();
  Account(state);
  return prevented;
}

DispatchResult Dispatcher::Run(const CallContext& context, Request request, ReplyWriter* writer) {
  std::unique_ptr<Exchange> exchange = Start(
      context, std::move(request), writer != nullptr ? Delivery::kWriter : Delivery::kTree, writer);
  while (!exchange->ready()) {
    const Clock::time_point deadline = NextDeadline();
    int timeout_ms = 100;
    if (deadline != Clock::time_point::max()) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, 100));
    }
    pollfd pfd{wake_fd(), POLLIN, 0};
    poll(&pfd, 1, timeout_ms);
    RunCompletions();
  }
  return DispatchResult{exchange->outcome(), std::move(exchange->reply())};
}

DispatchResult Dispatcher::Run(Request request, ReplyWriter* writer) {
  const CallContext context;
  return Run(context, std::move(request), writer);
}

std::string_view TransportName(Transport transport) {
  switch (transport) {
    case Transport::kInternal:
      return "internal";
    case Transport::kFifo:
      return "fifo";
    case Transport::kDatagramUnix:
      return "datagram-unix";
    case Transport::kDatagramUdp:
      return "datagram-udp";
    case Transport::kXmlrpc:
      return "xmlrpc";
    case Transport::kGrpc:
      return "grpc";
    case Transport::kHttp:
      return "http";
  }
  return "?";
}

bool IsLoopbackHost(std::string_view host) {
  if (host == "::1") return true;
  if (host.substr(0, 7) == "::ffff:") host.remove_prefix(7);
  return host.substr(0, 4) == "127.";
}

std::string TokenFromAuthorization(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\r')) value.remove_suffix(1);
  auto scheme = [&](std::string_view name) {
    return value.size() > name.size() &&
           absl::EqualsIgnoreCase(absl::string_view(value.data(), name.size()),
                                  absl::string_view(name.data(), name.size())) &&
           value[name.size()] == ' ';
  };
  if (scheme("Bearer")) return std::string(value.substr(7));
  if (scheme("Basic")) {
    std::string decoded;
    if (!absl::Base64Unescape(absl::string_view(value.data() + 6, value.size() - 6), &decoded)) {
      return {};
    }
    const size_t colon = decoded.find(':');
    return colon == std::string::npos ? std::string() : decoded.substr(colon + 1);
  }
  return {};
}

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kUnset:
      return "unset";
    case Role::kNone:
      return "none";
    case Role::kRead:
      return "read";
    case Role::kOperate:
      return "operate";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

}  // namespace sipd::mi
