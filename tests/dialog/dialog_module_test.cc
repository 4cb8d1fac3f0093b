// The dialog module driven through tm's callback API with real parsed SIP messages
// (tests/dialog/fake_tm.h), its MI commands through the one dispatch path, checked
// against the 1.11 text layout (spec 2, 8.2), and its SQLite persistence across a
// "restart" (a new shared memory and module on the same database file).
#include <stdlib.h>
#include <time.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "registry/dispatcher.h"
#include "registry/events.h"
#include "registry/reply_writer.h"
#include "registry/text_format.h"
#include "sipd/modules/dialog/dialog.h"
#include "sipd/modules/usrloc/usrloc.h"
#include "tests/dialog/fake_tm.h"
#include "tests/usrloc/test_support.h"

namespace sipd::dialog {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int64_t kNow = 1700000000;  // 2023-11-14 22:13:20 UTC

// FIFO-like streaming writer: an empty line after every flush and at the end.
class TextWriter : public mi::ReplyWriter {
 public:
  void WriteStatus(const mi::Reply& reply) override {
    mi::AppendStatusLine(out, reply.code, reply.reason);
  }
  void WriteNode(const mi::Node& node, int depth) override {
    mi::AppendNodeLine(out, node, depth, "\t");
  }
  void EndFlush() override {
    out += "\n";
    ++flushes;
  }
  void EndReply() override { out += "\n"; }
  std::string out;
  int flushes = 0;
};

// One sipd "run": shared memory, a tm double and the dialog module.
struct Instance {
  explicit Instance(std::vector<std::pair<std::string, ParamValue>> params, int64_t* now) {
    core.AddModule(&tm);
    for (auto& [name, value] : params) {
      absl::Status s = module.SetParam(name, value);
      EXPECT_TRUE(s.ok()) << name << ": " << s;
    }
    module.set_clock([now] { return *now; });
    core.AddModule(&module);
    status = module.Init(core);
  }
  testing::FakeCore core;
  testing::FakeTm tm;
  DialogModule module;
  absl::Status status;
};

class DialogModuleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("TZ", "UTC", 1);
    tzset();
    char dir[] = "/tmp/sipd-dialog-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    instance_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Init(std::vector<std::pair<std::string, ParamValue>> params = {}) {
    instance_ = std::make_unique<Instance>(std::move(params), &now_);
    ASSERT_TRUE(instance_->status.ok()) << instance_->status;
  }
  Dialogs& dialogs() { return instance_->module.dialogs(); }
  testing::FakeTm& tm() { return instance_->tm; }

  mi::DispatchResult Run(std::string command, std::vector<std::string> args = {},
                         mi::ReplyWriter* writer = nullptr) {
    mi::Request request{.command = std::move(command), .args = {}, .args_error = absl::OkStatus()};
    for (auto& a : args) request.args.push_back(mi::Argument{"", std::move(a)});
    return instance_->core.NewDispatcher({})->Run(request, writer);
  }
  std::string Text(std::string command, std::vector<std::string> args = {}) {
    mi::DispatchResult r = Run(std::move(command), std::move(args));
    if (r.outcome != mi::Outcome::kReply) return absl::StrCat("<outcome> ", r.reply.reason);
    return mi::RenderText(r.reply, "\t", true);
  }
  std::string Status(std::string command, std::vector<std::string> args = {}) {
    mi::DispatchResult r = Run(std::move(command), std::move(args));
    return absl::StrCat(r.reply.code, " ", r.reply.reason);
  }
  uint64_t Stat(std::string_view name) {
    return instance_->core.stats().Value(name).value_or(99999);
  }

  // An established call: INVITE, 180, 200, ACK. Returns the dialog id.
  uint64_t Call(const testing::CallText& call,
                const std::vector<std::string>& reply_rr = {"<sip:192.0.2.50;lr;did=X>"}) {
    testing::FakeTm::Relayed r = tm().Relay(call.Invite(), testing::CallerPeer());
    EXPECT_NE(r.cookie, 0u);
    // The 2xx carries sipd's own Record-Route with the did the module asked for.
    std::vector<std::string> rr;
    for (std::string e : reply_rr) {
      const size_t at = e.find("did=X");
      if (at != std::string::npos) e.replace(at, 5, r.rr_params.at(0));
      rr.push_back(e);
    }
    tm().Reply(call.Reply(180, "Ringing", true, rr), r.cookie);
    tm().Reply(call.Reply(200, "OK", true, rr), r.cookie);
    tm().Relay(call.InDialog("ACK", 1), testing::CallerPeer(), tm::TransactionId{});
    return r.cookie;
  }

  std::optional<DialogInfo> Get(uint64_t id) {
    return dialogs().table().Get(static_cast<uint32_t>(id >> 32),
                                 static_cast<uint32_t>(id & 0xFFFFFFFFu));
  }

  int64_t now_ = kNow;
  std::string dir_;
  std::unique_ptr<Instance> instance_;
};

TEST_F(DialogModuleTest, CommandsAndStatisticsAreDeclaredAsIn111) {
  Init();
  std::vector<std::string> names;
  for (const auto& c : instance_->core.mi().commands()) {
    if (c->module() == "dialog") names.push_back(c->name());
  }
  EXPECT_THAT(names, ElementsAre("dlg_list", "dlg_list_ctx", "dlg_end_dlg", "dlg_db_sync",
                                 "dlg_restore_db", "profile_get_size", "profile_list_dlgs",
                                 "profile_get_values", "list_all_profiles"));
  EXPECT_EQ(Text("get_statistics", {"dialog:"}),
            "200 OK\n"
            "dialog:active_dialogs:: 0\n"
            "dialog:early_dialogs:: 0\n"
            "dialog:processed_dialogs:: 0\n"
            "dialog:expired_dialogs:: 0\n"
            "dialog:failed_dialogs:: 0\n"
            "dialog:create_sent:: 0\n"
            "dialog:update_sent:: 0\n"
            "dialog:delete_sent:: 0\n"
            "dialog:create_recv:: 0\n"
            "dialog:update_recv:: 0\n"
            "dialog:delete_recv:: 0\n\n");
}

TEST_F(DialogModuleTest, NeedsTm) {
  testing::FakeCore core;
  DialogModule module;
  absl::Status s = module.Init(core);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("tm"));
}

TEST_F(DialogModuleTest, ACallGoesThroughEveryStateAndTheStatisticsFollow) {
  Init();
  testing::CallText call;
  testing::FakeTm::Relayed r = tm().Relay(call.Invite(), testing::CallerPeer());
  ASSERT_NE(r.cookie, 0u);
  ASSERT_EQ(r.rr_params.size(), 1u);
  const uint64_t id = r.cookie;
  EXPECT_EQ(r.rr_params[0],
            absl::StrCat("did=", absl::Hex(id >> 32), ".", absl::Hex(id & 0xFFFFFFFFu)));
  EXPECT_EQ(Get(id)->state, DialogState::kUnconfirmed);
  EXPECT_EQ(Stat("processed_dialogs"), 1u);

  tm().Reply(call.Reply(100, "Trying", false), id);
  EXPECT_EQ(Get(id)->state, DialogState::kUnconfirmed);
  tm().Reply(call.Reply(180, "Ringing", true), id);
  EXPECT_EQ(Get(id)->state, DialogState::kEarly);
  EXPECT_EQ(Stat("early_dialogs"), 1u);
  EXPECT_EQ(Stat("active_dialogs"), 0u);

  tm().Reply(call.Reply(200, "OK", true), id);
  std::optional<DialogInfo> d = Get(id);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->state, DialogState::kConfirmedNoAck);
  EXPECT_EQ(d->start_time, kNow);
  EXPECT_EQ(d->timeout, kNow + 43200);
  ASSERT_TRUE(d->callee.has_value());
  EXPECT_EQ(d->callee->tag, "bob-tag");
  EXPECT_EQ(d->callee->contact, "sip:bob@192.0.2.9:5060");
  EXPECT_EQ(Stat("early_dialogs"), 0u);
  EXPECT_EQ(Stat("active_dialogs"), 1u);

  tm().Relay(call.InDialog("ACK", 1), testing::CallerPeer(), tm::TransactionId{});
  EXPECT_EQ(Get(id)->state, DialogState::kConfirmed);

  // A re-INVITE from the callee moves the callee's CSeq.
  tm().Relay(call.InDialog("INVITE", 7, /*from_callee=*/true), testing::CallerPeer());
  EXPECT_EQ(Get(id)->callee->cseq, 7u);

  tm().Relay(call.InDialog("BYE", 2), testing::CallerPeer());
  EXPECT_FALSE(Get(id).has_value());
  EXPECT_EQ(Stat("active_dialogs"), 0u);
  EXPECT_EQ(Stat("failed_dialogs"), 0u);
  EXPECT_EQ(Text("dlg_list"), "200 OK\n\n");
}

TEST_F(DialogModuleTest, FailedSetupsEndTheDialog) {
  Init();
  testing::CallText a;
  a.callid = "busy";
  const uint64_t busy = tm().Relay(a.Invite(), testing::CallerPeer()).cookie;
  tm().Reply(a.Reply(180, "Ringing", true), busy);
  tm().Reply(a.Reply(486, "Busy Here", true), busy);
  EXPECT_FALSE(Get(busy).has_value());

  testing::CallText b;
  b.callid = "timeout";
  const uint64_t timeout = tm().Relay(b.Invite(), testing::CallerPeer()).cookie;
  tm().LocalReply(408, timeout);  // sipd's own 408: no reply message
  EXPECT_FALSE(Get(timeout).has_value());

  testing::CallText c;
  c.callid = "silent";
  const uint64_t silent = tm().Relay(c.Invite(), testing::CallerPeer()).cookie;
  tm().End(silent, 0);  // the transaction went away without a final reply upstream
  EXPECT_FALSE(Get(silent).has_value());

  EXPECT_EQ(Stat("failed_dialogs"), 3u);
  EXPECT_EQ(Stat("early_dialogs"), 0u);
  EXPECT_EQ(Stat("processed_dialogs"), 3u);
}

TEST_F(DialogModuleTest, AnAckOrByeThatOvertakesThe2xxCallback) {
  Init();
  // The ACK reached another SIP worker before this one ran the 2xx's callback.
  testing::CallText a;
  const uint64_t id = tm().Relay(a.Invite(), testing::CallerPeer()).cookie;
  tm().Relay(a.InDialog("ACK", 1), testing::CallerPeer(), tm::TransactionId{});
  tm().Reply(a.Reply(200, "OK", true), id);
  EXPECT_EQ(Get(id)->state, DialogState::kConfirmed);

  // The BYE did (no pause between ACK and BYE): the late 2xx finds nothing.
  testing::CallText b;
  b.callid = "fast";
  const uint64_t fast = tm().Relay(b.Invite(), testing::CallerPeer()).cookie;
  tm().Relay(b.InDialog("BYE", 2), testing::CallerPeer());
  tm().Reply(b.Reply(200, "OK", true), fast);
  EXPECT_FALSE(Get(fast).has_value());
  EXPECT_EQ(Stat("active_dialogs"), 1u);
}

TEST_F(DialogModuleTest, DlgListShowsTheSpecLayout) {
  Init();
  testing::CallText call;
  call.invite_rr = {"<sip:edge1.example.com;lr>"};
  const uint64_t id = Call(call, {"<sip:callee-proxy.example.com;lr>", "<sip:192.0.2.50;lr;did=X>",
                                  "<sip:edge1.example.com;lr>"});
  const std::string hash = absl::StrCat(id >> 32, ":", id & 0xFFFFFFFFu);
  const std::string expected = absl::StrCat(
      "200 OK\n"
      "dialog::  hash=",
      hash, " dialog_id=", id,
      "\n"
      "\tstate:: 4\n"
      "\tuser_flags:: 0\n"
      "\ttimestart:: 1700000000\n"
      "\tdatestart:: 2023-11-14 22:13:20\n"
      "\ttimeout:: 1700043200\n"
      "\tdateout:: 2023-11-15 10:13:20\n"
      "\tcallid:: call-1@192.0.2.1\n"
      "\tfrom_uri:: sip:alice@example.com\n"
      "\tto_uri:: sip:bob@sipd.example.com\n"
      "\tcaller_tag:: alice-tag\n"
      "\tcaller_contact:: sip:alice@192.0.2.1:5070\n"
      "\tcallee_cseq:: 1\n"
      "\tcaller_route_set:: <sip:edge1.example.com;lr>\n"
      "\tcaller_bind_addr:: udp:192.0.2.50:5060\n"
      "\tCALLEES:: \n"
      "\t\tcallee:: \n"
      "\t\t\tcallee_tag:: bob-tag\n"
      "\t\t\tcallee_contact:: sip:bob@192.0.2.9:5060\n"
      "\t\t\tcaller_cseq:: 1\n"
      "\t\t\tcallee_route_set:: <sip:callee-proxy.example.com;lr>\n"
      "\t\t\tcallee_bind_addr:: \n"
      "\n");
  EXPECT_EQ(Text("dlg_list"), expected);
  EXPECT_EQ(Text("dlg_list", {"call-1@192.0.2.1"}), expected);
  EXPECT_EQ(Text("dlg_list", {"call-1@192.0.2.1", "alice-tag"}), expected);
  EXPECT_EQ(Status("dlg_list", {"call-1@192.0.2.1", "other-tag"}), "404 No such dialog");
  EXPECT_EQ(Status("dlg_list", {"nope"}), "404 No such dialog");
  EXPECT_EQ(Status("dlg_list", {""}), "400 Invalid Call-ID specified");
  EXPECT_EQ(Status("dlg_list", {"a", "b", "c"}), "400 Too few or too many arguments");

  // Unconfirmed: no start, no timeout, no callee.
  testing::CallText pending;
  pending.callid = "pending";
  tm().Relay(pending.Invite(), testing::CallerPeer());
  const std::string text = Text("dlg_list", {"pending"});
  EXPECT_THAT(text, HasSubstr("\tstate:: 1\n\tuser_flags:: 0\n\ttimestart:: 0\n\ttimeout:: 0\n"
                              "\tcallid:: pending\n"));
  EXPECT_THAT(text, HasSubstr("\tcaller_route_set:: \n\tcaller_bind_addr:: "
                              "udp:192.0.2.50:5060\n\tCALLEES:: \n\n"));
}

TEST_F(DialogModuleTest, DlgListFlushesEvery50DialogsAndPages) {
  Init({{"hash_size", int64_t{16}}});
  for (int i = 0; i < 120; ++i) {
    testing::CallText c;
    c.callid = absl::StrCat("c", i);
    tm().Relay(c.Invite(), testing::CallerPeer());
  }
  TextWriter writer;
  mi::DispatchResult r = Run("dlg_list", {}, &writer);
  ASSERT_EQ(r.outcome, mi::Outcome::kReply);
  EXPECT_EQ(writer.flushes, 2);  // after the 50th and the 100th
  size_t dialogs = 0;
  for (size_t at = writer.out.find("\ndialog::"); at != std::string::npos;
       at = writer.out.find("\ndialog::", at + 1)) {
    ++dialogs;
  }
  EXPECT_EQ(dialogs, 120u);

  // index count: the counter first, then that page in table order.
  mi::DispatchResult all = Run("dlg_list");
  mi::DispatchResult page = Run("dlg_list", {"10", "5"});
  ASSERT_EQ(page.reply.root.kids.size(), 6u);
  EXPECT_EQ(page.reply.root.kids[0]->name, "dlg_counter");
  EXPECT_EQ(page.reply.root.kids[0]->value, "120");
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(page.reply.root.kids[i + 1]->attributes, all.reply.root.kids[10 + i]->attributes);
  }
  EXPECT_EQ(Run("dlg_list", {"118", "5"}).reply.root.kids.size(), 3u);
}

TEST_F(DialogModuleTest, DlgEndDlgSendsByeToBothSidesWithTheirCSeqAndRoutes) {
  Init();
  testing::CallText call;
  call.invite_rr = {"<sip:edge1.example.com;lr>"};
  const uint64_t id = Call(call, {"<sip:callee-proxy.example.com;lr>", "<sip:192.0.2.50;lr;did=X>",
                                  "<sip:edge1.example.com;lr>"});
  tm().Relay(call.InDialog("INFO", 5), testing::CallerPeer());  // caller CSeq 5
  ASSERT_EQ(Status("dlg_end_dlg", {absl::StrCat(id), "X-Reason: test"}), "200 OK");
  EXPECT_FALSE(Get(id).has_value());
  EXPECT_EQ(Stat("active_dialogs"), 0u);
  ASSERT_EQ(tm().sent.size(), 2u);

  const tm::UacRequest& to_callee = tm().sent[0];
  EXPECT_EQ(to_callee.method, "BYE");
  EXPECT_EQ(to_callee.request_uri, "sip:bob@192.0.2.9:5060");
  EXPECT_EQ(to_callee.next_hop, "");
  EXPECT_EQ(to_callee.headers,
            "Route: <sip:callee-proxy.example.com;lr>\r\n"
            "From: <sip:alice@example.com>;tag=alice-tag\r\n"
            "To: <sip:bob@sipd.example.com>;tag=bob-tag\r\n"
            "CSeq: 6 BYE\r\n"
            "Call-ID: call-1@192.0.2.1\r\n"
            "Max-Forwards: 70\r\n"
            "X-Reason: test\r\n");

  const tm::UacRequest& to_caller = tm().sent[1];
  EXPECT_EQ(to_caller.request_uri, "sip:alice@192.0.2.1:5070");
  EXPECT_EQ(to_caller.socket, "udp:192.0.2.50:5060");
  // Through the caller's proxy (its route set), so no next hop of our own.
  EXPECT_EQ(to_caller.next_hop, "");
  EXPECT_EQ(to_caller.headers,
            "Route: <sip:edge1.example.com;lr>\r\n"
            "From: <sip:bob@sipd.example.com>;tag=bob-tag\r\n"
            "To: <sip:alice@example.com>;tag=alice-tag\r\n"
            "CSeq: 2 BYE\r\n"
            "Call-ID: call-1@192.0.2.1\r\n"
            "Max-Forwards: 70\r\n"
            "X-Reason: test\r\n");
}

TEST_F(DialogModuleTest, DlgEndDlgArgumentForms) {
  Init();
  testing::CallText a;
  a.callid = "a";
  const uint64_t id_a = Call(a);
  // h_entry h_id (decimal), a direct caller: the BYE goes to where its INVITE came from.
  ASSERT_EQ(Status("dlg_end_dlg", {absl::StrCat(id_a >> 32), absl::StrCat(id_a & 0xFFFFFFFF)}),
            "200 OK");
  ASSERT_EQ(tm().sent.size(), 2u);
  EXPECT_EQ(tm().sent[1].next_hop, "sip:192.0.2.1:5070");
  EXPECT_EQ(tm().sent[1].headers.find("Route:"), std::string::npos);

  testing::CallText b;
  b.callid = "b";
  const uint64_t id_b = Call(b);
  ASSERT_EQ(Status("dlg_end_dlg", {absl::StrCat(id_b >> 32),
                                   absl::StrCat("0x", absl::Hex(id_b & 0xFFFFFFFF)), "X-A: 1"}),
            "200 OK");
  EXPECT_THAT(tm().sent.back().headers, HasSubstr("X-A: 1\r\n"));

  EXPECT_EQ(Status("dlg_end_dlg"), "400 Too few or too many arguments");
  EXPECT_EQ(Status("dlg_end_dlg", {"x"}), "400 Bad parameter");
  EXPECT_EQ(Status("dlg_end_dlg", {"1", "hdr", "more"}), "400 Bad parameter");
  EXPECT_EQ(Status("dlg_end_dlg", {absl::StrCat(id_a)}), "404 Requested Dialog not found");

  // Not confirmed: nothing to BYE.
  testing::CallText c;
  c.callid = "c";
  const uint64_t id_c = tm().Relay(c.Invite(), testing::CallerPeer()).cookie;
  EXPECT_EQ(Status("dlg_end_dlg", {absl::StrCat(id_c)}), "500 Operation failed");
  EXPECT_TRUE(Get(id_c).has_value());

  // BYEs that cannot be sent: the dialog ends anyway, the MI says so.
  testing::CallText d;
  d.callid = "d";
  const uint64_t id_d = Call(d);
  tm().send_status = absl::UnavailableError("no route");
  EXPECT_EQ(Status("dlg_end_dlg", {absl::StrCat(id_d)}), "500 Operation failed");
  EXPECT_FALSE(Get(id_d).has_value());
}

TEST_F(DialogModuleTest, TimeoutEndsTheDialogWithByes) {
  Init({{"default_timeout", int64_t{30}}});
  testing::CallText call;
  const uint64_t id = Call(call);
  instance_->core.RunTimers();
  EXPECT_TRUE(Get(id).has_value());
  now_ += 30;
  instance_->core.RunTimers();
  EXPECT_FALSE(Get(id).has_value());
  EXPECT_EQ(Stat("expired_dialogs"), 1u);
  EXPECT_EQ(Stat("active_dialogs"), 0u);
  ASSERT_EQ(tm().sent.size(), 2u);
  EXPECT_THAT(tm().sent[0].headers, HasSubstr("CSeq: 2 BYE"));

  // A setup that never ends (its INVITE's events were lost) goes after kSetupLimit.
  testing::CallText stale;
  stale.callid = "stale";
  const uint64_t s = tm().Relay(stale.Invite(), testing::CallerPeer()).cookie;
  now_ += kSetupLimit + 1;
  instance_->core.RunTimers();
  EXPECT_FALSE(Get(s).has_value());
  EXPECT_EQ(Stat("failed_dialogs"), 1u);
  EXPECT_EQ(tm().sent.size(), 2u);
}

TEST_F(DialogModuleTest, ProfilesFromModparams) {
  Init({{"profiles_with_value", std::string("caller/from_user; callee/ruri_user")},
        {"profiles_no_value", std::string("inbound; trunk/source_ip=192.0.2.77")}});
  EXPECT_EQ(Text("list_all_profiles"),
            "200 OK\ncaller:: 1\ncallee:: 1\ninbound:: 0\ntrunk:: 0\n\n");
  EXPECT_EQ(Status("list_all_profiles", {"x"}), "401 Too few or too many arguments");

  for (int i = 0; i < 3; ++i) {
    testing::CallText c;
    c.callid = absl::StrCat("p", i);
    c.from_user = i < 2 ? "alice" : "carol";
    c.ruri_user = "bob";
    tm().Relay(c.Invite(), testing::CallerPeer());
  }
  testing::CallText t;
  t.callid = "trunk-call";
  t.from_user = "dave";
  tm::Peer trunk = testing::CallerPeer();
  trunk.ip = "192.0.2.77";
  tm().Relay(t.Invite(), trunk);

  EXPECT_EQ(Text("profile_get_size", {"caller"}),
            "200 OK\nprofile::  name=caller value= count=4 shared=no\n\n");
  EXPECT_EQ(Text("profile_get_size", {"caller", "alice"}),
            "200 OK\nprofile::  name=caller value=alice count=2 shared=no\n\n");
  EXPECT_EQ(Text("profile_get_size", {"inbound"}),
            "200 OK\nprofile::  name=inbound value= count=4 shared=no\n\n");
  EXPECT_EQ(Text("profile_get_size", {"trunk", "ignored"}),
            "200 OK\nprofile::  name=trunk value=ignored count=1 shared=no\n\n");
  EXPECT_EQ(Status("profile_get_size", {"nope"}), "404 Profile not found");
  EXPECT_EQ(Status("profile_get_size", {"caller", ""}), "400 Bad parameter");
  EXPECT_EQ(Status("profile_get_size"), "400 Too few or too many arguments");

  EXPECT_EQ(Text("profile_get_values", {"caller"}),
            "200 OK\nvalue:: alice count=2\nvalue:: carol count=1\nvalue:: dave count=1\n\n");
  EXPECT_EQ(Text("profile_get_values", {"callee", "ignored"}), "200 OK\nvalue:: bob count=4\n\n");
  EXPECT_EQ(Text("profile_get_values", {"trunk"}), "200 OK\nvalue:: WITHOUT VALUE count=1\n\n");

  mi::DispatchResult listed = Run("profile_list_dlgs", {"caller", "alice"});
  ASSERT_EQ(listed.reply.root.kids.size(), 2u);
  EXPECT_EQ(listed.reply.root.kids[0]->name, "dialog");
  EXPECT_EQ(Run("profile_list_dlgs", {"trunk"}).reply.root.kids.size(), 1u);
  EXPECT_EQ(Status("profile_list_dlgs", {"nope"}), "404 Profile not found");

  // dlg_list_ctx: the profile links as the dialog's context.
  EXPECT_THAT(Text("dlg_list_ctx", {"trunk-call"}),
              HasSubstr("\tCALLEES:: \n\tcontext:: \n\t\tprofiles:: \n\t\t\tcaller:: dave\n"
                        "\t\t\tcallee:: bob\n\t\t\tinbound:: \n\t\t\ttrunk:: \n\n"));
}

TEST_F(DialogModuleTest, BadProfileModparams) {
  DialogModule m;
  EXPECT_FALSE(m.SetParam("profiles_with_value", std::string("caller")).ok());
  EXPECT_FALSE(m.SetParam("profiles_with_value", std::string("caller/nothing")).ok());
  EXPECT_FALSE(m.SetParam("profiles_no_value", std::string("bad name")).ok());
  EXPECT_FALSE(m.SetParam("profiles_no_value", std::string("x/source_ip")).ok());
  EXPECT_TRUE(m.SetParam("profiles_no_value", std::string("a; b")).ok());
  EXPECT_FALSE(m.SetParam("profiles_with_value", std::string("a/from_user")).ok());  // twice
  EXPECT_FALSE(m.SetParam("db_mode", int64_t{3}).ok());
  EXPECT_FALSE(m.SetParam("hash_size", int64_t{0}).ok());
  EXPECT_FALSE(m.SetParam("nope", int64_t{1}).ok());
}

TEST_F(DialogModuleTest, EveryStateChangeRaisesEDlgStateChanged) {
  Init();
  mi::EventRegistry events;
  mi::LocalEventBackend backend;
  events.SetBackend(&backend);
  ASSERT_TRUE(dialogs().PublishEvents(events).ok());
  const mi::Event* e = events.Find("E_DLG_STATE_CHANGED");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->module(), "dialog");
  mi::EventConsumer* consumer = *backend.AddConsumer("test", 1 << 20);
  consumer->AddInterest(e->id());

  testing::CallText call;
  const uint64_t id = Call(call);
  tm().Relay(call.InDialog("BYE", 2), testing::CallerPeer());
  std::vector<std::string> raised;
  mi::RaisedEvent event;
  while (consumer->Pop(event)) {
    std::string line;
    for (const mi::EventValue& v : event.values) {
      if (!line.empty()) line += " ";
      line += std::holds_alternative<int64_t>(v) ? absl::StrCat(std::get<int64_t>(v))
                                                 : std::get<std::string>(v);
    }
    raised.push_back(line);
  }
  const std::string ids =
      absl::StrCat(id >> 32, " ", id & 0xFFFFFFFFu, " call-1@192.0.2.1 alice-tag");
  EXPECT_THAT(raised,
              ElementsAre(absl::StrCat(ids, "  0 1"), absl::StrCat(ids, " bob-tag 1 2"),
                          absl::StrCat(ids, " bob-tag 2 3"), absl::StrCat(ids, " bob-tag 3 4"),
                          absl::StrCat(ids, " bob-tag 4 5")));
}

TEST_F(DialogModuleTest, HostileInviteIsNotTrackedAndNothingBreaks) {
  Init();
  testing::CallText call;
  call.callid = std::string(5000, 'x');
  testing::FakeTm::Relayed r = tm().Relay(call.Invite(), testing::CallerPeer());
  EXPECT_EQ(r.cookie, 0u);
  EXPECT_EQ(Text("dlg_list"), "200 OK\n\n");
  // Events for unknown dialogs are ignored.
  tm().Reply(call.Reply(200, "OK", true), 0x1234567800000001ull);
  tm().Relay(call.InDialog("BYE", 2), testing::CallerPeer());
  EXPECT_EQ(Stat("active_dialogs"), 0u);
}

TEST_F(DialogModuleTest, DbModeZeroRefusesTheDatabaseCommands) {
  Init();
  EXPECT_EQ(Status("dlg_db_sync"), "400 Cannot sync in no-db mode");
  EXPECT_EQ(Status("dlg_restore_db"), "400 Cannot restore db in no-db mode!");
  EXPECT_EQ(Status("dlg_db_sync", {"x"}), "400 Too few or too many arguments");
}

// --- persistence ---

class DialogPersistenceTest : public DialogModuleTest {
 protected:
  std::vector<std::pair<std::string, ParamValue>> Params(int db_mode) {
    return {{"db_mode", int64_t{db_mode}},
            {"db_url", absl::StrCat("sqlite://", dir_, "/dialog.sqlite")},
            {"profiles_with_value", std::string("caller/from_user")}};
  }
  // Rows in the database right now (another connection).
  std::vector<DialogInfo> Rows() {
    auto writer =
        sqlite::GroupCommitWriter::Create(instance_->core.shm(), {.path = dir_ + "/dialog.sqlite"});
    EXPECT_TRUE(writer.ok());
    DialogStore store({"caller"});
    (*writer)->AddClient(&store);
    std::vector<DialogInfo> rows;
    EXPECT_TRUE((*writer)
                    ->WithConnection([&](sqlite3* db) -> absl::Status {
                      auto loaded = store.LoadAll(db);
                      if (loaded.ok()) rows = std::move(*loaded);
                      return loaded.status();
                    })
                    .ok());
    return rows;
  }
};

TEST_F(DialogPersistenceTest, WriteThroughKeepsConfirmedDialogsAcrossARestart) {
  Init(Params(1));
  testing::CallText call;
  testing::FakeTm::Relayed r = tm().Relay(call.Invite(), testing::CallerPeer());
  EXPECT_TRUE(Rows().empty());  // unconfirmed dialogs are not stored
  tm().Reply(call.Reply(200, "OK", true), r.cookie);
  // Committed before the callback returned.
  std::vector<DialogInfo> rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id(), r.cookie);
  EXPECT_EQ(rows[0].state, DialogState::kConfirmedNoAck);
  tm().Relay(call.InDialog("ACK", 1), testing::CallerPeer(), tm::TransactionId{});
  EXPECT_EQ(Rows()[0].state, DialogState::kConfirmed);
  testing::CallText other;
  other.callid = "other";
  const uint64_t gone = Call(other);
  tm().Relay(other.InDialog("BYE", 2), testing::CallerPeer());
  EXPECT_EQ(Rows().size(), 1u);
  const std::string before = Text("dlg_list_ctx");

  // Restart: a new shared memory and module on the same file.
  now_ += 100;
  instance_.reset();
  Init(Params(1));
  EXPECT_EQ(Text("dlg_list_ctx"), before);
  EXPECT_FALSE(Get(gone).has_value());
  EXPECT_EQ(Stat("active_dialogs"), 1u);
  EXPECT_EQ(Text("profile_get_size", {"caller", "alice"}),
            "200 OK\nprofile::  name=caller value=alice count=1 shared=no\n\n");
  // The loaded dialog still works: BYE from the callee ends it (and its row).
  tm().Relay(call.InDialog("BYE", 9, /*from_callee=*/true), testing::CallerPeer());
  EXPECT_FALSE(Get(r.cookie).has_value());
  EXPECT_TRUE(Rows().empty());
  // New dialogs do not reuse the loaded ids.
  testing::CallText next;
  next.callid = call.callid;  // same bucket
  const uint64_t again = tm().Relay(next.Invite(), testing::CallerPeer()).cookie;
  EXPECT_NE(again, r.cookie);
}

TEST_F(DialogPersistenceTest, WriteBackWritesOnTheTimer) {
  Init(Params(2));
  testing::CallText call;
  Call(call);
  EXPECT_TRUE(Rows().empty());
  now_ += 60;
  instance_->core.RunTimers();
  EXPECT_EQ(Rows().size(), 1u);
  tm().Relay(call.InDialog("BYE", 2), testing::CallerPeer());
  EXPECT_EQ(Rows().size(), 1u);
  instance_->module.Shutdown();  // the last flush
  EXPECT_TRUE(Rows().empty());
}

TEST_F(DialogPersistenceTest, RestoreRewritesAndSyncMergesTheDatabase) {
  Init(Params(1));
  testing::CallText a;
  a.callid = "a";
  const uint64_t id_a = Call(a);
  // Someone edits the row: a later timeout and a higher caller CSeq (dlg_db_sync
  // takes them, as 1.11 does when the states are equal).
  ASSERT_TRUE(dialogs()
                  .writer()
                  ->WithConnection([&](sqlite3* db) {
                    return sqlite::Exec(db, "UPDATE dialog SET timeout=1800000000, caller_cseq=40");
                  })
                  .ok());
  EXPECT_EQ(Status("dlg_db_sync"), "200 OK");
  EXPECT_EQ(Get(id_a)->timeout, 1800000000);
  EXPECT_EQ(Get(id_a)->caller.cseq, 40u);

  // dlg_restore_db: the table is rewritten from memory.
  ASSERT_TRUE(
      dialogs()
          .writer()
          ->WithConnection([&](sqlite3* db) { return sqlite::Exec(db, "DELETE FROM dialog"); })
          .ok());
  EXPECT_TRUE(Rows().empty());
  EXPECT_EQ(Status("dlg_restore_db"), "200 OK");
  ASSERT_EQ(Rows().size(), 1u);
  EXPECT_EQ(Rows()[0].id(), id_a);
}

TEST_F(DialogPersistenceTest, SharesTheWriterAndFileWithUsrloc) {
  std::unique_ptr<Instance> shared;
  testing::FakeCore core;
  usrloc::UsrlocModule ul;
  ASSERT_TRUE(ul.SetParam("db_mode", int64_t{1}).ok());
  ASSERT_TRUE(ul.SetParam("db_url", absl::StrCat("sqlite://", dir_, "/both.sqlite")).ok());
  core.AddModule(&ul);
  ASSERT_TRUE(ul.Init(core).ok());
  testing::FakeTm tm;
  core.AddModule(&tm);
  DialogModule dlg;
  ASSERT_TRUE(dlg.SetParam("db_mode", int64_t{1}).ok());
  core.AddModule(&dlg);
  ASSERT_TRUE(dlg.Init(core).ok());
  EXPECT_EQ(dlg.dialogs().writer(), ul.usrloc().writer().get());
  EXPECT_EQ(dlg.dialogs().options().db_path, dir_ + "/both.sqlite");
  // One file, one writer, one maintenance timer (checkpoints, the deferred backstop).
  EXPECT_EQ(core.TimersNamed("db-writer").size(), 1u);
}

TEST_F(DialogPersistenceTest, ADialogDatabaseOfItsOwnGetsTheWritersTimer) {
  testing::FakeCore core;
  testing::FakeTm tm;
  core.AddModule(&tm);
  DialogModule dlg;
  ASSERT_TRUE(dlg.SetParam("db_mode", int64_t{2}).ok());
  ASSERT_TRUE(dlg.SetParam("db_url", absl::StrCat("sqlite://", dir_, "/own.sqlite")).ok());
  core.AddModule(&dlg);
  ASSERT_TRUE(dlg.Init(core).ok());
  EXPECT_EQ(core.TimersNamed("db-writer").size(), 1u);
}

}  // namespace
}  // namespace sipd::dialog
