// A fixed-bucket histogram in the Prometheus text exposition format, for
// latencies measured on the engine thread.
//
// Thread-safety: thread-compatible (the engine thread owns each one).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace toolmesh::orchestrator {

class Histogram {
 public:
  // Upper bounds in seconds, ascending. The default spans 100 us to 60 s.
  explicit Histogram(std::vector<double> bounds = DefaultBounds())
      : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

  static std::vector<double> DefaultBounds() {
    return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
            0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10,
            30,     60};
  }

  void Observe(absl::Duration d) {
    const double seconds = absl::ToDoubleSeconds(d);
    std::size_t i = 0;
    while (i < bounds_.size() && seconds > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += seconds;
    ++count_;
  }

  std::uint64_t count() const { return count_; }

  // Appends `# HELP`, `# TYPE` and the bucket, sum and count lines.
  void AppendTo(std::string& out, std::string_view name,
                std::string_view help) const {
    const absl::string_view n(name.data(), name.size());
    absl::StrAppend(&out, "# HELP ", n, " ",
                    absl::string_view(help.data(), help.size()), "\n# TYPE ",
                    n, " histogram\n");
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      absl::StrAppend(&out, n, "_bucket{le=\"", bounds_[i], "\"} ", cumulative,
                      "\n");
    }
    cumulative += counts_.back();
    absl::StrAppend(&out, n, "_bucket{le=\"+Inf\"} ", cumulative, "\n", n,
                    "_sum ", sum_, "\n", n, "_count ", count_, "\n");
  }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

}  // namespace toolmesh::orchestrator
