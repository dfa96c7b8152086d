// Retry-related header parsers; see retry_headers.h.
#include "common/retry_headers.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"

namespace toolmesh::common {
namespace {

// Longer values are not numbers or dates we would accept; rejecting them
// early bounds the work done on hostile input.
constexpr size_t kMaxValueLength = 128;

// Debian's Abseil is built with its own absl::string_view (not an alias of
// std::string_view), so views cross over explicitly.
absl::string_view ToAbsl(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(a[i])) !=
        absl::ascii_tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

bool IsOws(char c) { return c == ' ' || c == '\t'; }

// Strips HTTP optional whitespace (SP, HTAB) and CR/LF from both ends.
std::string_view StripWhitespace(std::string_view text) {
  while (!text.empty() && (IsOws(text.front()) || text.front() == '\r' ||
                           text.front() == '\n')) {
    text.remove_prefix(1);
  }
  while (!text.empty() &&
         (IsOws(text.back()) || text.back() == '\r' || text.back() == '\n')) {
    text.remove_suffix(1);
  }
  return text;
}

// Splits on runs of SP/HTAB, dropping empty pieces.
std::vector<std::string_view> SplitOnOws(std::string_view text) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsOws(text[i])) ++i;
    const size_t begin = i;
    while (i < text.size() && !IsOws(text[i])) ++i;
    if (i > begin) tokens.push_back(text.substr(begin, i - begin));
  }
  return tokens;
}

// Splits on every `separator`, keeping empty pieces.
std::vector<std::string_view> SplitOn(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  size_t begin = 0;
  while (true) {
    const size_t end = text.find(separator, begin);
    if (end == std::string_view::npos) {
      parts.push_back(text.substr(begin));
      return parts;
    }
    parts.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
}

constexpr std::array<std::string_view, 7> kShortDays = {
    "mon", "tue", "wed", "thu", "fri", "sat", "sun"};
constexpr std::array<std::string_view, 7> kLongDays = {
    "monday", "tuesday",  "wednesday", "thursday",
    "friday", "saturday", "sunday"};
constexpr std::array<std::string_view, 12> kMonths = {
    "jan", "feb", "mar", "apr", "may", "jun",
    "jul", "aug", "sep", "oct", "nov", "dec"};

bool IsDayName(std::string_view token) {
  for (std::string_view day : kShortDays) {
    if (EqualsIgnoreCase(token, day)) return true;
  }
  for (std::string_view day : kLongDays) {
    if (EqualsIgnoreCase(token, day)) return true;
  }
  return false;
}

// 1..12, or 0 if `token` is not a month abbreviation.
int MonthNumber(std::string_view token) {
  for (size_t i = 0; i < kMonths.size(); ++i) {
    if (EqualsIgnoreCase(token, kMonths[i])) return static_cast<int>(i) + 1;
  }
  return 0;
}

// `token` as an unsigned decimal of min_digits..max_digits digits.
std::optional<int> ParseDigits(std::string_view token, size_t min_digits,
                               size_t max_digits) {
  if (token.size() < min_digits || token.size() > max_digits) {
    return std::nullopt;
  }
  int value = 0;
  for (char c : token) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)))
      return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

struct TimeOfDay {
  int hour;
  int minute;
  int second;
};

// "HH:MM:SS"; second 60 (a leap second) is accepted and rolls over.
std::optional<TimeOfDay> ParseTimeOfDay(std::string_view token) {
  if (token.size() != 8 || token[2] != ':' || token[5] != ':') {
    return std::nullopt;
  }
  std::optional<int> hour = ParseDigits(token.substr(0, 2), 2, 2);
  std::optional<int> minute = ParseDigits(token.substr(3, 2), 2, 2);
  std::optional<int> second = ParseDigits(token.substr(6, 2), 2, 2);
  if (!hour || !minute || !second || *hour > 23 || *minute > 59 ||
      *second > 60) {
    return std::nullopt;
  }
  return TimeOfDay{*hour, *minute, *second};
}

std::optional<absl::Time> MakeUtcTime(int64_t year, int month, int day,
                                      const TimeOfDay& time) {
  if (month < 1 || month > 12 || day < 1) return std::nullopt;
  // CivilDay normalises out-of-range days (Feb 30 -> Mar 2); a changed day
  // means the date does not exist.
  const absl::CivilDay civil_day(year, month, day);
  if (civil_day.day() != day || civil_day.month() != month) return std::nullopt;
  const absl::CivilSecond civil(year, month, day, time.hour, time.minute,
                                time.second);
  return absl::FromCivil(civil, absl::UTCTimeZone());
}

bool IsGmt(std::string_view token) { return EqualsIgnoreCase(token, "GMT"); }

// RFC 9110 5.6.7: a two-digit year more than 50 years in the future means
// the most recent past year with the same last two digits.
int64_t ExpandTwoDigitYear(int two_digits, absl::Time now) {
  const int64_t now_year = absl::ToCivilYear(now, absl::UTCTimeZone()).year();
  // Floor division keeps this right for (absurd) negative years too.
  int64_t century = now_year / 100;
  if (now_year % 100 < 0) --century;
  int64_t year = century * 100 + two_digits;
  if (year > now_year + 50) {
    year -= 100;
  } else if (year + 100 <= now_year + 50) {
    year += 100;
  }
  return year;
}

std::optional<double> ParseScaledSeconds(std::string_view text, double scale) {
  std::optional<double> value = ParseDecimal(text);
  if (!value) return std::nullopt;
  const double scaled = *value * scale;
  if (!std::isfinite(scaled)) return std::nullopt;
  return scaled;
}

absl::Duration NonNegativeSeconds(double seconds) {
  if (seconds <= 0) return absl::ZeroDuration();
  return absl::Seconds(seconds);  // saturates to InfiniteDuration
}

std::optional<int64_t> ParseNonNegativeInt(std::string_view text) {
  text = StripWhitespace(text);
  if (text.empty() || text.size() > 19) return std::nullopt;
  int64_t value = 0;
  if (!absl::SimpleAtoi(ToAbsl(text), &value) || value < 0) return std::nullopt;
  // SimpleAtoi accepts a leading '+'; headers never carry one.
  if (!absl::ascii_isdigit(static_cast<unsigned char>(text.front()))) {
    return std::nullopt;
  }
  return value;
}

std::optional<absl::Time> ParseRfc3339(std::string_view text) {
  text = StripWhitespace(text);
  if (text.empty() || text.size() > kMaxValueLength) return std::nullopt;
  absl::Time time;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, ToAbsl(text), &time, &error)) {
    return std::nullopt;
  }
  return time;
}

RateLimitWindow ParseRateLimitWindow(const HttpHeaders& headers,
                                     std::string_view family) {
  RateLimitWindow window;
  const std::string prefix =
      std::string("anthropic-ratelimit-").append(family).append("-");
  if (auto v = FindHeader(headers, prefix + "limit")) {
    window.limit = ParseNonNegativeInt(*v);
  }
  if (auto v = FindHeader(headers, prefix + "remaining")) {
    window.remaining = ParseNonNegativeInt(*v);
  }
  if (auto v = FindHeader(headers, prefix + "reset")) {
    window.reset = ParseRfc3339(*v);
  }
  return window;
}

}  // namespace

std::optional<std::string_view> FindHeader(const HttpHeaders& headers,
                                           std::string_view name) {
  for (const auto& [header_name, value] : headers) {
    if (EqualsIgnoreCase(header_name, name)) return value;
  }
  return std::nullopt;
}

std::optional<bool> ParseShouldRetry(const HttpHeaders& headers) {
  std::optional<std::string_view> value = FindHeader(headers, "x-should-retry");
  if (!value) return std::nullopt;
  const std::string_view trimmed = StripWhitespace(*value);
  if (EqualsIgnoreCase(trimmed, "true")) return true;
  if (EqualsIgnoreCase(trimmed, "false")) return false;
  return std::nullopt;
}

std::optional<double> ParseDecimal(std::string_view text) {
  text = StripWhitespace(text);
  if (text.empty() || text.size() > kMaxValueLength) return std::nullopt;
  size_t i = 0;
  if (text[i] == '+' || text[i] == '-') ++i;
  size_t int_digits = 0;
  while (i < text.size() &&
         absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) {
    ++i;
    ++int_digits;
  }
  size_t frac_digits = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() &&
           absl::ascii_isdigit(static_cast<unsigned char>(text[i]))) {
      ++i;
      ++frac_digits;
    }
  }
  if (i != text.size() || int_digits + frac_digits == 0) return std::nullopt;
  double value = 0;
  // The grammar above is a subset of what SimpleAtod accepts.
  if (!absl::SimpleAtod(ToAbsl(text), &value) || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

std::optional<absl::Time> ParseHttpDate(std::string_view text, absl::Time now) {
  if (text.size() > kMaxValueLength) return std::nullopt;
  const std::vector<std::string_view> tokens = SplitOnOws(text);
  if (tokens.empty()) return std::nullopt;
  std::string_view day_name = tokens[0];
  const bool has_comma = !day_name.empty() && day_name.back() == ',';
  if (has_comma) day_name.remove_suffix(1);
  if (!IsDayName(day_name)) return std::nullopt;

  if (has_comma && tokens.size() == 6) {
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    std::optional<int> day = ParseDigits(tokens[1], 1, 2);
    const int month = MonthNumber(tokens[2]);
    std::optional<int> year = ParseDigits(tokens[3], 4, 4);
    std::optional<TimeOfDay> time = ParseTimeOfDay(tokens[4]);
    if (!day || month == 0 || !year || !time || !IsGmt(tokens[5])) {
      return std::nullopt;
    }
    return MakeUtcTime(*year, month, *day, *time);
  }
  if (has_comma && tokens.size() == 4) {
    // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
    const std::vector<std::string_view> parts = SplitOn(tokens[1], '-');
    if (parts.size() != 3) return std::nullopt;
    std::optional<int> day = ParseDigits(parts[0], 1, 2);
    const int month = MonthNumber(parts[1]);
    std::optional<int> year = ParseDigits(parts[2], 2, 2);
    std::optional<TimeOfDay> time = ParseTimeOfDay(tokens[2]);
    if (!day || month == 0 || !year || !time || !IsGmt(tokens[3])) {
      return std::nullopt;
    }
    return MakeUtcTime(ExpandTwoDigitYear(*year, now), month, *day, *time);
  }
  if (!has_comma && tokens.size() == 5) {
    // asctime: Sun Nov  6 08:49:37 1994
    const int month = MonthNumber(tokens[1]);
    std::optional<int> day = ParseDigits(tokens[2], 1, 2);
    std::optional<TimeOfDay> time = ParseTimeOfDay(tokens[3]);
    std::optional<int> year = ParseDigits(tokens[4], 4, 4);
    if (!day || month == 0 || !year || !time) return std::nullopt;
    return MakeUtcTime(*year, month, *day, *time);
  }
  return std::nullopt;
}

std::optional<ServerRetryDelay> ParseServerRetryDelay(
    const HttpHeaders& headers, absl::Time now) {
  if (auto ms = FindHeader(headers, "retry-after-ms")) {
    if (auto seconds = ParseScaledSeconds(*ms, 1e-3)) {
      return ServerRetryDelay{NonNegativeSeconds(*seconds),
                              RetryDelaySource::kRetryAfterMs};
    }
  }
  std::optional<std::string_view> retry_after =
      FindHeader(headers, "retry-after");
  if (!retry_after) return std::nullopt;
  if (auto seconds = ParseScaledSeconds(*retry_after, 1.0)) {
    return ServerRetryDelay{NonNegativeSeconds(*seconds),
                            RetryDelaySource::kRetryAfterSeconds};
  }
  if (auto date = ParseHttpDate(*retry_after, now)) {
    return ServerRetryDelay{std::max(*date - now, absl::ZeroDuration()),
                            RetryDelaySource::kRetryAfterDate};
  }
  return std::nullopt;
}

RateLimitInfo ParseRateLimitHeaders(const HttpHeaders& headers) {
  RateLimitInfo info;
  info.requests = ParseRateLimitWindow(headers, "requests");
  info.tokens = ParseRateLimitWindow(headers, "tokens");
  info.input_tokens = ParseRateLimitWindow(headers, "input-tokens");
  info.output_tokens = ParseRateLimitWindow(headers, "output-tokens");
  return info;
}

}  // namespace toolmesh::common
