// dialog in a real sipd: sipp UAC -> sipd (tm + dialog) -> sipp UAS calls over UDP and
// TCP, watched through the MI (active_dialogs against sipp's own count of calls,
// dlg_list), ended by dlg_end_dlg and by the dialog timeout (both sipp sides must see
// the BYE, or they fail), and a restart with db_mode 1 that keeps the confirmed call.
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/dialog/dialog_config.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_fixture.h"
#include "tests/support/sipd_harness.h"
#include "tests/tm/sip_peers.h"

namespace sipd::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

// The FIFO (for the 1.11 text shapes), then the shared dialog modules.
std::string DialogConfig(std::string_view extra = "") {
  return absl::StrCat(
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n",
      DialogModulesConfig(extra));
}

// The dialog nodes of a dlg_list reply.
std::vector<const mi::Node*> Dialogs(const mi::Reply& reply) {
  std::vector<const mi::Node*> out;
  for (const auto& node : reply.root.kids) {
    if (node->name == "dialog") out.push_back(node.get());
  }
  return out;
}

std::string Kid(const mi::Node& node, std::string_view name) {
  for (const auto& k : node.kids) {
    if (k->name == name) return k->value;
  }
  return "";
}

std::string Attribute(const mi::Node& node, std::string_view name) {
  for (const auto& a : node.attributes) {
    if (a.name == name) return a.value;
  }
  return "";
}

class DialogSipTest : public SipdFixture {
 protected:
  DialogSipTest() : SipdFixture("sipd-dialog-sip", DialogConfig, 30s) {}

  // A FIFO command's text reply.
  std::string Fifo(const std::string& command, const std::vector<std::string>& args = {}) {
    auto client =
        legacy::FifoClient::Create(sipd_->tmp_dir() + "/sipd_fifo", sipd_->tmp_dir() + "/");
    if (!client.ok()) return client.status().ToString();
    auto reply = (*client)->Execute(command, args, std::chrono::seconds(30));
    return reply.ok() ? *reply : reply.status().ToString();
  }

  // A UAS registered as bob (over TCP with `tcp`), answering `calls` calls.
  std::unique_ptr<SippProcess> StartUas(int calls, bool tcp) {
    std::vector<std::string> args = {"-m", absl::StrCat(calls)};
    if (tcp) args.insert(args.end(), {"-t", "t1"});
    auto uas = SippProcess::Start("uas_call.xml", args, work_, "uas");
    auto port = uas->SipPort(tcp);
    EXPECT_TRUE(port.ok()) << port.status();
    if (!port.ok()) return uas;
    auto r = mi_->Execute(
        "ul_add",
        {"location", "bob", absl::StrCat("sip:bob@127.0.0.1:", *port, tcp ? ";transport=tcp" : ""),
         "0", "1.00", "0", "0", "0", "4294967295"});
    EXPECT_EQ(r.code, 200u) << r.Status();
    return uas;
  }
  std::unique_ptr<SippProcess> StartUac(const std::string& scenario, bool tcp,
                                        std::vector<std::string> args) {
    const int port = tcp ? sipd_->listener_port("sip", "tcp") : sipd_->sip_port();
    std::vector<std::string> all = {"-s", "bob", absl::StrCat("127.0.0.1:", port)};
    if (tcp) all.insert(all.end(), {"-t", "t1"});
    all.insert(all.end(), args.begin(), args.end());
    return SippProcess::Start(scenario, all, work_, "uac");
  }

  // sipp's own count of calls in progress (CurrentCall of the last line of its
  // -trace_stat file, one line a second); -1 if there is none yet. `lines` receives the
  // number of lines so far.
  long SippCurrentCalls(pid_t sipp, size_t* lines = nullptr) {
    for (const auto& entry : std::filesystem::directory_iterator(work_)) {
      const std::string name = entry.path().filename().string();
      if (!absl::StrContains(name, absl::StrCat("_", sipp, "_")) || !absl::EndsWith(name, ".csv")) {
        continue;
      }
      std::ifstream in(entry.path());
      std::string header;
      std::string line;
      std::string last;
      std::getline(in, header);
      size_t n = 0;
      while (std::getline(in, line)) {
        if (!line.empty()) {
          last = line;
          ++n;
        }
      }
      if (lines != nullptr) *lines = n;
      const std::vector<std::string> columns = absl::StrSplit(header, ';');
      const std::vector<std::string> values = absl::StrSplit(last, ';');
      for (size_t i = 0; i < columns.size() && i < values.size(); ++i) {
        long v = 0;
        if (columns[i] == "CurrentCall" && absl::SimpleAtoi(values[i], &v)) return v;
      }
    }
    return -1;
  }
};

class DialogCallTest : public DialogSipTest, public ::testing::WithParamInterface<bool> {};

TEST_P(DialogCallTest, ActiveDialogsAndDlgListFollowTheCallsInProgress) {
  const bool tcp = GetParam();
  StartSipd("listen = tcp:127.0.0.1:0\n");
  constexpr int kCalls = 12;
  constexpr int kConcurrent = 4;
  auto uas = StartUas(kCalls, tcp);
  // Calls of 4 s, at most 4 at once: sipp keeps 4 calls up for most of the run.
  auto uac = StartUac("uac_call.xml", tcp,
                      {"-m", absl::StrCat(kCalls), "-l", absl::StrCat(kConcurrent), "-r", "20",
                       "-d", "4000", "-trace_stat", "-fd", "1"});
  ASSERT_TRUE(WaitForStat("active_dialogs", kConcurrent)) << uac->output();

  // Samples while the calls run: the MI agrees with sipp within one call.
  int samples = 0;
  size_t lines = 0;
  for (int i = 0; i < 3 && uac->Running(); ++i) {
    // The next line of sipp's statistics (one a second; the first is written at start).
    const size_t seen = std::max<size_t>(lines, 1);
    WaitUntil(
        [&] {
          SippCurrentCalls(uac->pid(), &lines);
          return lines > seen || !uac->Running();
        },
        5s);
    const long sipp_calls = SippCurrentCalls(uac->pid(), &lines);
    const uint64_t active = Stat("active_dialogs");
    if (sipp_calls < 0) continue;
    ++samples;
    EXPECT_LE(std::abs(static_cast<long>(active) - sipp_calls), 1)
        << "active_dialogs " << active << ", sipp " << sipp_calls;
    // dlg_list (streamed) lists the calls: distinct Call-IDs of sipp, in a live state.
    MiClient::Result listed = mi_->ExecuteStream("dlg_list");
    ASSERT_EQ(listed.code, 200u) << listed.Status();
    std::set<std::string> callids;
    for (const mi::Node* d : Dialogs(listed.reply)) {
      callids.insert(Kid(*d, "callid"));
      EXPECT_THAT(Kid(*d, "callid"), HasSubstr("@127.0.0.1"));
      EXPECT_THAT(Kid(*d, "state"), ::testing::AnyOf("1", "2", "3", "4"));
      EXPECT_EQ(Kid(*d, "from_uri").rfind("sip:alice@127.0.0.1:", 0), 0u);
    }
    EXPECT_EQ(callids.size(), Dialogs(listed.reply).size());
    EXPECT_LE(std::abs(static_cast<long>(callids.size()) - sipp_calls), 1);
  }
  EXPECT_EQ(uac->Wait(120s), 0) << uac->output();
  EXPECT_EQ(uas->Wait(30s), 0) << uas->output();
  EXPECT_GT(samples, 0);
  EXPECT_TRUE(WaitForStat("active_dialogs", 0));
  EXPECT_EQ(Stat("processed_dialogs"), static_cast<uint64_t>(kCalls));
  EXPECT_EQ(Stat("failed_dialogs"), 0u);
  EXPECT_EQ(Stat("early_dialogs"), 0u);
  EXPECT_EQ(Fifo("dlg_list"), "200 OK\n\n");
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
}

TEST_P(DialogCallTest, DlgEndDlgEndsACallAndBothSidesSeeBye) {
  const bool tcp = GetParam();
  StartSipd("listen = tcp:127.0.0.1:0\n");
  auto uas = StartUas(1, tcp);
  auto uac = StartUac("uac_call_ended_by_proxy.xml", tcp, {"-m", "1"});
  ASSERT_TRUE(WaitForStat("active_dialogs", 1)) << uac->output();
  ASSERT_TRUE(WaitUntil(
      [&] {
        MiClient::Result r = mi_->Execute("dlg_list");
        return Dialogs(r.reply).size() == 1 && Kid(*Dialogs(r.reply)[0], "state") == "4";
      },
      20s));
  MiClient::Result listed = mi_->Execute("dlg_list");
  // The callee leg names the socket its 2xx came in on.
  std::string callee_bind_addr = "none";
  for (const auto& kid : Dialogs(listed.reply)[0]->kids) {
    if (kid->name == "CALLEES" && !kid->kids.empty()) {
      callee_bind_addr = Kid(*kid->kids[0], "callee_bind_addr");
    }
  }
  EXPECT_EQ(callee_bind_addr, tcp ? absl::StrCat("tcp:127.0.0.1:", sipd_->tcp_port())
                                  : absl::StrCat("udp:127.0.0.1:", sipd_->sip_port()));
  const std::string hash = Attribute(*Dialogs(listed.reply)[0], "hash");
  const std::vector<std::string> ids = absl::StrSplit(hash, ':');
  ASSERT_EQ(ids.size(), 2u) << hash;
  EXPECT_EQ(Fifo("profile_get_size", {"callee", "bob"}),
            "200 OK\nprofile::  name=callee value=bob count=1 shared=no\n\n");

  EXPECT_EQ(Fifo("dlg_end_dlg", {ids[0], ids[1]}), "200 OK\n\n");
  // Each sipp fails unless it received the BYE and answered it.
  EXPECT_EQ(uac->Wait(30s), 0) << uac->output();
  EXPECT_EQ(uas->Wait(30s), 0) << uas->output();
  EXPECT_EQ(Stat("active_dialogs"), 0u);
  EXPECT_EQ(Fifo("dlg_list"), "200 OK\n\n");
  EXPECT_EQ(Fifo("dlg_end_dlg", {ids[0], ids[1]}), "404 Requested Dialog not found\n\n");
  EXPECT_TRUE(WaitForStat("inuse_transactions", 0));
}

INSTANTIATE_TEST_SUITE_P(Transports, DialogCallTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Tcp" : "Udp";
                         });

TEST_F(DialogSipTest, TheDialogTimeoutEndsTheCallWithByes) {
  StartSipd("modparam(\"dialog\", \"default_timeout\", 2)\n");
  auto uas = StartUas(1, false);
  auto uac = StartUac("uac_call_ended_by_proxy.xml", false, {"-m", "1"});
  EXPECT_EQ(uac->Wait(30s), 0) << uac->output();
  EXPECT_EQ(uas->Wait(30s), 0) << uas->output();
  EXPECT_TRUE(WaitForStat("expired_dialogs", 1));
  EXPECT_EQ(Stat("active_dialogs"), 0u);
}

TEST_F(DialogSipTest, ARestartKeepsTheConfirmedCallInDbMode1) {
  StartSipd("modparam(\"dialog\", \"db_mode\", 1)\n");
  auto uas = StartUas(1, false);
  auto uac = StartUac("uac_call_ended_by_proxy.xml", false, {"-m", "1"});
  ASSERT_TRUE(WaitUntil(
      [&] {
        MiClient::Result r = mi_->Execute("dlg_list");
        return Dialogs(r.reply).size() == 1 && Kid(*Dialogs(r.reply)[0], "state") == "4";
      },
      20s))
      << uac->output();
  const std::string before = Fifo("dlg_list_ctx");
  ASSERT_THAT(before, HasSubstr("\tstate:: 4\n"));

  Restart();
  EXPECT_EQ(Fifo("dlg_list_ctx"), before);
  EXPECT_EQ(Stat("active_dialogs"), 1u);
  MiClient::Result listed = mi_->Execute("dlg_list");
  ASSERT_EQ(Dialogs(listed.reply).size(), 1u);
  const std::string id = Attribute(*Dialogs(listed.reply)[0], "dialog_id");
  // The call still works: sipd ends it, and both sides (still running since before the
  // restart) get their BYE.
  EXPECT_EQ(Fifo("dlg_end_dlg", {id}), "200 OK\n\n");
  EXPECT_EQ(uac->Wait(30s), 0) << uac->output();
  EXPECT_EQ(uas->Wait(30s), 0) << uas->output();
  EXPECT_EQ(Stat("active_dialogs"), 0u);

  // And the ended call is gone from the database too.
  Restart();
  EXPECT_EQ(Fifo("dlg_list"), "200 OK\n\n");
}

}  // namespace
}  // namespace sipd::testing
