// The `toolmesh` CLI's task verbs: commands that talk to a running
// orchestrator over gRPC (toolmesh.v1.TaskService).
//
//   toolmesh submit (--prompt TEXT | --messages FILE) [--tool NAME]...
//                   [--server-tool JSON]... [--model M] [--max-tokens N]
//                   [--max-turns N] [--system TEXT] [--timeout DURATION]
//                   [--idempotency-key K] [--label k=v]...
//                   [--tool-choice JSON] [--thinking JSON] [--watch | --json]
//   toolmesh watch ID [--after SEQ] [--json]
//   toolmesh get ID [--json]
//   toolmesh cancel ID [--reason TEXT]
//   toolmesh list [--state S]... [--label k=v]... [--limit N] [--json]
//   toolmesh workers [--json]
//
// Every verb also takes the global flags `--orchestrator HOST:PORT`,
// `--token T`, `--token-file F` (the token is the file's contents without
// the trailing line break; not together with --token), `--tls-ca F`
// (connect over TLS and verify the orchestrator against this CA bundle),
// `--tls-cert F --tls-key F` (a client certificate, for an orchestrator
// that requires mutual TLS) and `--max-message-bytes N` (largest gRPC
// message sent or received, default 4 MiB) anywhere among its arguments;
// defaults come from the RemoteContext (the environment:
// TOOLMESH_ORCHESTRATOR, TOOLMESH_CLIENT_TOKEN, TOOLMESH_TLS_CA). A token
// is sent as `authorization: Bearer T`. Without a TLS file the connection
// is plaintext. An unreadable or empty token file, or a TLS file that
// cannot be used, is a usage error (exit 2).
//
// Each command writes its output to `out` and its diagnostics to `err` (one
// line per error, starting "toolmesh: "), and returns the process exit
// status: 0 success (for submit --watch/--json and watch: the task
// completed), 1 the task failed or an RPC failed (the orchestrator is
// unreachable, the task does not exist, ...), 2 bad usage (an unknown or
// malformed flag, or INVALID_ARGUMENT from the orchestrator for what the
// flags asked), 3 the task was cancelled.
//
// Unary RPCs carry a deadline (RemoteContext::rpc_timeout) and do not wait
// for a connection (wait_for_ready false), so an unreachable orchestrator
// fails fast. Watching follows the event stream until the task's terminal
// event; a stream that breaks with UNAVAILABLE or RESOURCE_EXHAUSTED (or
// ends without the terminal event) is resumed with after_seq = the last
// seq seen, with backoff, at most RemoteContext::max_watch_resumes times in
// a row without progress.
//
// The commands block the calling thread until they are done. They hold no
// global state; concurrent calls are independent.
#pragma once

#include <cstddef>
#include <iostream>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "orchestrator/grpc/transport_security.h"

namespace toolmesh::cli {

// Exit statuses beside offline_commands.h's kExitOk (0), kExitInvalid (1)
// and kExitUsage (2).
inline constexpr int kExitFailed = 1;
inline constexpr int kExitCancelled = 3;

// The orchestrator address used when neither --orchestrator nor
// TOOLMESH_ORCHESTRATOR says otherwise.
inline constexpr std::string_view kDefaultOrchestrator = "127.0.0.1:7070";

// What the remote commands take from outside their arguments.
struct RemoteContext {
  // Defaults of --orchestrator and --token.
  std::string orchestrator = std::string(kDefaultOrchestrator);
  std::string token;
  // Default of --tls-ca; empty: plaintext unless a --tls-* flag is given.
  std::string tls_ca;
  // Default of --max-message-bytes.
  int max_message_bytes = orchestrator::kDefaultMaxMessageBytes;
  // Deadline of each unary RPC.
  absl::Duration rpc_timeout = absl::Seconds(10);
  // How often a broken watch stream is resumed in a row without receiving
  // an event in between, and the backoff between those attempts (jittered
  // down to 75 %).
  int max_watch_resumes = 6;
  absl::Duration resume_initial_delay = absl::Milliseconds(250);
  absl::Duration resume_max_delay = absl::Seconds(5);
  // Where `--messages -` reads from; must outlive the command call.
  std::istream* in = &std::cin;

  // Defaults plus TOOLMESH_ORCHESTRATOR, TOOLMESH_CLIENT_TOKEN and
  // TOOLMESH_TLS_CA from the process environment (unset or empty variables
  // keep the defaults).
  static RemoteContext FromEnvironment();

  // Like FromEnvironment, with `getenv` answering the lookups (nullptr for
  // an unset variable).
  static RemoteContext FromLookup(
      absl::FunctionRef<const char*(const char*)> getenv);
};

// True for submit, watch, get, cancel, list and workers.
bool IsRemoteVerb(std::string_view verb);

// Moves global flags (--orchestrator, --token, --token-file, --tls-ca,
// --tls-cert, --tls-key, --max-message-bytes, either as `--flag VALUE` or
// `--flag=VALUE`) that precede the verb in `argv` (the arguments after the
// program name) to just after the verb, so that each command sees them
// among its own arguments. When `moved` is not null it receives how many
// arguments were moved. Returns kInvalidArgument when a leading global flag
// lacks its value, or when no verb follows them.
absl::StatusOr<std::vector<std::string>> HoistGlobalFlags(
    const std::vector<std::string>& argv, std::size_t* moved = nullptr);

// Runs the remote verb `verb` (IsRemoteVerb must hold) with `args`, the
// arguments after the verb. Returns the exit status as described above.
int RunRemoteCommand(std::string_view verb,
                     const std::vector<std::string>& args, std::ostream& out,
                     std::ostream& err, const RemoteContext& context);

// `submit`: builds a TaskSpec from the flags and calls SubmitTask. Prints
// the task id and returns 0; with --watch renders the task's progress until
// it ends, with --json prints one JSON object per event and line (see
// event_json.h), and returns the outcome's exit status.
int RunSubmit(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err, const RemoteContext& context);

// `watch ID`: like `submit --watch` (or --json) for an existing task, from
// the event after --after SEQ (default: the first).
int RunWatch(const std::vector<std::string>& args, std::ostream& out,
             std::ostream& err, const RemoteContext& context);

// `get ID`: prints the task (state, turns, stop_reason, error, usage and
// the final message's text); with --json the task as one JSON object.
int RunGet(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err, const RemoteContext& context);

// `cancel ID`: requests cancellation and prints "ID STATE" with the task's
// new state.
int RunCancel(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err, const RemoteContext& context);

// `list`: a table of tasks, newest first (id, state, turns, stop_reason,
// created), following pages up to --limit (default 50); --json prints a
// JSON array of tasks instead.
int RunList(const std::vector<std::string>& args, std::ostream& out,
            std::ostream& err, const RemoteContext& context);

// `workers`: a table of the connected workers (id, tools, slots, running,
// draining, last heartbeat); --json prints a JSON array instead.
int RunWorkers(const std::vector<std::string>& args, std::ostream& out,
               std::ostream& err, const RemoteContext& context);

}  // namespace toolmesh::cli
