#include "sipd/core/config.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <variant>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sipd {
namespace {

using ::testing::HasSubstr;

// Records the parameters it was given; knows "str" (string) and "num" (integer).
class RecordingModule : public Module {
 public:
  explicit RecordingModule(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  absl::Status SetParam(std::string_view param, const ParamValue& value) override {
    if (param == "str") {
      if (!std::holds_alternative<std::string>(value)) {
        return absl::InvalidArgumentError("str: expected a string");
      }
    } else if (param == "num") {
      if (!std::holds_alternative<int64_t>(value)) {
        return absl::InvalidArgumentError("num: expected an integer");
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter '", std::string(param), "'"));
    }
    params[std::string(param)] = value;
    return absl::OkStatus();
  }
  absl::Status Init(Core&) override { return absl::OkStatus(); }

  std::map<std::string, ParamValue> params;

 private:
  std::string name_;
};

std::unique_ptr<Module> Factory(std::string_view name) {
  if (name == "alpha" || name == "beta")
    return std::make_unique<RecordingModule>(std::string(name));
  return nullptr;
}

RecordingModule& ModuleAt(Config& config, size_t i) {
  return static_cast<RecordingModule&>(*config.modules.at(i).module);
}

TEST(ConfigTest, MinimalConfigOfTheBrief) {
  auto config = ParseConfig(R"(listen = udp:127.0.0.1:5060
children = 2
log_level = 3
run_dir = "/tmp/sipd-run"
loadmodule "alpha"
modparam("alpha", "str", "127.0.0.1:8090")
)",
                            "sipd.cfg", Factory);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->listen.size(), 1u);
  EXPECT_EQ(config->listen[0].ToString(), "udp:127.0.0.1:5060");
  EXPECT_EQ(config->children, 2);
  EXPECT_EQ(config->log_level, 3);
  EXPECT_EQ(config->run_dir, "/tmp/sipd-run");
  EXPECT_EQ(config->shm_size_mb, 64);
  ASSERT_EQ(config->modules.size(), 1u);
  EXPECT_EQ(config->modules[0].name, "alpha");
  EXPECT_EQ(config->modules[0].line, 5);
  EXPECT_EQ(std::get<std::string>(ModuleAt(*config, 0).params.at("str")), "127.0.0.1:8090");
}

TEST(ConfigTest, ValuesCommentsAndEscapes) {
  auto config = ParseConfig(R"(# a comment line

listen=udp:127.0.0.1:5060   # trailing comment
listen = 127.0.0.2:5070
listen = udp:[::1]:5080
debug = -1
shm_size = 0x10;
loadmodule "modules/beta/beta.so"
loadmodule "alpha"
modparam("beta", "num", 0600)
modparam( "alpha" , "str" , "a \"quoted\" # not a comment\\ \n\t" );
modparam("alpha", "num", -42)
)",
                            "x.cfg", Factory);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->listen.size(), 3u);
  EXPECT_EQ(config->listen[1].ToString(), "udp:127.0.0.2:5070");
  EXPECT_EQ(config->listen[2].ToString(), "udp:[::1]:5080");
  EXPECT_TRUE(config->listen[2].ipv6);
  EXPECT_EQ(config->log_level, -1);
  EXPECT_EQ(config->shm_size_mb, 16);
  ASSERT_EQ(config->modules.size(), 2u);
  EXPECT_EQ(config->modules[0].name, "beta");
  EXPECT_EQ(std::get<int64_t>(ModuleAt(*config, 0).params.at("num")), 0600);
  EXPECT_EQ(std::get<std::string>(ModuleAt(*config, 1).params.at("str")),
            "a \"quoted\" # not a comment\\ \n\t");
  EXPECT_EQ(std::get<int64_t>(ModuleAt(*config, 1).params.at("num")), -42);
}

TEST(ConfigTest, DefaultsWhenOnlyListenIsGiven) {
  auto config = ParseConfig("listen = udp:127.0.0.1:5060\n", "x.cfg", Factory);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->children, 8);
  EXPECT_EQ(config->log_level, 2);
  EXPECT_TRUE(config->modules.empty());
}

TEST(ConfigTest, TcpListenersAndLimits) {
  auto config = ParseConfig(R"(listen = udp:127.0.0.1:5060
listen = tcp:127.0.0.1:5060
listen = tcp:[::1]:5070
maxbuffer = 0
tcp_children = 3
tcp_max_connections = 100
tcp_connection_lifetime = 30
tcp_max_msg_size = 4096
tcp_header_timeout = 2
tcp_connect_timeout = 500
tcp_send_timeout = 700
tcp_max_send_queue = 8192
)",
                            "x.cfg", Factory);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->listen.size(), 3u);
  EXPECT_EQ(config->listen[0].proto, SipProto::kUdp);
  EXPECT_EQ(config->listen[1].proto, SipProto::kTcp);
  EXPECT_EQ(config->listen[1].ToString(), "tcp:127.0.0.1:5060");
  EXPECT_EQ(config->listen[2].ToString(), "tcp:[::1]:5070");
  EXPECT_EQ(config->maxbuffer, 0);
  EXPECT_EQ(config->tcp.children, 3);
  EXPECT_EQ(config->tcp.max_connections, 100);
  EXPECT_EQ(config->tcp.connection_lifetime_s, 30);
  EXPECT_EQ(config->tcp.max_msg_size, 4096);
  EXPECT_EQ(config->tcp.header_timeout_s, 2);
  EXPECT_EQ(config->tcp.connect_timeout_ms, 500);
  EXPECT_EQ(config->tcp.send_timeout_ms, 700);
  EXPECT_EQ(config->tcp.max_send_queue, 8192);

  auto defaults = ParseConfig("listen = tcp:127.0.0.1:5060\n", "x.cfg", Factory);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->maxbuffer, 2 * 1024 * 1024);
  EXPECT_EQ(defaults->tcp.children, 0);  // as `children`
  EXPECT_EQ(defaults->tcp.max_connections, 2048);
  EXPECT_EQ(defaults->tcp.connection_lifetime_s, 120);
}

struct MalformedCase {
  const char* label;
  const char* text;
  const char* error;  // expected substring, including FILE:LINE
};

class MalformedConfigTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedConfigTest, IsRejectedWithFileLineAndReason) {
  const MalformedCase& c = GetParam();
  auto config = ParseConfig(c.text, "bad.cfg", Factory);
  ASSERT_FALSE(config.ok()) << c.label;
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(c.error)) << c.label;
}

INSTANTIATE_TEST_SUITE_P(
    Table, MalformedConfigTest,
    ::testing::Values(
        MalformedCase{"unknown key", "listen = udp:127.0.0.1:5060\nfoo = 1\n",
                      "bad.cfg:2: unknown key 'foo'"},
        MalformedCase{"unknown statement", "listen = udp:127.0.0.1:5060\nroute { exit; }\n",
                      "bad.cfg:2: syntax error: unknown statement 'route'"},
        MalformedCase{"missing quote", "listen = udp:127.0.0.1:5060\nrun_dir = \"/tmp/x\n",
                      "bad.cfg:2: missing closing quote"},
        MalformedCase{"unknown escape", "listen = udp:127.0.0.1:5060\nrun_dir = \"a\\qb\"\n",
                      "bad.cfg:2: unknown escape sequence \\q"},
        MalformedCase{"missing =", "listen udp:127.0.0.1:5060\n",
                      "bad.cfg:1: expected '=' after 'listen'"},
        MalformedCase{"missing value", "listen = udp:127.0.0.1:5060\nchildren =\n",
                      "bad.cfg:2: children: expected an integer, got end of file"},
        MalformedCase{"bad integer", "listen = udp:127.0.0.1:5060\nchildren = two\n",
                      "bad.cfg:2: children: bad integer 'two'"},
        MalformedCase{"bad octal", "listen = udp:127.0.0.1:5060\nchildren = 08\n",
                      "bad.cfg:2: children: bad integer '08'"},
        MalformedCase{"out of range", "listen = udp:127.0.0.1:5060\nchildren = 0\n",
                      "bad.cfg:2: children: 0 is out of range [1, 256]"},
        MalformedCase{"mi_nice out of range", "listen = udp:127.0.0.1:5060\nmi_nice = 20\n",
                      "bad.cfg:2: mi_nice: 20 is out of range [0, 19]"},
        MalformedCase{"huge integer",
                      "listen = udp:127.0.0.1:5060\nshm_size = 99999999999999999999999\n",
                      "bad.cfg:2: shm_size: bad integer"},
        MalformedCase{"bad listen ip", "listen = udp:localhost:5060\n",
                      "bad.cfg:1: listen: 'udp:localhost:5060': 'localhost' is not a numeric IP"},
        MalformedCase{"bad listen port", "listen = udp:127.0.0.1:70000\n",
                      "bad.cfg:1: listen: 'udp:127.0.0.1:70000': bad port '70000'"},
        MalformedCase{"tls listen", "listen = tls:127.0.0.1:5061\n",
                      "bad.cfg:1: listen: 'tls:127.0.0.1:5061': only udp and tcp listeners"},
        MalformedCase{"duplicate tcp listen",
                      "listen = tcp:127.0.0.1:5060\nlisten = tcp:127.0.0.1:5060\n",
                      "bad.cfg:2: listen: tcp:127.0.0.1:5060 given twice"},
        MalformedCase{"tcp limit out of range",
                      "listen = tcp:127.0.0.1:5060\ntcp_max_msg_size = 10\n",
                      "bad.cfg:2: tcp_max_msg_size: 10 is out of range [512, 67108864]"},
        MalformedCase{"duplicate listen", "listen = udp:127.0.0.1:5060\nlisten = 127.0.0.1:5060\n",
                      "bad.cfg:2: listen: udp:127.0.0.1:5060 given twice"},
        MalformedCase{"no listen", "children = 2\n", "bad.cfg: no listen socket configured"},
        MalformedCase{"unknown module", "listen = udp:127.0.0.1:5060\nloadmodule \"gamma\"\n",
                      "bad.cfg:2: unknown module \"gamma\""},
        MalformedCase{"loadmodule twice",
                      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\nloadmodule \"alpha\"\n",
                      "bad.cfg:3: module \"alpha\" loaded twice (first at line 2)"},
        MalformedCase{"loadmodule unquoted", "listen = udp:127.0.0.1:5060\nloadmodule alpha\n",
                      "bad.cfg:2: expected a quoted string after loadmodule, got 'alpha'"},
        MalformedCase{"modparam before loadmodule",
                      "listen = udp:127.0.0.1:5060\nmodparam(\"alpha\", \"num\", 1)\n"
                      "loadmodule \"alpha\"\n",
                      "bad.cfg:2: modparam for module \"alpha\" which is not loaded"},
        MalformedCase{"modparam missing paren",
                      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\n"
                      "modparam \"alpha\", \"num\", 1)\n",
                      "bad.cfg:3: expected '(' after modparam"},
        MalformedCase{"modparam missing comma",
                      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\n"
                      "modparam(\"alpha\" \"num\", 1)\n",
                      "bad.cfg:3: expected ',' after the module name"},
        MalformedCase{"modparam unclosed",
                      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\n"
                      "modparam(\"alpha\", \"num\", 1\n",
                      "bad.cfg:3: expected ')' to close modparam, got end of file"},
        MalformedCase{"modparam bare word value",
                      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\n"
                      "modparam(\"alpha\", \"str\", hello)\n",
                      "bad.cfg:3: bad integer 'hello' (quote string values"},
        MalformedCase{"modparam unknown param",
                      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\n"
                      "modparam(\"alpha\", \"nope\", 1)\n",
                      "bad.cfg:3: modparam(\"alpha\", \"nope\"): unknown parameter 'nope'"},
        MalformedCase{"modparam wrong type",
                      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\n"
                      "modparam(\"alpha\", \"num\", \"1\")\n",
                      "bad.cfg:3: modparam(\"alpha\", \"num\"): num: expected an integer"},
        MalformedCase{"stray punctuation", "listen = udp:127.0.0.1:5060\n= 3\n",
                      "bad.cfg:2: unexpected '=' at start of statement"},
        MalformedCase{"binary junk", "listen = udp:127.0.0.1:5060\n\x01\x02\xff\n",
                      "bad.cfg:2: syntax error: unknown statement"}),
    [](const ::testing::TestParamInfo<MalformedCase>& info) {
      std::string name;
      for (const char* p = info.param.label; *p != '\0'; ++p) {
        name.push_back(std::isalnum(static_cast<unsigned char>(*p)) ? *p : '_');
      }
      return name;
    });

TEST(ConfigTest, RunDirPlaceholderIsExpandedWhereverRunDirIsSet) {
  auto config = ParseConfig(R"(listen = udp:127.0.0.1:5060
loadmodule "alpha"
modparam("alpha", "str", "${run_dir}/opensips_fifo")
modparam("alpha", "num", 8095)
run_dir = "/srv/sipd"
)",
                            "p.cfg", Factory);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(std::get<std::string>(ModuleAt(*config, 0).params.at("str")),
            "/srv/sipd/opensips_fifo");
  EXPECT_EQ(config->run_dir_line, 5);
  EXPECT_EQ(config->listen.at(0).line, 1);
  // The lines as written, for start-up errors that point at them.
  const auto& params = config->modules.at(0).params;
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].param, "str");
  EXPECT_EQ(params[0].value, "\"${run_dir}/opensips_fifo\"");
  EXPECT_EQ(params[0].line, 3);
  EXPECT_EQ(params[1].value, "8095");
}

TEST(ConfigTest, UnknownPlaceholderIsAnError) {
  auto config = ParseConfig(
      "listen = udp:127.0.0.1:5060\nloadmodule \"alpha\"\nmodparam(\"alpha\", \"str\", "
      "\"${rundir}/x\")\n",
      "p.cfg", Factory);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("p.cfg:3: modparam(\"alpha\", \"str\"): unknown placeholder in "
                        "\"${rundir}/x\" (the only one is ${run_dir})"));
}

TEST(ConfigTest, DefaultRunDirIsPerUser) {
  const char* saved = std::getenv("XDG_RUNTIME_DIR");
  const std::string saved_value = saved != nullptr ? saved : "";
  setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
  EXPECT_EQ(DefaultRunDir(), "/run/user/4242/sipd");
  auto config = ParseConfig("listen = udp:127.0.0.1:5060\n", "d.cfg", Factory);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->run_dir, "/run/user/4242/sipd");
  EXPECT_EQ(config->run_dir_line, 0);
  setenv("XDG_RUNTIME_DIR", "relative/dir", 1);  // not absolute: ignored
  EXPECT_EQ(DefaultRunDir(), absl::StrCat("/tmp/sipd-", geteuid()));
  unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(DefaultRunDir(), absl::StrCat("/tmp/sipd-", geteuid()));
  if (saved != nullptr) setenv("XDG_RUNTIME_DIR", saved_value.c_str(), 1);
}

TEST(ConfigTest, UnknownModuleListsKnownModules) {
  ParseOptions options;
  options.known_modules = {"alpha", "beta"};
  auto config =
      ParseConfig("listen = udp:127.0.0.1:5060\nloadmodule \"gamma\"\n", "m.cfg", Factory, options);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("m.cfg:2: unknown module \"gamma\"; sipd has: alpha, beta"));
}

TEST(ConfigTest, ListenAddressParsing) {
  auto a = ParseListenAddress("udp:10.1.2.3:0");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->port, 0);
  EXPECT_EQ(a->ToString(), "udp:10.1.2.3:0");
  EXPECT_FALSE(ParseListenAddress("udp:[::1]5060").ok());
  EXPECT_FALSE(ParseListenAddress("udp:127.0.0.1").ok());
  EXPECT_FALSE(ParseListenAddress("udp:127.0.0.1:-1").ok());
  EXPECT_FALSE(ParseListenAddress("udp:127.0.0.1:").ok());
}

TEST(ConfigTest, LoadConfigFileNamesMissingFile) {
  auto config = LoadConfigFile("/nonexistent/sipd.cfg", Factory);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(std::string(config.status().message()),
              HasSubstr("/nonexistent/sipd.cfg: cannot open config file"));
}

}  // namespace
}  // namespace sipd
