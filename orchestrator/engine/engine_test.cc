// Engine tests: the real engine thread, the real libcurl model transport
// against the in-process fake Messages API (loopback, port 0), the real
// clock, and a worker peer on the engine's WorkerLink seam that answers
// assignments the way toolmesh-worker does.
#include "orchestrator/engine/engine.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "common/random.h"
#include "common/request_validator.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "orchestrator/engine/real_clock.h"
#include "orchestrator/store/memory_store.h"
#include "orchestrator/model/curl_model_transport.h"
#include "tests/testing/fakeapi/fake_api_server.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::orchestrator {
namespace {

using common::Json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::IsOk;
using testing::StatusIs;

constexpr absl::Duration kWait = absl::Seconds(20);

// Waits for an asynchronous Reply.
template <typename T>
absl::StatusOr<T> Call(
    absl::FunctionRef<void(Reply<T>)> start) {
  absl::Notification done;
  absl::StatusOr<T> result = absl::UnknownError("no reply");
  start([&](absl::StatusOr<T> r) {
    result = std::move(r);
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(kWait)) {
    return absl::DeadlineExceededError("no reply in time");
  }
  return result;
}

// Collects a WatchTask stream.
class Collector final : public EventSubscriber {
 public:
  bool OnEvent(const v1::TaskEvent& event) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
    return true;
  }
  void OnEnd(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    end_ = status;
  }
  // Waits for OnEnd; false on timeout.
  bool WaitEnd() {
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return end_.has_value();
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ended), kWait);
  }
  // Waits until `pred(events)` holds; false on timeout.
  bool WaitFor(std::function<bool(const std::vector<v1::TaskEvent>&)> pred) {
    absl::MutexLock lock(&mu_);
    auto holds = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return pred(events_);
    };
    return mu_.AwaitWithTimeout(absl::Condition(&holds), kWait);
  }
  std::vector<v1::TaskEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  absl::Status end() {
    absl::MutexLock lock(&mu_);
    return end_.value_or(absl::UnknownError("not ended"));
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::TaskEvent> events_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> end_ ABSL_GUARDED_BY(mu_);
};

// A worker on the WorkerLink seam: answers each assignment of tool "echo"
// with its input as text, holds assignments of "hold" until released, and
// records cancels.
class TestWorker final : public WorkerLink,
                         public std::enable_shared_from_this<TestWorker> {
 public:
  explicit TestWorker(Engine& engine) : engine_(engine) {}

  void Connect(std::string id, std::vector<std::string> tools) {
    session_ = engine_.NewWorkerSession();
    v1::Hello hello;
    hello.set_worker_id(std::move(id));
    hello.set_protocol_version(1);
    hello.set_slots(4);
    for (const std::string& name : tools) {
      v1::ToolDefinition* tool = hello.add_tools();
      tool->set_name(name);
      tool->set_description("test tool " + name);
      tool->set_input_schema_json(R"({"type":"object"})");
    }
    engine_.WorkerHello(session_, shared_from_this(), std::move(hello));
    absl::MutexLock lock(&mu_);
    auto welcomed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return welcomed_ || closed_.has_value();
    };
    mu_.AwaitWithTimeout(absl::Condition(&welcomed), kWait);
  }

  void Send(v1::OrchestratorMessage message) override {
    absl::MutexLock lock(&mu_);
    if (message.has_welcome()) welcomed_ = true;
    if (message.has_cancel()) cancels_.push_back(message.cancel());
    if (message.has_assignment()) {
      const v1::Assignment& a = message.assignment();
      assignments_.push_back(a);
      if (a.name() == "hold") return;
      v1::WorkerMessage reply;
      v1::ToolResult* result = reply.mutable_tool_result();
      result->set_task_id(a.task_id());
      result->set_tool_use_id(a.tool_use_id());
      result->set_attempt(a.attempt());
      result->set_content_json(common::DumpJson(Json("echo " + a.input_json())));
      engine_.WorkerMessage(session_, std::move(reply));
    }
  }
  void Close(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    closed_ = status;
  }

  bool WaitAssignments(std::size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return assignments_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }
  bool WaitCancels(std::size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return cancels_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kWait);
  }
  std::vector<v1::Assignment> assignments() {
    absl::MutexLock lock(&mu_);
    return assignments_;
  }
  std::vector<v1::Cancel> cancels() {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }
  WorkerSessionId session() const { return session_; }

 private:
  Engine& engine_;
  WorkerSessionId session_ = 0;
  absl::Mutex mu_;
  bool welcomed_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> closed_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Assignment> assignments_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::Cancel> cancels_ ABSL_GUARDED_BY(mu_);
};

class EngineTest : public ::testing::Test {
 protected:
  void Boot(const std::string& scenario_json,
            EngineOptions options = EngineOptions()) {
    absl::StatusOr<Json> doc = common::ParseJson(scenario_json);
    ASSERT_THAT(doc.status(), IsOk());
    absl::StatusOr<fakeapi::Scenario> scenario =
        fakeapi::ParseScenario(*doc, "");
    ASSERT_THAT(scenario.status(), IsOk());
    fakeapi::FakeApiOptions fake_options;
    fake_options.scenario = *std::move(scenario);
    fake_options.seed = 3;
    fake_options.threads = 4;
    fake_ = std::make_unique<fakeapi::FakeApiServer>(std::move(fake_options));
    ASSERT_THAT(fake_->Start(), IsOk());

    model::CurlModelTransportOptions transport_options;
    transport_options.base_url = fake_->base_url();
    transport_options.api_key = "test-key";
    transport_options.idle_timeout = absl::Seconds(10);
    auto transport = model::CurlModelTransport::Create(transport_options);
    ASSERT_THAT(transport.status(), IsOk());
    transport_ = *std::move(transport);

    options.retry.backoff.initial_delay = absl::Milliseconds(5);
    options.retry.backoff.max_delay = absl::Milliseconds(20);
    engine_ =
        std::make_unique<Engine>(options, clock_, *transport_, random_, store_);
  }

  void TearDown() override {
    engine_.reset();
    transport_.reset();
    if (fake_ != nullptr) fake_->Stop();
  }

  std::string Submit(v1::TaskSpec spec) {
    v1::SubmitTaskRequest request;
    *request.mutable_spec() = std::move(spec);
    auto response = Call<v1::SubmitTaskResponse>(
        [&](Reply<v1::SubmitTaskResponse> reply) {
          engine_->SubmitTask(request, std::move(reply));
        });
    EXPECT_THAT(response.status(), IsOk());
    return response.ok() ? response->task_id() : "";
  }

  static v1::TaskSpec Spec(std::string prompt,
                           std::vector<std::string> tools = {}) {
    v1::TaskSpec spec;
    spec.set_model("claude-sonnet-4-5");
    spec.set_max_tokens(1024);
    spec.set_prompt(std::move(prompt));
    for (std::string& t : tools) spec.add_client_tools(std::move(t));
    return spec;
  }

  std::shared_ptr<Collector> Watch(const std::string& task_id,
                                   std::uint64_t after = 0) {
    auto collector = std::make_shared<Collector>();
    v1::WatchTaskRequest request;
    request.set_task_id(task_id);
    request.set_after_seq(after);
    engine_->WatchTask(request, collector);
    return collector;
  }

  v1::Task Get(const std::string& task_id) {
    v1::GetTaskRequest request;
    request.set_task_id(task_id);
    auto response = Call<v1::GetTaskResponse>(
        [&](Reply<v1::GetTaskResponse> reply) {
          engine_->GetTask(request, std::move(reply));
        });
    EXPECT_THAT(response.status(), IsOk());
    return response.ok() ? response->task() : v1::Task();
  }

  std::shared_ptr<TestWorker> AddWorker(std::string id,
                                        std::vector<std::string> tools) {
    auto worker = std::make_shared<TestWorker>(*engine_);
    worker->Connect(std::move(id), std::move(tools));
    return worker;
  }

  int Rejected() {
    Json stats = fake_->Stats();
    return stats.value("rejected_400", 0) + stats.value("rejected_401", 0);
  }

  RealClock clock_;
  common::SeededRandomSource random_{11};
  MemoryStore store_;
  std::unique_ptr<fakeapi::FakeApiServer> fake_;
  std::unique_ptr<model::CurlModelTransport> transport_;
  std::unique_ptr<Engine> engine_;
};

// The tool events of `id`, as (state, reason) names.
std::vector<std::string> ToolStates(const std::vector<v1::TaskEvent>& events,
                                    const std::string& id) {
  std::vector<std::string> out;
  for (const v1::TaskEvent& e : events) {
    if (!e.has_tool_transition() || e.tool_transition().tool_use_id() != id) {
      continue;
    }
    std::string s = v1::ToolCallState_Name(e.tool_transition().state());
    if (e.tool_transition().reason() != v1::TOOL_ERROR_REASON_UNSPECIFIED) {
      absl::StrAppend(&s, "/",
                      v1::ToolErrorReason_Name(e.tool_transition().reason()));
    }
    out.push_back(s);
  }
  return out;
}

const v1::TaskTerminal* Terminal(const std::vector<v1::TaskEvent>& events) {
  if (events.empty() || !events.back().has_terminal()) return nullptr;
  return &events.back().terminal();
}

constexpr char kToolRoundTrip[] = R"({"responses": [
  {"match": {"turn": 1}, "blocks": [
     {"type": "text", "text": "Checking."},
     {"type": "tool_use", "id": "$a", "name": "echo", "input": {"x": 1}},
     {"type": "tool_use", "id": "$b", "name": "echo", "input": {"x": 2}}]},
  {"match": {"last_user_has_tool_result_for": "$b"}, "blocks": [
     {"type": "text", "text": "Both done."}]}
]})";

TEST_F(EngineTest, ClientToolsRoundTripCompletesWithOrderedResults) {
  Boot(kToolRoundTrip);
  auto worker = AddWorker("w1", {"echo"});
  std::string id = Submit(Spec("run echo twice", {"echo"}));
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  EXPECT_THAT(events->end(), IsOk());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_COMPLETED);
  EXPECT_EQ(terminal->stop_reason(), "end_turn");

  absl::StatusOr<Json> conversation =
      common::ParseJson(terminal->conversation_json());
  ASSERT_THAT(conversation.status(), IsOk());
  ASSERT_EQ(conversation->size(), 4u);
  const Json& assistant = (*conversation)[1];
  const Json& results = (*conversation)[2];
  ASSERT_EQ(results["content"].size(), 2u);
  EXPECT_EQ(results["content"][0]["tool_use_id"],
            assistant["content"][1]["id"]);
  EXPECT_EQ(results["content"][1]["tool_use_id"],
            assistant["content"][2]["id"]);
  EXPECT_THAT(results["content"][0]["content"].get<std::string>(),
              HasSubstr("\"x\":1"));
  std::string first_id = assistant["content"][1]["id"].get<std::string>();
  EXPECT_THAT(ToolStates(all, first_id),
              ElementsAre("TOOL_CALL_STATE_PENDING", "TOOL_CALL_STATE_PENDING",
                          "TOOL_CALL_STATE_RUNNING", "TOOL_CALL_STATE_DONE"));
  // Sequence numbers are 1..n without gaps.
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].seq(), i + 1);
  }
  EXPECT_EQ(Rejected(), 0);

  v1::Task task = Get(id);
  EXPECT_EQ(task.state(), v1::TASK_STATE_COMPLETED);
  EXPECT_EQ(task.turns(), 2u);
  EXPECT_EQ(task.last_seq(), all.size());
}

TEST_F(EngineTest, WatchResumesAfterSeqWithoutDuplicates) {
  Boot(kToolRoundTrip);
  auto worker = AddWorker("w1", {"echo"});
  std::string id = Submit(Spec("run echo twice", {"echo"}));
  auto first = Watch(id);
  ASSERT_TRUE(first->WaitEnd());
  std::vector<v1::TaskEvent> all = first->events();
  ASSERT_GT(all.size(), 5u);
  auto resumed = Watch(id, 5);
  ASSERT_TRUE(resumed->WaitEnd());
  std::vector<v1::TaskEvent> rest = resumed->events();
  ASSERT_EQ(rest.size(), all.size() - 5);
  EXPECT_EQ(rest.front().seq(), 6u);

  auto beyond = Watch(id, all.size() + 1);
  ASSERT_TRUE(beyond->WaitEnd());
  EXPECT_THAT(beyond->end(), StatusIs(absl::StatusCode::kInvalidArgument));
  auto missing = Watch("task_nope");
  ASSERT_TRUE(missing->WaitEnd());
  EXPECT_THAT(missing->end(), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(EngineTest, MidStreamErrorRetriesAndAbortsEarlyDispatchedTool) {
  Boot(R"({"responses": [
    {"match": {"turn": 1}, "fault": {"type": "sse_error", "after_events": 9},
     "blocks": [
       {"type": "tool_use", "id": "$early", "name": "hold", "input": {"k": 1}},
       {"type": "text", "text": "and some more text after the call"}]},
    {"match": {"turn": 1}, "blocks": [
       {"type": "tool_use", "id": "$late", "name": "echo", "input": {"k": 2}}]},
    {"match": {"last_user_has_tool_result_for": "$late"}, "blocks": [
       {"type": "text", "text": "done"}]}
  ]})");
  auto worker = AddWorker("w1", {"echo", "hold"});
  std::string id = Submit(Spec("go", {"echo", "hold"}));
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_COMPLETED)
      << terminal->error().message();

  int retrying = 0;
  std::string early_id;
  for (const v1::TaskEvent& e : all) {
    if (e.has_turn_retrying()) {
      ++retrying;
      EXPECT_EQ(e.turn_retrying().reason(), "overloaded_error");
    }
    if (e.has_tool_transition() && e.tool_transition().name() == "hold") {
      early_id = e.tool_transition().tool_use_id();
    }
  }
  EXPECT_EQ(retrying, 1);
  ASSERT_FALSE(early_id.empty());
  std::vector<std::string> states = ToolStates(all, early_id);
  ASSERT_FALSE(states.empty());
  EXPECT_EQ(states.back(), "TOOL_CALL_STATE_ERROR/TOOL_ERROR_REASON_STREAM_"
                           "ABORTED");
  // The early-dispatched call was cancelled on its worker.
  ASSERT_TRUE(worker->WaitCancels(1));
  EXPECT_EQ(worker->cancels()[0].tool_use_id(), early_id);
  EXPECT_EQ(worker->cancels()[0].reason(), v1::CANCEL_REASON_STREAM_ABORTED);

  // Two separate steps, no trace of the failed attempt.
  absl::StatusOr<Json> conversation =
      common::ParseJson(terminal->conversation_json());
  ASSERT_THAT(conversation.status(), IsOk());
  ASSERT_EQ(conversation->size(), 4u);
  EXPECT_EQ((*conversation)[1]["content"].size(), 1u);
  EXPECT_EQ(common::DumpJson(*conversation).find(early_id), std::string::npos);
  EXPECT_EQ(Rejected(), 0);
}

TEST_F(EngineTest, CancelStopsRunningToolAndEndsCancelled) {
  Boot(R"({"responses": [
    {"blocks": [{"type": "tool_use", "name": "hold", "input": {}}]}
  ]})");
  auto worker = AddWorker("w1", {"hold"});
  std::string id = Submit(Spec("hold on", {"hold"}));
  auto events = Watch(id);
  ASSERT_TRUE(worker->WaitAssignments(1));
  v1::CancelTaskRequest cancel;
  cancel.set_task_id(id);
  cancel.set_reason("user pressed stop");
  auto cancelled = Call<v1::CancelTaskResponse>(
      [&](Reply<v1::CancelTaskResponse> reply) {
        engine_->CancelTask(cancel, std::move(reply));
      });
  ASSERT_THAT(cancelled.status(), IsOk());
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(terminal->error().message(), "user pressed stop");
  ASSERT_TRUE(worker->WaitCancels(1));
  EXPECT_EQ(worker->cancels()[0].reason(), v1::CANCEL_REASON_TASK_CANCELLED);

  // Cancelling again is harmless; a completed task cannot be cancelled.
  auto again = Call<v1::CancelTaskResponse>(
      [&](Reply<v1::CancelTaskResponse> reply) {
        engine_->CancelTask(cancel, std::move(reply));
      });
  EXPECT_THAT(again.status(), IsOk());
}

TEST_F(EngineTest, ToolNobodyServesEndsNoWorkerAndTaskCompletes) {
  EngineOptions options;
  options.dispatch.schedule_to_start_timeout = absl::Milliseconds(200);
  Boot(R"({"responses": [
    {"match": {"turn": 1}, "blocks": [
       {"type": "tool_use", "id": "$x", "name": "missing_tool", "input": {}}]},
    {"match": {"last_user_has_tool_result_for": "$x"}, "blocks": [
       {"type": "text", "text": "the tool was unavailable"}]}
  ]})",
       options);
  std::string id = Submit(Spec("call it", {"missing_tool"}));
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_COMPLETED);
  absl::StatusOr<Json> conversation =
      common::ParseJson(terminal->conversation_json());
  ASSERT_THAT(conversation.status(), IsOk());
  const Json& result = (*conversation)[2]["content"][0];
  EXPECT_EQ(result.value("is_error", false), true);
  bool no_worker = false;
  for (const v1::TaskEvent& e : all) {
    if (e.has_tool_transition() &&
        e.tool_transition().reason() == v1::TOOL_ERROR_REASON_NO_WORKER) {
      no_worker = true;
    }
  }
  EXPECT_TRUE(no_worker);
  EXPECT_EQ(Rejected(), 0);
}

TEST_F(EngineTest, DeferredServerCallIsReconciledFromNextStep) {
  Boot(R"({"responses": [
    {"match": {"turn": 1}, "fault": {"type": "deferred_server_call",
                                     "server_tool": "web_search"},
     "blocks": [{"type": "tool_use", "id": "$c", "name": "echo",
                 "input": {"q": "x"}}]},
    {"match": {"last_user_has_tool_result_for": "$c"}, "blocks": [
       {"type": "text", "text": "found it"}]}
  ]})");
  auto worker = AddWorker("w1", {"echo"});
  v1::TaskSpec spec = Spec("search and echo", {"echo"});
  spec.add_server_tools_json(
      R"({"type":"web_search_20250305","name":"web_search"})");
  std::string id = Submit(spec);
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_COMPLETED)
      << terminal->error().message();
  std::string server_id;
  for (const v1::TaskEvent& e : all) {
    if (e.has_tool_transition() &&
        e.tool_transition().kind() == v1::TOOL_KIND_SERVER) {
      server_id = e.tool_transition().tool_use_id();
    }
  }
  ASSERT_FALSE(server_id.empty());
  std::vector<std::string> states = ToolStates(all, server_id);
  EXPECT_EQ(states.back(), "TOOL_CALL_STATE_DONE");
  // Every server call carried its full input in an event.
  bool input_seen = false;
  for (const v1::TaskEvent& e : all) {
    if (e.has_tool_transition() &&
        e.tool_transition().tool_use_id() == server_id &&
        !e.tool_transition().input_json().empty()) {
      input_seen = e.tool_transition().input_json() != "{}";
    }
  }
  EXPECT_TRUE(input_seen);
  // The exported conversation is in the normal form: valid with late
  // results moved home.
  absl::StatusOr<Json> conversation =
      common::ParseJson(terminal->conversation_json());
  ASSERT_THAT(conversation.status(), IsOk());
  Json body = {{"model", "m"}, {"max_tokens", 10}, {"messages", *conversation},
               {"tools", Json::array({Json{{"type", "web_search_20250305"},
                                          {"name", "web_search"}},
                                     Json{{"name", "echo"},
                                          {"input_schema",
                                           {{"type", "object"}}}}})}};
  EXPECT_TRUE(common::ValidateRequest(body).empty());
  EXPECT_EQ(Rejected(), 0);
}

TEST_F(EngineTest, PauseTurnContinuesWithTheContentSentBackUnchanged) {
  Boot(R"({"responses": [
    {"blocks": [{"type": "text", "text": "I'll search for that."}],
     "fault": "pause_turn"},
    {"blocks": [{"type": "text", "text": "Here is the summary."}]}
  ]})");
  v1::TaskSpec spec = Spec("search the news");
  spec.add_server_tools_json(
      R"({"type":"web_search_20250305","name":"web_search"})");
  std::string id = Submit(spec);
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_COMPLETED)
      << terminal->error().message();
  std::vector<std::string> stop_reasons;
  for (const v1::TaskEvent& e : all) {
    if (e.has_turn_completed()) {
      stop_reasons.push_back(e.turn_completed().stop_reason());
    }
  }
  EXPECT_THAT(stop_reasons, ElementsAre("pause_turn", "end_turn"));
  // The paused server call got its result from the continuation.
  std::string server_id;
  for (const v1::TaskEvent& e : all) {
    if (e.has_tool_transition() &&
        e.tool_transition().kind() == v1::TOOL_KIND_SERVER) {
      server_id = e.tool_transition().tool_use_id();
    }
  }
  ASSERT_FALSE(server_id.empty());
  EXPECT_EQ(ToolStates(all, server_id).back(), "TOOL_CALL_STATE_DONE");
  // The continuation request carried the paused content unchanged, with no
  // user message after it.
  Json log = fake_->RequestLog();
  ASSERT_EQ(log.size(), 2u);
  const Json& messages = log[1]["body"]["messages"];
  EXPECT_EQ(messages.back()["role"], "assistant");
  EXPECT_EQ(Rejected(), 0);
}

TEST_F(EngineTest, TruncatedToolCallIsNeverRun) {
  Boot(R"({"responses": [
    {"fault": "max_tokens", "blocks": [
       {"type": "text", "text": "Calling it now."},
       {"type": "tool_use", "name": "echo", "input": {"text": "a long input"}}]}
  ]})");
  auto worker = AddWorker("w1", {"echo"});
  std::string id = Submit(Spec("echo", {"echo"}));
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_COMPLETED);
  EXPECT_EQ(terminal->stop_reason(), "max_tokens");
  EXPECT_TRUE(worker->assignments().empty());
  bool invalid_input = false;
  for (const v1::TaskEvent& e : all) {
    if (e.has_tool_transition() &&
        e.tool_transition().reason() == v1::TOOL_ERROR_REASON_INVALID_INPUT) {
      invalid_input = true;
    }
  }
  EXPECT_TRUE(invalid_input);
}

TEST_F(EngineTest, DeadlineEndsTheTaskAndItsTools) {
  Boot(R"({"responses": [
    {"blocks": [{"type": "tool_use", "name": "hold", "input": {}}]}
  ]})");
  auto worker = AddWorker("w1", {"hold"});
  v1::TaskSpec spec = Spec("hold on", {"hold"});
  spec.mutable_timeout()->set_nanos(300 * 1000 * 1000);
  std::string id = Submit(spec);
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(terminal->error().type(), "deadline_exceeded");
  ASSERT_TRUE(worker->WaitCancels(1));
  EXPECT_EQ(worker->cancels()[0].reason(), v1::CANCEL_REASON_DEADLINE_EXCEEDED);
}

TEST_F(EngineTest, MaxTurnsFailsTheTask) {
  Boot(R"({"responses": [
    {"repeat": true, "blocks": [{"type": "tool_use", "name": "echo",
                                 "input": {}}]}
  ]})");
  auto worker = AddWorker("w1", {"echo"});
  v1::TaskSpec spec = Spec("loop", {"echo"});
  spec.set_max_turns(2);
  std::string id = Submit(spec);
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(terminal->error().type(), "max_turns_exceeded");
  EXPECT_EQ(Get(id).turns(), 2u);
}

TEST_F(EngineTest, NonRetryableErrorFailsWithTheApiError) {
  Boot(R"({"responses": [
    {"fault": {"type": "http", "status": 403}, "blocks": [
       {"type": "text", "text": "never"}]}
  ]})");
  std::string id = Submit(Spec("hello"));
  auto events = Watch(id);
  ASSERT_TRUE(events->WaitEnd());
  std::vector<v1::TaskEvent> all = events->events();
  const v1::TaskTerminal* terminal = Terminal(all);
  ASSERT_NE(terminal, nullptr);
  EXPECT_EQ(terminal->state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(terminal->error().type(), "permission_error");
  EXPECT_EQ(terminal->error().http_status(), 403);
}

TEST_F(EngineTest, SubmitValidatesTheSpec) {
  Boot(R"({"responses": []})");
  v1::SubmitTaskRequest request;
  auto submit = [&]() {
    return Call<v1::SubmitTaskResponse>(
        [&](Reply<v1::SubmitTaskResponse> reply) {
          engine_->SubmitTask(request, std::move(reply));
        });
  };
  EXPECT_THAT(submit().status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("spec.model")));
  *request.mutable_spec() = Spec("x");
  request.mutable_spec()->add_server_tools_json("{not json");
  EXPECT_THAT(submit().status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spec.server_tools_json[0]")));
  *request.mutable_spec() = Spec("x");
  request.mutable_spec()->clear_prompt();
  request.mutable_spec()->set_messages_json(
      R"([{"role":"assistant","content":"hi"}])");
  EXPECT_THAT(submit().status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("spec.messages_json")));
}

TEST_F(EngineTest, IdempotencyKeyReturnsTheSameTaskOrAlreadyExists) {
  Boot(R"({"fallback": "model", "responses": []})");
  v1::TaskSpec spec = Spec("hello");
  spec.set_idempotency_key("k1");
  v1::SubmitTaskRequest request;
  *request.mutable_spec() = spec;
  auto submit = [&]() {
    return Call<v1::SubmitTaskResponse>(
        [&](Reply<v1::SubmitTaskResponse> reply) {
          engine_->SubmitTask(request, std::move(reply));
        });
  };
  auto first = submit();
  ASSERT_THAT(first.status(), IsOk());
  EXPECT_TRUE(first->created());
  auto second = submit();
  ASSERT_THAT(second.status(), IsOk());
  EXPECT_FALSE(second->created());
  EXPECT_EQ(second->task_id(), first->task_id());
  request.mutable_spec()->set_prompt("something else");
  EXPECT_THAT(submit().status(), StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_F(EngineTest, ListTasksPagesNewestFirstAndFilters) {
  Boot(R"({"fallback": "model", "responses": []})");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    v1::TaskSpec spec = Spec(absl::StrCat("hello ", i));
    (*spec.mutable_labels())["batch"] = i % 2 == 0 ? "even" : "odd";
    ids.push_back(Submit(spec));
  }
  v1::ListTasksRequest request;
  request.set_page_size(2);
  auto page = Call<v1::ListTasksResponse>(
      [&](Reply<v1::ListTasksResponse> reply) {
        engine_->ListTasks(request, std::move(reply));
      });
  ASSERT_THAT(page.status(), IsOk());
  ASSERT_EQ(page->tasks_size(), 2);
  EXPECT_EQ(page->tasks(0).task_id(), ids[4]);
  EXPECT_EQ(page->tasks(1).task_id(), ids[3]);
  EXPECT_TRUE(page->tasks(0).conversation_json().empty());
  request.set_page_token(page->next_page_token());
  auto next = Call<v1::ListTasksResponse>(
      [&](Reply<v1::ListTasksResponse> reply) {
        engine_->ListTasks(request, std::move(reply));
      });
  ASSERT_THAT(next.status(), IsOk());
  ASSERT_EQ(next->tasks_size(), 2);
  EXPECT_EQ(next->tasks(0).task_id(), ids[2]);

  v1::ListTasksRequest filtered;
  (*filtered.mutable_label_selector())["batch"] = "odd";
  auto odd = Call<v1::ListTasksResponse>(
      [&](Reply<v1::ListTasksResponse> reply) {
        engine_->ListTasks(filtered, std::move(reply));
      });
  ASSERT_THAT(odd.status(), IsOk());
  EXPECT_EQ(odd->tasks_size(), 2);

  v1::ListTasksRequest bad;
  bad.set_page_token("task_unknown");
  auto rejected = Call<v1::ListTasksResponse>(
      [&](Reply<v1::ListTasksResponse> reply) {
        engine_->ListTasks(bad, std::move(reply));
      });
  EXPECT_THAT(rejected.status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(EngineTest, ShutdownAnswersUnavailableAndEndsWatchers) {
  Boot(R"({"responses": [
    {"blocks": [{"type": "tool_use", "name": "hold", "input": {}}]}
  ]})");
  auto worker = AddWorker("w1", {"hold"});
  std::string id = Submit(Spec("hold on", {"hold"}));
  auto events = Watch(id);
  ASSERT_TRUE(worker->WaitAssignments(1));
  engine_->Shutdown();
  ASSERT_TRUE(events->WaitEnd());
  EXPECT_THAT(events->end(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(engine_->Ready());
  v1::GetTaskRequest get;
  get.set_task_id(id);
  auto response = Call<v1::GetTaskResponse>(
      [&](Reply<v1::GetTaskResponse> reply) {
        engine_->GetTask(get, std::move(reply));
      });
  EXPECT_THAT(response.status(), StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace toolmesh::orchestrator
