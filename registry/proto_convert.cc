#include "registry/proto_convert.h"

#include "absl/strings/str_cat.h"

namespace sipd::mi {
namespace {

template <typename AttrList>
void CopyAttributes(const std::vector<Attribute>& in, AttrList* out) {
  for (const auto& a : in) {
    auto* pa = out->Add();
    pa->set_name(a.name);
    pa->set_value(a.value);
  }
}

template <typename AttrList>
std::vector<Attribute> AttributesFrom(const AttrList& in) {
  std::vector<Attribute> out;
  out.reserve(in.size());
  for (const auto& a : in) out.push_back(Attribute{a.name(), a.value()});
  return out;
}

}  // namespace

void ToProto(const Node& node, v1::Node* out) {
  out->set_name(node.name);
  out->set_value(node.value);
  out->set_is_array(node.is_array);
  CopyAttributes(node.attributes, out->mutable_attributes());
  for (const auto& kid : node.kids) ToProto(*kid, out->add_kids());
}

Node FromProto(const v1::Node& node) {
  Node out(node.name(), node.value());
  out.is_array = node.is_array();
  out.attributes = AttributesFrom(node.attributes());
  out.kids.reserve(node.kids_size());
  for (const auto& kid : node.kids()) out.kids.push_back(std::make_unique<Node>(FromProto(kid)));
  return out;
}

v1::Reply ToProto(const Reply& reply) {
  v1::Reply out;
  out.set_code(reply.code);
  out.set_reason(reply.reason);
  out.set_is_array(reply.root.is_array);
  for (const auto& kid : reply.root.kids) ToProto(*kid, out.add_nodes());
  return out;
}

Reply FromProto(const v1::Reply& reply) {
  Reply out;
  out.code = reply.code();
  out.reason = reply.reason();
  out.root.is_array = reply.is_array();
  for (const auto& n : reply.nodes()) out.root.kids.push_back(std::make_unique<Node>(FromProto(n)));
  return out;
}

Request FromProto(const v1::ExecuteRequest& request) {
  Request out;
  out.command = request.command();
  out.args.reserve(request.params_size() + request.args_size());
  for (const auto& p : request.params()) out.args.push_back(Argument{"", p});
  for (const auto& a : request.args()) out.args.push_back(Argument{a.name(), a.value()});
  return out;
}

v1::ExecuteRequest ToProto(const Request& request) {
  v1::ExecuteRequest out;
  out.set_command(request.command);
  for (const auto& a : request.args) {
    if (a.name.empty()) {
      out.add_params(a.value);
    } else {
      auto* pa = out.add_args();
      pa->set_name(a.name);
      pa->set_value(a.value);
    }
  }
  return out;
}

v1::CommandInfo ToProto(const Command& command) {
  v1::CommandInfo out;
  out.set_name(command.name());
  out.set_module(command.module());
  out.set_help(command.help());
  for (const auto& p : command.params()) {
    auto* pp = out.add_parameters();
    pp->set_name(p.name);
    pp->set_help(p.help);
    switch (p.arity) {
      case ParamSpec::Arity::kRequired:
        pp->set_arity(v1::ParameterInfo::REQUIRED);
        break;
      case ParamSpec::Arity::kOptional:
        pp->set_arity(v1::ParameterInfo::OPTIONAL);
        break;
      case ParamSpec::Arity::kRepeated:
        pp->set_arity(v1::ParameterInfo::REPEATED);
        break;
    }
  }
  out.set_no_input(command.has_flag(kNoInput));
  out.set_mutating(command.has_flag(kMutating));
  out.set_async(command.has_flag(kAsync));
  out.set_streaming(command.has_flag(kStreaming));
  out.set_calls(command.calls());
  return out;
}

void ToFlatNode(const Node& node, int depth, v1::FlatNode* out) {
  out->set_depth(static_cast<uint32_t>(depth));
  out->set_name(node.name);
  out->set_value(node.value);
  out->set_is_array(node.is_array);
  CopyAttributes(node.attributes, out->mutable_attributes());
}

absl::Status ChunkAssembler::Add(const v1::ReplyChunk& chunk) {
  if (chunk.has_status()) {
    reply_.code = chunk.code();
    reply_.reason = chunk.reason();
    reply_.root.is_array = chunk.is_array();
    have_status_ = true;
  }
  if (!have_status_) return absl::InvalidArgumentError("reply chunk before the status");
  for (const auto& flat : chunk.nodes()) {
    const size_t depth = flat.depth();
    if (depth > stack_.size()) {
      return absl::InvalidArgumentError(absl::StrCat("node at depth ", depth, " after depth ",
                                                     static_cast<int>(stack_.size()) - 1));
    }
    Node& parent = depth == 0 ? reply_.root : *stack_[depth - 1];
    Node& node = parent.AddKid(flat.name(), flat.value());
    node.is_array = flat.is_array();
    node.attributes = AttributesFrom(flat.attributes());
    stack_.resize(depth);
    stack_.push_back(&node);
  }
  return absl::OkStatus();
}

}  // namespace sipd::mi
