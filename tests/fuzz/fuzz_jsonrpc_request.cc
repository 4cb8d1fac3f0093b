// Fuzz target: one POST /mi body of the httpd's JSON-RPC 2.0 interface
// (sipd/modules/httpd/jsonrpc.h): parsed into MI requests, run through the real
// Dispatcher by an RpcJob and written as the JSON-RPC response, as an HTTPD process
// does for a request that passed the HTTP and token checks.
//
// Checked: whatever the body, the response is valid JSON (a parser accepts it) unless
// every call was a notification, in which case nothing is written. A violation traps,
// which libFuzzer reports as a crash.
#include <cstdint>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "registry/dispatcher.h"
#include "sipd/modules/httpd/jsonrpc.h"
#include "sipd/modules/httpd/rpc_job.h"
#include "tests/fuzz/fuzz_registry.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

constexpr size_t kMaxBatch = 16;  // as the httpd's default max_batch

using sipd::fuzz::Check;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto registry = sipd::fuzz::NewFuzzRegistry();
  static sipd::mi::Dispatcher dispatcher(*registry);
  static const sipd::mi::CallContext context;  // a local caller, as a loopback client
  sipd::httpd::RpcBody body = sipd::httpd::ParseJsonRpc(
      std::string_view(reinterpret_cast<const char*>(data), size), kMaxBatch);
  std::string out;
  if (!body.error_response.empty()) {
    out = body.error_response;
  } else {
    sipd::httpd::RpcJob job(dispatcher, std::move(body), context, [] {});
    // As the HTTPD does: whatever Run() produced goes out (here: to `out`) before it is
    // called again with an empty buffer. The fuzz registry's commands answer at once, so
    // no call waits; the bound only keeps a bug from looping forever.
    std::string chunk;
    bool done = false;
    for (int round = 0; round < 10000 && !done; ++round) {
      const sipd::httpd::RpcJob::State state = job.Run(chunk, 4096);
      Check(state != sipd::httpd::RpcJob::State::kBroken);
      done = state == sipd::httpd::RpcJob::State::kDone;
      if (state == sipd::httpd::RpcJob::State::kWaiting) dispatcher.RunCompletions();
      out += chunk;
      chunk.clear();
    }
    Check(done);
    if (job.silent()) {
      Check(out.empty());
      return 0;
    }
  }
  Check(nlohmann::json::accept(out));
  return 0;
}
