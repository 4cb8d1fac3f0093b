// clients/opensipsctl against a real sipd: the FIFO and UNIXSOCK engines, the 1.11
// output filter, literal arguments, usrloc subcommands, timeouts and clean-up.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "tests/legacy-transports/in_process_servers.h"
#include "tests/support/sipd_harness.h"

namespace sipd::legacy::testing {
namespace {

using ::sipd::testing::SipdInstance;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

struct Result {
  int status = -1;
  std::string out;
  std::string err;
};

// Runs `opensipsctl args...` with OPENSIPSCTLRC=rc; arguments are passed through argv
// untouched (no shell quoting involved). With `term_after` > 0 the script gets SIGTERM
// after that long.
Result RunCtl(const std::string& rc, const std::vector<std::string>& args,
              std::chrono::milliseconds term_after = std::chrono::milliseconds(0)) {
  int out_pipe[2], err_pipe[2];
  if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    close(out_pipe[0]);
    close(err_pipe[0]);
    setenv("OPENSIPSCTLRC", rc.c_str(), 1);
    setenv("HOME", "/nonexistent", 1);  // no ~/.opensipsctlrc
    std::vector<char*> argv = {const_cast<char*>(OPENSIPSCTL_PATH)};
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    execv(OPENSIPSCTL_PATH, argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  std::thread terminator;
  if (term_after.count() > 0) {
    terminator = std::thread([pid, term_after] {
      std::this_thread::sleep_for(term_after);
      kill(pid, SIGTERM);
    });
  }
  Result result;
  auto drain = [](int fd, std::string* into) {
    char buffer[4096];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0) into->append(buffer, n);
    close(fd);
  };
  std::thread err_reader(drain, err_pipe[0], &result.err);
  drain(out_pipe[0], &result.out);
  err_reader.join();
  int status = 0;
  waitpid(pid, &status, 0);
  if (terminator.joinable()) terminator.join();
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

void WriteFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

class OpensipsctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // usrloc is loaded when this sipd has it, for `ul` and `online`.
    for (const bool with_usrloc : {true, false}) {
      sipd_ = new SipdInstance(
          {.grpc = false,
           .extra_config =
               absl::StrCat("loadmodule \"mi_fifo\"\n"
                            "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
                            "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
                            "loadmodule \"mi_datagram\"\n"
                            "modparam(\"mi_datagram\", \"socket_name\", \"{TMP_DIR}/mi.sock\")\n",
                            with_usrloc ? "loadmodule \"usrloc\"\n" : "")});
      if (sipd_->Start().ok()) {
        have_usrloc_ = with_usrloc;
        break;
      }
      delete sipd_;
      sipd_ = nullptr;
    }
    ASSERT_NE(sipd_, nullptr);
    const std::string dir = sipd_->tmp_dir();
    WriteFile(dir + "/fifo.rc", absl::StrCat("OSIPS_FIFO=", dir, "/sipd_fifo\nOSIPS_REPLY_DIR=",
                                             dir, "\nFIFO_TIMEOUT=5\nSIP_DOMAIN=example.com\n"));
    WriteFile(dir + "/unix.rc", absl::StrCat("CTLENGINE=UNIXSOCK\nOSIPS_UNIXSOCK=", dir,
                                             "/mi.sock\nOSIPSUNIX=", OPENSIPSUNIX_PATH,
                                             "\nCHROOT_DIR=", dir, "/chroot\nFIFO_TIMEOUT=5\n"));
    std::filesystem::create_directories(dir + "/chroot/tmp");
  }
  static void TearDownTestSuite() {
    delete sipd_;
    sipd_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::fprintf(stderr, "sipd log:\n%s\n", sipd_->log().c_str());
  }

  static std::string Rc(const std::string& name) { return sipd_->tmp_dir() + "/" + name; }
  static Result Fifo(const std::vector<std::string>& args) { return RunCtl(Rc("fifo.rc"), args); }
  static Result Unix(const std::vector<std::string>& args) { return RunCtl(Rc("unix.rc"), args); }

  // No reply FIFO left behind in the reply directory.
  static void ExpectNoReplyFifos() {
    for (const auto& entry : std::filesystem::directory_iterator(sipd_->tmp_dir())) {
      EXPECT_THAT(entry.path().filename().string(), Not(StartsWith("osips_rply_")));
    }
  }

  static SipdInstance* sipd_;
  static bool have_usrloc_;
};

SipdInstance* OpensipsctlTest::sipd_ = nullptr;
bool OpensipsctlTest::have_usrloc_ = false;

TEST_F(OpensipsctlTest, FifoPs) {
  Result r = Fifo({"fifo", "ps"});
  EXPECT_EQ(r.status, 0) << r.err;
  // The filter drops "200 OK" and the empty line.
  EXPECT_THAT(r.out, StartsWith("Process::  ID=0 PID="));
  EXPECT_THAT(r.out, HasSubstr(" Type=MI FIFO\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("200 OK")));
  EXPECT_THAT(r.out, Not(HasSubstr("\n\n")));
  ExpectNoReplyFifos();
}

TEST_F(OpensipsctlTest, FifoWhichAndHelp) {
  Result which = Fifo({"fifo", "which"});
  EXPECT_EQ(which.status, 0);
  EXPECT_THAT(which.out, StartsWith("get_statistics\nreset_statistics\nuptime\nversion\n"));
  Result help = Fifo({"fifo", "help", "ps"});
  EXPECT_EQ(help.out, "Help:: lists all processes used by OpenSIPS\nExported by:: core\n");
}

TEST_F(OpensipsctlTest, FifoGetStatistics) {
  Result r = Fifo({"fifo", "get_statistics", "core:"});
  EXPECT_EQ(r.status, 0);
  EXPECT_THAT(r.out, StartsWith("core:rcv_requests:: "));
  EXPECT_THAT(r.out, HasSubstr("\ncore:timestamp:: "));
}

TEST_F(OpensipsctlTest, PsSubcommandAndDebug) {
  Result ps = Fifo({"ps"});
  EXPECT_THAT(ps.out, HasSubstr(" Type=attendant\n"));
  Result debug = Fifo({"fifo", "debug", "3"});
  EXPECT_EQ(debug.out, "DEBUG:: 3\n");
  EXPECT_EQ(Fifo({"fifo", "debug"}).out, "DEBUG:: 3\n");
}

TEST_F(OpensipsctlTest, ErrorsArePrinted) {
  EXPECT_EQ(Fifo({"fifo", "no_such_cmd"}).out, "500 command 'no_such_cmd' not available\n");
  EXPECT_EQ(Fifo({"fifo", "help", "a", "b"}).out, "400 Too few or too many arguments\n");
}

TEST_F(OpensipsctlTest, ArgumentsAreSentLiterally) {
  // 1.11 used the request as a printf format: `%s` and `\n` were interpreted.
  ASSERT_EQ(Fifo({"fifo", "cache_store", "local", "fmt", "%s\\n%d"}).status, 0);
  EXPECT_EQ(Fifo({"fifo", "cache_fetch", "local", "fmt"}).out, "fmt = [%s\\n%d]\n");
  // An argument stops at the first empty one, as in 1.11.
  EXPECT_EQ(Fifo({"fifo", "help", "", "ignored"}).out,
            "Usage:: help mi_cmd - returns information about 'mi_cmd'\n");
}

TEST_F(OpensipsctlTest, UnixsockEngine) {
  Result r = Unix({"ps"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(" Type=MI Datagram\n"));
  EXPECT_EQ(Unix({"unixsock", "help", "ps"}).out,
            "Help:: lists all processes used by OpenSIPS\nExported by:: core\n");
  // The client's socket file is removed.
  EXPECT_TRUE(std::filesystem::is_empty(sipd_->tmp_dir() + "/chroot/tmp"));
}

TEST_F(OpensipsctlTest, MonitorRunsTheGivenNumberOfCycles) {
  const std::string rc = Rc("monitor.rc");
  WriteFile(rc, absl::StrCat(". ", Rc("fifo.rc"), "\nWATCH_PERIOD=0\n"));
  Result r = RunCtl(rc, {"monitor", "2"});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("[cycle #: 1;"));
  EXPECT_THAT(r.out, HasSubstr("[cycle #: 2;"));
  EXPECT_THAT(r.out, Not(HasSubstr("[cycle #: 3;")));
  EXPECT_THAT(r.out, HasSubstr("Up time:: "));
  EXPECT_EQ(r.err, "");
}

TEST_F(OpensipsctlTest, UlAddShowOnlineRm) {
  if (!have_usrloc_) GTEST_SKIP() << "this sipd has no usrloc module";
  Result add = Fifo({"ul", "add", "alice", "sip:alice@192.0.2.10:5060", "0"});
  EXPECT_EQ(add.status, 0) << add.err;
  EXPECT_EQ(add.out, "") << "200 OK is filtered away";
  EXPECT_THAT(Fifo({"ul", "show"}).out, HasSubstr("AOR:: alice"));
  EXPECT_THAT(Fifo({"ul", "show", "--brief"}).out, HasSubstr("AOR:: alice"));
  EXPECT_THAT(Fifo({"ul", "show", "alice"}).out,
              StartsWith("Contact:: <sip:alice@192.0.2.10:5060>;q="));
  EXPECT_THAT(Fifo({"online"}).out, HasSubstr("alice"));
  EXPECT_EQ(Fifo({"ul", "rm", "alice", "sip:alice@192.0.2.10:5060"}).out, "");
  EXPECT_EQ(Fifo({"ul", "rm", "alice"}).out, "");
  EXPECT_EQ(Fifo({"ul", "show", "alice"}).out, "404 AOR not found\n");
}

TEST_F(OpensipsctlTest, TimesOutWhenNobodyReads) {
  // A FIFO that no sipd reads, and a sipd whose MI FIFO process is stopped.
  TempDir dir;
  const std::string fifo = dir.Join("dead_fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string rc = dir.Join("rc");
  WriteFile(rc, absl::StrCat("OSIPS_FIFO=", fifo, "\nOSIPS_REPLY_DIR=", dir.path(),
                             "\nFIFO_TIMEOUT=1\n"));
  const auto start = std::chrono::steady_clock::now();
  Result r = RunCtl(rc, {"fifo", "version"});
  EXPECT_NE(r.status, 0);
  EXPECT_THAT(r.err, HasSubstr("no reply from"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(4));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_THAT(entry.path().filename().string(), Not(StartsWith("osips_rply_")));
  }
  // Missing FIFO: 1.11's exit status 3.
  WriteFile(rc, absl::StrCat("OSIPS_FIFO=", dir.Join("missing"), "\n"));
  EXPECT_EQ(RunCtl(rc, {"fifo", "version"}).status, 3);
  // Unknown engine: MI subcommands refuse.
  WriteFile(rc, "CTLENGINE=xmlrpc\n");
  Result engine = RunCtl(rc, {"ps"});
  EXPECT_NE(engine.status, 0);
  EXPECT_THAT(engine.err, HasSubstr("no control engine found"));
}

TEST_F(OpensipsctlTest, TermRemovesTheReplyFifoAtOnce) {
  TempDir dir;
  const std::string fifo = dir.Join("dead_fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string rc = dir.Join("rc");
  WriteFile(rc, absl::StrCat("OSIPS_FIFO=", fifo, "\nOSIPS_REPLY_DIR=", dir.path(),
                             "\nFIFO_TIMEOUT=20\n"));
  const auto start = std::chrono::steady_clock::now();
  Result r = RunCtl(rc, {"fifo", "version"}, std::chrono::milliseconds(500));
  EXPECT_EQ(r.status, 143);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_THAT(entry.path().filename().string(), Not(StartsWith("osips_rply_")));
  }
}

TEST_F(OpensipsctlTest, UnixsockTimesOut) {
  TempDir dir;
  const std::string rc = dir.Join("rc");
  // A bound socket nobody answers on.
  const int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = dir.Join("silent.sock");
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  WriteFile(rc, absl::StrCat("CTLENGINE=UNIXSOCK\nOSIPS_UNIXSOCK=", path, "\nOSIPSUNIX=",
                             OPENSIPSUNIX_PATH, "\nCHROOT_DIR=", dir.path(), "\nFIFO_TIMEOUT=1\n"));
  std::filesystem::create_directories(dir.Join("tmp"));
  Result r = RunCtl(rc, {"ps"});
  EXPECT_NE(r.status, 0);
  EXPECT_THAT(r.err, HasSubstr("no reply datagram"));
  close(fd);
}

}  // namespace
}  // namespace sipd::legacy::testing
