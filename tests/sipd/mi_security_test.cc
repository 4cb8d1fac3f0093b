// MI security: identities, roles, the tokens file and the admin token, the audit log.
#include "sipd/core/mi_security.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "registry/authorization.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/temp_dir.h"

namespace sipd {
namespace {

using mi::CallContext;
using mi::Role;
using ::sipd::testing::ReadFile;
using ::sipd::testing::WriteFile;

// A request as a transport that parsed its arguments passes it (args_error OK).
mi::Request Req(std::string command, std::vector<mi::Argument> args = {}) {
  return {.command = std::move(command), .args = std::move(args), .args_error = absl::OkStatus()};
}

class MiSecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    Add({.name = "version", .flags = mi::kNoInput});
    Add({.name = "ul_rm",
         .params = {{"table", mi::ParamSpec::Arity::kRequired, ""},
                    {"aor", mi::ParamSpec::Arity::kRequired, ""}},
         .flags = mi::kMutating});
    Add({.name = "kill", .flags = mi::kMutating | mi::kDangerous | mi::kNoInput});
    Add({.name = "set_password",
         .params = {{"user", mi::ParamSpec::Arity::kRequired, ""},
                    {"password", mi::ParamSpec::Arity::kRequired, "", /*secret=*/true}},
         .flags = mi::kMutating});
  }

  void Add(mi::Command::Spec spec) {
    spec.module = "test";
    spec.handler = [](mi::Call&) { return absl::OkStatus(); };
    ASSERT_TRUE(registry_.Register(std::move(spec)).ok());
  }
  const mi::Command& Command(std::string_view name) { return *registry_.Find(name); }

  std::unique_ptr<MiSecurity> Make(MiSecurityOptions options = {}) {
    auto security = MiSecurity::Create(options, dir_.path(), stats_);
    EXPECT_TRUE(security.ok()) << security.status();
    return security.ok() ? std::move(*security) : nullptr;
  }

  testing::TempDir dir_{"sipd-mi-security"};
  mi::Registry registry_;
  std::vector<std::atomic<uint64_t>> cells_{std::vector<std::atomic<uint64_t>>(16)};
  mi::StatsRegistry stats_{{cells_.data(), cells_.size()}};
};

TEST_F(MiSecurityTest, RolesFollowTheCommandFlags) {
  EXPECT_TRUE(mi::CheckRole(Role::kRead, Command("version")).ok());
  EXPECT_EQ(mi::CheckRole(Role::kRead, Command("ul_rm")).message(),
            "role 'read' may not run 'ul_rm' (needs operate)");
  EXPECT_TRUE(mi::CheckRole(Role::kOperate, Command("ul_rm")).ok());
  EXPECT_EQ(mi::CheckRole(Role::kOperate, Command("kill")).message(),
            "role 'operate' may not run 'kill' (needs admin)");
  EXPECT_TRUE(mi::CheckRole(Role::kAdmin, Command("kill")).ok());
  EXPECT_FALSE(mi::CheckRole(Role::kNone, Command("version")).ok());
}

TEST_F(MiSecurityTest, EventsDeclareTheRoleTheirSubscribersNeed) {
  const mi::Event audit(1, {.name = "E_MI_AUDIT", .required_role = Role::kAdmin});
  const mi::Event plain(2, {.name = "E_CORE_THRESHOLD"});
  EXPECT_TRUE(mi::CheckEventRole(Role::kRead, plain).ok());
  EXPECT_EQ(mi::CheckEventRole(Role::kRead, audit).message(),
            "role 'read' may not subscribe to 'E_MI_AUDIT' (needs admin)");
  EXPECT_EQ(mi::CheckEventRole(Role::kOperate, audit).message(),
            "role 'operate' may not subscribe to 'E_MI_AUDIT' (needs admin)");
  EXPECT_TRUE(mi::CheckEventRole(Role::kAdmin, audit).ok());
  EXPECT_TRUE(mi::CheckEventRole(Role::kUnset, audit).ok());  // no security layer
  EXPECT_FALSE(mi::CheckEventRole(Role::kNone, plain).ok());
}

TEST_F(MiSecurityTest, AdminTokenIsCreatedPrivateAndKeptAcrossRestarts) {
  auto security = Make();
  const std::string path = dir_.path() + "/admin.token";
  ASSERT_EQ(security->admin_token_path(), path);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const std::string token = ReadFile(path);
  ASSERT_EQ(token.size(), 65u);  // 64 hex + LF

  auto again = Make();
  EXPECT_EQ(ReadFile(path), token);
  CallContext context;
  context.peer.token = token.substr(0, 64);
  EXPECT_TRUE(again->Authorize(context, Command("kill")).ok());
  EXPECT_EQ(context.peer.principal, "admin");
  EXPECT_EQ(context.peer.role, Role::kAdmin);
}

TEST_F(MiSecurityTest, AdminTokenReadableByOthersStopsStartUp) {
  WriteFile(dir_.path() + "/admin.token", std::string(64, 'a') + "\n", 0644);
  auto security = MiSecurity::Create({}, dir_.path(), stats_);
  ASSERT_FALSE(security.ok());
  EXPECT_NE(security.status().message().find("chmod 600"), absl::string_view::npos)
      << security.status();
}

TEST_F(MiSecurityTest, TokensFileGivesNamesAndRoles) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens,
            "# name role sha256\n"
            "monitor read " +
                Sha256Hex("m-secret") +
                "\n"
                "noc operate " +
                Sha256Hex("n-secret") + "\n",
            0600);
  auto security = Make({.tokens_file = tokens});
  CallContext monitor;
  monitor.peer.token = "m-secret";
  EXPECT_TRUE(security->Authorize(monitor, Command("version")).ok());
  EXPECT_EQ(monitor.peer.principal, "monitor");
  EXPECT_EQ(security->Authorize(monitor, Command("ul_rm")).code(),
            absl::StatusCode::kPermissionDenied);
  CallContext noc;
  noc.peer.token = "n-secret";
  EXPECT_TRUE(security->Authorize(noc, Command("ul_rm")).ok());
  EXPECT_EQ(security->Authorize(noc, Command("kill")).code(), absl::StatusCode::kPermissionDenied);
  CallContext wrong;
  wrong.peer.token = "guess";
  wrong.peer.local = true;
  const absl::Status refused = security->Authorize(wrong, Command("version"));
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(refused.message(), "invalid token");
}

TEST_F(MiSecurityTest, TokensFileMustBePrivateAndWellFormed) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens, "monitor read " + Sha256Hex("x") + "\n", 0640);
  EXPECT_FALSE(MiSecurity::Create({.tokens_file = tokens}, dir_.path(), stats_).ok());
  WriteFile(tokens, "monitor reader " + Sha256Hex("x") + "\n", 0600);
  auto bad = MiSecurity::Create({.tokens_file = tokens}, dir_.path(), stats_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":1: expected `NAME ROLE SHA256`"), absl::string_view::npos)
      << bad.status();
}

TEST_F(MiSecurityTest, WithoutCredentialsLocalCallersReadAndOthersAreRefused) {
  auto security = Make();
  CallContext local;
  local.peer.local = true;
  EXPECT_TRUE(security->Authorize(local, Command("version")).ok());
  EXPECT_EQ(local.peer.role, Role::kRead);
  EXPECT_EQ(security->Authorize(local, Command("kill")).code(),
            absl::StatusCode::kPermissionDenied);
  CallContext remote;
  remote.peer.address = "192.0.2.7:4000";
  EXPECT_EQ(security->Authorize(remote, Command("version")).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(MiSecurityTest, RequireAuthRefusesAnonymousLocalCallers) {
  auto security = Make({.require_auth = true});
  CallContext local;
  local.peer.local = true;
  EXPECT_EQ(security->Authorize(local, Command("version")).code(),
            absl::StatusCode::kUnauthenticated);
  CallContext preset;  // a transport's configured role is not a credential
  preset.peer.local = true;
  preset.peer.role = Role::kAdmin;
  EXPECT_EQ(security->Authorize(preset, Command("version")).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(MiSecurityTest, UnixPeersAreMappedByUid) {
  auto security = Make({.unix_roles = {{static_cast<uid_t>(4242), Role::kOperate}}});
  CallContext self;
  self.peer.uid = geteuid();
  EXPECT_TRUE(security->Authorize(self, Command("kill")).ok());
  EXPECT_EQ(self.peer.principal, "uid:" + std::to_string(geteuid()));
  CallContext mapped;
  mapped.peer.uid = 4242;
  EXPECT_TRUE(security->Authorize(mapped, Command("ul_rm")).ok());
  EXPECT_FALSE(security->Authorize(mapped, Command("kill")).ok());
  CallContext stranger;
  stranger.peer.uid = 4343;
  EXPECT_TRUE(security->Authorize(stranger, Command("version")).ok());
  EXPECT_EQ(security->Authorize(stranger, Command("ul_rm")).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(MiSecurityTest, CertificateSubjectsGetTheirConfiguredRole) {
  auto security = Make({.cert_roles = {{"CN=noc", Role::kOperate}}});
  CallContext noc;
  noc.peer.tls_subject = "CN=noc";
  EXPECT_TRUE(security->Authorize(noc, Command("ul_rm")).ok());
  EXPECT_EQ(noc.peer.principal, "cert:CN=noc");
  CallContext other;
  other.peer.tls_subject = "CN=someone";
  EXPECT_FALSE(security->Authorize(other, Command("ul_rm")).ok());
}

TEST_F(MiSecurityTest, AuditLogRecordsWhoDidWhatWithSecretsRedacted) {
  auto security = Make();
  CallContext context;
  context.transport = mi::Transport::kGrpc;
  context.peer.address = "ipv4:127.0.0.1:5000";
  context.peer.principal = "noc";
  context.peer.role = Role::kOperate;
  security->Audit(context, Command("set_password"),
                  Req("set_password", {{"", "alice"}, {"", "hunter2"}}), 200);
  security->Audit(context, Command("ul_rm"), Req("ul_rm", {{"", "loc\nation"}}), 403);
  const std::string log = ReadFile(security->audit_log_path());
  EXPECT_NE(log.find(" principal=noc role=operate transport=grpc peer=\"ipv4:127.0.0.1:5000\" "
                     "command=set_password args=[\"alice\", ***] code=200\n"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("hunter2"), std::string::npos);
  EXPECT_NE(log.find("args=[\"loc\\x0aation\"] code=403\n"), std::string::npos) << log;
  struct stat st;
  ASSERT_EQ(stat(security->audit_log_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(stats_.Value("mi_audit").value(), 2u);
}

TEST_F(MiSecurityTest, ModparamsAreParsedAndCheckedStrictly) {
  MiSecurityOptions options;
  EXPECT_TRUE(
      SetMiSecurityParam("unix_roles", std::string("1000:operate; 1001:admin"), &options).ok());
  ASSERT_EQ(options.unix_roles.size(), 2u);
  EXPECT_EQ(options.unix_roles[1], (std::pair<uid_t, Role>{1001, Role::kAdmin}));
  EXPECT_TRUE(SetMiSecurityParam("require_auth", std::string("yes"), &options).ok());
  EXPECT_TRUE(options.require_auth);
  EXPECT_FALSE(SetMiSecurityParam("unix_roles", std::string("bob:admin"), &options).ok());
  EXPECT_FALSE(SetMiSecurityParam("require_auth", int64_t{2}, &options).ok());
  EXPECT_FALSE(SetMiSecurityParam("tokens", std::string("x"), &options).ok());
}

}  // namespace
}  // namespace sipd
