#include "registry/command.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "registry/statistics.h"
#include "registry/typed_method.h"

namespace sipd::mi {

absl::StatusOr<AsyncTicket> Call::GoAsync() {
  if (!command_.has_flag(kAsync)) {
    return absl::UnimplementedError(
        absl::StrCat("command '", command_.name(), "' is not declared async"));
  }
  if (ticket_.has_value()) return *ticket_;
  if (!context_.can_wait_async || async_ == nullptr) {
    async_refused_ = true;
    return absl::FailedPreconditionError("the transport cannot wait for an async reply");
  }
  absl::StatusOr<AsyncTicket> ticket = async_->Reserve();
  if (ticket.ok()) ticket_ = *ticket;
  return ticket;
}

namespace {

class FunctionProducer final : public ReplyProducer {
 public:
  explicit FunctionProducer(std::function<absl::StatusOr<bool>(Call&)> next)
      : next_(std::move(next)) {}
  absl::StatusOr<bool> Next(Call& call) override { return next_(call); }

 private:
  std::function<absl::StatusOr<bool>(Call&)> next_;
};

}  // namespace

std::unique_ptr<ReplyProducer> MakeProducer(std::function<absl::StatusOr<bool>(Call&)> next) {
  return std::make_unique<FunctionProducer>(std::move(next));
}

void Command::CountCall(bool error, uint64_t micros) const {
  figures_.calls->fetch_add(1, std::memory_order_relaxed);
  if (error) figures_.errors->fetch_add(1, std::memory_order_relaxed);
  figures_.time_us->fetch_add(micros, std::memory_order_relaxed);
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
  for (size_t i = 0; i < spec.typed.size(); ++i) {
    const TypedMethod* method = spec.typed[i].get();
    if (method == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("MI command '", spec.name, "': typed method ", i, " is null"));
    }
    if (absl::Status checked = method->Check(); !checked.ok()) return checked;
    bool repeated = typed_by_path_.contains(method->path());
    for (size_t j = 0; j < i; ++j) repeated |= spec.typed[j]->path() == method->path();
    if (repeated) {
      return absl::AlreadyExistsError(
          absl::StrCat("typed method ", method->full_name(), " is already declared"));
    }
  }
  commands_.push_back(std::make_unique<Command>(std::move(spec)));
  const Command* command = commands_.back().get();
  by_name_.emplace(command->name(), command);
  for (const auto& method : command->spec().typed) {
    const TypedBinding binding{command, method.get()};
    typed_.push_back(binding);
    typed_by_path_.emplace(method->path(), binding);
  }
  return absl::OkStatus();
}

std::optional<TypedBinding> Registry::FindTyped(std::string_view path) const {
  auto it = typed_by_path_.find(absl::string_view(path.data(), path.size()));
  if (it == typed_by_path_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Registry::typed_services() const {
  std::vector<std::string> services;
  for (const TypedBinding& binding : typed_) {
    const std::string& service = binding.method->service();
    if (std::find(services.begin(), services.end(), service) == services.end()) {
      services.push_back(service);
    }
  }
  return services;
}

absl::Status Registry::AddHealthCheck(HealthCheck check) {
  if (check.name.empty() || !check.check) {
    return absl::InvalidArgumentError("health check without a name or a function");
  }
  health_checks_.push_back(std::move(check));
  return absl::OkStatus();
}

absl::Status Registry::UseFigureCells(StatsRegistry& stats) {
  stats.AddGroup("mi");
  for (auto& command : commands_) {
    std::atomic<uint64_t>* cells[3];
    const char* suffixes[3] = {"_calls", "_errors", "_time_us"};
    for (int i = 0; i < 3; ++i) {
      absl::StatusOr<Counter> counter =
          stats.AddCounter("mi", absl::StrCat(command->name(), suffixes[i]));
      if (!counter.ok()) return counter.status();
      cells[i] = counter->cell();
      cells[i]->store(command->local_cells_[i].load());
    }
    command->figures_ = Command::Figures{cells[0], cells[1], cells[2]};
  }
  return absl::OkStatus();
}

const Command* Registry::Find(std::string_view name) const {
  auto it = by_name_.find(absl::string_view(name.data(), name.size()));
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace sipd::mi
