// The FIFO server's event loop in-process (test registry): clients that do not read do
// not hold others, stalls and the total deadline cut, a reader that goes away cancels
// the call (worker handler, async slot), async replies completed from another thread,
// reply FIFO open retries, requests for one reply FIFO in order, the resynchronisation
// rule for half-sent requests (issue 9 #6) and the caller identity.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/legacy-transports/in_process_servers.h"
#include "tests/support/sipd_harness.h"

namespace sipd::legacy::testing {
namespace {

using ::sipd::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Size of `big_flushed n`: status, n lines of 104 bytes, one empty line per flush and
// the final one.
size_t BigFlushedSize(size_t n) { return 7 + n * 104 + n / 50 + 1; }

int UnreadBytes(int fd) {
  int unread = 0;
  return ioctl(fd, FIONREAD, &unread) == 0 ? unread : -1;
}

// Reads `fd` until EOF or `limit` passes; returns what it got (and whether EOF came).
std::string ReadToEof(int fd, milliseconds limit, bool* eof = nullptr) {
  std::string got;
  char buffer[65536];
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    pollfd pfd{fd, POLLIN, 0};
    poll(&pfd, 1, 50);
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      got.append(buffer, static_cast<size_t>(n));
    } else if (n == 0 && (pfd.revents & POLLHUP) != 0) {
      if (eof != nullptr) *eof = true;
      return got;
    }
  }
  if (eof != nullptr) *eof = false;
  return got;
}

class FifoEventLoopTest : public ::testing::Test {
 protected:
  void Start(milliseconds reply_timeout = milliseconds(500),
             milliseconds reply_deadline = seconds(60)) {
    fifo_.config().reply_timeout = reply_timeout;
    fifo_.config().reply_deadline = reply_deadline;
    fifo_.Start();
    probe_fd_ = open(fifo_.fifo_name().c_str(), O_WRONLY | O_NONBLOCK);
    ASSERT_GE(probe_fd_, 0);
  }
  void TearDown() override {
    if (probe_fd_ >= 0) close(probe_fd_);
  }
  std::unique_ptr<FifoClient> NewClient() {
    auto client = FifoClient::Create(fifo_.fifo_name(), fifo_.reply_dir());
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }
  // The server has read everything written to the request FIFO so far.
  bool RequestFifoDrained() {
    return WaitUntil([&] { return UnreadBytes(probe_fd_) == 0; }, seconds(5));
  }
  // A reply FIFO read end opened before the request (as FifoClient does).
  int OpenReader(const FifoClient& client) {
    return open(client.reply_path().c_str(), O_RDONLY | O_NONBLOCK);
  }

  InProcessFifo fifo_;
  int probe_fd_ = -1;
};

TEST_F(FifoEventLoopTest, AStalledStreamHoldsNobodyAndResumesWhenRead) {
  Start(/*reply_timeout=*/seconds(30));
  auto slow = NewClient();
  const int reader = OpenReader(*slow);
  ASSERT_GE(reader, 0);
  ASSERT_TRUE(slow->Send(":big_flushed:" + slow->reply_name() + "\n20000\n\n").ok());
  // The pipe is full (tens of KB, depending on how writes filled its pages) and the
  // rest of the 2 MB reply waits in the server.
  ASSERT_TRUE(WaitUntil([&] { return UnreadBytes(reader) >= 32768; }, seconds(5)));
  EXPECT_EQ(fifo_.server().clients_in_flight(), 1u);
  auto good = NewClient();
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::string> reply = good->Execute("version");
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, "200 OK\nServer:: OpenSIPS (1.11.11-notls (x86_64/linux))\n\n");
  }
  // The stream goes on where it stopped once its reader reads: byte for byte whole.
  bool eof = false;
  const std::string got = ReadToEof(reader, seconds(20), &eof);
  close(reader);
  EXPECT_TRUE(eof);
  EXPECT_EQ(got.size(), BigFlushedSize(20000));
  EXPECT_EQ(got.substr(0, 7), "200 OK\n");
  EXPECT_TRUE(WaitUntil([&] { return fifo_.server().clients_in_flight() == 0; }, seconds(5)));
}

TEST_F(FifoEventLoopTest, AReaderThatStopsIsCutAfterTheStallTimeout) {
  Start(/*reply_timeout=*/milliseconds(300));
  auto stalled = NewClient();
  const int reader = OpenReader(*stalled);
  ASSERT_TRUE(stalled->Send(":big_flushed:" + stalled->reply_name() + "\n20000\n\n").ok());
  ASSERT_TRUE(WaitUntil([&] { return UnreadBytes(reader) >= 32768; }, seconds(5)));
  // Cut: the server closes its end; the reader finds what the pipe held, then EOF.
  ASSERT_TRUE(WaitUntil([&] { return fifo_.server().clients_in_flight() == 0; }, seconds(5)));
  bool eof = false;
  const std::string got = ReadToEof(reader, seconds(5), &eof);
  close(reader);
  EXPECT_TRUE(eof);
  EXPECT_LT(got.size(), BigFlushedSize(20000));
  EXPECT_EQ(got.substr(0, 7), "200 OK\n");
}

TEST_F(FifoEventLoopTest, ASteadySlowReaderIsCutAtTheTotalDeadline) {
  Start(/*reply_timeout=*/seconds(30), /*reply_deadline=*/milliseconds(400));
  auto slow = NewClient();
  const int reader = OpenReader(*slow);
  ASSERT_TRUE(slow->Send(":big_flushed:" + slow->reply_name() + "\n20000\n\n").ok());
  // Always some progress (never a stall), but far too slow for 2 MB.
  std::string got;
  char buffer[4096];
  bool eof = false;
  for (int i = 0; i < 1000 && !eof; ++i) {
    const ssize_t n = read(reader, buffer, sizeof(buffer));
    if (n > 0) got.append(buffer, static_cast<size_t>(n));
    // The client's reading pace (20 ms a read); a hang-up by the server ends the wait.
    pollfd pfd{reader, 0, 0};
    poll(&pfd, 1, 20);
    eof = n == 0 && (pfd.revents & POLLHUP) != 0;
  }
  close(reader);
  EXPECT_TRUE(eof) << "never cut";
  EXPECT_LT(got.size(), BigFlushedSize(20000));
  EXPECT_EQ(fifo_.server().clients_in_flight(), 0u);
}

TEST_F(FifoEventLoopTest, AReaderThatGoesAwayCancelsTheRunningHandler) {
  Start();
  const int before = CancelsSeen();
  const int started = CancelWaitsStarted();
  auto client = NewClient();
  const int reader = OpenReader(*client);
  ASSERT_TRUE(client->Send(":wait_for_cancel:" + client->reply_name() + "\n\n").ok());
  ASSERT_TRUE(WaitUntil([&] { return fifo_.server().clients_in_flight() == 1; }, seconds(5)));
  // The handler runs (on a worker thread): a call cancelled while still queued for a
  // worker would never run it.
  ASSERT_TRUE(WaitUntil([&] { return CancelWaitsStarted() == started + 1; }, seconds(5)));
  // Meanwhile the loop serves others.
  auto other = NewClient();
  EXPECT_TRUE(other->Execute("version").ok());
  close(reader);
  EXPECT_TRUE(WaitUntil([&] { return CancelsSeen() == before + 1; }, seconds(5)));
  EXPECT_TRUE(WaitUntil([&] { return fifo_.server().clients_in_flight() == 0; }, seconds(5)));
}

TEST_F(FifoEventLoopTest, AsyncRepliesCompletedFromAnotherThread) {
  Start();
  TakeHeldTickets();
  constexpr int kCalls = 1000;
  std::vector<std::unique_ptr<FifoClient>> clients;
  std::vector<int> readers;
  for (int i = 0; i < kCalls; ++i) {
    clients.push_back(NewClient());
    readers.push_back(OpenReader(*clients.back()));
    ASSERT_GE(readers.back(), 0);
    ASSERT_TRUE(clients.back()->Send(":async_hold:" + clients.back()->reply_name() + "\n\n").ok());
  }
  ASSERT_TRUE(WaitUntil([&] { return HeldTicketCount() == kCalls; }, seconds(10)));
  EXPECT_EQ(fifo_.server().clients_in_flight(), size_t{kCalls});
  EXPECT_EQ(fifo_.async_pending(), size_t{kCalls});
  // Completed from another thread, as a SIP worker would from another process.
  std::thread completer([&] {
    mi::Reply reply;
    reply.root.AddKid("held", "done");
    for (const mi::AsyncTicket& ticket : TakeHeldTickets()) {
      EXPECT_TRUE(fifo_.dispatcher().async().Complete(ticket, &reply));
    }
  });
  completer.join();
  for (int i = 0; i < kCalls; ++i) {
    bool eof = false;
    EXPECT_EQ(ReadToEof(readers[i], seconds(10), &eof), "200 OK\nheld:: done\n\n") << i;
    EXPECT_TRUE(eof);
    close(readers[i]);
  }
  EXPECT_TRUE(WaitUntil([&] { return fifo_.server().clients_in_flight() == 0; }, seconds(5)));
  EXPECT_EQ(fifo_.async_pending(), 0u);
}

TEST_F(FifoEventLoopTest, AsyncFailureAndCallerGone) {
  Start();
  TakeHeldTickets();
  auto failing = NewClient();
  const int failing_reader = OpenReader(*failing);
  ASSERT_TRUE(failing->Send(":async_hold:" + failing->reply_name() + "\n\n").ok());
  ASSERT_TRUE(WaitUntil([&] { return HeldTicketCount() == 1; }, seconds(5)));
  for (const mi::AsyncTicket& ticket : TakeHeldTickets()) {
    EXPECT_TRUE(fifo_.dispatcher().async().Complete(ticket, nullptr));
  }
  EXPECT_EQ(ReadToEof(failing_reader, seconds(5)), "500 command 'async_hold' failed\n");
  close(failing_reader);

  // The caller goes away: its slot is released, a late completion is refused.
  auto gone = NewClient();
  const int gone_reader = OpenReader(*gone);
  ASSERT_TRUE(gone->Send(":async_hold:" + gone->reply_name() + "\n\n").ok());
  ASSERT_TRUE(WaitUntil([&] { return HeldTicketCount() == 1; }, seconds(5)));
  EXPECT_EQ(fifo_.async_pending(), 1u);
  close(gone_reader);
  EXPECT_TRUE(WaitUntil([&] { return fifo_.async_pending() == 0; }, seconds(5)));
  EXPECT_TRUE(WaitUntil([&] { return fifo_.server().clients_in_flight() == 0; }, seconds(5)));
  mi::Reply late;
  for (const mi::AsyncTicket& ticket : TakeHeldTickets()) {
    EXPECT_FALSE(fifo_.dispatcher().async().Complete(ticket, &late));
  }
}

TEST_F(FifoEventLoopTest, AsyncCallEndsAtTheReplyDeadline) {
  Start(/*reply_timeout=*/milliseconds(500), /*reply_deadline=*/milliseconds(300));
  TakeHeldTickets();
  auto client = NewClient();
  absl::StatusOr<std::string> reply = client->Execute("async_hold", {}, seconds(5));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "500 command 'async_hold' failed\n");
  EXPECT_EQ(fifo_.async_pending(), 0u);
  TakeHeldTickets();
}

TEST_F(FifoEventLoopTest, AReplyFifoOpenedLateIsRetriedWithoutStoppingOthers) {
  Start();
  auto late = NewClient();
  ASSERT_TRUE(late->Send(":version:" + late->reply_name() + "\n\n").ok());
  ASSERT_TRUE(RequestFifoDrained());
  // The first open found no reader; others are served meanwhile.
  auto other = NewClient();
  EXPECT_TRUE(other->Execute("uptime").ok());
  const int reader = OpenReader(*late);
  EXPECT_EQ(ReadToEof(reader, seconds(5)),
            "200 OK\nServer:: OpenSIPS (1.11.11-notls (x86_64/linux))\n\n");
  close(reader);
}

TEST_F(FifoEventLoopTest, RequestsForOneReplyFifoAreAnsweredInOrder) {
  Start();
  auto client = NewClient();
  const int reader = OpenReader(*client);
  const std::string name = client->reply_name();
  ASSERT_TRUE(
      client->Send(":big:" + name + "\n2000\n\n:version:" + name + "\n\n:uptime:" + name + "\n\n")
          .ok());
  const std::string big = "200 OK\n" + [] {
    std::string lines;
    for (int i = 0; i < 2000; ++i) lines += "line:: " + std::string(96, 'x') + "\n";
    return lines;
  }() + "\n";
  const std::string expected =
      big + "200 OK\nServer:: OpenSIPS (1.11.11-notls (x86_64/linux))\n\n" +
      "200 OK\nNow:: Tue Jun  3 16:22:20 2014\nUp since:: Tue Jun  3 16:00:00 2014\n"
      "Up time:: 1340 [sec]\n\n";
  // Three writers one after the other: EOF may show between them, so read by size.
  std::string got;
  char buffer[65536];
  ASSERT_TRUE(WaitUntil(
      [&] {
        const ssize_t n = read(reader, buffer, sizeof(buffer));
        if (n > 0) got.append(buffer, static_cast<size_t>(n));
        return got.size() >= expected.size();
      },
      seconds(10)));
  close(reader);
  EXPECT_EQ(got, expected);
}

TEST_F(FifoEventLoopTest, AHalfSentRequestIsAnswered400AndTheNextClientIsServed) {
  Start();
  for (const std::string& half : {std::string("arg1\n"), std::string("arg")}) {
    SCOPED_TRACE(half.back() == '\n' ? "stops at a line end" : "stops mid-line");
    auto broken = NewClient();
    const int broken_reader = OpenReader(*broken);
    ASSERT_TRUE(broken->Send(":echo:" + broken->reply_name() + "\n" + half).ok());
    ASSERT_TRUE(RequestFifoDrained());  // a pause: the sender stopped
    auto good = NewClient();
    absl::StatusOr<std::string> reply = good->Execute("echo", {"x"});
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(*reply, "200 OK\nx\n\n");
    EXPECT_EQ(ReadToEof(broken_reader, seconds(5)), "400 parse error in command 'echo'\n");
    close(broken_reader);
  }
}

TEST_F(FifoEventLoopTest, ACommandLikeArgumentInTheSameWriteIsAnArgument) {
  Start();
  auto client = NewClient();
  absl::StatusOr<std::string> reply =
      client->Transact(":echo:" + client->reply_name() + "\n:version:other\n\n");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "200 OK\n:version:other\n\n");
}

TEST_F(FifoEventLoopTest, TheCallerIsTheReplyFifoOwner) {
  Start();
  auto client = NewClient();
  absl::StatusOr<std::string> reply = client->Execute("whoami");
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, absl::StrCat("200 OK\ntransport:: fifo\nuid:: ", getuid(), "\npid:: -1\n",
                                 "address:: ", client->reply_path(), "\n\n"));
}

}  // namespace
}  // namespace sipd::legacy::testing
