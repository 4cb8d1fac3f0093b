// Fuzz target: one MI datagram (legacy-transports/datagram/datagram_server.h): the
// `:command:` line and the argument block, through the real DatagramServer and
// Dispatcher, up to the reply payload.
#include <cstdint>
#include <string_view>

#include "legacy-transports/datagram/datagram_server.h"
#include "registry/dispatcher.h"
#include "tests/fuzz/fuzz_registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto registry = sipd::fuzz::NewFuzzRegistry();
  static sipd::mi::Dispatcher dispatcher(*registry);
  static const sipd::legacy::DatagramConfig config;
  static const std::vector<sipd::legacy::DatagramSockets> sockets = [] {
    sipd::legacy::DatagramSockets s;
    s.unix_path = "/nonexistent-sipd-fuzz/mi.sock";  // never bound: only its kind matters
    return std::vector<sipd::legacy::DatagramSockets>{s};
  }();
  static sipd::legacy::DatagramServer server(config, dispatcher, sockets);
  (void)server.FeedForFuzzing(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
