// Regression tests for seed 002 (shared/seeds/002_*.txt), ledger part:
//  - a tool-error that arrived while the tool was still "pending" was
//    silently dropped, leaving the tool to be "cleaned up" later with empty
//    input; toolmesh's ledger accepts an error in any non-terminal state
//    and turns it into an is_error tool_result;
//  - late events for a finished tool are recorded and ignored, never
//    crash or resurrect it;
//  - a failed stream's early-dispatched tools end as stream_aborted (so
//    they can be cancelled on their workers) instead of leaking into the
//    retried step.
// The conversation half of the seed (merged steps) is tested with the
// conversation.
#include <string>

#include "common/ids.h"
#include "common/json.h"
#include "common/tool_ledger.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/tool_ledger_recorder.h"

namespace toolmesh::common {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::TransitionRecorder;

ToolUseId Id(const char* s) { return ToolUseId(s); }

class Seed002LedgerTest : public ::testing::Test {
 protected:
  Seed002LedgerTest() : ledger_(recorder_.Sink()) {}

  void TearDown() override {
    ledger_.CloseTask();
    EXPECT_TRUE(recorder_.EveryAnnouncedToolEndedOnce());
    EXPECT_TRUE(recorder_.MatchesLedger(ledger_));
  }

  TransitionRecorder recorder_;
  ToolLedger ledger_;
};

TEST_F(Seed002LedgerTest, ErrorWhileStillPendingGivesAnIsErrorToolResult) {
  ASSERT_EQ(ledger_.Announce(Id("toolu_write"), "write", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  ASSERT_EQ(
      ledger_.SetInput(Id("toolu_write"), Json::object({{"path", "/tmp/a"}})),
      LedgerOutcome::kApplied);
  // Queued, no worker has taken it yet: the error still counts.
  EXPECT_EQ(ledger_.Fail(Id("toolu_write"), ErrorReason::kToolFailed,
                         "permission denied: /tmp/a"),
            LedgerOutcome::kApplied);
  const ToolEntry* entry = ledger_.Get(Id("toolu_write"));
  EXPECT_EQ(entry->state, ToolState::kError);
  // The input is kept, not cleaned up to {}.
  EXPECT_EQ(*entry->input, Json::object({{"path", "/tmp/a"}}));
  auto terminal = recorder_.TerminalOf(Id("toolu_write"));
  ASSERT_TRUE(terminal.has_value());
  EXPECT_EQ(terminal->from, ToolState::kPending);

  auto block = ledger_.ToolResultFor(Id("toolu_write"));
  ASSERT_THAT(block, IsOk());
  EXPECT_EQ((*block)["type"], "tool_result");
  EXPECT_EQ((*block)["tool_use_id"], "toolu_write");
  EXPECT_EQ((*block)["is_error"], true);
  EXPECT_THAT((*block)["content"].get<std::string>(),
              HasSubstr("permission denied"));
  EXPECT_TRUE(ledger_.AllClientTerminal(0));

  // Late events: a worker result, a start, another error. All ignored.
  const Json before = *block;
  EXPECT_EQ(ledger_.CompleteClient(Id("toolu_write"), 1, Json("wrote 3 bytes"),
                                   false),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ledger_.Start(Id("toolu_write"), 1),
            LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.Fail(Id("toolu_write"), ErrorReason::kTimeout, "late"),
            LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.counters().duplicate_results, 1);
  EXPECT_EQ(ledger_.counters().ignored_terminal_events, 2);
  EXPECT_EQ(ledger_.Get(Id("toolu_write"))->state, ToolState::kError);
  EXPECT_EQ(*ledger_.ToolResultFor(Id("toolu_write")), before);
  EXPECT_EQ(recorder_.For(Id("toolu_write")).size(), 2u);
}

TEST_F(Seed002LedgerTest, ErrorBeforeTheToolCallWasEvenCompleteIsAccepted) {
  // The seed's race: tool-error before tool-call, i.e. before the input
  // finished streaming.
  ASSERT_EQ(
      ledger_.Announce(Id("toolu_early"), "api_search", ToolKind::kClient, 0),
      LedgerOutcome::kApplied);
  EXPECT_EQ(
      ledger_.CompleteClient(Id("toolu_early"), 1, Json("upstream 503"), true),
      LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.Get(Id("toolu_early"))->reason, ErrorReason::kToolFailed);
  auto block = ledger_.ToolResultFor(Id("toolu_early"));
  ASSERT_THAT(block, IsOk());
  EXPECT_EQ((*block)["content"], "upstream 503");
  EXPECT_EQ((*block)["is_error"], true);
  // The input that completes afterwards is ignored, and never dispatched.
  EXPECT_EQ(ledger_.SetInput(Id("toolu_early"), Json::object()),
            LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.Start(Id("toolu_early"), 1),
            LedgerOutcome::kAlreadyTerminal);
}

TEST_F(Seed002LedgerTest, FailedStreamsEarlyDispatchedToolsAreStreamAborted) {
  // Step 0's first stream: one tool running (dispatched early), one queued,
  // one whose block never stopped; then an overloaded_error mid-stream.
  ASSERT_EQ(ledger_.Announce(Id("toolu_1"), "write", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.SetInput(Id("toolu_1"), Json::object()),
            LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.Start(Id("toolu_1"), 1), LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.Announce(Id("toolu_2"), "write", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.SetInput(Id("toolu_2"), Json::object()),
            LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.Announce(Id("toolu_3"), "write", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  ASSERT_EQ(
      ledger_.Announce(Id("srvtoolu_4"), "web_search", ToolKind::kServer, 0),
      LedgerOutcome::kApplied);

  ClosedTools aborted = ledger_.AbortStep(0, "overloaded_error: Overloaded");
  EXPECT_THAT(aborted.client,
              ElementsAre(Id("toolu_1"), Id("toolu_2"), Id("toolu_3")));
  EXPECT_THAT(aborted.server, ElementsAre(Id("srvtoolu_4")));
  for (const char* id : {"toolu_1", "toolu_2", "toolu_3", "srvtoolu_4"}) {
    auto terminal = recorder_.TerminalOf(Id(id));
    ASSERT_TRUE(terminal.has_value()) << id;
    EXPECT_EQ(terminal->reason, ErrorReason::kStreamAborted) << id;
  }
  EXPECT_THAT(ledger_.PendingClientIds(0), IsEmpty());
  EXPECT_THAT(ledger_.OpenServerIds(), IsEmpty());

  // The worker running toolu_1 finishes anyway: recorded and ignored.
  EXPECT_EQ(ledger_.CompleteClient(Id("toolu_1"), 1, Json("done"), false),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ledger_.Get(Id("toolu_1"))->reason, ErrorReason::kStreamAborted);

  // The retried stream for the same turn brings its own tool; only it is
  // waited for, and the aborted ones do not leak into the new step.
  ASSERT_EQ(ledger_.Announce(Id("toolu_5"), "write", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.SetInput(Id("toolu_5"), Json::object()),
            LedgerOutcome::kApplied);
  EXPECT_THAT(ledger_.PendingClientIds(0), ElementsAre(Id("toolu_5")));
  ASSERT_EQ(ledger_.Start(Id("toolu_5"), 1), LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.CompleteClient(Id("toolu_5"), 1, Json("ok"), false),
            LedgerOutcome::kApplied);
  EXPECT_TRUE(ledger_.AllClientTerminal(0));
  EXPECT_TRUE(ledger_.AbortStep(0, "again").client.empty());
}

}  // namespace
}  // namespace toolmesh::common
