#include "clients/sipctl/live.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "sipd/events/v1/events.grpc.pb.h"

namespace sipd::sipctl {
namespace {

namespace eventsv1 = ::sipd::events::v1;
using google::protobuf::util::TimeUtil;

enum : int { kOk = 0, kRefused = 1, kUsage = 2, kTransport = 3, kNotFound = 4 };

void SetDeadline(const LiveOptions& options, grpc::ClientContext* ctx) {
  if (!options.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options.token);
  if (options.timeout_seconds.has_value() && *options.timeout_seconds > 0) {
    ctx->set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::microseconds(static_cast<int64_t>(*options.timeout_seconds * 1e6)));
  }
}

int Ended(const LiveOptions& options, const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && options.timeout_seconds) {
    return kOk;  // the user asked for that long
  }
  std::fprintf(stderr, "sipctl: %s: %s (gRPC status %d)\n", options.server.c_str(),
               status.ok() ? "the server ended the stream" : status.error_message().c_str(),
               static_cast<int>(status.error_code()));
  switch (status.error_code()) {
    case grpc::StatusCode::NOT_FOUND:
      return kNotFound;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return kUsage;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::FAILED_PRECONDITION:
      return kRefused;
    default:
      return kTransport;
  }
}

std::string Json(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions json;
  json.preserve_proto_field_names = false;
  (void)google::protobuf::util::MessageToJsonString(message, &out, json);
  return out;
}

// "2026-11-29T06:50:01.123Z" (milliseconds).
std::string Time(const google::protobuf::Timestamp& time) {
  const int64_t ms = TimeUtil::TimestampToMilliseconds(time);
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%S", &tm);
  return absl::StrFormat("%s.%03dZ", buffer, static_cast<int>(ms % 1000));
}

// Takes `--name VALUE` from args[*i] (advancing *i); false (with a message) if VALUE is
// missing.
bool TakeValue(const std::vector<std::string>& args, size_t* i, std::string* value) {
  if (*i + 1 >= args.size()) {
    std::fprintf(stderr, "sipctl: %s needs a value\n", args[*i].c_str());
    return false;
  }
  *value = args[++*i];
  return true;
}

}  // namespace

std::optional<int64_t> ParseInterval(const std::string& text) {
  double number = 0;
  double scale = 1000;  // seconds by default
  std::string digits = text;
  if (text.ends_with("ms")) {
    digits = text.substr(0, text.size() - 2);
    scale = 1;
  } else if (text.ends_with("s")) {
    digits = text.substr(0, text.size() - 1);
  } else if (text.ends_with("m")) {
    digits = text.substr(0, text.size() - 1);
    scale = 60000;
  }
  if (digits.empty() || !absl::SimpleAtod(digits, &number) || number < 0) return std::nullopt;
  return static_cast<int64_t>(number * scale + 0.5);
}

int RunSubscribe(const std::shared_ptr<grpc::Channel>& channel, const LiveOptions& options,
                 const std::vector<std::string>& args) {
  eventsv1::SubscribeRequest request;
  uint64_t count = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string value;
    if (args[i] == "--filter") {
      if (!TakeValue(args, &i, &value)) return kUsage;
      const size_t eq = value.find('=');
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "sipctl: --filter takes KEY=VALUE, not '%s'\n", value.c_str());
        return kUsage;
      }
      (*request.mutable_filter())[value.substr(0, eq)] = value.substr(eq + 1);
    } else if (args[i] == "--count") {
      if (!TakeValue(args, &i, &value) || !absl::SimpleAtoi(value, &count) || count == 0) {
        std::fprintf(stderr, "sipctl: --count takes a positive number\n");
        return kUsage;
      }
    } else if (args[i].starts_with("--")) {
      std::fprintf(stderr, "sipctl: subscribe: unknown option '%s'\n", args[i].c_str());
      return kUsage;
    } else {
      request.add_events(args[i]);
    }
  }
  if (request.events().empty()) {
    std::fprintf(stderr, "sipctl: subscribe needs at least one event (sipctl events_list)\n");
    return kUsage;
  }
  auto stub = eventsv1::EventService::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  auto reader = stub->Subscribe(&ctx, request);
  eventsv1::SubscribeResponse response;
  uint64_t seen = 0;
  while (reader->Read(&response)) {
    if (response.dropped() > 0) {
      std::fprintf(stderr, "sipctl: %llu event(s) lost: sipctl read too slowly (%llu in all)\n",
                   static_cast<unsigned long long>(response.dropped()),
                   static_cast<unsigned long long>(response.total_dropped()));
    }
    std::string out;
    for (const eventsv1::Event& event : response.events()) {
      if (options.json) {
        out += Json(event);
      } else {
        absl::StrAppend(&out, Time(event.time()), " ", event.name(), " seq=", event.seq());
        // Sorted: the map's order is not stable.
        const std::map<std::string, std::string> params(event.params().begin(),
                                                        event.params().end());
        for (const auto& [key, value] : params) absl::StrAppend(&out, " ", key, "=", value);
      }
      out += "\n";
      if (count > 0 && ++seen >= count) break;
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    if (count > 0 && seen >= count) {
      ctx.TryCancel();
      reader->Finish();
      return kOk;
    }
  }
  return Ended(options, reader->Finish());
}

int RunWatch(const std::shared_ptr<grpc::Channel>& channel, const LiveOptions& options,
             const std::vector<std::string>& args) {
  eventsv1::WatchStatisticsRequest request;
  uint64_t count = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string value;
    if (args[i] == "--interval") {
      if (!TakeValue(args, &i, &value)) return kUsage;
      const std::optional<int64_t> ms = ParseInterval(value);
      if (!ms.has_value()) {
        std::fprintf(stderr, "sipctl: --interval takes e.g. 1s, 500ms, 2m, not '%s'\n",
                     value.c_str());
        return kUsage;
      }
      *request.mutable_interval() = TimeUtil::MillisecondsToDuration(*ms);
    } else if (args[i] == "--on-change") {
      request.set_on_change(true);
    } else if (args[i] == "--count") {
      if (!TakeValue(args, &i, &value) || !absl::SimpleAtoi(value, &count) || count == 0) {
        std::fprintf(stderr, "sipctl: --count takes a positive number\n");
        return kUsage;
      }
    } else if (args[i].starts_with("--")) {
      std::fprintf(stderr, "sipctl: watch: unknown option '%s'\n", args[i].c_str());
      return kUsage;
    } else {
      request.add_names(args[i]);
    }
  }
  const bool table = !options.json && isatty(STDOUT_FILENO) == 1;
  auto stub = eventsv1::EventService::NewStub(channel);
  grpc::ClientContext ctx;
  SetDeadline(options, &ctx);
  auto reader = stub->WatchStatistics(&ctx, request);
  eventsv1::WatchStatisticsResponse response;
  // The table keeps every statistic's last line (on_change sends only changes).
  std::vector<std::string> order;
  std::map<std::string, eventsv1::StatisticSample> last;
  uint64_t seen = 0;
  while (reader->Read(&response)) {
    std::string out;
    if (options.json) {
      out = Json(response) + "\n";
    } else if (!table) {
      const std::string time = Time(response.time());
      for (const auto& s : response.statistics()) {
        absl::StrAppend(&out, time, " ", s.group(), ":", s.name(), " ", s.value());
        if (s.kind() == eventsv1::StatisticSample::KIND_COUNTER) {
          absl::StrAppend(&out, " ", s.delta() >= 0 ? "+" : "", s.delta(),
                          absl::StrFormat(" %.1f/s", s.rate_per_second()));
        }
        out += "\n";
      }
    } else {
      for (const auto& s : response.statistics()) {
        const std::string name = absl::StrCat(s.group(), ":", s.name());
        if (!last.contains(name)) order.push_back(name);
        last[name] = s;
      }
      size_t width = 9;
      for (const std::string& name : order) width = std::max(width, name.size());
      // Home, clear, then the table.
      out = "\033[H\033[2J";
      absl::StrAppend(&out, "sipd ", options.server, "  ", Time(response.time()), "  sample ",
                      response.seq(), "\n\n");
      absl::StrAppend(&out, absl::StrFormat("%-*s %15s %10s %12s\n", static_cast<int>(width),
                                            "STATISTIC", "VALUE", "CHANGE", "RATE/s"));
      for (const std::string& name : order) {
        const eventsv1::StatisticSample& s = last[name];
        if (s.kind() == eventsv1::StatisticSample::KIND_COUNTER) {
          absl::StrAppend(&out, absl::StrFormat("%-*s %15d %+10d %12.1f\n", static_cast<int>(width),
                                                name, s.value(), s.delta(), s.rate_per_second()));
        } else {
          absl::StrAppend(&out, absl::StrFormat("%-*s %15d %10s %12s\n", static_cast<int>(width),
                                                name, s.value(), "", ""));
        }
      }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    if (count > 0 && ++seen >= count) {
      ctx.TryCancel();
      reader->Finish();
      return kOk;
    }
  }
  return Ended(options, reader->Finish());
}

}  // namespace sipd::sipctl
