#include "service/chunk_writer.h"

#include "registry/proto_convert.h"
#include "service/utf8.h"

namespace sipd::service {
namespace {

// Rough wire size of one node line: strings plus a few bytes of tags per field.
size_t ApproximateBytes(const mi::Node& node) {
  size_t bytes = node.name.size() + node.value.size() + 8;
  for (const auto& attr : node.attributes) bytes += attr.name.size() + attr.value.size() + 6;
  return bytes;
}

}  // namespace

void ChunkReplyWriter::WriteStatus(const mi::Reply& reply) {
  if (broken_) return;
  pending_.set_has_status(true);
  pending_.set_code(reply.code);
  pending_.set_reason(reply.reason);
  pending_.set_is_array(reply.root.is_array);
  pending_bytes_ += reply.reason.size() + 8;
}

void ChunkReplyWriter::WriteNode(const mi::Node& node, int depth) {
  if (broken_) return;
  mi::ToFlatNode(node, depth, pending_.add_nodes());
  ++nodes_written_;
  pending_bytes_ += ApproximateBytes(node);
  if (static_cast<size_t>(pending_.nodes_size()) >= limits_.max_nodes ||
      pending_bytes_ >= limits_.max_bytes) {
    Send();
  }
}

void ChunkReplyWriter::EndFlush() {
  if (broken_) return;
  if (pending_.has_status() || pending_.nodes_size() > 0) Send();
}

void ChunkReplyWriter::EndReply() {
  if (broken_) return;
  // Always at least one chunk: a reply without nodes is just its status.
  if (chunks_sent_ == 0 || pending_.has_status() || pending_.nodes_size() > 0) Send();
}

void ChunkReplyWriter::Send() {
  SanitizeUtf8(&pending_);
  if (!sink_(pending_)) broken_ = true;
  ++chunks_sent_;
  pending_.Clear();
  pending_bytes_ = 0;
}

}  // namespace sipd::service
