#include "common/conversation_repair.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

Json ParseOrDie(std::string_view text) {
  absl::StatusOr<Json> json = ParseJson(text);
  EXPECT_TRUE(json.ok()) << json.status();
  return json.ok() ? *json : Json();
}

Json Body(std::string_view messages, bool thinking = false) {
  Json body = ParseOrDie(R"({"model":"claude-sonnet-4-5","max_tokens":64,
    "tools":[{"type":"web_search_20250305","name":"web_search"},
             {"name":"client_tool","input_schema":{"type":"object"}}]})");
  if (thinking) body["thinking"] = ParseOrDie(R"({"type":"enabled","budget_tokens":1024})");
  body["messages"] = ParseOrDie(messages);
  return body;
}

// Repairs `body`, expects success, a clean result and idempotence.
RepairResult RepairClean(const Json& body) {
  EXPECT_THAT(ValidateRequest(body), Not(IsEmpty()));
  RepairResult result = Repair(body);
  EXPECT_THAT(result.status, IsOk());
  EXPECT_THAT(ValidateRequest(result.body), IsEmpty())
      << DumpJsonPretty(result.body);
  EXPECT_THAT(result.actions, Not(IsEmpty()));
  RepairResult again = Repair(result.body);
  EXPECT_THAT(again.actions, IsEmpty());
  EXPECT_EQ(again.body, result.body);
  return result;
}

const Json& Msgs(const RepairResult& result) { return result.body.at("messages"); }

TEST(ConversationRepairTest, ValidBodiesAreReturnedUnchanged) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  for (const char* name :
       {"07-thinking-then-client-tool-use_turn2.request.json",
        "10-thinking-web-search-pause-turn_part2-continuation.request.json"}) {
    auto text = toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_TRUE(text.ok()) << text.status();
    Json body = ParseOrDie(*text);
    RepairResult result = Repair(body);
    EXPECT_THAT(result.status, IsOk());
    EXPECT_THAT(result.actions, IsEmpty()) << name;
    EXPECT_EQ(result.body, body) << name;
    RepairResult normal = Normalize(body);
    EXPECT_THAT(normal.actions, IsEmpty()) << name;
  }
}

TEST(ConversationRepairTest, Fixture19OrphanServerToolResultIsDropped) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  auto text = toolmesh::testing::ReadFile(
      dir + "/19-400-orphan-srvtoolu-in-tool-result.request-response.json");
  ASSERT_TRUE(text.ok()) << text.status();
  RepairResult result = RepairClean(ParseOrDie(*text)["request"]);
  const Json& user = Msgs(result)[2]["content"];
  ASSERT_EQ(user.size(), 1u);
  EXPECT_EQ(user[0]["tool_use_id"], "toolu_01Issue17366ClientTool");
  EXPECT_THAT(result.actions[0], HasSubstr("messages.2.content.0: dropped"));
  // The deferred server call stays: only tool results follow it.
  EXPECT_EQ(Msgs(result)[1]["content"].size(), 4u);
}

TEST(ConversationRepairTest, Fixture20ShapeMovesClientToolUseLast) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":[{"type":"text","text":"search and call"}]},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_issue8112_custom","name":"client_tool","input":{}},
      {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"q"}},
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"toolu_issue8112_custom","content":"ok"}]}])"));
  const Json& content = Msgs(result)[1]["content"];
  EXPECT_EQ(content[0]["type"], "server_tool_use");
  EXPECT_EQ(content[1]["type"], "web_search_tool_result");
  EXPECT_EQ(content[2]["type"], "tool_use");
}

TEST(ConversationRepairTest, MissingToolResultsAreSynthesisedInToolUseOrder) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}},
      {"type":"tool_use","id":"toolu_b","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"text","text":"what happened?"},
      {"type":"tool_result","tool_use_id":"toolu_b","content":"ok"}]}])"));
  const Json& user = Msgs(result)[2]["content"];
  ASSERT_EQ(user.size(), 3u);
  EXPECT_EQ(user[0]["tool_use_id"], "toolu_b");
  EXPECT_EQ(user[1]["tool_use_id"], "toolu_a");
  EXPECT_EQ(user[1]["is_error"], true);
  EXPECT_EQ(user[2]["type"], "text");
}

TEST(ConversationRepairTest, StringUserMessageAfterToolUseGetsResultsFirst) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":"never mind"}])"));
  const Json& user = Msgs(result)[2]["content"];
  ASSERT_EQ(user.size(), 2u);
  EXPECT_EQ(user[0]["type"], "tool_result");
  EXPECT_EQ(user[1]["text"], "never mind");
}

TEST(ConversationRepairTest, TrailingPendingToolUseIsLeftAlone) {
  Json body = Body(R"([{"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]}])");
  RepairResult result = Repair(body);
  EXPECT_THAT(result.status, IsOk());
  EXPECT_THAT(result.actions, IsEmpty());
  EXPECT_EQ(result.body, body);
}

TEST(ConversationRepairTest, LateServerResultMovesHomeWhenTheTrapWouldFire) {
  Json body = Body(R"([
    {"role":"user","content":"search and call"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_d","name":"web_search","input":{"query":"q"}},
      {"type":"tool_use","id":"toolu_c","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_c","content":"ok"}]},
    {"role":"assistant","content":[
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_d","content":[]},
      {"type":"text","text":"found it"}]}])");
  // Valid as is: the API itself answers with that shape.
  RepairResult unchanged = Repair(body);
  EXPECT_THAT(unchanged.actions, IsEmpty());
  // Normal form for export: the result moves before the client tool_use.
  RepairResult normal = Normalize(body);
  EXPECT_THAT(normal.status, IsOk());
  const Json& home = normal.body["messages"][1]["content"];
  ASSERT_EQ(home.size(), 3u);
  EXPECT_EQ(home[1]["type"], "web_search_tool_result");
  EXPECT_EQ(home[2]["type"], "tool_use");
  EXPECT_EQ(normal.body["messages"][3]["content"].size(), 1u);
  // A follow-up turn makes the original invalid; repair fixes it the same way.
  body["messages"].push_back(ParseOrDie(R"({"role":"user","content":"thanks"})"));
  RepairResult repaired = RepairClean(body);
  EXPECT_EQ(repaired.body["messages"][1]["content"][1]["type"],
            "web_search_tool_result");
}

TEST(ConversationRepairTest, ProgrammaticCodeResultMovesHomeAcrossItsRounds) {
  // FX-21's shape: the code execution call's code called client tools over
  // two rounds; its result came in the response after the last round.
  Json body = Body(R"([
    {"role":"user","content":"sum the sizes"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_x","name":"code_execution","input":{"code":"..."}},
      {"type":"tool_use","id":"toolu_1","name":"client_tool","input":{},
       "caller":{"type":"code_execution_20250825","tool_id":"srvtoolu_x"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"1"}]},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_2","name":"client_tool","input":{},
       "caller":{"type":"code_execution_20250825","tool_id":"srvtoolu_x"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2","content":"2"}]},
    {"role":"assistant","content":[
      {"type":"code_execution_tool_result","tool_use_id":"srvtoolu_x",
       "content":{"type":"code_execution_result","stdout":"3","stderr":"",
                  "return_code":0,"content":[]}},
      {"type":"text","text":"The sum is 3."}]}])");
  body["tools"].push_back(
      ParseOrDie(R"({"type":"code_execution_20250825","name":"code_execution"})"));
  EXPECT_THAT(Repair(body).actions, IsEmpty());
  RepairResult normal = Normalize(body);
  ASSERT_THAT(normal.status, IsOk());
  // The call is kept (its rounds' tool_use blocks name it as their caller),
  // and its result sits right after it.
  const Json& home = normal.body["messages"][1]["content"];
  ASSERT_EQ(home.size(), 3u) << DumpJsonPretty(normal.body);
  EXPECT_EQ(home[0]["id"], "srvtoolu_x");
  EXPECT_EQ(home[1]["type"], "code_execution_tool_result");
  EXPECT_EQ(home[2]["id"], "toolu_1");
  EXPECT_EQ(normal.body["messages"][5]["content"].size(), 1u);
}

TEST(ConversationRepairTest, TrapDeferredCallWithoutResultIsDropped) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"search and call"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_d","name":"web_search","input":{"query":"q"}},
      {"type":"tool_use","id":"toolu_c","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_c","content":"ok"},
      {"type":"text","text":"also this"}]}])"));
  const Json& assistant = Msgs(result)[1]["content"];
  ASSERT_EQ(assistant.size(), 1u);
  EXPECT_EQ(assistant[0]["type"], "tool_use");
  EXPECT_THAT(result.actions[0], HasSubstr("srvtoolu_d"));
}

TEST(ConversationRepairTest, UnresolvedCallWhoseToolWasDroppedIsRemoved) {
  Json body = Body(R"([
    {"role":"user","content":"search"},
    {"role":"assistant","content":[
      {"type":"text","text":"let me search"},
      {"type":"server_tool_use","id":"srvtoolu_p","name":"web_search","input":{"query":"q"}}]}])");
  body["tools"].erase(0);
  RepairResult result = RepairClean(body);
  EXPECT_EQ(Msgs(result)[1]["content"].size(), 1u);
}

TEST(ConversationRepairTest, SeedMergedStepsAreSplit) {
  // seed 002: assistant: [text, tool-call, text, tool-call]; tool: [r1, r2].
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"write the files"},
    {"role":"assistant","content":[
      {"type":"text","text":"writing"},
      {"type":"tool_use","id":"toolu_1","name":"client_tool","input":{}},
      {"type":"text","text":"writing again"},
      {"type":"tool_use","id":"toolu_2","name":"client_tool","input":{}}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"toolu_1","content":"Tool execution aborted","is_error":true},
      {"type":"tool_result","tool_use_id":"toolu_2","content":"ok"}]}])"));
  const Json& m = Msgs(result);
  ASSERT_EQ(m.size(), 5u) << DumpJsonPretty(m);
  EXPECT_EQ(m[1]["content"].size(), 2u);
  EXPECT_EQ(m[1]["content"][1]["id"], "toolu_1");
  EXPECT_EQ(m[2]["role"], "user");
  EXPECT_EQ(m[2]["content"][0]["tool_use_id"], "toolu_1");
  EXPECT_EQ(m[2]["content"][0]["content"], "Tool execution aborted");
  EXPECT_EQ(m[3]["content"][0]["text"], "writing again");
  EXPECT_EQ(m[4]["content"].size(), 1u);
  EXPECT_EQ(m[4]["content"][0]["tool_use_id"], "toolu_2");
  EXPECT_THAT(result.actions[0], HasSubstr("split"));
}

TEST(ConversationRepairTest, MergedStepWithoutFirstResultGetsRetriedError) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"go"},
    {"role":"assistant","content":[
      {"type":"thinking","thinking":"t1","signature":"s1"},
      {"type":"tool_use","id":"toolu_1","name":"client_tool","input":{}},
      {"type":"thinking","thinking":"t2","signature":"s2"},
      {"type":"tool_use","id":"toolu_2","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2","content":"ok"}]}])",
                                         /*thinking=*/true));
  const Json& m = Msgs(result);
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[2]["content"][0]["is_error"], true);
  EXPECT_THAT(m[2]["content"][0]["content"].get<std::string>(),
              HasSubstr("interrupted and retried"));
  EXPECT_EQ(m[3]["content"][0]["type"], "thinking");
}

TEST(ConversationRepairTest, ThinkingLaterInTheMessageMovesFirst) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[
      {"type":"text","text":"x"},
      {"type":"redacted_thinking","data":"abc"},
      {"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]}])",
                                         /*thinking=*/true));
  EXPECT_EQ(Msgs(result)[1]["content"][0]["type"], "redacted_thinking");
}

TEST(ConversationRepairTest, MissingThinkingCannotBeInvented) {
  Json body = Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]}])",
                   /*thinking=*/true);
  RepairResult result = Repair(body);
  EXPECT_THAT(result.status, StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("cannot be invented")));
  RepairResult again = Repair(result.body);
  EXPECT_EQ(again.status.code(), result.status.code());
  EXPECT_THAT(again.actions, IsEmpty());
}

TEST(ConversationRepairTest, StringInputIsParsedOrReplaced) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_a","name":"client_tool","input":"{\"city\":\"Paris\"}"},
      {"type":"tool_use","id":"toolu_b","name":"client_tool","input":"{\"city\":"},
      {"type":"tool_use","id":"toolu_c","name":"client_tool"}]}])"));
  const Json& content = Msgs(result)[1]["content"];
  EXPECT_EQ(content[0]["input"], ParseOrDie(R"({"city":"Paris"})"));
  EXPECT_EQ(content[1]["input"], Json::object());
  EXPECT_EQ(content[2]["input"], Json::object());
  EXPECT_THAT(result.actions, Contains(HasSubstr("parsed the string input")));
}

TEST(ConversationRepairTest, MalformedBlocksAndEmptyMessagesAreDropped) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":[{"type":"text","text":""}, 5, {"type":"text","text":"hi"}]},
    {"role":"assistant","content":[{"type":"input_json_delta","partial_json":"{"}]},
    {"role":"assistant","content":[{"type":"text","text":"ok"},
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_gone","content":[]}]}])"));
  const Json& m = Msgs(result);
  ASSERT_EQ(m.size(), 2u) << DumpJsonPretty(m);
  EXPECT_EQ(m[0]["content"].size(), 1u);
  EXPECT_EQ(m[1]["content"].size(), 1u);
}

TEST(ConversationRepairTest, BrokenStructureIsReportedNotGuessed) {
  EXPECT_THAT(Repair(ParseOrDie(R"({"model":"m"})")).status,
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("messages: Field required")));
  EXPECT_THAT(Repair(Body(R"([{"role":"system","content":"x"}])")).status,
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Repair(Json("text")).status,
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ConversationRepairTest, ConsecutiveMessagesAreMergedOnlyWhenTouched) {
  RepairResult result = RepairClean(Body(R"([
    {"role":"user","content":"a"},
    {"role":"user","content":"b"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"assistant","content":[{"type":"text","text":"more"}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]}])"));
  // The two assistant messages are merged, and the text after the tool_use
  // reads as a second generation: split off after the tool_result.
  const Json& m = Msgs(result);
  ASSERT_EQ(m.size(), 5u) << DumpJsonPretty(m);
  EXPECT_EQ(m[0]["content"], "a");  // untouched turns keep their shape
  EXPECT_EQ(m[1]["content"], "b");
  EXPECT_EQ(m[2]["content"].size(), 1u);
  EXPECT_EQ(m[3]["content"][0]["tool_use_id"], "toolu_a");
  EXPECT_EQ(m[4]["content"][0]["text"], "more");
}

}  // namespace
}  // namespace toolmesh::common
