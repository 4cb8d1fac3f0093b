// The Management service served in-process by MiGrpcServer over real loopback TCP,
// with a registry of test commands (tests/service/test_registry.h). The same checks
// against a real sipd live in sipd_grpc_test.cc.
#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "registry/dispatcher.h"
#include "registry/proto_convert.h"
#include "service/grpc_server.h"
#include "service/status_mapping.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/service/raw_http2.h"
#include "tests/service/test_registry.h"
#include "tests/support/sipd_harness.h"

namespace sipd::service {
namespace {

using grpc::StatusCode;

std::string Trailer(const grpc::ClientContext& ctx, const std::string& key) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(key);
  if (it == md.end()) return "<absent>";
  return std::string(it->second.data(), it->second.size());
}

class ServiceServerTest : public ::testing::Test {
 protected:
  void StartServer(ServiceOptions options = {}, ServerOptions server_options = {}) {
    server_options.listen = "127.0.0.1:0";
    server_options.service = options;
    dispatcher_ = std::make_unique<mi::Dispatcher>(
        t_.registry, nullptr,
        mi::DispatcherOptions{.workers = options.workers, .max_queued = options.max_queued});
    auto server = MiGrpcServer::Start(*dispatcher_, server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    target_ = "127.0.0.1:" + std::to_string(server_->port());
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
    stub_ = mi::v1::Management::NewStub(channel_);
  }
  void SetUp() override { StartServer(); }
  void TearDown() override {
    stub_.reset();
    channel_.reset();
    if (server_) server_->Shutdown(std::chrono::milliseconds(500));
  }

  grpc::Status Execute(const std::string& command, const std::vector<std::string>& params,
                       mi::v1::Reply* reply, grpc::ClientContext* ctx) {
    mi::v1::ExecuteRequest request;
    request.set_command(command);
    for (const auto& p : params) request.add_params(p);
    return stub_->Execute(ctx, request, reply);
  }

  // Serving check used after every abuse test.
  void ExpectStillServing() {
    grpc::ClientContext ctx;
    mi::v1::Reply reply;
    const grpc::Status status = Execute("version", {}, &reply, &ctx);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(reply.nodes_size(), 1);
    EXPECT_EQ(reply.nodes(0).value(), "sipd-test");
  }

  testing::TestRegistry t_;
  std::unique_ptr<mi::Dispatcher> dispatcher_;
  std::unique_ptr<MiGrpcServer> server_;
  std::string target_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<mi::v1::Management::Stub> stub_;
};

TEST_F(ServiceServerTest, ExecuteReturnsTheReplyAndMiMetadata) {
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  ASSERT_TRUE(Execute("version", {}, &reply, &ctx).ok());
  EXPECT_EQ(reply.code(), 200u);
  EXPECT_EQ(reply.reason(), "OK");
  ASSERT_EQ(reply.nodes_size(), 1);
  EXPECT_EQ(reply.nodes(0).name(), "Server");
  EXPECT_EQ(Trailer(ctx, kMetadataMiCode), "200");
  EXPECT_EQ(Trailer(ctx, kMetadataMiReason), "OK");
  EXPECT_EQ(Trailer(ctx, kMetadataMiOutcome), "reply");
  EXPECT_EQ(Trailer(ctx, kMetadataMiReplyBin), "<absent>");
}

TEST_F(ServiceServerTest, UnknownCommandIsNotFound) {
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  const grpc::Status status = Execute("no_such_cmd", {}, &reply, &ctx);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "command 'no_such_cmd' not available");
  EXPECT_EQ(Trailer(ctx, kMetadataMiCode), "500");
  EXPECT_EQ(Trailer(ctx, kMetadataMiReason), "command 'no_such_cmd' not available");
  EXPECT_EQ(Trailer(ctx, kMetadataMiOutcome), "not-available");
  EXPECT_EQ(Trailer(ctx, kMetadataMiReplyBin), "<absent>");
}

TEST_F(ServiceServerTest, HandlerFailureIsInternal) {
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  const grpc::Status status = Execute("fail", {}, &reply, &ctx);
  EXPECT_EQ(status.error_code(), StatusCode::INTERNAL);
  EXPECT_EQ(status.error_message(), "command 'fail' failed");
  EXPECT_EQ(Trailer(ctx, kMetadataMiOutcome), "failed");
  EXPECT_EQ(Trailer(ctx, kMetadataMiCode), "500");
}

TEST_F(ServiceServerTest, MiCodesMapToStatusesWithReplyInMetadata) {
  const std::map<uint32_t, StatusCode> table = {
      {202, StatusCode::OK},
      {400, StatusCode::INVALID_ARGUMENT},
      {401, StatusCode::UNAUTHENTICATED},
      {403, StatusCode::PERMISSION_DENIED},
      {404, StatusCode::NOT_FOUND},
      {481, StatusCode::NOT_FOUND},
      {405, StatusCode::UNIMPLEMENTED},
      {501, StatusCode::UNIMPLEMENTED},
      {408, StatusCode::DEADLINE_EXCEEDED},
      {409, StatusCode::ALREADY_EXISTS},
      {410, StatusCode::FAILED_PRECONDITION},
      {500, StatusCode::INTERNAL},
      {503, StatusCode::UNAVAILABLE},
  };
  for (const auto& [code, expected] : table) {
    grpc::ClientContext ctx;
    mi::v1::Reply reply;
    const grpc::Status status = Execute("code", {std::to_string(code)}, &reply, &ctx);
    const std::string reason = "reason " + std::to_string(code);
    EXPECT_EQ(status.error_code(), expected) << code;
    EXPECT_EQ(Trailer(ctx, kMetadataMiCode), std::to_string(code));
    EXPECT_EQ(Trailer(ctx, kMetadataMiReason), reason);
    if (expected == StatusCode::OK) {
      EXPECT_EQ(reply.code(), code);
      continue;
    }
    EXPECT_EQ(status.error_message(), reason);
    mi::v1::Reply from_metadata;
    ASSERT_TRUE(from_metadata.ParseFromString(Trailer(ctx, kMetadataMiReplyBin))) << code;
    EXPECT_EQ(from_metadata.code(), code);
    EXPECT_EQ(from_metadata.reason(), reason);
    ASSERT_EQ(from_metadata.nodes_size(), 1);
    EXPECT_EQ(from_metadata.nodes(0).name(), "Detail");
  }
}

TEST_F(ServiceServerTest, WrongArgumentCountIsInvalidArgumentWith400Reason) {
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  const grpc::Status status = Execute("code", {}, &reply, &ctx);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "Too few or too many arguments");
  EXPECT_EQ(Trailer(ctx, kMetadataMiCode), "400");
}

TEST_F(ServiceServerTest, MalformedAndOversizedRequests) {
  struct Row {
    std::string label;
    mi::v1::ExecuteRequest request;
    std::vector<StatusCode> expected;
  };
  std::vector<Row> rows;
  rows.push_back({"empty command", {}, {StatusCode::INVALID_ARGUMENT}});
  {
    Row r{"5 MB param", {}, {StatusCode::RESOURCE_EXHAUSTED}};
    r.request.set_command("echo");
    r.request.add_params(std::string(5 << 20, 'x'));
    rows.push_back(std::move(r));
  }
  {
    Row r{"100k params", {}, {StatusCode::INVALID_ARGUMENT}};
    r.request.set_command("echo");
    const std::string param = "p";
    for (int i = 0; i < 100000; ++i) r.request.add_params(param);
    rows.push_back(std::move(r));
  }
  {
    // proto3 strings must be UTF-8: the server cannot parse this request.
    Row r{"invalid UTF-8 command", {}, {StatusCode::INVALID_ARGUMENT}};
    r.request.set_command("ver\xC0sion");
    rows.push_back(std::move(r));
  }
  {
    Row r{"empty argument", {}, {StatusCode::INVALID_ARGUMENT}};
    r.request.set_command("echo");
    r.request.add_params("");
    rows.push_back(std::move(r));
  }
  {
    Row r{"1 KB command name", {}, {StatusCode::INVALID_ARGUMENT}};
    r.request.set_command(std::string(1024, 'c'));
    rows.push_back(std::move(r));
  }
  for (const Row& row : rows) {
    grpc::ClientContext ctx;
    mi::v1::Reply reply;
    const grpc::Status status = stub_->Execute(&ctx, row.request, &reply);
    EXPECT_NE(std::find(row.expected.begin(), row.expected.end(), status.error_code()),
              row.expected.end())
        << row.label << ": got " << status.error_code() << " " << status.error_message();
    std::printf("%s -> %d %s\n", row.label.c_str(), status.error_code(),
                status.error_message().c_str());
    ExpectStillServing();
  }
}

TEST_F(ServiceServerTest, ExpiredDeadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() - std::chrono::seconds(1));
  mi::v1::Reply reply;
  EXPECT_EQ(Execute("version", {}, &reply, &ctx).error_code(), StatusCode::DEADLINE_EXCEEDED);
  ExpectStillServing();
}

TEST_F(ServiceServerTest, CallWhoseDeadlinePassedWhileQueuedIsNotRun) {
  TearDown();
  ServiceOptions options;
  options.workers = 1;
  StartServer(options);
  // Occupy the only worker with `spin` (runs until its call is cancelled).
  grpc::ClientContext spin_ctx;
  std::thread spin([&] {
    mi::v1::Reply reply;
    EXPECT_EQ(Execute("spin", {}, &reply, &spin_ctx).error_code(), StatusCode::CANCELLED);
  });
  ASSERT_TRUE(
      testing::WaitUntil([&] { return t_.spin_started->load() == 1; }, std::chrono::seconds(20)));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  mi::v1::Reply reply;
  EXPECT_EQ(Execute("dump", {"10"}, &reply, &ctx).error_code(), StatusCode::DEADLINE_EXCEEDED);
  // The dump's deadline passed while it was queued behind spin; free the worker.
  spin_ctx.TryCancel();
  spin.join();
  ASSERT_TRUE(
      testing::WaitUntil([&] { return t_.spin_cancelled->load() == 1; }, std::chrono::seconds(20)));
  ExpectStillServing();
  EXPECT_EQ(t_.dump_finished->load(), 0) << "an expired call must not run";
}

TEST_F(ServiceServerTest, AsyncCommandRunsOnTheWorkerPool) {
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  ASSERT_TRUE(Execute("slow", {"20"}, &reply, &ctx).ok());
  ASSERT_EQ(reply.nodes_size(), 1);
  EXPECT_EQ(reply.nodes(0).value(), "20");
}

TEST_F(ServiceServerTest, InvalidUtf8InRepliesIsReplaced) {
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  ASSERT_TRUE(Execute("binary", {}, &reply, &ctx).ok());
  EXPECT_EQ(reply.nodes(0).value(), "caf\xEF\xBF\xBD \xEF\xBF\xBD ok");
}

TEST_F(ServiceServerTest, TooLargeUnaryReplyPointsToExecuteStream) {
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  const grpc::Status status = Execute("dump", {"6000", "1000"}, &reply, &ctx);
  EXPECT_EQ(status.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("ExecuteStream"), std::string::npos);

  grpc::ClientContext stream_ctx;
  mi::v1::ExecuteRequest request;
  request.set_command("dump");
  request.add_params("6000");
  request.add_params("1000");
  auto reader = stub_->ExecuteStream(&stream_ctx, request);
  mi::v1::ReplyChunk chunk;
  int nodes = 0;
  while (reader->Read(&chunk)) nodes += chunk.nodes_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(nodes, 12000);
}

mi::Reply StreamAndAssemble(mi::v1::Management::Stub& stub, const std::string& command,
                            const std::vector<std::string>& params, grpc::Status* status,
                            int* chunks = nullptr) {
  grpc::ClientContext ctx;
  mi::v1::ExecuteRequest request;
  request.set_command(command);
  for (const auto& p : params) request.add_params(p);
  auto reader = stub.ExecuteStream(&ctx, request);
  mi::ChunkAssembler assembler;
  mi::v1::ReplyChunk chunk;
  int count = 0;
  while (reader->Read(&chunk)) {
    EXPECT_TRUE(assembler.Add(chunk).ok());
    ++count;
  }
  *status = reader->Finish();
  if (chunks != nullptr) *chunks = count;
  return count > 0 ? assembler.Take() : mi::Reply{};
}

TEST_F(ServiceServerTest, ExecuteStreamReassemblesToExecute) {
  grpc::Status status;
  int chunks = 0;
  const mi::Reply streamed = StreamAndAssemble(*stub_, "dump", {"1234", "5"}, &status, &chunks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(chunks, 25);  // 24 flushes + the rest

  grpc::ClientContext ctx;
  mi::v1::Reply whole;
  ASSERT_TRUE(Execute("dump", {"1234", "5"}, &whole, &ctx).ok());
  EXPECT_TRUE(streamed == mi::FromProto(whole));
}

TEST_F(ServiceServerTest, ExecuteStreamErrorsUseTheSameMapping) {
  grpc::Status status;
  StreamAndAssemble(*stub_, "nope", {}, &status);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "command 'nope' not available");

  int chunks = 0;
  const mi::Reply reply = StreamAndAssemble(*stub_, "code", {"404"}, &status, &chunks);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(chunks, 1);
  EXPECT_EQ(reply.code, 404u);
  EXPECT_EQ(reply.reason, "reason 404");

  StreamAndAssemble(*stub_, "", {}, &status);
  EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServiceServerTest, SlowReaderHoldsTheHandlerBack) {
  // 1000 flushes of ~50 KB each (50 MB): a client that stops reading must stop the
  // handler after a bounded amount (socket buffers, HTTP/2 windows, one chunk: a few
  // MB), not let the server buffer the whole reply.
  grpc::ClientContext ctx;
  mi::v1::ExecuteRequest request;
  request.set_command("dump");
  request.add_params("50000");
  request.add_params("1000");
  auto reader = stub_->ExecuteStream(&ctx, request);
  mi::v1::ReplyChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const int flushed_while_paused = t_.dump_flushes->load();
  std::printf("flushes done while the client paused: %d of 1000\n", flushed_while_paused);
  EXPECT_LT(flushed_while_paused, 500) << "the server kept producing for a stalled client";
  EXPECT_EQ(t_.dump_finished->load(), 0);
  int nodes = chunk.nodes_size();
  while (reader->Read(&chunk)) nodes += chunk.nodes_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(nodes, 100000);
  EXPECT_EQ(t_.dump_finished->load(), 1);
}

TEST_F(ServiceServerTest, CancelledStreamDropsItsProducerAndServerKeepsServing) {
  const mi::Command* dump = t_.registry.Find("dump");
  const uint64_t errors_before = dump->errors();
  {
    grpc::ClientContext ctx;
    mi::v1::ExecuteRequest request;
    request.set_command("dump");
    request.add_params("200000");
    request.add_params("200");
    auto reader = stub_->ExecuteStream(&ctx, request);
    mi::v1::ReplyChunk chunk;
    ASSERT_TRUE(reader->Read(&chunk));
    ctx.TryCancel();
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
  }
  // The exchange is cancelled (counted as a call that did not succeed) and its producer
  // dropped: the dump never reaches its end.
  ASSERT_TRUE(testing::WaitUntil([&] { return dump->errors() == errors_before + 1; },
                                 std::chrono::seconds(10)));
  EXPECT_EQ(t_.dump_finished->load(), 0);
  ExpectStillServing();
}

mi::v1::SessionRequest SessionCommandFor(uint32_t id, const std::string& command) {
  mi::v1::SessionRequest request;
  request.set_id(id);
  request.set_command(command);
  return request;
}

// A channel whose client reads nothing on its own: no BDP probing (the HTTP/2 window
// stays at `window` bytes), its own connection.
std::shared_ptr<grpc::Channel> SmallWindowChannel(const std::string& target, int window,
                                                  int index) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, window);
  args.SetInt("sipd.test.channel", index);  // no connection sharing between channels
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// `count` ExecuteStream calls of `dump 100000 500`, each on a small-window channel of
// its own (indexes from `first_index`) whose client reads nothing.
struct StalledDumpStreams {
  StalledDumpStreams(const std::string& target, int count, int first_index) {
    for (int i = 0; i < count; ++i) {
      channels.push_back(SmallWindowChannel(target, 4096, first_index + i));
      auto stub = mi::v1::Management::NewStub(channels.back());
      contexts.push_back(std::make_unique<grpc::ClientContext>());
      mi::v1::ExecuteRequest request;
      request.set_command("dump");
      request.add_params("100000");
      request.add_params("500");
      readers.push_back(stub->ExecuteStream(contexts.back().get(), request));
    }
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<mi::v1::ReplyChunk>>> readers;
};

TEST_F(ServiceServerTest, StalledStreamIsCutAndItsProducerDropped) {
  TearDown();
  ServiceOptions options;
  options.stream_write_timeout = std::chrono::milliseconds(300);
  StartServer(options);
  const mi::Command* dump = t_.registry.Find("dump");
  auto channel = SmallWindowChannel(target_, 4096, 1);
  auto stub = mi::v1::Management::NewStub(channel);
  grpc::ClientContext ctx;
  mi::v1::ExecuteRequest request;
  request.set_command("dump");
  request.add_params("50000");
  request.add_params("1000");
  auto reader = stub->ExecuteStream(&ctx, request);
  // Read nothing: the server's write stalls and the stall timeout cuts the stream.
  ASSERT_TRUE(testing::WaitUntil([&] { return dump->errors() == 1; }, std::chrono::seconds(20)));
  EXPECT_EQ(server_->calls_cut(), 1u);
  EXPECT_EQ(t_.dump_finished->load(), 0);
  mi::v1::ReplyChunk chunk;
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
  ExpectStillServing();
}

TEST_F(ServiceServerTest, StreamNotOverAfterReplyTimeoutIsCut) {
  TearDown();
  ServiceOptions options;
  options.reply_timeout = std::chrono::milliseconds(300);
  StartServer(options);
  grpc::ClientContext ctx;
  mi::v1::ExecuteRequest request;
  request.set_command("park");  // never answered: only the total deadline ends it
  auto reader = stub_->ExecuteStream(&ctx, request);
  mi::v1::ReplyChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
  auto& async = static_cast<mi::LocalAsyncBackend&>(dispatcher_->async());
  EXPECT_TRUE(testing::WaitUntil([&] { return async.pending() == 0; }, std::chrono::seconds(10)));
  ExpectStillServing();
}

// Streams whose clients read nothing hold no thread: more of them than the dispatcher
// has workers, and unary calls, other streams and blocking commands still run.
TEST_F(ServiceServerTest, StalledStreamsHoldNoThread) {
  constexpr int kStalled = 16;  // > ServiceOptions::workers
  StalledDumpStreams stalled(target_, kStalled, 0);
  auto& contexts = stalled.contexts;
  auto& readers = stalled.readers;
  // Every stream produced its first part, and then waits for its client.
  ASSERT_TRUE(testing::WaitUntil([&] { return t_.dump_flushes->load() >= kStalled; },
                                 std::chrono::seconds(20)));
  ExpectStillServing();
  grpc::Status status;
  int chunks = 0;
  StreamAndAssemble(*stub_, "dump", {"1234", "5"}, &status, &chunks);
  EXPECT_TRUE(status.ok()) << status.error_message();
  grpc::ClientContext ctx;
  mi::v1::Reply reply;
  EXPECT_TRUE(Execute("slow", {"10"}, &reply, &ctx).ok());
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    mi::v1::ReplyChunk chunk;
    while (reader->Read(&chunk)) {
    }
    reader->Finish();
  }
  EXPECT_EQ(t_.dump_finished->load(), 1);  // only the stream that was read
}

// A shutdown while streams wait for their clients. The clients cancel them just before,
// so the calls' tags (a failed write, then the Finish that follows it) race the
// shutdown: every call must end before the queues stop, since gRPC aborts the process
// on an operation started on a shut-down queue. Several rounds, each a new server.
TEST_F(ServiceServerTest, ShutdownLetsTheCancelledCallsEndBeforeTheQueuesStop) {
  constexpr int kRounds = 20;  // before the fix, half of the 10-round runs aborted
  constexpr int kStreams = 8;
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      TearDown();
      server_.reset();
      StartServer();
    }
    const int flushes_before = t_.dump_flushes->load();
    StalledDumpStreams stalled(target_, kStreams, round * kStreams);
    auto& contexts = stalled.contexts;
    auto& readers = stalled.readers;
    // Every stream produced its first part and waits for its client.
    ASSERT_TRUE(
        testing::WaitUntil([&] { return t_.dump_flushes->load() >= flushes_before + kStreams; },
                           std::chrono::seconds(20)));
    for (auto& context : contexts) context->TryCancel();
    server_->Shutdown(std::chrono::milliseconds(0));
    EXPECT_EQ(server_->live_calls(), 0) << "round " << round;
    for (auto& reader : readers) {
      mi::v1::ReplyChunk chunk;
      while (reader->Read(&chunk)) {
      }
      EXPECT_EQ(reader->Finish().error_code(), StatusCode::CANCELLED);
    }
  }
}

// A deadline (and a cancel) reaches a handler that is already running, on a worker.
TEST_F(ServiceServerTest, DeadlineAndCancelReachTheRunningHandler) {
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    mi::v1::Reply reply;
    EXPECT_EQ(Execute("spin", {}, &reply, &ctx).error_code(), StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(
      testing::WaitUntil([&] { return t_.spin_cancelled->load() == 1; }, std::chrono::seconds(20)));
  {
    grpc::ClientContext ctx;
    auto session = stub_->Session(&ctx);
    ASSERT_TRUE(session->Write(SessionCommandFor(1, "spin")));
    ASSERT_TRUE(session->Write(SessionCommandFor(2, "version")));
    mi::v1::SessionReply reply;
    ASSERT_TRUE(session->Read(&reply));  // version answered
    ASSERT_TRUE(
        testing::WaitUntil([&] { return t_.spin_started->load() == 2; }, std::chrono::seconds(20)));
    mi::v1::SessionRequest cancel;
    cancel.set_id(1);
    cancel.set_cancel(true);
    ASSERT_TRUE(session->Write(cancel));
    EXPECT_TRUE(testing::WaitUntil([&] { return t_.spin_cancelled->load() == 2; },
                                   std::chrono::seconds(20)));
    ASSERT_TRUE(session->WritesDone());
    while (session->Read(&reply)) {
    }
    EXPECT_TRUE(session->Finish().ok());
  }
  ExpectStillServing();
}

TEST_F(ServiceServerTest, CancelledAsyncExecuteReleasesItsSlot) {
  auto& async = static_cast<mi::LocalAsyncBackend&>(dispatcher_->async());
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    mi::v1::Reply reply;
    EXPECT_EQ(Execute("park", {}, &reply, &ctx).error_code(), StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_TRUE(testing::WaitUntil([&] { return async.pending() == 0; }, std::chrono::seconds(10)));
  {
    grpc::ClientContext ctx;
    mi::v1::Reply reply;
    std::thread canceller([&] {
      testing::WaitUntil([&] { return async.pending() == 1; }, std::chrono::seconds(10));
      ctx.TryCancel();
    });
    EXPECT_EQ(Execute("park", {}, &reply, &ctx).error_code(), StatusCode::CANCELLED);
    canceller.join();
  }
  EXPECT_TRUE(testing::WaitUntil([&] { return async.pending() == 0; }, std::chrono::seconds(10)));
  {  // completed by "another party": the reply comes through
    grpc::ClientContext ctx;
    mi::v1::Reply reply;
    std::thread completer([&] {
      testing::WaitUntil([&] { return async.pending() == 1; }, std::chrono::seconds(10));
      mi::AsyncTicket ticket;
      {
        std::lock_guard<std::mutex> lock(t_.parked->mu);
        ticket = t_.parked->tickets.back();
      }
      mi::Reply answer;
      answer.root.AddKid("late", "yes");
      async.Complete(ticket, &answer);
    });
    ASSERT_TRUE(Execute("park", {}, &reply, &ctx).ok());
    completer.join();
    ASSERT_EQ(reply.nodes_size(), 1);
    EXPECT_EQ(reply.nodes(0).value(), "yes");
  }
  ExpectStillServing();
}

// --- Session -----------------------------------------------------------------------

using Session = grpc::ClientReaderWriter<mi::v1::SessionRequest, mi::v1::SessionReply>;

mi::v1::SessionRequest SessionCommand(uint32_t id, const std::string& command,
                                      const std::vector<std::string>& params = {}) {
  mi::v1::SessionRequest request;
  request.set_id(id);
  request.set_command(command);
  for (const auto& p : params) request.add_params(p);
  return request;
}

// Reads results until `id` has its final one (or the stream ends); returns them all.
std::vector<mi::v1::SessionResult> ReadUntilDone(Session& session, uint32_t id) {
  std::vector<mi::v1::SessionResult> results;
  mi::v1::SessionReply reply;
  while (session.Read(&reply)) {
    bool found = false;
    for (const auto& result : reply.results()) {
      results.push_back(result);
      found |= result.id() == id && result.done();
    }
    if (found) break;
  }
  return results;
}

std::map<uint32_t, mi::v1::SessionResult> ReadAllFinals(Session& session) {
  std::map<uint32_t, mi::v1::SessionResult> finals;
  mi::v1::SessionReply reply;
  while (session.Read(&reply)) {
    for (const auto& result : reply.results()) {
      if (!result.done()) continue;
      EXPECT_EQ(finals.count(result.id()), 0u) << "two final results for id " << result.id();
      finals[result.id()] = result;
    }
  }
  return finals;
}

TEST_F(ServiceServerTest, SessionRunsPipelinedCommandsWithExecutesStatusMapping) {
  grpc::ClientContext ctx;
  auto session = stub_->Session(&ctx);
  constexpr uint32_t kEchoes = 200;
  for (uint32_t id = 0; id < kEchoes; ++id) {
    ASSERT_TRUE(session->Write(SessionCommand(id, "echo", {std::to_string(id * 7)})));
  }
  ASSERT_TRUE(session->Write(SessionCommand(1000, "version")));
  ASSERT_TRUE(session->Write(SessionCommand(1001, "code", {"404"})));
  ASSERT_TRUE(session->Write(SessionCommand(1002, "nope")));
  ASSERT_TRUE(session->Write(SessionCommand(1003, "fail")));
  ASSERT_TRUE(session->Write(SessionCommand(1004, "")));
  ASSERT_TRUE(session->Write(SessionCommand(1005, "code")));
  ASSERT_TRUE(session->Write(SessionCommand(1006, "code", {"202"})));
  ASSERT_TRUE(session->Write(SessionCommand(1007, "echo", {""})));
  ASSERT_TRUE(session->WritesDone());
  auto finals = ReadAllFinals(*session);
  ASSERT_TRUE(session->Finish().ok());
  ASSERT_EQ(finals.size(), kEchoes + 8);
  using R = mi::v1::SessionResult;
  for (uint32_t id = 0; id < kEchoes; ++id) {
    const R& r = finals[id];
    EXPECT_EQ(r.status(), R::OK);
    EXPECT_EQ(r.outcome(), "reply");
    ASSERT_EQ(r.reply().nodes_size(), 1);
    EXPECT_EQ(r.reply().nodes(0).value(), std::to_string(id * 7));
  }
  EXPECT_EQ(finals[1000].reply().nodes(0).value(), "sipd-test");
  EXPECT_EQ(finals[1001].status(), R::NOT_FOUND);
  EXPECT_EQ(finals[1001].message(), "reason 404");
  EXPECT_EQ(finals[1001].outcome(), "reply");
  EXPECT_EQ(finals[1001].reply().code(), 404u);
  ASSERT_EQ(finals[1001].reply().nodes_size(), 1);  // the whole error reply
  EXPECT_EQ(finals[1001].reply().nodes(0).name(), "Detail");
  EXPECT_EQ(finals[1002].status(), R::NOT_FOUND);
  EXPECT_EQ(finals[1002].message(), "command 'nope' not available");
  EXPECT_EQ(finals[1002].outcome(), "not-available");
  EXPECT_EQ(finals[1002].reply().code(), 500u);
  EXPECT_EQ(finals[1003].status(), R::INTERNAL);
  EXPECT_EQ(finals[1003].message(), "command 'fail' failed");
  EXPECT_EQ(finals[1003].outcome(), "failed");
  EXPECT_EQ(finals[1004].status(), R::INVALID_ARGUMENT);
  EXPECT_EQ(finals[1004].message(), "empty command name");
  EXPECT_EQ(finals[1004].outcome(), "");
  EXPECT_FALSE(finals[1004].has_reply());
  EXPECT_EQ(finals[1005].status(), R::INVALID_ARGUMENT);
  EXPECT_EQ(finals[1005].message(), "Too few or too many arguments");
  EXPECT_EQ(finals[1005].reply().code(), 400u);
  EXPECT_EQ(finals[1006].status(), R::OK);
  EXPECT_EQ(finals[1006].reply().code(), 202u);
  EXPECT_EQ(finals[1007].status(), R::INVALID_ARGUMENT);
  ExpectStillServing();
}

TEST_F(ServiceServerTest, SessionRepliesOutOfOrder) {
  grpc::ClientContext ctx;
  auto session = stub_->Session(&ctx);
  ASSERT_TRUE(session->Write(SessionCommand(1, "park")));  // answered by the test, later
  ASSERT_TRUE(session->Write(SessionCommand(2, "version")));
  auto results = ReadUntilDone(*session, 2);
  ASSERT_FALSE(results.empty());
  EXPECT_EQ(results.back().id(), 2u);
  for (const auto& r : results) EXPECT_NE(r.id(), 1u);
  auto& async = static_cast<mi::LocalAsyncBackend&>(dispatcher_->async());
  mi::AsyncTicket ticket;
  {
    std::lock_guard<std::mutex> lock(t_.parked->mu);
    ASSERT_EQ(t_.parked->tickets.size(), 1u);
    ticket = t_.parked->tickets.back();
  }
  mi::Reply answer;
  answer.root.AddKid("late", "one");
  ASSERT_TRUE(async.Complete(ticket, &answer));
  results = ReadUntilDone(*session, 1);
  ASSERT_FALSE(results.empty());
  EXPECT_EQ(results.back().id(), 1u);
  EXPECT_EQ(results.back().reply().nodes(0).value(), "one");
  ASSERT_TRUE(session->WritesDone());
  EXPECT_TRUE(ReadAllFinals(*session).empty());
  EXPECT_TRUE(session->Finish().ok());
}

TEST_F(ServiceServerTest, SessionStreamsChunksTaggedWithTheId) {
  grpc::ClientContext ctx;
  auto session = stub_->Session(&ctx);
  mi::v1::SessionRequest streamed = SessionCommand(7, "dump", {"1234", "5"});
  streamed.set_stream(true);
  ASSERT_TRUE(session->Write(streamed));
  ASSERT_TRUE(session->Write(SessionCommand(8, "version")));
  mi::v1::SessionRequest streamed_error = SessionCommand(9, "code", {"404"});
  streamed_error.set_stream(true);
  ASSERT_TRUE(session->Write(streamed_error));
  ASSERT_TRUE(session->WritesDone());
  std::map<uint32_t, mi::ChunkAssembler> assemblers;
  std::map<uint32_t, mi::v1::SessionResult> finals;
  mi::v1::SessionReply reply;
  int chunks = 0;
  while (session->Read(&reply)) {
    for (const auto& r : reply.results()) {
      if (r.has_chunk()) {
        EXPECT_FALSE(r.done());
        EXPECT_TRUE(assemblers[r.id()].Add(r.chunk()).ok());
        ++chunks;
      }
      if (r.done()) finals[r.id()] = r;
    }
  }
  ASSERT_TRUE(session->Finish().ok());
  ASSERT_EQ(finals.size(), 3u);
  EXPECT_EQ(finals[7].status(), mi::v1::SessionResult::OK);
  EXPECT_EQ(finals[7].outcome(), "reply");
  EXPECT_GE(chunks, 25);
  grpc::ClientContext ectx;
  mi::v1::Reply whole;
  ASSERT_TRUE(Execute("dump", {"1234", "5"}, &whole, &ectx).ok());
  EXPECT_TRUE(assemblers[7].Take() == mi::FromProto(whole));
  EXPECT_EQ(finals[9].status(), mi::v1::SessionResult::NOT_FOUND);
  EXPECT_EQ(assemblers[9].Take().code, 404u);
}

TEST_F(ServiceServerTest, SessionLimitsCancellationAndProtocolErrors) {
  TearDown();
  ServiceOptions options;
  options.session_max_inflight = 2;
  StartServer(options);
  auto& async = static_cast<mi::LocalAsyncBackend&>(dispatcher_->async());
  using R = mi::v1::SessionResult;
  {
    grpc::ClientContext ctx;
    auto session = stub_->Session(&ctx);
    ASSERT_TRUE(session->Write(SessionCommand(1, "park")));
    ASSERT_TRUE(session->Write(SessionCommand(2, "park")));
    ASSERT_TRUE(session->Write(SessionCommand(3, "park")));  // one too many
    auto results = ReadUntilDone(*session, 3);
    ASSERT_FALSE(results.empty());
    EXPECT_EQ(results.back().status(), R::RESOURCE_EXHAUSTED);
    EXPECT_EQ(results.back().message(), "too many requests in flight in this session (at most 2)");
    ASSERT_TRUE(testing::WaitUntil([&] { return async.pending() == 2; }, std::chrono::seconds(10)));
    mi::v1::SessionRequest cancel;
    cancel.set_id(1);
    cancel.set_cancel(true);
    ASSERT_TRUE(session->Write(cancel));
    results = ReadUntilDone(*session, 1);
    ASSERT_FALSE(results.empty());
    EXPECT_EQ(results.back().status(), R::CANCELLED);
    EXPECT_EQ(results.back().message(), "cancelled by the client");
    ASSERT_TRUE(testing::WaitUntil([&] { return async.pending() == 1; }, std::chrono::seconds(10)));
    // A per-request timeout ends request 4 only.
    mi::v1::SessionRequest timed = SessionCommand(4, "park");
    timed.set_timeout_ms(100);
    ASSERT_TRUE(session->Write(timed));
    results = ReadUntilDone(*session, 4);
    ASSERT_FALSE(results.empty());
    EXPECT_EQ(results.back().status(), R::DEADLINE_EXCEEDED);
    // An id still in flight (2) reused: the session ends, and request 2 with it.
    ASSERT_TRUE(session->Write(SessionCommand(2, "version")));
    mi::v1::SessionReply reply;
    while (session->Read(&reply)) {
    }
    const grpc::Status status = session->Finish();
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(), "request id 2 reused while in flight");
    EXPECT_TRUE(testing::WaitUntil([&] { return async.pending() == 0; }, std::chrono::seconds(10)));
  }
  {  // Cancelling the call cancels every request in flight.
    grpc::ClientContext ctx;
    auto session = stub_->Session(&ctx);
    ASSERT_TRUE(session->Write(SessionCommand(1, "park")));
    ASSERT_TRUE(session->Write(SessionCommand(2, "park")));
    ASSERT_TRUE(testing::WaitUntil([&] { return async.pending() == 2; }, std::chrono::seconds(10)));
    ctx.TryCancel();
    mi::v1::SessionReply reply;
    while (session->Read(&reply)) {
    }
    EXPECT_EQ(session->Finish().error_code(), StatusCode::CANCELLED);
    EXPECT_TRUE(testing::WaitUntil([&] { return async.pending() == 0; }, std::chrono::seconds(10)));
  }
  {  // Bytes that are not a SessionRequest end the session with a clear status.
    grpc::GenericStub generic(channel_);
    grpc::ClientContext ctx;
    grpc::CompletionQueue cq;
    auto call = generic.PrepareCall(&ctx, "/sipd.mi.v1.Management/Session", &cq);
    void* tag = nullptr;
    bool ok = false;
    call->StartCall(reinterpret_cast<void*>(1));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    const std::string bad = "\x12\x03\xFF\xFE\xFD";  // command = invalid UTF-8
    grpc::Slice slice(bad);
    grpc::ByteBuffer bytes(&slice, 1);
    call->Write(bytes, reinterpret_cast<void*>(2));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(3));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("not a valid sipd.mi.v1.SessionRequest"),
              std::string::npos);
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  ExpectStillServing();
}

TEST_F(ServiceServerTest, SessionWhoseClientReadsNothingIsCut) {
  TearDown();
  ServiceOptions options;
  options.stream_write_timeout = std::chrono::milliseconds(300);
  options.session_buffer_bytes = 64 << 10;
  StartServer(options);
  auto channel = SmallWindowChannel(target_, 4096, 1);
  auto stub = mi::v1::Management::NewStub(channel);
  grpc::ClientContext ctx;
  auto session = stub->Session(&ctx);
  for (uint32_t id = 0; id < 40; ++id) {
    ASSERT_TRUE(session->Write(SessionCommand(id, "big", {"100000"})));
  }
  // Read nothing: the server's write stalls, the session is cut.
  ASSERT_TRUE(
      testing::WaitUntil([&] { return server_->calls_cut() == 1; }, std::chrono::seconds(20)));
  mi::v1::SessionReply reply;
  int replies = 0;
  while (session->Read(&reply)) ++replies;
  EXPECT_LT(replies, 40);
  EXPECT_EQ(session->Finish().error_code(), StatusCode::CANCELLED);
  ExpectStillServing();
}

// Whether the server closed `fd` (EOF or reset), reading and dropping what it sent.
bool ClosedByServer(int fd, std::chrono::milliseconds timeout) {
  return testing::WaitUntil(
      [fd] {
        pollfd pfd{fd, POLLIN, 0};
        if (poll(&pfd, 1, 0) <= 0) return false;
        char buffer[4096];
        const ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
      },
      timeout);
}

TEST_F(ServiceServerTest, HalfAPrefaceIsClosedAtTheHandshakeTimeout) {
  TearDown();
  ServerOptions server_options;
  server_options.handshake_timeout = std::chrono::milliseconds(300);
  StartServer({}, server_options);
  const int fd = testing::ConnectTcp(server_->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(testing::SendAll(fd, std::string(testing::kHttp2Preface, 12)));
  EXPECT_TRUE(ClosedByServer(fd, std::chrono::seconds(20)));
  close(fd);
  ExpectStillServing();
}

// A unary reply larger than the client's HTTP/2 window, from a client that never reads
// nor grants window: the reply is cut after stream_write_timeout.
TEST_F(ServiceServerTest, LargeUnaryReplyNeverReadIsCut) {
  TearDown();
  ServiceOptions options;
  options.stream_write_timeout = std::chrono::milliseconds(300);
  StartServer(options);
  const int fd = testing::ConnectTcp(server_->port());
  ASSERT_GE(fd, 0);
  mi::v1::ExecuteRequest request;
  request.set_command("big");
  request.add_params("1000000");
  ASSERT_TRUE(testing::SendAll(fd, testing::GrpcRequestBytes("Execute", request, true)));
  EXPECT_TRUE(
      testing::WaitUntil([&] { return server_->calls_cut() == 1; }, std::chrono::seconds(20)));
  close(fd);
  ExpectStillServing();
}

TEST_F(ServiceServerTest, ListAndDescribeCommands) {
  grpc::ClientContext ctx;
  mi::v1::ListCommandsResponse list;
  ASSERT_TRUE(stub_->ListCommands(&ctx, {}, &list).ok());
  ASSERT_EQ(list.commands_size(), static_cast<int>(t_.registry.commands().size()));
  for (int i = 0; i < list.commands_size(); ++i) {
    EXPECT_EQ(list.commands(i).name(), t_.registry.commands()[i]->name());
  }
  EXPECT_EQ(list.commands(0).name(), "version");
  EXPECT_TRUE(list.commands(0).no_input());

  grpc::ClientContext dctx;
  mi::v1::DescribeCommandRequest describe;
  describe.set_command("dump");
  mi::v1::CommandInfo info;
  ASSERT_TRUE(stub_->DescribeCommand(&dctx, describe, &info).ok());
  EXPECT_EQ(info.module(), "test");
  EXPECT_TRUE(info.streaming());
  ASSERT_EQ(info.parameters_size(), 2);
  EXPECT_EQ(info.parameters(1).arity(), mi::v1::ParameterInfo::OPTIONAL);

  grpc::ClientContext nctx;
  describe.set_command("nope");
  const grpc::Status status = stub_->DescribeCommand(&nctx, describe, &info);
  EXPECT_EQ(status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "command 'nope' not available");
}

TEST_F(ServiceServerTest, HealthIsServing) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const std::string service : {"", "sipd.mi.v1.Management"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&ctx, request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

TEST_F(ServiceServerTest, HealthCheckOfAnUnknownServiceIsNotFound) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_EQ(health->Check(&ctx, request, &response).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(ServiceServerTest, HealthWatchSeesServingThenShutdown) {
  using grpc::health::v1::HealthCheckResponse;
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext unknown_ctx;
  grpc::health::v1::HealthCheckRequest unknown;
  unknown.set_service("no.such.Service");
  auto unknown_reader = health->Watch(&unknown_ctx, unknown);
  HealthCheckResponse response;
  ASSERT_TRUE(unknown_reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVICE_UNKNOWN);

  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("sipd.mi.v1.Management");
  auto reader = health->Watch(&ctx, request);
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);

  // Shutting down tells the watcher and ends its call, so shutdown does not wait for it.
  std::thread stopper([this] { server_->Shutdown(std::chrono::seconds(30)); });
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_FALSE(reader->Read(&response));
  EXPECT_TRUE(reader->Finish().ok());
  while (unknown_reader->Read(&response)) {
  }
  unknown_reader->Finish();
  stopper.join();
  server_.reset();
}

TEST_F(ServiceServerTest, SecondServerOnTheSamePortFails) {
  ServerOptions options;
  options.listen = target_;
  auto second = MiGrpcServer::Start(*dispatcher_, options);
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  ExpectStillServing();
}

TEST_F(ServiceServerTest, ConcurrentClients) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto channel = grpc::CreateChannel(target_, grpc::InsecureChannelCredentials());
      auto stub = mi::v1::Management::NewStub(channel);
      for (int j = 0; j < 200; ++j) {
        grpc::ClientContext ctx;
        mi::v1::ExecuteRequest request;
        request.set_command(j % 2 ? "version" : "echo");
        if (j % 2 == 0) request.add_params(std::to_string(i * 1000 + j));
        mi::v1::Reply reply;
        if (stub->Execute(&ctx, request, &reply).ok() && reply.nodes_size() == 1) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1600);
}

}  // namespace
}  // namespace sipd::service
