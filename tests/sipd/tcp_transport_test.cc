// SipTransport::Send over TCP across real processes, without a whole sipd: this test
// process plays "any SIP process" (an MI process, the timer) while forked children run
// the real TCP main and TCP receiver loops on a real SipTransportImpl. Covers what the
// tm engineer relies on: a reply from another process on the request's connection
// (shared-memory queue + eventfd), a request to a TCP address with no connection yet
// (the receiver connects), allow_connect = false, connect failures, and the send queue
// bound.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/core/config.h"
#include "sipd/core/sip_transport_impl.h"
#include "sipd/core/tcp_main.h"
#include "sipd/core/tcp_receiver.h"
#include "tests/support/sipd_harness.h"

namespace sipd {
namespace {

using ::sipd::testing::SipTcpClient;
using ::sipd::testing::WaitUntil;
using namespace std::chrono_literals;

// Just enough Core for the TCP process loops: stopping() on SIGTERM.
std::atomic<bool> g_stop{false};

class LoopCore final : public Core {
 public:
  const std::string& run_dir() const override { return empty_; }
  int children() const override { return 1; }
  const std::vector<std::string>& listen() const override { return names_; }
  std::time_t start_time() const override { return 0; }
  const std::vector<std::string>& argv() const override { return names_; }
  SharedMemory& shm() override { std::abort(); }
  mi::Registry& mi() override { std::abort(); }
  mi::StatsRegistry& stats() override { std::abort(); }
  std::unique_ptr<mi::Dispatcher> NewDispatcher(const mi::DispatcherOptions&) override {
    return nullptr;
  }
  mi::AsyncBackend& async() override { std::abort(); }
  Module* FindModule(std::string_view) override { return nullptr; }
  void AddTimer(std::string, std::chrono::milliseconds, std::function<void()>) override {}
  void AddSipHandler(std::string, SipRequestHandler) override {}
  std::vector<ProcessInfo> process_table() const override { return {}; }
  int log_level() const override { return 2; }
  void SetLogLevel(int) override {}
  void RequestShutdown() override {}
  bool stopping() const override { return g_stop.load(); }
  void SyncLogLevel() override {}

 private:
  std::string empty_;
  std::vector<std::string> names_;
};

void OnTerm(int) { g_stop.store(true); }

// A TCP listener of the test's own (a "UAS" sipd connects to).
class PeerListener {
 public:
  PeerListener() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    listen(fd_, 16);
    socklen_t length = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &length);
    port_ = ntohs(a.sin_port);
  }
  ~PeerListener() { close(fd_); }
  int port() const { return port_; }
  // The next accepted connection, or -1 after `timeout`.
  int Accept(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) return -1;
    return accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

std::string ReadAvailable(int fd, size_t want, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < want) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) != 1) break;
    char chunk[65536];
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) break;
    out.append(chunk, static_cast<size_t>(n));
  }
  return out;
}

std::string Message(absl::string_view call_id) {
  return absl::StrCat("OPTIONS sip:x SIP/2.0\r\nCall-ID: ", call_id,
                      "\r\nContent-Length: 0\r\n\r\n");
}

class TcpTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shm = SharedMemory::Create(16 << 20);
    ASSERT_TRUE(shm.ok());
    shm_ = *std::move(shm);
    SipTransportImpl::Options options;
    options.shm = shm_.get();
    options.tcp.receivers = 2;
    options.tcp.max_send_queue = 4096;
    options.tcp.connect_timeout = 2000ms;
    auto transport = SipTransportImpl::Open({*ParseListenAddress("tcp:127.0.0.1:0")}, options);
    ASSERT_TRUE(transport.ok()) << transport.status();
    transport_ = *std::move(transport);
    tcp_port_ = transport_->sockets()[0].address.port();
    // Receivers echo every message back through Send(ReplyTo(source)), prefixed with
    // their receiver index, so the test sees who handled it and that replies work.
    for (int i = 0; i < 2; ++i) Fork([this, i] { RunReceiver(i); });
    Fork([this] { RunMain(); });
  }
  void TearDown() override {
    for (pid_t pid : children_) kill(pid, SIGTERM);
    for (pid_t pid : children_) waitpid(pid, nullptr, 0);
    transport_.reset();
  }

  template <typename Body>
  void Fork(Body body) {
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      signal(SIGTERM, OnTerm);
      body();
      _exit(0);
    }
    children_.push_back(pid);
  }
  void RunReceiver(int index) {
    transport_->tcp()->EnterProcess(TcpTransport::Role::kTcpReceiver, index);
    SipTransport* transport = transport_.get();
    SipMessageHandler handler = [transport, index](const SipInbound& in) {
      (void)transport->Send(SipDestination::ReplyTo(in.source),
                            absl::StrCat("echo", index, ":", std::string(in.bytes)));
    };
    TcpReceiver::Hooks hooks;
    hooks.handler = &handler;
    TcpReceiver receiver(*transport_->tcp(), index, std::move(hooks));
    LoopCore core;
    (void)receiver.Run(core);
  }
  void RunMain() {
    transport_->tcp()->EnterProcess(TcpTransport::Role::kTcpMain, 0);
    LoopCore core;
    TcpMain accepter(*transport_->tcp());
    (void)accepter.Run(core);
  }
  // This process as "another SIP process" (an MI or timer process).
  void BecomeOtherProcess() { transport_->tcp()->EnterProcess(TcpTransport::Role::kOther, 0); }
  SipDestination TcpTo(int port) {
    SipDestination d;
    d.proto = SipProto::kTcp;
    d.address = *SipAddress::FromIpPort("127.0.0.1", static_cast<uint16_t>(port));
    return d;
  }

  std::unique_ptr<SharedMemory> shm_;
  std::unique_ptr<SipTransportImpl> transport_;
  std::vector<pid_t> children_;
  int tcp_port_ = 0;
};

TEST_F(TcpTransportTest, InboundMessageIsHandledAndAnotherProcessCanAnswerOnItsConnection) {
  BecomeOtherProcess();
  auto client = SipTcpClient::Connect(tcp_port_);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Write(Message("in-1")).ok());
  const std::string echo = ReadAvailable((*client)->fd(), 6 + Message("in-1").size(), 3s);
  ASSERT_THAT(echo, ::testing::MatchesRegex("echo[01]:OPTIONS .*")) << echo;

  std::vector<SipConnectionInfo> connections = transport_->Connections();
  ASSERT_EQ(connections.size(), 1u);
  EXPECT_EQ(connections[0].state, 0);
  EXPECT_EQ(connections[0].peer.port(), (*client)->local_port());
  EXPECT_EQ(connections[0].local.port(), tcp_port_);
  // From this process (not the owner): by connection id, then by address alone.
  SipDestination by_id = TcpTo((*client)->local_port());
  by_id.connection = connections[0].id;
  ASSERT_TRUE(transport_->Send(by_id, "from-other-by-id|").ok());
  ASSERT_TRUE(transport_->Send(TcpTo((*client)->local_port()), "from-other-by-address|").ok());
  EXPECT_EQ(ReadAvailable((*client)->fd(), 39, 3s), "from-other-by-id|from-other-by-address|");
}

TEST_F(TcpTransportTest, SendToANewAddressOpensAConnectionFromAReceiver) {
  BecomeOtherProcess();
  PeerListener peer;
  ASSERT_TRUE(transport_->Send(TcpTo(peer.port()), Message("out-1")).ok());
  ASSERT_TRUE(transport_->Send(TcpTo(peer.port()), Message("out-2")).ok());
  const int fd = peer.Accept(3s);
  ASSERT_GE(fd, 0);
  const std::string expected = Message("out-1") + Message("out-2");
  EXPECT_EQ(ReadAvailable(fd, expected.size(), 3s), expected);
  // One connection, reused; it is an ordinary connection now: what the peer sends on it
  // is handled (the echo comes back on it).
  EXPECT_TRUE(WaitUntil(
      [&] {
        return transport_->Connections().size() == 1 && transport_->Connections()[0].state == 0;
      },
      3s));
  const std::string reply = "SIP/2.0 200 OK\r\nCall-ID: out-1\r\nContent-Length: 0\r\n\r\n";
  ASSERT_EQ(send(fd, reply.data(), reply.size(), 0), static_cast<ssize_t>(reply.size()));
  EXPECT_THAT(ReadAvailable(fd, 6 + reply.size(), 3s), ::testing::EndsWith(reply));
  close(fd);
}

TEST_F(TcpTransportTest, NoConnectWhenNotAllowedAndFailedConnectsAreForgotten) {
  BecomeOtherProcess();
  int closed_port = 0;
  {
    PeerListener gone;
    closed_port = gone.port();
  }
  SipDestination no_connect = TcpTo(closed_port);
  no_connect.allow_connect = false;
  EXPECT_EQ(transport_->Send(no_connect, Message("x")).code(), absl::StatusCode::kUnavailable);
  // Nothing listens there: the receiver's connect fails and the slot is freed.
  ASSERT_TRUE(transport_->Send(TcpTo(closed_port), Message("refused")).ok());
  EXPECT_TRUE(WaitUntil([&] { return transport_->Connections().empty(); }, 5s));
}

TEST_F(TcpTransportTest, SendQueueIsBounded) {
  BecomeOtherProcess();
  PeerListener peer;  // accepts (kernel backlog) but never reads
  EXPECT_EQ(transport_->Send(TcpTo(peer.port()), std::string(5000, 'x')).code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(transport_->Send(TcpTo(peer.port()), std::string(3000, 'x')).ok());
  const absl::Status second = transport_->Send(TcpTo(peer.port()), std::string(3000, 'y'));
  // Either still queued in the table (full) or already written by the receiver.
  EXPECT_TRUE(second.ok() || absl::IsResourceExhausted(second)) << second;
}

TEST_F(TcpTransportTest, UdpOnlyDestinationsNeedAUdpSocket) {
  SipDestination udp;
  udp.proto = SipProto::kUdp;
  udp.address = *SipAddress::FromIpPort("127.0.0.1", 9);
  EXPECT_EQ(transport_->Send(udp, "x").code(), absl::StatusCode::kFailedPrecondition);
  SipDestination v6 = TcpTo(5060);
  v6.address = *SipAddress::FromIpPort("::1", 5060);
  EXPECT_EQ(transport_->Send(v6, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(transport_->Send(TcpTo(5060), "").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sipd
