#include "worker/builtin_executor.h"

#include <optional>
#include <vector>

#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace toolmesh::worker {
namespace {

using common::Json;

ToolCall MakeCall(const char* id, const char* input) {
  ToolCall call;
  call.id = common::ToolUseId(id);
  call.name = "t";
  call.input = Json::parse(input);
  return call;
}

class BuiltinExecutorTest : public ::testing::Test {
 protected:
  // Runs `call` and records its outcomes.
  void Start(Executor& executor, const ToolCall& call) {
    executor.Run(call, [this](ToolOutcome outcome) {
      outcomes_.push_back(std::move(outcome));
    });
  }

  common::FakeClock clock_{absl::FromUnixSeconds(1700000000)};
  std::vector<ToolOutcome> outcomes_;
};

TEST_F(BuiltinExecutorTest, EchoReturnsTheInputAsText) {
  BuiltinExecutor echo({BuiltinSpec::Kind::kEcho}, clock_);
  Start(echo, MakeCall("toolu_1", R"({"b":1,"a":"x"})"));
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_FALSE(outcomes_[0].is_error);
  EXPECT_EQ(outcomes_[0].reason, OutcomeReason::kOk);
  EXPECT_EQ(outcomes_[0].content, Json(R"({"b":1,"a":"x"})"));
}

TEST_F(BuiltinExecutorTest, FailUsesTheInputMessage) {
  BuiltinExecutor fail({BuiltinSpec::Kind::kFail}, clock_);
  Start(fail, MakeCall("toolu_1", R"({"message":"disk full"})"));
  Start(fail, MakeCall("toolu_2", R"({"code":3})"));
  ASSERT_EQ(outcomes_.size(), 2u);
  EXPECT_TRUE(outcomes_[0].is_error);
  EXPECT_EQ(outcomes_[0].reason, OutcomeReason::kToolFailed);
  EXPECT_EQ(outcomes_[0].content, Json("disk full"));
  EXPECT_EQ(outcomes_[1].content, Json(R"(failed: {"code":3})"));
}

TEST_F(BuiltinExecutorTest, SleepFinishesAfterItsDurationOnly) {
  BuiltinExecutor sleep({BuiltinSpec::Kind::kSleep}, clock_);
  Start(sleep, MakeCall("toolu_1", R"({"ms":250})"));
  EXPECT_TRUE(outcomes_.empty());
  clock_.Advance(absl::Milliseconds(249));
  EXPECT_TRUE(outcomes_.empty());
  clock_.Advance(absl::Milliseconds(1));
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_FALSE(outcomes_[0].is_error);
  EXPECT_EQ(outcomes_[0].content, Json("slept 250 ms"));
  EXPECT_EQ(outcomes_[0].duration, absl::Milliseconds(250));
  EXPECT_FALSE(sleep.Cancel(common::ToolUseId("toolu_1")));
}

TEST_F(BuiltinExecutorTest, SleepCancelledEarlyEndsAtOnceAndOnlyOnce) {
  BuiltinExecutor sleep({BuiltinSpec::Kind::kSleep}, clock_);
  Start(sleep, MakeCall("toolu_1", R"({"ms":1000})"));
  Start(sleep, MakeCall("toolu_2", R"({"ms":1000})"));
  clock_.Advance(absl::Milliseconds(100));
  EXPECT_TRUE(sleep.Cancel(common::ToolUseId("toolu_1")));
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_TRUE(outcomes_[0].is_error);
  EXPECT_EQ(outcomes_[0].reason, OutcomeReason::kCancelled);
  EXPECT_EQ(outcomes_[0].duration, absl::Milliseconds(100));
  EXPECT_FALSE(sleep.Cancel(common::ToolUseId("toolu_1")));
  clock_.Advance(absl::Seconds(5));
  ASSERT_EQ(outcomes_.size(), 2u);  // the other call, not a second outcome
  EXPECT_EQ(outcomes_[1].reason, OutcomeReason::kOk);
}

TEST_F(BuiltinExecutorTest, SleepRejectsBadInput) {
  BuiltinExecutor sleep({BuiltinSpec::Kind::kSleep}, clock_);
  Start(sleep, MakeCall("toolu_1", R"({"ms":"soon"})"));
  Start(sleep, MakeCall("toolu_2", R"({"ms":-1})"));
  Start(sleep, MakeCall("toolu_3", R"([])"));
  ASSERT_EQ(outcomes_.size(), 3u);
  for (const ToolOutcome& outcome : outcomes_) {
    EXPECT_TRUE(outcome.is_error);
    EXPECT_EQ(outcome.reason, OutcomeReason::kInvalidInput);
  }
}

TEST_F(BuiltinExecutorTest, DuplicateRunningIdIsRejectedWithoutDisturbingTheFirst) {
  BuiltinExecutor sleep({BuiltinSpec::Kind::kSleep}, clock_);
  Start(sleep, MakeCall("toolu_1", R"({"ms":10})"));
  Start(sleep, MakeCall("toolu_1", R"({"ms":10})"));
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_EQ(outcomes_[0].reason, OutcomeReason::kToolFailed);
  clock_.Advance(absl::Milliseconds(10));
  ASSERT_EQ(outcomes_.size(), 2u);
  EXPECT_EQ(outcomes_[1].reason, OutcomeReason::kOk);
}

TEST_F(BuiltinExecutorTest, DestructionCancelsPendingSleeps) {
  {
    BuiltinExecutor sleep({BuiltinSpec::Kind::kSleep}, clock_);
    Start(sleep, MakeCall("toolu_1", R"({"ms":10})"));
  }
  ASSERT_EQ(outcomes_.size(), 1u);
  EXPECT_EQ(outcomes_[0].reason, OutcomeReason::kCancelled);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(outcomes_.size(), 1u);
}

TEST(OutcomeReasonTest, NamesAreStable) {
  EXPECT_EQ(OutcomeReasonName(OutcomeReason::kOk), "ok");
  EXPECT_EQ(OutcomeReasonName(OutcomeReason::kToolFailed), "tool_failed");
  EXPECT_EQ(OutcomeReasonName(OutcomeReason::kTimeout), "timeout");
  EXPECT_EQ(OutcomeReasonName(OutcomeReason::kCancelled), "cancelled");
  EXPECT_EQ(OutcomeReasonName(OutcomeReason::kInvalidInput), "invalid_input");
}

}  // namespace
}  // namespace toolmesh::worker
