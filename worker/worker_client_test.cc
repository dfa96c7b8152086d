// WorkerClient against a scripted in-process orchestrator (a real gRPC
// server on 127.0.0.1:0), with real executors: builtin echo/sleep/fail and an
// exec tool run through /bin/sh. Time (heartbeats, sleeps, deadlines,
// backoff, drain grace) comes from a FakeClock that the tests advance.
#include "worker/worker_client.h"

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/server_context.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "worker/worker_flags.h"

namespace toolmesh::worker {
namespace {

using common::Json;
using ::testing::HasSubstr;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

constexpr absl::Duration kWait = absl::Seconds(10);

// Polls `pred` until it holds or kWait passes (for state that has no
// notification of its own: a file, a process, a counter of the client).
bool PollUntil(const std::function<bool()>& pred) {
  const absl::Time end = absl::Now() + kWait;
  while (absl::Now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// A scripted orchestrator: answers Hello with Welcome (or Rejected), records
// what the worker sends, and lets the test send messages or drop the stream.
class FakeOrchestrator final : public v1::WorkerService::Service {
 public:
  using Stream =
      grpc::ServerReaderWriter<v1::OrchestratorMessage, v1::WorkerMessage>;

  void RejectWith(grpc::StatusCode code, std::string message) {
    absl::MutexLock lock(&mu_);
    reject_code_ = code;
    reject_message_ = std::move(message);
  }

  grpc::Status Connect(grpc::ServerContext* ctx, Stream* stream) override {
    std::string auth;
    const auto& metadata = ctx->client_metadata();
    auto it = metadata.find("authorization");
    if (it != metadata.end()) auth.assign(it->second.data(), it->second.size());
    v1::WorkerMessage first;
    if (!stream->Read(&first)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "no hello");
    }
    grpc::StatusCode reject_code;
    std::string reject_message;
    {
      absl::MutexLock lock(&mu_);
      hellos_.push_back(first);
      auth_.push_back(auth);
      reject_code = reject_code_;
      reject_message = reject_message_;
    }
    if (reject_code != grpc::StatusCode::OK) {
      v1::OrchestratorMessage rejected;
      rejected.mutable_rejected()->set_code(reject_code);
      rejected.mutable_rejected()->set_message(reject_message);
      rejected.mutable_rejected()->add_supported_protocol_versions(1);
      stream->Write(rejected);
      return grpc::Status(reject_code, reject_message);
    }
    v1::OrchestratorMessage welcome;
    welcome.mutable_welcome()->set_protocol_version(1);
    welcome.mutable_welcome()->mutable_heartbeat_interval()->set_seconds(1);
    for (const auto& tool : first.hello().tools()) {
      welcome.mutable_welcome()->add_accepted_tools(tool.name());
    }
    {
      // The stream is published before the Welcome goes out, so that a
      // test that saw the client connected can Send() at once.
      absl::MutexLock write_lock(&write_mu_);
      {
        absl::MutexLock lock(&mu_);
        stream_ = stream;
        ctx_ = ctx;
      }
      stream->Write(welcome);
    }
    v1::WorkerMessage message;
    while (stream->Read(&message)) {
      absl::MutexLock lock(&mu_);
      received_.push_back(message);
    }
    {
      absl::MutexLock write_lock(&write_mu_);
      absl::MutexLock lock(&mu_);
      stream_ = nullptr;
      ctx_ = nullptr;
      ++ended_streams_;
    }
    return grpc::Status::OK;
  }

  // Writes `message` on the current stream; false when there is none.
  bool Send(const v1::OrchestratorMessage& message) {
    absl::MutexLock write_lock(&write_mu_);
    Stream* stream = nullptr;
    {
      absl::MutexLock lock(&mu_);
      stream = stream_;
    }
    return stream != nullptr && stream->Write(message);
  }

  // Breaks the current stream, as a network failure would.
  void Drop() {
    absl::MutexLock lock(&mu_);
    if (ctx_ != nullptr) ctx_->TryCancel();
  }

  // Waits until `pred(received, hellos)` holds (bounded by `timeout`).
  bool Await(
      const std::function<bool(const std::vector<v1::WorkerMessage>&,
                               const std::vector<v1::WorkerMessage>&)>& pred,
      absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return pred(received_, hellos_);
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  }

  // The first received message matching `pred`, waiting up to `timeout`.
  std::optional<v1::WorkerMessage> AwaitMessage(
      const std::function<bool(const v1::WorkerMessage&)>& pred,
      absl::Duration timeout = kWait) {
    std::optional<v1::WorkerMessage> found;
    Await(
        [&](const std::vector<v1::WorkerMessage>& received,
            const std::vector<v1::WorkerMessage>&) {
          for (const auto& m : received) {
            if (pred(m)) {
              found = m;
              return true;
            }
          }
          return false;
        },
        timeout);
    return found;
  }

  std::vector<v1::WorkerMessage> Received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  std::vector<v1::WorkerMessage> Hellos() {
    absl::MutexLock lock(&mu_);
    return hellos_;
  }
  std::vector<std::string> Auth() {
    absl::MutexLock lock(&mu_);
    return auth_;
  }
  int EndedStreams() {
    absl::MutexLock lock(&mu_);
    return ended_streams_;
  }

 private:
  // Held while writing, and while the handler retires its stream, so that
  // Send() never writes to a finished stream.
  absl::Mutex write_mu_;
  absl::Mutex mu_;
  grpc::StatusCode reject_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
  std::string reject_message_ ABSL_GUARDED_BY(mu_);
  Stream* stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ServerContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<v1::WorkerMessage> hellos_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> auth_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::WorkerMessage> received_ ABSL_GUARDED_BY(mu_);
  int ended_streams_ ABSL_GUARDED_BY(mu_) = 0;
};

bool IsResultFor(const v1::WorkerMessage& m, const std::string& id) {
  return m.has_tool_result() && m.tool_result().tool_use_id() == id;
}

bool IsReturnFor(const v1::WorkerMessage& m, const std::string& id) {
  return m.has_return_call() && m.return_call().tool_use_id() == id;
}

v1::OrchestratorMessage Assign(const std::string& id, const std::string& name,
                               const std::string& input_json,
                               uint32_t attempt = 1) {
  v1::OrchestratorMessage message;
  v1::Assignment& a = *message.mutable_assignment();
  a.set_task_id("task_1");
  a.set_tool_use_id(id);
  a.set_attempt(attempt);
  a.set_name(name);
  a.set_input_json(input_json);
  return message;
}

// The content_json of a result, parsed.
Json Content(const v1::WorkerMessage& m) {
  absl::StatusOr<Json> parsed = common::ParseJson(m.tool_result().content_json());
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : Json();
}

class WorkerClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&fake_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    address_ = absl::StrCat("127.0.0.1:", port);
    char dir_template[] = "/tmp/worker_client_test.XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    pid_file_ = dir_ + "/pid";
  }

  void TearDown() override {
    if (client_ != nullptr) {
      client_->Stop();
      if (run_thread_.joinable()) {
        EXPECT_TRUE(run_done_.WaitForNotificationWithTimeout(kWait));
        run_thread_.join();
      }
      client_.reset();
    }
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
    std::remove(pid_file_.c_str());
    rmdir(dir_.c_str());
  }

  std::string ToolsJson() const {
    std::string tools = R"([
      {"name": "echo", "description": "Echoes its input.",
       "input_schema": {"type": "object", "required": ["text"],
                        "properties": {"text": {"type": "string"}}},
       "executor": {"type": "builtin", "name": "echo"}},
      {"name": "sleep", "description": "Sleeps.",
       "input_schema": {"type": "object",
                        "properties": {"ms": {"type": "integer"}}},
       "executor": {"type": "builtin", "name": "sleep"}},
      {"name": "fail", "description": "Fails.",
       "input_schema": {"type": "object"},
       "executor": {"type": "builtin", "name": "fail"}},
      {"name": "hang", "description": "Writes its pid and hangs.",
       "input_schema": {"type": "object"},
       "executor": {"type": "exec", "argv": ["/bin/sh", "-c",
         "echo $$ > PIDFILE.tmp && mv PIDFILE.tmp PIDFILE && exec sleep 30"]}}
    ])";
    return absl::StrReplaceAll(tools, {{"PIDFILE", pid_file_}});
  }

  void StartClient(int slots = 4, std::string token = "") {
    absl::StatusOr<ToolsConfig> tools = ParseToolsConfig(ToolsJson());
    ASSERT_TRUE(tools.ok()) << tools.status();
    WorkerClientOptions options;
    options.orchestrator_address = address_;
    options.worker_id = "w1";
    options.token = std::move(token);
    options.slots = slots;
    options.max_result_bytes = max_result_bytes_;
    options.log = [this](const std::string& line) {
      absl::MutexLock lock(&mu_);
      logs_.push_back(line);
    };
    options.on_connected = [this] {
      absl::MutexLock lock(&mu_);
      ++connected_;
    };
    absl::StatusOr<std::unique_ptr<WorkerClient>> client =
        WorkerClient::Create(std::move(options), *std::move(tools), clock_,
                             random_);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    run_thread_ = std::thread([this] {
      run_status_ = client_->Run();
      run_done_.Notify();
    });
  }

  // Waits until the client has seen `n` Welcomes.
  bool AwaitConnected(int n = 1) {
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return connected_ >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), kWait);
  }

  // Waits until the client logged a line containing `text`.
  bool AwaitLog(const std::string& text) {
    absl::MutexLock lock(&mu_);
    auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      for (const std::string& line : logs_) {
        if (absl::StrContains(line, text)) return true;
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), kWait);
  }

  // Waits for Run() to return and gives its status.
  absl::Status AwaitRunEnd() {
    if (!run_done_.WaitForNotificationWithTimeout(kWait)) {
      ADD_FAILURE() << "Run() did not return";
      return absl::DeadlineExceededError("Run() did not return");
    }
    run_thread_.join();
    return run_status_;
  }

  // Advances the fake clock a step at a time until the orchestrator's
  // records satisfy `pred` (bounded in real time).
  bool AdvanceUntil(
      const std::function<bool(const std::vector<v1::WorkerMessage>&,
                               const std::vector<v1::WorkerMessage>&)>& pred,
      absl::Duration step = absl::Seconds(1)) {
    const absl::Time end = absl::Now() + kWait;
    while (absl::Now() < end) {
      clock_.Advance(step);
      if (fake_.Await(pred, absl::Milliseconds(20))) return true;
    }
    return false;
  }

  // The pid the hang tool wrote, once it is there.
  std::optional<pid_t> AwaitPid() {
    std::optional<pid_t> pid;
    PollUntil([&] {
      std::ifstream in(pid_file_);
      std::string text;
      int value = 0;
      if (in >> text && absl::SimpleAtoi(text, &value) && value > 0) {
        pid = value;
        return true;
      }
      return false;
    });
    return pid;
  }

  size_t max_result_bytes_ = kDefaultMaxResultBytes;
  FakeOrchestrator fake_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::string dir_;
  std::string pid_file_;
  common::FakeClock clock_{absl::FromUnixSeconds(1700000000)};
  common::SeededRandomSource random_{7};
  absl::Mutex mu_;
  int connected_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> logs_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<WorkerClient> client_;
  std::thread run_thread_;
  absl::Notification run_done_;
  absl::Status run_status_;
};

TEST_F(WorkerClientTest, HelloCarriesToolsSlotsVersionAndToken) {
  StartClient(/*slots=*/3, "s3cret");
  ASSERT_TRUE(AwaitConnected());
  std::vector<v1::WorkerMessage> hellos = fake_.Hellos();
  ASSERT_EQ(hellos.size(), 1u);
  ASSERT_TRUE(hellos[0].has_hello());
  const v1::Hello& hello = hellos[0].hello();
  EXPECT_EQ(hello.worker_id(), "w1");
  EXPECT_EQ(hello.protocol_version(), 1u);
  EXPECT_EQ(hello.slots(), 3u);
  EXPECT_EQ(hello.worker_version(), "toolmesh-worker/0.1");
  ASSERT_EQ(hello.tools_size(), 4);
  EXPECT_EQ(hello.tools(0).name(), "echo");
  EXPECT_EQ(hello.tools(0).description(), "Echoes its input.");
  EXPECT_EQ(Json::parse(hello.tools(0).input_schema_json()),
            Json::parse(R"({"type": "object", "required": ["text"],
                            "properties": {"text": {"type": "string"}}})"));
  EXPECT_EQ(hello.tools(3).name(), "hang");
  EXPECT_THAT(hello.tools(3).input_schema_json(),
              ::testing::Not(HasSubstr("executor")));
  EXPECT_EQ(fake_.Auth(), std::vector<std::string>{"Bearer s3cret"});
}

TEST_F(WorkerClientTest, NoTokenSendsNoAuthorization) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  EXPECT_EQ(fake_.Auth(), std::vector<std::string>{""});
}

TEST_F(WorkerClientTest, EchoReturnsTheInputAsAJsonString) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "echo", R"({"text":"hi"})", 2)));
  std::optional<v1::WorkerMessage> result = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_1"); });
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->tool_result().task_id(), "task_1");
  EXPECT_EQ(result->tool_result().attempt(), 2u);
  EXPECT_FALSE(result->tool_result().is_error());
  EXPECT_EQ(Content(*result), Json(R"({"text":"hi"})"));
}

TEST_F(WorkerClientTest, SchemaViolationIsAnErrorNamingTheField) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "echo", R"({"txt":"hi"})")));
  ASSERT_TRUE(fake_.Send(Assign("toolu_2", "echo", R"({"text":)")));
  ASSERT_TRUE(fake_.Send(Assign("toolu_3", "nope", R"({})")));
  std::optional<v1::WorkerMessage> bad_field = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_1"); });
  std::optional<v1::WorkerMessage> bad_json = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_2"); });
  std::optional<v1::WorkerMessage> unknown = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_3"); });
  ASSERT_TRUE(bad_field.has_value() && bad_json.has_value() &&
              unknown.has_value());
  EXPECT_TRUE(bad_field->tool_result().is_error());
  EXPECT_THAT(Content(*bad_field).get<std::string>(),
              HasSubstr("input.text: required property missing"));
  EXPECT_TRUE(bad_json->tool_result().is_error());
  EXPECT_THAT(Content(*bad_json).get<std::string>(),
              HasSubstr("not valid JSON"));
  EXPECT_TRUE(unknown->tool_result().is_error());
  EXPECT_THAT(Content(*unknown).get<std::string>(),
              HasSubstr("unknown tool \"nope\""));
}

TEST_F(WorkerClientTest, FailingToolGivesAnErrorResult) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "fail", R"({"message":"disk full"})")));
  std::optional<v1::WorkerMessage> result = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_1"); });
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->tool_result().is_error());
  EXPECT_EQ(Content(*result), Json("disk full"));
}

TEST_F(WorkerClientTest, ResultOverTheLimitIsTruncatedWithAMarkerAndDelivered) {
  max_result_bytes_ = 2048;
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  const std::string text(5000, 'q');
  ASSERT_TRUE(fake_.Send(
      Assign("toolu_big", "echo", absl::StrCat(R"({"text":")", text, R"("})"))));
  ASSERT_TRUE(fake_.Send(Assign("toolu_small", "echo", R"({"text":"hi"})")));
  std::optional<v1::WorkerMessage> big = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_big"); });
  std::optional<v1::WorkerMessage> small = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_small"); });
  ASSERT_TRUE(big.has_value() && small.has_value());
  // echo's result is the input's JSON text: 5011 bytes, 2963 over.
  EXPECT_FALSE(big->tool_result().is_error());
  const std::string content = Content(*big).get<std::string>();
  const std::string marker =
      "\n[... truncated: 2963 bytes over the 2048-byte limit]";
  EXPECT_EQ(content.size(), 2048u);
  EXPECT_EQ(content, absl::StrCat(R"({"text":")",
                                  std::string(2048 - 9 - marker.size(), 'q'),
                                  marker));
  // A result within the limit is untouched.
  EXPECT_EQ(Content(*small), Json(R"({"text":"hi"})"));
}

TEST_F(WorkerClientTest, ExecExecutorsCapStdoutAtTheResultLimit) {
  ExecSpec spec;
  spec.argv = {"/bin/sh", "-c", "head -c 10000 /dev/zero | tr '\\0' z"};
  std::unique_ptr<Executor> executor = MakeExecutor(spec, clock_, 4096);
  absl::Notification done;
  ToolOutcome outcome;
  ToolCall call;
  call.id = common::ToolUseId("toolu_1");
  call.input = Json::object();
  executor->Run(call, [&](ToolOutcome o) {
    outcome = std::move(o);
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  ASSERT_FALSE(outcome.is_error) << outcome.content;
  const std::string text = outcome.content.get<std::string>();
  EXPECT_EQ(text.size(), 4096u);
  EXPECT_THAT(text, ::testing::EndsWith(
                        "\n[... truncated: 5904 bytes over the 4096-byte "
                        "limit]"));
}

TEST(LimitResultSizeTest, StringsAndBlockArraysAreHeldToTheLimit) {
  ToolOutcome text;
  text.content = std::string(100, 'a');
  EXPECT_EQ(LimitResultSize(text, 100).content, text.content);
  ToolOutcome cut = LimitResultSize(text, 60);
  EXPECT_EQ(cut.content.get<std::string>(),
            std::string(11, 'a') +
                "\n[... truncated: 40 bytes over the 60-byte limit]");
  EXPECT_FALSE(cut.is_error);

  ToolOutcome blocks;
  blocks.content = Json::parse(R"([{"type":"text","text":")" +
                               std::string(200, 'b') + R"("}])");
  ToolOutcome cut_blocks = LimitResultSize(blocks, 100);
  ASSERT_TRUE(cut_blocks.content.is_string());
  EXPECT_EQ(cut_blocks.content.get<std::string>().size(), 100u);
  EXPECT_THAT(cut_blocks.content.get<std::string>(),
              ::testing::StartsWith(R"([{"type":"text","text":"bbb)"));
  EXPECT_THAT(cut_blocks.content.get<std::string>(),
              HasSubstr("bytes over the 100-byte limit]"));

  // A cut never splits a UTF-8 character: "é" is two bytes.
  ToolOutcome accents;
  accents.content = std::string();
  for (int i = 0; i < 60; ++i) accents.content.get_ref<std::string&>() += "é";
  std::string limited = LimitResultSize(accents, 70).content.get<std::string>();
  const size_t newline = limited.find('\n');
  ASSERT_NE(newline, std::string::npos);
  EXPECT_EQ(newline % 2, 0u) << limited;
  EXPECT_LE(limited.size(), 70u);
}

TEST_F(WorkerClientTest, HeartbeatsListRunningCallsAndFreeSlots) {
  StartClient(/*slots=*/2);
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "sleep", R"({"ms":600000})", 3)));
  ASSERT_TRUE(AdvanceUntil([](const auto& received, const auto&) {
    for (const auto& m : received) {
      if (m.has_heartbeat() && m.heartbeat().running_size() == 1) return true;
    }
    return false;
  }));
  std::optional<v1::WorkerMessage> beat =
      fake_.AwaitMessage([](const v1::WorkerMessage& m) {
        return m.has_heartbeat() && m.heartbeat().running_size() == 1;
      });
  ASSERT_TRUE(beat.has_value());
  EXPECT_EQ(beat->heartbeat().running(0).task_id(), "task_1");
  EXPECT_EQ(beat->heartbeat().running(0).tool_use_id(), "toolu_1");
  EXPECT_EQ(beat->heartbeat().running(0).attempt(), 3u);
  EXPECT_EQ(beat->heartbeat().free_slots(), 1u);
}

TEST_F(WorkerClientTest, ExtraAssignmentsWaitForASlotAndAreListed) {
  StartClient(/*slots=*/1);
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "sleep", R"({"ms":1500})")));
  ASSERT_TRUE(fake_.Send(Assign("toolu_2", "echo", R"({"text":"b"})")));
  ASSERT_TRUE(PollUntil([&] { return client_->ActiveCalls() == 2; }));
  // t+1s: the heartbeat lists both, no slot free; the echo has not run.
  clock_.Advance(absl::Seconds(1));
  std::optional<v1::WorkerMessage> beat = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return m.has_heartbeat(); });
  ASSERT_TRUE(beat.has_value());
  EXPECT_EQ(beat->heartbeat().running_size(), 2);
  EXPECT_EQ(beat->heartbeat().free_slots(), 0u);
  for (const auto& m : fake_.Received()) EXPECT_FALSE(m.has_tool_result());
  // t+1.5s: the sleep ends, then the queued echo runs.
  clock_.Advance(absl::Milliseconds(500));
  ASSERT_TRUE(fake_.Await([](const auto& received, const auto&) {
    int results = 0;
    for (const auto& m : received) results += m.has_tool_result() ? 1 : 0;
    return results == 2;
  }));
  std::vector<std::string> order;
  for (const auto& m : fake_.Received()) {
    if (m.has_tool_result()) order.push_back(m.tool_result().tool_use_id());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"toolu_1", "toolu_2"}));
}

TEST_F(WorkerClientTest, DeadlineStopsTheCallWithATimeoutError) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  v1::OrchestratorMessage assign = Assign("toolu_1", "sleep", R"({"ms":600000})");
  const absl::Time deadline = clock_.Now() + absl::Milliseconds(300);
  assign.mutable_assignment()->mutable_deadline()->set_seconds(
      absl::ToUnixSeconds(deadline));
  assign.mutable_assignment()->mutable_deadline()->set_nanos(300000000);
  ASSERT_TRUE(fake_.Send(assign));
  ASSERT_TRUE(PollUntil([&] { return client_->ActiveCalls() == 1; }));
  clock_.Advance(absl::Milliseconds(300));
  std::optional<v1::WorkerMessage> result = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_1"); });
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->tool_result().is_error());
  EXPECT_THAT(Content(*result).get<std::string>(), HasSubstr("deadline"));
}

TEST_F(WorkerClientTest, CancelKillsTheRunningExecProcess) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "hang", "{}")));
  std::optional<pid_t> pid = AwaitPid();
  ASSERT_TRUE(pid.has_value());
  ASSERT_EQ(kill(*pid, 0), 0) << "the tool should be running";

  v1::OrchestratorMessage cancel;
  cancel.mutable_cancel()->set_task_id("task_1");
  cancel.mutable_cancel()->set_tool_use_id("toolu_1");
  cancel.mutable_cancel()->set_attempt(1);
  cancel.mutable_cancel()->set_reason(v1::CANCEL_REASON_TASK_CANCELLED);
  ASSERT_TRUE(fake_.Send(cancel));
  EXPECT_TRUE(PollUntil([&] { return kill(*pid, 0) == -1 && errno == ESRCH; }))
      << "pid " << *pid << " survived the cancel";

  // The cancelled call sends nothing; the stream still serves calls.
  ASSERT_TRUE(fake_.Send(Assign("toolu_2", "echo", R"({"text":"after"})")));
  ASSERT_TRUE(fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_2"); }));
  for (const auto& m : fake_.Received()) EXPECT_FALSE(IsResultFor(m, "toolu_1"));
  EXPECT_EQ(client_->ActiveCalls(), 0);
}

TEST_F(WorkerClientTest, ReconnectsWithHelloAfterTheStreamDrops) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  fake_.Drop();
  ASSERT_TRUE(AdvanceUntil([](const auto&, const auto& hellos) {
    return hellos.size() == 2;
  }));
  ASSERT_TRUE(AwaitConnected(2));
  std::vector<v1::WorkerMessage> hellos = fake_.Hellos();
  EXPECT_EQ(hellos[1].hello().worker_id(), "w1");
  EXPECT_EQ(hellos[1].hello().tools_size(), 4);

  // The new stream serves calls.
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "echo", R"({"text":"again"})", 2)));
  std::optional<v1::WorkerMessage> result = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_1"); });
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->tool_result().attempt(), 2u);
}

TEST_F(WorkerClientTest, ARunningCallOutlivesABrokenStreamAndReportsOnTheNext) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "sleep", R"({"ms":600000})")));
  ASSERT_TRUE(PollUntil([&] { return client_->ActiveCalls() == 1; }));
  fake_.Drop();
  ASSERT_TRUE(AwaitLog("keeping 1 running call(s) of the ended stream"));
  ASSERT_TRUE(AdvanceUntil([](const auto&, const auto& hellos) {
    return hellos.size() == 2;
  }));
  ASSERT_TRUE(AwaitConnected(2));
  // Still running, and not listed in the new stream's heartbeats (the
  // orchestrator re-queued it as attempt 2).
  EXPECT_EQ(client_->ActiveCalls(), 1);
  for (const auto& m : fake_.Received()) {
    EXPECT_FALSE(IsResultFor(m, "toolu_1"));
    if (m.has_heartbeat() && fake_.EndedStreams() == 1) {
      for (const auto& running : m.heartbeat().running()) {
        EXPECT_NE(running.tool_use_id(), "toolu_1");
      }
    }
  }
  // It finishes: its result goes out on the new stream, as attempt 1.
  clock_.Advance(absl::Seconds(600));
  std::optional<v1::WorkerMessage> result = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_1"); });
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->tool_result().attempt(), 1u);
  EXPECT_FALSE(result->tool_result().is_error());
  EXPECT_EQ(client_->ActiveCalls(), 0);
}

TEST_F(WorkerClientTest, AResultFinishedWhileDisconnectedIsSentAfterWelcome) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_1", "sleep", R"({"ms":50})")));
  ASSERT_TRUE(PollUntil([&] { return client_->ActiveCalls() == 1; }));
  fake_.Drop();
  // The client waits at least 100 ms (the first backoff) before it dials
  // again; the call finishes in between, with no stream to send on.
  ASSERT_TRUE(AwaitLog("reconnecting in"));
  clock_.Advance(absl::Milliseconds(50));
  ASSERT_TRUE(PollUntil([&] { return client_->ActiveCalls() == 0; }));
  for (const auto& m : fake_.Received()) EXPECT_FALSE(IsResultFor(m, "toolu_1"));
  ASSERT_TRUE(AdvanceUntil([](const auto&, const auto& hellos) {
    return hellos.size() == 2;
  }));
  std::optional<v1::WorkerMessage> result = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_1"); });
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->tool_result().attempt(), 1u);
  EXPECT_TRUE(AwaitLog("sent 1 result(s) of calls that finished while "
                       "disconnected"));
}

TEST_F(WorkerClientTest, RejectedWithFailedPreconditionStopsTheClient) {
  fake_.RejectWith(grpc::StatusCode::FAILED_PRECONDITION,
                   "protocol_version 1 not supported; this orchestrator "
                   "speaks 2");
  StartClient();
  EXPECT_THAT(AwaitRunEnd(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("protocol_version 1")));
  EXPECT_EQ(fake_.Hellos().size(), 1u);
}

TEST_F(WorkerClientTest, AlreadyExistsIsRetried) {
  fake_.RejectWith(grpc::StatusCode::ALREADY_EXISTS, "w1 is connected");
  StartClient();
  ASSERT_TRUE(AdvanceUntil([](const auto&, const auto& hellos) {
    return hellos.size() >= 2;
  }));
  EXPECT_FALSE(run_done_.HasBeenNotified());
}

TEST_F(WorkerClientTest, DrainFinishesWithinGraceAndHandsBackTheRest) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  ASSERT_TRUE(fake_.Send(Assign("toolu_short", "sleep", R"({"ms":500})")));
  ASSERT_TRUE(fake_.Send(Assign("toolu_long", "sleep", R"({"ms":600000})")));
  ASSERT_TRUE(PollUntil([&] { return client_->ActiveCalls() == 2; }));

  client_->Drain(absl::Seconds(2));
  std::optional<v1::WorkerMessage> draining = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return m.has_draining(); });
  ASSERT_TRUE(draining.has_value());
  EXPECT_EQ(draining->draining().grace().seconds(), 2);

  // Within the grace the short call finishes and reports normally.
  clock_.Advance(absl::Milliseconds(600));
  std::optional<v1::WorkerMessage> short_result = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsResultFor(m, "toolu_short"); });
  ASSERT_TRUE(short_result.has_value());
  EXPECT_FALSE(short_result->tool_result().is_error());

  // A late assignment is handed back at once.
  ASSERT_TRUE(fake_.Send(Assign("toolu_late", "echo", R"({"text":"x"})")));
  std::optional<v1::WorkerMessage> late = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsReturnFor(m, "toolu_late"); });
  ASSERT_TRUE(late.has_value());
  EXPECT_EQ(late->return_call().reason(), "draining");

  // After the grace the long call is handed back, the stream closes and
  // Run() returns OK.
  clock_.Advance(absl::Seconds(2));
  std::optional<v1::WorkerMessage> handed_back = fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return IsReturnFor(m, "toolu_long"); });
  ASSERT_TRUE(handed_back.has_value());
  EXPECT_EQ(handed_back->return_call().reason(), "draining");
  EXPECT_THAT(AwaitRunEnd(), IsOk());
  EXPECT_TRUE(PollUntil([&] { return fake_.EndedStreams() == 1; }));
  for (const auto& m : fake_.Received()) {
    EXPECT_FALSE(IsResultFor(m, "toolu_long"));
    EXPECT_FALSE(IsResultFor(m, "toolu_late"));
  }
  EXPECT_EQ(fake_.Hellos().size(), 1u);
}

TEST_F(WorkerClientTest, DrainWithNothingRunningClosesAtOnce) {
  StartClient();
  ASSERT_TRUE(AwaitConnected());
  client_->Drain(absl::Seconds(30));
  EXPECT_THAT(AwaitRunEnd(), IsOk());
  ASSERT_TRUE(fake_.AwaitMessage(
      [](const v1::WorkerMessage& m) { return m.has_draining(); }));
}

TEST(WorkerFlagsTest, ParsesEveryFlagInBothForms) {
  absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags(
      {"--orchestrator", "127.0.0.1:7070", "--tools=t.json", "--concurrency",
       "8", "--id=w9", "--drain-grace", "1500ms"},
      "host-1");
  ASSERT_THAT(flags, IsOk());
  EXPECT_EQ(flags->orchestrator, "127.0.0.1:7070");
  EXPECT_EQ(flags->tools_path, "t.json");
  EXPECT_EQ(flags->concurrency, 8);
  EXPECT_EQ(flags->id, "w9");
  EXPECT_EQ(flags->drain_grace, absl::Milliseconds(1500));
}

TEST(WorkerFlagsTest, MaxResultBytesIsParsedAndChecked) {
  absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags(
      {"--orchestrator=h:1", "--tools=t", "--max-result-bytes", "4096"}, "d");
  ASSERT_THAT(flags, IsOk());
  EXPECT_EQ(flags->max_result_bytes, 4096u);
  absl::StatusOr<WorkerFlags> defaults =
      ParseWorkerFlags({"--orchestrator=h:1", "--tools=t"}, "d");
  ASSERT_THAT(defaults, IsOk());
  EXPECT_EQ(defaults->max_result_bytes, size_t{1} << 20);
  for (const std::string bad : {"0", "1023", "67108865", "-1", "1MiB"}) {
    EXPECT_THAT(ParseWorkerFlags({"--orchestrator=h:1", "--tools=t",
                                  "--max-result-bytes=" + bad},
                                 "d"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("--max-result-bytes: expected an integer "
                                   "from 1024 to 67108864")))
        << bad;
  }
  EXPECT_THAT(WorkerUsage(), HasSubstr("--max-result-bytes N"));
}

TEST(WorkerFlagsTest, DefaultsApply) {
  absl::StatusOr<WorkerFlags> flags =
      ParseWorkerFlags({"--orchestrator=h:1", "--tools", "t.json"}, "host-1");
  ASSERT_THAT(flags, IsOk());
  EXPECT_EQ(flags->concurrency, 4);
  EXPECT_EQ(flags->id, "host-1");
  EXPECT_EQ(flags->drain_grace, absl::Seconds(30));
}

TEST(WorkerFlagsTest, BadFlagsAreOneLineErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--tools", "t.json"}, "--orchestrator"},
      {{"--orchestrator", "h:1"}, "--tools"},
      {{"--orchestrator", "nohost", "--tools", "t"}, "HOST:PORT"},
      {{"--orchestrator", "h:1", "--tools", "t", "--concurrency", "0"},
       "--concurrency"},
      {{"--orchestrator", "h:1", "--tools", "t", "--concurrency", "x"},
       "--concurrency"},
      {{"--orchestrator", "h:1", "--tools", "t", "--drain-grace", "soon"},
       "--drain-grace"},
      {{"--orchestrator", "h:1", "--tools", "t", "--bogus", "1"}, "--bogus"},
      {{"--orchestrator", "h:1", "--tools"}, "missing value"},
      {{"--orchestrator", "h:1", "--tools", "t", "extra"}, "extra"},
  };
  for (const auto& [args, expected] : cases) {
    absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags(args, "d");
    EXPECT_THAT(flags, StatusIs(absl::StatusCode::kInvalidArgument,
                                HasSubstr(expected)))
        << args.back();
    if (!flags.ok()) {
      EXPECT_EQ(flags.status().message().find('\n'), absl::string_view::npos);
    }
  }
}

TEST(WorkerFlagsTest, HelpNeedsNoOtherFlag) {
  absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags({"--help"}, "d");
  ASSERT_THAT(flags, IsOk());
  EXPECT_TRUE(flags->help);
  EXPECT_THAT(WorkerUsage(), HasSubstr("--orchestrator HOST:PORT"));
}

}  // namespace
}  // namespace toolmesh::worker
