// Load driver for the MI gRPC transport: Execute(CMD) against a real sipd that the
// bench starts itself (tests/support/sipd_harness.h), or against --target.
//
//   grpc_bench [--clients 1,4,8] [--inflight 1] [--seconds 5] [--warmup 1]
//              [--command version] [--target host:port [--server-pid PID]]
//
// Each client is one thread with its own channel (its own TCP connection) issuing
// Execute calls back to back, `--inflight` at a time (default 1: request/response);
// async stub, one completion queue per client. For every
// client count it prints requests/s, p50/p99/max latency and the server CPU time per
// request of the "MI gRPC" process (utime+stime from /proc/<pid>/stat before/after;
// only when the bench started sipd itself, or --server-pid is given).
//
// Pinned single-client figure (both the bench and sipd on CPU 0; sipd inherits the
// affinity):  taskset -c 0 grpc_bench --clients 1
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/support/sipd_harness.h"

namespace {

namespace v1 = ::sipd::mi::v1;
using Clock = std::chrono::steady_clock;

struct RunResult {
  int clients = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;
  double seconds = 0;
  double p50_us = 0, p99_us = 0, max_us = 0;
  double server_cpu_us_per_call = -1;
  double client_cpu_us_per_call = -1;
};

// CPU time (user + system) of this process, in microseconds.
double SelfCpuMicros() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + usage.ru_utime.tv_usec +
         usage.ru_stime.tv_usec;
}

// utime + stime of a whole process, in clock ticks; -1 if unreadable.
long long ProcessCpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  long long utime = 0, stime = 0;
  // Fields after "pid (comm) ": state is field 3; utime is 14, stime 15.
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoll(f);
    if (i == 15) stime = std::stoll(f);
  }
  return utime + stime;
}

// PID of the "MI gRPC" process, from the `ps` MI command.
pid_t FindMiGrpcPid(const std::string& target) {
  auto stub =
      v1::Management::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::ExecuteRequest request;
  request.set_command("ps");
  v1::Reply reply;
  if (!stub->Execute(&ctx, request, &reply).ok()) return 0;
  for (const auto& node : reply.nodes()) {
    std::string pid, type;
    for (const auto& a : node.attributes()) {
      if (a.name() == "PID") pid = a.value();
      if (a.name() == "Type") type = a.value();
    }
    int value = 0;
    if (type == "MI gRPC" && absl::SimpleAtoi(pid, &value)) return value;
  }
  return 0;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target, int index) {
  grpc::ChannelArguments args;
  // A distinct argument keeps gRPC from sharing one connection between the clients.
  args.SetInt("sipd.bench.client", index);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

RunResult Run(const std::string& target, const std::string& command, int clients, int inflight,
              double warmup_seconds, double seconds, pid_t server_pid) {
  std::vector<std::unique_ptr<v1::Management::Stub>> stubs;
  for (int i = 0; i < clients; ++i) {
    auto channel = NewChannel(target, i);
    channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5));
    stubs.push_back(v1::Management::NewStub(channel));
  }
  std::atomic<int> phase{0};  // 0 warm-up, 1 measuring, 2 stop
  std::vector<std::vector<uint32_t>> latencies(clients);
  std::vector<uint64_t> errors(clients, 0);
  std::vector<std::thread> threads;
  v1::ExecuteRequest request;
  request.set_command(command);
  for (int i = 0; i < clients; ++i) {
    latencies[i].reserve(1 << 20);
    threads.emplace_back([&, i] {
      // Async stub, one completion queue per client, `inflight` calls outstanding on the
      // client's connection (1 = strict request/response): the cheapest client gRPC
      // offers, so the client steals as little CPU as possible from the server.
      struct Call {
        std::unique_ptr<grpc::ClientContext> ctx;
        std::unique_ptr<grpc::ClientAsyncResponseReader<v1::Reply>> reader;
        v1::Reply reply;
        grpc::Status status;
        Clock::time_point start;
        int phase = 0;
      };
      grpc::CompletionQueue cq;
      std::vector<Call> calls(static_cast<size_t>(inflight));
      auto start_call = [&](Call& call) {
        call.ctx = std::make_unique<grpc::ClientContext>();
        call.phase = phase.load(std::memory_order_relaxed);
        call.start = Clock::now();
        call.reader = stubs[i]->AsyncExecute(call.ctx.get(), request, &cq);
        call.reader->Finish(&call.reply, &call.status, &call);
      };
      for (auto& call : calls) start_call(call);
      size_t outstanding = calls.size();
      void* tag = nullptr;
      bool ok = false;
      while (outstanding > 0 && cq.Next(&tag, &ok)) {
        Call& call = *static_cast<Call*>(tag);
        const auto end = Clock::now();
        if (call.phase == 1 && phase.load(std::memory_order_relaxed) == 1) {
          if (!ok || !call.status.ok()) ++errors[i];
          latencies[i].push_back(static_cast<uint32_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(end - call.start).count() /
              100));
        }
        if (phase.load(std::memory_order_relaxed) == 2) {
          --outstanding;
        } else {
          start_call(call);
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup_seconds));
  const long long cpu_before = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  const double self_before = SelfCpuMicros();
  const auto t0 = Clock::now();
  phase = 1;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  phase = 2;
  const auto t1 = Clock::now();
  const long long cpu_after = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  const double self_after = SelfCpuMicros();
  for (auto& t : threads) t.join();

  RunResult r;
  r.clients = clients;
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
  if (r.calls > 0) r.client_cpu_us_per_call = (self_after - self_before) / r.calls;
  if (cpu_before >= 0 && cpu_after >= 0 && r.calls > 0) {
    r.server_cpu_us_per_call =
        static_cast<double>(cpu_after - cpu_before) * 1e6 / sysconf(_SC_CLK_TCK) / r.calls;
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string clients_list = "1,4,8";
  double seconds = 5, warmup = 1;
  std::string command = "version";
  std::string target;
  int server_pid = 0;
  int inflight = 1;
  int server_threads = 0;
  CLI::App app{"Execute() load driver for the sipd MI gRPC transport"};
  app.add_option("--clients", clients_list, "comma-separated client counts")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds per run")->capture_default_str();
  app.add_option("--warmup", warmup, "warm-up seconds per run")->capture_default_str();
  app.add_option("--command", command, "MI command to execute")->capture_default_str();
  app.add_option("--inflight", inflight, "calls outstanding per client (HTTP/2 multiplexed)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  app.add_option("--server-threads", server_threads,
                 "mi_grpc `threads` for the sipd the bench starts (0 = module default)");
  app.add_option("--target", target, "use a running server instead of starting sipd");
  app.add_option("--server-pid", server_pid, "with --target: PID whose CPU time to sample");
  CLI11_PARSE(app, argc, argv);

  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(clients_list, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      std::fprintf(stderr, "bad --clients\n");
      return 2;
    }
    counts.push_back(n);
  }

  std::unique_ptr<sipd::testing::SipdInstance> sipd;
  if (target.empty()) {
    sipd::testing::SipdInstance::Options options;
    options.grpc = true;
    options.log_level = 1;  // warnings only: no per-call logging anywhere
    if (server_threads > 0) {
      options.extra_config =
          absl::StrCat("modparam(\"mi_grpc\", \"threads\", ", server_threads, ")\n");
    }
    sipd = std::make_unique<sipd::testing::SipdInstance>(options);
    if (absl::Status s = sipd->Start(); !s.ok()) {
      std::fprintf(stderr, "cannot start sipd: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    target = sipd->grpc_target();
    server_pid = FindMiGrpcPid(target);
  }

  std::printf(
      "target %s, command '%s', %d call(s) in flight per client, %.0f s per run (after "
      "%.0f s warm-up)\n",
      target.c_str(), command.c_str(), inflight, seconds, warmup);
  std::printf("%-8s %12s %10s %10s %10s %8s %18s %18s\n", "clients", "requests/s", "p50 us",
              "p99 us", "max us", "errors", "server CPU us/req", "client CPU us/req");
  for (int n : counts) {
    const RunResult r = Run(target, command, n, inflight, warmup, seconds, server_pid);
    std::printf("%-8d %12.0f %10.1f %10.1f %10.1f %8llu %18.2f %18.2f\n", r.clients,
                r.calls / r.seconds, r.p50_us, r.p99_us, r.max_us,
                static_cast<unsigned long long>(r.errors), r.server_cpu_us_per_call,
                r.client_cpu_us_per_call);
    std::fflush(stdout);
  }
  if (sipd) {
    if (absl::Status s = sipd->Stop(); !s.ok()) {
      std::fprintf(stderr, "sipd stop: %s\n", std::string(s.message()).c_str());
    }
  }
  return 0;
}
