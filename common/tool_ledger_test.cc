// Tests for ToolLedger: every transition, every ignored event with its
// counter, the tool_result blocks, message observation, and a randomized
// property test of the central invariant (each announced tool ends exactly
// once; terminal entries never change). Every test's ledger reports to a
// TransitionRecorder whose chain checks run in TearDown.
#include "common/tool_ledger.h"

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
using ::toolmesh::testing::StatusIs;
using ::toolmesh::testing::TransitionRecorder;

ToolUseId Id(const char* s) { return ToolUseId(s); }

Json J(const char* text) {
  auto parsed = ParseJson(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status() << " in " << text;
  return parsed.ok() ? *parsed : Json();
}

int64_t SumOf(const LedgerCounters& c) {
  return c.ignored_terminal_events + c.stale_results + c.duplicate_results +
         c.orphan_results + c.duplicate_announces + c.reused_ids +
         c.unknown_ids + c.inapplicable_events;
}

class ToolLedgerTest : public ::testing::Test {
 protected:
  ToolLedgerTest() : ledger_(recorder_.Sink()) {}

  void TearDown() override {
    EXPECT_TRUE(recorder_.NoViolations());
    EXPECT_TRUE(recorder_.MatchesLedger(ledger_));
    ledger_.CloseTask();
    EXPECT_TRUE(recorder_.EveryAnnouncedToolEndedOnce());
    EXPECT_TRUE(recorder_.MatchesLedger(ledger_));
  }

  // A client tool announced in `step` with complete input.
  void ReadyClient(const char* id, int step = 0, const char* name = "echo") {
    ASSERT_EQ(ledger_.Announce(Id(id), name, ToolKind::kClient, step),
              LedgerOutcome::kApplied);
    ASSERT_EQ(ledger_.SetInput(Id(id), J(R"({"text":"hi"})")),
              LedgerOutcome::kApplied);
  }
  void RunningClient(const char* id, int step = 0) {
    ReadyClient(id, step);
    ASSERT_EQ(ledger_.Start(Id(id), 1), LedgerOutcome::kApplied);
  }
  void Server(const char* id, int step = 0, const char* name = "web_search") {
    ASSERT_EQ(ledger_.Announce(Id(id), name, ToolKind::kServer, step),
              LedgerOutcome::kApplied);
  }
  ToolState StateOf(const char* id) {
    const ToolEntry* entry = ledger_.Get(Id(id));
    EXPECT_NE(entry, nullptr) << id;
    return entry == nullptr ? ToolState::kPending : entry->state;
  }
  Json ResultFor(const char* id) {
    auto block = ledger_.ToolResultFor(Id(id));
    EXPECT_THAT(block, IsOk());
    return block.ok() ? *block : Json();
  }

  TransitionRecorder recorder_;
  ToolLedger ledger_;
};

// --- Names ------------------------------------------------------------------

TEST(ToolLedgerNamesTest, ErrorReasonNamesAreExactAndRoundTrip) {
  const std::vector<std::pair<ErrorReason, std::string>> expected = {
      {ErrorReason::kToolFailed, "tool_failed"},
      {ErrorReason::kInvalidInput, "invalid_input"},
      {ErrorReason::kTimeout, "timeout"},
      {ErrorReason::kCancelled, "cancelled"},
      {ErrorReason::kWorkerLost, "worker_lost"},
      {ErrorReason::kNoWorker, "no_worker"},
      {ErrorReason::kStreamAborted, "stream_aborted"},
      {ErrorReason::kServerResultMissing, "server_result_missing"},
      {ErrorReason::kQueueFull, "queue_full"},
  };
  for (const auto& [reason, name] : expected) {
    EXPECT_EQ(ErrorReasonName(reason), name);
    auto parsed = ParseErrorReason(name);
    ASSERT_THAT(parsed, IsOk()) << name;
    EXPECT_EQ(*parsed, reason);
  }
  EXPECT_THAT(ParseErrorReason("Timeout"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseErrorReason(""),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseErrorReason("timeout "),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ToolLedgerNamesTest, StateKindAndOutcomeNames) {
  EXPECT_EQ(ToolStateName(ToolState::kPending), "pending");
  EXPECT_EQ(ToolStateName(ToolState::kRunning), "running");
  EXPECT_EQ(ToolStateName(ToolState::kDone), "done");
  EXPECT_EQ(ToolStateName(ToolState::kError), "error");
  EXPECT_FALSE(IsTerminal(ToolState::kPending));
  EXPECT_FALSE(IsTerminal(ToolState::kRunning));
  EXPECT_TRUE(IsTerminal(ToolState::kDone));
  EXPECT_TRUE(IsTerminal(ToolState::kError));
  EXPECT_EQ(ToolKindName(ToolKind::kClient), "client");
  EXPECT_EQ(ToolKindName(ToolKind::kServer), "server");
  EXPECT_EQ(LedgerOutcomeName(LedgerOutcome::kApplied), "applied");
  EXPECT_EQ(LedgerOutcomeName(LedgerOutcome::kDuplicateResult),
            "duplicate_result");
  EXPECT_EQ(LedgerOutcomeName(LedgerOutcome::kStaleAttempt), "stale_attempt");
}

TEST(ToolLedgerNamesTest, LedgerWithoutSinkStillWorks) {
  ToolLedger ledger(nullptr);
  ASSERT_EQ(ledger.Announce(Id("a"), "echo", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger.Fail(Id("a"), ErrorReason::kTimeout, "slow"),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger.Get(Id("a"))->state, ToolState::kError);
}

// --- Announce ---------------------------------------------------------------

TEST_F(ToolLedgerTest, AnnounceCreatesPendingEntryAndReportsIt) {
  ASSERT_EQ(
      ledger_.Announce(Id("toolu_1"), "get_weather", ToolKind::kClient, 2),
      LedgerOutcome::kApplied);
  const ToolEntry* entry = ledger_.Get(Id("toolu_1"));
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->state, ToolState::kPending);
  EXPECT_EQ(entry->kind, ToolKind::kClient);
  EXPECT_EQ(entry->name, "get_weather");
  EXPECT_EQ(entry->step, 2);
  EXPECT_EQ(entry->attempt, 1);
  EXPECT_FALSE(entry->input.has_value());
  ASSERT_EQ(recorder_.size(), 1u);
  const ToolTransition& t = recorder_.transitions()[0];
  EXPECT_TRUE(t.IsAnnounce());
  EXPECT_EQ(t.id, Id("toolu_1"));
  EXPECT_EQ(t.name, "get_weather");
  EXPECT_EQ(t.step, 2);
  EXPECT_EQ(t.attempt, 1);
  EXPECT_FALSE(t.reason.has_value());
  EXPECT_EQ(SumOf(ledger_.counters()), 0);
}

TEST_F(ToolLedgerTest, IdsAreOpaqueStrings) {
  for (const char* id : {"toolu_vrtx_01abc", "toolu_bdrk_01xyz", "x",
                         "srvtoolu_?", "mcptoolu_\xc3\xa9"}) {
    EXPECT_EQ(ledger_.Announce(Id(id), "t", ToolKind::kClient, 0),
              LedgerOutcome::kApplied)
        << id;
  }
  EXPECT_EQ(ledger_.entries().size(), 5u);
}

TEST_F(ToolLedgerTest, DuplicateAnnounceInSameStepIsCountedAndIgnored) {
  RunningClient("a", 1);
  recorder_.Clear();
  EXPECT_EQ(ledger_.Announce(Id("a"), "other", ToolKind::kServer, 1),
            LedgerOutcome::kDuplicateAnnounce);
  EXPECT_EQ(ledger_.counters().duplicate_announces, 1);
  EXPECT_EQ(recorder_.size(), 0u);
  EXPECT_EQ(StateOf("a"), ToolState::kRunning);
  EXPECT_EQ(ledger_.Get(Id("a"))->name, "echo");
  EXPECT_EQ(ledger_.Get(Id("a"))->kind, ToolKind::kClient);
}

TEST_F(ToolLedgerTest, AnnounceOfIdFromAnotherStepIsCountedAsReusedId) {
  ReadyClient("a", 0);
  ASSERT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("ok"), false),
            LedgerOutcome::kApplied);
  recorder_.Clear();
  EXPECT_EQ(ledger_.Announce(Id("a"), "echo", ToolKind::kClient, 1),
            LedgerOutcome::kReusedId);
  EXPECT_EQ(ledger_.counters().reused_ids, 1);
  EXPECT_EQ(ledger_.counters().duplicate_announces, 0);
  EXPECT_EQ(recorder_.size(), 0u);
  // Not resurrected.
  EXPECT_EQ(StateOf("a"), ToolState::kDone);
  EXPECT_EQ(ledger_.Get(Id("a"))->step, 0);
}

TEST_F(ToolLedgerTest, AnnounceRejectsEmptyIdAndNegativeStep) {
  EXPECT_EQ(ledger_.Announce(ToolUseId(), "t", ToolKind::kClient, 0),
            LedgerOutcome::kInvalidArgument);
  EXPECT_EQ(ledger_.Announce(Id("a"), "t", ToolKind::kClient, -1),
            LedgerOutcome::kInvalidArgument);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 2);
  EXPECT_THAT(ledger_.entries(), IsEmpty());
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(ToolLedgerTest, AnnounceAfterCloseTaskIsRefused) {
  ledger_.CloseTask();
  EXPECT_TRUE(ledger_.closed());
  EXPECT_EQ(ledger_.Announce(Id("late"), "t", ToolKind::kClient, 3),
            LedgerOutcome::kLedgerClosed);
  EXPECT_EQ(ledger_.Get(Id("late")), nullptr);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 1);
}

TEST_F(ToolLedgerTest, GetPointersStayValidAsEntriesAreAdded) {
  ReadyClient("first");
  const ToolEntry* first = ledger_.Get(Id("first"));
  for (int i = 0; i < 1000; ++i) {
    std::string id = "t" + std::to_string(i);
    ASSERT_EQ(ledger_.Announce(ToolUseId(id), "x", ToolKind::kServer, 0),
              LedgerOutcome::kApplied);
  }
  EXPECT_EQ(ledger_.Get(Id("first")), first);
  EXPECT_EQ(first->id, Id("first"));
  EXPECT_EQ(ledger_.Get(Id("nope")), nullptr);
}

// --- Input ------------------------------------------------------------------

TEST_F(ToolLedgerTest, SetInputKeepsEntryPendingWithoutATransition) {
  ASSERT_EQ(ledger_.Announce(Id("a"), "echo", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  recorder_.Clear();
  EXPECT_EQ(ledger_.SetInput(Id("a"), J(R"({"q":[1,2]})")),
            LedgerOutcome::kApplied);
  EXPECT_EQ(recorder_.size(), 0u);
  EXPECT_EQ(StateOf("a"), ToolState::kPending);
  EXPECT_EQ(*ledger_.Get(Id("a"))->input, J(R"({"q":[1,2]})"));
}

TEST_F(ToolLedgerTest, SetInputRejectsNonObjectAndSecondInput) {
  ASSERT_EQ(ledger_.Announce(Id("a"), "echo", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.SetInput(Id("a"), Json("text")),
            LedgerOutcome::kInvalidArgument);
  EXPECT_EQ(ledger_.SetInput(Id("a"), J("[1]")),
            LedgerOutcome::kInvalidArgument);
  EXPECT_FALSE(ledger_.Get(Id("a"))->input.has_value());
  EXPECT_EQ(ledger_.SetInput(Id("a"), J("{}")), LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.SetInput(Id("a"), J(R"({"b":1})")),
            LedgerOutcome::kWrongState);
  EXPECT_EQ(*ledger_.Get(Id("a"))->input, J("{}"));
  EXPECT_EQ(ledger_.counters().inapplicable_events, 3);
  EXPECT_EQ(ledger_.SetInput(Id("zzz"), J("{}")), LedgerOutcome::kUnknownId);
  EXPECT_EQ(ledger_.counters().unknown_ids, 1);
}

TEST_F(ToolLedgerTest, InvalidClientInputGoesStraightToInvalidInputError) {
  ASSERT_EQ(ledger_.Announce(Id("a"), "make_file", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.MarkInputInvalid(Id("a"), "invalid escape '\\H' at 12"),
            LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kError);
  auto terminal = recorder_.TerminalOf(Id("a"));
  ASSERT_TRUE(terminal.has_value());
  EXPECT_EQ(terminal->from, ToolState::kPending);
  EXPECT_EQ(terminal->reason, ErrorReason::kInvalidInput);
  EXPECT_EQ(terminal->message, "invalid escape '\\H' at 12");
  // Never dispatched.
  EXPECT_EQ(ledger_.Start(Id("a"), 1), LedgerOutcome::kAlreadyTerminal);
  Json block = ResultFor("a");
  EXPECT_EQ(block["type"], "tool_result");
  EXPECT_EQ(block["tool_use_id"], "a");
  EXPECT_EQ(block["is_error"], true);
  EXPECT_EQ(block["content"],
            "Tool input was invalid JSON: invalid escape '\\H' at 12");
}

TEST_F(ToolLedgerTest, InvalidServerInputWaitsForTheServersOwnResult) {
  Server("s");
  recorder_.Clear();
  EXPECT_EQ(ledger_.MarkInputInvalid(Id("s"), "bad json"),
            LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("s"), ToolState::kPending);
  EXPECT_TRUE(ledger_.Get(Id("s"))->input_invalid);
  EXPECT_EQ(recorder_.size(), 0u);
  EXPECT_EQ(ledger_.MarkInputInvalid(Id("s"), "again"),
            LedgerOutcome::kWrongState);
  EXPECT_EQ(ledger_.SetInput(Id("s"), J("{}")), LedgerOutcome::kWrongState);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 2);
  EXPECT_THAT(ledger_.OpenServerIds(), ElementsAre(Id("s")));
}

// --- Start / Requeue -------------------------------------------------------

TEST_F(ToolLedgerTest, StartMovesPendingToRunning) {
  ReadyClient("a", 4);
  recorder_.Clear();
  EXPECT_EQ(ledger_.Start(Id("a"), 1), LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kRunning);
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(recorder_.transitions()[0].from, ToolState::kPending);
  EXPECT_EQ(recorder_.transitions()[0].to, ToolState::kRunning);
  EXPECT_EQ(recorder_.transitions()[0].attempt, 1);
  EXPECT_EQ(recorder_.transitions()[0].step, 4);
}

TEST_F(ToolLedgerTest, StartRequiresCompleteInput) {
  // A tool_use whose block never got content_block_stop (max_tokens, FX-03)
  // is never run.
  ASSERT_EQ(ledger_.Announce(Id("a"), "make_file", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.Start(Id("a"), 1), LedgerOutcome::kWrongState);
  EXPECT_EQ(StateOf("a"), ToolState::kPending);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 1);
}

TEST_F(ToolLedgerTest, StartIgnoresWrongAttemptKindAndState) {
  RunningClient("a");
  Server("s");
  recorder_.Clear();
  EXPECT_EQ(ledger_.Start(Id("a"), 1), LedgerOutcome::kWrongState);
  EXPECT_EQ(ledger_.Start(Id("a"), 2), LedgerOutcome::kStaleAttempt);
  EXPECT_EQ(ledger_.Start(Id("a"), 0), LedgerOutcome::kInvalidArgument);
  EXPECT_EQ(ledger_.Start(Id("s"), 1), LedgerOutcome::kWrongKind);
  EXPECT_EQ(ledger_.Start(Id("nope"), 1), LedgerOutcome::kUnknownId);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 4);
  EXPECT_EQ(ledger_.counters().unknown_ids, 1);
  EXPECT_EQ(recorder_.size(), 0u);
  EXPECT_EQ(StateOf("s"), ToolState::kPending);
}

TEST_F(ToolLedgerTest, RequeueReturnsRunningToPendingWithNextAttempt) {
  RunningClient("a");
  recorder_.Clear();
  EXPECT_EQ(ledger_.Requeue(Id("a"), "lease expired"), LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kPending);
  EXPECT_EQ(ledger_.Get(Id("a"))->attempt, 2);
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(recorder_.transitions()[0].from, ToolState::kRunning);
  EXPECT_EQ(recorder_.transitions()[0].to, ToolState::kPending);
  EXPECT_EQ(recorder_.transitions()[0].attempt, 2);
  EXPECT_EQ(recorder_.transitions()[0].message, "lease expired");
  // The old attempt can no longer start; the new one can.
  EXPECT_EQ(ledger_.Start(Id("a"), 1), LedgerOutcome::kStaleAttempt);
  EXPECT_EQ(ledger_.Start(Id("a"), 2), LedgerOutcome::kApplied);
}

TEST_F(ToolLedgerTest, RequeueUpToMaxAttemptsThenWorkerLost) {
  RunningClient("a");
  for (int attempt = 2; attempt <= 3; ++attempt) {
    ASSERT_EQ(ledger_.Requeue(Id("a")), LedgerOutcome::kApplied);
    ASSERT_EQ(ledger_.Get(Id("a"))->attempt, attempt);
    ASSERT_EQ(ledger_.Start(Id("a"), attempt), LedgerOutcome::kApplied);
  }
  EXPECT_EQ(ledger_.Requeue(Id("a"), "worker w3 disconnected"),
            LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kError);
  const ToolEntry* entry = ledger_.Get(Id("a"));
  EXPECT_EQ(entry->reason, ErrorReason::kWorkerLost);
  EXPECT_EQ(entry->attempt, 3);
  EXPECT_THAT(entry->message, HasSubstr("3 attempts"));
  EXPECT_THAT(entry->message, HasSubstr("worker w3 disconnected"));
  Json block = ResultFor("a");
  EXPECT_EQ(block["is_error"], true);
  EXPECT_THAT(block["content"].get<std::string>(),
              HasSubstr("the worker running it was lost"));
  EXPECT_EQ(ledger_.Requeue(Id("a")), LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.counters().ignored_terminal_events, 1);
}

TEST_F(ToolLedgerTest, HandedBackDeliveriesDoNotCountAgainstMaxAttempts) {
  RunningClient("a");
  // A draining worker hands the call back twice; attempts grow, the limit
  // of lost deliveries is untouched.
  for (int attempt = 2; attempt <= 3; ++attempt) {
    ASSERT_EQ(ledger_.Requeue(Id("a"), "draining", /*counts_as_attempt=*/false),
              LedgerOutcome::kApplied);
    ASSERT_EQ(ledger_.Start(Id("a"), attempt), LedgerOutcome::kApplied);
  }
  for (int attempt = 4; attempt <= 5; ++attempt) {
    ASSERT_EQ(ledger_.Requeue(Id("a"), "lease expired"),
              LedgerOutcome::kApplied);
    ASSERT_EQ(StateOf("a"), ToolState::kPending);
    ASSERT_EQ(ledger_.Start(Id("a"), attempt), LedgerOutcome::kApplied);
  }
  EXPECT_EQ(ledger_.Get(Id("a"))->lost_deliveries, 2);
  EXPECT_EQ(ledger_.Requeue(Id("a"), "lease expired"), LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kError);
  EXPECT_EQ(ledger_.Get(Id("a"))->reason, ErrorReason::kWorkerLost);
  EXPECT_EQ(ledger_.Get(Id("a"))->attempt, 5);
}

TEST(ToolLedgerRestoreTest, RestoredEntriesContinueWhereTheyStopped) {
  TransitionRecorder recorder;
  ToolLedger ledger(recorder.Sink());
  ToolEntry running;
  running.id = Id("a");
  running.name = "t";
  running.step = 2;
  running.state = ToolState::kRunning;
  running.attempt = 2;
  running.lost_deliveries = 1;
  running.input = J(R"({"x":1})");
  ASSERT_TRUE(ledger.Restore(running).ok());
  ToolEntry failed;
  failed.id = Id("b");
  failed.name = "t";
  failed.step = 2;
  failed.state = ToolState::kError;
  failed.reason = ErrorReason::kTimeout;
  ASSERT_TRUE(ledger.Restore(failed).ok());
  EXPECT_EQ(recorder.size(), 0u);  // nothing reported

  EXPECT_EQ(ledger.Restore(running).code(), absl::StatusCode::kAlreadyExists);
  ToolEntry bad = failed;
  bad.id = Id("c");
  bad.reason.reset();
  EXPECT_EQ(ledger.Restore(bad).code(), absl::StatusCode::kInvalidArgument);

  // The restored entry behaves like the original: a new loss is its last.
  EXPECT_EQ(ledger.Requeue(Id("a")), LedgerOutcome::kApplied);
  EXPECT_EQ(ledger.Get(Id("a"))->attempt, 3);
  EXPECT_EQ(ledger.Start(Id("a"), 3), LedgerOutcome::kApplied);
  EXPECT_EQ(ledger.Requeue(Id("a")), LedgerOutcome::kApplied);
  EXPECT_EQ(ledger.Get(Id("a"))->reason, ErrorReason::kWorkerLost);
  EXPECT_EQ(ledger.Fail(Id("b"), ErrorReason::kCancelled, "x"),
            LedgerOutcome::kAlreadyTerminal);
}

TEST(ToolLedgerOptionsTest, MaxAttemptsOptionIsHonoured) {
  TransitionRecorder recorder;
  ToolLedger ledger(recorder.Sink(), ToolLedgerOptions{.max_attempts = 1});
  ASSERT_EQ(ledger.Announce(Id("a"), "t", ToolKind::kClient, 0),
            LedgerOutcome::kApplied);
  ASSERT_EQ(ledger.SetInput(Id("a"), J("{}")), LedgerOutcome::kApplied);
  ASSERT_EQ(ledger.Start(Id("a"), 1), LedgerOutcome::kApplied);
  EXPECT_EQ(ledger.Requeue(Id("a")), LedgerOutcome::kApplied);
  EXPECT_EQ(ledger.Get(Id("a"))->reason, ErrorReason::kWorkerLost);

  ToolLedger clamped(nullptr, ToolLedgerOptions{.max_attempts = -5});
  EXPECT_EQ(clamped.options().max_attempts, 1);
  EXPECT_TRUE(recorder.EveryAnnouncedToolEndedOnce());
}

TEST_F(ToolLedgerTest, RequeueIgnoresPendingServerAndUnknownTools) {
  ReadyClient("a");
  Server("s");
  EXPECT_EQ(ledger_.Requeue(Id("a")), LedgerOutcome::kWrongState);
  EXPECT_EQ(ledger_.Requeue(Id("s")), LedgerOutcome::kWrongKind);
  EXPECT_EQ(ledger_.Requeue(Id("zz")), LedgerOutcome::kUnknownId);
  EXPECT_EQ(ledger_.Get(Id("a"))->attempt, 1);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 2);
  EXPECT_EQ(ledger_.counters().unknown_ids, 1);
}

// --- Client results ---------------------------------------------------------

TEST_F(ToolLedgerTest, ResultCompletesRunningTool) {
  RunningClient("a");
  recorder_.Clear();
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("72F and sunny"), false),
            LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kDone);
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(recorder_.transitions()[0].from, ToolState::kRunning);
  EXPECT_EQ(recorder_.transitions()[0].to, ToolState::kDone);
  EXPECT_EQ(ResultFor("a"), J(R"({"type":"tool_result","tool_use_id":"a",)"
                              R"("content":"72F and sunny"})"));
}

TEST_F(ToolLedgerTest, ToolResultContentIsNormalised) {
  RunningClient("blocks");
  RunningClient("empty");
  RunningClient("object");
  RunningClient("mixed");
  const Json blocks = J(R"([{"type":"text","text":"a"}])");
  ledger_.CompleteClient(Id("blocks"), 1, blocks, false);
  ledger_.CompleteClient(Id("empty"), 1, Json(""), false);
  ledger_.CompleteClient(Id("object"), 1, J(R"({"n":1})"), false);
  ledger_.CompleteClient(Id("mixed"), 1, J(R"([1,"x"])"), false);
  EXPECT_EQ(ResultFor("blocks")["content"], blocks);
  // Empty output leaves `content` out rather than sending an empty text.
  EXPECT_FALSE(ResultFor("empty").contains("content"));
  EXPECT_FALSE(ResultFor("empty").contains("is_error"));
  EXPECT_EQ(ResultFor("object")["content"], R"({"n":1})");
  EXPECT_EQ(ResultFor("mixed")["content"], R"([1,"x"])");
}

TEST_F(ToolLedgerTest, ErrorResultKeepsContentForTheToolResult) {
  RunningClient("a");
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 1,
                                   Json("exit status 2: no such "
                                        "file"),
                                   true),
            LedgerOutcome::kApplied);
  const ToolEntry* entry = ledger_.Get(Id("a"));
  EXPECT_EQ(entry->state, ToolState::kError);
  EXPECT_EQ(entry->reason, ErrorReason::kToolFailed);
  EXPECT_TRUE(entry->result_is_error);
  EXPECT_EQ(ResultFor("a"),
            J(R"({"type":"tool_result","tool_use_id":"a",)"
              R"("content":"exit status 2: no such file","is_error":true})"));
}

TEST_F(ToolLedgerTest, ErrorResultWithoutContentSaysTheToolFailed) {
  RunningClient("a");
  ledger_.CompleteClient(Id("a"), 1, Json(), true);
  Json block = ResultFor("a");
  EXPECT_EQ(block["is_error"], true);
  EXPECT_EQ(block["content"], "Tool 'echo' failed: it reported an error");
}

TEST_F(ToolLedgerTest, ErrorWhilePendingIsAccepted) {
  // Seed 002: a tool-error that arrives while the tool is still pending
  // was dropped. Both error paths must be accepted in PENDING.
  ReadyClient("via_fail");
  ReadyClient("via_result");
  recorder_.Clear();
  EXPECT_EQ(ledger_.Fail(Id("via_fail"), ErrorReason::kToolFailed,
                         "worker rejected the call"),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.CompleteClient(Id("via_result"), 1, Json("boom"), true),
            LedgerOutcome::kApplied);
  for (const char* id : {"via_fail", "via_result"}) {
    auto terminal = recorder_.TerminalOf(Id(id));
    ASSERT_TRUE(terminal.has_value()) << id;
    EXPECT_EQ(terminal->from, ToolState::kPending) << id;
    EXPECT_EQ(terminal->to, ToolState::kError) << id;
    EXPECT_EQ(terminal->reason, ErrorReason::kToolFailed) << id;
    EXPECT_EQ(ResultFor(id)["is_error"], true) << id;
  }
  EXPECT_EQ(ResultFor("via_fail")["content"],
            "Tool 'echo' failed: worker rejected the call");
  EXPECT_EQ(ResultFor("via_result")["content"], "boom");
  EXPECT_TRUE(ledger_.AllClientTerminal(0));
  EXPECT_EQ(SumOf(ledger_.counters()), 0);
}

TEST_F(ToolLedgerTest, ResultWhilePendingIsAccepted) {
  ReadyClient("a");
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("done"), false),
            LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kDone);
}

TEST_F(ToolLedgerTest, StaleAttemptResultIsIgnored) {
  RunningClient("a");
  ASSERT_EQ(ledger_.Requeue(Id("a"), "lease expired"), LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.Start(Id("a"), 2), LedgerOutcome::kApplied);
  recorder_.Clear();
  // The first worker comes back late with a result for attempt 1.
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("old"), false),
            LedgerOutcome::kStaleAttempt);
  EXPECT_EQ(ledger_.counters().stale_results, 1);
  EXPECT_EQ(StateOf("a"), ToolState::kRunning);
  EXPECT_EQ(recorder_.size(), 0u);
  // A result for an attempt that never existed is stale too.
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 7, Json("?"), false),
            LedgerOutcome::kStaleAttempt);
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 2, Json("new"), false),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ResultFor("a")["content"], "new");
  // Stale after the end: still stale, not duplicate.
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("old"), true),
            LedgerOutcome::kStaleAttempt);
  EXPECT_EQ(ledger_.counters().stale_results, 3);
  EXPECT_EQ(ledger_.counters().duplicate_results, 0);
  EXPECT_EQ(ResultFor("a")["content"], "new");
}

TEST_F(ToolLedgerTest, EarlierAttemptResultCompletesANonTerminalCall) {
  RunningClient("a");
  ASSERT_EQ(ledger_.Requeue(Id("a"), "worker disconnected"),
            LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.Start(Id("a"), 2), LedgerOutcome::kApplied);
  recorder_.Clear();
  // The first worker reconnects with the finished result of attempt 1.
  EXPECT_EQ(ledger_.CompleteClientEarlierAttempt(Id("a"), 1, Json("late"),
                                                 false),
            LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("a"), ToolState::kDone);
  EXPECT_EQ(ResultFor("a")["content"], "late");
  ASSERT_EQ(recorder_.size(), 1u);
  EXPECT_EQ(ledger_.Get(Id("a"))->message,
            "result of attempt 1 (finished after attempt 2 was delivered)");
  // The current attempt's own result now finds the call ended.
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 2, Json("new"), false),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ResultFor("a")["content"], "late");
}

TEST_F(ToolLedgerTest, EarlierAttemptResultIsDroppedOnceTheCallEnded) {
  RunningClient("a");
  ASSERT_EQ(ledger_.Requeue(Id("a"), "lease expired"), LedgerOutcome::kApplied);
  ASSERT_EQ(ledger_.CompleteClient(Id("a"), 2, Json("new"), false),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.CompleteClientEarlierAttempt(Id("a"), 1, Json("late"),
                                                 true),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ResultFor("a")["content"], "new");
  EXPECT_EQ(ledger_.counters().duplicate_results, 1);
}

TEST_F(ToolLedgerTest, EarlierAttemptPathRefusesTheCurrentAndLaterAttempts) {
  RunningClient("a");
  ASSERT_EQ(ledger_.Requeue(Id("a"), "lease expired"), LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.CompleteClientEarlierAttempt(Id("a"), 2, Json("x"), false),
            LedgerOutcome::kStaleAttempt);
  EXPECT_EQ(ledger_.CompleteClientEarlierAttempt(Id("a"), 3, Json("x"), false),
            LedgerOutcome::kStaleAttempt);
  EXPECT_EQ(ledger_.CompleteClientEarlierAttempt(Id("a"), 0, Json("x"), false),
            LedgerOutcome::kInvalidArgument);
  EXPECT_EQ(ledger_.CompleteClientEarlierAttempt(Id("nope"), 1, Json("x"),
                                                 false),
            LedgerOutcome::kUnknownId);
  EXPECT_EQ(StateOf("a"), ToolState::kPending);
}

TEST_F(ToolLedgerTest, DuplicateResultIsIdempotent) {
  RunningClient("a");
  ASSERT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("first"), false),
            LedgerOutcome::kApplied);
  recorder_.Clear();
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("first"), false),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("second"), true),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ledger_.counters().duplicate_results, 2);
  EXPECT_EQ(recorder_.size(), 0u);
  EXPECT_EQ(StateOf("a"), ToolState::kDone);
  EXPECT_EQ(ResultFor("a")["content"], "first");
}

TEST_F(ToolLedgerTest, ClientResultsThatMatchNothingAreCounted) {
  Server("s");
  EXPECT_EQ(ledger_.CompleteClient(Id("ghost"), 1, Json("x"), false),
            LedgerOutcome::kUnknownId);
  EXPECT_EQ(ledger_.counters().orphan_results, 1);
  EXPECT_EQ(ledger_.CompleteClient(Id("s"), 1, Json("x"), false),
            LedgerOutcome::kWrongKind);
  ReadyClient("a");
  EXPECT_EQ(ledger_.CompleteClient(Id("a"), 0, Json("x"), false),
            LedgerOutcome::kInvalidArgument);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 2);
  EXPECT_EQ(StateOf("s"), ToolState::kPending);
  EXPECT_EQ(StateOf("a"), ToolState::kPending);
}

// --- Fail -------------------------------------------------------------------

TEST_F(ToolLedgerTest, FailFromRunningCarriesEachReasonIntoTheToolResult) {
  const std::vector<std::pair<ErrorReason, std::string>> cases = {
      {ErrorReason::kToolFailed, "Tool 'echo' failed: why"},
      {ErrorReason::kInvalidInput,
       "Tool 'echo' rejected its input as invalid: why"},
      {ErrorReason::kTimeout, "The tool did not finish: it timed out: why"},
      {ErrorReason::kCancelled,
       "The tool did not finish: the request was cancelled: why"},
      {ErrorReason::kWorkerLost,
       "The tool did not finish: the worker running it was lost: why"},
      {ErrorReason::kNoWorker,
       "The tool did not run: no worker for 'echo' was available: why"},
      {ErrorReason::kStreamAborted,
       "The tool did not finish: the response that requested it was "
       "interrupted: why"},
      {ErrorReason::kServerResultMissing,
       "The tool did not finish: its result never arrived: why"},
      {ErrorReason::kQueueFull,
       "The tool did not run: too many calls of 'echo' were waiting: why"},
  };
  int n = 0;
  for (const auto& [reason, text] : cases) {
    std::string id = "t" + std::to_string(n++);
    RunningClient(id.c_str());
    ASSERT_EQ(ledger_.Fail(ToolUseId(id), reason, "why"),
              LedgerOutcome::kApplied);
    auto terminal = recorder_.TerminalOf(ToolUseId(id));
    ASSERT_TRUE(terminal.has_value());
    EXPECT_EQ(terminal->from, ToolState::kRunning);
    EXPECT_EQ(terminal->reason, reason);
    EXPECT_EQ(terminal->message, "why");
    Json block = ResultFor(id.c_str());
    EXPECT_EQ(block["is_error"], true) << ErrorReasonName(reason);
    EXPECT_EQ(block["content"], text) << ErrorReasonName(reason);
  }
}

TEST_F(ToolLedgerTest, CancelledToolResultWithoutDetail) {
  ReadyClient("a");
  ledger_.Fail(Id("a"), ErrorReason::kCancelled, "");
  EXPECT_EQ(ResultFor("a")["content"],
            "The tool did not finish: the request was cancelled");
}

TEST_F(ToolLedgerTest, FailAppliesToServerToolsAndIgnoresTheRest) {
  Server("s");
  EXPECT_EQ(ledger_.Fail(Id("s"), ErrorReason::kStreamAborted, "x"),
            LedgerOutcome::kApplied);
  EXPECT_EQ(ledger_.Get(Id("s"))->reason, ErrorReason::kStreamAborted);
  EXPECT_EQ(ledger_.Fail(Id("s"), ErrorReason::kTimeout, "y"),
            LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.Fail(Id("nobody"), ErrorReason::kTimeout, "y"),
            LedgerOutcome::kUnknownId);
  EXPECT_EQ(ledger_.counters().ignored_terminal_events, 1);
  EXPECT_EQ(ledger_.counters().unknown_ids, 1);
  EXPECT_EQ(ledger_.Get(Id("s"))->reason, ErrorReason::kStreamAborted);
  EXPECT_EQ(ledger_.Get(Id("s"))->message, "x");
}

TEST_F(ToolLedgerTest, EventsForTerminalEntriesAreCountedAndIgnored) {
  RunningClient("a");
  ASSERT_EQ(ledger_.CompleteClient(Id("a"), 1, Json("ok"), false),
            LedgerOutcome::kApplied);
  const ToolEntry before = *ledger_.Get(Id("a"));
  recorder_.Clear();
  EXPECT_EQ(ledger_.Start(Id("a"), 1), LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.Requeue(Id("a")), LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.Fail(Id("a"), ErrorReason::kTimeout, "late"),
            LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.SetInput(Id("a"), J("{}")),
            LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.MarkInputInvalid(Id("a"), "x"),
            LedgerOutcome::kAlreadyTerminal);
  EXPECT_EQ(ledger_.counters().ignored_terminal_events, 5);
  EXPECT_EQ(SumOf(ledger_.counters()), 5);
  EXPECT_EQ(recorder_.size(), 0u);
  const ToolEntry& after = *ledger_.Get(Id("a"));
  EXPECT_EQ(after.state, before.state);
  EXPECT_EQ(after.reason, before.reason);
  EXPECT_EQ(after.result, before.result);
  EXPECT_EQ(after.message, before.message);
  EXPECT_EQ(after.input, before.input);
}

// --- Server results ---------------------------------------------------------

TEST_F(ToolLedgerTest, ServerResultInSameStepCompletesTheCall) {
  Server("srvtoolu_1", 0);
  const Json block = J(R"({"type":"web_search_tool_result",)"
                       R"("tool_use_id":"srvtoolu_1","content":[]})");
  EXPECT_EQ(ledger_.ObserveServerResult(block, 0), LedgerOutcome::kApplied);
  const ToolEntry* entry = ledger_.Get(Id("srvtoolu_1"));
  EXPECT_EQ(entry->state, ToolState::kDone);
  EXPECT_EQ(*entry->result, block);
  EXPECT_EQ(entry->result_step, 0);
  EXPECT_FALSE(entry->result_is_error);
  EXPECT_THAT(ledger_.OpenServerIds(), IsEmpty());
}

TEST_F(ToolLedgerTest, ServerResultMatchedFromALaterStep) {
  Server("srvtoolu_A", 3);
  ReadyClient("toolu_B", 3);
  EXPECT_THAT(ledger_.OpenServerIds(), ElementsAre(Id("srvtoolu_A")));
  EXPECT_EQ(
      ledger_.ObserveServerResult(
          J(R"({"type":"code_execution_tool_result","tool_use_id":"srvtoolu_A",)"
            R"("content":{"type":"code_execution_result","stdout":"4",)"
            R"("stderr":"","return_code":0,"content":[]}})"),
          5),
      LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("srvtoolu_A"), ToolState::kDone);
  EXPECT_EQ(ledger_.Get(Id("srvtoolu_A"))->result_step, 5);
  EXPECT_EQ(ledger_.Get(Id("srvtoolu_A"))->step, 3);
}

TEST_F(ToolLedgerTest, ServerErrorObjectGivesToolFailed) {
  Server("srvtoolu_f", 0, "web_fetch");
  EXPECT_EQ(
      ledger_.ObserveServerResult(J(R"({"type":"web_fetch_tool_result",)"
                                    R"("tool_use_id":"srvtoolu_f","content":)"
                                    R"({"type":"web_fetch_tool_result_error",)"
                                    R"("error_code":"url_not_accessible"}})"),
                                  0),
      LedgerOutcome::kApplied);
  const ToolEntry* entry = ledger_.Get(Id("srvtoolu_f"));
  EXPECT_EQ(entry->state, ToolState::kError);
  EXPECT_EQ(entry->reason, ErrorReason::kToolFailed);
  EXPECT_TRUE(entry->result_is_error);
  EXPECT_EQ(entry->message, "web_fetch_tool_result_error: url_not_accessible");
  EXPECT_EQ((*entry->result)["content"]["error_code"], "url_not_accessible");
}

TEST_F(ToolLedgerTest, ServerErrorMessageIncludesTheErrorMessageField) {
  Server("s", 0, "text_editor_code_execution");
  ledger_.ObserveServerResult(
      J(R"({"type":"text_editor_code_execution_tool_result","tool_use_id":"s",)"
        R"("content":{"type":"text_editor_code_execution_tool_result_error",)"
        R"("error_code":"file_not_found","error_message":"no /tmp/x"}})"),
      0);
  EXPECT_EQ(ledger_.Get(Id("s"))->message,
            "text_editor_code_execution_tool_result_error: file_not_found "
            "(no /tmp/x)");
}

TEST_F(ToolLedgerTest, McpResultIsErrorFlagDecidesTheOutcome) {
  Server("mcptoolu_ok", 0, "echo");
  Server("mcptoolu_bad", 0, "echo");
  ledger_.ObserveServerResult(
      J(R"({"type":"mcp_tool_result","tool_use_id":"mcptoolu_ok",)"
        R"("is_error":false,"content":[{"type":"text","text":"hello"}]})"),
      0);
  ledger_.ObserveServerResult(
      J(R"({"type":"mcp_tool_result","tool_use_id":"mcptoolu_bad",)"
        R"("is_error":true,"content":[{"type":"text","text":"nope"}]})"),
      0);
  EXPECT_EQ(StateOf("mcptoolu_ok"), ToolState::kDone);
  EXPECT_EQ(StateOf("mcptoolu_bad"), ToolState::kError);
  EXPECT_EQ(ledger_.Get(Id("mcptoolu_bad"))->reason, ErrorReason::kToolFailed);
  EXPECT_EQ(ledger_.Get(Id("mcptoolu_bad"))->message,
            "mcp_tool_result reported is_error");
}

TEST_F(ToolLedgerTest, DuplicateServerResultIsFlaggedForDrop) {
  Server("s", 0, "web_fetch");
  const Json block = J(
      R"({"type":"web_fetch_tool_result","tool_use_id":"s","content":)"
      R"({"type":"web_fetch_tool_result_error","error_code":"unavailable"}})");
  ASSERT_EQ(ledger_.ObserveServerResult(block, 0), LedgerOutcome::kApplied);
  recorder_.Clear();
  Json different = block;
  different["content"] = J(R"({"type":"web_fetch_result","url":"u"})");
  EXPECT_EQ(ledger_.ObserveServerResult(block, 1),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ledger_.ObserveServerResult(different, 1),
            LedgerOutcome::kDuplicateResult);
  EXPECT_EQ(ledger_.counters().duplicate_results, 2);
  EXPECT_EQ(recorder_.size(), 0u);
  EXPECT_EQ(StateOf("s"), ToolState::kError);
  EXPECT_EQ(*ledger_.Get(Id("s"))->result, block);
  EXPECT_EQ(ledger_.Get(Id("s"))->result_step, 0);
}

TEST_F(ToolLedgerTest, ServerResultsThatMatchNoServerCallAreOrphans) {
  Server("later", 2);
  ReadyClient("toolu_c", 0);
  EXPECT_EQ(
      ledger_.ObserveServerResult(
          J(R"({"type":"web_search_tool_result","tool_use_id":"ghost"})"), 1),
      LedgerOutcome::kUnknownId);
  // A result cannot answer a call from a later step.
  EXPECT_EQ(
      ledger_.ObserveServerResult(
          J(R"({"type":"web_search_tool_result","tool_use_id":"later"})"), 1),
      LedgerOutcome::kUnknownId);
  // Nor a client tool (fixture 19's confusion, the other way round).
  EXPECT_EQ(
      ledger_.ObserveServerResult(
          J(R"({"type":"web_search_tool_result","tool_use_id":"toolu_c"})"), 1),
      LedgerOutcome::kWrongKind);
  EXPECT_EQ(ledger_.counters().orphan_results, 3);
  EXPECT_EQ(StateOf("later"), ToolState::kPending);
  EXPECT_EQ(StateOf("toolu_c"), ToolState::kPending);
}

TEST_F(ToolLedgerTest, MalformedServerResultsAreInvalidArguments) {
  Server("s");
  for (const char* text :
       {R"("web_search_tool_result")", R"({"type":"web_search_tool_result"})",
        R"({"type":"web_search_tool_result","tool_use_id":7})",
        R"({"type":"web_search_tool_result","tool_use_id":""})",
        R"({"type":"tool_result","tool_use_id":"s"})",
        R"({"type":"text","tool_use_id":"s"})", R"({"tool_use_id":"s"})"}) {
    EXPECT_EQ(ledger_.ObserveServerResult(J(text), 0),
              LedgerOutcome::kInvalidArgument)
        << text;
  }
  EXPECT_EQ(
      ledger_.ObserveServerResult(
          J(R"({"type":"web_search_tool_result","tool_use_id":"s"})"), -1),
      LedgerOutcome::kInvalidArgument);
  EXPECT_EQ(ledger_.counters().inapplicable_events, 8);
  EXPECT_EQ(StateOf("s"), ToolState::kPending);
}

TEST_F(ToolLedgerTest, ToolResultForRefusesServerUnknownAndOpenTools) {
  Server("s");
  ReadyClient("a");
  EXPECT_THAT(ledger_.ToolResultFor(Id("s")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(
      ledger_.ToolResultFor(Id("a")),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("pending")));
  EXPECT_THAT(ledger_.ToolResultFor(Id("zz")),
              StatusIs(absl::StatusCode::kNotFound));
}

// --- Assistant messages -----------------------------------------------------

// Modelled on fixture 14 turn 1: text, server_tool_use web_fetch, its error
// result, text, a no-argument client tool_use; stop_reason tool_use.
constexpr char kFetchErrorTurn1[] = R"({"role":"assistant","content":[
  {"type":"text","text":"Let me fetch that."},
  {"type":"server_tool_use","id":"srvtoolu_01J1","name":"web_fetch",
   "input":{"url":"https://example.com/p"}},
  {"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_01J1",
   "content":{"type":"web_fetch_tool_result_error",
              "error_code":"url_not_accessible"},"caller":{"type":"direct"}},
  {"type":"text","text":"I could not fetch it."},
  {"type":"tool_use","id":"toolu_01FU","name":"display_products","input":{},
   "caller":{"type":"direct"}}]})";

// Modelled on fixture 14 turn 2: it opens with a repeat of the result block
// for the server call resolved in turn 1.
constexpr char kFetchErrorTurn2[] = R"({"role":"assistant","content":[
  {"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_01J1",
   "content":{"type":"web_fetch_tool_result_error",
              "error_code":"url_not_accessible"},"caller":{"type":"direct"}},
  {"type":"text","text":"Here are the products."}]})";

TEST_F(ToolLedgerTest, ObserveMessageAppliesEveryBlockInOrder) {
  auto observed = ledger_.ObserveAssistantMessage(J(kFetchErrorTurn1), 0);
  ASSERT_THAT(observed, IsOk());
  EXPECT_THAT(observed->announced,
              ElementsAre(Id("srvtoolu_01J1"), Id("toolu_01FU")));
  EXPECT_THAT(observed->server_results_matched,
              ElementsAre(Id("srvtoolu_01J1")));
  EXPECT_THAT(observed->client_tool_use_ids, ElementsAre(Id("toolu_01FU")));
  EXPECT_THAT(observed->deferred_server_ids, IsEmpty());
  EXPECT_THAT(observed->duplicate_result_indexes, IsEmpty());
  EXPECT_THAT(observed->orphan_result_indexes, IsEmpty());

  const ToolEntry* server = ledger_.Get(Id("srvtoolu_01J1"));
  EXPECT_EQ(server->kind, ToolKind::kServer);
  EXPECT_EQ(server->name, "web_fetch");
  EXPECT_EQ(*server->input, J(R"({"url":"https://example.com/p"})"));
  EXPECT_EQ(server->reason, ErrorReason::kToolFailed);
  const ToolEntry* client = ledger_.Get(Id("toolu_01FU"));
  EXPECT_EQ(client->kind, ToolKind::kClient);
  EXPECT_EQ(client->state, ToolState::kPending);
  EXPECT_EQ(*client->input, J("{}"));
  EXPECT_EQ(ledger_.Start(Id("toolu_01FU"), 1), LedgerOutcome::kApplied);
  EXPECT_THAT(ledger_.PendingClientIds(0), ElementsAre(Id("toolu_01FU")));
  EXPECT_FALSE(ledger_.AllClientTerminal(0));
}

TEST_F(ToolLedgerTest, ObserveMessageFlagsRepeatedResultBlockForDrop) {
  ASSERT_THAT(ledger_.ObserveAssistantMessage(J(kFetchErrorTurn1), 0), IsOk());
  ASSERT_EQ(ledger_.CompleteClient(Id("toolu_01FU"), 1, Json("[]"), false),
            LedgerOutcome::kApplied);
  recorder_.Clear();
  auto observed = ledger_.ObserveAssistantMessage(J(kFetchErrorTurn2), 1);
  ASSERT_THAT(observed, IsOk());
  EXPECT_THAT(observed->duplicate_result_indexes, ElementsAre(0u));
  EXPECT_THAT(observed->server_results_matched, IsEmpty());
  EXPECT_THAT(observed->announced, IsEmpty());
  EXPECT_EQ(ledger_.counters().duplicate_results, 1);
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(ToolLedgerTest, ObserveMessageReportsDeferredServerCalls) {
  auto observed = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"server_tool_use","id":"srvtoolu_A","name":"code_execution",
     "input":{"code":"x = 1"}},
    {"type":"mcp_tool_use","id":"mcptoolu_M","name":"echo","server_name":"e",
     "input":{}},
    {"type":"tool_use","id":"toolu_C","name":"ask","input":{"q":"x"}},
    {"type":"tool_use","id":"toolu_D","name":"ask","input":{"q":"y"}}]})"),
                                                  0);
  ASSERT_THAT(observed, IsOk());
  EXPECT_THAT(observed->deferred_server_ids,
              ElementsAre(Id("srvtoolu_A"), Id("mcptoolu_M")));
  EXPECT_THAT(observed->client_tool_use_ids,
              ElementsAre(Id("toolu_C"), Id("toolu_D")));
  EXPECT_THAT(ledger_.OpenServerIds(),
              ElementsAre(Id("srvtoolu_A"), Id("mcptoolu_M")));
  EXPECT_THAT(ledger_.PendingClientIds(0),
              ElementsAre(Id("toolu_C"), Id("toolu_D")));
}

TEST_F(ToolLedgerTest, ObserveMessageFlagsOrphanResults) {
  // A result before its call (the API rejects that order), and one for an
  // id nobody announced.
  auto observed = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"web_search_tool_result","tool_use_id":"srvtoolu_B","content":[]},
    {"type":"server_tool_use","id":"srvtoolu_B","name":"web_search","input":{}},
    {"type":"web_search_tool_result","tool_use_id":"srvtoolu_Z","content":[]}
  ]})"),
                                                  0);
  ASSERT_THAT(observed, IsOk());
  EXPECT_THAT(observed->orphan_result_indexes, ElementsAre(0u, 2u));
  EXPECT_THAT(observed->deferred_server_ids, ElementsAre(Id("srvtoolu_B")));
  EXPECT_EQ(ledger_.counters().orphan_results, 2);
}

TEST_F(ToolLedgerTest, ObserveMessageTreatsUnknownToolUseBlocksAsServerTools) {
  auto observed = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"future_tool_use","id":"futu_1","name":"hologram","input":{}},
    {"type":"odd_tool_use","note":"no id: not a trackable call"},
    {"type":"future_tool_result","tool_use_id":"futu_1","content":"ok"},
    {"type":"container_upload","file_id":"file_1"},
    {"type":"brand_new_block","data":1}]})"),
                                                  0);
  ASSERT_THAT(observed, IsOk());
  EXPECT_THAT(observed->announced, ElementsAre(Id("futu_1")));
  EXPECT_EQ(ledger_.Get(Id("futu_1"))->kind, ToolKind::kServer);
  EXPECT_EQ(StateOf("futu_1"), ToolState::kDone);
  EXPECT_EQ(ledger_.entries().size(), 1u);
}

TEST_F(ToolLedgerTest, ObserveMessageLeavesNonObjectInputToTheCaller) {
  auto observed = ledger_.ObserveAssistantMessage(J(R"({"content":[
    {"type":"tool_use","id":"toolu_x","name":"t","input":"{\"a\":"},
    {"type":"tool_use","id":"toolu_y","name":"t"}]})"),
                                                  0);
  ASSERT_THAT(observed, IsOk());
  EXPECT_FALSE(ledger_.Get(Id("toolu_x"))->input.has_value());
  EXPECT_FALSE(ledger_.Get(Id("toolu_y"))->input.has_value());
  EXPECT_EQ(ledger_.MarkInputInvalid(Id("toolu_x"), "unexpected end"),
            LedgerOutcome::kApplied);
  EXPECT_EQ(StateOf("toolu_x"), ToolState::kError);
  EXPECT_EQ(SumOf(ledger_.counters()), 0);
}

TEST_F(ToolLedgerTest,
       ObserveMessageRejectsMalformedMessagesAndAppliesNothing) {
  for (const char* text : {
           R"([])",
           R"({"role":"assistant"})",
           R"({"role":"assistant","content":"text"})",
           R"({"role":"user","content":[]})",
           R"({"role":7,"content":[]})",
           R"({"content":[{"type":"tool_use","id":"ok","name":"t"},5]})",
           R"({"content":[{"type":"tool_use","id":"ok","name":"t"},
                          {"type":"tool_use","name":"t"}]})",
           R"({"content":[{"type":"tool_use","id":"ok","name":"t"},
                          {"type":"server_tool_use","id":"","name":"t"}]})",
           R"({"content":[{"type":"tool_use","id":"ok","name":"t"},
                          {"type":"mcp_tool_use","id":3,"name":"t"}]})",
           R"({"content":[{"type":"tool_use","id":"ok","name":"t"},
                          {"type":"tool_use","id":"n","name":["t"]}]})",
           R"({"content":[{"type":"tool_use","id":"ok","name":"t"},
                          {"type":"future_tool_use","id":null}]})",
           R"({"content":[{"type":"tool_use","id":"ok","name":"t"},
              {"type":"web_search_tool_result","tool_use_id":false}]})",
       }) {
    EXPECT_THAT(ledger_.ObserveAssistantMessage(J(text), 0),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << text;
  }
  EXPECT_THAT(ledger_.ObserveAssistantMessage(J(R"({"content":[]})"), -1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ledger_.entries(), IsEmpty());
  EXPECT_EQ(recorder_.size(), 0u);
}

TEST_F(ToolLedgerTest, ObserveMessageTwiceCountsDuplicateAnnounces) {
  ASSERT_THAT(ledger_.ObserveAssistantMessage(J(kFetchErrorTurn1), 0), IsOk());
  auto again = ledger_.ObserveAssistantMessage(J(kFetchErrorTurn1), 0);
  ASSERT_THAT(again, IsOk());
  EXPECT_THAT(again->announced, IsEmpty());
  EXPECT_THAT(again->client_tool_use_ids, ElementsAre(Id("toolu_01FU")));
  EXPECT_THAT(again->duplicate_result_indexes, ElementsAre(2u));
  EXPECT_EQ(ledger_.counters().duplicate_announces, 2);
  EXPECT_EQ(ledger_.entries().size(), 2u);
}

TEST_F(ToolLedgerTest, ObserveMessageAfterCloseIsRefused) {
  ledger_.CloseTask();
  EXPECT_THAT(ledger_.ObserveAssistantMessage(J(kFetchErrorTurn1), 0),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(ledger_.entries(), IsEmpty());
}

// --- Bulk closes ------------------------------------------------------------

TEST_F(ToolLedgerTest, AbortStepFailsOnlyThatStepsOpenTools) {
  ReadyClient("old_done", 0);
  ledger_.CompleteClient(Id("old_done"), 1, Json("ok"), false);
  Server("old_server", 0);
  RunningClient("early_a", 1);
  ReadyClient("early_b", 1);
  ASSERT_EQ(ledger_.Announce(Id("half"), "t", ToolKind::kClient, 1),
            LedgerOutcome::kApplied);
  Server("srv", 1);
  ReadyClient("finished", 1);
  ledger_.CompleteClient(Id("finished"), 1, Json("x"), false);

  ClosedTools closed = ledger_.AbortStep(1, "overloaded_error: Overloaded");
  EXPECT_THAT(closed.client,
              ElementsAre(Id("early_a"), Id("early_b"), Id("half")));
  EXPECT_THAT(closed.server, ElementsAre(Id("srv")));
  for (const char* id : {"early_a", "early_b", "half", "srv"}) {
    EXPECT_EQ(ledger_.Get(Id(id))->reason, ErrorReason::kStreamAborted) << id;
    EXPECT_EQ(ledger_.Get(Id(id))->message, "overloaded_error: Overloaded");
  }
  EXPECT_EQ(StateOf("finished"), ToolState::kDone);
  EXPECT_EQ(StateOf("old_done"), ToolState::kDone);
  EXPECT_EQ(StateOf("old_server"), ToolState::kPending);
  // A late worker result for an aborted tool changes nothing.
  EXPECT_EQ(ledger_.CompleteClient(Id("early_a"), 1, Json("late"), false),
            LedgerOutcome::kDuplicateResult);
  EXPECT_TRUE(ledger_.AbortStep(1, "again").client.empty());
}

TEST_F(ToolLedgerTest, CancelAllCancelsEveryOpenTool) {
  RunningClient("a", 0);
  ReadyClient("done", 0);
  ledger_.CompleteClient(Id("done"), 1, Json("x"), false);
  Server("s", 1);
  ReadyClient("b", 2);
  ClosedTools closed = ledger_.CancelAll("user pressed ^C");
  EXPECT_THAT(closed.client, ElementsAre(Id("a"), Id("b")));
  EXPECT_THAT(closed.server, ElementsAre(Id("s")));
  EXPECT_EQ(ledger_.Get(Id("s"))->reason, ErrorReason::kCancelled);
  EXPECT_EQ(ResultFor("a")["content"],
            "The tool did not finish: the request was cancelled: user pressed "
            "^C");
  EXPECT_THAT(ledger_.OpenServerIds(), IsEmpty());
  EXPECT_TRUE(ledger_.AllClientTerminal(0));
  EXPECT_TRUE(ledger_.AllClientTerminal(2));
}

TEST_F(ToolLedgerTest, CloseTaskGivesServerResultMissing) {
  Server("srvtoolu_A", 0, "code_execution");
  Server("srvtoolu_done", 0);
  ledger_.ObserveServerResult(
      J(R"({"type":"web_search_tool_result","tool_use_id":"srvtoolu_done",)"
        R"("content":[]})"),
      0);
  RunningClient("toolu_open", 0);
  recorder_.Clear();
  ClosedTools closed = ledger_.CloseTask();
  EXPECT_THAT(closed.server, ElementsAre(Id("srvtoolu_A")));
  EXPECT_THAT(closed.client, ElementsAre(Id("toolu_open")));
  auto server = recorder_.TerminalOf(Id("srvtoolu_A"));
  ASSERT_TRUE(server.has_value());
  EXPECT_EQ(server->reason, ErrorReason::kServerResultMissing);
  EXPECT_THAT(server->message, HasSubstr("server tool's result"));
  EXPECT_EQ(recorder_.TerminalOf(Id("toolu_open"))->reason,
            ErrorReason::kCancelled);
  EXPECT_EQ(recorder_.size(), 2u);
  // Closing twice is harmless.
  ClosedTools again = ledger_.CloseTask();
  EXPECT_TRUE(again.client.empty());
  EXPECT_TRUE(again.server.empty());
}

TEST_F(ToolLedgerTest, QueriesFollowStepsAndStates) {
  EXPECT_TRUE(ledger_.AllClientTerminal(0));
  ReadyClient("a", 0);
  RunningClient("b", 0);
  ReadyClient("c", 1);
  Server("s", 0);
  EXPECT_THAT(ledger_.PendingClientIds(0), ElementsAre(Id("a"), Id("b")));
  EXPECT_THAT(ledger_.PendingClientIds(1), ElementsAre(Id("c")));
  EXPECT_THAT(ledger_.PendingClientIds(7), IsEmpty());
  ledger_.CompleteClient(Id("a"), 1, Json("x"), false);
  EXPECT_FALSE(ledger_.AllClientTerminal(0));
  ledger_.Fail(Id("b"), ErrorReason::kTimeout, "30s");
  // Server tools do not hold up the step's user message.
  EXPECT_TRUE(ledger_.AllClientTerminal(0));
  EXPECT_FALSE(ledger_.AllClientTerminal(1));
  EXPECT_THAT(ledger_.OpenServerIds(), ElementsAre(Id("s")));
  EXPECT_EQ(ledger_.entries().size(), 4u);
}

// --- Property test ----------------------------------------------------------

// Everything about a terminal entry that must never change again.
struct Frozen {
  ToolState state;
  std::optional<ErrorReason> reason;
  std::string message;
  std::optional<Json> result;
  bool result_is_error;
  int attempt;
  std::optional<Json> input;
  bool input_invalid;
  std::optional<int> result_step;

  static Frozen Of(const ToolEntry& e) {
    return {e.state,  e.reason,          e.message,
            e.result, e.result_is_error, e.attempt,
            e.input,  e.input_invalid,   e.result_step};
  }
  bool operator==(const Frozen&) const = default;
};

TEST(ToolLedgerPropertyTest, RandomOperationSequencesKeepTheInvariant) {
  constexpr int kSequences = 3000;
  constexpr int kOpsPerSequence = 40;
  const std::vector<std::string> ids = {"toolu_a", "toolu_b", "srvtoolu_c",
                                        "x"};
  const ErrorReason reasons[] = {
      ErrorReason::kToolFailed,    ErrorReason::kInvalidInput,
      ErrorReason::kTimeout,       ErrorReason::kCancelled,
      ErrorReason::kWorkerLost,    ErrorReason::kNoWorker,
      ErrorReason::kStreamAborted, ErrorReason::kServerResultMissing,
      ErrorReason::kQueueFull};
  std::mt19937 rng(20240611);
  auto pick = [&rng](int n) {
    return std::uniform_int_distribution<int>(0, n - 1)(rng);
  };
  // The sequences must actually reach every outcome and every terminal
  // reason, or the invariant checks below prove little.
  std::map<LedgerOutcome, int> outcomes_seen;
  std::map<ErrorReason, int> reasons_seen;
  int done_seen = 0;

  for (int sequence = 0; sequence < kSequences; ++sequence) {
    SCOPED_TRACE("sequence " + std::to_string(sequence));
    TransitionRecorder recorder;
    const int max_attempts = 1 + pick(3);
    ToolLedger ledger(recorder.Sink(),
                      ToolLedgerOptions{.max_attempts = max_attempts});
    std::vector<std::pair<ToolUseId, Frozen>> frozen;

    for (int op = 0; op < kOpsPerSequence; ++op) {
      const ToolUseId id(ids[pick(static_cast<int>(ids.size()))]);
      const int step = pick(3);
      const int attempt = pick(4);  // 0 is invalid on purpose
      const size_t transitions_before = recorder.transitions().size();
      const int64_t ignored_before = SumOf(ledger.counters());
      std::optional<LedgerOutcome> outcome;
      int choice = pick(100);
      if (choice < 18) {
        outcome = ledger.Announce(
            id, "t", pick(2) ? ToolKind::kClient : ToolKind::kServer, step);
      } else if (choice < 28) {
        outcome = ledger.SetInput(id, pick(5) ? J(R"({"k":1})") : Json(3));
      } else if (choice < 32) {
        outcome = ledger.MarkInputInvalid(id, "bad");
      } else if (choice < 44) {
        outcome = ledger.Start(id, attempt);
      } else if (choice < 52) {
        outcome = ledger.Requeue(id, "lost");
      } else if (choice < 64) {
        outcome = ledger.CompleteClient(id, attempt, Json("r"), pick(2) == 1);
      } else if (choice < 72) {
        outcome = ledger.Fail(id, reasons[pick(static_cast<int>(std::size(reasons)))], "f");
      } else if (choice < 84) {
        Json block = Json::object();
        block["type"] = "web_search_tool_result";
        block["tool_use_id"] = id.value();
        if (pick(3) == 0) {
          block["content"] = J(R"({"type":"web_search_tool_result_error",)"
                               R"("error_code":"unavailable"})");
        }
        outcome = ledger.ObserveServerResult(block, step);
      } else if (choice < 90) {
        Json message = J(R"({"role":"assistant","content":[]})");
        Json& content = message["content"];
        int blocks = pick(4);
        for (int b = 0; b < blocks; ++b) {
          const std::string& bid = ids[pick(static_cast<int>(ids.size()))];
          switch (pick(3)) {
            case 0:
              content.push_back({{"type", "tool_use"},
                                 {"id", bid},
                                 {"name", "t"},
                                 {"input", Json::object()}});
              break;
            case 1:
              content.push_back({{"type", "server_tool_use"},
                                 {"id", bid},
                                 {"name", "web_search"},
                                 {"input", Json::object()}});
              break;
            default:
              content.push_back(
                  {{"type", "web_search_tool_result"}, {"tool_use_id", bid}});
              break;
          }
        }
        auto observed = ledger.ObserveAssistantMessage(message, step);
        ASSERT_TRUE(observed.ok() || ledger.closed()) << observed.status();
      } else if (choice < 95) {
        ledger.AbortStep(step, "aborted");
      } else if (choice < 98) {
        ledger.CancelAll("cancel");
      } else {
        ledger.CloseTask();
      }

      if (outcome.has_value()) ++outcomes_seen[*outcome];
      for (size_t i = transitions_before; i < recorder.transitions().size();
           ++i) {
        const ToolTransition& t = recorder.transitions()[i];
        if (t.reason.has_value()) ++reasons_seen[*t.reason];
        if (t.to == ToolState::kDone) ++done_seen;
      }
      // An ignored event changes nothing and is counted exactly once.
      if (outcome.has_value()) {
        if (*outcome == LedgerOutcome::kApplied) {
          ASSERT_EQ(SumOf(ledger.counters()), ignored_before);
        } else {
          ASSERT_EQ(recorder.transitions().size(), transitions_before)
              << LedgerOutcomeName(*outcome);
          ASSERT_EQ(SumOf(ledger.counters()), ignored_before + 1)
              << LedgerOutcomeName(*outcome);
        }
      }
      ASSERT_TRUE(recorder.NoViolations());
      ASSERT_TRUE(recorder.MatchesLedger(ledger));
      // Terminal entries never change; newly terminal ones are frozen now.
      for (const auto& [fid, snapshot] : frozen) {
        ASSERT_EQ(Frozen::Of(*ledger.Get(fid)), snapshot) << fid;
      }
      for (const ToolEntry& entry : ledger.entries()) {
        ASSERT_LE(entry.attempt, max_attempts);
        ASSERT_GE(entry.attempt, 1);
        if (!IsTerminal(entry.state)) continue;
        bool known = false;
        for (const auto& [fid, snapshot] : frozen) known |= fid == entry.id;
        if (!known) frozen.emplace_back(entry.id, Frozen::Of(entry));
      }
    }

    ledger.CloseTask();
    ASSERT_TRUE(recorder.EveryAnnouncedToolEndedOnce());
    ASSERT_TRUE(ledger.OpenServerIds().empty());
    for (const ToolEntry& entry : ledger.entries()) {
      ASSERT_TRUE(IsTerminal(entry.state));
      ASSERT_EQ(entry.reason.has_value(), entry.state == ToolState::kError);
      if (entry.kind != ToolKind::kClient) continue;
      auto block = ledger.ToolResultFor(entry.id);
      ASSERT_TRUE(block.ok()) << block.status();
      ASSERT_EQ(block->contains("is_error"), entry.state == ToolState::kError);
    }
  }
  for (LedgerOutcome o :
       {LedgerOutcome::kApplied, LedgerOutcome::kDuplicateAnnounce,
        LedgerOutcome::kReusedId, LedgerOutcome::kUnknownId,
        LedgerOutcome::kWrongKind, LedgerOutcome::kWrongState,
        LedgerOutcome::kStaleAttempt, LedgerOutcome::kAlreadyTerminal,
        LedgerOutcome::kDuplicateResult, LedgerOutcome::kLedgerClosed,
        LedgerOutcome::kInvalidArgument}) {
    EXPECT_GT(outcomes_seen[o], 0) << LedgerOutcomeName(o);
  }
  for (ErrorReason r : reasons) {
    EXPECT_GT(reasons_seen[r], 0) << ErrorReasonName(r);
  }
  EXPECT_GT(done_seen, 0);
}

}  // namespace
}  // namespace toolmesh::common
