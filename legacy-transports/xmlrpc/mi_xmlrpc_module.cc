#include "legacy-transports/xmlrpc/mi_xmlrpc_module.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "legacy-transports/xmlrpc/server.h"
#include "legacy-transports/xmlrpc/xmlrpc_processor.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

constexpr int kDefaultPort = 8080;

class MiXmlrpcModule : public Module {
 public:
  ~MiXmlrpcModule() override { CloseListenSocket(); }

  std::string_view name() const override { return "mi_xmlrpc"; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    const std::string name(param);
    if (name == "listen" || name == "log_file") {
      const auto* text = std::get_if<std::string>(&value);
      if (text == nullptr) return Invalid(name, "expects a string");
      if (name == "listen") {
        unsigned char address[sizeof(in6_addr)];
        if (inet_pton(AF_INET, text->c_str(), address) != 1 &&
            inet_pton(AF_INET6, text->c_str(), address) != 1) {
          return Invalid(name, absl::StrCat("'", *text, "' is not an IPv4 or IPv6 address"));
        }
        listen_ = *text;
      } else {
        server_options_.log_file = *text;
      }
      return absl::OkStatus();
    }

    const auto* number = std::get_if<int64_t>(&value);
    auto require_range = [&](int64_t low, int64_t high) -> absl::Status {
      if (number == nullptr) return Invalid(name, "expects an integer");
      if (*number < low || *number > high) {
        return Invalid(name, absl::StrCat(*number, " is out of range [", low, ", ", high, "]"));
      }
      return absl::OkStatus();
    };
    if (name == "port") {
      if (number == nullptr) return Invalid(name, "expects an integer");
      if (*number > 65535) return Invalid(name, absl::StrCat(*number, " is not a TCP port"));
      if (*number != 0 && *number <= 1024) {  // 0: any free port (tests)
        // As OpenSIPS: privileged (and nonsense) ports fall back to the default.
        spdlog::warn("mi_xmlrpc: port {} <= 1024 is not allowed, using {}", *number, kDefaultPort);
        port_ = kDefaultPort;
      } else {
        port_ = static_cast<int>(*number);
      }
    } else if (name == "reply_option") {
      if (number == nullptr || (*number != 0 && *number != 1)) {
        return Invalid(name, "must be 0 (one string) or 1 (array of strings)");
      }
      processor_options_.reply_option =
          *number == 1 ? xmlrpc::ReplyOption::kArray : xmlrpc::ReplyOption::kString;
    } else if (name == "buffer_size") {
      if (absl::Status s = require_range(1, 64 << 20); !s.ok()) return s;
      processor_options_.buffer_size = static_cast<size_t>(*number);
    } else if (name == "max_body_size") {
      if (absl::Status s = require_range(64, 64 << 20); !s.ok()) return s;
      server_options_.max_body_size = static_cast<size_t>(*number);
    } else if (name == "read_timeout" || name == "header_timeout" || name == "idle_timeout" ||
               name == "stall_timeout" || name == "reply_timeout") {
      if (absl::Status s = require_range(1, 3600); !s.ok()) return s;
      const std::chrono::seconds seconds(*number);
      if (name == "read_timeout") server_options_.read_timeout = seconds;
      if (name == "header_timeout") server_options_.header_timeout = seconds;
      if (name == "idle_timeout") server_options_.idle_timeout = seconds;
      if (name == "stall_timeout") server_options_.stall_timeout = seconds;
      if (name == "reply_timeout") server_options_.reply_timeout = seconds;
    } else if (name == "max_connections") {
      if (absl::Status s = require_range(1, 1 << 20); !s.ok()) return s;
      server_options_.max_connections = static_cast<int>(*number);
    } else if (name == "max_connections_per_peer") {
      if (absl::Status s = require_range(1, 1 << 20); !s.ok()) return s;
      server_options_.max_connections_per_peer = static_cast<int>(*number);
    } else if (name == "processes") {
      if (absl::Status s = require_range(1, 64); !s.ok()) return s;
      processes_ = static_cast<int>(*number);
    } else if (name == "insecure") {
      if (absl::Status s = require_range(0, 1); !s.ok()) return s;
      insecure_ = *number == 1;
    } else if (name == "keep_alive_max") {
      if (absl::Status s = require_range(0, 1 << 30); !s.ok()) return s;
      server_options_.keep_alive_max = static_cast<int>(*number);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("mi_xmlrpc: unknown parameter '", name, "'"));
    }
    return absl::OkStatus();
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    processor_options_.max_xml_size = server_options_.max_body_size;
    // Exposure rule: XML-RPC has no TLS here, so a non-loopback listener would carry
    // tokens and MI traffic in clear text.
    if (!mi::IsLoopbackHost(listen_)) {
      if (!insecure_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "mi_xmlrpc: listen ", listen_,
            " is not a loopback address and XML-RPC has no TLS: tokens and commands would "
            "cross the network in clear text; listen on 127.0.0.1 (use mi_grpc with TLS for "
            "remote management), or set modparam(\"mi_xmlrpc\", \"insecure\", 1)"));
      }
      spdlog::critical("mi_xmlrpc: INSECURE: listening on {} without TLS", listen_);
    }
    if (!server_options_.log_file.empty()) {
      // Fail at start-up, not later in the forked process.
      const int fd =
          open(server_options_.log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
      if (fd < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "mi_xmlrpc: cannot open log_file '", server_options_.log_file, "': ", strerror(errno)));
      }
      close(fd);
    }
    return absl::OkStatus();
  }

  std::vector<ProcessSpec> Processes() override {
    ProcessSpec spec;
    spec.name = "MI XMLRPC";
    spec.count = processes_;
    spec.init_child = true;
    spec.pre_fork = [this]() -> absl::Status {
      CloseListenSocket();
      absl::StatusOr<int> fd = xmlrpc::OpenListenSocket(listen_, port_);
      if (!fd.ok()) return fd.status();
      listen_fd_ = *fd;
      const std::string url = absl::StrCat(
          "http://", listen_.find(':') != std::string::npos ? "[" + listen_ + "]" : listen_, ":",
          xmlrpc::BoundPort(listen_fd_).value_or(port_), "/RPC2");
      spdlog::info("mi_xmlrpc: listening on {} (POST)", url);
      if (core_ != nullptr) core_->ReportListeners({{"mi_xmlrpc", "http", url}});
      return absl::OkStatus();
    };
    spec.main = [this](int /*index*/) { return RunProcess(); };
    return {std::move(spec)};
  }

  void Shutdown() override { CloseListenSocket(); }

 private:
  static absl::Status Invalid(const std::string& param, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("mi_xmlrpc: parameter '", param, "' ", why));
  }

  void CloseListenSocket() {
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
  }

  absl::Status RunProcess() {
    if (listen_fd_ < 0) {
      // pre_fork did not run (or failed): bind here so the process is still useful.
      absl::StatusOr<int> fd = xmlrpc::OpenListenSocket(listen_, port_);
      if (!fd.ok()) return fd.status();
      listen_fd_ = *fd;
    }
    RaiseDescriptorLimit();
    std::unique_ptr<mi::Dispatcher> dispatcher = core_->NewDispatcher({.workers = 2});
    xmlrpc::XmlrpcProcessor processor(*dispatcher, processor_options_);
    xmlrpc::XmlrpcServer server(listen_fd_, server_options_, processor, *dispatcher);
    if (absl::Status status = server.Open(); !status.ok()) return status;
    spdlog::debug("mi_xmlrpc: process ready");
    server.Run([this] { return core_->stopping(); }, [this] { core_->SyncLogLevel(); });
    spdlog::debug("mi_xmlrpc: process stopped");
    return absl::OkStatus();
  }

  // One descriptor per connection: lift the soft limit to what max_connections needs
  // (within the hard limit), and say so if the hard limit is lower.
  void RaiseDescriptorLimit() {
    const rlim_t wanted = static_cast<rlim_t>(server_options_.max_connections) + 64;
    struct rlimit limit {};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= wanted) return;
    limit.rlim_cur = std::min(wanted, limit.rlim_max);
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur < wanted) {
      spdlog::warn(
          "mi_xmlrpc: descriptor limit {} is below max_connections {}: connections past it "
          "are refused",
          limit.rlim_cur, server_options_.max_connections);
    }
  }

  Core* core_ = nullptr;
  std::string listen_ = "127.0.0.1";
  bool insecure_ = false;
  int port_ = kDefaultPort;
  // MI XMLRPC processes sharing the listen socket, each with its own event loop.
  int processes_ = 2;
  int listen_fd_ = -1;
  xmlrpc::ServerOptions server_options_;
  xmlrpc::XmlrpcProcessor::Options processor_options_;
};

}  // namespace

std::unique_ptr<Module> NewMiXmlrpcModule() { return std::make_unique<MiXmlrpcModule>(); }

}  // namespace sipd
