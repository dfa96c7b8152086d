#include "tests/sim/sim_loop.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace toolmesh::sim {

SimLoop::SimLoop(std::uint64_t seed, common::FakeClock& clock)
    : clock_(clock), start_(clock.Now()), rng_(seed) {}

void SimLoop::After(absl::Duration delay, absl::AnyInvocable<void()> fn) {
  const absl::Time at = clock_.Now() + std::max(delay, absl::ZeroDuration());
  actions_.emplace(std::make_pair(at, next_seq_++), std::move(fn));
}

std::optional<absl::Time> SimLoop::NextActionTime() const {
  if (actions_.empty()) return std::nullopt;
  return actions_.begin()->first.first;
}

std::optional<absl::AnyInvocable<void()>> SimLoop::TakeDue(absl::Time now) {
  if (actions_.empty() || actions_.begin()->first.first > now) {
    return std::nullopt;
  }
  absl::AnyInvocable<void()> fn = std::move(actions_.begin()->second);
  actions_.erase(actions_.begin());
  return fn;
}

std::uint64_t SimLoop::Next() { return rng_(); }

std::uint64_t SimLoop::Uniform(std::uint64_t bound) {
  if (bound == 0) return 0;
  // Rejection sampling: no modulo bias, identical on every platform.
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  std::uint64_t x = rng_();
  while (x >= limit) x = rng_();
  return x % bound;
}

double SimLoop::Uniform01() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

absl::Duration SimLoop::Between(absl::Duration lo, absl::Duration hi) {
  if (hi <= lo) return lo;
  const auto span = static_cast<std::uint64_t>(
      absl::ToInt64Microseconds(hi - lo));
  return lo + absl::Microseconds(static_cast<std::int64_t>(Uniform(span + 1)));
}

void SimLoop::Trace(std::string_view line) {
  const std::int64_t us =
      absl::ToInt64Microseconds(clock_.Now() - start_);
  std::string full = absl::StrFormat("t=%d.%06d %s", us / 1000000,
                                     us % 1000000,
                                     absl::string_view(line.data(), line.size()));
  for (unsigned char c : full) {
    digest_ ^= c;
    digest_ *= 1099511628211ull;  // FNV-1a prime
  }
  digest_ ^= '\n';
  digest_ *= 1099511628211ull;
  if (echo_) std::printf("%s\n", full.c_str());
  recent_.push_back(std::move(full));
  while (recent_.size() > kRecentLines) recent_.pop_front();
}

void SimLoop::Fault(std::string_view kind, std::string_view detail) {
  ++faults_[std::string(kind)];
  Trace(absl::StrCat("fault ", absl::string_view(kind.data(), kind.size()),
                     " ", absl::string_view(detail.data(), detail.size())));
}

void SimLoop::Violation(std::string what) {
  Trace(absl::StrCat("VIOLATION ", what));
  if (!violation_.has_value()) violation_ = std::move(what);
}

}  // namespace toolmesh::sim
