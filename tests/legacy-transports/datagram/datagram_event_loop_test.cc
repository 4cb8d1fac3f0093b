// The datagram server's event loop in-process (test registry): replies to clients that
// do not read are dropped and counted while others are served (also when unread replies
// fill the reply socket's send buffer), async replies reach the peer from another
// thread, the async timeout answers `500 command failed`, and the caller identity.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "tests/legacy-transports/in_process_servers.h"
#include "tests/support/sipd_harness.h"

namespace sipd::legacy::testing {
namespace {

using ::sipd::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr std::string_view kVersion = "200 OK\nServer:: OpenSIPS (1.11.11-notls (x86_64/linux))\n";

int MaxDatagramQueue() {
  std::ifstream in("/proc/sys/net/unix/max_dgram_qlen");
  int qlen = 10;
  in >> qlen;
  return qlen;
}

std::unique_ptr<DatagramClient> UnixClient(InProcessDatagram& server) {
  auto client = DatagramClient::Unix(server.dir().Join("mi.sock"), server.dir().path());
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

TEST(DatagramEventLoopTest, RepliesToAClientThatNeverReadsAreDroppedAndCounted) {
  InProcessDatagram server("{DIR}/mi.sock");
  server.Start();
  auto never_reads = UnixClient(server);
  auto good = UnixClient(server);
  // More than its queue holds (net.unix.max_dgram_qlen + 1 datagrams).
  for (int i = 0; i < MaxDatagramQueue() + 40; ++i) {
    ASSERT_TRUE(never_reads->Send(":version:\n").ok());
  }
  // Its queue holds a few; the rest are dropped at once (nothing waits).
  ASSERT_TRUE(WaitUntil([&] { return server.server().dropped_replies() >= 20; }, seconds(5)));
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::string> reply = good->Transact(":version:\n");
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, kVersion);
  }
}

TEST(DatagramEventLoopTest, UnreadRepliesFillingTheReplySocketSilenceNobody) {
  // 100 clients that never read, each asking for 60 KB replies: their unread replies
  // (charged to the server's reply socket) far exceed its send buffer.
  InProcessDatagram server("{DIR}/mi.sock");
  server.Start();
  std::vector<std::unique_ptr<DatagramClient>> never_read;
  for (int i = 0; i < 100; ++i) never_read.push_back(UnixClient(server));
  auto good = UnixClient(server);
  for (int round = 0; round < 12; ++round) {
    for (auto& client : never_read) ASSERT_TRUE(client->Send(":big:\n580\n").ok());
    absl::StatusOr<std::string> reply = good->Transact(":version:\n");
    ASSERT_TRUE(reply.ok()) << "round " << round << ": " << reply.status();
    EXPECT_EQ(*reply, kVersion);
  }
}

TEST(DatagramEventLoopTest, AsyncRepliesReachTheirPeersOverUnixAndUdp) {
  InProcessDatagram server("{DIR}/mi.sock");
  server.config().extra_socket_names = {"udp:127.0.0.1:0"};
  server.Start();
  const int port = server.udp_port();
  TakeHeldTickets();
  constexpr int kCalls = 1000;
  std::vector<std::unique_ptr<DatagramClient>> clients;
  for (int i = 0; i < kCalls; ++i) {
    auto client = i % 2 == 0
                      ? DatagramClient::Unix(server.dir().Join("mi.sock"), server.dir().path())
                      : DatagramClient::Udp("127.0.0.1", port);
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->Send(":async_hold:\n").ok());
    clients.push_back(std::move(*client));
    // At most 100 requests in flight: 1,000 datagrams sent at once can overflow the UDP
    // socket's default receive buffer on a busy host, and a lost UDP request is lost.
    if ((i + 1) % 100 == 0) {
      ASSERT_TRUE(WaitUntil([&] { return HeldTicketCount() == size_t(i + 1); }, seconds(10)));
    }
  }
  ASSERT_TRUE(WaitUntil([&] { return HeldTicketCount() == kCalls; }, seconds(10)));
  EXPECT_EQ(server.server().waiting(), size_t{kCalls});
  // Meanwhile other requests are answered.
  auto other = UnixClient(server);
  absl::StatusOr<std::string> version = other->Transact(":version:\n");
  ASSERT_TRUE(version.ok()) << version.status();
  std::thread completer([&] {
    mi::Reply reply;
    reply.root.AddKid("held", "done");
    for (const mi::AsyncTicket& ticket : TakeHeldTickets()) {
      EXPECT_TRUE(server.dispatcher().async().Complete(ticket, &reply));
    }
  });
  completer.join();
  for (int i = 0; i < kCalls; ++i) {
    absl::StatusOr<std::string> reply = clients[i]->Receive(seconds(10));
    ASSERT_TRUE(reply.ok()) << i << ": " << reply.status();
    EXPECT_EQ(*reply, "200 OK\nheld:: done\n") << i;
  }
  EXPECT_TRUE(WaitUntil([&] { return server.server().waiting() == 0; }, seconds(5)));
  EXPECT_EQ(server.async_pending(), 0u);
}

TEST(DatagramEventLoopTest, FailedAndTimedOutAsyncCallsAnswerCommandFailed) {
  InProcessDatagram server("{DIR}/mi.sock",
                           mi::DispatcherOptions{.workers = 2, .async_timeout = milliseconds(300)});
  server.Start();
  TakeHeldTickets();
  auto client = UnixClient(server);
  ASSERT_TRUE(client->Send(":async_hold:\n").ok());
  ASSERT_TRUE(WaitUntil([&] { return HeldTicketCount() == 1; }, seconds(5)));
  for (const mi::AsyncTicket& ticket : TakeHeldTickets()) {
    EXPECT_TRUE(server.dispatcher().async().Complete(ticket, nullptr));
  }
  absl::StatusOr<std::string> failed = client->Receive(seconds(5));
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(*failed, kDatagramFailed);
  // Never completed: the async timeout answers and frees the slot.
  absl::StatusOr<std::string> timed_out = client->Transact(":async_hold:\n", seconds(5));
  ASSERT_TRUE(timed_out.ok()) << timed_out.status();
  EXPECT_EQ(*timed_out, kDatagramFailed);
  EXPECT_EQ(server.async_pending(), 0u);
  TakeHeldTickets();
}

TEST(DatagramEventLoopTest, TheCallerIsIdentified) {
  InProcessDatagram server("{DIR}/mi.sock");
  server.config().extra_socket_names = {"udp:127.0.0.1:0"};
  server.Start();
  const int port = server.udp_port();
  auto unix_client = UnixClient(server);
  absl::StatusOr<std::string> reply = unix_client->Transact(":whoami:\n");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(reply->starts_with(absl::StrCat("200 OK\ntransport:: datagram-unix\nuid:: ", getuid(),
                                              "\npid:: ", getpid(),
                                              "\naddress:: ", server.dir().path(), "/")))
      << *reply;
  auto udp_client = DatagramClient::Udp("127.0.0.1", port);
  ASSERT_TRUE(udp_client.ok());
  reply = (*udp_client)->Transact(":whoami:\n");
  ASSERT_TRUE(reply.ok()) << reply.status();
  sockaddr_in local{};  // bound by the first send
  socklen_t len = sizeof(local);
  ASSERT_EQ(getsockname((*udp_client)->fd(), reinterpret_cast<sockaddr*>(&local), &len), 0);
  EXPECT_EQ(*reply, absl::StrCat("200 OK\ntransport:: datagram-udp\nuid:: unknown\npid:: -1\n",
                                 "address:: 127.0.0.1:", ntohs(local.sin_port), "\n"));
}

// Issue 9, hole 1: a datagram whose source address is the MI socket's own (a forged
// source) made the server answer itself forever at 100 % CPU. It is ignored now, so the
// count of ignored datagrams stays at what was sent and other clients are served.
TEST(DatagramEventLoopTest, ADatagramFromTheServersOwnSocketIsNeverAnswered) {
  InProcessDatagram server("udp:127.0.0.1:0");
  server.Start();
  const int fd = server.sockets().at(0).rx;
  sockaddr_in self{};
  socklen_t len = sizeof(self);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len), 0);
  // Sent from the server's own socket to itself: exactly what a forged source makes.
  for (const std::string_view payload : {":version:\n", "garbage\n"}) {
    ASSERT_EQ(
        sendto(fd, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&self), len),
        static_cast<ssize_t>(payload.size()));
  }
  ASSERT_TRUE(WaitUntil([&] { return server.server().ignored_own() >= 2; }, seconds(5)));
  auto client = DatagramClient::Udp("127.0.0.1", server.udp_port());
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::string> reply = (*client)->Transact(":version:\n");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, kVersion);
  // Served in order by the one loop: had it answered itself, its own answers would have
  // been counted before the client's request.
  EXPECT_EQ(server.server().ignored_own(), 2u);
}

// Error replies are rate-limited (a flood of bad requests must not make the MI socket a
// reflector): a burst, then `rate` per second, driven by explicit times.
TEST(DatagramEventLoopTest, ErrorRepliesHaveABudget) {
  ErrorReplyBudget budget(/*rate=*/10, /*burst=*/5);
  const ErrorReplyBudget::Clock::time_point t0 = ErrorReplyBudget::Clock::now();
  int allowed = 0;
  for (int i = 0; i < 20; ++i) allowed += budget.Allow(t0) ? 1 : 0;
  EXPECT_EQ(allowed, 5);
  EXPECT_FALSE(budget.Allow(t0 + std::chrono::milliseconds(50)));  // half a token
  EXPECT_TRUE(budget.Allow(t0 + std::chrono::milliseconds(100)));
  allowed = 0;
  for (int i = 0; i < 20; ++i) allowed += budget.Allow(t0 + seconds(10)) ? 1 : 0;
  EXPECT_EQ(allowed, 5) << "never more than the burst";
}

}  // namespace
}  // namespace sipd::legacy::testing
