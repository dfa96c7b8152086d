// End-to-end tests: real toolmesh-fakeapi, toolmesh-orchestrator,
// toolmesh-worker and toolmesh processes on loopback (tests/integration/
// cluster.h), one cluster per test, driven through the TaskService gRPC API
// or the CLI. Scenario files are in tests/integration/scenarios/.
//
// Every test also checks that the fake API rejected no request: it applies
// the Messages API's rules to every request, so a 400 or 401 there is a
// toolmesh bug. Every wait is bounded (kTaskTimeout per task).
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "common/request_validator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster.h"
#include "tests/integration/process.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::integration {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::toolmesh::common::Json;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

constexpr absl::Duration kTaskTimeout = absl::Seconds(30);

constexpr char kWebSearchTool[] =
    R"({"type": "web_search_20250305", "name": "web_search", "max_uses": 3})";

// --- tools.json entries ----------------------------------------------------

Json EchoTool() {
  return Json::parse(R"({
    "name": "echo",
    "description": "Returns its input as JSON text.",
    "input_schema": {"type": "object",
                     "properties": {"text": {"type": "string"}},
                     "required": ["text"]},
    "executor": {"type": "builtin", "name": "echo"}})");
}

Json SleepTool() {
  return Json::parse(R"({
    "name": "sleep",
    "description": "Waits `ms` milliseconds, then says so.",
    "input_schema": {"type": "object",
                     "properties": {"ms": {"type": "integer", "minimum": 0}},
                     "required": ["ms"]},
    "executor": {"type": "builtin", "name": "sleep"}})");
}

// An exec tool that writes its pid to `pid_file`, then sleeps for minutes.
Json LongJobTool(const std::string& pid_file) {
  Json tool = Json::parse(R"({
    "name": "long_job",
    "description": "Runs a long job.",
    "input_schema": {"type": "object",
                     "properties": {"job": {"type": "string"}}}})");
  tool["executor"] = {
      {"type", "exec"},
      {"argv", Json::array({"/bin/sh", "-c",
                            absl::StrCat("echo $$ > '", pid_file,
                                         "'; exec sleep 300")})},
      {"timeout_ms", 60000}};
  return tool;
}

// --- conversation checks ---------------------------------------------------

std::string Str(const Json& value, const char* key) {
  return std::string(common::GetString(value, key));
}

// The text of a tool_result's content (a string or text blocks).
std::string ResultText(const Json& tool_result) {
  if (!tool_result.contains("content")) return "";
  const Json& content = tool_result["content"];
  if (content.is_string()) return content.get<std::string>();
  std::string text;
  if (content.is_array()) {
    for (const Json& block : content) {
      if (Str(block, "type") == "text") text += Str(block, "text");
    }
  }
  return text;
}

// The blocks of `messages` (a messages array) with this type, in order.
std::vector<Json> BlocksOfType(const Json& messages, std::string_view type) {
  std::vector<Json> out;
  if (!messages.is_array()) return out;
  for (const Json& message : messages) {
    if (!message.contains("content") || !message["content"].is_array()) {
      continue;
    }
    for (const Json& block : message["content"]) {
      if (Str(block, "type") == type) out.push_back(block);
    }
  }
  return out;
}

// Checks the shape the API demands after each assistant step with client
// tool calls: the next message is a user message holding exactly one
// tool_result per tool_use, in tool_use order, and nothing else. Returns
// one line per problem.
std::vector<std::string> ToolResultProblems(const Json& messages) {
  std::vector<std::string> problems;
  if (!messages.is_array()) return {"conversation is not an array"};
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const Json& message = messages[i];
    if (Str(message, "role") != "assistant") continue;
    std::vector<std::string> uses;
    if (message.contains("content") && message["content"].is_array()) {
      for (const Json& block : message["content"]) {
        if (Str(block, "type") == "tool_use") uses.push_back(Str(block, "id"));
      }
    }
    if (uses.empty()) continue;
    if (i + 1 >= messages.size()) {
      // The last step may still wait for its tools only if the task did not
      // complete; callers check the terminal state separately.
      problems.push_back(absl::StrCat("messages.", i, ": tool_use ids [",
                                      absl::StrJoin(uses, ","),
                                      "] end the conversation"));
      continue;
    }
    const Json& next = messages[i + 1];
    std::vector<std::string> results;
    bool only_results = true;
    if (Str(next, "role") == "user" && next.contains("content") &&
        next["content"].is_array()) {
      for (const Json& block : next["content"]) {
        if (Str(block, "type") == "tool_result") {
          results.push_back(Str(block, "tool_use_id"));
        } else {
          only_results = false;
        }
      }
    }
    if (results != uses) {
      problems.push_back(
          absl::StrCat("messages.", i + 1, ": tool_result ids [",
                       absl::StrJoin(results, ","), "] != tool_use ids [",
                       absl::StrJoin(uses, ","), "] of messages.", i));
    }
    if (!only_results) {
      problems.push_back(absl::StrCat("messages.", i + 1,
                                      " holds more than tool_result blocks"));
    }
  }
  return problems;
}

// The API's verdict on sending `messages` again (with `tools`): one line per
// violation, empty when valid.
std::vector<std::string> ApiViolations(const Json& messages,
                                       const Json& tools) {
  Json body = {{"model", "claude-sonnet-4-5"},
               {"max_tokens", 1024},
               {"messages", messages}};
  if (!tools.empty()) body["tools"] = tools;
  std::vector<std::string> out;
  for (const common::Violation& v : common::ValidateRequest(body)) {
    out.push_back(v.message);
  }
  return out;
}

// Index of the first message that holds a block of `type` with `id`, or -1.
int MessageWithBlock(const Json& messages, std::string_view type,
                     std::string_view id_key, std::string_view id) {
  if (!messages.is_array()) return -1;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const Json& message = messages[i];
    if (!message.contains("content") || !message["content"].is_array()) {
      continue;
    }
    for (const Json& block : message["content"]) {
      if (Str(block, "type") == type &&
          common::GetString(block, id_key) == id) {
        return static_cast<int>(i);
      }
    }
  }
  return -1;
}

// --- event checks ----------------------------------------------------------

bool IsTerminalToolState(v1::ToolCallState state) {
  return state == v1::TOOL_CALL_STATE_DONE ||
         state == v1::TOOL_CALL_STATE_ERROR;
}

// Every announced tool starts PENDING and ends DONE or ERROR, and the
// task's last event is its TaskTerminal.
void ExpectEveryToolEnded(const TaskRun& run) {
  ASSERT_FALSE(run.events.empty());
  EXPECT_TRUE(run.events.back().has_terminal())
      << "last event: " << run.events.back().ShortDebugString();
  for (const std::string& id : run.ToolIds()) {
    const std::vector<v1::ToolTransition> t = run.Transitions(id);
    EXPECT_EQ(t.front().state(), v1::TOOL_CALL_STATE_PENDING) << id;
    EXPECT_TRUE(IsTerminalToolState(t.back().state()))
        << id << " ends in " << v1::ToolCallState_Name(t.back().state());
  }
}

// The first transition of `id` into `state`, or nullptr.
const v1::ToolTransition* FirstIn(const std::vector<v1::ToolTransition>& all,
                                  v1::ToolCallState state) {
  for (const v1::ToolTransition& t : all) {
    if (t.state() == state) return &t;
  }
  return nullptr;
}

// The complete input of a tool, from the transition that carries it.
Json InputOf(const std::vector<v1::ToolTransition>& transitions) {
  for (const v1::ToolTransition& t : transitions) {
    if (!t.input_json().empty()) {
      absl::StatusOr<Json> parsed = common::ParseJson(t.input_json());
      return parsed.ok() ? *parsed : Json("unparsable: " + t.input_json());
    }
  }
  return nullptr;
}

// Waits until `condition` holds or `timeout` passes; returns whether it
// held. For conditions outside our processes' output (a pid file, a pid's
// existence) that have no event to wait on.
template <typename Condition>
bool PollUntil(Condition condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

// Options for a cluster serving `scenario` (a file in scenarios/, "" for the
// rule-driven model) with these workers.
ClusterOptions Options(std::string_view scenario,
                       std::vector<WorkerSpec> workers) {
  ClusterOptions options;
  if (!scenario.empty()) options.scenario = ScenarioPath(scenario);
  options.workers = std::move(workers);
  return options;
}

class ClusterTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (cluster_ != nullptr) {
      // The API key never reaches a log, an error message or the store.
      for (const auto& entry :
           std::filesystem::recursive_directory_iterator(cluster_->dir())) {
        if (!entry.is_regular_file()) continue;
        absl::StatusOr<std::string> text =
            ReadWholeFile(entry.path().string());
        if (!text.ok()) continue;
        EXPECT_EQ(text->find("integration-test-key"), std::string::npos)
            << entry.path() << " holds the API key";
      }
    }
    if (HasFailure() && cluster_ != nullptr) {
      std::cerr << "=== cluster logs (" << cluster_->dir() << ") ===\n"
                << cluster_->Logs();
    }
  }

  void StartCluster(ClusterOptions options) {
    absl::StatusOr<std::unique_ptr<Cluster>> cluster =
        Cluster::Start(std::move(options));
    ASSERT_THAT(cluster, IsOk());
    cluster_ = *std::move(cluster);
  }

  // Watches `task_id` and, once turn 1 is committed (a kill while it
  // streams would retry the turn and its calls) and a call runs on a
  // worker, SIGKILLs the orchestrator and starts it again (`killed` says
  // whether that happened). Returns what the broken stream delivered.
  TaskRun WatchAndRestartMidTool(const std::string& task_id, bool omit_deltas,
                                 bool& killed) {
    killed = false;
    bool committed = false;
    bool running = false;
    return cluster_->Watch(
        task_id, kTaskTimeout,
        [&](const v1::TaskEvent& event) {
          committed = committed || event.has_turn_completed();
          running = running || (event.has_tool_transition() &&
                                event.tool_transition().state() ==
                                    v1::TOOL_CALL_STATE_RUNNING);
          if (!killed && committed && running) {
            killed = true;
            ASSERT_THAT(cluster_->RestartOrchestrator(), IsOk());
          }
        },
        omit_deltas);
  }

  // The fake API applied the API's rules to every request; none may have
  // been rejected (400, 401) or left unmatched by the scenario.
  void ExpectFakeApiAcceptedEverything() {
    absl::StatusOr<Json> stats = cluster_->FakeApiGet("/_fake/stats");
    ASSERT_THAT(stats, IsOk());
    absl::StatusOr<Json> log = cluster_->FakeApiGet("/_fake/requests");
    ASSERT_THAT(log, IsOk());
    std::string rejected;
    for (const Json& entry : *log) {
      if (entry.value("status", 0) != 200) {
        absl::StrAppend(&rejected, common::DumpJson(entry), "\n");
      }
    }
    EXPECT_EQ(stats->value("rejected_400", -1), 0) << rejected;
    EXPECT_EQ(stats->value("rejected_401", -1), 0) << rejected;
    EXPECT_EQ(stats->value("unmatched", -1), 0) << rejected;
    EXPECT_FALSE((*stats)["by_status"].contains("400")) << rejected;
    EXPECT_FALSE((*stats)["by_status"].contains("401")) << rejected;
  }

  // The number of model requests the fake API answered.
  int FakeApiRequests() {
    absl::StatusOr<Json> stats = cluster_->FakeApiGet("/_fake/stats");
    return stats.ok() ? stats->value("requests", -1) : -1;
  }

  std::unique_ptr<Cluster> cluster_;
};

#define ASSERT_COMPLETED(run, stop)                                \
  do {                                                             \
    ASSERT_THAT((run).status, IsOk()) << (run).Dump();             \
    ASSERT_NE((run).terminal(), nullptr) << (run).Dump();          \
    ASSERT_EQ((run).terminal()->state(), v1::TASK_STATE_COMPLETED) \
        << (run).terminal()->ShortDebugString();                   \
    EXPECT_EQ((run).terminal()->stop_reason(), (stop));            \
  } while (false)

// ---------------------------------------------------------------------------

TEST_F(ClusterTest, ParallelClientToolsSpreadOverTwoWorkers) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      Options("parallel_tools.json",
              {{"w1", Json::array({SleepTool(), EchoTool()}), 2},
               {"w2", Json::array({SleepTool(), EchoTool()}), 2}})));

  TaskRun run =
      cluster_->Run(MakeSpec("Take four naps.", {"sleep"}), kTaskTimeout);
  ASSERT_COMPLETED(run, "end_turn");
  ExpectEveryToolEnded(run);

  const std::vector<std::string> ids = run.ToolIdsNamed("sleep");
  ASSERT_EQ(ids.size(), 4u) << run.Dump();
  std::set<std::string> workers;
  for (const std::string& id : ids) {
    const std::vector<v1::ToolTransition> t = run.Transitions(id);
    const v1::ToolTransition* running = FirstIn(t, v1::TOOL_CALL_STATE_RUNNING);
    ASSERT_NE(running, nullptr) << id << "\n" << run.Dump();
    workers.insert(running->worker_id());
    EXPECT_EQ(t.back().state(), v1::TOOL_CALL_STATE_DONE) << id;
  }
  EXPECT_EQ(workers, (std::set<std::string>{"w1", "w2"})) << run.Dump();

  // One user message with the four results, in tool_use order (they
  // finished in another order: 700, 800, 900, 1000 ms).
  const Json conversation = run.Conversation();
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty())
      << common::DumpJsonPretty(conversation);
  const int assistant =
      MessageWithBlock(conversation, "tool_use", "id", ids[0]);
  ASSERT_GE(assistant, 0) << common::DumpJsonPretty(conversation);
  ASSERT_LT(assistant + 1, static_cast<int>(conversation.size()));
  const Json& results = conversation[assistant + 1]["content"];
  ASSERT_EQ(results.size(), 4u);
  const std::vector<int> naps = {1000, 700, 900, 800};
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(Str(results[i], "tool_use_id"), ids[i]);
    EXPECT_EQ(ResultText(results[i]), absl::StrCat("slept ", naps[i], " ms"));
    EXPECT_FALSE(results[i].value("is_error", false));
  }
  EXPECT_EQ(BlocksOfType(conversation, "tool_result").size(), 4u);
  EXPECT_EQ(FakeApiRequests(), 2);
  ExpectFakeApiAcceptedEverything();
}

TEST_F(ClusterTest, Seed000DeferredServerToolBesideClientTool) {
  ASSERT_NO_FATAL_FAILURE(
      StartCluster(Options("seed000_deferred_server_tool.json",
                           {{"w1", Json::array({EchoTool()}), 2}})));

  v1::TaskSpec spec = MakeSpec("Search the web and echo hello.", {"echo"});
  spec.add_server_tools_json(kWebSearchTool);
  TaskRun run = cluster_->Run(spec, kTaskTimeout);
  ASSERT_COMPLETED(run, "end_turn");
  ExpectEveryToolEnded(run);

  const std::vector<std::string> search = run.ToolIdsNamed("web_search");
  const std::vector<std::string> echo = run.ToolIdsNamed("echo");
  ASSERT_EQ(search.size(), 1u) << run.Dump();
  ASSERT_EQ(echo.size(), 1u) << run.Dump();

  // The server call stayed open past turn 1 and was reconciled with the
  // result that opened turn 2: DONE, never ERROR.
  const std::vector<v1::ToolTransition> s = run.Transitions(search[0]);
  EXPECT_EQ(s.front().kind(), v1::TOOL_KIND_SERVER);
  EXPECT_EQ(s.front().block_type(), "server_tool_use");
  EXPECT_EQ(FirstIn(s, v1::TOOL_CALL_STATE_ERROR), nullptr) << run.Dump();
  EXPECT_EQ(FirstIn(s, v1::TOOL_CALL_STATE_RUNNING), nullptr) << run.Dump();
  ASSERT_EQ(s.back().state(), v1::TOOL_CALL_STATE_DONE) << run.Dump();
  absl::StatusOr<Json> result = common::ParseJson(s.back().result_json());
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(Str(*result, "type"), "web_search_tool_result");
  EXPECT_EQ(Str(*result, "tool_use_id"), search[0]);
  EXPECT_EQ(InputOf(s),
            Json::parse(R"({"query": "toolmesh deferred server call"})"));

  const std::vector<v1::ToolTransition> e = run.Transitions(echo[0]);
  EXPECT_EQ(e.back().state(), v1::TOOL_CALL_STATE_DONE);

  // The conversation holds the late result once, answers the client call,
  // and can be sent to the API again.
  const Json conversation = run.Conversation();
  EXPECT_EQ(BlocksOfType(conversation, "web_search_tool_result").size(), 1u)
      << common::DumpJsonPretty(conversation);
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty())
      << common::DumpJsonPretty(conversation);
  EXPECT_THAT(
      ApiViolations(conversation, Json::array({Json::parse(kWebSearchTool)})),
      IsEmpty())
      << common::DumpJsonPretty(conversation);
  // Nothing spun: exactly the two scripted model requests.
  EXPECT_EQ(FakeApiRequests(), 2);
  ExpectFakeApiAcceptedEverything();
}

TEST_F(ClusterTest, Seed001ServerToolInputReachesEvents) {
  ASSERT_NO_FATAL_FAILURE(
      StartCluster(Options("seed001_server_tool_input.json",
                           {{"w1", Json::array({EchoTool()}), 1}})));

  v1::TaskSpec spec = MakeSpec("What is new about streamed inputs?", {"echo"});
  spec.add_server_tools_json(kWebSearchTool);
  TaskRun run = cluster_->Run(spec, kTaskTimeout);
  ASSERT_COMPLETED(run, "end_turn");
  ExpectEveryToolEnded(run);

  const std::vector<std::string> search = run.ToolIdsNamed("web_search");
  ASSERT_EQ(search.size(), 1u) << run.Dump();
  const std::vector<v1::ToolTransition> s = run.Transitions(search[0]);
  const Json expected = Json::parse(
      R"({"query": "toolmesh seed 001: streamed server tool input must not end up empty"})");
  EXPECT_EQ(InputOf(s), expected) << run.Dump();
  EXPECT_EQ(s.back().state(), v1::TOOL_CALL_STATE_DONE);

  // The committed step carries the same input.
  const std::vector<Json> uses =
      BlocksOfType(run.Conversation(), "server_tool_use");
  ASSERT_EQ(uses.size(), 1u);
  EXPECT_EQ(uses[0]["input"], expected);
  EXPECT_EQ(FakeApiRequests(), 1);
  ExpectFakeApiAcceptedEverything();
}

TEST_F(ClusterTest, Seed002MidStreamErrorRetriesAsSeparateSteps) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      Options("seed002_mid_stream_error.json",
              {{"w1", Json::array({SleepTool(), EchoTool()}), 2}})));

  TaskRun run = cluster_->Run(MakeSpec("Nap, then echo.", {"sleep", "echo"}),
                              kTaskTimeout);
  ASSERT_COMPLETED(run, "end_turn");
  ExpectEveryToolEnded(run);

  // Attempt 1 of turn 1 failed and was retried.
  std::vector<v1::TurnRetrying> retries;
  for (const v1::TaskEvent& event : run.events) {
    if (event.has_turn_retrying()) retries.push_back(event.turn_retrying());
  }
  ASSERT_EQ(retries.size(), 1u) << run.Dump();
  EXPECT_EQ(retries[0].turn(), 1u);
  EXPECT_EQ(retries[0].attempt(), 1u);
  EXPECT_EQ(retries[0].reason(), "overloaded_error");

  // The failed attempt's tools (one complete and dispatched early, one cut
  // off mid-input) end ERROR stream_aborted and never reach the model.
  const std::vector<std::string> early = run.ToolIdsNamed("sleep");
  ASSERT_EQ(early.size(), 2u) << run.Dump();
  const Json conversation = run.Conversation();
  for (const std::string& id : early) {
    const std::vector<v1::ToolTransition> t = run.Transitions(id);
    EXPECT_EQ(t.back().state(), v1::TOOL_CALL_STATE_ERROR) << id;
    EXPECT_EQ(t.back().reason(), v1::TOOL_ERROR_REASON_STREAM_ABORTED) << id;
    EXPECT_EQ(FirstIn(t, v1::TOOL_CALL_STATE_DONE), nullptr) << id;
    EXPECT_EQ(MessageWithBlock(conversation, "tool_use", "id", id), -1) << id;
    EXPECT_EQ(MessageWithBlock(conversation, "tool_result", "tool_use_id", id),
              -1)
        << id;
  }
  // The first one was complete when the stream failed: it was dispatched
  // early (its input is known).
  EXPECT_EQ(InputOf(run.Transitions(early[0])), Json::parse(R"({"ms": 5000})"));

  // The retry's step was committed alone: two assistant messages (turns 1
  // and 2), every tool_use answered, the echo result present.
  const std::vector<std::string> echo = run.ToolIdsNamed("echo");
  ASSERT_EQ(echo.size(), 1u) << run.Dump();
  EXPECT_EQ(run.Transitions(echo[0]).back().state(), v1::TOOL_CALL_STATE_DONE);
  int assistants = 0;
  for (const Json& message : conversation) {
    if (Str(message, "role") == "assistant") ++assistants;
  }
  EXPECT_EQ(assistants, 2) << common::DumpJsonPretty(conversation);
  EXPECT_EQ(BlocksOfType(conversation, "tool_use").size(), 1u);
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty())
      << common::DumpJsonPretty(conversation);
  EXPECT_THAT(ApiViolations(conversation, Json::array()), IsEmpty());
  EXPECT_EQ(FakeApiRequests(), 3);
  ExpectFakeApiAcceptedEverything();
}

TEST_F(ClusterTest, WorkerKilledMidToolIsRedelivered) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      Options("worker_killed.json", {{"w1", Json::array({SleepTool()}), 1},
                                     {"w2", Json::array({SleepTool()}), 1}})));

  std::string killed;
  absl::Status kill_status = absl::OkStatus();
  TaskRun run = cluster_->Run(
      MakeSpec("Take a long nap.", {"sleep"}), kTaskTimeout,
      [&](const v1::TaskEvent& event) {
        if (!event.has_tool_transition() || !killed.empty()) return;
        const v1::ToolTransition& t = event.tool_transition();
        if (t.state() != v1::TOOL_CALL_STATE_RUNNING || t.attempt() != 1) {
          return;
        }
        killed = t.worker_id();
        Process* worker = cluster_->worker(killed);
        kill_status = worker == nullptr
                          ? absl::NotFoundError("no worker " + killed)
                          : worker->Signal(SIGKILL);
      });
  ASSERT_FALSE(killed.empty()) << run.Dump();
  ASSERT_THAT(kill_status, IsOk());
  ASSERT_COMPLETED(run, "end_turn");
  ExpectEveryToolEnded(run);

  const std::vector<std::string> ids = run.ToolIdsNamed("sleep");
  ASSERT_EQ(ids.size(), 1u);
  std::vector<std::pair<uint32_t, std::string>> running;
  int done = 0;
  for (const v1::ToolTransition& t : run.Transitions(ids[0])) {
    if (t.state() == v1::TOOL_CALL_STATE_RUNNING) {
      running.emplace_back(t.attempt(), t.worker_id());
    }
    if (t.state() == v1::TOOL_CALL_STATE_DONE) ++done;
  }
  const std::string other = killed == "w1" ? "w2" : "w1";
  EXPECT_THAT(running, ElementsAre(std::make_pair(1u, killed),
                                   std::make_pair(2u, other)))
      << run.Dump();
  EXPECT_EQ(done, 1);

  // Exactly one result reached the model.
  const Json conversation = run.Conversation();
  const std::vector<Json> results = BlocksOfType(conversation, "tool_result");
  ASSERT_EQ(results.size(), 1u) << common::DumpJsonPretty(conversation);
  EXPECT_EQ(Str(results[0], "tool_use_id"), ids[0]);
  EXPECT_EQ(ResultText(results[0]), "slept 2500 ms");
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty());
  EXPECT_EQ(FakeApiRequests(), 2);
  ExpectFakeApiAcceptedEverything();
}

TEST_F(ClusterTest, CancelReachesRunningExecTool) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(Options("cancel_exec.json", {})));
  const std::string pid_file = cluster_->dir() + "/long_job.pid";
  ASSERT_THAT(
      cluster_->StartWorker({"w1", Json::array({LongJobTool(pid_file)}), 1}),
      IsOk());
  ASSERT_THAT(cluster_->WaitForWorkers({"w1"}, absl::Seconds(20)), IsOk());

  absl::StatusOr<std::string> task =
      cluster_->Submit(MakeSpec("Run the long job.", {"long_job"}));
  ASSERT_THAT(task, IsOk());
  pid_t job_pid = -1;
  absl::Status cancel_status = absl::UnknownError("the tool never ran");
  // Whatever happens below, the job's process must not outlive the test.
  absl::Cleanup kill_job = [&job_pid] {
    if (job_pid > 0 && kill(job_pid, 0) == 0) kill(job_pid, SIGKILL);
  };
  TaskRun run =
      cluster_->Watch(*task, kTaskTimeout, [&](const v1::TaskEvent& event) {
        if (!event.has_tool_transition() || job_pid > 0) return;
        if (event.tool_transition().state() != v1::TOOL_CALL_STATE_RUNNING) {
          return;
        }
        // RUNNING is reported when the worker took the call; the shell
        // writes its pid a moment later.
        std::string text;
        const bool written = PollUntil(
            [&] {
              absl::StatusOr<std::string> read = ReadWholeFile(pid_file);
              if (!read.ok() || !absl::EndsWith(*read, "\n")) return false;
              text = *read;
              return true;
            },
            absl::Seconds(10));
        int pid = 0;
        if (!written ||
            !absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) ||
            pid <= 0) {
          cancel_status = absl::DeadlineExceededError("no pid in " + pid_file);
          return;
        }
        job_pid = pid;
        cancel_status = cluster_->Cancel(*task, "integration test");
      });
  ASSERT_GT(job_pid, 0) << cancel_status << "\n" << run.Dump();
  ASSERT_THAT(cancel_status, IsOk());
  ASSERT_THAT(run.status, IsOk()) << run.Dump();
  ASSERT_NE(run.terminal(), nullptr);
  EXPECT_EQ(run.terminal()->state(), v1::TASK_STATE_CANCELLED)
      << run.terminal()->ShortDebugString();
  ExpectEveryToolEnded(run);
  const std::vector<std::string> ids = run.ToolIdsNamed("long_job");
  ASSERT_EQ(ids.size(), 1u);
  const v1::ToolTransition last = run.Transitions(ids[0]).back();
  EXPECT_EQ(last.state(), v1::TOOL_CALL_STATE_ERROR);
  EXPECT_EQ(last.reason(), v1::TOOL_ERROR_REASON_CANCELLED);

  // The worker killed the tool's process (and reaped it).
  EXPECT_TRUE(PollUntil([&] { return kill(job_pid, 0) != 0 && errno == ESRCH; },
                        absl::Seconds(10)))
      << "pid " << job_pid << " still exists after the cancel";
  EXPECT_EQ(FakeApiRequests(), 1);
  ExpectFakeApiAcceptedEverything();
}

TEST_F(ClusterTest, ToolNoWorkerServesGivesClearOutcome) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      Options("no_worker.json", {{"w1", Json::array({EchoTool()}), 2}})));

  TaskRun run = cluster_->Run(
      MakeSpec("Call the ghost tool.", {"echo", "ghost"}), kTaskTimeout);
  ASSERT_COMPLETED(run, "end_turn");
  ExpectEveryToolEnded(run);

  const std::vector<std::string> ids = run.ToolIdsNamed("ghost");
  ASSERT_EQ(ids.size(), 1u) << run.Dump();
  const std::vector<v1::ToolTransition> t = run.Transitions(ids[0]);
  EXPECT_EQ(FirstIn(t, v1::TOOL_CALL_STATE_RUNNING), nullptr) << run.Dump();
  EXPECT_EQ(t.back().state(), v1::TOOL_CALL_STATE_ERROR);
  EXPECT_EQ(t.back().reason(), v1::TOOL_ERROR_REASON_NO_WORKER);
  EXPECT_FALSE(t.back().message().empty());

  // The model was told, with an is_error tool_result.
  const Json conversation = run.Conversation();
  const std::vector<Json> results = BlocksOfType(conversation, "tool_result");
  ASSERT_EQ(results.size(), 1u) << common::DumpJsonPretty(conversation);
  EXPECT_EQ(Str(results[0], "tool_use_id"), ids[0]);
  EXPECT_TRUE(results[0].value("is_error", false));
  EXPECT_FALSE(ResultText(results[0]).empty());
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty());

  // ... and the request the fake API got carried it too.
  absl::StatusOr<Json> log = cluster_->FakeApiGet("/_fake/requests");
  ASSERT_THAT(log, IsOk());
  ASSERT_EQ(log->size(), 2u);
  const Json& sent = (*log)[1]["body"]["messages"].back();
  ASSERT_EQ(Str(sent, "role"), "user");
  ASSERT_TRUE(sent["content"].is_array());
  EXPECT_EQ(Str(sent["content"][0], "tool_use_id"), ids[0]);
  EXPECT_TRUE(sent["content"][0].value("is_error", false));
  ExpectFakeApiAcceptedEverything();
}

TEST_F(ClusterTest, CliSubmitJsonEndToEnd) {
  // No scenario: the fake API's rule-driven model calls the tool the prompt
  // names, then answers with its result.
  auto OptionsWithRuleModel = [](std::vector<WorkerSpec> workers) {
    ClusterOptions options = Options("", std::move(workers));
    options.fakeapi_args = {"--seed", "7"};
    return options;
  };
  ASSERT_NO_FATAL_FAILURE(StartCluster(OptionsWithRuleModel(
      {{"w1", Json::array({EchoTool()}), 2},
       {"w2", Json::array({EchoTool(), SleepTool()}), 2}})));

  Process::Options submit;
  submit.path = BinaryPath("toolmesh");
  submit.name = "toolmesh submit";
  submit.args = {"--orchestrator",
                 cluster_->orchestrator_address(),
                 "submit",
                 "--prompt",
                 "Please use the echo tool to say hello.",
                 "--tool",
                 "echo",
                 "--json"};
  submit.stderr_path = cluster_->dir() + "/cli-submit.stderr";
  absl::StatusOr<std::unique_ptr<Process>> cli = Process::Start(submit);
  ASSERT_THAT(cli, IsOk());
  absl::StatusOr<int> exit = (*cli)->Wait(kTaskTimeout);
  ASSERT_THAT(exit, IsOk());
  ASSERT_TRUE((*cli)->WaitForStdoutEof(absl::Seconds(5)));
  EXPECT_TRUE(WIFEXITED(*exit) && WEXITSTATUS(*exit) == 0)
      << "wait status " << *exit << "\n"
      << (*cli)->Describe();

  const std::vector<std::string> lines = (*cli)->StdoutLines();
  ASSERT_FALSE(lines.empty()) << (*cli)->Describe();
  std::vector<Json> events;
  for (const std::string& line : lines) {
    absl::StatusOr<Json> event = common::ParseJson(line);
    ASSERT_THAT(event, IsOk()) << line;
    ASSERT_TRUE(event->is_object()) << line;
    events.push_back(*std::move(event));
  }
  const std::string task_id = Str(events.front(), "task_id");
  EXPECT_FALSE(task_id.empty());
  std::int64_t last_seq = 0;
  bool echo_done = false;
  for (const Json& event : events) {
    EXPECT_EQ(Str(event, "task_id"), task_id) << common::DumpJson(event);
    EXPECT_FALSE(Str(event, "type").empty()) << common::DumpJson(event);
    ASSERT_TRUE(event.contains("seq") && event["seq"].is_number_integer())
        << common::DumpJson(event);
    EXPECT_GT(event["seq"].get<std::int64_t>(), last_seq);
    last_seq = event["seq"].get<std::int64_t>();
    if (Str(event, "type") == "tool" && Str(event, "name") == "echo" &&
        Str(event, "state") == "done") {
      echo_done = true;
    }
  }
  EXPECT_TRUE(echo_done) << absl::StrJoin(lines, "\n");
  const Json& last = events.back();
  EXPECT_EQ(Str(last, "type"), "task_completed") << common::DumpJson(last);
  EXPECT_EQ(Str(last, "stop_reason"), "end_turn");
  ASSERT_TRUE(last.contains("conversation") && last["conversation"].is_array())
      << common::DumpJson(last);
  const Json& conversation = last["conversation"];
  EXPECT_EQ(BlocksOfType(conversation, "tool_use").size(), 1u);
  EXPECT_EQ(BlocksOfType(conversation, "tool_result").size(), 1u);
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty())
      << common::DumpJsonPretty(conversation);
  EXPECT_EQ(Str(conversation.back(), "role"), "assistant");

  Process::Options workers;
  workers.path = BinaryPath("toolmesh");
  workers.name = "toolmesh workers";
  workers.args = {"--orchestrator", cluster_->orchestrator_address(),
                  "workers"};
  workers.stderr_path = cluster_->dir() + "/cli-workers.stderr";
  absl::StatusOr<std::unique_ptr<Process>> list = Process::Start(workers);
  ASSERT_THAT(list, IsOk());
  exit = (*list)->Wait(absl::Seconds(15));
  ASSERT_THAT(exit, IsOk());
  ASSERT_TRUE((*list)->WaitForStdoutEof(absl::Seconds(5)));
  EXPECT_TRUE(WIFEXITED(*exit) && WEXITSTATUS(*exit) == 0)
      << (*list)->Describe();
  const std::string listed = absl::StrJoin((*list)->StdoutLines(), "\n");
  EXPECT_THAT(listed, HasSubstr("w1"));
  EXPECT_THAT(listed, HasSubstr("w2"));
  EXPECT_THAT(listed, HasSubstr("echo"));
  ExpectFakeApiAcceptedEverything();
}

// --- Durability: the orchestrator killed with SIGKILL and restarted ------

// Kills the orchestrator while the parallel sleeps run on the workers; after
// the restart the calls are delivered again, the task completes, and a
// client that saw events before the kill resumes after its last seq with no
// gap and no duplicate.
TEST_F(ClusterTest, OrchestratorKilledMidToolResumesAfterRestart) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      Options("restart_tools.json",
              {{"w1", Json::array({SleepTool()}), 2},
               {"w2", Json::array({SleepTool()}), 2}})));
  absl::StatusOr<std::string> id =
      cluster_->Submit(MakeSpec("Take three naps.", {"sleep"}));
  ASSERT_THAT(id, IsOk());

  bool killed = false;
  TaskRun before = WatchAndRestartMidTool(*id, /*omit_deltas=*/false, killed);
  ASSERT_TRUE(killed) << before.Dump();
  ASSERT_FALSE(before.status.ok()) << "the stream should break on SIGKILL";
  ASSERT_FALSE(before.events.empty());
  const std::uint64_t last_seen = before.events.back().seq();

  // Resume after the last event seen.
  TaskRun after = cluster_->Watch(*id, kTaskTimeout, nullptr,
                                  /*omit_deltas=*/false, last_seen);
  ASSERT_THAT(after.status, IsOk()) << after.Dump();
  ASSERT_NE(after.terminal(), nullptr) << after.Dump();
  EXPECT_EQ(after.terminal()->state(), v1::TASK_STATE_COMPLETED)
      << after.Dump();
  ASSERT_FALSE(after.events.empty());
  EXPECT_EQ(after.events.front().seq(), last_seen + 1);
  for (std::size_t i = 1; i < after.events.size(); ++i) {
    ASSERT_EQ(after.events[i].seq(), after.events[i - 1].seq() + 1)
        << after.Dump();
  }

  // The whole history, once more from the start: every tool ended exactly
  // once, and the model got one result per call.
  TaskRun all = cluster_->Watch(*id, kTaskTimeout, nullptr,
                                /*omit_deltas=*/false);
  ASSERT_THAT(all.status, IsOk());
  ASSERT_EQ(all.events.size(), last_seen + after.events.size());
  for (std::size_t i = 0; i < before.events.size(); ++i) {
    EXPECT_EQ(all.events[i].SerializeAsString(),
              before.events[i].SerializeAsString())
        << "event " << i + 1 << " changed across the restart";
  }
  ExpectEveryToolEnded(all);
  const std::vector<std::string> ids = all.ToolIdsNamed("sleep");
  ASSERT_EQ(ids.size(), 3u) << all.Dump();
  bool redelivered = false;
  for (const std::string& tool : ids) {
    const std::vector<v1::ToolTransition> t = all.Transitions(tool);
    EXPECT_EQ(t.back().state(), v1::TOOL_CALL_STATE_DONE) << all.Dump();
    if (t.back().attempt() > 1) redelivered = true;
  }
  EXPECT_TRUE(redelivered) << all.Dump();
  const Json conversation = all.Conversation();
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty())
      << common::DumpJsonPretty(conversation);
  EXPECT_EQ(BlocksOfType(conversation, "tool_result").size(), 3u);
  ExpectFakeApiAcceptedEverything();
}

// The worker keeps running its call while the orchestrator is down and
// sends the result of attempt 1 once it is connected again. The restarted
// orchestrator had re-queued the call as attempt 2 (the worker's one slot
// is busy, so attempt 2 waits there): it takes the finished attempt-1
// result, cancels attempt 2, and the task goes on with that result.
TEST_F(ClusterTest, FinishedOldAttemptIsAcceptedAfterRestart) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(Options(
      "restart_one_sleep.json", {{"w1", Json::array({SleepTool()}), 1}})));
  absl::StatusOr<std::string> id =
      cluster_->Submit(MakeSpec("Take a nap.", {"sleep"}));
  ASSERT_THAT(id, IsOk());
  bool killed = false;
  TaskRun before = WatchAndRestartMidTool(*id, /*omit_deltas=*/true, killed);
  ASSERT_TRUE(killed) << before.Dump();

  TaskRun all = cluster_->Watch(*id, kTaskTimeout, nullptr,
                                /*omit_deltas=*/true);
  ASSERT_COMPLETED(all, "end_turn");
  ExpectEveryToolEnded(all);
  const std::vector<std::string> ids = all.ToolIdsNamed("sleep");
  ASSERT_EQ(ids.size(), 1u) << all.Dump();
  const std::vector<v1::ToolTransition> t = all.Transitions(ids[0]);
  ASSERT_FALSE(t.empty());
  EXPECT_EQ(t.back().state(), v1::TOOL_CALL_STATE_DONE) << all.Dump();
  EXPECT_EQ(t.back().attempt(), 2u) << all.Dump();
  EXPECT_THAT(t.back().message(),
              HasSubstr("result of attempt 1 (finished after attempt 2"))
      << all.Dump();
  EXPECT_THAT(t.back().result_json(), HasSubstr("1500")) << all.Dump();
  const Json conversation = all.Conversation();
  EXPECT_THAT(ToolResultProblems(conversation), IsEmpty())
      << common::DumpJsonPretty(conversation);
  EXPECT_EQ(BlocksOfType(conversation, "tool_result").size(), 1u);
  ExpectFakeApiAcceptedEverything();
}

// An idempotency key survives a restart: the same submission returns the
// same task, a different one is refused.
TEST_F(ClusterTest, IdempotentSubmissionAcrossRestart) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      Options("", {{"w1", Json::array({EchoTool()}), 2}})));
  v1::TaskSpec spec = MakeSpec("Please echo hello.", {"echo"});
  spec.set_idempotency_key("restart-key-1");
  absl::StatusOr<std::string> first = cluster_->Submit(spec);
  ASSERT_THAT(first, IsOk());
  TaskRun run = cluster_->Watch(*first, kTaskTimeout);
  ASSERT_COMPLETED(run, "end_turn");

  ASSERT_THAT(cluster_->RestartOrchestrator(), IsOk());
  // The client's channel still points at the dead process: its first call
  // fails UNAVAILABLE, and a client retries it (safe: the key).
  absl::StatusOr<std::string> again = absl::UnavailableError("not sent");
  ASSERT_TRUE(PollUntil(
      [&] {
        again = cluster_->Submit(spec);
        return !absl::IsUnavailable(again.status());
      },
      absl::Seconds(10)));
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(*again, *first);
  spec.set_prompt("Something else.");
  EXPECT_THAT(cluster_->Submit(spec),
              StatusIs(absl::StatusCode::kAlreadyExists));

  // The finished task is still there, with its whole history.
  TaskRun replay = cluster_->Watch(*first, kTaskTimeout);
  ASSERT_COMPLETED(replay, "end_turn");
  EXPECT_EQ(replay.events.size(), run.events.size());
  ExpectFakeApiAcceptedEverything();
}

}  // namespace
}  // namespace toolmesh::integration
