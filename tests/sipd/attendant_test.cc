// The attendant's life cycle with a scripted module, run in a forked copy of this test
// (Daemon::Run forks and supervises real processes): pre_fork/post_fork, ChildInit ranks,
// module process main(index), RequestShutdown, Shutdown(), pid file, start-up failure.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sipd/core/daemon.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait_until.h"

namespace sipd {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

// Appends one line to `path` (O_APPEND: lines from several processes do not mix).
void Note(const std::string& path, const std::string& line) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) return;
  const std::string text = line + "\n";
  (void)!write(fd, text.data(), text.size());
  close(fd);
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> lines = absl::StrSplit(text.str(), '\n', absl::SkipEmpty());
  return lines;
}

// Module "probe": two processes; process 0 asks for shutdown once the pid file exists.
class ProbeModule : public Module {
 public:
  ProbeModule(std::string notes, int failing_rank)
      : notes_(std::move(notes)), failing_rank_(failing_rank) {}
  std::string_view name() const override { return "probe"; }
  absl::Status SetParam(std::string_view, const ParamValue&) override { return absl::OkStatus(); }
  absl::Status Init(Core& core) override {
    core_ = &core;
    core.AddTimer("probe-timer", std::chrono::milliseconds(50), [] {});
    return absl::OkStatus();
  }
  std::vector<ProcessSpec> Processes() override {
    ProcessSpec spec;
    spec.name = "Probe";
    spec.count = 2;
    spec.pre_fork = [this] {
      Note(notes_, "pre_fork");
      return absl::OkStatus();
    };
    spec.post_fork = [this] { Note(notes_, "post_fork"); };
    spec.main = [this](int index) {
      Note(notes_, absl::StrCat("main ", index));
      const std::string pid_file = core_->run_dir() + "/sipd.pid";
      while (!core_->stopping()) {
        if (index == 0 && access(pid_file.c_str(), F_OK) == 0) {
          Note(notes_, absl::StrCat("table ", core_->process_table().size(), " ",
                                    core_->process_table()[0].type));
          core_->RequestShutdown();
        }
        usleep(20 * 1000);
      }
      return absl::OkStatus();
    };
    return {spec};
  }
  absl::Status ChildInit(int rank) override {
    Note(notes_, absl::StrCat("init ", rank));
    if (rank == failing_rank_) return absl::InternalError("refusing this rank");
    return absl::OkStatus();
  }
  void Shutdown() override { Note(notes_, "shutdown"); }

 private:
  std::string notes_;
  int failing_rank_;
  Core* core_ = nullptr;
};

class AttendantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(temp_.ok());
    dir_ = temp_.path();
    notes_ = dir_ + "/notes";
  }
  void TearDown() override {
    if (child_ > 0) {
      kill(-child_, SIGKILL);
      waitpid(child_, nullptr, 0);
    }
  }

  // Runs a daemon with the probe module in a forked process group; returns its exit code
  // (-1 if it did not finish within 10 s).
  int RunDaemon(int failing_rank) {
    child_ = fork();
    if (child_ == 0) {
      setpgid(0, 0);
      const std::string text =
          absl::StrCat("listen = udp:127.0.0.1:0\nchildren = 2\nlog_level = 2\nshm_size = 4\n",
                       "run_dir = \"", dir_, "/run\"\nloadmodule \"probe\"\n");
      const std::string notes = notes_;
      auto config = ParseConfig(text, "t.cfg", [&](std::string_view) {
        return std::make_unique<ProbeModule>(notes, failing_rank);
      });
      if (!config.ok()) _exit(10);
      Daemon daemon(*std::move(config), {});
      if (!daemon.Initialize().ok()) _exit(11);
      _exit(daemon.Run());
    }
    int status = 0;
    if (!sipd::testing::WaitForExit(child_, &status, std::chrono::seconds(10))) return -1;
    child_ = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  sipd::testing::TempDir temp_{"sipd-attendant-test"};
  std::string dir_;
  std::string notes_;
  pid_t child_ = 0;
};

TEST_F(AttendantTest, FullLifeCycle) {
  ASSERT_EQ(RunDaemon(/*failing_rank=*/100), 0);
  const std::vector<std::string> lines = Lines(notes_);
  // Hooks around the module group, in the attendant, once.
  EXPECT_EQ(std::count(lines.begin(), lines.end(), "pre_fork"), 1);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), "post_fork"), 1);
  EXPECT_LT(std::find(lines.begin(), lines.end(), "pre_fork") - lines.begin(),
            std::find(lines.begin(), lines.end(), "post_fork") - lines.begin());
  // ChildInit ranks: 2 module processes, SIP workers 1 and 2, the timer.
  EXPECT_EQ(std::count(lines.begin(), lines.end(), "init -2"), 2);
  EXPECT_THAT(lines, Contains("init 1"));
  EXPECT_THAT(lines, Contains("init 2"));
  EXPECT_THAT(lines, Contains("init -1"));
  EXPECT_THAT(lines, Contains("main 0"));
  EXPECT_THAT(lines, Contains("main 1"));
  // attendant + 2 Probe + 2 SIP receivers + timer; slot 0 renamed once all are forked.
  EXPECT_THAT(lines, Contains("table 6 attendant"));
  EXPECT_EQ(lines.back(), "shutdown");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/run/sipd.pid"));
}

TEST_F(AttendantTest, FailedChildInitAbortsStartUp) {
  // The timer process (rank -1) refuses to start: sipd exits 1, writes no pid file and
  // stops the processes it had already forked.
  ASSERT_EQ(RunDaemon(kRankTimer), 1);
  const std::vector<std::string> lines = Lines(notes_);
  EXPECT_THAT(lines, Contains("init -1"));
  EXPECT_THAT(lines, Not(Contains(HasSubstr("table "))));
  EXPECT_EQ(lines.back(), "shutdown");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/run/sipd.pid"));
}

}  // namespace
}  // namespace sipd
