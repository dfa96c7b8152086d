// Regression for seed 002: a retry after a mid-stream failure appended the new
// stream to the old step, so two generations merged into one assistant
// message ([text, tool_use, text, tool_use]) and the API rejected the history
// ("`tool_use` ids were found without `tool_result` blocks", thinking not
// first). toolmesh never builds that shape, and repairs it on load.
#include <string>

#include "common/conversation.h"
#include "common/conversation_repair.h"
#include "common/request_validator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

Json ParseOrDie(std::string_view text) {
  absl::StatusOr<Json> json = ParseJson(text);
  EXPECT_TRUE(json.ok()) << json.status();
  return json.ok() ? *json : Json();
}

constexpr char kMergedHistory[] = R"({
  "model": "claude-opus-4-6", "max_tokens": 1024,
  "thinking": {"type": "adaptive"},
  "tools": [{"name": "write", "input_schema": {"type": "object"}}],
  "messages": [
    {"role": "user", "content": "write two files"},
    {"role": "assistant", "content": [
      {"type": "thinking", "thinking": "first", "signature": "sig1"},
      {"type": "text", "text": "Writing a."},
      {"type": "tool_use", "id": "toolu_write_a", "name": "write", "input": {}},
      {"type": "thinking", "thinking": "retry", "signature": "sig2"},
      {"type": "text", "text": "Writing a again."},
      {"type": "tool_use", "id": "toolu_write_b", "name": "write", "input": {"path": "a"}}]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_write_a", "content": "Tool execution aborted", "is_error": true},
      {"type": "tool_result", "tool_use_id": "toolu_write_b", "content": "written"}]}]})";

TEST(Seed002ConversationTest, MergedStepsAreDetected) {
  auto violations = ValidateRequest(ParseOrDie(kMergedHistory));
  ASSERT_FALSE(violations.empty());
  EXPECT_EQ(violations[0].message,
            "messages.1: `tool_use` ids were found without `tool_result` blocks "
            "immediately after: toolu_write_a. Each `tool_use` block must have "
            "a corresponding `tool_result` block in the next message.");
}

TEST(Seed002ConversationTest, MergedStepsAreSplitIntoValidHistory) {
  RepairResult result = Repair(ParseOrDie(kMergedHistory));
  ASSERT_THAT(result.status, IsOk());
  EXPECT_THAT(ValidateRequest(result.body), IsEmpty());
  const Json& m = result.body.at("messages");
  ASSERT_EQ(m.size(), 5u);
  std::vector<std::string> roles;
  for (const Json& message : m) roles.push_back(message["role"]);
  EXPECT_THAT(roles, ElementsAre("user", "assistant", "user", "assistant", "user"));
  EXPECT_EQ(m[1]["content"].size(), 3u);
  EXPECT_EQ(m[2]["content"][0]["tool_use_id"], "toolu_write_a");
  EXPECT_EQ(m[3]["content"][0]["type"], "thinking");
  EXPECT_EQ(m[4]["content"][0]["tool_use_id"], "toolu_write_b");
  EXPECT_THAT(Repair(result.body).actions, IsEmpty());
}

TEST(Seed002ConversationTest, RetryNeverMergesIntoTheCommittedStep) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("write two files"), IsOk());
  // The failed attempt of step 1 left nothing behind; its retry is committed.
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([
    {"type":"text","text":"Writing a."},
    {"type":"tool_use","id":"toolu_write_b","name":"write","input":{}}])"), 1).status(),
              IsOk());
  // A duplicate commit of the same step (the bug's shape) is refused.
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"Writing a again."}])"), 1)
                  .status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_EQ(c.messages().size(), 2u);
  EXPECT_EQ(c.messages()[1]["content"].size(), 2u);
  Json result = Json::object();
  result["type"] = "tool_result";
  result["tool_use_id"] = "toolu_write_b";
  result["content"] = "written";
  ASSERT_THAT(c.AppendToolResults({result}), IsOk());
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"done"}])"), 2).status(),
              IsOk());
  Json fields = ParseOrDie(R"({"model":"m","max_tokens":8,
    "tools":[{"name":"write","input_schema":{"type":"object"}}]})");
  EXPECT_THAT(ValidateRequest(c.BuildRequest(fields)), IsEmpty());
  EXPECT_EQ(c.messages().size(), 4u);
}

}  // namespace
}  // namespace toolmesh::common
