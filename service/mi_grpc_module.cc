#include "service/mi_grpc_module.h"

#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "registry/status_macros.h"
#include "service/grpc_server.h"
#include "sipd/api/module_params.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

constexpr char kModuleName[] = "mi_grpc";
constexpr std::chrono::milliseconds kLoopInterval(100);
constexpr std::chrono::milliseconds kShutdownGrace(2000);

struct HostPort {
  std::string host;
  int port = 0;
};

// "host:port" or "[v6]:port" ("unix:/path" has no port: host = the path).
absl::StatusOr<HostPort> ParseListen(const std::string& listen) {
  HostPort out;
  if (listen.starts_with("unix:")) {
    out.host = listen.substr(5);
    if (out.host.empty() || out.host.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("mi_grpc: listen '", listen, "' is not unix:/absolute/path"));
    }
    return out;
  }
  std::string port_text;
  if (!listen.empty() && listen.front() == '[') {
    const size_t close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("mi_grpc: listen '", listen, "' is not [address]:port"));
    }
    out.host = listen.substr(1, close - 1);
    port_text = listen.substr(close + 2);
  } else {
    const size_t colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0 || listen.find(':') != colon) {
      return absl::InvalidArgumentError(
          absl::StrCat("mi_grpc: listen '", listen, "' is not host:port"));
    }
    out.host = listen.substr(0, colon);
    port_text = listen.substr(colon + 1);
  }
  if (!absl::SimpleAtoi(port_text, &out.port) || out.port < 0 || out.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_grpc: listen '", listen, "' has an invalid port"));
  }
  return out;
}

// Binds (without listening) every address `listen` resolves to, as gRPC will, so that a
// port held by another daemon is reported before anything is forked.
absl::Status CheckCanBind(const std::string& listen) {
  SIPD_ASSIGN_OR_RETURN(HostPort hp, ParseListen(listen));
  if (listen.starts_with("unix:")) {
    struct stat st;
    if (lstat(hp.host.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mi_grpc: ", hp.host, " exists and is not a socket: refusing to replace it"));
    }
    unlink(hp.host.c_str());  // a stale socket of an earlier run
    return absl::OkStatus();
  }
  if (hp.port == 0) return absl::OkStatus();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* result = nullptr;
  const std::string port = std::to_string(hp.port);
  if (int rc = getaddrinfo(hp.host.c_str(), port.c_str(), &hints, &result); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("mi_grpc: cannot resolve '", hp.host, "': ", gai_strerror(rc)));
  }
  absl::Status status = absl::OkStatus();
  for (addrinfo* ai = result; ai != nullptr && status.ok(); ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      status = absl::UnavailableError(
          absl::StrCat("mi_grpc: cannot listen on ", listen, ": ", std::strerror(errno)));
    }
    close(fd);
  }
  freeaddrinfo(result);
  return status;
}

absl::StatusOr<int64_t> IntParam(std::string_view param, const ParamValue& value, int64_t min,
                                 int64_t max) {
  return ::sipd::IntParam("mi_grpc", param, value, min, max);
}

// Every client is a descriptor: lift the soft limit (often 1024) to the hard one, up to
// 65536, so that a thousand idle or stalled clients do not make the server refuse the
// next one. Failure only costs capacity.
void RaiseOpenFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t wanted = std::min<rlim_t>(limit.rlim_max, 65536);
  if (limit.rlim_cur >= wanted) return;
  limit.rlim_cur = wanted;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn("mi_grpc: cannot raise the open-file limit: {}", std::strerror(errno));
  }
}

// Samples in a row (one per health run, ~1 s apart) with every worker of a SIP listener
// busy before "sipd.sip" says the listener is overloaded; one sample with a worker free
// clears it.
constexpr int kOverloadedSamples = 3;

// The process exists and has not exited (a zombie the attendant did not reap yet has).
bool Running(int pid) {
  if (pid <= 0) return false;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  std::FILE* file = std::fopen(path, "re");
  if (file == nullptr) return false;
  char buffer[512] = {};
  const size_t got = std::fread(buffer, 1, sizeof(buffer) - 1, file);
  std::fclose(file);
  // "PID (COMM) STATE ...": COMM may contain spaces and parentheses; the state follows
  // the last ')'.
  const std::string_view stat(buffer, got);
  const size_t close = stat.rfind(')');
  if (close == std::string_view::npos || close + 2 >= stat.size()) return false;
  const char state = stat[close + 2];
  return state != 'Z' && state != 'X';
}

// "sipd.sip": every SIP receiver slot of the process table has a live process, and no
// listener had all its workers busy (`load` statistics, spec 7.4) kOverloadedSamples
// times in a row. Runs on the health monitor's thread only.
class SipHealth {
 public:
  explicit SipHealth(Core& core) : core_(core) {}

  absl::Status operator()() {
    constexpr absl::string_view kPrefix = "SIP receiver ";
    size_t receivers = 0;
    std::map<std::string, bool> listeners;
    for (const ProcessInfo& process : core_.process_table()) {
      if (!absl::StartsWith(process.type, kPrefix)) continue;
      ++receivers;
      std::string listener(absl::StripAsciiWhitespace(process.type.substr(kPrefix.size())));
      if (!Running(process.pid)) {
        return absl::UnavailableError(
            absl::StrCat("SIP receiver ", listener, " (slot ", process.id, ") is not running"));
      }
      listeners.emplace(std::move(listener), true);
    }
    if (receivers == 0 && !core_.listen().empty()) {
      return absl::UnavailableError("no SIP receiver in the process table");
    }
    for (const auto& [listener, unused] : listeners) {
      absl::StatusOr<uint64_t> load = core_.stats().Value(absl::StrCat(listener, "-load"));
      int& busy = busy_samples_[listener];
      busy = load.ok() && *load >= 100 ? busy + 1 : 0;
      if (busy >= kOverloadedSamples) {
        return absl::UnavailableError(absl::StrCat("SIP listener ", listener,
                                                   " overloaded: every worker busy for ", busy,
                                                   " samples in a row"));
      }
    }
    return absl::OkStatus();
  }

 private:
  Core& core_;
  std::map<std::string, int> busy_samples_;
};

class MiGrpcModule final : public Module {
 public:
  std::string_view name() const override { return kModuleName; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    service::ServiceOptions& svc = options_.service;
    if (param == "listen") {
      const std::string* v = std::get_if<std::string>(&value);
      if (v == nullptr) {
        return absl::InvalidArgumentError("mi_grpc: parameter 'listen' must be a string");
      }
      SIPD_RETURN_IF_ERROR(ParseListen(*v).status());
      options_.listen = *v;
    } else if (param == "max_message_size") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 4096, 1 << 30));
      svc.max_message_size = static_cast<size_t>(v);
    } else if (param == "max_args") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 1 << 20));
      svc.max_args = static_cast<size_t>(v);
    } else if (param == "threads") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 64));
      options_.threads = static_cast<int>(v);
    } else if (param == "workers") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 64));
      svc.workers = static_cast<size_t>(v);
      svc.max_queued = 16 * svc.workers;
    } else if (param == "stream_chunk_nodes") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 1 << 20));
      svc.stream_chunk_nodes = static_cast<size_t>(v);
    } else if (param == "stream_chunk_bytes") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1024, 1 << 30));
      svc.stream_chunk_bytes = static_cast<size_t>(v);
    } else if (param == "stream_write_timeout") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 100, 3600 * 1000));
      svc.stream_write_timeout = std::chrono::milliseconds(v);
    } else if (param == "reply_timeout") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 100, 24 * 3600 * 1000));
      svc.reply_timeout = std::chrono::milliseconds(v);
    } else if (param == "session_max_inflight") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 1 << 16));
      svc.session_max_inflight = static_cast<size_t>(v);
    } else if (param == "session_buffer_bytes") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 4096, 1 << 30));
      svc.session_buffer_bytes = static_cast<size_t>(v);
    } else if (param == "subscriber_buffer") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 1 << 20));
      options_.events.subscriber_buffer = static_cast<size_t>(v);
    } else if (param == "event_coalesce") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 0, 1000));
      options_.events.event_coalesce = std::chrono::milliseconds(v);
    } else if (param == "event_queue_size") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 128 << 10, 256 << 20));
      event_queue_bytes_ = static_cast<size_t>(v);
    } else if (param == "max_concurrent_streams") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 1 << 20));
      options_.max_concurrent_streams = static_cast<int>(v);
    } else if (param == "handshake_timeout") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 100, 3600 * 1000));
      options_.handshake_timeout = std::chrono::milliseconds(v);
    } else if (param == "idle_timeout") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1000, 24 * 3600 * 1000));
      options_.idle_timeout = std::chrono::milliseconds(v);
    } else if (param == "keepalive_time") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1000, 24 * 3600 * 1000));
      options_.keepalive_time = std::chrono::milliseconds(v);
    } else if (param == "tls_cert" || param == "tls_key" || param == "tls_ca") {
      const std::string* v = std::get_if<std::string>(&value);
      if (v == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("mi_grpc: parameter '", std::string(param), "' must be a file path"));
      }
      (param == "tls_cert"  ? options_.tls.cert
       : param == "tls_key" ? options_.tls.key
                            : options_.tls.ca) = *v;
    } else if (param == "tls_client_auth") {
      const std::string* v = std::get_if<std::string>(&value);
      using ClientAuth = service::TlsOptions::ClientAuth;
      if (v != nullptr && *v == "none") {
        options_.tls.client_auth = ClientAuth::kNone;
      } else if (v != nullptr && *v == "optional") {
        options_.tls.client_auth = ClientAuth::kOptional;
      } else if (v != nullptr && *v == "require") {
        options_.tls.client_auth = ClientAuth::kRequire;
      } else {
        return absl::InvalidArgumentError(
            "mi_grpc: tls_client_auth must be \"none\", \"optional\" or \"require\"");
      }
    } else if (param == "tls_refresh") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1, 3600));
      options_.tls.refresh_seconds = static_cast<unsigned>(v);
    } else if (param == "insecure") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 0, 1));
      insecure_ = v == 1;
    } else if (param == "keepalive_timeout") {
      SIPD_ASSIGN_OR_RETURN(int64_t v, IntParam(param, value, 1000, 3600 * 1000));
      options_.keepalive_timeout = std::chrono::milliseconds(v);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("mi_grpc: unknown parameter '", std::string(param), "'"));
    }
    return absl::OkStatus();
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    const service::TlsOptions& tls = options_.tls;
    if (tls.cert.empty() != tls.key.empty()) {
      return absl::InvalidArgumentError("mi_grpc: tls_cert and tls_key go together");
    }
    if (tls.client_auth != service::TlsOptions::ClientAuth::kNone && tls.ca.empty()) {
      return absl::InvalidArgumentError(
          "mi_grpc: tls_client_auth needs tls_ca (the CA that signs client certificates)");
    }
    for (const std::string* file : {&tls.cert, &tls.key, &tls.ca}) {
      if (!file->empty() && access(file->c_str(), R_OK) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("mi_grpc: cannot read ", *file, ": ", std::strerror(errno)));
      }
    }
    // Exposure rule: a listener other hosts can reach needs TLS (tokens are then
    // required by the MI's security: remote callers without credentials get 401).
    SIPD_ASSIGN_OR_RETURN(HostPort hp, ParseListen(options_.listen));
    const bool local = options_.listen.starts_with("unix:") || mi::IsLoopbackHost(hp.host) ||
                       hp.host == "localhost";
    if (!local && !tls.enabled()) {
      if (!insecure_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "mi_grpc: listen ", options_.listen,
            " is reachable from other hosts and has no TLS: set tls_cert and tls_key (and give "
            "remote callers tokens: modparam(\"mi\", \"tokens_file\", ...)), or set "
            "modparam(\"mi_grpc\", \"insecure\", 1) to accept clear text"));
      }
      spdlog::critical("mi_grpc: INSECURE: {} is reachable from other hosts without TLS",
                       options_.listen);
    }
    options_.events.stats = &core.stats();
    // Subscribe streams read events through a consumer of their own (registry/events.h):
    // raisers queue an event for it only while a stream wants that event.
    mi::EventRegistry* events = core.events();
    if (events != nullptr && events->backend() != nullptr) {
      absl::StatusOr<mi::EventConsumer*> consumer =
          events->backend()->AddConsumer(std::string(kModuleName), event_queue_bytes_);
      if (consumer.ok()) {
        options_.events.events = events;
        options_.events.consumer = *consumer;
      } else {
        spdlog::warn("mi_grpc: no event consumer ({}): Subscribe will answer UNAVAILABLE",
                     consumer.status().ToString());
      }
    }
    return absl::OkStatus();
  }

  std::vector<ProcessSpec> Processes() override {
    ProcessSpec spec;
    spec.name = "MI gRPC";
    spec.count = 1;
    spec.pre_fork = [this] { return CheckCanBind(options_.listen); };
    spec.main = [this](int) { return Serve(); };
    spec.init_child = true;
    spec.reports_listeners = true;  // the port is known only once the server runs
    return {std::move(spec)};
  }

 private:
  // The process body: start the server, then wait for shutdown. Keeps the loop at
  // 100 ms so `debug` level changes and SIGTERM are seen promptly.
  absl::Status Serve() {
    RaiseOpenFileLimit();
    std::unique_ptr<mi::Dispatcher> dispatcher = core_->NewDispatcher(
        {.workers = options_.service.workers, .max_queued = options_.service.max_queued});
    service::ServerOptions options = options_;
    options.health_checks.push_back(mi::HealthCheck{
        "sipd.sip", [sip = std::make_shared<SipHealth>(*core_)] { return (*sip)(); }});
    auto server = service::MiGrpcServer::Start(*dispatcher, options);
    if (!server.ok()) return server.status();
    spdlog::info("mi_grpc: serving sipd.mi.v1.Management on {} (port {})", options_.listen,
                 (*server)->port());
    const std::string host = ParseListen(options_.listen)->host;
    if (options_.listen.starts_with("unix:")) {
      // Only sipd's user (and root) may connect: they are who the MI maps unix peers to.
      chmod(host.c_str(), 0600);
      core_->ReportListeners(
          {{kModuleName, options_.tls.enabled() ? "grpcs" : "grpc", options_.listen}});
    } else {
      core_->ReportListeners(
          {{kModuleName, options_.tls.enabled() ? "grpcs" : "grpc",
            absl::StrCat(host.find(':') == std::string::npos ? host : "[" + host + "]", ":",
                         (*server)->port())}});
    }
    while (!core_->stopping()) {
      std::this_thread::sleep_for(kLoopInterval);
      core_->SyncLogLevel();
    }
    spdlog::info("mi_grpc: shutting down");
    (*server)->Shutdown(kShutdownGrace);
    return absl::OkStatus();
  }

  Core* core_ = nullptr;
  service::ServerOptions options_;
  bool insecure_ = false;
  size_t event_queue_bytes_ = 4 << 20;
};

}  // namespace

std::unique_ptr<Module> NewMiGrpcModule() { return std::make_unique<MiGrpcModule>(); }

}  // namespace sipd
