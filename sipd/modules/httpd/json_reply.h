// MI replies as JSON: the shape of the gRPC mirror's JSON (what `sipctl --json` prints,
// clients/sipctl/output.cc), written part by part so a streamed reply is never built
// whole.
//
//   {"code":200,"reason":"OK","is_array":true,"nodes":[
//     {"name":"AOR","value":"alice","attributes":[{"name":"k","value":"v"}],
//      "kids":[...],"is_array":true}, ...]}
//
// Absent (empty) names and values are left out; "is_array" only when true.
//
// Thread-safety: a writer belongs to one call on one thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "registry/reply_writer.h"
#include "registry/tree.h"

namespace sipd::httpd {

// `text` as a JSON string literal (quotes included). Invalid UTF-8 bytes become U+FFFD,
// so any MI value yields valid JSON.
std::string JsonString(std::string_view text);
void AppendJsonString(std::string& out, std::string_view text);

// Writes one JSON-RPC 2.0 response object for one MI reply into an output string:
//   success (2xx): {"jsonrpc":"2.0","result":<reply as above>,"id":ID}
//   MI error:      {"jsonrpc":"2.0","error":{"code":MI code,"message":reason,
//                   "data":{"nodes":[...]}},"id":ID}   ("data" only when nodes came)
// Nodes arrive pre-order with their depth (registry/reply_writer.h); every object stays
// open until a node at its depth or shallower arrives, so kids written in a later flush
// land in the right parent.
class JsonRpcReplyWriter : public mi::ReplyWriter {
 public:
  // `id_json` is the request id already in JSON form ("1", "\"a\"", "null").
  explicit JsonRpcReplyWriter(std::string id_json) : id_json_(std::move(id_json)) {}

  // Where the next calls append. REQUIRES: set before the first call and whenever the
  // caller's buffer changes.
  void set_output(std::string* out) { out_ = out; }
  bool finished() const { return finished_; }
  bool started() const { return started_; }

  void WriteStatus(const mi::Reply& reply) override;
  void WriteNode(const mi::Node& node, int depth) override;
  void EndReply() override;

 private:
  void CloseTo(size_t depth);

  std::string id_json_;
  std::string* out_ = nullptr;
  bool error_ = false;
  bool started_ = false;
  bool finished_ = false;
  bool nodes_open_ = false;
  bool wrote_top_ = false;
  struct OpenNode {
    bool kids_open;  // its "kids" array is open
    bool has_key;    // it has a key already (a comma goes before "kids")
  };
  // The node objects still open, one per depth.
  std::vector<OpenNode> open_;
};

// A whole JSON-RPC error response.
std::string JsonRpcError(std::string_view id_json, int64_t code, std::string_view message);

}  // namespace sipd::httpd
