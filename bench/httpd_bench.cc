// Load driver for httpd's JSON-RPC (POST /mi) and /metrics, against a real sipd that the
// bench starts itself (loadmodule "httpd" on port 0), or any JSON-RPC-over-HTTP server
// given with --port (e.g. Kamailio's jsonrpcs: --path /RPC --method core.version).
//
//   httpd_bench [--clients 1,4] [--seconds 5] [--warmup 1] [--repeat 3] [--cpus 0]
//               [--method version] [--path /mi] [--port N --server-pids PID,PID]
//   httpd_bench --metrics [--stats 10000] [--repeat 20]
//
// Each client is one thread with one keep-alive HTTP/1.1 connection, one request in
// flight; the request bytes are built once, the response is read into a reused buffer
// (Content-Length or chunked framing) and checked for "result". It prints requests/s,
// p50/p99/max latency, and CPU time per request of the server (the HTTPD process, or
// --server-pids) and of the bench; with --repeat the run with the median requests/s.
//
// --metrics: the time to render /metrics for a registry of --stats statistics (in this
// process: RenderPrometheus() over a StatsRegistry filled like sipd's, median of
// --repeat renders), then GET /metrics end to end against the sipd the bench starts.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_support.h"
#include "registry/statistics.h"
#include "sipd/modules/httpd/metrics.h"
#include "tests/support/sipd_harness.h"

namespace {

using sipd::bench::Clock;
using sipd::bench::Median;
using sipd::bench::RunResult;

// One client's keep-alive connection. Not thread-safe: one client thread owns it.
class Connection {
 public:
  Connection(int port, std::string request) : port_(port), request_(std::move(request)) {
    buffer_.resize(1 << 20);
  }
  ~Connection() { Close(); }

  // One request and its whole response; false on any error. `body` gets the body.
  bool Call(std::string* body = nullptr) {
    if (fd_ < 0 && !Connect()) return false;
    if (!WriteAll(request_) || !ReadResponse(body)) {
      Close();
      return false;
    }
    return true;
  }

 private:
  bool Connect() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return false;
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      Close();
      return false;
    }
    return true;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    used_ = 0;
  }
  bool WriteAll(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = write(fd_, bytes.data() + done, bytes.size() - done);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  bool Fill() {
    if (used_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
    const ssize_t n = read(fd_, buffer_.data() + used_, buffer_.size() - used_);
    if (n <= 0) return false;
    used_ += static_cast<size_t>(n);
    return true;
  }
  // Reads one response (Content-Length or chunked); keeps bytes past it.
  bool ReadResponse(std::string* body_out) {
    size_t head_end;
    while ((head_end = std::string_view(buffer_.data(), used_).find("\r\n\r\n")) ==
           std::string_view::npos) {
      if (!Fill()) return false;
    }
    const std::string_view head(buffer_.data(), head_end);
    if (head.substr(0, 12) != "HTTP/1.1 200") return false;
    size_t body_start = head_end + 4;
    std::string lower(head);
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    size_t end = 0;
    std::string body;
    if (const size_t at = lower.find("content-length:"); at != std::string::npos) {
      const size_t length = std::strtoull(lower.c_str() + at + 15, nullptr, 10);
      while (used_ < body_start + length) {
        if (!Fill()) return false;
      }
      body.assign(buffer_.data() + body_start, length);
      end = body_start + length;
    } else if (lower.find("transfer-encoding: chunked") != std::string::npos) {
      size_t at = body_start;
      while (true) {
        size_t line_end;
        while ((line_end = std::string_view(buffer_.data(), used_).find("\r\n", at)) ==
               std::string_view::npos) {
          if (!Fill()) return false;
        }
        const size_t size = std::strtoull(buffer_.data() + at, nullptr, 16);
        while (used_ < line_end + 2 + size + 2) {
          if (!Fill()) return false;
        }
        body.append(buffer_.data() + line_end + 2, size);
        at = line_end + 2 + size + 2;
        if (size == 0) break;
      }
      end = at;
    } else {
      return false;
    }
    const bool ok = body.find("\"result\"") != std::string::npos || body_out != nullptr;
    if (body_out != nullptr) *body_out = std::move(body);
    std::memmove(buffer_.data(), buffer_.data() + end, used_ - end);
    used_ -= end;
    return ok;
  }

  const int port_;
  const std::string request_;
  int fd_ = -1;
  std::vector<char> buffer_;
  size_t used_ = 0;
};

std::string PostRequest(const std::string& path, const std::string& body) {
  return absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                      "Content-Type: application/json\r\nContent-Length: ", body.size(), "\r\n\r\n",
                      body);
}

int RunMetrics(int stats_count, int repeat, int port) {
  // A registry like sipd's: counters in groups of 100, every fifth a gauge (no reset).
  std::vector<std::atomic<uint64_t>> cells(static_cast<size_t>(stats_count));
  sipd::mi::StatsRegistry registry(cells);
  for (int i = 0; i < stats_count; ++i) {
    auto counter = registry.AddCounter(absl::StrCat("group", i / 100), absl::StrCat("stat_", i),
                                       i % 5 == 0 ? uint32_t{sipd::mi::kStatNoReset} : uint32_t{0});
    if (counter.ok()) counter->Set(static_cast<uint64_t>(i) * 7919);
  }
  std::vector<double> render_ms;
  size_t bytes = 0;
  for (int k = 0; k < repeat; ++k) {
    const auto start = Clock::now();
    const std::string text = sipd::httpd::RenderPrometheus(registry, {}, {});
    render_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    bytes = text.size();
  }
  std::printf(
      "RenderPrometheus, %d statistics: median %.2f ms, max %.2f ms over %d renders, "
      "%zu bytes\n",
      stats_count, Median(render_ms), *std::max_element(render_ms.begin(), render_ms.end()), repeat,
      bytes);
  Connection connection(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  std::vector<double> get_ms;
  std::string body;
  for (int k = 0; k < repeat; ++k) {
    const auto start = Clock::now();
    if (!connection.Call(&body)) {
      std::fprintf(stderr, "GET /metrics failed\n");
      return 1;
    }
    get_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  const long lines = std::count(body.begin(), body.end(), '\n');
  std::printf(
      "GET /metrics from sipd (%ld lines, %zu bytes): median %.2f ms, max %.2f ms over "
      "%d requests\n",
      lines, body.size(), Median(get_ms), *std::max_element(get_ms.begin(), get_ms.end()), repeat);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  sipd::bench::CommonFlags flags;
  flags.clients = "1,4";
  std::string method = "version";
  std::string path = "/mi";
  int port = 0;
  std::string server_pid_list;
  int repeat = 3;
  bool metrics = false;
  int stats_count = 10000;
  CLI::App app{"JSON-RPC over HTTP load driver (httpd POST /mi) and /metrics timing"};
  flags.AddTo(app);
  app.add_option("--method", method, "JSON-RPC method")->capture_default_str();
  app.add_option("--path", path, "HTTP path of the JSON-RPC endpoint")->capture_default_str();
  app.add_option("--port", port, "use a running server on 127.0.0.1:PORT instead of sipd");
  app.add_option("--server-pids", server_pid_list,
                 "with --port: comma-separated PIDs whose CPU time to sample (all of the "
                 "server's processes, e.g. $(pgrep -d, kamailio))");
  app.add_option("--repeat", repeat, "runs per client count (median)")->capture_default_str();
  app.add_flag("--metrics", metrics, "time /metrics instead of JSON-RPC");
  app.add_option("--stats", stats_count, "--metrics: statistics in the in-process registry")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const absl::StatusOr<std::vector<int>> counts = flags.Apply();
  if (!counts.ok()) {
    std::fprintf(stderr, "%s\n", std::string(counts.status().message()).c_str());
    return 2;
  }

  std::unique_ptr<sipd::testing::SipdInstance> sipd;
  std::vector<pid_t> server_pids;
  if (port == 0) {
    sipd = std::make_unique<sipd::testing::SipdInstance>(sipd::testing::SipdInstance::Options{
        .grpc = false,
        .log_level = 1,
        .extra_config =
            "loadmodule \"httpd\"\nmodparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n"});
    if (absl::Status s = sipd->Start(); !s.ok()) {
      std::fprintf(stderr, "cannot start sipd: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    port = sipd->listener_port("httpd", "http");
    Connection ps(port, PostRequest("/mi", R"({"jsonrpc":"2.0","method":"ps","id":1})"));
    std::string body;
    if (ps.Call(&body)) {
      // {"name":"Process","attributes":[{"name":"ID",..},{"name":"PID","value":"N"},
      //  {"name":"Type","value":"HTTPD"}]}
      for (size_t at = body.find("\"value\":\"HTTPD\""); at != std::string::npos;
           at = body.find("\"value\":\"HTTPD\"", at + 1)) {
        const size_t pid_at = body.rfind("\"name\":\"PID\",\"value\":\"", at);
        if (pid_at != std::string::npos)
          server_pids.push_back(std::atoi(body.c_str() + pid_at + 22));
      }
    }
  } else {
    for (size_t at = 0; at < server_pid_list.size();) {
      const size_t comma = std::min(server_pid_list.find(',', at), server_pid_list.size());
      const int pid = std::atoi(server_pid_list.substr(at, comma - at).c_str());
      if (pid > 0) server_pids.push_back(pid);
      at = comma + 1;
    }
  }
  if (metrics) return RunMetrics(stats_count, std::max(repeat, 5), port);

  const std::string request = PostRequest(
      path, absl::StrCat(R"({"jsonrpc":"2.0","method":")", method, R"(","params":[],"id":1})"));
  std::printf(
      "POST %s %s on port %d, %g s per run after %g s warm-up, median of %d; server "
      "pids:",
      path.c_str(), method.c_str(), port, flags.seconds, flags.warmup, repeat);
  for (pid_t pid : server_pids) std::printf(" %d", pid);
  std::printf("\n\n");
  sipd::bench::MarkdownTable table({"clients", "requests/s", "p50 us", "p99 us", "max us", "errors",
                                    "server CPU us/req", "bench CPU us/req"});
  table.PrintHeader();
  for (int clients : *counts) {
    std::vector<RunResult> runs;
    for (int k = 0; k < repeat; ++k) {
      runs.push_back(sipd::bench::RunClosedLoop(
          [&] {
            auto connection = std::make_shared<Connection>(port, request);
            return [connection] { return connection->Call(); };
          },
          clients, flags.warmup, flags.seconds, server_pids));
    }
    std::sort(runs.begin(), runs.end(), [](const RunResult& a, const RunResult& b) {
      return a.calls / a.seconds < b.calls / b.seconds;
    });
    const RunResult& r = runs[runs.size() / 2];
    table.PrintRow({absl::StrCat(clients), absl::StrFormat("%.0f", r.calls / r.seconds),
                    absl::StrFormat("%.1f", r.latency.p50_us),
                    absl::StrFormat("%.1f", r.latency.p99_us),
                    absl::StrFormat("%.1f", r.latency.max_us), absl::StrCat(r.errors),
                    absl::StrFormat("%.2f", r.server_cpu_us_per_call),
                    absl::StrFormat("%.2f", r.client_cpu_us_per_call)});
  }
  return 0;
}
