#include "legacy-transports/fifo/fifo_module.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include "absl/strings/str_cat.h"
#include "legacy-transports/fifo/fifo_server.h"
#include "spdlog/spdlog.h"

namespace sipd {
namespace {

using legacy::FifoConfig;

class MiFifoModule final : public Module {
 public:
  std::string_view name() const override { return "mi_fifo"; }

  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    if (param == "fifo_name") return Assign(legacy::StringParam(param, value), &config_.fifo_name);
    if (param == "fifo_mode") {
      absl::StatusOr<mode_t> mode = legacy::ModeFromParam(param, value);
      if (mode.ok()) config_.access.mode = *mode;
      return mode.status();
    }
    if (param == "fifo_user") return legacy::SetUserFromParam(param, value, &config_.access);
    if (param == "fifo_group") return legacy::SetGroupFromParam(param, value, &config_.access);
    if (param == "reply_dir") return Assign(legacy::StringParam(param, value), &config_.reply_dir);
    if (param == "reply_indent") {
      return Assign(legacy::StringParam(param, value), &config_.reply_indent);
    }
    if (param == "reply_timeout" || param == "request_timeout") {
      absl::StatusOr<int64_t> ms = legacy::IntParam(param, value, 0, 3600 * 1000);
      if (!ms.ok()) return ms.status();
      (param == "reply_timeout" ? config_.reply_timeout : config_.request_timeout) =
          std::chrono::milliseconds(*ms);
      return absl::OkStatus();
    }
    if (param == "reply_deadline") {
      absl::StatusOr<int64_t> ms = legacy::IntParam(param, value, 1, 24 * 3600 * 1000);
      if (ms.ok()) config_.reply_deadline = std::chrono::milliseconds(*ms);
      return ms.status();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "mi_fifo: unknown parameter '", absl::string_view(param.data(), param.size()), "'"));
  }

  absl::Status Init(Core& core) override {
    core_ = &core;
    if (config_.fifo_name.empty()) {
      return absl::InvalidArgumentError("mi_fifo: parameter 'fifo_name' is mandatory");
    }
    if (config_.reply_dir.empty()) config_.reply_dir = "/tmp/";
    // 1.11 concatenates reply_dir and the reply name; we add the missing '/'.
    if (config_.reply_dir.back() != '/') config_.reply_dir.push_back('/');
    if (config_.reply_timeout.count() == 0) {
      return absl::InvalidArgumentError("mi_fifo: parameter 'reply_timeout' must be > 0");
    }
    return legacy::CheckReplyDir(config_.reply_dir);
  }

  std::vector<ProcessSpec> Processes() override {
    ProcessSpec spec;
    spec.name = "MI FIFO";
    spec.count = 1;
    spec.pre_fork = [this]() -> absl::Status {
      if (fifo_created_) return absl::OkStatus();  // a restart keeps the FIFO
      absl::Status status = legacy::PrepareRequestFifo(config_);
      fifo_created_ = status.ok();
      return status;
    };
    spec.main = [this](int) { return RunProcess(); };
    spec.init_child = true;
    // Start-up completes once this process reads the FIFO: a client that opens it
    // without blocking (O_NONBLOCK) before then would get ENXIO, "no reader".
    spec.reports_listeners = true;
    return {std::move(spec)};
  }

  void Shutdown() override {
    struct stat st;
    if (fifo_created_ && lstat(config_.fifo_name.c_str(), &st) == 0 && S_ISFIFO(st.st_mode)) {
      unlink(config_.fifo_name.c_str());
    }
  }

 private:
  static absl::Status Assign(absl::StatusOr<std::string> value, std::string* out) {
    if (!value.ok()) return value.status();
    *out = std::move(*value);
    return absl::OkStatus();
  }

  absl::Status RunProcess() {
    // A client that closes its reply FIFO early must not kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    RaiseOpenFileLimit();
    std::unique_ptr<mi::Dispatcher> dispatcher = core_->NewDispatcher({.workers = 2});
    legacy::FifoServer server(config_, *dispatcher);
    if (absl::Status status = server.Open(); !status.ok()) return status;
    core_->ReportListeners({{"mi_fifo", "fifo", config_.fifo_name}});
    Core* core = core_;
    return server.Run([core] { return core->stopping(); }, [core] { core->SyncLogLevel(); });
  }

  // Every request in flight holds its reply FIFO open (up to legacy::kFifoMaxClients):
  // the soft open-file limit is raised to the hard one, for this process only.
  static void RaiseOpenFileLimit() {
    rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) == 0) {
      spdlog::debug("open-file limit raised from {} to {}", before, limit.rlim_cur);
    }
  }

  FifoConfig config_;
  Core* core_ = nullptr;
  bool fifo_created_ = false;
};

}  // namespace

std::unique_ptr<Module> NewMiFifoModule() { return std::make_unique<MiFifoModule>(); }

}  // namespace sipd
