// Regression tests for seed 000 (shared/seeds/000_*.txt): with
// stop_reason=tool_use, server tools (code execution, web search) that ran
// beside a client tool never had their results delivered, and UIs spun
// forever. toolmesh tracks server calls in the ToolLedger: a result that
// arrives in a later response is reconciled by its srvtoolu_ id, one that
// never arrives is closed with server_result_missing, and every tool that
// starts also ends exactly once.
//
// Also covers the pause_turn continuation (fixtures 09 -> 10) and the
// repeated result block of fixture 14, both with hand-written messages and
// with messages built from the recorded streams' content_block_start events
// (parsed here directly, independent of the StreamAccumulator).
#include <string>
#include <vector>

#include "common/ids.h"
#include "common/json.h"
#include "common/tool_ledger.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tool_ledger_recorder.h"

namespace toolmesh::common {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::TransitionRecorder;

Json J(const char* text) {
  auto parsed = ParseJson(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : Json();
}

ToolUseId Id(const char* s) { return ToolUseId(s); }

// The assistant message of a recorded stream, as far as the ledger cares:
// every content block as its content_block_start carried it, in index
// order. (Tool inputs stream as deltas and are left as sent in the start;
// result blocks arrive whole in their start.)
absl::StatusOr<Json> MessageFromSse(const std::string& sse) {
  Json message = Json::object();
  message["role"] = "assistant";
  message["content"] = Json::array();
  size_t pos = 0;
  while (pos < sse.size()) {
    size_t end = sse.find('\n', pos);
    if (end == std::string::npos) end = sse.size();
    std::string_view line(sse.data() + pos, end - pos);
    pos = end + 1;
    if (!line.starts_with("data:")) continue;
    line.remove_prefix(5);
    auto event = ParseJson(line);
    if (!event.ok()) return event.status();
    if (GetString(*event, "type") != "content_block_start") continue;
    if (!event->contains("index") || !(*event)["index"].is_number_unsigned() ||
        (*event)["index"].get<size_t>() != message["content"].size()) {
      return absl::DataLossError("content_block_start out of order");
    }
    message["content"].push_back((*event)["content_block"]);
  }
  return message;
}

class Seed000Test : public ::testing::Test {
 protected:
  Seed000Test() : ledger_(recorder_.Sink()) {}

  void TearDown() override {
    ledger_.CloseTask();
    EXPECT_TRUE(recorder_.EveryAnnouncedToolEndedOnce());
    EXPECT_TRUE(recorder_.MatchesLedger(ledger_));
  }

  // Runs every client tool of `step` to a successful result.
  void RunClientTools(int step) {
    for (const ToolUseId& id : ledger_.PendingClientIds(step)) {
      ASSERT_EQ(ledger_.Start(id, 1), LedgerOutcome::kApplied) << id;
      ASSERT_EQ(ledger_.CompleteClient(id, 1, Json("ok"), false),
                LedgerOutcome::kApplied)
          << id;
    }
  }

  TransitionRecorder recorder_;
  ToolLedger ledger_;
};

// Step 0, as in the seed's trace: two server calls and a client call, then
// stop_reason tool_use with no result block for either server call.
constexpr char kParallelTurn[] = R"({"role":"assistant","content":[
  {"type":"server_tool_use","id":"srvtoolu_A",
   "name":"text_editor_code_execution",
   "input":{"command":"create","path":"/tmp/report.xlsx"}},
  {"type":"server_tool_use","id":"srvtoolu_B","name":"web_search",
   "input":{"query":"port activity benchmarks"}},
  {"type":"tool_use","id":"toolu_C","name":"ask_internal_tool",
   "input":{"question":"port activity data"}}]})";

TEST_F(Seed000Test, DeferredServerResultsAreReconciledFromTheNextStep) {
  auto first = ledger_.ObserveAssistantMessage(J(kParallelTurn), 0);
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(first->deferred_server_ids,
              ElementsAre(Id("srvtoolu_A"), Id("srvtoolu_B")));
  EXPECT_THAT(first->client_tool_use_ids, ElementsAre(Id("toolu_C")));
  EXPECT_EQ(ledger_.Get(Id("srvtoolu_A"))->state, ToolState::kPending);

  // The user message holds only the client tool's result; the server calls
  // do not hold it up.
  RunClientTools(0);
  ASSERT_TRUE(ledger_.AllClientTerminal(0));
  auto result = ledger_.ToolResultFor(Id("toolu_C"));
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ((*result)["tool_use_id"], "toolu_C");
  EXPECT_THAT(ledger_.OpenServerIds(),
              ElementsAre(Id("srvtoolu_A"), Id("srvtoolu_B")));

  // The next response opens with the deferred results.
  auto second = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"text_editor_code_execution_tool_result","tool_use_id":"srvtoolu_A",
     "content":{"type":"text_editor_code_execution_create_result",
                "is_file_update":false}},
    {"type":"web_search_tool_result","tool_use_id":"srvtoolu_B","content":[
      {"type":"web_search_result","url":"https://example.com","title":"T",
       "encrypted_content":"e","page_age":null}]},
    {"type":"text","text":"The report is ready."}]})"),
                                                1);
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(second->server_results_matched,
              ElementsAre(Id("srvtoolu_A"), Id("srvtoolu_B")));
  EXPECT_THAT(second->orphan_result_indexes, IsEmpty());
  EXPECT_THAT(second->duplicate_result_indexes, IsEmpty());
  for (const char* id : {"srvtoolu_A", "srvtoolu_B"}) {
    const ToolEntry* entry = ledger_.Get(Id(id));
    EXPECT_EQ(entry->state, ToolState::kDone) << id;
    EXPECT_EQ(entry->step, 0) << id;
    EXPECT_EQ(entry->result_step, 1) << id;
    auto terminal = recorder_.TerminalOf(Id(id));
    ASSERT_TRUE(terminal.has_value());
    EXPECT_EQ(terminal->from, ToolState::kPending);
  }
  EXPECT_THAT(ledger_.OpenServerIds(), IsEmpty());
  ClosedTools closed = ledger_.CloseTask();
  EXPECT_THAT(closed.server, IsEmpty());
  EXPECT_THAT(closed.client, IsEmpty());
}

TEST_F(Seed000Test, ServerResultThatNeverArrivesEndsAsServerResultMissing) {
  ASSERT_THAT(ledger_.ObserveAssistantMessage(J(kParallelTurn), 0), IsOk());
  RunClientTools(0);
  // The next response starts new work and never mentions A or B (the
  // seed's "srvtoolu_D <- NEW tool"); it ends the task.
  auto second = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"server_tool_use","id":"srvtoolu_D",
     "name":"text_editor_code_execution","input":{"command":"view"}},
    {"type":"text_editor_code_execution_tool_result","tool_use_id":"srvtoolu_D",
     "content":{"type":"text_editor_code_execution_view_result",
                "content":"..."}},
    {"type":"text","text":"Done."}]})"),
                                                1);
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(ledger_.OpenServerIds(),
              ElementsAre(Id("srvtoolu_A"), Id("srvtoolu_B")));

  ClosedTools closed = ledger_.CloseTask();
  EXPECT_THAT(closed.server, ElementsAre(Id("srvtoolu_A"), Id("srvtoolu_B")));
  EXPECT_THAT(closed.client, IsEmpty());
  for (const char* id : {"srvtoolu_A", "srvtoolu_B"}) {
    auto transitions = recorder_.For(Id(id));
    ASSERT_EQ(transitions.size(), 2u) << id;  // announce, then the end
    EXPECT_TRUE(transitions[0].IsAnnounce());
    EXPECT_EQ(transitions[1].to, ToolState::kError);
    EXPECT_EQ(transitions[1].reason, ErrorReason::kServerResultMissing);
    EXPECT_FALSE(transitions[1].message.empty());
  }
  EXPECT_EQ(ledger_.Get(Id("srvtoolu_D"))->state, ToolState::kDone);
  EXPECT_EQ(ledger_.Get(Id("toolu_C"))->state, ToolState::kDone);
  // A result that turns up after the task closed changes nothing.
  EXPECT_EQ(ledger_.ObserveServerResult(
                J(R"({"type":"web_search_tool_result",)"
                  R"("tool_use_id":"srvtoolu_B","content":[]})"),
                2),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ledger_.Get(Id("srvtoolu_B"))->reason,
            ErrorReason::kServerResultMissing);
}

// Modelled on fixtures 09 and 10 (ids from the recordings): the first
// response ends with pause_turn and a dangling server_tool_use; the
// continuation's block 0 is its result.
TEST_F(Seed000Test, PauseTurnContinuationResolvesTheDanglingCall) {
  auto part1 = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"thinking","thinking":"...","signature":"sig"},
    {"type":"text","text":"Let me search."},
    {"type":"server_tool_use","id":"srvtoolu_01FGPZ2P6yPXWdiD1Cxjpix3",
     "name":"web_search","input":{"query":"San Francisco weather"}},
    {"type":"web_search_tool_result",
     "tool_use_id":"srvtoolu_01FGPZ2P6yPXWdiD1Cxjpix3","content":[]},
    {"type":"server_tool_use","id":"srvtoolu_01NKrV3hGbcHeBVtaTKBHRuA",
     "name":"web_search","input":{"query":"San Francisco air quality"}}]})"),
                                               0);
  ASSERT_THAT(part1, IsOk());
  EXPECT_THAT(part1->deferred_server_ids,
              ElementsAre(Id("srvtoolu_01NKrV3hGbcHeBVtaTKBHRuA")));
  EXPECT_THAT(part1->client_tool_use_ids, IsEmpty());
  EXPECT_TRUE(ledger_.AllClientTerminal(0));

  auto part2 = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"web_search_tool_result",
     "tool_use_id":"srvtoolu_01NKrV3hGbcHeBVtaTKBHRuA","content":[]},
    {"type":"text","text":"Air quality is good."},
    {"type":"server_tool_use","id":"srvtoolu_01H8ajWSUxCqcsKGC19c58SX",
     "name":"web_search","input":{"query":"events this week"}},
    {"type":"web_search_tool_result",
     "tool_use_id":"srvtoolu_01H8ajWSUxCqcsKGC19c58SX","content":[]}]})"),
                                               1);
  ASSERT_THAT(part2, IsOk());
  EXPECT_THAT(part2->server_results_matched,
              ElementsAre(Id("srvtoolu_01NKrV3hGbcHeBVtaTKBHRuA"),
                          Id("srvtoolu_01H8ajWSUxCqcsKGC19c58SX")));
  EXPECT_THAT(part2->deferred_server_ids, IsEmpty());
  EXPECT_THAT(ledger_.OpenServerIds(), IsEmpty());
}

TEST_F(Seed000Test, RecordedPauseTurnStreamsReconcileEveryServerCall) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  auto part1_sse = ::toolmesh::testing::ReadFile(
      dir + "/09-thinking-web-search-pause-turn_part1.sse");
  auto part2_sse = ::toolmesh::testing::ReadFile(
      dir + "/10-thinking-web-search-pause-turn_part2-continuation.sse");
  ASSERT_THAT(part1_sse, IsOk());
  ASSERT_THAT(part2_sse, IsOk());
  auto part1 = MessageFromSse(*part1_sse);
  auto part2 = MessageFromSse(*part2_sse);
  ASSERT_THAT(part1, IsOk());
  ASSERT_THAT(part2, IsOk());

  auto first = ledger_.ObserveAssistantMessage(*part1, 0);
  ASSERT_THAT(first, IsOk());
  // 11 server calls, 10 results: exactly the last call dangles.
  ASSERT_EQ(first->announced.size(), 11u);
  EXPECT_EQ(first->server_results_matched.size(), 10u);
  ASSERT_EQ(first->deferred_server_ids.size(), 1u);
  EXPECT_EQ(first->deferred_server_ids[0], first->announced.back());
  EXPECT_THAT(first->orphan_result_indexes, IsEmpty());

  auto second = ledger_.ObserveAssistantMessage(*part2, 1);
  ASSERT_THAT(second, IsOk());
  ASSERT_FALSE(second->server_results_matched.empty());
  EXPECT_EQ(second->server_results_matched[0], first->deferred_server_ids[0]);
  EXPECT_THAT(second->orphan_result_indexes, IsEmpty());
  EXPECT_THAT(second->duplicate_result_indexes, IsEmpty());
  EXPECT_THAT(second->deferred_server_ids, IsEmpty());
  EXPECT_THAT(ledger_.OpenServerIds(), IsEmpty());
  EXPECT_EQ(ledger_.Get(first->deferred_server_ids[0])->result_step, 1);
}

TEST_F(Seed000Test, RecordedRepeatedResultBlockIsFlaggedForDrop) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  auto turn1_sse = ::toolmesh::testing::ReadFile(
      dir + "/14-web-fetch-error-result-then-client-tool_turn1.sse");
  auto turn2_sse = ::toolmesh::testing::ReadFile(
      dir + "/14-web-fetch-error-result-then-client-tool_turn2.sse");
  ASSERT_THAT(turn1_sse, IsOk());
  ASSERT_THAT(turn2_sse, IsOk());
  auto turn1 = MessageFromSse(*turn1_sse);
  auto turn2 = MessageFromSse(*turn2_sse);
  ASSERT_THAT(turn1, IsOk());
  ASSERT_THAT(turn2, IsOk());

  auto first = ledger_.ObserveAssistantMessage(*turn1, 0);
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(first->client_tool_use_ids,
              ElementsAre(Id("toolu_01FUuDcCDweLziH8QvQFQLtV")));
  const ToolEntry* fetch = ledger_.Get(Id("srvtoolu_01J1EKYpi3LLtWHmtZnY1gto"));
  ASSERT_NE(fetch, nullptr);
  EXPECT_EQ(fetch->reason, ErrorReason::kToolFailed);
  EXPECT_EQ(fetch->message, "web_fetch_tool_result_error: url_not_accessible");
  RunClientTools(0);

  auto second = ledger_.ObserveAssistantMessage(*turn2, 1);
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(second->duplicate_result_indexes, ElementsAre(0u));
  EXPECT_EQ(ledger_.counters().duplicate_results, 1);
  EXPECT_EQ(recorder_.For(Id("srvtoolu_01J1EKYpi3LLtWHmtZnY1gto")).size(), 2u);
}

}  // namespace
}  // namespace toolmesh::common
