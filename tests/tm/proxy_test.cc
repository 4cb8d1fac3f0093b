// The proxy's routing policy (sipd/modules/tm/proxy.h) on parsed requests.
#include "sipd/modules/tm/proxy.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sipd::tm {
namespace {

using Kind = RouteDecision::Kind;

std::string Request(std::string_view method, std::string_view uri, std::string_view extra = "",
                    std::string_view to_tag = "") {
  return absl::StrCat(std::string(method), " ", std::string(uri),
                      " SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1\r\n"
                      "From: <sip:alice@a.example>;tag=f1\r\nTo: <sip:bob@b.example>",
                      to_tag.empty() ? "" : absl::StrCat(";tag=", std::string(to_tag)),
                      "\r\nCall-ID: c1\r\nCSeq: 1 ", std::string(method), "\r\n",
                      std::string(extra), "Content-Length: 0\r\n\r\n");
}

class ProxyTest : public ::testing::Test {
 protected:
  ProxyTest() { Make(false); }

  void Make(bool relay_to_any) {
    ProxyOptions options;
    options.domains = {"Example.COM"};
    options.relay_to_any = relay_to_any;
    options.sockets = {LocalSocket{Proto::kUdp, "192.0.2.1", 5060, 0},
                       LocalSocket{Proto::kTcp, "192.0.2.1", 5060, 1}};
    options.options_headers = {"Allow: OPTIONS"};
    options.allow_header = "Allow: OPTIONS";
    absl::flat_hash_map<std::string, LocalHandler> handlers;
    handlers["REGISTER"] = [](LocalRequest&) {};
    proxy_ = std::make_unique<Proxy>(
        options,
        [this](std::string_view user,
               std::string_view host) -> std::optional<std::vector<Binding>> {
          lookups_.push_back(absl::StrCat(std::string(user), "@", std::string(host)));
          auto it = bindings_.find(std::string(user));
          if (it == bindings_.end()) return std::nullopt;
          return it->second;
        },
        std::move(handlers));
  }

  RouteDecision Route(const std::string& text) {
    auto m = SipMessage::Parse(text);
    EXPECT_TRUE(m.ok()) << m.status();
    return proxy_->Route(*m, Inbound{});
  }

  std::unique_ptr<Proxy> proxy_;
  std::map<std::string, std::vector<Binding>> bindings_;
  std::vector<std::string> lookups_;
};

TEST_F(ProxyTest, ServedDomainsAndOwnAddresses) {
  EXPECT_TRUE(proxy_->Serves("example.com"));
  EXPECT_TRUE(proxy_->Serves("EXAMPLE.com"));
  EXPECT_TRUE(proxy_->Serves("192.0.2.1"));
  EXPECT_FALSE(proxy_->Serves("other.org"));
  EXPECT_TRUE(proxy_->IsMe("192.0.2.1", 5060));
  EXPECT_TRUE(proxy_->IsMe("192.0.2.1", 0));  // default port
  EXPECT_FALSE(proxy_->IsMe("192.0.2.1", 5070));
}

TEST_F(ProxyTest, LookupForksToEveryUsableContactHighestQFirst) {
  bindings_["bob"] = {
      Binding{.uri = "sip:bob@10.0.0.7:5060", .q = 500},
      Binding{.uri = "sip:bob@10.0.0.8;transport=tcp", .q = 1000},
      Binding{.uri = "sip:bob@192.168.1.9:5060", .received = "sip:203.0.113.4:40000", .q = 100},
      Binding{.uri = "sip:bob@10.0.0.9", .valid = false},   // expired
      Binding{.uri = "sip:bob@10.0.0.10", .methods = 128},  // REGISTER only
  };
  RouteDecision d = Route(Request("INVITE", "sip:bob@example.com"));
  ASSERT_EQ(d.kind, Kind::kRelay);
  EXPECT_TRUE(d.record_route);
  ASSERT_EQ(d.targets.size(), 3u);
  EXPECT_EQ(d.targets[0].request_uri, "sip:bob@10.0.0.8;transport=tcp");
  EXPECT_EQ(d.targets[0].destination.ToString(), "tcp:10.0.0.8:5060");
  EXPECT_EQ(d.targets[0].destination.socket, 1);
  EXPECT_EQ(d.targets[1].destination.ToString(), "udp:10.0.0.7:5060");
  // Behind a NAT: the Request-URI stays the contact, the datagram goes to `received`.
  EXPECT_EQ(d.targets[2].request_uri, "sip:bob@192.168.1.9:5060");
  EXPECT_EQ(d.targets[2].destination.ToString(), "udp:203.0.113.4:40000");
  EXPECT_EQ(lookups_, std::vector<std::string>{"bob@example.com"});
}

TEST_F(ProxyTest, UnknownAndUnusableUsers) {
  EXPECT_EQ(Route(Request("INVITE", "sip:nobody@example.com")).code, 404);
  bindings_["late"] = {Binding{.uri = "sip:late@10.0.0.7", .valid = false}};
  EXPECT_EQ(Route(Request("INVITE", "sip:late@example.com")).code, 480);
}

TEST_F(ProxyTest, PathBecomesTheRoute) {
  // The first Path entry decides the next hop.
  bindings_["dave"] = {Binding{.uri = "sip:dave@10.9.9.9", .path = "<sip:10.1.1.1:5090;lr>"}};
  RouteDecision d = Route(Request("MESSAGE", "sip:dave@example.com"));
  ASSERT_EQ(d.kind, Kind::kRelay);
  EXPECT_FALSE(d.record_route);  // MESSAGE creates no dialog
  ASSERT_EQ(d.targets.size(), 1u);
  EXPECT_EQ(d.targets[0].destination.ToString(), "udp:10.1.1.1:5090");
  EXPECT_EQ(d.targets[0].routes, std::vector<std::string>{"<sip:10.1.1.1:5090;lr>"});
}

TEST_F(ProxyTest, OtherDomainsAreRefusedUnlessRelayingToAny) {
  EXPECT_EQ(Route(Request("INVITE", "sip:x@198.51.100.1")).code, 403);
  EXPECT_EQ(Route(Request("INVITE", "sip:x@198.51.100.1", "Route: <sip:198.51.100.2;lr>\r\n")).code,
            403);
  Make(true);
  RouteDecision d = Route(Request("INVITE", "sip:x@198.51.100.1:5062"));
  ASSERT_EQ(d.kind, Kind::kRelay);
  EXPECT_EQ(d.targets[0].destination.ToString(), "udp:198.51.100.1:5062");
}

TEST_F(ProxyTest, LooseRoutingPopsSipdsOwnRoutes) {
  // In dialog, through sipd's (double) Record-Route, to the remote target.
  RouteDecision d = Route(
      Request("BYE", "sip:bob@10.0.0.7:5066",
              "Route: <sip:192.0.2.1:5060;lr>, <sip:192.0.2.1:5060;transport=tcp;lr>\r\n", "t9"));
  ASSERT_EQ(d.kind, Kind::kRelay);
  EXPECT_EQ(d.pop_routes, 2);
  EXPECT_FALSE(d.record_route);
  EXPECT_EQ(d.targets[0].request_uri, "sip:bob@10.0.0.7:5066");
  EXPECT_EQ(d.targets[0].destination.ToString(), "udp:10.0.0.7:5066");
  // More Route entries after sipd's: the next one is the next hop.
  d = Route(Request("BYE", "sip:bob@10.0.0.7",
                    "Route: <sip:192.0.2.1;lr>\r\nRoute: <sip:10.2.2.2:5070;lr>\r\n", "t9"));
  ASSERT_EQ(d.kind, Kind::kRelay);
  EXPECT_EQ(d.pop_routes, 1);
  EXPECT_EQ(d.targets[0].destination.ToString(), "udp:10.2.2.2:5070");
  // In dialog but not through sipd: 404 for sipd itself, 403 for others.
  EXPECT_EQ(Route(Request("BYE", "sip:192.0.2.1", "", "t9")).code, 404);
  EXPECT_EQ(Route(Request("BYE", "sip:bob@198.51.100.7", "", "t9")).code, 403);
}

TEST_F(ProxyTest, RequestsForSipdItself) {
  RouteDecision d = Route(Request("OPTIONS", "sip:192.0.2.1"));
  EXPECT_EQ(d.kind, Kind::kReply);
  EXPECT_EQ(d.code, 200);
  EXPECT_EQ(d.headers, std::vector<std::string>{"Allow: OPTIONS"});
  EXPECT_EQ(Route(Request("REGISTER", "sip:example.com")).kind, Kind::kLocal);
  EXPECT_EQ(Route(Request("REGISTER", "sip:192.0.2.1")).kind, Kind::kLocal);
  EXPECT_EQ(Route(Request("INFO", "sip:192.0.2.1")).code, 501);
  EXPECT_EQ(Route(Request("INVITE", "sip:bob@example.com;transport=sctp")).code, 404);
  EXPECT_EQ(Route(Request("INVITE", "sips:x@198.51.100.1")).code, 403);
}

}  // namespace
}  // namespace sipd::tm
