#include "common/retry_headers.h"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace toolmesh::common {
namespace {

using ::testing::Optional;

// Sunday 2026-03-01 12:00:00 UTC.
const absl::Time kNow = absl::FromCivil(absl::CivilSecond(2026, 3, 1, 12, 0, 0),
                                        absl::UTCTimeZone());

absl::Time Utc(int64_t y, int m, int d, int hh, int mm, int ss) {
  return absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss),
                         absl::UTCTimeZone());
}

class RetryHeadersTest : public ::testing::Test {};

TEST_F(RetryHeadersTest, FindHeaderIgnoresCaseAndReturnsTheFirstMatch) {
  const HttpHeaders headers = {{"Content-Type", "text/event-stream"},
                               {"Retry-After", "5"},
                               {"retry-after", "9"}};
  EXPECT_THAT(FindHeader(headers, "retry-after"), Optional(std::string("5")));
  EXPECT_THAT(FindHeader(headers, "CONTENT-TYPE"),
              Optional(std::string("text/event-stream")));
  EXPECT_EQ(FindHeader(headers, "retry-after-ms"), std::nullopt);
  EXPECT_EQ(FindHeader({}, "x"), std::nullopt);
}

TEST_F(RetryHeadersTest, ShouldRetryReadsTrueAndFalseOnly) {
  EXPECT_THAT(ParseShouldRetry({{"x-should-retry", "true"}}), Optional(true));
  EXPECT_THAT(ParseShouldRetry({{"X-Should-Retry", " FALSE "}}),
              Optional(false));
  for (const char* other : {"", "yes", "1", "0", "truee", "t"}) {
    EXPECT_EQ(ParseShouldRetry({{"x-should-retry", other}}), std::nullopt)
        << other;
  }
  EXPECT_EQ(ParseShouldRetry({}), std::nullopt);
}

TEST_F(RetryHeadersTest, ParsesImfFixdate) {
  EXPECT_THAT(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT", kNow),
              Optional(Utc(1994, 11, 6, 8, 49, 37)));
  EXPECT_THAT(ParseHttpDate("sun, 01 mar 2026 12:00:30 gmt", kNow),
              Optional(Utc(2026, 3, 1, 12, 0, 30)));
}

TEST_F(RetryHeadersTest, ParsesRfc850Date) {
  EXPECT_THAT(ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT", kNow),
              Optional(Utc(1994, 11, 6, 8, 49, 37)));
  EXPECT_THAT(ParseHttpDate("Sunday, 01-Mar-26 12:00:30 GMT", kNow),
              Optional(Utc(2026, 3, 1, 12, 0, 30)));
}

TEST_F(RetryHeadersTest, Rfc850TwoDigitYearIsAtMostFiftyYearsAhead) {
  auto year_of = [](const char* text) -> int64_t {
    std::optional<absl::Time> t = ParseHttpDate(text, kNow);
    if (!t) return -1;
    return absl::ToCivilYear(*t, absl::UTCTimeZone()).year();
  };
  EXPECT_EQ(year_of("Monday, 01-Jan-76 00:00:00 GMT"), 2076);
  EXPECT_EQ(year_of("Monday, 01-Jan-77 00:00:00 GMT"), 1977);
  EXPECT_EQ(year_of("Monday, 01-Jan-00 00:00:00 GMT"), 2000);
  // Near the end of a century the next century's years come first.
  const absl::Time late = Utc(2090, 1, 1, 0, 0, 0);
  std::optional<absl::Time> t =
      ParseHttpDate("Monday, 01-Jan-05 00:00:00 GMT", late);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(absl::ToCivilYear(*t, absl::UTCTimeZone()).year(), 2105);
}

TEST_F(RetryHeadersTest, ParsesAsctimeDate) {
  EXPECT_THAT(ParseHttpDate("Sun Nov  6 08:49:37 1994", kNow),
              Optional(Utc(1994, 11, 6, 8, 49, 37)));
  EXPECT_THAT(ParseHttpDate("Sun Mar 1 12:00:30 2026", kNow),
              Optional(Utc(2026, 3, 1, 12, 0, 30)));
  EXPECT_THAT(ParseHttpDate("Thu Feb 29 23:59:59 2024", kNow),
              Optional(Utc(2024, 2, 29, 23, 59, 59)));
}

TEST_F(RetryHeadersTest, RejectsMalformedDates) {
  for (const char* bad : {
           "",
           "   ",
           "Sun, 06 Nov 1994 08:49:37",         // no zone
           "Sun, 06 Nov 1994 08:49:37 PST",     // not GMT
           "Sun, 06 Nov 94 08:49:37 GMT",       // 2-digit year in IMF
           "Sun, 31 Feb 2026 08:49:37 GMT",     // no such day
           "Sun, 29 Feb 2026 08:49:37 GMT",     // not a leap year
           "Sun, 00 Mar 2026 08:49:37 GMT",     // day 0
           "Sun, 06 Foo 1994 08:49:37 GMT",     // month
           "Sun, 06 Nov 1994 24:00:00 GMT",     // hour
           "Sun, 06 Nov 1994 08:60:00 GMT",     // minute
           "Sun, 06 Nov 1994 08:49:61 GMT",     // second
           "Sun, 06 Nov 1994 8:49:37 GMT",      // short hour
           "Sun, 06 Nov 1994 08:49 GMT",        // no seconds
           "Xyz, 06 Nov 1994 08:49:37 GMT",     // day name
           "06 Nov 1994 08:49:37 GMT",          // no day name
           "Sunday, 06-Nov-1994 08:49:37 GMT",  // 4-digit year in RFC 850
           "Sunday, 06-Nov 08:49:37 GMT",       // missing year
           "Sunday, 06--94 08:49:37 GMT",       // missing month
           "Sun Nov  6 08:49:37 94",            // 2-digit asctime year
           "Sun Nov  6 08:49:37",               // no year
           "Sun, Nov  6 08:49:37 1994",         // asctime with a comma
           "Sun, 06 Nov 1994 08:49:37 GMT extra",
           "Sun, +6 Nov 1994 08:49:37 GMT",
           "2026-03-01T12:00:30Z",
       }) {
    EXPECT_EQ(ParseHttpDate(bad, kNow), std::nullopt) << bad;
  }
}

TEST_F(RetryHeadersTest, ParseDecimalAcceptsPlainNumbersOnly) {
  EXPECT_THAT(ParseDecimal("5"), Optional(5.0));
  EXPECT_THAT(ParseDecimal(" 2.5 "), Optional(2.5));
  EXPECT_THAT(ParseDecimal(".5"), Optional(0.5));
  EXPECT_THAT(ParseDecimal("3."), Optional(3.0));
  EXPECT_THAT(ParseDecimal("-1"), Optional(-1.0));
  EXPECT_THAT(ParseDecimal("+4"), Optional(4.0));
  for (const char* bad : {"", " ", ".", "-", "+.", "1e3", "0x10", "inf", "nan",
                          "Infinity", "1.2.3", "1 2", "5s", "--1", "１"}) {
    EXPECT_EQ(ParseDecimal(bad), std::nullopt) << bad;
  }
}

TEST_F(RetryHeadersTest, RetryAfterMsTakesPrecedence) {
  std::optional<ServerRetryDelay> d = ParseServerRetryDelay(
      {{"retry-after", "7"}, {"retry-after-ms", "1500"}}, kNow);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->delay, absl::Milliseconds(1500));
  EXPECT_EQ(d->source, RetryDelaySource::kRetryAfterMs);
}

TEST_F(RetryHeadersTest, RetryAfterMsAcceptsFractions) {
  std::optional<ServerRetryDelay> d =
      ParseServerRetryDelay({{"retry-after-ms", "250.5"}}, kNow);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->delay, absl::Microseconds(250500));
}

TEST_F(RetryHeadersTest, UnparseableRetryAfterMsFallsBackToRetryAfter) {
  std::optional<ServerRetryDelay> d = ParseServerRetryDelay(
      {{"retry-after-ms", "soon"}, {"retry-after", "3"}}, kNow);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->delay, absl::Seconds(3));
  EXPECT_EQ(d->source, RetryDelaySource::kRetryAfterSeconds);
}

TEST_F(RetryHeadersTest, RetryAfterSecondsIntegerAndDecimal) {
  std::optional<ServerRetryDelay> a =
      ParseServerRetryDelay({{"Retry-After", "12"}}, kNow);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->delay, absl::Seconds(12));
  std::optional<ServerRetryDelay> b =
      ParseServerRetryDelay({{"retry-after", "0.25"}}, kNow);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->delay, absl::Milliseconds(250));
}

TEST_F(RetryHeadersTest, RetryAfterDateInAllThreeFormsIsMeasuredFromNow) {
  for (const char* date :
       {"Sun, 01 Mar 2026 12:00:30 GMT", "Sunday, 01-Mar-26 12:00:30 GMT",
        "Sun Mar  1 12:00:30 2026"}) {
    std::optional<ServerRetryDelay> d =
        ParseServerRetryDelay({{"retry-after", date}}, kNow);
    ASSERT_TRUE(d.has_value()) << date;
    EXPECT_EQ(d->delay, absl::Seconds(30)) << date;
    EXPECT_EQ(d->source, RetryDelaySource::kRetryAfterDate) << date;
  }
}

TEST_F(RetryHeadersTest, PastDateAndNegativeNumbersGiveZero) {
  for (const HttpHeaders& headers :
       {HttpHeaders{{"retry-after", "Sun, 01 Mar 2026 11:59:00 GMT"}},
        HttpHeaders{{"retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"}},
        HttpHeaders{{"retry-after", "-4"}},
        HttpHeaders{{"retry-after-ms", "-100"}}}) {
    std::optional<ServerRetryDelay> d = ParseServerRetryDelay(headers, kNow);
    ASSERT_TRUE(d.has_value()) << headers[0].second;
    EXPECT_EQ(d->delay, absl::ZeroDuration()) << headers[0].second;
  }
}

TEST_F(RetryHeadersTest, HugeNumbersSaturateInsteadOfOverflowing) {
  const std::string huge(100, '9');
  std::optional<ServerRetryDelay> d =
      ParseServerRetryDelay({{"retry-after", huge}}, kNow);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->delay, absl::InfiniteDuration());
}

TEST_F(RetryHeadersTest, MalformedOrAbsentRetryHeadersGiveNothing) {
  EXPECT_EQ(ParseServerRetryDelay({}, kNow), std::nullopt);
  for (const char* bad :
       {"", "soon", "1e3", "NaN", "inf", "5 seconds", "Sun, 99 Nov 1994"}) {
    EXPECT_EQ(ParseServerRetryDelay({{"retry-after", bad}}, kNow), std::nullopt)
        << bad;
    EXPECT_EQ(ParseServerRetryDelay({{"retry-after-ms", bad}}, kNow),
              std::nullopt)
        << bad;
  }
}

TEST_F(RetryHeadersTest, ParsesRateLimitHeaders) {
  const HttpHeaders headers = {
      {"anthropic-ratelimit-requests-limit", "4000"},
      {"anthropic-ratelimit-requests-remaining", "3999"},
      {"anthropic-ratelimit-requests-reset", "2026-03-01T12:00:30Z"},
      {"Anthropic-RateLimit-Tokens-Remaining", "81000"},
      {"anthropic-ratelimit-input-tokens-reset", "2026-03-01T13:00:00+01:00"},
      {"anthropic-ratelimit-output-tokens-limit", "lots"},
  };
  const RateLimitInfo info = ParseRateLimitHeaders(headers);
  EXPECT_THAT(info.requests.limit, Optional(4000));
  EXPECT_THAT(info.requests.remaining, Optional(3999));
  EXPECT_THAT(info.requests.reset, Optional(kNow + absl::Seconds(30)));
  EXPECT_EQ(info.tokens.limit, std::nullopt);
  EXPECT_THAT(info.tokens.remaining, Optional(81000));
  EXPECT_THAT(info.input_tokens.reset, Optional(kNow));
  EXPECT_TRUE(info.output_tokens.empty());
  EXPECT_FALSE(info.requests.empty());
}

TEST_F(RetryHeadersTest, NoRateLimitHeadersGiveEmptyWindows) {
  const RateLimitInfo info = ParseRateLimitHeaders({{"request-id", "req_1"}});
  EXPECT_TRUE(info.requests.empty());
  EXPECT_TRUE(info.tokens.empty());
  EXPECT_TRUE(info.input_tokens.empty());
  EXPECT_TRUE(info.output_tokens.empty());
}

TEST_F(RetryHeadersTest, RejectsBadRateLimitValues) {
  const RateLimitInfo info = ParseRateLimitHeaders({
      {"anthropic-ratelimit-requests-limit", "-1"},
      {"anthropic-ratelimit-requests-remaining", "+5"},
      {"anthropic-ratelimit-requests-reset", "yesterday"},
      {"anthropic-ratelimit-tokens-limit", "99999999999999999999999"},
  });
  EXPECT_TRUE(info.requests.empty());
  EXPECT_TRUE(info.tokens.empty());
}

// Builds strings biased towards the parsers' grammar (digits, separators,
// day and month names) so that the random inputs get deep into them.
std::string RandomHeaderValue(RandomSource& random) {
  static const std::vector<std::string> kPieces = {
      "Sun",         "Sunday",   ",",  " ",   "  ",   "\t",
      "06",          "6",        "-",  "Nov", "nov",  "1994",
      "94",          "08:49:37", ":",  "GMT", "1",    "0",
      ".",           "5",        "+",  "e",   "\xff", std::string(1, '\0'),
      "99999999999", "Feb",      "29", "T",   "Z",    "2026-03-01T12:00:30Z",
      "true",        "x"};
  const int count = static_cast<int>(random.Uniform01() * 12);
  std::string out;
  for (int i = 0; i < count; ++i) {
    if (random.Uniform01() < 0.2) {
      // Through unsigned char: a double above 127 converted straight to a
      // signed char is undefined behaviour.
      const auto byte = static_cast<unsigned char>(random.Uniform01() * 256);
      out.push_back(static_cast<char>(byte));
    } else {
      out += kPieces[static_cast<size_t>(random.Uniform01() * kPieces.size())];
    }
  }
  return out;
}

TEST_F(RetryHeadersTest, RandomInputsNeverCrashAndKeepInvariants) {
  SeededRandomSource random(0x5eed);
  for (int i = 0; i < 500; ++i) {
    const std::string value = RandomHeaderValue(random);
    SCOPED_TRACE(::testing::PrintToString(value));
    if (std::optional<absl::Time> t = ParseHttpDate(value, kNow)) {
      EXPECT_NE(*t, absl::InfiniteFuture());
      EXPECT_NE(*t, absl::InfinitePast());
    }
    if (std::optional<double> d = ParseDecimal(value)) {
      EXPECT_TRUE(std::isfinite(*d));
    }
    const HttpHeaders headers = {{"retry-after-ms", value},
                                 {"retry-after", value},
                                 {"x-should-retry", value},
                                 {"anthropic-ratelimit-tokens-limit", value},
                                 {"anthropic-ratelimit-tokens-reset", value}};
    if (std::optional<ServerRetryDelay> d =
            ParseServerRetryDelay(headers, kNow)) {
      EXPECT_GE(d->delay, absl::ZeroDuration());
    }
    const HttpHeaders only_retry_after = {{"retry-after", value}};
    if (std::optional<ServerRetryDelay> d =
            ParseServerRetryDelay(only_retry_after, kNow)) {
      EXPECT_GE(d->delay, absl::ZeroDuration());
    }
    ParseShouldRetry(headers);
    const RateLimitInfo info = ParseRateLimitHeaders(headers);
    if (info.tokens.limit) {
      EXPECT_GE(*info.tokens.limit, 0);
    }
  }
}

}  // namespace
}  // namespace toolmesh::common
