#include "registry/dispatch.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sipd::mi {

DispatchResult Dispatch(const Registry& registry, const Request& request, ReplyWriter* writer) {
  DispatchResult result;
  const Command* command = registry.Find(request.command);
  if (command == nullptr) {
    spdlog::debug("MI: command '{}' not available", request.command);
    result.outcome = Outcome::kNotAvailable;
    result.reply = Reply::Error(500, absl::StrCat("command '", request.command, "' not available"));
    return result;
  }
  command->CountCall();

  static const std::vector<Argument> kNoArgs;
  const bool no_input = command->has_flag(kNoInput);
  const std::vector<Argument>& args = no_input ? kNoArgs : request.args;
  spdlog::debug("MI: running '{}' with {} argument(s)", command->name(), args.size());

  if (!no_input && (args.size() < command->min_args() || args.size() > command->max_args())) {
    const auto& spec = command->spec();
    result.reply = Reply::Error(spec.arg_error_code, args.size() < command->min_args()
                                                         ? spec.too_few_reason
                                                         : spec.too_many_reason);
  } else {
    Call call(*command, args, writer);
    absl::Status status;
    try {
      status = command->spec().handler(call);
    } catch (const std::exception& e) {
      spdlog::error("MI: command '{}' threw: {}", command->name(), e.what());
      status = absl::OkStatus();
      call.reply() = Reply::Error(500, kReasonInternalError);
    } catch (...) {
      spdlog::error("MI: command '{}' threw an unknown exception", command->name());
      status = absl::OkStatus();
      call.reply() = Reply::Error(500, kReasonInternalError);
    }
    if (!status.ok()) {
      spdlog::warn("MI: command '{}' failed: {}", command->name(), status.ToString());
      result.outcome = Outcome::kFailed;
      result.reply = Reply::Error(500, absl::StrCat("command '", command->name(), "' failed"));
      return result;
    }
    result.reply = std::move(call.reply());
  }
  if (writer != nullptr) FinishReply(result.reply, *writer);
  return result;
}

}  // namespace sipd::mi
