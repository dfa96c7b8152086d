#include "orchestrator/cli/event_json.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace toolmesh::cli {
namespace {

using common::Json;

// RFC 3339 covers years 0001 through 9999 (the same bounds as
// google.protobuf.Timestamp).
constexpr int64_t kMinRfc3339Seconds = -62135596800;  // 0001-01-01T00:00:00Z
constexpr int64_t kMaxRfc3339Seconds = 253402300799;  // 9999-12-31T23:59:59Z

// Sets out[key] to the decoded JSON of `text`: left out when empty, kept
// verbatim under `<key>_json` when it is not valid JSON.
void PutJsonField(Json& out, std::string_view key, const std::string& text) {
  if (text.empty()) return;
  absl::StatusOr<Json> value = common::ParseJson(text);
  if (value.ok()) {
    out[std::string(key)] = *std::move(value);
  } else {
    out[absl::StrCat(absl::string_view(key.data(), key.size()), "_json")] =
        text;
  }
}

// A Duration in the protobuf JSON mapping's text form: "90s", "1.500s".
std::string ProtoDurationText(const google::protobuf::Duration& duration) {
  if (duration.nanos() == 0) return absl::StrCat(duration.seconds(), "s");
  const bool negative = duration.seconds() < 0 || duration.nanos() < 0;
  const int64_t seconds =
      duration.seconds() < 0 ? -duration.seconds() : duration.seconds();
  const int32_t nanos =
      duration.nanos() < 0 ? -duration.nanos() : duration.nanos();
  std::string fraction = absl::StrFormat("%09d", nanos);
  while (fraction.size() > 3 && fraction.back() == '0') fraction.pop_back();
  return absl::StrCat(negative ? "-" : "", seconds, ".", fraction, "s");
}

Json ErrorToJson(const v1::TaskError& error) {
  return Json{{"type", error.type()},
              {"message", error.message()},
              {"http_status", error.http_status()}};
}

Json SpecToJson(const v1::TaskSpec& spec) {
  Json out = Json::object();
  out["model"] = spec.model();
  out["max_tokens"] = spec.max_tokens();
  switch (spec.system_case()) {
    case v1::TaskSpec::kSystemText:
      out["system"] = spec.system_text();
      break;
    case v1::TaskSpec::kSystemBlocksJson:
      PutJsonField(out, "system", spec.system_blocks_json());
      break;
    case v1::TaskSpec::SYSTEM_NOT_SET:
      break;
  }
  switch (spec.conversation_case()) {
    case v1::TaskSpec::kPrompt:
      out["prompt"] = spec.prompt();
      break;
    case v1::TaskSpec::kMessagesJson:
      PutJsonField(out, "messages", spec.messages_json());
      break;
    case v1::TaskSpec::CONVERSATION_NOT_SET:
      break;
  }
  out["client_tools"] = Json::array();
  for (const std::string& name : spec.client_tools()) {
    out["client_tools"].push_back(name);
  }
  out["all_worker_tools"] = spec.all_worker_tools();
  // Each server tool is decoded on its own; one bad entry stays a string in
  // place so that indices keep matching the request.
  out["server_tools"] = Json::array();
  for (const std::string& tool : spec.server_tools_json()) {
    absl::StatusOr<Json> value = common::ParseJson(tool);
    out["server_tools"].push_back(value.ok() ? *std::move(value) : Json(tool));
  }
  PutJsonField(out, "tool_choice", spec.tool_choice_json());
  PutJsonField(out, "thinking", spec.thinking_json());
  out["max_turns"] = spec.max_turns();
  switch (spec.deadline_case()) {
    case v1::TaskSpec::kDeadlineTime:
      out["deadline_time"] = Rfc3339(spec.deadline_time());
      break;
    case v1::TaskSpec::kTimeout:
      out["timeout"] = ProtoDurationText(spec.timeout());
      break;
    case v1::TaskSpec::DEADLINE_NOT_SET:
      break;
  }
  out["idempotency_key"] = spec.idempotency_key();
  // Proto maps have no order; sort for stable output.
  std::vector<std::pair<std::string, std::string>> labels(spec.labels().begin(),
                                                          spec.labels().end());
  std::sort(labels.begin(), labels.end());
  out["labels"] = Json::object();
  for (const auto& [key, value] : labels) out["labels"][key] = value;
  return out;
}

}  // namespace

std::string TaskStateName(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_QUEUED:
      return "queued";
    case v1::TASK_STATE_RUNNING:
      return "running";
    case v1::TASK_STATE_CANCELLING:
      return "cancelling";
    case v1::TASK_STATE_COMPLETED:
      return "completed";
    case v1::TASK_STATE_FAILED:
      return "failed";
    case v1::TASK_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

std::string ToolCallStateName(v1::ToolCallState state) {
  switch (state) {
    case v1::TOOL_CALL_STATE_PENDING:
      return "pending";
    case v1::TOOL_CALL_STATE_RUNNING:
      return "running";
    case v1::TOOL_CALL_STATE_DONE:
      return "done";
    case v1::TOOL_CALL_STATE_ERROR:
      return "error";
    default:
      return "unspecified";
  }
}

std::string ToolErrorReasonName(v1::ToolErrorReason reason) {
  switch (reason) {
    case v1::TOOL_ERROR_REASON_TOOL_FAILED:
      return "tool_failed";
    case v1::TOOL_ERROR_REASON_INVALID_INPUT:
      return "invalid_input";
    case v1::TOOL_ERROR_REASON_TIMEOUT:
      return "timeout";
    case v1::TOOL_ERROR_REASON_CANCELLED:
      return "cancelled";
    case v1::TOOL_ERROR_REASON_WORKER_LOST:
      return "worker_lost";
    case v1::TOOL_ERROR_REASON_NO_WORKER:
      return "no_worker";
    case v1::TOOL_ERROR_REASON_STREAM_ABORTED:
      return "stream_aborted";
    case v1::TOOL_ERROR_REASON_SERVER_RESULT_MISSING:
      return "server_result_missing";
    case v1::TOOL_ERROR_REASON_QUEUE_FULL:
      return "queue_full";
    default:
      return "unspecified";
  }
}

std::string ToolKindName(v1::ToolKind kind) {
  switch (kind) {
    case v1::TOOL_KIND_CLIENT:
      return "client";
    case v1::TOOL_KIND_SERVER:
      return "server";
    default:
      return "unspecified";
  }
}

std::string Rfc3339(const google::protobuf::Timestamp& time) {
  const int64_t seconds = std::clamp<int64_t>(
      time.seconds(), kMinRfc3339Seconds, kMaxRfc3339Seconds);
  const int32_t nanos = std::clamp<int32_t>(time.nanos(), 0, 999999999);
  const absl::Time t =
      absl::FromUnixSeconds(seconds) + absl::Nanoseconds(nanos);
  return absl::FormatTime("%E4Y-%m-%d%ET%H:%M:%E*SZ", t, absl::UTCTimeZone());
}

int64_t DurationMillis(const google::protobuf::Duration& duration) {
  // Both parts carry the same sign in a valid Duration; adding them as a
  // sum of milliseconds keeps an invalid mix from overflowing anyway.
  const int64_t seconds =
      std::clamp<int64_t>(duration.seconds(), -315576000000, 315576000000);
  return seconds * 1000 + duration.nanos() / 1000000;
}

Json EventToJson(const v1::TaskEvent& event) {
  Json out = Json::object();
  out["seq"] = event.seq();
  out["task_id"] = event.task_id();
  out["type"] = "unknown";
  out["time"] = event.has_time() ? Json(Rfc3339(event.time())) : Json(nullptr);
  switch (event.event_case()) {
    case v1::TaskEvent::kStateChanged: {
      const v1::TaskStateChanged& e = event.state_changed();
      out["type"] = "state_changed";
      out["state"] = TaskStateName(e.state());
      out["previous_state"] = TaskStateName(e.previous_state());
      break;
    }
    case v1::TaskEvent::kTurnStarted: {
      const v1::TurnStarted& e = event.turn_started();
      out["type"] = "turn_started";
      out["turn"] = e.turn();
      out["attempt"] = e.attempt();
      break;
    }
    case v1::TaskEvent::kTurnRetrying: {
      const v1::TurnRetrying& e = event.turn_retrying();
      out["type"] = "turn_retrying";
      out["turn"] = e.turn();
      out["attempt"] = e.attempt();
      out["reason"] = e.reason();
      out["message"] = e.message();
      out["delay_ms"] = DurationMillis(e.delay());
      out["http_status"] = e.http_status();
      break;
    }
    case v1::TaskEvent::kTurnCompleted: {
      const v1::TurnCompleted& e = event.turn_completed();
      out["type"] = "turn_completed";
      out["turn"] = e.turn();
      out["attempt"] = e.attempt();
      out["stop_reason"] = e.stop_reason();
      PutJsonField(out, "usage", e.usage_json());
      break;
    }
    case v1::TaskEvent::kTextDelta: {
      const v1::TextDelta& e = event.text_delta();
      out["type"] = "text_delta";
      out["turn"] = e.turn();
      out["attempt"] = e.attempt();
      out["block_index"] = e.block_index();
      out["text"] = e.text();
      break;
    }
    case v1::TaskEvent::kThinkingDelta: {
      const v1::ThinkingDelta& e = event.thinking_delta();
      out["type"] = "thinking_delta";
      out["turn"] = e.turn();
      out["attempt"] = e.attempt();
      out["block_index"] = e.block_index();
      out["thinking"] = e.thinking();
      break;
    }
    case v1::TaskEvent::kToolTransition: {
      const v1::ToolTransition& e = event.tool_transition();
      out["type"] = "tool";
      out["tool_use_id"] = e.tool_use_id();
      out["name"] = e.name();
      out["kind"] = ToolKindName(e.kind());
      out["state"] = ToolCallStateName(e.state());
      if (e.state() == v1::TOOL_CALL_STATE_ERROR) {
        out["reason"] = ToolErrorReasonName(e.reason());
      }
      out["message"] = e.message();
      PutJsonField(out, "input", e.input_json());
      PutJsonField(out, "result", e.result_json());
      out["attempt"] = e.attempt();
      out["worker_id"] = e.worker_id();
      out["turn"] = e.turn();
      out["block_type"] = e.block_type();
      break;
    }
    case v1::TaskEvent::kTerminal: {
      const v1::TaskTerminal& e = event.terminal();
      switch (e.state()) {
        case v1::TASK_STATE_COMPLETED:
          out["type"] = "task_completed";
          break;
        case v1::TASK_STATE_FAILED:
          out["type"] = "task_failed";
          break;
        case v1::TASK_STATE_CANCELLED:
          out["type"] = "task_cancelled";
          break;
        default:
          // A terminal event always names its outcome; one that does not is
          // still the last event, reported as such.
          out["type"] = "task_ended";
          out["state"] = TaskStateName(e.state());
          break;
      }
      out["stop_reason"] = e.stop_reason();
      if (e.has_error()) out["error"] = ErrorToJson(e.error());
      PutJsonField(out, "final_message", e.final_message_json());
      PutJsonField(out, "conversation", e.conversation_json());
      PutJsonField(out, "usage", e.usage_json());
      break;
    }
    case v1::TaskEvent::EVENT_NOT_SET:
      break;
  }
  return out;
}

Json TaskToJson(const v1::Task& task) {
  Json out = Json::object();
  out["task_id"] = task.task_id();
  out["state"] = TaskStateName(task.state());
  out["spec"] = SpecToJson(task.spec());
  if (task.has_created_at()) out["created_at"] = Rfc3339(task.created_at());
  if (task.has_updated_at()) out["updated_at"] = Rfc3339(task.updated_at());
  if (task.has_finished_at()) out["finished_at"] = Rfc3339(task.finished_at());
  out["last_seq"] = task.last_seq();
  out["turns"] = task.turns();
  out["stop_reason"] = task.stop_reason();
  if (task.has_error()) out["error"] = ErrorToJson(task.error());
  PutJsonField(out, "usage", task.usage_json());
  PutJsonField(out, "final_message", task.final_message_json());
  PutJsonField(out, "conversation", task.conversation_json());
  return out;
}

Json WorkerToJson(const v1::WorkerInfo& worker) {
  Json out = Json::object();
  out["worker_id"] = worker.worker_id();
  out["worker_version"] = worker.worker_version();
  out["tools"] = Json::array();
  for (const std::string& tool : worker.tools()) out["tools"].push_back(tool);
  out["slots"] = worker.slots();
  out["running_calls"] = worker.running_calls();
  out["draining"] = worker.draining();
  if (worker.has_connected_at()) {
    out["connected_at"] = Rfc3339(worker.connected_at());
  }
  if (worker.has_last_heartbeat_at()) {
    out["last_heartbeat_at"] = Rfc3339(worker.last_heartbeat_at());
  }
  return out;
}

}  // namespace toolmesh::cli
