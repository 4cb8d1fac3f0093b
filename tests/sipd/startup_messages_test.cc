// What sipd tells an operator at start-up, with a real sipd: the banner and
// RUN_DIR/listeners (every transport, port 0 resolved), and the start-up errors a
// newcomer meets (port in use, unknown module, missing run_dir parent, unsafe run_dir).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// A socket of the test's own on 127.0.0.1 port 0 (TCP listening, or UDP), so sipd finds
// its port taken.
class HeldPort {
 public:
  explicit HeldPort(int type) : fd_(socket(AF_INET, type | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        (type == SOCK_STREAM && listen(fd_, 1) != 0) ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return;
    }
    port_ = ntohs(address.sin_port);
  }
  ~HeldPort() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

// Starts sipd on `config` (run_dir = tmp_dir/run unless the config says otherwise).
absl::Status StartWith(SipdInstance& sipd, const std::string& config,
                       const std::string& run_dir_name = "run") {
  absl::StatusOr<std::string> tmp = sipd.MakeTmpDir();
  if (!tmp.ok()) return tmp.status();
  const std::string path = *tmp + "/test.cfg";
  std::ofstream(path) << absl::StrReplaceAll(config, {{"{TMP}", *tmp}});
  return sipd.StartWithConfig(path, *tmp + "/" + run_dir_name);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(StartupBannerTest, ListsEveryListenerAndFileAndWritesListeners) {
  SipdInstance sipd;
  const absl::Status started = StartWith(sipd, R"(listen = udp:127.0.0.1:0
children = 1
log_level = 3
run_dir = "{TMP}/run"
loadmodule "usrloc"
modparam("usrloc", "db_mode", 1)
loadmodule "registrar"
loadmodule "mi_grpc"
modparam("mi_grpc", "listen", "127.0.0.1:0")
loadmodule "mi_fifo"
modparam("mi_fifo", "fifo_name", "${run_dir}/opensips_fifo")
modparam("mi_fifo", "reply_dir", "${run_dir}")
loadmodule "mi_datagram"
modparam("mi_datagram", "socket_name", "${run_dir}/opensips.sock")
loadmodule "mi_xmlrpc"
modparam("mi_xmlrpc", "port", 0)
)");
  ASSERT_TRUE(started.ok()) << started;
  const std::string run = sipd.run_dir();

  // RUN_DIR/listeners: the bound addresses, port 0 resolved, in the documented format.
  const int sip = sipd.listener_port("sip", "udp");
  const int grpc = sipd.listener_port("mi_grpc", "grpc");
  const int xmlrpc = sipd.listener_port("mi_xmlrpc", "http");
  EXPECT_GT(sip, 0);
  EXPECT_GT(grpc, 0);
  EXPECT_GT(xmlrpc, 0);
  EXPECT_EQ(sipd.sip_port(), sip);
  EXPECT_EQ(sipd.grpc_port(), grpc);
  EXPECT_EQ(sipd.listener_address("mi_fifo", "fifo"), run + "/opensips_fifo");
  EXPECT_EQ(sipd.listener_address("mi_datagram", "unix"), run + "/opensips.sock");
  EXPECT_EQ(sipd.listener_address("mi_xmlrpc"), absl::StrCat("http://127.0.0.1:", xmlrpc, "/RPC2"));
  EXPECT_EQ(sipd.listener_address("usrloc", "sqlite"), run + "/usrloc.sqlite");
  EXPECT_THAT(ReadText(run + "/listeners"),
              HasSubstr(absl::StrCat("# sipd pid ", sipd.pid(), ": MODULE PROTOCOL ADDRESS")));

  // run_dir: 0700.
  struct stat st {};
  ASSERT_EQ(stat(run.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  // The banner: one block naming each of them, and where the files are.
  const std::string log = sipd.log();
  EXPECT_THAT(log, AllOf(HasSubstr(absl::StrCat(" started: pid ", sipd.pid())),
                         HasSubstr("Listening:"), HasSubstr(absl::StrCat("127.0.0.1:", sip)),
                         HasSubstr(absl::StrCat("127.0.0.1:", grpc)),
                         HasSubstr(absl::StrCat("http://127.0.0.1:", xmlrpc, "/RPC2")),
                         HasSubstr(run + "/opensips_fifo"), HasSubstr(run + "/opensips.sock"),
                         HasSubstr("Files:"), HasSubstr(run + "/usrloc.sqlite"),
                         HasSubstr(run + " (sipd.pid, listeners)")));
  const size_t banner = log.find("Listening:");
  ASSERT_NE(banner, std::string::npos);
  for (const char* line : {"\n  sip ", "\n  mi_grpc ", "\n  mi_fifo ", "\n  mi_datagram ",
                           "\n  mi_xmlrpc ", "\n  usrloc ", "\n  run_dir "}) {
    EXPECT_NE(log.find(line, banner), std::string::npos) << line << "\n" << log;
  }

  ASSERT_TRUE(sipd.Stop().ok()) << sipd.log();
  EXPECT_NE(access((run + "/listeners").c_str(), F_OK), 0) << "listeners left behind";
}

TEST(StartupBannerTest, RestartedGrpcProcessRewritesListeners) {
  SipdInstance sipd;
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  const int before = sipd.grpc_port();
  // The MI gRPC process: the only child whose comm is "sipd:MI gRPC".
  pid_t grpc_pid = 0;
  for (pid_t child : ChildPids(sipd.pid())) {
    if (ReadText(absl::StrCat("/proc/", child, "/comm")) == "sipd:MI gRPC\n") grpc_pid = child;
  }
  ASSERT_NE(grpc_pid, 0);
  ASSERT_EQ(kill(grpc_pid, SIGKILL), 0);
  // Port 0 again: the restarted process reports the port it got.
  ASSERT_TRUE(WaitUntil(
      [&] {
        const std::string text = ReadText(sipd.run_dir() + "/listeners");
        return text.find("mi_grpc grpc ") != std::string::npos &&
               sipd.listener_port("mi_grpc") != before;
      },
      std::chrono::seconds(15)))
      << sipd.log();
  EXPECT_THAT(sipd.log(), HasSubstr("restarted as pid"));
  EXPECT_TRUE(sipd.Stop().ok()) << sipd.log();
}

TEST(StartupErrorTest, SipPortInUseNamesPortConfigLineAndHolder) {
  HeldPort held(SOCK_DGRAM);
  ASSERT_NE(held.port(), 0);
  SipdInstance sipd;
  const absl::Status started =
      StartWith(sipd, absl::StrCat("children = 1\nrun_dir = \"{TMP}/run\"\n",
                                   "listen = udp:127.0.0.1:", held.port(), "\n"));
  ASSERT_FALSE(started.ok());
  const std::string log = sipd.log();
  EXPECT_THAT(log,
              AllOf(HasSubstr(absl::StrCat("port ", held.port(), " is already in use")),
                    HasSubstr(absl::StrCat("test.cfg:3: listen = udp:127.0.0.1:", held.port())),
                    HasSubstr(absl::StrCat("held by: udp 127.0.0.1:", held.port())),
                    HasSubstr(absl::StrCat("(pid ", getpid(), ")"))))
      << log;
}

TEST(StartupErrorTest, GrpcPortInUseNamesTheModparamLineAndHolder) {
  HeldPort held(SOCK_STREAM);
  ASSERT_NE(held.port(), 0);
  SipdInstance sipd;
  const absl::Status started = StartWith(
      sipd, absl::StrCat("listen = udp:127.0.0.1:0\nchildren = 1\nrun_dir = \"{TMP}/run\"\n",
                         "loadmodule \"mi_grpc\"\n", "modparam(\"mi_grpc\", \"listen\", ",
                         "\"127.0.0.1:", held.port(), "\")\n"));
  ASSERT_FALSE(started.ok());
  const std::string log = sipd.log();
  EXPECT_THAT(log, AllOf(HasSubstr(absl::StrCat("port ", held.port(), " is already in use")),
                         HasSubstr(absl::StrCat("test.cfg:5: modparam(\"mi_grpc\", \"listen\", "
                                                "\"127.0.0.1:",
                                                held.port(), "\")")),
                         HasSubstr(absl::StrCat("held by: tcp 127.0.0.1:", held.port())),
                         HasSubstr(absl::StrCat("(pid ", getpid(), ")"))))
      << log;
}

TEST(StartupErrorTest, XmlrpcPortInUseNamesThePortLine) {
  HeldPort held(SOCK_STREAM);
  ASSERT_NE(held.port(), 0);
  SipdInstance sipd;
  const absl::Status started = StartWith(
      sipd, absl::StrCat("listen = udp:127.0.0.1:0\nchildren = 1\nrun_dir = \"{TMP}/run\"\n",
                         "loadmodule \"mi_xmlrpc\"\nmodparam(\"mi_xmlrpc\", \"port\", ",
                         held.port(), ")\n"));
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(sipd.log(),
              AllOf(HasSubstr(absl::StrCat("port ", held.port(), " is already in use")),
                    HasSubstr(absl::StrCat("test.cfg:5: modparam(\"mi_xmlrpc\", \"port\", ",
                                           held.port(), ")")),
                    HasSubstr(absl::StrCat("(pid ", getpid(), ")"))))
      << sipd.log();
}

TEST(StartupErrorTest, UnknownModuleListsTheKnownOnes) {
  SipdInstance sipd;
  const absl::Status started = StartWith(
      sipd, "listen = udp:127.0.0.1:0\nrun_dir = \"{TMP}/run\"\nloadmodule \"mi_http\"\n");
  ASSERT_FALSE(started.ok());
  // The list grows with every module: check its start, order and a few names.
  EXPECT_THAT(sipd.log(), AllOf(HasSubstr("test.cfg:3: unknown module \"mi_http\"; sipd has: "),
                                HasSubstr("mi_datagram, mi_fifo, mi_grpc, mi_selftest, mi_xmlrpc, "
                                          "registrar, "),
                                HasSubstr(", usrloc\n")))
      << sipd.log();
}

TEST(StartupErrorTest, MissingRunDirParentSaysWhatToCreate) {
  SipdInstance sipd;
  const absl::Status started =
      StartWith(sipd, "listen = udp:127.0.0.1:0\nrun_dir = \"{TMP}/missing/run\"\n", "missing/run");
  ASSERT_FALSE(started.ok());
  const std::string parent = sipd.tmp_dir() + "/missing";
  EXPECT_THAT(sipd.log(),
              AllOf(HasSubstr(absl::StrCat("its parent directory ", parent, " does not exist")),
                    HasSubstr(absl::StrCat("mkdir -p ", parent)), HasSubstr("run_dir is set at "),
                    HasSubstr("test.cfg:2")))
      << sipd.log();
}

TEST(StartupErrorTest, DefaultRunDirIsPerUserAndItsMissingParentIsNamed) {
  // XDG_RUNTIME_DIR names a directory that does not exist.
  SipdInstance sipd;
  absl::StatusOr<std::string> tmp = sipd.MakeTmpDir();
  ASSERT_TRUE(tmp.ok());
  const std::string path = *tmp + "/test.cfg";
  std::ofstream(path) << "listen = udp:127.0.0.1:0\n";
  const absl::Status started =
      sipd.StartWithConfig(path, *tmp + "/gone/sipd", {"XDG_RUNTIME_DIR=" + *tmp + "/gone"});
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(sipd.log(), AllOf(HasSubstr(absl::StrCat("run_dir ", *tmp, "/gone/sipd")),
                                HasSubstr(absl::StrCat("mkdir -p ", *tmp, "/gone")),
                                HasSubstr("run_dir is the default: $XDG_RUNTIME_DIR/sipd")))
      << sipd.log();

  // With it present, the default is XDG_RUNTIME_DIR/sipd, created 0700.
  ASSERT_EQ(mkdir((*tmp + "/xdg").c_str(), 0700), 0);
  SipdInstance second;
  ASSERT_TRUE(second.MakeTmpDir().ok());
  ASSERT_TRUE(
      second.StartWithConfig(path, *tmp + "/xdg/sipd", {"XDG_RUNTIME_DIR=" + *tmp + "/xdg"}).ok())
      << second.log();
  struct stat st {};
  ASSERT_EQ(stat((*tmp + "/xdg/sipd").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_TRUE(second.Stop().ok()) << second.log();
}

TEST(StartupErrorTest, RunDirWritableByOthersIsRefused) {
  SipdInstance sipd;
  absl::StatusOr<std::string> tmp = sipd.MakeTmpDir();
  ASSERT_TRUE(tmp.ok());
  ASSERT_EQ(mkdir((*tmp + "/open").c_str(), 0700), 0);
  ASSERT_EQ(chmod((*tmp + "/open").c_str(), 0777), 0);
  const absl::Status started =
      StartWith(sipd, "listen = udp:127.0.0.1:0\nrun_dir = \"{TMP}/open\"\n", "open");
  ASSERT_FALSE(started.ok());
  EXPECT_THAT(sipd.log(), AllOf(HasSubstr("is writable by other users (mode 0777)"),
                                HasSubstr("chmod 700"), Not(HasSubstr("started: pid"))))
      << sipd.log();
}

}  // namespace
}  // namespace sipd::testing
