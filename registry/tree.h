// The MI reply tree (spec section 1.3/1.4).
//
// A Reply has a code, a reason and a root node whose kids are the top-level nodes.
// A Node has an optional name, an optional value, ordered attributes and ordered kids.
// An empty string means "absent": MI does not distinguish the two.
//
// References returned by AddKid() stay valid until the kid is removed (kids are held
// by unique_ptr), so handlers may keep a Node& to a parent while adding siblings.
//
// Thread-safety: a tree is owned by one handler invocation; no internal locking.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sipd::mi {

struct Attribute {
  std::string name;
  std::string value;
  friend bool operator==(const Attribute&, const Attribute&) = default;
};

class Node {
 public:
  Node() = default;
  Node(std::string name, std::string value) : name(std::move(name)), value(std::move(value)) {}
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  Node(Node&&) = default;
  Node& operator=(Node&&) = default;

  // Appends a kid and returns it. The reference is stable (see file comment).
  Node& AddKid(std::string kid_name, std::string kid_value = {});
  // Appends an attribute; returns *this so calls chain.
  Node& AddAttribute(std::string attr_name, std::string attr_value);

  // Deep copy (flush state included).
  Node Clone() const;

  std::string name;
  std::string value;
  std::vector<Attribute> attributes;
  std::vector<std::unique_ptr<Node>> kids;
  // MI_IS_ARRAY: kids are same-named items (JSON/protobuf hint only).
  bool is_array = false;
  // MI_NOT_COMPLETED: more kids will still be appended; a flush stops here.
  bool not_completed = false;
  // MI_WRITTEN: this node's own line was already sent by a flush.
  bool written = false;
};

// Deep structural equality: name, value, attributes, kids, is_array. Flush state
// (not_completed, written) is not part of the value.
bool operator==(const Node& a, const Node& b);

// Standard reason texts (spec 1.3).
inline constexpr std::string_view kReasonOk = "OK";
inline constexpr std::string_view kReasonInternalError = "Server Internal Error";
inline constexpr std::string_view kReasonBadArgCount = "Too few or too many arguments";
inline constexpr std::string_view kReasonBadParameter = "Bad parameter";

// One argument a command refused (see Reply::bad_arguments).
struct ArgumentProblem {
  // The parameter's declared name (ParamSpec::name); empty when no single one is at fault.
  std::string argument;
  std::string description;
  friend bool operator==(const ArgumentProblem&, const ArgumentProblem&) = default;
};

struct Reply {
  uint32_t code = 200;
  std::string reason = std::string(kReasonOk);
  // root.kids are the top-level nodes; root.is_array is the root's array flag;
  // root.written means the status line was sent.
  Node root;

  // OpenSIPS 1.11 passes three reasons with a length one short (spec 1.3), so FIFO and
  // datagram print them truncated while XML-RPC prints the full text. `reason` is always
  // the full text; text transports print text_reason(), which drops the last
  // `text_reason_cut` bytes.
  size_t text_reason_cut = 0;

  // The reply refuses the request's arguments (missing, extra, malformed), whatever its
  // code says: 1.11's cache_* commands answer a missing argument with 404 (spec 6). gRPC
  // then answers INVALID_ARGUMENT with a google.rpc.BadRequest listing these; the text
  // transports ignore it. The dispatcher's argument-count check sets it. Not part of
  // the reply's value (operator==).
  std::vector<ArgumentProblem> bad_arguments;
  std::string_view text_reason() const {
    std::string_view r = reason;
    return r.substr(0, r.size() - std::min(text_reason_cut, r.size()));
  }

  static Reply Ok() { return Reply{}; }
  static Reply Error(uint32_t code, std::string_view reason) {
    Reply r;
    r.code = code;
    r.reason = std::string(reason);
    return r;
  }
  // An error whose reason 1.11's text transports truncate by `cut` bytes (spec 1.3).
  static Reply ErrorTruncatedOnText(uint32_t code, std::string_view reason, size_t cut) {
    Reply r = Error(code, reason);
    r.text_reason_cut = cut;
    return r;
  }
  bool is_success() const { return code >= 200 && code < 300; }
  Reply Clone() const;
};

bool operator==(const Reply& a, const Reply& b);

}  // namespace sipd::mi
