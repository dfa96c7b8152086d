// The seam between the worker's tool layer and whatever runs a tool.
//
// An Executor runs one kind of tool (builtin, exec or http; see
// tools_config.h) for many calls at once. Run() only starts the work and
// returns at once; the outcome arrives later through the `done` callback.
// Every Run() produces exactly one `done` call, whatever happens: success,
// tool failure, timeout, Cancel(), or destruction of the executor.
//
// Input validation against the tool's input_schema happens before Run()
// (input_validator.h); executors still treat the input as untrusted and
// report what they cannot use as an outcome, never a crash.
//
// Thread-safety: every Executor method may be called from any thread
// concurrently. `done` runs on a thread of the executor's choosing (its own
// worker thread, a clock's timer thread, or the caller's thread inside
// Run() when the outcome is known immediately), so callers must not hold a
// lock inside Run() that `done` also takes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "common/ids.h"
#include "common/json.h"

namespace toolmesh::worker {

// One invocation of a tool, as assigned by the orchestrator.
struct ToolCall {
  // The tool_use_id of the call; also the key for Executor::Cancel().
  common::ToolUseId id;
  // Delivery attempt, starting at 1 (informational for executors).
  int attempt = 1;
  // The tool's name as in tools.json.
  std::string name;
  // The tool input (already validated against the input_schema).
  common::Json input;
};

// Why a call ended.
enum class OutcomeReason {
  kOk,            // the tool ran and succeeded
  kToolFailed,    // the tool ran (or could not start) and failed
  kTimeout,       // the tool exceeded its timeout and was stopped
  kCancelled,     // Cancel() or executor shutdown stopped it
  kInvalidInput,  // the input was rejected before the tool ran
};

// "ok", "tool_failed", "timeout", "cancelled", "invalid_input".
std::string_view OutcomeReasonName(OutcomeReason reason);

// The result of one call, ready to become a tool_result block.
struct ToolOutcome {
  // A JSON string, or an array of content blocks (tool_result `content`).
  common::Json content;
  // The tool_result's `is_error`. True exactly when reason != kOk.
  bool is_error = false;
  OutcomeReason reason = OutcomeReason::kOk;
  // Time from Run() to the outcome, as measured by the executor.
  absl::Duration duration = absl::ZeroDuration();
};

// An outcome with is_error set and a text content.
ToolOutcome ErrorOutcome(OutcomeReason reason, std::string message,
                         absl::Duration duration = absl::ZeroDuration());

// The default most bytes of a tool result (the worker's --max-result-bytes
// and the exec executor's stdout cap).
inline constexpr size_t kDefaultMaxResultBytes = size_t{1} << 20;  // 1 MiB

// The marker that ends a truncated result:
//   "[... truncated: N bytes over the M-byte limit]"
// where N = original size - M.
std::string TruncationMarker(size_t original_size, size_t limit);

// Makes `text` (of `original_size` bytes before any earlier cut; at least
// text->size()) fit in `limit` bytes: when original_size > limit, cuts it
// at a UTF-8 character boundary and appends "\n" and TruncationMarker(), so
// that the result, marker included, is at most `limit` bytes (only the
// marker when `limit` is smaller than it). Returns whether it cut.
bool TruncateToLimit(std::string* text, size_t original_size, size_t limit);

// The outcome with its content held to `limit` bytes: a string content is
// truncated with TruncateToLimit; any other content (an array of content
// blocks) whose compact JSON exceeds the limit becomes a string: that JSON
// text truncated the same way. is_error, reason and duration are kept: a
// long result is still a result.
ToolOutcome LimitResultSize(ToolOutcome outcome, size_t limit);

// Receives the outcome of one call. Called exactly once.
using DoneCallback = absl::AnyInvocable<void(ToolOutcome)>;

class Executor {
 public:
  virtual ~Executor() = default;

  // Starts `call` and returns without waiting for it (it never blocks on the
  // tool). `call` is copied as needed; it need not outlive this call. `done`
  // is called exactly once with the outcome, possibly before Run() returns.
  // A second Run() with the id of a call that is still running is rejected
  // with an outcome of reason kToolFailed (the first call is unaffected).
  virtual void Run(const ToolCall& call, DoneCallback done) = 0;

  // Asks the running call `id` to stop. Returns true if a running call was
  // found and told to stop: its `done` then receives reason kCancelled
  // (unless it finished at the same moment, in which case the real outcome
  // wins). Returns false when no call with that id is running. Never blocks
  // on the tool.
  virtual bool Cancel(const common::ToolUseId& id) = 0;
};

}  // namespace toolmesh::worker
