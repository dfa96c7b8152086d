// Exponential backoff with jitter, as the official Anthropic SDKs compute it
// (PROTOCOL.md section e): delay(n) = min(initial * multiplier^n, max_delay)
// * jitter, jitter uniform in [min_jitter, max_jitter] (SDKs: 0.5 s, 2, 8 s,
// [0.75, 1]). The jitter comes from an injected RandomSource so tests and the
// deterministic simulation replay exactly.
//
// Thread-safety: ExponentialBackoff holds no mutable state of its own;
// Delay() is as thread-safe as the RandomSource it draws from.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/random.h"

namespace toolmesh::common {

struct BackoffOptions {
  // Delay before the first retry (retry index 0), before jitter.
  absl::Duration initial_delay = absl::Milliseconds(500);
  // Growth per retry; >= 1.
  double multiplier = 2.0;
  // Upper bound of the delay before jitter; >= initial_delay.
  absl::Duration max_delay = absl::Seconds(8);
  // The delay is scaled by a factor drawn uniformly from
  // [min_jitter, max_jitter]; 0 <= min_jitter <= max_jitter <= 1.
  double min_jitter = 0.75;
  double max_jitter = 1.0;

  // OK, or kInvalidArgument naming the first field out of range (negative or
  // infinite durations, multiplier < 1 or not finite, jitter bounds outside
  // the rule above).
  absl::Status Validate() const;
};

class ExponentialBackoff {
 public:
  // SDK defaults. `random` must outlive this object.
  explicit ExponentialBackoff(RandomSource& random);

  // `options` as configured; kInvalidArgument if options.Validate() fails.
  // `random` must outlive the returned object.
  static absl::StatusOr<ExponentialBackoff> Create(
      const BackoffOptions& options, RandomSource& random);

  // The delay before retry number `retry_index` (0-based: 0 is the first
  // retry). Negative indices count as 0. Draws one value from the random
  // source; a value outside [0, 1] is clamped, so a source returning 0 gives
  // the full delay (jitter max_jitter) and one returning 1 the shortest
  // (jitter min_jitter), matching the SDKs' `1 - 0.25 * random()`.
  absl::Duration Delay(int retry_index);

  // The delay before jitter: min(initial * multiplier^retry_index, max).
  absl::Duration BaseDelay(int retry_index) const;

  const BackoffOptions& options() const { return options_; }

 private:
  ExponentialBackoff(const BackoffOptions& options, RandomSource& random);

  BackoffOptions options_;
  RandomSource* random_;  // not owned
};

}  // namespace toolmesh::common
