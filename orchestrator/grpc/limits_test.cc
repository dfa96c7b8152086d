// Security and limits over real gRPC (issue #8): the real Engine behind
// TaskServiceImpl and WorkerServiceImpl on 127.0.0.1:0, the real libcurl
// model transport against the in-process fake Messages API, workers that
// connect over WorkerService.Connect, a MemoryStore that outlives engine
// restarts. Covers the auth roles with their exact codes and messages,
// the per-client task limit (across a restart), the per-tool queue depth,
// the default task deadline and max-turns limit, and bad requests answered
// with a clear status while a good task carries on.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "common/random.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/real_clock.h"
#include "orchestrator/grpc/auth.h"
#include "orchestrator/grpc/task_service.h"
#include "orchestrator/grpc/transport_security.h"
#include "orchestrator/grpc/worker_service.h"
#include "orchestrator/model/curl_model_transport.h"
#include "orchestrator/store/memory_store.h"
#include "tests/testing/fakeapi/fake_api_server.h"
#include "tests/testing/status_matchers.h"
#include "toolmesh/v1/task_service.grpc.pb.h"
#include "toolmesh/v1/worker_service.grpc.pb.h"

namespace toolmesh::orchestrator {
namespace {

using common::Json;
using ::testing::HasSubstr;
using testing::IsOk;

constexpr char kAlice[] = "tok-alice-0123456789";
constexpr char kBob[] = "tok-bob-0123456789";
constexpr char kWorker[] = "tok-worker-0123456789";
constexpr int kMaxMessageBytes = 64 * 1024;

// One scripted reply per kind of prompt, reusable by every task; a request
// carrying tool results (turn 2) always ends the task.
constexpr char kScenario[] = R"({"responses": [
  {"match": {"turn": 2}, "repeat": true,
   "blocks": [{"type": "text", "text": "all tools answered"}]},
  {"match": {"last_user_text_contains": "plain"}, "repeat": true,
   "blocks": [{"type": "text", "text": "done"}]},
  {"match": {"last_user_text_contains": "echo"}, "repeat": true,
   "blocks": [{"type": "tool_use", "name": "echo", "input": {"x": 1}}]},
  {"match": {"last_user_text_contains": "park"}, "repeat": true,
   "blocks": [{"type": "tool_use", "name": "park", "input": {}}]},
  {"match": {"last_user_text_contains": "ghost"}, "repeat": true,
   "blocks": [{"type": "tool_use", "name": "ghost", "input": {}}]},
  {"match": {"last_user_text_contains": "big input"}, "repeat": true,
   "blocks": [{"type": "tool_use", "name": "slow", "input": {"n": 1}},
              {"type": "tool_use", "name": "slow",
               "input": {"text": "a text of more than sixteen bytes"}}]},
  {"match": {"last_user_text_contains": "three slow"}, "repeat": true,
   "blocks": [{"type": "tool_use", "name": "slow", "input": {"n": 1}},
              {"type": "tool_use", "name": "slow", "input": {"n": 2}},
              {"type": "tool_use", "name": "slow", "input": {"n": 3}}]}
]})";

void AddToken(grpc::ClientContext& context, const std::string& token) {
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  if (!token.empty()) {
    context.AddMetadata("authorization", "Bearer " + token);
  }
}

v1::TaskSpec Spec(const std::string& prompt,
                  std::vector<std::string> tools = {}) {
  v1::TaskSpec spec;
  spec.set_model("claude-sonnet-4-5");
  spec.set_max_tokens(256);
  spec.set_prompt(prompt);
  for (std::string& tool : tools) spec.add_client_tools(std::move(tool));
  return spec;
}

// A worker on WorkerService.Connect: says Hello, reads the first answer,
// then answers every assignment with its input as text on its own thread.
class GrpcWorker {
 public:
  GrpcWorker(v1::WorkerService::Stub& service, const std::string& token,
             const std::string& id,
             std::vector<std::pair<std::string, std::string>> tools) {
    AddToken(context_, token);
    context_.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(30));
    stream_ = service.Connect(&context_);
    v1::WorkerMessage hello;
    hello.mutable_hello()->set_worker_id(id);
    hello.mutable_hello()->set_protocol_version(v1::PROTOCOL_VERSION_1);
    hello.mutable_hello()->set_slots(8);
    for (const auto& [name, schema] : tools) {
      v1::ToolDefinition* tool = hello.mutable_hello()->add_tools();
      tool->set_name(name);
      tool->set_description("test tool " + name);
      tool->set_input_schema_json(schema);
    }
    stream_->Write(hello);
    if (!stream_->Read(&first_)) {
      ended_ = true;
      return;
    }
    if (first_.has_welcome()) thread_ = std::thread([this] { Serve(); });
  }

  ~GrpcWorker() {
    context_.TryCancel();
    if (thread_.joinable()) thread_.join();
    if (!finished_) stream_->Finish();
  }

  // Welcome, Rejected, or an empty message when the stream ended first.
  const v1::OrchestratorMessage& first() const { return first_; }

  // After a refusal: the stream's status.
  grpc::Status Finish() {
    v1::OrchestratorMessage ignored;
    while (!ended_ && stream_->Read(&ignored)) {
    }
    finished_ = true;
    return stream_->Finish();
  }

 private:
  void Serve() {
    v1::OrchestratorMessage message;
    while (stream_->Read(&message)) {
      if (!message.has_assignment()) continue;
      const v1::Assignment& a = message.assignment();
      v1::WorkerMessage reply;
      v1::ToolResult* result = reply.mutable_tool_result();
      result->set_task_id(a.task_id());
      result->set_tool_use_id(a.tool_use_id());
      result->set_attempt(a.attempt());
      result->set_content_json(
          common::DumpJson(Json("echo " + a.input_json())));
      if (!stream_->Write(reply)) break;
    }
    ended_ = true;
  }

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage,
                                           v1::OrchestratorMessage>>
      stream_;
  v1::OrchestratorMessage first_;
  std::atomic<bool> ended_{false};
  bool finished_ = false;
  std::thread thread_;
};

class LimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Json> doc = common::ParseJson(kScenario);
    ASSERT_THAT(doc.status(), IsOk());
    absl::StatusOr<fakeapi::Scenario> scenario =
        fakeapi::ParseScenario(*doc, "");
    ASSERT_THAT(scenario.status(), IsOk());
    fakeapi::FakeApiOptions fake_options;
    fake_options.scenario = *std::move(scenario);
    fake_options.seed = 5;
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
  }

  void TearDown() override {
    Stop();
    transport_.reset();
    if (fake_ != nullptr) fake_->Stop();
  }

  // Starts (or restarts, over the same store) the engine and the server.
  void Boot(EngineOptions options = EngineOptions()) {
    Stop();
    options.retry.backoff.initial_delay = absl::Milliseconds(5);
    options.retry.backoff.max_delay = absl::Milliseconds(20);
    engine_ = std::make_unique<Engine>(options, clock_, *transport_, random_,
                                       store_);
    Authenticator auth(
        std::vector<NamedToken>{{"alice", kAlice}, {"bob", kBob}},
        std::vector<NamedToken>{{"w1", kWorker}});
    task_service_ = std::make_unique<TaskServiceImpl>(*engine_, auth);
    worker_service_ = std::make_unique<WorkerServiceImpl>(*engine_, auth);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    SetServerMaxMessageBytes(kMaxMessageBytes, builder);
    builder.RegisterService(task_service_.get());
    builder.RegisterService(worker_service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    tasks_ = v1::TaskService::NewStub(channel);
    workers_ = v1::WorkerService::NewStub(channel);
  }

  // The daemon's order: engine first, then the server, then the engine.
  void Stop() {
    if (engine_ != nullptr) engine_->Shutdown();
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(2));
      server_->Wait();
      server_.reset();
    }
    task_service_.reset();
    worker_service_.reset();
    engine_.reset();
  }

  grpc::Status Submit(const std::string& token, const v1::TaskSpec& spec,
                      std::string* task_id = nullptr,
                      bool* created = nullptr) {
    grpc::ClientContext context;
    AddToken(context, token);
    v1::SubmitTaskRequest request;
    *request.mutable_spec() = spec;
    v1::SubmitTaskResponse response;
    grpc::Status status = tasks_->SubmitTask(&context, request, &response);
    if (task_id != nullptr) *task_id = response.task_id();
    if (created != nullptr) *created = response.created();
    return status;
  }

  // Reads the task's events until `done(event)` holds or the stream ends;
  // returns what was read.
  std::vector<v1::TaskEvent> WatchUntil(
      const std::string& task_id,
      const std::function<bool(const v1::TaskEvent&)>& done) {
    grpc::ClientContext context;
    AddToken(context, kAlice);
    v1::WatchTaskRequest request;
    request.set_task_id(task_id);
    request.set_omit_deltas(true);
    auto reader = tasks_->WatchTask(&context, request);
    std::vector<v1::TaskEvent> events;
    v1::TaskEvent event;
    while (reader->Read(&event)) {
      events.push_back(event);
      if (done(event)) {
        context.TryCancel();
        break;
      }
    }
    reader->Finish();
    return events;
  }

  // The task's terminal event (waits for it; empty on timeout).
  v1::TaskTerminal WaitTerminal(const std::string& task_id) {
    std::vector<v1::TaskEvent> events = WatchUntil(
        task_id, [](const v1::TaskEvent& e) { return e.has_terminal(); });
    if (events.empty() || !events.back().has_terminal()) return {};
    return events.back().terminal();
  }

  grpc::Status Cancel(const std::string& task_id) {
    grpc::ClientContext context;
    AddToken(context, kAlice);
    v1::CancelTaskRequest request;
    request.set_task_id(task_id);
    v1::CancelTaskResponse response;
    return tasks_->CancelTask(&context, request, &response);
  }

  std::string Metrics() {
    absl::Notification done;
    std::string text;
    engine_->Metrics([&](absl::StatusOr<std::string> result) {
      if (result.ok()) text = *std::move(result);
      done.Notify();
    });
    done.WaitForNotificationWithTimeout(absl::Seconds(10));
    return text;
  }

  RealClock clock_;
  common::SeededRandomSource random_{17};
  MemoryStore store_;
  std::unique_ptr<fakeapi::FakeApiServer> fake_;
  std::unique_ptr<model::CurlModelTransport> transport_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<TaskServiceImpl> task_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

constexpr char kObjectSchema[] = R"({"type":"object"})";

// ---------------------------------------------------------------------------
// Authentication.

TEST_F(LimitsTest, TaskServiceAuthRulesGiveExactCodesAndMessages) {
  Boot();
  struct Case {
    std::string header;  // "": no metadata
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", grpc::StatusCode::UNAUTHENTICATED,
       "missing authorization metadata (expected \"Bearer <token>\")"},
      {"Basic dXNlcjpwYXNz", grpc::StatusCode::UNAUTHENTICATED,
       "authorization metadata is not \"Bearer <token>\""},
      {"Bearer tok-nobody-0123456789", grpc::StatusCode::UNAUTHENTICATED,
       "the presented token is not valid for TaskService"},
      {std::string("Bearer ") + kWorker, grpc::StatusCode::PERMISSION_DENIED,
       "a worker token (\"w1\") may not call TaskService"},
  };
  for (const Case& c : cases) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    if (!c.header.empty()) context.AddMetadata("authorization", c.header);
    v1::SubmitTaskRequest request;
    *request.mutable_spec() = Spec("plain");
    v1::SubmitTaskResponse response;
    grpc::Status status = tasks_->SubmitTask(&context, request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.header;
    EXPECT_EQ(status.error_message(), c.message) << c.header;
    EXPECT_THAT(status.error_message(), ::testing::Not(HasSubstr("tok-")));
  }
  // Nothing reached the engine.
  grpc::ClientContext context;
  AddToken(context, kBob);
  v1::ListTasksResponse listed;
  ASSERT_TRUE(
      tasks_->ListTasks(&context, v1::ListTasksRequest(), &listed).ok());
  EXPECT_EQ(listed.tasks_size(), 0);
}

TEST_F(LimitsTest, WorkerServiceAuthRulesGiveExactCodesAndMessages) {
  Boot();
  struct Case {
    std::string token;
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", grpc::StatusCode::UNAUTHENTICATED,
       "missing authorization metadata (expected \"Bearer <token>\")"},
      {"tok-nobody-0123456789", grpc::StatusCode::UNAUTHENTICATED,
       "the presented token is not valid for WorkerService"},
      {kAlice, grpc::StatusCode::PERMISSION_DENIED,
       "a client token (\"alice\") may not call WorkerService"},
  };
  for (const Case& c : cases) {
    GrpcWorker worker(*workers_, c.token, "w-bad", {{"echo", kObjectSchema}});
    EXPECT_FALSE(worker.first().has_welcome());
    grpc::Status status = worker.Finish();
    EXPECT_EQ(status.error_code(), c.code) << c.token;
    EXPECT_EQ(status.error_message(), c.message) << c.token;
  }
  GrpcWorker good(*workers_, kWorker, "w-good", {{"echo", kObjectSchema}});
  ASSERT_TRUE(good.first().has_welcome());
  EXPECT_EQ(good.first().welcome().accepted_tools(0), "echo");
}

// ---------------------------------------------------------------------------
// Per-client task limit.

TEST_F(LimitsTest, PerClientLimitRefusesTheThirdTaskAndFreesOnEnd) {
  EngineOptions options;
  options.max_tasks_per_client = 2;
  Boot(options);
  // "park" has no worker: these tasks stay running.
  std::string first, second;
  ASSERT_TRUE(Submit(kAlice, Spec("park 1", {"park"}), &first).ok());
  ASSERT_TRUE(Submit(kAlice, Spec("park 2", {"park"}), &second).ok());
  grpc::Status third = Submit(kAlice, Spec("park 3", {"park"}));
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(third.error_message(), "client alice has 2 active tasks (limit 2)");

  // Another token is another principal with its own count.
  std::string bobs;
  EXPECT_TRUE(Submit(kBob, Spec("park b", {"park"}), &bobs).ok());

  // Once one of alice's tasks has ended, she may submit again.
  ASSERT_TRUE(Cancel(first).ok());
  EXPECT_EQ(WaitTerminal(first).state(), v1::TASK_STATE_CANCELLED);
  EXPECT_TRUE(Submit(kAlice, Spec("park 4", {"park"})).ok());
  EXPECT_EQ(Submit(kAlice, Spec("park 5", {"park"})).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(LimitsTest, PerClientCountSurvivesARestartAndSparesIdempotentRetries) {
  EngineOptions options;
  options.max_tasks_per_client = 1;
  Boot(options);
  v1::TaskSpec spec = Spec("park once", {"park"});
  spec.set_idempotency_key("alice-job-1");
  std::string id;
  ASSERT_TRUE(Submit(kAlice, spec, &id).ok());
  // The same submission again is an idempotent replay, not a new task.
  std::string again;
  bool created = true;
  ASSERT_TRUE(Submit(kAlice, spec, &again, &created).ok());
  EXPECT_EQ(again, id);
  EXPECT_FALSE(created);

  Boot(options);  // a new engine over the same store
  grpc::Status refused = Submit(kAlice, Spec("park twice", {"park"}));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.error_message(),
            "client alice has 1 active tasks (limit 1)");
  EXPECT_TRUE(Submit(kAlice, spec).ok());  // still an idempotent replay
  EXPECT_TRUE(Submit(kBob, Spec("park bob", {"park"})).ok());
}

// ---------------------------------------------------------------------------
// Per-tool queue depth.

TEST_F(LimitsTest, FullToolQueueFailsTheExtraCallAndRefusesSubmissions) {
  EngineOptions options;
  options.dispatch.max_queue_depth = 2;
  Boot(options);
  std::string id;
  ASSERT_TRUE(Submit(kAlice, Spec("three slow", {"slow"}), &id).ok());
  // No worker serves "slow" yet: two calls wait, the third is refused.
  std::vector<v1::TaskEvent> events =
      WatchUntil(id, [](const v1::TaskEvent& e) {
        return e.has_tool_transition() &&
               e.tool_transition().state() == v1::TOOL_CALL_STATE_ERROR;
      });
  ASSERT_FALSE(events.empty());
  const v1::ToolTransition& refused = events.back().tool_transition();
  ASSERT_EQ(refused.state(), v1::TOOL_CALL_STATE_ERROR);
  EXPECT_EQ(refused.reason(), v1::TOOL_ERROR_REASON_QUEUE_FULL);
  EXPECT_EQ(refused.message(), "tool queue for \"slow\" is full (2 calls waiting)");

  // While the queue is full, a task naming the tool is refused; others not.
  grpc::Status submit = Submit(kBob, Spec("three slow", {"slow"}));
  EXPECT_EQ(submit.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(submit.error_message(),
            "tool queue for \"slow\" is full (2 calls waiting)");
  std::string other;
  EXPECT_TRUE(Submit(kBob, Spec("plain", {"echo"}), &other).ok());
  EXPECT_EQ(WaitTerminal(other).state(), v1::TASK_STATE_COMPLETED);
  EXPECT_THAT(Metrics(),
              HasSubstr("toolmesh_tool_calls_rejected_total{tool=\"slow\","
                        "reason=\"queue_full\"} 1"));

  // The task goes on: a worker takes the two waiting calls and the model
  // gets the refused one as an is_error tool_result.
  GrpcWorker worker(*workers_, kWorker, "w1", {{"slow", kObjectSchema}});
  ASSERT_TRUE(worker.first().has_welcome());
  v1::TaskTerminal terminal = WaitTerminal(id);
  ASSERT_EQ(terminal.state(), v1::TASK_STATE_COMPLETED)
      << terminal.error().message();
  absl::StatusOr<Json> conversation =
      common::ParseJson(terminal.conversation_json());
  ASSERT_THAT(conversation.status(), IsOk());
  ASSERT_EQ(conversation->size(), 4u);
  const Json& results = (*conversation)[2]["content"];
  ASSERT_EQ(results.size(), 3u);
  int errors = 0;
  for (const Json& result : results) {
    if (result.value("is_error", false)) {
      ++errors;
      EXPECT_THAT(common::DumpJson(result),
                  HasSubstr("tool queue for \\\"slow\\\" is full"));
    }
  }
  EXPECT_EQ(errors, 1);
  // The queue drained: the tool takes submissions again.
  EXPECT_TRUE(Submit(kBob, Spec("plain", {"slow"})).ok());
}

TEST_F(LimitsTest, ToolInputOverTheLimitEndsInvalidInputAndTheTaskGoesOn) {
  EngineOptions options;
  options.max_tool_input_bytes = 16;
  Boot(options);
  GrpcWorker worker(*workers_, kWorker, "w1", {{"slow", kObjectSchema}});
  ASSERT_TRUE(worker.first().has_welcome());
  std::string id;
  ASSERT_TRUE(Submit(kAlice, Spec("big input", {"slow"}), &id).ok());
  v1::TaskTerminal terminal = WaitTerminal(id);
  ASSERT_EQ(terminal.state(), v1::TASK_STATE_COMPLETED)
      << terminal.error().message();
  absl::StatusOr<Json> conversation =
      common::ParseJson(terminal.conversation_json());
  ASSERT_THAT(conversation.status(), IsOk());
  ASSERT_EQ(conversation->size(), 4u);
  const Json& results = (*conversation)[2]["content"];
  ASSERT_EQ(results.size(), 2u);
  // {"n":1} (7 bytes) ran on the worker; the 44-byte input never left.
  EXPECT_FALSE(results[0].value("is_error", false)) << results.dump();
  EXPECT_TRUE(results[1].value("is_error", false)) << results.dump();
  EXPECT_THAT(common::DumpJson(results[1]),
              HasSubstr("the tool input is 44 bytes, over the "
                        "orchestrator's limit of 16 bytes"));
}

// ---------------------------------------------------------------------------
// Deadlines and turns.

TEST_F(LimitsTest, DefaultDeadlineFailsATaskThatSetNoneOnly) {
  EngineOptions options;
  options.default_task_timeout = absl::Milliseconds(300);
  Boot(options);
  v1::TaskSpec own = Spec("park long", {"park"});
  own.mutable_timeout()->set_seconds(60);
  std::string with_own, with_default;
  ASSERT_TRUE(Submit(kAlice, own, &with_own).ok());
  ASSERT_TRUE(Submit(kAlice, Spec("park short", {"park"}), &with_default).ok());
  v1::TaskTerminal terminal = WaitTerminal(with_default);
  EXPECT_EQ(terminal.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(terminal.error().type(), "deadline_exceeded");

  grpc::ClientContext context;
  AddToken(context, kAlice);
  v1::GetTaskRequest request;
  request.set_task_id(with_own);
  v1::GetTaskResponse response;
  ASSERT_TRUE(tasks_->GetTask(&context, request, &response).ok());
  EXPECT_EQ(response.task().state(), v1::TASK_STATE_RUNNING);
}

TEST_F(LimitsTest, MaxTurnsAboveTheLimitIsInvalidArgument) {
  EngineOptions options;
  options.max_turns_limit = 10;
  Boot(options);
  v1::TaskSpec spec = Spec("plain");
  spec.set_max_turns(50);
  grpc::Status status = Submit(kAlice, spec);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "spec.max_turns: 50 is more than this orchestrator allows (10)");
  spec.set_max_turns(10);
  EXPECT_TRUE(Submit(kAlice, spec).ok());
}

// ---------------------------------------------------------------------------
// Bad input while other tasks carry on.

TEST_F(LimitsTest, BadRequestsGetClearStatusesWhileAGoodTaskCompletes) {
  EngineOptions options;
  options.dispatch.schedule_to_start_timeout = absl::Milliseconds(300);
  Boot(options);
  GrpcWorker worker(*workers_, kWorker, "w1", {{"echo", kObjectSchema}});
  ASSERT_TRUE(worker.first().has_welcome());
  std::string good;
  ASSERT_TRUE(Submit(kAlice, Spec("echo this", {"echo"}), &good).ok());

  // Over --max-message-bytes: refused by gRPC itself.
  grpc::Status oversize =
      Submit(kAlice, Spec(std::string(kMaxMessageBytes + 1024, 'x')));
  EXPECT_EQ(oversize.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << oversize.error_message();

  // Malformed JSON in a spec field: the field is named.
  v1::TaskSpec malformed = Spec("plain");
  malformed.set_tool_choice_json("{\"type\": ");
  grpc::Status status = Submit(kAlice, malformed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("spec.tool_choice_json"));

  // A tool name the API would refuse.
  status = Submit(kAlice, Spec("plain", {"bad tool!"}));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "spec.client_tools[0]: tool name \"bad tool!\" does not match "
            "^[a-zA-Z0-9_-]{1,128}$");

  // A tool whose input_schema is not a valid JSON Schema: the tool is named.
  v1::TaskSpec bad_schema = Spec("plain");
  bad_schema.add_server_tools_json(
      R"({"name": "lookup", "input_schema": {"type": "object", "required": 7}})");
  status = Submit(kAlice, bad_schema);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("spec.server_tools_json[0]: tool \"lookup\": "
                        "input_schema is not a valid JSON Schema"));
  bad_schema.set_server_tools_json(
      0, R"({"name": "lookup", "input_schema": {"type": "string"}})");
  status = Submit(kAlice, bad_schema);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "spec.server_tools_json[0]: tool \"lookup\": input_schema must "
            "have \"type\": \"object\"");

  // A worker declaring a tool with an invalid schema is rejected, naming it.
  GrpcWorker bad_worker(*workers_, kWorker, "w2",
                        {{"echo2", kObjectSchema},
                         {"broken", R"({"type":"object","properties":5})"}});
  ASSERT_TRUE(bad_worker.first().has_rejected());
  EXPECT_EQ(bad_worker.first().rejected().code(),
            static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_THAT(bad_worker.first().rejected().message(),
              HasSubstr("Hello.tools[1] (tool \"broken\")"));
  grpc::Status rejected = bad_worker.Finish();
  EXPECT_EQ(rejected.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(rejected.error_message(),
              HasSubstr("Hello.tools[1] (tool \"broken\")"));

  // An unknown tool is accepted (task_service.proto) and its call ends
  // no_worker with a clear message; the task then goes on.
  std::string ghost;
  ASSERT_TRUE(Submit(kBob, Spec("ghost call", {"ghost"}), &ghost).ok());
  std::vector<v1::TaskEvent> events =
      WatchUntil(ghost, [](const v1::TaskEvent& e) { return e.has_terminal(); });
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().terminal().state(), v1::TASK_STATE_COMPLETED);
  bool no_worker = false;
  for (const v1::TaskEvent& e : events) {
    if (e.has_tool_transition() &&
        e.tool_transition().reason() == v1::TOOL_ERROR_REASON_NO_WORKER) {
      no_worker = true;
      EXPECT_THAT(e.tool_transition().message(),
                  HasSubstr("no connected worker serves tool \"ghost\""));
    }
  }
  EXPECT_TRUE(no_worker);

  // The good task, submitted first, completed normally.
  v1::TaskTerminal terminal = WaitTerminal(good);
  EXPECT_EQ(terminal.state(), v1::TASK_STATE_COMPLETED)
      << terminal.error().message();
  EXPECT_EQ(terminal.stop_reason(), "end_turn");
  EXPECT_THAT(terminal.conversation_json(), HasSubstr("echo {"));
}

// ---------------------------------------------------------------------------
// The Authenticator itself.

TEST(AuthenticatorTest, EveryTokenIsItsOwnPrincipal) {
  Authenticator auth(
      std::vector<NamedToken>{{"alice", "a-token"}, {"bob", "b-token"}},
      std::vector<NamedToken>{{"w1", "w-token"}});
  EXPECT_EQ(auth.AuthenticateClient("Bearer a-token").value_or(""), "alice");
  EXPECT_EQ(auth.AuthenticateClient("bearer b-token").value_or(""), "bob");
  EXPECT_EQ(auth.AuthenticateWorker("Bearer w-token").value_or(""), "w1");
  EXPECT_EQ(auth.AuthenticateClient("Bearer a-tokenX").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.AuthenticateClient("Bearer a-toke").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.AuthenticateClient("Bearer w-token").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.AuthenticateWorker("Bearer b-token").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.AuthenticateWorker(std::nullopt).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.AuthenticateClient("Bearer ").status().message(),
            "authorization metadata has no token");
}

TEST(AuthenticatorTest, ARoleWithoutTokensIsAnonymous) {
  Authenticator auth(std::vector<NamedToken>{},
                     std::vector<NamedToken>{{"w1", "w-token"}});
  EXPECT_FALSE(auth.client_auth_enabled());
  EXPECT_TRUE(auth.worker_auth_enabled());
  EXPECT_EQ(auth.AuthenticateClient(std::nullopt).value_or(""), "anonymous");
  EXPECT_EQ(auth.AuthenticateClient("Bearer whatever").value_or(""),
            "anonymous");
  EXPECT_EQ(auth.AuthenticateWorker(std::nullopt).status().code(),
            absl::StatusCode::kUnauthenticated);
  Authenticator single("c", "w");
  EXPECT_EQ(single.AuthenticateClient("Bearer c").value_or(""), "default");
}

}  // namespace
}  // namespace toolmesh::orchestrator
