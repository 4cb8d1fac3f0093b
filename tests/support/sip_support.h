// Integration-test helpers shared by the SIP suites and benches: run sipp (Debian
// sip-tester) against a test sipd, and talk MI over gRPC.
#pragma once

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "registry/proto_convert.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {

namespace v1 = ::sipd::mi::v1;

inline std::string ScenarioPath(std::string_view file) {
  return absl::StrCat(SIPD_SIP_SCENARIO_DIR, "/", std::string(file));
}

struct SippResult {
  int exit_code = -1;  // sipp: 0 = every call succeeded, 1 = some failed
  std::string output;  // stdout + stderr + the error trace
};

// Runs sipp to 127.0.0.1:`port` with `args` (e.g. {"-m", "20", "-inf", CSV}) in its own
// process group, bounded by `timeout` (then the group is killed and exit_code is -1).
inline SippResult RunSipp(int port, const std::string& scenario, std::vector<std::string> args,
                          const std::string& work_dir,
                          std::chrono::seconds timeout = std::chrono::seconds(120)) {
  // sipp binds a port of the system's choosing (no -p): the run is named by a counter.
  static std::atomic<int> runs{0};
  const int run = runs.fetch_add(1);
  const std::string log = absl::StrCat(work_dir, "/sipp-", getpid(), "-", run, ".log");
  const std::string errors = absl::StrCat(work_dir, "/sipp-", getpid(), "-", run, "-errors.log");
  std::vector<std::string> argv = {"sipp",
                                   "-sf",
                                   ScenarioPath(scenario),
                                   absl::StrCat("127.0.0.1:", port),
                                   "-i",
                                   "127.0.0.1",
                                   "-nostdin",
                                   "-timeout",
                                   absl::StrCat(timeout.count() - 5, "s"),
                                   "-timeout_error",
                                   "-trace_err",
                                   "-error_file",
                                   errors};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    // Dies with the test (or bench) even if that is killed before its teardown.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    chdir(work_dir.c_str());
    std::vector<char*> c_argv;
    for (auto& a : argv) c_argv.push_back(a.data());
    c_argv.push_back(nullptr);
    execvp("sipp", c_argv.data());
    _exit(127);
  }
  SippResult result;
  if (pid < 0) return result;
  setpgid(pid, pid);
  int status = 0;
  if (sipd::testing::WaitForExit(pid, &status,
                                 std::chrono::duration_cast<std::chrono::milliseconds>(timeout))) {
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  } else {
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  kill(-pid, SIGKILL);  // anything sipp left behind in its group
  for (const std::string& file : {log, errors}) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    result.output += text.str();
  }
  return result;
}

// MI over the gRPC transport.
class MiClient {
 public:
  explicit MiClient(const std::string& target) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);  // whole ul_dump trees of big tables
    stub_ = v1::Management::NewStub(
        grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  }

  struct Result {
    uint32_t code = 0;
    std::string reason;
    mi::Reply reply;
    std::string Status() const { return absl::StrCat(code, " ", reason); }
  };

  // Execute (unary). For non-2xx replies code/reason come from the trailing metadata.
  Result Execute(const std::string& command, const std::vector<std::string>& params = {}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::ExecuteRequest request;
    request.set_command(command);
    for (const auto& p : params) request.add_params(p);
    v1::Reply reply;
    grpc::Status status = stub_->Execute(&context, request, &reply);
    Result result;
    if (status.ok()) {
      result.reply = mi::FromProto(reply);
      result.code = result.reply.code;
      result.reason = result.reply.reason;
      return result;
    }
    const auto& trailers = context.GetServerTrailingMetadata();
    auto code = trailers.find("sipd-mi-code");
    auto reason = trailers.find("sipd-mi-reason");
    if (code != trailers.end()) {
      (void)absl::SimpleAtoi(std::string(code->second.data(), code->second.size()), &result.code);
    }
    if (reason != trailers.end()) {
      result.reason = std::string(reason->second.data(), reason->second.size());
    }
    if (code == trailers.end()) result.reason = "gRPC: " + status.error_message();
    return result;
  }

  // ExecuteStream, reassembled; `chunks` receives the number of messages.
  Result ExecuteStream(const std::string& command, const std::vector<std::string>& params = {},
                       int* chunks = nullptr) {
    grpc::ClientContext context;
    auto reader = OpenStream(context, command, params);
    mi::ChunkAssembler assembler;
    v1::ReplyChunk chunk;
    int n = 0;
    Result result;
    while (reader->Read(&chunk)) {
      ++n;
      if (!assembler.Add(chunk).ok()) result.reason = "bad chunk";
    }
    grpc::Status status = reader->Finish();
    if (chunks != nullptr) *chunks = n;
    if (!status.ok() && n == 0) {
      result.reason = "gRPC: " + status.error_message();
      return result;
    }
    result.reply = assembler.Take();
    result.code = result.reply.code;
    if (result.reason.empty()) result.reason = result.reply.reason;
    return result;
  }

  // ExecuteStream, counting node lines without keeping them; -1 on a transport error.
  long StreamNodeCount(const std::string& command, const std::vector<std::string>& params = {}) {
    grpc::ClientContext context;
    auto reader = OpenStream(context, command, params);
    v1::ReplyChunk chunk;
    long nodes = 0;
    while (reader->Read(&chunk)) nodes += chunk.nodes_size();
    return reader->Finish().ok() ? nodes : -1;
  }

  // get_statistics as name -> value.
  std::map<std::string, uint64_t> Statistics(const std::vector<std::string>& selectors) {
    std::map<std::string, uint64_t> out;
    Result r = Execute("get_statistics", selectors);
    for (const auto& node : r.reply.root.kids) {
      uint64_t v = 0;
      if (absl::SimpleAtoi(node->value, &v)) out[node->name] = v;
    }
    return out;
  }

 private:
  // An ExecuteStream call of `command` (60 s deadline on `context`).
  std::unique_ptr<grpc::ClientReader<v1::ReplyChunk>> OpenStream(
      grpc::ClientContext& context, const std::string& command,
      const std::vector<std::string>& params) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::ExecuteRequest request;
    request.set_command(command);
    for (const auto& p : params) request.add_params(p);
    return stub_->ExecuteStream(&context, request);
  }
  std::unique_ptr<v1::Management::Stub> stub_;
};

// AOR -> contact URIs of a ul_dump reply (Domain `location`).
inline std::map<std::string, std::vector<std::string>> DumpContacts(const mi::Reply& reply) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& domain : reply.root.kids) {
    if (domain->value != "location") continue;
    for (const auto& aor : domain->kids) {
      auto& uris = out[aor->value];
      for (const auto& contact : aor->kids) uris.push_back(contact->value);
    }
  }
  return out;
}

}  // namespace sipd::testing
