#include "common/messages.h"

#include "absl/strings/str_cat.h"

namespace toolmesh::common {
namespace {

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         text.substr(text.size() - suffix.size()) == suffix;
}

// Appends the text of an mcp_tool_result `content` (a string or an array of
// text blocks) to `out`.
void AppendContentText(const Json& content, std::string& out) {
  if (content.is_string()) {
    out += content.get_ref<const std::string&>();
    return;
  }
  if (!content.is_array()) return;
  for (const Json& part : content) {
    std::string_view text = GetString(part, "text");
    if (text.empty()) continue;
    if (!out.empty()) out += '\n';
    out.append(text);
  }
}

}  // namespace

BlockKind ClassifyBlockType(std::string_view type) {
  if (type == "text") return BlockKind::kText;
  if (type == "thinking" || type == "redacted_thinking") {
    return BlockKind::kThinking;
  }
  if (type == "tool_use") return BlockKind::kClientToolCall;
  if (type == "server_tool_use" || type == "mcp_tool_use") {
    return BlockKind::kServerToolCall;
  }
  if (type == "tool_result") return BlockKind::kClientToolResult;
  if (type.size() > std::string_view("_tool_result").size() &&
      EndsWith(type, "_tool_result")) {
    return BlockKind::kServerToolResult;
  }
  return BlockKind::kOther;
}

BlockKind ClassifyBlock(const Json& block) {
  if (!block.is_object()) return BlockKind::kOther;
  auto it = block.find("type");
  if (it == block.end() || !it->is_string()) return BlockKind::kOther;
  return ClassifyBlockType(it->get_ref<const std::string&>());
}

std::string_view BlockKindName(BlockKind kind) {
  switch (kind) {
    case BlockKind::kText:
      return "text";
    case BlockKind::kThinking:
      return "thinking";
    case BlockKind::kClientToolCall:
      return "client_tool_call";
    case BlockKind::kServerToolCall:
      return "server_tool_call";
    case BlockKind::kServerToolResult:
      return "server_tool_result";
    case BlockKind::kClientToolResult:
      return "client_tool_result";
    case BlockKind::kOther:
      return "other";
  }
  return "other";
}

bool StreamsToolInput(std::string_view type) {
  return type == "tool_use" || type == "server_tool_use" ||
         type == "mcp_tool_use";
}

std::optional<ServerToolResultError> GetServerToolResultError(
    const Json& block) {
  if (ClassifyBlock(block) != BlockKind::kServerToolResult) {
    return std::nullopt;
  }
  auto content = block.find("content");
  if (content != block.end() && content->is_object() &&
      EndsWith(GetString(*content, "type"), "_tool_result_error")) {
    ServerToolResultError error;
    auto code = content->find("error_code");
    if (code != content->end()) {
      error.code = code->is_string() ? code->get<std::string>()
                                     : DumpJson(*code);
    }
    error.message = std::string(GetString(*content, "error_message"));
    return error;
  }
  auto is_error = block.find("is_error");
  if (is_error != block.end() && is_error->is_boolean() &&
      is_error->get<bool>()) {
    ServerToolResultError error;
    error.code = "is_error";
    if (content != block.end()) AppendContentText(*content, error.message);
    return error;
  }
  return std::nullopt;
}

std::string ApiError::ToString() const {
  std::string out = type.empty() ? "unknown_error" : type;
  if (!message.empty()) absl::StrAppend(&out, ": ", message);
  if (!request_id.empty()) absl::StrAppend(&out, " (request_id ", request_id, ")");
  return out;
}

ApiError ApiErrorFromJson(const Json& payload) {
  ApiError error;
  error.raw = payload;
  if (!payload.is_object()) return error;
  error.request_id = std::string(GetString(payload, "request_id"));
  auto inner = payload.find("error");
  if (inner != payload.end() && inner->is_object()) {
    error.type = std::string(GetString(*inner, "type"));
    error.message = std::string(GetString(*inner, "message"));
  }
  return error;
}

absl::StatusOr<ApiError> ParseApiError(std::string_view body) {
  absl::StatusOr<Json> payload = ParseJson(body);
  if (!payload.ok()) return payload.status();
  if (!payload->is_object()) {
    return absl::InvalidArgumentError("API error body is not a JSON object");
  }
  return ApiErrorFromJson(*payload);
}

bool IsRetryableApiErrorType(std::string_view type) {
  return type == "rate_limit_error" || type == "api_error" ||
         type == "overloaded_error" || type == "timeout_error" ||
         type == "conflict_error";
}

StopReason ParseStopReason(std::string_view value) {
  if (value == "end_turn") return StopReason::kEndTurn;
  if (value == "max_tokens") return StopReason::kMaxTokens;
  if (value == "stop_sequence") return StopReason::kStopSequence;
  if (value == "tool_use") return StopReason::kToolUse;
  if (value == "pause_turn") return StopReason::kPauseTurn;
  if (value == "refusal") return StopReason::kRefusal;
  if (value == "model_context_window_exceeded") {
    return StopReason::kModelContextWindowExceeded;
  }
  if (value == "compaction") return StopReason::kCompaction;
  return StopReason::kUnknown;
}

std::string_view StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kEndTurn:
      return "end_turn";
    case StopReason::kMaxTokens:
      return "max_tokens";
    case StopReason::kStopSequence:
      return "stop_sequence";
    case StopReason::kToolUse:
      return "tool_use";
    case StopReason::kPauseTurn:
      return "pause_turn";
    case StopReason::kRefusal:
      return "refusal";
    case StopReason::kModelContextWindowExceeded:
      return "model_context_window_exceeded";
    case StopReason::kCompaction:
      return "compaction";
    case StopReason::kUnknown:
      return "";
  }
  return "";
}

bool StopReasonEndsTask(std::string_view stop_reason) {
  switch (ParseStopReason(stop_reason)) {
    case StopReason::kToolUse:
    case StopReason::kPauseTurn:
    case StopReason::kCompaction:
      return false;
    default:
      return true;
  }
}

bool StopReasonIsTruncation(std::string_view stop_reason) {
  StopReason reason = ParseStopReason(stop_reason);
  return reason == StopReason::kMaxTokens ||
         reason == StopReason::kModelContextWindowExceeded;
}

}  // namespace toolmesh::common
