#include "sipd/core/proc_net.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace sipd {
namespace {

// "0100007F:9826" (IPv4) or 32 hex digits + ":PORT" (IPv6): the kernel prints each 32-bit
// word of the address in host byte order.
bool ParseHexAddress(const char* text, bool ipv6, SipAddress* out) {
  const char* colon = std::strchr(text, ':');
  if (colon == nullptr) return false;
  const size_t digits = static_cast<size_t>(colon - text);
  const unsigned port = static_cast<unsigned>(std::strtoul(colon + 1, nullptr, 16));
  if (!ipv6) {
    if (digits != 8) return false;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr =
        static_cast<uint32_t>(std::strtoul(std::string(text, 8).c_str(), nullptr, 16));
    a.sin_port = htons(static_cast<uint16_t>(port));
    *out = SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&a), sizeof(a));
    return true;
  }
  if (digits != 32) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  for (int word = 0; word < 4; ++word) {
    const uint32_t value =
        static_cast<uint32_t>(std::strtoul(std::string(text + word * 8, 8).c_str(), nullptr, 16));
    std::memcpy(reinterpret_cast<char*>(&a.sin6_addr) + word * 4, &value, 4);
  }
  a.sin6_port = htons(static_cast<uint16_t>(port));
  *out = SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&a), sizeof(a));
  return true;
}

}  // namespace

void ForEachProcNetSocket(const char* path, bool ipv6,
                          absl::FunctionRef<void(const ProcNetSocket&)> fn) {
  FILE* file = std::fopen(path, "re");
  if (file == nullptr) return;
  char line[512];
  bool header = true;
  while (std::fgets(line, sizeof(line), file) != nullptr) {
    if (header) {
      header = false;
      continue;
    }
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    char local[64];
    char remote[64];
    unsigned state = 0;
    unsigned long long tx = 0;
    unsigned long long rx = 0;
    unsigned long long inode = 0;
    if (std::sscanf(line, " %*[^:]: %63s %63s %x %llx:%llx %*x:%*x %*x %*u %*u %llu", local, remote,
                    &state, &tx, &rx, &inode) != 6) {
      continue;
    }
    ProcNetSocket socket;
    if (!ParseHexAddress(local, ipv6, &socket.local)) continue;
    socket.state = static_cast<int>(state);
    socket.tx_queue = tx;
    socket.rx_queue = rx;
    socket.inode = inode;
    fn(socket);
  }
  std::fclose(file);
}

}  // namespace sipd
