// Load driver for the MI gRPC transport: Execute(CMD) or Session, against a real sipd
// that the bench starts itself (tests/support/sipd_harness.h), or against --target.
//
//   grpc_bench [--clients 1,4,8] [--inflight 1[,8]] [--seconds 5] [--warmup 1] [--cpus 0]
//              [--driver grpc|h2load|session [--requests N] [--typed]] [--server-threads N]
//              [--command 'version'|'get_statistics all'] [--repeat 3]
//              [--target host:port [--server-pid PID]]
//
// --command is the MI command and its arguments, separated by spaces.
//
// --driver session: each client is one thread with its own channel and ONE Session
// call, keeping `--inflight` tagged requests outstanding on it (a new one is written as
// soon as a final result comes back; ids are reused once answered). Figures are per
// command: commands/s, p50/p99/max from write to final result, server and client CPU.
// The C++ client's async writer writes one request per Write (gRPC allows one write in
// flight per stream), so the client side costs about as much as the server side.
//
// --repeat N runs every configuration N times and prints the median run (by rate).
//
// Each client is one thread with its own channel (its own TCP connection) issuing
// Execute calls back to back, `--inflight` at a time (default 1: request/response);
// async stub, one completion queue per client. For every
// client count it prints requests/s, p50/p99/max latency and the server CPU time per
// request of the "MI gRPC" process (utime+stime from /proc/<pid>/stat before/after;
// only when the bench started sipd itself, or --server-pid is given).
//
// Pinned single-client figure (both the bench and sipd on CPU 0; sipd inherits the
// affinity):  grpc_bench --clients 1 --cpus 0  (same as taskset -c 0 grpc_bench ...)
//
// --driver h2load: the C++ gRPC client costs more CPU per call than the server, so on
// a 2-core machine it measures the pair, not the server. With this driver the load
// comes from nghttp2's h2load (Debian package nghttp2-client), a single-threaded
// HTTP/2 load generator that is far cheaper per request: the bench writes the gRPC
// frame of ExecuteRequest{command} (flag 0, 4-byte big-endian length, message) to a
// file and runs, for every client count and every --inflight value,
//   h2load -t 1 -c CLIENTS -m INFLIGHT -n REQUESTS -d FRAME
//     -H 'content-type: application/grpc' -H 'te: trailers'
//     http://TARGET/sipd.mi.v1.Management/Execute
// (first an unmeasured warm-up of REQUESTS/10), and reports req/s, h2load's mean and
// max time per request, server CPU per request and h2load's own CPU per request. A
// gRPC error is also an HTTP 200, so the replies are checked: every request must have
// succeeded (2xx) and carried a DATA frame at least as large as a gRPC message header
// (an error reply is trailers-only, no DATA), and one sample call is made with the C++
// client first, which must return OK.
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

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "grpcpp/grpcpp.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/support/sipd_harness.h"

namespace {

namespace v1 = ::sipd::mi::v1;
using sipd::bench::ChildrenCpuMicros;
using sipd::bench::Clock;
using sipd::bench::ProcessCpuTicks;
using sipd::bench::SelfCpuMicros;

struct RunResult {
  int clients = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;
  double seconds = 0;
  sipd::bench::LatencySummary latency;
  double server_cpu_us_per_call = -1;
  double client_cpu_us_per_call = -1;
};

// PID of the "MI gRPC" process (0 if not found), from `ps` over gRPC.
pid_t FindMiGrpcPid(const std::string& target) {
  auto pids = sipd::bench::PidsOfTypeOverGrpc(target, "MI gRPC");
  return pids.ok() && pids->size() == 1 ? pids->front() : 0;
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target, int index) {
  grpc::ChannelArguments args;
  // A distinct argument keeps gRPC from sharing one connection between the clients.
  args.SetInt("sipd.bench.client", index);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// "get_statistics all" -> command "get_statistics", params {"all"}.
struct CommandLine {
  std::string command;
  std::vector<std::string> params;
};

CommandLine SplitCommand(const std::string& text) {
  CommandLine out;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (out.command.empty()) {
      out.command = std::string(word);
    } else {
      out.params.emplace_back(word);
    }
  }
  return out;
}

v1::ExecuteRequest ExecuteRequestFor(const CommandLine& line) {
  v1::ExecuteRequest request;
  request.set_command(line.command);
  for (const auto& p : line.params) request.add_params(p);
  return request;
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
  std::vector<sipd::bench::LatencyLog> latencies(clients);
  std::vector<uint64_t> errors(clients, 0);
  std::vector<std::thread> threads;
  const v1::ExecuteRequest request = ExecuteRequestFor(SplitCommand(command));
  for (int i = 0; i < clients; ++i) {
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
          latencies[i].Add(end - call.start);
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
  for (int i = 0; i < clients; ++i) r.errors += errors[i];
  r.latency = sipd::bench::LatencyLog::Merge(latencies);
  r.calls = r.latency.count;
  if (r.calls > 0) r.client_cpu_us_per_call = (self_after - self_before) / r.calls;
  r.server_cpu_us_per_call = sipd::bench::CpuMicrosPerCall(cpu_before, cpu_after, r.calls);
  return r;
}

// --driver session (see the file comment).
RunResult RunSession(const std::string& target, const CommandLine& line, int clients, int inflight,
                     double warmup_seconds, double seconds, pid_t server_pid) {
  using Stream = grpc::ClientAsyncReaderWriter<v1::SessionRequest, v1::SessionReply>;
  std::vector<std::unique_ptr<v1::Management::Stub>> stubs;
  for (int i = 0; i < clients; ++i) {
    auto channel = NewChannel(target, i);
    channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5));
    stubs.push_back(v1::Management::NewStub(channel));
  }
  std::atomic<int> phase{0};  // 0 warm-up, 1 measuring, 2 stop
  std::vector<sipd::bench::LatencyLog> latencies(clients);
  std::vector<uint64_t> errors(clients, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      enum Tag : intptr_t { kStart = 1, kRead, kWrite, kWritesDone, kFinish };
      grpc::CompletionQueue cq;
      grpc::ClientContext ctx;
      std::unique_ptr<Stream> stream =
          stubs[i]->AsyncSession(&ctx, &cq, reinterpret_cast<void*>(kStart));
      v1::SessionRequest request;
      request.set_command(line.command);
      for (const auto& p : line.params) request.add_params(p);
      v1::SessionReply reply;
      // Slot = request id; a slot is free again once its final result came.
      std::vector<Clock::time_point> started(static_cast<size_t>(inflight));
      std::vector<int> started_phase(static_cast<size_t>(inflight), 0);
      std::vector<uint32_t> to_send;
      for (int id = inflight - 1; id >= 0; --id) to_send.push_back(static_cast<uint32_t>(id));
      bool writing = false, started_call = false, closing = false;
      grpc::Status finish_status;
      // At the end: half-close once no write is in flight (WritesDone also flushes a
      // request written with a buffer hint); the server answers what it has and ends
      // the session.
      auto maybe_close = [&] {
        if (phase.load(std::memory_order_relaxed) == 2 && !writing && !closing && started_call) {
          closing = true;
          stream->WritesDone(reinterpret_cast<void*>(kWritesDone));
        }
      };
      auto write_next = [&] {
        if (writing || to_send.empty() || !started_call || closing ||
            phase.load(std::memory_order_relaxed) == 2) {
          return;
        }
        const uint32_t id = to_send.back();
        to_send.pop_back();
        request.set_id(id);
        started[id] = Clock::now();
        started_phase[id] = phase.load(std::memory_order_relaxed);
        writing = true;
        // More to write right behind this one: let gRPC buffer it (one TCP write for
        // the burst, sent with the last request of the burst).
        grpc::WriteOptions options;
        if (!to_send.empty()) options.set_buffer_hint();
        stream->Write(request, options, reinterpret_cast<void*>(kWrite));
      };
      void* tag = nullptr;
      bool ok = false;
      bool finished = false;
      while (!finished && cq.Next(&tag, &ok)) {
        switch (reinterpret_cast<intptr_t>(tag)) {
          case kStart:
            if (!ok) {
              ++errors[i];
              finished = true;
              break;
            }
            started_call = true;
            stream->Read(&reply, reinterpret_cast<void*>(kRead));
            write_next();
            break;
          case kWrite:
            writing = false;
            if (!ok) ++errors[i];
            write_next();
            maybe_close();
            break;
          case kRead: {
            if (!ok) {  // the server ended the session
              stream->Finish(&finish_status, reinterpret_cast<void*>(kFinish));
              break;
            }
            const auto now = Clock::now();
            for (const auto& result : reply.results()) {
              if (!result.done()) continue;
              const uint32_t id = result.id();
              if (started_phase[id] == 1 && phase.load(std::memory_order_relaxed) == 1) {
                if (result.status() != v1::SessionResult::OK) ++errors[i];
                latencies[i].Add(now - started[id]);
              }
              if (phase.load(std::memory_order_relaxed) != 2) to_send.push_back(id);
            }
            stream->Read(&reply, reinterpret_cast<void*>(kRead));
            write_next();
            maybe_close();
            break;
          }
          case kWritesDone:
            break;
          case kFinish:
            if (!finish_status.ok()) ++errors[i];
            finished = true;
            break;
        }
      }
      cq.Shutdown();
      while (cq.Next(&tag, &ok)) {
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
  for (int i = 0; i < clients; ++i) r.errors += errors[i];
  r.latency = sipd::bench::LatencyLog::Merge(latencies);
  r.calls = r.latency.count;
  if (r.calls > 0) r.client_cpu_us_per_call = (self_after - self_before) / r.calls;
  r.server_cpu_us_per_call = sipd::bench::CpuMicrosPerCall(cpu_before, cpu_after, r.calls);
  return r;
}

// One Execute(command) with the C++ client: OK and a reply, or the error.
absl::Status CheckOneCall(const std::string& target, const std::string& command) {
  auto stub =
      v1::Management::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const v1::ExecuteRequest request = ExecuteRequestFor(SplitCommand(command));
  v1::Reply reply;
  const grpc::Status status = stub->Execute(&ctx, request, &reply);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("Execute(", command, "): gRPC status ",
                                            status.error_code(), " ", status.error_message()));
  }
  return absl::OkStatus();
}

// The method h2load calls: Execute, or (--typed) the typed face of `version`.
constexpr char kExecutePath[] = "/sipd.mi.v1.Management/Execute";
constexpr char kTypedVersionPath[] = "/sipd.core.v1.CoreService/GetVersion";

// Writes the length-prefixed gRPC message of ExecuteRequest{command} to `path`, or of an
// empty GetVersionRequest when `typed`.
absl::Status WriteGrpcFrame(const std::string& path, const std::string& command, bool typed) {
  const v1::ExecuteRequest request = ExecuteRequestFor(SplitCommand(command));
  const std::string message = typed ? std::string() : request.SerializeAsString();
  std::string frame(5, '\0');
  const uint32_t size = static_cast<uint32_t>(message.size());
  for (int i = 0; i < 4; ++i) frame[1 + i] = static_cast<char>((size >> (24 - 8 * i)) & 0xff);
  frame += message;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << frame;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

struct H2loadResult {
  uint64_t done = 0, succeeded = 0, status_2xx = 0, data_bytes = 0;
  double seconds = 0, req_per_s = 0, mean_us = 0, max_us = 0;
  double server_cpu_us_per_call = -1;
  double driver_cpu_us_per_call = -1;
  std::string output;  // h2load's stdout, for errors
};

// "165us", "13.87ms", "1.2s" -> microseconds.
double ParseH2loadTime(const std::string& text) {
  double value = 0;
  if (absl::EndsWith(text, "us") && absl::SimpleAtod(text.substr(0, text.size() - 2), &value)) {
    return value;
  }
  if (absl::EndsWith(text, "ms") && absl::SimpleAtod(text.substr(0, text.size() - 2), &value)) {
    return value * 1e3;
  }
  if (absl::EndsWith(text, "s") && absl::SimpleAtod(text.substr(0, text.size() - 1), &value)) {
    return value * 1e6;
  }
  return -1;
}

// Runs h2load (see the file comment) and parses its summary.
absl::StatusOr<H2loadResult> RunH2load(const std::string& h2load, const std::string& target,
                                       const std::string& frame_path, const std::string& method,
                                       int clients, int inflight, uint64_t requests,
                                       pid_t server_pid) {
  const std::string cmd = absl::StrCat(
      h2load, " -t 1 -c ", clients, " -m ", inflight, " -n ", requests, " -d '", frame_path,
      "' -H 'content-type: application/grpc' -H 'te: trailers' http://", target, method, " 2>&1");
  const long long cpu_before = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  const double children_before = ChildrenCpuMicros();
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(absl::StrCat("cannot run ", h2load));
  H2loadResult r;
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) r.output += buffer;
  const int rc = pclose(pipe);
  const long long cpu_after = server_pid > 0 ? ProcessCpuTicks(server_pid) : -1;
  const double children_after = ChildrenCpuMicros();
  if (rc != 0) return absl::InternalError(absl::StrCat("h2load failed:\n", r.output));
  for (absl::string_view line : absl::StrSplit(r.output, '\n')) {
    std::vector<std::string> w = absl::StrSplit(line, absl::ByAnyChar(" ,()"), absl::SkipEmpty());
    if (w.size() >= 5 && w[0] == "finished" && w[1] == "in") {
      r.seconds = ParseH2loadTime(w[2]) / 1e6;
      (void)absl::SimpleAtod(w[3], &r.req_per_s);
    } else if (w.size() >= 9 && w[0] == "requests:") {
      (void)absl::SimpleAtoi(w[5], &r.done);
      (void)absl::SimpleAtoi(w[7], &r.succeeded);
    } else if (w.size() >= 4 && w[0] == "status" && w[1] == "codes:") {
      (void)absl::SimpleAtoi(w[2], &r.status_2xx);
    } else if (w.size() >= 2 && w[0] == "traffic:") {
      // traffic: T (t) total, H (h) headers (space savings X%), D (d) data
      for (size_t i = 1; i + 1 < w.size(); ++i) {
        if (w[i + 1] == "data") (void)absl::SimpleAtoi(w[i], &r.data_bytes);
      }
    } else if (w.size() >= 4 && w[0] == "time" && w[1] == "for" && w[2] == "request:") {
      // time for request: min max mean sd +/-sd
      r.max_us = ParseH2loadTime(w[4]);
      r.mean_us = ParseH2loadTime(w[5]);
    }
  }
  if (r.done == 0) return absl::InternalError(absl::StrCat("h2load did nothing:\n", r.output));
  r.server_cpu_us_per_call = sipd::bench::CpuMicrosPerCall(cpu_before, cpu_after, r.done);
  r.driver_cpu_us_per_call = (children_after - children_before) / r.done;
  return r;
}

// The --driver h2load runs. Returns the exit code.
int RunH2loadDriver(const std::string& h2load, const std::string& target,
                    const std::string& command, bool typed, const std::vector<int>& counts,
                    const std::vector<int>& inflights, uint64_t requests, pid_t server_pid) {
  const std::string method = typed ? kTypedVersionPath : kExecutePath;
  if (absl::Status s = CheckOneCall(target, command); !s.ok()) {
    std::fprintf(stderr, "sample call failed: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  char dir_template[] = "/tmp/grpc_bench.XXXXXX";
  if (mkdtemp(dir_template) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string dir = dir_template;
  const std::string frame_path = dir + "/execute.grpc";
  if (absl::Status s = WriteGrpcFrame(frame_path, command, typed); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf(
      "target %s, %s '%s', driver h2load, %llu requests per run (after %llu "
      "warm-up)\n",
      target.c_str(), typed ? "method" : "command", typed ? method.c_str() : command.c_str(),
      static_cast<unsigned long long>(requests), static_cast<unsigned long long>(requests / 10));
  std::printf("%-8s %9s %12s %10s %10s %8s %18s %18s\n", "clients", "in flight", "requests/s",
              "mean us", "max us", "errors", "server CPU us/req", "h2load CPU us/req");
  int rc = 0;
  for (int n : counts) {
    for (int m : inflights) {
      auto warm = RunH2load(h2load, target, frame_path, method, n, m,
                            std::max<uint64_t>(requests / 10, n), 0);
      auto r = RunH2load(h2load, target, frame_path, method, n, m, requests, server_pid);
      if (!warm.ok() || !r.ok()) {
        std::fprintf(stderr, "%s\n",
                     std::string((warm.ok() ? r.status() : warm.status()).message()).c_str());
        rc = 1;
        continue;
      }
      // An error reply is trailers-only (no DATA); a reply message is >= its 5-byte header.
      const uint64_t errors = r->done - std::min(r->done, r->status_2xx);
      if (errors > 0 || r->data_bytes < 5 * r->done) {
        std::fprintf(stderr,
                     "replies are not all gRPC messages (%llu data bytes for %llu "
                     "requests):\n%s\n",
                     static_cast<unsigned long long>(r->data_bytes),
                     static_cast<unsigned long long>(r->done), r->output.c_str());
        rc = 1;
      }
      std::printf("%-8d %9d %12.0f %10.1f %10.1f %8llu %18.2f %18.2f\n", n, m, r->req_per_s,
                  r->mean_us, r->max_us, static_cast<unsigned long long>(errors),
                  r->server_cpu_us_per_call, r->driver_cpu_us_per_call);
      std::fflush(stdout);
    }
  }
  std::remove(frame_path.c_str());
  rmdir(dir.c_str());
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  sipd::bench::CommonFlags flags;  // --clients 1,4,8 --seconds 5 --warmup 1 --command version
  std::string target;
  int server_pid = 0;
  std::string inflight_list = "1";
  int server_threads = 0;
  std::string driver = "grpc";
  std::string h2load = "h2load";
  uint64_t requests = 200000;
  bool typed = false;
  int repeat = 1;
  CLI::App app{"Execute() and Session load driver for the sipd MI gRPC transport"};
  flags.AddTo(app);
  app.add_option("--inflight", inflight_list,
                 "comma-separated calls outstanding per client (HTTP/2 multiplexed)")
      ->capture_default_str();
  app.add_option("--driver", driver,
                 "load generator: grpc (C++ async stub, Execute), h2load (Execute) or session "
                 "(C++ async stub, Session)")
      ->capture_default_str()
      ->check(CLI::IsMember({"grpc", "h2load", "session"}));
  app.add_option("--repeat", repeat, "--driver grpc|session: runs per configuration (median)")
      ->capture_default_str()
      ->check(CLI::Range(1, 99));
  app.add_option("--h2load", h2load, "h2load binary (--driver h2load)")->capture_default_str();
  app.add_flag("--typed", typed,
               "--driver h2load: call the typed sipd.core.v1.CoreService/GetVersion (the "
               "typed face of `version`) instead of Execute");
  app.add_option("--requests", requests, "--driver h2load: requests per run")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{100000000}));
  app.add_option("--server-threads", server_threads,
                 "mi_grpc `threads` for the sipd the bench starts (0 = module default)");
  app.add_option("--target", target, "use a running server instead of starting sipd");
  app.add_option(
      "--server-pid", server_pid,
      "with --target: PID whose CPU time to sample (default: the MI gRPC process named by `ps`)");
  CLI11_PARSE(app, argc, argv);

  const absl::StatusOr<std::vector<int>> applied = flags.Apply();  // also pins (--cpus)
  if (!applied.ok()) {
    std::fprintf(stderr, "%s\n", std::string(applied.status().message()).c_str());
    return 2;
  }
  const std::vector<int>& counts = *applied;
  const std::string& command = flags.command;
  const double seconds = flags.seconds, warmup = flags.warmup;
  std::vector<int> inflights;
  for (absl::string_view part : absl::StrSplit(inflight_list, ',')) {
    int m = 0;
    if (!absl::SimpleAtoi(part, &m) || m < 1 || m > 1000) {
      std::fprintf(stderr, "bad --inflight\n");
      return 2;
    }
    inflights.push_back(m);
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
  } else if (server_pid == 0) {
    server_pid = FindMiGrpcPid(target);  // a local sipd: its `ps` names the process
  }

  int rc = 0;
  if (driver == "h2load") {
    rc = RunH2loadDriver(h2load, target, command, typed, counts, inflights, requests, server_pid);
  } else {
    const bool session = driver == "session";
    std::printf(
        "target %s, command '%s', driver %s, %g s per run (after %g s warm-up), median of "
        "%d\n",
        target.c_str(), command.c_str(), driver.c_str(), seconds, warmup, repeat);
    std::printf("%-8s %9s %12s %10s %10s %10s %8s %18s %18s\n", "clients", "in flight",
                session ? "commands/s" : "requests/s", "p50 us", "p99 us", "max us", "errors",
                "server CPU us/cmd", "client CPU us/cmd");
    const CommandLine line = SplitCommand(command);
    for (int n : counts) {
      for (int m : inflights) {
        std::vector<RunResult> runs;
        for (int k = 0; k < repeat; ++k) {
          runs.push_back(session ? RunSession(target, line, n, m, warmup, seconds, server_pid)
                                 : Run(target, command, n, m, warmup, seconds, server_pid));
          if (repeat > 1) {
            const RunResult& one = runs.back();
            std::fprintf(stderr, "  run %d: %.0f/s, server %.2f us, client %.2f us\n", k + 1,
                         one.calls / one.seconds, one.server_cpu_us_per_call,
                         one.client_cpu_us_per_call);
          }
        }
        std::sort(runs.begin(), runs.end(), [](const RunResult& a, const RunResult& b) {
          return a.calls / a.seconds < b.calls / b.seconds;
        });
        const RunResult& r = runs[runs.size() / 2];
        std::printf("%-8d %9d %12.0f %10.1f %10.1f %10.1f %8llu %18.2f %18.2f\n", r.clients, m,
                    r.calls / r.seconds, r.latency.p50_us, r.latency.p99_us, r.latency.max_us,
                    static_cast<unsigned long long>(r.errors), r.server_cpu_us_per_call,
                    r.client_cpu_us_per_call);
        std::fflush(stdout);
      }
    }
  }
  if (sipd) {
    if (absl::Status s = sipd->Stop(); !s.ok()) {
      std::fprintf(stderr, "sipd stop: %s\n", std::string(s.message()).c_str());
    }
  }
  return rc;
}
