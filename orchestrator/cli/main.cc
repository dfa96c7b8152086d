// toolmesh: the command-line client. Flags and dispatch only; the commands
// live in their own files (offline_commands.h, remote_commands.h).
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "orchestrator/cli/offline_commands.h"
#include "orchestrator/cli/remote_commands.h"

namespace {

constexpr std::string_view kUsage =
    R"(usage: toolmesh [GLOBAL FLAGS] COMMAND [ARGS]

Global flags (before or after the command):
  --orchestrator HOST:PORT   the orchestrator's gRPC address
                             (default $TOOLMESH_ORCHESTRATOR or 127.0.0.1:7070)
  --token T                  client token, sent as "authorization: Bearer T"
                             (default $TOOLMESH_CLIENT_TOKEN)
  --token-file F             read the client token from file F
  --tls-ca F                 connect over TLS, verify the orchestrator
                             against CA bundle F (default $TOOLMESH_TLS_CA;
                             none: plaintext)
  --tls-cert F --tls-key F   client certificate for mutual TLS
  --max-message-bytes N      largest gRPC message sent or received
                             (default 4194304)

Tasks (talk to the orchestrator):
  submit (--prompt TEXT | --messages FILE) [FLAGS]
      Submit a task and print its id.
      --messages FILE      an Anthropic messages array (- for stdin)
      --tool NAME          a client tool (repeatable; none: every tool the
                           connected workers serve)
      --server-tool JSON   a server tool definition object (repeatable)
      --model M            default claude-sonnet-4-5
      --max-tokens N       default 4096
      --max-turns N        default: the orchestrator's
      --system TEXT        system prompt
      --timeout DURATION   the task's deadline from acceptance, e.g. 10m
      --idempotency-key K  resubmitting the same spec returns the same task
      --label k=v          (repeatable)
      --tool-choice JSON   the request's tool_choice object
      --thinking JSON      the request's thinking object
      --watch              render progress until the task ends
      --json               print one JSON object per event and line
  watch ID [--after SEQ] [--json]
      Follow a task's events until it ends (like submit --watch / --json).
  get ID [--json]
      Show a task: state, turns, stop reason, error, usage, final text.
  cancel ID [--reason TEXT]
      Cancel a task and print its new state.
  list [--state S]... [--label k=v]... [--limit N] [--json]
      List tasks, newest first (default limit 50).
  workers [--json]
      List connected workers: tools, slots, running calls, draining.

Offline helpers (no orchestrator needed):
  sse decode [--events] [--partial] [--compact] FILE
      Decode a recorded Messages API SSE stream (FILE or - for stdin) and
      print the final Message JSON, exactly the API's non-streaming shape.
      --events   one JSON line per stream event and tool-ledger transition
      --partial  on a failed stream, still print the blocks that completed
      --compact  one-line JSON
  conversation check [--repair] [--compact] FILE
      Validate a Messages request body: one line per violation with the
      API's own error text; exit 1 if invalid.
      --repair   print the repaired body (actions on stderr)

Exit status: 0 success (a watched task completed), 1 failed (the task
failed, an RPC failed, invalid input or a failed stream), 2 bad usage,
3 the watched task was cancelled.
)";

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> argv_rest(argv + 1, argv + argc);
  if (argv_rest.empty() || argv_rest[0] == "help") {
    (argv_rest.empty() ? std::cerr : std::cout) << kUsage;
    return argv_rest.empty() ? toolmesh::cli::kExitUsage
                             : toolmesh::cli::kExitOk;
  }
  for (const std::string& a : argv_rest) {
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return toolmesh::cli::kExitOk;
    }
  }
  // Global flags may precede the command: they are moved to just after it,
  // where each remote command reads them among its own arguments.
  std::size_t global_args = 0;
  auto hoisted = toolmesh::cli::HoistGlobalFlags(argv_rest, &global_args);
  if (!hoisted.ok()) {
    std::cerr << "toolmesh: " << hoisted.status().message()
              << " (see toolmesh --help)\n";
    return toolmesh::cli::kExitUsage;
  }
  const std::vector<std::string>& args = *hoisted;
  auto rest = [&](std::size_t from) {
    return std::vector<std::string>(args.begin() + static_cast<long>(from),
                                    args.end());
  };
  if (toolmesh::cli::IsRemoteVerb(args[0])) {
    return toolmesh::cli::RunRemoteCommand(
        args[0], rest(1), std::cout, std::cerr,
        toolmesh::cli::RemoteContext::FromEnvironment());
  }
  // The offline helpers need no orchestrator: global flags that preceded
  // them are dropped.
  std::vector<std::string> offline = {args[0]};
  offline.insert(offline.end(),
                 args.begin() + 1 + static_cast<long>(global_args), args.end());
  if (offline.size() >= 2 && offline[0] == "sse" && offline[1] == "decode") {
    return toolmesh::cli::RunSseDecode(
        std::vector<std::string>(offline.begin() + 2, offline.end()), std::cout,
        std::cerr);
  }
  if (offline.size() >= 2 && offline[0] == "conversation" &&
      offline[1] == "check") {
    return toolmesh::cli::RunConversationCheck(
        std::vector<std::string>(offline.begin() + 2, offline.end()), std::cout,
        std::cerr);
  }
  std::cerr << "toolmesh: unknown command '" << offline[0]
            << (offline.size() >= 2 ? " " + offline[1] : std::string())
            << "' (see toolmesh --help)\n";
  return toolmesh::cli::kExitUsage;
}
