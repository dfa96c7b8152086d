// Command-line flags of toolmesh-worker (ARCHITECTURE.md, "Interfaces"):
//   --orchestrator HOST:PORT   required
//   --tools FILE               required (tools.json)
//   --concurrency N            default 4
//   --id NAME                  default HOSTNAME-PID
//   --drain-grace DURATION     default 30s (e.g. 500ms, 10s, 2m)
//   --help
// Both `--flag value` and `--flag=value` are accepted. Parsing is separate
// from main() so that it can be tested.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace toolmesh::worker {

struct WorkerFlags {
  std::string orchestrator;  // HOST:PORT
  std::string tools_path;
  int concurrency = 4;
  std::string id;
  absl::Duration drain_grace = absl::Seconds(30);
  bool help = false;  // --help given; the other fields are then unchecked
};

// Parses `args` (without the program name). `default_id` is used when --id
// is absent. Returns kInvalidArgument with one line naming the flag at
// fault: an unknown flag, a missing value, a required flag missing, an
// --orchestrator that is not HOST:PORT, a --concurrency that is not an
// integer in [1, 1024], a --drain-grace that is not a non-negative
// duration, an empty --id, or a positional argument.
absl::StatusOr<WorkerFlags> ParseWorkerFlags(
    const std::vector<std::string>& args, std::string_view default_id);

// The --help text (several lines, ending in a newline).
std::string WorkerUsage();

}  // namespace toolmesh::worker
