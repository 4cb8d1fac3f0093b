// The typed sipd.dialog.v1.DialogService in a real sipd (tm + dialog) with sipp calls
// through it, called through the generated C++ stubs as a stub user would: the listings
// show the live calls as the MI shows them, GetProfileSize agrees with profile_get_size,
// EndDialog ends the calls (both sipp sides fail unless they get sipd's BYE), and errors
// carry the rich details (ErrorInfo, BadRequest).
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "sipd/core/mi_security.h"
#include "sipd/dialog/v1/dialog.grpc.pb.h"
#include "tests/dialog/dialog_config.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_fixture.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/temp_dir.h"
#include "tests/tm/sip_peers.h"

namespace sipd::testing {
namespace {

namespace dlgv1 = ::sipd::dialog::v1;
using grpc::StatusCode;
using namespace std::chrono_literals;

// The details of a non-OK status, as status.FromError(err).Details() shows them.
struct Details {
  google::rpc::ErrorInfo info;
  bool has_info = false;
  google::rpc::BadRequest bad_request;
  bool has_bad_request = false;
};

Details DetailsOf(const grpc::Status& status) {
  Details out;
  google::rpc::Status rpc_status;
  EXPECT_TRUE(rpc_status.ParseFromString(status.error_details()))
      << "no google.rpc.Status in grpc-status-details-bin";
  EXPECT_EQ(rpc_status.code(), static_cast<int>(status.error_code()));
  for (const auto& any : rpc_status.details()) {
    if (any.UnpackTo(&out.info)) out.has_info = true;
    if (any.UnpackTo(&out.bad_request)) out.has_bad_request = true;
  }
  EXPECT_TRUE(out.has_info) << "no google.rpc.ErrorInfo";
  EXPECT_EQ(out.info.domain(), "sipd");
  return out;
}

// The BadRequest field of an INVALID_ARGUMENT status; "" if none.
std::string BadField(const grpc::Status& status) {
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT) << status.error_message();
  const Details d = DetailsOf(status);
  if (!d.has_bad_request || d.bad_request.field_violations_size() != 1) return "";
  return d.bad_request.field_violations(0).field();
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + 30s);
  return context;
}

class DialogTypedTest : public SipdFixture {
 protected:
  DialogTypedTest() : SipdFixture("sipd-dialog-typed", DialogModulesConfig, 30s) {}

  void SetUp() override {
    SipdFixture::SetUp();
    if (HasFatalFailure()) return;
    StartSipd();
    if (HasFatalFailure()) return;
    dialogs_ = dlgv1::DialogService::NewStub(
        grpc::CreateChannel(sipd_->grpc_target(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    PrintLogOnFailure();
    uac_.reset();
    uas_.reset();
    sipd_.reset();
  }

  // A UAS registered as bob answering `calls` calls, and a UAC making them at once;
  // sipd must end each call (uac_call_ended_by_proxy.xml).
  void StartCalls(int calls) {
    uas_ = SippProcess::Start("uas_call.xml", {"-m", absl::StrCat(calls)}, work_, "uas");
    auto port = uas_->SipPort(false);
    ASSERT_TRUE(port.ok()) << port.status();
    ASSERT_NO_FATAL_FAILURE(Register("bob", *port));
    uac_ = SippProcess::Start("uac_call_ended_by_proxy.xml",
                              {"-s", "bob", absl::StrCat("127.0.0.1:", sipd_->sip_port()), "-m",
                               absl::StrCat(calls), "-l", absl::StrCat(calls)},
                              work_, "uac");
  }

  absl::StatusOr<std::vector<dlgv1::Dialog>> StreamAll() {
    auto context = Context();
    auto reader = dialogs_->StreamDialogs(context.get(), dlgv1::StreamDialogsRequest());
    std::vector<dlgv1::Dialog> out;
    dlgv1::StreamDialogsResponse part;
    while (reader->Read(&part)) out.insert(out.end(), part.dialogs().begin(), part.dialogs().end());
    grpc::Status status = reader->Finish();
    if (!status.ok()) return absl::InternalError(status.error_message());
    return out;
  }

  // Waits until the table holds exactly `n` dialogs, all confirmed (as ListDialogs shows).
  bool WaitForConfirmed(int n) {
    return WaitUntil(
        [&] {
          dlgv1::ListDialogsResponse page;
          if (!dialogs_->ListDialogs(Context().get(), {}, &page).ok()) return false;
          if (page.dialogs_size() != n) return false;
          for (const auto& d : page.dialogs()) {
            if (d.state() != dlgv1::DIALOG_STATE_CONFIRMED) return false;
          }
          return true;
        },
        30s);
  }

  std::unique_ptr<dlgv1::DialogService::Stub> dialogs_;
  std::unique_ptr<SippProcess> uas_;
  std::unique_ptr<SippProcess> uac_;
};

TEST_F(DialogTypedTest, ListingsShowTheLiveCallsAsTheMiDoes) {
  constexpr int kCalls = 3;
  StartCalls(kCalls);
  ASSERT_TRUE(WaitForConfirmed(kCalls)) << uac_->output();

  dlgv1::ListDialogsResponse all;
  ASSERT_TRUE(dialogs_->ListDialogs(Context().get(), {}, &all).ok());
  EXPECT_EQ(all.total_size(), kCalls);
  EXPECT_EQ(all.next_page_token(), "");
  // The MI's view of the same table: hash -> callid.
  MiClient::Result mi_list = mi_->Execute("dlg_list");
  ASSERT_EQ(mi_list.code, 200u) << mi_list.Status();
  std::map<std::string, std::string> mi_dialogs;
  for (const auto& node : mi_list.reply.root.kids) {
    std::string callid;
    for (const auto& kid : node->kids) {
      if (kid->name == "callid") callid = kid->value;
    }
    for (const auto& a : node->attributes) {
      if (a.name == "hash") mi_dialogs[a.value] = callid;
    }
  }
  std::map<std::string, std::string> typed_dialogs;
  for (const dlgv1::Dialog& d : all.dialogs()) {
    typed_dialogs[d.id()] = d.call_id();
    EXPECT_TRUE(absl::StrContains(d.call_id(), "@127.0.0.1")) << d.call_id();
    EXPECT_TRUE(absl::StartsWith(d.from_uri(), "sip:alice@127.0.0.1:")) << d.from_uri();
    EXPECT_TRUE(absl::StartsWith(d.to_uri(), "sip:bob@127.0.0.1:")) << d.to_uri();
    EXPECT_FALSE(d.caller().tag().empty());
    EXPECT_EQ(d.caller().cseq(), 1u);
    EXPECT_EQ(d.caller().bind_address(), absl::StrCat("udp:127.0.0.1:", sipd_->sip_port()));
    ASSERT_TRUE(d.has_callee());
    EXPECT_FALSE(d.callee().tag().empty());
    EXPECT_TRUE(absl::StartsWith(d.callee().contact(), "sip:")) << d.callee().contact();
    ASSERT_TRUE(d.has_start_time());
    ASSERT_TRUE(d.has_timeout_time());
    EXPECT_GT(d.timeout_time().seconds(), d.start_time().seconds());
    const std::string::size_type colon = d.id().find(':');
    ASSERT_NE(colon, std::string::npos);
    EXPECT_EQ(d.dialog_id(),
              (std::stoull(d.id().substr(0, colon)) << 32) | std::stoull(d.id().substr(colon + 1)));
    std::map<std::string, std::string> profiles;
    for (const auto& p : d.profiles()) profiles[p.profile()] = p.value();
    EXPECT_EQ(profiles, (std::map<std::string, std::string>{
                            {"caller", "alice"}, {"callee", "bob"}, {"inbound", ""}}));
  }
  EXPECT_EQ(typed_dialogs, mi_dialogs);

  // Pages of 2: every dialog once.
  std::set<std::string> paged;
  dlgv1::ListDialogsRequest request;
  request.set_page_size(2);
  int pages = 0;
  do {
    dlgv1::ListDialogsResponse page;
    ASSERT_TRUE(dialogs_->ListDialogs(Context().get(), request, &page).ok());
    ++pages;
    EXPECT_LE(page.dialogs_size(), 2);
    for (const auto& d : page.dialogs()) EXPECT_TRUE(paged.insert(d.id()).second) << d.id();
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty() && pages < 10);
  EXPECT_EQ(pages, 2);
  EXPECT_EQ(paged.size(), static_cast<size_t>(kCalls));

  // The stream lists the same dialogs, with the same fields.
  absl::StatusOr<std::vector<dlgv1::Dialog>> streamed = StreamAll();
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  std::map<std::string, std::string> streamed_ids;
  for (const auto& d : *streamed) {
    streamed_ids[d.id()] = d.call_id();
    for (const auto& listed : all.dialogs()) {
      if (listed.id() == d.id()) {
        EXPECT_EQ(listed.SerializeAsString(), d.SerializeAsString());
      }
    }
  }
  EXPECT_EQ(streamed_ids, mi_dialogs);

  // GetDialog by Call-ID, and by Call-ID and From-tag.
  const dlgv1::Dialog& first = all.dialogs(0);
  dlgv1::GetDialogRequest get;
  get.set_call_id(first.call_id());
  dlgv1::GetDialogResponse got;
  ASSERT_TRUE(dialogs_->GetDialog(Context().get(), get, &got).ok());
  EXPECT_EQ(got.dialog().SerializeAsString(), first.SerializeAsString());
  get.set_from_tag(first.caller().tag());
  ASSERT_TRUE(dialogs_->GetDialog(Context().get(), get, &got).ok());
  EXPECT_EQ(got.dialog().id(), first.id());
  get.set_from_tag("not-the-tag");
  grpc::Status missing = dialogs_->GetDialog(Context().get(), get, &got);
  EXPECT_EQ(missing.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(DetailsOf(missing).info.reason(), "MI_404");

  // Profiles: the typed figures are the MI's.
  dlgv1::ListProfilesResponse profiles;
  ASSERT_TRUE(dialogs_->ListProfiles(Context().get(), {}, &profiles).ok());
  std::map<std::string, bool> names;
  for (const auto& p : profiles.profiles()) names[p.name()] = p.has_value();
  EXPECT_EQ(names,
            (std::map<std::string, bool>{{"caller", true}, {"callee", true}, {"inbound", false}}));
  for (const auto& [profile, value] :
       std::vector<std::pair<std::string, std::string>>{{"callee", "bob"},
                                                        {"callee", ""},
                                                        {"callee", "nobody"},
                                                        {"inbound", ""},
                                                        {"caller", "alice"}}) {
    dlgv1::GetProfileSizeRequest size_request;
    size_request.set_profile(profile);
    size_request.set_value(value);
    dlgv1::GetProfileSizeResponse size;
    ASSERT_TRUE(dialogs_->GetProfileSize(Context().get(), size_request, &size).ok());
    std::vector<std::string> args = {profile};
    if (!value.empty()) args.push_back(value);
    MiClient::Result mi_size = mi_->Execute("profile_get_size", args);
    ASSERT_EQ(mi_size.code, 200u) << mi_size.Status();
    std::string mi_count;
    for (const auto& a : mi_size.reply.root.kids.at(0)->attributes) {
      if (a.name == "count") mi_count = a.value;
    }
    EXPECT_EQ(absl::StrCat(size.count()), mi_count) << profile << "/" << value;
    EXPECT_EQ(size.count(), value == "nobody" ? 0u : static_cast<uint64_t>(kCalls))
        << profile << "/" << value;
  }
  dlgv1::ListProfileDialogsRequest of_bob;
  of_bob.set_profile("callee");
  of_bob.set_value("bob");
  auto context = Context();
  auto reader = dialogs_->ListProfileDialogs(context.get(), of_bob);
  std::set<std::string> in_profile;
  dlgv1::ListProfileDialogsResponse part;
  while (reader->Read(&part)) {
    for (const auto& d : part.dialogs()) in_profile.insert(d.id());
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(in_profile, paged);

  // End the calls through the typed service: both sipp sides get their BYEs.
  for (const auto& d : all.dialogs()) {
    dlgv1::EndDialogRequest end;
    end.set_id(d.id());
    dlgv1::EndDialogResponse ended;
    grpc::Status status = dialogs_->EndDialog(Context().get(), end, &ended);
    EXPECT_TRUE(status.ok()) << d.id() << ": " << status.error_message();
  }
  EXPECT_EQ(uac_->Wait(30s), 0) << uac_->output();
  EXPECT_EQ(uas_->Wait(30s), 0) << uas_->output();
  ASSERT_TRUE(WaitForConfirmed(0));
  dlgv1::GetProfileSizeRequest inbound;
  inbound.set_profile("inbound");
  dlgv1::GetProfileSizeResponse inbound_size;
  ASSERT_TRUE(dialogs_->GetProfileSize(Context().get(), inbound, &inbound_size).ok());
  EXPECT_EQ(inbound_size.count(), 0u);
}

TEST_F(DialogTypedTest, UnknownDialogsAndProfilesAreNotFoundWithErrorInfo) {
  StartCalls(1);
  ASSERT_TRUE(WaitForConfirmed(1)) << uac_->output();
  dlgv1::ListDialogsResponse all;
  ASSERT_TRUE(dialogs_->ListDialogs(Context().get(), {}, &all).ok());
  ASSERT_EQ(all.dialogs_size(), 1);
  const dlgv1::Dialog live = all.dialogs(0);

  // A dialog id that is not in the table.
  dlgv1::EndDialogRequest end;
  end.set_id("4000000:1");
  dlgv1::EndDialogResponse ended;
  grpc::Status status = dialogs_->EndDialog(Context().get(), end, &ended);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND) << status.error_message();
  EXPECT_EQ(status.error_message(), "Requested Dialog not found");
  Details details = DetailsOf(status);
  EXPECT_EQ(details.info.reason(), "MI_404");
  EXPECT_EQ(details.info.metadata().at("mi_code"), "404");
  EXPECT_EQ(details.info.metadata().at("mi_reason"), "Requested Dialog not found");

  // The live call is untouched by that; ending it works once, then it is unknown.
  end.set_id(live.id());
  end.set_extra_headers("X-Ended-By: dialog_typed_test\r\n");
  status = dialogs_->EndDialog(Context().get(), end, &ended);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(uac_->Wait(30s), 0) << uac_->output();
  EXPECT_EQ(uas_->Wait(30s), 0) << uas_->output();
  ASSERT_TRUE(WaitForConfirmed(0));
  status = dialogs_->EndDialog(Context().get(), end, &ended);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND) << status.error_message();
  EXPECT_EQ(DetailsOf(status).info.reason(), "MI_404");

  dlgv1::GetDialogRequest get;
  get.set_call_id(live.call_id());
  dlgv1::GetDialogResponse got;
  status = dialogs_->GetDialog(Context().get(), get, &got);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "No such dialog");
  EXPECT_EQ(DetailsOf(status).info.reason(), "MI_404");

  // Unknown profiles, unary and streamed.
  dlgv1::GetProfileSizeRequest size_request;
  size_request.set_profile("no_such_profile");
  dlgv1::GetProfileSizeResponse size;
  status = dialogs_->GetProfileSize(Context().get(), size_request, &size);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "Profile not found");
  EXPECT_EQ(DetailsOf(status).info.reason(), "MI_404");
  dlgv1::ListProfileDialogsRequest list_request;
  list_request.set_profile("no_such_profile");
  auto context = Context();
  auto reader = dialogs_->ListProfileDialogs(context.get(), list_request);
  dlgv1::ListProfileDialogsResponse part;
  EXPECT_FALSE(reader->Read(&part));
  status = reader->Finish();
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(DetailsOf(status).info.reason(), "MI_404");
}

// More dialogs than one part holds (50): the streams send them in parts of at most 50,
// each dialog once, and the pages of ListDialogs cover them all.
TEST_F(DialogTypedTest, SixtyCallsStreamInPartsOfFiftyAndPage) {
  constexpr int kCalls = 60;
  StartCalls(kCalls);
  ASSERT_TRUE(WaitForConfirmed(kCalls)) << uac_->output();

  auto context = Context();
  auto reader = dialogs_->StreamDialogs(context.get(), dlgv1::StreamDialogsRequest());
  std::vector<int> parts;
  std::set<std::string> streamed;
  dlgv1::StreamDialogsResponse part;
  while (reader->Read(&part)) {
    parts.push_back(part.dialogs_size());
    for (const auto& d : part.dialogs()) EXPECT_TRUE(streamed.insert(d.id()).second) << d.id();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(parts, (std::vector<int>{50, 10}));

  dlgv1::ListProfileDialogsRequest inbound;
  inbound.set_profile("inbound");
  auto profile_context = Context();
  auto profile_reader = dialogs_->ListProfileDialogs(profile_context.get(), inbound);
  std::set<std::string> in_profile;
  dlgv1::ListProfileDialogsResponse profile_part;
  int profile_parts = 0;
  while (profile_reader->Read(&profile_part)) {
    ++profile_parts;
    EXPECT_LE(profile_part.dialogs_size(), 50);
    for (const auto& d : profile_part.dialogs()) in_profile.insert(d.id());
  }
  ASSERT_TRUE(profile_reader->Finish().ok());
  EXPECT_EQ(profile_parts, 2);
  EXPECT_EQ(in_profile, streamed);

  std::set<std::string> paged;
  dlgv1::ListDialogsRequest request;
  request.set_page_size(25);
  int pages = 0;
  do {
    dlgv1::ListDialogsResponse page;
    ASSERT_TRUE(dialogs_->ListDialogs(Context().get(), request, &page).ok());
    ++pages;
    EXPECT_EQ(page.total_size(), kCalls);
    for (const auto& d : page.dialogs()) EXPECT_TRUE(paged.insert(d.id()).second) << d.id();
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(paged, streamed);

  for (const std::string& id : streamed) {
    dlgv1::EndDialogRequest end;
    end.set_id(id);
    dlgv1::EndDialogResponse ended;
    EXPECT_TRUE(dialogs_->EndDialog(Context().get(), end, &ended).ok()) << id;
  }
  EXPECT_EQ(uac_->Wait(60s), 0) << uac_->output();
  EXPECT_EQ(uas_->Wait(60s), 0) << uas_->output();
  EXPECT_TRUE(WaitForConfirmed(0));
}

TEST_F(DialogTypedTest, MalformedRequestsNameTheField) {
  dlgv1::EndDialogResponse ended;
  for (const std::string id : {"", "12", "a:b", "1:", ":1", "1:2:3", "4294967296:1", "-1:1"}) {
    dlgv1::EndDialogRequest end;
    end.set_id(id);
    EXPECT_EQ(BadField(dialogs_->EndDialog(Context().get(), end, &ended)), "id") << id;
  }
  dlgv1::GetDialogResponse got;
  EXPECT_EQ(BadField(dialogs_->GetDialog(Context().get(), {}, &got)), "call_id");
  dlgv1::GetDialogRequest numeric;
  numeric.set_call_id("12");
  numeric.set_from_tag("34");
  EXPECT_EQ(BadField(dialogs_->GetDialog(Context().get(), numeric, &got)), "from_tag");
  dlgv1::ListDialogsResponse page;
  dlgv1::ListDialogsRequest list;
  list.set_page_token("not-a-token");
  EXPECT_EQ(BadField(dialogs_->ListDialogs(Context().get(), list, &page)), "page_token");
  list.set_page_token("");
  list.set_page_size(-1);
  EXPECT_EQ(BadField(dialogs_->ListDialogs(Context().get(), list, &page)), "page_size");
  dlgv1::GetProfileSizeResponse size;
  EXPECT_EQ(BadField(dialogs_->GetProfileSize(Context().get(), {}, &size)), "profile");

  // An empty table: an empty page, an empty stream.
  list.set_page_size(0);
  ASSERT_TRUE(dialogs_->ListDialogs(Context().get(), list, &page).ok());
  EXPECT_EQ(page.dialogs_size(), 0);
  EXPECT_EQ(page.total_size(), 0);
  EXPECT_EQ(page.next_page_token(), "");
  absl::StatusOr<std::vector<dlgv1::Dialog>> streamed = StreamAll();
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_TRUE(streamed->empty());
}

// The typed face is the command: the same roles (EndDialog is dlg_end_dlg, which
// needs operate) and the same audit lines, with the MI command's name.
TEST(DialogTypedSecurityTest, EndDialogNeedsOperateAndIsAuditedAsDlgEndDlg) {
  TempDir dir("sipd-dialog-typed-security");
  ASSERT_TRUE(dir.ok());
  const std::string tokens = dir.path() + "/tokens";
  std::ofstream(tokens) << "monitor read " << Sha256Hex("read-secret") << "\nnoc operate "
                        << Sha256Hex("operate-secret") << "\n";
  ASSERT_EQ(chmod(tokens.c_str(), 0600), 0);
  SipdInstance sipd(
      SipdInstance::Options{.extra_config = absl::StrCat("modparam(\"mi\", \"tokens_file\", \"",
                                                         tokens, "\")\n", DialogModulesConfig()),
                            .default_security = true});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  auto stub = dlgv1::DialogService::NewStub(
      grpc::CreateChannel(sipd.grpc_target(), grpc::InsecureChannelCredentials()));
  auto as = [](const std::string& token) {
    auto context = Context();
    context->AddMetadata("authorization", "Bearer " + token);
    return context;
  };

  dlgv1::ListDialogsResponse page;
  EXPECT_TRUE(stub->ListDialogs(as("read-secret").get(), {}, &page).ok());
  dlgv1::EndDialogRequest end;
  end.set_id("7:9");
  dlgv1::EndDialogResponse ended;
  grpc::Status status = stub->EndDialog(as("read-secret").get(), end, &ended);
  EXPECT_EQ(status.error_code(), StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_EQ(status.error_message(), "role 'read' may not run 'dlg_end_dlg' (needs operate)");
  DetailsOf(status);
  status = stub->EndDialog(as("operate-secret").get(), end, &ended);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND) << status.error_message();

  std::ifstream in(sipd.run_dir() + "/audit.log");
  std::stringstream audit;
  audit << in.rdbuf();
  EXPECT_TRUE(absl::StrContains(audit.str(), "command=dlg_end_dlg args=[\"7\", \"9\"] code=403"))
      << audit.str();
  EXPECT_TRUE(absl::StrContains(audit.str(), "command=dlg_end_dlg args=[\"7\", \"9\"] code=404"))
      << audit.str();
}

}  // namespace
}  // namespace sipd::testing
