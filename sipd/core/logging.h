// Logging for every sipd process: spdlog to stderr with time, level, pid and the
// process type (the `ps` Type of the process that logs).
//
// OpenSIPS log levels map to spdlog levels as follows:
//   <= -2 (alert, crit) -> critical   -1 (error) -> err   0..1 (warn) -> warn
//   2..3 (notice, info) -> info        4 (debug) -> debug  >= 5 -> trace
//
// Thread-safety: call InitLogging/SetLogProcessType from the process's main thread
// before starting threads (spdlog's registry is per process after fork).
#pragma once

#include <string_view>

#include "spdlog/common.h"

namespace sipd {

spdlog::level::level_enum SpdlogLevel(int opensips_level);

// Installs the stderr logger as spdlog's default, at `opensips_level`.
void InitLogging(int opensips_level, std::string_view process_type);

// Changes the process type shown in every following line (after fork).
void SetLogProcessType(std::string_view process_type);

// Applies an OpenSIPS level to this process.
void ApplyLogLevel(int opensips_level);

// Routes libosip2's own traces to spdlog at trace level (they would otherwise be
// printed to stderr for every malformed datagram).
void RouteOsipTraces();

}  // namespace sipd
