// The typed services (sipd.core.v1, sipd.statistics.v1, sipd.usrloc.v1), rich error
// details, reflection v1 and per-subsystem health, in a real sipd with usrloc on SQLite,
// called through the generated C++ stubs as a stub user would.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "sipd/core/v1/core.grpc.pb.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "sipd/statistics/v1/statistics.grpc.pb.h"
#include "sipd/usrloc/v1/usrloc.grpc.pb.h"
#include "sipd_version.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {
namespace {

namespace corev1 = ::sipd::core::v1;
namespace statsv1 = ::sipd::statistics::v1;
namespace ulv1 = ::sipd::usrloc::v1;
namespace miv1 = ::sipd::mi::v1;
namespace health = ::grpc::health::v1;
using grpc::StatusCode;

// The details of a non-OK status, as status.FromError(err).Details() shows them.
struct Details {
  google::rpc::Status status;
  google::rpc::ErrorInfo info;
  bool has_info = false;
  google::rpc::BadRequest bad_request;
  bool has_bad_request = false;
};

Details DetailsOf(const grpc::Status& status) {
  Details out;
  EXPECT_TRUE(out.status.ParseFromString(status.error_details()))
      << "no google.rpc.Status in grpc-status-details-bin";
  EXPECT_EQ(out.status.code(), static_cast<int>(status.error_code()));
  for (const auto& any : out.status.details()) {
    if (any.UnpackTo(&out.info)) out.has_info = true;
    if (any.UnpackTo(&out.bad_request)) out.has_bad_request = true;
  }
  EXPECT_TRUE(out.has_info) << "no google.rpc.ErrorInfo";
  EXPECT_EQ(out.info.domain(), "sipd");
  return out;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return context;
}

class TypedServicesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sipd_ = new SipdInstance(SipdInstance::Options{
        .extra_config = "loadmodule \"usrloc\"\nmodparam(\"usrloc\", \"db_mode\", 1)\n"});
    const absl::Status status = sipd_->Start();
    ASSERT_TRUE(status.ok()) << status;
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(sipd_->grpc_target(), grpc::InsecureChannelCredentials()));
  }
  static void TearDownTestSuite() {
    delete channel_;
    channel_ = nullptr;
    delete sipd_;
    sipd_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(sipd_, nullptr);
    core_ = corev1::CoreService::NewStub(*channel_);
    stats_ = statsv1::StatisticsService::NewStub(*channel_);
    location_ = ulv1::LocationService::NewStub(*channel_);
    management_ = miv1::Management::NewStub(*channel_);
  }

  grpc::Status Add(const std::string& aor, const std::string& uri, uint32_t expires = 0) {
    ulv1::AddContactRequest request;
    request.set_table("location");
    request.set_aor(aor);
    request.set_uri(uri);
    request.set_expires_seconds(expires);
    ulv1::AddContactResponse response;
    return location_->AddContact(Context().get(), request, &response);
  }

  static inline SipdInstance* sipd_ = nullptr;
  static inline std::shared_ptr<grpc::Channel>* channel_ = nullptr;
  std::unique_ptr<corev1::CoreService::Stub> core_;
  std::unique_ptr<statsv1::StatisticsService::Stub> stats_;
  std::unique_ptr<ulv1::LocationService::Stub> location_;
  std::unique_ptr<miv1::Management::Stub> management_;
};

TEST_F(TypedServicesTest, ListProcessesHasCleanTypes) {
  corev1::ListProcessesResponse response;
  ASSERT_TRUE(core_->ListProcesses(Context().get(), {}, &response).ok());
  std::set<std::string> types;
  for (const auto& p : response.processes()) {
    types.insert(p.type());
    EXPECT_GT(p.pid(), 0) << p.type();
  }
  EXPECT_EQ(response.processes(0).id(), 0u);
  EXPECT_EQ(response.processes(0).type(), "attendant");
  // The MI text keeps 1.11's trailing space (spec 10.1); the typed field has none.
  const std::string sip = absl::StrCat("SIP receiver udp:127.0.0.1:", sipd_->sip_port());
  EXPECT_TRUE(types.count(sip)) << sip;
  EXPECT_TRUE(types.count("MI gRPC"));
  miv1::ExecuteRequest ps;
  ps.set_command("ps");
  miv1::Reply text;
  ASSERT_TRUE(management_->Execute(Context().get(), ps, &text).ok());
  bool trailing = false;
  for (const auto& node : text.nodes()) {
    for (const auto& a : node.attributes()) trailing |= a.value() == sip + " ";
  }
  EXPECT_TRUE(trailing);
}

TEST_F(TypedServicesTest, UptimeVersionAndLogLevel) {
  corev1::GetUptimeResponse uptime;
  ASSERT_TRUE(core_->GetUptime(Context().get(), {}, &uptime).ok());
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_LE(uptime.up_since().seconds(), uptime.now().seconds());
  EXPECT_GE(uptime.uptime_seconds(), 0);
  EXPECT_LE(uptime.now().seconds(), now);
  EXPECT_LE(uptime.now().seconds() - uptime.up_since().seconds() - uptime.uptime_seconds(), 1);

  corev1::GetVersionResponse version;
  ASSERT_TRUE(core_->GetVersion(Context().get(), {}, &version).ok());
  EXPECT_EQ(version.version(), SIPD_VERSION);
  EXPECT_EQ(version.os(), "linux");
  EXPECT_FALSE(version.arch().empty());
  EXPECT_EQ(version.server(),
            absl::StrCat("sipd (", SIPD_VERSION, " (", version.arch(), "/linux))"));

  corev1::SetLogLevelRequest set;
  set.set_level(4);
  corev1::SetLogLevelResponse set_response;
  ASSERT_TRUE(core_->SetLogLevel(Context().get(), set, &set_response).ok());
  EXPECT_EQ(set_response.level(), 4);
  corev1::GetLogLevelResponse level;
  ASSERT_TRUE(core_->GetLogLevel(Context().get(), {}, &level).ok());
  EXPECT_EQ(level.level(), 4);
  set.set_level(3);
  ASSERT_TRUE(core_->SetLogLevel(Context().get(), set, &set_response).ok());
}

TEST_F(TypedServicesTest, ListCommandsIsManagementsList) {
  corev1::ListCommandsResponse typed;
  ASSERT_TRUE(core_->ListCommands(Context().get(), {}, &typed).ok());
  miv1::ListCommandsResponse generic;
  ASSERT_TRUE(management_->ListCommands(Context().get(), {}, &generic).ok());
  ASSERT_EQ(typed.commands_size(), generic.commands_size());
  for (int i = 0; i < typed.commands_size(); ++i) {
    EXPECT_EQ(typed.commands(i).name(), generic.commands(i).name());
    EXPECT_EQ(typed.commands(i).help(), generic.commands(i).help());
    EXPECT_EQ(typed.commands(i).parameters_size(), generic.commands(i).parameters_size());
  }
}

TEST_F(TypedServicesTest, Statistics) {
  statsv1::GetStatisticsRequest request;
  request.add_names("core:");
  request.add_names("usrloc:registered_users");
  statsv1::GetStatisticsResponse response;
  ASSERT_TRUE(stats_->GetStatistics(Context().get(), request, &response).ok());
  std::map<std::string, statsv1::Statistic> by_name;
  for (const auto& s : response.statistics()) by_name[s.group() + ":" + s.name()] = s;
  ASSERT_TRUE(by_name.count("core:rcv_requests"));
  EXPECT_TRUE(by_name["core:rcv_requests"].resettable());
  ASSERT_TRUE(by_name.count("core:timestamp"));
  EXPECT_FALSE(by_name["core:timestamp"].resettable());  // a function
  ASSERT_TRUE(by_name.count("usrloc:registered_users"));
  EXPECT_FALSE(by_name["usrloc:registered_users"].resettable());

  // A SIP request counted, then reset.
  ASSERT_TRUE(
      SipExchange(sipd_->sip_port(), MakeSipRequest("OPTIONS", sipd_->sip_port(), "typed-1")).ok());
  request.clear_names();
  request.add_names("rcv_requests");
  ASSERT_TRUE(stats_->GetStatistics(Context().get(), request, &response).ok());
  ASSERT_EQ(response.statistics_size(), 1);
  EXPECT_GE(response.statistics(0).value(), 1);
  statsv1::ResetStatisticsRequest reset;
  reset.add_names("core:rcv_requests");
  statsv1::ResetStatisticsResponse reset_response;
  ASSERT_TRUE(stats_->ResetStatistics(Context().get(), reset, &reset_response).ok());
  response.Clear();
  ASSERT_TRUE(stats_->GetStatistics(Context().get(), request, &response).ok());
  EXPECT_EQ(response.statistics(0).value(), 0);

  // Nothing matched: NOT_FOUND with the MI code in the details.
  request.clear_names();
  request.add_names("no_such_statistic");
  const grpc::Status missing = stats_->GetStatistics(Context().get(), request, &response);
  ASSERT_EQ(missing.error_code(), StatusCode::NOT_FOUND);
  const Details details = DetailsOf(missing);
  EXPECT_EQ(details.info.reason(), "MI_404");
  EXPECT_EQ(details.info.metadata().at("mi_code"), "404");
  EXPECT_EQ(details.info.metadata().at("mi_reason"), "Statistics Not Found");
  EXPECT_EQ(details.info.metadata().at("outcome"), "reply");

  // A request field that does not convert: INVALID_ARGUMENT naming the field.
  reset.Clear();
  const grpc::Status empty = stats_->ResetStatistics(Context().get(), reset, &reset_response);
  ASSERT_EQ(empty.error_code(), StatusCode::INVALID_ARGUMENT);
  const Details bad = DetailsOf(empty);
  ASSERT_TRUE(bad.has_bad_request);
  EXPECT_EQ(bad.bad_request.field_violations(0).field(), "names");
}

TEST_F(TypedServicesTest, ContactsAddGetRemove) {
  ulv1::AddContactRequest add;
  add.set_table("location");
  add.set_aor("carol");
  add.set_uri("sip:carol@192.0.2.7:5060");
  add.set_expires_seconds(600);
  add.set_q(0.5f);
  add.set_flags(3);
  add.set_cflags(5);
  ulv1::AddContactResponse added;
  ASSERT_TRUE(location_->AddContact(Context().get(), add, &added).ok());
  ASSERT_TRUE(Add("carol", "sip:carol@192.0.2.8:5060").ok());  // permanent, q = 1

  ulv1::GetContactsRequest get;
  get.set_table("location");
  get.set_aor("carol");
  ulv1::GetContactsResponse got;
  ASSERT_TRUE(location_->GetContacts(Context().get(), get, &got).ok());
  EXPECT_EQ(got.aor().aor(), "carol");
  EXPECT_EQ(got.aor().table(), "location");
  ASSERT_EQ(got.aor().contacts_size(), 2);
  const ulv1::Contact& permanent = got.aor().contacts(0);  // highest q first
  EXPECT_EQ(permanent.uri(), "sip:carol@192.0.2.8:5060");
  EXPECT_FALSE(permanent.has_expires_seconds());
  EXPECT_FLOAT_EQ(permanent.q(), 1.0f);
  const ulv1::Contact& timed = got.aor().contacts(1);
  EXPECT_EQ(timed.uri(), "sip:carol@192.0.2.7:5060");
  ASSERT_TRUE(timed.has_expires_seconds());
  EXPECT_GT(timed.expires_seconds(), 590);
  EXPECT_LE(timed.expires_seconds(), 600);
  ASSERT_TRUE(timed.has_q());
  EXPECT_FLOAT_EQ(timed.q(), 0.5f);
  EXPECT_EQ(timed.call_id(), "dfjrewr12386fd6-343@opensips.mi");
  EXPECT_EQ(timed.cseq(), 1u);
  EXPECT_EQ(timed.user_agent(), "OpenSIPS MI Server");
  EXPECT_EQ(timed.flags(), 3u);
  EXPECT_EQ(timed.cflags(), 5u);
  EXPECT_EQ(timed.methods(), 0xFFFFFFFFu);
  EXPECT_EQ(timed.state(), ulv1::CONTACT_STATE_SYNC);  // db_mode 1: written through

  ulv1::RemoveContactRequest remove;
  remove.set_table("location");
  remove.set_aor("carol");
  remove.set_uri("sip:carol@192.0.2.7:5060");
  ulv1::RemoveContactResponse removed;
  ASSERT_TRUE(location_->RemoveContact(Context().get(), remove, &removed).ok());
  const grpc::Status again = location_->RemoveContact(Context().get(), remove, &removed);
  EXPECT_EQ(again.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(DetailsOf(again).info.metadata().at("mi_reason"), "Contact not found");

  ulv1::RemoveAorRequest remove_aor;
  remove_aor.set_table("location");
  remove_aor.set_aor("carol");
  ulv1::RemoveAorResponse removed_aor;
  ASSERT_TRUE(location_->RemoveAor(Context().get(), remove_aor, &removed_aor).ok());
  const grpc::Status gone = location_->GetContacts(Context().get(), get, &got);
  ASSERT_EQ(gone.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(DetailsOf(gone).info.reason(), "MI_404");

  ulv1::FlushResponse flushed;
  EXPECT_TRUE(location_->Flush(Context().get(), {}, &flushed).ok());
}

TEST_F(TypedServicesTest, ArgumentErrorsNameTheField) {
  ulv1::AddContactRequest add;
  add.set_aor("dave");
  add.set_uri("sip:dave@192.0.2.9");
  ulv1::AddContactResponse added;
  grpc::Status status = location_->AddContact(Context().get(), add, &added);
  ASSERT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  Details details = DetailsOf(status);
  EXPECT_EQ(details.info.reason(), "INVALID_REQUEST");
  ASSERT_TRUE(details.has_bad_request);
  EXPECT_EQ(details.bad_request.field_violations(0).field(), "table");

  add.set_table("location");
  add.set_q(1.5f);
  status = location_->AddContact(Context().get(), add, &added);
  ASSERT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(DetailsOf(status).bad_request.field_violations(0).field(), "q");

  add.clear_q();
  add.set_table("nosuch");
  status = location_->AddContact(Context().get(), add, &added);
  ASSERT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(DetailsOf(status).info.metadata().at("mi_reason"), "Table not found");

  ulv1::ListContactsRequest list;
  list.set_table("location");
  list.set_page_token("not-a-token");
  ulv1::ListContactsResponse page;
  status = location_->ListContacts(Context().get(), list, &page);
  ASSERT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(DetailsOf(status).bad_request.field_violations(0).field(), "page_token");
}

TEST_F(TypedServicesTest, ListContactsPagesAndStreamContacts) {
  constexpr int kAors = 130;
  for (int i = 0; i < kAors; ++i) {
    ASSERT_TRUE(Add(absl::StrCat("page", 1000 + i), absl::StrCat("sip:p", i, "@192.0.2.1")).ok());
  }
  ASSERT_TRUE(Add("other", "sip:other@192.0.2.2").ok());

  // Pages of 50 with a prefix: every AOR exactly once, in 3 or 4 pages.
  std::set<std::string> listed;
  ulv1::ListContactsRequest list;
  list.set_table("location");
  list.set_aor_prefix("page");
  list.set_page_size(50);
  int pages = 0;
  do {
    ulv1::ListContactsResponse page;
    ASSERT_TRUE(location_->ListContacts(Context().get(), list, &page).ok());
    EXPECT_LE(page.aors_size(), 50);
    for (const auto& aor : page.aors()) {
      EXPECT_TRUE(absl::StartsWith(aor.aor(), "page"));
      EXPECT_TRUE(listed.insert(aor.aor()).second) << aor.aor() << " listed twice";
      ASSERT_EQ(aor.contacts_size(), 1);
    }
    list.set_page_token(page.next_page_token());
    ++pages;
  } while (!list.page_token().empty() && pages < 10);
  EXPECT_EQ(listed.size(), static_cast<size_t>(kAors));
  EXPECT_GE(pages, 3);

  // The stream: every AOR of every table, at most 50 per message.
  ulv1::StreamContactsRequest stream_request;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto reader = location_->StreamContacts(&context, stream_request);
  ulv1::StreamContactsResponse part;
  std::set<std::string> streamed;
  int messages = 0;
  while (reader->Read(&part)) {
    ++messages;
    EXPECT_LE(part.aors_size(), 50);
    for (const auto& aor : part.aors()) {
      EXPECT_EQ(aor.table(), "location");
      EXPECT_TRUE(streamed.insert(aor.aor()).second);
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GE(messages, 3);
  EXPECT_TRUE(streamed.count("other"));
  for (const std::string& aor : listed) EXPECT_TRUE(streamed.count(aor)) << aor;

  // Another table only: nothing.
  grpc::ClientContext other_context;
  stream_request.set_table("nosuch");
  auto none = location_->StreamContacts(&other_context, stream_request);
  EXPECT_FALSE(none->Read(&part));
  EXPECT_TRUE(none->Finish().ok());
}

TEST_F(TypedServicesTest, ManagementErrorsCarryDetailsAndKeepTheTrailers) {
  miv1::ExecuteRequest request;
  request.set_command("no_such_command");
  miv1::Reply reply;
  grpc::ClientContext context;
  grpc::Status status = management_->Execute(&context, request, &reply);
  ASSERT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  Details details = DetailsOf(status);
  EXPECT_EQ(details.info.reason(), "MI_500");
  EXPECT_EQ(details.info.metadata().at("outcome"), "not-available");
  const auto& trailers = context.GetServerTrailingMetadata();
  EXPECT_EQ(trailers.count("sipd-mi-code"), 1u);
  EXPECT_EQ(trailers.count("sipd-mi-outcome"), 1u);

  // A missing argument is INVALID_ARGUMENT, whatever MI code 1.11 gives it (cache_*: 404).
  request.set_command("cache_store");
  request.add_params("local");
  request.add_params("key");
  grpc::ClientContext context2;
  status = management_->Execute(&context2, request, &reply);
  ASSERT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  details = DetailsOf(status);
  EXPECT_EQ(details.info.reason(), "MI_404");
  EXPECT_EQ(details.info.metadata().at("mi_reason"), "Too few arguments");
  ASSERT_TRUE(details.has_bad_request);
  EXPECT_EQ(details.bad_request.field_violations(0).field(), "value");

  // A transport rejection (no MI answer) carries details too.
  request.Clear();
  grpc::ClientContext context3;
  status = management_->Execute(&context3, request, &reply);
  ASSERT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  details = DetailsOf(status);
  EXPECT_EQ(details.info.reason(), "INVALID_REQUEST");
  EXPECT_EQ(details.bad_request.field_violations(0).field(), "command");

  // An unknown method of a typed package.
  grpc::GenericStub generic(*channel_);
  grpc::ClientContext context4;
  context4.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice no_bytes("");
  grpc::ByteBuffer empty_request(&no_bytes, 1);
  grpc::ByteBuffer response;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status unknown;
  generic.UnaryCall(&context4, "/sipd.core.v1.CoreService/NoSuchMethod", grpc::StubOptions(),
                    &empty_request, &response, [&](grpc::Status s) {
                      std::lock_guard<std::mutex> lock(mu);
                      unknown = s;
                      done = true;
                      cv.notify_all();
                    });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
  EXPECT_EQ(unknown.error_code(), StatusCode::UNIMPLEMENTED);
  EXPECT_EQ(DetailsOf(unknown).info.reason(), "UNKNOWN_METHOD");
}

// What grpcurl >= 1.9 asks first: grpc.reflection.v1. Both versions list the typed
// services and give their files with dependencies.
template <typename Refl, typename Request, typename Response>
void CheckReflection(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = Refl::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->ServerReflectionInfo(&context);
  Request request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  Response response;
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> services;
  for (const auto& s : response.list_services_response().service()) services.insert(s.name());
  for (const char* name :
       {"sipd.mi.v1.Management", "sipd.core.v1.CoreService", "sipd.statistics.v1.StatisticsService",
        "sipd.usrloc.v1.LocationService", "sipd.events.v1.EventService", "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}) {
    EXPECT_TRUE(services.count(name)) << name;
  }
  request.set_file_containing_symbol("sipd.core.v1.CoreService");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> files;
  for (const auto& bytes : response.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    files.insert(file.name());
  }
  EXPECT_TRUE(files.count("sipd/core/v1/core.proto"));
  EXPECT_TRUE(files.count("sipd/mi/v1/mi.proto"));
  EXPECT_TRUE(files.count("google/protobuf/timestamp.proto"));
  request.set_file_containing_symbol("google.rpc.ErrorInfo");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_TRUE(response.has_file_descriptor_response());
  request.set_file_containing_symbol("no.such.Symbol");
  ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.error_response().error_code(), static_cast<int>(StatusCode::NOT_FOUND));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(TypedServicesTest, ReflectionV1AndV1Alpha) {
  namespace v1 = ::grpc::reflection::v1;
  namespace v1alpha = ::grpc::reflection::v1alpha;
  CheckReflection<v1::ServerReflection, v1::ServerReflectionRequest, v1::ServerReflectionResponse>(
      *channel_);
  CheckReflection<v1alpha::ServerReflection, v1alpha::ServerReflectionRequest,
                  v1alpha::ServerReflectionResponse>(*channel_);
}

health::HealthCheckResponse::ServingStatus HealthOf(const std::shared_ptr<grpc::Channel>& channel,
                                                    const std::string& name) {
  auto stub = health::Health::NewStub(channel);
  health::HealthCheckRequest request;
  request.set_service(name);
  health::HealthCheckResponse response;
  const grpc::Status status = stub->Check(Context().get(), request, &response);
  if (!status.ok()) return health::HealthCheckResponse::SERVICE_UNKNOWN;
  return response.status();
}

TEST_F(TypedServicesTest, HealthPerSubsystem) {
  // The checks run every second: the first run may predate the SIP receivers' fork.
  for (const char* name :
       {"", "sipd.sip", "sipd.usrloc", "sipd.mi.v1.Management", "sipd.core.v1.CoreService",
        "sipd.statistics.v1.StatisticsService", "sipd.usrloc.v1.LocationService"}) {
    EXPECT_TRUE(
        WaitUntil([&] { return HealthOf(*channel_, name) == health::HealthCheckResponse::SERVING; },
                  std::chrono::seconds(5)))
        << name;
  }
  EXPECT_EQ(HealthOf(*channel_, "sipd.no_such_subsystem"),
            health::HealthCheckResponse::SERVICE_UNKNOWN);
}

// A SIP receiver that died and is not restarted yet (its attendant stopped) makes
// "sipd.sip" and "" NOT_SERVING; once the attendant restarts it, both serve again.
TEST_F(TypedServicesTest, HealthFollowsTheSipReceivers) {
  corev1::ListProcessesResponse processes;
  ASSERT_TRUE(core_->ListProcesses(Context().get(), {}, &processes).ok());
  int receiver = 0;
  for (const auto& p : processes.processes()) {
    if (absl::StartsWith(p.type(), "SIP receiver")) receiver = p.pid();
  }
  ASSERT_GT(receiver, 0);
  ASSERT_TRUE(WaitUntil(
      [&] { return HealthOf(*channel_, "sipd.sip") == health::HealthCheckResponse::SERVING; },
      std::chrono::seconds(5)));
  ASSERT_EQ(kill(sipd_->pid(), SIGSTOP), 0);
  ASSERT_EQ(kill(receiver, SIGKILL), 0);
  const bool down = WaitUntil(
      [&] {
        return HealthOf(*channel_, "sipd.sip") == health::HealthCheckResponse::NOT_SERVING &&
               HealthOf(*channel_, "") == health::HealthCheckResponse::NOT_SERVING;
      },
      std::chrono::seconds(10));
  ASSERT_EQ(kill(sipd_->pid(), SIGCONT), 0);
  EXPECT_TRUE(down);
  EXPECT_EQ(HealthOf(*channel_, "sipd.usrloc"), health::HealthCheckResponse::SERVING);
  EXPECT_TRUE(WaitUntil(
      [&] { return HealthOf(*channel_, "sipd.sip") == health::HealthCheckResponse::SERVING; },
      std::chrono::seconds(15)));
  EXPECT_EQ(HealthOf(*channel_, ""), health::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace sipd::testing
