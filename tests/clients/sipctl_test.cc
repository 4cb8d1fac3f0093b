// sipctl against a running sipd (tests/support/sipd_harness.h): exact output of a few
// commands, JSON validity, and the documented exit codes (clients/sipctl/README.md).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/support/shared_sipd_test.h"
#include "tests/support/sipd_harness.h"

namespace sipd::testing {
namespace {

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs sipctl with `args`, stdin from /dev/null, and collects stdout/stderr. `env` lines
// ("NAME=value") replace the environment's SIPCTL_SERVER handling when given.
Result RunSipctl(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) return {};
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    const int null_fd = open("/dev/null", O_RDONLY);
    dup2(null_fd, STDIN_FILENO);
    std::vector<std::string> env_storage = env;
    if (env.empty()) env_storage.push_back("PATH=/usr/bin:/bin");
    std::vector<char*> envp;
    for (auto& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_storage = {SIPCTL_BINARY_PATH};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    execve(SIPCTL_BINARY_PATH, argv.data(), envp.data());
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  Result result;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  char buffer[65536];
  while (open_fds > 0) {
    if (poll(fds, 2, 30000) <= 0) break;  // sipctl has its own 30 s default deadline
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? result.out : result.err).append(buffer, static_cast<size_t>(n));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

class SipctlTest : public SharedSipdTest<SipctlTest> {
 protected:
  // sipctl -s <sipd> ARGS...
  Result Sipctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"-s", sipd_->grpc_target()});
    return RunSipctl(args);
  }
};

TEST_F(SipctlTest, PsPrintsTheFifoLayout) {
  const Result r = Sipctl({"ps"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto lines = Lines(r.out);
  ASSERT_GE(lines.size(), 5u) << r.out;
  EXPECT_EQ(lines[0], "200 OK");
  EXPECT_EQ(lines[1], absl::StrCat("Process::  ID=0 PID=", sipd_->pid(), " Type=attendant"));
  bool grpc = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].rfind(absl::StrCat("Process::  ID=", i - 1, " PID="), 0), 0u) << lines[i];
    if (lines[i].find(" Type=MI gRPC") != std::string::npos) grpc = true;
  }
  EXPECT_TRUE(grpc) << r.out;
  EXPECT_NE(r.out.substr(r.out.size() - 2), "\n\n") << "no FIFO end-of-reply empty line";
}

TEST_F(SipctlTest, WhichListsCommandsInRegistrationOrder) {
  const Result r = Sipctl({"which"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto lines = Lines(r.out);
  const std::vector<std::string> head = {"200 OK", "get_statistics", "reset_statistics",
                                         "uptime", "version",        "pwd",
                                         "arg",    "which",          "ps",
                                         "kill",   "debug"};
  ASSERT_GE(lines.size(), head.size());
  for (size_t i = 0; i < head.size(); ++i) EXPECT_EQ(lines[i], head[i]);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "help"), lines.end());

  // `list` shows the same commands, same order, with module and flags.
  const Result list = Sipctl({"list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const auto list_lines = Lines(list.out);
  ASSERT_EQ(list_lines.size(), lines.size() - 1);
  for (size_t i = 0; i < list_lines.size(); ++i) {
    EXPECT_EQ(list_lines[i].substr(0, list_lines[i].find('\t')), lines[i + 1]);
  }
  EXPECT_NE(std::find(list_lines.begin(), list_lines.end(), "ps\tcore\tno-input"), list_lines.end())
      << list.out;
}

TEST_F(SipctlTest, HelpPsExactText) {
  const Result r = Sipctl({"help", "ps"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "200 OK\n"
            "Help:: lists all processes used by OpenSIPS\n"
            "Exported by:: core\n");
}

TEST_F(SipctlTest, GetStatisticsAll) {
  for (const bool stream : {false, true}) {
    std::vector<std::string> args = {"get_statistics", "all"};
    if (stream) args.insert(args.begin(), "--stream");
    const Result r = Sipctl(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto lines = Lines(r.out);
    ASSERT_GT(lines.size(), 10u);
    EXPECT_EQ(lines[0], "200 OK");
    bool rcv_requests = false, shmem = false;
    for (size_t i = 1; i < lines.size(); ++i) {
      // `group:name:: value`
      const size_t sep = lines[i].find(":: ");
      ASSERT_NE(sep, std::string::npos) << lines[i];
      uint64_t value = 0;
      EXPECT_TRUE(absl::SimpleAtoi(lines[i].substr(sep + 3), &value)) << lines[i];
      if (lines[i].rfind("core:rcv_requests:: ", 0) == 0) rcv_requests = true;
      if (lines[i].rfind("shmem:", 0) == 0) shmem = true;
    }
    EXPECT_TRUE(rcv_requests && shmem) << r.out;
  }
}

TEST_F(SipctlTest, JsonUptimeIsValidJson) {
  const Result r = Sipctl({"--json", "uptime"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  google::protobuf::Struct json;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &json).ok()) << r.out;
  EXPECT_EQ(json.fields().at("code").number_value(), 200);
  EXPECT_EQ(json.fields().at("reason").string_value(), "OK");
  const auto& nodes = json.fields().at("nodes").list_value();
  ASSERT_EQ(nodes.values_size(), 3) << r.out;
  const std::vector<std::string> names = {"Now", "Up since", "Up time"};
  for (int i = 0; i < 3; ++i) {
    const auto& node = nodes.values(i).struct_value().fields();
    EXPECT_EQ(node.at("name").string_value(), names[i]);
    EXPECT_FALSE(node.at("value").string_value().empty());
  }
  EXPECT_NE(nodes.values(2).struct_value().fields().at("value").string_value().find(" [sec]"),
            std::string::npos);
}

TEST_F(SipctlTest, UnknownCommandExits4) {
  const Result r = Sipctl({"no_such_command", "x"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "sipctl: command 'no_such_command' not available\n");
}

TEST_F(SipctlTest, WrongArgumentsExit1WithThe400Reason) {
  const Result r = Sipctl({"help", "a", "b"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "400 Too few or too many arguments\n");
  EXPECT_EQ(r.err, "sipctl: 400 Too few or too many arguments\n");

  const Result json = Sipctl({"--json", "get_statistics"});
  EXPECT_EQ(json.exit_code, 1);
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &parsed).ok()) << json.out;
  EXPECT_EQ(parsed.fields().at("code").number_value(), 400);
}

TEST_F(SipctlTest, ArgumentsAfterTheCommandArePassedVerbatim) {
  // `-1` after the command is an argument (a negative level), not an option.
  const Result set = Sipctl({"debug", "-1"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_EQ(set.out, "200 OK\nDEBUG:: -1\n");
  const Result restore = Sipctl({"debug", "3"});
  EXPECT_EQ(restore.out, "200 OK\nDEBUG:: 3\n");
}

TEST_F(SipctlTest, ServerFromEnvironment) {
  const Result r =
      RunSipctl({"version"}, {"PATH=/usr/bin:/bin", "SIPCTL_SERVER=" + sipd_->grpc_target()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("200 OK\nServer:: ", 0), 0u) << r.out;
}

TEST(SipctlStandaloneTest, UnreachableServerExits3) {
  // A TCP port this test holds without listening: connections to it are refused.
  const int held = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(held, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(held, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const int port = ntohs(address.sin_port);
  const Result r = RunSipctl({"-s", absl::StrCat("127.0.0.1:", port), "--timeout", "5", "ps"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("sipctl: 127.0.0.1:"), std::string::npos) << r.err;
  close(held);
}

// `sipctl proto` carries the annotated files byte for byte (reflection drops comments).
TEST(SipctlStandaloneTest, ProtoPrintsTheAnnotatedFiles) {
  const std::vector<std::string> files = {"sipd/mi/v1/mi.proto",
                                          "sipd/core/v1/core.proto",
                                          "sipd/statistics/v1/statistics.proto",
                                          "sipd/usrloc/v1/usrloc.proto",
                                          "sipd/events/v1/events.proto",
                                          "google/rpc/status.proto",
                                          "google/rpc/error_details.proto"};
  const Result all = RunSipctl({"proto"});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  for (const std::string& path : files) {
    std::ifstream in(std::string(SIPD_SOURCE_DIR) + "/proto/" + path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(text.empty()) << path;
    const Result one = RunSipctl({"proto", path});
    EXPECT_EQ(one.exit_code, 0) << path;
    EXPECT_EQ(one.out, text) << path;
    EXPECT_NE(all.out.find("// ==> " + path + " <==\n" + text), std::string::npos) << path;
  }
  EXPECT_NE(RunSipctl({"proto", "usrloc.proto"}).out.find("service LocationService"),
            std::string::npos);
  const Result missing = RunSipctl({"proto", "nosuch.proto"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("no proto file"), std::string::npos);
}

TEST(SipctlStandaloneTest, UsageErrorsExit2) {
  EXPECT_EQ(RunSipctl({}).exit_code, 2);
  EXPECT_EQ(RunSipctl({"--bogus", "ps"}).exit_code, 2);
  EXPECT_EQ(RunSipctl({"--timeout", "abc", "ps"}).exit_code, 2);
  EXPECT_EQ(RunSipctl({"help", ""}).exit_code, 2);
  const Result help = RunSipctl({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("Exit codes:"), std::string::npos) << help.out;
}

}  // namespace
}  // namespace sipd::testing
