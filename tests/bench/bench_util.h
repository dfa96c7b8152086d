// Helpers shared by the system benchmarks in tests/bench/: latency samples
// and their percentiles, `key=value` output, /proc readings (VmRSS, load
// average), and the gRPC ping-pong floor (a WorkerService.Connect bidi
// stream served in-process, 200-byte messages, one in flight).
//
// Thread-safety: Samples is not synchronised (fill it from one thread or
// merge per-thread copies); the free functions may be called from any
// thread. RunGrpcFloor starts and stops its own server and threads.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace toolmesh::bench {

// A bag of durations with order statistics.
class Samples {
 public:
  void Add(absl::Duration d) { values_.push_back(d); }
  void Append(const Samples& other);
  std::size_t size() const { return values_.size(); }
  bool empty() const { return values_.empty(); }
  // The nearest-rank percentile `p` in [0, 100]; ZeroDuration when empty.
  absl::Duration Percentile(double p) const;
  absl::Duration Mean() const;

 private:
  // Sorted lazily by Percentile.
  mutable std::vector<absl::Duration> values_;
  mutable bool sorted_ = false;
};

// Prints `key=value` on stdout (flushed at once, so a run that is cut off by
// a time limit keeps what it printed).
void Print(std::string_view key, std::string_view value);
void Print(std::string_view key, double value, int decimals);
void Print(std::string_view key, std::int64_t value);
// `target_<name>=pass|fail`.
void PrintTarget(std::string_view name, bool pass);

// While alive, appends `suffix` to every key Print/PrintTarget write (e.g.
// "_memory" for a second run of the same phases with durability off), so
// both runs' figures stand side by side in one output. Scopes nest: the
// innermost suffix applies. Use from the printing thread only.
class ScopedKeySuffix {
 public:
  explicit ScopedKeySuffix(std::string suffix);
  ~ScopedKeySuffix();
  ScopedKeySuffix(const ScopedKeySuffix&) = delete;
  ScopedKeySuffix& operator=(const ScopedKeySuffix&) = delete;

 private:
  std::string previous_;
};

double Micros(absl::Duration d);
double Millis(absl::Duration d);

// VmRSS / VmHWM of `pid` in KiB, from /proc/PID/status.
// Errors: kNotFound (no such process), kInternal (no such line).
absl::StatusOr<std::int64_t> ProcStatusKib(pid_t pid, std::string_view field);

// The first three fields of /proc/loadavg ("3.50 2.76 3.14"), or "unknown".
std::string LoadAverage();

// Figures of one ping-pong run.
struct FloorResult {
  Samples round_trips;  // one per request/response pair
  absl::Duration elapsed;
};

// Runs the gRPC floor: an in-process WorkerService server on 127.0.0.1:0
// whose Connect reactor answers every WorkerMessage with one
// OrchestratorMessage of the same payload size (`payload_bytes` of tool
// input / result text), and one client that keeps one message in flight.
// Warms up with `warmup` round trips, then measures for `duration` or
// `max_round_trips`, whichever ends first.
// Errors: kUnavailable when the server cannot start or the stream fails.
absl::StatusOr<FloorResult> RunGrpcFloor(std::size_t payload_bytes,
                                         int warmup, absl::Duration duration,
                                         int max_round_trips);

}  // namespace toolmesh::bench
