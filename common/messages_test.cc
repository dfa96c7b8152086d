#include "common/messages.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::common {
namespace {

using ::testing::Optional;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

Json MustParse(std::string_view text) {
  absl::StatusOr<Json> value = ParseJson(text);
  EXPECT_THAT(value, IsOk());
  return value.ok() ? *value : Json();
}

TEST(MessagesTest, ClassifiesKnownBlockTypes) {
  EXPECT_EQ(ClassifyBlockType("text"), BlockKind::kText);
  EXPECT_EQ(ClassifyBlockType("thinking"), BlockKind::kThinking);
  EXPECT_EQ(ClassifyBlockType("redacted_thinking"), BlockKind::kThinking);
  EXPECT_EQ(ClassifyBlockType("tool_use"), BlockKind::kClientToolCall);
  EXPECT_EQ(ClassifyBlockType("server_tool_use"), BlockKind::kServerToolCall);
  EXPECT_EQ(ClassifyBlockType("mcp_tool_use"), BlockKind::kServerToolCall);
  EXPECT_EQ(ClassifyBlockType("tool_result"), BlockKind::kClientToolResult);
  for (const char* type :
       {"web_search_tool_result", "web_fetch_tool_result",
        "code_execution_tool_result", "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result", "tool_search_tool_result",
        "mcp_tool_result", "advisor_tool_result"}) {
    EXPECT_EQ(ClassifyBlockType(type), BlockKind::kServerToolResult) << type;
  }
}

TEST(MessagesTest, UnknownFutureToolResultIsServerToolResult) {
  EXPECT_EQ(ClassifyBlockType("telepathy_20270101_tool_result"),
            BlockKind::kServerToolResult);
  // The bare suffix is not a type of its own.
  EXPECT_EQ(ClassifyBlockType("_tool_result"), BlockKind::kOther);
}

TEST(MessagesTest, UnknownAndMalformedBlocksAreOther) {
  EXPECT_EQ(ClassifyBlockType("container_upload"), BlockKind::kOther);
  EXPECT_EQ(ClassifyBlockType("compaction"), BlockKind::kOther);
  EXPECT_EQ(ClassifyBlockType(""), BlockKind::kOther);
  EXPECT_EQ(ClassifyBlock(MustParse(R"({"type":"text","text":"x"})")),
            BlockKind::kText);
  EXPECT_EQ(ClassifyBlock(MustParse(R"({"type":7})")), BlockKind::kOther);
  EXPECT_EQ(ClassifyBlock(MustParse(R"(["tool_use"])")), BlockKind::kOther);
  EXPECT_EQ(ClassifyBlock(Json()), BlockKind::kOther);
}

TEST(MessagesTest, StreamsToolInputOnlyForToolCalls) {
  EXPECT_TRUE(StreamsToolInput("tool_use"));
  EXPECT_TRUE(StreamsToolInput("server_tool_use"));
  EXPECT_TRUE(StreamsToolInput("mcp_tool_use"));
  EXPECT_FALSE(StreamsToolInput("web_search_tool_result"));
  EXPECT_FALSE(StreamsToolInput("text"));
}

TEST(MessagesTest, WebFetchErrorResultReportsItsCode) {
  Json block = MustParse(
      R"({"type":"web_fetch_tool_result","tool_use_id":"srvtoolu_1",)"
      R"("content":{"type":"web_fetch_tool_result_error",)"
      R"("error_code":"url_not_accessible"}})");
  auto error = GetServerToolResultError(block);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "url_not_accessible");
  EXPECT_EQ(error->message, "");
}

TEST(MessagesTest, TextEditorErrorResultCarriesItsMessage) {
  Json block = MustParse(
      R"({"type":"text_editor_code_execution_tool_result","tool_use_id":"s",)"
      R"("content":{"type":"text_editor_code_execution_tool_result_error",)"
      R"("error_code":"file_not_found","error_message":"no such file"}})");
  auto error = GetServerToolResultError(block);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "file_not_found");
  EXPECT_EQ(error->message, "no such file");
}

TEST(MessagesTest, SuccessfulResultsReportNoError) {
  EXPECT_EQ(GetServerToolResultError(MustParse(
                R"({"type":"web_search_tool_result","tool_use_id":"s",)"
                R"("content":[{"type":"web_search_result","url":"u"}]})")),
            std::nullopt);
  EXPECT_EQ(GetServerToolResultError(MustParse(
                R"({"type":"mcp_tool_result","tool_use_id":"m",)"
                R"("is_error":false,"content":[{"type":"text","text":"ok"}]})")),
            std::nullopt);
  EXPECT_EQ(GetServerToolResultError(MustParse(
                R"({"type":"code_execution_tool_result","tool_use_id":"s",)"
                R"("content":{"type":"code_execution_result","stdout":"",)"
                R"("stderr":"","return_code":1,"content":[]}})")),
            std::nullopt);
}

TEST(MessagesTest, ErroringMcpResultReportsItsText) {
  Json block = MustParse(
      R"({"type":"mcp_tool_result","tool_use_id":"m","is_error":true,)"
      R"("content":[{"type":"text","text":"boom"},{"type":"text","text":"again"}]})");
  auto error = GetServerToolResultError(block);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "is_error");
  EXPECT_EQ(error->message, "boom\nagain");
}

TEST(MessagesTest, UnknownToolResultErrorShapeIsRecognised) {
  Json block = MustParse(
      R"({"type":"future_tool_result","tool_use_id":"s",)"
      R"("content":{"type":"future_tool_result_error","error_code":42}})");
  auto error = GetServerToolResultError(block);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "42");
}

TEST(MessagesTest, ClientToolResultIsNotAServerError) {
  EXPECT_EQ(GetServerToolResultError(MustParse(
                R"({"type":"tool_result","tool_use_id":"t","is_error":true})")),
            std::nullopt);
}

TEST(MessagesTest, ParsesHttpErrorBody) {
  absl::StatusOr<ApiError> error = ParseApiError(
      R"({"type":"error","error":{"type":"invalid_request_error",)"
      R"("message":"messages.1: bad"},"request_id":"req_011"})");
  ASSERT_THAT(error, IsOk());
  EXPECT_EQ(error->type, "invalid_request_error");
  EXPECT_EQ(error->message, "messages.1: bad");
  EXPECT_EQ(error->request_id, "req_011");
  EXPECT_EQ(error->ToString(),
            "invalid_request_error: messages.1: bad (request_id req_011)");
}

TEST(MessagesTest, ParsesSseErrorPayloadWithExtraFields) {
  absl::StatusOr<ApiError> error = ParseApiError(
      R"({"type":"error","error":{"details":null,"type":"overloaded_error",)"
      R"("message":"Overloaded"}})");
  ASSERT_THAT(error, IsOk());
  EXPECT_EQ(error->type, "overloaded_error");
  EXPECT_EQ(error->message, "Overloaded");
  EXPECT_EQ(error->request_id, "");
  EXPECT_TRUE(error->raw["error"].contains("details"));
}

TEST(MessagesTest, ApiErrorWithMissingFieldsIsEmptyNotFailed) {
  absl::StatusOr<ApiError> error = ParseApiError(R"({"type":"error"})");
  ASSERT_THAT(error, IsOk());
  EXPECT_EQ(error->type, "");
  EXPECT_EQ(error->message, "");
  EXPECT_EQ(error->ToString(), "unknown_error");
  ApiError odd = ApiErrorFromJson(MustParse(R"({"error":"text"})"));
  EXPECT_EQ(odd.type, "");
}

TEST(MessagesTest, NonJsonErrorBodyIsInvalidArgument) {
  EXPECT_THAT(ParseApiError("<html>502 Bad Gateway</html>"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseApiError("[1,2]"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MessagesTest, RetryableErrorTypes) {
  EXPECT_TRUE(IsRetryableApiErrorType("overloaded_error"));
  EXPECT_TRUE(IsRetryableApiErrorType("rate_limit_error"));
  EXPECT_TRUE(IsRetryableApiErrorType("api_error"));
  EXPECT_FALSE(IsRetryableApiErrorType("invalid_request_error"));
  EXPECT_FALSE(IsRetryableApiErrorType("authentication_error"));
}

TEST(MessagesTest, StopReasonsRoundTrip) {
  for (std::string_view name : kStopReasons) {
    StopReason reason = ParseStopReason(name);
    EXPECT_NE(reason, StopReason::kUnknown) << name;
    EXPECT_EQ(StopReasonName(reason), name);
  }
  EXPECT_EQ(ParseStopReason("something_new"), StopReason::kUnknown);
  EXPECT_EQ(ParseStopReason(""), StopReason::kUnknown);
}

TEST(MessagesTest, OnlyToolUsePauseTurnAndCompactionContinueTheTask) {
  EXPECT_FALSE(StopReasonEndsTask("tool_use"));
  EXPECT_FALSE(StopReasonEndsTask("pause_turn"));
  EXPECT_FALSE(StopReasonEndsTask("compaction"));
  for (const char* reason :
       {"end_turn", "max_tokens", "stop_sequence", "refusal",
        "model_context_window_exceeded", "brand_new_reason", ""}) {
    EXPECT_TRUE(StopReasonEndsTask(reason)) << reason;
  }
}

TEST(MessagesTest, TruncationStopReasons) {
  EXPECT_TRUE(StopReasonIsTruncation("max_tokens"));
  EXPECT_TRUE(StopReasonIsTruncation("model_context_window_exceeded"));
  EXPECT_FALSE(StopReasonIsTruncation("end_turn"));
  EXPECT_FALSE(StopReasonIsTruncation("tool_use"));
}

}  // namespace
}  // namespace toolmesh::common
