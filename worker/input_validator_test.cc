#include "worker/input_validator.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::worker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

common::Json J(const char* text) { return common::Json::parse(text); }

constexpr char kSchema[] = R"({
  "type": "object",
  "required": ["city", "count"],
  "properties": {
    "city": {"type": "string"},
    "count": {"type": "integer", "minimum": 1},
    "unit": {"enum": ["c", "f"]},
    "ratio": {"type": ["number", "null"]},
    "options": {
      "type": "object",
      "required": ["lang"],
      "properties": {"lang": {"type": "string", "maxLength": 5}}
    },
    "items": {
      "type": "array",
      "items": {"type": "object", "properties": {"id": {"type": "string"}}}
    }
  },
  "additionalProperties": false
})";

class InputValidatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<InputValidator> compiled = InputValidator::Compile(J(kSchema));
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    validator_.emplace(*std::move(compiled));
  }
  absl::Status Check(const char* input) { return validator_->Validate(J(input)); }

  std::optional<InputValidator> validator_;
};

TEST_F(InputValidatorTest, ValidInputPasses) {
  EXPECT_THAT(Check(R"({"city":"Oslo","count":2,"unit":"c","ratio":0.5,)"
                    R"("options":{"lang":"en"},"items":[{"id":"a"}]})"),
              IsOk());
  EXPECT_THAT(Check(R"({"city":"Oslo","count":2,"ratio":3})"), IsOk());
  EXPECT_THAT(Check(R"({"city":"Oslo","count":2,"ratio":null})"), IsOk());
}

TEST_F(InputValidatorTest, MissingRequiredFieldIsNamed) {
  EXPECT_THAT(Check(R"({"count":2})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.city: required property missing"));
}

TEST_F(InputValidatorTest, WrongTypeNamesExpectedAndActual) {
  EXPECT_THAT(Check(R"({"city":"Oslo","count":"two"})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.count: expected integer, got string"));
  EXPECT_THAT(Check(R"({"city":"Oslo","count":1.5})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.count: expected integer, got number"));
  EXPECT_THAT(Check(R"({"city":"Oslo","count":1,"ratio":"x"})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.ratio: expected number or null, got string"));
}

TEST_F(InputValidatorTest, EnumViolationListsAllowedValues) {
  EXPECT_THAT(Check(R"({"city":"Oslo","count":1,"unit":"k"})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       R"(input.unit: expected one of ["c","f"], got "k")"));
}

TEST_F(InputValidatorTest, NestedPathsAreNamed) {
  EXPECT_THAT(Check(R"({"city":"Oslo","count":1,"options":{}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.options.lang: required property missing"));
  EXPECT_THAT(Check(R"({"city":"Oslo","count":1,"items":[{"id":"a"},{"id":7}]})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.items[1].id: expected string, got integer"));
  EXPECT_THAT(Check(R"({"city":"Oslo","count":1,"options":{"lang":"toolong"}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input.options.lang: string should be no more than 5")));
}

TEST_F(InputValidatorTest, OtherConstraintsKeepValijsonText) {
  EXPECT_THAT(Check(R"({"city":"Oslo","count":0})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input.count: expected number greater than or equal to 1")));
  EXPECT_THAT(Check(R"({"city":"Oslo","count":1,"extra":true})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input: object contains a property")));
}

TEST_F(InputValidatorTest, SeveralViolationsAreAllReported) {
  absl::Status status = Check(R"({"count":"x","unit":"k"})");
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("input.city: required property missing")));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("input.count: expected integer, got string")));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("input.unit: expected one of")));
  // Wrapper errors ("failed to validate against schema associated with
  // property name ...") are left out in favour of the specific ones.
  EXPECT_THAT(status, Not(StatusIs(absl::StatusCode::kInvalidArgument,
                                   HasSubstr("associated with property"))));
}

TEST_F(InputValidatorTest, NonObjectInputIsRejected) {
  EXPECT_THAT(Check(R"([1,2])"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input: expected object, got array")));
}

TEST(InputValidatorCompileTest, RejectsSchemasThatAreNotObjectSchemas) {
  EXPECT_THAT(InputValidator::Compile(J("[]")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("must be a JSON object")));
  EXPECT_THAT(InputValidator::Compile(J(R"({"properties":{}})")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"type\": \"object\"")));
  EXPECT_THAT(InputValidator::Compile(J(R"({"type":"object","minProperties":"x"})")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a valid JSON Schema")));
}

TEST(InputValidatorCompileTest, BadPatternBecomesAViolationNotACrash) {
  absl::StatusOr<InputValidator> validator = InputValidator::Compile(
      J(R"({"type":"object","properties":{"s":{"type":"string","pattern":"(["}}})"));
  if (!validator.ok()) {
    // Rejecting the pattern when compiling is fine too.
    EXPECT_THAT(validator.status(), StatusIs(absl::StatusCode::kInvalidArgument));
    return;
  }
  EXPECT_THAT(validator->Validate(J(R"({"s":"abc"})")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Found by the worker_tool_input fuzzer: valijson follows these by
// recursion until the stack overflows.
TEST(InputValidatorCompileTest, ReferenceCyclesAndForeignReferencesAreRejected) {
  for (const char* schema : {
           R"({"type":"object","$ref":"#"})",
           R"({"type":"object","properties":{"a":{"$ref":"#/properties/a"}}})",
           R"({"type":"object","$ref":"#/definitions/b","definitions":)"
           R"({"b":{"$ref":"#/definitions/c"},"c":{"$ref":"#/definitions/b"}}})",
           R"({"type":"object","$ref":"/x.json"})",
           R"({"type":"object","$id":"http://a/b","properties":{"q":{"$ref":"#"}}})",
       }) {
    EXPECT_THAT(InputValidator::Compile(J(schema)).status(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("input_schema: ")))
        << schema;
  }
}

TEST(InputValidatorCompileTest, RecursiveSchemaThroughALocalReferenceWorks) {
  absl::StatusOr<InputValidator> validator = InputValidator::Compile(J(
      R"({"type":"object","properties":{"child":{"$ref":"#"},)"
      R"("n":{"type":"integer"}}})"));
  ASSERT_TRUE(validator.ok()) << validator.status();
  EXPECT_TRUE(validator->Validate(J(R"({"child":{"child":{"n":1}}})")).ok());
  EXPECT_THAT(validator->Validate(J(R"({"child":{"n":"x"}})")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(InputValidatorCompileTest, CopiesShareTheCompiledSchema) {
  absl::StatusOr<InputValidator> validator =
      InputValidator::Compile(J(R"({"type":"object","required":["a"]})"));
  ASSERT_TRUE(validator.ok());
  InputValidator copy = *validator;
  EXPECT_THAT(copy.Validate(J("{}")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.a: required property missing"));
  EXPECT_EQ(copy.schema(), validator->schema());
}

}  // namespace
}  // namespace toolmesh::worker
