// Tests of the orchestrator's gRPC service layer (TaskServiceImpl,
// WorkerServiceImpl, Authenticator) on a real in-process gRPC server on
// 127.0.0.1:0, over FakeEngine: an EngineApi double that records every call
// and answers as each test tells it. The test thread plays the engine
// thread (it calls OnEvent/OnEnd and Send/Close). The real engine is covered
// by the integration tests.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "orchestrator/engine/engine_api.h"
#include "orchestrator/grpc/auth.h"
#include "orchestrator/grpc/task_service.h"
#include "orchestrator/grpc/worker_service.h"
#include "toolmesh/v1/task_service.grpc.pb.h"
#include "toolmesh/v1/worker_service.grpc.pb.h"

namespace toolmesh::orchestrator {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(5);
constexpr char kClientToken[] = "client-secret-1";
constexpr char kWorkerToken[] = "worker-secret-2";

// ---------------------------------------------------------------------------
// The engine double.

class FakeEngine final : public EngineApi {
 public:
  struct HelloCall {
    WorkerSessionId session = 0;
    std::shared_ptr<WorkerLink> link;
    v1::Hello hello;
  };

  // --- Behaviour chosen by the test --------------------------------------
  void set_get_task_status(absl::Status status) {
    absl::MutexLock lock(&mu_);
    get_task_status_ = std::move(status);
  }
  // ListTasks then destroys its Reply without calling it (an engine that
  // stopped).
  void set_drop_list_tasks_reply(bool drop) {
    absl::MutexLock lock(&mu_);
    drop_list_tasks_reply_ = drop;
  }

  // --- TaskService ---------------------------------------------------------
  void SubmitTask(Caller caller, v1::SubmitTaskRequest request,
                  Reply<v1::SubmitTaskResponse> reply) override {
    {
      absl::MutexLock lock(&mu_);
      submitted_.push_back(request);
      callers_.push_back(std::move(caller.client));
    }
    if (request.spec().model().empty()) {
      reply(absl::InvalidArgumentError("spec.model: required"));
      return;
    }
    v1::SubmitTaskResponse response;
    response.set_task_id("task_" + request.spec().model());
    response.set_created(true);
    response.mutable_task()->set_task_id(response.task_id());
    reply(std::move(response));
  }
  void GetTask(v1::GetTaskRequest request,
               Reply<v1::GetTaskResponse> reply) override {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      ++unary_calls_;
      status = get_task_status_;
    }
    if (!status.ok()) {
      reply(status);
      return;
    }
    v1::GetTaskResponse response;
    response.mutable_task()->set_task_id(request.task_id());
    response.mutable_task()->set_state(v1::TASK_STATE_RUNNING);
    reply(std::move(response));
  }
  void CancelTask(v1::CancelTaskRequest request,
                  Reply<v1::CancelTaskResponse> reply) override {
    {
      absl::MutexLock lock(&mu_);
      ++unary_calls_;
    }
    reply(absl::FailedPreconditionError("task " + request.task_id() +
                                        " already COMPLETED"));
  }
  void ListTasks(v1::ListTasksRequest /*request*/,
                 Reply<v1::ListTasksResponse> reply) override {
    bool drop;
    {
      absl::MutexLock lock(&mu_);
      ++unary_calls_;
      drop = drop_list_tasks_reply_;
    }
    if (drop) return;  // `reply` is destroyed unanswered
    v1::ListTasksResponse response;
    response.add_tasks()->set_task_id("task_b");
    response.add_tasks()->set_task_id("task_a");
    reply(std::move(response));
  }
  void ListWorkers(v1::ListWorkersRequest /*request*/,
                   Reply<v1::ListWorkersResponse> reply) override {
    {
      absl::MutexLock lock(&mu_);
      ++unary_calls_;
    }
    v1::ListWorkersResponse response;
    response.add_workers()->set_worker_id("w1");
    reply(std::move(response));
  }

  void WatchTask(v1::WatchTaskRequest request,
                 std::shared_ptr<EventSubscriber> subscriber) override {
    absl::MutexLock lock(&mu_);
    watch_requests_.push_back(std::move(request));
    watchers_.push_back(std::move(subscriber));
  }
  void CancelWatch(std::shared_ptr<EventSubscriber> subscriber) override {
    absl::MutexLock lock(&mu_);
    cancelled_watchers_.push_back(std::move(subscriber));
  }

  // --- WorkerService -------------------------------------------------------
  WorkerSessionId NewWorkerSession() override {
    absl::MutexLock lock(&mu_);
    return next_session_++;
  }
  void WorkerHello(WorkerSessionId session, std::shared_ptr<WorkerLink> link,
                   v1::Hello hello) override {
    absl::MutexLock lock(&mu_);
    hellos_.push_back({session, std::move(link), std::move(hello)});
  }
  void WorkerMessage(WorkerSessionId session,
                     v1::WorkerMessage message) override {
    absl::MutexLock lock(&mu_);
    worker_messages_.emplace_back(session, std::move(message));
  }
  void WorkerGone(WorkerSessionId session, absl::Status status) override {
    absl::MutexLock lock(&mu_);
    gone_.emplace_back(session, std::move(status));
  }

  bool Ready() const override { return true; }
  void Metrics(Reply<std::string> reply) override { reply(std::string()); }

  // --- Observations --------------------------------------------------------
  // Waits until `count` watchers subscribed; returns the last one or null.
  std::shared_ptr<EventSubscriber> WaitForWatcher(std::size_t count = 1) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return watchers_.size() >= count;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), kWait)) return nullptr;
    return watchers_[count - 1];
  }
  bool WaitForCancelledWatchers(std::size_t count) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return cancelled_watchers_.size() >= count;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), kWait);
  }
  std::optional<HelloCall> WaitForHello(std::size_t count = 1) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return hellos_.size() >= count;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), kWait)) {
      return std::nullopt;
    }
    return hellos_[count - 1];
  }
  bool WaitForWorkerMessages(std::size_t count) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return worker_messages_.size() >= count;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), kWait);
  }
  bool WaitForGone(std::size_t count) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return gone_.size() >= count;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), kWait);
  }

  std::vector<v1::SubmitTaskRequest> submitted() {
    absl::MutexLock lock(&mu_);
    return submitted_;
  }
  std::vector<std::string> callers() {
    absl::MutexLock lock(&mu_);
    return callers_;
  }
  int unary_calls() {
    absl::MutexLock lock(&mu_);
    return unary_calls_;
  }
  std::vector<v1::WatchTaskRequest> watch_requests() {
    absl::MutexLock lock(&mu_);
    return watch_requests_;
  }
  std::size_t watcher_count() {
    absl::MutexLock lock(&mu_);
    return watchers_.size();
  }
  std::vector<std::shared_ptr<EventSubscriber>> cancelled_watchers() {
    absl::MutexLock lock(&mu_);
    return cancelled_watchers_;
  }
  std::size_t hello_count() {
    absl::MutexLock lock(&mu_);
    return hellos_.size();
  }
  std::vector<std::pair<WorkerSessionId, v1::WorkerMessage>>
  worker_messages() {
    absl::MutexLock lock(&mu_);
    return worker_messages_;
  }
  std::vector<std::pair<WorkerSessionId, absl::Status>> gone() {
    absl::MutexLock lock(&mu_);
    return gone_;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Status get_task_status_ ABSL_GUARDED_BY(mu_);
  bool drop_list_tasks_reply_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<v1::SubmitTaskRequest> submitted_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> callers_ ABSL_GUARDED_BY(mu_);
  int unary_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::WatchTaskRequest> watch_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<EventSubscriber>> watchers_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<EventSubscriber>> cancelled_watchers_
      ABSL_GUARDED_BY(mu_);
  WorkerSessionId next_session_ ABSL_GUARDED_BY(mu_) = 41;
  std::vector<HelloCall> hellos_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<WorkerSessionId, v1::WorkerMessage>> worker_messages_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<WorkerSessionId, absl::Status>> gone_
      ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------
// The fixture: both services on one loopback server, with auth on.

v1::TaskEvent Event(std::uint64_t seq, std::size_t text_bytes = 4) {
  v1::TaskEvent event;
  event.set_task_id("task_1");
  event.set_seq(seq);
  event.mutable_text_delta()->set_text(std::string(text_bytes, 'x'));
  return event;
}

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TaskServiceOptions options;
    options.watch_buffer_events = 8;
    task_service_ = std::make_unique<TaskServiceImpl>(
        engine_, Authenticator(kClientToken, kWorkerToken), options);
    worker_service_ = std::make_unique<WorkerServiceImpl>(
        engine_, Authenticator(kClientToken, kWorkerToken));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(task_service_.get());
    builder.RegisterService(worker_service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
    tasks_ = v1::TaskService::NewStub(channel_);
    workers_ = v1::WorkerService::NewStub(channel_);
  }

  void TearDown() override { StopServer(); }

  // Shuts the server down (pending calls are cancelled); idempotent.
  void StopServer() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
    server_->Wait();
    server_.reset();
  }

  // A client context with a deadline and, unless `token` is null, the
  // bearer token.
  static void Prepare(grpc::ClientContext& context,
                      const char* token = kClientToken) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    if (token != nullptr) {
      context.AddMetadata("authorization", std::string("Bearer ") + token);
    }
  }

  FakeEngine engine_;
  std::unique_ptr<TaskServiceImpl> task_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
};

// ---------------------------------------------------------------------------
// Unary RPCs.

TEST_F(ServicesTest, SubmitTaskPassesRequestAndResponseThrough) {
  grpc::ClientContext context;
  Prepare(context);
  v1::SubmitTaskRequest request;
  request.mutable_spec()->set_model("m1");
  request.mutable_spec()->set_prompt("What is 2+2?");
  v1::SubmitTaskResponse response;
  grpc::Status status = tasks_->SubmitTask(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.task_id(), "task_m1");
  EXPECT_TRUE(response.created());
  EXPECT_EQ(response.task().task_id(), "task_m1");
  std::vector<v1::SubmitTaskRequest> submitted = engine_.submitted();
  ASSERT_EQ(submitted.size(), 1u);
  EXPECT_EQ(submitted[0].spec().prompt(), "What is 2+2?");
  // The one client token of the fixture is named "default".
  EXPECT_EQ(engine_.callers(), std::vector<std::string>{"default"});
}

TEST_F(ServicesTest, EngineErrorsKeepTheirCodeAndMessage) {
  {
    grpc::ClientContext context;
    Prepare(context);
    v1::SubmitTaskResponse response;
    grpc::Status status =
        tasks_->SubmitTask(&context, v1::SubmitTaskRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(), "spec.model: required");
  }
  {
    engine_.set_get_task_status(absl::NotFoundError("no task task_9"));
    grpc::ClientContext context;
    Prepare(context);
    v1::GetTaskRequest request;
    request.set_task_id("task_9");
    v1::GetTaskResponse response;
    grpc::Status status = tasks_->GetTask(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(status.error_message(), "no task task_9");
  }
  {
    grpc::ClientContext context;
    Prepare(context);
    v1::CancelTaskRequest request;
    request.set_task_id("task_3");
    v1::CancelTaskResponse response;
    grpc::Status status = tasks_->CancelTask(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(status.error_message(), HasSubstr("task_3"));
  }
}

TEST_F(ServicesTest, EveryUnaryRpcReachesTheEngine) {
  {
    grpc::ClientContext context;
    Prepare(context);
    v1::GetTaskRequest request;
    request.set_task_id("task_7");
    v1::GetTaskResponse response;
    ASSERT_TRUE(tasks_->GetTask(&context, request, &response).ok());
    EXPECT_EQ(response.task().task_id(), "task_7");
    EXPECT_EQ(response.task().state(), v1::TASK_STATE_RUNNING);
  }
  {
    grpc::ClientContext context;
    Prepare(context);
    v1::ListTasksResponse response;
    ASSERT_TRUE(
        tasks_->ListTasks(&context, v1::ListTasksRequest(), &response).ok());
    ASSERT_EQ(response.tasks_size(), 2);
    EXPECT_EQ(response.tasks(0).task_id(), "task_b");
  }
  {
    grpc::ClientContext context;
    Prepare(context);
    v1::ListWorkersResponse response;
    ASSERT_TRUE(
        tasks_->ListWorkers(&context, v1::ListWorkersRequest(), &response)
            .ok());
    ASSERT_EQ(response.workers_size(), 1);
    EXPECT_EQ(response.workers(0).worker_id(), "w1");
  }
  EXPECT_EQ(engine_.unary_calls(), 3);
}

TEST_F(ServicesTest, ReplyDroppedByTheEngineFinishesUnavailable) {
  engine_.set_drop_list_tasks_reply(true);
  grpc::ClientContext context;
  Prepare(context);
  v1::ListTasksResponse response;
  grpc::Status status =
      tasks_->ListTasks(&context, v1::ListTasksRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(engine_.unary_calls(), 1);
}

// ---------------------------------------------------------------------------
// WatchTask.

TEST_F(ServicesTest, WatchStreamsEventsInOrderAndEndsOkAfterOnEnd) {
  grpc::ClientContext context;
  Prepare(context);
  v1::WatchTaskRequest request;
  request.set_task_id("task_1");
  request.set_after_seq(3);
  request.set_omit_deltas(true);
  auto reader = tasks_->WatchTask(&context, request);

  std::shared_ptr<EventSubscriber> subscriber = engine_.WaitForWatcher();
  ASSERT_NE(subscriber, nullptr);
  std::vector<v1::WatchTaskRequest> requests = engine_.watch_requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].task_id(), "task_1");
  EXPECT_EQ(requests[0].after_seq(), 3u);
  EXPECT_TRUE(requests[0].omit_deltas());

  for (std::uint64_t seq = 4; seq <= 8; ++seq) {
    EXPECT_TRUE(subscriber->OnEvent(Event(seq)));
  }
  subscriber->OnEnd(absl::OkStatus());

  std::vector<std::uint64_t> seen;
  v1::TaskEvent event;
  while (reader->Read(&event)) seen.push_back(event.seq());
  grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{4, 5, 6, 7, 8}));
  // The engine ended the watch itself: no CancelWatch.
  StopServer();
  EXPECT_TRUE(engine_.cancelled_watchers().empty());
  // The subscriber outlives the call and refuses further events.
  EXPECT_FALSE(subscriber->OnEvent(Event(9)));
}

TEST_F(ServicesTest, WatchEndsWithTheEngineErrorStatus) {
  grpc::ClientContext context;
  Prepare(context);
  v1::WatchTaskRequest request;
  request.set_task_id("task_404");
  auto reader = tasks_->WatchTask(&context, request);
  std::shared_ptr<EventSubscriber> subscriber = engine_.WaitForWatcher();
  ASSERT_NE(subscriber, nullptr);
  subscriber->OnEnd(absl::NotFoundError("no task task_404"));
  v1::TaskEvent event;
  EXPECT_FALSE(reader->Read(&event));
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "no task task_404");
}

TEST_F(ServicesTest, WatcherWhoseBufferFillsEndsResourceExhausted) {
  grpc::ClientContext context;
  Prepare(context);
  v1::WatchTaskRequest request;
  request.set_task_id("task_1");
  auto reader = tasks_->WatchTask(&context, request);
  std::shared_ptr<EventSubscriber> subscriber = engine_.WaitForWatcher();
  ASSERT_NE(subscriber, nullptr);

  // The client reads nothing yet: 256 KiB events soon exceed HTTP/2 flow
  // control, the one write in flight stalls, and the buffer of 8 fills.
  std::uint64_t accepted = 0;
  bool refused = false;
  for (std::uint64_t seq = 1; seq <= 200 && !refused; ++seq) {
    if (subscriber->OnEvent(Event(seq, 256 * 1024))) {
      accepted = seq;
    } else {
      refused = true;
    }
  }
  ASSERT_TRUE(refused) << "the buffer never filled";
  EXPECT_GE(accepted, 9u);  // the one in flight plus the buffer of 8
  // What the engine does after a refusal.
  subscriber->OnEnd(absl::ResourceExhaustedError("watch buffer full"));

  // Everything accepted still arrives, in order, then the error.
  std::uint64_t expected = 1;
  v1::TaskEvent event;
  while (reader->Read(&event)) {
    EXPECT_EQ(event.seq(), expected);
    ++expected;
  }
  EXPECT_EQ(expected - 1, accepted);
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(ServicesTest, ClientCancelOfWatchCallsCancelWatchOnce) {
  grpc::ClientContext context;
  Prepare(context);
  v1::WatchTaskRequest request;
  request.set_task_id("task_1");
  auto reader = tasks_->WatchTask(&context, request);
  std::shared_ptr<EventSubscriber> subscriber = engine_.WaitForWatcher();
  ASSERT_NE(subscriber, nullptr);
  ASSERT_TRUE(subscriber->OnEvent(Event(1)));
  v1::TaskEvent event;
  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.seq(), 1u);

  context.TryCancel();
  ASSERT_TRUE(engine_.WaitForCancelledWatchers(1));
  EXPECT_EQ(engine_.cancelled_watchers()[0], subscriber);
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  StopServer();
  EXPECT_EQ(engine_.cancelled_watchers().size(), 1u);
  EXPECT_FALSE(subscriber->OnEvent(Event(2)));
}

// ---------------------------------------------------------------------------
// WorkerService.Connect.

v1::WorkerMessage HelloMessage(const std::string& worker_id) {
  v1::WorkerMessage message;
  v1::Hello* hello = message.mutable_hello();
  hello->set_worker_id(worker_id);
  hello->set_protocol_version(v1::PROTOCOL_VERSION_1);
  hello->set_slots(2);
  return message;
}

v1::WorkerMessage HeartbeatMessage(std::uint32_t free_slots) {
  v1::WorkerMessage message;
  message.mutable_heartbeat()->set_free_slots(free_slots);
  return message;
}

TEST_F(ServicesTest, ConnectWithoutHelloFirstIsInvalidArgument) {
  grpc::ClientContext context;
  Prepare(context, kWorkerToken);
  auto stream = workers_->Connect(&context);
  ASSERT_TRUE(stream->Write(HeartbeatMessage(1)));
  v1::OrchestratorMessage message;
  EXPECT_FALSE(stream->Read(&message));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("hello"));
  StopServer();
  EXPECT_EQ(engine_.hello_count(), 0u);
  EXPECT_TRUE(engine_.worker_messages().empty());
  EXPECT_TRUE(engine_.gone().empty());
}

TEST_F(ServicesTest, HelloGivesTheEngineAWorkingLink) {
  grpc::ClientContext context;
  Prepare(context, kWorkerToken);
  auto stream = workers_->Connect(&context);
  ASSERT_TRUE(stream->Write(HelloMessage("w1")));
  std::optional<FakeEngine::HelloCall> hello = engine_.WaitForHello();
  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ(hello->hello.worker_id(), "w1");
  EXPECT_NE(hello->session, 0u);

  // Engine -> worker.
  v1::OrchestratorMessage welcome;
  welcome.mutable_welcome()->set_protocol_version(1);
  welcome.mutable_welcome()->add_accepted_tools("echo");
  hello->link->Send(welcome);
  v1::OrchestratorMessage received;
  ASSERT_TRUE(stream->Read(&received));
  ASSERT_TRUE(received.has_welcome());
  EXPECT_EQ(received.welcome().accepted_tools(0), "echo");

  // Worker -> engine, with the session of the Hello.
  ASSERT_TRUE(stream->Write(HeartbeatMessage(2)));
  ASSERT_TRUE(engine_.WaitForWorkerMessages(1));
  auto messages = engine_.worker_messages();
  EXPECT_EQ(messages[0].first, hello->session);
  EXPECT_EQ(messages[0].second.heartbeat().free_slots(), 2u);

  // Queued messages are written before Close's status ends the stream;
  // later sends are dropped.
  for (int i = 1; i <= 3; ++i) {
    v1::OrchestratorMessage assignment;
    assignment.mutable_assignment()->set_tool_use_id("toolu_" +
                                                     std::to_string(i));
    hello->link->Send(assignment);
  }
  hello->link->Close(absl::FailedPreconditionError("protocol mismatch"));
  v1::OrchestratorMessage late;
  late.mutable_cancel()->set_tool_use_id("toolu_late");
  hello->link->Send(late);

  std::vector<std::string> ids;
  while (stream->Read(&received)) {
    ids.push_back(received.assignment().tool_use_id());
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"toolu_1", "toolu_2", "toolu_3"}));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(), "protocol mismatch");

  ASSERT_TRUE(engine_.WaitForGone(1));
  StopServer();
  auto gone = engine_.gone();
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].first, hello->session);
}

TEST_F(ServicesTest, ClientHangUpReportsWorkerGoneExactlyOnce) {
  grpc::ClientContext context;
  Prepare(context, kWorkerToken);
  auto stream = workers_->Connect(&context);
  ASSERT_TRUE(stream->Write(HelloMessage("w2")));
  std::optional<FakeEngine::HelloCall> hello = engine_.WaitForHello();
  ASSERT_TRUE(hello.has_value());

  context.TryCancel();
  ASSERT_TRUE(engine_.WaitForGone(1));
  EXPECT_EQ(engine_.gone()[0].first, hello->session);
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The engine may still send on the link it holds: dropped, no crash.
  v1::OrchestratorMessage message;
  message.mutable_cancel()->set_tool_use_id("toolu_1");
  hello->link->Send(message);
  hello->link->Close(absl::UnavailableError("late"));

  StopServer();
  EXPECT_EQ(engine_.gone().size(), 1u);
}

TEST_F(ServicesTest, WorkerHalfCloseReportsGoneOnceAndEndsOk) {
  grpc::ClientContext context;
  Prepare(context, kWorkerToken);
  auto stream = workers_->Connect(&context);
  ASSERT_TRUE(stream->Write(HelloMessage("w3")));
  std::optional<FakeEngine::HelloCall> hello = engine_.WaitForHello();
  ASSERT_TRUE(hello.has_value());
  ASSERT_TRUE(stream->Write(HeartbeatMessage(1)));
  ASSERT_TRUE(stream->WritesDone());
  v1::OrchestratorMessage message;
  EXPECT_FALSE(stream->Read(&message));
  EXPECT_TRUE(stream->Finish().ok());
  ASSERT_TRUE(engine_.WaitForGone(1));
  StopServer();
  // Hello, the heartbeat, then the end: in that order, the end once.
  auto messages = engine_.worker_messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_TRUE(messages[0].second.has_heartbeat());
  auto gone = engine_.gone();
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0].first, hello->session);
}

TEST_F(ServicesTest, SecondWorkerStreamGetsItsOwnSession) {
  grpc::ClientContext first_context;
  Prepare(first_context, kWorkerToken);
  auto first = workers_->Connect(&first_context);
  ASSERT_TRUE(first->Write(HelloMessage("a")));
  auto first_hello = engine_.WaitForHello(1);
  ASSERT_TRUE(first_hello.has_value());
  grpc::ClientContext second_context;
  Prepare(second_context, kWorkerToken);
  auto second = workers_->Connect(&second_context);
  ASSERT_TRUE(second->Write(HelloMessage("b")));
  auto second_hello = engine_.WaitForHello(2);
  ASSERT_TRUE(second_hello.has_value());
  EXPECT_NE(first_hello->session, second_hello->session);
  first_hello->link->Close(absl::OkStatus());
  second_hello->link->Close(absl::OkStatus());
  EXPECT_TRUE(first->Finish().ok());
  EXPECT_TRUE(second->Finish().ok());
  ASSERT_TRUE(engine_.WaitForGone(2));
}

// ---------------------------------------------------------------------------
// Authentication.

TEST_F(ServicesTest, TaskServiceWithoutTokenIsUnauthenticated) {
  grpc::ClientContext context;
  Prepare(context, nullptr);
  v1::GetTaskResponse response;
  grpc::Status status =
      tasks_->GetTask(&context, v1::GetTaskRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(engine_.unary_calls(), 0);
}

TEST_F(ServicesTest, TaskServiceWithUnknownTokenIsUnauthenticated) {
  grpc::ClientContext context;
  Prepare(context, "client-secret-X");
  v1::GetTaskResponse response;
  grpc::Status status =
      tasks_->GetTask(&context, v1::GetTaskRequest(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(status.error_message(), ::testing::Not(HasSubstr("secret")));
  EXPECT_EQ(engine_.unary_calls(), 0);
}

TEST_F(ServicesTest, WorkerTokenOnTaskServiceIsPermissionDenied) {
  {
    grpc::ClientContext context;
    Prepare(context, kWorkerToken);
    v1::ListWorkersResponse response;
    grpc::Status status =
        tasks_->ListWorkers(&context, v1::ListWorkersRequest(), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext context;
    Prepare(context, kWorkerToken);
    auto reader = tasks_->WatchTask(&context, v1::WatchTaskRequest());
    v1::TaskEvent event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(engine_.unary_calls(), 0);
  EXPECT_EQ(engine_.watcher_count(), 0u);
}

TEST_F(ServicesTest, RightClientTokenIsAccepted) {
  grpc::ClientContext context;
  Prepare(context, kClientToken);
  v1::GetTaskRequest request;
  request.set_task_id("task_1");
  v1::GetTaskResponse response;
  EXPECT_TRUE(tasks_->GetTask(&context, request, &response).ok());
  EXPECT_EQ(engine_.unary_calls(), 1);
}

TEST_F(ServicesTest, WorkerServiceChecksTheWorkerToken) {
  struct Case {
    const char* token;
    grpc::StatusCode code;
  };
  for (const Case& c : {Case{nullptr, grpc::StatusCode::UNAUTHENTICATED},
                        Case{kClientToken, grpc::StatusCode::PERMISSION_DENIED},
                        Case{"nope", grpc::StatusCode::UNAUTHENTICATED}}) {
    grpc::ClientContext context;
    Prepare(context, c.token);
    auto stream = workers_->Connect(&context);
    stream->Write(HelloMessage("w9"));
    v1::OrchestratorMessage message;
    EXPECT_FALSE(stream->Read(&message));
    EXPECT_EQ(stream->Finish().error_code(), c.code)
        << (c.token == nullptr ? "no token" : c.token);
  }
  // With the worker token the Hello reaches the engine.
  grpc::ClientContext context;
  Prepare(context, kWorkerToken);
  auto stream = workers_->Connect(&context);
  ASSERT_TRUE(stream->Write(HelloMessage("w9")));
  auto hello = engine_.WaitForHello(1);
  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ(hello->hello.worker_id(), "w9");
  EXPECT_EQ(engine_.hello_count(), 1u);
  hello->link->Close(absl::OkStatus());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(AuthTest, ParseBearerTakesOnlyBearerCredentials) {
  EXPECT_EQ(ParseBearer("Bearer abc").value_or(""), "abc");
  EXPECT_EQ(ParseBearer("bearer abc").value_or(""), "abc");
  EXPECT_EQ(ParseBearer("BEARER  abc").value_or(""), "abc");
  for (const char* bad : {"Basic abc", "Bearer", "Bearer ", "Bearerabc", ""}) {
    EXPECT_EQ(ParseBearer(bad).status().code(),
              absl::StatusCode::kUnauthenticated)
        << bad;
  }
  EXPECT_EQ(ParseBearer(std::nullopt).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(AuthTest, WrongTokensAreUnauthenticatedOtherRolesPermissionDenied) {
  Authenticator auth("abc", "xyz");
  EXPECT_TRUE(auth.AuthenticateClient("Bearer abc").ok());
  for (const char* wrong : {"Bearer abd", "Bearer abcd", "Bearer ab"}) {
    EXPECT_EQ(auth.AuthenticateClient(wrong).status().code(),
              absl::StatusCode::kUnauthenticated)
        << wrong;
  }
  EXPECT_EQ(auth.AuthenticateClient("Bearer xyz").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(auth.AuthenticateWorker("Bearer abc").status().code(),
            absl::StatusCode::kPermissionDenied);
  Authenticator open("", "");
  EXPECT_TRUE(open.AuthenticateClient("anything").ok());
  EXPECT_TRUE(open.AuthenticateWorker(std::nullopt).ok());
}

TEST(AuthTest, ConstantTimeEqualsComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("token", "token"));
  EXPECT_FALSE(ConstantTimeEquals("token", "tokeN"));
  EXPECT_FALSE(ConstantTimeEquals("token", "token2"));
  EXPECT_FALSE(ConstantTimeEquals("tokentoken", "token"));
  EXPECT_FALSE(ConstantTimeEquals("", "token"));
  EXPECT_FALSE(ConstantTimeEquals("token", ""));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), "a"));
}

}  // namespace
}  // namespace toolmesh::orchestrator
