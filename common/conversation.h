// The conversation of one task: the `messages` array the orchestrator sends,
// built step by step so that it always stays valid for the API.
//
// The system prompt, `tools` and the other request fields live outside it and
// are passed in where a whole request is built. Rules kept here:
//  - each committed step (one completed model stream) becomes its own
//    assistant message; a step is appended whole or not at all, and a step
//    number can be committed only once, so a retried stream can never be
//    appended to the step it replaces (seed 002);
//  - a pause_turn continuation is also appended as its own assistant message,
//    right after the paused one. The API merges consecutive assistant
//    messages into one turn (PROTOCOL.md d.8), so the API sees the paused
//    content continued, the late result of the paused call pairs with it in
//    that merged turn, and each step keeps its own message;
//  - server result blocks whose `tool_use_id` is already answered earlier in
//    the conversation are dropped from a new step as duplicates (FX-14);
//  - tool results go in one user message holding only `tool_result` blocks,
//    and only while client `tool_use` blocks of the last step wait for them;
//    a user text cannot be appended while they wait.
//
// Thread-safety: a value type; not synchronised. The engine thread owns it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/conversation_repair.h"
#include "common/json.h"

namespace toolmesh::common {

class Conversation {
 public:
  Conversation() = default;

  // Adopts a stored `messages` array as is (repair it with Normalized()).
  // kInvalidArgument if `messages` is not an array of objects.
  static absl::StatusOr<Conversation> FromMessages(const Json& messages);

  // Appends a user message with one text block. kInvalidArgument for empty
  // text; kFailedPrecondition while tool results are pending.
  absl::Status AppendUserText(std::string_view text);

  // Appends a user message with `content` (a non-empty array of blocks, each
  // an object with a string `type`). kInvalidArgument on a bad shape;
  // kFailedPrecondition while tool results are pending (use
  // AppendToolResults).
  absl::Status AppendUserContent(const Json& content);

  // Commits the content of a completed step (the final message's `content`
  // array) as a new assistant message. `step` must be greater than every
  // step committed before (kAlreadyExists otherwise: a retry must replace a
  // step before it is committed, never append to it). kInvalidArgument if
  // `content` is not a non-empty array of typed blocks; kFailedPrecondition
  // before any user message or while client tool_use blocks of the previous
  // step wait for their results. Returns how many duplicate server result
  // blocks were dropped; when every block was one, nothing is appended.
  absl::StatusOr<int> AppendStep(const Json& assistant_content, int step);

  // Appends one user message holding exactly `tool_result_blocks`, in the
  // given order (the caller passes them in tool_use order). They must answer
  // every pending client tool_use of the last step, each once
  // (kInvalidArgument otherwise); kFailedPrecondition when nothing is pending.
  absl::Status AppendToolResults(const std::vector<Json>& tool_result_blocks);

  // Ids of the client tool_use blocks of the last step that still wait for a
  // result, in block order.
  std::vector<std::string> PendingToolUseIds() const;

  // The messages array.
  const Json& messages() const { return messages_; }

  // The highest step committed so far, or -1.
  int last_step() const { return last_step_; }

  // A copy of `request_fields` (an object: model, tools, thinking, ...) with
  // `messages` set to this conversation.
  Json BuildRequest(const Json& request_fields) const;

  // BuildRequest(request_fields) in the normal form for export and
  // follow-ups (see Normalize() in conversation_repair.h).
  RepairResult Normalized(const Json& request_fields) const;

 private:
  absl::Status CheckNothingPending() const;

  Json messages_ = Json::array();
  int last_step_ = -1;
};

}  // namespace toolmesh::common
