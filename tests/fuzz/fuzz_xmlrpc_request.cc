// Fuzz target: an XML-RPC request as it arrives on a connection
// (legacy-transports/xmlrpc): HTTP head framing (FindHeadEnd, ParseRequestHead), the
// spec 5.2 request checks (CheckRpcRequest), then the body through the XML guard and
// both methodCall readers (expat's fast reader and xmlrpc-c's), and the whole call
// through the real XmlrpcProcessor and Dispatcher (faults included; system.multicall
// runs its calls).
#include <cstdint>
#include <string>
#include <string_view>

#include "legacy-transports/xmlrpc/fast_call_parser.h"
#include "legacy-transports/xmlrpc/http.h"
#include "legacy-transports/xmlrpc/xmlrpc_processor.h"
#include "registry/dispatcher.h"
#include "tests/fuzz/fuzz_registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto registry = sipd::fuzz::NewFuzzRegistry();
  static sipd::mi::Dispatcher dispatcher(*registry);
  static const sipd::xmlrpc::XmlrpcProcessor processor(dispatcher, {});
  static sipd::xmlrpc::FastCallParser fast;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view body = input;
  const size_t head_end = sipd::xmlrpc::FindHeadEnd(input.substr(0, sipd::xmlrpc::kMaxHeadSize));
  if (head_end > 0) {
    sipd::xmlrpc::HttpRequestHead head;
    if (sipd::xmlrpc::ParseRequestHead(input.substr(0, head_end), &head).ok()) {
      (void)head.WantsKeepAlive();
      (void)head.ExpectsContinue();
      auto [error, length] = sipd::xmlrpc::CheckRpcRequest(head, 1 << 20);
      body = input.substr(head_end);
      if (!error.has_value() && length < body.size()) body = body.substr(0, length);
    }
  }
  (void)sipd::xmlrpc::CheckXmlShape(body, 64);
  sipd::mi::Request request;
  (void)fast.Parse(body, &request);
  sipd::mi::Request library;
  (void)sipd::xmlrpc::LibraryParseCall(body, &library);
  std::string out;
  processor.Process(body, &out);
  return 0;
}
