#include "registry/typed_method.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"

namespace sipd::mi {
namespace {

// The absl::Status payload that carries a FieldError's field name.
constexpr char kFieldPayload[] = "sipd.mi.field";

std::string DescribeKind(TypedMethod::Kind kind) {
  return kind == TypedMethod::Kind::kUnary ? "unary" : "server streaming";
}

}  // namespace

absl::Status FieldError(std::string_view field, std::string_view description) {
  const absl::string_view name(field.data(), field.size());
  absl::Status status = absl::InvalidArgumentError(
      absl::StrCat(name, ": ", absl::string_view(description.data(), description.size())));
  status.SetPayload(kFieldPayload, absl::Cord(name));
  return status;
}

std::string FieldOfError(const absl::Status& status) {
  const absl::optional<absl::Cord> field = status.GetPayload(kFieldPayload);
  return field.has_value() ? std::string(*field) : std::string();
}

std::vector<Argument> Arguments(std::vector<std::string> values) {
  std::vector<Argument> out;
  out.reserve(values.size());
  for (auto& v : values) out.push_back(Argument{"", std::move(v)});
  return out;
}

TypedMethod::TypedMethod(std::string full_name, Kind kind, int item_depth)
    : full_name_(std::move(full_name)), kind_(kind), item_depth_(item_depth) {
  const size_t dot = full_name_.rfind('.');
  if (dot != std::string::npos) {
    service_ = full_name_.substr(0, dot);
    path_ = absl::StrCat("/", service_, "/", full_name_.substr(dot + 1));
  }
}

absl::Status TypedMethod::FromReply(const google::protobuf::Message&, const Reply&,
                                    google::protobuf::Message&) const {
  return absl::UnimplementedError(absl::StrCat(full_name_, " is not unary"));
}

absl::Status TypedMethod::AddItem(const google::protobuf::Message&, const Ancestors&, const Node&,
                                  google::protobuf::Message&) const {
  return absl::UnimplementedError(absl::StrCat(full_name_, " is not server streaming"));
}

absl::Status TypedMethod::Check() const {
  const google::protobuf::MethodDescriptor* method =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(full_name_);
  if (method == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("typed method ", full_name_, ": no such method in the generated protos"));
  }
  const std::unique_ptr<google::protobuf::Message> request = NewRequest();
  const std::unique_ptr<google::protobuf::Message> response = NewResponse();
  if (method->input_type() != request->GetDescriptor()) {
    return absl::InvalidArgumentError(absl::StrCat("typed method ", full_name_, " takes ",
                                                   method->input_type()->full_name(), ", not ",
                                                   request->GetDescriptor()->full_name()));
  }
  if (method->output_type() != response->GetDescriptor()) {
    return absl::InvalidArgumentError(absl::StrCat("typed method ", full_name_, " returns ",
                                                   method->output_type()->full_name(), ", not ",
                                                   response->GetDescriptor()->full_name()));
  }
  const Kind declared = method->server_streaming() ? Kind::kServerStream : Kind::kUnary;
  if (method->client_streaming() || declared != kind_) {
    return absl::InvalidArgumentError(
        absl::StrCat("typed method ", full_name_, " is ",
                     method->client_streaming() ? "client streaming" : DescribeKind(declared),
                     " in its proto, declared ", DescribeKind(kind_)));
  }
  if (kind_ == Kind::kServerStream && item_depth_ < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("typed method ", full_name_, ": negative item depth"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// ItemAssembler

void ItemAssembler::WriteStatus(const Reply&) {}

void ItemAssembler::WriteNode(const Node& node, int depth) {
  auto line = std::make_unique<Node>(node.name, node.value);
  line->attributes = node.attributes;
  line->is_array = node.is_array;
  line->not_completed = node.not_completed;
  if (depth < item_depth_) {
    Complete();
    ancestors_.resize(static_cast<size_t>(depth));
    ancestors_.push_back(std::move(line));
    return;
  }
  if (depth == item_depth_) {
    Complete();
    // An item needs all its ancestors; a reply whose shape skips a level has none here.
    if (ancestors_.size() != static_cast<size_t>(item_depth_)) return;
    item_ = std::move(line);
    path_.assign(1, item_.get());
    return;
  }
  const size_t level = static_cast<size_t>(depth - item_depth_);
  if (item_ == nullptr || level > path_.size()) return;  // not below an item: ignored
  Node& parent = *path_[level - 1];
  parent.kids.push_back(std::move(line));
  path_.resize(level);
  path_.push_back(parent.kids.back().get());
}

void ItemAssembler::EndFlush() {
  // A flushed node that is not marked not_completed never gets more kids (spec 1.7).
  if (item_ != nullptr && !item_->not_completed) Complete();
}

void ItemAssembler::EndReply() { Complete(); }

void ItemAssembler::Complete() {
  if (item_ == nullptr) return;
  Ancestors ancestors;
  ancestors.reserve(ancestors_.size());
  for (const auto& a : ancestors_) ancestors.push_back(a.get());
  on_item_(ancestors, *item_);
  item_.reset();
  path_.clear();
}

}  // namespace sipd::mi
