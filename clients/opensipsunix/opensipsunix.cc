// opensipsunix: sends one MI datagram request read from stdin to sipd's mi_datagram
// socket and prints the reply datagram verbatim (OpenSIPS 1.11 utils/opensipsunix, spec
// 4.7), with a receive timeout instead of waiting forever.
//
//   printf ':uptime:\n' | opensipsunix [-t TIMEOUT_MS] [-d DIR] SOCKET
//
// SOCKET is a UNIX socket path, or `udp:HOST:PORT` for a UDP mi_datagram socket. For a
// UNIX socket the client binds its own socket in DIR (default /tmp; the server needs an
// address to answer) and removes it on exit. Exit status: 0 reply printed, 1 error,
// 2 usage, 3 no reply within the timeout (default 10000 ms).
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "legacy-transports/datagram/datagram_client.h"

namespace {

constexpr size_t kMaxRequest = 65536;

int Usage() {
  std::fprintf(stderr,
               "usage: opensipsunix [-t TIMEOUT_MS] [-d DIR] SOCKET < request\n"
               "  SOCKET: the mi_datagram UNIX socket path, or udp:HOST:PORT\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  long timeout_ms = 10000;
  std::string local_dir = "/tmp";
  int opt;
  while ((opt = getopt(argc, argv, "t:d:h")) != -1) {
    switch (opt) {
      case 't': {
        const char* end = optarg + std::strlen(optarg);
        if (std::from_chars(optarg, end, timeout_ms).ptr != end || timeout_ms <= 0) {
          return Usage();
        }
        break;
      }
      case 'd':
        local_dir = *optarg != '\0' ? optarg : "/tmp";
        break;
      default:
        return Usage();
    }
  }
  if (optind + 1 != argc) return Usage();
  const std::string target = argv[optind];

  std::string request;
  char buffer[8192];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0) {
    request.append(buffer, n);
    if (request.size() > kMaxRequest) {
      std::fprintf(stderr, "opensipsunix: request longer than %zu bytes\n", kMaxRequest);
      return 1;
    }
  }

  absl::StatusOr<std::unique_ptr<sipd::legacy::DatagramClient>> client;
  if (target.rfind("udp:", 0) == 0) {
    const size_t colon = target.rfind(':');
    int port = 0;
    std::string host = target.substr(4, colon - 4);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    if (colon <= 4 ||
        std::from_chars(target.data() + colon + 1, target.data() + target.size(), port).ptr !=
            target.data() + target.size()) {
      return Usage();
    }
    client = sipd::legacy::DatagramClient::Udp(host, port);
  } else {
    client = sipd::legacy::DatagramClient::Unix(target, local_dir);
  }
  if (!client.ok()) {
    std::fprintf(stderr, "opensipsunix: %s\n", std::string(client.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<std::string> reply =
      (*client)->Transact(request, std::chrono::milliseconds(timeout_ms));
  if (!reply.ok()) {
    std::fprintf(stderr, "opensipsunix: %s (%s)\n", std::string(reply.status().message()).c_str(),
                 target.c_str());
    return reply.status().code() == absl::StatusCode::kDeadlineExceeded ? 3 : 1;
  }
  std::fwrite(reply->data(), 1, reply->size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}
