#include "sipd/modules/httpd/httpd_module.h"

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <charconv>
#include <chrono>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sipd/modules/httpd/http_server.h"
#include "sipd/modules/httpd/json_reply.h"
#include "sipd/modules/httpd/metrics.h"
#include "sipd/modules/httpd/stats_sampler.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

namespace asio = boost::asio;
using httpd::HttpAnswer;

constexpr std::string_view kModuleName = "httpd";
constexpr auto kTick = std::chrono::milliseconds(100);
constexpr auto kSampleInterval = std::chrono::seconds(1);

// "%xx" and '+' decoded.
std::string UrlDecode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%') {
      int value = 0;
      if (i + 2 < text.size() &&
          std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16).ptr ==
              text.data() + i + 3) {
        out.push_back(static_cast<char>(value));
        i += 2;
      } else {
        out.push_back('%');
      }
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// The value of `key` in the query of `target`; "" if absent.
std::string QueryValue(const std::string& target, std::string_view key) {
  const size_t q = target.find('?');
  if (q == std::string::npos) return "";
  std::string_view rest = std::string_view(target).substr(q + 1);
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) != key) continue;
    return eq == std::string_view::npos ? "" : UrlDecode(pair.substr(eq + 1));
  }
  return "";
}

std::string CommandsJson(const mi::Registry& registry) {
  std::string out = "[";
  bool first = true;
  for (const auto& command : registry.commands()) {
    if (!first) out.push_back(',');
    first = false;
    out.append("{\"name\":");
    httpd::AppendJsonString(out, command->name());
    out.append(",\"module\":");
    httpd::AppendJsonString(out, command->module());
    out.append(",\"help\":");
    httpd::AppendJsonString(out, command->help());
    out.append(",\"parameters\":[");
    for (size_t i = 0; i < command->params().size(); ++i) {
      const mi::ParamSpec& param = command->params()[i];
      if (i > 0) out.push_back(',');
      out.append("{\"name\":");
      httpd::AppendJsonString(out, param.name);
      out.append(",\"arity\":");
      httpd::AppendJsonString(out, param.arity == mi::ParamSpec::Arity::kRequired   ? "required"
                                   : param.arity == mi::ParamSpec::Arity::kOptional ? "optional"
                                                                                    : "repeated");
      out.append(",\"help\":");
      httpd::AppendJsonString(out, param.help);
      out.push_back('}');
    }
    out.append("],\"flags\":[");
    bool first_flag = true;
    auto flag = [&](mi::CommandFlag f, std::string_view name) {
      if (!command->has_flag(f)) return;
      if (!first_flag) out.push_back(',');
      first_flag = false;
      httpd::AppendJsonString(out, name);
    };
    flag(mi::kNoInput, "no-input");
    flag(mi::kMutating, "mutating");
    flag(mi::kAsync, "async");
    flag(mi::kStreaming, "streaming");
    flag(mi::kBlocking, "blocking");
    out.append("]}");
  }
  out.push_back(']');
  return out;
}

std::string ProcessesJson(const std::vector<httpd::ProcessUsage>& usage) {
  std::string out = absl::StrCat("{\"clock_ticks\":", sysconf(_SC_CLK_TCK), ",\"processes\":[");
  for (size_t i = 0; i < usage.size(); ++i) {
    if (i > 0) out.push_back(',');
    absl::StrAppend(&out, "{\"id\":", usage[i].id, ",\"pid\":", usage[i].pid, ",\"type\":");
    httpd::AppendJsonString(out, usage[i].type);
    absl::StrAppend(&out, ",\"cpu_seconds\":", usage[i].cpu_seconds,
                    ",\"rss_bytes\":", usage[i].rss_bytes, "}");
  }
  out.append("]}");
  return out;
}

// share/sipd/console beside the folder of the running binary: bin/sipd when installed,
// build/sipd/sipd in a build tree (which copies web/console to build/share/sipd/console).
std::string DefaultWebRoot() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  const std::filesystem::path root = exe.parent_path().parent_path() / "share/sipd/console";
  return std::filesystem::exists(root / "index.html", ec) ? root.string() : "";
}

class HttpdModule : public Module {
 public:
  std::string_view name() const override { return kModuleName; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    const std::string name(param);
    const auto* text = std::get_if<std::string>(&value);
    const auto* number = std::get_if<int64_t>(&value);
    auto range = [&](int64_t low, int64_t high) -> absl::Status {
      if (number == nullptr) return Invalid(name, "expects an integer");
      if (*number < low || *number > high) {
        return Invalid(name, absl::StrCat(*number, " is out of range [", low, ", ", high, "]"));
      }
      return absl::OkStatus();
    };
    if (name == "listen") {
      if (text == nullptr) return Invalid(name, "expects a string");
      return ParseListen(*text);
    }
    if (name == "web_root") {
      if (text == nullptr) return Invalid(name, "expects a string");
      options_.web_root = *text;
      return absl::OkStatus();
    }
    if (name == "tls_cert" || name == "tls_key" || name == "tls_ca") {
      if (text == nullptr) return Invalid(name, "must be a file path");
      (name == "tls_cert"  ? options_.tls.cert
       : name == "tls_key" ? options_.tls.key
                           : options_.tls.ca) = *text;
      return absl::OkStatus();
    }
    if (name == "tls_client_auth") {
      using ClientAuth = httpd::TlsSettings::ClientAuth;
      if (text != nullptr && *text == "none") {
        options_.tls.client_auth = ClientAuth::kNone;
      } else if (text != nullptr && *text == "optional") {
        options_.tls.client_auth = ClientAuth::kOptional;
      } else if (text != nullptr && *text == "require") {
        options_.tls.client_auth = ClientAuth::kRequire;
      } else {
        return absl::InvalidArgumentError(
            "httpd: tls_client_auth must be \"none\", \"optional\" or \"require\"");
      }
      return absl::OkStatus();
    }
    if (name == "insecure") {
      if (absl::Status s = range(0, 1); !s.ok()) return s;
      insecure_ = *number == 1;
      return absl::OkStatus();
    }
    struct Limit {
      const char* name;
      int64_t low, high;
      std::function<void(int64_t)> set;
    };
    const Limit limits[] = {
        {"processes", 1, 64, [&](int64_t v) { processes_ = static_cast<int>(v); }},
        {"max_connections", 1, 1 << 20,
         [&](int64_t v) { options_.max_connections = static_cast<size_t>(v); }},
        {"max_body_size", 1024, 1 << 30,
         [&](int64_t v) { options_.max_body_size = static_cast<size_t>(v); }},
        {"max_batch", 1, 1 << 20, [&](int64_t v) { options_.max_batch = static_cast<size_t>(v); }},
        {"header_timeout", 1, 3600,
         [&](int64_t v) { options_.header_timeout = std::chrono::seconds(v); }},
        {"stall_timeout", 1, 3600,
         [&](int64_t v) { options_.stall_timeout = std::chrono::seconds(v); }},
        {"reply_timeout", 1, 3600,
         [&](int64_t v) { options_.reply_timeout = std::chrono::seconds(v); }},
        {"history_seconds", 10, 86400,
         [&](int64_t v) { history_seconds_ = static_cast<size_t>(v); }},
    };
    for (const Limit& limit : limits) {
      if (name != limit.name) continue;
      if (absl::Status s = range(limit.low, limit.high); !s.ok()) return s;
      limit.set(*number);
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat("httpd: unknown parameter '", name, "'"));
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    // Certificates load now (a bad file fails start-up, naming it); every process loads
    // its own copy again when it starts serving.
    if (options_.tls.enabled() || !options_.tls.key.empty() || !options_.tls.ca.empty() ||
        options_.tls.client_auth != httpd::TlsSettings::ClientAuth::kNone) {
      if (!options_.tls.enabled() && options_.tls.key.empty()) {
        return absl::InvalidArgumentError(
            "httpd: tls_ca and tls_client_auth need tls_cert and tls_key");
      }
      if (absl::Status s = httpd::HttpServer::CheckTls(options_.tls); !s.ok()) return s;
    }
    // Exposure rule: a listener other hosts can reach needs TLS (tokens are then
    // required by the MI's security: remote callers without credentials get 401).
    const bool local = mi::IsLoopbackHost(host_) || host_ == "localhost";
    if (!local && !options_.tls.enabled()) {
      const std::string listen = absl::StrCat(
          host_.find(':') == std::string::npos ? host_ : "[" + host_ + "]", ":", port_);
      if (!insecure_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "httpd: listen ", listen,
            " is reachable from other hosts and has no TLS: set tls_cert and tls_key (and give "
            "remote callers tokens: modparam(\"mi\", \"tokens_file\", ...)), or set "
            "modparam(\"httpd\", \"insecure\", 1) to accept clear text"));
      }
      spdlog::critical("httpd: INSECURE: {} is reachable from other hosts without TLS", listen);
    }
    mi::StatsRegistry& stats = core.stats();
    struct Declared {
      const char* name;
      uint32_t flags;
      const char* help;
      mi::Counter* counter;
    };
    httpd::ServerCounters& c = options_.counters;
    const Declared declared[] = {
        {"connections", mi::kStatNoReset, "HTTP connections open now", &c.connections},
        {"requests", 0, "HTTP requests read", &c.requests},
        {"rejected", 0, "connections refused at max_connections (503)", &c.rejected},
        {"timeouts", 0, "connections closed by header_timeout (slow or idle)", &c.timeouts},
        {"stalled", 0, "connections cut by stall_timeout (reply not taken)", &c.stalled},
        {"too_large", 0, "request bodies refused over max_body_size (413)", &c.too_large},
    };
    for (const Declared& d : declared) {
      absl::StatusOr<mi::Counter> counter = stats.AddCounter(kModuleName, d.name, d.flags, d.help);
      if (!counter.ok()) return counter.status();
      *d.counter = *counter;
    }
    if (options_.web_root.empty()) options_.web_root = DefaultWebRoot();
    if (options_.web_root.empty()) {
      spdlog::warn("httpd: no console files found (set modparam web_root); GET / answers 404");
    }
    return absl::OkStatus();
  }

  std::vector<ProcessSpec> Processes() override {
    ProcessSpec spec;
    spec.name = "HTTPD";
    spec.count = processes_;
    spec.init_child = true;
    // Bound in the attendant: a busy port fails start-up, every HTTPD process serves the
    // same socket, and a restarted one goes on with it.
    spec.pre_fork = [this]() -> absl::Status {
      CloseListenSocket();
      absl::StatusOr<int> fd = httpd::HttpServer::OpenListenSocket(host_, port_);
      if (!fd.ok()) return fd.status();
      listen_fd_ = *fd;
      absl::StatusOr<uint16_t> port = httpd::HttpServer::BoundPort(listen_fd_);
      if (!port.ok()) return port.status();
      const std::string host = host_.find(':') == std::string::npos ? host_ : "[" + host_ + "]";
      const char* scheme = options_.tls.enabled() ? "https" : "http";
      url_ = absl::StrCat(scheme, "://", host, ":", *port, "/");
      spdlog::info("httpd: serving JSON-RPC (POST {}mi), /metrics and the console on {}", url_,
                   url_);
      if (core_ != nullptr) core_->ReportListeners({{std::string(kModuleName), scheme, url_}});
      return absl::OkStatus();
    };
    spec.main = [this](int) { return Serve(); };
    return {std::move(spec)};
  }

  void Shutdown() override { CloseListenSocket(); }
  ~HttpdModule() override { CloseListenSocket(); }

 private:
  void CloseListenSocket() {
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
  }

  static absl::Status Invalid(const std::string& param, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("httpd: parameter '", param, "' ", why));
  }

  absl::Status ParseListen(const std::string& text) {
    std::string host;
    std::string_view port_text;
    if (!text.empty() && text[0] == '[') {
      const size_t close = text.find(']');
      if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
        return Invalid("listen", absl::StrCat("'", text, "' is not [V6]:PORT"));
      }
      host = text.substr(1, close - 1);
      port_text = std::string_view(text).substr(close + 2);
    } else {
      const size_t colon = text.rfind(':');
      if (colon == std::string::npos) {
        return Invalid("listen", absl::StrCat("'", text, "' is not HOST:PORT"));
      }
      host = text.substr(0, colon);
      port_text = std::string_view(text).substr(colon + 1);
    }
    int port = 0;
    const auto [end, error] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || error != std::errc() || end != port_text.data() + port_text.size() ||
        port < 0 || port > 65535) {
      return Invalid("listen", absl::StrCat("'", text, "' has no valid port"));
    }
    host_ = host;
    port_ = static_cast<uint16_t>(port);
    return absl::OkStatus();
  }

  void RaiseDescriptorLimit() {
    const rlim_t wanted = static_cast<rlim_t>(options_.max_connections) + 64;
    struct rlimit limit {};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= wanted) return;
    limit.rlim_cur = std::min(wanted, limit.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur < wanted) {
      spdlog::warn("httpd: descriptor limit {} is below max_connections {}", limit.rlim_cur,
                   options_.max_connections);
    }
  }

  absl::Status Serve() {
    RaiseDescriptorLimit();
    asio::io_context io(1);
    std::unique_ptr<mi::Dispatcher> dispatcher = core_->NewDispatcher({.workers = 2});
    httpd::HttpServer server(io, *dispatcher, options_);
    if (absl::Status s = server.status(); !s.ok()) return s;
    const mi::StatsRegistry& stats = core_->stats();
    // The statistics sampler shared with gRPC WatchStatistics (registry/stat_sampler.h),
    // one sample a second taken on this loop, `history_seconds` of them kept.
    absl::StatusOr<std::unique_ptr<mi::StatSampler>> made =
        mi::StatSampler::Create(stats, {.selectors = {"all"},
                                        .interval = kSampleInterval,
                                        .history = std::chrono::seconds(history_seconds_)});
    if (!made.ok()) return made.status();
    mi::StatSampler& sampler = **made;

    server.AddGet("/metrics", [this, &stats](const std::string&) {
      const std::vector<ProcessInfo> table = core_->process_table();
      return HttpAnswer{200, "text/plain; version=0.0.4; charset=utf-8",
                        httpd::RenderPrometheus(stats, table, httpd::ReadProcessUsage(table))};
    });
    server.AddGet("/api/commands", [this](const std::string&) {
      return HttpAnswer{200, "application/json", CommandsJson(core_->mi())};
    });
    server.AddGet("/api/processes", [this](const std::string&) {
      return HttpAnswer{200, "application/json",
                        ProcessesJson(httpd::ReadProcessUsage(core_->process_table()))};
    });
    server.AddGet("/api/statistics/catalog", [&sampler](const std::string&) {
      return HttpAnswer{200, "application/json", httpd::CatalogJson(sampler)};
    });
    server.AddGet("/api/statistics/history", [&sampler, &stats](const std::string& target) {
      std::vector<std::string> selectors =
          absl::StrSplit(QueryValue(target, "stats"), ',', absl::SkipEmpty());
      size_t last = 3600;
      int64_t since = 0;
      if (const std::string text = QueryValue(target, "last"); !text.empty()) {
        if (!absl::SimpleAtoi(text, &last)) last = 3600;
      }
      if (const std::string text = QueryValue(target, "since"); !text.empty()) {
        if (!absl::SimpleAtoi(text, &since)) since = 0;
      }
      return HttpAnswer{200, "application/json",
                        httpd::HistoryJson(sampler, stats, selectors, last, since)};
    });

    if (listen_fd_ < 0) return absl::FailedPreconditionError("httpd: no listen socket");
    if (absl::Status s = server.Adopt(listen_fd_); !s.ok()) return s;
    server.Start();
    sampler.Take();

    // Housekeeping on the loop: shutdown, log level, async deadlines, the sampler.
    asio::steady_timer tick(io);
    auto next_sample = std::chrono::steady_clock::now() + kSampleInterval;
    std::function<void()> arm = [&] {
      tick.expires_after(kTick);
      tick.async_wait([&](const boost::system::error_code& ec) {
        if (ec) return;
        if (core_->stopping()) {
          server.Stop();
          io.stop();
          return;
        }
        core_->SyncLogLevel();
        server.Tick();
        const auto now = std::chrono::steady_clock::now();
        if (now >= next_sample) {
          sampler.Take();
          next_sample += kSampleInterval;
          if (next_sample < now) next_sample = now + kSampleInterval;  // after a stall
        }
        arm();
      });
    };
    arm();
    io.run();
    spdlog::debug("httpd: process stopped");
    return absl::OkStatus();
  }

  Core* core_ = nullptr;
  std::string host_ = "127.0.0.1";
  uint16_t port_ = 8888;
  // HTTPD processes sharing the listen socket, each with its own event loop (and its own
  // statistics history: they sample the same shared counters).
  int processes_ = 2;
  int listen_fd_ = -1;
  bool insecure_ = false;  // a non-loopback listen without TLS is accepted (logged)
  std::string url_;
  httpd::ServerOptions options_;
  size_t history_seconds_ = 3600;
};

}  // namespace

std::unique_ptr<Module> NewHttpdModule() { return std::make_unique<HttpdModule>(); }

}  // namespace sipd
