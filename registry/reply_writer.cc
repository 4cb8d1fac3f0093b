#include "registry/reply_writer.h"

#include <algorithm>

namespace sipd::mi {
namespace {

// Returns false if the walk must stop (a not_completed node was reached).
bool FlushKids(Node& parent, int depth, ReplyWriter& writer) {
  size_t done = 0;
  bool keep_going = true;
  for (auto& kid : parent.kids) {
    if (!kid->written) {
      writer.WriteNode(*kid, depth);
      kid->written = true;
    }
    if (!FlushKids(*kid, depth + 1, writer) || kid->not_completed) {
      keep_going = false;
      break;
    }
    ++done;
  }
  parent.kids.erase(parent.kids.begin(), parent.kids.begin() + static_cast<ptrdiff_t>(done));
  return keep_going;
}

void WriteRemaining(const Node& parent, int depth, ReplyWriter& writer) {
  for (const auto& kid : parent.kids) {
    if (!kid->written) writer.WriteNode(*kid, depth);
    WriteRemaining(*kid, depth + 1, writer);
  }
}

}  // namespace

void FlushReply(Reply& reply, ReplyWriter& writer) {
  if (!reply.root.written) {
    writer.WriteStatus(reply);
    reply.root.written = true;
  }
  FlushKids(reply.root, 0, writer);
}

void FinishReply(Reply& reply, ReplyWriter& writer) {
  if (!reply.root.written) {
    writer.WriteStatus(reply);
    reply.root.written = true;
  }
  WriteRemaining(reply.root, 0, writer);
  writer.EndReply();
}

void TreeBuilder::WriteStatus(const Reply& reply) {
  reply_.code = reply.code;
  reply_.reason = reply.reason;
  reply_.text_reason_cut = reply.text_reason_cut;
  reply_.bad_arguments = reply.bad_arguments;
  reply_.root.is_array = reply.root.is_array;
}

void TreeBuilder::WriteNode(const Node& node, int depth) {
  const size_t level = static_cast<size_t>(depth);
  // FlushReply/FinishReply write in pre-order, so depth never skips a level.
  Node& parent = level == 0 || level > stack_.size() ? reply_.root : *stack_[level - 1];
  Node& copy = parent.AddKid(node.name, node.value);
  copy.attributes = node.attributes;
  copy.is_array = node.is_array;
  stack_.resize(std::min(level, stack_.size()));
  stack_.push_back(&copy);
}

}  // namespace sipd::mi
