// JSON views of toolmesh.v1 task messages, as the `toolmesh` CLI prints them
// (`--json` of submit, watch, get, list and workers) and as other clients
// may reuse them.
//
// Conventions of every view:
// - enum values are lowercase names without their prefix ("running",
//   "pending", "worker_lost", "client"); an unknown value is "unspecified";
// - times are RFC 3339 strings in UTC ("2025-01-02T03:04:05.123Z");
// - a `*_json` text field is decoded into real JSON under the key without
//   the suffix (`usage_json` -> "usage"); an empty one is left out; one that
//   is not valid JSON (a misbehaving server) is kept verbatim as a string
//   under its original `*_json` key, so nothing is lost and nothing throws.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>

#include "common/json.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "toolmesh/v1/task.pb.h"
#include "toolmesh/v1/task_service.pb.h"

namespace toolmesh::cli {

// "queued", "running", "cancelling", "completed", "failed", "cancelled";
// "unspecified" for any other value.
std::string TaskStateName(v1::TaskState state);

// "pending", "running", "done", "error"; "unspecified" otherwise.
std::string ToolCallStateName(v1::ToolCallState state);

// "tool_failed", "invalid_input", "timeout", "cancelled", "worker_lost",
// "no_worker", "stream_aborted", "server_result_missing"; "unspecified"
// otherwise.
std::string ToolErrorReasonName(v1::ToolErrorReason reason);

// "client", "server"; "unspecified" otherwise.
std::string ToolKindName(v1::ToolKind kind);

// `time` in RFC 3339, UTC with a "Z" suffix and as many fractional digits
// as needed. A value outside the range RFC 3339 can express is printed as
// the nearest representable one.
std::string Rfc3339(const google::protobuf::Timestamp& time);

// `duration` in milliseconds, rounded toward zero.
int64_t DurationMillis(const google::protobuf::Duration& duration);

// One task event as a JSON object: always `seq`, `task_id`, `type` and
// `time` (null only if the event carries no time), then by variant:
// - "state_changed": state, previous_state
// - "turn_started": turn, attempt
// - "turn_retrying": turn, attempt, reason, message, delay_ms, http_status
// - "turn_completed": turn, attempt, stop_reason, usage
// - "text_delta" / "thinking_delta": turn, attempt, block_index,
//   text / thinking
// - "tool" (a ToolTransition): tool_use_id, name, kind, state, reason (only
//   in state "error"), message, input, result, attempt, worker_id, turn,
//   block_type
// - "task_completed" / "task_failed" / "task_cancelled" (the terminal event;
//   "task_ended" plus `state` if it names no terminal state): stop_reason,
//   error ({type, message, http_status}, when set), final_message,
//   conversation, usage
// An event with no variant set has type "unknown".
common::Json EventToJson(const v1::TaskEvent& event);

// A task as a JSON object: every field of v1::Task (and of its spec) under
// its proto name, with the conventions above; unset optional parts (error,
// finished_at, deadline, system) are left out. spec.timeout is a string in
// the protobuf JSON form ("90s", "1.500s"); labels are sorted by key.
common::Json TaskToJson(const v1::Task& task);

// A connected worker as a JSON object (fields of v1::WorkerInfo under their
// proto names; last_heartbeat_at left out before the first heartbeat).
common::Json WorkerToJson(const v1::WorkerInfo& worker);

}  // namespace toolmesh::cli
