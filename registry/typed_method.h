// Typed gRPC methods served by MI commands (sipd.core.v1, sipd.statistics.v1,
// sipd.usrloc.v1, ...): how a module declares them next to its commands.
//
// A typed method is only a conversion. It turns a typed request message into the MI
// arguments of the command it is declared on, and the command's reply tree into a typed
// response. Everything else happens as for any MI request: the gRPC transport hands the
// arguments to the one mi::Dispatcher (lookup, authorization, argument checks, audit,
// figures), and converts what comes back. So there is no second registry: a method is
// a field of its command's declaration,
//
//   {.name = "ps", ..., .handler = Ps,
//    .typed = {mi::TypedUnary<ListProcessesRequest, ListProcessesResponse>(
//        "sipd.core.v1.CoreService.ListProcesses",
//        [](const ListProcessesRequest&) { return mi::NoArguments(); },
//        [](const ListProcessesRequest&, const mi::Reply& reply, ListProcessesResponse& out)
//            -> absl::Status { ...; return absl::OkStatus(); })}}
//
// and Registry::Register() checks it against the generated descriptors (the method
// exists, takes and returns the declared messages, streams or not as declared), so a
// typo fails at start-up, not at the first call. The module links the generated C++ of
// its .proto (whose descriptors also feed server reflection); the gRPC transport serves
// every declared method without knowing any of them (service/typed_service.h).
//
// Two kinds:
//  - unary: FromReply() converts a whole successful (2xx) reply; any other outcome is
//    answered like Execute's (the same status table and rich error details);
//  - server streaming: the command's reply is pulled part by part as the client reads
//    (Delivery::kPull, as ExecuteStream); each part's "items", the subtrees rooted at
//    depth item_depth(), are added to one response message by AddItem(), and every part
//    that added something is sent as one message. An item is complete when the next
//    node at its depth or above comes, at the end of the reply, or at a flush unless it
//    was marked not_completed (spec 1.7: a flushed node that may still grow says so).
//
// Thread-safety: declarations are immutable once registered; the conversion functions
// run concurrently on any thread of the transport and must not keep state of their own.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "registry/command.h"
#include "registry/reply_writer.h"
#include "registry/tree.h"

namespace sipd::mi {

// A request field that does not convert (missing, out of range, malformed): the
// transport answers INVALID_ARGUMENT with a google.rpc.BadRequest naming `field` (the
// proto field name, e.g. "table").
absl::Status FieldError(std::string_view field, std::string_view description);
// The field of a FieldError() status; empty for any other status.
std::string FieldOfError(const absl::Status& status);

// The ancestors of a streamed item, outermost first: their own node lines (name, value,
// attributes), without kids.
using Ancestors = std::vector<const Node*>;

class TypedMethod {
 public:
  enum class Kind { kUnary, kServerStream };

  virtual ~TypedMethod() = default;

  // "sipd.core.v1.CoreService.ListProcesses".
  const std::string& full_name() const { return full_name_; }
  // "sipd.core.v1.CoreService".
  const std::string& service() const { return service_; }
  // The HTTP/2 path, "/sipd.core.v1.CoreService/ListProcesses".
  const std::string& path() const { return path_; }
  Kind kind() const { return kind_; }

  // An empty request (response) message of the method's types.
  virtual std::unique_ptr<google::protobuf::Message> NewRequest() const = 0;
  virtual std::unique_ptr<google::protobuf::Message> NewResponse() const = 0;

  // The command's arguments for `request`; FieldError() for a field that does not
  // convert. REQUIRES: `request` is of NewRequest()'s type.
  virtual absl::StatusOr<std::vector<Argument>> ToArguments(
      const google::protobuf::Message& request) const = 0;

  // kUnary: fills `response` from a 2xx reply. An error becomes INTERNAL (the reply did
  // not have the shape the conversion expects).
  virtual absl::Status FromReply(const google::protobuf::Message& request, const Reply& reply,
                                 google::protobuf::Message& response) const;

  // kServerStream: the depth of the items (0 = the root's kids) and the conversion of
  // one complete item into `response`, the message of the current part.
  int item_depth() const { return item_depth_; }
  virtual absl::Status AddItem(const google::protobuf::Message& request, const Ancestors& ancestors,
                               const Node& item, google::protobuf::Message& response) const;

  // OK if the generated descriptor pool has this method with the request and response
  // types of NewRequest()/NewResponse() and the declared kind; InvalidArgument naming
  // what differs otherwise. Registry::Register() calls it.
  absl::Status Check() const;

 protected:
  TypedMethod(std::string full_name, Kind kind, int item_depth);

 private:
  std::string full_name_;
  std::string service_;
  std::string path_;
  Kind kind_;
  int item_depth_;
};

// No arguments (for commands without parameters).
inline absl::StatusOr<std::vector<Argument>> NoArguments() { return std::vector<Argument>{}; }

// Arguments from plain values (nameless, as every transport sends them).
std::vector<Argument> Arguments(std::vector<std::string> values);

namespace internal {

template <typename Req, typename Resp>
class TypedUnaryMethod final : public TypedMethod {
 public:
  using ToArgs = std::function<absl::StatusOr<std::vector<Argument>>(const Req&)>;
  using FromTree = std::function<absl::Status(const Req&, const Reply&, Resp&)>;

  TypedUnaryMethod(std::string full_name, ToArgs to_args, FromTree from_reply)
      : TypedMethod(std::move(full_name), Kind::kUnary, 0),
        to_args_(std::move(to_args)),
        from_reply_(std::move(from_reply)) {}

  std::unique_ptr<google::protobuf::Message> NewRequest() const override {
    return std::make_unique<Req>();
  }
  std::unique_ptr<google::protobuf::Message> NewResponse() const override {
    return std::make_unique<Resp>();
  }
  absl::StatusOr<std::vector<Argument>> ToArguments(
      const google::protobuf::Message& request) const override {
    return to_args_(static_cast<const Req&>(request));
  }
  absl::Status FromReply(const google::protobuf::Message& request, const Reply& reply,
                         google::protobuf::Message& response) const override {
    return from_reply_(static_cast<const Req&>(request), reply, static_cast<Resp&>(response));
  }

 private:
  ToArgs to_args_;
  FromTree from_reply_;
};

template <typename Req, typename Resp>
class TypedStreamMethod final : public TypedMethod {
 public:
  using ToArgs = std::function<absl::StatusOr<std::vector<Argument>>(const Req&)>;
  using AddFn = std::function<absl::Status(const Req&, const Ancestors&, const Node&, Resp&)>;

  TypedStreamMethod(std::string full_name, ToArgs to_args, int item_depth, AddFn add_item)
      : TypedMethod(std::move(full_name), Kind::kServerStream, item_depth),
        to_args_(std::move(to_args)),
        add_item_(std::move(add_item)) {}

  std::unique_ptr<google::protobuf::Message> NewRequest() const override {
    return std::make_unique<Req>();
  }
  std::unique_ptr<google::protobuf::Message> NewResponse() const override {
    return std::make_unique<Resp>();
  }
  absl::StatusOr<std::vector<Argument>> ToArguments(
      const google::protobuf::Message& request) const override {
    return to_args_(static_cast<const Req&>(request));
  }
  absl::Status AddItem(const google::protobuf::Message& request, const Ancestors& ancestors,
                       const Node& item, google::protobuf::Message& response) const override {
    return add_item_(static_cast<const Req&>(request), ancestors, item,
                     static_cast<Resp&>(response));
  }

 private:
  ToArgs to_args_;
  AddFn add_item_;
};

}  // namespace internal

// A unary typed method (see the file comment).
template <typename Req, typename Resp>
std::shared_ptr<const TypedMethod> TypedUnary(
    std::string full_name, std::function<absl::StatusOr<std::vector<Argument>>(const Req&)> to_args,
    std::function<absl::Status(const Req&, const Reply&, Resp&)> from_reply) {
  return std::make_shared<internal::TypedUnaryMethod<Req, Resp>>(
      std::move(full_name), std::move(to_args), std::move(from_reply));
}

// A server-streaming typed method whose items are the subtrees at `item_depth`.
template <typename Req, typename Resp>
std::shared_ptr<const TypedMethod> TypedServerStream(
    std::string full_name, std::function<absl::StatusOr<std::vector<Argument>>(const Req&)> to_args,
    int item_depth,
    std::function<absl::Status(const Req&, const Ancestors&, const Node&, Resp&)> add_item) {
  return std::make_shared<internal::TypedStreamMethod<Req, Resp>>(
      std::move(full_name), std::move(to_args), item_depth, std::move(add_item));
}

// Turns the node lines of a streamed reply (a ReplyWriter) into complete items of a
// TypedMethod: each complete item subtree is handed to `on_item` with its ancestors.
// Used by the gRPC transport for server-streaming typed methods; public for tests.
//
// Thread-safety: one assembler per call.
class ItemAssembler final : public ReplyWriter {
 public:
  using OnItem = std::function<void(const Ancestors& ancestors, const Node& item)>;

  ItemAssembler(int item_depth, OnItem on_item)
      : item_depth_(item_depth), on_item_(std::move(on_item)) {}

  void WriteStatus(const Reply& reply) override;
  void WriteNode(const Node& node, int depth) override;
  void EndFlush() override;
  void EndReply() override;

 private:
  void Complete();

  const int item_depth_;
  OnItem on_item_;
  // Copies of the node lines above the item depth, outermost first.
  std::vector<std::unique_ptr<Node>> ancestors_;
  // The item being assembled, and the last node seen at each depth below it.
  std::unique_ptr<Node> item_;
  std::vector<Node*> path_;
};

}  // namespace sipd::mi
