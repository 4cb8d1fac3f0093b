// FIFO and datagram servers running in a thread of the test process, over the test
// registry: the golden tests use them where the daemon's commands would not give fixed
// bytes. The tests against a real sipd are in sipd_*_test.cc.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "legacy-transports/datagram/datagram_server.h"
#include "legacy-transports/fifo/fifo_server.h"
#include "tests/legacy-transports/test_registry.h"

namespace sipd::legacy::testing {

// A private temporary directory, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "sipd_legacy_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The port a bound UDP socket got (the servers bind port 0), or -1.
inline int BoundUdpPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return -1;
}

class InProcessFifo {
 public:
  explicit InProcessFifo(std::chrono::milliseconds request_timeout = std::chrono::milliseconds(300),
                         std::chrono::milliseconds reply_timeout = std::chrono::milliseconds(500))
      : registry_(NewTestRegistry()),
        dispatcher_(std::make_unique<mi::Dispatcher>(*registry_, nullptr,
                                                     mi::DispatcherOptions{.workers = 2})) {
    std::signal(SIGPIPE, SIG_IGN);
    config_.fifo_name = dir_.Join("sipd_fifo");
    config_.reply_dir = dir_.path() + "/";
    config_.request_timeout = request_timeout;
    config_.reply_timeout = reply_timeout;
  }
  ~InProcessFifo() { Stop(); }

  FifoConfig& config() { return config_; }
  const TempDir& dir() const { return dir_; }
  const std::string& fifo_name() const { return config_.fifo_name; }
  const std::string& reply_dir() const { return config_.reply_dir; }

  void Start() {
    ASSERT_TRUE(PrepareRequestFifo(config_).ok());
    server_ = std::make_unique<FifoServer>(config_, *dispatcher_);
    ASSERT_TRUE(server_->Open().ok());
    thread_ = std::thread([this] {
      const absl::Status status = server_->Run([this] { return stop_.load(); }, [] {});
      EXPECT_TRUE(status.ok()) << status;
    });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    server_.reset();
  }

  mi::Dispatcher& dispatcher() { return *dispatcher_; }
  mi::Registry& registry() { return *registry_; }
  // REQUIRES: Start(). Read it from the test thread only for figures that are atomic in
  // effect (sizes polled with WaitUntil).
  FifoServer& server() { return *server_; }
  // Async slots in use.
  size_t async_pending() {
    return dynamic_cast<mi::LocalAsyncBackend&>(dispatcher_->async()).pending();
  }

 private:
  TempDir dir_;
  std::unique_ptr<mi::Registry> registry_;
  std::unique_ptr<mi::Dispatcher> dispatcher_;
  FifoConfig config_;
  std::unique_ptr<FifoServer> server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class InProcessDatagram {
 public:
  // `socket_name` may contain {DIR} for the temp directory.
  explicit InProcessDatagram(std::string socket_name,
                             mi::DispatcherOptions options = mi::DispatcherOptions{.workers = 2})
      : registry_(NewTestRegistry()),
        dispatcher_(std::make_unique<mi::Dispatcher>(*registry_, nullptr, options)) {
    const size_t at = socket_name.find("{DIR}");
    if (at != std::string::npos) socket_name.replace(at, 5, dir_.path());
    config_.socket_name = socket_name;
  }
  ~InProcessDatagram() { Stop(); }

  DatagramConfig& config() { return config_; }
  const TempDir& dir() const { return dir_; }
  DatagramServer& server() { return *server_; }
  const std::vector<DatagramSockets>& sockets() const { return sockets_; }
  // The port of the first UDP socket (configure "udp:127.0.0.1:0"), or -1.
  int udp_port() const {
    for (const DatagramSockets& s : sockets_) {
      if (s.unix_path.empty()) return BoundUdpPort(s.rx);
    }
    return -1;
  }
  mi::Dispatcher& dispatcher() { return *dispatcher_; }
  size_t async_pending() {
    return dynamic_cast<mi::LocalAsyncBackend&>(dispatcher_->async()).pending();
  }

  // Creates the sockets and the server; `run` also starts serving in a thread.
  void Start(bool run = true) {
    absl::StatusOr<std::vector<DatagramSockets>> sockets = CreateDatagramSockets(config_);
    ASSERT_TRUE(sockets.ok()) << sockets.status();
    sockets_ = std::move(*sockets);
    server_ = std::make_unique<DatagramServer>(config_, *dispatcher_, sockets_);
    if (run) {
      thread_ = std::thread([this] {
        const absl::Status status = server_->Run([this] { return stop_.load(); }, [] {});
        EXPECT_TRUE(status.ok()) << status;
      });
    }
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    server_.reset();
    for (DatagramSockets& sockets : sockets_) sockets.Close();
    sockets_.clear();
  }

 private:
  TempDir dir_;
  std::unique_ptr<mi::Registry> registry_;
  std::unique_ptr<mi::Dispatcher> dispatcher_;
  DatagramConfig config_;
  std::vector<DatagramSockets> sockets_;
  std::unique_ptr<DatagramServer> server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sipd::legacy::testing
