// Unit tests of the core's stateless SIP stack: parsing, counting and stateless replies,
// with a real UDP listen socket (SipTransportImpl) and a real client socket receiving the
// replies.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <osipparser2/osip_parser.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/core/sip.h"
#include "sipd/core/sip_receiver.h"
#include "sipd/core/sip_transport_impl.h"
#include "tests/support/udp_peer.h"

namespace sipd {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class StatelessSipStackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(parser_init(), 0);
    ASSERT_TRUE(RegisterCoreStats(
                    stats_, [] { return 0; }, counters_)
                    .ok());
    ASSERT_TRUE(RegisterSlStats(stats_, counters_).ok());
    auto transport = SipTransportImpl::Open({*ParseListenAddress("udp:127.0.0.1:0")});
    ASSERT_TRUE(transport.ok()) << transport.status();
    transport_ = *std::move(transport);
    listener_ = transport_->udp(0);
    ASSERT_NE(listener_, nullptr);

    client_ = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(client_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t length = sizeof(client_address_);
    getsockname(client_, reinterpret_cast<sockaddr*>(&client_address_), &length);
    client_length_ = length;
  }
  void TearDown() override { close(client_); }

  StatelessSipStack& Stack() {
    if (!stack_) stack_.emplace(*transport_, counters_, handlers_, "abcd1234", "sipd/test");
    return *stack_;
  }

  // Hands `datagram` to the worker as if the client had sent it; returns the reply the
  // client got (nullopt if none within 300 ms).
  std::optional<std::string> Handle(std::string_view datagram) {
    SipInbound inbound;
    inbound.bytes = datagram;
    inbound.source.proto = SipProto::kUdp;
    inbound.source.peer =
        SipAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&client_address_), client_length_);
    inbound.source.socket = 0;
    Stack().Handle(inbound);
    pollfd pfd{client_, POLLIN, 0};
    if (poll(&pfd, 1, 300) != 1) return std::nullopt;
    std::string reply(65536, '\0');
    const ssize_t n = recv(client_, reply.data(), reply.size(), 0);
    if (n < 0) return std::nullopt;
    reply.resize(static_cast<size_t>(n));
    return reply;
  }

  uint64_t Stat(std::string_view name) { return *stats_.Value(name); }

  static std::string Request(const std::string& method, const std::string& extra = "",
                             const std::string& to_params = "") {
    return absl::StrCat(method, " sip:alice@127.0.0.1 SIP/2.0\r\n",
                        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n",
                        "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKdef\r\n",
                        "From: \"Bob\" <sip:bob@example.com>;tag=ft1\r\n",
                        "To: <sip:alice@example.com>", to_params, "\r\n",
                        "Call-ID: cid-1@example.com\r\n", "CSeq: 7 ", method, "\r\n", extra,
                        "Content-Length: 0\r\n\r\n");
  }

  std::vector<std::atomic<uint64_t>> cells_ = std::vector<std::atomic<uint64_t>>(64);
  mi::StatsRegistry stats_{std::span<std::atomic<uint64_t>>(cells_)};
  SipCounters counters_;
  SipHandlerMap handlers_;
  std::unique_ptr<SipTransportImpl> transport_;
  const UdpListener* listener_ = nullptr;
  std::optional<StatelessSipStack> stack_;
  int client_ = -1;
  sockaddr_storage client_address_{};
  socklen_t client_length_ = 0;
};

TEST_F(StatelessSipStackTest, OptionsGets200AndCountsIt) {
  auto reply = Handle(Request("OPTIONS"));
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(absl::StartsWith(*reply, "SIP/2.0 200 OK\r\n")) << *reply;
  EXPECT_THAT(*reply, HasSubstr("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n"
                                "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKdef\r\n"));
  EXPECT_THAT(*reply, HasSubstr("From: \"Bob\" <sip:bob@example.com>;tag=ft1\r\n"));
  EXPECT_THAT(*reply, ::testing::ContainsRegex(
                          "To: <sip:alice@example.com>;tag=abcd1234\\.[0-9a-f]{16}\r\n"));
  EXPECT_THAT(*reply, HasSubstr("Call-ID: cid-1@example.com\r\nCSeq: 7 OPTIONS\r\n"));
  EXPECT_THAT(*reply, HasSubstr("Allow: OPTIONS, ACK\r\n"));
  EXPECT_THAT(*reply, HasSubstr("Server: sipd/test\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_EQ(Stat("rcv_requests"), 1u);
  EXPECT_EQ(Stat("2xx_replies"), 1u);
  EXPECT_EQ(Stat("sent_replies"), 1u);
  EXPECT_EQ(Stat("sent_err_replies"), 0u);
}

TEST_F(StatelessSipStackTest, ToTagIsStableForRetransmissionsAndKeptWhenPresent) {
  auto first = Handle(Request("OPTIONS"));
  auto second = Handle(Request("OPTIONS"));
  ASSERT_TRUE(first && second);
  EXPECT_EQ(*first, *second);
  auto tagged = Handle(Request("OPTIONS", "", ";tag=existing"));
  ASSERT_TRUE(tagged);
  EXPECT_THAT(*tagged, HasSubstr("To: <sip:alice@example.com>;tag=existing\r\n"));
  EXPECT_THAT(*tagged, Not(HasSubstr("abcd1234")));
}

TEST_F(StatelessSipStackTest, UnknownMethodGets501) {
  auto reply = Handle(Request("INVITE"));
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(absl::StartsWith(*reply, "SIP/2.0 501 Not Implemented\r\n")) << *reply;
  EXPECT_EQ(Stat("unsupported_methods"), 1u);
  EXPECT_EQ(Stat("5xx_replies"), 1u);
  EXPECT_EQ(Stat("sent_err_replies"), 1u);
}

TEST_F(StatelessSipStackTest, AckIsAbsorbed) {
  EXPECT_FALSE(Handle(Request("ACK")).has_value());
  EXPECT_EQ(Stat("received_ACKs"), 1u);
  EXPECT_EQ(Stat("rcv_requests"), 1u);
  EXPECT_EQ(Stat("sent_replies"), 0u);
}

TEST_F(StatelessSipStackTest, RepliesAreCountedAndDropped) {
  EXPECT_FALSE(Handle("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
                      "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\n"
                      "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
                   .has_value());
  EXPECT_EQ(Stat("rcv_replies"), 1u);
  EXPECT_EQ(Stat("drop_replies"), 1u);
}

TEST_F(StatelessSipStackTest, GarbageIsCountedAndDropped) {
  EXPECT_FALSE(Handle("hello world").has_value());
  EXPECT_FALSE(Handle("SIP/2.0 200 OK\r\nnot a header").has_value());
  EXPECT_FALSE(Handle(std::string(65507, '\0')).has_value());
  EXPECT_EQ(Stat("bad_msg_hdr"), 3u);
  EXPECT_EQ(Stat("err_requests"), 2u);
  EXPECT_EQ(Stat("drop_requests"), 2u);
  EXPECT_EQ(Stat("err_replies"), 1u);
  EXPECT_EQ(Stat("drop_replies"), 1u);
  // Keep-alives are not errors.
  EXPECT_FALSE(Handle("\r\n\r\n").has_value());
  EXPECT_FALSE(Handle("").has_value());
  EXPECT_EQ(Stat("bad_msg_hdr"), 3u);
}

TEST_F(StatelessSipStackTest, BadRequestUriGets400) {
  std::string request = Request("OPTIONS");
  request.replace(request.find("sip:alice@127.0.0.1"), 19, "::not-a-uri");
  auto reply = Handle(request);
  ASSERT_TRUE(reply.has_value());
  EXPECT_TRUE(absl::StartsWith(*reply, "SIP/2.0 400 Bad Request-URI\r\n")) << *reply;
  EXPECT_THAT(*reply, HasSubstr("Call-ID: cid-1@example.com\r\n"));
  EXPECT_EQ(Stat("bad_URIs_rcvd"), 1u);
  EXPECT_EQ(Stat("err_requests"), 1u);
}

TEST_F(StatelessSipStackTest, MissingMandatoryHeaderGets400) {
  for (const char* header : {"From", "To", "Call-ID", "CSeq"}) {
    std::string request = Request("OPTIONS");
    const size_t start = request.find(absl::StrCat("\r\n", header, ":")) + 2;
    request.erase(start, request.find("\r\n", start) + 2 - start);
    auto reply = Handle(request);
    ASSERT_TRUE(reply.has_value()) << header;
    EXPECT_TRUE(absl::StartsWith(*reply, "SIP/2.0 400 Bad Request\r\n")) << *reply;
    EXPECT_THAT(*reply, HasSubstr(absl::StrCat("Missing ", header, " header")));
  }
  EXPECT_EQ(Stat("err_requests"), 4u);
  EXPECT_EQ(Stat("4xx_replies"), 4u);

  // Without any Via there is nowhere to reply to.
  std::string no_via = Request("OPTIONS");
  for (int i = 0; i < 2; ++i) {
    const size_t start = no_via.find("\r\nVia:") + 2;
    no_via.erase(start, no_via.find("\r\n", start) + 2 - start);
  }
  EXPECT_FALSE(Handle(no_via).has_value());
  EXPECT_EQ(Stat("drop_requests"), 1u);
}

TEST_F(StatelessSipStackTest, HandlerGetsTheRequestAndRepliesStatelessly) {
  std::string seen_method, seen_socket, seen_ip;
  uint16_t seen_port = 0;
  handlers_["REGISTER"] = [&](SipRequest& request) {
    seen_method = request.method();
    seen_socket = request.socket();
    seen_ip = request.source_ip();
    seen_port = request.source_port();
    EXPECT_NE(request.message(), nullptr);
    EXPECT_THAT(std::string(request.raw()), HasSubstr("REGISTER sip:"));
    EXPECT_FALSE(request.Reply(42, "Bad").ok());
    EXPECT_FALSE(request.Reply(200, "OK\r\nInjected: 1").ok());
    EXPECT_TRUE(
        request.Reply(200, "OK", {"Contact: <sip:alice@192.0.2.1>;expires=60"}, "hello").ok());
  };
  auto reply = Handle(Request("REGISTER"));
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(seen_method, "REGISTER");
  EXPECT_EQ(seen_socket, listener_->name());
  EXPECT_EQ(seen_ip, "127.0.0.1");
  EXPECT_NE(seen_port, 0);
  EXPECT_THAT(*reply, HasSubstr("CSeq: 7 REGISTER\r\nContact: <sip:alice@192.0.2.1>;expires=60\r\n"
                                "Server: sipd/test\r\nContent-Length: 5\r\n\r\nhello"));
  EXPECT_EQ(Stat("2xx_replies"), 1u);
}

TEST_F(StatelessSipStackTest, HandlerMethodsAreAllowedAndThrowingHandlersAreContained) {
  handlers_["SUBSCRIBE"] = [](SipRequest&) { throw std::runtime_error("boom"); };
  auto options = Handle(Request("OPTIONS"));
  ASSERT_TRUE(options.has_value());
  EXPECT_THAT(*options, HasSubstr("Allow: OPTIONS, ACK, SUBSCRIBE\r\n"));
  EXPECT_FALSE(Handle(Request("SUBSCRIBE")).has_value());
  EXPECT_TRUE(Handle(Request("OPTIONS")).has_value());
}

TEST_F(StatelessSipStackTest, HundredTryingHasNoToTag) {
  handlers_["INVITE"] = [](SipRequest& request) { (void)request.Reply(100, "Trying"); };
  auto reply = Handle(Request("INVITE"));
  ASSERT_TRUE(reply.has_value());
  EXPECT_THAT(*reply, HasSubstr("To: <sip:alice@example.com>\r\n"));
  EXPECT_EQ(Stat("1xx_replies"), 1u);
}

TEST_F(StatelessSipStackTest, ListenerReportsBoundPortAndQueue) {
  EXPECT_NE(listener_->port(), 0);
  EXPECT_EQ(listener_->name(), absl::StrCat("udp:127.0.0.1:", listener_->port()));
  EXPECT_EQ(listener_->QueuedBytes(), 0u);
  // A second bind to the same port fails loudly.
  auto again = UdpListener::Open(*ParseListenAddress(listener_->name()));
  ASSERT_FALSE(again.ok());
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("Address already in use"));
}

TEST(SipAddressTest, IpIsTheDottedOrColonForm) {
  for (const char* ip :
       {"192.168.10.255", "0.0.0.0", "10.0.0.1", "255.255.255.255", "2001:db8::1"}) {
    absl::StatusOr<SipAddress> a = SipAddress::FromIpPort(ip, 5060);
    ASSERT_TRUE(a.ok()) << ip;
    EXPECT_EQ(a->ip(), ip);
    EXPECT_EQ(a->port(), 5060);
  }
  EXPECT_EQ(SipAddress().ip(), "");
}

// SendBatch over real sockets: a run of UDP messages leaves in order, a message that
// cannot go (a TCP destination without a TCP socket, an empty one) is skipped, and the
// ones after it still leave.
TEST(SipTransportImplTest, SendBatchSendsEveryUdpMessageInOrderAndSkipsTheOnesThatCannotGo) {
  auto transport = SipTransportImpl::Open({*ParseListenAddress("udp:127.0.0.1:0")});
  ASSERT_TRUE(transport.ok()) << transport.status();
  const sipd::testing::UdpPeer peer;
  SipDestination udp;
  udp.address = *SipAddress::FromIpPort("127.0.0.1", static_cast<uint16_t>(peer.port()));
  SipDestination tcp = udp;
  tcp.proto = SipProto::kTcp;
  std::vector<std::string> texts;
  for (int i = 0; i < 100; ++i) texts.push_back(absl::StrCat("message ", i));
  std::vector<SipOutbound> batch;
  for (int i = 0; i < 100; ++i) {
    if (i == 10) batch.push_back(SipOutbound{tcp, "no tcp socket"});
    if (i == 70) batch.push_back(SipOutbound{udp, ""});
    batch.push_back(SipOutbound{udp, texts[static_cast<size_t>(i)]});
  }
  EXPECT_EQ((*transport)->SendBatch(batch), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(peer.Receive(std::chrono::seconds(5)), texts[static_cast<size_t>(i)]) << i;
  }
  EXPECT_EQ(peer.Receive(std::chrono::milliseconds(0)), "");  // nothing more
}

}  // namespace
}  // namespace sipd
