// Whether, and after how long, to retry a failed model request attempt
// (ARCHITECTURE.md "A turn" step 5, PROTOCOL.md section e).
//
// The rules follow the official SDKs for HTTP errors and extend them to the
// failures the SDKs do not retry but toolmesh does (errors and damage after
// the stream started): the orchestrator throws the partial step away and
// requests the same turn again, so such a retry is safe.
//
// Thread-safety: ClassifyFailure() is a pure function. RetryPolicy holds no
// mutable state of its own; Decide() is as thread-safe as the RandomSource.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/backoff.h"
#include "common/random.h"
#include "common/retry_headers.h"

namespace toolmesh::common {

// One failed attempt at a Messages API request.
struct AttemptFailure {
  enum class Kind {
    // The API answered with a non-2xx status; `http_status`, `headers` and,
    // if the body parsed, `error_type` (the body's `error.type`) are set.
    kHttpStatus,
    // A 200 stream carried an SSE `error` event; `error_type` holds its
    // `error.type` (e.g. "overloaded_error"); `headers` are the 200's.
    kStreamError,
    // No usable response: connect failure, reset, connection dropped
    // mid-stream, timeout.
    kConnection,
    // Bytes that do not decode: bad SSE framing or JSON, an event out of
    // order such as a second `message_start` spliced into the stream.
    kMalformed,
  };

  static AttemptFailure HttpStatus(int status, HttpHeaders headers = {},
                                   std::string error_type = "");
  static AttemptFailure StreamError(std::string error_type,
                                    HttpHeaders headers = {});
  static AttemptFailure Connection(std::string detail = "");
  static AttemptFailure Malformed(std::string detail = "");

  Kind kind = Kind::kConnection;
  int http_status = 0;
  HttpHeaders headers;
  std::string error_type;
  // Free text for logs (the API's message, the socket error); never used to
  // decide.
  std::string detail;
};

// What kind of failure an attempt was, independent of how many retries are
// left.
struct FailureClassification {
  bool retryable = false;
  // Short machine-readable name of the failure: "http_529", "http_429",
  // "http_429_spend_cap", "http_400_x_should_retry_true",
  // "http_503_x_should_retry_false", "stream_overloaded_error",
  // "stream_error" (no type), "connection", "malformed_stream". The
  // `_x_should_retry_*` suffix appears only when the header changed the
  // outcome. Error types from the wire are reduced to [a-z0-9_] and at most
  // 64 characters.
  std::string cause;
  // A 429 with no `retry-after`/`retry-after-ms` header whose error type is
  // `rate_limit_error` (or unknown): the API's spend-cap 429, which keeps
  // failing until access resumes rather than after a short wait.
  bool spend_cap_suspected = false;
};

// Classifies `failure`:
//  - HTTP: `x-should-retry: true|false` decides when present. Otherwise
//    retryable for 408, 409, 429 and every status >= 500 (529 included), not
//    for anything else (400, 401, 402, 403, 404, 413, ...).
//  - Stream `error` event after a 200: retryable for overloaded_error,
//    api_error, rate_limit_error and timeout_error, the types the API maps to
//    the retryable statuses 529, 500, 429 and 504. Every other type
//    (invalid_request_error, authentication_error, unknown types, none) is
//    not: it would fail the same way again. Headers are not consulted: those
//    of the 200 say nothing about an error that came later.
//  - Connection failures and malformed/spliced streams: retryable, the
//    bytes were lost or damaged in transit.
FailureClassification ClassifyFailure(const AttemptFailure& failure);

struct RetryPolicyOptions {
  // Retries after the first attempt (SDK default 2: three attempts in all).
  int max_retries = 2;
  // A server-requested delay (`retry-after-ms`, `retry-after`) is honoured
  // when 0 < delay <= this (the Python SDK's 60 s); otherwise the backoff
  // applies.
  absl::Duration max_server_delay = absl::Seconds(60);
  // Whether to retry a suspected spend-cap 429 at all (see
  // FailureClassification::spend_cap_suspected).
  bool retry_suspected_spend_cap = true;
  BackoffOptions backoff;

  // OK, or kInvalidArgument naming the first bad field (negative
  // max_retries, negative or infinite max_server_delay, bad backoff).
  absl::Status Validate() const;
};

enum class RetryDelayKind {
  kNone,     // no retry
  kBackoff,  // exponential backoff with jitter
  kServer,   // the server's retry-after(-ms), see `server_delay_source`
};

struct RetryDecision {
  bool retry = false;
  // How long to wait before the next attempt; zero when !retry.
  absl::Duration delay = absl::ZeroDuration();
  // Why: equal to `cause` unless the failure was retryable but the retries
  // are spent ("attempts_exhausted") or a suspected spend cap is configured
  // not to be retried ("spend_cap").
  std::string reason;
  // FailureClassification::cause of the failure.
  std::string cause;
  bool spend_cap_suspected = false;
  RetryDelayKind delay_kind = RetryDelayKind::kNone;
  // Meaningful when delay_kind == kServer.
  RetryDelaySource server_delay_source = RetryDelaySource::kRetryAfterMs;
};

class RetryPolicy {
 public:
  // SDK defaults. `random` must outlive this object.
  explicit RetryPolicy(RandomSource& random);

  // kInvalidArgument if options.Validate() fails. `random` must outlive the
  // returned object.
  static absl::StatusOr<RetryPolicy> Create(const RetryPolicyOptions& options,
                                            RandomSource& random);

  // Decides about the attempt that just failed, `retries_so_far` retries
  // after the first attempt (0 when the first attempt failed; negative
  // counts as 0). `now` (the caller's Clock::Now()) dates an HTTP-date
  // `retry-after`. The delay is the server's for an HTTP failure whose
  // `retry-after-ms`/`retry-after` gives 0 < delay <= max_server_delay,
  // otherwise the backoff for retry index `retries_so_far` (one draw from
  // the random source).
  RetryDecision Decide(const AttemptFailure& failure, int retries_so_far,
                       absl::Time now);

  const RetryPolicyOptions& options() const { return options_; }

 private:
  RetryPolicy(const RetryPolicyOptions& options, ExponentialBackoff backoff);

  RetryPolicyOptions options_;
  ExponentialBackoff backoff_;
};

}  // namespace toolmesh::common
