// Conversion between the MI tree and its protobuf mirror (proto/sipd/mi/v1/mi.proto).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "registry/command.h"
#include "registry/tree.h"
#include "sipd/mi/v1/mi.pb.h"

namespace sipd::mi {

v1::Reply ToProto(const Reply& reply);
Reply FromProto(const v1::Reply& reply);

void ToProto(const Node& node, v1::Node* out);
Node FromProto(const v1::Node& node);

// params first, then args (see ExecuteRequest).
Request FromProto(const v1::ExecuteRequest& request);
v1::ExecuteRequest ToProto(const Request& request);

v1::CommandInfo ToProto(const Command& command);

// One node line of a streamed reply (kids are not included).
void ToFlatNode(const Node& node, int depth, v1::FlatNode* out);

// Rebuilds a reply from ExecuteStream chunks, in order. InvalidArgument if the chunks
// are inconsistent (no status first, or a depth that skips a level).
class ChunkAssembler {
 public:
  absl::Status Add(const v1::ReplyChunk& chunk);
  // REQUIRES: at least one chunk with a status was added.
  Reply Take() { return std::move(reply_); }

 private:
  Reply reply_;
  bool have_status_ = false;
  // stack_[d] = the last node seen at depth d.
  std::vector<Node*> stack_;
};

}  // namespace sipd::mi
