// SIP over TCP with a real sipd: replies on the request's connection, pipelining and
// split messages, keep-alives, every limit (size, header timeout, idle lifetime, max
// connections, send queue), hostile peers (half message, flood) while a good TCP client
// and UDP keep being served, list_tcp_conns, ps, net:waiting_udp/tcp, maxbuffer probing,
// and which process holds which SIP descriptor.
#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string TcpRequest(absl::string_view method, int port, absl::string_view call_id,
                       absl::string_view extra = "", absl::string_view body = "") {
  return absl::StrCat(method, " sip:127.0.0.1:", port, " SIP/2.0\r\n",
                      "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-", call_id, "\r\n",
                      "Max-Forwards: 70\r\nFrom: <sip:tester@127.0.0.1>;tag=t-", call_id, "\r\n",
                      "To: <sip:127.0.0.1:", port, ">\r\nCall-ID: ", call_id, "\r\nCSeq: 1 ",
                      method, "\r\n", extra, "Content-Length: ", body.size(), "\r\n\r\n", body);
}

std::string CallIdOf(std::string_view message) {
  const size_t at = message.find("\r\nCall-ID: ");
  if (at == std::string_view::npos) return "";
  const size_t end = message.find("\r\n", at + 2);
  return std::string(message.substr(at + 11, end - at - 11));
}

class SipTcpTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (HasFailure() && sipd_ != nullptr) {
      std::fprintf(stderr, "sipd log:\n%s\n", sipd_->log().c_str());
    }
    sipd_.reset();
  }

  // sipd with UDP + TCP, mi_fifo, and `extra` (global keys such as tcp_* limits).
  void Start(const std::string& extra = "", int children = 2) {
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = false,
        .tcp = true,
        .children = children,
        .extra_config = absl::StrCat("loadmodule \"mi_fifo\"\n"
                                     "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/fifo\")\n"
                                     "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n",
                                     extra)});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    tcp_port_ = sipd_->tcp_port();
    ASSERT_NE(tcp_port_, 0);
  }

  std::string Mi(const std::string& command, const std::vector<std::string>& args = {}) {
    auto client = legacy::FifoClient::Create(sipd_->tmp_dir() + "/fifo", sipd_->tmp_dir() + "/");
    if (!client.ok()) return client.status().ToString();
    auto reply = (*client)->Execute(command, args, 10s);
    return reply.ok() ? *reply : reply.status().ToString();
  }
  uint64_t Stat(const std::string& name) {
    const std::string reply = Mi("get_statistics", {name});
    const size_t at = reply.find(":: ");
    uint64_t value = 0;
    if (at == std::string::npos ||
        !absl::SimpleAtoi(reply.substr(at + 3, reply.find('\n', at) - at - 3), &value)) {
      ADD_FAILURE() << "get_statistics " << name << ": " << reply;
    }
    return value;
  }
  // pid of the first process whose ps type starts with `type`.
  std::vector<pid_t> Pids(std::string_view type) {
    std::vector<pid_t> out;
    for (absl::string_view line : absl::StrSplit(Mi("ps"), '\n')) {
      const size_t pid_at = line.find("PID=");
      const size_t type_at = line.find("Type=");
      if (pid_at == absl::string_view::npos || type_at == absl::string_view::npos) continue;
      if (!absl::StartsWith(line.substr(type_at + 5), absl::string_view(type.data(), type.size())))
        continue;
      out.push_back(std::atoi(std::string(line.substr(pid_at + 4)).c_str()));
    }
    return out;
  }

  std::unique_ptr<SipTcpClient> Connect() {
    auto client = SipTcpClient::Connect(tcp_port_);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
  // One OPTIONS over a fresh TCP connection and one over UDP both get their 200.
  void ExpectServed(absl::string_view label) {
    auto client = Connect();
    ASSERT_NE(client, nullptr);
    ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, absl::StrCat("ok-", label))).ok());
    auto reply = client->ReadMessage(5s);
    ASSERT_TRUE(reply.ok()) << label << ": " << reply.status();
    EXPECT_EQ(SipStatusCode(*reply), 200) << label;
    auto udp =
        SipExchange(sipd_->sip_port(),
                    MakeSipRequest("OPTIONS", sipd_->sip_port(), absl::StrCat("u-", label)), 5s);
    ASSERT_TRUE(udp.ok()) << label << ": " << udp.status();
    EXPECT_EQ(SipStatusCode(*udp), 200) << label;
  }

  std::unique_ptr<SipdInstance> sipd_;
  int tcp_port_ = 0;
};

TEST_F(SipTcpTest, OptionsIsAnsweredOnTheSameConnection) {
  Start();
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, "same-conn")).ok());
  auto reply = client->ReadMessage();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(absl::StartsWith(*reply, "SIP/2.0 200 OK\r\n")) << *reply;
  EXPECT_THAT(*reply, HasSubstr("Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-same-conn\r\n"));
  EXPECT_THAT(*reply, HasSubstr("Call-ID: same-conn\r\n"));
  // Unknown methods get the stateless 501 the same way.
  ASSERT_TRUE(client->Write(TcpRequest("SUBSCRIBE", tcp_port_, "sub")).ok());
  reply = client->ReadMessage();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(SipStatusCode(*reply), 501);
  EXPECT_EQ(Stat("rcv_requests"), 2u);
}

TEST_F(SipTcpTest, PipelinedMessagesInOneSegmentAreAnsweredInOrder) {
  Start();
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::string burst;
  for (int i = 0; i < 20; ++i)
    absl::StrAppend(&burst, TcpRequest("OPTIONS", tcp_port_, absl::StrCat("p", i)));
  ASSERT_TRUE(client->Write(burst).ok());
  for (int i = 0; i < 20; ++i) {
    auto reply = client->ReadMessage();
    ASSERT_TRUE(reply.ok()) << i << ": " << reply.status();
    EXPECT_EQ(CallIdOf(*reply), absl::StrCat("p", i));
  }
}

TEST_F(SipTcpTest, OneMessageSplitOverManySegments) {
  Start();
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  const std::string request =
      TcpRequest("OPTIONS", tcp_port_, "split", "X-Note: a body follows\r\n", "v=0\r\n");
  for (size_t at = 0; at < request.size(); at += 7) {
    ASSERT_TRUE(client->Write(request.substr(at, 7)).ok());
    if (at % 70 == 0) {
      // Nothing comes back before the message is complete.
      auto early = client->ReadSome(1, 20ms);
      EXPECT_TRUE(!early.ok() || early->empty());
    }
  }
  auto reply = client->ReadMessage();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(CallIdOf(*reply), "split");
}

TEST_F(SipTcpTest, DoubleCrlfPingGetsAPong) {
  Start();
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write("\r\n\r\n").ok());
  auto pong = client->ReadSome(2, 3s);
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(*pong, "\r\n");
  EXPECT_EQ(Stat("bad_msg_hdr"), 0u);
}

TEST_F(SipTcpTest, OversizedMessageGets513AndTheConnectionCloses) {
  Start("tcp_max_msg_size = 2048\n");
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(
      client->Write(TcpRequest("MESSAGE", tcp_port_, "big", "", std::string(4000, 'x'))).ok());
  auto reply = client->ReadMessage();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(absl::StartsWith(*reply, "SIP/2.0 513 Message Too Large\r\n")) << *reply;
  EXPECT_THAT(*reply, HasSubstr("Call-ID: big\r\n"));
  EXPECT_TRUE(client->WaitForClose(5s));

  // Headers that never end are cut at the limit too (no reply possible).
  auto endless = Connect();
  ASSERT_NE(endless, nullptr);
  std::string headers = "OPTIONS sip:127.0.0.1 SIP/2.0\r\n";
  while (headers.size() < 4096) headers += "X-Filler: 0123456789abcdef\r\n";
  ASSERT_TRUE(endless->Write(headers).ok());
  EXPECT_TRUE(endless->WaitForClose(5s));
  EXPECT_TRUE(WaitUntil(
      [&] { return absl::StrContains(sipd_->log(), "larger than tcp_max_msg_size (2048 bytes)"); },
      5s));
  ExpectServed("after-oversize");
}

TEST_F(SipTcpTest, BadContentLengthGets400AndTheConnectionCloses) {
  Start();
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  std::string request = TcpRequest("OPTIONS", tcp_port_, "badlen");
  request.replace(request.find("Content-Length: 0"), 17, "Content-Length: -5");
  ASSERT_TRUE(client->Write(request).ok());
  auto reply = client->ReadMessage();
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(absl::StartsWith(*reply, "SIP/2.0 400 Bad Content-Length\r\n")) << *reply;
  EXPECT_TRUE(client->WaitForClose(5s));
}

TEST_F(SipTcpTest, HalfMessagePeerIsCutAtTheHeaderTimeoutWhileOthersAreServed) {
  Start("tcp_header_timeout = 1\n");
  auto half = Connect();
  ASSERT_NE(half, nullptr);
  const std::string request = TcpRequest("OPTIONS", tcp_port_, "half");
  ASSERT_TRUE(half->Write(request.substr(0, request.size() / 2)).ok());
  // While it dangles, everyone else is served.
  ExpectServed("during-half");
  EXPECT_TRUE(half->WaitForClose(10s));
  EXPECT_TRUE(
      WaitUntil([&] { return absl::StrContains(sipd_->log(), "(tcp_header_timeout)"); }, 5s));
  ExpectServed("after-half");
}

TEST_F(SipTcpTest, IdleConnectionsCloseAfterTheirLifetime) {
  Start("tcp_connection_lifetime = 1\n");
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, "idle")).ok());
  ASSERT_TRUE(client->ReadMessage().ok());
  EXPECT_TRUE(client->WaitForClose(10s));
  EXPECT_TRUE(WaitUntil([&] { return Mi("list_tcp_conns") == "200 OK\n\n"; }, 5s))
      << Mi("list_tcp_conns");
}

TEST_F(SipTcpTest, ConnectionsBeyondTheMaximumAreRefused) {
  Start("tcp_max_connections = 2\n");
  auto first = Connect();
  auto second = Connect();
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  for (auto* c : {first.get(), second.get()}) {
    ASSERT_TRUE(c->Write(TcpRequest("OPTIONS", tcp_port_, "fill")).ok());
    ASSERT_TRUE(c->ReadMessage().ok());
  }
  auto third = Connect();  // the kernel accepts; TCP main closes it at once
  ASSERT_NE(third, nullptr);
  EXPECT_TRUE(third->WaitForClose(5s));
  EXPECT_TRUE(WaitUntil(
      [&] { return absl::StrContains(sipd_->log(), "TCP connection table full (2 connections)"); },
      5s));
  // One goes away: there is room again.
  first.reset();
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto again = SipTcpClient::Connect(tcp_port_);
        if (!again.ok() || !(*again)->Write(TcpRequest("OPTIONS", tcp_port_, "again")).ok()) {
          return false;
        }
        auto reply = (*again)->ReadMessage(2s);
        return reply.ok() && SipStatusCode(*reply) == 200;
      },
      10s));
}

TEST_F(SipTcpTest, FloodingPeerThatNeverReadsBlocksNobody) {
  // One receiver, so the flooder shares it with the good client.
  Start("tcp_children = 1\ntcp_send_timeout = 1000\ntcp_max_send_queue = 65536\n");
  auto flooder = Connect();
  ASSERT_NE(flooder, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<bool> dropped{false};
  std::atomic<int> sent{0};
  std::thread flood([&] {
    std::string burst;
    for (int i = 0; i < 50; ++i) absl::StrAppend(&burst, TcpRequest("OPTIONS", tcp_port_, "flood"));
    // Non-blocking writes; when sipd stops reading us we spin until sipd drops us.
    size_t offset = 0;
    while (!stop.load()) {
      const ssize_t n = send(flooder->fd(), burst.data() + offset, burst.size() - offset,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        offset = (offset + static_cast<size_t>(n)) % burst.size();
        sent.fetch_add(1);
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        dropped.store(true);
        return;
      }
      if (n < 0) std::this_thread::yield();
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return sent.load() > 10 || dropped.load(); }, 10s));
  for (int i = 0; i < 5; ++i) ExpectServed(absl::StrCat("flood-", i));
  // The flooder never reads its replies: sipd stops reading it and drops it (its send
  // queue fills up, or it takes nothing for tcp_send_timeout).
  EXPECT_TRUE(WaitUntil(
      [&] {
        return ::testing::Value(
            sipd_->log(),
            ContainsRegex(absl::StrCat("with 127\\.0\\.0\\.1:", flooder->local_port(),
                                       " closed: (send queue full|the peer took none)")));
      },
      30s));
  stop.store(true);
  flood.join();
  ExpectServed("after-flood");
  EXPECT_THAT(sipd_->log(), ::testing::Not(HasSubstr("restarting")));
}

TEST_F(SipTcpTest, TenThousandHeadersOverUdpAndTcpCrashNothing) {
  Start();
  std::string headers;
  for (int i = 0; i < 10000; ++i) headers += "A: b\r\n";
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, "many", headers)).ok());
  auto reply = client->ReadMessage(10s);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(CallIdOf(*reply), "many");
  ASSERT_TRUE(
      SendDatagram(sipd_->sip_port(), MakeSipRequest("OPTIONS", sipd_->sip_port(), "many-udp",
                                                     std::vector<std::string>(10000, "A: b")))
          .ok());
  ExpectServed("after-many-headers");
  EXPECT_THAT(sipd_->log(), ::testing::Not(HasSubstr("restarting")));
}

TEST_F(SipTcpTest, ListTcpConnsShowsEachConnectionAsSpecSection6) {
  Start("tcp_connection_lifetime = 300\n");
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, "listed")).ok());
  ASSERT_TRUE(client->ReadMessage().ok());
  const std::string reply = Mi("list_tcp_conns");
  EXPECT_THAT(reply,
              ContainsRegex(absl::StrCat(
                  "^200 OK\nConnection::  ID=[0-9]+ Type=tcp State=0 Source=127\\.0\\.0\\.1:",
                  client->local_port(), " Destination=127\\.0\\.0\\.1:", tcp_port_,
                  " Timeout=[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} "
                  "Pending lifetime=(29[0-9]|300)\n\n$")))
      << reply;
  EXPECT_EQ(Mi("help", {"list_tcp_conns"}),
            "200 OK\nHelp:: list all ongoing TCP/TLS connections\nExported by:: core\n\n");
}

TEST_F(SipTcpTest, PsShowsTcpReceiversThenTcpMainLast) {
  Start("tcp_children = 3\n", 1);
  const std::string ps = Mi("ps");
  std::vector<std::string> types;
  for (absl::string_view line : absl::StrSplit(ps, '\n', absl::SkipEmpty())) {
    const size_t at = line.find("Type=");
    if (at != absl::string_view::npos) types.emplace_back(line.substr(at + 5));
  }
  ASSERT_GE(types.size(), 5u) << ps;
  EXPECT_EQ(types[types.size() - 1], "TCP main");
  for (size_t i = types.size() - 4; i < types.size() - 1; ++i) EXPECT_EQ(types[i], "TCP receiver");
  EXPECT_TRUE(absl::StartsWith(types[types.size() - 5], "timer")) << ps;
  EXPECT_THAT(
      ps, HasSubstr(absl::StrCat("Type=SIP receiver udp:127.0.0.1:", sipd_->sip_port(), " \n")));
  EXPECT_THAT(Mi("get_statistics", {"load:"}), HasSubstr("load:tcp-load:: "));
}

TEST_F(SipTcpTest, WaitingUdpAndTcpShowTheBacklog) {
  Start("tcp_children = 1\n", 1);
  EXPECT_EQ(Stat("waiting_udp"), 0u);
  EXPECT_EQ(Stat("waiting_tcp"), 0u);
  EXPECT_THAT(sipd_->log(), ContainsRegex("using a UDP receive buffer of [0-9]+ kb on udp:"));

  // UDP: stop the only UDP worker, send, read the backlog, let it go.
  const std::vector<pid_t> udp_worker = Pids("SIP receiver udp:");
  ASSERT_EQ(udp_worker.size(), 1u);
  ASSERT_EQ(kill(udp_worker[0], SIGSTOP), 0);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(SendDatagram(sipd_->sip_port(),
                             MakeSipRequest("OPTIONS", sipd_->sip_port(), absl::StrCat("w", i)))
                    .ok());
  }
  EXPECT_TRUE(WaitUntil([&] { return Stat("waiting_udp") >= 20 * 300; }, 5s))
      << Stat("waiting_udp");
  kill(udp_worker[0], SIGCONT);
  EXPECT_TRUE(WaitUntil([&] { return Stat("waiting_udp") == 0; }, 10s));

  // TCP: the same with the only TCP receiver.
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, "warm")).ok());
  ASSERT_TRUE(client->ReadMessage().ok());
  const std::vector<pid_t> receiver = Pids("TCP receiver");
  ASSERT_EQ(receiver.size(), 1u);
  ASSERT_EQ(kill(receiver[0], SIGSTOP), 0);
  const std::string burst = TcpRequest("OPTIONS", tcp_port_, "backlog");
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(client->Write(burst).ok());
  EXPECT_TRUE(WaitUntil([&] { return Stat("waiting_tcp") >= 10 * burst.size(); }, 5s))
      << Stat("waiting_tcp");
  kill(receiver[0], SIGCONT);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(client->ReadMessage().ok()) << i;
  EXPECT_TRUE(WaitUntil([&] { return Stat("waiting_tcp") == 0; }, 10s));
}

TEST_F(SipTcpTest, ABurstOfNewConnectionsIsHandedOverWithoutLoss) {
  // More connections at once than a hand-off channel holds (its send buffer, a few
  // hundred descriptors): TCP main keeps the rest until the receivers take them.
  Start("tcp_children = 2\n", 1);
  // TCP main stopped while the kernel queues the connections: it then accepts them all
  // at once.
  const std::vector<pid_t> main = Pids("TCP main");
  ASSERT_EQ(main.size(), 1u);
  ASSERT_EQ(kill(main[0], SIGSTOP), 0);
  std::vector<std::unique_ptr<SipTcpClient>> clients;
  for (int i = 0; i < 900; ++i) {
    clients.push_back(Connect());
    if (clients.back() == nullptr) break;
  }
  kill(main[0], SIGCONT);
  ASSERT_EQ(clients.size(), 900u);
  ASSERT_NE(clients.back(), nullptr);
  for (size_t i = 0; i < clients.size(); ++i) {
    ASSERT_TRUE(clients[i]->Write(TcpRequest("OPTIONS", tcp_port_, absl::StrCat("b", i))).ok());
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    auto reply = clients[i]->ReadMessage(10s);
    ASSERT_TRUE(reply.ok()) << i << ": " << reply.status();
    EXPECT_EQ(CallIdOf(*reply), absl::StrCat("b", i));
  }
  EXPECT_THAT(sipd_->log(), ::testing::Not(HasSubstr("dropped")));
}

TEST_F(SipTcpTest, AKilledReceiverIsReplacedAndItsConnectionsAreForgotten) {
  Start("tcp_children = 1\n", 1);
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, "before-kill")).ok());
  ASSERT_TRUE(client->ReadMessage().ok());
  const std::vector<pid_t> receiver = Pids("TCP receiver");
  ASSERT_EQ(receiver.size(), 1u);
  ASSERT_EQ(kill(receiver[0], SIGKILL), 0);
  EXPECT_TRUE(client->WaitForClose(5s));  // its descriptor died with the process
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::vector<pid_t> now = Pids("TCP receiver");
        return now.size() == 1 && now[0] != receiver[0] && now[0] != 0;
      },
      10s));
  ExpectServed("after-kill");
  EXPECT_TRUE(WaitUntil([&] { return Mi("list_tcp_conns") == "200 OK\n\n"; }, 5s))
      << Mi("list_tcp_conns");
}

// Socket inodes a process holds ("socket:[123]" links in /proc/PID/fd).
std::set<uint64_t> SocketInodes(pid_t pid) {
  std::set<uint64_t> out;
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    char target[256] = {};
    const ssize_t n =
        readlink(absl::StrCat(dir, "/", e->d_name).c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    uint64_t inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1) out.insert(inode);
  }
  closedir(d);
  return out;
}

// The inode of the TCP socket listening on `port` (/proc/net/tcp, state 0A).
uint64_t ListenInode(int port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);
  char wanted[8];
  std::snprintf(wanted, sizeof(wanted), ":%04X", port);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
    fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >>
        timeout >> inode;
    if (state == "0A" && absl::EndsWith(local, wanted))
      return std::strtoull(inode.c_str(), nullptr, 10);
  }
  return 0;
}

TEST_F(SipTcpTest, OnlyTcpMainHoldsTheListenSocketAndReceiversOnlyTheirConnections) {
  Start("tcp_children = 2\n", 1);
  const uint64_t listen_inode = ListenInode(tcp_port_);
  ASSERT_NE(listen_inode, 0u);
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Write(TcpRequest("OPTIONS", tcp_port_, "fds")).ok());
  ASSERT_TRUE(client->ReadMessage().ok());
  std::map<std::string, int> holders;
  for (absl::string_view line : absl::StrSplit(Mi("ps"), '\n', absl::SkipEmpty())) {
    const size_t pid_at = line.find("PID=");
    const size_t type_at = line.find("Type=");
    if (pid_at == absl::string_view::npos) continue;
    const pid_t pid = std::atoi(std::string(line.substr(pid_at + 4)).c_str());
    const std::string type(line.substr(type_at + 5));
    if (SocketInodes(pid).count(listen_inode) > 0) ++holders[type];
  }
  EXPECT_EQ(holders, (std::map<std::string, int>{{"TCP main", 1}, {"attendant", 1}}));
}

}  // namespace
}  // namespace sipd::testing
