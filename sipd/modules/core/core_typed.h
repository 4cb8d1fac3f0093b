// The typed face of the core MI commands: sipd.core.v1.CoreService
// (proto/sipd/core/v1/core.proto). Each function returns the typed method declared on
// one command by RegisterCoreCommands() (registry/typed_method.h): the conversion between
// the typed messages and the command's arguments and reply tree, nothing else.
#pragma once

#include <memory>

#include "registry/command.h"

namespace sipd {

// `ps`: Process nodes -> Process{id, pid, type}, the type without 1.11's trailing space
// (the MI text keeps it, spec 10.1).
std::shared_ptr<const mi::TypedMethod> ListProcessesMethod();
// `uptime`: the ctime texts (local time) -> timestamps, "N [sec]" -> uptime_seconds.
std::shared_ptr<const mi::TypedMethod> GetUptimeMethod();
// `version`: "sipd (VERSION (ARCH/OS))" -> its parts.
std::shared_ptr<const mi::TypedMethod> GetVersionMethod();
// `debug` without and with a level.
std::shared_ptr<const mi::TypedMethod> GetLogLevelMethod();
std::shared_ptr<const mi::TypedMethod> SetLogLevelMethod();
// `which`: each name -> its CommandInfo from `registry` (which must outlive the method).
std::shared_ptr<const mi::TypedMethod> ListCommandsMethod(const mi::Registry& registry);

}  // namespace sipd
