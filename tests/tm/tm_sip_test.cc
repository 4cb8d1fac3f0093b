// tm in a real sipd: calls from a sipp UAC through sipd to a registered sipp UAS,
// retransmissions absorbed, hostile input, t_uac_dlg over every MI transport, t_reply,
// t_hash, t_uac_cancel and list_blacklists. Raw UDP sockets play the phones where the
// test needs to see or forge bytes.
#include <signal.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "sipd/modules/tm/sip_builder.h"
#include "sipd/modules/tm/sip_message.h"
#include "tests/support/dns_responder.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_fixture.h"
#include "tests/support/sipd_harness.h"
#include "tests/tm/sip_peers.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string TmConfig(std::string_view extra = "") {
  return absl::StrCat(
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
      "loadmodule \"mi_datagram\"\n"
      "modparam(\"mi_datagram\", \"socket_name\", \"{TMP_DIR}/mi.sock\")\n"
      "loadmodule \"mi_xmlrpc\"\n"
      "modparam(\"mi_xmlrpc\", \"port\", 0)\n"
      "loadmodule \"usrloc\"\n"
      "loadmodule \"registrar\"\n"
      "loadmodule \"tm\"\n"
      "modparam(\"tm\", \"wt_timer\", 1)\n"
      "modparam(\"tm\", \"fr_timeout\", 2)\n",
      std::string(extra));
}

int Status(std::string_view bytes) {
  auto m = tm::SipMessage::Parse(bytes);
  return m.ok() && !m->is_request() ? m->status() : 0;
}
std::string MethodOf(std::string_view bytes) {
  auto m = tm::SipMessage::Parse(bytes);
  return m.ok() && m->is_request() ? std::string(m->method_text()) : "";
}

// A request from a raw UDP phone on `from_port` to `user` at sipd.
std::string Request(std::string_view method, std::string_view user, int sipd_port, int from_port,
                    std::string_view branch, std::string_view call_id, std::string_view extra = "",
                    int cseq = 1) {
  return absl::StrCat(std::string(method), " sip:", std::string(user), "@127.0.0.1:", sipd_port,
                      " SIP/2.0\r\n", "Via: SIP/2.0/UDP 127.0.0.1:", from_port,
                      ";branch=", std::string(branch), "\r\n", "Max-Forwards: 70\r\n",
                      "From: <sip:alice@127.0.0.1>;tag=a1\r\n", "To: <sip:", std::string(user),
                      "@127.0.0.1>\r\n", "Call-ID: ", std::string(call_id), "\r\n", "CSeq: ", cseq,
                      " ", std::string(method), "\r\n", "Contact: <sip:alice@127.0.0.1:", from_port,
                      ">\r\n", std::string(extra), "Content-Length: 0\r\n\r\n");
}

// What a UAS answers to a request it received.
std::string Answer(std::string_view request, int code, std::string_view reason,
                   std::string_view to_tag = "b1") {
  auto m = tm::SipMessage::Parse(request);
  if (!m.ok()) return "";
  return tm::BuildLocalReply(*m, code, reason, to_tag, {}, {}, "");
}

class TmSipTest : public SipdFixture {
 protected:
  TmSipTest() : SipdFixture("sipd-tm-sip", TmConfig, 20s) {}

  int sip_port() const { return sipd_->sip_port(); }

  // PIDs of the processes `ps` lists with a Type starting with one of `prefixes`.
  std::set<int> PidsOfType(std::initializer_list<std::string_view> prefixes) {
    std::set<int> pids;
    for (const auto& node : mi_->Execute("ps").reply.root.kids) {
      std::string pid;
      std::string type;
      for (const auto& a : node->attributes) {
        if (a.name == "PID") pid = a.value;
        if (a.name == "Type") type = a.value;
      }
      for (std::string_view prefix : prefixes) {
        if (type.starts_with(prefix)) pids.insert(std::stoi(pid));
      }
    }
    return pids;
  }
  std::set<int> SipWorkerPids() { return PidsOfType({"SIP receiver", "timer"}); }
};

TEST_F(TmSipTest, CallsFlowFromASippUacThroughSipdToARegisteredSippUas) {
  StartSipd();
  constexpr int kCalls = 20;
  auto uas = SippProcess::Start("uas_call.xml", {"-m", absl::StrCat(kCalls)}, work_, "uas");
  auto port = uas->SipPort(false);
  ASSERT_TRUE(port.ok()) << port.status();
  Register("bob", *port);
  auto uac = SippProcess::Start(
      "uac_call.xml",
      {"-s", "bob", absl::StrCat("127.0.0.1:", sip_port()), "-m", absl::StrCat(kCalls), "-r", "20"},
      work_, "uac");
  EXPECT_EQ(uac->Wait(60s), 0) << uac->output();
  EXPECT_EQ(uas->Wait(30s), 0) << uas->output();
  // Every transaction ends (wt_timer 1 s) and nothing is left in the table.
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
  EXPECT_EQ(Stat("UAS_transactions"), 2u * kCalls);  // INVITE and BYE; ACK has none
  EXPECT_EQ(Stat("2xx_transactions"), 2u * kCalls);
  EXPECT_EQ(Stat("drop_replies"), 0u);
  EXPECT_GE(Stat("fwd_requests"), 3u * kCalls);     // INVITE, ACK, BYE
  EXPECT_GE(Stat("relayed_replies"), 3u * kCalls);  // 180, 200, 200
}

// Calls over TCP, and from UDP to TCP (sipd record-routes both of its sockets then).
struct Legs {
  bool uac_tcp;
  bool uas_tcp;
};

class TmCallTest : public TmSipTest, public ::testing::WithParamInterface<Legs> {};

TEST_P(TmCallTest, CallsFlowOverEachTransport) {
  StartSipd("listen = tcp:127.0.0.1:0\n");
  const int tcp_port = sipd_->listener_port("sip", "tcp");
  ASSERT_GT(tcp_port, 0) << sipd_->log();
  constexpr int kCalls = 10;
  std::vector<std::string> uas_args = {"-m", absl::StrCat(kCalls)};
  if (GetParam().uas_tcp) uas_args.insert(uas_args.end(), {"-t", "t1"});
  auto uas = SippProcess::Start("uas_call.xml", uas_args, work_, "uas");
  auto port = uas->SipPort(GetParam().uas_tcp);
  ASSERT_TRUE(port.ok()) << port.status();
  auto r = mi_->Execute("ul_add", {"location", "bob",
                                   absl::StrCat("sip:bob@127.0.0.1:", *port,
                                                GetParam().uas_tcp ? ";transport=tcp" : ""),
                                   "0", "1.00", "0", "0", "0", "4294967295"});
  ASSERT_EQ(r.code, 200u) << r.Status();
  std::vector<std::string> uac_args = {
      "-s",
      "bob",
      absl::StrCat("127.0.0.1:", GetParam().uac_tcp ? tcp_port : sip_port()),
      "-m",
      absl::StrCat(kCalls),
      "-r",
      "10"};
  if (GetParam().uac_tcp) uac_args.insert(uac_args.end(), {"-t", "t1"});
  auto uac = SippProcess::Start("uac_call.xml", uac_args, work_, "uac");
  EXPECT_EQ(uac->Wait(60s), 0) << uac->output();
  EXPECT_EQ(uas->Wait(30s), 0) << uas->output();
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
  EXPECT_EQ(Stat("UAS_transactions"), 2u * kCalls);
  EXPECT_EQ(Stat("2xx_transactions"), 2u * kCalls);
}

INSTANTIATE_TEST_SUITE_P(Transports, TmCallTest,
                         ::testing::Values(Legs{true, true}, Legs{false, true}, Legs{true, false}),
                         [](const ::testing::TestParamInfo<Legs>& info) {
                           return absl::StrCat(info.param.uac_tcp ? "tcp" : "udp", "_to_",
                                               info.param.uas_tcp ? "tcp" : "udp");
                         });

TEST_F(TmSipTest, ARetransmittedInviteNeverCreatesASecondTransaction) {
  StartSipd();
  UdpPeer uac;
  UdpPeer uas;
  Register("bob", uas.port());
  const std::string invite =
      Request("INVITE", "bob", sip_port(), uac.port(), "z9hG4bKstorm1", "storm-1");
  constexpr int kCopies = 30;
  for (int i = 0; i < kCopies; ++i) uac.SendTo(sip_port(), invite);
  ASSERT_TRUE(WaitForStat("rcv_requests", kCopies));
  EXPECT_EQ(Stat("UAS_transactions"), 1u);
  // The UAS got the INVITE (and perhaps sipd's own timer A retransmissions of it): one
  // branch only.
  const std::string first = uas.Receive();
  ASSERT_EQ(MethodOf(first), "INVITE") << first;
  uas.SendTo(sip_port(), Answer(first, 486, "Busy Here"));
  // The UAC: 100 Trying (once per copy) and then the 486.
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::string d = uac.Receive(100ms);
        return Status(d) == 486;
      },
      10s));
  uac.SendTo(sip_port(), Request("ACK", "bob", sip_port(), uac.port(), "z9hG4bKstorm1", "storm-1"));
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
  EXPECT_EQ(Stat("UAS_transactions"), 1u);
  EXPECT_EQ(Stat("4xx_transactions"), 1u);
}

// Contacts with host names: resolved through the DNS server sipd is given, in bounded
// time, and a name that gets no answer is kept as failed (it costs each process one
// lookup, not one per request).
TEST_F(TmSipTest, ContactHostNamesAreResolvedThroughTheConfiguredDnsServer) {
  DnsResponder dns;
  dns.Add("bob-phone.test", "127.0.0.1");
  dns.Silent("gone.test");
  StartSipd(absl::StrCat("modparam(\"tm\", \"dns_servers\", \"", dns.server(),
                         "\")\n"
                         "modparam(\"tm\", \"dns_timeout\", 100)\n"
                         "modparam(\"tm\", \"dns_tries\", 1)\n"));
  UdpPeer uac;
  UdpPeer uas;
  auto added = mi_->Execute(
      "ul_add", {"location", "bob", absl::StrCat("sip:bob@bob-phone.test:", uas.port()), "0",
                 "1.00", "0", "0", "0", "4294967295"});
  ASSERT_EQ(added.code, 200u) << added.Status();
  uac.SendTo(sip_port(), Request("INVITE", "bob", sip_port(), uac.port(), "z9hG4bKdns1", "dns-1"));
  const std::string invite = uas.Receive(10s);
  ASSERT_EQ(MethodOf(invite), "INVITE") << invite;
  EXPECT_GE(dns.Queries("bob-phone.test"), 1);
  uas.SendTo(sip_port(), Answer(invite, 486, "Busy Here"));
  ASSERT_TRUE(WaitUntil([&] { return Status(uac.Receive(100ms)) == 486; }, 10s));
  uac.SendTo(sip_port(), Request("ACK", "bob", sip_port(), uac.port(), "z9hG4bKdns1", "dns-1"));

  added = mi_->Execute("ul_add", {"location", "carol", "sip:carol@gone.test:5060", "0", "1.00", "0",
                                  "0", "0", "4294967295"});
  ASSERT_EQ(added.code, 200u) << added.Status();
  constexpr int kCalls = 6;
  for (int i = 0; i < kCalls; ++i) {
    const std::string branch = absl::StrCat("z9hG4bKgone", i);
    const std::string call_id = absl::StrCat("gone-", i);
    uac.SendTo(sip_port(), Request("INVITE", "carol", sip_port(), uac.port(), branch, call_id));
    // No contact resolves: 480, once the lookup gave up.
    ASSERT_TRUE(WaitUntil([&] { return Status(uac.Receive(100ms)) == 480; }, 10s)) << i;
    uac.SendTo(sip_port(), Request("ACK", "carol", sip_port(), uac.port(), branch, call_id));
  }
  // A and AAAA, once per SIP worker (2) at most; without the negative cache, each of the
  // calls would have asked again.
  EXPECT_GE(dns.Queries("gone.test"), 1);
  EXPECT_LE(dns.Queries("gone.test"), 4);
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
}

TEST_F(TmSipTest, HostileInputCrashesNothingAndLeavesNoStuckTransaction) {
  StartSipd();
  const std::set<int> workers = SipWorkerPids();
  UdpPeer uac;
  UdpPeer silent;  // registered, never answers
  Register("mute", silent.port());

  // CANCEL for nothing: 481. ACK for nothing: silence.
  uac.SendTo(sip_port(), Request("CANCEL", "mute", sip_port(), uac.port(), "z9hG4bKx1", "h1"));
  EXPECT_EQ(Status(uac.Receive()), 481);
  uac.SendTo(sip_port(), Request("ACK", "nobody", sip_port(), uac.port(), "z9hG4bKx2", "h2"));
  // Max-Forwards 0: 483.
  std::string mf0 = Request("OPTIONS", "mute", sip_port(), uac.port(), "z9hG4bKx3", "h3");
  mf0.replace(mf0.find("Max-Forwards: 70"), 16, "Max-Forwards: 0");
  uac.SendTo(sip_port(), mf0);
  EXPECT_EQ(Status(uac.Receive()), 483);
  // Replies for no transaction: a forged sipd-style branch, a foreign branch.
  const std::string forged = Answer(
      Request("INVITE", "x", sip_port(), uac.port(), tm::MakeBranch(7, 7, 7, 0), "h4"), 200, "OK");
  const std::string foreign =
      Answer(Request("INVITE", "x", sip_port(), uac.port(), "z9hG4bKnotours", "h5"), 200, "OK");
  const uint64_t dropped = Stat("drop_replies");
  uac.SendTo(sip_port(), forged);
  uac.SendTo(sip_port(), foreign);
  EXPECT_TRUE(WaitForStat("drop_replies", dropped + 2));
  // A 10,000-header message: dropped (too many headers), sipd goes on.
  std::string huge = Request("INVITE", "mute", sip_port(), uac.port(), "z9hG4bKx6", "h6");
  std::string many;
  for (int i = 0; i < 10000; ++i) absl::StrAppend(&many, "X: ", i % 10, "\r\n");
  huge.insert(huge.find("Content-Length"), many);
  ASSERT_LT(huge.size(), 65000u);
  const uint64_t bad = Stat("bad_msg_hdr");
  uac.SendTo(sip_port(), huge);
  EXPECT_TRUE(WaitForStat("bad_msg_hdr", bad + 1));
  // A UAS that never answers, under a retransmission storm of the same MESSAGE: one
  // transaction, 408 after fr_timeout (2 s here).
  const std::string message =
      Request("MESSAGE", "mute", sip_port(), uac.port(), "z9hG4bKstorm", "h7");
  const uint64_t uas_before = Stat("UAS_transactions");
  for (int i = 0; i < 200; ++i) uac.SendTo(sip_port(), message);
  ASSERT_TRUE(WaitUntil([&] { return Status(uac.Receive(500ms)) == 408; }, 15s));
  EXPECT_EQ(Stat("UAS_transactions"), uas_before + 1);
  // An INVITE to another silent UAS: 100, then 408; the ACK ends it.
  UdpPeer silent2;
  Register("mute2", silent2.port());
  const std::string invite = Request("INVITE", "mute2", sip_port(), uac.port(), "z9hG4bKx8", "h8");
  uac.SendTo(sip_port(), invite);
  // A forged branch of this live transaction: right bucket and label, wrong loop hash or
  // wrong branch number, answered 200 by the UAS side: dropped, the call is not
  // answered, and the transaction still ends in 408.
  const std::string relayed = silent2.Receive();
  ASSERT_EQ(MethodOf(relayed), "INVITE") << relayed;
  auto relayed_msg = tm::SipMessage::Parse(relayed);
  ASSERT_TRUE(relayed_msg.ok());
  const std::string branch(relayed_msg->top_via().branch);
  tm::BranchParts parts;
  ASSERT_TRUE(tm::ParseBranch(branch, &parts)) << branch;
  const uint64_t dropped_before_forgery = Stat("drop_replies");
  const uint64_t answered_before_forgery = Stat("2xx_transactions");
  for (const std::string& forged_branch :
       {tm::MakeBranch(parts.loop_hash + 1, parts.index, parts.label, 0),
        tm::MakeBranch(parts.loop_hash, parts.index, parts.label, 7)}) {
    std::string reply = Answer(relayed, 200, "OK");
    reply.replace(reply.find(branch), branch.size(), forged_branch);
    silent2.SendTo(sip_port(), reply);
  }
  EXPECT_TRUE(WaitForStat("drop_replies", dropped_before_forgery + 2));
  ASSERT_TRUE(WaitUntil([&] { return Status(uac.Receive(500ms)) == 408; }, 15s));
  EXPECT_EQ(Stat("2xx_transactions"), answered_before_forgery);
  uac.SendTo(sip_port(), Request("ACK", "mute2", sip_port(), uac.port(), "z9hG4bKx8", "h8"));
  // The UAS that never answered the INVITE is blacklisted now: a new request to it fails
  // at once with 503.
  uac.SendTo(sip_port(), Request("MESSAGE", "mute2", sip_port(), uac.port(), "z9hG4bKx10", "h10"));
  ASSERT_TRUE(WaitUntil([&] { return Status(uac.Receive(500ms)) == 503; }, 5s));
  // The one that never answered the MESSAGE is not (only INVITEs blacklist on a timeout):
  // a new MESSAGE still reaches it, and ends in 408 again.
  uac.SendTo(sip_port(), Request("MESSAGE", "mute", sip_port(), uac.port(), "z9hG4bKx11", "h11"));
  ASSERT_TRUE(
      WaitUntil([&] { return absl::StrContains(silent.Receive(500ms), "Call-ID: h11"); }, 5s));
  ASSERT_TRUE(WaitUntil([&] { return Status(uac.Receive(500ms)) == 408; }, 15s));
  auto lists = mi_->Execute("list_blacklists");
  ASSERT_EQ(lists.code, 200u);
  ASSERT_FALSE(lists.reply.root.kids.empty());
  std::set<std::string> listed;
  for (const auto& rule : lists.reply.root.kids[0]->kids) {
    for (const auto& kid : rule->kids) {
      if (kid->name == "Port") listed.insert(kid->value);
    }
  }
  EXPECT_EQ(listed, std::set<std::string>{absl::StrCat(silent2.port())});

  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
  EXPECT_EQ(SipWorkerPids(), workers);  // nobody crashed and was restarted
  // And sipd still answers.
  uac.SendTo(sip_port(), Request("OPTIONS", "", sip_port(), uac.port(), "z9hG4bKx9", "h9"));
  const std::string bad_uri = uac.Receive();
  EXPECT_EQ(Status(bad_uri), 400) << bad_uri;  // "sip:@127.0.0.1": an empty user
}

TEST_F(TmSipTest, ATcpPeerSendingHalfAMessageBlocksNobodyAndLeavesNoTransaction) {
  StartSipd("listen = tcp:127.0.0.1:0\ntcp_header_timeout = 1\n");
  const std::set<int> workers = SipWorkerPids();
  const int tcp_port = sipd_->tcp_port();
  ASSERT_GT(tcp_port, 0);
  UdpPeer silent;
  Register("mute", silent.port());
  // Half an INVITE: the headers stop in the middle of a line.
  auto half = SipTcpClient::Connect(tcp_port);
  ASSERT_TRUE(half.ok()) << half.status();
  const std::string invite =
      Request("INVITE", "mute", tcp_port, (*half)->local_port(), "z9hG4bKhalf", "half-1");
  ASSERT_TRUE((*half)->Write(invite.substr(0, invite.size() / 2)).ok());
  // Meanwhile other peers, over TCP and UDP, are served.
  auto other = SipTcpClient::Connect(tcp_port);
  ASSERT_TRUE(other.ok()) << other.status();
  std::string options =
      Request("OPTIONS", "", tcp_port, (*other)->local_port(), "z9hG4bKok1", "half-2");
  absl::StrReplaceAll({{"sip:@", "sip:"}}, &options);
  options.replace(options.find("SIP/2.0/UDP"), 11, "SIP/2.0/TCP");
  ASSERT_TRUE((*other)->Write(options).ok());
  auto reply = (*other)->ReadMessage(5s);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(Status(*reply), 200) << *reply;
  UdpPeer phone;
  std::string udp_options =
      Request("OPTIONS", "", sip_port(), phone.port(), "z9hG4bKok2", "half-3");
  absl::StrReplaceAll({{"sip:@", "sip:"}}, &udp_options);
  phone.SendTo(sip_port(), udp_options);
  EXPECT_EQ(Status(phone.Receive()), 200);
  // The half message never became a transaction; tcp_header_timeout closes its connection.
  EXPECT_TRUE((*half)->WaitForClose(10s));
  EXPECT_EQ(MethodOf(silent.Receive(100ms)), "");
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
  EXPECT_EQ(SipWorkerPids(), workers);
}

TEST_F(TmSipTest, UnderOverloadNewInvitesGet503UntilTheQueuesDrain) {
  // A small receive buffer (the kernel's default; maxbuffer probing off) fills quickly.
  // T1 50 ms: the 404s nobody ACKs end at timer H (64*T1) within the test.
  StartSipd(
      "maxbuffer = 0\nmodparam(\"tm\", \"overload_queue\", 20)\n"
      "modparam(\"tm\", \"T1_timer\", 50)\n");
  const std::set<int> receivers = PidsOfType({"SIP receiver"});
  ASSERT_FALSE(receivers.empty());
  const std::set<int> workers = SipWorkerPids();
  // The SIP receivers stop reading; new INVITEs (to nobody: 404 once served) pile up in
  // the receive queue until the timer process sees it past 20 % full.
  for (int pid : receivers) ASSERT_EQ(kill(pid, SIGSTOP), 0);
  UdpPeer uac;
  const std::string padding = absl::StrCat("X-Padding: ", std::string(900, 'p'), "\r\n");
  int sent = 0;
  const bool overloaded = WaitUntil(
      [&] {
        for (int i = 0; i < 20 && sent < 5000; ++i, ++sent) {
          uac.SendTo(sip_port(), Request("INVITE", "nobody", sip_port(), uac.port(),
                                         absl::StrCat("z9hG4bKovl", sent),
                                         absl::StrCat("ovl-", sent), padding));
        }
        return absl::StrContains(sipd_->log(), "tm: overloaded");
      },
      20s);
  const uint64_t flag_while_stopped = Stat("overloaded");
  for (int pid : receivers) kill(pid, SIGCONT);
  ASSERT_TRUE(overloaded) << sent << " INVITEs sent";
  EXPECT_EQ(flag_while_stopped, 1u);  // the receivers were stopped: the flag stayed up
  // The first INVITEs read are refused statelessly with 503 + Retry-After; the queue
  // drains and the flag drops.
  bool refused = false;
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string d = uac.Receive(100ms);
        if (Status(d) == 503) {
          EXPECT_THAT(d, HasSubstr("\r\nRetry-After: 1\r\n"));
          refused = true;
        }
        return refused;
      },
      20s));
  EXPECT_TRUE(
      WaitUntil([&] { return absl::StrContains(sipd_->log(), "tm: no longer overloaded"); }, 20s));
  EXPECT_EQ(Stat("overloaded"), 0u);
  EXPECT_GE(Stat("5xx_replies"), 1u);  // sl: the 503s had no transaction
  EXPECT_GE(Stat("overload_refused"), 1u);
  EXPECT_LE(Stat("overload_refused"), Stat("5xx_replies"));
  // Calls are accepted again: a new INVITE gets 100 and 404 through its transaction.
  UdpPeer late;
  late.SendTo(sip_port(), Request("INVITE", "nobody", sip_port(), late.port(), "z9hG4bKafter",
                                  "after-overload"));
  std::string got;
  EXPECT_TRUE(WaitUntil(
      [&] {
        const std::string d = late.Receive(100ms);
        if (!d.empty()) absl::StrAppend(&got, d.substr(0, d.find("\r\n")), "; ");
        return Status(d) == 404;
      },
      10s))
      << got;
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
  EXPECT_EQ(SipWorkerPids(), workers);
}

TEST_F(TmSipTest, AnInviteThatWaitedLongerThanOverloadDelayGets503) {
  // Queue-length shedding off: only the age of the INVITE can refuse it.
  StartSipd("modparam(\"tm\", \"overload_queue\", 0)\nmodparam(\"tm\", \"overload_delay\", 500)\n");
  const std::set<int> receivers = PidsOfType({"SIP receiver"});
  ASSERT_FALSE(receivers.empty());
  for (int pid : receivers) ASSERT_EQ(kill(pid, SIGSTOP), 0);
  UdpPeer uac;
  uac.SendTo(sip_port(),
             Request("INVITE", "nobody", sip_port(), uac.port(), "z9hG4bKstale", "stale-invite"));
  // What is under test is the time the INVITE spends queued: let 600 ms pass (a
  // fresh INVITE below would have to wait 500 ms in the queue to be refused as well).
  const auto sent_at = std::chrono::steady_clock::now();
  WaitUntil([&] { return std::chrono::steady_clock::now() - sent_at >= 600ms; }, 5s);
  for (int pid : receivers) kill(pid, SIGCONT);
  const std::string refused = uac.Receive(5s);
  EXPECT_EQ(Status(refused), 503) << refused;
  EXPECT_THAT(refused, HasSubstr("\r\nRetry-After: 1\r\n"));
  // A fresh INVITE is taken: 100 Trying, then 404 through its transaction.
  UdpPeer fresh;
  fresh.SendTo(sip_port(), Request("INVITE", "nobody", sip_port(), fresh.port(), "z9hG4bKfresh",
                                   "fresh-invite"));
  EXPECT_EQ(Status(fresh.Receive(5s)), 100);
  EXPECT_EQ(Status(fresh.Receive(5s)), 404);
  EXPECT_EQ(Stat("5xx_replies"), 1u);  // sl: the 503 had no transaction
  EXPECT_EQ(Stat("overload_refused"), 1u);
  EXPECT_EQ(Stat("overloaded"), 0u);  // the queue test is off: refused by age alone
}

TEST_F(TmSipTest, OptionsAndRegisterToSipdAreAnsweredThroughTransactions) {
  StartSipd();
  UdpPeer phone;
  std::string options = absl::StrCat(
      "OPTIONS sip:127.0.0.1:", sip_port(), " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:", phone.port(),
      ";branch=z9hG4bKopt\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\n"
      "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
  phone.SendTo(sip_port(), options);
  const std::string reply = phone.Receive();
  EXPECT_EQ(Status(reply), 200);
  EXPECT_THAT(reply, HasSubstr("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER\r\n"));
  phone.SendTo(sip_port(), options);  // a retransmission: the same reply, same transaction
  EXPECT_EQ(phone.Receive(), reply);
  EXPECT_EQ(Stat("UAS_transactions"), 1u);

  auto reg = SippProcess::Start("register.xml",
                                {"-inf", SipScenario("users.csv"), "-m", "20", "-r", "50",
                                 absl::StrCat("127.0.0.1:", sip_port())},
                                work_, "register");
  EXPECT_EQ(reg->Wait(60s), 0) << reg->output();
  EXPECT_EQ(DumpContacts(mi_->Execute("ul_dump").reply).size(), 20u);
}

// --- t_uac_dlg over every MI transport ---

enum class Mi { kGrpc, kFifo, kDatagram, kXmlrpc };

class TUacDlgTest : public TmSipTest, public ::testing::WithParamInterface<Mi> {
 protected:
  // The reply as text lines: the status line first (XML-RPC: "200 OK" added), then one
  // line per node; node 5 (the raw SIP reply) spans several lines.
  std::string Run(const std::vector<std::string>& args) {
    switch (GetParam()) {
      case Mi::kGrpc: {
        auto r = mi_->Execute("t_uac_dlg", args);
        std::string out = absl::StrCat(r.code, " ", r.reason, "\n");
        for (const auto& n : r.reply.root.kids) absl::StrAppend(&out, n->value, "\n");
        return out;
      }
      case Mi::kFifo: {
        auto client =
            legacy::FifoClient::Create(sipd_->tmp_dir() + "/sipd_fifo", sipd_->tmp_dir() + "/");
        if (!client.ok()) return client.status().ToString();
        auto reply = (*client)->Execute("t_uac_dlg", args, 20s);
        return reply.ok() ? *reply : reply.status().ToString();
      }
      case Mi::kDatagram: {
        auto client = legacy::DatagramClient::Unix(sipd_->tmp_dir() + "/mi.sock", work_);
        if (!client.ok()) return client.status().ToString();
        std::string request = ":t_uac_dlg:\n";
        for (const std::string& a : args) {
          // Multi-line values are quoted (the datagram grammar, spec 4.2).
          absl::StrAppend(&request, a.find('\n') != std::string::npos ? "\"" + a + "\"" : a, "\n");
        }
        auto reply = (*client)->Transact(request, 20s);
        return reply.ok() ? *reply : reply.status().ToString();
      }
      case Mi::kXmlrpc: {
        auto outcome = xmlrpc::testing::CallOnce(sipd_->listener_port("mi_xmlrpc"),
                                                 xmlrpc::testing::StringParams("t_uac_dlg", args));
        if (!outcome) return "no XML-RPC reply";
        if (outcome->is_fault) return absl::StrCat("fault ", outcome->fault_string);
        return "200 OK\n" + outcome->String();
      }
    }
    return "";
  }

  std::string FifoQuoted(const std::string& headers) {
    return GetParam() == Mi::kFifo ? "\"" + headers + "\"" : headers;
  }
};

TEST_P(TUacDlgTest, SendsOptionsAndInviteToASippUasAndShowsTheFiveReplyNodes) {
  StartSipd();
  // OPTIONS.
  auto uas = SippProcess::Start("uas_options.xml", {"-m", "1"}, work_, "options");
  auto port = uas->SipPort(false);
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string target = absl::StrCat("sip:uas@127.0.0.1:", *port);
  std::string text =
      Run({"OPTIONS", target, ".", ".",
           FifoQuoted(absl::StrCat("From: <sip:mi@127.0.0.1>\r\nTo: <", target, ">\r\n"))});
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  ASSERT_GE(lines.size(), 6u) << text;
  EXPECT_EQ(lines[0], "200 OK") << text;
  EXPECT_EQ(lines[1], "200 OK") << text;
  EXPECT_EQ(lines[2], absl::StrCat(target, ";transport=UDP")) << text;  // remote target
  EXPECT_EQ(lines[3], lines[2]) << text;                                // next hop
  EXPECT_EQ(lines[4], ".") << text;                                     // no route set
  EXPECT_THAT(lines[5], ::testing::StartsWith("Via: SIP/2.0/UDP 127.0.0.1:")) << text;
  EXPECT_THAT(text, HasSubstr("CSeq: 1 OPTIONS")) << text;
  EXPECT_EQ(uas->Wait(20s), 0) << uas->output();

  // INVITE with a body, then BYE along the dialog it reported.
  auto invite_uas = SippProcess::Start("uas_invite_bye.xml", {"-m", "1"}, work_, "invite");
  port = invite_uas->SipPort(false);
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string callee = absl::StrCat("sip:uas@127.0.0.1:", *port);
  const std::string call_id = absl::StrCat("mi-call-", static_cast<int>(GetParam()));
  text = Run({"INVITE", callee, ".", ".",
              FifoQuoted(absl::StrCat("From: <sip:mi@127.0.0.1>;tag=mi1\r\nTo: <", callee,
                                      ">\r\nCall-ID: ", call_id,
                                      "\r\nContact: <sip:mi@!!>\r\nContent-Type: application/sdp")),
              "v=0"});
  lines = absl::StrSplit(text, '\n');
  ASSERT_GE(lines.size(), 6u) << text;
  EXPECT_EQ(lines[1], "200 OK") << text;
  EXPECT_EQ(lines[2], absl::StrCat(callee, ";transport=UDP")) << text;
  EXPECT_THAT(text, HasSubstr("CSeq: 1 INVITE")) << text;
  // The callee's tag, from the raw reply (node 5).
  const size_t to = text.find("\nTo: ");
  ASSERT_NE(to, std::string::npos) << text;
  const std::string to_line = text.substr(to + 5, text.find_first_of("\r\n", to + 1) - to - 5);
  text = Run({"BYE", lines[2], ".", ".",
              FifoQuoted(absl::StrCat("From: <sip:mi@127.0.0.1>;tag=mi1\r\nTo: ", to_line,
                                      "\r\nCall-ID: ", call_id, "\r\nCSeq: 2 BYE"))});
  EXPECT_THAT(text, ::testing::StartsWith("200 OK\n200 OK\n")) << text;
  EXPECT_EQ(invite_uas->Wait(20s), 0) << invite_uas->output();
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
  EXPECT_EQ(Stat("UAC_transactions"), 3u);
}

INSTANTIATE_TEST_SUITE_P(EveryMiTransport, TUacDlgTest,
                         ::testing::Values(Mi::kGrpc, Mi::kFifo, Mi::kDatagram, Mi::kXmlrpc),
                         [](const ::testing::TestParamInfo<Mi>& info) {
                           switch (info.param) {
                             case Mi::kGrpc:
                               return "grpc";
                             case Mi::kFifo:
                               return "fifo";
                             case Mi::kDatagram:
                               return "datagram";
                             case Mi::kXmlrpc:
                               return "xmlrpc";
                           }
                           return "unknown";
                         });

TEST_F(TmSipTest, TUacDlgErrorsAndTimeouts) {
  StartSipd();
  auto r =
      mi_->Execute("t_uac_dlg", {"OPTIONS", "bad", ".", ".", "From: <sip:a@b>\r\nTo: <sip:c@d>"});
  EXPECT_EQ(r.Status(), "400 Invalid RURI");
  r = mi_->Execute("t_uac_dlg", {"OPTIONS", "sip:x@127.0.0.1", ".", ".", "To: <sip:c@d>"});
  EXPECT_EQ(r.Status(), "400 From missing");
  r = mi_->Execute("t_uac_dlg", {"OPTIONS", "sip:x@127.0.0.1", ".", "udp:10.1.1.1:5060",
                                 "From: <sip:a@b>\r\nTo: <sip:c@d>"});
  EXPECT_EQ(r.Status(), "404 Local socket not found");
  r = mi_->Execute("t_uac_dlg", {"MESSAGE", "sip:x@127.0.0.1", ".", ".",
                                 "From: <sip:a@b>\r\nTo: <sip:c@d>", "hello"});
  EXPECT_EQ(r.Status(), "400 Content-Type missing");
  // Nobody answers: 408 Request Timeout, made up by sipd (node 5 is ".").
  UdpPeer silent;
  r = mi_->Execute("t_uac_dlg", {"OPTIONS", absl::StrCat("sip:x@127.0.0.1:", silent.port()), ".",
                                 ".", "From: <sip:a@b>\r\nTo: <sip:c@d>"});
  ASSERT_EQ(r.code, 200u) << r.Status();
  ASSERT_EQ(r.reply.root.kids.size(), 5u);
  EXPECT_EQ(r.reply.root.kids[0]->value, "408 Request Timeout");
  for (int i = 1; i < 5; ++i) EXPECT_EQ(r.reply.root.kids[i]->value, ".");
}

TEST_F(TmSipTest, TReplyTHashAndTUacCancel) {
  StartSipd();
  UdpPeer uac;
  UdpPeer uas;
  Register("carol", uas.port());
  uac.SendTo(sip_port(), Request("INVITE", "carol", sip_port(), uac.port(), "z9hG4bKtr", "tr-1"));
  const std::string relayed = uas.Receive();
  ASSERT_EQ(MethodOf(relayed), "INVITE");
  uas.SendTo(sip_port(), Answer(relayed, 180, "Ringing"));
  auto invite = tm::SipMessage::Parse(relayed);
  tm::BranchParts parts;
  ASSERT_TRUE(tm::ParseBranch(invite->top_via().branch, &parts));

  // t_hash shows the transaction in its bucket.
  auto hash = mi_->Execute("t_hash");
  ASSERT_EQ(hash.reply.root.kids.size(), 65536u);
  const auto& bucket = *hash.reply.root.kids[parts.index];
  EXPECT_EQ(bucket.value, absl::StrCat(parts.index));
  EXPECT_EQ(bucket.attributes[0].name, "Current");
  EXPECT_EQ(bucket.attributes[0].value, "1");

  EXPECT_EQ(mi_->Execute("t_reply", {"abc", "x", "1:1", ".", "."}).Status(),
            "400 Invalid reply code");
  EXPECT_EQ(mi_->Execute("t_reply", {"486", "x", "11", ".", "."}).Status(), "400 Invalid trans_id");
  EXPECT_EQ(mi_->Execute("t_reply", {"486", "x", "a:1", ".", "."}).Status(),
            "400 Invalid index in trans_id");
  EXPECT_EQ(mi_->Execute("t_reply", {"486", "x", "1:b", ".", "."}).Status(),
            "400 Invalid label in trans_id");
  EXPECT_EQ(mi_->Execute("t_reply",
                         {"486", "x", absl::StrCat(parts.index, ":", parts.label + 9), ".", "."})
                .Status(),
            "404 Transaction not found");
  // Nothing the caller gives may end a line of the reply (a bare CR in the reason, the
  // To-tag or a header line): refused, and the transaction still waits for its answer.
  const std::string live = absl::StrCat(parts.index, ":", parts.label);
  EXPECT_EQ(mi_->Execute("t_reply", {"486", "Busy\rVia: x", live, ".", "."}).Status(),
            "500 Reply failed");
  EXPECT_EQ(mi_->Execute("t_reply", {"486", "Busy", live, "t\rVia: x", "."}).Status(),
            "500 Reply failed");
  EXPECT_EQ(mi_->Execute("t_reply", {"486", "Busy", live, ".", "X-A: a\rVia: x"}).Status(),
            "500 Reply failed");
  auto r = mi_->Execute("t_reply", {"486", "Busy Here", absl::StrCat(parts.index, ":", parts.label),
                                    "mitag", "X-Reason: operator"});
  EXPECT_EQ(r.Status(), "200 OK");
  // The UAC gets the 486 (after the 100 and the relayed 180); the UAS gets a CANCEL.
  std::string final_reply;
  ASSERT_TRUE(WaitUntil(
      [&] {
        final_reply = uac.Receive(100ms);
        return Status(final_reply) == 486;
      },
      10s));
  EXPECT_THAT(final_reply, HasSubstr(";tag=mitag\r\n"));
  EXPECT_THAT(final_reply, HasSubstr("X-Reason: operator\r\n"));
  const std::string cancel = uas.Receive();
  EXPECT_EQ(MethodOf(cancel), "CANCEL");

  // t_uac_cancel: a local INVITE waits in a thread; the UAS rings; cancel it.
  EXPECT_EQ(mi_->Execute("t_uac_cancel", {"nothing", "1"}).Status(), "481 No such transaction");
  std::string dlg_result;
  std::thread caller([&] {
    MiClient client(sipd_->grpc_target());
    auto reply = client.Execute(
        "t_uac_dlg", {"INVITE", absl::StrCat("sip:carol@127.0.0.1:", uas.port()), ".", ".",
                      "From: <sip:mi@127.0.0.1>\r\nTo: <sip:carol@127.0.0.1>\r\nCall-ID: "
                      "cancel-me\r\nCSeq: 5 INVITE"});
    dlg_result = reply.reply.root.kids.empty() ? reply.Status() : reply.reply.root.kids[0]->value;
  });
  std::string local_invite;
  ASSERT_TRUE(WaitUntil(
      [&] {
        local_invite = uas.Receive(100ms);
        return MethodOf(local_invite) == "INVITE";
      },
      10s));
  uas.SendTo(sip_port(), Answer(local_invite, 180, "Ringing", "c1"));
  ASSERT_TRUE(WaitUntil(
      [&] {
        return mi_->Execute("t_uac_cancel", {"cancel-me", "5"}).code == 200;
      },
      5s));
  std::string local_cancel;
  ASSERT_TRUE(WaitUntil(
      [&] {
        local_cancel = uas.Receive(100ms);
        return MethodOf(local_cancel) == "CANCEL";
      },
      10s));
  uas.SendTo(sip_port(), Answer(local_cancel, 200, "OK", "c1"));
  uas.SendTo(sip_port(), Answer(local_invite, 487, "Request Terminated", "c1"));
  caller.join();
  EXPECT_EQ(dlg_result, "487 Request Terminated");
  uac.SendTo(sip_port(), Request("ACK", "carol", sip_port(), uac.port(), "z9hG4bKtr", "tr-1"));
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
}

TEST_F(TmSipTest, SipTraceRecordsEveryMessageInAndOut) {
  StartSipd("loadmodule \"siptrace\"\n");
  EXPECT_EQ(mi_->Execute("sip_trace").reply.root.kids[0]->value, "off");
  EXPECT_EQ(mi_->Execute("sip_trace", {"maybe"}).Status(), "400 Bad parameter");
  UdpPeer phone;
  const std::string untraced = absl::StrCat(
      "OPTIONS sip:127.0.0.1:", sip_port(), " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:", phone.port(),
      ";branch=z9hG4bKt0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
      "Call-ID: not-traced\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
  phone.SendTo(sip_port(), untraced);
  EXPECT_EQ(Status(phone.Receive()), 200);
  EXPECT_EQ(mi_->Execute("sip_trace", {"ON"}).Status(), "200 OK");
  EXPECT_EQ(mi_->Execute("sip_trace").reply.root.kids[0]->value, "on");
  std::string traced = untraced;
  traced.replace(traced.find("not-traced"), 10, "traced-one");
  traced.replace(traced.find("z9hG4bKt0"), 9, "z9hG4bKt1");
  phone.SendTo(sip_port(), traced);
  EXPECT_EQ(Status(phone.Receive()), 200);
  ASSERT_TRUE(WaitForStat("traced_replies", 1));
  EXPECT_EQ(Stat("traced_requests"), 1u);
  EXPECT_EQ(mi_->Execute("sip_trace", {"off"}).Status(), "200 OK");

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((sipd_->run_dir() + "/siptrace.sqlite").c_str(), &db,
                            SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* rows = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT callid, method, status, direction, fromip, toip, msg "
                               "FROM sip_trace ORDER BY id",
                               -1, &rows, nullptr),
            SQLITE_OK);
  std::vector<std::string> seen;
  while (sqlite3_step(rows) == SQLITE_ROW) {
    auto text = [&](int c) {
      return std::string(reinterpret_cast<const char*>(sqlite3_column_text(rows, c)));
    };
    seen.push_back(absl::StrCat(text(0), " ", text(1), " ", text(2), " ", text(3), " ", text(4),
                                " -> ", text(5)));
    if (text(3) == "in") {
      EXPECT_EQ(text(6), traced);
    }
  }
  sqlite3_finalize(rows);
  sqlite3_close(db);
  const std::string sipd_addr = absl::StrCat("udp:127.0.0.1:", sip_port());
  const std::string phone_addr = absl::StrCat("udp:127.0.0.1:", phone.port());
  EXPECT_THAT(seen,
              ::testing::ElementsAre(
                  absl::StrCat("traced-one OPTIONS  in ", phone_addr, " -> ", sipd_addr),
                  absl::StrCat("traced-one OPTIONS 200 out ", sipd_addr, " -> ", phone_addr)));
}

TEST_F(TmSipTest, SipTraceIsAlsoTheEventESipTrace) {
  StartSipd("loadmodule \"event_datagram\"\nloadmodule \"siptrace\"\n");
  UdpPeer subscriber;
  ASSERT_EQ(mi_->Execute("event_subscribe",
                         {"E_SIP_TRACE", absl::StrCat("udp:127.0.0.1:", subscriber.port())})
                .Status(),
            "200 OK");
  // The event alone: the database records nothing, the subscriber sees both messages
  // (event_datagram quotes a value with spaces or line ends, as 1.11 does).
  EXPECT_EQ(mi_->Execute("trace_to_database", {"off"}).Status(), "200 OK");
  EXPECT_EQ(mi_->Execute("sip_trace", {"on"}).Status(), "200 OK");
  UdpPeer phone;
  const std::string options = absl::StrCat(
      "OPTIONS sip:127.0.0.1:", sip_port(), " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:", phone.port(),
      ";branch=z9hG4bKev1\r\nFrom: <sip:a@b>;tag=f1\r\nTo: <sip:127.0.0.1>\r\n"
      "Call-ID: traced-event\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
  phone.SendTo(sip_port(), options);
  EXPECT_EQ(Status(phone.Receive()), 200);
  const std::string sipd_addr = absl::StrCat("udp:127.0.0.1:", sip_port());
  const std::string phone_addr = absl::StrCat("udp:127.0.0.1:", phone.port());
  const std::string in = subscriber.Receive(10s);
  EXPECT_EQ(in, absl::StrCat("E_SIP_TRACE\ncallid::traced-event\nmethod::OPTIONS\nstatus::\n",
                             "fromip::", phone_addr, "\ntoip::", sipd_addr,
                             "\nfromtag::f1\ndirection::in\nmsg::\"", options, "\"\n\n"));
  const std::string out = subscriber.Receive(10s);
  EXPECT_TRUE(absl::StartsWith(
      out, absl::StrCat("E_SIP_TRACE\ncallid::traced-event\nmethod::OPTIONS\nstatus::200\n",
                        "fromip::", sipd_addr, "\ntoip::", phone_addr,
                        "\nfromtag::f1\ndirection::out\nmsg::\"SIP/2.0 200 OK\r\n")))
      << out;
  EXPECT_EQ(Stat("traced_requests"), 1u);
  EXPECT_EQ(Stat("traced_replies"), 1u);
  // Off: no more events.
  EXPECT_EQ(mi_->Execute("sip_trace", {"off"}).Status(), "200 OK");
  std::string untraced = options;
  untraced.replace(untraced.find("z9hG4bKev1"), 10, "z9hG4bKev2");
  phone.SendTo(sip_port(), untraced);
  EXPECT_EQ(Status(phone.Receive()), 200);
  EXPECT_EQ(Stat("traced_requests"), 1u);
}

}  // namespace
}  // namespace sipd::testing
