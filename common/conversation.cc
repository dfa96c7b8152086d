#include "common/conversation.h"

#include <cstddef>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace toolmesh::common {
namespace {

bool IsServerResult(std::string_view type) {
  return type != "tool_result" &&
         absl::EndsWith(absl::string_view(type.data(), type.size()),
                        "_tool_result");
}

absl::Status CheckBlocks(const Json& content) {
  if (!content.is_array() || content.empty()) {
    return absl::InvalidArgumentError("content must be a non-empty array");
  }
  for (std::size_t i = 0; i < content.size(); ++i) {
    if (GetString(content[i], "type").empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("content.", i, " is not an object with a `type`"));
    }
  }
  return absl::OkStatus();
}

Json Message(std::string_view role, Json content) {
  Json message = Json::object();
  message["role"] = std::string(role);
  message["content"] = std::move(content);
  return message;
}

}  // namespace

absl::StatusOr<Conversation> Conversation::FromMessages(const Json& messages) {
  if (!messages.is_array()) {
    return absl::InvalidArgumentError("messages must be an array");
  }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    if (!messages[i].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("messages.", i, " is not an object"));
    }
  }
  Conversation conversation;
  conversation.messages_ = messages;
  return conversation;
}

std::vector<std::string> Conversation::PendingToolUseIds() const {
  std::vector<std::string> ids;
  if (messages_.empty()) return ids;
  const Json& last = messages_.back();
  if (GetString(last, "role") != "assistant") return ids;
  auto content = last.find("content");
  if (content == last.end() || !content->is_array()) return ids;
  for (const Json& block : *content) {
    if (GetString(block, "type") == "tool_use") {
      ids.emplace_back(GetString(block, "id"));
    }
  }
  return ids;
}

absl::Status Conversation::CheckNothingPending() const {
  std::vector<std::string> pending = PendingToolUseIds();
  if (pending.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("tool results are pending for ",
                   absl::StrJoin(pending, ", ")));
}

absl::Status Conversation::AppendUserText(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty user text");
  Json block = Json::object();
  block["type"] = "text";
  block["text"] = std::string(text);
  Json content = Json::array();
  content.push_back(std::move(block));
  return AppendUserContent(content);
}

absl::Status Conversation::AppendUserContent(const Json& content) {
  if (absl::Status status = CheckBlocks(content); !status.ok()) return status;
  if (absl::Status status = CheckNothingPending(); !status.ok()) return status;
  messages_.push_back(Message("user", content));
  return absl::OkStatus();
}

absl::StatusOr<int> Conversation::AppendStep(const Json& assistant_content,
                                             int step) {
  if (step <= last_step_) {
    return absl::AlreadyExistsError(absl::StrCat(
        "step ", step, " is not after the last committed step ", last_step_));
  }
  if (absl::Status status = CheckBlocks(assistant_content); !status.ok()) {
    return status;
  }
  if (messages_.empty()) {
    return absl::FailedPreconditionError(
        "a step needs a user message before it");
  }
  if (absl::Status status = CheckNothingPending(); !status.ok()) return status;

  absl::flat_hash_set<std::string> answered;
  for (const Json& message : messages_) {
    auto content = message.find("content");
    if (content == message.end() || !content->is_array()) continue;
    for (const Json& block : *content) {
      if (IsServerResult(GetString(block, "type"))) {
        answered.insert(std::string(GetString(block, "tool_use_id")));
      }
    }
  }
  Json kept = Json::array();
  int dropped = 0;
  for (const Json& block : assistant_content) {
    if (IsServerResult(GetString(block, "type")) &&
        !answered.insert(std::string(GetString(block, "tool_use_id"))).second) {
      ++dropped;
      continue;
    }
    kept.push_back(block);
  }
  last_step_ = step;
  if (!kept.empty()) messages_.push_back(Message("assistant", std::move(kept)));
  return dropped;
}

absl::Status Conversation::AppendToolResults(
    const std::vector<Json>& tool_result_blocks) {
  std::vector<std::string> pending = PendingToolUseIds();
  if (pending.empty()) {
    return absl::FailedPreconditionError("no tool_use is waiting for results");
  }
  absl::flat_hash_set<std::string> waiting(pending.begin(), pending.end());
  Json content = Json::array();
  for (std::size_t i = 0; i < tool_result_blocks.size(); ++i) {
    const Json& block = tool_result_blocks[i];
    if (GetString(block, "type") != "tool_result") {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", i, " is not a tool_result"));
    }
    const std::string id(GetString(block, "tool_use_id"));
    if (waiting.erase(id) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "block ", i, " answers no pending tool_use (or twice): ", id));
    }
    content.push_back(block);
  }
  if (!waiting.empty()) {
    std::vector<std::string> missing;
    for (const std::string& id : pending) {
      if (waiting.contains(id)) missing.push_back(id);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("no result for ", absl::StrJoin(missing, ", ")));
  }
  messages_.push_back(Message("user", std::move(content)));
  return absl::OkStatus();
}

Json Conversation::BuildRequest(const Json& request_fields) const {
  Json request = request_fields.is_object() ? request_fields : Json::object();
  request["messages"] = messages_;
  return request;
}

RepairResult Conversation::Normalized(const Json& request_fields) const {
  return Normalize(BuildRequest(request_fields));
}

}  // namespace toolmesh::common
