// The FIFO and datagram transports in-process (test registry): malformed-input tables,
// start-up checks of the request FIFO and the sockets.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/legacy-transports/in_process_servers.h"
#include "tests/legacy-transports/malformed_cases.h"

namespace sipd::legacy::testing {
namespace {

using std::chrono::milliseconds;

TEST(FifoTransportTest, MalformedInputTable) {
  InProcessFifo fifo(milliseconds(300), milliseconds(500));
  fifo.Start();
  RunFifoMalformedTable({.fifo = fifo.fifo_name(),
                         .reply_dir = fifo.reply_dir(),
                         .request_timeout = milliseconds(300),
                         .reply_timeout = milliseconds(500),
                         .large_command = "big",
                         .large_args = {"2000"}});
}

TEST(FifoTransportTest, StreamedReplyReachesAReaderOfAnySpeed) {
  // 20000 lines (2 MB) flushed every 50 lines, read by a client that reads slowly at
  // first: the stall timeout only counts time without progress.
  InProcessFifo fifo(milliseconds(300), milliseconds(500));
  fifo.Start();
  auto client = FifoClient::Create(fifo.fifo_name(), fifo.reply_dir());
  ASSERT_TRUE(client.ok());
  absl::StatusOr<std::string> reply = (*client)->Execute("big_flushed", {"20000"});
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->size(), 7u + 20000u * 104u + 20000u / 50u + 1u);
}

TEST(FifoTransportTest, TimeSpentServingIsNotCountedAsSilence) {
  // A's request and the first half of B's arrive in one read; A runs longer than
  // request_timeout; B's second half arrives shortly after A is done: B is served.
  InProcessFifo fifo(milliseconds(300), milliseconds(500));
  fifo.Start();
  auto a = FifoClient::Create(fifo.fifo_name(), fifo.reply_dir());
  auto b = FifoClient::Create(fifo.fifo_name(), fifo.reply_dir());
  ASSERT_TRUE(a.ok() && b.ok());
  const int b_reader = open((*b)->reply_path().c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(b_reader, 0);
  absl::StatusOr<std::string> a_reply = (*a)->Transact(
      ":sleep:" + (*a)->reply_name() + "\n800\n\n:echo:" + (*b)->reply_name() + "\n");
  ASSERT_TRUE(a_reply.ok()) << a_reply.status();
  EXPECT_EQ(*a_reply, "200 OK\n\n");
  // A is done (800 ms after B's first half): B's second half comes now.
  ASSERT_TRUE((*b)->Send("ps\n\n").ok());
  const std::string got = ReadFifoReply(b_reader, std::chrono::seconds(10));
  close(b_reader);
  EXPECT_EQ(got, "200 OK\nps\n\n");
}

TEST(FifoTransportTest, RequestFifoIsCreatedPrivate) {
  InProcessFifo fifo;
  const mode_t old_umask = umask(0);
  fifo.Start();
  umask(old_umask);
  struct stat st;
  ASSERT_EQ(lstat(fifo.fifo_name().c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(FifoTransportTest, ConfiguredModeIsApplied) {
  InProcessFifo fifo;
  fifo.config().access.mode = 0640;
  fifo.Start();
  struct stat st;
  ASSERT_EQ(lstat(fifo.fifo_name().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST(FifoTransportTest, StaleFifoIsReplaced) {
  TempDir dir;
  FifoConfig config;
  config.fifo_name = dir.Join("fifo");
  ASSERT_EQ(mkfifo(config.fifo_name.c_str(), 0666), 0);
  struct stat before;
  ASSERT_EQ(lstat(config.fifo_name.c_str(), &before), 0);
  ASSERT_TRUE(PrepareRequestFifo(config).ok());
  struct stat after;
  ASSERT_EQ(lstat(config.fifo_name.c_str(), &after), 0);
  EXPECT_TRUE(S_ISFIFO(after.st_mode));
  EXPECT_EQ(after.st_mode & 07777, 0600u);
}

TEST(FifoTransportTest, RegularFileAndSymlinkAreRefused) {
  TempDir dir;
  FifoConfig config;
  config.fifo_name = dir.Join("file");
  {
    FILE* f = fopen(config.fifo_name.c_str(), "w");
    fputs("keep me", f);
    fclose(f);
  }
  absl::Status status = PrepareRequestFifo(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("is not a FIFO"), absl::string_view::npos) << status;
  struct stat st;
  ASSERT_EQ(lstat(config.fifo_name.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the file must not be removed";

  const std::string target = dir.Join("target_fifo");
  ASSERT_EQ(mkfifo(target.c_str(), 0600), 0);
  config.fifo_name = dir.Join("link");
  ASSERT_EQ(symlink(target.c_str(), config.fifo_name.c_str()), 0);
  status = PrepareRequestFifo(config);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("symbolic link"), absl::string_view::npos) << status;
  // The server refuses to open a symlink too.
  auto registry = NewTestRegistry();
  mi::Dispatcher dispatcher(*registry);
  FifoServer server(config, dispatcher);
  EXPECT_FALSE(server.Open().ok());
}

TEST(FifoTransportTest, OpenRecreatesAMissingFifo) {
  TempDir dir;
  FifoConfig config;
  config.fifo_name = dir.Join("fifo");
  auto registry = NewTestRegistry();
  mi::Dispatcher dispatcher(*registry);
  FifoServer server(config, dispatcher);
  ASSERT_TRUE(server.Open().ok());
  struct stat st;
  ASSERT_EQ(lstat(config.fifo_name.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST(FifoTransportTest, ReplyDirMustBeADirectory) {
  TempDir dir;
  EXPECT_TRUE(CheckReplyDir(dir.path() + "/").ok());
  EXPECT_FALSE(CheckReplyDir(dir.Join("missing/")).ok());
}

TEST(DatagramTransportTest, UnixMalformedInputTable) {
  InProcessDatagram server("{DIR}/mi.sock");
  server.Start();
  RunDatagramMalformedTable({.unix_path = server.dir().Join("mi.sock"),
                             .client_dir = server.dir().path(),
                             .large_request = ":big:\n1000\n"});
}

TEST(DatagramTransportTest, UdpMalformedInputTable) {
  InProcessDatagram server("udp:127.0.0.1:0");
  server.Start();
  const int port = server.udp_port();
  RunDatagramMalformedTable({.udp_port = port, .large_request = ":big:\n1000\n"});
}

TEST(DatagramTransportTest, OneServerServesUnixAndUdpSockets) {
  InProcessDatagram server("{DIR}/mi.sock");
  server.config().extra_socket_names = {"udp:127.0.0.1:0"};
  server.Start();
  const int port = server.udp_port();
  auto unix_client = DatagramClient::Unix(server.dir().Join("mi.sock"), server.dir().path());
  auto udp_client = DatagramClient::Udp("127.0.0.1", port);
  ASSERT_TRUE(unix_client.ok() && udp_client.ok());
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> a = (*unix_client)->Transact(":version:\n");
    absl::StatusOr<std::string> b = (*udp_client)->Transact(":version:\n");
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b);
  }
}

TEST(DatagramTransportTest, UnixSocketIsPrivateAndStaleSocketReplaced) {
  InProcessDatagram first("{DIR}/mi.sock");
  const mode_t old_umask = umask(0);
  first.Start(/*run=*/false);
  umask(old_umask);
  const std::string path = first.dir().Join("mi.sock");
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // A second server on the same path replaces the (now stale) socket file.
  DatagramConfig config;
  config.socket_name = path;
  config.unix_access.mode = 0660;
  absl::StatusOr<DatagramSockets> second =
      CreateDatagramSockets(config.socket_name, false, config.unix_access);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  second->Close();
}

TEST(DatagramTransportTest, UnixPathThatIsAFileOrSymlinkIsRefused) {
  TempDir dir;
  DatagramConfig config;
  config.socket_name = dir.Join("file");
  {
    FILE* f = fopen(config.socket_name.c_str(), "w");
    fclose(f);
  }
  EXPECT_EQ(CreateDatagramSockets(config.socket_name, false, config.unix_access).status().code(),
            absl::StatusCode::kFailedPrecondition);
  config.socket_name = dir.Join("link");
  ASSERT_EQ(symlink(dir.Join("file").c_str(), config.socket_name.c_str()), 0);
  EXPECT_EQ(CreateDatagramSockets(config.socket_name, false, config.unix_access).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(DatagramTransportTest, BusyUdpPortAndBadNamesFail) {
  DatagramConfig config;
  absl::StatusOr<DatagramSockets> first =
      CreateDatagramSockets("udp:127.0.0.1:0", false, config.unix_access);
  ASSERT_TRUE(first.ok()) << first.status();
  config.socket_name = "udp:127.0.0.1:" + std::to_string(BoundUdpPort(first->rx));
  absl::StatusOr<DatagramSockets> second =
      CreateDatagramSockets(config.socket_name, false, config.unix_access);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  first->Close();
  for (const std::string bad : {"udp:127.0.0.1", "udp:127.0.0.1:80", "udp:127.0.0.1:70000",
                                "udp:127.0.0.1:x", "udp:no.such.host.invalid:5000", ""}) {
    config.socket_name = bad;
    EXPECT_FALSE(CreateDatagramSockets(config.socket_name, false, config.unix_access).ok()) << bad;
  }
  config.socket_name = "udp:[::1]:0";
  absl::StatusOr<DatagramSockets> v6 =
      CreateDatagramSockets(config.socket_name, false, config.unix_access);
  if (v6.ok()) v6->Close();  // IPv6 may be disabled on the machine: only parse-check
}

}  // namespace
}  // namespace sipd::legacy::testing
