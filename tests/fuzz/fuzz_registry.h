// A small MI registry for the transport fuzz targets: a command without input, one with
// repeated arguments echoed into the reply tree, one with two required parameters (the
// argument checks), and one that fails.
#pragma once

#include <memory>

#include "registry/command.h"
#include "spdlog/spdlog.h"

namespace sipd::fuzz {

inline std::unique_ptr<mi::Registry> NewFuzzRegistry() {
  spdlog::set_level(spdlog::level::off);
  auto registry = std::make_unique<mi::Registry>();
  using mi::Call;
  using mi::ParamSpec;
  (void)registry->Register(
      {.name = "version", .module = "fuzz", .flags = mi::kNoInput, .handler = [](Call& call) {
         call.reply().root.AddKid("Server", "sipd");
         return absl::OkStatus();
       }});
  (void)registry->Register({.name = "echo",
                            .module = "fuzz",
                            .params = {{"arg", ParamSpec::Arity::kRepeated, ""}},
                            .handler = [](Call& call) {
                              for (const auto& arg : call.args()) {
                                call.reply().root.AddKid(arg.name, arg.value);
                              }
                              return absl::OkStatus();
                            }});
  (void)registry->Register(
      {.name = "two",
       .module = "fuzz",
       .params = {{"a", ParamSpec::Arity::kRequired, ""}, {"b", ParamSpec::Arity::kRequired, ""}},
       .handler = [](Call& call) {
         call.reply().root.AddKid(call.arg(0), call.arg(1));
         return absl::OkStatus();
       }});
  (void)registry->Register({.name = "fail", .module = "fuzz", .handler = [](Call&) {
                              return absl::InternalError("fails");
                            }});
  return registry;
}

}  // namespace sipd::fuzz
