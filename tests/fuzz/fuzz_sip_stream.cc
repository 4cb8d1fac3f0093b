// Fuzz target: a SIP-over-TCP byte stream through SipStreamFramer (sipd/core/tcp_framer.h),
// the framing a TCP receiver runs on every connection.
//
// Input: byte 0 picks how the stream is cut into Append() calls; the rest is the stream.
// The same stream is framed twice, all at once and in pieces of 1 to 64 bytes, and the
// two must report the same events with the same messages (the framer resumes its
// searches between appends, so a cut anywhere must change nothing; only a kTooLarge
// may carry its header block in one and not in the other). Also checked: a
// message is never larger than the limit, and after kTooLarge or kBadFraming the framer
// stays in that state. A violation traps, which libFuzzer reports as a crash.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sipd/core/tcp_framer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using sipd::fuzz::Check;

constexpr size_t kMaxMessage = 2048;  // small, so that inputs reach the limit

using Event = std::pair<sipd::SipStreamFramer::Result, std::string>;

// Takes every event the framer has now; false once it failed for good.
bool Drain(sipd::SipStreamFramer& framer, std::vector<Event>& events) {
  using Result = sipd::SipStreamFramer::Result;
  while (true) {
    std::string_view message;
    const Result result = framer.Next(&message);
    Check(framer.partial_bytes() <= framer.buffered());
    if (result == Result::kNeedMore) return true;
    if (result == Result::kMessage) Check(!message.empty() && message.size() <= kMaxMessage);
    events.emplace_back(result, std::string(message));
    if (result == Result::kTooLarge || result == Result::kBadFraming) {
      std::string_view again;
      Check(framer.Next(&again) == result);  // sticky
      return false;
    }
  }
}

std::vector<Event> Frame(std::string_view stream, uint8_t cut) {
  sipd::SipStreamFramer framer(kMaxMessage);
  std::vector<Event> events;
  size_t pos = 0;
  uint32_t state = cut;
  while (pos < stream.size()) {
    size_t piece = stream.size();
    if (cut != 0) {
      state = state * 1103515245u + 12345u;
      piece = 1 + (state >> 16) % 64;
    }
    piece = std::min(piece, stream.size() - pos);
    framer.Append(stream.substr(pos, piece));
    pos += piece;
    if (!Drain(framer, events)) break;
  }
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<Event> whole = Frame(stream, 0);
  std::vector<Event> pieces = Frame(stream, static_cast<uint8_t>(data[0] | 1));
  // kTooLarge carries the header block only when it is complete, which depends on how
  // much had arrived: that one message may differ.
  for (auto* events : {&whole, &pieces}) {
    if (!events->empty() && events->back().first == sipd::SipStreamFramer::Result::kTooLarge) {
      events->back().second.clear();
    }
  }
  Check(whole == pieces);
  return 0;
}
