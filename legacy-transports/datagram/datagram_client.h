// A client of the MI datagram transport (what opensipsunix is): for tests, benchmarks
// and the opensipsunix tool.
//
// UNIX: the client binds its own socket to `<dir>/<prefix><pid>.<random>` (the server
// needs an address to answer) and removes it on destruction. UDP: an ephemeral port.
// Requests go out with sendto(); replies are not filtered by sender because the UNIX
// server answers from a separate unbound socket.
//
// Thread-safety: one client per thread.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sipd::legacy {

class DatagramClient {
 public:
  // `local_dir`: where the client's own socket file is created.
  static absl::StatusOr<std::unique_ptr<DatagramClient>> Unix(const std::string& server_path,
                                                              const std::string& local_dir);
  // A client whose socket stays unbound: the server cannot answer it (tests).
  static absl::StatusOr<std::unique_ptr<DatagramClient>> UnixUnbound(
      const std::string& server_path);
  static absl::StatusOr<std::unique_ptr<DatagramClient>> Udp(const std::string& host, int port);
  ~DatagramClient();
  DatagramClient(const DatagramClient&) = delete;
  DatagramClient& operator=(const DatagramClient&) = delete;

  // Sends one datagram and returns the next datagram received. DeadlineExceeded if none
  // arrives within `timeout`.
  absl::StatusOr<std::string> Transact(std::string_view request,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(5));
  absl::Status Send(std::string_view request);
  absl::StatusOr<std::string> Receive(std::chrono::milliseconds timeout);

  int fd() const { return fd_; }

 private:
  DatagramClient() = default;

  int fd_ = -1;
  sockaddr_storage server_{};
  socklen_t server_len_ = 0;
  std::string local_path_;
  std::string buffer_;
};

}  // namespace sipd::legacy
