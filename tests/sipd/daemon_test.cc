// Unit tests of the attendant's start-up plan: statistics groups (spec 7.4), the process
// table (spec 10.1), MI registration order (spec 1.1), log level, timers.
#include "sipd/core/daemon.h"

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/core/timer.h"
#include "tests/support/temp_dir.h"

namespace sipd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A module whose Init and Processes are given by the test.
class ScriptedModule : public Module {
 public:
  ScriptedModule(std::string name, std::function<absl::Status(Core&)> init,
                 std::vector<ProcessSpec> processes)
      : name_(std::move(name)), init_(std::move(init)), processes_(std::move(processes)) {}
  std::string_view name() const override { return name_; }
  absl::Status SetParam(std::string_view, const ParamValue&) override { return absl::OkStatus(); }
  absl::Status Init(Core& core) override { return init_ ? init_(core) : absl::OkStatus(); }
  std::vector<ProcessSpec> Processes() override { return processes_; }

 private:
  std::string name_;
  std::function<absl::Status(Core&)> init_;
  std::vector<ProcessSpec> processes_;
};

ProcessSpec Spec(std::string name, int count) {
  ProcessSpec spec;
  spec.name = std::move(name);
  spec.count = count;
  spec.main = [](int) { return absl::OkStatus(); };
  return spec;
}

absl::Status AddCommand(Core& core, std::string name, std::string module) {
  return core.mi().Register(mi::Command::Spec{
      .name = std::move(name),
      .module = std::move(module),
      .help = "",
      .params = {},
      .flags = mi::kNoInput,
      .handler = [](mi::Call&) { return absl::OkStatus(); },
  });
}

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(temp_.ok());
    tmp_dir_ = temp_.path();
  }
  void TearDown() override { daemon_.reset(); }

  // Two listeners on free ports, 2 children, modules alpha (2 process groups, a timer, a
  // stats group, a command) and beta (one process, stats group, command).
  absl::Status Build() {
    const std::string text = absl::StrCat(
        "listen = udp:127.0.0.1:0\nlisten = udp:127.0.0.1:0\nchildren = 2\nlog_level = 1\n",
        "shm_size = 8\nrun_dir = \"", tmp_dir_, "/run\"\n",
        "loadmodule \"alpha\"\nloadmodule \"beta\"\n");
    ModuleFactory factory = [](std::string_view name) -> std::unique_ptr<Module> {
      if (name == "alpha") {
        return std::make_unique<ScriptedModule>(
            "alpha",
            [](Core& core) -> absl::Status {
              core.stats().AddGroup("alpha");
              auto c = core.stats().AddCounter("alpha", "things");
              if (!c.ok()) return c.status();
              core.AddTimer("alpha-first", std::chrono::seconds(1), [] {});
              core.AddTimer("alpha-timer", std::chrono::seconds(1), [] {});
              return AddCommand(core, "alpha_cmd", "alpha");
            },
            std::vector<ProcessSpec>{Spec("MI Alpha", 1), Spec("Alpha Worker", 2),
                                     Spec("Ignored", 0)});
      }
      if (name == "beta") {
        return std::make_unique<ScriptedModule>(
            "beta",
            [](Core& core) -> absl::Status {
              auto c = core.stats().AddCounter("beta", "items");
              if (!c.ok()) return c.status();
              return AddCommand(core, "beta_cmd", "beta");
            },
            std::vector<ProcessSpec>{Spec("MI Beta", 1)});
      }
      return nullptr;
    };
    auto config = ParseConfig(text, "test.cfg", factory);
    if (!config.ok()) return config.status();
    Daemon::Options options;
    options.argv = {"sipd", "-f", "test.cfg"};
    options.register_core_commands = [](Core& core) { return AddCommand(core, "uptime", "core"); };
    daemon_ = std::make_unique<Daemon>(*std::move(config), std::move(options));
    return daemon_->Initialize();
  }

  sipd::testing::TempDir temp_{"sipd-daemon-test"};
  std::string tmp_dir_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(DaemonTest, ProcessTableFollowsSpecOrder) {
  ASSERT_TRUE(Build().ok());
  const std::vector<std::string>& listen = daemon_->listen();
  ASSERT_EQ(listen.size(), 2u);
  EXPECT_FALSE(absl::EndsWith(listen[0], ":0")) << "bound port must be reported";

  const std::string sip0 = absl::StrCat("SIP receiver ", listen[0], " ");
  const std::string sip1 = absl::StrCat("SIP receiver ", listen[1], " ");
  EXPECT_THAT(daemon_->PlannedProcessTypes(),
              ElementsAre("attendant", "MI Alpha", "Alpha Worker", "Alpha Worker", "MI Beta", sip0,
                          sip0, sip1, sip1, "timer: alpha-timer"));

  // Before the forks: the attendant is the "starter"; other slots are empty (spec 10.1).
  std::vector<ProcessInfo> table = daemon_->process_table();
  ASSERT_EQ(table.size(), 10u);
  for (size_t i = 0; i < table.size(); ++i) EXPECT_EQ(table[i].id, static_cast<int>(i));
  EXPECT_EQ(table[0].pid, getpid());
  EXPECT_EQ(table[0].type, "starter");
  for (size_t i = 1; i < table.size(); ++i) {
    EXPECT_EQ(table[i].pid, 0);
    EXPECT_EQ(table[i].type, "");
  }
}

TEST_F(DaemonTest, StatisticsGroupsInSpecOrder) {
  ASSERT_TRUE(Build().ok());
  mi::Node root;
  ASSERT_TRUE(daemon_->stats().Collect("all", root));
  std::vector<std::string> groups;
  for (const auto& kid : root.kids) {
    const std::string group = kid->name.substr(0, kid->name.find(':'));
    if (groups.empty() || groups.back() != group) groups.push_back(group);
  }
  EXPECT_THAT(groups, ElementsAre("shmem", "core", "net", "sl", "alpha", "beta", "evi", "pkmem",
                                  "load", "mi"));

  std::vector<std::string> names;
  for (const auto& kid : root.kids) names.push_back(kid->name);
  std::vector<std::string> expected_head = {
      "shmem:total_size",         "shmem:used_size",    "shmem:real_used_size",
      "shmem:max_used_size",      "shmem:free_size",    "shmem:fragments",
      "core:rcv_requests",        "core:rcv_replies",   "core:fwd_requests",
      "core:fwd_replies",         "core:drop_requests", "core:drop_replies",
      "core:err_requests",        "core:err_replies",   "core:bad_URIs_rcvd",
      "core:unsupported_methods", "core:bad_msg_hdr",   "core:timestamp",
      "net:waiting_udp",          "sl:1xx_replies",     "sl:2xx_replies",
      "sl:3xx_replies",           "sl:4xx_replies",     "sl:5xx_replies",
      "sl:6xx_replies",           "sl:sent_replies",    "sl:sent_err_replies",
      "sl:received_ACKs",         "alpha:things",       "beta:items",
      "pkmem:0-total_size",       "pkmem:0-used_size",  "pkmem:0-real_used_size",
      "pkmem:0-max_used_size",    "pkmem:0-free_size",  "pkmem:0-fragments",
      "pkmem:1-total_size"};
  // TCP builds (spec 7.4): net:waiting_tcp after net:waiting_udp.
  expected_head.insert(expected_head.begin() + 19, "net:waiting_tcp");
  // The event interface's group follows the modules' (sipd/core/event_bus.h).
  expected_head.insert(expected_head.begin() + 31,
                       {"evi:queued_events", "evi:dropped_events", "evi:delivered_events",
                        "evi:failed_deliveries", "evi:subscriptions"});
  ASSERT_GE(names.size(), expected_head.size());
  EXPECT_EQ(std::vector<std::string>(names.begin(), names.begin() + expected_head.size()),
            expected_head);
  // 10 slots x 6 pkmem stats, one load stat per listener, then mi:async_pending and
  // calls/errors/time_us of every MI command.
  // + mi:mi_audit and mi:async_pending
  const size_t figures = 2 + 3 * daemon_->mi().commands().size();
  const std::vector<std::string> tail(names.end() - 2 - figures, names.end() - figures);
  EXPECT_THAT(tail, ElementsAre(absl::StrCat("load:", daemon_->listen()[0], "-load"),
                                absl::StrCat("load:", daemon_->listen()[1], "-load")));
  EXPECT_EQ(names.at(names.size() - figures), "mi:mi_audit");
  EXPECT_EQ(names.at(names.size() - figures + 1), "mi:async_pending");
  EXPECT_EQ(names.at(names.size() - figures + 2), "mi:get_statistics_calls");
  EXPECT_EQ(names.size(), expected_head.size() - 7 + 10 * 6 + 2 + figures);
}

TEST_F(DaemonTest, StatisticsValuesAreReal) {
  ASSERT_TRUE(Build().ok());
  mi::StatsRegistry& stats = daemon_->stats();
  EXPECT_EQ(*stats.Value("total_size"), 8u * 1024 * 1024);
  EXPECT_GT(*stats.Value("used_size"), 0u);
  EXPECT_EQ(*stats.Value("used_size") + *stats.Value("free_size"), 8u * 1024 * 1024);
  EXPECT_GE(*stats.Value("max_used_size"), *stats.Value("used_size"));
  EXPECT_GT(*stats.Value("fragments"), 0u);
  EXPECT_LT(*stats.Value("timestamp"), 5u);
  EXPECT_EQ(*stats.Value("waiting_udp"), 0u);
  // Slot 0 is this process: /proc has real figures for it.
  EXPECT_GT(*stats.Value("0-total_size"), 0u);
  EXPECT_GT(*stats.Value("0-real_used_size"), 0u);
  EXPECT_GE(*stats.Value("0-max_used_size"), *stats.Value("0-real_used_size"));
  EXPECT_GT(*stats.Value("0-fragments"), 0u);
  // Slot 1 is not forked: zeros.
  EXPECT_EQ(*stats.Value("1-total_size"), 0u);
  EXPECT_EQ(*stats.Value(absl::StrCat(daemon_->listen()[0], "-load")), 0u);

  // Counters are resettable, functions are not.
  mi::Counter requests = stats.FindCounter("rcv_requests");
  ASSERT_TRUE(requests.valid());
  requests.Inc(3);
  EXPECT_EQ(*stats.Value("rcv_requests"), 3u);
  EXPECT_TRUE(stats.Reset("rcv_requests"));
  EXPECT_EQ(*stats.Value("rcv_requests"), 0u);
  EXPECT_FALSE(stats.FindCounter("timestamp").valid());
}

TEST_F(DaemonTest, MiRegistrationOrder) {
  ASSERT_TRUE(Build().ok());
  std::vector<std::string> names;
  for (const auto& c : daemon_->mi().commands()) names.push_back(c->name());
  EXPECT_THAT(names,
              ElementsAre("get_statistics", "reset_statistics", "uptime", "alpha_cmd", "beta_cmd"));
}

TEST_F(DaemonTest, CoreAccessors) {
  ASSERT_TRUE(Build().ok());
  EXPECT_TRUE(std::filesystem::is_directory(tmp_dir_ + "/run"));
  EXPECT_EQ(std::filesystem::status(tmp_dir_ + "/run").permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_all);  // 0700: run_dir is private to sipd's user
  EXPECT_EQ(daemon_->run_dir(), tmp_dir_ + "/run");
  EXPECT_EQ(daemon_->children(), 2);
  EXPECT_THAT(daemon_->argv(), ElementsAre("sipd", "-f", "test.cfg"));
  EXPECT_NE(daemon_->FindModule("alpha"), nullptr);
  EXPECT_EQ(daemon_->FindModule("gamma"), nullptr);
  EXPECT_LE(std::abs(daemon_->start_time() - std::time(nullptr)), 2);
  EXPECT_EQ(daemon_->log_level(), 1);
  daemon_->SetLogLevel(4);
  EXPECT_EQ(daemon_->log_level(), 4);
  EXPECT_FALSE(daemon_->stopping());
  EXPECT_EQ(daemon_->pid_file(), tmp_dir_ + "/run/sipd.pid");
}

TEST_F(DaemonTest, ModuleInitErrorNamesTheModule) {
  const std::string text = absl::StrCat("listen = udp:127.0.0.1:0\nrun_dir = \"", tmp_dir_,
                                        "\"\nshm_size = 4\nloadmodule \"broken\"\n");
  ModuleFactory factory = [](std::string_view) -> std::unique_ptr<Module> {
    return std::make_unique<ScriptedModule>(
        "broken", [](Core&) { return absl::UnavailableError("database is down"); },
        std::vector<ProcessSpec>{});
  };
  auto config = ParseConfig(text, "t.cfg", factory);
  ASSERT_TRUE(config.ok());
  Daemon daemon(*std::move(config), {});
  absl::Status s = daemon.Initialize();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("module broken: init failed: database is down"));
}

TEST(TimerListTest, ProcessTypeUsesTheLastLabel) {
  TimerList timers;
  EXPECT_EQ(timers.ProcessType(), "timer");
  timers.Add("first", std::chrono::milliseconds(10), [] {});
  timers.Add("tm-utimer", std::chrono::milliseconds(10), [] {});
  EXPECT_EQ(timers.ProcessType(), "timer: tm-utimer");
}

// A Core that only answers stopping() (and counts SyncLogLevel calls) for TimerList::Run.
class StopAfterCore : public Core {
 public:
  explicit StopAfterCore(std::function<bool()> stop) : stop_(std::move(stop)) {}
  const std::string& run_dir() const override { return empty_; }
  int children() const override { return 0; }
  const std::vector<std::string>& listen() const override { return none_; }
  std::time_t start_time() const override { return 0; }
  const std::vector<std::string>& argv() const override { return none_; }
  SharedMemory& shm() override { std::abort(); }
  mi::Registry& mi() override { std::abort(); }
  mi::StatsRegistry& stats() override { std::abort(); }
  Module* FindModule(std::string_view) override { return nullptr; }
  void AddTimer(std::string, std::chrono::milliseconds, std::function<void()>) override {}
  void AddSipHandler(std::string, SipRequestHandler) override {}
  std::vector<ProcessInfo> process_table() const override { return {}; }
  int log_level() const override { return 0; }
  void SetLogLevel(int) override {}
  void RequestShutdown() override {}
  bool stopping() const override { return stop_(); }
  void SyncLogLevel() override { ++syncs; }
  std::unique_ptr<mi::Dispatcher> NewDispatcher(const mi::DispatcherOptions&) override {
    std::abort();
  }
  mi::AsyncBackend& async() override { std::abort(); }
  int syncs = 0;

 private:
  std::function<bool()> stop_;
  std::string empty_;
  std::vector<std::string> none_;
};

TEST(TimerListTest, RunsCallbacksAtTheirIntervalsUntilStopping) {
  TimerList timers;
  int fast = 0;
  int slow = 0;
  timers.Add("fast", std::chrono::milliseconds(10), [&] { ++fast; });
  timers.Add("slow", std::chrono::milliseconds(100), [&] {
    ++slow;
    throw std::runtime_error("a failing timer keeps running");
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(350);
  StopAfterCore core([&] { return std::chrono::steady_clock::now() >= deadline; });
  timers.Run(core);
  EXPECT_GE(fast, 10);
  EXPECT_GE(slow, 2);
  EXPECT_LE(slow, 4);
  EXPECT_GT(core.syncs, 0);
}

}  // namespace
}  // namespace sipd
