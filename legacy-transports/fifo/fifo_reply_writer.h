// Renders one MI reply in the OpenSIPS text layout of the FIFO (spec 2, 3.4-3.6) into the
// output buffer of one FIFO client. No I/O: the FIFO server (fifo_server.h) writes the
// buffer out without blocking, as the client reads.
//
// EndFlush adds the extra empty line of spec 3.6 (every flush of a streamed reply), so
// does EndReply (the final empty line). A transport-generated error is one status line
// without an empty line (spec 3.4). A line longer than 1.11's 8 KB buffer is written
// whole (1.11 aborts the reply there).
//
// Thread-safety: one writer per thread; the FIFO process reuses one for every reply.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "registry/reply_writer.h"

namespace sipd::legacy {

class FifoReplyWriter final : public mi::ReplyWriter {
 public:
  // 1.11's reply write buffer; sipd's low-water mark of a client's output (see
  // fifo_server.h).
  static constexpr size_t kBufferSize = 8192;

  explicit FifoReplyWriter(std::string indent) : indent_(std::move(indent)) {}

  // Appends what follows to `*out` (not owned; must outlive the writes).
  void Begin(std::string* out) { out_ = out; }

  void WriteStatus(const mi::Reply& reply) override;
  void WriteNode(const mi::Node& node, int depth) override;
  void EndFlush() override;
  void EndReply() override;

  // A transport-generated error: `<code> <reason>\n` and no empty line (spec 3.4).
  void WriteErrorLine(uint32_t code, std::string_view reason);

 private:
  const std::string indent_;
  std::string* out_ = nullptr;
};

}  // namespace sipd::legacy
