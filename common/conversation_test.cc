#include "common/conversation.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::IsOkAndHolds;
using ::toolmesh::testing::StatusIs;

Json ParseOrDie(std::string_view text) {
  absl::StatusOr<Json> json = ParseJson(text);
  EXPECT_TRUE(json.ok()) << json.status();
  return json.ok() ? *json : Json();
}

Json Fields() {
  return ParseOrDie(R"({"model":"claude-sonnet-4-5","max_tokens":64,
    "tools":[{"type":"web_search_20250305","name":"web_search"},
             {"name":"client_tool","input_schema":{"type":"object"}}]})");
}

Json Result(std::string_view id) {
  Json block = Json::object();
  block["type"] = "tool_result";
  block["tool_use_id"] = std::string(id);
  block["content"] = "ok";
  return block;
}

TEST(ConversationTest, ToolRoundBuildsAValidRequest) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("weather?"), IsOk());
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"checking"},
    {"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}},
    {"type":"tool_use","id":"toolu_b","name":"client_tool","input":{}}])"), 1),
              IsOkAndHolds(0));
  EXPECT_THAT(c.PendingToolUseIds(), ElementsAre("toolu_a", "toolu_b"));
  EXPECT_THAT(ValidateRequest(c.BuildRequest(Fields())), IsEmpty());
  ASSERT_THAT(c.AppendToolResults({Result("toolu_a"), Result("toolu_b")}), IsOk());
  EXPECT_THAT(c.PendingToolUseIds(), IsEmpty());
  ASSERT_EQ(c.messages().size(), 3u);
  EXPECT_EQ(c.messages()[2]["content"].size(), 2u);
  EXPECT_THAT(ValidateRequest(c.BuildRequest(Fields())), IsEmpty());
  EXPECT_EQ(c.BuildRequest(Fields())["model"], "claude-sonnet-4-5");
}

TEST(ConversationTest, ToolResultsMustAnswerEveryPendingCallOnce) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("go"), IsOk());
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([
    {"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}},
    {"type":"tool_use","id":"toolu_b","name":"client_tool","input":{}}])"), 1).status(),
              IsOk());
  EXPECT_THAT(c.AppendToolResults({Result("toolu_a")}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.AppendToolResults({Result("toolu_a"), Result("toolu_a")}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.AppendToolResults({Result("toolu_a"), Result("srvtoolu_x")}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.AppendUserText("hello?"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"x"}])"), 2).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(c.messages().size(), 2u);
}

TEST(ConversationTest, NoToolResultsWithoutPendingCalls) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("go"), IsOk());
  EXPECT_THAT(c.AppendToolResults({Result("toolu_a")}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(ConversationTest, StepNeedsUserMessageAndTypedContent) {
  Conversation c;
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"x"}])"), 1).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(c.AppendUserText("go"), IsOk());
  EXPECT_THAT(c.AppendStep(Json::array(), 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([{"text":"x"}])"), 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.AppendUserText(""), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.AppendUserContent(ParseOrDie(R"("x")")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ConversationTest, RetriedStepIsNeverAppendedToTheStepItReplaces) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("go"), IsOk());
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"first"}])"), 1).status(),
              IsOk());
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"again"}])"), 1).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(c.messages().size(), 2u);
  EXPECT_EQ(c.messages()[1]["content"].size(), 1u);
  EXPECT_EQ(c.last_step(), 1);
}

TEST(ConversationTest, PauseTurnContinuationIsItsOwnMessageAndValid) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("research"), IsOk());
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([{"type":"text","text":"searching"},
    {"type":"server_tool_use","id":"srvtoolu_p","name":"web_search","input":{"query":"q"}}])"), 1).status(),
              IsOk());
  // The pause_turn continuation request: the paused content, unchanged, last.
  EXPECT_THAT(ValidateRequest(c.BuildRequest(Fields())), IsEmpty());
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([
    {"type":"web_search_tool_result","tool_use_id":"srvtoolu_p","content":[]},
    {"type":"text","text":"found"}])"), 2).status(),
              IsOk());
  ASSERT_EQ(c.messages().size(), 3u);
  EXPECT_EQ(c.messages()[2]["role"], "assistant");
  ASSERT_THAT(c.AppendUserText("thanks"), IsOk());
  EXPECT_THAT(ValidateRequest(c.BuildRequest(Fields())), IsEmpty());
}

TEST(ConversationTest, DuplicateServerResultsAreDroppedFromNewSteps) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("fetch"), IsOk());
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([
    {"type":"server_tool_use","id":"srvtoolu_f","name":"web_fetch","input":{}},
    {"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_f","content":{}},
    {"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}])"), 1).status(),
              IsOk());
  ASSERT_THAT(c.AppendToolResults({Result("toolu_a")}), IsOk());
  // FX-14 turn 2 opens with a second result for the resolved call.
  EXPECT_THAT(c.AppendStep(ParseOrDie(R"([
    {"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_f","content":{}},
    {"type":"text","text":"done"}])"), 2),
              IsOkAndHolds(1));
  EXPECT_EQ(c.messages()[3]["content"].size(), 1u);
  Json fields = Fields();
  fields["tools"].push_back(ParseOrDie(R"({"type":"web_fetch_20250910","name":"web_fetch"})"));
  EXPECT_THAT(ValidateRequest(c.BuildRequest(fields)), IsEmpty());
}

TEST(ConversationTest, DeferredCallThenFollowUpNormalisesToAValidHistory) {
  Conversation c;
  ASSERT_THAT(c.AppendUserText("search and call"), IsOk());
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([
    {"type":"server_tool_use","id":"srvtoolu_d","name":"web_search","input":{"query":"q"}},
    {"type":"tool_use","id":"toolu_c","name":"client_tool","input":{}}])"), 1).status(),
              IsOk());
  ASSERT_THAT(c.AppendToolResults({Result("toolu_c")}), IsOk());
  EXPECT_THAT(ValidateRequest(c.BuildRequest(Fields())), IsEmpty());
  ASSERT_THAT(c.AppendStep(ParseOrDie(R"([
    {"type":"web_search_tool_result","tool_use_id":"srvtoolu_d","content":[]},
    {"type":"text","text":"found"}])"), 2).status(),
              IsOk());
  EXPECT_THAT(ValidateRequest(c.BuildRequest(Fields())), IsEmpty());
  ASSERT_THAT(c.AppendUserText("and now?"), IsOk());
  // The trap: the late result is no longer accepted once a text follows.
  EXPECT_THAT(ValidateRequest(c.BuildRequest(Fields())), ::testing::SizeIs(1));
  RepairResult normal = c.Normalized(Fields());
  ASSERT_THAT(normal.status, IsOk());
  EXPECT_THAT(ValidateRequest(normal.body), IsEmpty());
  EXPECT_EQ(normal.body["messages"][1]["content"][1]["type"],
            "web_search_tool_result");
  EXPECT_EQ(normal.body["messages"][1]["content"][2]["type"], "tool_use");
}

TEST(ConversationTest, FromMessagesAdoptsStoredHistory) {
  auto c = Conversation::FromMessages(ParseOrDie(R"([{"role":"user","content":"a"}])"));
  ASSERT_THAT(c.status(), IsOk());
  EXPECT_EQ(c->messages().size(), 1u);
  EXPECT_THAT(Conversation::FromMessages(ParseOrDie("{}")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Conversation::FromMessages(ParseOrDie("[1]")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace toolmesh::common
