// Fuzz target: the text MI argument lines shared by FIFO and datagram
// (legacy-transports/text/argument_parser.h), fed line by line as the FIFO does and as
// one block as the datagram does.
#include <cstdint>
#include <string_view>
#include <vector>

#include "legacy-transports/text/argument_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<sipd::mi::Argument> args;
  sipd::legacy::ArgumentParser block(65457);
  (void)block.ParseAll(text, &args);

  sipd::legacy::ArgumentParser lines(sipd::legacy::kFifoMaxArgumentBytes);
  lines.Begin(&args);
  size_t start = 0;
  while (start < text.size()) {
    const size_t lf = text.find('\n', start);
    const size_t end = lf == std::string_view::npos ? text.size() : lf + 1;
    if (!lines.FeedLine(text.substr(start, end - start)).ok()) break;
    start = end;
  }
  (void)lines.Finish();
  return 0;
}
