// Unit tests of the fake API's pieces without sockets: the SSE writer, the
// fault write plans, scenario loading and the rule-driven model.
#include <string>
#include <vector>

#include "common/request_validator.h"
#include "common/stream_accumulator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakeapi/faults.h"
#include "tests/testing/fakeapi/rule_model.h"
#include "tests/testing/fakeapi/scenario.h"
#include "tests/testing/fakeapi/sse_writer.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::fakeapi {
namespace {

using ::testing::HasSubstr;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

Json Parse(const std::string& text) {
  auto value = common::ParseJson(text);
  EXPECT_THAT(value.status(), IsOk());
  return value.ok() ? *value : Json();
}

absl::StatusOr<Json> Accumulate(const std::vector<std::string>& events) {
  common::StreamAccumulator accumulator;
  for (const std::string& event : events) {
    if (!accumulator.Feed(event).ok()) break;
  }
  (void)accumulator.Finish();
  return accumulator.FinalMessage();
}

int CountEvents(const std::vector<std::string>& events,
                const std::string& needle) {
  int n = 0;
  for (const std::string& event : events) {
    if (event.find(needle) != std::string::npos) ++n;
  }
  return n;
}

MessageSpec AllBlocksSpec() {
  MessageSpec spec;
  spec.id = "msg_test";
  spec.model = "claude-fake";
  spec.content = Parse(R"([
    {"type":"thinking","thinking":"Let me think about the weather in Paris today.","signature":"sig=="},
    {"type":"text","text":"I will look it up — with ünïcödé text that is long enough to split."},
    {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"paris weather"}},
    {"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[{"type":"web_search_result","url":"https://e.x","title":"t","encrypted_content":"x","page_age":null}]},
    {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris","days":[1,2,3]}},
    {"type":"tool_use","id":"toolu_2","name":"no_args","input":{}}
  ])");
  return spec;
}

TEST(SseWriterTest, RenderedStreamDecodesToTheSameMessage) {
  MessageSpec spec = AllBlocksSpec();
  std::vector<std::string> events = RenderMessageStream(spec);
  auto message = Accumulate(events);
  ASSERT_THAT(message.status(), IsOk());
  EXPECT_EQ((*message)["content"], spec.content);
  EXPECT_EQ((*message)["stop_reason"], "tool_use");
  EXPECT_EQ((*message)["id"], "msg_test");
  EXPECT_EQ((*message)["model"], "claude-fake");
  EXPECT_EQ((*message)["usage"]["server_tool_use"]["web_search_requests"], 1);
}

TEST(SseWriterTest, StreamsLikeTheApi) {
  std::vector<std::string> events = RenderMessageStream(AllBlocksSpec());
  EXPECT_EQ(CountEvents(events, "event: ping\ndata: {\"type\": \"ping\"}"), 1);
  EXPECT_GT(CountEvents(events, "\"text_delta\""), 1);
  EXPECT_GT(CountEvents(events, "\"thinking_delta\""), 0);
  EXPECT_EQ(CountEvents(events, "\"signature_delta\""), 1);
  // Tool input arrives in several fragments, the first one empty; the
  // no-argument tool gets only the empty fragment.
  EXPECT_EQ(CountEvents(events, "\"partial_json\":\"\""), 3);
  EXPECT_GT(CountEvents(events, "\"input_json_delta\""), 5);
  // The server tool result comes whole in its content_block_start.
  EXPECT_EQ(CountEvents(events, "\"content_block\":{\"type\":"
                                "\"web_search_tool_result\""),
            1);
  // Usage: small in message_start, cumulative in message_delta.
  EXPECT_EQ(CountEvents(events, "\"output_tokens\":1,"), 1);
  // The live API's padding before the closing brace.
  EXPECT_GT(CountEvents(events, "  }\n"), 0);
  for (const std::string& event : events) {
    EXPECT_EQ(event.substr(0, 7), "event: ");
    EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
  }
}

TEST(SseWriterTest, TruncationCutsTheLastToolInputWithoutStop) {
  MessageSpec spec = AllBlocksSpec();
  spec.content.erase(spec.content.begin() + 5);  // the last tool has input
  spec.truncate = true;
  std::vector<std::string> events = RenderMessageStream(spec);
  common::StreamAccumulator accumulator;
  for (const std::string& event : events) {
    ASSERT_THAT(accumulator.Feed(event), IsOk());
  }
  ASSERT_THAT(accumulator.Finish(), IsOk());
  auto block = accumulator.Block(4);
  ASSERT_TRUE(block.has_value());
  EXPECT_FALSE(block->stopped);
  EXPECT_EQ(block->input_state, common::InputState::kIncomplete);
  EXPECT_EQ(CountEvents(events, "\"content_block_stop\",\"index\":4"), 0);
  EXPECT_EQ((*accumulator.FinalMessage())["stop_reason"], "max_tokens");
}

TEST(SseWriterTest, SplitSseEventsKeepsTheBytes) {
  std::string bytes =
      "event: a\ndata: {\"x\":1}\n\n\nevent: b\r\ndata: 2\r\n\r\ndata: tail";
  std::vector<std::string> events = SplitSseEvents(bytes);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0], "event: a\ndata: {\"x\":1}\n\n");
  EXPECT_EQ(EventData(events[1]), "2");
  std::string joined;
  for (const std::string& event : events) joined += event;
  EXPECT_EQ(joined, bytes);
}

TEST(SseWriterTest, SplitPiecesNeverBreaksUtf8) {
  std::string text = "ééééééééééé ü ü ü ü ü";
  for (std::size_t target = 1; target < 8; ++target) {
    std::string joined;
    for (std::string_view piece : SplitPieces(text, target)) {
      ASSERT_FALSE(piece.empty());
      EXPECT_NE(static_cast<unsigned char>(piece.front()) & 0xC0, 0x80);
      joined.append(piece);
    }
    EXPECT_EQ(joined, text);
  }
}

TEST(IdSourceTest, IdsAreDeterministicPerSeed) {
  IdSource a(42);
  IdSource b(42);
  IdSource c(43);
  std::string id = a.NextId("toolu_");
  EXPECT_EQ(id, b.NextId("toolu_"));
  EXPECT_NE(id, c.NextId("toolu_"));
  EXPECT_EQ(id.size(), std::string("toolu_01").size() + 22);
}

TEST(FaultsTest, SseErrorEndsAfterNEventsWithoutMessageStop) {
  std::vector<std::string> events = RenderMessageStream(AllBlocksSpec());
  auto fault = ParseFault(Parse(R"({"type":"sse_error","after_events":3})"));
  ASSERT_THAT(fault.status(), IsOk());
  WritePlan plan = PlanWrites(events, &*fault, "req_1");
  std::string all;
  for (const Write& w : plan.writes) all += w.bytes;
  std::vector<std::string> sent = SplitSseEvents(all);
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_THAT(sent[3], HasSubstr("event: error\n"));
  EXPECT_THAT(sent[3], HasSubstr("overloaded_error"));
  EXPECT_THAT(all, ::testing::Not(HasSubstr("message_stop")));
}

TEST(FaultsTest, CutStopsAfterExactlyNBytes) {
  std::vector<std::string> events = RenderMessageStream(AllBlocksSpec());
  auto fault = ParseFault(Parse(R"({"type":"cut","after_bytes":123})"));
  ASSERT_THAT(fault.status(), IsOk());
  WritePlan plan = PlanWrites(events, &*fault, "req_1");
  std::size_t total = 0;
  for (const Write& w : plan.writes) total += w.bytes.size();
  EXPECT_EQ(total, 123u);
  EXPECT_TRUE(plan.abort_after);
}

TEST(FaultsTest, DripDelaysEveryEventButTheFirst) {
  std::vector<std::string> events = RenderMessageStream(AllBlocksSpec());
  auto fault = ParseFault(Parse(R"({"type":"drip","delay_ms":7})"));
  ASSERT_THAT(fault.status(), IsOk());
  WritePlan plan = PlanWrites(events, &*fault, "req_1");
  ASSERT_EQ(plan.writes.size(), events.size());
  EXPECT_EQ(plan.writes[0].delay_ms_before, 0);
  EXPECT_EQ(plan.writes[1].delay_ms_before, 7);
}

TEST(FaultsTest, HttpFaultsCarryRetryHeaders) {
  auto fault = FaultFromName("http_429");
  ASSERT_THAT(fault.status(), IsOk());
  HttpReply reply = HttpFaultReply(*fault, "req_9");
  EXPECT_EQ(reply.status, 429);
  EXPECT_EQ(reply.body["error"]["type"], "rate_limit_error");
  EXPECT_EQ(reply.body["request_id"], "req_9");
  EXPECT_THAT(reply.headers,
              ::testing::Contains(std::pair<std::string, std::string>(
                  "retry-after", "1")));
  auto custom = ParseFault(Parse(
      R"({"type":"http","status":503,"retry_after":null,"should_retry":"false"})"));
  ASSERT_THAT(custom.status(), IsOk());
  HttpReply reply2 = HttpFaultReply(*custom, "req_9");
  EXPECT_EQ(reply2.status, 503);
  EXPECT_EQ(reply2.body["error"]["type"], "api_error");
  ASSERT_EQ(reply2.headers.size(), 1u);
  EXPECT_EQ(reply2.headers[0].first, "x-should-retry");
}

TEST(FaultsTest, UnknownFaultsAreRejected) {
  EXPECT_THAT(FaultFromName("nope").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseFault(Parse(R"({"type":"cut","bytes":3})")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseFault(Parse(R"({"type":"http"})")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ScenarioTest, ParsesResponsesMatchesAndFaults) {
  auto scenario = ParseScenario(Parse(R"({
    "fallback": "model",
    "responses": [
      {"name": "first", "blocks": [{"type":"text","text":"hi"}], "fault": "http_529"},
      {"match": {"turn": 2, "last_user_has_tool_result_for": "$t1"},
       "blocks": [{"type":"tool_use","id":"$t1","name":"x"}], "repeat": true},
      {"rule_model": true}
    ]})"),
                                "");
  ASSERT_THAT(scenario.status(), IsOk());
  EXPECT_TRUE(scenario->fallback_to_model);
  ASSERT_EQ(scenario->responses.size(), 3u);
  EXPECT_EQ(scenario->responses[0].fault->status, 529);
  EXPECT_EQ(*scenario->responses[1].match.turn, 2);
  EXPECT_TRUE(scenario->responses[1].repeat);
  EXPECT_EQ(scenario->responses[2].source, ScenarioResponse::Source::kModel);
}

TEST(ScenarioTest, BadScenariosSayWhere) {
  EXPECT_THAT(ParseScenario(Parse(R"([{"blocks":[{"type":"text","text":""}]}])"), "")
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("responses[0].blocks[0]")));
  EXPECT_THAT(ParseScenario(Parse(R"([{"blocks":[], "colour": 1}])"), "")
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown key `colour`")));
  EXPECT_THAT(ParseScenario(Parse(R"([{"sse_file":"/no/such/file.sse"}])"), "")
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot read")));
  EXPECT_THAT(ParseScenario(Parse(R"([{"rule_model":true,"blocks":[]}])"), "")
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("exactly one")));
}

TEST(ScenarioTest, MatchesOnTheLastUserMessage) {
  Json request = Parse(R"({"messages":[
    {"role":"user","content":"hello there"},
    {"role":"assistant","content":[{"type":"tool_use","id":"toolu_A","name":"x","input":{}}]},
    {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_A","content":"ok"}]}]})");
  MatchSpec match;
  match.turn = 2;
  match.last_user_has_tool_result_for = "$a";
  auto resolve = [](const std::string&) { return std::string("toolu_A"); };
  EXPECT_TRUE(Matches(match, request, true, resolve));
  match.turn = 1;
  EXPECT_FALSE(Matches(match, request, true, resolve));
  MatchSpec text;
  text.last_user_text_contains = "hello";
  EXPECT_FALSE(Matches(text, request, true, resolve));
}

TEST(RuleModelTest, GeneratedInputsSatisfyTheirSchemas) {
  Json schema = Parse(R"({"type":"object","properties":{
      "city":{"type":"string","minLength":12,"maxLength":20},
      "n":{"type":"integer","minimum":5,"maximum":7},
      "x":{"type":"number","exclusiveMinimum":0,"maximum":1},
      "unit":{"enum":["c","f"]},
      "fixed":{"const":42},
      "flag":{"type":"boolean"},
      "tags":{"type":"array","items":{"type":"string"},"minItems":2,"maxItems":2},
      "nested":{"type":"object","properties":{"a":{"type":["null","integer"]}},"required":["a"]}
    },"required":["city","n","x","unit","fixed","flag","tags","nested"]})");
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    IdSource rng(seed);
    Json value = GenerateFromSchema(schema, rng);
    ASSERT_TRUE(value.is_object());
    std::string city = value["city"].get<std::string>();
    EXPECT_GE(city.size(), 12u);
    EXPECT_LE(city.size(), 20u);
    EXPECT_GE(value["n"].get<int>(), 5);
    EXPECT_LE(value["n"].get<int>(), 7);
    EXPECT_GT(value["x"].get<double>(), 0);
    EXPECT_LE(value["x"].get<double>(), 1);
    EXPECT_TRUE(value["unit"] == "c" || value["unit"] == "f");
    EXPECT_EQ(value["fixed"], 42);
    EXPECT_TRUE(value["flag"].is_boolean());
    EXPECT_EQ(value["tags"].size(), 2u);
    EXPECT_TRUE(value["nested"]["a"].is_number_integer());
  }
}

TEST(RuleModelTest, CallsNamedToolsInParallelThenQuotesResults) {
  Json request = Parse(R"({"model":"m","max_tokens":10,
    "tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},
             {"name":"get_time","input_schema":{"type":"object","properties":{}}},
             {"name":"unused","input_schema":{"type":"object"}}],
    "messages":[{"role":"user","content":"Use get_weather and get_time please"}]})");
  ModelReply first = RuleModelRespond(request, 1);
  EXPECT_EQ(first.stop_reason, "tool_use");
  std::vector<std::string> names;
  for (const Json& block : first.blocks) {
    if (block["type"] == "tool_use") names.push_back(block["name"]);
  }
  EXPECT_THAT(names, ::testing::ElementsAre("get_weather", "get_time"));
  ModelReply again = RuleModelRespond(request, 1);
  EXPECT_EQ(again.blocks, first.blocks);

  Json assistant = {{"role", "assistant"}, {"content", first.blocks}};
  Json results = Json::array();
  for (const Json& block : first.blocks) {
    if (block["type"] != "tool_use") continue;
    results.push_back({{"type", "tool_result"},
                       {"tool_use_id", block["id"]},
                       {"content", "result of " + block["name"].get<std::string>()}});
  }
  request["messages"].push_back(assistant);
  request["messages"].push_back({{"role", "user"}, {"content", results}});
  EXPECT_TRUE(common::ValidateRequest(request).empty());
  ModelReply second = RuleModelRespond(request, 1);
  EXPECT_EQ(second.stop_reason, "end_turn");
  ASSERT_FALSE(second.blocks.empty());
  std::string text = second.blocks.back()["text"];
  EXPECT_THAT(text, HasSubstr("get_weather: result of get_weather"));
  EXPECT_THAT(text, HasSubstr("get_time: result of get_time"));
}

TEST(RuleModelTest, ToolChoiceAndThinkingAreHonoured) {
  Json request = Parse(R"({"model":"m","max_tokens":10,
    "thinking":{"type":"enabled","budget_tokens":1024},
    "tool_choice":{"type":"tool","name":"b"},
    "tools":[{"name":"a","input_schema":{"type":"object"}},
             {"name":"b","input_schema":{"type":"object"}}],
    "messages":[{"role":"user","content":"do it with a"}]})");
  ModelReply reply = RuleModelRespond(request, 3);
  ASSERT_GE(reply.blocks.size(), 2u);
  EXPECT_EQ(reply.blocks[0]["type"], "thinking");
  EXPECT_FALSE(reply.blocks[0]["signature"].get<std::string>().empty());
  EXPECT_EQ(reply.blocks.back()["name"], "b");
  request["tool_choice"] = {{"type", "none"}};
  EXPECT_EQ(RuleModelRespond(request, 3).stop_reason, "end_turn");
}

TEST(RuleModelTest, WebSearchWhenAskedAndPauseTurnContinuationGetsResult) {
  Json request = Parse(R"({"model":"m","max_tokens":10,
    "tools":[{"type":"web_search_20250305","name":"web_search"}],
    "messages":[{"role":"user","content":"search the news"}]})");
  ModelReply reply = RuleModelRespond(request, 0);
  EXPECT_EQ(reply.stop_reason, "end_turn");
  ASSERT_GE(reply.blocks.size(), 3u);
  EXPECT_EQ(reply.blocks[0]["type"], "server_tool_use");
  EXPECT_EQ(reply.blocks[1]["type"], "web_search_tool_result");
  EXPECT_EQ(reply.blocks[1]["tool_use_id"], reply.blocks[0]["id"]);

  // A pause_turn continuation: the dangling call is answered first.
  request["messages"].push_back(
      {{"role", "assistant"},
       {"content", Json::array({{{"type", "server_tool_use"},
                                 {"id", "srvtoolu_X"},
                                 {"name", "web_search"},
                                 {"input", {{"query", "q"}}}}})}});
  ModelReply continuation = RuleModelRespond(request, 0);
  ASSERT_FALSE(continuation.blocks.empty());
  EXPECT_EQ(continuation.blocks[0]["type"], "web_search_tool_result");
  EXPECT_EQ(continuation.blocks[0]["tool_use_id"], "srvtoolu_X");
}

}  // namespace
}  // namespace toolmesh::fakeapi
