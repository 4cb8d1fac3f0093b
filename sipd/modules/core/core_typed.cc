#include "sipd/modules/core/core_typed.h"

#include <time.h>

#include <cstdint>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "registry/proto_convert.h"
#include "registry/typed_method.h"
#include "sipd/core/v1/core.pb.h"

namespace sipd {
namespace {

namespace corev1 = ::sipd::core::v1;
using mi::Reply;

constexpr char kService[] = "sipd.core.v1.CoreService.";

std::string Method(std::string_view name) {
  return absl::StrCat(kService, absl::string_view(name.data(), name.size()));
}

absl::Status Malformed(std::string_view command, std::string_view what) {
  return absl::InternalError(absl::StrCat(absl::string_view(command.data(), command.size()),
                                          " reply: ", absl::string_view(what.data(), what.size())));
}

const mi::Node* Kid(const Reply& reply, std::string_view name) {
  for (const auto& kid : reply.root.kids) {
    if (kid->name == name) return kid.get();
  }
  return nullptr;
}

// A ctime() text in local time ("Tue Jun  3 16:22:20 2014") as unix seconds.
absl::StatusOr<int64_t> ParseCtime(const std::string& text) {
  struct tm parts {};
  const char* end = strptime(text.c_str(), "%a %b %d %H:%M:%S %Y", &parts);
  if (end == nullptr || *end != '\0') return Malformed("uptime", text);
  parts.tm_isdst = -1;
  const time_t seconds = mktime(&parts);
  if (seconds == static_cast<time_t>(-1)) return Malformed("uptime", text);
  return static_cast<int64_t>(seconds);
}

absl::Status FromDebug(const Reply& reply, int32_t* level) {
  const mi::Node* node = Kid(reply, "DEBUG");
  if (node == nullptr || !absl::SimpleAtoi(node->value, level)) {
    return Malformed("debug", node == nullptr ? "no DEBUG node" : node->value);
  }
  return absl::OkStatus();
}

}  // namespace

std::shared_ptr<const mi::TypedMethod> ListProcessesMethod() {
  return mi::TypedUnary<corev1::ListProcessesRequest, corev1::ListProcessesResponse>(
      Method("ListProcesses"),
      [](const corev1::ListProcessesRequest&) { return mi::NoArguments(); },
      [](const corev1::ListProcessesRequest&, const Reply& reply,
         corev1::ListProcessesResponse& out) -> absl::Status {
        for (const auto& node : reply.root.kids) {
          corev1::Process* process = out.add_processes();
          bool have_id = false;
          for (const mi::Attribute& attr : node->attributes) {
            if (attr.name == "ID") {
              uint32_t id = 0;
              have_id = absl::SimpleAtoi(attr.value, &id);
              process->set_id(id);
            } else if (attr.name == "PID") {
              int32_t pid = 0;
              if (!absl::SimpleAtoi(attr.value, &pid)) return Malformed("ps", attr.value);
              process->set_pid(pid);
            } else if (attr.name == "Type") {
              process->set_type(std::string(absl::StripAsciiWhitespace(attr.value)));
            }
          }
          if (!have_id) return Malformed("ps", "a Process without ID");
        }
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> GetUptimeMethod() {
  return mi::TypedUnary<corev1::GetUptimeRequest, corev1::GetUptimeResponse>(
      Method("GetUptime"), [](const corev1::GetUptimeRequest&) { return mi::NoArguments(); },
      [](const corev1::GetUptimeRequest&, const Reply& reply,
         corev1::GetUptimeResponse& out) -> absl::Status {
        const mi::Node* now = Kid(reply, "Now");
        const mi::Node* since = Kid(reply, "Up since");
        const mi::Node* up = Kid(reply, "Up time");
        if (now == nullptr || since == nullptr || up == nullptr) {
          return Malformed("uptime", "missing Now, Up since or Up time");
        }
        absl::StatusOr<int64_t> now_seconds = ParseCtime(now->value);
        if (!now_seconds.ok()) return now_seconds.status();
        absl::StatusOr<int64_t> since_seconds = ParseCtime(since->value);
        if (!since_seconds.ok()) return since_seconds.status();
        int64_t seconds = 0;
        if (!absl::SimpleAtoi(absl::StripSuffix(up->value, " [sec]"), &seconds)) {
          return Malformed("uptime", up->value);
        }
        out.mutable_now()->set_seconds(*now_seconds);
        out.mutable_up_since()->set_seconds(*since_seconds);
        out.set_uptime_seconds(seconds);
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> GetVersionMethod() {
  return mi::TypedUnary<corev1::GetVersionRequest, corev1::GetVersionResponse>(
      Method("GetVersion"), [](const corev1::GetVersionRequest&) { return mi::NoArguments(); },
      [](const corev1::GetVersionRequest&, const Reply& reply,
         corev1::GetVersionResponse& out) -> absl::Status {
        const mi::Node* server = Kid(reply, "Server");
        if (server == nullptr) return Malformed("version", "no Server node");
        out.set_server(server->value);
        // "NAME (VERSION (ARCH/OS))"
        const std::string& text = server->value;
        const size_t open = text.find(" (");
        const size_t inner = open == std::string::npos ? open : text.find(" (", open + 2);
        const size_t slash = inner == std::string::npos ? inner : text.find('/', inner);
        if (slash == std::string::npos || !absl::EndsWith(text, "))")) {
          return Malformed("version", text);
        }
        out.set_version(text.substr(open + 2, inner - open - 2));
        out.set_arch(text.substr(inner + 2, slash - inner - 2));
        out.set_os(text.substr(slash + 1, text.size() - 2 - slash - 1));
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> GetLogLevelMethod() {
  return mi::TypedUnary<corev1::GetLogLevelRequest, corev1::GetLogLevelResponse>(
      Method("GetLogLevel"), [](const corev1::GetLogLevelRequest&) { return mi::NoArguments(); },
      [](const corev1::GetLogLevelRequest&, const Reply& reply,
         corev1::GetLogLevelResponse& out) -> absl::Status {
        int32_t level = 0;
        if (absl::Status s = FromDebug(reply, &level); !s.ok()) return s;
        out.set_level(level);
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> SetLogLevelMethod() {
  return mi::TypedUnary<corev1::SetLogLevelRequest, corev1::SetLogLevelResponse>(
      Method("SetLogLevel"),
      [](const corev1::SetLogLevelRequest& request) -> absl::StatusOr<std::vector<mi::Argument>> {
        return mi::Arguments({absl::StrCat(request.level())});
      },
      [](const corev1::SetLogLevelRequest&, const Reply& reply,
         corev1::SetLogLevelResponse& out) -> absl::Status {
        int32_t level = 0;
        if (absl::Status s = FromDebug(reply, &level); !s.ok()) return s;
        out.set_level(level);
        return absl::OkStatus();
      });
}

std::shared_ptr<const mi::TypedMethod> ListCommandsMethod(const mi::Registry& registry) {
  return mi::TypedUnary<corev1::ListCommandsRequest, corev1::ListCommandsResponse>(
      Method("ListCommands"), [](const corev1::ListCommandsRequest&) { return mi::NoArguments(); },
      [&registry](const corev1::ListCommandsRequest&, const Reply& reply,
                  corev1::ListCommandsResponse& out) -> absl::Status {
        for (const auto& node : reply.root.kids) {
          const mi::Command* command = registry.Find(node->value);
          if (command == nullptr) return Malformed("which", node->value);
          *out.add_commands() = mi::ToProto(*command);
        }
        return absl::OkStatus();
      });
}

}  // namespace sipd
