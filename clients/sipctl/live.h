// sipctl's live commands on sipd.events.v1.EventService (clients/sipctl/README.md):
//
//   sipctl subscribe [--filter KEY=VALUE]... [--count N] EVENT...
//       one line per event as it comes: `TIME NAME seq=N KEY=VALUE...` (--json: the
//       sipd.events.v1.Event as one JSON line); lost events are reported on stderr;
//   sipctl watch [--interval 1s] [--on-change] [--count N] [NAME...]
//       a live table (statistic, value, change, rate per second) redrawn at each sample
//       when stdout is a terminal; otherwise one line per statistic per sample:
//       `TIME group:name VALUE` (+ ` DELTA RATE/s` for counters); --json: the
//       WatchStatisticsResponse as one JSON line per sample.
//
// Both run until interrupted (or --count messages, or the --timeout the user gave).
// Exit codes as sipctl's: 0 (--count reached), 2 (usage, INVALID_ARGUMENT), 3
// (transport, the server ended the stream), 4 (NOT_FOUND: no such event or statistic),
// 1 (any other refusal, e.g. PERMISSION_DENIED).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"

namespace sipd::sipctl {

struct LiveOptions {
  bool json = false;
  // Seconds; nullopt = no deadline (the default for streams).
  std::optional<double> timeout_seconds;
  std::string server;  // for messages
  // Bearer token sent with the call (sipctl's --token, --token-file, $SIPCTL_TOKEN or the
  // local admin token); empty: none.
  std::string token;
};

int RunSubscribe(const std::shared_ptr<grpc::Channel>& channel, const LiveOptions& options,
                 const std::vector<std::string>& args);
int RunWatch(const std::shared_ptr<grpc::Channel>& channel, const LiveOptions& options,
             const std::vector<std::string>& args);

// "1s", "500ms", "2.5s", "1m", or a bare number of seconds -> milliseconds; nullopt if
// it is none of these.
std::optional<int64_t> ParseInterval(const std::string& text);

}  // namespace sipd::sipctl
