// tm's queue-based overload decision (sipd/modules/tm/overload_detector.h): samples of
// the fullest UDP receive queue every 10 ms, on a clock the test moves.
#include "sipd/modules/tm/overload_detector.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace sipd::tm {
namespace {

// Feeds `percent` every 10 ms for `ms` from *now; returns the flag after the last sample.
bool Hold(OverloadDetector& d, double percent, int64_t ms, int64_t* now) {
  bool on = d.on();
  for (int64_t end = *now + ms; *now < end;) {
    *now += 10;
    on = d.Sample(percent, *now);
  }
  return on;
}

TEST(OverloadDetectorTest, ABurstShorterThanTheSustainRefusesNothing) {
  OverloadDetector d(30, 100);
  int64_t now = 0;
  EXPECT_FALSE(Hold(d, 5, 200, &now));
  // The workers held up for 90 ms: the queue past 30 %, then drained.
  EXPECT_FALSE(Hold(d, 60, 90, &now));
  EXPECT_EQ(d.above_for_ms(now), 80);  // from the first sample above
  EXPECT_FALSE(Hold(d, 4, 10, &now));
  EXPECT_EQ(d.above_for_ms(now), 0);
  // Another burst starts counting from zero.
  EXPECT_FALSE(Hold(d, 60, 90, &now));
}

TEST(OverloadDetectorTest, ABacklogThatLastsTurnsTheFlagOnAfterTheSustain) {
  OverloadDetector d(30, 100);
  int64_t now = 0;
  EXPECT_FALSE(d.Sample(30, now));  // at the threshold counts as above
  EXPECT_FALSE(Hold(d, 45, 90, &now));
  EXPECT_TRUE(Hold(d, 45, 10, &now));  // 100 ms at or above 30 %
  EXPECT_TRUE(d.on());
  EXPECT_EQ(d.above_for_ms(now), 0);
}

TEST(OverloadDetectorTest, TheFlagDropsBelowAThirdOfTheThresholdOnly) {
  OverloadDetector d(30, 100);
  int64_t now = 0;
  ASSERT_TRUE(Hold(d, 80, 200, &now));
  EXPECT_TRUE(Hold(d, 25, 500, &now));  // below 30 % but above 10 %: still refusing
  EXPECT_TRUE(Hold(d, 10, 10, &now));   // a third of 30 is 10: not below it
  EXPECT_FALSE(Hold(d, 9.9, 10, &now));
  // Back on takes the sustain again.
  EXPECT_FALSE(Hold(d, 80, 90, &now));
  EXPECT_TRUE(Hold(d, 80, 20, &now));
}

TEST(OverloadDetectorTest, ASustainOfZeroActsOnTheFirstSample) {
  OverloadDetector d(30, 0);
  int64_t now = 0;
  EXPECT_FALSE(d.Sample(29.9, now));
  EXPECT_TRUE(d.Sample(30, now + 10));
}

}  // namespace
}  // namespace sipd::tm
