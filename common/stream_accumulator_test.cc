#include "common/stream_accumulator.h"

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;
using Kind = StreamError::Kind;
using State = StreamAccumulator::State;

// Debian's Abseil has its own string_view type.
absl::string_view AV(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

Json J(std::string_view text) {
  absl::StatusOr<Json> value = ParseJson(text);
  EXPECT_THAT(value, IsOk()) << text;
  return value.ok() ? *value : Json();
}

// One SSE event whose name is the JSON `type` of `data`.
std::string Ev(std::string_view data) {
  Json parsed = J(data);
  return "event: " + std::string(GetString(parsed, "type")) + "\ndata: " +
         std::string(data) + "\n\n";
}

const std::string kStart =
    R"({"type":"message_start","message":{"id":"msg_1","type":"message",)"
    R"("role":"assistant","model":"m","content":[],"stop_reason":null,)"
    R"("stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}})";
const std::string kStop = R"({"type":"message_stop"})";

std::string BlockStart(int index, const std::string& block) {
  return Ev(absl::StrCat(R"({"type":"content_block_start","index":)", index,
                         R"(,"content_block":)", block, "}"));
}
std::string Delta(int index, const std::string& delta) {
  return Ev(absl::StrCat(R"({"type":"content_block_delta","index":)", index,
                         R"(,"delta":)", delta, "}"));
}
std::string InputDelta(int index, const std::string& fragment) {
  return Delta(index, absl::StrCat(R"({"type":"input_json_delta","partial_json":)",
                                   DumpJson(Json(fragment)), "}"));
}
std::string BlockStop(int index) {
  return Ev(absl::StrCat(R"({"type":"content_block_stop","index":)", index,
                         "}"));
}
std::string MessageDelta(const std::string& stop_reason,
                         const std::string& usage = R"({"output_tokens":5})") {
  return Ev(absl::StrCat(R"({"type":"message_delta","delta":{"stop_reason":")",
                         stop_reason, R"(","stop_sequence":null},"usage":)",
                         usage, "}"));
}

// Records every observer callback as a line.
class Recorder : public StreamObserver {
 public:
  const StreamAccumulator* accumulator = nullptr;
  std::vector<std::string> calls;
  std::vector<std::string> partial_inputs;  // after each input delta
  std::vector<Json> stopped_blocks;
  std::vector<BlockInfo> stopped_infos;
  std::optional<StreamError> error;

  void OnMessageStart(const Json& message) override {
    calls.push_back(absl::StrCat("message_start ", AV(GetString(message, "id"))));
  }
  void OnBlockStart(std::int64_t index, const Json& block) override {
    calls.push_back(
        absl::StrCat("block_start ", index, " ", AV(GetString(block, "type"))));
  }
  void OnTextDelta(std::int64_t index, std::string_view text) override {
    calls.push_back(absl::StrCat("text ", index, " ", AV(text)));
  }
  void OnThinkingDelta(std::int64_t index, std::string_view text) override {
    calls.push_back(absl::StrCat("thinking ", index, " ", AV(text)));
  }
  void OnSignatureDelta(std::int64_t index, std::string_view text) override {
    calls.push_back(absl::StrCat("signature ", index, " ", AV(text)));
  }
  void OnInputJsonDelta(std::int64_t index, std::string_view text) override {
    calls.push_back(absl::StrCat("input ", index, " ", AV(text)));
    if (accumulator != nullptr) {
      const Json* partial = accumulator->PartialInput(index);
      partial_inputs.push_back(partial == nullptr ? "<none>"
                                                  : DumpJson(*partial));
    }
  }
  void OnCitation(std::int64_t index, const Json&) override {
    calls.push_back(absl::StrCat("citation ", index));
  }
  void OnBlockStop(std::int64_t index, const Json& block,
                   const BlockInfo& info) override {
    calls.push_back(absl::StrCat("block_stop ", index,
                                 info.runnable() ? " runnable" : ""));
    stopped_blocks.push_back(block);
    stopped_infos.push_back(info);
  }
  void OnMessageDelta(const Json&) override { calls.push_back("message_delta"); }
  void OnMessageStop(const Json&) override { calls.push_back("message_stop"); }
  void OnError(const StreamError& e) override {
    calls.push_back(absl::StrCat("error ", AV(StreamErrorKindName(e.kind))));
    error = e;
  }
};

// The outcome of one run, comparable across chunkings.
struct Outcome {
  State state;
  std::string error;  // kind + message
  std::string final_message;

  bool operator==(const Outcome& other) const {
    return state == other.state && error == other.error &&
           final_message == other.final_message;
  }
};

Outcome Describe(const StreamAccumulator& acc) {
  Outcome outcome{acc.state(), "", ""};
  if (acc.error().has_value()) {
    outcome.error = absl::StrCat(AV(StreamErrorKindName(acc.error()->kind)), ": ",
                                 acc.error()->message);
  }
  absl::StatusOr<Json> final_message = acc.FinalMessage();
  if (final_message.ok()) outcome.final_message = DumpJson(*final_message);
  return outcome;
}

// Feeds `bytes` in `chunk`-byte pieces (0: whole) and finishes.
Outcome RunBytes(std::string_view bytes, std::size_t chunk, bool live = false) {
  StreamAccumulator::Options options;
  options.live_partial_input = live;
  StreamAccumulator acc(options);
  if (chunk == 0) {
    (void)acc.Feed(bytes);
  } else {
    for (std::size_t pos = 0; pos < bytes.size(); pos += chunk) {
      (void)acc.Feed(bytes.substr(pos, chunk));
    }
  }
  (void)acc.Finish();
  return Describe(acc);
}

// The JSON data of every event in a fixture (its `data:` lines).
std::vector<Json> FixtureEvents(const std::string& bytes) {
  std::vector<Json> events;
  for (absl::string_view line : absl::StrSplit(bytes, '\n')) {
    if (!absl::StartsWith(line, "data:")) continue;
    line.remove_prefix(5);
    absl::StatusOr<Json> event =
        ParseJson(std::string_view(line.data(), line.size()));
    if (event.ok()) events.push_back(*event);
  }
  return events;
}

std::string ReadFixture(const std::string& dir, const std::string& prefix) {
  for (const std::string& name : ::toolmesh::testing::FixtureNames(".sse")) {
    if (absl::StartsWith(name, prefix)) {
      absl::StatusOr<std::string> bytes =
          ::toolmesh::testing::ReadFile(dir + "/" + name);
      EXPECT_THAT(bytes, IsOk());
      return bytes.ok() ? *bytes : std::string();
    }
  }
  ADD_FAILURE() << "no fixture " << prefix;
  return "";
}

// Runs a fixture whole with an observer.
struct StreamRun {
  explicit StreamRun(std::string_view bytes, bool live = false)
      : acc(Options(live), &recorder) {
    recorder.accumulator = &acc;
    feed_status = acc.Feed(bytes);
    finish_status = acc.Finish();
  }
  static StreamAccumulator::Options Options(bool live) {
    StreamAccumulator::Options options;
    options.live_partial_input = live;
    return options;
  }
  Json Final() const {
    absl::StatusOr<Json> message = acc.FinalMessage();
    EXPECT_THAT(message, IsOk());
    return message.ok() ? *message : Json();
  }

  Recorder recorder;
  StreamAccumulator acc;
  absl::Status feed_status;
  absl::Status finish_status;
};

// ---------------------------------------------------------------------------
// Every fixture: chunking never changes the outcome.

TEST(StreamAccumulatorTest, EveryFixtureGivesTheSameOutcomeAtEverySplit) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  const std::vector<std::string> names =
      ::toolmesh::testing::FixtureNames(".sse");
  ASSERT_FALSE(names.empty());
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> bytes =
        ::toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_THAT(bytes, IsOk());
    const Outcome whole = RunBytes(*bytes, 0);
    EXPECT_NE(whole.state, State::kOpen);
    EXPECT_NE(whole.state, State::kAwaitingMessageStart);
    EXPECT_TRUE(RunBytes(*bytes, 1) == whole) << "1-byte chunks differ";
    EXPECT_TRUE(RunBytes(*bytes, 0, /*live=*/true) == whole)
        << "live mode differs";
    for (std::size_t chunk = 2; chunk <= 64; ++chunk) {
      ASSERT_TRUE(RunBytes(*bytes, chunk) == whole) << "chunk " << chunk;
    }
  }
}

TEST(StreamAccumulatorTest, EveryRecordedFixtureCompletesOrFailsAsExpected) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  for (const std::string& name : ::toolmesh::testing::FixtureNames(".sse")) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> bytes =
        ::toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_THAT(bytes, IsOk());
    Outcome outcome = RunBytes(*bytes, 0);
    const bool expect_failure = absl::StartsWith(name, "15-") ||
                                absl::StartsWith(name, "16-") ||
                                absl::StartsWith(name, "17-");
    EXPECT_EQ(outcome.state, expect_failure ? State::kFailed : State::kComplete)
        << outcome.error;
  }
}

// ---------------------------------------------------------------------------
// Per-fixture assertions.

TEST(StreamAccumulatorTest, Fixture01TextKeepsMessageStartKeyOrder) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  std::string bytes = ReadFixture(dir, "01-");
  StreamRun run(bytes);
  Json message = run.Final();
  // The expected text is the concatenation of the file's text deltas.
  std::string text;
  Json start_message;
  for (const Json& event : FixtureEvents(bytes)) {
    if (GetString(event, "type") == "message_start") {
      start_message = event["message"];
    }
    if (GetString(event, "type") == "content_block_delta") {
      text += GetString(event["delta"], "text");
    }
  }
  ASSERT_EQ(message["content"].size(), 1u);
  EXPECT_EQ(message["content"][0]["text"], text);
  EXPECT_EQ(message["stop_reason"], "end_turn");
  std::vector<std::string> keys, start_keys;
  for (auto it = message.begin(); it != message.end(); ++it) {
    keys.push_back(it.key());
  }
  for (auto it = start_message.begin(); it != start_message.end(); ++it) {
    start_keys.push_back(it.key());
  }
  EXPECT_EQ(keys, start_keys);
  EXPECT_EQ(keys.front(), "model");
  EXPECT_EQ(message["usage"]["output_tokens"], 30);
  EXPECT_EQ(message["usage"]["service_tier"], "standard");
}

TEST(StreamAccumulatorTest, Fixture02ToolInputIsRebuiltObject) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "02-"));
  Json message = run.Final();
  ASSERT_EQ(message["content"].size(), 2u);
  const Json& tool = message["content"][1];
  EXPECT_EQ(tool["type"], "tool_use");
  EXPECT_EQ(tool["input"], J(R"({"location":"Paris"})"));
  EXPECT_EQ(tool["caller"], J(R"({"type":"direct"})"));
  EXPECT_EQ(message["stop_reason"], "tool_use");
  EXPECT_EQ(message["usage"]["input_tokens"], 377);  // kept from start
  EXPECT_EQ(message["usage"]["output_tokens"], 65);
  std::optional<BlockInfo> info = run.acc.Block(1);
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(info->runnable());
  EXPECT_EQ(info->raw_input, R"({"location": "Paris"})");
}

TEST(StreamAccumulatorTest, Fixture03TruncatedToolCallIsIncompleteAndNotRunnable) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "03-"));
  Json message = run.Final();
  EXPECT_EQ(message["stop_reason"], "max_tokens");
  ASSERT_EQ(message["content"].size(), 2u);
  std::optional<BlockInfo> info = run.acc.Block(1);
  ASSERT_TRUE(info.has_value());
  EXPECT_FALSE(info->stopped);
  EXPECT_EQ(info->input_state, InputState::kIncomplete);
  EXPECT_FALSE(info->runnable());
  EXPECT_THAT(std::string(info->raw_input), HasSubstr("Filing taxes"));
  // Never offered for dispatch: only block 0 stopped.
  EXPECT_THAT(run.recorder.calls, Not(::testing::Contains("block_stop 1")));
  ASSERT_EQ(run.recorder.stopped_blocks.size(), 1u);
  // Shown partially parsed, as the TypeScript SDK does.
  // The string still being received ("Filing taxes...) is dropped, as the
  // SDK's partialParse does; the four complete lines stay.
  const Json& input = message["content"][1]["input"];
  EXPECT_EQ(input["filename"], "taxes.txt");
  ASSERT_TRUE(input["lines_of_text"].is_array());
  EXPECT_EQ(input["lines_of_text"].size(), 4u);
  EXPECT_EQ(input["lines_of_text"][0],
            "# COMPREHENSIVE TAX GUIDE FOR INDIVIDUALS WITH MULTIPLE W-2s");
  // The partial message holds only the block that completed.
  EXPECT_EQ(run.acc.PartialMessage()["content"].size(), 1u);
}

TEST(StreamAccumulatorTest, Fixture04ThreeParallelToolCallsDispatchEarly) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "04-"));
  Json message = run.Final();
  ASSERT_EQ(message["content"].size(), 3u);
  const char* queries[] = {"alpha", "beta", "gamma"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(message["content"][i]["input"],
              Json({{"query", queries[i]}}));
    EXPECT_TRUE(run.recorder.stopped_infos[i].runnable());
  }
  // Each tool is offered before the next block starts and before
  // message_stop.
  const auto& calls = run.recorder.calls;
  auto pos = [&](const std::string& call) {
    return std::find(calls.begin(), calls.end(), call) - calls.begin();
  };
  EXPECT_LT(pos("block_stop 0 runnable"), pos("block_start 1 tool_use"));
  EXPECT_LT(pos("block_stop 2 runnable"), pos("message_stop"));
}

TEST(StreamAccumulatorTest, Fixture05EmptyInputBecomesEmptyObject) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "05-"));
  Json message = run.Final();
  EXPECT_EQ(message["content"][1]["input"], Json::object());
  EXPECT_TRUE(run.acc.Block(1)->runnable());
  EXPECT_TRUE(run.acc.Block(1)->received_input_deltas);
}

TEST(StreamAccumulatorTest, Fixture06ThinkingSignatureThenToolUse) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  std::string bytes = ReadFixture(dir, "06-");
  std::string thinking, signature;
  for (const Json& event : FixtureEvents(bytes)) {
    if (GetString(event, "type") != "content_block_delta") continue;
    thinking += GetString(event["delta"], "thinking");
    signature += GetString(event["delta"], "signature");
  }
  ASSERT_FALSE(signature.empty());
  StreamRun run(bytes);
  Json message = run.Final();
  ASSERT_EQ(message["content"].size(), 2u);
  EXPECT_EQ(message["content"][0]["type"], "thinking");
  EXPECT_EQ(message["content"][0]["thinking"], thinking);
  EXPECT_EQ(message["content"][0]["signature"], signature);
  EXPECT_EQ(message["content"][1]["input"], J(R"({"city":"Utrecht"})"));
  EXPECT_EQ(message["usage"]["output_tokens_details"]["thinking_tokens"], 45);
}

TEST(StreamAccumulatorTest, Fixture08ServerToolInputRebuiltAndCitationsCollected) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  std::string bytes = ReadFixture(dir, "08-");
  std::size_t citation_deltas = 0;
  for (const Json& event : FixtureEvents(bytes)) {
    if (GetString(event, "type") == "content_block_delta" &&
        GetString(event["delta"], "type") == "citations_delta") {
      ++citation_deltas;
    }
  }
  ASSERT_GT(citation_deltas, 0u);
  StreamRun run(bytes);
  Json message = run.Final();
  const Json& server_tool = message["content"][0];
  EXPECT_EQ(server_tool["type"], "server_tool_use");
  EXPECT_NE(server_tool["input"], Json::object());  // seed 001
  EXPECT_EQ(server_tool["input"],
            J(R"({"query":"tech news today September 26 2025"})"));
  EXPECT_EQ(message["content"][1]["type"], "web_search_tool_result");
  std::size_t citations = 0;
  for (const Json& block : message["content"]) {
    if (block["type"] == "text" && block.contains("citations") &&
        block["citations"].is_array()) {
      citations += block["citations"].size();
    }
  }
  EXPECT_EQ(citations, citation_deltas);
  // A server tool is never runnable by us.
  EXPECT_FALSE(run.acc.Block(0)->runnable());
  EXPECT_EQ(run.acc.Block(0)->input_state, InputState::kValid);
}

TEST(StreamAccumulatorTest, Fixture09FinalServerToolUseHasNoResult) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "09-"));
  Json message = run.Final();
  EXPECT_EQ(message["stop_reason"], "pause_turn");
  std::vector<std::string> calls, results;
  for (const Json& block : message["content"]) {
    if (block["type"] == "server_tool_use") {
      calls.emplace_back(GetString(block, "id"));
      EXPECT_TRUE(block["input"].contains("query")) << DumpJson(block);
    }
    if (ClassifyBlock(block) == BlockKind::kServerToolResult) {
      results.emplace_back(GetString(block, "tool_use_id"));
    }
  }
  ASSERT_EQ(calls.size(), results.size() + 1);
  EXPECT_EQ(message["content"].back()["type"], "server_tool_use");
  EXPECT_EQ(std::count(results.begin(), results.end(), calls.back()), 0);
  for (std::size_t i = 0; i + 1 < calls.size(); ++i) {
    EXPECT_EQ(std::count(results.begin(), results.end(), calls[i]), 1);
  }
}

TEST(StreamAccumulatorTest, Fixture10OpensWithTheDeferredResult) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "10-"));
  Json message = run.Final();
  EXPECT_EQ(message["content"][0]["type"], "web_search_tool_result");
  EXPECT_EQ(message["stop_reason"], "end_turn");
}

TEST(StreamAccumulatorTest, Fixture13McpToolInputRebuilt) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "13-"));
  Json message = run.Final();
  EXPECT_EQ(message["content"][0]["type"], "mcp_tool_use");
  EXPECT_EQ(message["content"][0]["server_name"], "echo");
  EXPECT_EQ(message["content"][0]["input"], J(R"({"message":"hello world"})"));
  EXPECT_EQ(GetServerToolResultError(message["content"][1]), std::nullopt);
}

TEST(StreamAccumulatorTest, Fixture14WebFetchErrorResultAndNoArgClientTool) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "14-web-fetch-error-result-then-client-tool_turn1"));
  Json message = run.Final();
  ASSERT_EQ(message["content"].size(), 5u);
  EXPECT_EQ(message["content"][1]["input"],
            J(R"({"url":"https://httpbin.org/status/500"})"));
  auto error = GetServerToolResultError(message["content"][2]);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "url_not_accessible");
  EXPECT_EQ(message["content"][4]["input"], Json::object());
  EXPECT_TRUE(run.acc.Block(4)->runnable());
  EXPECT_EQ(message["usage"]["server_tool_use"]["web_fetch_requests"], 1);
  EXPECT_EQ(message["stop_details"], nullptr);
}

TEST(StreamAccumulatorTest, Fixture15UnnamedEventsThenOverloadedError) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "15-"));
  EXPECT_EQ(run.acc.state(), State::kFailed);
  ASSERT_TRUE(run.acc.error().has_value());
  EXPECT_EQ(run.acc.error()->kind, Kind::kApiError);
  ASSERT_TRUE(run.acc.error()->api_error.has_value());
  EXPECT_EQ(run.acc.error()->api_error->type, "overloaded_error");
  EXPECT_EQ(run.acc.error()->api_error->message, "Overloaded");
  EXPECT_THAT(run.feed_status, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(run.acc.FinalMessage(), StatusIs(absl::StatusCode::kUnavailable));
  // The events without `event:` lines were applied by their JSON type.
  EXPECT_THAT(run.recorder.calls,
              ElementsAre("message_start msg_01KfpJoAEabmH2iHRRFjQMAG",
                          "block_start 0 text", "text 0 Hello",
                          "error api_error"));
  EXPECT_EQ(run.acc.PartialMessage()["content"], Json::array());
}

TEST(StreamAccumulatorTest, Fixture16ErrorAsFirstEvent) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "16-"));
  ASSERT_TRUE(run.acc.error().has_value());
  EXPECT_EQ(run.acc.error()->kind, Kind::kApiError);
  EXPECT_EQ(run.acc.error()->api_error->type, "overloaded_error");
  EXPECT_EQ(run.acc.error()->api_error->message, "Overloaded");
  EXPECT_TRUE(run.acc.PartialMessage().is_null());
}

TEST(StreamAccumulatorTest, Fixture17SplicedStreamFailsAndMergesNothing) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  StreamRun run(ReadFixture(dir, "17-"));
  ASSERT_TRUE(run.acc.error().has_value());
  EXPECT_EQ(run.acc.error()->kind, Kind::kSpliced);
  EXPECT_THAT(run.acc.FinalMessage(), StatusIs(absl::StatusCode::kAborted));
  Json partial = run.acc.PartialMessage();
  EXPECT_EQ(partial["id"], "msg_first");
  std::string dump = DumpJson(partial);
  EXPECT_THAT(dump, Not(HasSubstr("msg_second")));
  EXPECT_THAT(dump, Not(HasSubstr("toolu_second")));
  EXPECT_THAT(dump, Not(HasSubstr("sig-second")));
  EXPECT_THAT(dump, Not(HasSubstr("Sparkle Day")));
  // Block 1 (the open tool call) was never offered for dispatch.
  EXPECT_EQ(run.recorder.stopped_blocks.size(), 1u);
  EXPECT_EQ(run.recorder.calls.back(), "error spliced");
}

// ---------------------------------------------------------------------------
// Synthetic streams.

TEST(StreamAccumulatorTest, UsageIsOverwrittenNotSummed) {
  std::string bytes = Ev(kStart) + BlockStart(0, R"({"type":"text","text":""})") +
                      Delta(0, R"({"type":"text_delta","text":"hi"})") +
                      BlockStop(0) +
                      MessageDelta("end_turn", R"({"output_tokens":5})") +
                      Ev(R"({"type":"message_delta","delta":{},"usage":)"
                         R"({"output_tokens":9,"input_tokens":10,)"
                         R"("server_tool_use":{"web_search_requests":2},)"
                         R"("brand_new_counter":3}})") +
                      Ev(kStop);
  StreamRun run(bytes);
  Json usage = run.Final()["usage"];
  EXPECT_EQ(usage["output_tokens"], 9);   // 1 + 5 + 9 if summed
  EXPECT_EQ(usage["input_tokens"], 10);   // 20 if summed
  EXPECT_EQ(usage["server_tool_use"]["web_search_requests"], 2);
  EXPECT_EQ(usage["brand_new_counter"], 3);
  EXPECT_EQ(run.Final()["stop_reason"], "end_turn");  // kept: 2nd had none
}

TEST(StreamAccumulatorTest, MessageDeltaKeepsKeyPositionsAndAppendsNewKeys) {
  std::string bytes =
      Ev(kStart) +
      Ev(R"({"type":"message_delta","delta":{"stop_reason":"refusal",)"
         R"("stop_sequence":null,"stop_details":{"type":"refusal",)"
         R"("category":"cyber","explanation":"no"},"container":)"
         R"({"id":"container_1","expires_at":"2026-01-01T00:00:00Z"}},)"
         R"("usage":{"output_tokens":3},"context_management":)"
         R"({"applied_edits":[]}})") +
      Ev(kStop);
  StreamRun run(bytes);
  Json message = run.Final();
  std::vector<std::string> keys;
  for (auto it = message.begin(); it != message.end(); ++it) {
    keys.push_back(it.key());
  }
  EXPECT_THAT(keys, ElementsAre("id", "type", "role", "model", "content",
                                "stop_reason", "stop_sequence", "usage",
                                "stop_details", "container",
                                "context_management"));
  EXPECT_EQ(message["stop_details"]["category"], "cyber");
  EXPECT_EQ(message["container"]["id"], "container_1");
  EXPECT_FALSE(StopReasonEndsTask("tool_use"));
  EXPECT_TRUE(StopReasonEndsTask(GetString(message, "stop_reason")));
}

TEST(StreamAccumulatorTest, ProgrammaticToolCallMessageStartOnly) {
  std::string bytes = Ev(
      R"({"type":"message_start","message":{"id":"msg_ptc","type":"message",)"
      R"("role":"assistant","model":"m","content":[{"type":"tool_use",)"
      R"("id":"toolu_p","name":"query_db","input":{"sql":"select 1"},)"
      R"("caller":{"type":"code_execution_20250825","tool_id":"srvtoolu_c"}}],)"
      R"("stop_reason":"tool_use","stop_sequence":null,"container":)"
      R"({"id":"container_9","expires_at":"x"},"usage":{"input_tokens":1,)"
      R"("output_tokens":2}}})") + Ev(kStop);
  StreamRun run(bytes);
  ASSERT_THAT(run.finish_status, IsOk());
  Json message = run.Final();
  EXPECT_EQ(message["stop_reason"], "tool_use");
  ASSERT_EQ(message["content"].size(), 1u);
  EXPECT_EQ(message["content"][0]["input"], J(R"({"sql":"select 1"})"));
  EXPECT_EQ(message["content"][0]["caller"]["tool_id"], "srvtoolu_c");
  EXPECT_EQ(message["container"]["id"], "container_9");
  EXPECT_THAT(run.recorder.calls,
              ElementsAre("message_start msg_ptc", "block_start 0 tool_use",
                          "block_stop 0 runnable", "message_stop"));
  EXPECT_TRUE(run.acc.Block(0)->from_message_start);
}

TEST(StreamAccumulatorTest, PrefilledStartInputStandsWithoutDeltas) {
  std::string bytes =
      Ev(kStart) +
      BlockStart(0, R"({"type":"server_tool_use","id":"srvtoolu_f",)"
                    R"("name":"web_fetch","input":{"url":"https://a.b/"}})") +
      BlockStop(0) + MessageDelta("end_turn") + Ev(kStop);
  StreamRun run(bytes);
  EXPECT_EQ(run.Final()["content"][0]["input"], J(R"({"url":"https://a.b/"})"));
  EXPECT_EQ(run.acc.Block(0)->input_state, InputState::kValid);
}

TEST(StreamAccumulatorTest, PrefilledStartInputIsReplacedByDeltas) {
  std::string bytes =
      Ev(kStart) +
      BlockStart(0, R"({"type":"tool_use","id":"toolu_f","name":"t",)"
                    R"("input":{"stale":true}})") +
      InputDelta(0, R"({"fresh")") + InputDelta(0, R"(: 1})") + BlockStop(0) +
      MessageDelta("tool_use") + Ev(kStop);
  StreamRun run(bytes);
  EXPECT_EQ(run.Final()["content"][0]["input"], J(R"({"fresh":1})"));
}

TEST(StreamAccumulatorTest, SignatureOnlyThinkingBlock) {
  std::string bytes =
      Ev(kStart) +
      BlockStart(0, R"({"type":"thinking","thinking":"","signature":"old"})") +
      Delta(0, R"({"type":"signature_delta","signature":"EqQBsig"})") +
      BlockStop(0) + MessageDelta("end_turn") + Ev(kStop);
  StreamRun run(bytes);
  Json block = run.Final()["content"][0];
  EXPECT_EQ(block["thinking"], "");
  EXPECT_EQ(block["signature"], "EqQBsig");  // replaced, not appended
}

TEST(StreamAccumulatorTest, SecondSignatureDeltaReplacesTheFirst) {
  std::string bytes =
      Ev(kStart) + BlockStart(0, R"({"type":"thinking","thinking":""})") +
      Delta(0, R"({"type":"thinking_delta","thinking":"a"})") +
      Delta(0, R"({"type":"thinking_delta","thinking":"b"})") +
      Delta(0, R"({"type":"signature_delta","signature":"one"})") +
      Delta(0, R"({"type":"signature_delta","signature":"two"})") +
      BlockStop(0) + MessageDelta("end_turn") + Ev(kStop);
  Json block = StreamRun(bytes).Final()["content"][0];
  EXPECT_EQ(block["thinking"], "ab");
  EXPECT_EQ(block["signature"], "two");
}

TEST(StreamAccumulatorTest, UnknownEventDeltaAndBlockTypesAreKeptOrIgnored) {
  const std::string future_block =
      R"({"type":"hologram_tool_use","id":"holo_1","input":{},)"
      R"("beam":{"colour":"blue"},"extra":[1,2]})";
  std::string bytes =
      Ev(kStart) +
      Ev(R"({"type":"brand_new_event","payload":{"x":1}})") +
      BlockStart(0, future_block) + InputDelta(0, R"({"angle")") +
      Delta(0, R"({"type":"sparkle_delta","sparkle":"*"})") +
      InputDelta(0, R"(: 90})") + BlockStop(0) +
      BlockStart(1, R"({"type":"text","text":""})") +
      Delta(1, R"({"type":"text_delta","text":"ok"})") +
      Delta(1, R"({"type":"sparkle_delta","sparkle":"*"})") + BlockStop(1) +
      MessageDelta("end_turn") + Ev(kStop);
  StreamRun run(bytes);
  ASSERT_THAT(run.finish_status, IsOk());
  Json message = run.Final();
  Json expected = J(future_block);
  expected["input"] = J(R"({"angle":90})");
  EXPECT_EQ(message["content"][0], expected);
  EXPECT_EQ(DumpJson(message["content"][0]), DumpJson(expected));  // order
  EXPECT_EQ(message["content"][1], J(R"({"type":"text","text":"ok"})"));
  EXPECT_THAT(run.acc.ignored_event_types(), ElementsAre("brand_new_event"));
  EXPECT_THAT(run.acc.Block(0)->ignored_delta_types,
              ElementsAre("sparkle_delta"));
  EXPECT_EQ(run.acc.Block(0)->input_state, InputState::kValid);
  EXPECT_FALSE(run.acc.Block(0)->runnable());  // not a client tool_use
}

TEST(StreamAccumulatorTest, InvalidJsonInputIsInvalidRawKeptNeverRun) {
  std::string bytes =
      Ev(kStart) +
      BlockStart(0, R"({"type":"tool_use","id":"toolu_x","name":"php",)"
                    R"("input":{}})") +
      InputDelta(0, R"({"ns": "App\Http)") + InputDelta(0, R"("})") +
      BlockStop(0) + MessageDelta("tool_use") + Ev(kStop);
  StreamRun run(bytes);
  ASSERT_THAT(run.finish_status, IsOk());
  Json message = run.Final();
  EXPECT_EQ(message["content"][0]["input"], Json::object());
  std::optional<BlockInfo> info = run.acc.Block(0);
  EXPECT_EQ(info->input_state, InputState::kInvalid);
  EXPECT_FALSE(info->runnable());
  EXPECT_EQ(info->raw_input, R"({"ns": "App\Http"})");
  EXPECT_THAT(info->input_error, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(run.recorder.calls[run.recorder.calls.size() - 3], "block_stop 0");
}

TEST(StreamAccumulatorTest, NonObjectInputIsInvalid) {
  std::string bytes = Ev(kStart) +
                      BlockStart(0, R"({"type":"tool_use","id":"t","name":"n",)"
                                    R"("input":{}})") +
                      InputDelta(0, "[1, 2]") + BlockStop(0) +
                      MessageDelta("tool_use") + Ev(kStop);
  StreamRun run(bytes);
  EXPECT_EQ(run.acc.Block(0)->input_state, InputState::kInvalid);
  EXPECT_EQ(run.Final()["content"][0]["input"], Json::object());
}

TEST(StreamAccumulatorTest, LivePartialInputIsReadableAfterEachDelta) {
  std::string bytes =
      Ev(kStart) +
      BlockStart(0, R"({"type":"tool_use","id":"t","name":"n","input":{}})") +
      InputDelta(0, "") + InputDelta(0, R"({"a": "he)") +
      InputDelta(0, R"(llo", "b")") + InputDelta(0, R"(: [1, 2)") +
      InputDelta(0, "]}") + BlockStop(0) + MessageDelta("tool_use") +
      Ev(kStop);
  StreamRun live(bytes, /*live=*/true);
  EXPECT_THAT(live.recorder.partial_inputs,
              ElementsAre("{}", R"({"a":"he"})", R"({"a":"hello"})",
                          R"({"a":"hello","b":[1,2]})",
                          R"({"a":"hello","b":[1,2]})"));
  StreamRun plain(bytes, /*live=*/false);
  EXPECT_THAT(plain.recorder.partial_inputs,
              ElementsAre("{}", "<none>", "<none>", "<none>", "<none>"));
  EXPECT_EQ(live.Final(), plain.Final());
  EXPECT_EQ(*live.acc.PartialInput(0), J(R"({"a":"hello","b":[1,2]})"));
}

TEST(StreamAccumulatorTest, CitationsDeltaCreatesArrayWhenNull) {
  std::string bytes =
      Ev(kStart) +
      BlockStart(0, R"({"type":"text","text":"","citations":null})") +
      Delta(0, R"({"type":"citations_delta","citation":{"type":"x","n":1}})") +
      Delta(0, R"({"type":"text_delta","text":"t"})") +
      Delta(0, R"({"type":"citations_delta","citation":{"type":"x","n":2}})") +
      BlockStop(0) + MessageDelta("end_turn") + Ev(kStop);
  Json block = StreamRun(bytes).Final()["content"][0];
  EXPECT_EQ(block["citations"], J(R"([{"type":"x","n":1},{"type":"x","n":2}])"));
  EXPECT_EQ(block["text"], "t");
}

TEST(StreamAccumulatorTest, CompactionDeltaSetsItsFields) {
  std::string bytes =
      Ev(kStart) + BlockStart(0, R"({"type":"compaction","content":null})") +
      Delta(0, R"({"type":"compaction_delta","content":"sum",)"
               R"("encrypted_content":"enc"})") +
      BlockStop(0) + MessageDelta("compaction") + Ev(kStop);
  Json block = StreamRun(bytes).Final()["content"][0];
  EXPECT_EQ(block, J(R"({"type":"compaction","content":"sum",)"
                     R"("encrypted_content":"enc"})"));
}

TEST(StreamAccumulatorTest, RedactedThinkingAndResultBlocksRoundTrip) {
  const std::string redacted = R"({"type":"redacted_thinking","data":"EmwK"})";
  const std::string result =
      R"({"type":"code_execution_tool_result","tool_use_id":"srvtoolu_1",)"
      R"("content":{"type":"code_execution_result","stdout":"1\n",)"
      R"("stderr":"","return_code":0,"content":[]}})";
  std::string bytes = Ev(kStart) + BlockStart(0, redacted) + BlockStop(0) +
                      BlockStart(1, result) + BlockStop(1) +
                      MessageDelta("end_turn") + Ev(kStop);
  Json message = StreamRun(bytes).Final();
  EXPECT_EQ(DumpJson(message["content"][0]), DumpJson(J(redacted)));
  EXPECT_EQ(DumpJson(message["content"][1]), DumpJson(J(result)));
}

TEST(StreamAccumulatorTest, EventNameIsUsedOnlyWithoutJsonType) {
  StreamAccumulator acc;
  // The JSON type wins over a disagreeing event name.
  EXPECT_THAT(acc.OnEvent("ping", kStart), IsOk());
  EXPECT_EQ(acc.state(), State::kOpen);
  // No JSON type: the event name decides.
  EXPECT_THAT(acc.OnEvent("message_delta",
                          R"({"delta":{"stop_reason":"end_turn"}})"),
              IsOk());
  EXPECT_THAT(acc.OnEvent("message_stop", "{}"), IsOk());
  EXPECT_EQ(acc.state(), State::kComplete);
  EXPECT_EQ((*acc.FinalMessage())["stop_reason"], "end_turn");
}

TEST(StreamAccumulatorTest, PingIsIgnoredAnywhere) {
  StreamAccumulator acc;
  EXPECT_THAT(acc.OnEvent("ping", R"({"type": "ping"})"), IsOk());
  EXPECT_THAT(acc.OnEvent("ping", ""), IsOk());
  EXPECT_THAT(acc.OnEvent("message_start", kStart), IsOk());
  EXPECT_THAT(acc.OnEvent("ping", R"({"type":"ping"})"), IsOk());
  EXPECT_THAT(acc.OnEvent("message_stop", kStop), IsOk());
  EXPECT_THAT(acc.OnEvent("ping", R"({"type":"ping"})"), IsOk());
  EXPECT_EQ(acc.state(), State::kComplete);
}

TEST(StreamAccumulatorTest, EventBeforeMessageStartIsProtocolError) {
  StreamAccumulator acc;
  EXPECT_THAT(acc.OnEvent("", R"({"type":"content_block_stop","index":0})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("before message_start")));
  EXPECT_EQ(acc.error()->kind, Kind::kProtocol);
}

TEST(StreamAccumulatorTest, MessageStartAfterMessageStopIsAnError) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart) + Ev(kStop)), IsOk());
  EXPECT_THAT(acc.Feed(Ev(kStart)), Not(IsOk()));
  EXPECT_EQ(acc.error()->kind, Kind::kSpliced);
  EXPECT_THAT(acc.FinalMessage(), Not(IsOk()));
}

TEST(StreamAccumulatorTest, MalformedJsonIsProtocolError) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart)), IsOk());
  EXPECT_THAT(acc.Feed("event: content_block_delta\ndata: {\"type\":\n\n"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(acc.error()->kind, Kind::kProtocol);
}

TEST(StreamAccumulatorTest, MalformedDataOfUnknownEventIsIgnored) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart)), IsOk());
  EXPECT_THAT(acc.Feed("event: future_thing\ndata: <<not json>>\n\n"), IsOk());
  EXPECT_EQ(acc.state(), State::kOpen);
}

TEST(StreamAccumulatorTest, DeltaForUnknownIndexIsProtocolError) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart)), IsOk());
  EXPECT_THAT(acc.Feed(Delta(3, R"({"type":"text_delta","text":"x"})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown index 3")));
}

TEST(StreamAccumulatorTest, DeltaAfterBlockStopIsProtocolError) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart) + BlockStart(0, R"({"type":"text","text":""})") +
                       BlockStop(0)),
              IsOk());
  EXPECT_THAT(acc.Feed(Delta(0, R"({"type":"text_delta","text":"x"})")),
              Not(IsOk()));
  EXPECT_EQ(acc.error()->kind, Kind::kProtocol);
}

TEST(StreamAccumulatorTest, BlocksArePlacedByIndexLeniently) {
  std::string bytes =
      Ev(kStart) + BlockStart(1, R"({"type":"text","text":"b"})") +
      BlockStart(0, R"({"type":"text","text":"a"})") + BlockStop(0) +
      BlockStop(1) + BlockStart(3, R"({"type":"text","text":"d"})") +
      BlockStop(3) + MessageDelta("end_turn") + Ev(kStop);
  Json content = StreamRun(bytes).Final()["content"];
  ASSERT_EQ(content.size(), 3u);
  EXPECT_EQ(content[0]["text"], "a");
  EXPECT_EQ(content[1]["text"], "b");
  EXPECT_EQ(content[2]["text"], "d");
}

TEST(StreamAccumulatorTest, RestartingAnOpenBlockIsProtocolError) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart) +
                       BlockStart(0, R"({"type":"text","text":""})")),
              IsOk());
  EXPECT_THAT(acc.Feed(BlockStart(0, R"({"type":"text","text":""})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("already has")));
}

TEST(StreamAccumulatorTest, ReusingTheIndexOfAStoppedToolCallIsProtocolError) {
  // The first tool_use may already have been dispatched at its block stop;
  // a second block at the same index must never silently replace it.
  Recorder recorder;
  StreamAccumulator acc(&recorder);
  ASSERT_THAT(
      acc.Feed(Ev(kStart) +
               BlockStart(0, R"({"type":"tool_use","id":"toolu_1","name":"a","input":{}})") +
               BlockStop(0)),
      IsOk());
  EXPECT_THAT(
      acc.Feed(BlockStart(0, R"({"type":"tool_use","id":"toolu_2","name":"b","input":{}})")),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("already has")));
  EXPECT_EQ(acc.state(), StreamAccumulator::State::kFailed);
  EXPECT_EQ(acc.error()->kind, Kind::kProtocol);
}

TEST(StreamAccumulatorTest, FinishBeforeMessageStopIsTruncated) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart) + BlockStart(0, R"({"type":"text","text":""})")),
              IsOk());
  EXPECT_THAT(acc.FinalMessage(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(acc.Finish(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(acc.error()->kind, Kind::kTruncated);
  StreamAccumulator empty;
  EXPECT_THAT(empty.Finish(), Not(IsOk()));
  EXPECT_EQ(empty.error()->kind, Kind::kTruncated);
}

TEST(StreamAccumulatorTest, EventsAfterFailureAreIgnored) {
  Recorder recorder;
  StreamAccumulator acc(&recorder);
  ASSERT_THAT(acc.Feed(Ev(kStart)), IsOk());
  absl::Status failed =
      acc.Feed(Ev(R"({"type":"error","error":{"type":"api_error",)"
                  R"("message":"boom"},"request_id":"req_1"})"));
  EXPECT_THAT(failed, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(acc.error()->api_error->request_id, "req_1");
  const std::size_t calls = recorder.calls.size();
  EXPECT_EQ(acc.Feed(BlockStart(0, R"({"type":"text","text":""})") + Ev(kStop)),
            failed);
  EXPECT_EQ(acc.Finish(), failed);
  EXPECT_EQ(recorder.calls.size(), calls);
  EXPECT_EQ(acc.state(), State::kFailed);
}

TEST(StreamAccumulatorTest, SseLimitExceededFailsTheStream) {
  StreamAccumulator::Options options;
  options.sse.max_line_bytes = 64;
  StreamAccumulator acc(options);
  EXPECT_THAT(acc.Feed(Ev(kStart)), Not(IsOk()));
  EXPECT_EQ(acc.error()->kind, Kind::kProtocol);
}

TEST(StreamAccumulatorTest, HostileIndexIsRejected) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart)), IsOk());
  EXPECT_THAT(acc.Feed(BlockStart(2000000000, R"({"type":"text","text":""})")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(StreamAccumulatorTest, DeeplyNestedEventIsProtocolErrorNotACrash) {
  // 200 KB of brackets: nlohmann parses it iteratively, but copying or
  // printing such a value recurses once per level and overflows the stack.
  const std::size_t depth = 100000;
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart)), IsOk());
  EXPECT_THAT(acc.Feed(absl::StrCat(
                  "event: content_block_start\ndata: "
                  R"({"type":"content_block_start","index":0,"content_block":)"
                  R"({"type":"text","text":"","x":)",
                  std::string(depth, '['), std::string(depth, ']'), "}}\n\n")),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(acc.error()->kind, Kind::kProtocol);
  EXPECT_THAT(acc.error()->message, HasSubstr("nesting"));
  // Ordinary nesting is untouched, inside strings too.
  EXPECT_THAT(ParseJson(absl::StrCat(std::string(kMaxJsonDepth, '['),
                                     std::string(kMaxJsonDepth, ']'))),
              IsOk());
  EXPECT_THAT(ParseJson(absl::StrCat(std::string(kMaxJsonDepth + 1, '['),
                                     std::string(kMaxJsonDepth + 1, ']'))),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseJson(absl::StrCat("[\"", std::string(depth, '['),
                                     "\\\"\"]")),
              IsOk());
}

TEST(StreamAccumulatorTest, PartialMessageHoldsOnlyStoppedBlocks) {
  StreamAccumulator acc;
  EXPECT_TRUE(acc.PartialMessage().is_null());
  ASSERT_THAT(acc.Feed(Ev(kStart) + BlockStart(0, R"({"type":"text","text":""})") +
                       Delta(0, R"({"type":"text_delta","text":"done"})") +
                       BlockStop(0) +
                       BlockStart(1, R"({"type":"text","text":""})") +
                       Delta(1, R"({"type":"text_delta","text":"half"})")),
              IsOk());
  Json partial = acc.PartialMessage();
  EXPECT_EQ(partial["id"], "msg_1");
  EXPECT_EQ(partial["content"], J(R"([{"type":"text","text":"done"}])"));
  std::vector<BlockInfo> blocks = acc.Blocks();
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_TRUE(blocks[0].stopped);
  EXPECT_FALSE(blocks[1].stopped);
}

TEST(StreamAccumulatorTest, EscapedStringsInDeltasAreDecoded) {
  std::string bytes =
      Ev(kStart) + BlockStart(0, R"({"type":"text","text":""})") +
      Delta(0, R"({"type":"text_delta","text":"a\"b\\c\n\u00e9\ud83d\ude00"})") +
      BlockStop(0) + MessageDelta("end_turn") + Ev(kStop);
  EXPECT_EQ(StreamRun(bytes).Final()["content"][0]["text"],
            "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(StreamAccumulatorTest, PaddedAndReorderedDeltaFieldsAreAccepted) {
  // Whitespace inside the object (as the live API sends) and a field order
  // the fast path does not expect both give the same result.
  std::string bytes =
      Ev(kStart) + BlockStart(0, R"({"type":"text","text":""})") +
      "event: content_block_delta\ndata: {\"delta\":{\"text\":\"x\",\"type\":"
      "\"text_delta\"},\"index\":0,\"type\":\"content_block_delta\"}   \n\n" +
      "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
      "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"y\"}    }\n\n" +
      BlockStop(0) + MessageDelta("end_turn") + Ev(kStop);
  EXPECT_EQ(StreamRun(bytes).Final()["content"][0]["text"], "xy");
}

TEST(StreamAccumulatorTest, TrailingGarbageAfterDeltaIsProtocolError) {
  StreamAccumulator acc;
  ASSERT_THAT(acc.Feed(Ev(kStart) + BlockStart(0, R"({"type":"text","text":""})")),
              IsOk());
  EXPECT_THAT(acc.OnEvent("content_block_delta",
                          R"({"type":"content_block_delta","index":0,)"
                          R"("delta":{"type":"text_delta","text":"x"}} junk)"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(StreamAccumulatorTest, TruncatedJsonIsCompletedLikeTheSdk) {
  // Expected values as printed by the SDK's own partialParse.
  const std::pair<std::string, std::string> cases[] = {
      {R"({"a": "hel)", "{}"},
      {R"({"a": 1, "b)", R"({"a":1})"},
      {R"({"a": [1, 2)", R"({"a":[1]})"},
      {R"({"a": tr)", "{}"},
      {R"({"a": "x\"y")", R"({"a":"x\"y"})"},
      {R"([1, {"b": nul)", R"([1,{}])"},
      {R"({"a": 1.5e)", "{}"},
      {R"({"k": "v", "n": -)", R"({"k":"v"})"},
      {"", "{}"},
  };
  for (const auto& [text, expected] : cases) {
    absl::StatusOr<Json> value = ParseTruncatedJsonLikeSdk(text);
    ASSERT_THAT(value, IsOk()) << text;
    EXPECT_EQ(DumpJson(*value), expected) << text;
  }
  EXPECT_THAT(ParseTruncatedJsonLikeSdk(R"({"a": "\H"})"), Not(IsOk()));
  EXPECT_THAT(ParseTruncatedJsonLikeSdk(R"({"a":1}})"), Not(IsOk()));
  EXPECT_THAT(ParseTruncatedJsonLikeSdk("{\"a\": wat"), Not(IsOk()));
}

TEST(StreamAccumulatorTest, TruncatedToolInputMatchesInLiveAndPlainMode) {
  std::string bytes =
      Ev(kStart) +
      BlockStart(0, R"({"type":"tool_use","id":"t","name":"n","input":{}})") +
      InputDelta(0, R"({"done": [1, 2], "partial": "abc)") +
      MessageDelta("max_tokens") + Ev(kStop);
  StreamRun live(bytes, /*live=*/true);
  StreamRun plain(bytes, /*live=*/false);
  EXPECT_EQ(live.Final()["content"][0]["input"], J(R"({"done":[1,2]})"));
  EXPECT_EQ(live.Final(), plain.Final());
  EXPECT_EQ(live.acc.Block(0)->input_state, InputState::kIncomplete);
  EXPECT_FALSE(live.acc.Block(0)->runnable());
  EXPECT_TRUE(live.recorder.stopped_blocks.empty());
}

}  // namespace
}  // namespace toolmesh::common
