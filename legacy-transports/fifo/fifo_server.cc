#include "legacy-transports/fifo/fifo_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "registry/dispatcher.h"
#include "spdlog/spdlog.h"

namespace sipd::legacy {
namespace {

constexpr int kPollIntervalMs = 200;
constexpr int kReplyOpenAttempts = 5;
constexpr auto kReplyOpenRetryDelay = std::chrono::milliseconds(80);

std::string Errno() { return std::strerror(errno); }

bool IsEndLine(std::string_view line) { return line == "\n" || line == "\r\n"; }

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

FifoServer::FifoServer(const FifoConfig& config, mi::Dispatcher& dispatcher)
    : config_(config),
      dispatcher_(dispatcher),
      input_(new char[kInputSize]),
      writer_(config.reply_indent, config.reply_timeout) {
  reply_path_.reserve(config.reply_dir.size() + 256);
}

FifoServer::~FifoServer() {
  CloseReply();
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
  last_input_ = std::chrono::steady_clock::now();
  spdlog::info("listening on {}", path);
  return absl::OkStatus();
}

void FifoServer::Run(const std::function<bool()>& stopping,
                     const std::function<void()>& on_wakeup) {
  while (!stopping()) {
    pollfd pfd{read_fd_, POLLIN, 0};
    const int ready = poll(&pfd, 1, PollTimeoutMs());
    on_wakeup();
    if (ready < 0 && errno != EINTR) {
      spdlog::error("poll: {}", Errno());
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollIntervalMs));
      continue;
    }
    if (ready > 0) ReadInput();
    // Only after reading what is there: bytes waiting in the pipe are not silence.
    CheckRequestTimeout();
  }
  spdlog::debug("stopping");
}

void FifoServer::ReadInput() {
  for (;;) {
    const ssize_t n = read(read_fd_, input_.get() + input_end_, kInputSize - input_end_);
    if (n > 0) {
      input_end_ += static_cast<size_t>(n);
      last_input_ = std::chrono::steady_clock::now();
      ProcessInput();
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) spdlog::error("read: {}", Errno());
    return;  // EAGAIN, or EOF (impossible while keep_fd_ is open)
  }
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
      spdlog::warn("command line longer than {} bytes: request discarded", kFifoMaxCommandLine - 1);
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
      if (IsEndLine(line)) RunRequest();
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
    spdlog::warn("command line too short: ignored");
    return;
  }
  const size_t colon = text.find(':', 1);
  if (text.front() != ':' || colon == std::string_view::npos || colon == 1) {
    spdlog::warn("malformed command line: request discarded");
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
  reply_fd_ = OpenReplyFifo(reply_name);
  if (reply_fd_ < 0) {
    state_ = State::kDiscard;
    return;
  }
  request_ = mi::Request();
  request_.command.assign(command);
  parser_.Begin(&request_.args);
  state_ = State::kArguments;
}

void FifoServer::HandleArgumentLine(std::string_view line) {
  if (!parser_.in_quoted_value() && IsEndLine(line)) {
    RunRequest();
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
  request_.args_error = why;
  state_ = State::kBadArgs;
}

void FifoServer::RunRequest() {
  mi::CallContext context;
  context.transport = mi::Transport::kFifo;
  context.peer.address = reply_path_;
  writer_.Begin(reply_fd_);
  const mi::DispatchResult result = dispatcher_.Run(context, std::move(request_), &writer_);
  if (result.outcome != mi::Outcome::kReply) {
    // "not available" / "parse error" / "failed": the single status line.
    writer_.WriteErrorLine(result.reply.code, result.reply.reason);
  }
  request_ = mi::Request();
  CloseReply();
  state_ = State::kIdle;
  // Serving takes time; a request queued behind this one is not silent meanwhile.
  last_input_ = std::chrono::steady_clock::now();
}

bool FifoServer::RequestInProgress() const {
  return state_ != State::kIdle || input_end_ > input_begin_ || skipping_line_;
}

int FifoServer::PollTimeoutMs() const {
  if (config_.request_timeout.count() <= 0 || !RequestInProgress()) return kPollIntervalMs;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(
      last_input_ + config_.request_timeout - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, kPollIntervalMs));
}

void FifoServer::CheckRequestTimeout() {
  if (config_.request_timeout.count() <= 0 || !RequestInProgress() ||
      std::chrono::steady_clock::now() - last_input_ < config_.request_timeout) {
    return;
  }
  spdlog::warn("request incomplete after {} ms of silence: discarded",
               config_.request_timeout.count());
  if (state_ == State::kIdle && !skipping_line_ && input_end_ > input_begin_) {
    // A command line without its LF: answer it if it names a usable reply FIFO.
    HandleCommandLine(std::string_view(input_.get() + input_begin_, input_end_ - input_begin_));
  }
  if (state_ == State::kArguments || state_ == State::kBadArgs) {
    writer_.Begin(reply_fd_);
    writer_.WriteErrorLine(400, absl::StrCat("parse error in command '", request_.command, "'"));
  }
  CloseReply();
  state_ = State::kIdle;
  input_begin_ = input_end_ = 0;
  skipping_line_ = false;
}

int FifoServer::OpenReplyFifo(std::string_view reply_name) {
  reply_path_.assign(config_.reply_dir).append(reply_name);
  int fd = -1;
  for (int attempt = 0; attempt < kReplyOpenAttempts; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(kReplyOpenRetryDelay);
    // Non-blocking: ENXIO while the client has not opened its end yet.
    fd = open(reply_path_.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 || errno != ENXIO) break;
  }
  if (fd < 0) {
    spdlog::warn("cannot open reply FIFO {}: {}", reply_path_,
                 errno == ENXIO ? "nobody reads it" : Errno());
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode) || st.st_nlink != 1) {
    spdlog::warn("reply file {} is not a FIFO with a single link: not used", reply_path_);
    close(fd);
    return -1;
  }
  return fd;
}

void FifoServer::CloseReply() {
  if (reply_fd_ >= 0) close(reply_fd_);
  reply_fd_ = -1;
}

}  // namespace sipd::legacy
