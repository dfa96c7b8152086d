#include "orchestrator/grpc/status_conversion.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::rpc {
namespace {

using ::testing::HasSubstr;
using ::testing::Optional;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

// Every code pair, spelled out independently of the implementation.
const std::vector<std::pair<absl::StatusCode, ::grpc::StatusCode>>&
AllCodePairs() {
  static const auto* pairs =
      new std::vector<std::pair<absl::StatusCode, ::grpc::StatusCode>>{
          {absl::StatusCode::kOk, ::grpc::StatusCode::OK},
          {absl::StatusCode::kCancelled, ::grpc::StatusCode::CANCELLED},
          {absl::StatusCode::kUnknown, ::grpc::StatusCode::UNKNOWN},
          {absl::StatusCode::kInvalidArgument,
           ::grpc::StatusCode::INVALID_ARGUMENT},
          {absl::StatusCode::kDeadlineExceeded,
           ::grpc::StatusCode::DEADLINE_EXCEEDED},
          {absl::StatusCode::kNotFound, ::grpc::StatusCode::NOT_FOUND},
          {absl::StatusCode::kAlreadyExists,
           ::grpc::StatusCode::ALREADY_EXISTS},
          {absl::StatusCode::kPermissionDenied,
           ::grpc::StatusCode::PERMISSION_DENIED},
          {absl::StatusCode::kResourceExhausted,
           ::grpc::StatusCode::RESOURCE_EXHAUSTED},
          {absl::StatusCode::kFailedPrecondition,
           ::grpc::StatusCode::FAILED_PRECONDITION},
          {absl::StatusCode::kAborted, ::grpc::StatusCode::ABORTED},
          {absl::StatusCode::kOutOfRange, ::grpc::StatusCode::OUT_OF_RANGE},
          {absl::StatusCode::kUnimplemented,
           ::grpc::StatusCode::UNIMPLEMENTED},
          {absl::StatusCode::kInternal, ::grpc::StatusCode::INTERNAL},
          {absl::StatusCode::kUnavailable, ::grpc::StatusCode::UNAVAILABLE},
          {absl::StatusCode::kDataLoss, ::grpc::StatusCode::DATA_LOSS},
          {absl::StatusCode::kUnauthenticated,
           ::grpc::StatusCode::UNAUTHENTICATED},
      };
  return *pairs;
}

TEST(StatusConversionTest, EveryCodeMapsOneToOneBothWays) {
  ASSERT_EQ(AllCodePairs().size(), 17u);
  std::set<int> grpc_codes_seen;
  for (const auto& [absl_code, grpc_code] : AllCodePairs()) {
    SCOPED_TRACE(absl::StatusCodeToString(absl_code));
    EXPECT_EQ(ToGrpcCode(absl_code), grpc_code);
    EXPECT_EQ(ToAbslCode(grpc_code), absl_code);
    grpc_codes_seen.insert(static_cast<int>(ToGrpcCode(absl_code)));
  }
  EXPECT_EQ(grpc_codes_seen.size(), 17u);
}

TEST(StatusConversionTest, AbslToGrpcKeepsCodeAndMessage) {
  for (const auto& [absl_code, grpc_code] : AllCodePairs()) {
    if (absl_code == absl::StatusCode::kOk) continue;
    SCOPED_TRACE(absl::StatusCodeToString(absl_code));
    const std::string message =
        "task task_1: " + absl::StatusCodeToString(absl_code) + " \xC3\xA9";
    ::grpc::Status converted = ToGrpcStatus(absl::Status(absl_code, message));
    EXPECT_EQ(converted.error_code(), grpc_code);
    EXPECT_EQ(converted.error_message(), message);
    EXPECT_FALSE(converted.ok());
  }
}

TEST(StatusConversionTest, GrpcToAbslKeepsCodeAndMessage) {
  for (const auto& [absl_code, grpc_code] : AllCodePairs()) {
    if (grpc_code == ::grpc::StatusCode::OK) continue;
    SCOPED_TRACE(absl::StatusCodeToString(absl_code));
    const std::string message = "worker w1 said no (" +
                                absl::StatusCodeToString(absl_code) + ")";
    absl::Status converted = ToAbslStatus(::grpc::Status(grpc_code, message));
    EXPECT_THAT(converted, StatusIs(absl_code, message));
  }
}

TEST(StatusConversionTest, RoundTripsPreserveStatus) {
  for (const auto& [absl_code, grpc_code] : AllCodePairs()) {
    if (absl_code == absl::StatusCode::kOk) continue;
    absl::Status original(absl_code, "round trip");
    EXPECT_EQ(ToAbslStatus(ToGrpcStatus(original)), original);
    ::grpc::Status grpc_original(grpc_code, "round trip");
    ::grpc::Status back = ToGrpcStatus(ToAbslStatus(grpc_original));
    EXPECT_EQ(back.error_code(), grpc_code);
    EXPECT_EQ(back.error_message(), "round trip");
  }
}

TEST(StatusConversionTest, OkStaysOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_THAT(ToAbslStatus(::grpc::Status::OK), IsOk());
  EXPECT_THAT(ToAbslStatus(::grpc::Status(::grpc::StatusCode::OK, "fine")),
              IsOk());
}

TEST(StatusConversionTest, OutOfRangeCodesBecomeUnknown) {
  EXPECT_EQ(ToAbslCode(static_cast<::grpc::StatusCode>(17)),
            absl::StatusCode::kUnknown);
  // grpc::StatusCode has no fixed underlying type: only values within its
  // enumerators' bit range (-32..31) may be held without undefined
  // behaviour.
  EXPECT_EQ(ToAbslCode(static_cast<::grpc::StatusCode>(31)),
            absl::StatusCode::kUnknown);
  EXPECT_EQ(ToAbslCode(::grpc::StatusCode::DO_NOT_USE),
            absl::StatusCode::kUnknown);
  EXPECT_EQ(ToGrpcCode(static_cast<absl::StatusCode>(1234)),
            ::grpc::StatusCode::UNKNOWN);
  EXPECT_THAT(
      ToAbslStatus(::grpc::Status(static_cast<::grpc::StatusCode>(20), "odd")),
      StatusIs(absl::StatusCode::kUnknown, "odd"));
}

TEST(StatusConversionTest, FieldPathJoinsNamesAndIndexes) {
  EXPECT_EQ(FieldPath("spec", "messages_json"), "spec.messages_json");
  EXPECT_EQ(FieldPath("", "spec"), "spec");
  EXPECT_EQ(FieldPath(FieldPath("spec", "server_tools_json"), 2),
            "spec.server_tools_json[2]");
  EXPECT_EQ(FieldPath(FieldPath(FieldPath("hello", "tools"), 0),
                      "input_schema_json"),
            "hello.tools[0].input_schema_json");
}

TEST(StatusConversionTest, ParseJsonFieldKeepsKeyOrder) {
  absl::StatusOr<common::Json> parsed =
      ParseJsonField("spec.thinking_json",
                     R"({"type":"enabled","budget_tokens":2048,"a":1})",
                     JsonShape::kObject);
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(common::DumpJson(*parsed),
            R"({"type":"enabled","budget_tokens":2048,"a":1})");
}

TEST(StatusConversionTest, ParseJsonFieldNamesFieldOnSyntaxError) {
  EXPECT_THAT(ParseJsonField("spec.server_tools_json[1]", R"({"type": )"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spec.server_tools_json[1]: invalid JSON")));
  EXPECT_THAT(ParseJsonField("x", "{} {}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x: ")));
  EXPECT_THAT(ParseJsonField("x", "   "),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x: ")));
}

TEST(StatusConversionTest, ParseJsonFieldRejectsEmptyText) {
  EXPECT_THAT(ParseJsonField("assignment.input_json", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "assignment.input_json: required JSON text is empty"));
}

TEST(StatusConversionTest, ParseJsonFieldChecksShape) {
  EXPECT_THAT(ParseJsonField("spec.messages_json", R"({"role":"user"})",
                             JsonShape::kArray),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "spec.messages_json: expected an array, got an object"));
  EXPECT_THAT(
      ParseJsonField("hello.tools[0].input_schema_json", "[]",
                     JsonShape::kObject),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "hello.tools[0].input_schema_json: expected an object, got an "
               "array"));
  EXPECT_THAT(ParseJsonField("tool_result.content_json", "42",
                             JsonShape::kStringOrArray),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("expected a string or an array, got a "
                                 "number")));
  EXPECT_THAT(ParseJsonField("tool_result.content_json", R"("done")",
                             JsonShape::kStringOrArray),
              IsOk());
  EXPECT_THAT(ParseJsonField("tool_result.content_json",
                             R"([{"type":"text","text":"done"}])",
                             JsonShape::kStringOrArray),
              IsOk());
  EXPECT_THAT(ParseJsonField("any", "null", JsonShape::kAny), IsOk());
}

TEST(StatusConversionTest, OptionalFieldTreatsEmptyAsAbsent) {
  absl::StatusOr<std::optional<common::Json>> absent =
      ParseOptionalJsonField("spec.tool_choice_json", "", JsonShape::kObject);
  ASSERT_THAT(absent, IsOk());
  EXPECT_FALSE(absent->has_value());

  absl::StatusOr<std::optional<common::Json>> present = ParseOptionalJsonField(
      "spec.tool_choice_json", R"({"type":"auto"})", JsonShape::kObject);
  ASSERT_THAT(present, IsOk());
  EXPECT_THAT(*present, Optional(common::Json{{"type", "auto"}}));

  EXPECT_THAT(ParseOptionalJsonField("spec.tool_choice_json", "\"auto\"",
                                     JsonShape::kObject),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spec.tool_choice_json: expected an object")));
  EXPECT_THAT(ParseOptionalJsonField("spec.tool_choice_json", " "),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(StatusConversionTest, InvalidUtf8InJsonTextIsAnErrorNotACrash) {
  EXPECT_THAT(ParseJsonField("x", "\"\xFF\xFE\""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("x: ")));
}

}  // namespace
}  // namespace toolmesh::rpc
