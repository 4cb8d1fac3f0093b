// Fuzz target: the MI FIFO request stream (legacy-transports/fifo/fifo_server.h): command
// lines, argument lines, quoting, over-long lines, the end of a request and the
// resynchronisation rule, through the real FifoServer and Dispatcher. The input is split
// at the first 0xff byte into two writes with a pause between them (the resync rule
// looks at what follows a pause). Reply FIFOs live in a directory that does not exist,
// so every parsed request is discarded where service would write its reply.
#include <cstdint>
#include <string_view>

#include "legacy-transports/fifo/fifo_server.h"
#include "registry/dispatcher.h"
#include "tests/fuzz/fuzz_registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto registry = sipd::fuzz::NewFuzzRegistry();
  static sipd::mi::Dispatcher dispatcher(*registry);
  static const sipd::legacy::FifoConfig config = [] {
    sipd::legacy::FifoConfig c;
    c.fifo_name = "/nonexistent-sipd-fuzz/fifo";
    c.reply_dir = "/nonexistent-sipd-fuzz/";
    return c;
  }();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\xff');
  sipd::legacy::FifoServer server(config, dispatcher);
  server.FeedForFuzzing(input.substr(0, split));
  if (split != std::string_view::npos) server.FeedForFuzzing(input.substr(split + 1));
  return 0;
}
