// Test doubles for the usrloc/registrar unit tests: a Core with real shared memory, MI
// and statistics registries (no processes), and a SipRequest built from SIP text parsed
// by libosip2 that records the replies instead of sending them.
#pragma once

#include <osipparser2/osip_parser.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "registry/command.h"
#include "registry/statistics.h"
#include "sipd/api/module.h"
#include "sipd/core/shm.h"
#include "sipd/core/sip.h"

namespace sipd::testing {

class FakeCore : public Core {
 public:
  explicit FakeCore(size_t shm_bytes = 64u << 20) {
    auto shm = SharedMemory::Create(shm_bytes);
    if (!shm.ok()) abort();
    shm_ = std::move(*shm);
    auto* cells = static_cast<std::atomic<uint64_t>*>(
        shm_->Allocate(sizeof(std::atomic<uint64_t>) * kStatCells));
    for (size_t i = 0; i < kStatCells; ++i) new (&cells[i]) std::atomic<uint64_t>(0);
    stats_ = std::make_unique<mi::StatsRegistry>(std::span(cells, kStatCells));
    (void)stats_->RegisterCommands(registry_);
    char dir[] = "/tmp/sipd-usrloc-test-XXXXXX";
    if (mkdtemp(dir) == nullptr) abort();
    run_dir_ = dir;
    // A core that is never destroyed (a fuzz target's world) still leaves no directory;
    // only the process that made it removes it (a forked child's exit does not).
    static const pid_t maker = getpid();
    static const int registered = std::atexit([] {
      if (getpid() != maker) return;
      std::error_code ec;
      for (const std::string& d : LeftDirs()) std::filesystem::remove_all(d, ec);
    });
    (void)registered;
    LeftDirs().push_back(run_dir_);
  }
  ~FakeCore() override {
    std::error_code ec;
    std::filesystem::remove_all(run_dir_, ec);
    std::erase(LeftDirs(), run_dir_);
  }

  // Run directories of the cores alive in this process (removed at exit).
  static std::vector<std::string>& LeftDirs() {
    static auto* dirs = new std::vector<std::string>();
    return *dirs;
  }

  const std::string& run_dir() const override { return run_dir_; }
  int children() const override { return 2; }
  const std::vector<std::string>& listen() const override { return listen_; }
  std::time_t start_time() const override { return 0; }
  const std::vector<std::string>& argv() const override { return argv_; }
  SharedMemory& shm() override { return *shm_; }
  mi::Registry& mi() override { return registry_; }
  mi::StatsRegistry& stats() override { return *stats_; }
  Module* FindModule(std::string_view name) override {
    for (Module* m : modules_) {
      if (m->name() == name) return m;
    }
    return nullptr;
  }
  void AddTimer(std::string label, std::chrono::milliseconds, std::function<void()> fn) override {
    timers_.emplace_back(std::move(label), std::move(fn));
  }
  void AddSipHandler(std::string method, SipRequestHandler handler) override {
    sip_handlers_[method] = std::move(handler);
  }
  std::vector<ProcessInfo> process_table() const override { return {}; }
  int log_level() const override { return 3; }
  void SetLogLevel(int) override {}
  void RequestShutdown() override {}
  bool stopping() const override { return false; }
  void SyncLogLevel() override {}
  std::unique_ptr<mi::Dispatcher> NewDispatcher(const mi::DispatcherOptions& options) override {
    return std::make_unique<mi::Dispatcher>(registry_, &async_, options);
  }
  mi::AsyncBackend& async() override { return async_; }
  mi::LocalAsyncBackend async_;

  void AddModule(Module* module) { modules_.push_back(module); }
  void RunTimers() {
    for (auto& [label, fn] : timers_) fn();
  }
  const std::vector<std::pair<std::string, std::function<void()>>>& timers() const {
    return timers_;
  }
  // The functions of the timers registered as `label`.
  std::vector<std::function<void()>> TimersNamed(std::string_view label) const {
    std::vector<std::function<void()>> out;
    for (const auto& [name, fn] : timers_) {
      if (name == label) out.push_back(fn);
    }
    return out;
  }
  std::map<std::string, SipRequestHandler>& sip_handlers() { return sip_handlers_; }

 private:
  static constexpr size_t kStatCells = 256;
  std::unique_ptr<SharedMemory> shm_;
  mi::Registry registry_;
  std::unique_ptr<mi::StatsRegistry> stats_;
  std::string run_dir_;
  std::vector<std::string> listen_ = {"udp:127.0.0.1:5060"};
  std::vector<std::string> argv_ = {"sipd"};
  std::vector<Module*> modules_;
  std::vector<std::pair<std::string, std::function<void()>>> timers_;
  std::map<std::string, SipRequestHandler> sip_handlers_;
};

// A SipRequest from SIP text; replies are recorded.
class TestSipRequest : public SipRequest {
 public:
  struct Sent {
    int code = 0;
    std::string reason;
    std::vector<std::string> headers;
    // Values of the headers named `name` (case-sensitive prefix "Name: ").
    std::vector<std::string> Header(std::string_view name) const {
      std::vector<std::string> out;
      const std::string prefix = absl::StrCat(std::string(name), ": ");
      for (const auto& h : headers) {
        if (h.rfind(prefix, 0) == 0) out.push_back(h.substr(prefix.size()));
      }
      return out;
    }
  };

  // nullptr if libosip2 cannot parse `text`.
  static std::unique_ptr<TestSipRequest> Parse(std::string text,
                                               std::string source_ip = "127.0.0.1",
                                               uint16_t source_port = 5070) {
    static const bool initialised = [] {
      parser_init();
      return true;
    }();
    (void)initialised;
    auto request = std::unique_ptr<TestSipRequest>(new TestSipRequest());
    request->raw_ = std::move(text);
    osip_message_init(&request->msg_);
    if (osip_message_parse(request->msg_, request->raw_.data(), request->raw_.size()) != 0) {
      return nullptr;
    }
    request->method_ = request->msg_->sip_method != nullptr ? request->msg_->sip_method : "";
    request->ip_ = std::move(source_ip);
    request->port_ = source_port;
    return request;
  }
  ~TestSipRequest() override {
    if (msg_ != nullptr) osip_message_free(msg_);
  }

  osip_message_t* message() override { return msg_; }
  const std::string& method() const override { return method_; }
  std::string_view raw() const override { return raw_; }
  const sockaddr_storage& source() const override { return source_; }
  std::string source_ip() const override { return ip_; }
  uint16_t source_port() const override { return port_; }
  const std::string& socket() const override { return socket_; }
  absl::Status Reply(int code, std::string_view reason, const std::vector<std::string>& headers,
                     std::string_view) override {
    replies.push_back(Sent{code, std::string(reason), headers});
    return absl::OkStatus();
  }

  std::vector<Sent> replies;

 private:
  TestSipRequest() = default;
  osip_message_t* msg_ = nullptr;
  std::string raw_;
  std::string method_;
  std::string ip_;
  uint16_t port_ = 0;
  sockaddr_storage source_{};
  std::string socket_ = "udp:127.0.0.1:5060";
};

// A REGISTER for `user`@example.com; `headers` (lines without CRLF) add Contact,
// Expires, etc.
inline std::string MakeRegister(std::string_view user, std::string_view callid, uint32_t cseq,
                                const std::vector<std::string>& headers) {
  std::string msg = absl::StrCat(
      "REGISTER sip:example.com SIP/2.0\r\n"
      "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-",
      std::string(callid), "-", cseq,
      "\r\n"
      "Max-Forwards: 70\r\n"
      "From: <sip:",
      std::string(user), "@example.com>;tag=t1\r\nTo: <sip:", std::string(user),
      "@example.com>\r\nCall-ID: ", std::string(callid), "\r\nCSeq: ", cseq, " REGISTER\r\n");
  for (const auto& h : headers) absl::StrAppend(&msg, h, "\r\n");
  absl::StrAppend(&msg, "Content-Length: 0\r\n\r\n");
  return msg;
}

}  // namespace sipd::testing
