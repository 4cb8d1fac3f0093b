#include "registry/tree.h"

namespace sipd::mi {

Node& Node::AddKid(std::string kid_name, std::string kid_value) {
  kids.push_back(std::make_unique<Node>(std::move(kid_name), std::move(kid_value)));
  return *kids.back();
}

Node& Node::AddAttribute(std::string attr_name, std::string attr_value) {
  attributes.push_back(Attribute{std::move(attr_name), std::move(attr_value)});
  return *this;
}

Node Node::Clone() const {
  Node copy(name, value);
  copy.attributes = attributes;
  copy.is_array = is_array;
  copy.not_completed = not_completed;
  copy.written = written;
  copy.kids.reserve(kids.size());
  for (const auto& kid : kids) copy.kids.push_back(std::make_unique<Node>(kid->Clone()));
  return copy;
}

bool operator==(const Node& a, const Node& b) {
  if (a.name != b.name || a.value != b.value || a.attributes != b.attributes ||
      a.is_array != b.is_array || a.kids.size() != b.kids.size()) {
    return false;
  }
  for (size_t i = 0; i < a.kids.size(); ++i) {
    if (!(*a.kids[i] == *b.kids[i])) return false;
  }
  return true;
}

Reply Reply::Clone() const {
  Reply copy;
  copy.code = code;
  copy.reason = reason;
  copy.text_reason_cut = text_reason_cut;
  copy.bad_arguments = bad_arguments;
  copy.root = root.Clone();
  return copy;
}

bool operator==(const Reply& a, const Reply& b) {
  return a.code == b.code && a.reason == b.reason && a.root == b.root;
}

}  // namespace sipd::mi
