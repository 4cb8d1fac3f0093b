// The MI gRPC transport in a real sipd (tests/support/sipd_harness.h): what the process
// serves, how it maps MI replies, what reflection and health report, how it survives
// abuse, a SIGKILL and a second daemon on its port. Real SIP traffic comes from UDP
// datagrams and sipsak.
//
// The reflection client is sipd's own generated grpc-proto code (sipd links no
// gRPC::grpc++_reflection, see service/CMakeLists.txt).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "registry/proto_convert.h"
#include "registry/text_format.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/support/shared_sipd_test.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {
namespace {

namespace v1 = ::sipd::mi::v1;
namespace pb = ::google::protobuf;
using grpc::StatusCode;

std::string Trailer(const grpc::ClientContext& ctx, const std::string& key) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(key);
  if (it == md.end()) return "<absent>";
  return std::string(it->second.data(), it->second.size());
}

class MiClient {
 public:
  explicit MiClient(const std::string& target) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    stub_ = v1::Management::NewStub(channel_);
  }
  grpc::Status Execute(const std::string& command, const std::vector<std::string>& params,
                       v1::Reply* reply, grpc::ClientContext* ctx = nullptr) {
    grpc::ClientContext local;
    if (ctx == nullptr) ctx = &local;
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ExecuteRequest request;
    request.set_command(command);
    for (const auto& p : params) request.add_params(p);
    return stub_->Execute(ctx, request, reply);
  }
  // OK reply or an empty one; for terse assertions.
  v1::Reply Run(const std::string& command, const std::vector<std::string>& params = {}) {
    v1::Reply reply;
    const grpc::Status status = Execute(command, params, &reply);
    EXPECT_TRUE(status.ok()) << command << ": " << status.error_message();
    return reply;
  }
  mi::Reply Stream(const std::string& command, const std::vector<std::string>& params,
                   grpc::Status* status) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ExecuteRequest request;
    request.set_command(command);
    for (const auto& p : params) request.add_params(p);
    auto reader = stub_->ExecuteStream(&ctx, request);
    mi::ChunkAssembler assembler;
    v1::ReplyChunk chunk;
    while (reader->Read(&chunk)) EXPECT_TRUE(assembler.Add(chunk).ok());
    *status = reader->Finish();
    return assembler.Take();
  }
  v1::Management::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Management::Stub> stub_;
};

std::string Attr(const v1::Node& node, const std::string& name) {
  for (const auto& a : node.attributes()) {
    if (a.name() == name) return a.value();
  }
  return "";
}

// Type -> PID from `ps`.
std::multimap<std::string, int> Processes(MiClient& client) {
  std::multimap<std::string, int> out;
  const v1::Reply reply = client.Run("ps");
  for (const auto& node : reply.nodes()) {
    int pid = 0;
    EXPECT_TRUE(absl::SimpleAtoi(Attr(node, "PID"), &pid));
    out.emplace(Attr(node, "Type"), pid);
  }
  return out;
}

uint64_t Statistic(MiClient& client, const std::string& name) {
  const v1::Reply reply = client.Run("get_statistics", {name});
  uint64_t value = 0;
  EXPECT_EQ(reply.nodes_size(), 1) << name;
  if (reply.nodes_size() == 1) {
    EXPECT_TRUE(absl::SimpleAtoi(reply.nodes(0).value(), &value));
  }
  return value;
}

// One sipd shared by the read-mostly tests of this suite.
class MiGrpcIntegrationTest : public SharedSipdTest<MiGrpcIntegrationTest> {
 protected:
  void SetUp() override {
    SharedSipdTest::SetUp();
    if (HasFatalFailure()) return;
    client_ = std::make_unique<MiClient>(sipd_->grpc_target());
  }
  std::unique_ptr<MiClient> client_;
};

TEST_F(MiGrpcIntegrationTest, PsListsAttendantGrpcProcessAndSipReceivers) {
  v1::Reply reply = client_->Run("ps");
  EXPECT_TRUE(reply.is_array());
  const auto processes = Processes(*client_);
  ASSERT_EQ(processes.count("attendant"), 1u);
  EXPECT_EQ(processes.find("attendant")->second, sipd_->pid());
  EXPECT_EQ(processes.count("MI gRPC"), 1u);
  int receivers = 0;
  for (const auto& [type, pid] : processes) {
    if (type.rfind("SIP receiver", 0) == 0) ++receivers;
    EXPECT_TRUE(ProcessAlive(pid)) << type;
  }
  EXPECT_EQ(receivers, 2);  // children = 2
  // Node layout as `ps` prints it: `Process::  ID=0 PID=.. Type=attendant`.
  EXPECT_EQ(reply.nodes(0).name(), "Process");
  EXPECT_EQ(reply.nodes(0).value(), "");
  ASSERT_EQ(reply.nodes(0).attributes_size(), 3);
  EXPECT_EQ(reply.nodes(0).attributes(0).name(), "ID");
  EXPECT_EQ(reply.nodes(0).attributes(0).value(), "0");
}

TEST_F(MiGrpcIntegrationTest, CoreStatisticsMoveWithRealSipTraffic) {
  const uint64_t before = Statistic(*client_, "rcv_requests");
  for (int i = 0; i < 3; ++i) {
    auto answer = SipExchange(sipd_->sip_port(),
                              MakeSipRequest("OPTIONS", sipd_->sip_port(),
                                             absl::StrCat("grpc-stats-", i, "-", getpid())));
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(SipStatusCode(*answer), 200);
  }
  // sipsak sends an OPTIONS and waits for the 200.
  const std::string sipsak =
      absl::StrCat("sipsak -s sip:127.0.0.1:", sipd_->sip_port(), " >/dev/null 2>&1");
  EXPECT_EQ(std::system(sipsak.c_str()), 0);
  ASSERT_TRUE(WaitUntil([&] { return Statistic(*client_, "rcv_requests") >= before + 4; },
                        std::chrono::seconds(5)));

  // The group selector returns core:* lines (spec 7).
  const v1::Reply core = client_->Run("get_statistics", {"core:"});
  ASSERT_GT(core.nodes_size(), 0);
  bool found = false;
  for (const auto& node : core.nodes()) {
    EXPECT_EQ(node.name().rfind("core:", 0), 0u) << node.name();
    if (node.name() == "core:rcv_requests") {
      found = true;
      uint64_t v = 0;
      ASSERT_TRUE(absl::SimpleAtoi(node.value(), &v));
      EXPECT_GE(v, before + 4);
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(MiGrpcIntegrationTest, UnknownCommandIsNotFoundWithMetadata) {
  grpc::ClientContext ctx;
  v1::Reply reply;
  const grpc::Status status = client_->Execute("no_such_command", {}, &reply, &ctx);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "command 'no_such_command' not available");
  EXPECT_EQ(Trailer(ctx, "sipd-mi-code"), "500");
  EXPECT_EQ(Trailer(ctx, "sipd-mi-reason"), "command 'no_such_command' not available");
  EXPECT_EQ(Trailer(ctx, "sipd-mi-outcome"), "not-available");
}

TEST_F(MiGrpcIntegrationTest, WrongArgumentsAreInvalidArgumentWithThe400Reason) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> calls = {
      {"help", {"a", "b"}}, {"get_statistics", {}}};
  for (const auto& [command, params] : calls) {
    grpc::ClientContext ctx;
    v1::Reply reply;
    const grpc::Status status = client_->Execute(command, params, &reply, &ctx);
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT) << command;
    EXPECT_EQ(status.error_message(), "Too few or too many arguments") << command;
    EXPECT_EQ(Trailer(ctx, "sipd-mi-code"), "400");
    v1::Reply from_metadata;
    ASSERT_TRUE(from_metadata.ParseFromString(Trailer(ctx, "sipd-mi-reply-bin")));
    EXPECT_EQ(from_metadata.code(), 400u);
    EXPECT_EQ(from_metadata.reason(), "Too few or too many arguments");
  }
  // A command's own 404 maps to NOT_FOUND with the reply in metadata.
  grpc::ClientContext ctx;
  v1::Reply reply;
  const grpc::Status status = client_->Execute("help", {"no_such_command"}, &reply, &ctx);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "unknown MI command");
  EXPECT_EQ(Trailer(ctx, "sipd-mi-code"), "404");
  EXPECT_EQ(Trailer(ctx, "sipd-mi-outcome"), "reply");
}

TEST_F(MiGrpcIntegrationTest, ExecuteStreamReassemblesToTheSameTree) {
  const std::vector<std::vector<std::string>> calls = {
      {"which"}, {"ps"}, {"help", "ps"}, {"version"}, {"get_statistics", "core:"}};
  for (const auto& call : calls) {
    const std::vector<std::string> params(call.begin() + 1, call.end());
    grpc::Status status;
    const mi::Reply streamed = client_->Stream(call[0], params, &status);
    ASSERT_TRUE(status.ok()) << call[0] << ": " << status.error_message();
    const mi::Reply whole = mi::FromProto(client_->Run(call[0], params));
    EXPECT_EQ(mi::RenderText(streamed, "\t", false), mi::RenderText(whole, "\t", false)) << call[0];
    EXPECT_TRUE(streamed == whole) << call[0];
  }
  grpc::Status status;
  client_->Stream("no_such_command", {}, &status);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
}

TEST_F(MiGrpcIntegrationTest, ListAndDescribeMatchWhichAndHelp) {
  grpc::ClientContext ctx;
  v1::ListCommandsResponse list;
  ASSERT_TRUE(client_->stub().ListCommands(&ctx, {}, &list).ok());
  const v1::Reply which = client_->Run("which");
  ASSERT_EQ(list.commands_size(), which.nodes_size());
  for (int i = 0; i < which.nodes_size(); ++i) {
    const v1::CommandInfo& info = list.commands(i);
    EXPECT_EQ(info.name(), which.nodes(i).value());

    grpc::ClientContext dctx;
    v1::DescribeCommandRequest describe;
    describe.set_command(info.name());
    v1::CommandInfo described;
    ASSERT_TRUE(client_->stub().DescribeCommand(&dctx, describe, &described).ok());
    EXPECT_EQ(described.name(), info.name());
    EXPECT_EQ(described.module(), info.module());

    const v1::Reply help = client_->Run("help", {info.name()});
    ASSERT_EQ(help.nodes_size(), 2) << info.name();
    EXPECT_EQ(help.nodes(0).value(),
              info.help().empty() ? "not available for this command" : info.help());
    EXPECT_EQ(help.nodes(1).name(), "Exported by");
    EXPECT_EQ(help.nodes(1).value(), info.module());
  }
  grpc::ClientContext nctx;
  v1::DescribeCommandRequest describe;
  describe.set_command("no_such_command");
  v1::CommandInfo info;
  EXPECT_EQ(client_->stub().DescribeCommand(&nctx, describe, &info).error_code(),
            StatusCode::NOT_FOUND);
}

// "" serves once every subsystem does: the SIP receivers are forked after the MI gRPC
// process, so the first checks may still see them starting (re-checked every 100 ms
// while something does not serve).
TEST_F(MiGrpcIntegrationTest, HealthIsServing) {
  auto health = grpc::health::v1::Health::NewStub(client_->channel());
  for (const std::string service : {"", "sipd.mi.v1.Management", "sipd.sip"}) {
    EXPECT_TRUE(WaitUntil(
        [&] {
          grpc::ClientContext ctx;
          grpc::health::v1::HealthCheckRequest request;
          request.set_service(service);
          grpc::health::v1::HealthCheckResponse response;
          return health->Check(&ctx, request, &response).ok() &&
                 response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
        },
        std::chrono::seconds(5)))
        << service;
  }
}

// What grpcurl does first: list the services through reflection, fetch the file that
// defines `service_name` (with its dependencies) and build a descriptor pool from it.
void PoolFromReflection(const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& service_name, pb::DescriptorPool* pool,
                        std::set<std::string>* services) {
  namespace refl = ::grpc::reflection::v1alpha;
  auto reflection = refl::ServerReflection::NewStub(channel);
  grpc::ClientContext rctx;
  auto stream = reflection->ServerReflectionInfo(&rctx);

  refl::ServerReflectionRequest list_request;
  list_request.set_list_services("");
  ASSERT_TRUE(stream->Write(list_request));
  refl::ServerReflectionResponse list_response;
  ASSERT_TRUE(stream->Read(&list_response));
  for (const auto& s : list_response.list_services_response().service()) {
    services->insert(s.name());
  }

  refl::ServerReflectionRequest file_request;
  file_request.set_file_containing_symbol(service_name);
  ASSERT_TRUE(stream->Write(file_request));
  refl::ServerReflectionResponse file_response;
  ASSERT_TRUE(stream->Read(&file_response));
  ASSERT_TRUE(file_response.has_file_descriptor_response())
      << file_response.error_response().error_message();
  stream->WritesDone();
  ASSERT_TRUE(stream->Finish().ok());

  // Build the files in dependency order (the response may list them in any order).
  std::vector<pb::FileDescriptorProto> pending;
  for (const auto& bytes : file_response.file_descriptor_response().file_descriptor_proto()) {
    pb::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    pending.push_back(file);
  }
  while (!pending.empty()) {
    const size_t before = pending.size();
    for (auto it = pending.begin(); it != pending.end();) {
      bool ready = true;
      for (const auto& dep : it->dependency()) ready &= pool->FindFileByName(dep) != nullptr;
      if (ready) {
        ASSERT_NE(pool->BuildFile(*it), nullptr) << it->name();
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
    ASSERT_LT(pending.size(), before) << "unresolvable descriptor dependencies";
  }
}

std::string ToString(const grpc::ByteBuffer& bytes) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(bytes.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// What grpcurl does: discover the service through reflection, build the request from
// the fetched descriptors, call it generically and read the reply dynamically.
TEST_F(MiGrpcIntegrationTest, ReflectionDescribesAndCallsTheServiceDynamically) {
  pb::DescriptorPool pool;
  std::set<std::string> services;
  PoolFromReflection(client_->channel(), "sipd.mi.v1.Management", &pool, &services);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(services.count("sipd.mi.v1.Management"));
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));
  EXPECT_TRUE(services.count("grpc.reflection.v1alpha.ServerReflection"));

  const pb::ServiceDescriptor* service = pool.FindServiceByName("sipd.mi.v1.Management");
  ASSERT_NE(service, nullptr);
  const pb::MethodDescriptor* execute = service->FindMethodByName("Execute");
  ASSERT_NE(execute, nullptr);
  for (const char* method : {"ExecuteStream", "ListCommands", "DescribeCommand", "Session"}) {
    EXPECT_NE(service->FindMethodByName(method), nullptr) << method;
  }

  pb::DynamicMessageFactory factory(&pool);
  std::unique_ptr<pb::Message> request(factory.GetPrototype(execute->input_type())->New());
  const pb::FieldDescriptor* command_field = execute->input_type()->FindFieldByName("command");
  ASSERT_NE(command_field, nullptr);
  request->GetReflection()->SetString(request.get(), command_field, "ps");

  grpc::ByteBuffer request_bytes;
  {
    const std::string serialized = request->SerializeAsString();
    grpc::Slice slice(serialized);
    request_bytes = grpc::ByteBuffer(&slice, 1);
  }
  grpc::GenericStub generic(client_->channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext gctx;
  gctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = generic.PrepareUnaryCall(&gctx, "/sipd.mi.v1.Management/Execute", request_bytes, &cq);
  call->StartCall();
  grpc::ByteBuffer response_bytes;
  grpc::Status status;
  call->Finish(&response_bytes, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(ok);
  ASSERT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }

  std::unique_ptr<pb::Message> reply(factory.GetPrototype(execute->output_type())->New());
  ASSERT_TRUE(reply->ParseFromString(ToString(response_bytes)));

  const pb::Descriptor* reply_type = execute->output_type();
  const pb::Reflection* r = reply->GetReflection();
  EXPECT_EQ(r->GetUInt32(*reply, reply_type->FindFieldByName("code")), 200u);
  const pb::FieldDescriptor* nodes = reply_type->FindFieldByName("nodes");
  ASSERT_NE(nodes, nullptr);
  int process_nodes = 0;
  for (int i = 0; i < r->FieldSize(*reply, nodes); ++i) {
    const pb::Message& node = r->GetRepeatedMessage(*reply, nodes, i);
    const pb::FieldDescriptor* name = node.GetDescriptor()->FindFieldByName("name");
    if (node.GetReflection()->GetString(node, name) == "Process") ++process_nodes;
  }
  EXPECT_GE(process_nodes, 4);  // attendant, MI gRPC, 2 SIP receivers (+ timer)
}

// The input of `grpcurl -d @` (several JSON messages on stdin) split the way grpcurl
// reads it: one top-level JSON object after the other.
std::vector<std::string> SplitJsonObjects(const std::string& text) {
  std::vector<std::string> objects;
  int depth = 0;
  bool in_string = false, escaped = false;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{') {
      if (depth++ == 0) start = i;
    } else if (c == '}' && --depth == 0) {
      objects.push_back(text.substr(start, i - start + 1));
    }
  }
  return objects;
}

// What `grpcurl -plaintext -d @ HOST:PORT sipd.mi.v1.Management/Session` does with
// several JSON messages: descriptors from reflection, each JSON message turned into a
// SessionRequest dynamically, all sent on one bidirectional call, each reply printed as
// JSON.
TEST_F(MiGrpcIntegrationTest, ReflectionCallsSessionWithSeveralJsonMessagesLikeGrpcurl) {
  pb::DescriptorPool pool;
  std::set<std::string> services;
  PoolFromReflection(client_->channel(), "sipd.mi.v1.Management", &pool, &services);
  if (HasFatalFailure()) return;
  const pb::MethodDescriptor* session = pool.FindMethodByName("sipd.mi.v1.Management.Session");
  ASSERT_NE(session, nullptr);
  EXPECT_TRUE(session->client_streaming());
  EXPECT_TRUE(session->server_streaming());

  const std::string stdin_text = R"({"id": 1, "command": "version"}
{"id": 2, "command": "get_statistics", "params": ["core:"]}
{"id": 3, "command": "no_such_command"}
{"id": 4, "command": "which", "stream": true}
)";
  pb::DynamicMessageFactory factory(&pool);
  grpc::GenericStub generic(client_->channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = generic.PrepareCall(&ctx, "/sipd.mi.v1.Management/Session", &cq);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  for (const std::string& json : SplitJsonObjects(stdin_text)) {
    std::unique_ptr<pb::Message> request(factory.GetPrototype(session->input_type())->New());
    ASSERT_TRUE(pb::util::JsonStringToMessage(json, request.get()).ok()) << json;
    const std::string serialized = request->SerializeAsString();
    grpc::Slice slice(serialized);
    grpc::ByteBuffer bytes(&slice, 1);
    call->Write(bytes, reinterpret_cast<void*>(2));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  }
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);

  std::vector<std::string> printed;  // grpcurl prints each reply message as JSON
  std::map<int, std::string> finals;
  while (true) {
    grpc::ByteBuffer bytes;
    call->Read(&bytes, reinterpret_cast<void*>(4));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    if (!ok) break;
    std::unique_ptr<pb::Message> reply(factory.GetPrototype(session->output_type())->New());
    ASSERT_TRUE(reply->ParseFromString(ToString(bytes)));
    std::string json;
    ASSERT_TRUE(pb::util::MessageToJsonString(*reply, &json).ok());
    printed.push_back(json);
    // Each final result, as JSON, by its id.
    const pb::FieldDescriptor* results = reply->GetDescriptor()->FindFieldByName("results");
    for (int i = 0; i < reply->GetReflection()->FieldSize(*reply, results); ++i) {
      const pb::Message& result = reply->GetReflection()->GetRepeatedMessage(*reply, results, i);
      const pb::Descriptor* type = result.GetDescriptor();
      const pb::Reflection* r = result.GetReflection();
      if (!r->GetBool(result, type->FindFieldByName("done"))) continue;
      std::string result_json;
      ASSERT_TRUE(pb::util::MessageToJsonString(result, &result_json).ok());
      finals[static_cast<int>(r->GetUInt32(result, type->FindFieldByName("id")))] = result_json;
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  for (const auto& line : printed) std::printf("%s\n", line.c_str());
  ASSERT_EQ(finals.size(), 4u);
  EXPECT_NE(finals[1].find(R"("name":"Server")"), std::string::npos) << finals[1];
  EXPECT_NE(finals[1].find(R"("outcome":"reply")"), std::string::npos) << finals[1];
  EXPECT_NE(finals[2].find(R"("name":"core:rcv_requests")"), std::string::npos) << finals[2];
  EXPECT_NE(finals[3].find(R"("status":"NOT_FOUND")"), std::string::npos) << finals[3];
  EXPECT_NE(finals[3].find(R"("message":"command 'no_such_command' not available")"),
            std::string::npos)
      << finals[3];
  EXPECT_NE(finals[3].find(R"("outcome":"not-available")"), std::string::npos) << finals[3];
  EXPECT_NE(finals[4].find(R"("outcome":"reply")"), std::string::npos) << finals[4];
  bool chunk_seen = false;
  for (const auto& line : printed) chunk_seen |= line.find(R"("chunk":)") != std::string::npos;
  EXPECT_TRUE(chunk_seen);
}

TEST_F(MiGrpcIntegrationTest, MalformedAndOversizedRequestsLeaveTheServerServing) {
  struct Row {
    std::string label;
    v1::ExecuteRequest request;
    StatusCode expected;
  };
  std::vector<Row> rows;
  rows.push_back({"empty command", {}, StatusCode::INVALID_ARGUMENT});
  {
    Row r{"5 MB param", {}, StatusCode::RESOURCE_EXHAUSTED};
    r.request.set_command("help");
    r.request.add_params(std::string(5 << 20, 'x'));
    rows.push_back(std::move(r));
  }
  {
    Row r{"100k params", {}, StatusCode::INVALID_ARGUMENT};
    r.request.set_command("get_statistics");
    const std::string param = "all";
    for (int i = 0; i < 100000; ++i) r.request.add_params(param);
    rows.push_back(std::move(r));
  }
  {
    Row r{"invalid UTF-8", {}, StatusCode::INVALID_ARGUMENT};
    r.request.set_command("help");
    r.request.add_params("p\xFF\xFE");
    rows.push_back(std::move(r));
  }
  {
    Row r{"empty argument", {}, StatusCode::INVALID_ARGUMENT};
    r.request.set_command("help");
    r.request.add_params("");
    rows.push_back(std::move(r));
  }
  for (const Row& row : rows) {
    grpc::ClientContext ctx;
    v1::Reply reply;
    const grpc::Status status = client_->stub().Execute(&ctx, row.request, &reply);
    EXPECT_EQ(status.error_code(), row.expected) << row.label << ": " << status.error_message();
    EXPECT_EQ(client_->Run("version").nodes_size(), 1) << "after " << row.label;
  }

  {  // deadline already expired
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() - std::chrono::seconds(1));
    v1::ExecuteRequest request;
    request.set_command("ps");
    v1::Reply reply;
    EXPECT_EQ(client_->stub().Execute(&ctx, request, &reply).error_code(),
              StatusCode::DEADLINE_EXCEEDED);
  }
  {  // cancelled stream
    grpc::ClientContext ctx;
    v1::ExecuteRequest request;
    request.set_command("which");
    auto reader = client_->stub().ExecuteStream(&ctx, request);
    ctx.TryCancel();
    v1::ReplyChunk chunk;
    while (reader->Read(&chunk)) {
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok() || status.error_code() == StatusCode::CANCELLED);
  }
  EXPECT_EQ(client_->Run("version").nodes_size(), 1);
  EXPECT_EQ(Processes(*client_).count("MI gRPC"), 1u);
}

// Tests with their own daemon.
TEST(MiGrpcProcessTest, KilledGrpcProcessIsRestartedAndServesAgain) {
  SipdInstance sipd;
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  MiClient client(sipd.grpc_target());
  const auto before = Processes(client);
  ASSERT_EQ(before.count("MI gRPC"), 1u);
  const int old_pid = before.find("MI gRPC")->second;
  ASSERT_EQ(kill(old_pid, SIGKILL), 0);

  int new_pid = 0;
  const bool back = WaitUntil(
      [&] {
        v1::Reply reply;
        MiClient fresh(sipd.grpc_target());
        if (!fresh.Execute("ps", {}, &reply).ok()) return false;
        for (const auto& node : reply.nodes()) {
          if (Attr(node, "Type") == "MI gRPC") {
            EXPECT_TRUE(absl::SimpleAtoi(Attr(node, "PID"), &new_pid)) << Attr(node, "PID");
          }
        }
        return new_pid != 0 && new_pid != old_pid;
      },
      std::chrono::seconds(20));
  ASSERT_TRUE(back) << sipd.log();
  EXPECT_TRUE(ProcessAlive(new_pid));
  EXPECT_FALSE(ProcessAlive(old_pid));
  EXPECT_EQ(MiClient(sipd.grpc_target()).Run("version").nodes_size(), 1);
  EXPECT_TRUE(sipd.Stop().ok()) << sipd.log();
}

TEST(MiGrpcProcessTest, SecondDaemonOnTheSameGrpcPortFailsLoudly) {
  SipdInstance first;
  ASSERT_TRUE(first.Start().ok()) << first.log();

  SipdInstance::Options options;
  options.grpc = false;  // configured by hand, on the first daemon's port
  options.extra_config = absl::StrCat(
      "loadmodule \"mi_grpc\"\nmodparam(\"mi_grpc\", \"listen\", \"", first.grpc_target(), "\")\n");
  SipdInstance second(options);
  const absl::Status started = second.Start();
  EXPECT_FALSE(started.ok()) << "the second daemon started on a taken gRPC port";
  EXPECT_NE(second.log().find("cannot listen on " + first.grpc_target()), std::string::npos)
      << second.log();

  MiClient client(first.grpc_target());
  const auto processes = Processes(client);
  EXPECT_EQ(processes.find("attendant")->second, first.pid());
  EXPECT_TRUE(first.Stop().ok()) << first.log();
}

}  // namespace
}  // namespace sipd::testing
