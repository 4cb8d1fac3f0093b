// httpd's pieces without a server: the JSON reply writer across flushes, JSON-RPC
// parsing, metric names and the Prometheus text, and the statistics history's JSON
// (registry/stat_sampler.h's points).
#include <atomic>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "registry/reply_writer.h"
#include "registry/statistics.h"
#include "sipd/modules/httpd/json_reply.h"
#include "sipd/modules/httpd/jsonrpc.h"
#include "sipd/modules/httpd/metrics.h"
#include "sipd/modules/httpd/stats_sampler.h"

namespace sipd::httpd {
namespace {

using json = nlohmann::json;

// Domain -> 3 AORs -> 2 contacts each, with attributes.
mi::Reply SampleReply() {
  mi::Reply reply;
  reply.root.is_array = true;
  mi::Node& domain = reply.root.AddKid("Domain", "location");
  domain.AddAttribute("table", "512");
  for (int a = 0; a < 3; ++a) {
    mi::Node& aor = domain.AddKid("AOR", "user" + std::to_string(a));
    for (int c = 0; c < 2; ++c) {
      mi::Node& contact = aor.AddKid("Contact", "sip:u@192.0.2." + std::to_string(c));
      contact.AddAttribute("Q", "1");
      contact.AddKid("Expires", "permanent");
    }
  }
  reply.root.AddKid("", "last");
  return reply;
}

json WriteWhole(mi::Reply reply) {
  std::string out;
  JsonRpcReplyWriter writer("7");
  writer.set_output(&out);
  mi::FinishReply(reply, writer);
  return json::parse(out);
}

TEST(JsonReplyWriterTest, WholeReplyHasTheMirrorShape) {
  const json j = WriteWhole(SampleReply());
  EXPECT_EQ(j["jsonrpc"], "2.0");
  EXPECT_EQ(j["id"], 7);
  const json& r = j["result"];
  EXPECT_EQ(r["code"], 200);
  EXPECT_EQ(r["is_array"], true);
  ASSERT_EQ(r["nodes"].size(), 2u);
  EXPECT_EQ(r["nodes"][0]["attributes"][0], (json{{"name", "table"}, {"value", "512"}}));
  ASSERT_EQ(r["nodes"][0]["kids"].size(), 3u);
  EXPECT_EQ(r["nodes"][0]["kids"][2]["kids"][1]["kids"][0]["value"], "permanent");
  EXPECT_EQ(r["nodes"][1], (json{{"value", "last"}}));  // no empty name
}

// A streamed reply written in parts (the parent written first, kids in later flushes)
// gives the same JSON as the whole tree.
TEST(JsonReplyWriterTest, FlushedInPartsEqualsWhole) {
  mi::Reply whole = SampleReply();
  mi::Reply streamed;
  streamed.root.is_array = true;
  std::string out;
  JsonRpcReplyWriter writer("7");
  writer.set_output(&out);
  mi::Node& domain = streamed.root.AddKid("Domain", "location");
  domain.AddAttribute("table", "512");
  domain.not_completed = true;
  for (int a = 0; a < 3; ++a) {
    mi::Node& aor = domain.AddKid("AOR", "user" + std::to_string(a));
    for (int c = 0; c < 2; ++c) {
      mi::Node& contact = aor.AddKid("Contact", "sip:u@192.0.2." + std::to_string(c));
      contact.AddAttribute("Q", "1");
      contact.AddKid("Expires", "permanent");
    }
    mi::FlushReply(streamed, writer);
    writer.EndFlush();
  }
  domain.not_completed = false;
  streamed.root.AddKid("", "last");
  mi::FinishReply(streamed, writer);
  EXPECT_EQ(json::parse(out), WriteWhole(std::move(whole)));
}

TEST(JsonReplyWriterTest, ErrorsCarryTheMiCodeAndNodesInData) {
  mi::Reply reply = mi::Reply::Error(404, "AOR not found");
  std::string out;
  JsonRpcReplyWriter writer("\"x\"");
  writer.set_output(&out);
  mi::FinishReply(reply, writer);
  EXPECT_EQ(json::parse(out),
            json::parse(R"({"jsonrpc":"2.0","error":{"code":404,"message":"AOR not found"},)"
                        R"("id":"x"})"));
  mi::Reply with_nodes = mi::Reply::Error(404, "AOR not found");
  with_nodes.root.AddKid("detail", "d");
  out.clear();
  JsonRpcReplyWriter second("1");
  second.set_output(&out);
  mi::FinishReply(with_nodes, second);
  EXPECT_EQ(json::parse(out)["error"]["data"]["nodes"][0]["value"], "d");
}

TEST(JsonReplyWriterTest, InvalidUtf8AndControlsStayValidJson) {
  EXPECT_EQ(JsonString("a\"b\\\n\x01"), "\"a\\\"b\\\\\\n\\u0001\"");
  EXPECT_EQ(JsonString("\xff"), "\"\\ufffd\"");
  EXPECT_EQ(JsonString("\xc3\xa9"), "\"\xc3\xa9\"");
}

TEST(JsonRpcParseTest, PositionalNamedAndNotifications) {
  RpcBody body = ParseJsonRpc(R"([{"jsonrpc":"2.0","method":"m","params":["a",2,true],"id":1},)"
                              R"({"jsonrpc":"2.0","method":"n","params":{"z":"1","a":"2"}},)"
                              R"({"jsonrpc":"2.0","method":"o","params":[null],"id":"s"}])",
                              10);
  ASSERT_TRUE(body.batch);
  ASSERT_EQ(body.calls.size(), 3u);
  EXPECT_EQ(body.calls[0].request.args.size(), 3u);
  EXPECT_EQ(body.calls[0].request.args[1].value, "2");
  EXPECT_EQ(body.calls[0].request.args[2].value, "true");
  EXPECT_TRUE(body.calls[1].notification);
  EXPECT_EQ(body.calls[1].request.args[0].name, "z");  // the caller's order
  EXPECT_EQ(body.calls[2].id_json, "\"s\"");
  EXPECT_FALSE(body.calls[2].request.args_error.ok());
}

TEST(JsonRpcParseTest, ProtocolErrors) {
  EXPECT_NE(ParseJsonRpc("{", 10).error_response.find("-32700"), std::string::npos);
  EXPECT_NE(ParseJsonRpc(std::string(5000, '['), 10).error_response.find("-32700"),
            std::string::npos);
  EXPECT_NE(ParseJsonRpc("[]", 10).error_response.find("-32600"), std::string::npos);
  EXPECT_NE(ParseJsonRpc("[1,2,3]", 2).error_response.find("-32600"), std::string::npos);
  const RpcBody no_version = ParseJsonRpc(R"({"method":"m","id":3})", 10);
  ASSERT_EQ(no_version.calls.size(), 1u);
  EXPECT_NE(no_version.calls[0].invalid_response.find("\"id\":3"), std::string::npos);
}

TEST(MetricsTest, NamesTypesAndUnits) {
  EXPECT_EQ(MetricName("core", "rcv_requests", true), "sipd_core_rcv_requests_total");
  EXPECT_EQ(MetricName("usrloc", "location-users", false), "sipd_usrloc_location_users");
  EXPECT_EQ(MetricName("Net", "Waiting UDP", false), "sipd_net_waiting_udp");
  double scale = 0;
  EXPECT_EQ(MetricName("mi", "ps_time_us", true, &scale), "sipd_mi_ps_time_seconds_total");
  EXPECT_DOUBLE_EQ(scale, 1e-6);

  std::vector<std::atomic<uint64_t>> cells(8);
  mi::StatsRegistry stats(cells);
  ASSERT_TRUE(stats.AddCounter("core", "rcv_requests", 0, "requests received").ok());
  ASSERT_TRUE(stats.AddCounter("tm", "inuse", mi::kStatNoReset).ok());
  ASSERT_TRUE(stats.AddCounter("g", "a-b").ok());
  ASSERT_TRUE(stats.AddCounter("g", "a_b").ok());  // same metric name: gets a suffix
  ASSERT_TRUE(stats.AddFunction("g", "fn", [] { return uint64_t{5}; }).ok());
  stats.FindCounter("rcv_requests").Set(12);
  ASSERT_TRUE(stats.AddFunction("pkmem", "3-used_size", [] { return uint64_t{77}; }).ok());
  const std::string text = RenderPrometheus(
      stats, {{.id = 3, .pid = 10, .type = "MI \"FIFO\""}},
      {{.id = 3, .pid = 10, .type = "MI \"FIFO\"", .cpu_seconds = 0.5, .rss_bytes = 4096}});
  EXPECT_NE(text.find("# TYPE sipd_pkmem_used_size gauge\n"
                      "sipd_pkmem_used_size{id=\"3\",process=\"MI \\\"FIFO\\\"\"} 77\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# HELP sipd_core_rcv_requests_total core:rcv_requests: requests "
                      "received\n# TYPE sipd_core_rcv_requests_total counter\n"
                      "sipd_core_rcv_requests_total 12\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE sipd_tm_inuse gauge\n"), std::string::npos);
  EXPECT_NE(text.find("sipd_g_a_b_total_2 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sipd_g_fn 5\n"), std::string::npos);
  EXPECT_NE(text.find("sipd_process_cpu_seconds_total{id=\"3\",process=\"MI \\\"FIFO\\\"\"} 0.5"),
            std::string::npos)
      << text;
}

TEST(StatsHistoryJsonTest, KeepsTheLastSamplesInOrder) {
  std::vector<std::atomic<uint64_t>> cells(2);
  mi::StatsRegistry stats(cells);
  auto counter = stats.AddCounter("core", "rcv_requests");
  ASSERT_TRUE(counter.ok());
  ASSERT_TRUE(stats.AddCounter("tm", "inuse", mi::kStatNoReset).ok());
  // The sampler gRPC WatchStatistics uses, keeping 4 samples of 1 s.
  auto sampler = mi::StatSampler::Create(stats, {.selectors = {"all"},
                                                 .interval = std::chrono::seconds(1),
                                                 .history = std::chrono::seconds(4)});
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  for (int i = 1; i <= 6; ++i) {
    counter->Set(static_cast<uint64_t>(i * 10));
    (*sampler)->Take(std::chrono::system_clock::time_point(std::chrono::seconds(i)));
  }
  const json all = json::parse(HistoryJson(**sampler, stats, {"all"}, 100, 0));
  EXPECT_EQ(all["times"], json::array({3000, 4000, 5000, 6000}));
  ASSERT_EQ(all["series"].size(), 2u);
  EXPECT_EQ(all["series"][0]["values"], json::array({30, 40, 50, 60}));
  EXPECT_EQ(all["series"][0]["counter"], true);
  EXPECT_EQ(all["series"][1]["counter"], false);
  const json group = json::parse(HistoryJson(**sampler, stats, {"tm:"}, 2, 0));
  ASSERT_EQ(group["series"].size(), 1u);
  EXPECT_EQ(group["times"], json::array({5000, 6000}));
  const json since = json::parse(HistoryJson(**sampler, stats, {"core:rcv_requests"}, 100, 4000));
  EXPECT_EQ(since["series"][0]["values"], json::array({50, 60}));
  EXPECT_EQ(json::parse(HistoryJson(**sampler, stats, {"nope"}, 100, 0))["series"].size(), 0u);
  const json catalog = json::parse(CatalogJson(**sampler));
  ASSERT_EQ(catalog.size(), 2u);
  EXPECT_EQ(catalog[0]["name"], "core:rcv_requests");
}

}  // namespace
}  // namespace sipd::httpd
