// tm's HostResolver (c-ares, bounded, cached) against a real DNS server on loopback
// (tests/support/dns_responder.h), with a fake clock for the cache; and ResolveUri's
// choice of address.
#include "sipd/modules/tm/resolver.h"

#include <arpa/inet.h>

#include "gtest/gtest.h"
#include "sipd/modules/tm/transaction_layer.h"
#include "tests/support/dns_responder.h"

namespace sipd::tm {
namespace {

using sipd::testing::DnsResponder;

std::string Ip(const SocketAddress& a) {
  char text[INET6_ADDRSTRLEN] = {};
  if (a.generic.sa_family == AF_INET) {
    inet_ntop(AF_INET, &a.v4.sin_addr, text, sizeof(text));
  } else {
    inet_ntop(AF_INET6, &a.v6.sin6_addr, text, sizeof(text));
  }
  return text;
}

class ResolverTest : public ::testing::Test {
 protected:
  std::unique_ptr<HostResolver> Make(ResolverOptions options = {}) {
    options.servers = dns_.server();
    return std::make_unique<HostResolver>(options, [this] { return now_; });
  }

  DnsResponder dns_;
  int64_t now_ = 1000000;
};

TEST_F(ResolverTest, AnAnswerIsKeptForItsTtl) {
  dns_.Add("phone.test", "127.0.0.7", "", 30);
  auto resolver = Make();
  auto first = resolver->Resolve("phone.test");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ(Ip((*first)[0]), "127.0.0.7");
  const int asked = dns_.Queries("phone.test");
  EXPECT_GE(asked, 1);  // A (and AAAA: this name has none)

  now_ += 29000;
  auto again = resolver->Resolve("PHONE.test");  // names are case-insensitive
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(Ip((*again)[0]), "127.0.0.7");
  EXPECT_EQ(dns_.Queries("phone.test"), asked);
  EXPECT_EQ(resolver->cache_hits(), 1u);

  now_ += 2000;  // past the TTL
  dns_.Add("phone.test", "127.0.0.8", "", 30);
  auto later = resolver->Resolve("phone.test");
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(Ip((*later)[0]), "127.0.0.8");
  EXPECT_GT(dns_.Queries("phone.test"), asked);
  EXPECT_EQ(resolver->lookups(), 2u);
}

TEST_F(ResolverTest, ANameThatDoesNotExistIsKeptForTheNegativeTtl) {
  ResolverOptions options;
  options.neg_ttl_ms = 10000;
  auto resolver = Make(options);
  auto first = resolver->Resolve("nobody.test");
  EXPECT_EQ(first.status().code(), absl::StatusCode::kNotFound) << first.status();
  const int asked = dns_.Queries("nobody.test");
  EXPECT_GE(asked, 1);

  now_ += 9000;
  EXPECT_EQ(resolver->Resolve("nobody.test").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(dns_.Queries("nobody.test"), asked);

  now_ += 2000;
  dns_.Add("nobody.test", "127.0.0.9");
  auto later = resolver->Resolve("nobody.test");
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(Ip((*later)[0]), "127.0.0.9");
}

TEST_F(ResolverTest, AServerThatNeverAnswersEndsTheLookupAfterItsTriesAndIsKept) {
  dns_.Silent("slow.test");
  ResolverOptions options;
  options.timeout_ms = 50;
  options.tries = 2;
  auto resolver = Make(options);
  auto first = resolver->Resolve("slow.test");
  EXPECT_EQ(first.status().code(), absl::StatusCode::kDeadlineExceeded) << first.status();
  const int asked = dns_.Queries("slow.test");
  EXPECT_GE(asked, 1);
  EXPECT_LE(asked, 4);  // A and AAAA, at most two tries each
  // Kept like any failure: the next request for it does not wait again.
  EXPECT_EQ(resolver->Resolve("slow.test").status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(dns_.Queries("slow.test"), asked);
}

TEST_F(ResolverTest, TheHostsFileComesFirst) {
  auto resolver = Make();
  auto local = resolver->Resolve("localhost");
  ASSERT_TRUE(local.ok()) << local.status();
  bool loopback = false;
  for (const SocketAddress& a : *local) loopback |= Ip(a) == "127.0.0.1" || Ip(a) == "::1";
  EXPECT_TRUE(loopback);
  EXPECT_EQ(dns_.Queries("localhost"), 0);
}

TEST_F(ResolverTest, TheCacheHoldsAtMostItsCapacity) {
  ResolverOptions options;
  options.capacity = 2;
  auto resolver = Make(options);
  for (const char* name : {"a.test", "b.test", "c.test"}) resolver->Resolve(name).IgnoreError();
  EXPECT_EQ(resolver->cached(), 2u);
  // Every name is still answered, from the cache or again from the server.
  EXPECT_EQ(resolver->Resolve("a.test").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ResolverTest, BadServersMakeTheResolverUnavailableAndAreNotKept) {
  auto resolver = std::make_unique<HostResolver>(ResolverOptions{.servers = "not an address"},
                                                 [this] { return now_; });
  auto r = resolver->Resolve("phone.test");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(resolver->cached(), 0u);
}

TEST_F(ResolverTest, ResolveUriTakesTheFirstAddressOfAFamilySipdHasASocketFor) {
  dns_.Add("dual.test", "127.0.0.5", "::1");
  auto resolver = Make();
  auto uri = ParseUri("sip:bob@dual.test:5070");
  ASSERT_TRUE(uri.ok());
  const std::vector<LocalSocket> v4 = {LocalSocket{Proto::kUdp, "127.0.0.1", 5060, 0}};
  const std::vector<LocalSocket> v6 = {LocalSocket{Proto::kUdp, "::1", 5060, 3}};
  auto d4 = ResolveUri(*uri, v4, resolver.get());
  ASSERT_TRUE(d4.ok()) << d4.status();
  EXPECT_EQ(d4->ToString(), "udp:127.0.0.5:5070");
  auto d6 = ResolveUri(*uri, v6, resolver.get());
  ASSERT_TRUE(d6.ok()) << d6.status();
  EXPECT_EQ(d6->ip(), "::1");
  EXPECT_EQ(d6->port(), 5070);
  EXPECT_EQ(d6->socket, 3);
  // Without a resolver only numeric hosts resolve.
  EXPECT_EQ(ResolveUri(*uri, v4, nullptr).status().code(), absl::StatusCode::kNotFound);
  auto numeric = ParseUri("sip:bob@127.0.0.2");
  ASSERT_TRUE(numeric.ok());
  auto d = ResolveUri(*numeric, v4, nullptr);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->ToString(), "udp:127.0.0.2:5060");
}

}  // namespace
}  // namespace sipd::tm
