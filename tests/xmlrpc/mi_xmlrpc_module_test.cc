// mi_xmlrpc module parameters and its process declaration (spec 5.1, 10.2).
#include "legacy-transports/xmlrpc/mi_xmlrpc_module.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "legacy-transports/xmlrpc/server.h"

namespace sipd {
namespace {

using ::testing::HasSubstr;

TEST(MiXmlrpcModuleTest, ParametersAreValidated) {
  std::unique_ptr<Module> module = NewMiXmlrpcModule();
  EXPECT_EQ(module->name(), "mi_xmlrpc");
  EXPECT_TRUE(module->SetParam("port", int64_t{8081}).ok());
  EXPECT_TRUE(module->SetParam("port", int64_t{80}).ok());  // -> 8080 with a warning
  EXPECT_FALSE(module->SetParam("port", int64_t{70000}).ok());
  EXPECT_FALSE(module->SetParam("port", std::string("8080")).ok());
  EXPECT_TRUE(module->SetParam("listen", std::string("::1")).ok());
  EXPECT_TRUE(module->SetParam("listen", std::string("127.0.0.1")).ok());
  EXPECT_FALSE(module->SetParam("listen", std::string("localhost")).ok());
  EXPECT_TRUE(module->SetParam("reply_option", int64_t{0}).ok());
  EXPECT_TRUE(module->SetParam("reply_option", int64_t{1}).ok());
  const absl::Status bad_option = module->SetParam("reply_option", int64_t{2});
  EXPECT_EQ(bad_option.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_option.message()), HasSubstr("reply_option"));
  EXPECT_TRUE(module->SetParam("buffer_size", int64_t{4096}).ok());
  EXPECT_FALSE(module->SetParam("buffer_size", int64_t{0}).ok());
  EXPECT_TRUE(module->SetParam("max_body_size", int64_t{1 << 20}).ok());
  EXPECT_FALSE(module->SetParam("max_body_size", int64_t{-1}).ok());
  EXPECT_TRUE(module->SetParam("read_timeout", int64_t{15}).ok());
  EXPECT_FALSE(module->SetParam("read_timeout", int64_t{0}).ok());
  EXPECT_TRUE(module->SetParam("max_connections", int64_t{8}).ok());
  EXPECT_FALSE(module->SetParam("max_connections", int64_t{0}).ok());
  EXPECT_TRUE(module->SetParam("max_connections_per_peer", int64_t{100}).ok());
  EXPECT_FALSE(module->SetParam("max_connections_per_peer", int64_t{0}).ok());
  for (const char* timeout :
       {"header_timeout", "idle_timeout", "stall_timeout", "reply_timeout", "read_timeout"}) {
    EXPECT_TRUE(module->SetParam(timeout, int64_t{3}).ok()) << timeout;
    EXPECT_FALSE(module->SetParam(timeout, int64_t{0}).ok()) << timeout;
    EXPECT_FALSE(module->SetParam(timeout, std::string("3")).ok()) << timeout;
  }
  EXPECT_TRUE(module->SetParam("keep_alive_max", int64_t{0}).ok());
  EXPECT_TRUE(module->SetParam("keep_alive_max", int64_t{30}).ok());
  EXPECT_FALSE(module->SetParam("keep_alive_max", int64_t{-1}).ok());
  EXPECT_TRUE(module->SetParam("processes", int64_t{1}).ok());
  EXPECT_FALSE(module->SetParam("processes", int64_t{0}).ok());
  EXPECT_TRUE(module->SetParam("log_file", std::string("/tmp/x.log")).ok());
  EXPECT_FALSE(module->SetParam("log_file", int64_t{1}).ok());
  EXPECT_FALSE(module->SetParam("nosuch", int64_t{1}).ok());
}

TEST(MiXmlrpcModuleTest, ProcessesThatBindBeforeTheFork) {
  // A port that was free a moment ago.
  absl::StatusOr<int> probe = xmlrpc::OpenListenSocket("127.0.0.1", 0);
  ASSERT_TRUE(probe.ok());
  const int port = *xmlrpc::BoundPort(*probe);
  close(*probe);

  std::unique_ptr<Module> module = NewMiXmlrpcModule();
  ASSERT_TRUE(module->SetParam("port", int64_t{port}).ok());
  std::vector<ProcessSpec> processes = module->Processes();
  ASSERT_EQ(processes.size(), 1u);
  EXPECT_EQ(processes[0].name, "MI XMLRPC");
  EXPECT_EQ(processes[0].count, 2);  // the default
  std::unique_ptr<Module> single = NewMiXmlrpcModule();
  ASSERT_TRUE(single->SetParam("processes", int64_t{1}).ok());
  EXPECT_EQ(single->Processes()[0].count, 1);
  EXPECT_TRUE(processes[0].init_child);
  ASSERT_TRUE(processes[0].pre_fork);
  ASSERT_TRUE(processes[0].main);
  ASSERT_TRUE(processes[0].pre_fork().ok());

  // A second instance on the same port fails loudly in its pre-fork hook.
  std::unique_ptr<Module> other = NewMiXmlrpcModule();
  ASSERT_TRUE(other->SetParam("port", int64_t{port}).ok());
  const absl::Status busy = other->Processes()[0].pre_fork();
  EXPECT_EQ(busy.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(busy.message()), HasSubstr(absl::StrCat("127.0.0.1:", port)));
  module->Shutdown();
}

}  // namespace
}  // namespace sipd
