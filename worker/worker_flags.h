// Command-line flags of toolmesh-worker (ARCHITECTURE.md, "Interfaces"):
//   --orchestrator HOST:PORT   required
//   --tools FILE               required (tools.json)
//   --concurrency N            default 4
//   --id NAME                  default HOSTNAME-PID
//   --drain-grace DURATION     default 30s (e.g. 500ms, 10s, 2m)
//   --token-file FILE          the worker token (wins over
//                              TOOLMESH_WORKER_TOKEN)
//   --tls-ca FILE              connect with TLS, verify the orchestrator
//   --tls-cert FILE --tls-key FILE   client certificate for mutual TLS
//   --max-message-bytes N      largest gRPC message sent or received
//                              (default 4 MiB)
//   --max-result-bytes N       most bytes of a tool result (default 1 MiB);
//                              longer results are truncated with a marker
//   --help
// Both `--flag value` and `--flag=value` are accepted. Parsing is separate
// from main() so that it can be tested.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "orchestrator/grpc/transport_security.h"

namespace toolmesh::worker {

struct WorkerFlags {
  std::string orchestrator;  // HOST:PORT
  std::string tools_path;
  int concurrency = 4;
  std::string id;
  absl::Duration drain_grace = absl::Seconds(30);
  std::string token_file;  // empty: TOOLMESH_WORKER_TOKEN
  // TLS files; none given: plaintext.
  orchestrator::ClientTlsOptions tls;
  int max_message_bytes = orchestrator::kDefaultMaxMessageBytes;
  // Longer tool results are truncated (WorkerClientOptions).
  size_t max_result_bytes = size_t{1} << 20;
  bool help = false;  // --help given; the other fields are then unchecked
};

// Parses `args` (without the program name). `default_id` is used when --id
// is absent. Returns kInvalidArgument with one line naming the flag at
// fault: an unknown flag, a missing value, a required flag missing, an
// --orchestrator that is not HOST:PORT, a --concurrency that is not an
// integer in [1, 1024], a --drain-grace that is not a non-negative
// duration, an empty --id, an empty file name, a --max-message-bytes
// outside orchestrator::ParseMaxMessageBytes()'s range, --tls-cert without
// --tls-key or the reverse, or a positional argument. Files are not read
// here. A --max-result-bytes that is not an integer from 1024 to 67108864
// (64 MiB) is an error too.
absl::StatusOr<WorkerFlags> ParseWorkerFlags(
    const std::vector<std::string>& args, std::string_view default_id);

// The token to send: the contents of --token-file when given
// (orchestrator::ReadTokenFile), else TOOLMESH_WORKER_TOKEN from `getenv`
// (nullptr or "": no token). kInvalidArgument with one line for an
// unreadable, empty or malformed file or variable.
absl::StatusOr<std::string> ResolveWorkerToken(
    const WorkerFlags& flags,
    absl::FunctionRef<const char*(const char*)> getenv);

// The --help text (several lines, ending in a newline).
std::string WorkerUsage();

}  // namespace toolmesh::worker
