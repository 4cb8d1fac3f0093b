// Load driver for the legacy MI transports: `version` over the MI FIFO, the UNIX datagram
// socket and the UDP datagram socket of a real sipd that the bench starts itself
// (tests/support/sipd_harness.h), next to raw echo servers that are the floor: a UDP and
// a UNIX datagram echo with the same loop shape as mi_datagram (poll with a 200 ms
// timeout, recvfrom, sendto) but no MI work, and a FIFO echo that opens, writes and
// closes the reply FIFO of each request.
//
//   legacy_bench [--clients 1,4,8] [--seconds 3] [--warmup 0.5]
//                [--transports fifo,unix,udp,fifo-echo,udp-echo,unix-echo] [--datagram-children 1]
//
// Each client is one thread with one request in flight (FIFO: its own reply FIFO,
// opened before the request is written; datagram: its own socket). For every transport
// and client count it prints requests/s, p50/p99/max latency and the server CPU time per
// request: utime+stime (from /proc/<pid>/stat, before/after) of the serving process(es)
// (MI FIFO; all MI Datagram processes; the echo process) divided by the requests.
//
// Pinned figures (bench, sipd and the echo servers on CPU 0; children inherit it):
//   taskset -c 0 legacy_bench --clients 1
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/support/sipd_harness.h"

namespace {

using Clock = std::chrono::steady_clock;
using sipd::legacy::DatagramClient;
using sipd::legacy::FifoClient;

struct RunResult {
  uint64_t calls = 0;
  uint64_t errors = 0;
  double seconds = 0;
  double p50_us = 0, p99_us = 0, max_us = 0;
  double server_cpu_us_per_call = -1;
};

// utime + stime of a process, in clock ticks; -1 if unreadable.
long long ProcessCpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoll(f);
    if (i == 15) stime = std::stoll(f);
  }
  return utime + stime;
}

long long TotalCpuTicks(const std::vector<pid_t>& pids) {
  long long total = 0;
  for (pid_t pid : pids) {
    const long long ticks = ProcessCpuTicks(pid);
    if (ticks < 0) return -1;
    total += ticks;
  }
  return total;
}

// One request; false on error. Each client thread owns one.
using Requester = std::function<bool()>;
using RequesterFactory = std::function<Requester()>;

RunResult Run(const RequesterFactory& factory, int clients, double warmup_seconds, double seconds,
              const std::vector<pid_t>& server_pids) {
  std::vector<Requester> requesters;
  for (int i = 0; i < clients; ++i) requesters.push_back(factory());
  std::atomic<int> phase{0};  // 0 warm-up, 1 measuring, 2 stop
  std::vector<std::vector<uint32_t>> latencies(clients);
  std::vector<uint64_t> errors(clients, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    latencies[i].reserve(1 << 20);
    threads.emplace_back([&, i] {
      while (true) {
        const int p = phase.load(std::memory_order_relaxed);
        if (p == 2) break;
        const auto start = Clock::now();
        const bool ok = requesters[i]();
        const auto end = Clock::now();
        if (p != 1) continue;
        if (!ok) ++errors[i];
        latencies[i].push_back(static_cast<uint32_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count() / 100));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_seconds));
  const long long cpu_before = TotalCpuTicks(server_pids);
  const auto t0 = Clock::now();
  phase = 1;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  phase = 2;
  const auto t1 = Clock::now();
  const long long cpu_after = TotalCpuTicks(server_pids);
  for (auto& t : threads) t.join();

  RunResult r;
  r.seconds = std::chrono::duration<double>(t1 - t0).count();
  std::vector<uint32_t> all;
  for (int i = 0; i < clients; ++i) {
    all.insert(all.end(), latencies[i].begin(), latencies[i].end());
    r.errors += errors[i];
  }
  r.calls = all.size();
  if (!all.empty()) {
    std::sort(all.begin(), all.end());
    r.p50_us = all[all.size() / 2] / 10.0;
    r.p99_us = all[std::min(all.size() - 1, all.size() * 99 / 100)] / 10.0;
    r.max_us = all.back() / 10.0;
  }
  if (cpu_before >= 0 && cpu_after >= 0 && r.calls > 0) {
    r.server_cpu_us_per_call =
        static_cast<double>(cpu_after - cpu_before) * 1e6 / sysconf(_SC_CLK_TCK) / r.calls;
  }
  return r;
}

// --- echo servers (the floor) ------------------------------------------------------------

// Forks a datagram echo server bound to `address` with mi_datagram's loop shape. Returns
// its pid; the bound address is written back (UDP: the port chosen by the kernel).
pid_t StartEchoServer(int family, sockaddr_storage* address, socklen_t* length) {
  const int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(address), *length) != 0) return -1;
  getsockname(fd, reinterpret_cast<sockaddr*>(address), length);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) {
    close(fd);
    return pid;
  }
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(0);
  // Replies to UNIX clients leave from a separate unbound socket, as in mi_datagram.
  const int tx = family == AF_UNIX ? socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0) : fd;
  char buffer[65536];
  for (;;) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 200) <= 0) continue;
    sockaddr_storage from{};
    socklen_t from_len = sizeof(from);
    const ssize_t n = recvfrom(fd, buffer, sizeof(buffer), MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) continue;
    sendto(tx, buffer, static_cast<size_t>(n), MSG_DONTWAIT | MSG_NOSIGNAL,
           reinterpret_cast<sockaddr*>(&from), from_len);
  }
}

// Forks a FIFO "echo" server: the floor of the FIFO transport. Per request
// (`:cmd:reply_name\n\n`) it opens the reply FIFO non-blocking, writes a fixed reply and
// closes it: the system calls of mi_fifo without parsing, dispatch or the safety checks.
pid_t StartFifoEchoServer(const std::string& fifo, const std::string& reply_dir) {
  if (mkfifo(fifo.c_str(), 0600) != 0) return -1;
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(0);
  const int fd = open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  const int keep = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
  (void)keep;
  static constexpr char kReply[] = "200 OK\nServer:: echo\n\n";
  std::string pending;
  std::string path;
  char buffer[16384];
  for (;;) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, 200) <= 0) continue;
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) continue;
    pending.append(buffer, static_cast<size_t>(n));
    size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      const size_t colon = pending.find(':', 1);
      const size_t lf = pending.find('\n');
      if (colon != std::string::npos && colon < lf) {
        path.assign(reply_dir).append(pending, colon + 1, lf - colon - 1);
        const int reply = open(path.c_str(), O_WRONLY | O_NONBLOCK);
        if (reply >= 0) {
          (void)!write(reply, kReply, sizeof(kReply) - 1);
          close(reply);
        }
      }
      pending.erase(0, end + 2);
    }
  }
}

std::vector<pid_t> PidsOfType(const std::string& ps_reply, const std::string& type) {
  std::vector<pid_t> pids;
  const std::regex line("PID=(\\d+) Type=" + type + "\n");
  for (auto it = std::sregex_iterator(ps_reply.begin(), ps_reply.end(), line);
       it != std::sregex_iterator(); ++it) {
    pids.push_back(std::stoi((*it)[1]));
  }
  return pids;
}

}  // namespace

int main(int argc, char** argv) {
  std::string clients_list = "1,4,8";
  std::string transports_list = "fifo,unix,udp,fifo-echo,udp-echo,unix-echo";
  double seconds = 3, warmup = 0.5;
  int datagram_children = 1;
  std::string command = "version";
  CLI::App app{"version over the legacy MI transports of sipd, and raw echo floors"};
  app.add_option("--clients", clients_list, "comma-separated client counts")->capture_default_str();
  app.add_option("--transports", transports_list, "fifo,unix,udp,fifo-echo,udp-echo,unix-echo")
      ->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds per run")->capture_default_str();
  app.add_option("--warmup", warmup, "warm-up seconds per run")->capture_default_str();
  app.add_option("--datagram-children", datagram_children, "mi_datagram children_count")
      ->capture_default_str();
  app.add_option("--command", command, "MI command (no arguments)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const std::string datagram_request = ":" + command + ":\n";

  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(clients_list, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      std::fprintf(stderr, "bad --clients\n");
      return 2;
    }
    counts.push_back(n);
  }
  const std::vector<std::string> transports = absl::StrSplit(transports_list, ',');

  // The echo servers are forked before any thread exists.
  char dir_pattern[] = "/tmp/legacy_bench_XXXXXX";
  const std::string dir = mkdtemp(dir_pattern);
  sockaddr_storage udp_echo{};
  socklen_t udp_echo_len = sizeof(sockaddr_in);
  auto* udp_addr = reinterpret_cast<sockaddr_in*>(&udp_echo);
  udp_addr->sin_family = AF_INET;
  udp_addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const pid_t udp_echo_pid = StartEchoServer(AF_INET, &udp_echo, &udp_echo_len);
  sockaddr_storage unix_echo{};
  socklen_t unix_echo_len = sizeof(sockaddr_un);
  auto* unix_addr = reinterpret_cast<sockaddr_un*>(&unix_echo);
  unix_addr->sun_family = AF_UNIX;
  const std::string unix_echo_path = dir + "/echo.sock";
  std::strcpy(unix_addr->sun_path, unix_echo_path.c_str());
  const pid_t unix_echo_pid = StartEchoServer(AF_UNIX, &unix_echo, &unix_echo_len);
  if (udp_echo_pid <= 0 || unix_echo_pid <= 0) {
    std::fprintf(stderr, "cannot start the echo servers\n");
    return 1;
  }
  const int udp_echo_port = ntohs(udp_addr->sin_port);
  const std::string fifo_echo_path = dir + "/echo_fifo";
  const pid_t fifo_echo_pid = StartFifoEchoServer(fifo_echo_path, dir + "/");
  if (fifo_echo_pid <= 0) {
    std::fprintf(stderr, "cannot start the FIFO echo server\n");
    return 1;
  }

  const int udp_port = sipd::testing::FreeUdpPort();
  sipd::testing::SipdInstance::Options options;
  options.grpc = false;
  options.log_level = 1;  // warnings only: no per-request logging anywhere
  options.extra_config = absl::StrCat(
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
      "loadmodule \"mi_datagram\"\n"
      "modparam(\"mi_datagram\", \"socket_name\", \"{TMP_DIR}/mi.sock\")\n"
      "modparam(\"mi_datagram\", \"extra_socket_name\", \"udp:127.0.0.1:",
      udp_port, "\")\n", "modparam(\"mi_datagram\", \"children_count\", ", datagram_children,
      ")\n");
  sipd::testing::SipdInstance sipd(options);
  if (absl::Status s = sipd.Start(); !s.ok()) {
    std::fprintf(stderr, "cannot start sipd: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const std::string fifo = sipd.tmp_dir() + "/sipd_fifo";
  const std::string mi_socket = sipd.tmp_dir() + "/mi.sock";
  std::string ps;
  {
    auto client = DatagramClient::Unix(mi_socket, dir);
    absl::StatusOr<std::string> reply =
        client.ok() ? (*client)->Transact(":ps:\n") : client.status();
    if (!reply.ok()) {
      std::fprintf(stderr, "ps failed: %s\n", std::string(reply.status().message()).c_str());
      return 1;
    }
    ps = *reply;
  }
  const std::vector<pid_t> fifo_pids = PidsOfType(ps, "MI FIFO");
  const std::vector<pid_t> datagram_pids = PidsOfType(ps, "MI Datagram");

  // A datagram requester: `version` with its reply checked for a 200.
  auto datagram = [&](std::function<absl::StatusOr<std::unique_ptr<DatagramClient>>()> make) {
    return [make, &datagram_request]() -> Requester {
      std::shared_ptr<DatagramClient> client(make().value().release());
      return [client, &datagram_request] {
        absl::StatusOr<std::string> reply = client->Transact(datagram_request);
        return reply.ok() && reply->compare(0, 4, "200 ") == 0;
      };
    };
  };
  struct Target {
    std::string name;
    RequesterFactory factory;
    std::vector<pid_t> server_pids;
  };
  std::vector<Target> targets;
  for (const std::string& t : transports) {
    if (t == "fifo") {
      targets.push_back({"MI FIFO",
                         [&]() -> Requester {
                           std::shared_ptr<FifoClient> client(
                               FifoClient::Create(fifo, sipd.tmp_dir()).value().release());
                           return [client, &command] {
                             absl::StatusOr<std::string> reply = client->Execute(command);
                             return reply.ok() && reply->compare(0, 4, "200 ") == 0;
                           };
                         },
                         fifo_pids});
    } else if (t == "unix") {
      targets.push_back({"MI datagram UNIX",
                         datagram([&] { return DatagramClient::Unix(mi_socket, dir); }),
                         datagram_pids});
    } else if (t == "udp") {
      targets.push_back({"MI datagram UDP",
                         datagram([&] { return DatagramClient::Udp("127.0.0.1", udp_port); }),
                         datagram_pids});
    } else if (t == "udp-echo") {
      targets.push_back({"raw UDP echo",
                         [&]() -> Requester {
                           std::shared_ptr<DatagramClient> client(
                               DatagramClient::Udp("127.0.0.1", udp_echo_port).value().release());
                           return [client, &datagram_request] {
                             return client->Transact(datagram_request).ok();
                           };
                         },
                         {udp_echo_pid}});
    } else if (t == "fifo-echo") {
      targets.push_back({"raw FIFO echo",
                         [&]() -> Requester {
                           std::shared_ptr<FifoClient> client(
                               FifoClient::Create(fifo_echo_path, dir).value().release());
                           return [client, &command] { return client->Execute(command).ok(); };
                         },
                         {fifo_echo_pid}});
    } else if (t == "unix-echo") {
      targets.push_back({"raw UNIX echo",
                         [&]() -> Requester {
                           std::shared_ptr<DatagramClient> client(
                               DatagramClient::Unix(unix_echo_path, dir).value().release());
                           return [client, &datagram_request] {
                             return client->Transact(datagram_request).ok();
                           };
                         },
                         {unix_echo_pid}});
    } else {
      std::fprintf(stderr, "unknown transport '%s'\n", t.c_str());
      return 2;
    }
  }

  std::printf("%s, %.1f s per run after %.1f s warm-up; mi_datagram children_count %d\n",
              command.c_str(), seconds, warmup, datagram_children);
  std::printf(
      "| transport | clients | req/s | p50 us | p99 us | max us | errors | server CPU us/req |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Target& target : targets) {
    for (int n : counts) {
      const RunResult r = Run(target.factory, n, warmup, seconds, target.server_pids);
      std::printf("| %s | %d | %.0f | %.1f | %.1f | %.1f | %llu | %.2f |\n", target.name.c_str(), n,
                  r.calls / r.seconds, r.p50_us, r.p99_us, r.max_us,
                  static_cast<unsigned long long>(r.errors), r.server_cpu_us_per_call);
      std::fflush(stdout);
    }
  }

  for (const pid_t echo : {udp_echo_pid, unix_echo_pid, fifo_echo_pid}) {
    kill(echo, SIGTERM);
    waitpid(echo, nullptr, 0);
  }
  if (absl::Status s = sipd.Stop(); !s.ok()) {
    std::fprintf(stderr, "sipd stop: %s\n", std::string(s.message()).c_str());
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return 0;
}
