// The randomness seam: jitter and anything else random in the core comes
// from an injected RandomSource, so that tests and the deterministic
// simulation replay exactly.
//
// Thread-safety: RandomSource implementations document their own contract;
// SeededRandomSource is safe to share between threads (draws are serialised
// by a mutex, so the sequence is deterministic only for a single caller).
#pragma once

#include <cstdint>
#include <random>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace toolmesh::common {

// A source of uniformly distributed doubles.
class RandomSource {
 public:
  virtual ~RandomSource() = default;

  // Returns a value in [0, 1). Callers must still tolerate any double
  // (test doubles may return exactly 1, or worse) and clamp.
  virtual double Uniform01() = 0;
};

// A deterministic RandomSource: the same seed gives the same sequence on
// every platform and standard library (std::mt19937_64 is fully specified;
// the conversion to double is ours, not std::uniform_real_distribution's,
// whose output is implementation-defined).
class SeededRandomSource final : public RandomSource {
 public:
  explicit SeededRandomSource(uint64_t seed);

  // Returns the top 53 bits of the next engine output scaled to [0, 1).
  double Uniform01() override;

 private:
  absl::Mutex mu_;
  std::mt19937_64 engine_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolmesh::common
