// Typed helpers over the Anthropic Messages API model.
//
// Content blocks stay `Json` objects everywhere in toolmesh, so unknown block
// types and unknown fields round-trip verbatim; this file only answers typed
// questions about them: which kind of block a type names, whether a
// server-tool result reports an error, which API error a payload carries,
// and what a `stop_reason` means for the task. See PROTOCOL.md sections a-c.
//
// Thread-safety: free functions and plain value types, no shared state.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/json.h"

namespace toolmesh::common {

// ---------------------------------------------------------------------------
// Content block classification.

enum class BlockKind {
  kText,              // `text`
  kThinking,          // `thinking`, `redacted_thinking`
  kClientToolCall,    // `tool_use`: run by us
  kServerToolCall,    // `server_tool_use`, `mcp_tool_use`: run by the API
  kServerToolResult,  // `*_tool_result` other than `tool_result`
  kClientToolResult,  // `tool_result` (user messages only)
  kOther,             // anything else, including unknown future types
};

// The kind of block a `type` string names. Never fails: unknown types are
// kOther, unknown `*_tool_result` types are kServerToolResult.
BlockKind ClassifyBlockType(std::string_view type);

// ClassifyBlockType(block["type"]); kOther when `block` is not an object or
// has no string `type`.
BlockKind ClassifyBlock(const Json& block);

// "text", "thinking", ... for logs.
std::string_view BlockKindName(BlockKind kind);

// True for the block types whose `input` the API streams as
// `input_json_delta` fragments: `tool_use`, `server_tool_use`,
// `mcp_tool_use`. (The accumulator also rebuilds input for any unknown type
// that receives such deltas.)
bool StreamsToolInput(std::string_view type);

// The error a server-tool result block reports, if any.
struct ServerToolResultError {
  // `error_code` of a `*_tool_result_error` content object (e.g.
  // "url_not_accessible"), or "is_error" for an `mcp_tool_result` with
  // `is_error: true`.
  std::string code;
  // A readable text: `error_message` when the API sent one, the text of an
  // erroring mcp_tool_result, otherwise empty.
  std::string message;
};

// Returns the error of a server-tool result block: its `content` is an object
// whose `type` ends in `_tool_result_error`, or it has `is_error: true`.
// std::nullopt when the block reports success or is not a server-tool
// result at all.
std::optional<ServerToolResultError> GetServerToolResultError(
    const Json& block);

// ---------------------------------------------------------------------------
// API errors.

// An error reported by the API, either as the body of an HTTP error response
// (`{"type":"error","error":{"type","message"},"request_id"}`) or as the
// payload of an SSE `error` event. Missing fields are left empty; extra
// fields (`details`, ...) are kept in `raw`.
struct ApiError {
  std::string type;        // e.g. "overloaded_error"; empty when absent
  std::string message;     // e.g. "Overloaded"; empty when absent
  std::string request_id;  // top-level `request_id`; empty when absent
  Json raw;                // the whole payload as received

  // "overloaded_error: Overloaded (request_id req_...)".
  std::string ToString() const;
};

// Builds an ApiError from an already parsed payload. Never fails: anything
// that is not of the documented shape leaves the fields empty.
ApiError ApiErrorFromJson(const Json& payload);

// Parses an HTTP error body or SSE `error` data. Returns kInvalidArgument if
// `body` is not a JSON object (e.g. an HTML page from a proxy).
absl::StatusOr<ApiError> ParseApiError(std::string_view body);

// True for the error types the official SDKs retry when they come with an
// HTTP status (`rate_limit_error`, `api_error`, `overloaded_error`,
// `timeout_error`, `conflict_error`).
bool IsRetryableApiErrorType(std::string_view type);

// ---------------------------------------------------------------------------
// Stop reasons.

enum class StopReason {
  kEndTurn,
  kMaxTokens,
  kStopSequence,
  kToolUse,
  kPauseTurn,
  kRefusal,
  kModelContextWindowExceeded,
  kCompaction,  // beta
  kUnknown,     // null, absent, or a value this build does not know
};

// Every stop_reason value the API documents (GA and beta).
inline constexpr std::array<std::string_view, 8> kStopReasons = {
    "end_turn",   "max_tokens", "stop_sequence",
    "tool_use",   "pause_turn", "refusal",
    "model_context_window_exceeded", "compaction"};

StopReason ParseStopReason(std::string_view value);
// The wire name; "" for kUnknown.
std::string_view StopReasonName(StopReason reason);

// True when a response with this stop_reason ends the task (end_turn,
// stop_sequence, max_tokens, refusal, model_context_window_exceeded, and any
// unknown value). False for `tool_use` (run the tools, next turn),
// `pause_turn` (send the content back, next turn) and `compaction` (beta: the
// API paused after compacting; the client continues the turn).
bool StopReasonEndsTask(std::string_view stop_reason);

// True when the response was cut off (max_tokens,
// model_context_window_exceeded): a trailing tool call must not be run.
bool StopReasonIsTruncation(std::string_view stop_reason);

}  // namespace toolmesh::common
