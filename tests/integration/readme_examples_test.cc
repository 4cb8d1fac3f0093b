// The README's "Using it" examples, run as a newcomer would right after scripts/run.sh:
// sipd runs with etc/sipd.cfg, and every command line of the README's marked block
// (<!-- readme-examples:begin --> .. <!-- readme-examples:end -->) must exit 0 and print
// no error. The README stays the single source: a new example is tested by adding it to
// the block.
//
// What differs from a newcomer's machine, and why:
//   * ports: etc/sipd.cfg's ports become 0 (so the test never collides with a real sipd
//     or a parallel test), the ports sipd got are read from RUN_DIR/listeners, and every
//     ":PORT" of the config in a command becomes ":<the port sipd got>"; the clients'
//     default targets (sipctl, the Python client) are pointed there by their environment
//     variables, after checking that etc/sipd.cfg's gRPC address is their default;
//   * run_dir: etc/sipd.cfg keeps the per-user default, and the test sets
//     XDG_RUNTIME_DIR to a private directory for sipd and the commands alike, so
//     opensipsctl finds the FIFO and the socket through its own default search;
//   * `build/` at the start of a word becomes this build's directory (scripts/run.sh
//     builds into build/, ctest may run elsewhere); HOME is a private directory, so a
//     developer's ~/.opensipsctlrc cannot change the outcome.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/support/sipd_harness.h"

#ifndef SIPD_SOURCE_DIR
#error "SIPD_SOURCE_DIR must be defined by the build"
#endif

namespace sipd::testing {
namespace {

constexpr char kBegin[] = "<!-- readme-examples:begin";
constexpr char kEnd[] = "<!-- readme-examples:end";

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The command lines of the marked block inside "## Using it": indented code lines, with
// a trailing backslash joining the next line; blank and comment-only lines skipped.
absl::StatusOr<std::vector<std::string>> ExtractCommands(const std::string& readme) {
  const size_t section = readme.find("\n## Using it\n");
  if (section == std::string::npos) return absl::NotFoundError("no '## Using it' section");
  const size_t next_section = readme.find("\n## ", section + 1);
  const size_t begin = readme.find(kBegin, section);
  const size_t end = readme.find(kEnd, section);
  if (begin == std::string::npos || end == std::string::npos || end < begin ||
      (next_section != std::string::npos && end > next_section)) {
    return absl::NotFoundError("no readme-examples block inside '## Using it'");
  }
  const size_t body = readme.find('\n', begin);
  std::vector<std::string> commands;
  std::string pending;
  for (absl::string_view line : absl::StrSplit(readme.substr(body + 1, end - body - 1), '\n')) {
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (pending.empty() && (text.empty() || text.front() == '#')) continue;
    if (!pending.empty()) pending += ' ';
    if (absl::ConsumeSuffix(&text, "\\")) {
      pending += std::string(absl::StripTrailingAsciiWhitespace(text));
      continue;
    }
    pending += std::string(text);
    commands.push_back(std::move(pending));
    pending.clear();
  }
  if (!pending.empty()) commands.push_back(std::move(pending));
  return commands;
}

// etc/sipd.cfg with every port it names turned into 0. `ports` gets, per port, the
// module that asked for it ("sip" for listen lines).
std::string WithPortsZero(const std::string& config, std::map<int, std::string>* ports) {
  static const std::regex kListen(R"(^(\s*listen\s*=\s*\S*:)(\d+)(\s*(#.*)?)$)");
  static const std::regex kAddressParam(
      R"re(^(\s*modparam\("([a-z_]+)",\s*"[a-z_]+",\s*"[^"]*:)(\d+)("\).*)$)re");
  static const std::regex kPortParam(
      R"re(^(\s*modparam\("([a-z_]+)",\s*"port",\s*)(\d+)(\).*)$)re");
  std::string out;
  for (absl::string_view view : absl::StrSplit(config, '\n')) {
    const std::string line(view);
    std::smatch m;
    if (std::regex_match(line, m, kListen)) {
      (*ports)[std::stoi(m[2])] = "sip";
      out += m[1].str() + "0" + m[3].str();
    } else if (std::regex_match(line, m, kAddressParam) || std::regex_match(line, m, kPortParam)) {
      (*ports)[std::stoi(m[3])] = m[2];
      out += m[1].str() + "0" + m[4].str();
    } else {
      out += line;
    }
    out += '\n';
  }
  return out;
}

// ":OLD" (not followed by a digit) -> ":NEW" for every port; "build/" at the start of a
// word -> the build directory.
std::string Rewrite(std::string command, const std::map<int, int>& ports) {
  for (const auto& [from, to] : ports) {
    const std::regex port(absl::StrCat(":", from, "(?![0-9])"));
    command = std::regex_replace(command, port, absl::StrCat(":", to));
  }
  static const std::regex kBuild(R"((^|[\s=:])build/)");
  return std::regex_replace(command, kBuild, "$1" SIPD_BINARY_DIR "/");
}

struct Outcome {
  int status = -1;  // wait status
  std::string output;
};

// Runs `command` with bash in the source tree, output (stdout + stderr) to `log`; kills
// its process group after 60 s.
Outcome RunCommand(const std::string& command, const std::vector<std::string>& environment,
                   const std::string& log) {
  Outcome outcome;
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int null_fd = open("/dev/null", O_RDONLY);
    if (fd < 0 || null_fd < 0 || chdir(SIPD_SOURCE_DIR) != 0) _exit(126);
    dup2(null_fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    for (const std::string& variable : environment) putenv(const_cast<char*>(variable.c_str()));
    execl("/bin/bash", "bash", "-o", "pipefail", "-c", command.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid < 0) return outcome;
  const bool done = WaitUntil([&] { return waitpid(pid, &outcome.status, WNOHANG) == pid; },
                              std::chrono::seconds(60));
  if (!done) {
    kill(-pid, SIGKILL);
    waitpid(pid, &outcome.status, 0);
    outcome.output = "(killed after 60 s)\n";
  }
  kill(-pid, SIGKILL);  // nothing of it stays behind
  outcome.output += ReadText(log);
  return outcome;
}

// Why `output` shows an error, or "" if it does not.
std::string ErrorIn(const std::string& output) {
  static const std::regex kMiError(R"((^|\n)[45][0-9][0-9] )");  // an MI error status line
  if (std::regex_search(output, kMiError)) return "an MI error reply";
  const std::string lower = absl::AsciiStrToLower(output);
  for (const char* word : {"error", "not available", "traceback", "faultcode", "failed",
                           "timed out", "timeout", "no such", "cannot", "refused"}) {
    if (absl::StrContains(lower, word)) return absl::StrCat("'", word, "'");
  }
  return "";
}

TEST(ReadmeExamplesTest, EveryExampleRunsAgainstTheDefaultConfig) {
  const std::string readme = ReadText(SIPD_SOURCE_DIR "/README.md");
  absl::StatusOr<std::vector<std::string>> commands = ExtractCommands(readme);
  ASSERT_TRUE(commands.ok()) << commands.status();
  ASSERT_GE(commands->size(), 5u) << "the README's examples block looks truncated";

  const std::string original = ReadText(SIPD_SOURCE_DIR "/etc/sipd.cfg");
  ASSERT_FALSE(original.empty());
  // The README promises the per-user run_dir and the clients' default gRPC address.
  ASSERT_EQ(std::regex_search(original, std::regex(R"((^|\n)\s*run_dir\s*=)")), false)
      << "etc/sipd.cfg should keep the default run_dir";
  ASSERT_TRUE(absl::StrContains(original, R"(modparam("mi_grpc", "listen", "127.0.0.1:8090"))"))
      << "sipctl and the Python client default to 127.0.0.1:8090";

  SipdInstance sipd;
  absl::StatusOr<std::string> tmp = sipd.MakeTmpDir();
  ASSERT_TRUE(tmp.ok()) << tmp.status();
  const std::string xdg = *tmp + "/xdg";
  const std::string home = *tmp + "/home";
  ASSERT_EQ(mkdir(xdg.c_str(), 0700), 0);
  ASSERT_EQ(mkdir(home.c_str(), 0700), 0);
  std::map<int, std::string> config_ports;
  const std::string config_path = *tmp + "/sipd.cfg";
  {
    std::ofstream out(config_path);
    out << WithPortsZero(original, &config_ports);
  }
  ASSERT_TRUE(config_ports.count(5060) == 1 && config_ports.count(8090) == 1)
      << "etc/sipd.cfg should listen on SIP 5060 and gRPC 8090";

  const std::vector<std::string> sipd_environment = {"XDG_RUNTIME_DIR=" + xdg};
  absl::Status started = sipd.StartWithConfig(config_path, xdg + "/sipd", sipd_environment);
  ASSERT_TRUE(started.ok()) << started;

  std::map<int, int> ports;
  for (const auto& [port, module] : config_ports) {
    const int bound = sipd.listener_port(module);
    ASSERT_NE(bound, 0) << module << " is not in " << sipd.run_dir() << "/listeners\n"
                        << sipd.log();
    ports[port] = bound;
  }
  // SIP over TCP shares the UDP port when that port is free for TCP too; when it is not
  // (another process holds it for TCP), sipd takes another: examples over TCP use that one.
  std::map<int, int> tcp_ports = ports;
  tcp_ports[5060] = sipd.listener_port("sip", "tcp");
  ASSERT_NE(tcp_ports[5060], 0) << "no SIP TCP listener in " << sipd.run_dir() << "/listeners";
  const std::string grpc = absl::StrCat("127.0.0.1:", ports[8090]);
  std::vector<std::string> environment = {
      "XDG_RUNTIME_DIR=" + xdg,       "HOME=" + home,
      "SIPCTL_SERVER=" + grpc,        "SIPD_MI_TARGET=" + grpc,
      "OSIPSUNIX=" OPENSIPSUNIX_PATH, "PYTHONDONTWRITEBYTECODE=1"};

  int index = 0;
  for (const std::string& line : *commands) {
    const bool over_tcp = absl::StrContains(line, "transport=tcp");
    const std::string command = Rewrite(line, over_tcp ? tcp_ports : ports);
    const Outcome outcome =
        RunCommand(command, environment, absl::StrCat(*tmp, "/command-", index++, ".log"));
    const std::string error = ErrorIn(outcome.output);
    std::cout << "$ " << command << "\n" << outcome.output << std::flush;
    EXPECT_TRUE(WIFEXITED(outcome.status) && WEXITSTATUS(outcome.status) == 0 && error.empty())
        << "README example: " << line << "\nran as: " << command << "\nwait status "
        << outcome.status << (error.empty() ? "" : ", output shows " + error) << "\noutput:\n"
        << outcome.output;
  }
  EXPECT_TRUE(sipd.Stop().ok()) << sipd.log();
}

// With nothing configured, opensipsctl looks in sipd's per-user run_dir, then at 1.11's
// /tmp path, and says so when neither exists.
TEST(ReadmeExamplesTest, OpensipsctlSaysWhereItLookedForTheFifo) {
  if (access("/tmp/opensips_fifo", F_OK) == 0) GTEST_SKIP() << "/tmp/opensips_fifo exists here";
  SipdInstance scratch;  // only for its private temp dir
  absl::StatusOr<std::string> tmp = scratch.MakeTmpDir();
  ASSERT_TRUE(tmp.ok());
  const Outcome outcome =
      RunCommand("clients/opensipsctl fifo ps", {"XDG_RUNTIME_DIR=" + *tmp, "HOME=" + *tmp},
                 *tmp + "/opensipsctl.log");
  EXPECT_TRUE(WIFEXITED(outcome.status) && WEXITSTATUS(outcome.status) != 0) << outcome.output;
  EXPECT_TRUE(absl::StrContains(outcome.output, absl::StrCat("looked for ", *tmp,
                                                             "/sipd/opensips_fifo and "
                                                             "/tmp/opensips_fifo")))
      << outcome.output;
}

// The extraction itself, on a README of our own.
TEST(ReadmeExamplesTest, ExtractsTheMarkedBlockOfUsingIt) {
  const std::string readme =
      "# x\n\n    echo outside\n\n## Using it\n\ntext\n\n"
      "<!-- readme-examples:begin -->\n\n    echo one   # comment\n    # a comment line\n"
      "    printf '%s' \\\n        two\n\n<!-- readme-examples:end -->\n\n    echo after\n"
      "## Layout\n";
  absl::StatusOr<std::vector<std::string>> commands = ExtractCommands(readme);
  ASSERT_TRUE(commands.ok()) << commands.status();
  EXPECT_EQ(*commands, (std::vector<std::string>{"echo one   # comment", "printf '%s' two"}));
  EXPECT_FALSE(ExtractCommands("## Using it\n    echo\n## Layout\n").ok());
}

TEST(ReadmeExamplesTest, RewritesPortsAndTheBuildDirectory) {
  std::map<int, std::string> modules;
  EXPECT_EQ(WithPortsZero("listen = udp:127.0.0.1:5060\nmodparam(\"mi_grpc\", \"listen\", "
                          "\"127.0.0.1:8090\")\nmodparam(\"mi_xmlrpc\", \"port\", 8095)\n",
                          &modules),
            "listen = udp:127.0.0.1:0\nmodparam(\"mi_grpc\", \"listen\", \"127.0.0.1:0\")\n"
            "modparam(\"mi_xmlrpc\", \"port\", 0)\n\n");
  EXPECT_EQ(modules,
            (std::map<int, std::string>{{5060, "sip"}, {8090, "mi_grpc"}, {8095, "mi_xmlrpc"}}));
  EXPECT_EQ(
      Rewrite("sipsak -s sip:a@127.0.0.1:5060 -C sip:a@127.0.0.1:50600 build/x", {{5060, 4000}}),
      "sipsak -s sip:a@127.0.0.1:4000 -C sip:a@127.0.0.1:50600 " SIPD_BINARY_DIR "/x");
  EXPECT_EQ(Rewrite("PYTHONPATH=a:build/gen python3", {}),
            "PYTHONPATH=a:" SIPD_BINARY_DIR "/gen python3");
}

}  // namespace
}  // namespace sipd::testing
