// sipd.events.v1.EventService in a real sipd (mi_grpc, usrloc, registrar): Subscribe
// streams counted against sipp REGISTER runs, a subscriber that never reads next to one
// that does, WatchStatistics sums compared with the counters, and the errors (rich
// details) of both RPCs. Counts, not timings: "everything arrived" is proven by a canary
// event raised after the run (events reach a stream in raise order).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "sipd/events/v1/events.grpc.pb.h"
#include "sipd/mi/v1/mi.grpc.pb.h"
#include "sipd/statistics/v1/statistics.grpc.pb.h"
#include "tests/support/sip_support.h"
#include "tests/support/sipd_harness.h"
#include "tests/support/temp_dir.h"

namespace sipd::testing {
namespace {

namespace eventsv1 = ::sipd::events::v1;
namespace statsv1 = ::sipd::statistics::v1;
namespace miv1 = ::sipd::mi::v1;
using namespace std::chrono_literals;
using google::protobuf::util::TimeUtil;

// A channel of its own (own TCP connection). window > 0: a client that reads nothing
// on its own (no BDP probing, HTTP/2 stream window of `window` bytes).
std::shared_ptr<grpc::Channel> Channel(const std::string& target, int window = 0) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (window > 0) {
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, window);
  }
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// One Subscribe stream. Start() returns once the subscription is active (headers
// received); a reader thread (unless `read` is false) collects the messages.
class Subscription {
 public:
  Subscription(std::shared_ptr<grpc::Channel> channel, eventsv1::SubscribeRequest request)
      : stub_(eventsv1::EventService::NewStub(channel)), request_(std::move(request)) {}
  ~Subscription() {
    context_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

  // False if the stream ended before it became active (then status() says why).
  bool Start(bool read = true) {
    reader_ = stub_->Subscribe(&context_, request_);
    reader_->WaitForInitialMetadata();
    if (read) StartReading();
    return true;
  }
  void StartReading() {
    thread_ = std::thread([this] {
      eventsv1::SubscribeResponse response;
      while (reader_->Read(&response)) {
        std::lock_guard<std::mutex> lock(mu_);
        messages_.push_back(response);
        for (const auto& event : response.events()) events_.push_back(event);
        cv_.notify_all();
      }
      grpc::Status status = reader_->Finish();
      std::lock_guard<std::mutex> lock(mu_);
      status_ = status;
      ended_ = true;
      cv_.notify_all();
    });
  }
  // Waits until an event has param `key` = `value` (or the stream ended).
  bool WaitForParam(const std::string& key, const std::string& value,
                    std::chrono::seconds timeout = 30s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& event : events_) {
        auto it = event.params().find(key);
        if (it != event.params().end() && it->second == value) return true;
      }
      return ended_;
    }) && !ended_;
  }
  grpc::Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, 30s, [&] { return ended_; });
    return status_;
  }
  std::vector<eventsv1::Event> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  std::vector<eventsv1::SubscribeResponse> messages() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }
  void Cancel() { context_.TryCancel(); }

 private:
  std::unique_ptr<eventsv1::EventService::Stub> stub_;
  eventsv1::SubscribeRequest request_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<eventsv1::SubscribeResponse>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<eventsv1::SubscribeResponse> messages_;
  std::vector<eventsv1::Event> events_;
  grpc::Status status_;
  bool ended_ = false;
};

// sipctl running in the background, stdout and stderr into pipes (not a terminal: plain
// lines).
class Sipctl {
 public:
  explicit Sipctl(const std::vector<std::string>& args) {
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      std::vector<std::string> storage = {SIPCTL_BINARY_PATH};
      storage.insert(storage.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : storage) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(SIPCTL_BINARY_PATH, argv.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
  }
  ~Sipctl() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) close(out_);
    if (err_ >= 0) close(err_);
  }
  // Exited by itself (reaps it).
  bool Exited() {
    if (!exited_ && waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return exited_;
  }
  // Waits for the exit; the exit code (or -1 after `timeout`).
  int Wait(std::chrono::seconds timeout = 30s) {
    if (!WaitUntil([&] { return Exited(); }, timeout)) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
  }
  std::string Out() { return Drain(out_); }
  std::string Err() { return Drain(err_); }

 private:
  static std::string Drain(int fd) {
    std::string text;
    char buffer[4096];
    pollfd pfd{fd, POLLIN, 0};
    while (poll(&pfd, 1, 0) == 1) {
      const ssize_t n = read(fd, buffer, sizeof(buffer));
      if (n <= 0) break;
      text.append(buffer, static_cast<size_t>(n));
    }
    return text;
  }
  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  int status_ = 0;
  bool exited_ = false;
};

eventsv1::SubscribeRequest Request(std::vector<std::string> events,
                                   std::map<std::string, std::string> filter = {}) {
  eventsv1::SubscribeRequest request;
  for (const auto& e : events) request.add_events(e);
  for (const auto& [k, v] : filter) (*request.mutable_filter())[k] = v;
  return request;
}

struct Details {
  google::rpc::ErrorInfo info;
  google::rpc::BadRequest bad_request;
};

Details DetailsOf(const grpc::Status& status) {
  Details out;
  google::rpc::Status rpc;
  EXPECT_TRUE(rpc.ParseFromString(status.error_details())) << status.error_message();
  for (const auto& any : rpc.details()) {
    any.UnpackTo(&out.info);
    any.UnpackTo(&out.bad_request);
  }
  return out;
}

class EventServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(temp_.ok());
    sipd_ = std::make_unique<SipdInstance>(SipdInstance::Options{
        .extra_config = "loadmodule \"usrloc\"\nloadmodule \"registrar\"\n"
                        "modparam(\"mi_grpc\", \"subscriber_buffer\", 256)\n"});
    ASSERT_TRUE(sipd_->Start().ok()) << sipd_->log();
    channel_ = Channel(sipd_->grpc_target());
  }
  void TearDown() override {
    if (HasFailure() && sipd_ != nullptr) std::fprintf(stderr, "%s\n", sipd_->log().c_str());
    channel_.reset();
    sipd_.reset();
  }

  void RegisterUser(const std::string& user) {
    const std::string call_id = absl::StrCat(user, "-", ++calls_);
    const std::string request =
        absl::StrCat("REGISTER sip:127.0.0.1:", sipd_->sip_port(), " SIP/2.0\r\n",
                     "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-", call_id, "\r\n",
                     "Max-Forwards: 70\r\n", "From: <sip:", user, "@example.com>;tag=t-", call_id,
                     "\r\n", "To: <sip:", user, "@example.com>\r\n", "Call-ID: ", call_id, "\r\n",
                     "CSeq: 1 REGISTER\r\n", "Contact: <sip:", user, "@127.0.0.1:5999>\r\n",
                     "Expires: 3600\r\nContent-Length: 0\r\n\r\n");
    auto reply = SipExchange(sipd_->sip_port(), request);
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_EQ(SipStatusCode(*reply), 200) << *reply;
  }

  uint64_t Statistic(const std::string& name) {
    auto stub = statsv1::StatisticsService::NewStub(channel_);
    grpc::ClientContext context;
    statsv1::GetStatisticsRequest request;
    request.add_names(name);
    statsv1::GetStatisticsResponse response;
    EXPECT_TRUE(stub->GetStatistics(&context, request, &response).ok());
    return response.statistics_size() == 1 ? response.statistics(0).value() : 0;
  }

  TempDir temp_{"sipd-event-service"};
  const std::string work_ = temp_.path();
  std::unique_ptr<SipdInstance> sipd_;
  std::shared_ptr<grpc::Channel> channel_;
  int calls_ = 0;
};

TEST_F(EventServiceTest, SippRunGivesOneAorInsertPerNewAor) {
  Subscription all(Channel(sipd_->grpc_target()), Request({"E_UL_AOR_INSERT"}));
  Subscription one(Channel(sipd_->grpc_target()),
                   Request({"E_UL_AOR_INSERT", "E_UL_CONTACT_INSERT"}, {{"aor", "user05"}}));
  ASSERT_TRUE(all.Start());
  ASSERT_TRUE(one.Start());
  constexpr int kUsers = 20;  // rows of tests/sip/users.csv
  SippResult run =
      RunSipp(sipd_->sip_port(), "register.xml",
              {"-inf", ScenarioPath("users.csv"), "-m", absl::StrCat(kUsers), "-r", "50"}, work_);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // The same AORs again: refreshes, no new AOR.
  run = RunSipp(sipd_->sip_port(), "register.xml",
                {"-inf", ScenarioPath("users.csv"), "-m", absl::StrCat(kUsers), "-r", "50"}, work_);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  RegisterUser("canary");
  ASSERT_TRUE(all.WaitForParam("aor", "canary"));

  const std::vector<eventsv1::Event> events = all.events();
  std::map<std::string, int> per_aor;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].name(), "E_UL_AOR_INSERT");
    EXPECT_EQ(events[i].seq(), i + 1);  // no gap
    EXPECT_TRUE(events[i].has_time());
    ++per_aor[events[i].params().at("aor")];
  }
  EXPECT_EQ(events.size(), static_cast<size_t>(kUsers + 1));
  EXPECT_EQ(per_aor.size(), static_cast<size_t>(kUsers + 1));
  for (int i = 0; i < kUsers; ++i) EXPECT_EQ(per_aor[absl::StrFormat("user%02d", i)], 1) << i;
  for (const auto& message : all.messages()) EXPECT_EQ(message.dropped(), 0u);

  // The filtered stream: user05's events only (its AOR insert once; a contact insert
  // when a run registers from another port than the one before).
  RegisterUser("canary2");
  ASSERT_TRUE(all.WaitForParam("aor", "canary2"));
  ASSERT_TRUE(one.WaitForParam("aor", "user05"));
  std::multiset<std::string> names;
  for (const auto& e : one.events()) {
    EXPECT_EQ(e.params().at("aor"), "user05");
    names.insert(e.name());
  }
  EXPECT_EQ(names.count("E_UL_AOR_INSERT"), 1u);
  EXPECT_GE(names.count("E_UL_CONTACT_INSERT"), 1u);
}

TEST_F(EventServiceTest, SubscriberThatNeverReadsDropsAloneAndSlowsNobody) {
  // A 4 KiB window and a 256-event buffer (modparam; the good reader has room for a pause
  // of half a second on a loaded host): the stalled one falls behind after a few hundred.
  Subscription stalled(Channel(sipd_->grpc_target(), 4096), Request({"E_UL_CONTACT_INSERT"}));
  Subscription good(Channel(sipd_->grpc_target()), Request({"E_UL_CONTACT_INSERT"}));
  ASSERT_TRUE(stalled.Start(/*read=*/false));
  ASSERT_TRUE(good.Start());
  constexpr int kCalls = 1500;
  SippResult run = RunSipp(sipd_->sip_port(), "register_unique.xml",
                           {"-m", absl::StrCat(kCalls), "-r", "500"}, work_);
  ASSERT_EQ(run.exit_code, 0) << run.output;  // every REGISTER answered 200 in time
  RegisterUser("canary");
  ASSERT_TRUE(good.WaitForParam("aor", "canary"));
  const std::vector<eventsv1::Event> all = good.events();
  ASSERT_EQ(all.size(), static_cast<size_t>(kCalls + 1));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq(), i + 1);

  // Now the stalled one reads: what it got plus what it lost is everything, the losses
  // are reported, and seq shows each gap. Its buffer was full when "canary" came: a
  // canary raised once it drained reaches it.
  stalled.StartReading();
  int canaries = 1;
  do {
    RegisterUser(absl::StrCat("late-canary-", canaries));
    ++canaries;
  } while (!stalled.WaitForParam("aor", absl::StrCat("late-canary-", canaries - 1), 2s) &&
           canaries < 20);
  ASSERT_LT(canaries, 20);
  uint64_t dropped = 0;
  uint64_t total = 0;
  for (const auto& message : stalled.messages()) {
    dropped += message.dropped();
    total = message.total_dropped();
  }
  // seq only grows; its gaps add up to what was dropped.
  uint64_t previous = 0;
  uint64_t gaps = 0;
  for (const auto& e : stalled.events()) {
    ASSERT_GT(e.seq(), previous);
    gaps += e.seq() - previous - 1;
    previous = e.seq();
  }
  EXPECT_EQ(gaps, dropped);
  const size_t received = stalled.events().size();
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(dropped, total);
  EXPECT_EQ(received + dropped, static_cast<size_t>(kCalls + canaries));
  EXPECT_GE(Statistic("evi:failed_deliveries"), dropped);
  EXPECT_EQ(Statistic("evi:dropped_events"), 0u);  // the shared queue never overflowed
}

TEST_F(EventServiceTest, WatchStatisticsRatesAddUpToTheCounter) {
  auto stub = eventsv1::EventService::NewStub(channel_);
  grpc::ClientContext context;
  eventsv1::WatchStatisticsRequest request;
  request.add_names("core:rcv_requests");
  request.add_names("usrloc:");
  *request.mutable_interval() = TimeUtil::MillisecondsToDuration(100);
  auto reader = stub->WatchStatistics(&context, request);
  eventsv1::WatchStatisticsResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_GE(first.statistics_size(), 2);
  EXPECT_EQ(first.seq(), 1u);
  EXPECT_EQ(first.statistics(0).group(), "core");
  EXPECT_EQ(first.statistics(0).name(), "rcv_requests");
  EXPECT_EQ(first.statistics(0).kind(), eventsv1::StatisticSample::KIND_COUNTER);
  EXPECT_EQ(first.statistics(0).delta(), 0);
  EXPECT_EQ(first.statistics(1).group(), "usrloc");
  const int64_t start = first.statistics(0).value();

  constexpr int kCalls = 1000;
  SippResult run = RunSipp(sipd_->sip_port(), "register_unique.xml",
                           {"-m", absl::StrCat(kCalls), "-r", "250"}, work_);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const int64_t end = static_cast<int64_t>(Statistic("rcv_requests"));
  ASSERT_GE(end - start, kCalls);  // retransmissions count too

  // Samples until one shows the final value.
  int64_t sum_delta = 0;
  double sum_rate = 0;
  int samples = 0;
  double peak = 0;
  eventsv1::WatchStatisticsResponse sample;
  while (true) {
    ASSERT_TRUE(reader->Read(&sample));
    ++samples;
    const auto& rcv = sample.statistics(0);
    ASSERT_EQ(rcv.name(), "rcv_requests");
    sum_delta += rcv.delta();
    sum_rate += rcv.rate_per_second() *
                static_cast<double>(TimeUtil::DurationToNanoseconds(sample.elapsed())) / 1e9;
    peak = std::max(peak, rcv.rate_per_second());
    if (rcv.value() == end) break;
  }
  context.TryCancel();
  EXPECT_EQ(sum_delta, end - start);
  // rate * elapsed adds up to the requests sipp sent, within 5 % (1 % here: floats).
  EXPECT_NEAR(sum_rate, static_cast<double>(kCalls), kCalls * 0.01);
  EXPECT_GT(samples, 3);
  EXPECT_GT(peak, 0);
  std::printf("%d samples, peak %.0f requests/s (sipp -r 250)\n", samples, peak);
}

TEST_F(EventServiceTest, WatchOnChangeSendsOnlyChangedValues) {
  auto stub = eventsv1::EventService::NewStub(channel_);
  grpc::ClientContext context;
  eventsv1::WatchStatisticsRequest request;
  request.add_names("usrloc:");
  request.set_on_change(true);
  *request.mutable_interval() = TimeUtil::MillisecondsToDuration(100);
  auto reader = stub->WatchStatistics(&context, request);
  eventsv1::WatchStatisticsResponse response;
  ASSERT_TRUE(reader->Read(&response));
  const int everything = response.statistics_size();
  ASSERT_GT(everything, 2);
  RegisterUser("alice");
  ASSERT_TRUE(reader->Read(&response));
  EXPECT_GT(response.seq(), 1u);
  EXPECT_LT(response.statistics_size(), everything);
  bool users = false;
  for (const auto& s : response.statistics()) {
    if (s.name() == "registered_users") {
      users = true;
      EXPECT_EQ(s.value(), 1);
      EXPECT_EQ(s.kind(), eventsv1::StatisticSample::KIND_GAUGE);
    }
  }
  EXPECT_TRUE(users);
  context.TryCancel();
}

TEST_F(EventServiceTest, ErrorsCarryRichDetails) {
  auto stub = eventsv1::EventService::NewStub(channel_);
  auto subscribe_status = [&](const eventsv1::SubscribeRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    auto reader = stub->Subscribe(&context, request);
    eventsv1::SubscribeResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  };
  grpc::Status status = subscribe_status(Request({"E_UL_AOR_INSERT", "E_NOPE"}));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  Details details = DetailsOf(status);
  EXPECT_EQ(details.info.reason(), "UNKNOWN_EVENT");
  ASSERT_EQ(details.bad_request.field_violations_size(), 1);
  EXPECT_EQ(details.bad_request.field_violations(0).field(), "events[1]");

  status = subscribe_status(Request({}));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(DetailsOf(status).bad_request.field_violations(0).field(), "events");

  status = subscribe_status(Request({"E_UL_AOR_INSERT"}, {{"nope", "x"}}));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(DetailsOf(status).bad_request.field_violations(0).field(), "filter[nope]");

  auto watch_status = [&](const eventsv1::WatchStatisticsRequest& request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    auto reader = stub->WatchStatistics(&context, request);
    eventsv1::WatchStatisticsResponse response;
    if (!reader->Read(&response)) return reader->Finish();
    context.TryCancel();
    reader->Finish();
    return grpc::Status::OK;
  };
  eventsv1::WatchStatisticsRequest fast;
  *fast.mutable_interval() = TimeUtil::MillisecondsToDuration(50);
  status = watch_status(fast);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(DetailsOf(status).bad_request.field_violations(0).field(), "interval");

  eventsv1::WatchStatisticsRequest unknown;
  unknown.add_names("no_such_statistic");
  unknown.add_names("nogroup:");
  status = watch_status(unknown);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(DetailsOf(status).info.reason(), "MI_404");

  eventsv1::WatchStatisticsRequest all;  // empty names: "all"
  EXPECT_TRUE(watch_status(all).ok());
}

TEST_F(EventServiceTest, SipctlSubscribeAndWatch) {
  Sipctl subscribe({"-s", sipd_->grpc_target(), "subscribe", "--count", "2", "--filter", "aor=cli",
                    "E_UL_AOR_INSERT", "E_UL_AOR_DELETE"});
  // The subscription is in place some time after sipctl starts: register and remove
  // "cli" until it has seen two events.
  ASSERT_TRUE(WaitUntil(
      [&] {
        RegisterUser("cli");
        auto stub = miv1::Management::NewStub(channel_);
        grpc::ClientContext context;
        miv1::ExecuteRequest rm;
        rm.set_command("ul_rm");
        rm.add_params("location");
        rm.add_params("cli");
        miv1::Reply reply;
        stub->Execute(&context, rm, &reply);
        return subscribe.Exited();
      },
      30s));
  EXPECT_EQ(subscribe.Wait(), 0) << subscribe.Err();
  const std::string out = subscribe.Out();
  const std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << out;
  // "2026-11-29T06:50:01.123Z E_UL_AOR_INSERT seq=1 aor=cli". The loop alternates insert
  // and delete, and the stream may become active between the two: either comes first.
  const bool insert_first = absl::StrContains(lines[0], "E_UL_AOR_INSERT");
  const std::string first = insert_first ? "E_UL_AOR_INSERT" : "E_UL_AOR_DELETE";
  const std::string second = insert_first ? "E_UL_AOR_DELETE" : "E_UL_AOR_INSERT";
  EXPECT_EQ(lines[0].substr(24), " " + first + " seq=1 aor=cli") << out;
  EXPECT_EQ(lines[1].substr(24), " " + second + " seq=2 aor=cli") << out;
  EXPECT_EQ(lines[0][23], 'Z');

  Sipctl watch({"-s", sipd_->grpc_target(), "watch", "--interval", "100ms", "--count", "3",
                "core:rcv_requests", "usrloc:registered_users"});
  EXPECT_EQ(watch.Wait(), 0) << watch.Err();
  const std::string samples = watch.Out();
  const std::vector<std::string> rows = absl::StrSplit(samples, '\n', absl::SkipEmpty());
  ASSERT_EQ(rows.size(), 6u) << samples;
  EXPECT_THAT(rows[0], ::testing::MatchesRegex(".*Z core:rcv_requests [0-9]+ \\+0 0\\.0/s"));
  EXPECT_THAT(rows[1], ::testing::MatchesRegex(".*Z usrloc:registered_users [0-9]+"));

  Sipctl json({"-s", sipd_->grpc_target(), "--json", "watch", "--count", "1", "rcv_requests"});
  EXPECT_EQ(json.Wait(), 0) << json.Err();
  EXPECT_THAT(json.Out(), ::testing::HasSubstr("\"name\":\"rcv_requests\""));

  Sipctl unknown({"-s", sipd_->grpc_target(), "subscribe", "E_NOPE"});
  EXPECT_EQ(unknown.Wait(), 4);
  EXPECT_THAT(unknown.Err(), ::testing::HasSubstr("E_NOPE"));
  Sipctl fast({"-s", sipd_->grpc_target(), "watch", "--interval", "10ms"});
  EXPECT_EQ(fast.Wait(), 2);
  Sipctl usage({"-s", sipd_->grpc_target(), "subscribe"});
  EXPECT_EQ(usage.Wait(), 2);
}

// Opening a stream goes through the dispatcher's authorization like any call: with
// require_auth, no credentials is UNAUTHENTICATED; the admin token (and role read, the
// product's default for local callers) opens both streams.
TEST(EventServiceSecurityTest, StreamsNeedTheRightsOfTheirCommands) {
  SipdInstance sipd(SipdInstance::Options{
      .extra_config = "loadmodule \"usrloc\"\nmodparam(\"mi\", \"require_auth\", 1)\n",
      .default_security = true});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  auto stub = eventsv1::EventService::NewStub(Channel(sipd.grpc_target()));
  std::ifstream in(sipd.run_dir() + "/admin.token");
  std::string token;
  std::getline(in, token);
  ASSERT_FALSE(token.empty());
  int added = 0;
  auto raise_event = [&] {
    auto mi = miv1::Management::NewStub(Channel(sipd.grpc_target()));
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    miv1::ExecuteRequest request;
    request.set_command("ul_add");
    for (const std::string& p :
         {std::string("location"), absl::StrCat("sec", ++added), std::string("sip:x@192.0.2.1"),
          std::string("3600"), std::string("1"), std::string("0"), std::string("0"),
          std::string("0"), std::string("0")}) {
      request.add_params(p);
    }
    miv1::Reply reply;
    EXPECT_TRUE(mi->Execute(&context, request, &reply).ok());
  };
  auto first_status = [&](const std::string& credential, bool watch) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    if (!credential.empty()) context.AddMetadata("authorization", "Bearer " + credential);
    if (watch) {
      auto reader = stub->WatchStatistics(&context, eventsv1::WatchStatisticsRequest());
      eventsv1::WatchStatisticsResponse response;
      if (reader->Read(&response)) {
        context.TryCancel();
        reader->Finish();
        return grpc::Status::OK;
      }
      return reader->Finish();
    }
    auto reader = stub->Subscribe(&context, Request({"E_UL_AOR_INSERT"}));
    reader->WaitForInitialMetadata();
    // Accepted streams get the event an admin raises now; refused ones end.
    raise_event();
    eventsv1::SubscribeResponse response;
    if (reader->Read(&response)) {
      context.TryCancel();
      reader->Finish();
      return grpc::Status::OK;
    }
    return reader->Finish();
  };
  EXPECT_EQ(first_status("", false).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(first_status("", true).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(first_status("not-a-token", true).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(first_status(token, false).ok());
  EXPECT_TRUE(first_status(token, true).ok());
  // sipctl passes its token on the streams too.
  Sipctl with(
      {"-s", sipd.grpc_target(), "--token", token, "watch", "--count", "1", "rcv_requests"});
  EXPECT_EQ(with.Wait(), 0) << with.Err();
  Sipctl without({"-s", sipd.grpc_target(), "--token", "wrong", "watch", "--count", "1"});
  EXPECT_EQ(without.Wait(), 1) << without.Err();
}

TEST_F(EventServiceTest, StreamsEndWhenSipdStops) {
  Subscription events(channel_, Request({"E_UL_AOR_INSERT"}));
  ASSERT_TRUE(events.Start());
  ASSERT_TRUE(sipd_->Stop().ok()) << sipd_->log();
  const grpc::Status status = events.Wait();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

// A UDP socket of the test on 127.0.0.1 (port 0, read back).
int BoundUdpSocket(int* port) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -1;
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

// The next datagram on `fd` within `timeout` ("" if none).
std::string ReceiveDatagram(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return "";
  char buffer[65536];
  const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : "";
}

// exec_msg_threshold and shm_threshold set low: a SIP message raises E_CORE_THRESHOLD
// (every slow message) and E_CORE_SHM_THRESHOLD (once: usage above 1 % and unchanged),
// seen by an event_datagram UDP subscriber and a gRPC stream. One SIP worker, so the
// events of one message are raised before the next message is handled (the stream gets
// them in raise order: the third message's E_CORE_THRESHOLD is the canary).
TEST(CoreThresholdEventsTest, LowThresholdsRaiseOnUdpAndGrpc) {
  SipdInstance sipd(SipdInstance::Options{.children = 1,
                                          .extra_config = "loadmodule \"event_datagram\"\n"
                                                          "exec_msg_threshold = 1\n"
                                                          "shm_threshold = 1\n"});
  ASSERT_TRUE(sipd.Start().ok()) << sipd.log();
  auto channel = Channel(sipd.grpc_target());
  int port = 0;
  const int udp = BoundUdpSocket(&port);
  ASSERT_GE(udp, 0);
  auto mi = miv1::Management::NewStub(channel);
  for (const char* event : {"E_CORE_THRESHOLD", "E_CORE_SHM_THRESHOLD"}) {
    grpc::ClientContext context;
    miv1::ExecuteRequest request;
    request.set_command("event_subscribe");
    request.add_params(event);
    request.add_params(absl::StrCat("udp:127.0.0.1:", port));
    miv1::Reply reply;
    ASSERT_TRUE(mi->Execute(&context, request, &reply).ok());
    ASSERT_EQ(reply.code(), 200) << reply.reason();
  }
  Subscription stream(channel, Request({"E_CORE_THRESHOLD", "E_CORE_SHM_THRESHOLD"}));
  ASSERT_TRUE(stream.Start());

  for (int i = 1; i <= 3; ++i) {
    const std::string request =
        absl::StrCat("OPTIONS sip:127.0.0.1:", sipd.sip_port(), " SIP/2.0\r\n",
                     "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-threshold-", i, "\r\n",
                     "Max-Forwards: 70\r\nFrom: <sip:t@example.com>;tag=t", i,
                     "\r\nTo: <sip:t@example.com>\r\nCall-ID: threshold-", i, "\r\nCSeq: ", i,
                     " OPTIONS\r\nContent-Length: 0\r\n\r\n");
    auto reply = SipExchange(sipd.sip_port(), request);
    ASSERT_TRUE(reply.ok()) << reply.status();
  }
  // The canary: the third message's E_CORE_THRESHOLD (its extra is that message).
  auto third = [](const eventsv1::Event& e) {
    auto it = e.params().find("extra");
    return e.name() == "E_CORE_THRESHOLD" && it != e.params().end() &&
           it->second.find("Call-ID: threshold-3") != std::string::npos;
  };
  std::vector<eventsv1::Event> events;
  ASSERT_TRUE(WaitUntil(
      [&] {
        events = stream.events();
        return std::any_of(events.begin(), events.end(), third);
      },
      30s));
  int slow = 0;
  int shm = 0;
  for (const eventsv1::Event& e : events) {
    if (e.name() == "E_CORE_THRESHOLD") {
      ++slow;
      EXPECT_EQ(e.params().at("source"), "msg processing");
      EXPECT_GT(std::stoll(e.params().at("time")), 1);
      EXPECT_THAT(e.params().at("extra"), ::testing::StartsWith("OPTIONS sip:"));
    } else {
      ++shm;
      EXPECT_EQ(e.params().at("threshold"), "1");
      EXPECT_GE(std::stoll(e.params().at("usage")), 1);
      EXPECT_GT(std::stoll(e.params().at("size")), std::stoll(e.params().at("used")));
    }
  }
  EXPECT_EQ(slow, 3);
  EXPECT_EQ(shm, 1);

  // The same on the UDP subscriber, in the 1.11 datagram format.
  int udp_slow = 0;
  int udp_shm = 0;
  while (udp_slow < 3) {
    const std::string datagram = ReceiveDatagram(udp, 30s);
    ASSERT_FALSE(datagram.empty()) << "got " << udp_slow << " E_CORE_THRESHOLD datagrams";
    if (absl::StartsWith(datagram, "E_CORE_THRESHOLD\nsource::msg processing\ntime::")) {
      EXPECT_THAT(datagram, ::testing::HasSubstr("\nextra::\"OPTIONS sip:"));
      ++udp_slow;
    } else {
      EXPECT_THAT(datagram, ::testing::StartsWith("E_CORE_SHM_THRESHOLD\nusage::"));
      EXPECT_THAT(datagram, ::testing::HasSubstr("\nthreshold::1\n"));
      ++udp_shm;
    }
  }
  EXPECT_EQ(udp_shm, 1);
  close(udp);
}

}  // namespace
}  // namespace sipd::testing
