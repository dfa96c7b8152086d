// The gRPC floor of this machine, printed as key=value lines: a
// WorkerService.Connect bidi stream to an in-process callback server on
// loopback, 200-byte messages, one in flight. Every toolmesh round trip
// (orchestrator -> worker -> orchestrator) costs at least one of these, so
// the system benchmarks state their latencies as multiples of it.
//
// Usage: grpc_floor_benchmark [--seconds S] [--max-round-trips N]
//                             [--payload-bytes B]
#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "tests/bench/bench_util.h"

using toolmesh::bench::Micros;
using toolmesh::bench::Print;

int main(int argc, char** argv) {
  double seconds = 3;
  int max_round_trips = 200000;
  int payload_bytes = 200;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : "";
    bool ok = i + 1 < argc;
    if (flag == "--seconds") {
      ok = ok && absl::SimpleAtod(value, &seconds) && seconds > 0;
    } else if (flag == "--max-round-trips") {
      ok = ok && absl::SimpleAtoi(value, &max_round_trips) &&
           max_round_trips > 0;
    } else if (flag == "--payload-bytes") {
      ok = ok && absl::SimpleAtoi(value, &payload_bytes) && payload_bytes > 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr,
                   "usage: grpc_floor_benchmark [--seconds S] "
                   "[--max-round-trips N] [--payload-bytes B]\n");
      return 2;
    }
  }
  Print("load_average", toolmesh::bench::LoadAverage());
  auto floor = toolmesh::bench::RunGrpcFloor(
      static_cast<std::size_t>(payload_bytes), 2000,
      absl::Seconds(seconds), max_round_trips);
  if (!floor.ok()) {
    std::fprintf(stderr, "grpc_floor: %s\n", floor.status().ToString().c_str());
    return 1;
  }
  const auto& rt = floor->round_trips;
  Print("grpc_floor_payload_bytes", static_cast<std::int64_t>(payload_bytes));
  Print("grpc_floor_round_trips", static_cast<std::int64_t>(rt.size()));
  Print("grpc_floor_p50_us", Micros(rt.Percentile(50)), 1);
  Print("grpc_floor_p99_us", Micros(rt.Percentile(99)), 1);
  const double per_sec = static_cast<double>(rt.size()) /
                         absl::ToDoubleSeconds(floor->elapsed);
  Print("grpc_floor_round_trips_per_sec", per_sec, 0);
  // Each round trip is two messages (one each way).
  Print("grpc_floor_msgs_per_sec", 2 * per_sec, 0);
  return 0;
}
