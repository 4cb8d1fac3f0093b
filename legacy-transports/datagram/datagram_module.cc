#include "legacy-transports/datagram/datagram_module.h"

#include "absl/strings/str_cat.h"
#include "legacy-transports/datagram/datagram_server.h"
#include "registry/authorization.h"
#include "spdlog/fmt/ranges.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

class MiDatagramModule final : public Module {
 public:
  std::string_view name() const override { return "mi_datagram"; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    if (param == "socket_name" || param == "reply_indent") {
      absl::StatusOr<std::string> text = legacy::StringParam(param, value);
      if (!text.ok()) return text.status();
      (param == "socket_name" ? config_.socket_name : config_.reply_indent) = std::move(*text);
      return absl::OkStatus();
    }
    if (param == "extra_socket_name") {
      absl::StatusOr<std::string> text = legacy::StringParam(param, value);
      if (text.ok()) config_.extra_socket_names.push_back(std::move(*text));
      return text.status();
    }
    if (param == "children_count") {
      absl::StatusOr<int64_t> count = legacy::IntParam(param, value, 1, 64);
      if (count.ok()) config_.children = static_cast<int>(*count);
      return count.status();
    }
    if (param == "socket_timeout") {
      absl::StatusOr<int64_t> ms = legacy::IntParam(param, value, 0, 60 * 1000);
      if (ms.ok()) config_.socket_timeout = std::chrono::milliseconds(*ms);
      return ms.status();
    }
    if (param == "async_timeout") {
      absl::StatusOr<int64_t> ms = legacy::IntParam(param, value, 1, 3600 * 1000);
      if (ms.ok()) config_.async_timeout = std::chrono::milliseconds(*ms);
      return ms.status();
    }
    if (param == "unix_socket_mode") {
      absl::StatusOr<mode_t> mode = legacy::ModeFromParam(param, value);
      if (mode.ok()) config_.unix_access.mode = *mode;
      return mode.status();
    }
    if (param == "udp_role") {
      absl::StatusOr<std::string> text = legacy::StringParam(param, value);
      if (!text.ok()) return text.status();
      std::optional<mi::Role> role = mi::ParseRole(*text);
      if (!role.has_value()) {
        return absl::InvalidArgumentError("mi_datagram: udp_role must be read, operate or admin");
      }
      config_.udp_role = *role;
      return absl::OkStatus();
    }
    if (param == "insecure") {
      absl::StatusOr<int64_t> on = legacy::IntParam(param, value, 0, 1);
      if (on.ok()) config_.insecure = *on == 1;
      return on.status();
    }
    if (param == "unix_socket_user") {
      return legacy::SetUserFromParam(param, value, &config_.unix_access);
    }
    if (param == "unix_socket_group") {
      return legacy::SetGroupFromParam(param, value, &config_.unix_access);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "mi_datagram: unknown parameter '", absl::string_view(param.data(), param.size()), "'"));
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    if (config_.socket_name.empty()) {
      return absl::InvalidArgumentError("mi_datagram: parameter 'socket_name' is mandatory");
    }
    // Replies dropped because the client's queue was full (it does not read), all
    // processes together.
    core.stats().AddGroup("mi_datagram");
    absl::StatusOr<mi::Counter> dropped = core.stats().AddCounter("mi_datagram", "dropped_replies");
    if (!dropped.ok()) return dropped.status();
    dropped_replies_ = *dropped;
    return absl::OkStatus();
  }

  std::vector<ProcessSpec> Processes() override {
    ProcessSpec spec;
    spec.name = "MI Datagram";
    spec.count = config_.children;
    spec.pre_fork = [this]() -> absl::Status {
      if (!sockets_.empty()) return absl::OkStatus();  // a restart reuses the sockets
      absl::StatusOr<std::vector<legacy::DatagramSockets>> sockets =
          legacy::CreateDatagramSockets(config_);
      if (!sockets.ok()) return sockets.status();
      sockets_ = std::move(*sockets);
      std::vector<Listener> listeners;  // sockets_ follow socket_name, extra_socket_names
      for (size_t i = 0; i < sockets_.size(); ++i) {
        listeners.push_back(sockets_[i].unix_path.empty()
                                ? Listener{"mi_datagram", "udp", legacy::BoundAddress(sockets_[i])}
                                : Listener{"mi_datagram", "unix", sockets_[i].unix_path});
      }
      if (core_ != nullptr) core_->ReportListeners(std::move(listeners));
      spdlog::info("mi_datagram: listening on {}{}{}", config_.socket_name,
                   config_.extra_socket_names.empty() ? "" : " ",
                   fmt::join(config_.extra_socket_names, " "));
      return absl::OkStatus();
    };
    spec.main = [this](int) {
      std::unique_ptr<mi::Dispatcher> dispatcher =
          core_->NewDispatcher({.workers = 2, .async_timeout = config_.async_timeout});
      legacy::DatagramServer server(config_, *dispatcher, sockets_, dropped_replies_);
      Core* core = core_;
      return server.Run([core] { return core->stopping(); }, [core] { core->SyncLogLevel(); });
    };
    spec.init_child = true;
    return {std::move(spec)};
  }

  void Shutdown() override {
    for (legacy::DatagramSockets& sockets : sockets_) sockets.Close();
    sockets_.clear();
  }

 private:
  legacy::DatagramConfig config_;
  std::vector<legacy::DatagramSockets> sockets_;
  mi::Counter dropped_replies_;
  Core* core_ = nullptr;
};

}  // namespace

std::unique_ptr<Module> NewMiDatagramModule() { return std::make_unique<MiDatagramModule>(); }

}  // namespace sipd
