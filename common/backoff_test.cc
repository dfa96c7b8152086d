#include "common/backoff.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

// Returns `value` forever.
class FixedRandomSource final : public RandomSource {
 public:
  explicit FixedRandomSource(double value) : value_(value) {}
  double Uniform01() override { return value_; }

 private:
  double value_;
};

class ExponentialBackoffTest : public ::testing::Test {};

TEST_F(ExponentialBackoffTest, RandomZeroGivesTheFullSdkDelays) {
  FixedRandomSource random(0.0);
  ExponentialBackoff backoff(random);
  EXPECT_EQ(backoff.Delay(0), absl::Milliseconds(500));
  EXPECT_EQ(backoff.Delay(1), absl::Seconds(1));
  EXPECT_EQ(backoff.Delay(2), absl::Seconds(2));
  EXPECT_EQ(backoff.Delay(3), absl::Seconds(4));
  EXPECT_EQ(backoff.Delay(4), absl::Seconds(8));
}

TEST_F(ExponentialBackoffTest, RandomOneGivesThreeQuartersOfTheDelay) {
  FixedRandomSource random(1.0);
  ExponentialBackoff backoff(random);
  EXPECT_EQ(backoff.Delay(0), absl::Milliseconds(375));
  EXPECT_EQ(backoff.Delay(1), absl::Milliseconds(750));
  EXPECT_EQ(backoff.Delay(2), absl::Milliseconds(1500));
  EXPECT_EQ(backoff.Delay(3), absl::Seconds(3));
  EXPECT_EQ(backoff.Delay(4), absl::Seconds(6));
}

TEST_F(ExponentialBackoffTest, DelayIsCappedAtEightSeconds) {
  FixedRandomSource random(0.0);
  ExponentialBackoff backoff(random);
  for (int index :
       {4, 5, 10, 62, 63, 64, 1000, std::numeric_limits<int>::max()}) {
    EXPECT_EQ(backoff.Delay(index), absl::Seconds(8)) << index;
  }
}

TEST_F(ExponentialBackoffTest, NegativeIndexCountsAsFirstRetry) {
  FixedRandomSource random(0.0);
  ExponentialBackoff backoff(random);
  EXPECT_EQ(backoff.Delay(-1), absl::Milliseconds(500));
  EXPECT_EQ(backoff.Delay(std::numeric_limits<int>::min()),
            absl::Milliseconds(500));
}

TEST_F(ExponentialBackoffTest, OutOfRangeRandomValuesAreClamped) {
  for (double bad : {-5.0, std::numeric_limits<double>::quiet_NaN(),
                     -std::numeric_limits<double>::infinity()}) {
    FixedRandomSource random(bad);
    EXPECT_EQ(ExponentialBackoff(random).Delay(1), absl::Seconds(1)) << bad;
  }
  for (double bad : {2.0, std::numeric_limits<double>::infinity()}) {
    FixedRandomSource random(bad);
    EXPECT_EQ(ExponentialBackoff(random).Delay(1), absl::Milliseconds(750))
        << bad;
  }
}

TEST_F(ExponentialBackoffTest, JitterStaysWithinBoundsOverManyDraws) {
  SeededRandomSource random(20240601);
  ExponentialBackoff backoff(random);
  for (int index = 0; index < 6; ++index) {
    const absl::Duration base = backoff.BaseDelay(index);
    absl::Duration lowest = absl::InfiniteDuration();
    absl::Duration highest = absl::ZeroDuration();
    for (int draw = 0; draw < 2000; ++draw) {
      const absl::Duration d = backoff.Delay(index);
      ASSERT_GE(d, base * 0.75) << index;
      ASSERT_LE(d, base) << index;
      lowest = std::min(lowest, d);
      highest = std::max(highest, d);
    }
    // The draws spread over the whole jitter range, not one point of it.
    EXPECT_LT(lowest, base * 0.76) << index;
    EXPECT_GT(highest, base * 0.99) << index;
  }
}

TEST_F(ExponentialBackoffTest, SameSeedGivesTheSameDelays) {
  SeededRandomSource random_a(99);
  SeededRandomSource random_b(99);
  ExponentialBackoff a(random_a);
  ExponentialBackoff b(random_b);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.Delay(i % 6), b.Delay(i % 6));
}

TEST_F(ExponentialBackoffTest, CustomOptionsAreApplied) {
  FixedRandomSource random(0.5);
  BackoffOptions options;
  options.initial_delay = absl::Seconds(2);
  options.multiplier = 3.0;
  options.max_delay = absl::Seconds(30);
  options.min_jitter = 0.5;
  options.max_jitter = 1.0;
  absl::StatusOr<ExponentialBackoff> backoff =
      ExponentialBackoff::Create(options, random);
  ASSERT_THAT(backoff, IsOk());
  EXPECT_EQ(backoff->BaseDelay(0), absl::Seconds(2));
  EXPECT_EQ(backoff->BaseDelay(1), absl::Seconds(6));
  EXPECT_EQ(backoff->BaseDelay(2), absl::Seconds(18));
  EXPECT_EQ(backoff->BaseDelay(3), absl::Seconds(30));
  // jitter = 1 - 0.5 * 0.5 = 0.75
  EXPECT_EQ(backoff->Delay(1), absl::Milliseconds(4500));
}

TEST_F(ExponentialBackoffTest, NoJitterWhenBoundsAreEqual) {
  SeededRandomSource random(1);
  BackoffOptions options;
  options.min_jitter = 1.0;
  absl::StatusOr<ExponentialBackoff> backoff =
      ExponentialBackoff::Create(options, random);
  ASSERT_THAT(backoff, IsOk());
  for (int i = 0; i < 20; ++i) EXPECT_EQ(backoff->Delay(2), absl::Seconds(2));
}

TEST_F(ExponentialBackoffTest, InvalidOptionsAreRejected) {
  FixedRandomSource random(0);
  std::vector<BackoffOptions> bad(9);
  bad[0].initial_delay = absl::Seconds(-1);
  bad[1].initial_delay = absl::InfiniteDuration();
  bad[2].multiplier = 0.5;
  bad[3].multiplier = std::numeric_limits<double>::quiet_NaN();
  bad[4].max_delay = absl::Milliseconds(100);  // below initial_delay
  bad[5].max_delay = absl::InfiniteDuration();
  bad[6].min_jitter = -0.1;
  bad[7].max_jitter = 1.5;
  bad[8].min_jitter = 0.9;
  bad[8].max_jitter = 0.8;
  for (const BackoffOptions& options : bad) {
    EXPECT_THAT(ExponentialBackoff::Create(options, random),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(BackoffOptions{}.Validate(), IsOk());
}

}  // namespace
}  // namespace toolmesh::common
