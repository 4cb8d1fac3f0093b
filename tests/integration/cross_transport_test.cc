// One suite, every MI transport, one running sipd: the same commands must give the same
// reply tree over gRPC Execute (generated stubs), gRPC ExecuteStream (chunks put back
// together), FIFO, UNIX datagram, UDP datagram, XML-RPC (flattened: XML-RPC loses
// depth) and httpd's JSON-RPC (POST /mi) once each transport's format is read back into
// mi::Reply. Covered: every command of `which` that can run without arguments (but
// `kill`), and the ul_* and statistics commands with arguments, with more than 50 AORs in
// usrloc so that ul_dump flushes.
//
// Adding a transport: add an enumerator to Transport, a Run<Transport>()
// function that returns its answer as an mi::Reply (its errors mapped to the MI code and
// reason), a case in RunOver(), its loadmodule lines in kTransportsConfig, and the
// enumerator in INSTANTIATE_TEST_SUITE_P.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "legacy-transports/datagram/datagram_client.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "legacy-transports/text/text_reply_parser.h"
#include "registry/proto_convert.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/httpd/http_test_client.h"
#include "tests/support/sipd_harness.h"
#include "tests/xmlrpc/xmlrpc_test_client.h"

namespace sipd::integration {
namespace {

using ::sipd::testing::SipdInstance;

enum class Transport { kGrpc, kGrpcStream, kFifo, kUnixDatagram, kUdpDatagram, kXmlrpc, kHttp };

std::string TransportName(Transport transport) {
  switch (transport) {
    case Transport::kGrpc:
      return "Grpc";
    case Transport::kGrpcStream:
      return "GrpcStream";
    case Transport::kFifo:
      return "Fifo";
    case Transport::kUnixDatagram:
      return "UnixDatagram";
    case Transport::kUdpDatagram:
      return "UdpDatagram";
    case Transport::kXmlrpc:
      return "Xmlrpc";
    case Transport::kHttp:
      return "Http";
  }
  return "?";
}

// mi_grpc comes from the harness (Options::grpc). Ports 0: the ports sipd got are read
// from RUN_DIR/listeners.
std::string TransportsConfig() {
  return absl::StrCat(
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
      "loadmodule \"mi_datagram\"\n"
      "modparam(\"mi_datagram\", \"socket_name\", \"{TMP_DIR}/mi.sock\")\n"
      "modparam(\"mi_datagram\", \"extra_socket_name\", \"udp:127.0.0.1:0\")\n",
      // UDP carries no identity (read by default): the compared commands include mutating ones.
      "modparam(\"mi_datagram\", \"udp_role\", \"admin\")\n",
      "loadmodule \"mi_xmlrpc\"\n"
      "modparam(\"mi_xmlrpc\", \"port\", 0)\n",
      "loadmodule \"usrloc\"\n",
      "loadmodule \"httpd\"\n"
      "modparam(\"httpd\", \"listen\", \"127.0.0.1:0\")\n");
}

// The one sipd of the suite.
class SharedSipd {
 public:
  static SharedSipd& Get() {
    static SharedSipd* instance = new SharedSipd();
    return *instance;
  }
  SipdInstance& sipd() { return *sipd_; }
  int udp_port() const { return udp_port_; }
  int xmlrpc_port() const { return xmlrpc_port_; }
  bool started() const { return started_; }
  void Stop() { sipd_.reset(); }

 private:
  SharedSipd() {
    sipd_ = std::make_unique<SipdInstance>(
        SipdInstance::Options{.grpc = true, .extra_config = TransportsConfig()});
    absl::Status status = sipd_->Start();
    started_ = status.ok();
    if (!started_) std::fprintf(stderr, "sipd did not start: %s\n", status.ToString().c_str());
    if (started_) {
      udp_port_ = sipd_->listener_port("mi_datagram", "udp");
      xmlrpc_port_ = sipd_->listener_port("mi_xmlrpc");
    }
  }
  std::unique_ptr<SipdInstance> sipd_;
  int udp_port_ = 0;
  int xmlrpc_port_ = 0;
  bool started_ = false;
};

// --- one function per transport --------------------------------------------------------

std::shared_ptr<grpc::Channel> GrpcChannel() {
  static std::shared_ptr<grpc::Channel> channel = grpc::CreateChannel(
      SharedSipd::Get().sipd().grpc_target(), grpc::InsecureChannelCredentials());
  return channel;
}

// The MI code and reason of a non-2xx gRPC answer from its trailing metadata.
absl::StatusOr<mi::Reply> FromTrailers(const grpc::ClientContext& context,
                                       const grpc::Status& status, bool whole_reply) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto find = [&](const char* key) -> std::string {
    auto it = trailers.find(key);
    return it == trailers.end() ? "" : std::string(it->second.data(), it->second.size());
  };
  const std::string bin = whole_reply ? find("sipd-mi-reply-bin") : "";
  if (!bin.empty()) {
    mi::v1::Reply error;
    if (!error.ParseFromString(bin)) return absl::InternalError("bad sipd-mi-reply-bin");
    return mi::FromProto(error);
  }
  const std::string code = find("sipd-mi-code");
  if (code.empty()) {
    return absl::UnavailableError(
        absl::StrCat("gRPC error without MI code: ", status.error_message()));
  }
  return mi::Reply::Error(static_cast<uint32_t>(std::stoul(code)), find("sipd-mi-reason"));
}

// ExecuteStream: the chunks put back together (ChunkAssembler, as a client does).
absl::StatusOr<mi::Reply> RunGrpcStream(const std::string& command,
                                        const std::vector<std::string>& args) {
  auto stub = mi::v1::Management::NewStub(GrpcChannel());
  mi::v1::ExecuteRequest request;
  request.set_command(command);
  for (const std::string& arg : args) request.add_params(arg);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  auto reader = stub->ExecuteStream(&context, request);
  mi::ChunkAssembler assembler;
  mi::v1::ReplyChunk chunk;
  bool have_status = false;
  while (reader->Read(&chunk)) {
    have_status |= chunk.has_status();
    if (absl::Status added = assembler.Add(chunk); !added.ok()) return added;
  }
  const grpc::Status status = reader->Finish();
  if (have_status) return assembler.Take();
  return FromTrailers(context, status, false);
}

absl::StatusOr<mi::Reply> RunGrpc(const std::string& command,
                                  const std::vector<std::string>& args) {
  auto stub = mi::v1::Management::NewStub(GrpcChannel());
  mi::v1::ExecuteRequest request;
  request.set_command(command);
  for (const std::string& arg : args) request.add_params(arg);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  mi::v1::Reply reply;
  const grpc::Status status = stub->Execute(&context, request, &reply);
  if (status.ok()) return mi::FromProto(reply);
  // Non-2xx replies: the whole reply, or code and reason, in trailing metadata.
  return FromTrailers(context, status, true);
}

absl::StatusOr<mi::Reply> RunFifo(const std::string& command,
                                  const std::vector<std::string>& args) {
  SipdInstance& sipd = SharedSipd::Get().sipd();
  auto client = legacy::FifoClient::Create(sipd.tmp_dir() + "/sipd_fifo", sipd.tmp_dir());
  if (!client.ok()) return client.status();
  absl::StatusOr<std::string> text = (*client)->Execute(command, args);
  if (!text.ok()) return text.status();
  return legacy::ParseTextReply(*text);
}

// Datagram errors carry no command name (spec 4.4): put it back to compare.
void NameTheCommand(const std::string& command, mi::Reply* reply) {
  const std::string quoted = absl::StrCat(" '", command, "'");
  if (reply->reason == "command not available" || reply->reason == "command failed") {
    reply->reason.insert(7, quoted);
  } else if (reply->reason == "parse error in command") {
    reply->reason += quoted;
  }
}

absl::StatusOr<mi::Reply> RunDatagram(Transport transport, const std::string& command,
                                      const std::vector<std::string>& args) {
  SipdInstance& sipd = SharedSipd::Get().sipd();
  auto client = transport == Transport::kUdpDatagram
                    ? legacy::DatagramClient::Udp("127.0.0.1", SharedSipd::Get().udp_port())
                    : legacy::DatagramClient::Unix(sipd.tmp_dir() + "/mi.sock", sipd.tmp_dir());
  if (!client.ok()) return client.status();
  std::string request = absl::StrCat(":", command, ":\n");
  for (const std::string& arg : args) absl::StrAppend(&request, arg, "\n");
  absl::StatusOr<std::string> text = (*client)->Transact(request);
  if (!text.ok()) return text.status();
  absl::StatusOr<mi::Reply> reply = legacy::ParseTextReply(*text);
  if (reply.ok()) NameTheCommand(command, &*reply);
  return reply;
}

// XML-RPC (spec 5.4/5.5): a 2xx reply is one string of node lines without the status
// line and without indentation (depth is lost: compare with FlattenForXmlrpc); faults
// carry the MI code, or -506/-500 for "not available"/"failed".
absl::StatusOr<mi::Reply> RunXmlrpc(const std::string& command,
                                    const std::vector<std::string>& args) {
  const std::optional<xmlrpc::testing::CallOutcome> outcome = xmlrpc::testing::CallOnce(
      SharedSipd::Get().xmlrpc_port(), xmlrpc::testing::StringParams(command, args));
  if (!outcome.has_value()) return absl::UnavailableError("no XML-RPC reply");
  if (outcome->is_fault) {
    if (outcome->fault_code == -506) {
      return mi::Reply::Error(500, absl::StrCat("command '", command, "' not available"));
    }
    if (outcome->fault_code == -500) {
      return mi::Reply::Error(500, absl::StrCat("command '", command, "' failed"));
    }
    return mi::Reply::Error(static_cast<uint32_t>(outcome->fault_code), outcome->fault_string);
  }
  // No indentation on XML-RPC: an indent unit that never occurs keeps every node at depth 0.
  return legacy::ParseTextReply("200 OK\n" + outcome->String(), "\x01");
}

// httpd's JSON-RPC (POST /mi): "result" is the reply tree as JSON; "error" carries the
// MI code and reason (and the nodes, if any, in data.nodes).
void NodesFromJson(const nlohmann::json& nodes, mi::Node& parent) {
  for (const nlohmann::json& n : nodes) {
    mi::Node& node = parent.AddKid(n.value("name", ""), n.value("value", ""));
    for (const nlohmann::json& a : n.value("attributes", nlohmann::json::array())) {
      node.AddAttribute(a.value("name", ""), a.value("value", ""));
    }
    node.is_array = n.value("is_array", false);
    if (n.contains("kids")) NodesFromJson(n["kids"], node);
  }
}

absl::StatusOr<mi::Reply> RunHttp(const std::string& command,
                                  const std::vector<std::string>& args) {
  const int port = SharedSipd::Get().sipd().listener_port("httpd", "http");
  auto result = httpd_test::HttpPost(port, httpd_test::RpcRequest(command, args));
  if (!result.ok()) return result.status();
  const nlohmann::json reply = nlohmann::json::parse(result->body, nullptr, false);
  if (!reply.is_object()) return absl::InternalError("not JSON: " + result->body);
  if (reply.contains("error")) {
    const nlohmann::json& error = reply["error"];
    mi::Reply out = mi::Reply::Error(error.value("code", 0u), error.value("message", ""));
    if (error.contains("data")) NodesFromJson(error["data"]["nodes"], out.root);
    return out;
  }
  const nlohmann::json& r = reply["result"];
  mi::Reply out = mi::Reply::Error(r.value("code", 0u), r.value("reason", ""));
  out.root.is_array = r.value("is_array", false);
  NodesFromJson(r["nodes"], out.root);
  return out;
}

// The gRPC tree as XML-RPC shows it: every node at depth 0, in pre-order.
void FlattenForXmlrpc(mi::Node& root) {
  std::vector<std::unique_ptr<mi::Node>> flat;
  std::function<void(std::vector<std::unique_ptr<mi::Node>>&)> walk =
      [&](std::vector<std::unique_ptr<mi::Node>>& kids) {
        for (auto& kid : kids) {
          std::vector<std::unique_ptr<mi::Node>> grandkids = std::move(kid->kids);
          kid->kids.clear();
          flat.push_back(std::move(kid));
          walk(grandkids);
        }
      };
  walk(root.kids);
  root.kids = std::move(flat);
}

absl::StatusOr<mi::Reply> RunOver(Transport transport, const std::string& command,
                                  const std::vector<std::string>& args) {
  switch (transport) {
    case Transport::kGrpc:
      return RunGrpc(command, args);
    case Transport::kGrpcStream:
      return RunGrpcStream(command, args);
    case Transport::kFifo:
      return RunFifo(command, args);
    case Transport::kUnixDatagram:
    case Transport::kUdpDatagram:
      return RunDatagram(transport, command, args);
    case Transport::kXmlrpc:
      return RunXmlrpc(command, args);
    case Transport::kHttp:
      return RunHttp(command, args);
  }
  return absl::InternalError("unknown transport");
}

// --- comparison -------------------------------------------------------------------------

// The text layouts do not carry MI_IS_ARRAY.
void ClearArrayFlags(mi::Node& node) {
  node.is_array = false;
  for (auto& kid : node.kids) ClearArrayFlags(*kid);
}

// For volatile replies (clock, counters): keep names, drop values.
void BlankValues(mi::Node& node) {
  node.value.clear();
  for (auto& attr : node.attributes) attr.value.clear();
  for (auto& kid : node.kids) BlankValues(*kid);
}

enum class Compare { kExact, kNamesOnly };

// More AORs than one ul_dump flush (50), with permanent contacts so that their lines do
// not change between two transports' calls; added once, over gRPC.
constexpr int kAors = 55;

absl::Status FillUsrloc() {
  static const absl::Status filled = [] {
    for (int i = 0; i < kAors; ++i) {
      absl::StatusOr<mi::Reply> added =
          RunGrpc("ul_add", {"location", absl::StrCat("u", 1000 + i),
                             absl::StrCat("sip:u", i, "@192.0.2.", i % 200 + 1, ":5060"), "0",
                             i % 2 == 0 ? "0.5" : "1", "0", "0", absl::StrCat(i % 4), "15"});
      if (!added.ok()) return added.status();
      if (added->code != 200) return absl::InternalError(added->reason);
    }
    return absl::OkStatus();
  }();
  return filled;
}

class CrossTransportTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(SharedSipd::Get().started());
    ASSERT_TRUE(FillUsrloc().ok());
  }

  mi::Reply Run(Transport transport, const std::string& command,
                const std::vector<std::string>& args, Compare compare) {
    absl::StatusOr<mi::Reply> reply = RunOver(transport, command, args);
    EXPECT_TRUE(reply.ok()) << TransportName(transport) << ": " << reply.status();
    if (!reply.ok()) return mi::Reply::Error(0, "transport failure");
    ClearArrayFlags(reply->root);
    if (GetParam() == Transport::kXmlrpc) FlattenForXmlrpc(reply->root);
    if (compare == Compare::kNamesOnly) BlankValues(reply->root);
    return std::move(*reply);
  }

  // The reply over the transport under test equals the gRPC reply.
  void ExpectSameAsGrpc(const std::string& command, const std::vector<std::string>& args,
                        Compare compare = Compare::kExact) {
    mi::Reply expected = Run(Transport::kGrpc, command, args, compare);
    const mi::Reply actual = Run(GetParam(), command, args, compare);
    // XML-RPC sends no status line with a 2xx reply (spec 5.4): its reason is not seen.
    if (GetParam() == Transport::kXmlrpc && expected.is_success()) expected.reason = "OK";
    EXPECT_EQ(actual, expected) << "command " << command << " over " << TransportName(GetParam())
                                << " differs from gRPC:\n"
                                << "got code " << actual.code << " '" << actual.reason << "' with "
                                << actual.root.kids.size() << " nodes, gRPC code " << expected.code
                                << " '" << expected.reason << "' with " << expected.root.kids.size()
                                << " nodes";
  }
};

TEST_P(CrossTransportTest, Ps) { ExpectSameAsGrpc("ps", {}); }

// Every command `which` lists that can run without arguments (no required parameter),
// but `kill`. Only `uptime` changes between two calls (its clock lines): names only.
TEST_P(CrossTransportTest, EveryCommandWithoutArguments) {
  auto stub = mi::v1::Management::NewStub(GrpcChannel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  mi::v1::ListCommandsResponse commands;
  ASSERT_TRUE(stub->ListCommands(&context, {}, &commands).ok());
  int compared = 0;
  for (const auto& command : commands.commands()) {
    bool required = false;
    for (const auto& p : command.parameters()) {
      required |= p.arity() == mi::v1::ParameterInfo::REQUIRED;
    }
    if ((required && !command.no_input()) || command.name() == "kill") continue;
    ExpectSameAsGrpc(command.name(), {},
                     command.name() == "uptime" ? Compare::kNamesOnly : Compare::kExact);
    ++compared;
  }
  EXPECT_GE(compared, 10);
}

// ul_dump flushes after 50 AORs: every transport shows the same Domain line (the
// `records` attribute that the flush makes final is lost on every one, spec 1.7).
TEST_P(CrossTransportTest, UlDumpAcrossAFlush) {
  ExpectSameAsGrpc("ul_dump", {});
  ExpectSameAsGrpc("ul_dump", {"brief"});
  const mi::Reply reply = Run(GetParam(), "ul_dump", {"brief"}, Compare::kExact);
  ASSERT_FALSE(reply.root.kids.empty());
  EXPECT_EQ(reply.root.kids[0]->attributes, (std::vector<mi::Attribute>{{"table", "512"}}));
}

TEST_P(CrossTransportTest, UsrlocCommandsWithArguments) {
  ExpectSameAsGrpc("ul_show_contact", {"location", "u1000"});
  ExpectSameAsGrpc("ul_show_contact", {"location", "nobody"});
  ExpectSameAsGrpc("ul_show_contact", {"nosuch", "u1000"});
  ExpectSameAsGrpc("ul_dump_aor", {"location", "u1001"});
  ExpectSameAsGrpc("ul_dump_page", {"location", "20", "."});
  ExpectSameAsGrpc("ul_dump_page", {"location", "0", "."});
  ExpectSameAsGrpc("ul_sync", {"location"});
  ExpectSameAsGrpc("ul_rm_contact", {"location", "u1000", "sip:not-there@h"});
  ExpectSameAsGrpc("ul_rm", {"location"});
  ExpectSameAsGrpc("ul_add", {"location", "x", "sip:x@h", "oops", "1", "0", "0", "0", "0"});
  ExpectSameAsGrpc("ul_dump", {"brief", "extra"});
  // Mutations answer the same (the second removal finds nothing).
  const std::string aor = "gone_" + TransportName(GetParam());
  ASSERT_EQ(Run(GetParam(), "ul_add", {"location", aor, "sip:g@h", "0", "1", "0", "0", "0", "0"},
                Compare::kExact),
            mi::Reply::Ok());
  ExpectSameAsGrpc("ul_show_contact", {"location", aor});
  EXPECT_EQ(Run(GetParam(), "ul_rm_contact", {"location", aor, "sip:g@h"}, Compare::kExact),
            mi::Reply::Ok());
  ExpectSameAsGrpc("ul_rm_contact", {"location", aor, "sip:g@h"});
}

TEST_P(CrossTransportTest, StatisticsWithArguments) {
  ExpectSameAsGrpc("get_statistics", {"usrloc:"});
  ExpectSameAsGrpc("get_statistics", {"registered_users", "location-users", "REGISTERED_USERS"});
  ExpectSameAsGrpc("get_statistics", {"no_such_statistic"});
  ExpectSameAsGrpc("get_statistics", {"core:", "shmem:"}, Compare::kNamesOnly);
  ExpectSameAsGrpc("reset_statistics", {"rcv_requests"});
  ExpectSameAsGrpc("reset_statistics", {"timestamp", "no_such_statistic"});
  ExpectSameAsGrpc("reset_statistics", {"no_such_statistic"});
  ExpectSameAsGrpc("get_statistics", {});
}

TEST_P(CrossTransportTest, Which) { ExpectSameAsGrpc("which", {}); }

TEST_P(CrossTransportTest, HelpPs) { ExpectSameAsGrpc("help", {"ps"}); }

TEST_P(CrossTransportTest, UptimeShape) {
  ExpectSameAsGrpc("uptime", {}, Compare::kNamesOnly);
  const mi::Reply reply = Run(GetParam(), "uptime", {}, Compare::kExact);
  ASSERT_EQ(reply.root.kids.size(), 3u);
  EXPECT_EQ(reply.root.kids[0]->name, "Now");
  EXPECT_EQ(reply.root.kids[1]->name, "Up since");
  EXPECT_EQ(reply.root.kids[2]->name, "Up time");
}

TEST_P(CrossTransportTest, GetStatisticsAllNames) {
  ExpectSameAsGrpc("get_statistics", {"all"}, Compare::kNamesOnly);
}

TEST_P(CrossTransportTest, CacheStoreThenFetch) {
  const std::string key = "k_" + TransportName(GetParam());
  const mi::Reply stored = Run(GetParam(), "cache_store", {"local", key, "v"}, Compare::kExact);
  EXPECT_EQ(stored, mi::Reply::Ok());
  ExpectSameAsGrpc("cache_fetch", {"local", key});
  const mi::Reply fetched = Run(GetParam(), "cache_fetch", {"local", key}, Compare::kExact);
  ASSERT_EQ(fetched.root.kids.size(), 1u);
  EXPECT_EQ(fetched.root.kids[0]->value, key + " = [v]");
}

TEST_P(CrossTransportTest, UnknownCommand) {
  ExpectSameAsGrpc("no_such_command", {});
  const mi::Reply reply = Run(GetParam(), "no_such_command", {}, Compare::kExact);
  EXPECT_EQ(reply.code, 500u);
  EXPECT_EQ(reply.reason, "command 'no_such_command' not available");
}

TEST_P(CrossTransportTest, TooManyArguments) {
  ExpectSameAsGrpc("help", {"a", "b"});
  const mi::Reply reply = Run(GetParam(), "help", {"a", "b"}, Compare::kExact);
  EXPECT_EQ(reply, mi::Reply::Error(400, "Too few or too many arguments"));
}

INSTANTIATE_TEST_SUITE_P(AllTransports, CrossTransportTest,
                         ::testing::Values(Transport::kGrpc, Transport::kGrpcStream,
                                           Transport::kFifo, Transport::kUnixDatagram,
                                           Transport::kUdpDatagram, Transport::kXmlrpc,
                                           Transport::kHttp),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return TransportName(info.param);
                         });

// Stops the shared sipd when the suite is done (no process left behind).
class StopSharedSipd : public ::testing::Environment {
 public:
  void TearDown() override { SharedSipd::Get().Stop(); }
};
const auto* const kStopSharedSipd = ::testing::AddGlobalTestEnvironment(new StopSharedSipd);

}  // namespace
}  // namespace sipd::integration
