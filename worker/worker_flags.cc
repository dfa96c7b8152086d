// Flag parsing of toolmesh-worker (worker_flags.h).
#include "worker/worker_flags.h"

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace toolmesh::worker {
namespace {

// --max-result-bytes bounds: room for the truncation marker; well under
// any sensible gRPC message limit.
constexpr uint64_t kMinResultBytes = 1024;
constexpr uint64_t kMaxResultBytes = uint64_t{64} << 20;

// HOST:PORT with a non-empty host and a port in [0, 65535]; "[::1]:7070"
// is accepted for IPv6.
bool IsHostPort(const std::string& value) {
  const size_t colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  const std::string port = value.substr(colon + 1);
  uint32_t number = 0;
  return !port.empty() && absl::SimpleAtoi(port, &number) && number <= 65535;
}

}  // namespace

absl::StatusOr<WorkerFlags> ParseWorkerFlags(
    const std::vector<std::string>& args, std::string_view default_id) {
  WorkerFlags flags;
  flags.id = std::string(default_id);
  bool have_orchestrator = false;
  bool have_tools = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      flags.help = true;
      return flags;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "' (see --help)"));
    }
    std::string name = arg;
    std::string value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    if (name != "--orchestrator" && name != "--tools" &&
        name != "--concurrency" && name != "--id" && name != "--drain-grace" &&
        name != "--token-file" && name != "--tls-ca" && name != "--tls-cert" &&
        name != "--tls-key" && name != "--max-message-bytes" &&
        name != "--max-result-bytes") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag ", name, " (see --help)"));
    }
    if (eq == std::string::npos) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": missing value"));
      }
      value = args[++i];
    }
    if (name == "--orchestrator") {
      if (!IsHostPort(value)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--orchestrator: expected HOST:PORT, got '", value, "'"));
      }
      flags.orchestrator = value;
      have_orchestrator = true;
    } else if (name == "--tools") {
      if (value.empty()) {
        return absl::InvalidArgumentError("--tools: expected a file path");
      }
      flags.tools_path = value;
      have_tools = true;
    } else if (name == "--concurrency") {
      int n = 0;
      if (!absl::SimpleAtoi(value, &n) || n < 1 || n > 1024) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--concurrency: expected an integer from 1 to 1024, got '", value,
            "'"));
      }
      flags.concurrency = n;
    } else if (name == "--id") {
      if (value.empty()) {
        return absl::InvalidArgumentError("--id: must not be empty");
      }
      flags.id = value;
    } else if (name == "--token-file" || name == "--tls-ca" ||
               name == "--tls-cert" || name == "--tls-key") {
      if (value.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": expected a file path"));
      }
      std::string& target = name == "--token-file" ? flags.token_file
                            : name == "--tls-ca"   ? flags.tls.ca_path
                            : name == "--tls-cert" ? flags.tls.cert_path
                                                   : flags.tls.key_path;
      target = value;
    } else if (name == "--max-result-bytes") {
      uint64_t bytes = 0;
      if (!absl::SimpleAtoi(value, &bytes) || bytes < kMinResultBytes ||
          bytes > kMaxResultBytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--max-result-bytes: expected an integer from ", kMinResultBytes,
            " to ", kMaxResultBytes, ", got '", value, "'"));
      }
      flags.max_result_bytes = static_cast<size_t>(bytes);
    } else if (name == "--max-message-bytes") {
      absl::StatusOr<int> bytes =
          orchestrator::ParseMaxMessageBytes(name, value);
      if (!bytes.ok()) return bytes.status();
      flags.max_message_bytes = *bytes;
    } else {
      absl::Duration grace;
      if (!absl::ParseDuration(value, &grace) || grace < absl::ZeroDuration() ||
          grace == absl::InfiniteDuration()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--drain-grace: expected a duration like 30s or 500ms, got '",
            value, "'"));
      }
      flags.drain_grace = grace;
    }
  }
  if (!have_orchestrator) {
    return absl::InvalidArgumentError(
        "--orchestrator HOST:PORT is required (see --help)");
  }
  if (!have_tools) {
    return absl::InvalidArgumentError(
        "--tools FILE is required (see --help)");
  }
  if (flags.tls.cert_path.empty() != flags.tls.key_path.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together (the worker's client "
        "certificate for mutual TLS)");
  }
  return flags;
}

absl::StatusOr<std::string> ResolveWorkerToken(
    const WorkerFlags& flags,
    absl::FunctionRef<const char*(const char*)> getenv) {
  if (!flags.token_file.empty()) {
    return orchestrator::ReadTokenFile(flags.token_file);
  }
  const char* value = getenv("TOOLMESH_WORKER_TOKEN");
  if (value == nullptr || value[0] == '\0') return std::string();
  if (absl::Status valid = orchestrator::ValidateToken(value); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TOOLMESH_WORKER_TOKEN: ", valid.message()));
  }
  return std::string(value);
}

std::string WorkerUsage() {
  return "usage: toolmesh-worker --orchestrator HOST:PORT --tools FILE "
         "[--concurrency N] [--id NAME] [--drain-grace DURATION]\n"
         "       [--token-file FILE] [--tls-ca FILE] [--tls-cert FILE "
         "--tls-key FILE]\n"
         "       [--max-message-bytes N] [--max-result-bytes N]\n"
         "\n"
         "Connects to a toolmesh orchestrator, serves the tools of FILE\n"
         "(tools.json) and runs the calls it is assigned.\n"
         "\n"
         "  --orchestrator HOST:PORT  the orchestrator's gRPC address "
         "(required)\n"
         "  --tools FILE              tools.json: the tools and their "
         "executors (required)\n"
         "  --concurrency N           calls run at once (default 4)\n"
         "  --id NAME                 worker id (default HOSTNAME-PID)\n"
         "  --drain-grace DURATION    on SIGTERM, how long running calls may "
         "finish\n"
         "                            before they are handed back (default "
         "30s)\n"
         "  --token-file FILE         file holding the worker token (wins "
         "over\n"
         "                            TOOLMESH_WORKER_TOKEN)\n"
         "  --tls-ca FILE             connect over TLS and verify the "
         "orchestrator\n"
         "                            against this CA bundle (PEM)\n"
         "  --tls-cert FILE           client certificate for mutual TLS "
         "(PEM)\n"
         "  --tls-key FILE            its private key (PEM)\n"
         "  --max-message-bytes N     largest gRPC message sent or received "
         "(default\n"
         "                            4194304)\n"
         "  --max-result-bytes N      most bytes of a tool result; longer "
         "ones are\n"
         "                            truncated with a marker (default "
         "1048576)\n"
         "  --help                    this text\n"
         "\n"
         "Environment: TOOLMESH_WORKER_TOKEN, sent as 'authorization: Bearer "
         "TOKEN'.\n"
         "Without --tls-* files the connection is plaintext.\n"
         "Signals: SIGTERM/SIGINT drain and exit 0; a second one exits at "
         "once.\n";
}

}  // namespace toolmesh::worker
