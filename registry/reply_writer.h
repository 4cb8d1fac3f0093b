// Incremental output of a reply: the flush algorithm of spec section 1.7.
//
// A transport hands a ReplyWriter to the Dispatcher (registry/dispatcher.h). Each time
// a streaming command's producer reaches a flush point, the finished part of the tree
// is written through the writer and detached from the tree, so no transport needs the
// whole tree in memory. At the end the rest is written and EndReply() is called.
//
// Order of calls on a writer for one reply:
//   WriteStatus, then any number of WriteNode (pre-order, with depth) and EndFlush,
//   then EndReply exactly once.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "registry/tree.h"

namespace sipd::mi {

class ReplyWriter {
 public:
  virtual ~ReplyWriter() = default;
  // The status line; `reply` carries code, reason and the root's array flag.
  virtual void WriteStatus(const Reply& reply) = 0;
  // One node's own line (its kids come in later calls at depth + 1).
  virtual void WriteNode(const Node& node, int depth) = 0;
  // Ends one mid-command flush (FIFO: an extra empty line; gRPC: send a chunk).
  virtual void EndFlush() {}
  // Ends the reply (FIFO: the final empty line).
  virtual void EndReply() {}
  // True when the writer takes nothing more (e.g. a datagram that no longer fits): the
  // dispatcher stops pulling a stream into it.
  virtual bool full() const { return false; }
};

// Writes every finished node that was not written yet and detaches finished subtrees
// (spec 1.7 steps 1-2). Stops at the first node marked not_completed. Does not call
// EndFlush().
void FlushReply(Reply& reply, ReplyWriter& writer);

// Writes everything not written yet (descending into written nodes for their new kids),
// then calls EndReply(). The tree is left as it was (nothing detached).
void FinishReply(Reply& reply, ReplyWriter& writer);

}  // namespace sipd::mi

namespace sipd::mi {

// A ReplyWriter that rebuilds the reply from what is written to it: the tree a client
// of a streaming transport reads back (ExecuteStream's chunks, the FIFO's lines). The
// dispatcher pulls a streamed command's reply through one for Delivery::kTree, so that
// the whole tree of Execute is the tree every streaming transport shows: flushes happen
// at the same points, and what a flush makes final stays final (an attribute added to
// a node after its line was flushed is lost on every transport alike, spec 1.7).
//
// Thread-safety: one builder per reply.
class TreeBuilder final : public ReplyWriter {
 public:
  // Code, reason and root flags (and the reply's bad_arguments, text_reason_cut).
  void WriteStatus(const Reply& reply) override;
  // A copy of the node's own line under the last node written at depth - 1.
  void WriteNode(const Node& node, int depth) override;

  // The reply built so far.
  Reply Take() { return std::move(reply_); }

 private:
  Reply reply_;
  // stack_[d] = the last node written at depth d.
  std::vector<Node*> stack_;
};

}  // namespace sipd::mi
