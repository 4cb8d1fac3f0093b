// The event interface in a real sipd (usrloc, registrar, event_datagram, mi_fifo): the
// test's own UDP and UNIX datagram sockets subscribe over the FIFO, REGISTERs (sipp and
// hand-made) raise events, and the datagrams are counted and compared byte for byte.
// "Nothing more arrives" is proven with a canary: a later event that must arrive after
// everything before it was sent (the delivery process sends in raise order).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/support/dns_responder.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/temp_dir.h"

namespace sipd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using namespace std::chrono_literals;

constexpr int kUsers = 20;  // rows of tests/sip/users.csv

// A datagram socket of the test: UDP on 127.0.0.1 (port chosen by the kernel) or UNIX.
class Subscriber {
 public:
  static Subscriber Udp() {
    Subscriber s;
    s.fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(s.fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    socklen_t length = sizeof(address);
    getsockname(s.fd_, reinterpret_cast<sockaddr*>(&address), &length);
    s.socket_ = absl::StrCat("udp:127.0.0.1:", ntohs(address.sin_port));
    s.Enlarge();
    return s;
  }
  static Subscriber Unix(const std::string& path) {
    Subscriber s;
    s.fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
    EXPECT_EQ(bind(s.fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    s.socket_ = "unix:" + path;
    s.Enlarge();
    return s;
  }
  Subscriber(Subscriber&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), socket_(std::move(other.socket_)) {}
  ~Subscriber() {
    if (fd_ >= 0) close(fd_);
  }

  // "udp:127.0.0.1:PORT" or "unix:PATH", as event_subscribe takes it.
  const std::string& socket() const { return socket_; }

  // The next datagram within `timeout`, or nullopt.
  std::optional<std::string> Receive(std::chrono::milliseconds timeout = 10s) {
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    std::string buffer(65536, '\0');
    const ssize_t n = recv(fd_, buffer.data(), buffer.size(), 0);
    if (n < 0) return std::nullopt;
    buffer.resize(static_cast<size_t>(n));
    return buffer;
  }
  // Datagrams until one contains `marker` (included); nullopt if it does not come.
  std::optional<std::vector<std::string>> ReceiveUntil(const std::string& marker) {
    std::vector<std::string> out;
    while (auto d = Receive()) {
      out.push_back(*d);
      if (absl::StrContains(*d, marker)) return out;
    }
    return std::nullopt;
  }
  // Whether a datagram is waiting right now.
  bool Pending() const {
    pollfd pfd{fd_, POLLIN, 0};
    return poll(&pfd, 1, 0) == 1;
  }

 private:
  Subscriber() = default;
  void Enlarge() {
    const int size = 4 << 20;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
  int fd_ = -1;
  std::string socket_;
};

std::string Register(const std::string& user, int sip_port, const std::string& call_id,
                     int expires = 3600, const std::string& user_agent = "events-test") {
  return absl::StrCat("REGISTER sip:127.0.0.1:", sip_port,
                      " SIP/2.0\r\n"
                      "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-",
                      call_id,
                      "\r\n"
                      "Max-Forwards: 70\r\n"
                      "From: <sip:",
                      user, "@example.com>;tag=t-", call_id,
                      "\r\n"
                      "To: <sip:",
                      user,
                      "@example.com>\r\n"
                      "Call-ID: ",
                      call_id,
                      "\r\n"
                      "CSeq: 1 REGISTER\r\n"
                      "Contact: <sip:",
                      user,
                      "@127.0.0.1:5999>\r\n"
                      "Expires: ",
                      expires, "\r\nUser-Agent: ", user_agent, "\r\nContent-Length: 0\r\n\r\n");
}

class EventsSipdTest : public ::testing::Test {
 protected:
  // Config lines of a derived fixture.
  virtual std::string ExtraConfig() { return ""; }

  void SetUp() override {
    ASSERT_TRUE(temp_.ok());
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = false,
        .extra_config = "loadmodule \"mi_fifo\"\n"
                        "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
                        "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
                        "loadmodule \"event_datagram\"\n"
                        "loadmodule \"usrloc\"\n"
                        "loadmodule \"registrar\"\n" +
                        ExtraConfig()});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    // The MI FIFO process opens its FIFO after the pid file appears: wait for a reader.
    ASSERT_TRUE(WaitUntil([&] { return absl::StartsWith(Fifo("uptime"), "200 OK\n"); }, 10s))
        << Fifo("uptime");
  }
  void TearDown() override {
    if (HasFailure() && sipd_ != nullptr) {
      std::fprintf(stderr, "sipd log:\n%s\n", sipd_->log().c_str());
    }
    sipd_.reset();
  }

  // The raw FIFO reply.
  std::string Fifo(const std::string& command, const std::vector<std::string>& args = {}) {
    auto client =
        legacy::FifoClient::Create(sipd_->tmp_dir() + "/sipd_fifo", sipd_->tmp_dir() + "/");
    if (!client.ok()) return client.status().ToString();
    auto reply = (*client)->Execute(command, args, 20s);
    return reply.ok() ? *reply : reply.status().ToString();
  }
  void Subscribe(const std::string& event, const std::string& socket,
                 std::optional<int> expire = std::nullopt) {
    std::vector<std::string> args = {event, socket};
    if (expire.has_value()) args.push_back(absl::StrCat(*expire));
    ASSERT_EQ(Fifo("event_subscribe", args), "200 OK\n\n") << socket;
  }
  void RegisterUser(const std::string& user, int expires = 3600) {
    auto reply =
        SipExchange(sipd_->sip_port(),
                    Register(user, sipd_->sip_port(), absl::StrCat(user, "-", ++calls_), expires));
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_EQ(SipStatusCode(*reply), 200) << *reply;
  }
  std::map<std::string, uint64_t> Statistics(const std::string& selector) {
    std::map<std::string, uint64_t> out;
    const std::vector<std::string> lines = absl::StrSplit(Fifo("get_statistics", {selector}), '\n');
    for (const std::string& line : lines) {
      std::vector<std::string> parts = absl::StrSplit(line, ":: ");
      uint64_t value = 0;
      if (parts.size() == 2 && absl::SimpleAtoi(parts[1], &value)) out[parts[0]] = value;
    }
    return out;
  }
  // The pid of the process `ps` lists with `type`; 0 if none.
  int PidOf(const std::string& type) {
    const std::vector<std::string> lines = absl::StrSplit(Fifo("ps"), '\n');
    for (const std::string& line : lines) {
      if (!absl::EndsWith(line, absl::StrCat("Type=", type))) continue;
      const size_t at = line.find("PID=");
      int pid = 0;
      if (at != std::string::npos &&
          absl::SimpleAtoi(line.substr(at + 4, line.find(' ', at) - at - 4), &pid)) {
        return pid;
      }
    }
    return 0;
  }

  TempDir temp_{"sipd-events"};
  const std::string work_ = temp_.path();
  std::unique_ptr<SipdInstance> sipd_;
  int calls_ = 0;
};

TEST_F(EventsSipdTest, EventsListShowsCoreAndUsrlocEvents) {
  EXPECT_EQ(Fifo("events_list"),
            "200 OK\n"
            "Event:: E_CORE_THRESHOLD id=0\n"
            "Event:: E_CORE_SHM_THRESHOLD id=1\n"
            "Event:: E_CORE_PKG_THRESHOLD id=2\n"
            "Event:: E_SIPD_PROCESS_RESTARTED id=3\n"
            "Event:: E_UL_AOR_INSERT id=4\n"
            "Event:: E_UL_AOR_DELETE id=5\n"
            "Event:: E_UL_CONTACT_INSERT id=6\n"
            "Event:: E_UL_CONTACT_UPDATE id=7\n"
            "Event:: E_UL_CONTACT_DELETE id=8\n"
            "Event:: E_MI_AUDIT id=9\n"
            "\n");
  EXPECT_EQ(Fifo("event_subscribe", {"E_NOPE", "udp:127.0.0.1:9"}), "400 Bad parameter\n\n");
  EXPECT_EQ(Fifo("event_subscribe", {"E_UL_AOR_INSERT", "tcp:127.0.0.1:9"}),
            "400 Bad parameter\n\n");
  EXPECT_EQ(Fifo("event_subscribe", {"E_UL_AOR_INSERT"}), "400 Too few or too many arguments\n\n");
  EXPECT_EQ(Fifo("subscribers_list", {"E_NOPE"}), "404 Event not published\n\n");
  std::map<std::string, uint64_t> stats = Statistics("evi:");
  for (const char* name : {"evi:queued_events", "evi:dropped_events", "evi:delivered_events",
                           "evi:failed_deliveries", "evi:subscriptions"}) {
    EXPECT_TRUE(stats.contains(name)) << name;
  }
}

TEST_F(EventsSipdTest, SippRunGivesOneAorInsertPerNewAorToUdpAndUnixSubscribers) {
  Subscriber udp = Subscriber::Udp();
  Subscriber unix = Subscriber::Unix(work_ + "/aor.sock");
  Subscribe("E_UL_AOR_INSERT", udp.socket());
  Subscribe("E_UL_AOR_INSERT", unix.socket());
  // Read while sipp runs: a UNIX datagram socket queues few datagrams (max_dgram_qlen),
  // and a send to a full one fails (a lost event, as with 1.11).
  auto collect = [](Subscriber* s) { return s->ReceiveUntil("aor::canary\n"); };
  auto from_udp = std::async(std::launch::async, collect, &udp);
  auto from_unix = std::async(std::launch::async, collect, &unix);

  SippResult run =
      RunSipp(sipd_->sip_port(), "register.xml",
              {"-inf", ScenarioPath("users.csv"), "-m", absl::StrCat(kUsers), "-r", "50"}, work_);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // The same AORs again: refreshes, no new AOR.
  run = RunSipp(sipd_->sip_port(), "register.xml",
                {"-inf", ScenarioPath("users.csv"), "-m", absl::StrCat(kUsers), "-r", "50"}, work_);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  RegisterUser("canary");

  for (auto* pending : {&from_udp, &from_unix}) {
    Subscriber* s = pending == &from_udp ? &udp : &unix;
    std::optional<std::vector<std::string>> got = pending->get();
    ASSERT_TRUE(got.has_value()) << s->socket();
    std::map<std::string, int> per_aor;
    for (const std::string& datagram : *got) {
      ASSERT_TRUE(absl::StartsWith(datagram, "E_UL_AOR_INSERT\naor::")) << datagram;
      ASSERT_TRUE(absl::EndsWith(datagram, "\n\n")) << datagram;
      ++per_aor[datagram.substr(21, datagram.size() - 23)];
    }
    EXPECT_EQ(got->size(), static_cast<size_t>(kUsers + 1)) << s->socket();
    EXPECT_EQ(per_aor.size(), static_cast<size_t>(kUsers + 1)) << s->socket();
    for (const auto& [aor, count] : per_aor) EXPECT_EQ(count, 1) << aor;
    for (int i = 0; i < kUsers; ++i) {
      EXPECT_EQ(per_aor[absl::StrFormat("user%02d", i)], 1) << i;
    }
  }
  const std::map<std::string, uint64_t> stats = Statistics("evi:");
  EXPECT_EQ(stats.at("evi:delivered_events"), 2u * (kUsers + 1));
  EXPECT_EQ(stats.at("evi:dropped_events"), 0u);
  EXPECT_EQ(stats.at("evi:failed_deliveries"), 0u);
  EXPECT_EQ(stats.at("evi:subscriptions"), 2u);
}

TEST_F(EventsSipdTest, DatagramBytesAsOpenSips111) {
  Subscriber aor = Subscriber::Udp();
  Subscriber contact = Subscriber::Unix(work_ + "/contact.sock");
  Subscribe("E_UL_AOR_INSERT", aor.socket());
  Subscribe("E_UL_CONTACT_INSERT", contact.socket());
  const int64_t before = std::time(nullptr);
  auto reply = SipExchange(sipd_->sip_port(),
                           Register("alice", sipd_->sip_port(), "alice-1", 600, "Phone \"X\" 1.0"));
  const int64_t after = std::time(nullptr);
  ASSERT_TRUE(reply.ok());
  ASSERT_EQ(SipStatusCode(*reply), 200) << *reply;
  EXPECT_EQ(aor.Receive(), "E_UL_AOR_INSERT\naor::alice\n\n");
  std::optional<std::string> got = contact.Receive();
  ASSERT_TRUE(got.has_value());
  // expires is the absolute time (registration time + 600).
  int64_t expires = 0;
  for (int64_t t = before; t <= after; ++t) {
    if (absl::StrContains(*got, absl::StrCat("\nexpires::", t + 600, "\n"))) expires = t + 600;
  }
  ASSERT_NE(expires, 0) << *got;
  // received: where the REGISTER came from (the test's socket), as the contact differs.
  const size_t received = got->find("\nreceived::sip:127.0.0.1:");
  ASSERT_NE(received, std::string::npos) << *got;
  const size_t end = got->find('\n', received + 1);
  got->replace(received, end - received, "\nreceived::SOURCE");
  EXPECT_EQ(*got, absl::StrCat("E_UL_CONTACT_INSERT\n"
                               "domain::location\n"
                               "aor::alice\n"
                               "uri::sip:alice@127.0.0.1:5999\n"
                               "received::SOURCE\n"
                               "path::\n"
                               "qval::18446744073709551615\n"
                               "user_agent::Phone \"X\" 1.0\n"
                               "socket::udp:127.0.0.1:",
                               sipd_->sip_port(),
                               "\n"
                               "bflags::0\n"
                               "expires::",
                               expires,
                               "\n"
                               "callid::alice-1\n"
                               "cseq::1\n"
                               "attr::\n"
                               "\n"));
}

// Every audit record is also event E_MI_AUDIT (issue 9): the FIFO caller here is the
// test's uid, which the harness maps to admin.
TEST_F(EventsSipdTest, MutatingCommandsRaiseTheAuditEvent) {
  Subscriber audit = Subscriber::Udp();
  Subscribe("E_MI_AUDIT", audit.socket());
  ASSERT_EQ(Fifo("debug", {"3"}), "200 OK\nDEBUG:: 3\n\n");
  std::optional<std::vector<std::string>> got = audit.ReceiveUntil("command::debug\n");
  ASSERT_TRUE(got.has_value());
  EXPECT_THAT(got->back(), ::testing::MatchesRegex("E_MI_AUDIT\n"
                                                   "principal::uid:[0-9]+\n"
                                                   "role::admin\n"
                                                   "transport::fifo\n"
                                                   "peer::[^\n]*\n"
                                                   "command::debug\n"
                                                   "args::\"3\"\n"
                                                   "code::200\n\n"))
      << got->back();
}

TEST_F(EventsSipdTest, UnreachableMissingAndExpiredSubscribersBehaveAs111) {
  Subscriber good = Subscriber::Udp();
  Subscriber expiring = Subscriber::Unix(work_ + "/expiring.sock");
  std::string unreachable;
  {
    // A UDP port nobody listens on: a socket of ours, closed again.
    Subscriber gone = Subscriber::Udp();
    unreachable = gone.socket();
  }
  const std::string missing = "unix:" + work_ + "/no-such-dir/listener.sock";
  Subscribe("E_UL_AOR_INSERT", unreachable);
  Subscribe("E_UL_AOR_INSERT", missing);  // 1.11 does not look at the path either
  Subscribe("E_UL_AOR_INSERT", expiring.socket(), 1);
  EXPECT_THAT(Fifo("subscribers_list", {"E_UL_AOR_INSERT", expiring.socket()}),
              HasSubstr(absl::StrCat("socket=", expiring.socket(), " expire=1\n")));
  Subscribe("E_UL_AOR_INSERT", good.socket());

  // 1.11: expired once subscription time + expire < now; then it is no longer listed.
  ASSERT_TRUE(WaitUntil(
      [&] {
        return !absl::StrContains(Fifo("subscribers_list", {"E_UL_AOR_INSERT"}), expiring.socket());
      },
      10s));
  EXPECT_EQ(Fifo("subscribers_list", {"E_UL_AOR_INSERT", expiring.socket()}),
            "404 Subscriber does not exist\n\n");

  RegisterUser("first");
  RegisterUser("second");
  ASSERT_TRUE(good.ReceiveUntil("aor::second\n").has_value());
  // Everything for "first" and "second" was sent before the good subscriber had "second".
  EXPECT_FALSE(expiring.Pending());
  // The unreachable and missing subscribers stay subscribed (until they expire).
  const std::string list = Fifo("subscribers_list", {"E_UL_AOR_INSERT"});
  EXPECT_THAT(list, HasSubstr("socket=" + unreachable + " expire=3600\n"));
  EXPECT_THAT(list, HasSubstr("socket=" + missing + " expire=3600\n"));
  EXPECT_THAT(list, HasSubstr("socket=" + good.socket() + " expire=3600\n"));
  const std::map<std::string, uint64_t> stats = Statistics("evi:");
  // The missing UNIX path fails every time; the lost UDP datagram may or may not be
  // reported (ICMP), as for 1.11 which ignored both.
  EXPECT_GE(stats.at("evi:failed_deliveries"), 2u);
  EXPECT_GE(stats.at("evi:delivered_events"), 2u);
  EXPECT_EQ(stats.at("evi:subscriptions"), 3u);
}

TEST_F(EventsSipdTest, ResubscribingRefreshesAndExpireZeroUnsubscribes) {
  Subscriber udp = Subscriber::Udp();
  Subscriber canary = Subscriber::Unix(work_ + "/canary.sock");
  Subscribe("E_UL_AOR_INSERT", canary.socket());
  Subscribe("E_UL_AOR_INSERT", udp.socket(), 100);
  Subscribe("E_UL_AOR_INSERT", udp.socket(), 200);
  EXPECT_EQ(Fifo("subscribers_list", {"E_UL_AOR_INSERT", udp.socket()}),
            absl::StrCat("200 OK\nEvent:: E_UL_AOR_INSERT id=4\n\tSubscriber::  socket=",
                         udp.socket(), " expire=200\n\n"));
  RegisterUser("before");
  EXPECT_EQ(udp.Receive(), "E_UL_AOR_INSERT\naor::before\n\n");
  Subscribe("E_UL_AOR_INSERT", udp.socket(), 0);
  EXPECT_EQ(Fifo("subscribers_list", {"E_UL_AOR_INSERT", udp.socket()}),
            "404 Subscriber does not exist\n\n");
  RegisterUser("after");
  ASSERT_TRUE(canary.ReceiveUntil("aor::after\n").has_value());
  EXPECT_FALSE(udp.Pending());
}

TEST_F(EventsSipdTest, DeliveryProcessRestartKeepsSubscriptionsAndIsAnEvent) {
  Subscriber restarts = Subscriber::Unix(work_ + "/restarts.sock");
  Subscriber aors = Subscriber::Udp();
  Subscribe("E_SIPD_PROCESS_RESTARTED", restarts.socket());
  Subscribe("E_UL_AOR_INSERT", aors.socket());
  const int old_pid = PidOf("Event datagram");
  ASSERT_GT(old_pid, 0) << Fifo("ps");
  // Events queued while the delivery process is gone are delivered by its successor.
  ASSERT_EQ(kill(old_pid, SIGKILL), 0);
  ASSERT_TRUE(WaitUntil([&] { return !ProcessAlive(old_pid); }, 10s));
  RegisterUser("while-down");

  std::optional<std::string> restarted = restarts.Receive(20s);
  ASSERT_TRUE(restarted.has_value());
  const int new_pid = PidOf("Event datagram");
  ASSERT_GT(new_pid, 0);
  EXPECT_NE(new_pid, old_pid);
  std::string id;
  const std::vector<std::string> ps = absl::StrSplit(Fifo("ps"), '\n');
  for (const std::string& line : ps) {
    if (absl::StrContains(line, absl::StrCat("PID=", new_pid, " "))) {
      const size_t at = line.find("ID=") + 3;
      id = line.substr(at, line.find(' ', at) - at);
    }
  }
  EXPECT_EQ(*restarted, absl::StrCat("E_SIPD_PROCESS_RESTARTED\nid::", id,
                                     "\ntype::Event datagram\npid::", new_pid, "\n\n"));
  EXPECT_EQ(aors.Receive(), "E_UL_AOR_INSERT\naor::while-down\n\n");
  RegisterUser("after-restart");
  EXPECT_EQ(aors.Receive(), "E_UL_AOR_INSERT\naor::after-restart\n\n");
  const std::string list = Fifo("subscribers_list");
  EXPECT_THAT(list, HasSubstr(restarts.socket()));
  EXPECT_THAT(list, HasSubstr(aors.socket()));
}

// Subscribers named by host: looked up through event_datagram's own name server setting
// (c-ares, bounded), never through glibc's resolver.
class EventsDnsTest : public EventsSipdTest {
 protected:
  std::string ExtraConfig() override {
    return absl::StrCat("modparam(\"event_datagram\", \"dns_servers\", \"", dns_.server(),
                        "\")\n"
                        "modparam(\"event_datagram\", \"dns_timeout\", 200)\n");
  }
  DnsResponder dns_;
};

TEST_F(EventsDnsTest, HostNamesResolveThroughTheConfiguredServerAndASilentOneIsRefused) {
  Subscriber udp = Subscriber::Udp();  // udp:127.0.0.1:PORT
  const std::string port = udp.socket().substr(udp.socket().rfind(':') + 1);
  dns_.Add("listener.test", "127.0.0.1");
  dns_.Silent("gone.test");

  Subscribe("E_UL_AOR_INSERT", "udp:listener.test:" + port);
  EXPECT_GE(dns_.Queries("listener.test"), 1);  // event_subscribe looked it up
  RegisterUser("alice");
  EXPECT_EQ(udp.Receive(), "E_UL_AOR_INSERT\naor::alice\n\n");

  // A name the server never answers: refused once the tries are spent, and the failure
  // is kept, so asking again costs no query.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Fifo("event_subscribe", {"E_UL_AOR_INSERT", "udp:gone.test:9"}),
              "400 Bad parameter\n\n");
  }
  EXPECT_GE(dns_.Queries("gone.test"), 1);
  EXPECT_LE(dns_.Queries("gone.test"), 4);  // A and AAAA, 2 tries, for the first call only
  EXPECT_EQ(Statistics("evi:").at("evi:subscriptions"), 1u);
}

}  // namespace
}  // namespace sipd::testing
