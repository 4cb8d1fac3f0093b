// No client can stall mi_xmlrpc for others (issue 7): a real sipd, hundreds of
// misbehaving clients of every kind at once
//   open and idle | half a request head | a head and half its body |
//   a large streamed reply never read | the same read at 1 KB/s
// and one good client whose requests must all succeed, none refused. Nothing here
// asserts time: the good client's latencies and the MI process's memory per stalled
// client are printed (bench/RESULTS.md quotes them); the memory is checked against the
// bound documented in legacy-transports/xmlrpc/server.h.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/stop_signal.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::xmlrpc {
namespace {

using testing::CallOnce;
using testing::CallOutcome;
using testing::MethodCall;
using testing::PostRequest;
using testing::RawConnection;
using testing::StringParams;

// Per kind. 5 kinds: 1,000 misbehaving clients in all (the figure per
// transport), under the default max_connections_per_peer (2048) even though they all
// come from 127.0.0.1. XMLRPC_MISBEHAVING_PER_KIND=1000 runs 1,000 of EACH kind (5,000
// connections; the limits are raised to fit them).
int PerKind() {
  const char* text = getenv("XMLRPC_MISBEHAVING_PER_KIND");
  const int value = text == nullptr ? 0 : atoi(text);
  return value > 0 ? value : 200;
}
constexpr int kAors = 400;  // ul_dump of 400 AORs: ~150 KB, streamed in 8 parts
constexpr int kGoodRequests = 3000;

std::vector<pid_t> MiXmlrpcPids(int port) {
  const std::optional<CallOutcome> outcome = CallOnce(port, MethodCall("ps"));
  if (!outcome || outcome->is_fault) return {};
  const std::regex pattern("PID=([0-9]+) Type=MI XMLRPC");
  const std::string text = outcome->String();
  std::vector<pid_t> pids;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pattern);
       it != std::sregex_iterator(); ++it) {
    pids.push_back(std::stoi((*it)[1]));
  }
  return pids;
}

// Resident memory of processes in KiB (VmRSS, summed), or -1.
long RssKib(const std::vector<pid_t>& pids) {
  long total = 0;
  for (const pid_t pid : pids) {
    std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
    std::string line;
    long rss = -1;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) rss = std::stol(line.substr(6));
    }
    if (rss < 0) return -1;
    total += rss;
  }
  return total;
}

void SmallReceiveBuffer(int fd) {
  const int size = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

TEST(XmlrpcMisbehavingClientsTest, GoodClientIsServedWhileMisbehavingClientsHang) {
  const int kPerKind = PerKind();
  ::sipd::testing::SipdInstance::Options options;
  options.grpc = false;
  // Long timeouts: every misbehaving client stays for the whole test (cutting them is
  // the timeouts' job, tested in xmlrpc_server_test).
  options.extra_config = absl::StrCat(
      "loadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"port\", 0)\n"
      "modparam(\"mi_xmlrpc\", \"header_timeout\", 120)\n"
      "modparam(\"mi_xmlrpc\", \"read_timeout\", 120)\n"
      "modparam(\"mi_xmlrpc\", \"idle_timeout\", 120)\n"
      "modparam(\"mi_xmlrpc\", \"stall_timeout\", 120)\n"
      "modparam(\"mi_xmlrpc\", \"reply_timeout\", 600)\n"
      "modparam(\"mi_xmlrpc\", \"max_connections\", ",
      std::max(4096, 6 * kPerKind), ")\nmodparam(\"mi_xmlrpc\", \"max_connections_per_peer\", ",
      std::max(2048, 6 * kPerKind), ")\nloadmodule \"usrloc\"\n");
  ::sipd::testing::SipdInstance sipd(options);
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int port = sipd.listener_port("mi_xmlrpc");
  ASSERT_NE(port, 0) << sipd.log();
  ASSERT_TRUE(::sipd::testing::WaitUntil(
      [&] { return CallOnce(port, MethodCall("version")).has_value(); }, std::chrono::seconds(10)))
      << sipd.log();
  {
    RawConnection adder;
    ASSERT_TRUE(adder.Connect(port));
    for (int i = 0; i < kAors; ++i) {
      const std::optional<CallOutcome> added = adder.Call(StringParams(
          "ul_add", {"location", absl::StrCat("user", i), absl::StrCat("sip:user", i, "@192.0.2.1"),
                     "3600", "1.00", "x", "0", "0", "4294967295"}));
      ASSERT_TRUE(added.has_value() && !added->is_fault) << i;
    }
  }
  const std::vector<pid_t> mi_pids = MiXmlrpcPids(port);
  ASSERT_FALSE(mi_pids.empty());
  // Warm the processes up (buffers, parser) before the baseline.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(CallOnce(port, MethodCall("ul_dump")).has_value());
  const long rss_before = RssKib(mi_pids);

  std::vector<std::unique_ptr<RawConnection>> idle, half_head, half_body, never_read, slow;
  auto open = [&](std::vector<std::unique_ptr<RawConnection>>& group, bool small_buffer) {
    group.push_back(std::make_unique<RawConnection>());
    if (!group.back()->Connect(port)) return false;
    if (small_buffer) SmallReceiveBuffer(group.back()->fd());
    return true;
  };
  const std::string dump = PostRequest(MethodCall("ul_dump"));
  for (int i = 0; i < kPerKind; ++i) {
    ASSERT_TRUE(open(idle, false));
    ASSERT_TRUE(open(half_head, false));
    ASSERT_TRUE(half_head.back()->Send("POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\n"));
    ASSERT_TRUE(open(half_body, false));
    ASSERT_TRUE(half_body.back()->Send(
        "POST /RPC2 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n"
        "<?xml version=\"1.0\"?><methodCall><methodName>"));
    ASSERT_TRUE(open(never_read, true));
    ASSERT_TRUE(never_read.back()->Send(dump));
    ASSERT_TRUE(open(slow, true));
    ASSERT_TRUE(slow.back()->Send(dump));
  }

  // The streams have all started (their first bytes are there to read): the good client
  // meets the steady state, not the burst of 2 x kPerKind ul_dump calls being started.
  auto all_readable = [](const std::vector<std::unique_ptr<RawConnection>>& group) {
    for (const auto& connection : group) {
      pollfd pfd{connection->fd(), POLLIN, 0};
      if (poll(&pfd, 1, 0) != 1) return false;
    }
    return true;
  };
  ASSERT_TRUE(::sipd::testing::WaitUntil(
      [&] { return all_readable(never_read) && all_readable(slow); }, std::chrono::seconds(60)));

  // Slow readers take 1 KB per second each (one thread, one poll over all of them).
  ::sipd::testing::StopSignal stop_slow;
  std::thread slow_reader([&] {
    char chunk[1024];
    do {
      for (auto& connection : slow) {
        [[maybe_unused]] ssize_t n = recv(connection->fd(), chunk, sizeof(chunk), MSG_DONTWAIT);
      }
    } while (!stop_slow.WaitFor(std::chrono::seconds(1)));
  });

  // The good client: every request answered, none refused.
  std::vector<double> latencies_us;
  RawConnection good;
  ASSERT_TRUE(good.Connect(port));
  int reconnects = 0;
  for (int i = 0; i < kGoodRequests; ++i) {
    const auto start = std::chrono::steady_clock::now();
    testing::HttpResponse http;
    std::optional<CallOutcome> outcome = good.Call(MethodCall("version"), &http);
    if (!outcome.has_value() && http.status == 0) {
      // The server may close a keep-alive connection; a refusal would be a 503.
      ++reconnects;
      ASSERT_TRUE(good.Connect(port));
      outcome = good.Call(MethodCall("version"), &http);
    }
    ASSERT_TRUE(outcome.has_value())
        << "request " << i << ": HTTP " << http.status << " " << http.body;
    ASSERT_FALSE(outcome->is_fault) << outcome->fault_string;
    latencies_us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
  }
  // A fresh connection is accepted too (not refused while they all hang on).
  const std::optional<CallOutcome> fresh = CallOnce(port, MethodCall("version"));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_FALSE(fresh->is_fault);

  // Memory once every stream has filled what it may (the socket buffers and the
  // per-connection buffer) and stopped: the RSS no longer moves.
  long rss_during = RssKib(mi_pids);
  int unchanged = 0;
  ::sipd::testing::WaitUntil(
      [&] {
        const long rss = RssKib(mi_pids);
        unchanged = rss == rss_during ? unchanged + 1 : 0;
        rss_during = rss;
        return unchanged >= 25;  // ~0.5 s without a change
      },
      std::chrono::seconds(30));
  std::sort(latencies_us.begin(), latencies_us.end());
  const double p50 = latencies_us[latencies_us.size() / 2];
  const double p99 = latencies_us[latencies_us.size() * 99 / 100];
  const int stalled = 5 * kPerKind;
  const double per_client_kib =
      static_cast<double>(rss_during - rss_before) / static_cast<double>(stalled);
  std::printf(
      "good client: %d requests beside %d misbehaving clients, p50 %.0f us, p99 %.0f us, "
      "max %.0f us, %d reconnects\n"
      "MI XMLRPC RSS (%zu processes): %ld KiB before, %ld KiB with them: %.1f KiB per "
      "misbehaving client\n",
      kGoodRequests, stalled, p50, p99, latencies_us.back(), reconnects, mi_pids.size(), rss_before,
      rss_during, per_client_kib);
  // The documented bound: ~100 KiB of user memory per stalled client at most (server.h);
  // these clients hold far less (no body, streams stopped at one part).
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer's shadow memory and quarantine multiply every allocation.
  (void)per_client_kib;
#else
  EXPECT_LT(per_client_kib, 100.0);
#endif
  EXPECT_EQ(reconnects, 0);

  stop_slow.Stop();
  slow_reader.join();
  idle.clear();
  half_head.clear();
  half_body.clear();
  never_read.clear();
  slow.clear();
  EXPECT_TRUE(CallOnce(port, MethodCall("version")).has_value());
  EXPECT_TRUE(sipd.Stop().ok()) << sipd.log();
}

}  // namespace
}  // namespace sipd::xmlrpc
