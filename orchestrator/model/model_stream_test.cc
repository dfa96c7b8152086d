// Tests of AttemptStreamHandler, driven through its ModelStreamHandler
// callbacks directly (no network): every way an attempt ends maps to the
// right AttemptOutcome.
#include "orchestrator/model/model_stream.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/random.h"
#include "common/retry_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace toolmesh::model {
namespace {

using common::AttemptFailure;
using common::HttpHeaders;
using common::Json;
using common::TransportResult;
using ::testing::HasSubstr;

std::string Event(const std::string& name, const std::string& data) {
  return absl::StrCat("event: ", name, "\ndata: ", data, "\n\n");
}

std::string MessageStart(const std::string& id = "msg_1") {
  return Event("message_start",
               absl::StrCat(R"({"type":"message_start","message":{"id":")", id,
                            R"(","type":"message","role":"assistant",)"
                            R"("model":"claude-x","content":[],)"
                            R"("stop_reason":null,"stop_sequence":null,)"
                            R"("usage":{"input_tokens":5,"output_tokens":1}}})"));
}

std::string TextBlock() {
  return Event("content_block_start",
               R"({"type":"content_block_start","index":0,)"
               R"("content_block":{"type":"text","text":""}})") +
         Event("content_block_delta",
               R"({"type":"content_block_delta","index":0,)"
               R"("delta":{"type":"text_delta","text":"Hi "}})") +
         Event("content_block_delta",
               R"({"type":"content_block_delta","index":0,)"
               R"("delta":{"type":"text_delta","text":"there"}})") +
         Event("content_block_stop",
               R"({"type":"content_block_stop","index":0})");
}

std::string MessageEnd() {
  return Event("message_delta",
               R"({"type":"message_delta","delta":{"stop_reason":"end_turn",)"
               R"("stop_sequence":null},"usage":{"output_tokens":7}})") +
         Event("message_stop", R"({"type":"message_stop"})");
}

std::string FullStream() { return MessageStart() + TextBlock() + MessageEnd(); }

TransportResult Result(TransportResult::Kind kind, int status,
                       std::string error = "") {
  TransportResult result;
  result.kind = kind;
  result.http_status = status;
  result.error = std::move(error);
  return result;
}

// Runs one attempt through a handler and returns its outcome.
class AttemptStreamHandlerTest : public ::testing::Test {
 protected:
  AttemptOutcome Run(int status, const HttpHeaders& headers,
                     const std::vector<std::string>& chunks,
                     const TransportResult& result,
                     common::StreamObserver* observer = nullptr,
                     AttemptStreamHandler::Options options = {}) {
    int calls = 0;
    std::optional<AttemptOutcome> outcome;
    AttemptStreamHandler handler(options, observer,
                                 [&](AttemptOutcome o) {
                                   ++calls;
                                   outcome = std::move(o);
                                 });
    if (status != 0) handler.OnResponseStarted(status, headers);
    for (const std::string& chunk : chunks) handler.OnData(chunk);
    handler.OnFinished(result);
    handler.OnFinished(result);  // a second call is ignored
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(outcome.has_value());
    return outcome.value_or(AttemptOutcome());
  }
};

TEST_F(AttemptStreamHandlerTest, CompleteStreamGivesTheFinalMessage) {
  const std::string sse = FullStream();
  // Split at every 7 bytes: chunking must not matter.
  std::vector<std::string> chunks;
  for (std::size_t i = 0; i < sse.size(); i += 7) {
    chunks.push_back(sse.substr(i, 7));
  }
  AttemptOutcome outcome =
      Run(200, {{"request-id", "req_1"}}, chunks,
          Result(TransportResult::Kind::kCompleted, 200));
  ASSERT_TRUE(outcome.ok());
  EXPECT_FALSE(outcome.failure.has_value());
  EXPECT_EQ((*outcome.message)["content"][0]["text"], "Hi there");
  EXPECT_EQ((*outcome.message)["stop_reason"], "end_turn");
  EXPECT_EQ((*outcome.message)["usage"]["output_tokens"], 7);
  EXPECT_EQ(outcome.http_status, 200);
  EXPECT_EQ(common::FindHeader(outcome.headers, "request-id"), "req_1");
}

class StopCounter : public common::StreamObserver {
 public:
  void OnBlockStop(std::int64_t, const Json&,
                   const common::BlockInfo&) override {
    ++stops;
  }
  int stops = 0;
};

TEST_F(AttemptStreamHandlerTest, ObserverSeesBlocksAsTheyStop) {
  StopCounter observer;
  AttemptOutcome outcome =
      Run(200, {}, {FullStream()},
          Result(TransportResult::Kind::kCompleted, 200), &observer);
  EXPECT_TRUE(outcome.ok());
  EXPECT_EQ(observer.stops, 1);
}

TEST_F(AttemptStreamHandlerTest, Http429IsRetryableWithTheServerDelay) {
  const HttpHeaders headers = {{"Retry-After", "2"},
                               {"x-should-retry", "true"}};
  AttemptOutcome outcome = Run(
      429, headers,
      {R"({"type":"error","error":{"type":"rate_limit_error",)",
       R"("message":"Number of requests has exceeded your rate limit"},)"
       R"("request_id":"req_9"})"},
      Result(TransportResult::Kind::kHttpError, 429));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_FALSE(outcome.ok());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kHttpStatus);
  EXPECT_EQ(outcome.failure->http_status, 429);
  EXPECT_EQ(outcome.failure->error_type, "rate_limit_error");
  EXPECT_THAT(outcome.failure->detail, HasSubstr("exceeded your rate limit"));
  EXPECT_EQ(outcome.failure->headers, headers);
  common::SeededRandomSource random(3);
  common::RetryPolicy policy(random);
  common::RetryDecision decision =
      policy.Decide(*outcome.failure, 0, absl::UnixEpoch());
  EXPECT_TRUE(decision.retry);
  EXPECT_EQ(decision.delay, absl::Seconds(2));
  EXPECT_EQ(decision.delay_kind, common::RetryDelayKind::kServer);
}

TEST_F(AttemptStreamHandlerTest, Http400IsNotRetryable) {
  AttemptOutcome outcome = Run(
      400, {},
      {R"({"type":"error","error":{"type":"invalid_request_error",)"
       R"("message":"messages: Field required"}})"},
      Result(TransportResult::Kind::kHttpError, 400));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->error_type, "invalid_request_error");
  EXPECT_FALSE(common::ClassifyFailure(*outcome.failure).retryable);
}

TEST_F(AttemptStreamHandlerTest, NonJsonErrorBodyKeepsTheStatus) {
  AttemptOutcome outcome =
      Run(502, {}, {"<html>Bad gateway</html>"},
          Result(TransportResult::Kind::kHttpError, 502));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kHttpStatus);
  EXPECT_EQ(outcome.failure->http_status, 502);
  EXPECT_EQ(outcome.failure->error_type, "");
  EXPECT_TRUE(common::ClassifyFailure(*outcome.failure).retryable);
}

TEST_F(AttemptStreamHandlerTest, ErrorBodyIsCappedAndStillClassified) {
  AttemptStreamHandler::Options options;
  options.max_error_body_bytes = 10;
  AttemptOutcome outcome = Run(
      529, {},
      {R"({"type":"error","error":{"type":"overloaded_error"}})"},
      Result(TransportResult::Kind::kHttpError, 529), nullptr, options);
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->http_status, 529);
  EXPECT_EQ(outcome.failure->error_type, "");  // body cut: not parsed
  EXPECT_TRUE(common::ClassifyFailure(*outcome.failure).retryable);
}

TEST_F(AttemptStreamHandlerTest, SseErrorEventIsAStreamError) {
  AttemptOutcome outcome = Run(
      200, {{"request-id", "req_2"}},
      {MessageStart(),
       Event("error", R"({"type":"error","error":{"type":"overloaded_error",)"
                      R"("message":"Overloaded"}})")},
      Result(TransportResult::Kind::kCompleted, 200));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kStreamError);
  EXPECT_EQ(outcome.failure->error_type, "overloaded_error");
  EXPECT_THAT(outcome.failure->detail, HasSubstr("Overloaded"));
  EXPECT_TRUE(common::ClassifyFailure(*outcome.failure).retryable);
}

TEST_F(AttemptStreamHandlerTest, StreamErrorWinsOverTheConnectionClosing) {
  AttemptOutcome outcome = Run(
      200, {},
      {MessageStart(),
       Event("error", R"({"type":"error","error":{"type":"api_error"}})")},
      Result(TransportResult::Kind::kConnectionError, 200, "curl error 18"));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kStreamError);
  EXPECT_EQ(outcome.failure->error_type, "api_error");
}

TEST_F(AttemptStreamHandlerTest, SplicedStreamIsMalformed) {
  AttemptOutcome outcome =
      Run(200, {}, {MessageStart("msg_a") + TextBlock() + MessageStart("msg_b")},
          Result(TransportResult::Kind::kCompleted, 200));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kMalformed);
  EXPECT_TRUE(common::ClassifyFailure(*outcome.failure).retryable);
}

TEST_F(AttemptStreamHandlerTest, BadJsonIsMalformed) {
  AttemptOutcome outcome =
      Run(200, {}, {MessageStart() + "event: content_block_start\ndata: {oops\n\n"},
          Result(TransportResult::Kind::kCompleted, 200));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kMalformed);
}

TEST_F(AttemptStreamHandlerTest, DroppedConnectionIsAConnectionFailure) {
  AttemptOutcome outcome =
      Run(200, {}, {MessageStart() + TextBlock()},
          Result(TransportResult::Kind::kConnectionError, 200,
                 "curl error 18: transfer closed"));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kConnection);
  EXPECT_THAT(outcome.failure->detail, HasSubstr("transfer closed"));
  EXPECT_FALSE(outcome.cancelled);
}

TEST_F(AttemptStreamHandlerTest, TimeoutIsAConnectionFailureNamingIt) {
  AttemptOutcome outcome =
      Run(200, {}, {MessageStart()},
          Result(TransportResult::Kind::kTimeout, 200, "curl error 28"));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kConnection);
  EXPECT_THAT(outcome.failure->detail, HasSubstr("timeout"));
}

TEST_F(AttemptStreamHandlerTest, CleanEndBeforeMessageStopIsAConnectionFailure) {
  AttemptOutcome outcome =
      Run(200, {}, {MessageStart() + TextBlock()},
          Result(TransportResult::Kind::kCompleted, 200));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kConnection);
  EXPECT_THAT(outcome.failure->detail, HasSubstr("message_stop"));
}

TEST_F(AttemptStreamHandlerTest, NoResponseAtAllIsAConnectionFailure) {
  AttemptOutcome outcome =
      Run(0, {}, {},
          Result(TransportResult::Kind::kConnectionError, 0,
                 "curl error 7: Couldn't connect"));
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kConnection);
  EXPECT_EQ(outcome.http_status, 0);
}

TEST_F(AttemptStreamHandlerTest, CancelledAttemptIsFlagged) {
  AttemptOutcome outcome =
      Run(200, {}, {MessageStart()},
          Result(TransportResult::Kind::kCancelled, 200, "cancelled"));
  EXPECT_TRUE(outcome.cancelled);
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_FALSE(outcome.ok());
}

TEST_F(AttemptStreamHandlerTest, CompleteMessageWinsOverALateConnectionError) {
  // message_stop arrived, then the connection reset before the chunked
  // terminator: the message is whole.
  AttemptOutcome outcome =
      Run(200, {}, {FullStream()},
          Result(TransportResult::Kind::kConnectionError, 200, "reset"));
  EXPECT_TRUE(outcome.ok());
}

}  // namespace
}  // namespace toolmesh::model
