#include "legacy-transports/fifo/fifo_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sipd::legacy {
namespace {

std::string Errno() { return std::strerror(errno); }

}  // namespace

absl::StatusOr<std::unique_ptr<FifoClient>> FifoClient::Create(std::string request_fifo,
                                                               std::string reply_dir,
                                                               std::string prefix) {
  std::unique_ptr<FifoClient> client(new FifoClient());
  client->request_fifo_ = std::move(request_fifo);
  if (!reply_dir.empty() && reply_dir.back() != '/') reply_dir.push_back('/');
  std::random_device random;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string name = absl::StrFormat("%s%08x", prefix, random());
    std::string path = reply_dir + name;
    if (mkfifo(path.c_str(), 0600) == 0) {
      client->reply_name_ = std::move(name);
      client->reply_path_ = std::move(path);
      return client;
    }
    if (errno != EEXIST) return absl::InternalError(absl::StrCat("mkfifo ", path, ": ", Errno()));
  }
  return absl::InternalError("no free reply FIFO name");
}

FifoClient::~FifoClient() {
  if (request_fd_ >= 0) close(request_fd_);
  if (!reply_path_.empty()) unlink(reply_path_.c_str());
}

absl::Status FifoClient::Send(std::string_view bytes) {
  if (request_fd_ < 0) {
    request_fd_ = open(request_fifo_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (request_fd_ < 0) {
      return absl::UnavailableError(absl::StrCat("open ", request_fifo_, ": ", Errno()));
    }
  }
  while (!bytes.empty()) {
    const ssize_t n = write(request_fd_, bytes.data(), bytes.size());
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EAGAIN) {
      pollfd pfd{request_fd_, POLLOUT, 0};
      poll(&pfd, 1, 100);
    } else if (n < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("write ", request_fifo_, ": ", Errno()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FifoClient::Execute(std::string_view command,
                                                const std::vector<std::string>& args,
                                                std::chrono::milliseconds timeout) {
  request_.clear();
  request_.append(":").append(command).append(":").append(reply_name_).push_back('\n');
  for (const std::string& arg : args) request_.append(arg).push_back('\n');
  request_.push_back('\n');
  return Transact(request_, timeout);
}

absl::StatusOr<std::string> FifoClient::Transact(std::string_view request,
                                                 std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // A fresh read end per request: EOF (POLLHUP) then means "this reply's writer closed".
  const int fd = open(reply_path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", reply_path_, ": ", Errno()));
  absl::Status sent = Send(request);
  if (!sent.ok()) {
    close(fd);
    return sent;
  }
  std::string reply;
  char buffer[65536];
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      close(fd);
      return absl::DeadlineExceededError(
          absl::StrCat("no complete reply within ", timeout.count(), " ms; got '", reply, "'"));
    }
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      reply.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      break;  // the server closed the reply FIFO
    } else if (errno != EAGAIN && errno != EINTR) {
      close(fd);
      return absl::InternalError(absl::StrCat("read ", reply_path_, ": ", Errno()));
    }
  }
  close(fd);
  return reply;
}

}  // namespace sipd::legacy
