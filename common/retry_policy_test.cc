#include "common/retry_policy.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/fake_clock.h"
#include "common/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

// Sunday 2026-03-01 12:00:00 UTC.
const absl::Time kStart = absl::FromCivil(
    absl::CivilSecond(2026, 3, 1, 12, 0, 0), absl::UTCTimeZone());

// Returns `value` forever: with 0 the backoff is exactly 0.5 s x 2^n.
class FixedRandomSource final : public RandomSource {
 public:
  explicit FixedRandomSource(double value) : value_(value) {}
  double Uniform01() override { return value_; }

 private:
  double value_;
};

class RetryPolicyTest : public ::testing::Test {
 protected:
  RetryDecision Decide(const AttemptFailure& failure, int retries_so_far = 0) {
    return policy_.Decide(failure, retries_so_far, clock_.Now());
  }

  FakeClock clock_{kStart};
  FixedRandomSource random_{0.0};
  RetryPolicy policy_{random_};
};

TEST_F(RetryPolicyTest, DefaultsMatchTheSdks) {
  EXPECT_EQ(policy_.options().max_retries, 2);
  EXPECT_EQ(policy_.options().max_server_delay, absl::Seconds(60));
  EXPECT_EQ(policy_.options().backoff.initial_delay, absl::Milliseconds(500));
  EXPECT_EQ(policy_.options().backoff.max_delay, absl::Seconds(8));
}

TEST_F(RetryPolicyTest, RetryableStatusesAreRetriedWithBackoff) {
  for (int status : {408, 409, 429, 500, 502, 503, 504, 529, 599}) {
    // A retry-after-less 429 is the spend-cap case, tested separately.
    const RetryDecision d = Decide(
        AttemptFailure::HttpStatus(status, {{"retry-after", "garbage"}}));
    EXPECT_TRUE(d.retry) << status;
    EXPECT_EQ(d.reason, "http_" + std::to_string(status));
    EXPECT_EQ(d.cause, d.reason);
    EXPECT_EQ(d.delay, absl::Milliseconds(500)) << status;
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kBackoff) << status;
    EXPECT_FALSE(d.spend_cap_suspected) << status;
  }
}

TEST_F(RetryPolicyTest, ClientErrorsAreNotRetried) {
  for (int status : {400, 401, 402, 403, 404, 413, 422, 499, 0, -1}) {
    const RetryDecision d = Decide(AttemptFailure::HttpStatus(status));
    EXPECT_FALSE(d.retry) << status;
    EXPECT_EQ(d.reason, "http_" + std::to_string(status));
    EXPECT_EQ(d.delay, absl::ZeroDuration());
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kNone);
  }
}

TEST_F(RetryPolicyTest, ShouldRetryTrueOverridesANonRetryableStatus) {
  const RetryDecision d = Decide(AttemptFailure::HttpStatus(
      400, {{"X-Should-Retry", "true"}}, "invalid_request_error"));
  EXPECT_TRUE(d.retry);
  EXPECT_EQ(d.reason, "http_400_x_should_retry_true");
  EXPECT_EQ(d.delay, absl::Milliseconds(500));
}

TEST_F(RetryPolicyTest, ShouldRetryFalseOverridesARetryableStatus) {
  for (int status : {408, 409, 500, 529}) {
    const RetryDecision d = Decide(
        AttemptFailure::HttpStatus(status, {{"x-should-retry", "false"}}));
    EXPECT_FALSE(d.retry) << status;
    EXPECT_EQ(d.reason,
              "http_" + std::to_string(status) + "_x_should_retry_false");
  }
}

TEST_F(RetryPolicyTest, ShouldRetryThatAgreesLeavesTheCausePlain) {
  const RetryDecision d = Decide(AttemptFailure::HttpStatus(
      529, {{"x-should-retry", "true"}}, "overloaded_error"));
  EXPECT_TRUE(d.retry);
  EXPECT_EQ(d.reason, "http_529");
}

TEST_F(RetryPolicyTest, UnreadableShouldRetryIsIgnored) {
  EXPECT_FALSE(
      Decide(AttemptFailure::HttpStatus(400, {{"x-should-retry", "yes"}}))
          .retry);
  EXPECT_TRUE(
      Decide(AttemptFailure::HttpStatus(503, {{"x-should-retry", "no"}}))
          .retry);
}

TEST_F(RetryPolicyTest, RetryableStreamErrorTypes) {
  for (const char* type :
       {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}) {
    const RetryDecision d = Decide(AttemptFailure::StreamError(type));
    EXPECT_TRUE(d.retry) << type;
    EXPECT_EQ(d.reason, std::string("stream_") + type);
    EXPECT_EQ(d.delay, absl::Milliseconds(500));
    EXPECT_FALSE(d.spend_cap_suspected);
  }
}

TEST_F(RetryPolicyTest, OtherStreamErrorTypesAreNotRetried) {
  for (const char* type :
       {"invalid_request_error", "authentication_error", "permission_error",
        "not_found_error", "billing_error", "request_too_large",
        "brand_new_error"}) {
    const RetryDecision d = Decide(AttemptFailure::StreamError(type));
    EXPECT_FALSE(d.retry) << type;
    EXPECT_EQ(d.reason, std::string("stream_") + type);
  }
  const RetryDecision untyped = Decide(AttemptFailure::StreamError(""));
  EXPECT_FALSE(untyped.retry);
  EXPECT_EQ(untyped.reason, "stream_error");
}

TEST_F(RetryPolicyTest, StreamErrorTypeIsSanitisedInTheReason) {
  const RetryDecision d = Decide(
      AttemptFailure::StreamError("Weird Type!\n" + std::string(100, 'z')));
  EXPECT_FALSE(d.retry);
  EXPECT_EQ(d.reason, "stream_weird_type__" + std::string(52, 'z'));
}

TEST_F(RetryPolicyTest, StreamErrorsIgnoreHeadersOfTheOkResponse) {
  const RetryDecision d = Decide(AttemptFailure::StreamError(
      "overloaded_error", {{"x-should-retry", "false"}, {"retry-after", "5"}}));
  EXPECT_TRUE(d.retry);
  EXPECT_EQ(d.delay_kind, RetryDelayKind::kBackoff);
  EXPECT_EQ(d.delay, absl::Milliseconds(500));
}

TEST_F(RetryPolicyTest, ConnectionFailuresAndMalformedStreamsAreRetried) {
  const RetryDecision connection =
      Decide(AttemptFailure::Connection("connection reset by peer"));
  EXPECT_TRUE(connection.retry);
  EXPECT_EQ(connection.reason, "connection");
  EXPECT_EQ(connection.delay, absl::Milliseconds(500));
  const RetryDecision malformed =
      Decide(AttemptFailure::Malformed("second message_start"), 1);
  EXPECT_TRUE(malformed.retry);
  EXPECT_EQ(malformed.reason, "malformed_stream");
  EXPECT_EQ(malformed.delay, absl::Seconds(1));
}

TEST_F(RetryPolicyTest, RateLimitWithoutRetryAfterIsASuspectedSpendCap) {
  const RetryDecision d =
      Decide(AttemptFailure::HttpStatus(429, {}, "rate_limit_error"));
  EXPECT_TRUE(d.retry);
  EXPECT_TRUE(d.spend_cap_suspected);
  EXPECT_EQ(d.reason, "http_429_spend_cap");
  EXPECT_EQ(d.delay_kind, RetryDelayKind::kBackoff);
  EXPECT_EQ(d.delay, absl::Milliseconds(500));
  // Unknown body type: still suspected.
  EXPECT_TRUE(Decide(AttemptFailure::HttpStatus(429)).spend_cap_suspected);
}

TEST_F(RetryPolicyTest, RateLimitWithRetryAfterIsAnOrdinary429) {
  for (const HttpHeaders& headers : {HttpHeaders{{"retry-after", "3"}},
                                     HttpHeaders{{"retry-after-ms", "300"}}}) {
    const RetryDecision d =
        Decide(AttemptFailure::HttpStatus(429, headers, "rate_limit_error"));
    EXPECT_TRUE(d.retry);
    EXPECT_FALSE(d.spend_cap_suspected);
    EXPECT_EQ(d.reason, "http_429");
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kServer);
  }
}

TEST_F(RetryPolicyTest, OnlyRateLimitErrorsCanBeSpendCaps) {
  EXPECT_FALSE(Decide(AttemptFailure::HttpStatus(429, {}, "api_error"))
                   .spend_cap_suspected);
  EXPECT_FALSE(Decide(AttemptFailure::HttpStatus(529, {}, "overloaded_error"))
                   .spend_cap_suspected);
  EXPECT_FALSE(Decide(AttemptFailure::StreamError("rate_limit_error"))
                   .spend_cap_suspected);
}

TEST_F(RetryPolicyTest, SpendCapFlagSurvivesShouldRetryFalse) {
  const RetryDecision d =
      Decide(AttemptFailure::HttpStatus(429, {{"x-should-retry", "false"}}));
  EXPECT_FALSE(d.retry);
  EXPECT_TRUE(d.spend_cap_suspected);
  EXPECT_EQ(d.reason, "http_429_spend_cap_x_should_retry_false");
}

TEST_F(RetryPolicyTest, SpendCapRetryCanBeSwitchedOff) {
  RetryPolicyOptions options;
  options.retry_suspected_spend_cap = false;
  absl::StatusOr<RetryPolicy> policy = RetryPolicy::Create(options, random_);
  ASSERT_THAT(policy, IsOk());
  const RetryDecision d =
      policy->Decide(AttemptFailure::HttpStatus(429), 0, clock_.Now());
  EXPECT_FALSE(d.retry);
  EXPECT_EQ(d.reason, "spend_cap");
  EXPECT_EQ(d.cause, "http_429_spend_cap");
  EXPECT_TRUE(d.spend_cap_suspected);
  // An ordinary 429 is still retried.
  EXPECT_TRUE(
      policy
          ->Decide(AttemptFailure::HttpStatus(429, {{"retry-after", "1"}}), 0,
                   clock_.Now())
          .retry);
}

TEST_F(RetryPolicyTest, RetryAfterMsIsHonouredBeforeRetryAfter) {
  const RetryDecision d = Decide(AttemptFailure::HttpStatus(
      529, {{"retry-after", "9"}, {"retry-after-ms", "1234.5"}}));
  EXPECT_TRUE(d.retry);
  EXPECT_EQ(d.delay_kind, RetryDelayKind::kServer);
  EXPECT_EQ(d.server_delay_source, RetryDelaySource::kRetryAfterMs);
  EXPECT_EQ(d.delay, absl::Microseconds(1234500));
}

TEST_F(RetryPolicyTest, RetryAfterSecondsIsHonoured) {
  for (const auto& [value, expected] :
       std::vector<std::pair<std::string, absl::Duration>>{
           {"7", absl::Seconds(7)},
           {"1.5", absl::Milliseconds(1500)},
           {"60", absl::Seconds(60)}}) {
    const RetryDecision d =
        Decide(AttemptFailure::HttpStatus(503, {{"Retry-After", value}}));
    EXPECT_TRUE(d.retry) << value;
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kServer) << value;
    EXPECT_EQ(d.server_delay_source, RetryDelaySource::kRetryAfterSeconds);
    EXPECT_EQ(d.delay, expected) << value;
  }
}

TEST_F(RetryPolicyTest, RetryAfterHttpDateInEveryFormatIsMeasuredFromNow) {
  clock_.Advance(absl::Seconds(10));  // now 12:00:10; the dates say 12:00:30
  for (const char* date :
       {"Sun, 01 Mar 2026 12:00:30 GMT", "Sunday, 01-Mar-26 12:00:30 GMT",
        "Sun Mar  1 12:00:30 2026"}) {
    const RetryDecision d =
        Decide(AttemptFailure::HttpStatus(429, {{"retry-after", date}}));
    EXPECT_TRUE(d.retry) << date;
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kServer) << date;
    EXPECT_EQ(d.server_delay_source, RetryDelaySource::kRetryAfterDate);
    EXPECT_EQ(d.delay, absl::Seconds(20)) << date;
  }
}

TEST_F(RetryPolicyTest, PastOrZeroServerDelayFallsBackToBackoff) {
  for (const HttpHeaders& headers :
       {HttpHeaders{{"retry-after", "Sun, 01 Mar 2026 11:00:00 GMT"}},
        HttpHeaders{{"retry-after", "Sun, 01 Mar 2026 12:00:00 GMT"}},
        HttpHeaders{{"retry-after", "0"}}, HttpHeaders{{"retry-after", "-3"}},
        HttpHeaders{{"retry-after-ms", "0"}, {"retry-after", "5"}}}) {
    const RetryDecision d = Decide(AttemptFailure::HttpStatus(500, headers), 1);
    EXPECT_TRUE(d.retry) << headers[0].second;
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kBackoff) << headers[0].second;
    EXPECT_EQ(d.delay, absl::Seconds(1)) << headers[0].second;
  }
}

TEST_F(RetryPolicyTest, ServerDelayAboveTheCapFallsBackToBackoff) {
  for (const HttpHeaders& headers :
       {HttpHeaders{{"retry-after", "61"}},
        HttpHeaders{{"retry-after", "60.001"}},
        HttpHeaders{{"retry-after-ms", "60001"}},
        HttpHeaders{{"retry-after", "Sun, 01 Mar 2026 13:00:00 GMT"}},
        HttpHeaders{{"retry-after", std::string(90, '9')}}}) {
    const RetryDecision d = Decide(AttemptFailure::HttpStatus(529, headers));
    EXPECT_TRUE(d.retry);
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kBackoff) << headers[0].second;
    EXPECT_EQ(d.delay, absl::Milliseconds(500)) << headers[0].second;
  }
}

TEST_F(RetryPolicyTest, ServerDelayCapIsConfigurable) {
  RetryPolicyOptions options;
  options.max_server_delay = absl::Minutes(5);
  absl::StatusOr<RetryPolicy> policy = RetryPolicy::Create(options, random_);
  ASSERT_THAT(policy, IsOk());
  const RetryDecision d =
      policy->Decide(AttemptFailure::HttpStatus(529, {{"retry-after", "120"}}),
                     0, clock_.Now());
  EXPECT_EQ(d.delay_kind, RetryDelayKind::kServer);
  EXPECT_EQ(d.delay, absl::Seconds(120));
}

TEST_F(RetryPolicyTest, MalformedRetryHeadersAreIgnored) {
  for (const char* bad : {"", "soon", "1e3", "0x10", "inf", "nan", "5s",
                          "Sun, 32 Mar 2026 12:00:30 GMT", "\xff\xfe"}) {
    const RetryDecision d = Decide(AttemptFailure::HttpStatus(
        503, {{"retry-after", bad}, {"retry-after-ms", bad}}));
    EXPECT_TRUE(d.retry) << bad;
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kBackoff) << bad;
    EXPECT_EQ(d.delay, absl::Milliseconds(500)) << bad;
  }
}

TEST_F(RetryPolicyTest, BackoffGrowsWithTheRetryCount) {
  RetryPolicyOptions options;
  options.max_retries = 10;
  absl::StatusOr<RetryPolicy> policy = RetryPolicy::Create(options, random_);
  ASSERT_THAT(policy, IsOk());
  const std::vector<absl::Duration> expected = {
      absl::Milliseconds(500), absl::Seconds(1), absl::Seconds(2),
      absl::Seconds(4),        absl::Seconds(8), absl::Seconds(8)};
  for (int i = 0; i < static_cast<int>(expected.size()); ++i) {
    EXPECT_EQ(
        policy->Decide(AttemptFailure::Connection(), i, clock_.Now()).delay,
        expected[i])
        << i;
  }
}

TEST_F(RetryPolicyTest, AttemptsExhaustedAfterMaxRetries) {
  const AttemptFailure failure = AttemptFailure::HttpStatus(
      529, {{"x-should-retry", "true"}}, "overloaded_error");
  EXPECT_TRUE(Decide(failure, 0).retry);
  EXPECT_TRUE(Decide(failure, 1).retry);
  for (int spent : {2, 3, 100}) {
    const RetryDecision d = Decide(failure, spent);
    EXPECT_FALSE(d.retry) << spent;
    EXPECT_EQ(d.reason, "attempts_exhausted");
    EXPECT_EQ(d.cause, "http_529");
    EXPECT_EQ(d.delay, absl::ZeroDuration());
    EXPECT_EQ(d.delay_kind, RetryDelayKind::kNone);
  }
}

TEST_F(RetryPolicyTest, NonRetryableFailureReportsItsCauseEvenWhenExhausted) {
  const RetryDecision d = Decide(AttemptFailure::HttpStatus(401), 5);
  EXPECT_FALSE(d.retry);
  EXPECT_EQ(d.reason, "http_401");
}

TEST_F(RetryPolicyTest, ZeroMaxRetriesNeverRetries) {
  RetryPolicyOptions options;
  options.max_retries = 0;
  absl::StatusOr<RetryPolicy> policy = RetryPolicy::Create(options, random_);
  ASSERT_THAT(policy, IsOk());
  const RetryDecision d =
      policy->Decide(AttemptFailure::Connection(), 0, clock_.Now());
  EXPECT_FALSE(d.retry);
  EXPECT_EQ(d.reason, "attempts_exhausted");
  EXPECT_EQ(d.cause, "connection");
}

TEST_F(RetryPolicyTest, NegativeRetryCountCountsAsZero) {
  const RetryDecision d = Decide(AttemptFailure::Connection(), -4);
  EXPECT_TRUE(d.retry);
  EXPECT_EQ(d.delay, absl::Milliseconds(500));
}

TEST_F(RetryPolicyTest, InvalidOptionsAreRejected) {
  std::vector<RetryPolicyOptions> bad(4);
  bad[0].max_retries = -1;
  bad[1].max_server_delay = absl::Seconds(-1);
  bad[2].max_server_delay = absl::InfiniteDuration();
  bad[3].backoff.multiplier = 0;
  for (const RetryPolicyOptions& options : bad) {
    EXPECT_THAT(RetryPolicy::Create(options, random_),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST_F(RetryPolicyTest, JitteredDelaysStayWithinSdkBounds) {
  SeededRandomSource random(12345);
  RetryPolicy policy(random);
  for (int i = 0; i < 300; ++i) {
    const int retries = i % 2;
    const RetryDecision d =
        policy.Decide(AttemptFailure::HttpStatus(503), retries, clock_.Now());
    const absl::Duration base = absl::Milliseconds(500) * (1 << retries);
    ASSERT_TRUE(d.retry);
    EXPECT_GE(d.delay, base * 0.75);
    EXPECT_LE(d.delay, base);
  }
}

TEST_F(RetryPolicyTest, OutOfRangeKindIsNotRetried) {
  AttemptFailure failure;
  failure.kind = static_cast<AttemptFailure::Kind>(42);
  const RetryDecision d = Decide(failure);
  EXPECT_FALSE(d.retry);
  EXPECT_EQ(d.reason, "unknown_failure_kind");
}

}  // namespace
}  // namespace toolmesh::common
