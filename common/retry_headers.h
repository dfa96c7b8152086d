// Parsers for the HTTP response headers that steer retries of Anthropic API
// requests (PROTOCOL.md section e): `x-should-retry`, `retry-after-ms`,
// `retry-after` (seconds or an HTTP-date) and the `anthropic-ratelimit-*`
// family.
//
// Header values are untrusted input: every parser here accepts any bytes and
// answers "absent/unusable" (nullopt) for what it cannot read; none throws,
// crashes or allocates without bound.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace toolmesh::common {

// Response headers in arrival order. Names keep the case they were sent in;
// look them up with FindHeader().
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// The value of the first header called `name` (ASCII case-insensitive), or
// nullopt. The view points into `headers`.
std::optional<std::string_view> FindHeader(const HttpHeaders& headers,
                                           std::string_view name);

// `x-should-retry`: true for "true", false for "false" (surrounding
// whitespace and letter case ignored), nullopt when absent or anything else.
std::optional<bool> ParseShouldRetry(const HttpHeaders& headers);

// Parses an HTTP-date (RFC 9110 section 5.6.7) in any of its three forms:
//   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"
//   RFC 850      "Sunday, 06-Nov-94 08:49:37 GMT"
//   asctime      "Sun Nov  6 08:49:37 1994"
// Day and month names are matched case-insensitively and the day name is not
// checked against the date. An RFC 850 two-digit year is read as the year
// with those last digits nearest before `now` + 50 years, as RFC 9110
// requires; `now` is used for nothing else. Returns nullopt for anything
// else, including impossible dates (Feb 30) and out-of-range times.
std::optional<absl::Time> ParseHttpDate(std::string_view text, absl::Time now);

// Parses a decimal number of the form [+-]digits[.digits] or [+-].digits
// with optional surrounding whitespace (no exponent, no inf/nan). Returns
// nullopt for anything else.
std::optional<double> ParseDecimal(std::string_view text);

// Which header produced a server-requested delay.
enum class RetryDelaySource {
  kRetryAfterMs,       // `retry-after-ms`
  kRetryAfterSeconds,  // `retry-after` as a number of seconds
  kRetryAfterDate,     // `retry-after` as an HTTP-date
};

struct ServerRetryDelay {
  // Never negative: negative numbers and dates at or before `now` give zero.
  absl::Duration delay;
  RetryDelaySource source;
};

// The delay the server asked for, the way the SDKs read it: a parseable
// `retry-after-ms` (milliseconds, decimals allowed) wins; otherwise
// `retry-after` as seconds (integer or decimal) or as an HTTP-date, measured
// from `now`. A header that is present but unparseable is ignored as if
// absent. nullopt if neither gives a value.
std::optional<ServerRetryDelay> ParseServerRetryDelay(
    const HttpHeaders& headers, absl::Time now);

// One family of `anthropic-ratelimit-<family>-{limit,remaining,reset}`
// headers. Each field is nullopt when its header is absent or unparseable.
struct RateLimitWindow {
  std::optional<int64_t> limit;
  std::optional<int64_t> remaining;  // tokens-remaining is rounded to 1000s
  std::optional<absl::Time> reset;   // sent as RFC 3339

  bool empty() const { return !limit && !remaining && !reset; }
};

// The `anthropic-ratelimit-*` headers (D-RATE). Foundry sends none, so every
// window may be empty.
struct RateLimitInfo {
  RateLimitWindow requests;
  RateLimitWindow tokens;  // the most restrictive token limit in force
  RateLimitWindow input_tokens;
  RateLimitWindow output_tokens;
};

RateLimitInfo ParseRateLimitHeaders(const HttpHeaders& headers);

}  // namespace toolmesh::common
