// The `toolmesh` CLI's offline helpers: commands that work on files alone,
// with no orchestrator running.
//
//   toolmesh sse decode [--events] [--partial] [--compact] FILE
//   toolmesh conversation check [--repair] FILE
//
// Each command takes its arguments (after the two verb words) and writes to
// the given streams, so tests run them in-process. They return the process
// exit status: 0 success, 1 the input is bad (a failed stream, an invalid
// request), 2 bad usage (unknown flag, missing or unreadable file).
//
// Thread-compatible; no global state.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace toolmesh::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitInvalid = 1;
inline constexpr int kExitUsage = 2;

// `sse decode`: decodes a recorded SSE response (FILE, or "-" for stdin).
// Prints the final Message JSON, exactly the API's non-streaming shape. With
// --events, prints one JSON object per line for every stream event and every
// tool-ledger transition instead. A failed, truncated or spliced stream
// prints one line on `err` and returns 1; --partial also prints the blocks
// that completed.
int RunSseDecode(const std::vector<std::string>& args, std::ostream& out,
                 std::ostream& err);

// `conversation check`: validates a Messages request body (FILE, or "-").
// Prints one line per violation, each with the API's own error text, and
// returns 1 if there is any. With --repair, prints the repaired body on
// `out` (the repair actions go to `err`) and returns 0 when the repaired
// body is valid, 1 when the history cannot be repaired.
int RunConversationCheck(const std::vector<std::string>& args,
                         std::ostream& out, std::ostream& err);

}  // namespace toolmesh::cli
