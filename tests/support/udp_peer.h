// UdpPeer: a UDP socket on 127.0.0.1 for tests (a raw SIP phone, a DNS server).
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sipd::testing {

// A UDP socket on 127.0.0.1 (port 0, read back) that sends and receives datagrams.
class UdpPeer {
 public:
  UdpPeer() {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~UdpPeer() { close(fd_); }
  UdpPeer(const UdpPeer&) = delete;
  UdpPeer& operator=(const UdpPeer&) = delete;

  int port() const { return port_; }
  int fd() const { return fd_; }
  void SendTo(int port, std::string_view bytes) const {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  // The next datagram, or "" after `timeout`.
  std::string Receive(std::chrono::milliseconds timeout = std::chrono::seconds(3)) const {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return "";
    std::string buffer(65536, '\0');
    const ssize_t n = recv(fd_, buffer.data(), buffer.size(), 0);
    buffer.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return buffer;
  }
  // Every datagram that arrives within `window` (for "nothing more came" checks).
  std::vector<std::string> Drain(std::chrono::milliseconds window) const {
    std::vector<std::string> out;
    const auto end = std::chrono::steady_clock::now() + window;
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      std::string d = Receive(left);
      if (d.empty()) break;
      out.push_back(std::move(d));
    }
    return out;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace sipd::testing
