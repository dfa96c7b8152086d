#include "worker/tools_config.h"

#include <fstream>
#include <string>
#include <variant>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::worker {
namespace {

using ::testing::HasSubstr;
using ::toolmesh::testing::StatusIs;

constexpr char kValid[] = R"([
  {"name": "echo", "description": "Echoes.", "cache_control": {"type": "ephemeral"},
   "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
   "executor": {"type": "builtin", "name": "echo"}},
  {"name": "weather-2", "description": "Weather.",
   "input_schema": {"type": "object", "required": ["city"],
                    "properties": {"city": {"type": "string"}}},
   "executor": {"type": "exec", "argv": ["python3", "tools/w.py"], "timeout_ms": 1500, "cwd": "/tmp"}},
  {"name": "lookup_http", "input_schema": {"type": "object"},
   "executor": {"type": "http", "url": "http://127.0.0.1:9/x"}}
])";

// A config with one tool whose entry is `entry`.
std::string One(const std::string& entry) { return "[" + entry + "]"; }

absl::Status ErrorOf(const std::string& text) {
  return ParseToolsConfig(text).status();
}

TEST(ToolsConfigTest, ValidFileLoadsEveryExecutorKind) {
  absl::StatusOr<ToolsConfig> config = ParseToolsConfig(kValid);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->tools.size(), 3u);

  const ToolDefinition* echo = config->Find("echo");
  ASSERT_NE(echo, nullptr);
  ASSERT_TRUE(std::holds_alternative<BuiltinSpec>(echo->executor));
  EXPECT_EQ(std::get<BuiltinSpec>(echo->executor).kind,
            BuiltinSpec::Kind::kEcho);

  const ToolDefinition* weather = config->Find("weather-2");
  ASSERT_NE(weather, nullptr);
  const auto& exec = std::get<ExecSpec>(weather->executor);
  EXPECT_THAT(exec.argv, ::testing::ElementsAre("python3", "tools/w.py"));
  EXPECT_EQ(exec.timeout, absl::Milliseconds(1500));
  EXPECT_EQ(exec.cwd, "/tmp");

  const auto& http = std::get<HttpSpec>(config->Find("lookup_http")->executor);
  EXPECT_EQ(http.url, "http://127.0.0.1:9/x");
  EXPECT_EQ(http.timeout, absl::Seconds(30));  // the default
  EXPECT_EQ(config->Find("missing"), nullptr);
}

TEST(ToolsConfigTest, ModelFacingDefinitionDropsOnlyExecutorInFileOrder) {
  absl::StatusOr<ToolsConfig> config = ParseToolsConfig(kValid);
  ASSERT_TRUE(config.ok()) << config.status();
  common::Json model = ModelFacingDefinition(*config->Find("echo"));
  EXPECT_EQ(common::DumpJson(model),
            R"({"name":"echo","description":"Echoes.",)"
            R"("cache_control":{"type":"ephemeral"},)"
            R"("input_schema":{"type":"object","properties":{"x":{"type":"string"}}}})");
}

TEST(ToolsConfigTest, CompiledValidatorChecksInput) {
  absl::StatusOr<ToolsConfig> config = ParseToolsConfig(kValid);
  ASSERT_TRUE(config.ok()) << config.status();
  const InputValidator& validator = config->Find("weather-2")->validator;
  EXPECT_TRUE(validator.Validate(common::Json::parse(R"({"city":"Oslo"})")).ok());
  EXPECT_THAT(validator.Validate(common::Json::object()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input.city: required property missing")));
}

TEST(ToolsConfigTest, EmptyArrayIsAccepted) {
  absl::StatusOr<ToolsConfig> config = ParseToolsConfig("[]");
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->tools.empty());
}

TEST(ToolsConfigTest, NotJsonIsRejected) {
  EXPECT_THAT(ErrorOf("[{"), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("not valid JSON")));
}

TEST(ToolsConfigTest, TopLevelObjectIsRejected) {
  EXPECT_THAT(ErrorOf("{}"), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("must be a JSON array")));
}

TEST(ToolsConfigTest, EntryThatIsNotAnObjectNamesItsIndex) {
  EXPECT_THAT(ErrorOf("[1]"), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("tools[0]: must be a JSON object")));
}

TEST(ToolsConfigTest, MissingNameIsRejected) {
  EXPECT_THAT(
      ErrorOf(One(R"({"input_schema":{"type":"object"},"executor":{"type":"builtin","name":"echo"}})")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("tools[0]: name: missing or not a string")));
}

TEST(ToolsConfigTest, NamesBreakingTheApiRuleAreRejected) {
  for (const std::string& name :
       std::vector<std::string>{"", "has space", "dot.name", "slash/x",
                                std::string(129, 'a')}) {
    std::string entry = R"({"name":")" + name +
                        R"(","input_schema":{"type":"object"},"executor":{"type":"builtin","name":"echo"}})";
    EXPECT_THAT(ErrorOf(One(entry)),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("does not match ^[a-zA-Z0-9_-]{1,128}$")))
        << name;
  }
  std::string longest = R"({"name":")" + std::string(128, 'a') +
                        R"(","input_schema":{"type":"object"},"executor":{"type":"builtin","name":"echo"}})";
  EXPECT_TRUE(ParseToolsConfig(One(longest)).ok());
}

TEST(ToolsConfigTest, DuplicateNamesAreRejected) {
  std::string entry = R"({"name":"t","input_schema":{"type":"object"},"executor":{"type":"builtin","name":"echo"}})";
  EXPECT_THAT(ErrorOf("[" + entry + "," + entry + "]"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tools[1] (\"t\"): name: duplicate")));
}

TEST(ToolsConfigTest, DescriptionMustBeAString) {
  EXPECT_THAT(
      ErrorOf(One(R"({"name":"t","description":5,"input_schema":{"type":"object"},"executor":{"type":"builtin","name":"echo"}})")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("tools[0] (\"t\"): description: must be a string")));
}

TEST(ToolsConfigTest, InputSchemaProblemsNameTheTool) {
  const std::string executor = R"("executor":{"type":"builtin","name":"echo"})";
  EXPECT_THAT(ErrorOf(One(R"({"name":"t",)" + executor + "}")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tools[0] (\"t\"): input_schema: missing")));
  EXPECT_THAT(ErrorOf(One(R"({"name":"t","input_schema":[],)" + executor + "}")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input_schema: input_schema must be a JSON object")));
  EXPECT_THAT(ErrorOf(One(R"({"name":"t","input_schema":{"type":"string"},)" +
                          executor + "}")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"type\": \"object\"")));
  // valijson cannot load these: a keyword with a value of the wrong type,
  // and a reference to a definition that does not exist.
  EXPECT_THAT(
      ErrorOf(One(R"({"name":"t","input_schema":{"type":"object","required":"city"},)" +
                  executor + "}")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("tools[0] (\"t\"): input_schema: input_schema is not a valid JSON Schema")));
  EXPECT_THAT(
      ErrorOf(One(R"({"name":"t","input_schema":{"type":"object","properties":{"a":{"$ref":"#/definitions/nope"}}},)" +
                  executor + "}")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("is not a valid JSON Schema")));
}

TEST(ToolsConfigTest, ExecutorProblemsNameTheField) {
  const std::string head = R"({"name":"t","input_schema":{"type":"object"},)";
  struct Case {
    std::string executor;
    std::string message;
  };
  const Case cases[] = {
      {"", "tools[0] (\"t\"): executor: missing"},
      {R"("executor":"exec")", "executor: must be an object"},
      {R"("executor":{})", "executor.type: missing"},
      {R"("executor":{"type":"ssh"})", "executor.type: unknown executor type \"ssh\""},
      {R"("executor":{"type":"builtin","name":"dance"})", "executor.name: unknown builtin \"dance\""},
      {R"("executor":{"type":"exec"})", "executor.argv: must be a non-empty array of strings"},
      {R"("executor":{"type":"exec","argv":[]})", "executor.argv: must be a non-empty array"},
      {R"("executor":{"type":"exec","argv":["ls",3]})", "executor.argv[1]: must be a string"},
      {R"("executor":{"type":"exec","argv":[""]})", "executor.argv[0]: the program must not be empty"},
      {R"("executor":{"type":"exec","argv":["ls"],"timeout_ms":0})", "executor.timeout_ms: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"timeout_ms":-5})", "executor.timeout_ms: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"timeout_ms":1.5})", "executor.timeout_ms: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"timeout_ms":"10"})", "executor.timeout_ms: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"timout_ms":10})", "executor.timout_ms: unknown field"},
      {R"("executor":{"type":"exec","argv":["ls"],"cwd":""})", "executor.cwd: must be a non-empty string"},
      {R"("executor":{"type":"http"})", "executor.url: must be an http:// or https:// URL"},
      {R"("executor":{"type":"http","url":"ftp://x/y"})", "executor.url: must be an http:// or https:// URL"},
      {R"("executor":{"type":"http","url":"https://"})", "executor.url: must be an http:// or https:// URL"},
      {R"("executor":{"type":"http","url":"http://x","timeout_ms":0})", "executor.timeout_ms: must be a positive integer"},
  };
  for (const Case& c : cases) {
    std::string entry = head + c.executor;
    if (entry.back() == ',') entry.pop_back();
    entry += "}";
    EXPECT_THAT(ErrorOf(One(entry)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)))
        << entry;
  }
}

TEST(ToolsConfigTest, ErrorInLaterEntryNamesItsIndex) {
  std::string good = R"({"name":"a","input_schema":{"type":"object"},"executor":{"type":"builtin","name":"echo"}})";
  std::string bad = R"({"name":"b","input_schema":{"type":"object"},"executor":{"type":"builtin","name":"nap"}})";
  std::string other = good;
  other.replace(9, 1, "c");
  EXPECT_THAT(ErrorOf("[" + good + "," + other + "," + bad + "]"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tools[2] (\"b\"): executor.name")));
}

TEST(ToolsConfigTest, LoadFromFileReadsAndPrefixesThePath) {
  std::string path = ::testing::TempDir() + "/tools_config_test_tools.json";
  {
    std::ofstream out(path);
    out << kValid;
  }
  absl::StatusOr<ToolsConfig> config = LoadToolsConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->tools.size(), 3u);
  {
    std::ofstream out(path);
    out << "[1]";
  }
  EXPECT_THAT(LoadToolsConfigFile(path).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(path + ": tools[0]")));
  std::remove(path.c_str());
  EXPECT_THAT(LoadToolsConfigFile(path).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(path)));
}

}  // namespace
}  // namespace toolmesh::worker
