// Retry classification and decisions; see retry_policy.h.
#include "common/retry_policy.h"

#include <algorithm>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace toolmesh::common {
namespace {

constexpr size_t kMaxErrorTypeLength = 64;

// Error types come off the wire; keep reasons machine-readable whatever they
// hold.
std::string SanitizeErrorType(std::string_view type) {
  std::string out;
  out.reserve(std::min(type.size(), kMaxErrorTypeLength));
  for (char c : type.substr(0, kMaxErrorTypeLength)) {
    const char lower = absl::ascii_tolower(static_cast<unsigned char>(c));
    out.push_back(
        (absl::ascii_isalnum(static_cast<unsigned char>(lower)) || lower == '_')
            ? lower
            : '_');
  }
  return out;
}

bool IsRetryableStatus(int status) {
  return status == 408 || status == 409 || status == 429 || status >= 500;
}

bool IsRetryableStreamErrorType(std::string_view type) {
  return type == "overloaded_error" || type == "api_error" ||
         type == "rate_limit_error" || type == "timeout_error";
}

FailureClassification ClassifyHttp(const AttemptFailure& failure) {
  FailureClassification result;
  result.cause = absl::StrCat("http_", failure.http_status);
  if (failure.http_status == 429 &&
      (failure.error_type.empty() ||
       failure.error_type == "rate_limit_error") &&
      !FindHeader(failure.headers, "retry-after") &&
      !FindHeader(failure.headers, "retry-after-ms")) {
    result.spend_cap_suspected = true;
    absl::StrAppend(&result.cause, "_spend_cap");
  }
  const bool by_status = IsRetryableStatus(failure.http_status);
  const std::optional<bool> by_header = ParseShouldRetry(failure.headers);
  result.retryable = by_header.value_or(by_status);
  if (result.retryable != by_status) {
    absl::StrAppend(&result.cause, result.retryable ? "_x_should_retry_true"
                                                    : "_x_should_retry_false");
  }
  return result;
}

}  // namespace

AttemptFailure AttemptFailure::HttpStatus(int status, HttpHeaders headers,
                                          std::string error_type) {
  AttemptFailure failure;
  failure.kind = Kind::kHttpStatus;
  failure.http_status = status;
  failure.headers = std::move(headers);
  failure.error_type = std::move(error_type);
  return failure;
}

AttemptFailure AttemptFailure::StreamError(std::string error_type,
                                           HttpHeaders headers) {
  AttemptFailure failure;
  failure.kind = Kind::kStreamError;
  failure.http_status = 200;
  failure.headers = std::move(headers);
  failure.error_type = std::move(error_type);
  return failure;
}

AttemptFailure AttemptFailure::Connection(std::string detail) {
  AttemptFailure failure;
  failure.kind = Kind::kConnection;
  failure.detail = std::move(detail);
  return failure;
}

AttemptFailure AttemptFailure::Malformed(std::string detail) {
  AttemptFailure failure;
  failure.kind = Kind::kMalformed;
  failure.detail = std::move(detail);
  return failure;
}

FailureClassification ClassifyFailure(const AttemptFailure& failure) {
  switch (failure.kind) {
    case AttemptFailure::Kind::kHttpStatus:
      return ClassifyHttp(failure);
    case AttemptFailure::Kind::kStreamError: {
      FailureClassification result;
      result.retryable = IsRetryableStreamErrorType(failure.error_type);
      result.cause =
          failure.error_type.empty()
              ? std::string("stream_error")
              : absl::StrCat("stream_", SanitizeErrorType(failure.error_type));
      return result;
    }
    case AttemptFailure::Kind::kConnection:
      return FailureClassification{true, "connection", false};
    case AttemptFailure::Kind::kMalformed:
      return FailureClassification{true, "malformed_stream", false};
  }
  // An out-of-range Kind (a cast from a bad integer): treat as not retryable
  // rather than guessing.
  return FailureClassification{false, "unknown_failure_kind", false};
}

absl::Status RetryPolicyOptions::Validate() const {
  if (max_retries < 0) {
    return absl::InvalidArgumentError("max_retries must be >= 0");
  }
  if (max_server_delay < absl::ZeroDuration() ||
      max_server_delay == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        "max_server_delay must be finite and >= 0");
  }
  return backoff.Validate();
}

RetryPolicy::RetryPolicy(RandomSource& random)
    : backoff_(ExponentialBackoff(random)) {}

RetryPolicy::RetryPolicy(const RetryPolicyOptions& options,
                         ExponentialBackoff backoff)
    : options_(options), backoff_(std::move(backoff)) {}

absl::StatusOr<RetryPolicy> RetryPolicy::Create(
    const RetryPolicyOptions& options, RandomSource& random) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  absl::StatusOr<ExponentialBackoff> backoff =
      ExponentialBackoff::Create(options.backoff, random);
  if (!backoff.ok()) return backoff.status();
  return RetryPolicy(options, *std::move(backoff));
}

RetryDecision RetryPolicy::Decide(const AttemptFailure& failure,
                                  int retries_so_far, absl::Time now) {
  retries_so_far = std::max(retries_so_far, 0);
  FailureClassification classification = ClassifyFailure(failure);
  RetryDecision decision;
  decision.spend_cap_suspected = classification.spend_cap_suspected;
  decision.cause = std::move(classification.cause);
  if (!classification.retryable) {
    decision.reason = decision.cause;
    return decision;
  }
  if (classification.spend_cap_suspected &&
      !options_.retry_suspected_spend_cap) {
    decision.reason = "spend_cap";
    return decision;
  }
  if (retries_so_far >= options_.max_retries) {
    decision.reason = "attempts_exhausted";
    return decision;
  }
  decision.retry = true;
  decision.reason = decision.cause;
  if (failure.kind == AttemptFailure::Kind::kHttpStatus) {
    if (std::optional<ServerRetryDelay> server =
            ParseServerRetryDelay(failure.headers, now);
        server && server->delay > absl::ZeroDuration() &&
        server->delay <= options_.max_server_delay) {
      decision.delay = server->delay;
      decision.delay_kind = RetryDelayKind::kServer;
      decision.server_delay_source = server->source;
      return decision;
    }
  }
  decision.delay = backoff_.Delay(retries_so_far);
  decision.delay_kind = RetryDelayKind::kBackoff;
  return decision;
}

}  // namespace toolmesh::common
