// ToolLedger: the state machine that tracks every tool_use_id of one task,
// client tools and server tools alike (ARCHITECTURE.md "The tool ledger").
//
//   announce -> PENDING -> (input complete: still PENDING, dispatchable)
//   PENDING  -> RUNNING   (Start: a worker took it)
//   RUNNING  -> PENDING   (Requeue: delivery lost, attempt+1)
//   PENDING or RUNNING -> DONE  (result; accepted before Start too)
//   PENDING or RUNNING -> ERROR (failure, timeout, attempts spent, abort,
//                                cancel, close; an error in any state)
//
// Guarantees:
//  - Every transition, including the initial announce (from == to ==
//    kPending), is reported synchronously to the sink given at construction.
//  - Every announced tool gets exactly one terminal transition (DONE or
//    ERROR), ever: terminal entries never change again, and CloseTask()
//    closes whatever is still open with an explicit reason.
//  - Events that do not apply (late, stale, duplicate, unknown id, wrong
//    kind or state) never crash and never resurrect a terminal entry: they
//    are counted in counters() and reported through LedgerOutcome.
//  - Errors are accepted in PENDING as well as RUNNING (seed 002), and a
//    server result is matched to its call from any earlier step (deferred
//    server calls and pause_turn continuations, seed 000).
//
// The ledger owns no timers, sockets or threads: the dispatcher reports
// timeouts and lost workers through Fail() and Requeue().
//
// Thread-safety: thread-compatible. One ledger belongs to one task and is
// used only by the engine thread. The sink is called on the caller's thread
// and must not call back into the ledger.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "common/ids.h"
#include "common/json.h"

namespace toolmesh::common {

// Who runs a tool. kServer covers server_tool_use, mcp_tool_use and unknown
// future `*_tool_use` blocks: the API runs them and a `*_tool_result` block
// reports the outcome.
enum class ToolKind { kClient, kServer };

// "client" / "server".
std::string_view ToolKindName(ToolKind kind);

enum class ToolState { kPending, kRunning, kDone, kError };

// "pending", "running", "done", "error".
std::string_view ToolStateName(ToolState state);

// True for kDone and kError.
bool IsTerminal(ToolState state);

// Why a tool ended in kError.
enum class ErrorReason {
  kToolFailed,           // the tool ran and reported an error
  kInvalidInput,         // the model's input was unusable (bad JSON, schema)
  kTimeout,              // the dispatcher's start-to-close timer fired
  kCancelled,            // the task was cancelled
  kWorkerLost,           // the worker vanished and attempts are spent
  kNoWorker,             // no worker took it before schedule-to-start expiry
  kStreamAborted,        // the stream that requested it failed
  kServerResultMissing,  // a server tool's result never arrived
  kQueueFull,            // refused: the tool's queue was at its limit
};

// "tool_failed", "invalid_input", "timeout", "cancelled", "worker_lost",
// "no_worker", "stream_aborted", "server_result_missing", "queue_full".
std::string_view ErrorReasonName(ErrorReason reason);

// The inverse of ErrorReasonName (exact, case-sensitive). kInvalidArgument
// for any other string.
absl::StatusOr<ErrorReason> ParseErrorReason(std::string_view name);

// One state change of one tool, as reported to the sink.
struct ToolTransition {
  ToolUseId id;
  std::string name;
  ToolKind kind = ToolKind::kClient;
  ToolState from = ToolState::kPending;
  ToolState to = ToolState::kPending;
  std::optional<ErrorReason> reason;  // set iff to == kError
  std::string message;                // human-readable detail, may be empty
  int attempt = 1;                    // the entry's attempt after the change
  int step = 0;                       // the step that announced the tool

  // True for the initial report of a new entry (from == to == kPending).
  bool IsAnnounce() const {
    return from == ToolState::kPending && to == ToolState::kPending;
  }
};

// Called synchronously for every transition. Must not call into the ledger.
using TransitionSink = absl::AnyInvocable<void(const ToolTransition&)>;

// Everything the ledger knows about one tool_use_id.
struct ToolEntry {
  ToolUseId id;
  std::string name;
  ToolKind kind = ToolKind::kClient;
  int step = 0;  // the step (assistant message) that announced it
  ToolState state = ToolState::kPending;
  int attempt = 1;  // current delivery attempt (client tools), from 1
  // Deliveries lost and counted against max_attempts (see Requeue()).
  int lost_deliveries = 0;

  // The complete input, once SetInput() accepted it.
  std::optional<Json> input;
  // MarkInputInvalid() was called; input_error holds its message.
  bool input_invalid = false;
  std::string input_error;

  // Client: the worker's result content. Server: the whole `*_tool_result`
  // block. Absent until a result arrived.
  std::optional<Json> result;
  // The result reported an error (worker is_error, or a server error
  // object).
  bool result_is_error = false;
  // Server tools: the step whose message carried the result.
  std::optional<int> result_step;

  std::optional<ErrorReason> reason;  // set iff state == kError
  std::string message;                // detail of the terminal transition
};

// What happened to one event.
enum class LedgerOutcome {
  kApplied,            // the event changed (or completed) the entry
  kDuplicateAnnounce,  // id already announced in the same step: ignored
  kReusedId,           // id already announced in another step: ignored
  kUnknownId,          // no entry with that id (for results: an orphan)
  kWrongKind,          // client event for a server tool, or the reverse
  kWrongState,         // the event does not apply in the current state
  kStaleAttempt,       // the event names a superseded attempt
  kAlreadyTerminal,    // the entry is DONE/ERROR; nothing changes
  kDuplicateResult,    // a result for a terminal entry: drop it
  kLedgerClosed,       // Announce() after CloseTask()
  kInvalidArgument,    // malformed arguments (empty id, attempt < 1, ...)
};

// "applied", "duplicate_announce", ... (snake_case of the enumerator).
std::string_view LedgerOutcomeName(LedgerOutcome outcome);

// Counts of events that were ignored. All start at 0 and only grow.
struct LedgerCounters {
  // Non-result events (Start, Requeue, Fail, SetInput, ...) for terminal
  // entries.
  int64_t ignored_terminal_events = 0;
  // Client results for a superseded attempt.
  int64_t stale_results = 0;
  // Results (client or server) for entries that were already terminal.
  int64_t duplicate_results = 0;
  // Results whose id matches no entry of the right kind and step.
  int64_t orphan_results = 0;
  // Announce of an id already announced in the same step.
  int64_t duplicate_announces = 0;
  // Announce of an id already announced in a different step (a protocol
  // anomaly: ids are unique per task).
  int64_t reused_ids = 0;
  // Non-result events naming an id that was never announced.
  int64_t unknown_ids = 0;
  // Events in the wrong state or for the wrong kind, stale starts, events
  // after close, and malformed arguments.
  int64_t inapplicable_events = 0;
};

struct ToolLedgerOptions {
  // Deliveries of one client tool before Requeue() gives up with
  // kWorkerLost. Values below 1 are treated as 1.
  int max_attempts = 3;
};

// Ids closed by a bulk operation (AbortStep, CancelAll, CloseTask), in
// announce order, split by kind: client ids are the ones to cancel on
// workers.
struct ClosedTools {
  std::vector<ToolUseId> client;
  std::vector<ToolUseId> server;
};

// What ObserveAssistantMessage() did with one committed assistant message.
struct MessageObservation {
  // Tool blocks newly announced by this message, in block order.
  std::vector<ToolUseId> announced;
  // `*_tool_result` blocks that resolved a server entry (of this step or an
  // earlier one), in block order.
  std::vector<ToolUseId> server_results_matched;
  // Content indexes of result blocks for already-resolved ids: the caller
  // drops them from the step (fixture 14 turn 2).
  std::vector<size_t> duplicate_result_indexes;
  // Content indexes of result blocks that match no server call announced
  // before them; the conversation layer decides what to do.
  std::vector<size_t> orphan_result_indexes;
  // Every client `tool_use` id of the message, in block order: the
  // `tool_result` blocks of the next user message follow this order.
  std::vector<ToolUseId> client_tool_use_ids;
  // Server calls of this message that got no result in it (deferred, or
  // left dangling by pause_turn). They stay PENDING.
  std::vector<ToolUseId> deferred_server_ids;
};

class ToolLedger {
 public:
  // `sink` receives every transition; it may be empty (no reports).
  explicit ToolLedger(TransitionSink sink, ToolLedgerOptions options = {});

  ToolLedger(const ToolLedger&) = delete;
  ToolLedger& operator=(const ToolLedger&) = delete;

  // --- Events -------------------------------------------------------------
  // Each returns kApplied when it took effect; any other outcome means the
  // event was ignored (and counted) and nothing changed.

  // A tool block started (content_block_start) in assistant message `step`
  // (>= 0): a new PENDING entry, reported as an announce. The same id again
  // in the same step: kDuplicateAnnounce; in another step: kReusedId. After
  // CloseTask(): kLedgerClosed. Empty id or negative step: kInvalidArgument.
  LedgerOutcome Announce(const ToolUseId& id, std::string_view name,
                         ToolKind kind, int step);

  // The tool's input is complete (content_block_stop). `input` must be a
  // JSON object (the API's rule for tool_use.input), else kInvalidArgument.
  // A second SetInput, or one after MarkInputInvalid: kWrongState. No
  // transition is reported: the entry stays PENDING, now dispatchable.
  LedgerOutcome SetInput(const ToolUseId& id, Json input);

  // The tool's input could not be used (unparseable JSON). A client tool
  // goes to ERROR invalid_input at once and is never dispatched. A server
  // tool stays PENDING: the API reports its own error in the result block.
  LedgerOutcome MarkInputInvalid(const ToolUseId& id, std::string_view message);

  // A worker took client tool `id` for `attempt`: PENDING -> RUNNING.
  // Requires complete input (a tool whose block never stopped is never
  // run: kWrongState). `attempt` other than the current one: kStaleAttempt.
  LedgerOutcome Start(const ToolUseId& id, int attempt);

  // The current delivery was lost (lease expired, worker disconnected):
  // RUNNING -> PENDING with attempt+1, or ERROR worker_lost once
  // max_attempts deliveries were lost. `message` details the loss. A
  // delivery handed back on purpose (a draining worker's ReturnCall) passes
  // `counts_as_attempt` = false: the attempt number still grows, but it is
  // not counted against max_attempts.
  LedgerOutcome Requeue(const ToolUseId& id, std::string_view message = {},
                        bool counts_as_attempt = true);

  // A worker's result for client tool `id`. `attempt` must be the current
  // attempt (else kStaleAttempt, counted as stale_results); a result for a
  // terminal entry is kDuplicateResult (idempotent). Accepted in PENDING and
  // RUNNING alike. is_error -> ERROR tool_failed, else DONE; `content` is
  // kept either way and becomes the tool_result's content.
  LedgerOutcome CompleteClient(const ToolUseId& id, int attempt, Json content,
                               bool is_error);

  // A finished result for an EARLIER attempt than the current one: the
  // worker of a delivery that was given up on (its stream broke, its lease
  // expired, the orchestrator restarted) finished the call anyway and
  // reported it once it could. The call ran to completion, so the result is
  // as good as the current delivery's: accepted like CompleteClient() while
  // the entry is not terminal (the caller then cancels the current
  // delivery), kDuplicateResult once it ended. `attempt` must be in
  // [1, current attempt): the current attempt goes through CompleteClient(),
  // a later one is kStaleAttempt.
  LedgerOutcome CompleteClientEarlierAttempt(const ToolUseId& id, int attempt,
                                             Json content, bool is_error);

  // ERROR with `reason` from any non-terminal state, for either kind.
  // kAlreadyTerminal if the entry already ended.
  LedgerOutcome Fail(const ToolUseId& id, ErrorReason reason,
                     std::string_view message);

  // A `*_tool_result` block (with `tool_use_id`) seen in assistant message
  // `step`. Matches the server entry announced in `step` or any earlier
  // step: DONE, or ERROR tool_failed when the block reports an error
  // (`content.type` ending in `_tool_result_error`, or `is_error: true`).
  // The block is kept in the entry.
  //   kDuplicateResult: the id is already resolved; drop the block.
  //   kUnknownId / kWrongKind: an orphan (no such server call, announced
  //     later, or a client id); counted; the caller decides.
  //   kInvalidArgument: not an object, type not `*_tool_result`, or no
  //     string `tool_use_id`.
  LedgerOutcome ObserveServerResult(const Json& result_block, int step);

  // Applies Announce / SetInput / ObserveServerResult to every block of a
  // committed assistant message (`{"role":"assistant","content":[...]}`) in
  // order. Tool blocks are `tool_use` (client) and any other `*_tool_use`
  // type with an `id` (server); their input is recorded when it is an
  // object (otherwise the caller uses MarkInputInvalid). Call once per
  // committed message. kInvalidArgument (and nothing applied) when the
  // message is not an object with a `content` array, a block is not an
  // object, or a tool / result block lacks its string id.
  absl::StatusOr<MessageObservation> ObserveAssistantMessage(
      const Json& message, int step);

  // A step's stream failed: every non-terminal entry announced in `step`,
  // client or server, goes to ERROR stream_aborted with `message`.
  ClosedTools AbortStep(int step, std::string_view message);

  // The task was cancelled: every non-terminal entry -> ERROR cancelled.
  ClosedTools CancelAll(std::string_view message);

  // The task is ending: every open server entry -> ERROR
  // server_result_missing, every open client entry -> ERROR cancelled.
  // Afterwards Announce() is refused, so the invariant holds for good.
  ClosedTools CloseTask();

  // --- Recovery -----------------------------------------------------------

  // Puts back an entry saved from an earlier ledger (after a restart), as
  // is and without reporting a transition. Entries are restored in their
  // original announce order. kInvalidArgument for an inconsistent entry
  // (empty id, negative step, attempt < 1, a reason without the error state
  // or the reverse, a non-object input), kAlreadyExists for a known id,
  // kFailedPrecondition after CloseTask().
  absl::Status Restore(ToolEntry entry);

  // Like Restore(), but an entry with the same id is overwritten as a whole
  // (recovery replays saved transitions onto restored entries).
  absl::Status Replace(ToolEntry entry);

  // --- Queries ------------------------------------------------------------

  // The entry for `id`, or nullptr. The pointer stays valid for the
  // ledger's lifetime (entries are never removed); its fields change with
  // later events.
  const ToolEntry* Get(const ToolUseId& id) const;

  // Client entries announced in `step` that are not yet terminal (PENDING
  // or RUNNING), in announce order.
  std::vector<ToolUseId> PendingClientIds(int step) const;

  // True when every client entry of `step` is terminal (vacuously true
  // when it has none): the next user message can be built.
  bool AllClientTerminal(int step) const;

  // Server entries of any step that are still waiting for their result.
  std::vector<ToolUseId> OpenServerIds() const;

  // Every entry, in announce order.
  const std::deque<ToolEntry>& entries() const { return entries_; }

  const LedgerCounters& counters() const { return counters_; }
  const ToolLedgerOptions& options() const { return options_; }
  bool closed() const { return closed_; }

  // The `tool_result` block answering terminal client entry `id`, for the
  // next user message: {"type":"tool_result","tool_use_id":...,
  // "content":...} plus "is_error":true for errors, whose content is a
  // readable explanation (or the tool's own error output). kNotFound for
  // an unknown id; kFailedPrecondition for a server entry or one that is
  // not terminal yet.
  absl::StatusOr<Json> ToolResultFor(const ToolUseId& id) const;

 private:
  ToolEntry* Find(const ToolUseId& id);

  // Moves `entry` to `to` and reports it. `entry` must not be terminal
  // (aborts otherwise: that would break the ledger's own invariant).
  void Transition(ToolEntry& entry, ToolState to,
                  std::optional<ErrorReason> reason, std::string_view message);
  void Report(const ToolEntry& entry, ToolState from, std::string_view message);
  // A client result for the non-terminal `entry`: keeps `content` and moves
  // it to DONE, or ERROR tool_failed when `is_error`.
  void ApplyClientResult(ToolEntry& entry, Json content, bool is_error,
                         std::string_view message);

  // Closes every non-terminal entry accepted by `select` with `reason_for`.
  template <typename Select, typename ReasonFor>
  ClosedTools CloseWhere(Select select, ReasonFor reason_for,
                         std::string_view message);

  // Constant after construction.
  ToolLedgerOptions options_;

  TransitionSink sink_;
  // A deque keeps element addresses stable as entries are appended, so
  // Get() pointers stay valid.
  std::deque<ToolEntry> entries_;
  absl::flat_hash_map<ToolUseId, size_t> index_;
  LedgerCounters counters_;
  bool closed_ = false;
};

}  // namespace toolmesh::common
