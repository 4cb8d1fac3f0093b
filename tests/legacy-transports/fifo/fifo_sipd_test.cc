// mi_fifo inside a real sipd (issue 7, FIFO): a good client is answered, every request,
// while a thousand misbehaving clients exist; async replies completed by another process
// (mi_selftest's timer), a thousand at once; async failure, deadline and a caller that
// goes away; a streamed ul_dump whose reader stalls and then leaves holds no slot lock
// and ends its exchange.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <regex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "legacy-transports/fifo/fifo_client.h"
#include "tests/legacy-transports/misbehaving_clients.h"
#include "tests/support/sipd_harness.h"

namespace sipd::legacy::testing {
namespace {

using ::sipd::testing::SipdInstance;
using ::sipd::testing::WaitUntil;
using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;

std::string FifoConfig(int reply_timeout_ms, int reply_deadline_ms) {
  return absl::StrCat(
      "loadmodule \"usrloc\"\n"
      "modparam(\"usrloc\", \"hash_size\", 1)\n"  // 2 slots: every AOR shares a slot
      "loadmodule \"mi_selftest\"\n"
      "loadmodule \"mi_fifo\"\n"
      "modparam(\"mi_fifo\", \"fifo_name\", \"{TMP_DIR}/sipd_fifo\")\n"
      "modparam(\"mi_fifo\", \"reply_dir\", \"{TMP_DIR}/\")\n"
      "modparam(\"mi_fifo\", \"reply_timeout\", ",
      reply_timeout_ms, ")\nmodparam(\"mi_fifo\", \"reply_deadline\", ", reply_deadline_ms, ")\n");
}

int UnreadBytes(int fd) {
  int unread = 0;
  return ioctl(fd, FIONREAD, &unread) == 0 ? unread : -1;
}

// Reads `fd` until EOF (or `limit`).
std::string ReadToEof(int fd, milliseconds limit) {
  std::string got;
  char buffer[65536];
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    pollfd pfd{fd, POLLIN, 0};
    poll(&pfd, 1, 50);
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) got.append(buffer, static_cast<size_t>(n));
    if (n == 0 && (pfd.revents & POLLHUP) != 0) break;
  }
  return got;
}

class FifoSipdTest : public ::testing::Test {
 protected:
  void StartSipd(int reply_timeout_ms, int reply_deadline_ms) {
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .grpc = false, .extra_config = FifoConfig(reply_timeout_ms, reply_deadline_ms)});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
  }
  void TearDown() override {
    if (HasFailure() && sipd_ != nullptr) {
      const std::string log = sipd_->log();
      std::fprintf(stderr, "sipd log (tail):\n%s\n",
                   log.substr(log.size() > 20000 ? log.size() - 20000 : 0).c_str());
    }
  }
  std::string fifo() const { return sipd_->tmp_dir() + "/sipd_fifo"; }
  std::string reply_dir() const { return sipd_->tmp_dir() + "/"; }

  std::unique_ptr<FifoClient> NewClient() {
    auto client = FifoClient::Create(fifo(), reply_dir());
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }
  std::string Run(std::string_view command, const std::vector<std::string>& args = {}) {
    auto client = NewClient();
    if (client == nullptr) return "";
    absl::StatusOr<std::string> reply = client->Execute(command, args, seconds(10));
    EXPECT_TRUE(reply.ok()) << command << ": " << reply.status();
    return reply.value_or("");
  }
  // A statistic's value by its bare name (-1 if absent).
  int64_t Stat(const std::string& name) {
    const std::string reply = Run("get_statistics", {name});
    std::smatch match;
    int64_t value = -1;
    if (std::regex_search(reply, match, std::regex(absl::StrCat(":", name, ":: (\\d+)\n")))) {
      (void)absl::SimpleAtoi(match[1].str(), &value);
    }
    return value;
  }
  void AddAors(int n, const std::string& prefix) {
    auto client = NewClient();
    for (int i = 0; i < n; ++i) {
      const std::string aor = absl::StrCat(prefix, i);
      absl::StatusOr<std::string> reply =
          client->Execute("ul_add", {"location", aor, absl::StrCat("sip:", aor, "@192.0.2.10:5060"),
                                     "3600", "1", "0", "0", "0", "4294967295"});
      ASSERT_TRUE(reply.ok()) << reply.status();
      ASSERT_EQ(*reply, "200 OK\n\n") << aor;
    }
  }

  std::unique_ptr<SipdInstance> sipd_;
};

TEST_F(FifoSipdTest, AGoodClientIsAnsweredAmongAThousandMisbehavingClients) {
  StartSipd(/*reply_timeout_ms=*/1000, /*reply_deadline_ms=*/3000);
  AddAors(300, "user");  // ul_dump: about 120 KB, twice a pipe buffer
  auto misbehaving = MisbehavingClients::StartFifo(
      {.fifo = fifo(), .reply_dir = reply_dir(), .mix = MisbehavingMix::Spread(1000, true)});
  ASSERT_TRUE(misbehaving.ok()) << misbehaving.status();
  ASSERT_EQ((*misbehaving)->size(), 1000);
  // The good client starts once the server has cut stalled clients at least once, and
  // goes on until the misbehaving clients have sent 1000 more requests.
  ASSERT_TRUE(
      WaitUntil([&] { return (*misbehaving)->figures().replies_ended >= 100; }, seconds(30)));
  const uint64_t until = (*misbehaving)->figures().requests + 1000;
  auto good = NewClient();
  std::vector<double> latencies_ms;
  for (int i = 0; i < 300 || (*misbehaving)->figures().requests < until; ++i) {
    const auto start = std::chrono::steady_clock::now();
    if (i % 3 == 2) {
      const int user = i % 300;
      absl::StatusOr<std::string> reply =
          good->Execute("ul_show_contact", {"location", absl::StrCat("user", user)}, seconds(10));
      ASSERT_TRUE(reply.ok()) << i << ": " << reply.status();
      EXPECT_THAT(*reply,
                  HasSubstr(absl::StrCat("Contact:: <sip:user", user, "@192.0.2.10:5060>")));
    } else {
      absl::StatusOr<std::string> reply = good->Execute("version", {}, seconds(10));
      ASSERT_TRUE(reply.ok()) << i << ": " << reply.status();
      EXPECT_TRUE(reply->starts_with("200 OK\nServer:: sipd")) << *reply;
    }
    latencies_ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
  }
  const MisbehavingFigures figures = (*misbehaving)->figures();
  EXPECT_GT(figures.replies_ended, 100u) << "stalled clients were cut";
  std::sort(latencies_ms.begin(), latencies_ms.end());
  // For the reader, not asserted (performance is measured in bench/legacy_bench).
  std::printf(
      "good client: %zu requests, p50 %.2f ms, p99 %.2f ms, max %.2f ms; misbehaving: "
      "%llu requests, %llu replies ended\n",
      latencies_ms.size(), latencies_ms[latencies_ms.size() / 2],
      latencies_ms[latencies_ms.size() * 99 / 100], latencies_ms.back(),
      static_cast<unsigned long long>(figures.requests),
      static_cast<unsigned long long>(figures.replies_ended));
  misbehaving->reset();
  EXPECT_TRUE(Run("version").starts_with("200 OK\n"));
}

TEST_F(FifoSipdTest, AsyncRepliesFromAnotherProcess) {
  StartSipd(1000, 3000);
  EXPECT_EQ(Run("async_echo", {"50", "hello"}), "200 OK\necho:: hello\n\n");
  EXPECT_EQ(Run("async_fail", {"20"}), "500 command 'async_fail' failed\n");
  // Never completed: the reply deadline ends it.
  EXPECT_EQ(Run("async_never"), "500 command 'async_never' failed\n");
  EXPECT_EQ(Stat("async_pending"), 0);
}

TEST_F(FifoSipdTest, AThousandConcurrentAsyncCalls) {
  StartSipd(1000, 10000);
  constexpr int kCalls = 1000;
  std::vector<std::unique_ptr<FifoClient>> clients;
  std::vector<int> readers;
  for (int i = 0; i < kCalls; ++i) {
    clients.push_back(NewClient());
    ASSERT_NE(clients.back(), nullptr);
    readers.push_back(open(clients.back()->reply_path().c_str(), O_RDONLY | O_NONBLOCK));
    ASSERT_GE(readers.back(), 0);
    ASSERT_TRUE(clients.back()
                    ->Send(absl::StrCat(":async_echo:", clients.back()->reply_name(), "\n4000\nn",
                                        i, "\n\n"))
                    .ok());
  }
  // All are pending at once: the timer process completes them 4 s after each was sent,
  // far longer than sending them all takes.
  EXPECT_TRUE(WaitUntil([&] { return Stat("async_pending") == kCalls; }, seconds(4)));
  for (int i = 0; i < kCalls; ++i) {
    EXPECT_EQ(ReadToEof(readers[i], seconds(10)), absl::StrCat("200 OK\necho:: n", i, "\n\n"));
    close(readers[i]);
  }
  EXPECT_TRUE(WaitUntil([&] { return Stat("async_pending") == 0; }, seconds(5)));
}

TEST_F(FifoSipdTest, ACallerThatGoesAwayReleasesItsAsyncSlot) {
  StartSipd(1000, 60000);
  auto client = NewClient();
  const int reader = open(client->reply_path().c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  ASSERT_TRUE(client->Send(":async_never:" + client->reply_name() + "\n\n").ok());
  ASSERT_TRUE(WaitUntil([&] { return Stat("async_pending") == 1; }, seconds(5)));
  close(reader);
  // Long before the 60 s deadline: the reader's departure released it.
  EXPECT_TRUE(WaitUntil([&] { return Stat("async_pending") == 0; }, seconds(10)));
  EXPECT_THAT(sipd_->log(), HasSubstr("'async_never' abandoned: the client closed its reply FIFO"));
}

TEST_F(FifoSipdTest, AStalledStreamHoldsNoSlotLockAndEndsWithItsReader) {
  // No stall timeout or deadline gets in the way: only the reader ends the stream.
  StartSipd(/*reply_timeout_ms=*/600000, /*reply_deadline_ms=*/3600000);
  AddAors(600, "a");  // about 240 KB of ul_dump
  const int64_t errors_before = Stat("ul_dump_errors");
  ASSERT_GE(errors_before, 0);

  auto dumper = NewClient();
  const int reader = open(dumper->reply_path().c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  ASSERT_TRUE(dumper->Send(":ul_dump:" + dumper->reply_name() + "\n\n").ok());
  // Read the beginning, then stop: the pipe fills, the stream waits mid-way.
  char head[4096];
  ASSERT_TRUE(WaitUntil([&] { return read(reader, head, sizeof(head)) > 0; }, seconds(5)));
  ASSERT_TRUE(WaitUntil([&] { return UnreadBytes(reader) >= 32768; }, seconds(5)));

  // Both slots of the table hold AORs being dumped; every change is made at once.
  auto mutator = NewClient();
  const auto mutate = [&](const std::string& phase, int from) {
    for (int i = from; i < from + 20; ++i) {
      const std::string aor = absl::StrCat("a", i);
      absl::StatusOr<std::string> removed =
          mutator->Execute("ul_rm", {"location", aor}, seconds(5));
      ASSERT_TRUE(removed.ok()) << phase << ": " << removed.status();
      EXPECT_EQ(*removed, "200 OK\n\n") << phase << " " << aor;
      absl::StatusOr<std::string> added = mutator->Execute(
          "ul_add", {"location", aor, "sip:again@192.0.2.11", "3600", "1", "0", "0", "0", "0"},
          seconds(5));
      ASSERT_TRUE(added.ok()) << phase << ": " << added.status();
      EXPECT_EQ(*added, "200 OK\n\n") << phase << " " << aor;
    }
  };
  mutate("while the stream is stalled", 0);
  EXPECT_EQ(Stat("ul_dump_errors"), errors_before) << "the stream is still alive";

  // The reader goes away: the stream's exchange ends (counted as an error: caller gone).
  close(reader);
  EXPECT_TRUE(WaitUntil([&] { return Stat("ul_dump_errors") == errors_before + 1; }, seconds(10)));
  mutate("after the reader went away", 100);
  EXPECT_THAT(sipd_->log(), HasSubstr("'ul_dump' abandoned: the client closed its reply FIFO"));
}

}  // namespace
}  // namespace sipd::legacy::testing
