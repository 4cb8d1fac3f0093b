// A client of the MI FIFO, as opensipsctl is: for tests, benchmarks and tools.
//
// It creates its reply FIFO `<reply_dir>/<prefix><8 hex>` (mode 0600: the server must
// run as the same user or root), sends `:command:<reply name>\n`, the argument lines and
// the empty line in one write, and reads the reply until the server closes the reply
// FIFO (EOF), which is the only end-of-reply signal (flushed replies contain empty
// lines). The reply FIFO is opened for reading before the request is written, so the
// server never has to retry its open.
//
// Thread-safety: one client per thread; distinct clients may run concurrently.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace sipd::legacy {

class FifoClient {
 public:
  // Creates the reply FIFO. `reply_dir` must be the server's reply_dir.
  static absl::StatusOr<std::unique_ptr<FifoClient>> Create(std::string request_fifo,
                                                            std::string reply_dir,
                                                            std::string prefix = "osips_rply_");
  ~FifoClient();  // closes and removes the reply FIFO
  FifoClient(const FifoClient&) = delete;
  FifoClient& operator=(const FifoClient&) = delete;

  // The bare reply FIFO name that goes on the wire.
  const std::string& reply_name() const { return reply_name_; }
  const std::string& reply_path() const { return reply_path_; }

  // Runs `command` with one argument line per element (sent verbatim) and returns the
  // raw reply bytes. DeadlineExceeded if the reply is not complete within `timeout`.
  absl::StatusOr<std::string> Execute(std::string_view command,
                                      const std::vector<std::string>& args = {},
                                      std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Writes `request` verbatim (it should name reply_name()) and reads the reply.
  absl::StatusOr<std::string> Transact(std::string_view request,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Writes bytes to the request FIFO without waiting for anything.
  absl::Status Send(std::string_view bytes);

 private:
  FifoClient() = default;

  std::string request_fifo_;
  std::string reply_name_;
  std::string reply_path_;
  int request_fd_ = -1;
  std::string request_;
};

}  // namespace sipd::legacy
