// Writes one MI reply into a reply FIFO in the OpenSIPS text layout (spec 2, 3.4-3.6).
//
// Output is rendered into a buffer that is written out once it holds kBufferSize bytes,
// after each EndFlush (which adds the extra empty line of spec 3.6), at EndReply (after
// the final empty line) and after a transport error line. Chunk boundaries carry no
// meaning. A line longer than the buffer is written in pieces (1.11 aborts the reply).
//
// Never blocks for long: the descriptor is non-blocking and a full pipe is waited for
// with poll(). If the client accepts no byte for `stall_timeout`, or has closed its end
// (EPIPE: the process must ignore SIGPIPE), the reply is abandoned: failed() becomes
// true, the rest of this reply is dropped and the caller closes the FIFO. The timeout
// counts time without progress, not the whole reply, so a reader that keeps reading can
// receive a reply of any size (a streamed ul_dump of a million contacts).
//
// Thread-safety: one writer per thread; it is reused for every reply of the FIFO process.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "registry/reply_writer.h"

namespace sipd::legacy {

class FifoReplyWriter final : public mi::ReplyWriter {
 public:
  // 1.11's reply write buffer.
  static constexpr size_t kBufferSize = 8192;

  FifoReplyWriter(std::string indent, std::chrono::milliseconds stall_timeout);

  // Starts a reply on `fd` (not owned; non-blocking).
  void Begin(int fd);

  void WriteStatus(const mi::Reply& reply) override;
  void WriteNode(const mi::Node& node, int depth) override;
  void EndFlush() override;
  void EndReply() override;

  // A transport-generated error: the single status line `<code> <reason>\n` and no empty
  // line (spec 3.4); written out at once.
  void WriteErrorLine(uint32_t code, std::string_view reason);

  // True once the reply was abandoned (client gone or stalled).
  bool failed() const { return failed_; }

 private:
  // Writes the whole buffer (or abandons the reply) and empties it.
  void WriteOut();
  void Abandon(std::string_view why);

  const std::string indent_;
  const std::chrono::milliseconds stall_timeout_;
  std::string buffer_;
  int fd_ = -1;
  bool failed_ = false;
};

}  // namespace sipd::legacy
