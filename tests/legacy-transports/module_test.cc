// The mi_fifo and mi_datagram modules as the daemon drives them: parameters, Init
// checks, the process specs, pre-fork creation of the FIFO / sockets, and Shutdown.
// Also the shared parameter helpers (modes, owners).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "legacy-transports/datagram/datagram_module.h"
#include "legacy-transports/fifo/fifo_module.h"
#include "legacy-transports/text/module_params.h"
#include "tests/core-commands/test_core.h"
#include "tests/legacy-transports/in_process_servers.h"

namespace sipd::legacy::testing {
namespace {

using ::sipd::testing::TestCore;

TEST(ModuleParamsTest, Modes) {
  EXPECT_EQ(*ModeFromParam("m", int64_t{0640}), 0640u);
  EXPECT_EQ(*ModeFromParam("m", std::string("0660")), 0660u) << "a string is octal";
  EXPECT_EQ(*ModeFromParam("m", int64_t{0}), 0600u) << "0 becomes 0600";
  EXPECT_FALSE(ModeFromParam("m", int64_t{010000}).ok());
  EXPECT_FALSE(ModeFromParam("m", int64_t{-1}).ok());
  EXPECT_FALSE(ModeFromParam("m", std::string("rw-")).ok());
}

TEST(ModuleParamsTest, UsersAndGroups) {
  FileAccess access;
  ASSERT_TRUE(SetUserFromParam("u", std::string("root"), &access).ok());
  EXPECT_EQ(access.uid, 0u);
  EXPECT_EQ(access.effective_gid(), 0u) << "a user name brings its primary group";
  ASSERT_TRUE(SetGroupFromParam("g", int64_t{12345}, &access).ok());
  EXPECT_EQ(access.effective_gid(), 12345u) << "an explicit group wins";
  ASSERT_TRUE(SetUserFromParam("u", std::string("4242"), &access).ok());
  EXPECT_EQ(access.uid, 4242u);
  EXPECT_FALSE(SetUserFromParam("u", std::string("no-such-user-xyz"), &access).ok());
  EXPECT_FALSE(SetGroupFromParam("g", std::string("no-such-group-xyz"), &access).ok());
  EXPECT_FALSE(SetUserFromParam("u", int64_t{-5}, &access).ok());
}

TEST(MiFifoModuleTest, ParametersInitProcessesAndShutdown) {
  TempDir dir;
  TestCore core;
  auto module = NewMiFifoModule();
  EXPECT_EQ(module->name(), "mi_fifo");
  EXPECT_FALSE(module->Init(core).ok()) << "fifo_name is mandatory";
  const std::string fifo = dir.Join("fifo");
  ASSERT_TRUE(module->SetParam("fifo_name", std::string(fifo)).ok());
  ASSERT_TRUE(module->SetParam("fifo_mode", int64_t{0620}).ok());
  ASSERT_TRUE(module->SetParam("reply_dir", dir.path()).ok());  // no final '/'
  ASSERT_TRUE(module->SetParam("reply_indent", std::string("  ")).ok());
  ASSERT_TRUE(module->SetParam("reply_timeout", int64_t{1500}).ok());
  ASSERT_TRUE(module->SetParam("request_timeout", int64_t{0}).ok());
  ASSERT_TRUE(module->SetParam("reply_deadline", int64_t{30000}).ok());
  EXPECT_FALSE(module->SetParam("reply_deadline", int64_t{0}).ok()) << "a deadline is needed";
  EXPECT_FALSE(module->SetParam("fifo_name", int64_t{3}).ok()) << "wrong type";
  EXPECT_FALSE(module->SetParam("no_such_param", int64_t{1}).ok());
  EXPECT_FALSE(module->SetParam("reply_timeout", int64_t{-1}).ok());
  ASSERT_TRUE(module->Init(core).ok());

  std::vector<ProcessSpec> specs = module->Processes();
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name, "MI FIFO");
  EXPECT_EQ(specs[0].count, 1);
  EXPECT_TRUE(specs[0].init_child);
  ASSERT_TRUE(specs[0].pre_fork);
  ASSERT_TRUE(specs[0].pre_fork().ok());
  struct stat st;
  ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0620u);
  EXPECT_TRUE(specs[0].pre_fork().ok()) << "a second pre-fork keeps the FIFO";
  module->Shutdown();
  EXPECT_NE(lstat(fifo.c_str(), &st), 0) << "Shutdown removes the FIFO";
}

TEST(MiFifoModuleTest, MissingReplyDirFailsInit) {
  TempDir dir;
  TestCore core;
  auto module = NewMiFifoModule();
  ASSERT_TRUE(module->SetParam("fifo_name", dir.Join("fifo")).ok());
  ASSERT_TRUE(module->SetParam("reply_dir", dir.Join("missing/")).ok());
  absl::Status status = module->Init(core);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("reply_dir"), absl::string_view::npos) << status;
}

TEST(MiDatagramModuleTest, ParametersInitProcessesAndShutdown) {
  TempDir dir;
  TestCore core;
  auto module = NewMiDatagramModule();
  EXPECT_EQ(module->name(), "mi_datagram");
  EXPECT_FALSE(module->Init(core).ok()) << "socket_name is mandatory";
  const std::string path = dir.Join("mi.sock");
  ASSERT_TRUE(module->SetParam("socket_name", path).ok());
  ASSERT_TRUE(module->SetParam("extra_socket_name", std::string("udp:127.0.0.1:0")).ok());
  ASSERT_TRUE(module->SetParam("children_count", int64_t{3}).ok());
  ASSERT_TRUE(module->SetParam("socket_timeout", int64_t{100}).ok());
  ASSERT_TRUE(module->SetParam("unix_socket_mode", int64_t{0}).ok());  // -> 0600
  ASSERT_TRUE(module->SetParam("reply_indent", std::string("")).ok());
  ASSERT_TRUE(module->SetParam("async_timeout", int64_t{5000}).ok());
  EXPECT_FALSE(module->SetParam("async_timeout", int64_t{0}).ok());
  EXPECT_FALSE(module->SetParam("children_count", int64_t{0}).ok());
  EXPECT_FALSE(module->SetParam("socket_name", int64_t{1}).ok());
  EXPECT_FALSE(module->SetParam("no_such_param", int64_t{1}).ok());
  ASSERT_TRUE(module->Init(core).ok());
  // Replies dropped on a full client queue are counted in shared memory.
  EXPECT_TRUE(core.stats().Value("dropped_replies").ok());

  std::vector<ProcessSpec> specs = module->Processes();
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name, "MI Datagram");
  EXPECT_EQ(specs[0].count, 3);
  ASSERT_TRUE(specs[0].pre_fork().ok());
  EXPECT_TRUE(specs[0].pre_fork().ok()) << "a second pre-fork reuses the sockets";
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // The listeners report the bound addresses (the port the kernel chose).
  ASSERT_EQ(core.listeners.size(), 2u);
  EXPECT_EQ(core.listeners[0].address, path);
  ASSERT_TRUE(core.listeners[1].address.starts_with("127.0.0.1:")) << core.listeners[1].address;
  const int port = std::stoi(core.listeners[1].address.substr(10));
  ASSERT_GT(port, 0);
  // The UDP port is taken.
  EXPECT_FALSE(
      CreateDatagramSockets("udp:127.0.0.1:" + std::to_string(port), false, FileAccess{}).ok());
  module->Shutdown();
  EXPECT_NE(lstat(path.c_str(), &st), 0) << "Shutdown removes the socket file";
  absl::StatusOr<DatagramSockets> again =
      CreateDatagramSockets("udp:127.0.0.1:" + std::to_string(port), false, FileAccess{});
  EXPECT_TRUE(again.ok()) << "Shutdown closed the UDP socket";
  if (again.ok()) again->Close();
}

}  // namespace
}  // namespace sipd::legacy::testing
