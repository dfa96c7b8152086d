// Chaos test (issues 6 and 9): a real cluster (toolmesh-fakeapi with random
// faults, toolmesh-orchestrator, three toolmesh-worker processes) runs a
// workload of tasks with parallel client tool calls while the test SIGKILLs
// the orchestrator and the workers at seeded random moments and restarts
// them. At the end every task must be terminal and its history intact.
//
// Reproduce a run by its number: the seed is printed at the start and on
// failure; TOOLMESH_CHAOS_SEED=N replays it (the schedule and the fake API's
// faults derive from it; process timing does not, so a race may need a few
// runs). TOOLMESH_CHAOS_TASKS=N sets the workload size (default 50, which
// takes about 20-40 s on the 2-core development machine).
//
// Expected outcome, checked per task:
//  - the task is terminal; COMPLETED, or FAILED only when the fake API's
//    injected faults exhausted the model request's retries: then its error
//    type is one the injected faults produce (overloaded_error from
//    http_529 and sse_error, connection_error from cut) and its last turn
//    saw at least RetryPolicyOptions::max_retries (2) TurnRetrying events;
//  - its events, watched from seq 0 after the end, are numbered 1..n with no
//    gap or duplicate, and exactly the last one is a TaskTerminal; GetTask
//    agrees on the state and last_seq;
//  - every announced tool has exactly one terminal transition (DONE or
//    ERROR; ERROR stream_aborted ends a tool of an aborted attempt), its
//    first transition is PENDING, and nothing follows the terminal one; it
//    ends DONE, ERROR stream_aborted, or ERROR worker_lost after its three
//    deliveries were spent (no_worker, timeout or tool_failed are bugs
//    here: at least two workers always serve, every kill is followed by a
//    restart, and the schedule-to-start timeout is 15 s);
//  - the conversation passes common::ValidateRequest (with the tools), every
//    tool_use has exactly one tool_result, in the next message and in
//    tool_use order; the tools in the conversation are exactly those whose
//    terminal transition is not stream_aborted; a DONE result is the one its
//    transition reported and belongs to its own call (a sleep says how long
//    it slept, an echo repeats its input);
//  - a COMPLETED task has the scenario's shape: three steps, the tool calls
//    of its variant in turn 1 and the two of turn 2;
//  - resubmitting the spec with its idempotency key returns the same task.
// And once for the run: the fake API rejected no request (no 400, no 401,
// nothing unmatched).
//
// Thread-safety: single-threaded (the test thread drives everything).
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

using ::testing::IsEmpty;
using ::toolmesh::common::Json;
using ::toolmesh::testing::IsOk;

constexpr int kDefaultTasks = 50;
// Retries of a turn's model request (common::RetryPolicyOptions default,
// which the orchestrator uses).
constexpr int kModelRetries = 2;
// Deliveries of a client tool call before ERROR worker_lost
// (EngineOptions::max_tool_attempts default).
constexpr std::uint32_t kMaxToolAttempts = 3;
// The orchestrator's schedule-to-start timeout here: longer than workers
// need to reconnect after an orchestrator restart (their reconnect backoff
// reaches a few seconds), so a call re-queued at recovery is not failed
// no_worker while its workers are on their way back; the cluster's default
// (2 s) is shorter than that.
constexpr char kScheduleToStartTimeout[] = "15s";
// Bound on everything after the chaos schedule: until every task is
// terminal and its log has been read.
constexpr absl::Duration kSettleTimeout = absl::Seconds(45);
// Bound on retrying one RPC through orchestrator restarts.
constexpr absl::Duration kRpcRetryTimeout = absl::Seconds(20);

// --- configuration -------------------------------------------------------

// An unsigned integer from the environment, or `fallback` when unset.
// Sets `*given` when the variable is set and valid.
std::uint64_t EnvNumber(const char* name, std::uint64_t fallback,
                        bool* given = nullptr) {
  const char* text = std::getenv(name);
  std::uint64_t value = 0;
  if (text == nullptr || !absl::SimpleAtoi(text, &value)) return fallback;
  if (given != nullptr) *given = true;
  return value;
}

// The test's own random numbers; std::mt19937_64 is fully specified, and the
// scaling below is ours, so a seed means the same schedule everywhere.
class ChaosRandom {
 public:
  explicit ChaosRandom(std::uint64_t seed) : engine_(seed) {}

  double Uniform01() {
    return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  }
  // In [0, n); n > 0.
  int Below(int n) {
    return std::min(n - 1, static_cast<int>(Uniform01() * n));
  }
  absl::Duration Between(absl::Duration low, absl::Duration high) {
    return low + (high - low) * Uniform01();
  }

 private:
  std::mt19937_64 engine_;
};

// --- tools -----------------------------------------------------------------

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

// The tools as the model sees them (tools.json entries without executor).
Json ModelTools() {
  Json tools = Json::array();
  for (Json tool : {SleepTool(), EchoTool()}) {
    tool.erase("executor");
    tools.push_back(std::move(tool));
  }
  return tools;
}

// Tool names of turn 1 per variant, in the order of scenarios/
// chaos_parallel.json; turn 2 is the same for every variant.
const std::map<std::string, std::vector<std::string>>& Turn1Tools() {
  static const auto* tools = new std::map<std::string, std::vector<std::string>>{
      {"A", {"sleep", "sleep", "echo"}},
      {"B", {"sleep", "echo", "sleep", "sleep"}},
      {"C", {"echo", "sleep"}}};
  return *tools;
}
const std::vector<std::string>& Turn2Tools() {
  static const auto* tools = new std::vector<std::string>{"sleep", "echo"};
  return *tools;
}

// --- JSON helpers ------------------------------------------------------------

std::string Str(const Json& value, const char* key) {
  return std::string(common::GetString(value, key));
}

// The text of a tool_result's content (a string or text blocks).
std::string ResultText(const Json& tool_result) {
  if (!tool_result.is_object() || !tool_result.contains("content")) return "";
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

bool IsTerminalToolState(v1::ToolCallState state) {
  return state == v1::TOOL_CALL_STATE_DONE ||
         state == v1::TOOL_CALL_STATE_ERROR;
}

// --- RPCs through restarts ----------------------------------------------------

// Calls `call` (returning absl::Status or StatusOr) until it returns
// anything but UNAVAILABLE or `timeout` passes, with a growing pause in
// between: after a SIGKILL the first RPC on the channel fails UNAVAILABLE.
template <typename Call>
auto RetryUnavailable(Call call, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(20);
  while (true) {
    auto result = call();
    absl::Status status;
    if constexpr (std::is_same_v<decltype(result), absl::Status>) {
      status = result;
    } else {
      status = result.status();
    }
    if (!absl::IsUnavailable(status) || absl::Now() + pause >= deadline) {
      return result;
    }
    // A client's retry backoff, not a synchronisation: nothing tells a
    // client when the orchestrator is back.
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(500));
  }
}

absl::StatusOr<v1::Task> GetTask(Cluster& cluster, const std::string& id) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::GetTaskRequest request;
  request.set_task_id(id);
  v1::GetTaskResponse response;
  grpc::Status status = cluster.tasks().GetTask(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("GetTask ", id, ": ",
                                     status.error_message()));
  }
  return response.task();
}

// --- the workload and the schedule --------------------------------------------

struct ChaosTask {
  std::string variant;
  v1::TaskSpec spec;
  std::string id;  // once submitted
};

struct Action {
  enum class Kind { kSubmit, kKillOrchestrator, kKillWorker, kRestartWorker };
  absl::Duration at;
  Kind kind;
  int index = 0;  // kSubmit: the task; kRestartWorker: the worker
};

// What the checks counted over the run, printed at the end.
struct Tally {
  std::map<std::string, int> task_states;
  std::map<std::string, int> failure_types;
  std::map<std::string, int> tool_outcomes;  // "DONE", "ERROR stream_aborted"
  int turn_retries = 0;
  int redelivered_tools = 0;  // a RUNNING transition with attempt > 1

  std::string ToString() const {
    auto join = [](const std::map<std::string, int>& m) {
      return absl::StrJoin(m, ", ", absl::PairFormatter("="));
    };
    return absl::StrCat("tasks {", join(task_states), "} failures {",
                        join(failure_types), "} tools {", join(tool_outcomes),
                        "} turn_retries=", turn_retries,
                        " redelivered_tools=", redelivered_tools);
  }
};

class ChaosTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bool seed_given = false;
    seed_ = EnvNumber("TOOLMESH_CHAOS_SEED", 0, &seed_given);
    if (!seed_given) seed_ = std::random_device()() % 1000000;
    tasks_ = static_cast<int>(
        std::clamp<std::uint64_t>(EnvNumber("TOOLMESH_CHAOS_TASKS",
                                            kDefaultTasks),
                                  1, 10000));
    std::cout << "chaos seed " << seed_ << ", " << tasks_
              << " tasks (TOOLMESH_CHAOS_SEED=" << seed_
              << " TOOLMESH_CHAOS_TASKS=" << tasks_ << " to repeat)"
              << std::endl;
  }

  void TearDown() override {
    if (!HasFailure()) return;
    std::cerr << "=== chaos run FAILED: seed " << seed_ << ", " << tasks_
              << " tasks; repeat with TOOLMESH_CHAOS_SEED=" << seed_
              << " TOOLMESH_CHAOS_TASKS=" << tasks_ << " ===\n";
    if (cluster_ != nullptr) {
      std::cerr << "=== cluster logs (" << cluster_->dir()
                << "; set TOOLMESH_KEEP_TEST_DIRS=1 to keep it) ===\n"
                << cluster_->Logs();
    }
  }

  std::vector<WorkerSpec> Workers() const {
    std::vector<WorkerSpec> workers;
    for (const char* id : {"w1", "w2", "w3"}) {
      workers.push_back({id, Json::array({SleepTool(), EchoTool()}), 4});
    }
    return workers;
  }

  // Submits with retries through restarts; the idempotency key makes a
  // retry of a submission that did get stored return the same task.
  absl::StatusOr<std::string> Submit(const v1::TaskSpec& spec) {
    return RetryUnavailable([&] { return cluster_->Submit(spec); },
                            kRpcRetryTimeout);
  }

  // Watches from seq 0 until the terminal event, retrying a stream that
  // could not start or broke (UNAVAILABLE) from the beginning.
  TaskRun WatchAll(const std::string& id, absl::Time deadline) {
    TaskRun run;
    absl::Duration pause = absl::Milliseconds(20);
    while (true) {
      run = cluster_->Watch(id, std::max(deadline - absl::Now(),
                                         absl::Milliseconds(1)),
                            nullptr, /*omit_deltas=*/false, 0);
      if (!absl::IsUnavailable(run.status) || absl::Now() + pause >= deadline) {
        return run;
      }
      absl::SleepFor(pause);  // client backoff, as in RetryUnavailable
      pause = std::min(pause * 2, absl::Milliseconds(500));
    }
  }

  // Every check of one finished task (see the file comment).
  void CheckTask(const ChaosTask& task, const TaskRun& run, Tally& tally);

  // For a FAILED task: the fake API's log shows that the last
  // kModelRetries + 1 requests of its last turn all got an injected fault.
  void CheckFailureWasInjected(int index, const TaskRun& run,
                               const Json& requests);

  std::uint64_t seed_ = 0;
  int tasks_ = kDefaultTasks;
  std::unique_ptr<Cluster> cluster_;
};

void ChaosTest::CheckTask(const ChaosTask& task, const TaskRun& run,
                          Tally& tally) {
  SCOPED_TRACE(absl::StrCat("task ", task.id, " variant ", task.variant,
                            " (seed ", seed_, ")"));
  ASSERT_THAT(run.status, IsOk()) << run.Dump();
  ASSERT_FALSE(run.events.empty());

  // Event log: 1..n, one terminal, last.
  int terminals = 0;
  for (std::size_t i = 0; i < run.events.size(); ++i) {
    ASSERT_EQ(run.events[i].seq(), i + 1)
        << "gap or duplicate at index " << i << "\n"
        << run.Dump();
    if (run.events[i].has_terminal()) ++terminals;
    if (run.events[i].has_turn_retrying()) ++tally.turn_retries;
  }
  ASSERT_EQ(terminals, 1) << run.Dump();
  ASSERT_TRUE(run.events.back().has_terminal()) << run.Dump();
  const v1::TaskTerminal& end = *run.terminal();
  const v1::TaskState state = end.state();
  ++tally.task_states[v1::TaskState_Name(state)];

  absl::StatusOr<v1::Task> stored = RetryUnavailable(
      [&] { return GetTask(*cluster_, task.id); }, kRpcRetryTimeout);
  ASSERT_THAT(stored, IsOk());
  EXPECT_EQ(stored->state(), state);
  EXPECT_EQ(stored->last_seq(), run.events.size());

  // Outcome.
  if (state == v1::TASK_STATE_FAILED) {
    const std::string type = end.error().type();
    ++tally.failure_types[type];
    EXPECT_TRUE(type == "overloaded_error" || type == "connection_error")
        << "a task failed for a reason the injected faults do not explain: "
        << end.ShortDebugString() << "\n"
        << run.Dump();
    std::uint32_t last_turn = 0;
    for (const v1::TaskEvent& event : run.events) {
      if (event.has_turn_started()) last_turn = event.turn_started().turn();
    }
    int retries = 0;
    for (const v1::TaskEvent& event : run.events) {
      if (event.has_turn_retrying() &&
          event.turn_retrying().turn() == last_turn) {
        ++retries;
      }
    }
    EXPECT_GE(retries, kModelRetries)
        << "the task failed before its retries were spent\n"
        << run.Dump();
  } else {
    EXPECT_EQ(state, v1::TASK_STATE_COMPLETED)
        << end.ShortDebugString() << "\n"
        << run.Dump();
  }

  // Tool transitions: one terminal per announced tool.
  std::map<std::string, v1::ToolTransition> final_transition;
  for (const std::string& id : run.ToolIds()) {
    const std::vector<v1::ToolTransition> t = run.Transitions(id);
    EXPECT_EQ(t.front().state(), v1::TOOL_CALL_STATE_PENDING)
        << id << "\n"
        << run.Dump();
    int ended = 0;
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (IsTerminalToolState(t[i].state())) {
        ++ended;
        EXPECT_EQ(i + 1, t.size())
            << id << " has transitions after its terminal one\n"
            << run.Dump();
      }
      if (t[i].state() == v1::TOOL_CALL_STATE_RUNNING && t[i].attempt() > 1) {
        ++tally.redelivered_tools;
      }
    }
    EXPECT_EQ(ended, 1) << id << " has " << ended << " terminal transitions\n"
                        << run.Dump();
    const v1::ToolTransition& last = t.back();
    final_transition[id] = last;
    // The only ways a tool may end under this chaos: its result, its
    // attempt voided (stream_aborted), or its deliveries spent on killed
    // workers and orchestrators (worker_lost after kMaxToolAttempts).
    std::uint32_t deliveries = 0;
    for (const v1::ToolTransition& each : t) {
      deliveries = std::max(deliveries, each.attempt());
    }
    const bool expected_end =
        last.state() == v1::TOOL_CALL_STATE_DONE ||
        last.reason() == v1::TOOL_ERROR_REASON_STREAM_ABORTED ||
        (last.reason() == v1::TOOL_ERROR_REASON_WORKER_LOST &&
         deliveries >= kMaxToolAttempts);
    EXPECT_TRUE(expected_end) << id << " ended " << last.ShortDebugString()
                              << "\n"
                              << run.Dump();
    ++tally.tool_outcomes[last.state() == v1::TOOL_CALL_STATE_DONE
                              ? std::string("DONE")
                              : absl::StrCat(
                                    "ERROR ",
                                    v1::ToolErrorReason_Name(last.reason()))];
  }

  // The conversation.
  const Json messages = run.Conversation();
  ASSERT_TRUE(messages.is_array()) << end.ShortDebugString();
  Json body = {{"model", "claude-sonnet-4-5"},
               {"max_tokens", 1024},
               {"tools", ModelTools()},
               {"messages", messages}};
  std::vector<std::string> violations;
  for (const common::Violation& v : common::ValidateRequest(body)) {
    violations.push_back(v.message);
  }
  EXPECT_THAT(violations, IsEmpty()) << common::DumpJsonPretty(messages);

  std::map<std::string, int> results_per_id;
  std::map<std::string, Json> result_blocks;  // tool_use_id -> tool_result
  std::map<std::string, Json> tool_uses;  // id -> tool_use block
  std::vector<std::vector<std::string>> step_tools;  // names per assistant step
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const Json& message = messages[i];
    if (!message.contains("content") || !message["content"].is_array()) {
      if (Str(message, "role") == "assistant") step_tools.emplace_back();
      continue;
    }
    if (Str(message, "role") == "user") {
      for (const Json& block : message["content"]) {
        if (Str(block, "type") == "tool_result") {
          ++results_per_id[Str(block, "tool_use_id")];
          result_blocks[Str(block, "tool_use_id")] = block;
        }
      }
      continue;
    }
    std::vector<std::string> uses;
    std::vector<std::string> names;
    for (const Json& block : message["content"]) {
      if (Str(block, "type") != "tool_use") continue;
      uses.push_back(Str(block, "id"));
      names.push_back(Str(block, "name"));
      EXPECT_TRUE(tool_uses.emplace(Str(block, "id"), block).second)
          << "tool_use id " << Str(block, "id") << " appears twice\n"
          << common::DumpJsonPretty(messages);
    }
    step_tools.push_back(names);
    if (uses.empty()) continue;
    // The next message holds exactly their results, in tool_use order.
    ASSERT_LT(i + 1, messages.size())
        << "tool_use ids [" << absl::StrJoin(uses, ",")
        << "] end the conversation\n"
        << common::DumpJsonPretty(messages);
    const Json& next = messages[i + 1];
    std::vector<std::string> results;
    bool only_results = Str(next, "role") == "user" &&
                        next.contains("content") && next["content"].is_array();
    if (only_results) {
      for (const Json& block : next["content"]) {
        if (Str(block, "type") == "tool_result") {
          results.push_back(Str(block, "tool_use_id"));
        } else {
          only_results = false;
        }
      }
    }
    EXPECT_TRUE(only_results) << "messages." << i + 1
                              << " holds more than tool_result blocks\n"
                              << common::DumpJsonPretty(messages);
    EXPECT_EQ(results, uses) << "messages." << i + 1 << "\n"
                             << common::DumpJsonPretty(messages);
  }
  for (const auto& [id, count] : results_per_id) {
    EXPECT_EQ(count, 1) << id << " has " << count << " tool_results";
    EXPECT_TRUE(tool_uses.contains(id)) << "tool_result for unknown " << id;
  }

  // The ledger and the conversation agree: the tools in the conversation
  // are the ones not voided with their attempt, and a result is its own.
  for (const auto& [id, last] : final_transition) {
    if (last.kind() != v1::TOOL_KIND_CLIENT) continue;
    const bool aborted = last.state() == v1::TOOL_CALL_STATE_ERROR &&
                         last.reason() == v1::TOOL_ERROR_REASON_STREAM_ABORTED;
    EXPECT_EQ(tool_uses.contains(id), !aborted)
        << id << " ended " << last.ShortDebugString() << "\n"
        << run.Dump();
  }
  for (const auto& [id, use] : tool_uses) {
    auto it = final_transition.find(id);
    if (it == final_transition.end()) {
      ADD_FAILURE() << "tool_use " << id << " has no transitions\n"
                    << run.Dump();
      continue;
    }
    const v1::ToolTransition& last = it->second;
    if (last.state() != v1::TOOL_CALL_STATE_DONE) continue;
    // The tool_result sent to the model.
    const Json result =
        result_blocks.contains(id) ? result_blocks.at(id) : Json();
    absl::StatusOr<Json> reported = common::ParseJson(last.result_json());
    ASSERT_THAT(reported, IsOk()) << last.ShortDebugString();
    EXPECT_EQ(ResultText(*reported), ResultText(result))
        << id << ": the transition's result differs from the conversation's";
    if (result.value("is_error", false)) continue;
    const Json& input = use["input"];
    std::string want;
    if (Str(use, "name") == "sleep") {
      want = absl::StrCat("slept ", input.value("ms", -1), " ms");
    } else {
      want = common::DumpJson(input);
    }
    EXPECT_EQ(ResultText(result), want)
        << id << " (" << Str(use, "name") << ") got another call's result";
  }

  if (state == v1::TASK_STATE_COMPLETED) {
    const std::vector<std::vector<std::string>> expected = {
        Turn1Tools().at(task.variant), Turn2Tools(), {}};
    EXPECT_EQ(step_tools, expected) << common::DumpJsonPretty(messages);
    EXPECT_EQ(end.stop_reason(), "end_turn");
  }
}

void ChaosTest::CheckFailureWasInjected(int index, const TaskRun& run,
                                        const Json& requests) {
  std::uint32_t last_turn = 0;
  for (const v1::TaskEvent& event : run.events) {
    if (event.has_turn_started()) last_turn = event.turn_started().turn();
  }
  const std::string prompt = absl::StrCat("Chaos task ", index, " [");
  std::vector<std::string> faults;  // of this turn's requests, in order
  for (const Json& entry : requests) {
    if (!entry.contains("body") || !entry["body"].is_object()) continue;
    const Json& messages = entry["body"].value("messages", Json::array());
    if (!messages.is_array() || messages.empty() ||
        common::DumpJson(messages[0]).find(prompt) == std::string::npos) {
      continue;
    }
    std::uint32_t turn = 1;
    for (const Json& message : messages) {
      if (Str(message, "role") == "assistant") ++turn;
    }
    if (turn != last_turn) continue;
    faults.push_back(entry.value("fault", Json()).is_string()
                         ? entry["fault"].get<std::string>()
                         : std::string("none"));
  }
  ASSERT_GE(faults.size(), static_cast<std::size_t>(kModelRetries + 1))
      << "task " << index << " turn " << last_turn << " requests: ["
      << absl::StrJoin(faults, ",") << "]\n"
      << run.Dump();
  std::cout << "task " << index << " FAILED in turn " << last_turn
            << "; the fake API's faults on that turn's requests: ["
            << absl::StrJoin(faults, ",") << "]" << std::endl;
  for (std::size_t i = faults.size() - kModelRetries - 1; i < faults.size();
       ++i) {
    EXPECT_NE(faults[i], "none")
        << "task " << index << " failed, but its turn " << last_turn
        << " requests were not all faulted: [" << absl::StrJoin(faults, ",")
        << "]\n"
        << run.Dump();
  }
}

TEST_F(ChaosTest, OrchestratorAndWorkersKilledAtRandom) {
  ChaosRandom random(seed_);
  ClusterOptions options;
  options.scenario = ScenarioPath("chaos_parallel.json");
  options.fakeapi_args = {"--seed",  absl::StrCat(seed_),
                          "--fault-rate", "0.1",
                          "--faults", "http_529,sse_error,cut"};
  options.orchestrator_args = {"--schedule-to-start-timeout",
                               kScheduleToStartTimeout};
  options.workers = Workers();
  absl::StatusOr<std::unique_ptr<Cluster>> started =
      Cluster::Start(std::move(options));
  ASSERT_THAT(started, IsOk());
  cluster_ = *std::move(started);
  const std::vector<WorkerSpec> workers = Workers();

  // The workload: variants in seeded order, a key per task.
  std::vector<ChaosTask> tasks(tasks_);
  const char* const kVariants[] = {"A", "B", "C"};
  for (int i = 0; i < tasks_; ++i) {
    tasks[i].variant = kVariants[random.Below(3)];
    tasks[i].spec = MakeSpec(
        absl::StrCat("Chaos task ", i, " [", tasks[i].variant, "]"),
        {"sleep", "echo"});
    tasks[i].spec.set_idempotency_key(
        absl::StrCat("chaos-", seed_, "-", i));
  }

  // The schedule: submissions spread over `window`, two or three
  // orchestrator kills and one or two worker kills (each followed by a
  // restart) at random moments inside it and shortly after.
  const absl::Duration window =
      std::max(absl::Seconds(2), absl::Milliseconds(100) * tasks_);
  std::vector<Action> actions;
  for (int i = 0; i < tasks_; ++i) {
    actions.push_back({random.Between(absl::ZeroDuration(), window),
                       Action::Kind::kSubmit, i});
  }
  const int orchestrator_kills = 2 + random.Below(2);
  for (int k = 0; k < orchestrator_kills; ++k) {
    actions.push_back({random.Between(absl::Milliseconds(300),
                                      window + absl::Seconds(1)),
                       Action::Kind::kKillOrchestrator});
  }
  const int worker_kills = 1 + random.Below(2);
  for (int k = 0; k < worker_kills; ++k) {
    actions.push_back({random.Between(absl::Milliseconds(300),
                                      window + absl::Seconds(1)),
                       Action::Kind::kKillWorker});
  }
  std::stable_sort(actions.begin(), actions.end(),
                   [](const Action& a, const Action& b) { return a.at < b.at; });

  // Runs the schedule. The pauses between actions set the chaos's timing;
  // nothing waits on them for a result. A killed worker's restart is queued
  // as an action of its own.
  std::vector<bool> worker_up(workers.size(), true);
  std::vector<std::string> log;
  const absl::Time start = absl::Now();
  for (std::size_t next = 0; next < actions.size(); ++next) {
    const Action action = actions[next];
    const absl::Time due = start + action.at;
    if (absl::Now() < due) absl::SleepFor(due - absl::Now());
    const std::string when = absl::StrCat(
        "t=", absl::ToInt64Milliseconds(absl::Now() - start), "ms ");
    switch (action.kind) {
      case Action::Kind::kSubmit: {
        ChaosTask& task = tasks[action.index];
        absl::StatusOr<std::string> id = Submit(task.spec);
        ASSERT_THAT(id, IsOk()) << "task " << action.index;
        task.id = *id;
        break;
      }
      case Action::Kind::kKillOrchestrator: {
        const absl::Time killed = absl::Now();
        ASSERT_THAT(cluster_->RestartOrchestrator(), IsOk());
        log.push_back(absl::StrCat(
            when, "SIGKILL orchestrator (listening again after ",
            absl::ToInt64Milliseconds(absl::Now() - killed), "ms)"));
        break;
      }
      case Action::Kind::kKillWorker: {
        std::vector<int> up;
        for (std::size_t w = 0; w < workers.size(); ++w) {
          if (worker_up[w]) up.push_back(static_cast<int>(w));
        }
        if (up.size() < 2) break;  // keep one serving
        const int w = up[random.Below(static_cast<int>(up.size()))];
        Process* process = cluster_->worker(workers[w].id);
        ASSERT_NE(process, nullptr);
        log.push_back(when + "SIGKILL worker " + workers[w].id);
        ASSERT_THAT(process->Signal(SIGKILL), IsOk());
        ASSERT_THAT(process->Wait(absl::Seconds(10)), IsOk());
        worker_up[w] = false;
        Action restart{action.at + random.Between(absl::Milliseconds(200),
                                                  absl::Milliseconds(1500)),
                       Action::Kind::kRestartWorker, w};
        auto at = std::upper_bound(
            actions.begin() + static_cast<std::ptrdiff_t>(next) + 1,
            actions.end(), restart,
            [](const Action& a, const Action& b) { return a.at < b.at; });
        actions.insert(at, restart);
        break;
      }
      case Action::Kind::kRestartWorker: {
        log.push_back(when + "restart worker " + workers[action.index].id);
        ASSERT_THAT(cluster_->StartWorker(workers[action.index]), IsOk());
        worker_up[action.index] = true;
        break;
      }
    }
  }
  std::cout << "chaos schedule: " << absl::StrJoin(log, "; ") << std::endl;

  // Every task ends; its whole log is read once it has.
  const absl::Time deadline = absl::Now() + kSettleTimeout;
  Tally tally;
  std::map<int, TaskRun> failed;
  for (int i = 0; i < tasks_; ++i) {
    TaskRun run = WatchAll(tasks[i].id, deadline);
    ASSERT_NO_FATAL_FAILURE(CheckTask(tasks[i], run, tally));
    if (run.terminal()->state() == v1::TASK_STATE_FAILED) {
      failed.emplace(i, std::move(run));
    }
  }
  if (!failed.empty()) {
    absl::StatusOr<Json> requests = cluster_->FakeApiGet("/_fake/requests");
    ASSERT_THAT(requests, IsOk());
    for (const auto& [index, run] : failed) {
      CheckFailureWasInjected(index, run, *requests);
    }
  }

  // Idempotent submission still holds after the restarts.
  for (const ChaosTask& task : tasks) {
    absl::StatusOr<std::string> again = Submit(task.spec);
    ASSERT_THAT(again, IsOk());
    EXPECT_EQ(*again, task.id) << task.spec.idempotency_key();
  }

  // The fake API accepted every request the orchestrator sent.
  absl::StatusOr<Json> stats = cluster_->FakeApiGet("/_fake/stats");
  ASSERT_THAT(stats, IsOk());
  std::string rejected;
  if (stats->value("rejected_400", 0) + stats->value("rejected_401", 0) +
          stats->value("unmatched", 0) >
      0) {
    absl::StatusOr<Json> requests = cluster_->FakeApiGet("/_fake/requests");
    if (requests.ok()) {
      for (const Json& entry : *requests) {
        const int status = entry.value("status", 0);
        if (status == 400 || status == 401 || entry.contains("unmatched")) {
          absl::StrAppend(&rejected, common::DumpJson(entry), "\n");
        }
      }
    }
  }
  EXPECT_EQ(stats->value("rejected_400", -1), 0) << rejected;
  EXPECT_EQ(stats->value("rejected_401", -1), 0) << rejected;
  EXPECT_EQ(stats->value("unmatched", -1), 0) << rejected;

  std::cout << "chaos seed " << seed_ << ": " << tally.ToString()
            << "; fake API requests=" << stats->value("requests", -1)
            << " faults_injected=" << stats->value("faults_injected", -1)
            << " faults=" << common::DumpJson(stats->value("faults", Json()))
            << std::endl;
  EXPECT_EQ(tally.task_states["TASK_STATE_COMPLETED"] +
                tally.task_states["TASK_STATE_FAILED"],
            tasks_);
}

}  // namespace
}  // namespace toolmesh::integration
