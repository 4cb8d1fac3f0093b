#include "legacy-transports/fifo/fifo_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "registry/dispatcher.h"
#include "registry/log_limit.h"
#include "spdlog/spdlog.h"

namespace sipd::legacy {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kPollIntervalMs = 200;
constexpr int kReplyOpenAttempts = 5;
constexpr auto kReplyOpenRetryDelay = std::chrono::milliseconds(80);
// Timers (open retries, stalls, deadlines) are checked at most this often.
constexpr auto kTimerGranularity = std::chrono::milliseconds(10);
constexpr int kMaxEvents = 64;
// epoll tags; clients use their id (from 2).
constexpr uint64_t kRequestTag = 0;
constexpr uint64_t kWakeTag = 1;
// Spare client records kept for reuse, and the largest output buffer kept with one.
constexpr size_t kMaxSpareClients = 64;
constexpr size_t kMaxSpareBuffer = 64 * 1024;

std::string Errno() { return std::strerror(errno); }

bool IsEndLine(std::string_view line) { return line == "\n" || line == "\r\n"; }

// The strict command-line form of the resynchronisation rule (fifo_server.h):
// `:name:reply` + LF or CRLF, name of [A-Za-z0-9_], reply of [A-Za-z0-9_-].
bool IsStrictCommandLine(std::string_view bytes) {
  const size_t lf = bytes.find('\n');
  if (lf == std::string_view::npos) return false;
  std::string_view line = bytes.substr(0, lf);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() < 4 || line[0] != ':') return false;
  const size_t colon = line.find(':', 1);
  if (colon == std::string_view::npos || colon == 1 || colon + 1 == line.size()) return false;
  const auto word = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  for (size_t i = 1; i < colon; ++i) {
    if (!word(line[i])) return false;
  }
  for (size_t i = colon + 1; i < line.size(); ++i) {
    if (!word(line[i]) && line[i] != '-') return false;
  }
  return true;
}

int MillisUntil(Clock::time_point now, Clock::time_point when) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(when - now).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, kPollIntervalMs));
}

std::string_view TrimCommandLine(std::string_view line) {
  const size_t end = line.find_last_not_of("\n\r \t");
  return end == std::string_view::npos ? std::string_view() : line.substr(0, end + 1);
}

}  // namespace

absl::Status CheckReplyDir(const std::string& reply_dir) {
  struct stat st;
  if (stat(reply_dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("mi_fifo: reply_dir '", reply_dir, "': ", Errno()));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("mi_fifo: reply_dir '", reply_dir, "' is not a directory"));
  }
  return absl::OkStatus();
}

absl::Status PrepareRequestFifo(const FifoConfig& config) {
  const std::string& path = config.fifo_name;
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("mi_fifo: fifo_name '", path, "' is a symbolic link: refusing to use it"));
    }
    if (!S_ISFIFO(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mi_fifo: fifo_name '", path, "' exists and is not a FIFO: refusing to replace it"));
    }
    // A stale FIFO from an earlier run.
    if (unlink(path.c_str()) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("mi_fifo: cannot remove stale FIFO '", path, "': ", Errno()));
    }
    spdlog::info("mi_fifo: replaced stale FIFO {}", path);
  } else if (errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat("mi_fifo: '", path, "': ", Errno()));
  }
  if (mkfifo(path.c_str(), 0600) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("mi_fifo: cannot create FIFO '", path, "': ", Errno()));
  }
  // chmod/chown through a descriptor of the FIFO we just made: immune to the umask and
  // to the path being swapped in between.
  const int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("mi_fifo: cannot open FIFO '", path, "': ", Errno()));
  }
  absl::Status status = ApplyAccess(fd, path, config.access);
  close(fd);
  return status;
}

// One request from its command line to the end of its reply.
struct FifoServer::Client {
  enum class Phase {
    kReading,  // its request is still being read (FifoServer::current_)
    kOpening,  // its reply FIFO had no reader yet (ENXIO): another attempt at next_open
    kQueued,   // an earlier request for the same reply FIFO is still being answered
    kRunning,  // its call runs (worker thread, async reply)
    kWriting,  // its reply is being written
  };

  uint64_t id = 0;
  Phase phase = Phase::kReading;
  std::string reply_path;
  int fd = -1;
  // Owner of the reply FIFO (fstat), for CallContext.peer.
  uid_t uid = static_cast<uid_t>(-1);
  int open_attempts = 0;
  Clock::time_point next_open;
  // In the epoll set.
  bool watched = false;
  // The answer is a transport error line already in `out` (no call).
  bool answer_only = false;
  mi::Request request;
  // The command name, for logs (the request goes to the dispatcher).
  std::string command;
  std::unique_ptr<mi::Exchange> exchange;
  // The outcome was looked at (the first part rendered).
  bool started = false;
  // Everything of the reply is in `out` (the exchange is gone).
  bool stream_done = false;
  std::string out;
  size_t out_pos = 0;
  // The last write met a full pipe; stall_since = when progress stopped.
  bool blocked = false;
  Clock::time_point stall_since;
  // The reply must be complete by then (set when the request is complete).
  Clock::time_point deadline = Clock::time_point::max();
  // Why the client was cut; empty = answered (or discarded quietly).
  std::string failed;

  size_t pending() const { return out.size() - out_pos; }

  void Reset() {
    id = 0;
    phase = Phase::kReading;
    reply_path.clear();
    fd = -1;
    uid = static_cast<uid_t>(-1);
    open_attempts = 0;
    watched = false;
    answer_only = false;
    request.command.clear();
    request.args.clear();
    request.args_error = absl::OkStatus();
    command.clear();
    exchange.reset();
    started = false;
    stream_done = false;
    out.clear();
    out_pos = 0;
    blocked = false;
    deadline = Clock::time_point::max();
    failed.clear();
  }
};

FifoServer::FifoServer(const FifoConfig& config, mi::Dispatcher& dispatcher)
    : config_(config),
      dispatcher_(dispatcher),
      input_(new char[kInputSize]),
      writer_(config.reply_indent) {}

FifoServer::~FifoServer() {
  CancelAll();
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (read_fd_ >= 0) close(read_fd_);
  if (keep_fd_ >= 0) close(keep_fd_);
}

absl::Status FifoServer::Open() {
  const std::string& path = config_.fifo_name;
  read_fd_ = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (read_fd_ < 0 && errno == ENOENT) {
    absl::Status status = PrepareRequestFifo(config_);
    if (!status.ok()) return status;
    read_fd_ = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  }
  if (read_fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("mi_fifo: cannot open '", path, "': ", Errno()));
  }
  struct stat st;
  if (fstat(read_fd_, &st) != 0 || !S_ISFIFO(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("mi_fifo: '", path, "' is not a FIFO: refusing to use it"));
  }
  // Our own writer: the FIFO never reaches EOF when clients close.
  keep_fd_ = open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (keep_fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("mi_fifo: cannot open '", path, "' for writing: ", Errno()));
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) return absl::InternalError(absl::StrCat("mi_fifo: epoll: ", Errno()));
  epoll_event request{.events = EPOLLIN, .data = {.u64 = kRequestTag}};
  epoll_event wake{.events = EPOLLIN, .data = {.u64 = kWakeTag}};
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, read_fd_, &request) != 0 ||
      epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, dispatcher_.wake_fd(), &wake) != 0) {
    return absl::InternalError(absl::StrCat("mi_fifo: epoll_ctl: ", Errno()));
  }
  last_input_ = Clock::now();
  spdlog::info("listening on {}", path);
  return absl::OkStatus();
}

absl::Status FifoServer::Run(const std::function<bool()>& stopping,
                             const std::function<void()>& on_wakeup) {
  epoll_event events[kMaxEvents];
  while (!stopping()) {
    // (An async deadline added while this round runs is later than its start: the next
    // round looks at it.)
    const Clock::time_point async_deadline = dispatcher_.NextDeadline();
    const int n =
        epoll_wait(epoll_fd_, events, kMaxEvents, TimeoutMs(Clock::now(), async_deadline));
    on_wakeup();
    if (n < 0 && errno != EINTR) {
      const std::string why = Errno();
      CancelAll();
      return absl::InternalError(absl::StrCat("mi_fifo: epoll_wait: ", why));
    }
    bool wake = false;
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kRequestTag) {
        ReadInput();
      } else if (tag == kWakeTag) {
        wake = true;
      } else {
        OnClientEvent(tag, events[i].events);
      }
    }
    const Clock::time_point now = Clock::now();
    if (wake || async_deadline <= now) {
      dispatcher_.RunCompletions();
      OnReady();
    }
    CheckRequestTimeout(now);
    if (now >= next_timer_) RunTimers(now);
  }
  spdlog::debug("stopping");
  CancelAll();
  return absl::OkStatus();
}

int FifoServer::TimeoutMs(Clock::time_point now, Clock::time_point async_deadline) const {
  int timeout = kPollIntervalMs;
  if (config_.request_timeout.count() > 0 && RequestInProgress()) {
    timeout = std::min(timeout, MillisUntil(now, last_input_ + config_.request_timeout));
  }
  if (next_timer_ != Clock::time_point::max()) {
    timeout = std::min(timeout, MillisUntil(now, next_timer_));
  }
  if (async_deadline != Clock::time_point::max()) {
    timeout = std::min(timeout, MillisUntil(now, async_deadline));
  }
  return timeout;
}

// ---------------------------------------------------------------------------------------
// The request FIFO

void FifoServer::ReadInput() {
  for (;;) {
    const size_t room = kInputSize - input_end_;
    const ssize_t n = read(read_fd_, input_.get() + input_end_, room);
    if (n > 0) {
      if (!TakeInput(static_cast<size_t>(n), room)) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) spdlog::error("read: {}", Errno());
    paused_ = RequestInProgress();
    return;  // EAGAIN, or EOF (impossible while keep_fd_ is open)
  }
}

bool FifoServer::TakeInput(size_t n, size_t room) {
  read_at_ = last_input_ = Clock::now();
  if (paused_) {
    paused_ = false;
    if (RequestInProgress()) ResyncOnNewCommandLine(std::string_view(input_.get() + input_end_, n));
  }
  input_end_ += n;
  ProcessInput();
  // A read that took less than it could drained the FIFO: whatever comes next was
  // written after it (a pause, for the resynchronisation rule).
  if (n < room) {
    paused_ = RequestInProgress();
    return false;
  }
  return true;
}

void FifoServer::FeedForFuzzing(std::string_view bytes) {
  while (!bytes.empty()) {
    const size_t room = kInputSize - input_end_;
    if (room == 0) return;  // (ProcessInput always makes room; never loop on a full buffer)
    const size_t n = std::min(room, bytes.size());
    std::memcpy(input_.get() + input_end_, bytes.data(), n);
    bytes.remove_prefix(n);
    TakeInput(n, bytes.empty() ? room + 1 : room);
  }
}

bool FifoServer::ResyncOnNewCommandLine(std::string_view fresh) {
  if (!IsStrictCommandLine(fresh)) return false;
  const bool answer = state_ == State::kArguments || state_ == State::kBadArgs;
  SIPD_LOG_LIMITED(spdlog::level::warn, "request {}incomplete when a new request began: {}",
                   current_ != nullptr ? absl::StrCat("'", current_->request.command, "' ") : "",
                   answer ? "answered 400" : "discarded");
  // The unfinished line (if any) goes; the fresh bytes start at input_end_.
  input_begin_ = input_end_;
  skipping_line_ = false;
  AbandonRequest(answer);
  return true;
}

size_t FifoServer::LineLimit() const {
  switch (state_) {
    case State::kIdle:
      return kFifoMaxCommandLine;
    case State::kArguments:
      return kFifoMaxArgumentBytes;
    default:
      return kInputSize;  // content is ignored: only look for the end line
  }
}

void FifoServer::ProcessInput() {
  for (;;) {
    const char* begin = input_.get() + input_begin_;
    const size_t size = input_end_ - input_begin_;
    const char* lf = static_cast<const char*>(std::memchr(begin, '\n', size));
    if (skipping_line_) {
      if (lf == nullptr) {
        input_begin_ = input_end_ = 0;
        return;
      }
      input_begin_ += static_cast<size_t>(lf - begin) + 1;
      skipping_line_ = false;
      continue;
    }
    if (lf == nullptr) {
      if (size >= LineLimit()) {
        OnOverlongLine();
        skipping_line_ = true;
        input_begin_ = input_end_ = 0;
        return;
      }
      std::memmove(input_.get(), begin, size);
      input_begin_ = 0;
      input_end_ = size;
      return;
    }
    const std::string_view line(begin, static_cast<size_t>(lf - begin) + 1);
    input_begin_ += line.size();
    if (line.size() > LineLimit()) {
      OnOverlongLine();
    } else {
      HandleLine(line);
    }
  }
}

void FifoServer::OnOverlongLine() {
  switch (state_) {
    case State::kIdle:
      SIPD_LOG_LIMITED(spdlog::level::warn, "command line longer than {} bytes: request discarded",
                       kFifoMaxCommandLine - 1);
      state_ = State::kDiscard;
      break;
    case State::kArguments:
      OnArgumentError(absl::InvalidArgumentError(
          absl::StrCat("argument line longer than ", kFifoMaxArgumentBytes, " bytes")));
      break;
    default:
      break;
  }
}

void FifoServer::HandleLine(std::string_view line) {
  switch (state_) {
    case State::kIdle:
      HandleCommandLine(line);
      break;
    case State::kArguments:
      HandleArgumentLine(line);
      break;
    case State::kBadArgs:
      if (IsEndLine(line)) EndRequest();
      break;
    case State::kDiscard:
      if (IsEndLine(line)) state_ = State::kIdle;
      break;
  }
}

void FifoServer::HandleCommandLine(std::string_view line) {
  const std::string_view text = TrimCommandLine(line);
  if (text.empty()) return;  // stray empty lines between requests are harmless
  if (text.size() < 3) {
    SIPD_LOG_LIMITED(spdlog::level::warn, "command line too short: ignored");
    return;
  }
  const size_t colon = text.find(':', 1);
  if (text.front() != ':' || colon == std::string_view::npos || colon == 1) {
    SIPD_LOG_LIMITED(spdlog::level::warn, "malformed command line: request discarded");
    state_ = State::kDiscard;
    return;
  }
  const std::string_view command = text.substr(1, colon - 1);
  const std::string_view reply_name = text.substr(colon + 1);
  if (reply_name.empty() || reply_name.find_first_of("./\\") != std::string_view::npos) {
    spdlog::warn("command '{}': {} reply FIFO name: request discarded", command,
                 reply_name.empty() ? "no" : "unsafe");
    state_ = State::kDiscard;
    return;
  }
  if (clients_.size() >= kFifoMaxClients) {
    spdlog::warn("command '{}': {} requests in flight already: request discarded", command,
                 kFifoMaxClients);
    state_ = State::kDiscard;
    return;
  }
  current_ = NewClient();
  current_->reply_path.assign(config_.reply_dir).append(reply_name);
  current_->request.command.assign(command);
  // As 1.11, the reply FIFO is opened before the arguments are read, unless an earlier
  // request still writes to it (then when that one is done).
  const bool busy = !path_users_.empty() && path_users_.contains(current_->reply_path);
  if (!busy && !TryOpenReply(*current_) && current_->phase != Client::Phase::kOpening) {
    Recycle(std::move(current_));
    state_ = State::kDiscard;
    return;
  }
  parser_.Begin(&current_->request.args);
  state_ = State::kArguments;
}

void FifoServer::HandleArgumentLine(std::string_view line) {
  if (!parser_.in_quoted_value() && IsEndLine(line)) {
    EndRequest();
    return;
  }
  const absl::Status status = parser_.FeedLine(line);
  if (status.ok()) return;
  OnArgumentError(status);
  // A bare LF inside a quoted value is an error *and* the end of the request.
  if (line == "\n") HandleLine(line);
}

void FifoServer::OnArgumentError(const absl::Status& why) {
  // What a parse error means (a no-input command runs anyway, an unknown one is "not
  // available") is the dispatcher's decision, made at the end of the request.
  current_->request.args_error = why;
  state_ = State::kBadArgs;
}

void FifoServer::EndRequest() {
  state_ = State::kIdle;
  Admit(std::move(current_));
  // Serving takes time; a request queued behind this one is not silent meanwhile.
  last_input_ = Clock::now();
}

void FifoServer::AbandonRequest(bool answer) {
  state_ = State::kIdle;
  if (current_ == nullptr) return;
  if (!answer) {
    Recycle(std::move(current_));
    return;
  }
  current_->answer_only = true;
  current_->stream_done = true;
  writer_.Begin(&current_->out);
  writer_.WriteErrorLine(400,
                         absl::StrCat("parse error in command '", current_->request.command, "'"));
  Admit(std::move(current_));
}

bool FifoServer::RequestInProgress() const {
  return state_ != State::kIdle || input_end_ > input_begin_ || skipping_line_;
}

void FifoServer::CheckRequestTimeout(Clock::time_point now) {
  if (config_.request_timeout.count() <= 0 || !RequestInProgress() ||
      now - last_input_ < config_.request_timeout) {
    return;
  }
  spdlog::warn("request incomplete after {} ms of silence: discarded",
               config_.request_timeout.count());
  read_at_ = now;
  if (state_ == State::kIdle && !skipping_line_ && input_end_ > input_begin_) {
    // A command line without its LF: answer it if it names a usable reply FIFO.
    HandleCommandLine(std::string_view(input_.get() + input_begin_, input_end_ - input_begin_));
  }
  AbandonRequest(state_ == State::kArguments || state_ == State::kBadArgs);
  input_begin_ = input_end_ = 0;
  skipping_line_ = false;
  paused_ = false;
}

// ---------------------------------------------------------------------------------------
// Clients

std::unique_ptr<FifoServer::Client> FifoServer::NewClient() {
  std::unique_ptr<Client> client;
  if (spare_.empty()) {
    client = std::make_unique<Client>();
  } else {
    client = std::move(spare_.back());
    spare_.pop_back();
  }
  client->id = next_id_++;
  return client;
}

void FifoServer::Recycle(std::unique_ptr<Client> client) {
  if (client->exchange != nullptr) client->exchange->Cancel();
  if (client->fd >= 0) close(client->fd);
  if (spare_.size() >= kMaxSpareClients) return;
  client->Reset();
  if (client->out.capacity() > kMaxSpareBuffer) client->out = std::string();
  spare_.push_back(std::move(client));
}

bool FifoServer::TryOpenReply(Client& client) {
  ++client.open_attempts;
  // Non-blocking: ENXIO while the client has not opened its end yet.
  const int fd = open(client.reply_path.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENXIO && client.open_attempts < kReplyOpenAttempts) {
      client.phase = Client::Phase::kOpening;
      client.next_open = Clock::now() + kReplyOpenRetryDelay;
      return false;
    }
    spdlog::warn("cannot open reply FIFO {}: {}{}", client.reply_path,
                 errno == ENXIO ? "nobody reads it" : Errno(),
                 client.request.command.empty()
                     ? ""
                     : absl::StrCat(": request '", client.request.command, "' discarded"));
    client.phase = Client::Phase::kReading;
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode) || st.st_nlink != 1) {
    spdlog::warn("reply file {} is not a FIFO with a single link: not used", client.reply_path);
    close(fd);
    client.phase = Client::Phase::kReading;
    return false;
  }
  client.fd = fd;
  client.uid = st.st_uid;
  return true;
}

void FifoServer::Admit(std::unique_ptr<Client> client) {
  // (When the bytes that completed it were read: serving earlier requests of the same
  // read takes microseconds.)
  client->deadline = read_at_ + config_.reply_deadline;
  if (client->fd >= 0) {
    Dispatch(std::move(client));
    return;
  }
  // Not open: an earlier request still uses its reply FIFO, or its reader is not there.
  if (path_users_.contains(client->reply_path)) {
    client->phase = Client::Phase::kQueued;
  } else if (client->phase != Client::Phase::kOpening) {
    // Its predecessor finished while the request was read: first attempt now.
    if (TryOpenReply(*client)) {
      Dispatch(std::move(client));
      return;
    }
    if (client->phase != Client::Phase::kOpening) {
      Recycle(std::move(client));
      return;
    }
  }
  Park(std::move(client));
}

bool FifoServer::Dispatch(std::unique_ptr<Client> client) {
  if (!client->answer_only) {
    mi::CallContext context;
    context.transport = mi::Transport::kFifo;
    context.peer.uid = client->uid;
    context.peer.address = client->reply_path;
    context.peer.local = true;
    context.deadline = client->deadline;
    context.can_wait_async = true;
    client->phase = Client::Phase::kRunning;
    const uint64_t id = client->id;
    client->command = client->request.command;
    client->exchange =
        dispatcher_.Start(std::move(context), std::move(client->request), mi::Delivery::kPull,
                          nullptr, [this, id] { ready_.push_back(id); });
    if (!client->exchange->ready()) return Park(std::move(client));
  }
  client->phase = Client::Phase::kWriting;
  if (!Pump(*client)) return Park(std::move(client));
  if (!client->failed.empty()) {
    spdlog::warn("reply to {} for '{}' abandoned: {}", client->reply_path, client->command,
                 client->failed);
  }
  Recycle(std::move(client));
  return false;
}

bool FifoServer::Park(std::unique_ptr<Client> client) {
  // A reply FIFO that is open joins the epoll set (edge-triggered writability): a full
  // pipe is waited for, and the reader's departure (EPOLLERR) is seen while the call runs.
  if (client->fd >= 0 && !Watch(*client)) {
    spdlog::warn("reply to {} abandoned: {}", client->reply_path, client->failed);
    Recycle(std::move(client));
    return false;
  }
  ++path_users_[client->reply_path];
  ArmTimer(client->deadline);
  if (client->phase == Client::Phase::kOpening) ArmTimer(client->next_open);
  const uint64_t id = client->id;
  clients_.emplace(id, std::move(client));
  in_flight_.store(clients_.size(), std::memory_order_relaxed);
  return true;
}

std::unique_ptr<FifoServer::Client> FifoServer::Unpark(uint64_t id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return nullptr;
  std::unique_ptr<Client> client = std::move(it->second);
  clients_.erase(it);
  in_flight_.store(clients_.size(), std::memory_order_relaxed);
  auto users = path_users_.find(client->reply_path);
  if (users != path_users_.end() && --users->second == 0) path_users_.erase(users);
  return client;
}

bool FifoServer::Watch(Client& client) {
  if (client.watched) return true;
  epoll_event event{.events = EPOLLOUT | EPOLLET, .data = {.u64 = client.id}};
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, client.fd, &event) != 0) {
    client.failed = absl::StrCat("epoll_ctl: ", Errno());
    return false;
  }
  client.watched = true;
  return true;
}

void FifoServer::FillOutput(Client& client) {
  if (client.out_pos > 0) {
    client.out.erase(0, client.out_pos);
    client.out_pos = 0;
  }
  mi::Exchange& exchange = *client.exchange;
  writer_.Begin(&client.out);
  bool done;
  if (!client.started && exchange.outcome() != mi::Outcome::kReply) {
    // "not available" / "parse error" / "failed": the single status line.
    done = true;
  } else {
    done = exchange.WriteNext(writer_);
  }
  client.started = true;
  if (!done) return;
  if (exchange.outcome() != mi::Outcome::kReply) {
    // (A stream that failed midway keeps what was written and gets the line after it.)
    writer_.WriteErrorLine(exchange.reply().code, exchange.reply().reason);
  }
  client.stream_done = true;
  // The reply is all rendered: free the call (and its tree) now.
  client.exchange.reset();
}

bool FifoServer::Pump(Client& client) {
  bool progressed = false;
  for (;;) {
    if (!client.stream_done && client.pending() < kFifoLowWater) {
      FillOutput(client);
      continue;
    }
    const size_t pending = client.pending();
    if (pending == 0) return true;  // stream_done
    const ssize_t n = write(client.fd, client.out.data() + client.out_pos, pending);
    if (n > 0) {
      client.out_pos += static_cast<size_t>(n);
      progressed = true;
      if (client.out_pos == client.out.size()) {
        client.out.clear();
        client.out_pos = 0;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (progressed || !client.blocked) {
        client.stall_since = Clock::now();
        client.blocked = true;
        ArmTimer(client.stall_since + config_.reply_timeout);
      }
      return false;
    }
    client.failed = errno == EPIPE ? std::string("the client closed its reply FIFO")
                                   : absl::StrCat("write: ", Errno());
    return true;
  }
}

void FifoServer::Finish(uint64_t id, std::string_view why) {
  std::unique_ptr<Client> client = Unpark(id);
  if (client == nullptr) return;
  if (!why.empty()) {
    spdlog::warn(
        "reply to {} for '{}' abandoned: {}", client->reply_path,
        client->exchange != nullptr ? client->exchange->command_name() : client->request.command,
        why);
  }
  const bool holder = client->phase != Client::Phase::kQueued;
  std::string path;
  if (holder && path_users_.contains(client->reply_path)) path = client->reply_path;
  Recycle(std::move(client));
  if (!path.empty()) StartNext(path);
}

void FifoServer::StartNext(const std::string& path) {
  // The requests queued for `path` are answered oldest first (ids grow); each one that
  // is answered at once hands the path to the next.
  while (path_users_.contains(path)) {
    Client* next = nullptr;
    for (auto& [other_id, other] : clients_) {
      if (other->phase == Client::Phase::kQueued && other->reply_path == path &&
          (next == nullptr || other_id < next->id)) {
        next = other.get();
      }
    }
    if (next == nullptr) return;  // the holder is still at work
    const uint64_t id = next->id;
    if (!TryOpenReply(*next)) {
      if (next->phase == Client::Phase::kOpening) {
        ArmTimer(next->next_open);
        return;  // it holds the path now
      }
      Recycle(Unpark(id));  // logged by TryOpenReply
      continue;
    }
    if (Dispatch(Unpark(id))) return;
  }
}

void FifoServer::OnClientEvent(uint64_t id, uint32_t events) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& client = *it->second;
  if ((events & (EPOLLERR | EPOLLHUP)) != 0) {
    Finish(id, "the client closed its reply FIFO");
    return;
  }
  if (client.phase == Client::Phase::kWriting && (events & EPOLLOUT) != 0 && Pump(client)) {
    Finish(id, client.failed);
  }
}

void FifoServer::OnReady() {
  if (ready_.empty()) return;
  std::vector<uint64_t> ready;
  ready.swap(ready_);
  for (const uint64_t id : ready) {
    auto it = clients_.find(id);
    if (it == clients_.end() || it->second->phase != Client::Phase::kRunning) continue;
    Client& client = *it->second;
    client.phase = Client::Phase::kWriting;
    if (Pump(client)) Finish(id, client.failed);
  }
}

void FifoServer::ArmTimer(Clock::time_point when) { next_timer_ = std::min(next_timer_, when); }

void FifoServer::RunTimers(Clock::time_point now) {
  std::vector<std::pair<uint64_t, std::string>> cut;
  std::vector<uint64_t> retry;
  Clock::time_point next = Clock::time_point::max();
  for (const auto& [id, client] : clients_) {
    if (now >= client->deadline) {
      cut.emplace_back(id, absl::StrCat("reply not complete within reply_deadline (",
                                        config_.reply_deadline.count(), " ms)"));
      continue;
    }
    next = std::min(next, client->deadline);
    if (client->phase == Client::Phase::kWriting && client->blocked) {
      const Clock::time_point stall_end = client->stall_since + config_.reply_timeout;
      if (now >= stall_end) {
        cut.emplace_back(
            id, absl::StrCat("the client did not read for ", config_.reply_timeout.count(), " ms"));
        continue;
      }
      next = std::min(next, stall_end);
    }
    if (client->phase == Client::Phase::kOpening) {
      if (now >= client->next_open) {
        retry.push_back(id);
      } else {
        next = std::min(next, client->next_open);
      }
    }
  }
  next_timer_ = next == Clock::time_point::max() ? next : std::max(next, now + kTimerGranularity);
  for (const auto& [id, why] : cut) Finish(id, why);
  for (const uint64_t id : retry) {
    auto it = clients_.find(id);
    if (it == clients_.end() || it->second->phase != Client::Phase::kOpening) continue;
    Client& client = *it->second;
    if (TryOpenReply(client)) {
      std::unique_ptr<Client> owned = Unpark(id);
      const std::string path = owned->reply_path;
      if (!Dispatch(std::move(owned))) StartNext(path);
    } else if (client.phase == Client::Phase::kOpening) {
      ArmTimer(client.next_open);
    } else {
      Finish(id, "");  // logged by TryOpenReply
    }
  }
}

void FifoServer::CancelAll() {
  if (current_ != nullptr) Recycle(std::move(current_));
  for (auto& [id, client] : clients_) Recycle(std::move(client));
  clients_.clear();
  in_flight_.store(0, std::memory_order_relaxed);
  path_users_.clear();
  ready_.clear();
}

}  // namespace sipd::legacy
