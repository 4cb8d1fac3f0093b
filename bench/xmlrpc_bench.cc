// Load driver for the MI XML-RPC transport: POST /RPC2 methodCall CMD (default `version`)
// against a real sipd that the bench starts itself (tests/support/sipd_harness.h, with
// `loadmodule "mi_xmlrpc"` on a free port), or against --port.
//
//   xmlrpc_bench [--clients 1,4,8] [--seconds 5] [--warmup 1] [--repeat 3]
//                [--command version] [--cpus 0] [--processes N]
//                [--port N [--server-pid PID]]
//
// Each client is one thread with one keep-alive HTTP/1.1 connection issuing requests
// back to back (one in flight). The client is kept cheap so that it does not dominate
// the 2-core machine: the request bytes are built once, each response is read into a
// reused buffer and checked in place (status 200, Content-Length framing, a
// methodResponse <string> starting "Server:: " for `version`). When the server closes a
// connection (its Keep-Alive max, or `Connection: close`), the client reconnects and the
// reconnect is part of the next request's latency, as for a real client; the
// `connections` column counts them. --cpus pins the bench and the sipd it starts (as
// `taskset -c`). For every client count and repetition it prints requests/s, p50/p99/max
// latency, and the CPU time per request of the server ("MI XMLRPC" process: utime+stime
// of all its threads from /proc/<pid>/stat, summed over every MI XMLRPC process; only
// when the bench started sipd or --server-pid is given) and of the bench itself; with --repeat > 1
// a second table holds, per client count, the run with the median requests/s.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_support.h"
#include "tests/support/sipd_harness.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace {

using sipd::xmlrpc::testing::MethodCall;
using sipd::xmlrpc::testing::PostRequest;
using sipd::xmlrpc::testing::RawConnection;

// PIDs of the "MI XMLRPC" processes, from the `ps` MI command over XML-RPC itself.
std::vector<pid_t> FindMiXmlrpcPids(int port) {
  RawConnection connection;
  if (!connection.Connect(port)) return {};
  const auto outcome = connection.Call(MethodCall("ps"));
  if (!outcome || outcome->is_fault) return {};
  return sipd::bench::PidsOfTypeInText(outcome->String(), "MI XMLRPC");
}

// One client's keep-alive connection. Not thread-safe: one client thread owns it.
class BenchConnection {
 public:
  BenchConnection(int port, std::string_view request, std::string_view expected_body,
                  std::atomic<uint64_t>* connections)
      : port_(port), request_(request), expected_body_(expected_body), connections_(connections) {
    buffer_.resize(kBufferSize);
  }
  ~BenchConnection() { Close(); }
  BenchConnection(const BenchConnection&) = delete;
  BenchConnection& operator=(const BenchConnection&) = delete;

  // One request and its response; false (and the connection closed) on any error.
  bool Call() {
    if (fd_ < 0 && !Connect()) return false;
    if (!SendRequest() || !ReadResponse()) {
      Close();
      return false;
    }
    return true;
  }

 private:
  static constexpr size_t kBufferSize = 256 * 1024;

  bool Connect() {
    connections_->fetch_add(1, std::memory_order_relaxed);
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    // A dead server fails the run instead of hanging it.
    const timeval timeout{10, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      Close();
      return false;
    }
    used_ = 0;
    return true;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

  bool SendRequest() {
    size_t sent = 0;
    while (sent < request_.size()) {
      const ssize_t n = send(fd_, request_.data() + sent, request_.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads one Content-Length framed response into buffer_ and checks it.
  bool ReadResponse() {
    size_t head_end = 0;
    size_t body_length = 0;
    bool close_after = false;
    while (true) {
      const std::string_view data(buffer_.data(), used_);
      if (head_end == 0) {
        const size_t end = data.find("\r\n\r\n");
        if (end != std::string_view::npos) {
          head_end = end + 4;
          if (!ParseHead(data.substr(0, end), &body_length, &close_after)) return false;
          if (head_end + body_length > buffer_.size()) return false;
        }
      }
      if (head_end != 0 && used_ >= head_end + body_length) break;
      if (used_ == buffer_.size()) return false;
      const ssize_t n = recv(fd_, buffer_.data() + used_, buffer_.size() - used_, 0);
      if (n <= 0) return false;
      used_ += static_cast<size_t>(n);
    }
    const std::string_view body(buffer_.data() + head_end, body_length);
    const bool ok = body.find(expected_body_) != std::string_view::npos;
    // One request in flight: nothing should follow, but keep whatever did.
    const size_t consumed = head_end + body_length;
    std::memmove(buffer_.data(), buffer_.data() + consumed, used_ - consumed);
    used_ -= consumed;
    if (close_after) Close();
    return ok;
  }

  // Status must be 200; returns Content-Length and whether the server closes.
  static bool ParseHead(std::string_view head, size_t* body_length, bool* close_after) {
    if (head.substr(0, 13) != "HTTP/1.1 200 " && head.substr(0, 13) != "HTTP/1.0 200 ") {
      return false;
    }
    bool have_length = false;
    size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos) {
      const size_t start = pos + 2;
      pos = head.find("\r\n", start);
      const std::string_view line =
          head.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      const std::string_view name = line.substr(0, colon);
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (name.size() == 14 && strncasecmp(name.data(), "Content-Length", 14) == 0) {
        have_length = absl::SimpleAtoi(absl::string_view(value.data(), value.size()), body_length);
      } else if (name.size() == 10 && strncasecmp(name.data(), "Connection", 10) == 0) {
        *close_after = value.size() == 5 && strncasecmp(value.data(), "close", 5) == 0;
      }
    }
    return have_length;
  }

  const int port_;
  const std::string_view request_;
  const std::string_view expected_body_;
  std::atomic<uint64_t>* const connections_;
  int fd_ = -1;
  std::string buffer_;
  size_t used_ = 0;
};

struct Row {
  sipd::bench::RunResult result;
  uint64_t connections = 0;
};

std::vector<std::string> Cells(const Row& row) {
  const sipd::bench::RunResult& r = row.result;
  return {absl::StrCat(r.clients),
          absl::StrCat(r.calls),
          absl::StrCat(r.errors),
          absl::StrCat(row.connections),
          absl::StrFormat("%.0f", static_cast<double>(r.calls) / r.seconds),
          absl::StrFormat("%.0f", r.latency.p50_us),
          absl::StrFormat("%.0f", r.latency.p99_us),
          absl::StrFormat("%.0f", r.latency.max_us),
          absl::StrFormat("%.1f", r.server_cpu_us_per_call),
          absl::StrFormat("%.1f", r.client_cpu_us_per_call)};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"MI XML-RPC load driver (see bench/RESULTS.md)"};
  sipd::bench::CommonFlags flags;
  flags.AddTo(app);
  int repeat = 1;
  int port = 0;
  int server_pid = 0;
  app.add_option("--repeat", repeat, "runs per client count (median reported)")
      ->capture_default_str();
  app.add_option("--port", port, "use a running sipd's mi_xmlrpc port on 127.0.0.1");
  app.add_option("--server-pid", server_pid, "PID of its MI XMLRPC process (for CPU/request)");
  int processes = 0;
  app.add_option("--processes", processes,
                 "modparam mi_xmlrpc processes for the sipd the bench starts (0: default)");
  CLI11_PARSE(app, argc, argv);
  const absl::StatusOr<std::vector<int>> client_counts = flags.Apply();
  if (!client_counts.ok()) {
    std::fprintf(stderr, "%s\n", client_counts.status().ToString().c_str());
    return 2;
  }
  repeat = std::max(repeat, 1);

  std::unique_ptr<sipd::testing::SipdInstance> sipd;
  if (port == 0) {
    sipd::testing::SipdInstance::Options options;
    options.grpc = false;
    options.log_level = 1;
    options.extra_config = "loadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"port\", 0)\n";
    if (processes > 0) {
      absl::StrAppend(&options.extra_config, "modparam(\"mi_xmlrpc\", \"processes\", ", processes,
                      ")\n");
    }
    sipd = std::make_unique<sipd::testing::SipdInstance>(options);
    if (absl::Status status = sipd->Start(); !status.ok()) {
      std::fprintf(stderr, "cannot start sipd: %s\n", status.ToString().c_str());
      return 1;
    }
    port = sipd->listener_port("mi_xmlrpc");
    sipd::testing::WaitUntil([&] { return !FindMiXmlrpcPids(port).empty(); },
                             std::chrono::seconds(10));
  }
  std::vector<pid_t> server_pids;
  if (server_pid > 0) {
    server_pids.push_back(server_pid);
  } else {
    server_pids = FindMiXmlrpcPids(port);
  }
  if (server_pids.empty()) std::fprintf(stderr, "MI XMLRPC process not found: no CPU figures\n");

  const std::string request = PostRequest(MethodCall(flags.command));
  // `version` (and most commands) answer "Server:: ..." first; a fault has no <string>
  // at the start of a value.
  const std::string expected_body = "<value><string>";
  const sipd::bench::MarkdownTable table({"clients", "requests", "errors", "connections", "req/s",
                                          "p50 us", "p99 us", "max us", "server CPU us/req",
                                          "bench CPU us/req"});
  table.PrintHeader();
  std::vector<Row> medians;
  for (const int clients : *client_counts) {
    std::vector<Row> runs;
    for (int run = 0; run < repeat; ++run) {
      std::atomic<uint64_t> connections{0};
      auto factory = [&]() -> sipd::bench::Requester {
        auto connection =
            std::make_shared<BenchConnection>(port, request, expected_body, &connections);
        return [connection] { return connection->Call(); };
      };
      Row row;
      row.result =
          sipd::bench::RunClosedLoop(factory, clients, flags.warmup, flags.seconds, server_pids);
      // Includes the warm-up's connections (the runner has no phase hook); with keep-alive
      // the count is what matters, not its split.
      row.connections = connections.load();
      table.PrintRow(Cells(row));
      runs.push_back(row);
    }
    std::sort(runs.begin(), runs.end(),
              [](const Row& a, const Row& b) { return a.result.calls < b.result.calls; });
    medians.push_back(runs[runs.size() / 2]);
  }
  if (repeat > 1) {
    std::printf("\nMedian of %d runs (by req/s):\n\n", repeat);
    table.PrintHeader();
    for (const Row& row : medians) table.PrintRow(Cells(row));
  }
  if (sipd) (void)sipd->Stop();
  return 0;
}
