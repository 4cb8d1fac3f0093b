#include "registry/reply_writer.h"

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

}  // namespace sipd::mi
