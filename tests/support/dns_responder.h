// A DNS server for tests, on 127.0.0.1 (port 0, read back), in a thread. It answers A
// and AAAA queries for the names it was given (with their TTL), NXDOMAIN for every other
// name, and nothing at all for names marked silent; it counts the queries per name.
// Point sipd at it with modparam("tm", "dns_servers", responder.server()).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "tests/support/udp_peer.h"

namespace sipd::testing {

class DnsResponder {
 public:
  DnsResponder() {
    stop_ = eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { Serve(); });
  }
  ~DnsResponder() {
    const uint64_t one = 1;
    (void)!write(stop_, &one, sizeof(one));
    thread_.join();
    close(stop_);
  }
  DnsResponder(const DnsResponder&) = delete;
  DnsResponder& operator=(const DnsResponder&) = delete;

  std::string server() const { return absl::StrCat("127.0.0.1:", socket_.port()); }

  // `name` has these addresses (either may be empty: no record of that type).
  void Add(const std::string& name, const std::string& ipv4, const std::string& ipv6 = "",
           uint32_t ttl = 60) {
    std::lock_guard<std::mutex> lock(mu_);
    names_[absl::AsciiStrToLower(name)] = Record{ipv4, ipv6, ttl};
  }
  // Queries for `name` get no answer.
  void Silent(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    silent_.insert(absl::AsciiStrToLower(name));
  }
  // Queries received for `name` (any type).
  int Queries(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = queries_.find(absl::AsciiStrToLower(name));
    return it == queries_.end() ? 0 : it->second;
  }

 private:
  struct Record {
    std::string ipv4, ipv6;
    uint32_t ttl = 60;
  };

  void Serve() {
    while (true) {
      pollfd fds[2] = {{socket_.fd(), POLLIN, 0}, {stop_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 || fds[1].revents != 0) return;
      unsigned char q[512];
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      const ssize_t n =
          recvfrom(socket_.fd(), q, sizeof(q), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 12) continue;
      // The question: labels, then type and class.
      std::string name;
      size_t at = 12;
      while (at < static_cast<size_t>(n) && q[at] != 0) {
        const size_t label = q[at];
        if (at + 1 + label > static_cast<size_t>(n)) break;
        if (!name.empty()) name += '.';
        name.append(reinterpret_cast<const char*>(q + at + 1), label);
        at += 1 + label;
      }
      if (at + 5 > static_cast<size_t>(n)) continue;
      const size_t question_end = at + 5;
      const int type = q[at + 1] << 8 | q[at + 2];
      name = absl::AsciiStrToLower(name);
      Record record;
      bool known = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++queries_[name];
        if (silent_.contains(name)) continue;
        auto it = names_.find(name);
        if (it != names_.end()) {
          known = true;
          record = it->second;
        }
      }
      std::string r(reinterpret_cast<const char*>(q), question_end);
      r[2] = static_cast<char>(0x81);                 // QR, RD
      r[3] = static_cast<char>(known ? 0x80 : 0x83);  // RA; NOERROR or NXDOMAIN
      r[4] = 0;
      r[5] = 1;  // one question
      r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
      unsigned char address[16];
      int size = 0;
      if (type == 1 && !record.ipv4.empty() && inet_pton(AF_INET, record.ipv4.c_str(), address)) {
        size = 4;
      } else if (type == 28 && !record.ipv6.empty() &&
                 inet_pton(AF_INET6, record.ipv6.c_str(), address)) {
        size = 16;
      }
      if (size > 0) {
        r[7] = 1;  // one answer: the question's name (a pointer to offset 12), type, IN
        const unsigned char rr[] = {0xc0,
                                    12,
                                    0,
                                    static_cast<unsigned char>(type),
                                    0,
                                    1,
                                    static_cast<unsigned char>(record.ttl >> 24),
                                    static_cast<unsigned char>(record.ttl >> 16),
                                    static_cast<unsigned char>(record.ttl >> 8),
                                    static_cast<unsigned char>(record.ttl),
                                    0,
                                    static_cast<unsigned char>(size)};
        r.append(reinterpret_cast<const char*>(rr), sizeof(rr));
        r.append(reinterpret_cast<const char*>(address), size);
      }
      sendto(socket_.fd(), r.data(), r.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }

  UdpPeer socket_;  // 127.0.0.1, port 0
  int stop_ = -1;
  mutable std::mutex mu_;
  std::map<std::string, Record> names_;
  std::set<std::string> silent_;
  std::map<std::string, int> queries_;
  std::thread thread_;
};

}  // namespace sipd::testing
