// The MI ReplyWriter behind ExecuteStream: turns the node lines of a (flushing) reply
// into sipd.mi.v1.ReplyChunk messages.
//
// A chunk is handed to the sink at every EndFlush() that has something to send (the
// command flushed, spec 1.7), at EndReply(), and in between whenever the pending chunk
// reaches `max_nodes` nodes or about `max_bytes` bytes, so a handler that never flushes
// still produces bounded messages. The first chunk carries the status (has_status).
// Strings are made valid UTF-8 (service/utf8.h) before they are handed over.
//
// The sink blocks until the chunk is on its way (that is the flow control: a slow
// client slows the handler down instead of making the server buffer the reply) and
// returns false when the stream is gone (client cancelled, deadline, write timeout).
// From then on the writer drops everything: the handler runs to its end, unseen.
//
// Thread-safety: one writer serves one call on one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "registry/reply_writer.h"
#include "sipd/mi/v1/mi.pb.h"

namespace sipd::service {

namespace v1 = ::sipd::mi::v1;

class ChunkReplyWriter : public mi::ReplyWriter {
 public:
  using Sink = std::function<bool(v1::ReplyChunk& chunk)>;

  struct Limits {
    size_t max_nodes = 1000;
    size_t max_bytes = 1 << 20;
  };

  ChunkReplyWriter(Sink sink, Limits limits) : sink_(std::move(sink)), limits_(limits) {}

  void WriteStatus(const mi::Reply& reply) override;
  void WriteNode(const mi::Node& node, int depth) override;
  void EndFlush() override;
  void EndReply() override;

  // The sink refused a chunk: the stream is gone.
  bool broken() const { return broken_; }
  uint64_t chunks_sent() const { return chunks_sent_; }
  uint64_t nodes_written() const { return nodes_written_; }

 private:
  void Send();

  Sink sink_;
  Limits limits_;
  v1::ReplyChunk pending_;
  size_t pending_bytes_ = 0;
  bool broken_ = false;
  uint64_t chunks_sent_ = 0;
  uint64_t nodes_written_ = 0;
};

}  // namespace sipd::service
