// Tests of the CLI's task verbs against an in-process TaskService on
// 127.0.0.1:0 whose answers and event streams each test scripts, and of the
// event/task JSON views they print.
#include "orchestrator/cli/remote_commands.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <deque>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "orchestrator/cli/event_json.h"
#include "orchestrator/cli/offline_commands.h"
#include "toolmesh/v1/task_service.grpc.pb.h"

namespace toolmesh::cli {
namespace {

using common::Json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kTask[] = "task_1";

// ---------------------------------------------------------------------------
// Scripted events.

v1::TaskEvent Event(uint64_t seq) {
  v1::TaskEvent event;
  event.set_task_id(kTask);
  event.set_seq(seq);
  event.mutable_time()->set_seconds(1700000000);
  event.mutable_time()->set_nanos(250000000);
  return event;
}

v1::TaskEvent StateChanged(uint64_t seq, v1::TaskState from, v1::TaskState to) {
  v1::TaskEvent event = Event(seq);
  event.mutable_state_changed()->set_previous_state(from);
  event.mutable_state_changed()->set_state(to);
  return event;
}

v1::TaskEvent TurnStarted(uint64_t seq, uint32_t turn, uint32_t attempt) {
  v1::TaskEvent event = Event(seq);
  event.mutable_turn_started()->set_turn(turn);
  event.mutable_turn_started()->set_attempt(attempt);
  return event;
}

v1::TaskEvent Text(uint64_t seq, uint32_t attempt, uint32_t index,
                   const std::string& text) {
  v1::TaskEvent event = Event(seq);
  v1::TextDelta* delta = event.mutable_text_delta();
  delta->set_turn(1);
  delta->set_attempt(attempt);
  delta->set_block_index(index);
  delta->set_text(text);
  return event;
}

v1::TaskEvent Tool(uint64_t seq, const std::string& id, const std::string& name,
                   v1::ToolKind kind, v1::ToolCallState state) {
  v1::TaskEvent event = Event(seq);
  v1::ToolTransition* t = event.mutable_tool_transition();
  t->set_tool_use_id(id);
  t->set_name(name);
  t->set_kind(kind);
  t->set_state(state);
  t->set_turn(1);
  t->set_block_type(kind == v1::TOOL_KIND_SERVER ? "server_tool_use"
                                                 : "tool_use");
  return event;
}

v1::TaskEvent Terminal(uint64_t seq, v1::TaskState state) {
  v1::TaskEvent event = Event(seq);
  v1::TaskTerminal* t = event.mutable_terminal();
  t->set_state(state);
  if (state == v1::TASK_STATE_COMPLETED) {
    t->set_stop_reason("end_turn");
    t->set_final_message_json(
        R"({"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Sunny."}],"stop_reason":"end_turn"})");
  } else if (state == v1::TASK_STATE_FAILED) {
    t->mutable_error()->set_type("overloaded_error");
    t->mutable_error()->set_message("Overloaded");
    t->mutable_error()->set_http_status(529);
  } else {
    t->mutable_error()->set_type("cancelled");
    t->mutable_error()->set_message("user asked");
  }
  t->set_conversation_json(
      R"([{"role":"user","content":"Weather in Paris?"}])");
  t->set_usage_json(R"({"input_tokens":30,"output_tokens":12})");
  return event;
}

// A task's life touching every event kind; ends with `outcome`.
std::vector<v1::TaskEvent> FullScript(
    v1::TaskState outcome = v1::TASK_STATE_COMPLETED) {
  std::vector<v1::TaskEvent> events;
  events.push_back(
      StateChanged(1, v1::TASK_STATE_QUEUED, v1::TASK_STATE_RUNNING));
  events.push_back(TurnStarted(2, 1, 1));
  events.push_back(Text(3, 1, 0, "Lost "));
  events.push_back(Text(4, 1, 0, "words"));
  {
    v1::TaskEvent e = Event(5);
    v1::TurnRetrying* r = e.mutable_turn_retrying();
    r->set_turn(1);
    r->set_attempt(1);
    r->set_reason("overloaded_error");
    r->set_message("Overloaded");
    r->mutable_delay()->set_seconds(1);
    r->mutable_delay()->set_nanos(200000000);
    r->set_http_status(529);
    events.push_back(e);
  }
  events.push_back(TurnStarted(6, 1, 2));
  {
    v1::TaskEvent e = Event(7);
    v1::ThinkingDelta* d = e.mutable_thinking_delta();
    d->set_turn(1);
    d->set_attempt(2);
    d->set_block_index(0);
    d->set_thinking("Need the weather.");
    events.push_back(e);
  }
  events.push_back(Text(8, 2, 1, "Checking Paris."));
  {
    v1::TaskEvent e = Tool(9, "toolu_1", "get_weather", v1::TOOL_KIND_CLIENT,
                           v1::TOOL_CALL_STATE_PENDING);
    e.mutable_tool_transition()->set_input_json(R"({"location":"Paris"})");
    events.push_back(e);
  }
  {
    v1::TaskEvent e = Tool(10, "toolu_1", "get_weather", v1::TOOL_KIND_CLIENT,
                           v1::TOOL_CALL_STATE_RUNNING);
    e.mutable_tool_transition()->set_worker_id("worker-1");
    e.mutable_tool_transition()->set_attempt(1);
    events.push_back(e);
  }
  {
    v1::TaskEvent e = Tool(11, "toolu_1", "get_weather", v1::TOOL_KIND_CLIENT,
                           v1::TOOL_CALL_STATE_DONE);
    e.mutable_tool_transition()->set_worker_id("worker-1");
    e.mutable_tool_transition()->set_attempt(1);
    e.mutable_tool_transition()->set_result_json(
        R"({"type":"tool_result","tool_use_id":"toolu_1","content":"Sunny"})");
    events.push_back(e);
  }
  events.push_back(Tool(12, "srvtoolu_1", "web_search", v1::TOOL_KIND_SERVER,
                        v1::TOOL_CALL_STATE_PENDING));
  {
    v1::TaskEvent e = Tool(13, "srvtoolu_1", "web_search", v1::TOOL_KIND_SERVER,
                           v1::TOOL_CALL_STATE_ERROR);
    e.mutable_tool_transition()->set_reason(
        v1::TOOL_ERROR_REASON_SERVER_RESULT_MISSING);
    e.mutable_tool_transition()->set_message("no result block arrived");
    events.push_back(e);
  }
  {
    v1::TaskEvent e = Event(14);
    v1::TurnCompleted* c = e.mutable_turn_completed();
    c->set_turn(1);
    c->set_attempt(2);
    c->set_stop_reason("end_turn");
    c->set_usage_json(R"({"input_tokens":30,"output_tokens":12})");
    events.push_back(e);
  }
  events.push_back(StateChanged(15, v1::TASK_STATE_RUNNING, outcome));
  events.push_back(Terminal(16, outcome));
  return events;
}

// ---------------------------------------------------------------------------
// The scripted TaskService.

// How one WatchTask call behaves: send at most `send` events after
// after_seq (-1: all), then end with `end`.
struct WatchPlan {
  int send = -1;
  grpc::Status end = grpc::Status::OK;
  // Replays from seq 1 regardless of after_seq (a misbehaving server).
  bool ignore_after_seq = false;
};

class FakeTaskService final : public v1::TaskService::Service {
 public:
  grpc::Status SubmitTask(grpc::ServerContext* context,
                          const v1::SubmitTaskRequest* request,
                          v1::SubmitTaskResponse* response) override {
    absl::MutexLock l(&mu_);
    Record(context);
    submits.push_back(*request);
    if (!submit_status.ok()) return submit_status;
    response->set_task_id(kTask);
    response->set_created(true);
    response->mutable_task()->set_task_id(kTask);
    return grpc::Status::OK;
  }

  grpc::Status GetTask(grpc::ServerContext* context,
                       const v1::GetTaskRequest* request,
                       v1::GetTaskResponse* response) override {
    absl::MutexLock l(&mu_);
    Record(context);
    get_ids.push_back(request->task_id());
    if (!get_status.ok()) return get_status;
    *response->mutable_task() = task;
    return grpc::Status::OK;
  }

  grpc::Status WatchTask(grpc::ServerContext* context,
                         const v1::WatchTaskRequest* request,
                         grpc::ServerWriter<v1::TaskEvent>* writer) override {
    WatchPlan plan;
    std::vector<v1::TaskEvent> to_send;
    {
      absl::MutexLock l(&mu_);
      Record(context);
      watches.push_back(*request);
      if (!watch_status.ok()) return watch_status;
      if (!watch_plans.empty()) {
        plan = watch_plans.front();
        watch_plans.pop_front();
      } else if (default_plan.has_value()) {
        plan = *default_plan;
      }
      for (const v1::TaskEvent& event : events) {
        if (!plan.ignore_after_seq && event.seq() <= request->after_seq()) {
          continue;
        }
        if (plan.send >= 0 && static_cast<int>(to_send.size()) >= plan.send) {
          break;
        }
        to_send.push_back(event);
      }
    }
    for (const v1::TaskEvent& event : to_send) {
      if (!writer->Write(event)) break;
    }
    return plan.end;
  }

  grpc::Status CancelTask(grpc::ServerContext* context,
                          const v1::CancelTaskRequest* request,
                          v1::CancelTaskResponse* response) override {
    absl::MutexLock l(&mu_);
    Record(context);
    cancels.push_back(*request);
    if (!cancel_status.ok()) return cancel_status;
    response->mutable_task()->set_task_id(request->task_id());
    response->mutable_task()->set_state(v1::TASK_STATE_CANCELLING);
    return grpc::Status::OK;
  }

  grpc::Status ListTasks(grpc::ServerContext* context,
                         const v1::ListTasksRequest* request,
                         v1::ListTasksResponse* response) override {
    absl::MutexLock l(&mu_);
    Record(context);
    lists.push_back(*request);
    for (const auto& [token, page] : pages) {
      if (token == request->page_token()) {
        *response = page;
        return grpc::Status::OK;
      }
    }
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad page_token");
  }

  grpc::Status ListWorkers(grpc::ServerContext* context,
                           const v1::ListWorkersRequest*,
                           v1::ListWorkersResponse* response) override {
    absl::MutexLock l(&mu_);
    Record(context);
    *response = workers;
    return grpc::Status::OK;
  }

  // Written by the test before a command runs, read by handlers; recorded
  // requests are read by the test after the command returned.
  absl::Mutex mu_;
  grpc::Status submit_status;
  std::vector<v1::SubmitTaskRequest> submits;
  grpc::Status get_status;
  v1::Task task;
  std::vector<std::string> get_ids;
  std::vector<v1::TaskEvent> events;
  grpc::Status watch_status;
  std::deque<WatchPlan> watch_plans;
  std::optional<WatchPlan> default_plan;
  std::vector<v1::WatchTaskRequest> watches;
  grpc::Status cancel_status;
  std::vector<v1::CancelTaskRequest> cancels;
  std::vector<std::pair<std::string, v1::ListTasksResponse>> pages;
  std::vector<v1::ListTasksRequest> lists;
  v1::ListWorkersResponse workers;
  // The `authorization` metadata of every call ("" when absent).
  std::vector<std::string> authorizations;

 private:
  void Record(grpc::ServerContext* context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = context->client_metadata().find("authorization");
    authorizations.push_back(
        it == context->client_metadata().end()
            ? std::string()
            : std::string(it->second.data(), it->second.size()));
  }
};

struct CliRun {
  int status;
  std::string out;
  std::string err;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines =
      absl::StrSplit(text, '\n', absl::SkipEmpty());
  return lines;
}

std::vector<Json> JsonLines(const std::string& text) {
  std::vector<Json> out;
  for (const std::string& line : Lines(text)) {
    auto value = common::ParseJson(line);
    EXPECT_TRUE(value.ok()) << line;
    if (value.ok()) out.push_back(*value);
  }
  return out;
}

// A loopback port that nothing listens on.
int ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return ntohs(addr.sin_port);
}

using Command = int (*)(const std::vector<std::string>&, std::ostream&,
                        std::ostream&, const RemoteContext&);

class RemoteCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    address_ = absl::StrCat("127.0.0.1:", port_);
    context_.orchestrator = address_;
    context_.rpc_timeout = absl::Seconds(5);
    context_.resume_initial_delay = absl::Milliseconds(1);
    context_.resume_max_delay = absl::Milliseconds(5);
    context_.max_watch_resumes = 3;
  }

  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
  }

  CliRun Run(Command command, const std::vector<std::string>& args) {
    std::ostringstream out, err;
    int status = command(args, out, err, context_);
    return {status, out.str(), err.str()};
  }

  FakeTaskService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  RemoteContext context_;
};

// ---------------------------------------------------------------------------
// submit: the spec.

TEST_F(RemoteCommandsTest, SubmitPromptUsesDefaultsAndAllWorkerTools) {
  CliRun run = Run(RunSubmit, {"--prompt", "Weather in Paris?"});
  EXPECT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(run.out, "task_1\n");
  EXPECT_EQ(run.err, "");
  ASSERT_EQ(service_.submits.size(), 1u);
  const v1::TaskSpec& spec = service_.submits[0].spec();
  EXPECT_EQ(spec.prompt(), "Weather in Paris?");
  EXPECT_EQ(spec.model(), "claude-sonnet-4-5");
  EXPECT_EQ(spec.max_tokens(), 4096u);
  EXPECT_TRUE(spec.all_worker_tools());
  EXPECT_TRUE(spec.client_tools().empty());
  EXPECT_TRUE(spec.server_tools_json().empty());
  EXPECT_EQ(spec.system_case(), v1::TaskSpec::SYSTEM_NOT_SET);
  EXPECT_EQ(spec.deadline_case(), v1::TaskSpec::DEADLINE_NOT_SET);
  EXPECT_EQ(spec.max_turns(), 0u);
  EXPECT_TRUE(service_.watches.empty());
}

TEST_F(RemoteCommandsTest, SubmitPassesEveryFlagIntoTheSpec) {
  const std::string search =
      R"({"type":"web_search_20250305","name":"web_search","max_uses":3})";
  const std::string code =
      R"({"type":"code_execution_20250522","name":"code_execution"})";
  CliRun run = Run(RunSubmit, {"--prompt=hi",
                               "--tool",
                               "get_weather",
                               "--tool",
                               "echo",
                               "--server-tool",
                               search,
                               "--server-tool",
                               code,
                               "--model",
                               "claude-opus-4-1",
                               "--max-tokens",
                               "1024",
                               "--max-turns",
                               "7",
                               "--system",
                               "Be brief.",
                               "--timeout",
                               "1m30.5s",
                               "--idempotency-key",
                               "key-1",
                               "--label",
                               "team=infra",
                               "--label",
                               "run=a=b",
                               "--tool-choice",
                               R"({"type":"auto"})",
                               "--thinking",
                               R"({"type":"enabled","budget_tokens":2048})"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  ASSERT_EQ(service_.submits.size(), 1u);
  const v1::TaskSpec& spec = service_.submits[0].spec();
  EXPECT_EQ(spec.prompt(), "hi");
  EXPECT_THAT(spec.client_tools(), ElementsAre("get_weather", "echo"));
  EXPECT_FALSE(spec.all_worker_tools());
  EXPECT_THAT(spec.server_tools_json(), ElementsAre(search, code));
  EXPECT_EQ(spec.model(), "claude-opus-4-1");
  EXPECT_EQ(spec.max_tokens(), 1024u);
  EXPECT_EQ(spec.max_turns(), 7u);
  EXPECT_EQ(spec.system_text(), "Be brief.");
  EXPECT_EQ(spec.timeout().seconds(), 90);
  EXPECT_EQ(spec.timeout().nanos(), 500000000);
  EXPECT_EQ(spec.idempotency_key(), "key-1");
  EXPECT_EQ(spec.labels().size(), 2u);
  EXPECT_EQ(spec.labels().at("team"), "infra");
  EXPECT_EQ(spec.labels().at("run"), "a=b");
  EXPECT_EQ(spec.tool_choice_json(), R"({"type":"auto"})");
  EXPECT_EQ(spec.thinking_json(), R"({"type":"enabled","budget_tokens":2048})");
}

TEST_F(RemoteCommandsTest, SubmitSendsMessagesFileVerbatim) {
  const std::string messages =
      "[\n  {\"role\": \"user\", \"content\": \"Hi\", \"z\": 1, \"a\": 2}\n]\n";
  const std::string path = ::testing::TempDir() + "/messages.json";
  std::ofstream(path, std::ios::binary) << messages;
  CliRun run = Run(RunSubmit, {"--messages", path, "--tool", "echo"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  ASSERT_EQ(service_.submits.size(), 1u);
  EXPECT_EQ(service_.submits[0].spec().messages_json(), messages);
  EXPECT_FALSE(service_.submits[0].spec().has_prompt());
}

TEST_F(RemoteCommandsTest, SubmitReadsMessagesFromStdin) {
  std::istringstream in(R"([{"role":"user","content":"from stdin"}])");
  context_.in = &in;
  CliRun run = Run(RunSubmit, {"--messages", "-"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  ASSERT_EQ(service_.submits.size(), 1u);
  EXPECT_EQ(service_.submits[0].spec().messages_json(),
            R"([{"role":"user","content":"from stdin"}])");
}

TEST_F(RemoteCommandsTest, SubmitBadFlagsExitTwoWithOneLineAndNoCall) {
  const std::string missing = ::testing::TempDir() + "/no-such-file.json";
  const std::string object_file = ::testing::TempDir() + "/object.json";
  std::ofstream(object_file) << R"({"messages": []})";
  const std::vector<std::vector<std::string>> cases = {
      {"--prompt", "x", "--bogus"},
      {"--prompt"},
      {},
      {"--prompt", "x", "--messages", object_file},
      {"--prompt", "x", "--max-tokens", "0"},
      {"--prompt", "x", "--max-tokens", "many"},
      {"--prompt", "x", "--max-turns", "-1"},
      {"--prompt", "x", "--server-tool", "[1]"},
      {"--prompt", "x", "--server-tool", "{bad"},
      {"--prompt", "x", "--tool-choice", "\"auto\""},
      {"--prompt", "x", "--thinking", "{"},
      {"--prompt", "x", "--label", "novalue"},
      {"--prompt", "x", "--timeout", "soon"},
      {"--prompt", "x", "--timeout", "-5s"},
      {"--prompt", "x", "--model", "a", "--model", "b"},
      {"--prompt", "x", "--watch=yes"},
      {"--prompt", "x", "extra"},
      {"--messages", missing},
      {"--messages", object_file},
      {"--prompt", "x", "--orchestrator", "nocolon"},
  };
  for (const auto& args : cases) {
    CliRun run = Run(RunSubmit, args);
    const std::string label = absl::StrJoin(args, " ");
    EXPECT_EQ(run.status, kExitUsage) << label;
    EXPECT_EQ(run.out, "") << label;
    EXPECT_EQ(Lines(run.err).size(), 1u) << label << ": " << run.err;
    EXPECT_THAT(run.err, StartsWith("toolmesh submit: ")) << label;
  }
  EXPECT_TRUE(service_.submits.empty());
}

TEST_F(RemoteCommandsTest, SubmitRejectedAsInvalidArgumentExitsTwo) {
  service_.submit_status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                        "spec.messages_json: not an array");
  CliRun run = Run(RunSubmit, {"--prompt", "x"});
  EXPECT_EQ(run.status, kExitUsage);
  EXPECT_EQ(run.err,
            "toolmesh: submit: invalid argument: spec.messages_json: not an "
            "array\n");
}

TEST_F(RemoteCommandsTest, SubmitResourceExhaustedExitsOneWithCode) {
  service_.submit_status =
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many tasks");
  CliRun run = Run(RunSubmit, {"--prompt", "x"});
  EXPECT_EQ(run.status, kExitFailed);
  EXPECT_EQ(run.err,
            "toolmesh: submit failed: RESOURCE_EXHAUSTED: too many tasks\n");
}

// ---------------------------------------------------------------------------
// Connection, token, errors.

TEST_F(RemoteCommandsTest, UnreachableOrchestratorPrintsOneLineAndExitsOne) {
  const std::string closed = absl::StrCat("127.0.0.1:", ClosedPort());
  for (Command command :
       {RunSubmit, RunGet, RunWatch, RunCancel, RunList, RunWorkers}) {
    std::vector<std::string> args = {"--orchestrator", closed};
    if (command == RunSubmit) args.insert(args.end(), {"--prompt", "x"});
    if (command == RunGet || command == RunWatch || command == RunCancel) {
      args.push_back(kTask);
    }
    CliRun run = Run(command, args);
    EXPECT_EQ(run.status, kExitFailed) << run.err;
    EXPECT_EQ(Lines(run.err).size(), 1u) << run.err;
    EXPECT_THAT(run.err,
                StartsWith(absl::StrCat(
                    "toolmesh: cannot reach orchestrator at ", closed, ": ")));
  }
}

TEST_F(RemoteCommandsTest, TokenIsSentAsBearerMetadata) {
  context_.token = "from-env";
  ASSERT_EQ(Run(RunGet, {kTask}).status, kExitOk);
  ASSERT_EQ(Run(RunGet, {kTask, "--token", "from-flag"}).status, kExitOk);
  context_.token = "";
  ASSERT_EQ(Run(RunGet, {kTask}).status, kExitOk);
  EXPECT_THAT(service_.authorizations,
              ElementsAre("Bearer from-env", "Bearer from-flag", ""));
}

TEST_F(RemoteCommandsTest, TokenIsSentOnWatchStreams) {
  service_.events = FullScript();
  ASSERT_EQ(Run(RunSubmit, {"--prompt", "x", "--json", "--token=t0k"}).status,
            kExitOk);
  EXPECT_THAT(service_.authorizations, ElementsAre("Bearer t0k", "Bearer t0k"));
}

TEST_F(RemoteCommandsTest, GlobalFlagsAfterTheIdOverrideTheContext) {
  context_.orchestrator = absl::StrCat("127.0.0.1:", ClosedPort());
  CliRun run = Run(RunGet, {kTask, "--orchestrator", address_});
  EXPECT_EQ(run.status, kExitOk) << run.err;
  EXPECT_THAT(service_.get_ids, ElementsAre(kTask));
}

TEST_F(RemoteCommandsTest, NotFoundPrintsOneLine) {
  service_.get_status = grpc::Status(grpc::StatusCode::NOT_FOUND, "no task");
  CliRun run = Run(RunGet, {"task_x"});
  EXPECT_EQ(run.status, kExitFailed);
  EXPECT_EQ(run.err, "toolmesh: task task_x not found\n");

  service_.watch_status = grpc::Status(grpc::StatusCode::NOT_FOUND, "no task");
  run = Run(RunWatch, {"task_x"});
  EXPECT_EQ(run.status, kExitFailed);
  EXPECT_EQ(run.err, "toolmesh: task task_x not found\n");
}

TEST_F(RemoteCommandsTest, UnauthenticatedNamesTheTokenSettings) {
  service_.get_status =
      grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing token");
  CliRun run = Run(RunGet, {kTask});
  EXPECT_EQ(run.status, kExitFailed);
  EXPECT_EQ(Lines(run.err).size(), 1u);
  EXPECT_THAT(run.err, HasSubstr("TOOLMESH_CLIENT_TOKEN"));
}

// ---------------------------------------------------------------------------
// Watching.

TEST_F(RemoteCommandsTest, JsonPrintsOneObjectPerEventOfEveryKind) {
  service_.events = FullScript();
  CliRun run = Run(RunSubmit, {"--prompt", "x", "--json"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  std::vector<Json> lines = JsonLines(run.out);
  ASSERT_EQ(lines.size(), 16u) << run.out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["seq"], i + 1);
    EXPECT_EQ(lines[i]["task_id"], kTask);
    EXPECT_TRUE(lines[i]["type"].is_string());
    EXPECT_EQ(lines[i]["time"], "2023-11-14T22:13:20.25Z");
  }
  EXPECT_EQ(lines[0]["type"], "state_changed");
  EXPECT_EQ(lines[0]["state"], "running");
  EXPECT_EQ(lines[0]["previous_state"], "queued");
  EXPECT_EQ(lines[1]["type"], "turn_started");
  EXPECT_EQ(lines[1]["turn"], 1);
  EXPECT_EQ(lines[1]["attempt"], 1);
  EXPECT_EQ(lines[2]["type"], "text_delta");
  EXPECT_EQ(lines[2]["text"], "Lost ");
  EXPECT_EQ(lines[2]["block_index"], 0);
  const Json& retry = lines[4];
  EXPECT_EQ(retry["type"], "turn_retrying");
  EXPECT_EQ(retry["reason"], "overloaded_error");
  EXPECT_EQ(retry["message"], "Overloaded");
  EXPECT_EQ(retry["delay_ms"], 1200);
  EXPECT_EQ(retry["http_status"], 529);
  EXPECT_EQ(lines[6]["type"], "thinking_delta");
  EXPECT_EQ(lines[6]["thinking"], "Need the weather.");
  EXPECT_EQ(lines[6]["attempt"], 2);
  const Json& pending = lines[8];
  EXPECT_EQ(pending["type"], "tool");
  EXPECT_EQ(pending["tool_use_id"], "toolu_1");
  EXPECT_EQ(pending["name"], "get_weather");
  EXPECT_EQ(pending["kind"], "client");
  EXPECT_EQ(pending["state"], "pending");
  EXPECT_EQ(pending["input"], Json({{"location", "Paris"}}));
  EXPECT_FALSE(pending.contains("reason"));
  EXPECT_FALSE(pending.contains("input_json"));
  EXPECT_EQ(pending["block_type"], "tool_use");
  EXPECT_EQ(lines[9]["state"], "running");
  EXPECT_EQ(lines[9]["worker_id"], "worker-1");
  EXPECT_FALSE(lines[9].contains("input"));
  EXPECT_EQ(lines[10]["state"], "done");
  EXPECT_EQ(lines[10]["result"]["content"], "Sunny");
  const Json& server_error = lines[12];
  EXPECT_EQ(server_error["kind"], "server");
  EXPECT_EQ(server_error["state"], "error");
  EXPECT_EQ(server_error["reason"], "server_result_missing");
  EXPECT_EQ(server_error["message"], "no result block arrived");
  EXPECT_EQ(lines[13]["type"], "turn_completed");
  EXPECT_EQ(lines[13]["stop_reason"], "end_turn");
  EXPECT_EQ(lines[13]["usage"]["output_tokens"], 12);
  EXPECT_EQ(lines[14]["state"], "completed");
  const Json& terminal = lines[15];
  EXPECT_EQ(terminal["type"], "task_completed");
  EXPECT_EQ(terminal["stop_reason"], "end_turn");
  EXPECT_EQ(terminal["final_message"]["content"][0]["text"], "Sunny.");
  ASSERT_TRUE(terminal["conversation"].is_array());
  EXPECT_EQ(terminal["conversation"][0]["role"], "user");
  EXPECT_EQ(terminal["usage"]["input_tokens"], 30);
  EXPECT_FALSE(terminal.contains("error"));
  EXPECT_FALSE(terminal.contains("conversation_json"));
}

TEST_F(RemoteCommandsTest, JsonTerminalOfFailedTaskCarriesError) {
  service_.events = FullScript(v1::TASK_STATE_FAILED);
  CliRun run = Run(RunWatch, {kTask, "--json"});
  EXPECT_EQ(run.status, kExitFailed);
  std::vector<Json> lines = JsonLines(run.out);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["type"], "task_failed");
  EXPECT_EQ(lines.back()["error"], Json({{"type", "overloaded_error"},
                                         {"message", "Overloaded"},
                                         {"http_status", 529}}));
}

TEST_F(RemoteCommandsTest, WatchRendersTextToolsRetriesAndOutcome) {
  service_.events = FullScript();
  CliRun run = Run(RunSubmit, {"--prompt", "x", "--watch"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(
      run.out,
      "[task] task_1\n"
      "[state] running\n"
      "[turn 1]\n"
      "Lost words\n"
      "[retry] turn 1 attempt 1 failed: overloaded_error (HTTP 529: "
      "Overloaded); retrying in 1.2s; the output of that attempt above "
      "is void\n"
      "[turn 1 attempt 2]\n"
      "[thinking] Need the weather.\n"
      "Checking Paris.\n"
      "[tool] get_weather toolu_1 pending input {\"location\":\"Paris\"}\n"
      "[tool] get_weather toolu_1 running on worker-1\n"
      "[tool] get_weather toolu_1 done\n"
      "[tool] web_search srvtoolu_1 pending (server tool)\n"
      "[tool] web_search srvtoolu_1 error server_result_missing: no "
      "result block arrived\n"
      "[turn 1] end_turn (input_tokens=30 output_tokens=12)\n"
      "[completed] stop_reason end_turn; usage input_tokens=30 "
      "output_tokens=12\n");
}

TEST_F(RemoteCommandsTest, WatchExitStatusFollowsTheOutcome) {
  service_.events = FullScript(v1::TASK_STATE_COMPLETED);
  EXPECT_EQ(Run(RunWatch, {kTask}).status, kExitOk);

  service_.events = FullScript(v1::TASK_STATE_FAILED);
  CliRun failed = Run(RunWatch, {kTask});
  EXPECT_EQ(failed.status, kExitFailed);
  EXPECT_THAT(failed.out,
              HasSubstr("[failed] overloaded_error (HTTP 529): Overloaded"));

  service_.events = FullScript(v1::TASK_STATE_CANCELLED);
  CliRun cancelled = Run(RunWatch, {kTask});
  EXPECT_EQ(cancelled.status, kExitCancelled);
  EXPECT_THAT(cancelled.out, HasSubstr("[cancelled] user asked"));

  service_.events = FullScript(v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(Run(RunSubmit, {"--prompt", "x", "--json"}).status, kExitCancelled);
}

TEST_F(RemoteCommandsTest, WatchAfterSendsTheSequenceNumber) {
  service_.events = FullScript();
  CliRun run = Run(RunWatch, {kTask, "--after", "14", "--json"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  ASSERT_EQ(service_.watches.size(), 1u);
  EXPECT_EQ(service_.watches[0].after_seq(), 14u);
  EXPECT_EQ(service_.watches[0].task_id(), kTask);
  EXPECT_FALSE(service_.watches[0].omit_deltas());
  std::vector<Json> lines = JsonLines(run.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["seq"], 15);
}

TEST_F(RemoteCommandsTest, WatchBadUsageExitsTwo) {
  for (const auto& args :
       std::vector<std::vector<std::string>>{{},
                                             {kTask, "other"},
                                             {kTask, "--after", "x"},
                                             {kTask, "--after"},
                                             {kTask, "--reason", "r"}}) {
    CliRun run = Run(RunWatch, args);
    EXPECT_EQ(run.status, kExitUsage) << absl::StrJoin(args, " ");
    EXPECT_EQ(Lines(run.err).size(), 1u) << run.err;
  }
  EXPECT_TRUE(service_.watches.empty());
}

TEST_F(RemoteCommandsTest, ResumesAfterUnavailableWithoutDuplicates) {
  service_.events = FullScript();
  service_.watch_plans = {
      {3, grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"), false},
      {5, grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "slow"), false},
  };
  CliRun run = Run(RunSubmit, {"--prompt", "x", "--json"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  ASSERT_EQ(service_.watches.size(), 3u);
  EXPECT_EQ(service_.watches[0].after_seq(), 0u);
  EXPECT_EQ(service_.watches[1].after_seq(), 3u);
  EXPECT_EQ(service_.watches[2].after_seq(), 8u);
  std::vector<Json> lines = JsonLines(run.out);
  ASSERT_EQ(lines.size(), 16u);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["seq"], i + 1);
  }
  EXPECT_THAT(run.err, HasSubstr("resuming after seq 3"));
}

TEST_F(RemoteCommandsTest, ReplayedEventsAreNotPrintedTwice) {
  service_.events = FullScript();
  service_.watch_plans = {
      {4, grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"), false},
      {-1, grpc::Status::OK, /*ignore_after_seq=*/true},
  };
  CliRun run = Run(RunWatch, {kTask});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(service_.watches.size(), 2u);
  // "Lost words" was streamed once, in the first stream.
  std::size_t first = run.out.find("Lost words");
  ASSERT_NE(first, std::string::npos);
  EXPECT_EQ(run.out.find("Lost words", first + 1), std::string::npos);
  EXPECT_EQ(run.out.find("[state] running"), run.out.rfind("[state] running"));
}

TEST_F(RemoteCommandsTest, StreamEndingBeforeTheTerminalEventIsResumed) {
  service_.events = FullScript();
  service_.watch_plans = {{5, grpc::Status::OK, false}};
  CliRun run = Run(RunWatch, {kTask, "--json"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  ASSERT_EQ(service_.watches.size(), 2u);
  EXPECT_EQ(service_.watches[1].after_seq(), 5u);
  EXPECT_EQ(JsonLines(run.out).size(), 16u);
}

TEST_F(RemoteCommandsTest, ResumingGivesUpAfterBoundedAttempts) {
  service_.events = FullScript();
  service_.watch_plans = {
      {2, grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting"), false}};
  service_.default_plan =
      WatchPlan{0, grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"), false};
  CliRun run = Run(RunWatch, {kTask, "--json"});
  EXPECT_EQ(run.status, kExitFailed);
  // One stream with progress, then max_watch_resumes (3) without.
  EXPECT_EQ(service_.watches.size(), 4u);
  EXPECT_EQ(service_.watches.back().after_seq(), 2u);
  std::vector<std::string> err_lines = Lines(run.err);
  ASSERT_FALSE(err_lines.empty());
  EXPECT_THAT(err_lines.back(), HasSubstr("gave up after 3 attempts"));
  EXPECT_EQ(JsonLines(run.out).size(), 2u);
}

TEST_F(RemoteCommandsTest, WatchUnavailableBeforeAnyEventFailsFast) {
  service_.watch_status =
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "shutting down");
  CliRun run = Run(RunWatch, {kTask});
  EXPECT_EQ(run.status, kExitFailed);
  EXPECT_EQ(service_.watches.size(), 1u);
  EXPECT_EQ(run.err, absl::StrCat("toolmesh: cannot reach orchestrator at ",
                                  address_, ": shutting down\n"));
}

TEST_F(RemoteCommandsTest, SubmitWatchRetriesAnUnavailableFirstStream) {
  service_.events = FullScript();
  service_.watch_plans = {
      {0, grpc::Status(grpc::StatusCode::UNAVAILABLE, "blip"), false}};
  CliRun run = Run(RunSubmit, {"--prompt", "x", "--json"});
  EXPECT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(service_.watches.size(), 2u);
  EXPECT_EQ(JsonLines(run.out).size(), 16u);
}

// ---------------------------------------------------------------------------
// get, cancel, list, workers.

v1::Task SampleTask() {
  v1::Task task;
  task.set_task_id(kTask);
  task.mutable_spec()->set_model("claude-sonnet-4-5");
  task.mutable_spec()->set_max_tokens(4096);
  task.mutable_spec()->set_prompt("Weather in Paris?");
  task.mutable_spec()->set_all_worker_tools(true);
  task.mutable_spec()->add_server_tools_json(R"({"name":"web_search"})");
  task.mutable_spec()->mutable_timeout()->set_seconds(90);
  (*task.mutable_spec()->mutable_labels())["team"] = "infra";
  task.set_state(v1::TASK_STATE_FAILED);
  task.mutable_created_at()->set_seconds(1700000000);
  task.mutable_finished_at()->set_seconds(1700000060);
  task.set_last_seq(16);
  task.set_turns(2);
  task.set_stop_reason("tool_use");
  task.mutable_error()->set_type("max_turns_exceeded");
  task.mutable_error()->set_message("2 turns");
  task.set_usage_json(R"({"input_tokens":30,"output_tokens":12})");
  task.set_final_message_json(
      R"({"role":"assistant","content":[{"type":"text","text":"Line one."},{"type":"tool_use","id":"toolu_1","name":"x","input":{}},{"type":"text","text":"Line two."}]})");
  task.set_conversation_json(R"([{"role":"user","content":"Weather?"}])");
  return task;
}

TEST_F(RemoteCommandsTest, GetPrintsStateTurnsErrorUsageAndFinalText) {
  service_.task = SampleTask();
  CliRun run = Run(RunGet, {kTask});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(run.out,
            "task         task_1\n"
            "state        failed\n"
            "model        claude-sonnet-4-5\n"
            "turns        2\n"
            "stop_reason  tool_use\n"
            "created      2023-11-14T22:13:20Z\n"
            "finished     2023-11-14T22:14:20Z\n"
            "error        max_turns_exceeded: 2 turns\n"
            "usage        input_tokens=30 output_tokens=12\n"
            "labels       team=infra\n"
            "\n"
            "Line one.\n"
            "Line two.\n");
}

TEST_F(RemoteCommandsTest, GetJsonDecodesJsonFields) {
  service_.task = SampleTask();
  CliRun run = Run(RunGet, {kTask, "--json"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  absl::StatusOr<Json> task = common::ParseJson(run.out);
  ASSERT_TRUE(task.ok()) << run.out;
  EXPECT_EQ((*task)["task_id"], kTask);
  EXPECT_EQ((*task)["state"], "failed");
  EXPECT_EQ((*task)["turns"], 2);
  EXPECT_EQ((*task)["last_seq"], 16);
  EXPECT_EQ((*task)["created_at"], "2023-11-14T22:13:20Z");
  EXPECT_EQ((*task)["error"]["type"], "max_turns_exceeded");
  EXPECT_EQ((*task)["usage"]["input_tokens"], 30);
  EXPECT_EQ((*task)["final_message"]["content"][0]["text"], "Line one.");
  EXPECT_EQ((*task)["conversation"][0]["content"], "Weather?");
  EXPECT_EQ((*task)["spec"]["server_tools"][0]["name"], "web_search");
  EXPECT_EQ((*task)["spec"]["timeout"], "90s");
  EXPECT_EQ((*task)["spec"]["labels"]["team"], "infra");
  EXPECT_EQ((*task)["spec"]["prompt"], "Weather in Paris?");
  for (const auto& [key, value] : task->items()) {
    EXPECT_EQ(key.find("_json"), std::string::npos) << key;
  }
}

TEST_F(RemoteCommandsTest, CancelPrintsTheNewState) {
  CliRun run = Run(RunCancel, {kTask, "--reason", "no longer needed"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(run.out, "task_1 cancelling\n");
  ASSERT_EQ(service_.cancels.size(), 1u);
  EXPECT_EQ(service_.cancels[0].task_id(), kTask);
  EXPECT_EQ(service_.cancels[0].reason(), "no longer needed");
}

TEST_F(RemoteCommandsTest, CancelOfFinishedTaskPrintsOneLine) {
  service_.cancel_status = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                        "task already completed");
  CliRun run = Run(RunCancel, {kTask});
  EXPECT_EQ(run.status, kExitFailed);
  EXPECT_EQ(run.err,
            "toolmesh: cancel task_1 failed: FAILED_PRECONDITION: task "
            "already completed\n");
}

v1::Task Listed(const std::string& id, v1::TaskState state, uint32_t turns,
                const std::string& stop_reason) {
  v1::Task task;
  task.set_task_id(id);
  task.set_state(state);
  task.set_turns(turns);
  task.set_stop_reason(stop_reason);
  task.mutable_created_at()->set_seconds(1700000000);
  return task;
}

TEST_F(RemoteCommandsTest, ListFollowsPagesUpToTheLimit) {
  v1::ListTasksResponse first;
  *first.add_tasks() = Listed("task_3", v1::TASK_STATE_RUNNING, 1, "tool_use");
  *first.add_tasks() =
      Listed("task_2", v1::TASK_STATE_COMPLETED, 2, "end_turn");
  first.set_next_page_token("p2");
  v1::ListTasksResponse second;
  *second.add_tasks() = Listed("task_1", v1::TASK_STATE_QUEUED, 0, "");
  second.set_next_page_token("p3");
  service_.pages = {{"", first}, {"p2", second}};
  CliRun run = Run(RunList, {"--limit", "3", "--state", "running,completed",
                             "--state", "queued", "--label", "team=infra"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(run.out,
            "ID      STATE      TURNS  STOP_REASON  CREATED\n"
            "task_3  running    1      tool_use     2023-11-14T22:13:20Z\n"
            "task_2  completed  2      end_turn     2023-11-14T22:13:20Z\n"
            "task_1  queued     0      -            2023-11-14T22:13:20Z\n");
  ASSERT_EQ(service_.lists.size(), 2u);
  EXPECT_EQ(service_.lists[0].page_size(), 3u);
  EXPECT_EQ(service_.lists[0].page_token(), "");
  EXPECT_THAT(service_.lists[0].states(),
              ElementsAre(v1::TASK_STATE_RUNNING, v1::TASK_STATE_COMPLETED,
                          v1::TASK_STATE_QUEUED));
  EXPECT_EQ(service_.lists[0].label_selector().at("team"), "infra");
  EXPECT_EQ(service_.lists[1].page_size(), 1u);
  EXPECT_EQ(service_.lists[1].page_token(), "p2");
}

TEST_F(RemoteCommandsTest, ListJsonAndBadState) {
  v1::ListTasksResponse page;
  *page.add_tasks() = Listed("task_9", v1::TASK_STATE_FAILED, 3, "");
  service_.pages = {{"", page}};
  CliRun run = Run(RunList, {"--json"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  absl::StatusOr<Json> tasks = common::ParseJson(run.out);
  ASSERT_TRUE(tasks.ok());
  ASSERT_EQ(tasks->size(), 1u);
  EXPECT_EQ((*tasks)[0]["task_id"], "task_9");
  EXPECT_EQ((*tasks)[0]["state"], "failed");
  EXPECT_EQ(service_.lists.at(0).page_size(), 50u);

  run = Run(RunList, {"--state", "sleeping"});
  EXPECT_EQ(run.status, kExitUsage);
  EXPECT_THAT(run.err, HasSubstr("sleeping"));
  EXPECT_EQ(Lines(run.err).size(), 1u);
}

TEST_F(RemoteCommandsTest, WorkersTableAndJson) {
  v1::WorkerInfo* a = service_.workers.add_workers();
  a->set_worker_id("worker-1");
  a->set_worker_version("0.1.0");
  a->add_tools("echo");
  a->add_tools("get_weather");
  a->set_slots(4);
  a->set_running_calls(1);
  a->mutable_connected_at()->set_seconds(1700000000);
  a->mutable_last_heartbeat_at()->set_seconds(1700000030);
  v1::WorkerInfo* b = service_.workers.add_workers();
  b->set_worker_id("worker-2");
  b->set_slots(1);
  b->set_draining(true);
  CliRun run = Run(RunWorkers, {});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(run.out,
            "ID        TOOLS             SLOTS  RUNNING  DRAINING  "
            "LAST_HEARTBEAT\n"
            "worker-1  echo,get_weather  4      1        no        "
            "2023-11-14T22:13:50Z\n"
            "worker-2  -                 1      0        yes       -\n");
  run = Run(RunWorkers, {"--json"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  absl::StatusOr<Json> workers = common::ParseJson(run.out);
  ASSERT_TRUE(workers.ok());
  EXPECT_EQ((*workers)[0]["tools"], Json({"echo", "get_weather"}));
  EXPECT_EQ((*workers)[0]["last_heartbeat_at"], "2023-11-14T22:13:50Z");
  EXPECT_EQ((*workers)[1]["draining"], true);
  EXPECT_FALSE((*workers)[1].contains("last_heartbeat_at"));
}

// ---------------------------------------------------------------------------
// Pure helpers.

TEST(HoistGlobalFlagsTest, MovesLeadingGlobalsAfterTheVerb) {
  std::size_t moved = 0;
  absl::StatusOr<std::vector<std::string>> args = HoistGlobalFlags(
      {"--orchestrator", "h:1", "--token=t", "get", "task_1"}, &moved);
  ASSERT_TRUE(args.ok()) << args.status();
  EXPECT_THAT(*args, ElementsAre("get", "--orchestrator", "h:1", "--token=t",
                                 "task_1"));
  EXPECT_EQ(moved, 3u);
  args = HoistGlobalFlags({"list", "--token", "t"}, &moved);
  ASSERT_TRUE(args.ok());
  EXPECT_THAT(*args, ElementsAre("list", "--token", "t"));
  EXPECT_EQ(moved, 0u);
  EXPECT_FALSE(HoistGlobalFlags({"--token"}).ok());
  EXPECT_FALSE(HoistGlobalFlags({"--token", "t"}).ok());
}

TEST(RemoteContextTest, EnvironmentSetsAddressAndToken) {
  RemoteContext context = RemoteContext::FromLookup([](const char* name) {
    std::string n = name;
    if (n == "TOOLMESH_ORCHESTRATOR") return "orch:9000";
    if (n == "TOOLMESH_CLIENT_TOKEN") return "secret";
    return static_cast<const char*>(nullptr);
  });
  EXPECT_EQ(context.orchestrator, "orch:9000");
  EXPECT_EQ(context.token, "secret");
  RemoteContext empty = RemoteContext::FromLookup(
      [](const char*) { return static_cast<const char*>(nullptr); });
  EXPECT_EQ(empty.orchestrator, "127.0.0.1:7070");
  EXPECT_EQ(empty.token, "");
}

TEST(EventJsonTest, InvalidJsonTextIsKeptVerbatimUnderItsOwnKey) {
  v1::TaskEvent event = Event(3);
  event.mutable_turn_completed()->set_usage_json("{not json");
  Json json = EventToJson(event);
  EXPECT_FALSE(json.contains("usage"));
  EXPECT_EQ(json["usage_json"], "{not json");
}

TEST(EventJsonTest, EventWithoutVariantIsUnknownAndTimelessIsNull) {
  v1::TaskEvent event;
  event.set_seq(9);
  event.set_task_id(kTask);
  Json json = EventToJson(event);
  EXPECT_EQ(json["type"], "unknown");
  EXPECT_EQ(json["seq"], 9);
  EXPECT_TRUE(json["time"].is_null());
}

TEST(EventJsonTest, NamesOfEveryToolErrorReason) {
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_TOOL_FAILED),
            "tool_failed");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_INVALID_INPUT),
            "invalid_input");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_TIMEOUT), "timeout");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_CANCELLED), "cancelled");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_WORKER_LOST),
            "worker_lost");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_NO_WORKER), "no_worker");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_STREAM_ABORTED),
            "stream_aborted");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_SERVER_RESULT_MISSING),
            "server_result_missing");
  EXPECT_EQ(ToolErrorReasonName(v1::TOOL_ERROR_REASON_QUEUE_FULL),
            "queue_full");
  EXPECT_EQ(ToolErrorReasonName(static_cast<v1::ToolErrorReason>(99)),
            "unspecified");
}

TEST(EventJsonTest, Rfc3339ClampsOutOfRangeTimes) {
  google::protobuf::Timestamp t;
  t.set_seconds(-99999999999999);
  EXPECT_EQ(Rfc3339(t), "0001-01-01T00:00:00Z");
  t.set_seconds(0);
  t.set_nanos(1000);
  EXPECT_EQ(Rfc3339(t), "1970-01-01T00:00:00.000001Z");
}

}  // namespace
}  // namespace toolmesh::cli
