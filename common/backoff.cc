// Exponential backoff; see backoff.h.
#include "common/backoff.h"

#include <algorithm>
#include <cmath>

namespace toolmesh::common {
namespace {

bool IsFiniteNonNegative(absl::Duration d) {
  return d >= absl::ZeroDuration() && d != absl::InfiniteDuration();
}

}  // namespace

absl::Status BackoffOptions::Validate() const {
  if (!IsFiniteNonNegative(initial_delay)) {
    return absl::InvalidArgumentError(
        "backoff initial_delay must be finite and >= 0");
  }
  if (!std::isfinite(multiplier) || multiplier < 1.0) {
    return absl::InvalidArgumentError(
        "backoff multiplier must be finite and >= 1");
  }
  if (!IsFiniteNonNegative(max_delay) || max_delay < initial_delay) {
    return absl::InvalidArgumentError(
        "backoff max_delay must be finite and >= initial_delay");
  }
  // Written so that NaN fails every comparison and is rejected.
  if (!(min_jitter >= 0.0 && min_jitter <= max_jitter && max_jitter <= 1.0)) {
    return absl::InvalidArgumentError(
        "backoff jitter bounds must satisfy 0 <= min_jitter <= max_jitter <= "
        "1");
  }
  return absl::OkStatus();
}

ExponentialBackoff::ExponentialBackoff(RandomSource& random)
    : ExponentialBackoff(BackoffOptions{}, random) {}

ExponentialBackoff::ExponentialBackoff(const BackoffOptions& options,
                                       RandomSource& random)
    : options_(options), random_(&random) {}

absl::StatusOr<ExponentialBackoff> ExponentialBackoff::Create(
    const BackoffOptions& options, RandomSource& random) {
  if (absl::Status status = options.Validate(); !status.ok()) return status;
  return ExponentialBackoff(options, random);
}

absl::Duration ExponentialBackoff::BaseDelay(int retry_index) const {
  const double max_seconds =
      absl::FDivDuration(options_.max_delay, absl::Seconds(1));
  // pow() overflows to +inf for large indices; the cap check absorbs that.
  const double seconds =
      absl::FDivDuration(options_.initial_delay, absl::Seconds(1)) *
      std::pow(options_.multiplier, std::max(retry_index, 0));
  if (!(seconds < max_seconds)) return options_.max_delay;
  return absl::Seconds(seconds);
}

absl::Duration ExponentialBackoff::Delay(int retry_index) {
  double u = random_->Uniform01();
  if (!(u >= 0.0)) u = 0.0;  // also maps NaN to 0
  u = std::min(u, 1.0);
  const double jitter =
      options_.max_jitter - (options_.max_jitter - options_.min_jitter) * u;
  return BaseDelay(retry_index) * jitter;
}

}  // namespace toolmesh::common
