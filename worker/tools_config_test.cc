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
      {R"("executor":{"type":"exec","argv":["{input.prog}"]})", "executor.argv[0]: the program must be literal"},
      {R"("executor":{"type":"exec","argv":["ls","{input.}"]})", "executor.argv[1]: malformed reference at offset 0"},
      {R"("executor":{"type":"exec","argv":["ls","-x={input.a b}"]})", "executor.argv[1]: malformed reference at offset 3"},
      {R"("executor":{"type":"exec","argv":["ls","{input.a"]})", "executor.argv[1]: malformed reference"},
      {R"("executor":{"type":"exec","argv":["ls"],"env_allow":"PATH"})", "executor.env_allow: must be an array of variable names"},
      {R"("executor":{"type":"exec","argv":["ls"],"env_allow":[1]})", "executor.env_allow[0]: must be a string"},
      {R"("executor":{"type":"exec","argv":["ls"],"env_allow":["PATH","A=B"]})", "executor.env_allow[1]: \"A=B\" is not a valid variable name"},
      {R"("executor":{"type":"exec","argv":["ls"],"env_allow":["9LIVES"]})", "executor.env_allow[0]: \"9LIVES\" is not a valid variable name"},
      {R"("executor":{"type":"exec","argv":["ls"],"env_allow":["TOOLMESH_WORKER_TOKEN"]})", "executor.env_allow[0]: TOOLMESH_WORKER_TOKEN is the worker's credential"},
      {R"("executor":{"type":"exec","argv":["ls"],"env":["A"]})", "executor.env: must be an object of NAME: string value"},
      {R"("executor":{"type":"exec","argv":["ls"],"env":{"A":1}})", "executor.env.A: must be a string"},
      {R"("executor":{"type":"exec","argv":["ls"],"env":{"A-B":"x"}})", "executor.env.A-B: \"A-B\" is not a valid variable name"},
      {R"("executor":{"type":"exec","argv":["ls"],"env":{"A":"x\u0000y"}})", "executor.env.A: must not contain a NUL character"},
      {R"("executor":{"type":"exec","argv":["ls"],"env":{"TOOLMESH_WORKER_TOKEN":"x"}})", "executor.env.TOOLMESH_WORKER_TOKEN: TOOLMESH_WORKER_TOKEN is the worker's credential"},
      {R"("executor":{"type":"exec","argv":["ls"],"work_dir_root":"tmp"})", "executor.work_dir_root: must be an absolute directory path"},
      {R"("executor":{"type":"exec","argv":["ls"],"work_dir_root":7})", "executor.work_dir_root: must be an absolute directory path"},
      {R"("executor":{"type":"exec","argv":["ls"],"cwd":"/srv","work_dir_root":"/tmp"})", "executor.work_dir_root: cannot be combined with cwd"},
      {R"("executor":{"type":"exec","argv":["ls"],"limits":5})", "executor.limits: must be an object"},
      {R"("executor":{"type":"exec","argv":["ls"],"limits":{"cpu":5}})", "executor.limits.cpu: unknown limit; expected cpu_seconds"},
      {R"("executor":{"type":"exec","argv":["ls"],"limits":{"cpu_seconds":0}})", "executor.limits.cpu_seconds: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"limits":{"memory_bytes":-1}})", "executor.limits.memory_bytes: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"limits":{"open_files":2.5}})", "executor.limits.open_files: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"limits":{"processes":"8"}})", "executor.limits.processes: must be a positive integer"},
      {R"("executor":{"type":"exec","argv":["ls"],"limits":{"file_size_bytes":18446744073709551615}})", "executor.limits.file_size_bytes: must be a positive integer"},
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

TEST(ToolsConfigTest, ExecSafetyFieldsAreParsed) {
  absl::StatusOr<ToolsConfig> config = ParseToolsConfig(One(R"(
    {"name": "t", "input_schema": {"type": "object"},
     "executor": {"type": "exec",
                  "argv": ["python3", "w.py", "--city={input.city}", "{x}"],
                  "env_allow": ["PATH", "TZ"],
                  "env": {"MODE": "safe", "LANG": "C.UTF-8"},
                  "work_dir_root": "/var/tmp/toolmesh",
                  "limits": {"cpu_seconds": 10, "memory_bytes": 536870912,
                             "open_files": 64, "processes": 32,
                             "file_size_bytes": 1048576}}})"));
  ASSERT_TRUE(config.ok()) << config.status();
  const auto& exec = std::get<ExecSpec>(config->tools[0].executor);
  EXPECT_THAT(exec.argv, ::testing::ElementsAre("python3", "w.py",
                                                "--city={input.city}", "{x}"));
  EXPECT_THAT(exec.env_allow, ::testing::ElementsAre("PATH", "TZ"));
  EXPECT_THAT(exec.env,
              ::testing::ElementsAre(::testing::Pair("MODE", "safe"),
                                     ::testing::Pair("LANG", "C.UTF-8")));
  EXPECT_EQ(exec.work_dir_root, "/var/tmp/toolmesh");
  EXPECT_EQ(exec.limits.cpu_seconds, 10u);
  EXPECT_EQ(exec.limits.memory_bytes, 536870912u);
  EXPECT_EQ(exec.limits.open_files, 64u);
  EXPECT_EQ(exec.limits.processes, 32u);
  EXPECT_EQ(exec.limits.file_size_bytes, 1048576u);
}

TEST(ToolsConfigTest, ExecSafetyDefaults) {
  absl::StatusOr<ToolsConfig> config = ParseToolsConfig(One(
      R"({"name":"t","input_schema":{"type":"object"},"executor":{"type":"exec","argv":["ls"]}})"));
  ASSERT_TRUE(config.ok()) << config.status();
  const auto& exec = std::get<ExecSpec>(config->tools[0].executor);
  EXPECT_THAT(exec.env_allow, ::testing::ElementsAre("PATH", "HOME", "LANG"));
  EXPECT_TRUE(exec.env.empty());
  EXPECT_EQ(exec.work_dir_root, "");
  EXPECT_EQ(exec.cwd, "");
  EXPECT_FALSE(exec.limits.any());
}

TEST(ExpandArgvTest, ReferencesAreReplacedAndEverythingElseIsLiteral) {
  const std::vector<std::string> argv = {
      "tool", "{input.s}", "--n={input.n}", "{input.o}", "{input.b}",
      "{input.z}", "{not.input}", "{input.s}{input.s}", "{input.echo}"};
  absl::StatusOr<std::vector<std::string>> out = ExpandArgv(
      argv, common::Json::parse(
                R"json({"s":"a b;$(c)","n":-2.5,"o":{"k":[1,null]},"b":false,
                        "z":null,"echo":"{input.s}"})json"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(*out, ::testing::ElementsAre(
                        "tool", "a b;$(c)", "--n=-2.5", R"({"k":[1,null]})",
                        "false", "null", "{not.input}", "a b;$(c)a b;$(c)",
                        "{input.s}"));
}

TEST(ExpandArgvTest, MissingFieldIsNamed) {
  EXPECT_THAT(ExpandArgv({"tool", "--city={input.city}"},
                         common::Json::parse(R"({"town":"x"})")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "input.city is missing; the tool's argv needs it"));
  EXPECT_THAT(ExpandArgv({"tool", "{input.city}"}, common::Json::array()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input.city is missing")));
}

TEST(ExpandArgvTest, NulInAStringIsRejected) {
  common::Json input = common::Json::object();
  input["p"] = std::string("a\0b", 3);
  EXPECT_THAT(ExpandArgv({"tool", "{input.p}"}, input),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("input.p contains a NUL character")));
}

TEST(ExpandArgvTest, ArgvWithoutReferencesIsUnchanged) {
  const std::vector<std::string> argv = {"python3", "-c", "print({1: 2})", ""};
  absl::StatusOr<std::vector<std::string>> out =
      ExpandArgv(argv, common::Json::object());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, argv);
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
