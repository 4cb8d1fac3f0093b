// The core MI commands run through the real dispatch path against a test Core; replies
// are compared as trees and as their FIFO text rendering (spec sections 2, 6, 10.1).
#include "sipd/modules/core/core_commands.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "registry/dispatcher.h"
#include "registry/text_format.h"
#include "sipd_version.h"
#include "tests/core-commands/test_core.h"
#include "tests/support/wait_until.h"

namespace sipd {
namespace {

using ::sipd::testing::RunInChild;
using ::sipd::testing::TestCore;
using ::testing::MatchesRegex;

std::string Ctime(std::time_t t) {
  char buf[64] = {};
  ctime_r(&t, buf);
  std::string s(buf);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

class CoreCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(core_.shm_ok());
    core_.start = std::time(nullptr) - 125;
    core_.argv_list = {"/usr/sbin/sipd", "-f", "/etc/sipd/sipd.cfg"};
    core_.processes = {{0, 4100, "attendant"},
                       {1, 4101, "MI FIFO"},
                       {2, 4102, "SIP receiver udp:127.0.0.1:5060 "},
                       {3, 0, ""}};
    ASSERT_TRUE(core_.stats().RegisterCommands(core_.mi()).ok());
    LocalCache::Options options;
    options.now_ms = [this] { return fake_now_ms_.load(); };
    options.max_entries = 8;
    ASSERT_TRUE(RegisterCoreCommands(core_, options).ok());
  }

  mi::DispatchResult Run(const std::string& command, const std::vector<std::string>& args = {}) {
    mi::Request request;
    request.command = command;
    for (const auto& a : args) request.args.push_back({"", a});
    return core_.NewDispatcher({})->Run(request);
  }
  // The reply as FIFO prints it (without the final empty line).
  std::string Text(const std::string& command, const std::vector<std::string>& args = {}) {
    return mi::RenderText(Run(command, args).reply, "\t", false);
  }

  TestCore core_;
  std::atomic<int64_t> fake_now_ms_{1'000'000};
};

TEST_F(CoreCommandsTest, WhichListsEveryCommandInRegistrationOrder) {
  auto result = Run("which");
  EXPECT_EQ(result.outcome, mi::Outcome::kReply);
  EXPECT_TRUE(result.reply.root.is_array);
  EXPECT_EQ(mi::RenderText(result.reply, "\t", false),
            "200 OK\nget_statistics\nreset_statistics\nuptime\nversion\npwd\narg\nwhich\nps\n"
            "kill\ndebug\ncache_store\ncache_fetch\ncache_remove\nlist_tcp_conns\nhelp\n");
  for (const auto& kid : result.reply.root.kids) EXPECT_TRUE(kid->name.empty());
  // Arguments are ignored (no input).
  EXPECT_EQ(Text("which", {"x", "y"}), mi::RenderText(result.reply, "\t", false));
}

TEST_F(CoreCommandsTest, WhichShowsCommandsRegisteredLater) {
  ASSERT_TRUE(core_.mi()
                  .Register({.name = "ul_dump",
                             .module = "usrloc",
                             .handler = [](mi::Call&) { return absl::OkStatus(); }})
                  .ok());
  EXPECT_THAT(Text("which"), ::testing::EndsWith("cache_remove\nlist_tcp_conns\nhelp\nul_dump\n"));
}

TEST_F(CoreCommandsTest, ListTcpConnsWithoutTcpSaysSo) {
  // TestCore has no SIP transport: as an OpenSIPS built without TCP.
  EXPECT_EQ(Text("list_tcp_conns"), "404 TCP support disabled\n");
}

TEST_F(CoreCommandsTest, Uptime) {
  const std::time_t before = std::time(nullptr);
  auto result = Run("uptime", {"ignored"});
  const std::time_t after = std::time(nullptr);
  ASSERT_EQ(result.reply.code, 200u);
  ASSERT_EQ(result.reply.root.kids.size(), 3u);
  const auto& kids = result.reply.root.kids;
  EXPECT_EQ(kids[0]->name, "Now");
  EXPECT_TRUE(kids[0]->value == Ctime(before) || kids[0]->value == Ctime(after)) << kids[0]->value;
  EXPECT_EQ(kids[1]->name, "Up since");
  EXPECT_EQ(kids[1]->value, Ctime(core_.start));
  EXPECT_EQ(kids[2]->name, "Up time");
  EXPECT_TRUE(kids[2]->value == absl::StrCat(before - core_.start, " [sec]") ||
              kids[2]->value == absl::StrCat(after - core_.start, " [sec]"))
      << kids[2]->value;
  EXPECT_THAT(mi::RenderText(result.reply, "\t", false),
              MatchesRegex("200 OK\nNow:: [A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] "
                           "[0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4}\nUp since:: " +
                           Ctime(core_.start) + "\nUp time:: 12[5-7] \\[sec\\]\n"));
}

TEST_F(CoreCommandsTest, Version) {
  struct utsname names;
  ASSERT_EQ(uname(&names), 0);
  const std::string os = absl::AsciiStrToLower(names.sysname);
  EXPECT_EQ(os, "linux");
  EXPECT_EQ(Text("version"), absl::StrCat("200 OK\nServer:: sipd (", SIPD_VERSION, " (",
                                          names.machine, "/", os, "))\n"));
}

TEST_F(CoreCommandsTest, Pwd) {
  char cwd[4096];
  ASSERT_NE(getcwd(cwd, sizeof cwd), nullptr);
  EXPECT_EQ(Text("pwd"), absl::StrCat("200 OK\nWD:: ", cwd, "\n"));
}

TEST_F(CoreCommandsTest, PwdFailureIsTheGenericFailure) {
  // getcwd fails once the working directory has been removed.
  int rc = RunInChild([this] {
    char dir[] = "/tmp/sipd-pwd-XXXXXX";
    if (mkdtemp(dir) == nullptr || chdir(dir) != 0 || rmdir(dir) != 0) return 2;
    auto result = Run("pwd");
    if (result.outcome != mi::Outcome::kFailed) return 3;
    if (mi::RenderText(result.reply, "\t", false) != "500 command 'pwd' failed\n") return 4;
    return 0;
  });
  EXPECT_EQ(rc, 0);
}

TEST_F(CoreCommandsTest, Arg) {
  auto result = Run("arg");
  EXPECT_TRUE(result.reply.root.is_array);
  EXPECT_EQ(mi::RenderText(result.reply, "\t", false),
            "200 OK\n/usr/sbin/sipd\n-f\n/etc/sipd/sipd.cfg\n");
  mi::Reply expected;
  expected.root.is_array = true;
  expected.root.AddKid("", "/usr/sbin/sipd");
  expected.root.AddKid("", "-f");
  expected.root.AddKid("", "/etc/sipd/sipd.cfg");
  EXPECT_EQ(result.reply, expected);
}

TEST_F(CoreCommandsTest, Ps) {
  auto result = Run("ps");
  EXPECT_EQ(mi::RenderText(result.reply, "\t", true),
            "200 OK\n"
            "Process::  ID=0 PID=4100 Type=attendant\n"
            "Process::  ID=1 PID=4101 Type=MI FIFO\n"
            "Process::  ID=2 PID=4102 Type=SIP receiver udp:127.0.0.1:5060 \n"
            "Process::  ID=3 PID=0 Type=\n"
            "\n");
  mi::Reply expected;
  expected.root.is_array = true;
  expected.root.AddKid("Process")
      .AddAttribute("ID", "0")
      .AddAttribute("PID", "4100")
      .AddAttribute("Type", "attendant");
  expected.root.AddKid("Process")
      .AddAttribute("ID", "1")
      .AddAttribute("PID", "4101")
      .AddAttribute("Type", "MI FIFO");
  expected.root.AddKid("Process")
      .AddAttribute("ID", "2")
      .AddAttribute("PID", "4102")
      .AddAttribute("Type", "SIP receiver udp:127.0.0.1:5060 ");
  expected.root.AddKid("Process")
      .AddAttribute("ID", "3")
      .AddAttribute("PID", "0")
      .AddAttribute("Type", "");
  EXPECT_EQ(result.reply, expected);
}

TEST_F(CoreCommandsTest, KillRequestsShutdownAndReturnsNothing) {
  auto result = Run("kill");
  EXPECT_EQ(core_.shutdown_requests, 1);
  EXPECT_EQ(result.outcome, mi::Outcome::kFailed);
  EXPECT_EQ(mi::RenderText(result.reply, "\t", false), "500 command 'kill' failed\n");
}

TEST_F(CoreCommandsTest, DebugShowsAndSetsTheLevel) {
  EXPECT_EQ(Text("debug"), "200 OK\nDEBUG:: 3\n");
  EXPECT_EQ(Text("debug", {"4"}), "200 OK\nDEBUG:: 4\n");
  EXPECT_EQ(core_.level, 4);
  EXPECT_EQ(Text("debug"), "200 OK\nDEBUG:: 4\n");
  EXPECT_EQ(Text("debug", {"-3"}), "200 OK\nDEBUG:: -3\n");
  EXPECT_EQ(core_.level, -3);
  EXPECT_EQ(Text("debug", {"+2"}), "200 OK\nDEBUG:: 2\n");
  EXPECT_EQ(Text("debug", {"007"}), "200 OK\nDEBUG:: 7\n");
  EXPECT_EQ(Text("debug", {"-2147483648"}), "200 OK\nDEBUG:: -2147483648\n");
  EXPECT_EQ(Text("debug", {"1"}), "200 OK\nDEBUG:: 1\n");

  mi::Reply expected;
  expected.root.AddKid("DEBUG", "1");
  EXPECT_EQ(Run("debug").reply, expected);
}

TEST_F(CoreCommandsTest, DebugRejectsNonIntegers) {
  for (const std::string bad :
       {"abc", "", "3x", " 3", "3 ", "-", "+", "1.5", "2147483648", "99999999999999999999"}) {
    EXPECT_EQ(Text("debug", {bad}), "400 Bad parameter\n") << "'" << bad << "'";
  }
  EXPECT_EQ(core_.level, 3);
  EXPECT_EQ(Text("debug", {"1", "2"}), "400 Too few or too many arguments\n");
  EXPECT_EQ(core_.level, 3);
}

TEST_F(CoreCommandsTest, HelpUsage) {
  EXPECT_EQ(Text("help"), "200 OK\nUsage:: help mi_cmd - returns information about 'mi_cmd'\n");
}

TEST_F(CoreCommandsTest, HelpForEveryCommand) {
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"uptime",
       "prints various time information about OpenSIPS - when it started to run, for how long "
       "it runs"},
      {"version", "prints the version string of a runningOpenSIPS"},
      {"pwd", "prints the working directory of OpenSIPS"},
      {"arg", "returns the full list of arguments used at startup"},
      {"which", "lists all avaialbe MI commands"},
      {"ps", "lists all processes used by OpenSIPS"},
      {"kill", "terminates OpenSIPS"},
      {"debug", "gets/sets the value of the debug core variable"},
      {"cache_store", "stores in a cache system a string value"},
      {"cache_fetch", "queries for a cache stored value"},
      {"cache_remove", "removes a record from the cache system"},
      {"list_tcp_conns", "list all ongoing TCP/TLS connections"},
      {"help", "prints information about MI commands usage"},
  };
  for (const auto& [name, help] : texts) {
    EXPECT_EQ(Text("help", {name}), absl::StrCat("200 OK\nHelp:: ", help, "\nExported by:: core\n"))
        << name;
    const mi::Command* command = core_.mi().Find(name);
    ASSERT_NE(command, nullptr);
    EXPECT_EQ(command->module(), "core");
  }
  EXPECT_EQ(Text("help", {"get_statistics"}),
            "200 OK\nHelp:: prints the statistics (all, group or one) realtime values.\n"
            "Exported by:: statistics\n");
  // The spec's example exchange.
  EXPECT_EQ(mi::RenderText(Run("help", {"ps"}).reply, "\t", true),
            "200 OK\nHelp:: lists all processes used by OpenSIPS\nExported by:: core\n\n");
  mi::Reply expected;
  expected.root.AddKid("Help", "terminates OpenSIPS");
  expected.root.AddKid("Exported by", "core");
  EXPECT_EQ(Run("help", {"kill"}).reply, expected);
}

TEST_F(CoreCommandsTest, HelpForCommandWithoutHelpText) {
  ASSERT_TRUE(core_.mi()
                  .Register({.name = "ul_dump",
                             .module = "usrloc",
                             .handler = [](mi::Call&) { return absl::OkStatus(); }})
                  .ok());
  EXPECT_EQ(Text("help", {"ul_dump"}),
            "200 OK\nHelp:: not available for this command\nExported by:: usrloc\n");
}

TEST_F(CoreCommandsTest, HelpErrors) {
  EXPECT_EQ(Text("help", {"nosuch"}), "404 unknown MI command\n");
  EXPECT_EQ(Text("help", {"PS"}), "404 unknown MI command\n");  // case-sensitive
  EXPECT_EQ(Text("help", {"ps", "kill"}), "400 Too few or too many arguments\n");
}

TEST_F(CoreCommandsTest, DeclarationsCarryFlagsAndParameters) {
  for (const std::string name : {"uptime", "version", "pwd", "arg", "which", "ps", "kill"}) {
    const mi::Command* command = core_.mi().Find(name);
    ASSERT_NE(command, nullptr) << name;
    EXPECT_TRUE(command->has_flag(mi::kNoInput)) << name;
    EXPECT_TRUE(command->params().empty()) << name;
  }
  for (const std::string name : {"kill", "debug", "cache_store", "cache_remove"}) {
    EXPECT_TRUE(core_.mi().Find(name)->has_flag(mi::kMutating)) << name;
  }
  for (const std::string name :
       {"uptime", "version", "pwd", "arg", "which", "ps", "cache_fetch", "help"}) {
    EXPECT_FALSE(core_.mi().Find(name)->has_flag(mi::kMutating)) << name;
  }
  for (const std::string name : {"debug", "help", "cache_store", "cache_fetch", "cache_remove"}) {
    EXPECT_FALSE(core_.mi().Find(name)->has_flag(mi::kNoInput)) << name;
  }
  EXPECT_EQ(core_.mi().Find("debug")->min_args(), 0u);
  EXPECT_EQ(core_.mi().Find("debug")->max_args(), 1u);
  EXPECT_EQ(core_.mi().Find("cache_store")->min_args(), 3u);
  EXPECT_EQ(core_.mi().Find("cache_store")->max_args(), 4u);
  EXPECT_EQ(core_.mi().Find("cache_fetch")->max_args(), 2u);
  ASSERT_EQ(core_.timers.size(), 1u);
  EXPECT_EQ(core_.timers[0].label, "localcache");
  EXPECT_EQ(core_.timers[0].interval, std::chrono::seconds(1));
  EXPECT_NE(SharedLocalCache(), nullptr);
}

TEST_F(CoreCommandsTest, CacheStoreFetchRemove) {
  EXPECT_EQ(Text("cache_fetch", {"local", "color"}), "200 OK\nValue not found\n");
  auto stored = Run("cache_store", {"local", "color", "blue"});
  EXPECT_EQ(stored.reply, mi::Reply::Ok());
  EXPECT_EQ(mi::RenderText(stored.reply, "\t", true), "200 OK\n\n");

  auto fetched = Run("cache_fetch", {"local", "color"});
  mi::Reply expected;
  expected.root.AddKid("", "color = [blue]");
  EXPECT_EQ(fetched.reply, expected);
  EXPECT_EQ(mi::RenderText(fetched.reply, "\t", false), "200 OK\ncolor = [blue]\n");

  EXPECT_EQ(Text("cache_store", {"local", "color", "dark red", "0"}), "200 OK\n");
  EXPECT_EQ(Text("cache_fetch", {"local", "color"}), "200 OK\ncolor = [dark red]\n");
  EXPECT_EQ(Text("cache_remove", {"local", "color"}), "200 OK\n");
  EXPECT_EQ(Text("cache_fetch", {"local", "color"}), "200 OK\nValue not found\n");
  // Removing what is not there succeeds (OpenSIPS localcache).
  EXPECT_EQ(Text("cache_remove", {"local", "color"}), "200 OK\n");
}

TEST_F(CoreCommandsTest, CacheArgumentCountErrors) {
  EXPECT_EQ(Text("cache_store"), "404 Too few arguments\n");
  EXPECT_EQ(Text("cache_store", {"local"}), "404 Too few arguments\n");
  EXPECT_EQ(Text("cache_store", {"local", "a"}), "404 Too few arguments\n");
  EXPECT_EQ(Text("cache_store", {"local", "a", "v", "5", "x"}), "404 Too many parameters\n");
  EXPECT_EQ(Text("cache_fetch"), "404 Too few arguments\n");
  EXPECT_EQ(Text("cache_fetch", {"local"}), "404 Too few arguments\n");
  EXPECT_EQ(Text("cache_fetch", {"local", "a", "b"}), "404 Too many arguments\n");
  EXPECT_EQ(Text("cache_remove"), "404 Too few arguments\n");
  EXPECT_EQ(Text("cache_remove", {"local"}), "404 Too few arguments\n");
  EXPECT_EQ(Text("cache_remove", {"local", "a", "b"}), "404 Too many parameters\n");
}

TEST_F(CoreCommandsTest, CacheEmptyAndBadArguments) {
  EXPECT_EQ(Text("cache_store", {"", "a", "v"}), "404 Empty memory cache id\n");
  EXPECT_EQ(Text("cache_store", {"local", "", "v"}), "404 Empty attribute name\n");
  EXPECT_EQ(Text("cache_store", {"local", "a", ""}), "404 Empty value argument\n");
  EXPECT_EQ(Text("cache_store", {"local", "a", "v", ""}), "404 Empty expires argument\n");
  for (const std::string bad : {"x", "-1", "+1", "1s", " 1", "4294967296"}) {
    EXPECT_EQ(Text("cache_store", {"local", "a", "v", bad}),
              "404 Bad format for expires argument\n")
        << bad;
  }
  EXPECT_EQ(Text("cache_fetch", {"", "a"}), "404 Empty memory cache id\n");
  EXPECT_EQ(Text("cache_fetch", {"local", ""}), "404 Empty attribute name\n");
  EXPECT_EQ(Text("cache_remove", {"", "a"}), "404 Empty memory cache id\n");
  EXPECT_EQ(Text("cache_remove", {"local", ""}), "404 Empty attribute name\n");
  // Nothing was stored by the rejected calls.
  EXPECT_EQ(SharedLocalCache()->size(), 0u);
}

TEST_F(CoreCommandsTest, CacheUnknownSystemFails) {
  EXPECT_EQ(Text("cache_store", {"redis", "a", "v"}), "500 Cache store command failed\n");
  EXPECT_EQ(Text("cache_fetch", {"redis", "a"}), "500 Cache fetch command failed\n");
  EXPECT_EQ(Text("cache_remove", {"redis", "a"}), "500 Cache remove command failed\n");
  EXPECT_EQ(Text("cache_store", {"Local", "a", "v"}), "500 Cache store command failed\n");
}

TEST_F(CoreCommandsTest, CacheLimitsFailTheStore) {
  // Value above the 64 KB default limit.
  EXPECT_EQ(Text("cache_store", {"local", "big", std::string(64 * 1024 + 1, 'x')}),
            "500 Cache store command failed\n");
  EXPECT_EQ(Text("cache_store", {"local", "big", std::string(64 * 1024, 'x')}), "200 OK\n");
  // The fixture limits the cache to 8 entries.
  for (int i = 1; i < 8; ++i) {
    EXPECT_EQ(Text("cache_store", {"local", absl::StrCat("k", i), "v"}), "200 OK\n") << i;
  }
  EXPECT_EQ(Text("cache_store", {"local", "k8", "v"}), "500 Cache store command failed\n");
  // Replacing an existing entry does not need a new slot.
  EXPECT_EQ(Text("cache_store", {"local", "k1", "w"}), "200 OK\n");
  EXPECT_EQ(Text("cache_remove", {"local", "k1"}), "200 OK\n");
  EXPECT_EQ(Text("cache_store", {"local", "k8", "v"}), "200 OK\n");
}

TEST_F(CoreCommandsTest, CacheExpiryWithFakeClock) {
  EXPECT_EQ(Text("cache_store", {"local", "short", "lived", "1"}), "200 OK\n");
  EXPECT_EQ(Text("cache_store", {"local", "forever", "here"}), "200 OK\n");
  EXPECT_EQ(Text("cache_store", {"local", "long", "lived", "3600"}), "200 OK\n");
  fake_now_ms_ += 999;
  EXPECT_EQ(Text("cache_fetch", {"local", "short"}), "200 OK\nshort = [lived]\n");
  fake_now_ms_ += 1;
  EXPECT_EQ(Text("cache_fetch", {"local", "short"}), "200 OK\nValue not found\n");
  EXPECT_EQ(SharedLocalCache()->size(), 3u);  // invisible, not yet freed
  core_.timers[0].fn();                       // the "localcache" timer
  EXPECT_EQ(SharedLocalCache()->size(), 2u);
  fake_now_ms_ += 3600 * 1000;
  EXPECT_EQ(Text("cache_fetch", {"local", "long"}), "200 OK\nValue not found\n");
  EXPECT_EQ(Text("cache_fetch", {"local", "forever"}), "200 OK\nforever = [here]\n");
  // A new store revives an expired attribute.
  EXPECT_EQ(Text("cache_store", {"local", "long", "again"}), "200 OK\n");
  EXPECT_EQ(Text("cache_fetch", {"local", "long"}), "200 OK\nlong = [again]\n");
}

TEST(CoreCommandsRealClockTest, CacheExpiresAfterItsLifetime) {
  TestCore core;
  ASSERT_TRUE(core.shm_ok());
  ASSERT_TRUE(RegisterCoreCommands(core).ok());
  auto run = [&core](const std::string& command, std::vector<std::string> args) {
    mi::Request request{.command = command, .args = {}, .args_error = absl::OkStatus()};
    for (auto& a : args) request.args.push_back({"", std::move(a)});
    return mi::RenderText(core.NewDispatcher({})->Run(request).reply, "\t", false);
  };
  EXPECT_EQ(run("cache_store", {"local", "k", "v", "1"}), "200 OK\n");
  EXPECT_EQ(run("cache_fetch", {"local", "k"}), "200 OK\nk = [v]\n");
  // The real clock wiring: the entry goes when its second has passed (nothing to fake).
  EXPECT_TRUE(testing::WaitUntil(
      [&] {
        return run("cache_fetch", {"local", "k"}) == "200 OK\nValue not found\n";
      },
      std::chrono::seconds(10)));
  core.timers.at(0).fn();
  EXPECT_EQ(SharedLocalCache()->size(), 0u);
}

TEST_F(CoreCommandsTest, CacheIsSharedAcrossFork) {
  ASSERT_EQ(Text("cache_store", {"local", "from_parent", "p-value"}), "200 OK\n");
  int rc = RunInChild([this] {
    if (Text("cache_fetch", {"local", "from_parent"}) != "200 OK\nfrom_parent = [p-value]\n") {
      return 1;
    }
    if (Text("cache_store", {"local", "from_child", "c-value"}) != "200 OK\n") return 2;
    if (Text("cache_remove", {"local", "from_parent"}) != "200 OK\n") return 3;
    return 0;
  });
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(Text("cache_fetch", {"local", "from_child"}), "200 OK\nfrom_child = [c-value]\n");
  EXPECT_EQ(Text("cache_fetch", {"local", "from_parent"}), "200 OK\nValue not found\n");
}

TEST(CoreCommandsForkTest, ConcurrentStoresFromTwoProcessesLoseNothing) {
  TestCore core(64 << 20);
  ASSERT_TRUE(core.shm_ok());
  LocalCache::Options options;
  options.buckets = 16;  // many collisions: both processes work the same lists
  ASSERT_TRUE(RegisterCoreCommands(core, options).ok());
  constexpr int kPerProcess = 5000;
  constexpr int kShared = 100;
  auto store_all = [&core](int process) {
    for (int i = 0; i < kPerProcess; ++i) {
      mi::Request request{.command = "cache_store",
                          .args = {{"", "local"},
                                   {"", absl::StrCat("p", process, "-k", i)},
                                   {"", absl::StrCat("value-", process, "-", i)}},
                          .args_error = absl::OkStatus()};
      if (core.NewDispatcher({})->Run(request).reply.code != 200) return 1;
      if (i < kShared) {
        mi::Request shared{.command = "cache_store",
                           .args = {{"", "local"},
                                    {"", absl::StrCat("shared-", i)},
                                    {"", absl::StrCat("from-", process)}},
                           .args_error = absl::OkStatus()};
        if (core.NewDispatcher({})->Run(shared).reply.code != 200) return 2;
      }
    }
    return 0;
  };
  // Both children wait on this pipe so that their stores really overlap.
  int start[2];
  ASSERT_EQ(pipe(start), 0);
  pid_t pids[2];
  for (int p = 0; p < 2; ++p) {
    pids[p] = fork();
    ASSERT_GE(pids[p], 0);
    if (pids[p] == 0) {
      alarm(60);
      close(start[1]);
      char byte;
      while (read(start[0], &byte, 1) < 0 && errno == EINTR) {
      }
      _exit(store_all(p));
    }
  }
  close(start[0]);
  close(start[1]);  // EOF releases both children
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  LocalCache* cache = SharedLocalCache();
  EXPECT_EQ(cache->size(), static_cast<size_t>(2 * kPerProcess + kShared));
  for (int p = 0; p < 2; ++p) {
    for (int i = 0; i < kPerProcess; ++i) {
      auto value = cache->Fetch(absl::StrCat("p", p, "-k", i));
      ASSERT_TRUE(value.ok()) << p << " " << i;
      EXPECT_EQ(*value, absl::StrCat("value-", p, "-", i));
    }
  }
  for (int i = 0; i < kShared; ++i) {
    auto value = cache->Fetch(absl::StrCat("shared-", i));
    ASSERT_TRUE(value.ok()) << i;
    EXPECT_TRUE(*value == "from-0" || *value == "from-1") << *value;
  }
}

TEST(CoreCommandsRegistrationTest, SecondRegistrationFailsOnDuplicateNames) {
  TestCore core;
  ASSERT_TRUE(core.shm_ok());
  ASSERT_TRUE(RegisterCoreCommands(core).ok());
  absl::Status again = RegisterCoreCommands(core);
  EXPECT_TRUE(absl::IsAlreadyExists(again)) << again;
}

}  // namespace
}  // namespace sipd
