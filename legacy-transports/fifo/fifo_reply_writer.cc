#include "legacy-transports/fifo/fifo_reply_writer.h"

#include "registry/text_format.h"

namespace sipd::legacy {

void FifoReplyWriter::WriteStatus(const mi::Reply& reply) {
  mi::AppendStatusLine(*out_, reply.code, reply.text_reason());
}

void FifoReplyWriter::WriteNode(const mi::Node& node, int depth) {
  mi::AppendNodeLine(*out_, node, depth, indent_);
}

void FifoReplyWriter::EndFlush() { out_->push_back('\n'); }

void FifoReplyWriter::EndReply() { out_->push_back('\n'); }

void FifoReplyWriter::WriteErrorLine(uint32_t code, std::string_view reason) {
  mi::AppendStatusLine(*out_, code, reason);
}

}  // namespace sipd::legacy
