#include "registry/command.h"

#include "absl/strings/str_cat.h"
#include "registry/reply_writer.h"

namespace sipd::mi {

void Call::Flush() {
  if (writer_ == nullptr) return;
  FlushReply(reply_, *writer_);
  writer_->EndFlush();
}

Command::Command(Spec spec) : spec_(std::move(spec)) {
  for (const auto& p : spec_.params) {
    switch (p.arity) {
      case ParamSpec::Arity::kRequired:
        ++min_args_;
        ++max_args_;
        break;
      case ParamSpec::Arity::kOptional:
        ++max_args_;
        break;
      case ParamSpec::Arity::kRepeated:
        max_args_ = std::numeric_limits<size_t>::max();
        break;
    }
    if (max_args_ == std::numeric_limits<size_t>::max()) break;
  }
}

absl::Status Registry::Register(Command::Spec spec) {
  if (spec.name.empty()) return absl::InvalidArgumentError("MI command with an empty name");
  if (!spec.handler) {
    return absl::InvalidArgumentError(absl::StrCat("MI command '", spec.name, "' has no handler"));
  }
  if (by_name_.contains(spec.name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("MI command '", spec.name, "' is already registered"));
  }
  commands_.push_back(std::make_unique<Command>(std::move(spec)));
  by_name_.emplace(commands_.back()->name(), commands_.back().get());
  return absl::OkStatus();
}

const Command* Registry::Find(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace sipd::mi
