#include "legacy-transports/datagram/datagram_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sipd::legacy {
namespace {

std::string Errno() { return std::strerror(errno); }

absl::Status FillUnixAddress(const std::string& path, sockaddr_storage* out, socklen_t* len) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  std::memcpy(out, &addr, sizeof(addr));
  *len = sizeof(addr);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DatagramClient>> DatagramClient::UnixUnbound(
    const std::string& server_path) {
  std::unique_ptr<DatagramClient> client(new DatagramClient());
  absl::Status status = FillUnixAddress(server_path, &client->server_, &client->server_len_);
  if (!status.ok()) return status;
  client->fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (client->fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", Errno()));
  // Large requests (tests send 65 KB) need room in the send buffer.
  const int size = 256 * 1024;
  setsockopt(client->fd_, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  setsockopt(client->fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  return client;
}

absl::StatusOr<std::unique_ptr<DatagramClient>> DatagramClient::Unix(const std::string& server_path,
                                                                     const std::string& local_dir) {
  absl::StatusOr<std::unique_ptr<DatagramClient>> client = UnixUnbound(server_path);
  if (!client.ok()) return client.status();
  std::random_device random;
  std::string dir = local_dir.empty() ? "/tmp" : local_dir;
  if (dir.back() == '/') dir.pop_back();
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string path = absl::StrFormat("%s/sipd_mi.%d.%08x", dir, getpid(), random());
    sockaddr_storage addr{};
    socklen_t len = 0;
    absl::Status status = FillUnixAddress(path, &addr, &len);
    if (!status.ok()) return status;
    if (bind((*client)->fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0) {
      (*client)->local_path_ = std::move(path);
      return client;
    }
    if (errno != EADDRINUSE) return absl::InternalError(absl::StrCat("bind ", path, ": ", Errno()));
  }
  return absl::InternalError("no free client socket name");
}

absl::StatusOr<std::unique_ptr<DatagramClient>> DatagramClient::Udp(const std::string& host,
                                                                    int port) {
  std::unique_ptr<DatagramClient> client(new DatagramClient());
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat(host, ": ", gai_strerror(rc)));
  }
  std::memcpy(&client->server_, found->ai_addr, found->ai_addrlen);
  client->server_len_ = found->ai_addrlen;
  client->fd_ = socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  freeaddrinfo(found);
  if (client->fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", Errno()));
  const int size = 256 * 1024;
  setsockopt(client->fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  return client;
}

DatagramClient::~DatagramClient() {
  if (fd_ >= 0) close(fd_);
  if (!local_path_.empty()) unlink(local_path_.c_str());
}

absl::Status DatagramClient::Send(std::string_view request) {
  if (sendto(fd_, request.data(), request.size(), MSG_NOSIGNAL,
             reinterpret_cast<const sockaddr*>(&server_), server_len_) < 0) {
    return absl::UnavailableError(absl::StrCat("sendto: ", Errno()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DatagramClient::Receive(std::chrono::milliseconds timeout) {
  pollfd pfd{fd_, POLLIN, 0};
  const int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
  if (ready == 0) {
    return absl::DeadlineExceededError(
        absl::StrCat("no reply datagram within ", timeout.count(), " ms"));
  }
  if (ready < 0) return absl::InternalError(absl::StrCat("poll: ", Errno()));
  buffer_.resize(70000);
  const ssize_t n = recv(fd_, buffer_.data(), buffer_.size(), 0);
  if (n < 0) return absl::InternalError(absl::StrCat("recv: ", Errno()));
  return std::string(buffer_.data(), static_cast<size_t>(n));
}

absl::StatusOr<std::string> DatagramClient::Transact(std::string_view request,
                                                     std::chrono::milliseconds timeout) {
  absl::Status sent = Send(request);
  if (!sent.ok()) return sent;
  return Receive(timeout);
}

}  // namespace sipd::legacy
