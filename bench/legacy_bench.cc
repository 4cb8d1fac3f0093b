// Load driver for the legacy MI transports: `version` over the MI FIFO, the UNIX datagram
// socket and the UDP datagram socket of a real sipd that the bench starts itself
// (tests/support/sipd_harness.h), next to raw echo servers that are the floor: a UDP and
// a UNIX datagram echo with the same loop shape as mi_datagram (poll with a 200 ms
// timeout, recvfrom, sendto) but no MI work, and a FIFO echo that opens, writes and
// closes the reply FIFO of each request.
//
//   legacy_bench [--clients 1,4,8] [--seconds 3] [--warmup 0.5]
//                [--transports fifo,unix,udp,fifo-echo,udp-echo,unix-echo] [--datagram-children 1]
//                [--command version] [--cpus LIST] [--misbehaving 0,100,1000]
//
// Each client is one thread with one request in flight (FIFO: its own reply FIFO,
// opened before the request is written; datagram: its own socket). For every transport
// and client count it prints requests/s, p50/p99/max latency and the server CPU time per
// request: utime+stime (from /proc/<pid>/stat, before/after) of the serving process(es)
// (MI FIFO; all MI Datagram processes; the echo process) divided by the requests.
//
// Pinned figures (bench, sipd and the echo servers on CPU 0; children inherit it):
//   legacy_bench --cpus 0 --clients 1     (or: taskset -c 0 legacy_bench --clients 1)
//
// --misbehaving N1,N2,...: instead of the table above, for each of fifo/unix/udp in
// --transports and each N, N misbehaving clients (tests/legacy-transports/
// misbehaving_clients.h: never read, read 1 KB/s, idle, half-send, FIFO also never open;
// N spread evenly) work on the transport while ONE good client runs --command back to
// back; after a warm-up of at least 3 s (the FIFO cuts stalled readers after its 2 s
// reply_timeout, so the churn is established) its p50/p99/max latency and errors are
// measured over --seconds, with the RSS of the serving processes and how much it grew
// over the same run with N = 0. The sipd then also loads usrloc with 300 AORs: FIFO
// misbehaving readers ask for ul_dump (about 120 KB, streamed), datagram ones for
// `get_statistics all`.
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
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/legacy-transports/misbehaving_clients.h"
#include "tests/support/sipd_harness.h"

namespace {

using sipd::bench::Requester;
using sipd::bench::RequesterFactory;
using sipd::legacy::DatagramClient;
using sipd::legacy::FifoClient;

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

// Resident set size of `pid` in KB (VmRSS), or -1.
long ResidentKb(pid_t pid) {
  FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/status").c_str(), "r");
  if (f == nullptr) return -1;
  char line[256];
  long kb = -1;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb;
}

long TotalResidentKb(const std::vector<pid_t>& pids) {
  long total = 0;
  for (const pid_t pid : pids) {
    const long kb = ResidentKb(pid);
    if (kb < 0) return -1;
    total += kb;
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  sipd::bench::CommonFlags flags;
  flags.seconds = 3;
  flags.warmup = 0.5;
  std::string transports_list = "fifo,unix,udp,fifo-echo,udp-echo,unix-echo";
  int datagram_children = 1;
  std::string misbehaving_list;
  CLI::App app{"version over the legacy MI transports of sipd, and raw echo floors"};
  flags.AddTo(app);
  app.add_option("--transports", transports_list, "fifo,unix,udp,fifo-echo,udp-echo,unix-echo")
      ->capture_default_str();
  app.add_option("--datagram-children", datagram_children, "mi_datagram children_count")
      ->capture_default_str();
  app.add_option("--misbehaving", misbehaving_list,
                 "misbehaving client counts (e.g. 0,100,1000): one good client's latency among "
                 "them, per transport (fifo, unix, udp)");
  CLI11_PARSE(app, argc, argv);
  const absl::StatusOr<std::vector<int>> counts = flags.Apply();
  if (!counts.ok()) {
    std::fprintf(stderr, "%s\n", std::string(counts.status().message()).c_str());
    return 2;
  }
  const std::string& command = flags.command;
  const std::string datagram_request = ":" + command + ":\n";
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

  sipd::testing::SipdInstance::Options options;
  options.grpc = false;
  options.log_level = 1;  // warnings only: no per-request logging anywhere
  options.extra_config = absl::StrCat(
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
      "loadmodule \"mi_datagram\"\n"
      "modparam(\"mi_datagram\", \"socket_name\", \"{TMP_DIR}/mi.sock\")\n"
      "modparam(\"mi_datagram\", \"extra_socket_name\", \"udp:127.0.0.1:0\")\n",
      "modparam(\"mi_datagram\", \"children_count\", ", datagram_children, ")\n");
  std::vector<int> misbehaving_counts;
  if (!misbehaving_list.empty()) {
    for (const absl::string_view n : absl::StrSplit(misbehaving_list, ',')) {
      int count = 0;
      if (!absl::SimpleAtoi(n, &count) || count < 0) {
        std::fprintf(stderr, "bad --misbehaving '%s'\n", misbehaving_list.c_str());
        return 2;
      }
      misbehaving_counts.push_back(count);
    }
    absl::StrAppend(&options.extra_config, "loadmodule \"usrloc\"\n");
  }
  sipd::testing::SipdInstance sipd(options);
  if (absl::Status s = sipd.Start(); !s.ok()) {
    std::fprintf(stderr, "cannot start sipd: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const int udp_port = sipd.listener_port("mi_datagram", "udp");
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
  const std::vector<pid_t> fifo_pids = sipd::bench::PidsOfTypeInText(ps, "MI FIFO");
  const std::vector<pid_t> datagram_pids = sipd::bench::PidsOfTypeInText(ps, "MI Datagram");

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

  if (!misbehaving_counts.empty()) {
    // 300 AORs for the FIFO misbehaving readers' ul_dump.
    auto client = FifoClient::Create(fifo, sipd.tmp_dir());
    for (int i = 0; client.ok() && i < 300; ++i) {
      const std::string aor = absl::StrCat("user", i);
      (void)(*client)->Execute("ul_add", {"location", aor, "sip:" + aor + "@192.0.2.10:5060",
                                          "3600", "1", "0", "0", "0", "4294967295"});
    }
    const double warmup = std::max(flags.warmup, 3.0);
    std::printf(
        "one good client (%s) among N misbehaving clients; %.1f s measured after %.1f s; "
        "mi_datagram children_count %d\n",
        command.c_str(), flags.seconds, warmup, datagram_children);
    const sipd::bench::MarkdownTable table({"transport", "misbehaving", "good req/s", "p50 us",
                                            "p99 us", "max us", "errors", "server RSS MB",
                                            "RSS growth KB/client"});
    table.PrintHeader();
    for (const Target& target : targets) {
      const bool is_fifo = target.name == "MI FIFO";
      const bool is_unix = target.name == "MI datagram UNIX";
      if (!is_fifo && !is_unix && target.name != "MI datagram UDP") continue;
      long base_kb = -1;
      for (const int n : misbehaving_counts) {
        absl::StatusOr<std::unique_ptr<sipd::legacy::testing::MisbehavingClients>> misbehaving;
        if (n > 0 && is_fifo) {
          misbehaving = sipd::legacy::testing::MisbehavingClients::StartFifo(
              {.fifo = fifo,
               .reply_dir = sipd.tmp_dir() + "/",
               .mix = sipd::legacy::testing::MisbehavingMix::Spread(n, true)});
        } else if (n > 0) {
          sipd::legacy::testing::MisbehavingClients::DatagramOptions o;
          o.unix_path = is_unix ? mi_socket : "";
          o.client_dir = dir;
          o.udp_port = udp_port;
          o.mix = sipd::legacy::testing::MisbehavingMix::Spread(n, false);
          misbehaving = sipd::legacy::testing::MisbehavingClients::StartDatagram(o);
        }
        if (n > 0 && !misbehaving.ok()) {
          std::fprintf(stderr, "misbehaving clients: %s\n",
                       std::string(misbehaving.status().message()).c_str());
          return 1;
        }
        const sipd::bench::RunResult r =
            sipd::bench::RunClosedLoop(target.factory, 1, warmup, flags.seconds, {});
        const long kb = TotalResidentKb(target.server_pids);
        if (n == 0) base_kb = kb;
        const std::string growth =
            n > 0 && base_kb >= 0 && kb >= 0
                ? absl::StrFormat("%.1f", static_cast<double>(kb - base_kb) / n)
                : std::string("-");
        table.PrintRow({target.name, absl::StrCat(n), absl::StrFormat("%.0f", r.calls / r.seconds),
                        absl::StrFormat("%.1f", r.latency.p50_us),
                        absl::StrFormat("%.1f", r.latency.p99_us),
                        absl::StrFormat("%.1f", r.latency.max_us), absl::StrCat(r.errors),
                        absl::StrFormat("%.1f", kb / 1024.0), growth});
      }
    }
  }

  if (misbehaving_counts.empty()) {
    std::printf("%s, %.1f s per run after %.1f s warm-up; mi_datagram children_count %d\n",
                command.c_str(), flags.seconds, flags.warmup, datagram_children);
    const sipd::bench::MarkdownTable table({"transport", "clients", "req/s", "p50 us", "p99 us",
                                            "max us", "errors", "server CPU us/req"});
    table.PrintHeader();
    for (const Target& target : targets) {
      for (int n : *counts) {
        const sipd::bench::RunResult r = sipd::bench::RunClosedLoop(
            target.factory, n, flags.warmup, flags.seconds, target.server_pids);
        table.PrintRow({target.name, absl::StrCat(n), absl::StrFormat("%.0f", r.calls / r.seconds),
                        absl::StrFormat("%.1f", r.latency.p50_us),
                        absl::StrFormat("%.1f", r.latency.p99_us),
                        absl::StrFormat("%.1f", r.latency.max_us), absl::StrCat(r.errors),
                        absl::StrFormat("%.2f", r.server_cpu_us_per_call)});
      }
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
