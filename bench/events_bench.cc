// Event interface benchmarks (results: bench/RESULTS.md, section "Events").
//
//   events_bench latency [--rates 1000,10000] [--seconds 5] [--repeat 3]
//     A fresh sipd (2 SIP children, usrloc, registrar, event_datagram, mi_fifo) per run; a
//     UDP socket of the bench subscribes to E_UL_AOR_INSERT; the bench sends REGISTERs for
//     new AORs at a fixed rate (open loop, from one UDP socket) and timestamps, on its own
//     steady clock, each 200 OK and each event datagram. Latency = event arrival - 200 OK
//     arrival for the same AOR (negative: the event came first; usrloc raises it before
//     the registrar answers), and event arrival - REGISTER sent.
//
//   events_bench register [--subscribers 0,100] [--calls 10000] [--rounds 5]
//     REGISTER/s of a fresh sipd driven by sipp (tests/sip/register_unique.xml, 50 in
//     flight, as usrloc_bench) with N UDP subscribers of E_UL_AOR_INSERT (bench sockets,
//     not read unless --drain: the kernel drops what overflows them, as it would for
//     remote subscribers that are slow). Rounds alternate the subscriber counts; medians.
//     --stop-delivery stops the delivery process during the run: what raising alone
//     costs the SIP workers. EVENTS_BENCH_SIPP_LOG=1 prints sipp's screen (retransmissions).
//
//   events_bench raise [--count N]
//     Nanoseconds per Raise() of a one-string event into the shared-memory queue, in this
//     process (what a SIP worker pays), with and without a consumer draining meanwhile.
//
//     --split-cpus puts the SIP workers and sipp on CPU 0, the delivering process and the
//     bench's readers on CPU 1 (as if subscribers sat on other hosts).
//
// All take --cpus LIST (pin the bench and its sipd) and --extra TEXT (appended to
// sipd's configuration, e.g. 'modparam("event_datagram", "nice", 19)').
//
// --grpc (latency, register): the subscribers are gRPC Subscribe streams of
// sipd.events.v1.EventService (mi_grpc loaded) instead of UDP sockets: latency is
// measured to the bench's stream reader; `register` opens N streams (10 per HTTP/2
// connection), each read by a thread of the bench with --drain (without, the server
// buffers `subscriber_buffer` events per stream and drops the rest). The CPU column
// is the MI gRPC process's.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "sipd/core/event_bus.h"
#include "sipd/events/v1/events.grpc.pb.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"

namespace {

using sipd::bench::Clock;
using sipd::testing::SipdInstance;
using namespace std::chrono_literals;

std::string g_extra;
bool g_grpc = false;
// register --split-cpus: SIP side on CPU 0, event delivery and subscribers on CPU 1.
bool g_split_cpus = false;
const std::vector<int> kSipCpu = {0};
const std::vector<int> kEventCpu = {1};
const std::vector<int> kAllCpus = {0, 1};

void Pin(pid_t pid, const std::vector<int>& cpus) {
  if (absl::Status s = sipd::bench::PinAllThreads(pid, cpus); !s.ok()) {
    std::fprintf(stderr, "pinning %d: %s\n", pid, s.ToString().c_str());
    std::exit(1);
  }
}

namespace eventsv1 = ::sipd::events::v1;

// A gRPC Subscribe stream of E_UL_AOR_INSERT read by a thread of its own: `on_event`
// (if any) gets each event's AOR and arrival time.
class GrpcSubscriber {
 public:
  GrpcSubscriber(const std::shared_ptr<grpc::Channel>& channel, bool read,
                 std::function<void(const std::string& aor, int64_t now_ns)> on_event = {})
      : stub_(eventsv1::EventService::NewStub(channel)) {
    eventsv1::SubscribeRequest request;
    request.add_events("E_UL_AOR_INSERT");
    reader_ = stub_->Subscribe(&context_, request);
    reader_->WaitForInitialMetadata();  // subscribed from here on
    if (!read) return;
    thread_ = std::thread([this, on_event = std::move(on_event)] {
      eventsv1::SubscribeResponse response;
      while (reader_->Read(&response)) {
        const int64_t now =
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
                .count();
        received_ += static_cast<uint64_t>(response.events_size());
        ++messages_;
        dropped_ += response.dropped();
        if (on_event) {
          for (const auto& event : response.events()) on_event(event.params().at("aor"), now);
        }
      }
    });
  }
  ~GrpcSubscriber() {
    context_.TryCancel();
    if (thread_.joinable()) thread_.join();
    reader_->Finish();
  }
  uint64_t received() const { return received_.load(); }
  uint64_t dropped() const { return dropped_.load(); }
  uint64_t messages() const { return messages_.load(); }

 private:
  std::unique_ptr<eventsv1::EventService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<eventsv1::SubscribeResponse>> reader_;
  std::thread thread_;
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> messages_{0};
};

std::unique_ptr<SipdInstance> StartSipd() {
  auto sipd = std::make_unique<SipdInstance>(SipdInstance::Options{
      .grpc = g_grpc,
      .children = 2,
      .log_level = 1,
      .extra_config = absl::StrCat("loadmodule \"mi_fifo\"\n"
                                   "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
                                   "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
                                   "loadmodule \"event_datagram\"\n"
                                   "loadmodule \"usrloc\"\n"
                                   "loadmodule \"registrar\"\n",
                                   g_extra, "\n")});
  absl::Status s = sipd->Start();
  if (!s.ok()) {
    std::fprintf(stderr, "sipd did not start: %s\n%s\n", s.ToString().c_str(), sipd->log().c_str());
    std::exit(1);
  }
  return sipd;
}

std::string Fifo(SipdInstance& sipd, const std::string& command,
                 const std::vector<std::string>& args = {}) {
  auto client =
      sipd::legacy::FifoClient::Create(sipd.tmp_dir() + "/sipd_fifo", sipd.tmp_dir() + "/");
  if (!client.ok()) return client.status().ToString();
  // Right after start-up the MI FIFO process may not have opened its FIFO yet.
  const Clock::time_point deadline = Clock::now() + 10s;
  auto reply = (*client)->Execute(command, args, 60s);
  while (!reply.ok() && reply.status().code() == absl::StatusCode::kUnavailable &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    reply = (*client)->Execute(command, args, 60s);
  }
  return reply.ok() ? *reply : reply.status().ToString();
}

uint64_t Statistic(SipdInstance& sipd, const std::string& name) {
  const std::string reply = Fifo(sipd, "get_statistics", {name});
  const size_t at = reply.find(":: ");
  uint64_t value = 0;
  if (at != std::string::npos) {
    (void)absl::SimpleAtoi(reply.substr(at + 3, reply.find('\n', at) - at - 3), &value);
  }
  return value;
}

// A UDP socket on 127.0.0.1 with a port from the kernel.
int UdpSocket(int* port) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    std::perror("socket/bind");
    std::exit(1);
  }
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  *port = ntohs(address.sin_port);
  const int size = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  return fd;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// The number after `prefix` in `text` (e.g. "Call-ID: ev-" -> 17), or -1.
long IndexAfter(std::string_view text, std::string_view prefix) {
  const size_t at = text.find(prefix);
  if (at == std::string_view::npos) return -1;
  long value = 0;
  size_t i = at + prefix.size();
  if (i >= text.size() || text[i] < '0' || text[i] > '9') return -1;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9')
    value = value * 10 + (text[i++] - '0');
  return value;
}

struct LatencyRun {
  int rate = 0;
  double sent_per_second = 0;
  size_t sent = 0;
  size_t oks = 0;
  size_t events = 0;
  uint64_t dropped = 0;
  sipd::bench::LatencySummary from_ok;
  sipd::bench::LatencySummary from_send;
  double load = 0;
};

LatencyRun MeasureLatency(int rate, double seconds) {
  std::unique_ptr<SipdInstance> sipd = StartSipd();
  int sip_port = 0;
  int event_port = 0;
  const int sip = UdpSocket(&sip_port);
  const int events = UdpSocket(&event_port);
  if (!g_grpc) {
    const std::string subscribed = Fifo(
        *sipd, "event_subscribe", {"E_UL_AOR_INSERT", absl::StrCat("udp:127.0.0.1:", event_port)});
    if (subscribed != "200 OK\n\n") {
      std::fprintf(stderr, "event_subscribe: %s\n", subscribed.c_str());
      std::exit(1);
    }
  }
  const size_t total = static_cast<size_t>(rate * seconds);
  std::vector<int64_t> sent_ns(total, 0);
  std::vector<int64_t> ok_ns(total, 0);
  std::vector<int64_t> event_ns(total, 0);
  std::atomic<bool> done{false};
  std::atomic<size_t> oks{0};
  std::atomic<size_t> got{0};

  auto receive = [&done](int fd, std::string_view prefix, std::vector<int64_t>& stamps,
                         std::atomic<size_t>& count) {
    std::string buffer(65536, '\0');
    while (!done.load()) {
      pollfd pfd{fd, POLLIN, 0};
      if (poll(&pfd, 1, 50) != 1) continue;
      while (true) {
        const ssize_t n = recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n <= 0) break;
        const int64_t now = NowNs();
        const long i = IndexAfter(std::string_view(buffer.data(), static_cast<size_t>(n)), prefix);
        if (i >= 0 && static_cast<size_t>(i) < stamps.size() && stamps[i] == 0) {
          stamps[i] = now;
          count.fetch_add(1);
        }
      }
    }
  };
  std::thread ok_thread(receive, sip, "Call-ID: ev-", std::ref(ok_ns), std::ref(oks));
  std::thread event_thread;
  std::unique_ptr<GrpcSubscriber> grpc_subscriber;
  if (g_grpc) {
    grpc_subscriber = std::make_unique<GrpcSubscriber>(
        grpc::CreateChannel(sipd->grpc_target(), grpc::InsecureChannelCredentials()), true,
        [&](const std::string& aor, int64_t now) {
          long i = -1;
          if (aor.size() > 2 && absl::SimpleAtoi(aor.substr(2), &i) && i >= 0 &&
              static_cast<size_t>(i) < event_ns.size() && event_ns[i] == 0) {
            event_ns[i] = now;
            got.fetch_add(1);
          }
        });
  } else {
    event_thread = std::thread(receive, events, "aor::ev", std::ref(event_ns), std::ref(got));
  }

  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  server.sin_port = htons(static_cast<uint16_t>(sipd->sip_port()));
  const auto period =
      std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(1000000000LL / rate));
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < total;) {
    // Sleep to the next millisecond tick, then send everything due by now.
    std::this_thread::sleep_until(
        std::min<Clock::time_point>(start + period * i, Clock::now() + 1ms));
    const Clock::time_point now = Clock::now();
    for (; i < total && start + period * i <= now; ++i) {
      const std::string request = absl::StrCat(
          "REGISTER sip:127.0.0.1:", sipd->sip_port(),
          " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:", sip_port, ";branch=z9hG4bK-ev", i,
          "\r\nMax-Forwards: 70\r\nFrom: <sip:ev", i, "@example.com>;tag=t", i, "\r\nTo: <sip:ev",
          i, "@example.com>\r\nCall-ID: ev-", i, "\r\nCSeq: 1 REGISTER\r\nContact: <sip:ev", i,
          "@127.0.0.1:", sip_port, ">\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n");
      sent_ns[i] = NowNs();
      sendto(sip, request.data(), request.size(), 0, reinterpret_cast<sockaddr*>(&server),
             sizeof(server));
    }
  }
  const double send_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const Clock::time_point deadline = Clock::now() + 3s;
  while ((oks.load() < total || got.load() < total) && Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  done = true;
  ok_thread.join();
  if (event_thread.joinable()) event_thread.join();
  const uint64_t stream_dropped = grpc_subscriber != nullptr ? grpc_subscriber->dropped() : 0;
  grpc_subscriber.reset();

  LatencyRun run;
  run.rate = rate;
  run.sent = total;
  run.sent_per_second = total / send_seconds;
  run.oks = oks.load();
  run.events = got.load();
  run.dropped = Statistic(*sipd, "dropped_events") + stream_dropped;
  std::vector<double> from_ok;
  std::vector<double> from_send;
  for (size_t i = 0; i < total; ++i) {
    if (event_ns[i] == 0) continue;
    from_send.push_back(static_cast<double>(event_ns[i] - sent_ns[i]) / 1000.0);
    if (ok_ns[i] != 0) from_ok.push_back(static_cast<double>(event_ns[i] - ok_ns[i]) / 1000.0);
  }
  run.from_ok = sipd::bench::Summarize(std::move(from_ok));
  run.from_send = sipd::bench::Summarize(std::move(from_send));
  double loads[3] = {0, 0, 0};
  if (getloadavg(loads, 3) > 0) run.load = loads[0];
  close(sip);
  close(events);
  return run;
}

struct RegisterRun {
  int subscribers = 0;
  double per_second = 0;
  uint64_t queued = 0;
  uint64_t delivered = 0;
  uint64_t dropped = 0;
  double worker_cpu_us = -1;
  double delivery_cpu_us = -1;
  // While sipp ran.
  uint64_t delivered_during = 0;
  double delivery_cpu_during_us = -1;
  // gRPC with --drain: events per SubscribeResponse read by the bench's streams.
  double events_per_message = 0;
};

RegisterRun MeasureRegister(int subscribers, int calls, bool drain, bool stop_delivery,
                            const std::string& work) {
  std::unique_ptr<SipdInstance> sipd = StartSipd();
  // --split-cpus: the bench's threads made from here on (readers, gRPC's) start on CPU 1.
  if (g_split_cpus) Pin(0, kEventCpu);
  std::vector<int> sockets;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<GrpcSubscriber>> streams;
  for (int i = 0; g_grpc && i < subscribers; ++i) {
    if (i % 10 == 0) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per channel
      channels.push_back(
          grpc::CreateCustomChannel(sipd->grpc_target(), grpc::InsecureChannelCredentials(), args));
    }
    streams.push_back(std::make_unique<GrpcSubscriber>(channels.back(), drain));
  }
  for (int i = 0; !g_grpc && i < subscribers; ++i) {
    int port = 0;
    sockets.push_back(UdpSocket(&port));
    const std::string reply =
        Fifo(*sipd, "event_subscribe", {"E_UL_AOR_INSERT", absl::StrCat("udp:127.0.0.1:", port)});
    if (reply != "200 OK\n\n") {
      std::fprintf(stderr, "event_subscribe: %s\n", reply.c_str());
      std::exit(1);
    }
  }
  std::atomic<bool> done{false};
  std::thread drainer;
  if (drain && !sockets.empty()) {
    drainer = std::thread([&] {
      std::vector<pollfd> fds;
      for (int fd : sockets) fds.push_back({fd, POLLIN, 0});
      char buffer[2048];
      while (!done.load()) {
        if (poll(fds.data(), fds.size(), 50) <= 0) continue;
        for (auto& p : fds) {
          while (p.revents != 0 && recv(p.fd, buffer, sizeof(buffer), MSG_DONTWAIT) > 0) {
          }
        }
      }
    });
  }
  const std::string ps = Fifo(*sipd, "ps");
  const std::vector<pid_t> workers = sipd::bench::PidsOfTypeInText(ps, "SIP receiver");
  const std::vector<pid_t> delivery =
      sipd::bench::PidsOfTypeInText(ps, g_grpc ? "MI gRPC" : "Event datagram");
  if (g_split_cpus) {
    // SIP workers and sipp (forked by this thread) on CPU 0; the delivering process and
    // every other thread of the bench on CPU 1. The rest of sipd (attendant, timer)
    // stays where it was.
    for (pid_t pid : workers) Pin(pid, kSipCpu);
    for (pid_t pid : delivery) Pin(pid, kEventCpu);
    Pin(0, kEventCpu);
    if (absl::Status s = sipd::bench::PinToCpus(kSipCpu); !s.ok()) std::exit(1);
  }
  const long long workers_before = sipd::bench::TotalCpuTicks(workers);
  const long long delivery_before = sipd::bench::TotalCpuTicks(delivery);
  // --stop-delivery: what raising alone costs the SIP workers (events wait, or drop).
  if (stop_delivery) {
    for (pid_t pid : delivery) kill(pid, SIGSTOP);
  }
  const Clock::time_point start = Clock::now();
  sipd::testing::SippResult r = sipd::testing::RunSipp(
      sipd->sip_port(), "register_unique.xml",
      {"-m", absl::StrCat(calls), "-r", "100000", "-l", "50"}, work, std::chrono::seconds(600));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (g_split_cpus) Pin(0, kAllCpus);
  RegisterRun run;
  run.subscribers = subscribers;
  if (r.exit_code != 0) {
    std::fprintf(stderr, "sipp failed (%d):\n%s\n", r.exit_code, r.output.substr(0, 4000).c_str());
  } else {
    run.per_second = calls / seconds;
    if (getenv("EVENTS_BENCH_SIPP_LOG") != nullptr) std::fprintf(stderr, "%s\n", r.output.c_str());
  }
  run.worker_cpu_us = sipd::bench::CpuMicrosPerCall(
      workers_before, sipd::bench::TotalCpuTicks(workers), static_cast<uint64_t>(calls));
  run.delivered_during = Statistic(*sipd, "delivered_events");
  run.delivery_cpu_during_us = sipd::bench::CpuMicrosPerCall(
      delivery_before, sipd::bench::TotalCpuTicks(delivery), static_cast<uint64_t>(calls));
  if (stop_delivery) {
    for (pid_t pid : delivery) kill(pid, SIGCONT);
  }
  // Give the delivery process the time to empty its queue before reading its CPU.
  const Clock::time_point settle = Clock::now() + 10s;
  while (Clock::now() < settle && subscribers > 0 &&
         Statistic(*sipd, "queued_events") * static_cast<uint64_t>(subscribers) >
             Statistic(*sipd, "delivered_events") + Statistic(*sipd, "failed_deliveries")) {
    std::this_thread::sleep_for(50ms);
  }
  run.delivery_cpu_us = sipd::bench::CpuMicrosPerCall(
      delivery_before, sipd::bench::TotalCpuTicks(delivery), static_cast<uint64_t>(calls));
  run.queued = Statistic(*sipd, "queued_events");
  run.delivered = Statistic(*sipd, "delivered_events");
  run.dropped = Statistic(*sipd, "dropped_events");
  done = true;
  uint64_t events_read = 0, messages_read = 0;
  for (const auto& stream : streams) {
    events_read += stream->received();
    messages_read += stream->messages();
  }
  if (messages_read > 0) run.events_per_message = double(events_read) / double(messages_read);
  if (drainer.joinable()) drainer.join();
  for (int fd : sockets) close(fd);
  streams.clear();
  return run;
}

// Nanoseconds per Raise() of an E_UL_AOR_INSERT-like event (one short string) into the
// shared-memory queue, `count` raises from this thread into a queue that takes them all;
// with `drain` a consumer thread takes them meanwhile (sleeping on the eventfd when it has
// nothing, as the delivery process does), so raiser and consumer share cache lines.
double RaiseNanos(size_t count, bool drain) {
  auto shm = sipd::SharedMemory::Create(512u << 20);
  if (!shm.ok()) std::exit(1);
  auto events = sipd::SipdEvents::Create(**shm);
  if (!events.ok()) std::exit(1);
  sipd::mi::EventRegistry& registry = (*events)->registry();
  const sipd::mi::EventId id =
      *registry.Publish({.name = "E_UL_AOR_INSERT", .params = {{"aor", ""}}});
  sipd::mi::EventConsumer* consumer =
      *(*events)->backend().AddConsumer("bench", (count + 1024) * 128 * 2);
  consumer->AddInterest(id);
  std::atomic<bool> done{false};
  std::thread drainer;
  if (drain) {
    drainer = std::thread([&] {
      sipd::mi::RaisedEvent event;
      while (!done.load()) {
        while (consumer->Pop(event)) {
        }
        consumer->WaitForEvents(std::chrono::milliseconds(50));
      }
    });
  }
  const std::string aor = "u123456@example.com";
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < count; ++i) registry.Raise(id, {aor});
  const double nanos = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  done = true;
  if (drainer.joinable()) drainer.join();
  if (consumer->dropped() > 0) std::fprintf(stderr, "%lu dropped\n", consumer->dropped());
  return nanos / static_cast<double>(count);
}

template <typename T, typename Key>
T Median(std::vector<T> runs, Key key) {
  std::sort(runs.begin(), runs.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
  return runs[runs.size() / 2];
}

std::string Fixed(double v, int digits = 0) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, v);
  return buffer;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"event interface benchmarks"};
  app.require_subcommand(1);
  std::string cpus;
  app.add_option("--cpus", cpus, "pin the bench and its sipd to these CPUs (taskset syntax)");
  app.add_option("--extra", g_extra, "text appended to sipd's configuration");
  app.add_flag("--grpc", g_grpc, "subscribers are gRPC Subscribe streams (mi_grpc)");

  CLI::App* latency = app.add_subcommand("latency", "event latency at fixed REGISTER rates");
  std::string rates = "1000,10000";
  double seconds = 5;
  int repeat = 3;
  latency->add_option("--rates", rates, "REGISTERs (= events) per second");
  latency->add_option("--seconds", seconds, "seconds per run");
  latency->add_option("--repeat", repeat, "runs per rate (the median by p99 is shown)");

  CLI::App* reg = app.add_subcommand("register", "REGISTER/s with N subscribers");
  std::string subscriber_counts = "0,100";
  int calls = 10000;
  int rounds = 5;
  bool drain = false;
  reg->add_option("--subscribers", subscriber_counts, "subscriber counts to compare");
  reg->add_option("--calls", calls, "REGISTERs per run");
  reg->add_option("--rounds", rounds, "rounds (each runs every subscriber count once)");
  reg->add_flag("--drain", drain, "read the subscriber sockets / gRPC streams (costs bench CPU)");
  bool stop_delivery = false;
  reg->add_flag("--stop-delivery", stop_delivery,
                "SIGSTOP the delivery process while sipp runs (the cost of raising alone)");
  reg->add_flag("--split-cpus", g_split_cpus,
                "SIP workers and sipp on CPU 0, the delivering process (MI gRPC / event "
                "datagram) and the bench's readers on CPU 1 (subscribers on other hosts)");
  CLI::App* raise = app.add_subcommand("raise", "nanoseconds per Raise() into the queue");
  size_t raise_count = 1000000;
  raise->add_option("--count", raise_count, "raises per run");

  CLI11_PARSE(app, argc, argv);

  if (!cpus.empty()) {
    auto list = sipd::bench::ParseCpuList(cpus);
    if (!list.ok() || !sipd::bench::PinToCpus(*list).ok()) {
      std::fprintf(stderr, "bad --cpus %s\n", cpus.c_str());
      return 1;
    }
  }

  if (raise->parsed()) {
    sipd::bench::MarkdownTable table({"consumer", "ns per raise (median of 5)", "load"});
    table.PrintHeader();
    for (bool drain : {false, true}) {
      std::vector<double> runs;
      for (int i = 0; i < 5; ++i) runs.push_back(RaiseNanos(raise_count, drain));
      std::sort(runs.begin(), runs.end());
      double loads[3] = {0, 0, 0};
      getloadavg(loads, 3);
      table.PrintRow({drain ? "draining meanwhile" : "none (queue takes all)", Fixed(runs[2], 0),
                      Fixed(loads[0], 1)});
    }
    return 0;
  }

  if (latency->parsed()) {
    sipd::bench::MarkdownTable table({"events/s", "sent/s", "events got", "dropped",
                                      "p50 us (from 200 OK)", "p99 us", "max us",
                                      "p50 us (from REGISTER)", "p99 us", "load"});
    table.PrintHeader();
    for (const std::string& r : std::vector<std::string>(absl::StrSplit(rates, ','))) {
      int rate = 0;
      if (!absl::SimpleAtoi(r, &rate) || rate <= 0) return 1;
      std::vector<LatencyRun> runs;
      for (int i = 0; i < repeat; ++i) runs.push_back(MeasureLatency(rate, seconds));
      const LatencyRun m = Median(runs, [](const LatencyRun& x) { return x.from_ok.p99_us; });
      table.PrintRow({absl::StrCat(m.rate), Fixed(m.sent_per_second),
                      absl::StrCat(m.events, "/", m.sent), absl::StrCat(m.dropped),
                      Fixed(m.from_ok.p50_us), Fixed(m.from_ok.p99_us), Fixed(m.from_ok.max_us),
                      Fixed(m.from_send.p50_us), Fixed(m.from_send.p99_us), Fixed(m.load, 1)});
    }
    return 0;
  }

  char dir[] = "/tmp/events-bench-XXXXXX";
  if (mkdtemp(dir) == nullptr) return 1;
  std::vector<int> counts;
  for (const std::string& c : std::vector<std::string>(absl::StrSplit(subscriber_counts, ','))) {
    int n = 0;
    if (!absl::SimpleAtoi(c, &n) || n < 0) return 1;
    counts.push_back(n);
  }
  std::vector<std::vector<RegisterRun>> runs(counts.size());
  for (int round = 0; round < rounds; ++round) {
    for (size_t k = 0; k < counts.size(); ++k) {
      // Alternate the order between rounds.
      const size_t index = round % 2 == 0 ? k : counts.size() - 1 - k;
      runs[index].push_back(MeasureRegister(counts[index], calls, drain, stop_delivery, dir));
      const RegisterRun& last = runs[index].back();
      std::fprintf(stderr, "round %d: %d subscribers: %.0f REGISTER/s\n", round, last.subscribers,
                   last.per_second);
    }
  }
  std::filesystem::remove_all(dir);
  sipd::bench::MarkdownTable table({"subscribers", "REGISTER/s", "drop", "events queued",
                                    "datagrams sent (during run)", "events dropped",
                                    "worker CPU us/REG", "delivery CPU us/REG (during run)",
                                    "events/message", "load"});
  table.PrintHeader();
  double base = 0;
  for (size_t k = 0; k < counts.size(); ++k) {
    const RegisterRun m = Median(runs[k], [](const RegisterRun& x) { return x.per_second; });
    if (k == 0) base = m.per_second;
    double loads[3] = {0, 0, 0};
    getloadavg(loads, 3);
    table.PrintRow(
        {absl::StrCat(m.subscribers), Fixed(m.per_second),
         k == 0 ? "-" : Fixed(100.0 * (base - m.per_second) / base, 1) + " %",
         absl::StrCat(m.queued), absl::StrCat(m.delivered, " (", m.delivered_during, ")"),
         absl::StrCat(m.dropped), Fixed(m.worker_cpu_us, 1),
         absl::StrCat(Fixed(m.delivery_cpu_us, 1), " (", Fixed(m.delivery_cpu_during_us, 1), ")"),
         m.events_per_message > 0 ? Fixed(m.events_per_message, 1) : "-", Fixed(loads[0], 1)});
  }
  return 0;
}
