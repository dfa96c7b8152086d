// Deterministic random source.
#include "common/random.h"

namespace toolmesh::common {

SeededRandomSource::SeededRandomSource(uint64_t seed) : engine_(seed) {}

double SeededRandomSource::Uniform01() {
  uint64_t bits;
  {
    absl::MutexLock lock(&mu_);
    bits = engine_();
  }
  // 53 random bits fill a double's mantissa exactly: the result is a multiple
  // of 2^-53 in [0, 1), never 1.
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace toolmesh::common
