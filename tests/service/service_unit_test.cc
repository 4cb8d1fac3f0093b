// Unit tests of the gRPC transport's pure parts: status mapping, metadata encoding,
// UTF-8 hygiene, request validation, the streaming writer and the worker pool.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "registry/dispatcher.h"
#include "registry/proto_convert.h"
#include "registry/text_format.h"
#include "registry/worker_pool.h"
#include "service/call_support.h"
#include "service/chunk_writer.h"
#include "service/live_calls.h"
#include "service/management_service.h"
#include "service/status_mapping.h"
#include "service/utf8.h"
#include "tests/service/test_registry.h"

namespace sipd::service {
namespace {

using grpc::StatusCode;

// A request as a transport that parsed its arguments passes it (args_error OK).
mi::Request Req(std::string command, std::vector<mi::Argument> args = {}) {
  return {.command = std::move(command), .args = std::move(args), .args_error = absl::OkStatus()};
}

TEST(StatusMappingTest, DocumentedTable) {
  struct Row {
    uint32_t mi_code;
    StatusCode expected;
  };
  const std::vector<Row> rows = {
      {200, StatusCode::OK},
      {202, StatusCode::OK},
      {299, StatusCode::OK},
      {400, StatusCode::INVALID_ARGUMENT},
      {401, StatusCode::UNAUTHENTICATED},
      {403, StatusCode::PERMISSION_DENIED},
      {404, StatusCode::NOT_FOUND},
      {481, StatusCode::NOT_FOUND},
      {405, StatusCode::UNIMPLEMENTED},
      {501, StatusCode::UNIMPLEMENTED},
      {408, StatusCode::DEADLINE_EXCEEDED},
      {409, StatusCode::ALREADY_EXISTS},
      {402, StatusCode::FAILED_PRECONDITION},
      {410, StatusCode::FAILED_PRECONDITION},
      {488, StatusCode::FAILED_PRECONDITION},
      {499, StatusCode::FAILED_PRECONDITION},
      {500, StatusCode::INTERNAL},
      {502, StatusCode::INTERNAL},
      {503, StatusCode::UNAVAILABLE},
      {599, StatusCode::INTERNAL},
      {100, StatusCode::INTERNAL},
      {302, StatusCode::INTERNAL},
      {600, StatusCode::INTERNAL},
      {0, StatusCode::INTERNAL},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(MiCodeToStatusCode(row.mi_code), row.expected) << "MI code " << row.mi_code;
  }
}

TEST(MetadataTextTest, PrintableAsciiUnchanged) {
  EXPECT_EQ(EncodeMetadataText("Too few or too many arguments"), "Too few or too many arguments");
}

TEST(MetadataTextTest, EncodesControlAndHighBytesAndPercent) {
  const std::string raw = "a%b\r\n\xE9\x01";
  const std::string encoded = EncodeMetadataText(raw);
  EXPECT_EQ(encoded, "a%25b%0D%0A%E9%01");
  EXPECT_EQ(DecodeMetadataText(encoded), raw);
}

TEST(MetadataTextTest, CutsAtMaxBytes) {
  EXPECT_EQ(EncodeMetadataText(std::string(2000, 'x'), 10), std::string(10, 'x'));
}

TEST(MetadataTextTest, InvalidEscapesStayLiteral) {
  EXPECT_EQ(DecodeMetadataText("100%"), "100%");
  EXPECT_EQ(DecodeMetadataText("%zz%4"), "%zz%4");
}

TEST(Utf8Test, Validity) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii\r\n"));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("caf\xE9"));           // Latin-1
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xE2\x82"));          // truncated
  // Every position of a long ASCII text (read eight bytes at a time): one bad byte, or
  // a good sequence across the eight-byte boundary.
  for (size_t at = 0; at < 24; ++at) {
    std::string text(24, 'a');
    text[at] = '\xE9';
    EXPECT_FALSE(IsValidUtf8(text)) << at;
    text.replace(at, 1, "\xE2\x82\xAC");
    EXPECT_TRUE(IsValidUtf8(text)) << at;
    text.pop_back();  // cuts the sequence when it was last
    EXPECT_EQ(IsValidUtf8(text), at + 3 <= text.size()) << at;
  }
}

TEST(Utf8Test, SanitizeReplacesMaximalInvalidParts) {
  std::string s = "caf\xE9!";
  EXPECT_TRUE(SanitizeUtf8(&s));
  EXPECT_EQ(s, "caf\xEF\xBF\xBD!");
  s = "\xE2\x82x";  // truncated 3-byte sequence = one maximal subpart
  EXPECT_TRUE(SanitizeUtf8(&s));
  EXPECT_EQ(s, "\xEF\xBF\xBDx");
  s = "ok \xC3\xA9";
  EXPECT_FALSE(SanitizeUtf8(&s));
  EXPECT_EQ(s, "ok \xC3\xA9");
}

TEST(Utf8Test, SanitizeWholeReply) {
  v1::Reply reply;
  reply.set_reason("bad \xFF");
  auto* node = reply.add_nodes();
  node->set_name("n\xFE");
  auto* kid = node->add_kids();
  kid->set_value("\x80");
  auto* attr = kid->add_attributes();
  attr->set_value("v\xC1");
  SanitizeUtf8(&reply);
  EXPECT_TRUE(IsValidUtf8(reply.reason()));
  EXPECT_TRUE(IsValidUtf8(reply.nodes(0).name()));
  EXPECT_EQ(reply.nodes(0).kids(0).value(), "\xEF\xBF\xBD");
  EXPECT_EQ(reply.nodes(0).kids(0).attributes(0).value(), "v\xEF\xBF\xBD");
}

TEST(ValidateRequestTest, Table) {
  ServiceOptions options;
  options.max_args = 4;
  options.max_message_size = 100;
  options.max_command_length = 16;
  struct Row {
    std::string label;
    v1::ExecuteRequest request;
    bool ok;
  };
  std::vector<Row> rows;
  {
    Row r{"good", {}, true};
    r.request.set_command("ps");
    r.request.add_params("a");
    rows.push_back(r);
  }
  {
    Row r{"empty command", {}, false};
    rows.push_back(r);
  }
  {
    Row r{"long command", {}, false};
    r.request.set_command(std::string(17, 'c'));
    rows.push_back(r);
  }
  {
    Row r{"too many args", {}, false};
    r.request.set_command("echo");
    for (int i = 0; i < 3; ++i) r.request.add_params("p");
    for (int i = 0; i < 2; ++i) r.request.add_args()->set_value("a");
    rows.push_back(r);
  }
  {
    Row r{"too many bytes", {}, false};
    r.request.set_command("echo");
    r.request.add_params(std::string(99, 'x'));
    rows.push_back(r);
  }
  {
    Row r{"empty argument", {}, false};
    r.request.set_command("echo");
    r.request.add_params("");
    rows.push_back(r);
  }
  {
    Row r{"named argument without value", {}, true};
    r.request.set_command("echo");
    r.request.add_args()->set_name("only-name");
    rows.push_back(r);
  }
  for (const Row& row : rows) {
    mi::Request out;
    const grpc::Status status = ValidateRequest(row.request, options, &out);
    EXPECT_EQ(status.ok(), row.ok) << row.label << ": " << status.error_message();
    if (!row.ok) {
      EXPECT_EQ(status.error_code(), StatusCode::INVALID_ARGUMENT) << row.label;
    }
  }
}

TEST(ValidateRequestTest, ParamsComeBeforeArgs) {
  v1::ExecuteRequest request;
  request.set_command("echo");
  request.add_params("p1");
  auto* arg = request.add_args();
  arg->set_name("n");
  arg->set_value("v");
  request.add_params("p2");
  mi::Request out;
  ASSERT_TRUE(ValidateRequest(request, ServiceOptions{}, &out).ok());
  ASSERT_EQ(out.args.size(), 3u);
  EXPECT_EQ(out.args[0].value, "p1");
  EXPECT_EQ(out.args[1].value, "p2");
  EXPECT_EQ(out.args[2].name, "n");
}

// Runs `request` through Dispatch with a ChunkReplyWriter whose sink records chunks.
std::vector<v1::ReplyChunk> StreamChunks(const mi::Registry& registry, const mi::Request& request,
                                         ChunkReplyWriter::Limits limits) {
  std::vector<v1::ReplyChunk> chunks;
  ChunkReplyWriter writer(
      [&](v1::ReplyChunk& chunk) {
        chunks.push_back(chunk);
        return true;
      },
      limits);
  mi::Dispatcher(registry).Run(request, &writer);
  return chunks;
}

mi::Reply Reassemble(const std::vector<v1::ReplyChunk>& chunks) {
  mi::ChunkAssembler assembler;
  for (const auto& c : chunks) EXPECT_TRUE(assembler.Add(c).ok());
  return assembler.Take();
}

TEST(ChunkWriterTest, OneChunkPerFlushAndStatusFirst) {
  testing::TestRegistry t;
  const mi::Request request = Req("dump", {{"", "120"}});
  const auto chunks = StreamChunks(t.registry, request, {});
  // Flushes after records 50 and 100, then the rest at the end.
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_TRUE(chunks[0].has_status());
  EXPECT_EQ(chunks[0].code(), 200u);
  EXPECT_EQ(chunks[0].reason(), "OK");
  EXPECT_TRUE(chunks[0].is_array());
  EXPECT_FALSE(chunks[1].has_status());
  EXPECT_EQ(chunks[0].nodes_size(), 100);  // 50 records + 50 Data kids
  EXPECT_EQ(chunks[1].nodes_size(), 100);
  EXPECT_EQ(chunks[2].nodes_size(), 40);
  EXPECT_EQ(chunks[0].nodes(0).depth(), 0u);
  EXPECT_EQ(chunks[0].nodes(1).depth(), 1u);
  EXPECT_EQ(chunks[0].nodes(1).name(), "Data");
}

TEST(ChunkWriterTest, ReassemblesToTheWholeReply) {
  testing::TestRegistry t;
  const mi::Request request = Req("dump", {{"", "237"}, {"", "3"}});
  const mi::Reply streamed = Reassemble(StreamChunks(t.registry, request, {}));
  const mi::Reply whole = mi::Dispatcher(t.registry).Run(request).reply;
  EXPECT_EQ(mi::RenderText(streamed, "\t", false), mi::RenderText(whole, "\t", false));
  EXPECT_TRUE(streamed == whole);
}

TEST(ChunkWriterTest, SplitsLongFlushesByNodeCountAndBytes) {
  testing::TestRegistry t;
  ChunkReplyWriter::Limits limits;
  limits.max_nodes = 7;
  auto chunks = StreamChunks(t.registry, Req("dump", {{"", "49"}}), limits);  // no flush
  ASSERT_EQ(chunks.size(), 14u);                                              // 98 nodes / 7
  for (const auto& c : chunks) EXPECT_LE(c.nodes_size(), 7);

  limits.max_nodes = 1000;
  limits.max_bytes = 4096;
  chunks = StreamChunks(t.registry, Req("dump", {{"", "40"}, {"", "1000"}}), limits);
  EXPECT_GE(chunks.size(), 10u);
  for (const auto& c : chunks) EXPECT_LT(c.ByteSizeLong(), 4096u + 1200u);
  EXPECT_TRUE(Reassemble(chunks) ==
              mi::Dispatcher(t.registry).Run(Req("dump", {{"", "40"}, {"", "1000"}})).reply);
}

TEST(ChunkWriterTest, ReplyWithoutNodesIsOneStatusChunk) {
  testing::TestRegistry t;
  const auto chunks = StreamChunks(t.registry, Req("dump", {{"", "0"}}), {});
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_TRUE(chunks[0].has_status());
  EXPECT_EQ(chunks[0].nodes_size(), 0);
}

TEST(ChunkWriterTest, ErrorReplyIsStreamedToo) {
  testing::TestRegistry t;
  const auto chunks = StreamChunks(t.registry, Req("code", {{"", "404"}}), {});
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].code(), 404u);
  EXPECT_EQ(chunks[0].reason(), "reason 404");
  ASSERT_EQ(chunks[0].nodes_size(), 1);
  EXPECT_EQ(chunks[0].nodes(0).name(), "Detail");
}

TEST(ChunkWriterTest, SanitizesUtf8) {
  testing::TestRegistry t;
  const auto chunks = StreamChunks(t.registry, Req("binary"), {});
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_TRUE(IsValidUtf8(chunks[0].nodes(0).value()));
  EXPECT_EQ(chunks[0].nodes(0).value(), "caf\xEF\xBF\xBD \xEF\xBF\xBD ok");
}

// The queue hands sent chunks back to the writer (their memory kept): a reused chunk
// carries nothing of the chunk it was, neither status nor nodes nor attributes.
TEST(ChunkQueueTest, AReusedChunkCarriesNothingOfTheChunkItWas) {
  ChunkReplyWriter::Limits limits;
  limits.max_nodes = 2;
  ChunkQueue queue(limits);
  mi::Reply reply = mi::Reply::Ok();
  reply.reason = "first";
  mi::Node rich("name", "a value longer than the short-string buffer");
  rich.AddAttribute("attr", "its value");
  const mi::Node bare;
  for (int round = 0; round < 3; ++round) {
    if (round == 0) queue.writer().WriteStatus(reply);
    queue.writer().WriteNode(rich, 0);
    queue.writer().WriteNode(rich, 1);  // the limit: a chunk is queued
    ASSERT_EQ(queue.size(), 1u);
    EXPECT_EQ(queue.front().has_status(), round == 0);
    ASSERT_EQ(queue.front().nodes_size(), 2);
    EXPECT_EQ(queue.front().nodes(1).attributes_size(), 1);
    queue.pop_front();
    queue.writer().WriteNode(bare, 0);
    queue.writer().EndFlush();
    ASSERT_EQ(queue.size(), 1u);
    const v1::ReplyChunk& reused = queue.front();
    EXPECT_FALSE(reused.has_status());
    EXPECT_EQ(reused.code(), 0u);
    EXPECT_EQ(reused.reason(), "");
    ASSERT_EQ(reused.nodes_size(), 1);
    EXPECT_EQ(reused.nodes(0).depth(), 0u);
    EXPECT_EQ(reused.nodes(0).name(), "");
    EXPECT_EQ(reused.nodes(0).value(), "");
    EXPECT_EQ(reused.nodes(0).attributes_size(), 0);
    queue.pop_front();
  }
}

TEST(ChunkWriterTest, BrokenSinkDropsTheRestButHandlerCompletes) {
  testing::TestRegistry t;
  int accepted = 0;
  ChunkReplyWriter writer(
      [&](v1::ReplyChunk&) {
        ++accepted;
        return accepted < 2;  // the second chunk fails: stream gone
      },
      {});
  const auto result = mi::Dispatcher(t.registry).Run(Req("dump", {{"", "500"}}), &writer);
  EXPECT_EQ(result.outcome, mi::Outcome::kReply);
  EXPECT_TRUE(writer.broken());
  EXPECT_EQ(accepted, 2);
  EXPECT_EQ(t.dump_finished->load(), 1);
}

TEST(WorkerPoolTest, RunsTasksAndBoundsTheQueue) {
  std::atomic<int> ran{0};
  std::atomic<bool> started{false};
  std::atomic<bool> release{false};
  {
    mi::WorkerPool pool(1, 2);
    ASSERT_TRUE(pool.TrySubmit([&] {
      started = true;
      started.notify_all();
      release.wait(false);
      ++ran;
    }));
    // Wait until the worker took the blocking task, so the queue is empty.
    started.wait(false);
    EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }));
    EXPECT_TRUE(pool.TrySubmit([&] { ++ran; }));
    EXPECT_FALSE(pool.TrySubmit([&] { ++ran; }));  // queue full
    release = true;
    release.notify_all();
  }  // destructor drains and joins
  EXPECT_EQ(ran.load(), 3);
}

TEST(WorkerPoolTest, RefusesAfterStop) {
  mi::WorkerPool pool(2, 8);
  pool.Stop();
  EXPECT_FALSE(pool.TrySubmit([] {}));
}

TEST(LiveCallsTest, CountsTokensAndWakesTheWaiterWhenTheLastGoes) {
  LiveCalls calls;
  EXPECT_TRUE(calls.WaitForNone(std::chrono::steady_clock::now()));  // none yet
  auto first = std::make_unique<LiveCalls::Token>(calls);
  auto second = std::make_unique<LiveCalls::Token>(calls);
  EXPECT_EQ(calls.count(), 2);
  // A deadline already passed: the answer at once, false while calls are left.
  EXPECT_FALSE(calls.WaitForNone(std::chrono::steady_clock::now()));
  first.reset();
  EXPECT_EQ(calls.count(), 1);
  std::atomic<bool> waiting{false};
  std::thread last([&] {
    while (!waiting.load()) std::this_thread::yield();
    second.reset();
  });
  waiting.store(true);
  // Woken by the last token, long before this deadline.
  EXPECT_TRUE(calls.WaitForNone(std::chrono::steady_clock::now() + std::chrono::hours(1)));
  last.join();
  EXPECT_EQ(calls.count(), 0);
}

}  // namespace
}  // namespace sipd::service
