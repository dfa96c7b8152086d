// toolmesh: the command-line client. Flags and dispatch only; the commands
// live in their own files.
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "orchestrator/cli/offline_commands.h"

namespace {

constexpr std::string_view kUsage = R"(usage: toolmesh COMMAND [ARGS]

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

Exit status: 0 success, 1 invalid input or failed stream, 2 bad usage.
)";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" ||
      args[0] == "help") {
    (args.empty() ? std::cerr : std::cout) << kUsage;
    return args.empty() ? toolmesh::cli::kExitUsage : toolmesh::cli::kExitOk;
  }
  auto rest = [&](std::size_t from) {
    return std::vector<std::string>(args.begin() + static_cast<long>(from),
                                    args.end());
  };
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return toolmesh::cli::kExitOk;
    }
  }
  if (args.size() >= 2 && args[0] == "sse" && args[1] == "decode") {
    return toolmesh::cli::RunSseDecode(rest(2), std::cout, std::cerr);
  }
  if (args.size() >= 2 && args[0] == "conversation" && args[1] == "check") {
    return toolmesh::cli::RunConversationCheck(rest(2), std::cout, std::cerr);
  }
  std::cerr << "toolmesh: unknown command '" << args[0]
            << (args.size() >= 2 ? " " + args[1] : std::string())
            << "' (see toolmesh --help)\n";
  return toolmesh::cli::kExitUsage;
}
