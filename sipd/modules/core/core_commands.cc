#include "sipd/modules/core/core_commands.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "registry/status_macros.h"
#include "sipd/core/sip_transport.h"
#include "sipd/modules/core/core_typed.h"
#include "sipd_version.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

using mi::Call;
using mi::Command;
using mi::Node;
using mi::ParamSpec;
using mi::Reply;
using Arity = ParamSpec::Arity;

constexpr std::string_view kModule = "core";

// Help texts: byte exact as OpenSIPS 1.11.11 (typos included, spec section 6).
constexpr std::string_view kUptimeHelp =
    "prints various time information about OpenSIPS - when it started to run, for how long "
    "it runs";
constexpr std::string_view kVersionHelp = "prints the version string of a runningOpenSIPS";
constexpr std::string_view kPwdHelp = "prints the working directory of OpenSIPS";
constexpr std::string_view kArgHelp = "returns the full list of arguments used at startup";
constexpr std::string_view kWhichHelp = "lists all avaialbe MI commands";
constexpr std::string_view kPsHelp = "lists all processes used by OpenSIPS";
constexpr std::string_view kKillHelp = "terminates OpenSIPS";
constexpr std::string_view kDebugHelp = "gets/sets the value of the debug core variable";
constexpr std::string_view kCacheStoreHelp = "stores in a cache system a string value";
constexpr std::string_view kCacheFetchHelp = "queries for a cache stored value";
constexpr std::string_view kCacheRemoveHelp = "removes a record from the cache system";
constexpr std::string_view kListTcpConnsHelp = "list all ongoing TCP/TLS connections";
constexpr std::string_view kHelpHelp = "prints information about MI commands usage";

constexpr std::string_view kHelpUsage = "help mi_cmd - returns information about 'mi_cmd'";
constexpr std::string_view kHelpNotAvailable = "not available for this command";

// The process-wide cache pointer behind SharedLocalCache().
std::shared_ptr<LocalCache>& CacheSlot() {
  static auto* slot = new std::shared_ptr<LocalCache>();
  return *slot;
}

// ctime() text without its trailing newline, e.g. "Tue Jun  3 16:22:20 2014".
std::string CtimeText(std::time_t t) {
  char buf[64] = {};
  if (ctime_r(&t, buf) == nullptr) return "";
  std::string text(buf);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

// OpenSIPS str2sint: optional sign, then at least one decimal digit, nothing else.
std::optional<int> ParseSignedInt(std::string_view text) {
  size_t i = 0;
  bool negative = false;
  if (i < text.size() && (text[i] == '-' || text[i] == '+')) negative = text[i++] == '-';
  if (i == text.size()) return std::nullopt;
  int64_t value = 0;
  for (; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    value = value * 10 + (text[i] - '0');
    if (value > static_cast<int64_t>(std::numeric_limits<int>::max()) + 1) return std::nullopt;
  }
  if (negative) value = -value;
  if (value > std::numeric_limits<int>::max() || value < std::numeric_limits<int>::min()) {
    return std::nullopt;
  }
  return static_cast<int>(value);
}

// OpenSIPS str2int: decimal digits only, fits in 32 bits unsigned.
std::optional<uint32_t> ParseUnsigned(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > std::numeric_limits<uint32_t>::max()) return std::nullopt;
  }
  return static_cast<uint32_t>(value);
}

Node& RootOf(Call& call) { return call.reply().root; }

absl::Status Uptime(Core& core, Call& call) {
  const std::time_t now = std::time(nullptr);
  const std::time_t start = core.start_time();
  const double up = std::difftime(now, start);
  Node& root = RootOf(call);
  root.AddKid("Now", CtimeText(now));
  root.AddKid("Up since", CtimeText(start));
  root.AddKid("Up time", absl::StrCat(up > 0 ? static_cast<unsigned long>(up) : 0ul, " [sec]"));
  return absl::OkStatus();
}

// "sipd (VERSION (arch/os))": the kernel's names cannot change while we run, so the text
// is computed once at registration and the handler makes no system call.
std::string VersionText() {
  struct utsname names;
  std::string arch = "unknown";
  std::string os = "unknown";
  if (uname(&names) == 0) {
    arch = names.machine;
    os = absl::AsciiStrToLower(names.sysname);
  }
  return absl::StrCat("sipd (", SIPD_VERSION, " (", arch, "/", os, "))");
}

absl::Status Version(const std::string& text, Call& call) {
  RootOf(call).AddKid("Server", text);
  return absl::OkStatus();
}

absl::Status Pwd(Call& call) {
  std::string buf(4096, '\0');
  while (getcwd(buf.data(), buf.size()) == nullptr) {
    if (errno != ERANGE || buf.size() >= (1u << 20)) {
      return absl::InternalError(absl::StrCat("getcwd failed: ", std::strerror(errno)));
    }
    buf.resize(buf.size() * 2);
  }
  buf.resize(std::strlen(buf.c_str()));
  RootOf(call).AddKid("WD", std::move(buf));
  return absl::OkStatus();
}

absl::Status Arg(Core& core, Call& call) {
  Node& root = RootOf(call);
  root.is_array = true;
  for (const auto& arg : core.argv()) root.AddKid("", arg);
  return absl::OkStatus();
}

absl::Status Which(Core& core, Call& call) {
  Node& root = RootOf(call);
  root.is_array = true;
  for (const auto& command : core.mi().commands()) root.AddKid("", command->name());
  return absl::OkStatus();
}

absl::Status Ps(Core& core, Call& call) {
  Node& root = RootOf(call);
  root.is_array = true;
  for (const auto& process : core.process_table()) {
    root.AddKid("Process")
        .AddAttribute("ID", absl::StrCat(process.id))
        .AddAttribute("PID", absl::StrCat(process.pid))
        .AddAttribute("Type", process.type);
  }
  return absl::OkStatus();
}

absl::Status Kill(Core& core, Call& /*call*/) {
  spdlog::info("MI: kill requested, shutting down");
  core.RequestShutdown();
  // OpenSIPS returns NULL here: a transport still alive answers its generic failure.
  return absl::CancelledError("shutdown requested by the kill command");
}

absl::Status Debug(Core& core, Call& call) {
  int level = core.log_level();
  if (call.arg_count() > 0) {
    std::optional<int> parsed = ParseSignedInt(call.arg(0));
    if (!parsed) {
      call.reply() = Reply::Error(400, mi::kReasonBadParameter);
      return absl::OkStatus();
    }
    level = *parsed;
    core.SetLogLevel(level);
  }
  RootOf(call).AddKid("DEBUG", absl::StrCat(level));
  return absl::OkStatus();
}

// The argument checks shared by the cache_* commands (after the count check done by
// Dispatch from the declaration). Returns false and sets the 404 reply on failure.
bool CheckCacheKey(Call& call) {
  if (call.arg(0).empty()) {
    call.reply() = Reply::Error(404, "Empty memory cache id");
    return false;
  }
  if (call.arg(1).empty()) {
    call.reply() = Reply::Error(404, "Empty attribute name");
    return false;
  }
  return true;
}

bool IsKnownCacheSystem(std::string_view system) { return system == LocalCache::kSystemName; }

absl::Status CacheStore(LocalCache& cache, Call& call) {
  if (!CheckCacheKey(call)) return absl::OkStatus();
  if (call.arg(2).empty()) {
    call.reply() = Reply::Error(404, "Empty value argument");
    return absl::OkStatus();
  }
  uint32_t expires = 0;
  if (call.arg_count() > 3) {
    if (call.arg(3).empty()) {
      call.reply() = Reply::Error(404, "Empty expires argument");
      return absl::OkStatus();
    }
    std::optional<uint32_t> parsed = ParseUnsigned(call.arg(3));
    if (!parsed) {
      call.reply() = Reply::Error(404, "Bad format for expires argument");
      return absl::OkStatus();
    }
    expires = *parsed;
  }
  if (!IsKnownCacheSystem(call.arg(0))) {
    spdlog::error("cache_store: unknown cache system '{}'", call.arg(0));
    call.reply() = Reply::Error(500, "Cache store command failed");
    return absl::OkStatus();
  }
  absl::Status status = cache.Store(call.arg(1), call.arg(2), std::chrono::seconds(expires));
  if (!status.ok()) {
    spdlog::error("cache_store failed: {}", status.ToString());
    call.reply() = Reply::Error(500, "Cache store command failed");
  }
  return absl::OkStatus();
}

absl::Status CacheFetch(LocalCache& cache, Call& call) {
  if (!CheckCacheKey(call)) return absl::OkStatus();
  if (!IsKnownCacheSystem(call.arg(0))) {
    spdlog::error("cache_fetch: unknown cache system '{}'", call.arg(0));
    call.reply() = Reply::Error(500, "Cache fetch command failed");
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> value = cache.Fetch(call.arg(1));
  if (!value.ok() && !absl::IsNotFound(value.status())) {
    spdlog::error("cache_fetch failed: {}", value.status().ToString());
    call.reply() = Reply::Error(500, "Cache fetch command failed");
    return absl::OkStatus();
  }
  // OpenSIPS treats an empty stored value as "not found" too.
  if (!value.ok() || value->empty()) {
    RootOf(call).AddKid("", "Value not found");
  } else {
    RootOf(call).AddKid("", absl::StrCat(call.arg(1), " = [", *value, "]"));
  }
  return absl::OkStatus();
}

absl::Status CacheRemove(LocalCache& cache, Call& call) {
  if (!CheckCacheKey(call)) return absl::OkStatus();
  if (!IsKnownCacheSystem(call.arg(0))) {
    spdlog::error("cache_remove: unknown cache system '{}'", call.arg(0));
    call.reply() = Reply::Error(500, "Cache remove command failed");
    return absl::OkStatus();
  }
  // Removing an absent attribute succeeds, as OpenSIPS localcache does.
  absl::Status status = cache.Remove(call.arg(1));
  if (!status.ok() && !absl::IsNotFound(status)) {
    spdlog::error("cache_remove failed: {}", status.ToString());
    call.reply() = Reply::Error(500, "Cache remove command failed");
  }
  return absl::OkStatus();
}

// One `Connection::` node per TCP connection (spec section 6). Source is the remote end,
// Destination ours (OpenSIPS's rcv.src/rcv.dst); Timeout is when the connection closes
// if it stays idle (local time) and "Pending lifetime" the seconds left until then.
absl::Status ListTcpConns(Core& core, Call& call) {
  const SipTransport* transport = core.sip_transport();
  bool tcp = false;
  if (transport != nullptr) {
    for (const SipSocket& socket : transport->sockets()) tcp |= socket.proto == SipProto::kTcp;
  }
  if (!tcp) {
    call.reply() = Reply::Error(404, "TCP support disabled");
    return absl::OkStatus();
  }
  Node& root = RootOf(call);
  root.is_array = true;
  const std::time_t now = std::time(nullptr);
  for (const SipConnectionInfo& c : transport->Connections()) {
    std::tm local{};
    localtime_r(&c.expires, &local);
    char timeout[32] = {};
    std::strftime(timeout, sizeof(timeout), "%Y-%m-%d %H:%M:%S", &local);
    root.AddKid("Connection")
        .AddAttribute("ID", absl::StrCat(c.id))
        .AddAttribute("Type", std::string(SipProtoName(c.proto)))
        .AddAttribute("State", absl::StrCat(c.state))
        .AddAttribute("Source", absl::StrCat(c.peer.ip(), ":", c.peer.port()))
        .AddAttribute("Destination", absl::StrCat(c.local.ip(), ":", c.local.port()))
        .AddAttribute("Timeout", timeout)
        .AddAttribute("Pending lifetime", absl::StrCat(c.expires > now ? c.expires - now : 0));
  }
  return absl::OkStatus();
}

absl::Status Help(Core& core, Call& call) {
  Node& root = RootOf(call);
  if (call.arg_count() == 0) {
    root.AddKid("Usage", std::string(kHelpUsage));
    return absl::OkStatus();
  }
  const Command* command = core.mi().Find(call.arg(0));
  if (command == nullptr) {
    call.reply() = Reply::Error(404, "unknown MI command");
    return absl::OkStatus();
  }
  root.AddKid("Help", command->help().empty() ? std::string(kHelpNotAvailable) : command->help());
  root.AddKid("Exported by", command->module());
  return absl::OkStatus();
}

// Declares one core command. The cache_* commands pass their own arg-count replies.
Command::Spec CoreSpec(std::string_view name, std::string_view help, std::vector<ParamSpec> params,
                       uint32_t flags, mi::Handler handler) {
  return Command::Spec{
      .name = std::string(name),
      .module = std::string(kModule),
      .help = std::string(help),
      .params = std::move(params),
      .flags = flags,
      .handler = std::move(handler),
  };
}

Command::Spec CacheSpec(std::string_view name, std::string_view help, std::vector<ParamSpec> params,
                        uint32_t flags, std::string_view too_many_reason, mi::Handler handler) {
  Command::Spec spec = CoreSpec(name, help, std::move(params), flags, std::move(handler));
  spec.arg_error_code = 404;
  spec.too_few_reason = "Too few arguments";
  spec.too_many_reason = std::string(too_many_reason);
  return spec;
}

}  // namespace

absl::Status RegisterCoreCommands(Core& core) {
  return RegisterCoreCommands(core, LocalCache::Options());
}

absl::Status RegisterCoreCommands(Core& core, LocalCache::Options cache_options) {
  SIPD_ASSIGN_OR_RETURN(std::unique_ptr<LocalCache> created,
                        LocalCache::Create(core.shm(), std::move(cache_options)));
  std::shared_ptr<LocalCache> cache(std::move(created));
  CacheSlot() = cache;
  core.AddTimer("localcache", std::chrono::seconds(1), [cache] { cache->Expire(); });

  Core* c = &core;
  const ParamSpec system{"system", Arity::kRequired, "cache id (`local`)"};
  const ParamSpec attr{"attr", Arity::kRequired, "attribute name (key)"};
  std::vector<Command::Spec> specs;
  specs.push_back(CoreSpec("uptime", kUptimeHelp, {}, mi::kNoInput,
                           [c](Call& call) { return Uptime(*c, call); }));
  specs.back().typed = {GetUptimeMethod()};
  specs.push_back(CoreSpec("version", kVersionHelp, {}, mi::kNoInput,
                           [text = VersionText()](Call& call) { return Version(text, call); }));
  specs.back().typed = {GetVersionMethod()};
  specs.push_back(CoreSpec("pwd", kPwdHelp, {}, mi::kNoInput, Pwd));
  specs.push_back(
      CoreSpec("arg", kArgHelp, {}, mi::kNoInput, [c](Call& call) { return Arg(*c, call); }));
  specs.push_back(
      CoreSpec("which", kWhichHelp, {}, mi::kNoInput, [c](Call& call) { return Which(*c, call); }));
  specs.back().typed = {ListCommandsMethod(core.mi())};
  specs.push_back(
      CoreSpec("ps", kPsHelp, {}, mi::kNoInput, [c](Call& call) { return Ps(*c, call); }));
  specs.back().typed = {ListProcessesMethod()};
  specs.push_back(CoreSpec("kill", kKillHelp, {}, mi::kNoInput | mi::kMutating | mi::kDangerous,
                           [c](Call& call) { return Kill(*c, call); }));
  specs.push_back(
      CoreSpec("debug", kDebugHelp,
               {{"level", Arity::kOptional, "new log level (-3 alert .. 4 debug); none: show it"}},
               mi::kMutating | mi::kDangerous, [c](Call& call) { return Debug(*c, call); }));
  specs.back().typed = {GetLogLevelMethod(), SetLogLevelMethod()};
  specs.push_back(
      CacheSpec("cache_store", kCacheStoreHelp,
                {system,
                 attr,
                 {"value", Arity::kRequired, "value to store"},
                 {"expires", Arity::kOptional, "lifetime in seconds (0 or none: never expires)"}},
                mi::kMutating, "Too many parameters",
                [cache](Call& call) { return CacheStore(*cache, call); }));
  specs.push_back(CacheSpec("cache_fetch", kCacheFetchHelp, {system, attr}, 0, "Too many arguments",
                            [cache](Call& call) { return CacheFetch(*cache, call); }));
  specs.push_back(CacheSpec("cache_remove", kCacheRemoveHelp, {system, attr}, mi::kMutating,
                            "Too many parameters",
                            [cache](Call& call) { return CacheRemove(*cache, call); }));
  // event_subscribe, events_list, subscribers_list (registry/events.h), 1.11's place.
  if (core.events() != nullptr) {
    for (auto& spec : mi::EventCommandSpecs(*core.events())) specs.push_back(std::move(spec));
  }
  specs.push_back(CoreSpec("list_tcp_conns", kListTcpConnsHelp, {}, mi::kNoInput,
                           [c](Call& call) { return ListTcpConns(*c, call); }));
  specs.push_back(CoreSpec("help", kHelpHelp,
                           {{"command", Arity::kOptional, "MI command to describe"}}, 0,
                           [c](Call& call) { return Help(*c, call); }));
  for (auto& spec : specs) SIPD_RETURN_IF_ERROR(core.mi().Register(std::move(spec)));
  return absl::OkStatus();
}

LocalCache* SharedLocalCache() { return CacheSlot().get(); }

}  // namespace sipd
