// sipd/core/thresholds.h: 1.11's rate limit of the memory threshold events and the
// execution threshold, raised into a real shared-memory backend and read back from a
// consumer's queue.
#include "sipd/core/thresholds.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "sipd/core/event_bus.h"
#include "sipd/core/shm.h"

namespace sipd {
namespace {

using namespace std::chrono_literals;

class ThresholdsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shm_ = *SharedMemory::Create(16 << 20);
    events_ = *SipdEvents::Create(*shm_);
    consumer_ = *events_->backend().AddConsumer("test", 1 << 20);
    for (const char* name : {"E_CORE_THRESHOLD", "E_CORE_SHM_THRESHOLD", "E_CORE_PKG_THRESHOLD"}) {
      consumer_->AddInterest(events_->registry().Find(name)->id());
    }
  }
  std::unique_ptr<ThresholdMonitor> Monitor(ThresholdOptions options) {
    return *ThresholdMonitor::Create(*shm_, *events_, options);
  }
  // Names and first value ("usage" / "source") of the events raised so far.
  std::vector<std::string> Raised() {
    std::vector<std::string> out;
    mi::RaisedEvent event;
    while (consumer_->Pop(event)) {
      const mi::Event* spec = events_->registry().Get(event.id);
      std::string first;
      if (const auto* n = std::get_if<int64_t>(&event.values[0])) first = std::to_string(*n);
      if (const auto* s = std::get_if<std::string>(&event.values[0])) first = *s;
      out.push_back(spec->name() + " " + first);
    }
    return out;
  }

  std::unique_ptr<SharedMemory> shm_;
  std::unique_ptr<SipdEvents> events_;
  mi::EventConsumer* consumer_ = nullptr;
};

TEST_F(ThresholdsTest, ShmRaisesOnCrossingPerNewPercentAndOnceWhenFallingBack) {
  auto monitor = Monitor({.shm_threshold = 80});
  monitor->CheckShm(50, 100);  // below, never above: nothing
  monitor->CheckShm(85, 100);  // crossed
  monitor->CheckShm(85, 100);  // same percent: nothing
  monitor->CheckShm(90, 100);  // a new percent above: again (1.11)
  monitor->CheckShm(70, 100);  // fell back: once
  monitor->CheckShm(60, 100);  // still below: nothing
  monitor->CheckShm(80, 100);  // at the threshold counts as above
  EXPECT_EQ(Raised(),
            (std::vector<std::string>{"E_CORE_SHM_THRESHOLD 85", "E_CORE_SHM_THRESHOLD 90",
                                      "E_CORE_SHM_THRESHOLD 70", "E_CORE_SHM_THRESHOLD 80"}));
}

TEST_F(ThresholdsTest, PkgKeepsItsStatePerProcessAndOffMeansOff) {
  auto monitor = Monitor({.pkg_threshold = 50});
  int64_t last = 0;
  monitor->CheckPkg(60, 100, last);
  monitor->CheckPkg(60, 100, last);
  int64_t other_process = 0;
  monitor->CheckPkg(60, 100, other_process);  // its own state: raised for it too
  EXPECT_EQ(Raised(),
            (std::vector<std::string>{"E_CORE_PKG_THRESHOLD 60", "E_CORE_PKG_THRESHOLD 60"}));
  auto off = Monitor({});
  EXPECT_FALSE(off->active());
  off->CheckShm(99, 100);
  off->MessageProcessed(10s, "OPTIONS sip:x SIP/2.0\r\n");
  EXPECT_TRUE(Raised().empty());
}

TEST_F(ThresholdsTest, ExecutionThresholdRaisesForEachSlowMessageOnly) {
  auto monitor = Monitor({.exec_msg_threshold_us = 500});
  monitor->MessageProcessed(400us, "fast");
  monitor->MessageProcessed(500us, "at the threshold");
  monitor->MessageProcessed(501us, "slow");
  monitor->MessageProcessed(2ms, std::string(5000, 'x'));
  mi::RaisedEvent event;
  ASSERT_TRUE(consumer_->Pop(event));
  EXPECT_EQ(std::get<std::string>(event.values[0]), "msg processing");
  EXPECT_EQ(std::get<int64_t>(event.values[1]), 501);
  EXPECT_EQ(std::get<std::string>(event.values[2]), "slow");
  ASSERT_TRUE(consumer_->Pop(event));
  EXPECT_EQ(std::get<int64_t>(event.values[1]), 2000);
  EXPECT_EQ(std::get<std::string>(event.values[2]).size(), ThresholdMonitor::kMaxExtraBytes);
  EXPECT_FALSE(consumer_->Pop(event));
}

}  // namespace
}  // namespace sipd
