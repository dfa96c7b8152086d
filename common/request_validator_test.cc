#include "common/request_validator.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace toolmesh::common {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;

Json ParseOrDie(std::string_view text) {
  absl::StatusOr<Json> json = ParseJson(text);
  EXPECT_TRUE(json.ok()) << json.status();
  return json.ok() ? *json : Json();
}

// A body around `messages` (JSON text) with a web_search and a client tool.
Json Body(std::string_view messages, bool thinking = false) {
  Json body = ParseOrDie(R"({"model":"claude-sonnet-4-5","max_tokens":64,
    "tools":[{"type":"web_search_20250305","name":"web_search"},
             {"name":"client_tool","input_schema":{"type":"object"}}]})");
  if (thinking) body["thinking"] = ParseOrDie(R"({"type":"enabled","budget_tokens":1024})");
  body["messages"] = ParseOrDie(messages);
  return body;
}

std::vector<std::string> Messages(const std::vector<Violation>& violations) {
  std::vector<std::string> out;
  for (const auto& v : violations) out.push_back(v.message);
  return out;
}


std::string D1(std::string_view path, std::string_view ids) {
  return std::string(path) +
         ": `tool_use` ids were found without `tool_result` blocks "
         "immediately after: " +
         std::string(ids) +
         ". Each `tool_use` block must have a corresponding `tool_result` "
         "block in the next message.";
}

TEST(RequestValidatorTest, Fixture19OrphanServerIdGivesTheRecordedMessage) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  auto text = toolmesh::testing::ReadFile(
      dir + "/19-400-orphan-srvtoolu-in-tool-result.request-response.json");
  ASSERT_TRUE(text.ok()) << text.status();
  Json fixture = ParseOrDie(*text);
  auto violations = ValidateRequest(fixture["request"]);
  ASSERT_THAT(violations, SizeIs(1));
  EXPECT_EQ(violations[0].message,
            fixture["response"]["body"]["error"]["message"].get<std::string>());
  EXPECT_EQ(violations[0].path, "messages.2.content.0");
  EXPECT_EQ(violations[0].rule, Rule::kUnexpectedToolResult);
  Json error = ApiErrorBody(violations[0], "req_011Cd65sEszHNbYYRoYTMjZU");
  EXPECT_EQ(error, fixture["response"]["body"]);
}

TEST(RequestValidatorTest, Fixture20ClientToolUseBeforeServerPairGivesD1) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  auto text = toolmesh::testing::ReadFile(
      dir + "/20-400-tool-use-without-tool-result.error.json");
  ASSERT_TRUE(text.ok()) << text.status();
  Json error = ParseOrDie(*text);
  Json body = Body(R"([
    {"role":"user","content":[{"type":"text","text":"search and call"}]},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_issue8112_custom","name":"client_tool","input":{}},
      {"type":"server_tool_use","id":"srvtoolu_issue8112","name":"web_search","input":{"query":"q"}},
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_issue8112","content":[]}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"toolu_issue8112_custom","content":"ok"}]}])");
  auto violations = ValidateRequest(body);
  ASSERT_THAT(violations, SizeIs(1));
  EXPECT_EQ(violations[0].message, error["error"]["message"].get<std::string>());
  EXPECT_EQ(violations[0].path, "messages.1");
  EXPECT_EQ(ApiErrorBody(violations[0], error["request_id"].get<std::string>()),
            error);
}

TEST(RequestValidatorTest, RecordedValidRequestsPass) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  for (const char* name :
       {"07-thinking-then-client-tool-use_turn2.request.json",
        "10-thinking-web-search-pause-turn_part2-continuation.request.json"}) {
    auto text = toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_THAT(Messages(ValidateRequest(ParseOrDie(*text))), IsEmpty())
        << name;
  }
}

TEST(RequestValidatorTest, StructuralErrorsUseApiStyleTexts) {
  EXPECT_THAT(Messages(ValidateRequest(Json::array())),
              ElementsAre("Input should be a valid dictionary"));
  EXPECT_THAT(Messages(ValidateRequest(ParseOrDie(R"({"model":"m"})"))),
              ElementsAre("messages: Field required"));
  EXPECT_THAT(Messages(ValidateRequest(ParseOrDie(R"({"messages":{}})"))),
              ElementsAre("messages: Input should be a valid list"));
  EXPECT_THAT(Messages(ValidateRequest(ParseOrDie(R"({"messages":[]})"))),
              ElementsAre("messages: at least one message is required"));
  EXPECT_THAT(
      Messages(ValidateRequest(Body(R"([{"role":"system","content":"x"},
        {"content":"x"}, {"role":"user"}, {"role":"user","content":7}, 5,
        {"role":"user","content":[{"text":"x"}, 3, {"type":1}]}])"))),
      ElementsAre("messages.0.role: Input should be 'user' or 'assistant'",
                  "messages.1.role: Field required",
                  "messages.2.content: Field required",
                  "messages.3.content: Input should be a valid list",
                  "messages.4: Input should be a valid dictionary",
                  "messages.5.content.0.type: Field required",
                  "messages.5.content.1: Input should be a valid dictionary",
                  "messages.5.content.2.type: Input should be a valid string"));
}

TEST(RequestValidatorTest, SchemaErrorsComeBeforeConversationRules) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"client_tool","input":{}}]},
    {"role":"user","content":"no result"},
    {"role":"assistant","content":[{"type":"text"}]}])"));
  EXPECT_THAT(Messages(violations),
              ElementsAre("messages.3.content.0.text.text: Field required",
                          D1("messages.1", "toolu_1")));
}

TEST(RequestValidatorTest, MissingToolResultListsAllIdsInOrder) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[
      {"type":"text","text":"calling"},
      {"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}},
      {"type":"tool_use","id":"toolu_b","name":"client_tool","input":{}},
      {"type":"tool_use","id":"toolu_c","name":"client_tool","input":{}}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"toolu_b","content":"ok"}]}])"));
  ASSERT_THAT(violations, SizeIs(1));
  EXPECT_EQ(violations[0].message, D1("messages.1", "toolu_a, toolu_c"));
  EXPECT_EQ(violations[0].rule, Rule::kToolUseWithoutResult);
  EXPECT_EQ(violations[0].message_index, 1);
}

TEST(RequestValidatorTest, TextBeforeToolResultsCountsAsMissing) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"text","text":"here"},
      {"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]}])"));
  EXPECT_THAT(Messages(violations), ElementsAre(D1("messages.1", "toolu_a")));
}

TEST(RequestValidatorTest, TextAfterToolResultsIsValid) {
  EXPECT_THAT(ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"},
      {"type":"text","text":"and more"}]}])")),
              IsEmpty());
}

TEST(RequestValidatorTest, TrailingAssistantToolUseIsPendingNotAViolation) {
  EXPECT_THAT(ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}},
      {"type":"text","text":"prefill"}]}])")),
              IsEmpty());
}

TEST(RequestValidatorTest, ToolResultWithoutToolUseIsUnexpected) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"?"}]}])"));
  EXPECT_THAT(Messages(violations),
              ElementsAre("messages.0.content.0: unexpected `tool_use_id` found "
                          "in `tool_result` blocks: toolu_x. Each `tool_result` "
                          "block must have a corresponding `tool_use` block in "
                          "the previous message."));
}

TEST(RequestValidatorTest, ConsecutiveMessagesAreMergedWithOriginalPaths) {
  // The tool_use sits in the second of two assistant messages and its result
  // in the second of two user messages: valid once merged.
  EXPECT_THAT(ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"text","text":"thinking aloud"}]},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]},
    {"role":"user","content":"thanks"}])")),
              IsEmpty());
  // A tool_use followed by a separate assistant message with text is not
  // last in the merged turn; the path names the original message.
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"text","text":"x"}]},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"assistant","content":"more"},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]}])"));
  EXPECT_THAT(Messages(violations), ElementsAre(D1("messages.2", "toolu_a")));
}

constexpr char kThinkingText[] =
    "`. When `thinking` is enabled, a final `assistant` message must start "
    "with a thinking block (preceeding the lastmost set of `tool_use` and "
    "`tool_result` blocks). We recommend you include thinking blocks from "
    "previous turns. To avoid this requirement, disable `thinking`.";

TEST(RequestValidatorTest, ThinkingMustLeadTheLastToolRound) {
  const char* messages = R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]}])";
  EXPECT_THAT(ValidateRequest(Body(messages)), IsEmpty());
  auto violations = ValidateRequest(Body(messages, /*thinking=*/true));
  EXPECT_THAT(Messages(violations),
              ElementsAre(std::string("messages.1.content.0.type: Expected "
                                      "`thinking` or `redacted_thinking`, but "
                                      "found `tool_use") +
                          kThinkingText));
  Json adaptive = Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"text","text":"x"},
      {"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]}])");
  adaptive["thinking"] = ParseOrDie(R"({"type":"adaptive"})");
  EXPECT_THAT(Messages(ValidateRequest(adaptive)),
              ElementsAre(std::string("messages.1.content.0.type: Expected "
                                      "`thinking` or `redacted_thinking`, but "
                                      "found `text") +
                          kThinkingText));
}

TEST(RequestValidatorTest, ThinkingRuleDoesNotApplyToClosedRounds) {
  EXPECT_THAT(ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_a","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_a","content":"ok"}]},
    {"role":"assistant","content":"done"},
    {"role":"user","content":"next question"}])",
                                   /*thinking=*/true)),
              IsEmpty());
}

TEST(RequestValidatorTest, ThinkingBlockNeedsSignature) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"x"}]}])"));
  EXPECT_THAT(Messages(violations),
              ElementsAre("messages.1.content.0.thinking.signature: Field required"));
}

std::string D6(std::string_view path, std::string_view id) {
  return std::string(path) + ": `web_search` tool use with id `" +
         std::string(id) +
         "` was found without a corresponding `web_search_tool_result` block";
}

constexpr char kDeferred[] = R"([
    {"role":"user","content":"search and call"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_d","name":"web_search","input":{"query":"q"}},
      {"type":"tool_use","id":"toolu_c","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_c","content":"ok"}]}])";

TEST(RequestValidatorTest, DeferredServerCallIsValidWhileOnlyToolResultsFollow) {
  EXPECT_THAT(ValidateRequest(Body(kDeferred)), IsEmpty());
}

TEST(RequestValidatorTest, TrapDeferredServerCallFailsOnceTextFollows) {
  Json body = Body(kDeferred);
  body["messages"][2]["content"].push_back(
      ParseOrDie(R"({"type":"text","text":"also this"})"));
  EXPECT_THAT(Messages(ValidateRequest(body)),
              ElementsAre(D6("messages.1.content.0", "srvtoolu_d")));
  Json later_turn = Body(kDeferred);
  later_turn["messages"].push_back(ParseOrDie(R"({"role":"assistant","content":"x"})"));
  later_turn["messages"].push_back(ParseOrDie(R"({"role":"user","content":"y"})"));
  EXPECT_THAT(Messages(ValidateRequest(later_turn)),
              ElementsAre(D6("messages.1.content.0", "srvtoolu_d")));
}

constexpr char kLateResult[] = R"([
    {"role":"user","content":"search and call"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_d","name":"web_search","input":{"query":"q"}},
      {"type":"tool_use","id":"toolu_c","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_c","content":"ok"}]},
    {"role":"assistant","content":[
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_d","content":[]},
      {"type":"text","text":"found it"},
      {"type":"tool_use","id":"toolu_e","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_e","content":"ok"}]}])";

TEST(RequestValidatorTest, LateServerResultIsAcceptedWhileOnlyToolResultsFollow) {
  EXPECT_THAT(ValidateRequest(Body(kLateResult)), IsEmpty());
  ValidateOptions strict;
  strict.accept_late_server_results = false;
  EXPECT_THAT(Messages(ValidateRequest(Body(kLateResult), strict)),
              ElementsAre(D6("messages.1.content.0", "srvtoolu_d")));
  Json follow_up = Body(kLateResult);
  follow_up["messages"].push_back(ParseOrDie(R"({"role":"assistant","content":"done"})"));
  follow_up["messages"].push_back(ParseOrDie(R"({"role":"user","content":"thanks"})"));
  EXPECT_THAT(Messages(ValidateRequest(follow_up)),
              ElementsAre(D6("messages.1.content.0", "srvtoolu_d")));
}

TEST(RequestValidatorTest, PauseTurnContinuationAsSeparateMessageIsValid) {
  EXPECT_THAT(ValidateRequest(Body(R"([
    {"role":"user","content":"search"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_p","name":"web_search","input":{"query":"q"}}]},
    {"role":"assistant","content":[
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_p","content":[]},
      {"type":"text","text":"found"}]},
    {"role":"user","content":"thanks"}])")),
              IsEmpty());
}

// Programmatic tool calling (FX-21): the code execution call stays open while
// its code calls client tools, one API response per round; each round's
// response holds only `tool_use` blocks whose `caller` names the call.
constexpr char kProgrammatic[] = R"([
    {"role":"user","content":"sum the sizes"},
    {"role":"assistant","content":[
      {"type":"text","text":"Running code."},
      {"type":"server_tool_use","id":"srvtoolu_x","name":"code_execution","input":{"code":"..."}},
      {"type":"tool_use","id":"toolu_1","name":"client_tool","input":{"p":1},
       "caller":{"type":"code_execution_20250825","tool_id":"srvtoolu_x"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"1"}]},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_2","name":"client_tool","input":{"p":2},
       "caller":{"type":"code_execution_20250825","tool_id":"srvtoolu_x"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2","content":"2"}]}])";

Json ProgrammaticBody() {
  Json body = Body(kProgrammatic);
  body["tools"].push_back(
      ParseOrDie(R"({"type":"code_execution_20250825","name":"code_execution"})"));
  return body;
}

TEST(RequestValidatorTest, ProgrammaticToolCallingRoundsKeepTheCodeCallOpen) {
  EXPECT_THAT(ValidateRequest(ProgrammaticBody()), IsEmpty());
}

TEST(RequestValidatorTest, ProgrammaticCodeResultAfterItsRoundsIsALateResult) {
  Json body = ProgrammaticBody();
  body["messages"].push_back(ParseOrDie(R"({"role":"assistant","content":[
      {"type":"code_execution_tool_result","tool_use_id":"srvtoolu_x",
       "content":{"type":"code_execution_result","stdout":"3","stderr":"",
                  "return_code":0,"content":[]}},
      {"type":"text","text":"The sum is 3."}]})"));
  EXPECT_THAT(ValidateRequest(body), IsEmpty());
  ValidateOptions strict;
  strict.accept_late_server_results = false;
  EXPECT_THAT(Messages(ValidateRequest(body, strict)),
              ElementsAre("messages.1.content.1: `code_execution` tool use with "
                          "id `srvtoolu_x` was found without a corresponding "
                          "`code_execution_tool_result` block"));
  // The trap holds for it too: a follow-up with other content.
  body["messages"].push_back(ParseOrDie(R"({"role":"user","content":"thanks"})"));
  EXPECT_THAT(Messages(ValidateRequest(body)),
              ElementsAre("messages.1.content.1: `code_execution` tool use with "
                          "id `srvtoolu_x` was found without a corresponding "
                          "`code_execution_tool_result` block"));
}

TEST(RequestValidatorTest, RoundOfOtherCallsDoesNotExtendAnOpenServerCall) {
  // toolu_2 was called directly (no caller): the model sampled again, so the
  // deferred web search had to be answered at the start of that turn.
  Json body = Body(R"([
    {"role":"user","content":"search and call"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_d","name":"web_search","input":{"query":"q"}},
      {"type":"tool_use","id":"toolu_c","name":"client_tool","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_c","content":"ok"}]},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_2","name":"client_tool","input":{},
       "caller":{"type":"direct"}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2","content":"ok"}]}])");
  EXPECT_THAT(Messages(ValidateRequest(body)),
              ElementsAre(D6("messages.1.content.0", "srvtoolu_d")));
}

TEST(RequestValidatorTest, UnresolvedServerCallNeedsItsTool) {
  Json body = Body(kDeferred);
  body["tools"].erase(0);
  EXPECT_THAT(Messages(ValidateRequest(body)),
              ElementsAre(D6("messages.1.content.0", "srvtoolu_d") +
                          ", but no `web_search` tool was provided"));
  ValidateOptions lenient;
  lenient.require_server_tool_definitions = false;
  EXPECT_THAT(ValidateRequest(body, lenient), IsEmpty());
}

TEST(RequestValidatorTest, McpAndOtherServerToolsUseTheirNames) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[
      {"type":"mcp_tool_use","id":"mcptoolu_1","name":"echo","server_name":"s","input":{}},
      {"type":"server_tool_use","id":"srvtoolu_r","name":"tool_search_tool_regex","input":{}}]},
    {"role":"user","content":"next"}])"));
  EXPECT_THAT(
      Messages(violations),
      ElementsAre("messages.1.content.0: mcp_tool_use with id mcptoolu_1 was "
                  "found without a corresponding mcp_tool_result block",
                  "messages.1.content.1: `tool_search_tool_regex` tool use with "
                  "id `srvtoolu_r` was found without a corresponding "
                  "`tool_search_tool_regex_tool_result` block"));
}

TEST(RequestValidatorTest, ServerResultWithoutCallIsReverseOrphan) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[
      {"type":"web_search_tool_result","tool_use_id":"srvtoolu_z","content":[]},
      {"type":"text","text":"x"}]}])"));
  EXPECT_THAT(Messages(violations),
              ElementsAre("messages.1.content.0: unexpected `tool_use_id` found "
                          "in `web_search_tool_result` blocks: srvtoolu_z. Each "
                          "`web_search_tool_result` block must have a "
                          "corresponding `server_tool_use` block before it."));
}

TEST(RequestValidatorTest, ToolInputMustBeAnObject) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":"a"},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"toolu_a","name":"client_tool","input":"{\"x\":1"},
      {"type":"tool_use","id":"toolu_b","name":"client_tool"}]}])"));
  EXPECT_THAT(Messages(violations),
              ElementsAre("messages.1.content.0.tool_use.input: Input should be an object",
                          "messages.1.content.1.tool_use.input: Field required"));
}

TEST(RequestValidatorTest, RawDeltaAndEmptyTextAreRejected) {
  auto violations = ValidateRequest(Body(R"([
    {"role":"user","content":[{"type":"text","text":""}]},
    {"role":"assistant","content":[{"type":"input_json_delta","partial_json":"{"}]}])"));
  ASSERT_THAT(violations, SizeIs(2));
  EXPECT_EQ(violations[0].rule, Rule::kUnknownBlockTag);
  EXPECT_THAT(violations[0].message,
              ::testing::StartsWith("messages.1.content.0: Input tag "
                                    "'input_json_delta' does not match any of "
                                    "the expected tags: 'text', "));
  EXPECT_EQ(violations[1].message,
            "messages.0.content.0: text content blocks must be non-empty");
}

TEST(RequestValidatorTest, EmptyContentIsAllowedOnlyForFinalAssistant) {
  EXPECT_THAT(ValidateRequest(Body(R"([{"role":"user","content":"a"},
    {"role":"assistant","content":[]}])")),
              IsEmpty());
  EXPECT_THAT(Messages(ValidateRequest(Body(R"([{"role":"user","content":""},
    {"role":"assistant","content":"x"}])"))),
              ElementsAre("messages.0: all messages must have non-empty content "
                          "except for the optional final assistant message"));
}

TEST(RequestValidatorTest, UnknownBlockTypesAreKept) {
  EXPECT_THAT(ValidateRequest(Body(R"([{"role":"user","content":"a"},
    {"role":"assistant","content":[{"type":"future_block","x":1},{"type":"text","text":"t"}]}])")),
              IsEmpty());
}

TEST(RequestValidatorTest, RuleNamesAreDistinct) {
  EXPECT_EQ(RuleName(Rule::kToolUseWithoutResult), "tool_use_without_result");
  EXPECT_EQ(RuleName(Rule::kServerToolNotProvided), "server_tool_not_provided");
  EXPECT_NE(RuleName(Rule::kStructure), RuleName(Rule::kFieldRequired));
}

}  // namespace
}  // namespace toolmesh::common
