#include "orchestrator/engine/dispatcher.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/fake_clock.h"
#include "common/json.h"
#include "common/tool_ledger.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::orchestrator {
namespace {

using ::google::protobuf::util::TimeUtil;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixNanos(TimeUtil::TimestampToNanoseconds(ts));
}

std::string Name(const CallRef& ref) {
  return absl::StrCat(ref.task_id, "/", ref.tool_use_id, "#", ref.attempt);
}

// A WorkerLink that records what the dispatcher sends.
class RecordingLink : public WorkerLink {
 public:
  void Send(v1::OrchestratorMessage message) override {
    sent.push_back(std::move(message));
  }
  void Close(const absl::Status& status) override { closed = status; }

  std::vector<v1::Assignment> Assignments() const {
    std::vector<v1::Assignment> out;
    for (const auto& m : sent) {
      if (m.has_assignment()) out.push_back(m.assignment());
    }
    return out;
  }
  // "task/tool_use_id#attempt" of every assignment, in order.
  std::vector<std::string> AssignedNames() const {
    std::vector<std::string> out;
    for (const auto& a : Assignments()) {
      out.push_back(absl::StrCat(a.task_id(), "/", a.tool_use_id(), "#",
                                 a.attempt()));
    }
    return out;
  }
  std::vector<v1::Cancel> Cancels() const {
    std::vector<v1::Cancel> out;
    for (const auto& m : sent) {
      if (m.has_cancel()) out.push_back(m.cancel());
    }
    return out;
  }

  std::vector<v1::OrchestratorMessage> sent;
  std::optional<absl::Status> closed;
};

// Records every listener call as one line; optional hooks run after the
// line is recorded.
class RecordingListener : public DispatchListener {
 public:
  void OnCallStarted(const CallRef& call,
                     const std::string& worker_id) override {
    log.push_back(absl::StrCat("started ", Name(call), " on ", worker_id));
  }
  void OnCallResult(const CallRef& call, common::Json content,
                    bool is_error) override {
    log.push_back(absl::StrCat("result ", Name(call),
                               is_error ? " error " : " ok ",
                               common::DumpJson(content)));
  }
  void OnLateResult(const CallRef& call, const std::string& worker_id,
                    common::Json content, bool is_error) override {
    late.push_back(absl::StrCat("late ", Name(call), " from ", worker_id,
                                is_error ? " error " : " ok ",
                                common::DumpJson(content)));
  }
  void OnCallLost(const CallRef& call, std::string_view message,
                  bool counts_as_attempt) override {
    log.push_back(absl::StrCat("lost ", Name(call),
                               counts_as_attempt ? " counted" : " uncounted"));
    messages.emplace_back(message);
    if (on_lost) on_lost(call);
  }
  void OnCallFailed(const CallRef& call, common::ErrorReason reason,
                    std::string_view message) override {
    log.push_back(absl::StrCat("failed ", Name(call), " ",
                               std::string(common::ErrorReasonName(reason))));
    messages.emplace_back(message);
  }

  std::vector<std::string> log;
  // OnLateResult calls, apart from `log`.
  std::vector<std::string> late;
  std::vector<std::string> messages;
  std::function<void(const CallRef&)> on_lost;
};

v1::ToolDefinition Tool(std::string name, std::string description = "desc",
                        std::string schema = R"({"type":"object"})") {
  v1::ToolDefinition tool;
  tool.set_name(std::move(name));
  tool.set_description(std::move(description));
  tool.set_input_schema_json(std::move(schema));
  return tool;
}

v1::Hello MakeHello(std::string id, std::vector<v1::ToolDefinition> tools,
                    std::uint32_t slots) {
  v1::Hello hello;
  hello.set_worker_id(std::move(id));
  hello.set_protocol_version(1);
  hello.set_slots(slots);
  hello.set_worker_version("test-1.0");
  for (auto& tool : tools) *hello.add_tools() = std::move(tool);
  return hello;
}

CallSpec Call(std::string task, std::string id, int attempt = 1,
              std::string tool = "echo") {
  CallSpec spec;
  spec.ref = CallRef{std::move(task), std::move(id), attempt};
  spec.name = std::move(tool);
  spec.input_json = R"({"text":"hi"})";
  return spec;
}

class DispatcherTest : public ::testing::Test {
 protected:
  DispatcherTest() { Rebuild(DispatcherOptions()); }

  void Rebuild(DispatcherOptions options) {
    dispatcher_.reset();
    options_ = options;
    dispatcher_ = std::make_unique<Dispatcher>(
        std::move(options), clock_,
        [this](absl::AnyInvocable<void()> fn) {
          if (defer_posts_) {
            posted_.push_back(std::move(fn));
          } else {
            fn();
          }
        },
        listener_);
  }

  struct Worker {
    WorkerSessionId session;
    std::shared_ptr<RecordingLink> link;
  };

  absl::StatusOr<v1::Welcome> Add(const v1::Hello& hello,
                                  std::shared_ptr<RecordingLink>* link_out =
                                      nullptr) {
    auto link = std::make_shared<RecordingLink>();
    if (link_out != nullptr) *link_out = link;
    return dispatcher_->AddWorker(next_session_++, link, hello);
  }

  // Connects a worker serving `tools` (default: echo) and checks it got in.
  Worker Connect(std::string id, std::uint32_t slots = 1,
                 std::vector<v1::ToolDefinition> tools = {Tool("echo")}) {
    Worker worker{next_session_, nullptr};
    auto welcome =
        Add(MakeHello(std::move(id), std::move(tools), slots), &worker.link);
    EXPECT_THAT(welcome, IsOk());
    return worker;
  }

  void Result(const Worker& worker, const std::string& task,
              const std::string& id, std::uint32_t attempt,
              std::string content_json = R"("done")", bool is_error = false) {
    v1::WorkerMessage message;
    v1::ToolResult& result = *message.mutable_tool_result();
    result.set_task_id(task);
    result.set_tool_use_id(id);
    result.set_attempt(attempt);
    result.set_content_json(std::move(content_json));
    result.set_is_error(is_error);
    dispatcher_->OnWorkerMessage(worker.session, message);
  }

  void Heartbeat(
      const Worker& worker,
      std::vector<std::tuple<std::string, std::string, std::uint32_t>> running) {
    v1::WorkerMessage message;
    v1::Heartbeat& heartbeat = *message.mutable_heartbeat();
    for (auto& [task, id, attempt] : running) {
      v1::RunningCall& call = *heartbeat.add_running();
      call.set_task_id(task);
      call.set_tool_use_id(id);
      call.set_attempt(attempt);
    }
    dispatcher_->OnWorkerMessage(worker.session, message);
  }

  void Return(const Worker& worker, const std::string& task,
              const std::string& id, std::uint32_t attempt) {
    v1::WorkerMessage message;
    v1::ReturnCall& returned = *message.mutable_return_call();
    returned.set_task_id(task);
    returned.set_tool_use_id(id);
    returned.set_attempt(attempt);
    returned.set_reason("draining");
    dispatcher_->OnWorkerMessage(worker.session, message);
  }

  void Drain(const Worker& worker) {
    v1::WorkerMessage message;
    message.mutable_draining();
    dispatcher_->OnWorkerMessage(worker.session, message);
  }

  void RunPosted() {
    std::vector<absl::AnyInvocable<void()>> posted;
    posted.swap(posted_);
    for (auto& fn : posted) fn();
  }

  common::FakeClock clock_{kStart};
  RecordingListener listener_;
  DispatcherOptions options_;
  bool defer_posts_ = false;
  std::vector<absl::AnyInvocable<void()>> posted_;
  WorkerSessionId next_session_ = 1;
  std::unique_ptr<Dispatcher> dispatcher_;
};

// ---- Assignment -------------------------------------------------------------

TEST_F(DispatcherTest, AssignsACallToAFreeWorker) {
  Worker w1 = Connect("w1");
  ASSERT_THAT(w1.link->sent, SizeIs(1));
  EXPECT_TRUE(w1.link->sent[0].has_welcome());

  dispatcher_->Enqueue(Call("t1", "u1"));

  ASSERT_THAT(w1.link->Assignments(), SizeIs(1));
  const v1::Assignment a = w1.link->Assignments()[0];
  EXPECT_EQ(a.task_id(), "t1");
  EXPECT_EQ(a.tool_use_id(), "u1");
  EXPECT_EQ(a.attempt(), 1u);
  EXPECT_EQ(a.name(), "echo");
  EXPECT_EQ(a.input_json(), R"({"text":"hi"})");
  EXPECT_EQ(FromProto(a.deadline()), kStart + absl::Minutes(5));
  EXPECT_EQ(FromProto(a.lease_expiry()), kStart + absl::Seconds(10));
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1"));
  EXPECT_EQ(dispatcher_->running_calls(), 1);
  EXPECT_EQ(dispatcher_->queued_calls(), 0);
}

TEST_F(DispatcherTest, AssignmentDeadlineIsCappedByTheCallDeadline) {
  Worker w1 = Connect("w1");
  CallSpec spec = Call("t1", "u1");
  spec.deadline = kStart + absl::Seconds(42);
  dispatcher_->Enqueue(spec);
  ASSERT_THAT(w1.link->Assignments(), SizeIs(1));
  EXPECT_EQ(FromProto(w1.link->Assignments()[0].deadline()),
            kStart + absl::Seconds(42));
}

TEST_F(DispatcherTest, QueuesWhenNoSlotIsFreeAndAssignsWhenOneFrees) {
  Worker w1 = Connect("w1", /*slots=*/1);
  dispatcher_->Enqueue(Call("t1", "u1"));
  dispatcher_->Enqueue(Call("t1", "u2"));
  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/u1#1"));
  EXPECT_EQ(dispatcher_->queued_calls(), 1);
  EXPECT_EQ(dispatcher_->running_calls(), 1);

  Result(w1, "t1", "u1", 1);

  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/u1#1", "t1/u2#1"));
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "result t1/u1#1 ok \"done\"",
                          "started t1/u2#1 on w1"));
  EXPECT_EQ(dispatcher_->queued_calls(), 0);
  EXPECT_EQ(dispatcher_->running_calls(), 1);
}

TEST_F(DispatcherTest, QueuedCallsAreAssignedWhenAWorkerConnects) {
  dispatcher_->Enqueue(Call("t1", "u1"));
  EXPECT_EQ(dispatcher_->queued_calls(), 1);
  Worker w1 = Connect("w1");
  ASSERT_THAT(w1.link->sent, SizeIs(2));
  EXPECT_TRUE(w1.link->sent[0].has_welcome());
  EXPECT_TRUE(w1.link->sent[1].has_assignment());
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1"));
}

TEST_F(DispatcherTest, TakesCallsRoundRobinAcrossTasks) {
  dispatcher_->Enqueue(Call("t1", "a"));
  dispatcher_->Enqueue(Call("t1", "b"));
  dispatcher_->Enqueue(Call("t1", "c"));
  dispatcher_->Enqueue(Call("t2", "x"));
  dispatcher_->Enqueue(Call("t3", "y"));
  dispatcher_->Enqueue(Call("t2", "z"));
  Worker w1 = Connect("w1", /*slots=*/6);
  EXPECT_THAT(w1.link->AssignedNames(),
              ElementsAre("t1/a#1", "t2/x#1", "t3/y#1", "t1/b#1", "t2/z#1",
                          "t1/c#1"));
}

TEST_F(DispatcherTest, QueuesAreSeparatePerTool) {
  Worker w1 = Connect("w1", 1, {Tool("echo")});
  Worker w2 = Connect("w2", 1, {Tool("grep")});
  dispatcher_->Enqueue(Call("t1", "u1", 1, "grep"));
  dispatcher_->Enqueue(Call("t1", "u2", 1, "echo"));
  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/u2#1"));
  EXPECT_THAT(w2.link->AssignedNames(), ElementsAre("t1/u1#1"));
}

TEST_F(DispatcherTest, PicksTheLeastLoadedWorker) {
  Worker w1 = Connect("w1", /*slots=*/1);
  Worker w2 = Connect("w2", /*slots=*/4);
  dispatcher_->Enqueue(Call("t1", "a"));  // both idle: more free slots wins
  dispatcher_->Enqueue(Call("t1", "b"));  // w1 0/1 < w2 1/4
  dispatcher_->Enqueue(Call("t1", "c"));  // w1 full
  dispatcher_->Enqueue(Call("t1", "d"));
  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/b#1"));
  EXPECT_THAT(w2.link->AssignedNames(),
              ElementsAre("t1/a#1", "t1/c#1", "t1/d#1"));
}

TEST_F(DispatcherTest, DrainingWorkerGetsNoNewAssignments) {
  Worker w1 = Connect("w1", /*slots=*/2);
  Drain(w1);
  dispatcher_->Enqueue(Call("t1", "u1"));
  EXPECT_THAT(w1.link->Assignments(), IsEmpty());
  EXPECT_EQ(dispatcher_->queued_calls(), 1);
  Worker w2 = Connect("w2");
  EXPECT_THAT(w2.link->AssignedNames(), ElementsAre("t1/u1#1"));
  EXPECT_TRUE(dispatcher_->ListWorkers().workers(0).draining());
}

// ---- Results ------------------------------------------------------------

TEST_F(DispatcherTest, ResultReachesTheListenerAndFreesTheSlot) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  Result(w1, "t1", "u1", 1, R"([{"type":"text","text":"hi"}])",
         /*is_error=*/true);
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1",
                          R"(result t1/u1#1 error [{"type":"text","text":"hi"}])"));
  EXPECT_EQ(dispatcher_->running_calls(), 0);
  EXPECT_EQ(dispatcher_->ListWorkers().workers(0).running_calls(), 0u);
  EXPECT_EQ(dispatcher_->ignored_results(), 0);
}

TEST_F(DispatcherTest, EarlierAttemptAndUntrackedResultsGoToTheListener) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1", /*attempt=*/2));
  Result(w1, "t1", "u1", 1);       // an earlier attempt finished after all
  Result(w1, "t1", "nope", 1);     // not tracked here (e.g. after a restart)
  EXPECT_THAT(listener_.late, ElementsAre("late t1/u1#1 from w1 ok \"done\"",
                                          "late t1/nope#1 from w1 ok \"done\""));
  EXPECT_EQ(dispatcher_->late_results(), 2);
  EXPECT_EQ(dispatcher_->ignored_results(), 0);
  // The dispatcher itself changed nothing: attempt 2 still runs.
  EXPECT_EQ(dispatcher_->running_calls(), 1);
  Result(w1, "t1", "u1", 3);  // an attempt never delivered
  Result(w1, "t1", "u1", 0);
  EXPECT_EQ(dispatcher_->ignored_results(), 2);
  Result(w1, "t1", "u1", 2);
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#2 on w1",
                                         "result t1/u1#2 ok \"done\""));
  // A repeat after the call left the dispatcher: the listener decides (the
  // ledger calls it a duplicate).
  Result(w1, "t1", "u1", 2);
  EXPECT_EQ(dispatcher_->late_results(), 3);
  EXPECT_EQ(listener_.log.size(), 2u);
}

TEST_F(DispatcherTest, ResultFromAnotherWorkerIsIgnored) {
  Worker w1 = Connect("w1");
  Worker w2 = Connect("w2", 1, {Tool("grep")});
  dispatcher_->Enqueue(Call("t1", "u1"));
  Result(w2, "t1", "u1", 1);
  EXPECT_EQ(dispatcher_->ignored_results(), 1);
  EXPECT_EQ(dispatcher_->running_calls(), 1);
}

TEST_F(DispatcherTest, UnusableResultContentBecomesAnErrorResult) {
  Worker w1 = Connect("w1", 3);
  dispatcher_->Enqueue(Call("t1", "bad"));
  dispatcher_->Enqueue(Call("t1", "obj"));
  dispatcher_->Enqueue(Call("t1", "empty"));
  Result(w1, "t1", "bad", 1, "{not json");
  Result(w1, "t1", "obj", 1, R"({"a":1})");
  Result(w1, "t1", "empty", 1, "");
  ASSERT_THAT(listener_.log, SizeIs(6));
  EXPECT_THAT(listener_.log[3], HasSubstr("result t1/bad#1 error"));
  EXPECT_THAT(listener_.log[3], HasSubstr("unusable result"));
  EXPECT_THAT(listener_.log[4], HasSubstr("result t1/obj#1 error"));
  EXPECT_EQ(listener_.log[5], R"(result t1/empty#1 ok "")");
  EXPECT_EQ(dispatcher_->running_calls(), 0);
}

// ---- Leases and heartbeats ------------------------------------------------

TEST_F(DispatcherTest, LeaseExpiryLosesTheCallAndCancelsItOnTheWorker) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  clock_.Advance(absl::Seconds(10) - absl::Milliseconds(1));
  EXPECT_THAT(listener_.log, SizeIs(1));
  clock_.Advance(absl::Milliseconds(1));
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "lost t1/u1#1 counted"));
  EXPECT_THAT(listener_.messages[0], HasSubstr("lease expired"));
  ASSERT_THAT(w1.link->Cancels(), SizeIs(1));
  EXPECT_EQ(w1.link->Cancels()[0].reason(), v1::CANCEL_REASON_SUPERSEDED);
  EXPECT_EQ(w1.link->Cancels()[0].attempt(), 1u);
  EXPECT_EQ(dispatcher_->running_calls(), 0);
}

TEST_F(DispatcherTest, HeartbeatListingTheCallExtendsItsLease) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  clock_.Advance(absl::Seconds(8));
  Heartbeat(w1, {{"t1", "u1", 1}});
  clock_.Advance(absl::Seconds(8));  // 16 s: past the first lease
  Heartbeat(w1, {{"t1", "u1", 1}});
  clock_.Advance(absl::Seconds(9));  // 25 s
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1"));
  clock_.Advance(absl::Seconds(1));  // 26 s = last heartbeat + 10 s
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "lost t1/u1#1 counted"));
}

TEST_F(DispatcherTest, HeartbeatListingAnotherAttemptDoesNotExtendTheLease) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1", /*attempt=*/2));
  clock_.Advance(absl::Seconds(8));
  Heartbeat(w1, {{"t1", "u1", 1}});
  clock_.Advance(absl::Seconds(2));
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#2 on w1", "lost t1/u1#2 counted"));
}

TEST_F(DispatcherTest, HeartbeatOmittingACallLosesItOnlyFromTheSecondOn) {
  Worker w1 = Connect("w1");
  Heartbeat(w1, {});
  dispatcher_->Enqueue(Call("t1", "u1"));
  // This heartbeat may have crossed the assignment in flight.
  Heartbeat(w1, {});
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1"));
  // This one was sent after the worker had the assignment.
  Heartbeat(w1, {});
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "lost t1/u1#1 counted"));
  EXPECT_THAT(listener_.messages[0], HasSubstr("no longer reports"));
  EXPECT_EQ(dispatcher_->running_calls(), 0);
}

TEST_F(DispatcherTest, HeartbeatListingACallKeepsIt) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  for (int i = 0; i < 5; ++i) Heartbeat(w1, {{"t1", "u1", 1}});
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1"));
  EXPECT_EQ(dispatcher_->running_calls(), 1);
}

// ---- Worker loss, return, draining ----------------------------------------

TEST_F(DispatcherTest, RemoveWorkerLosesEveryHeldCall) {
  Worker w1 = Connect("w1", /*slots=*/2);
  dispatcher_->Enqueue(Call("t1", "u1"));
  dispatcher_->Enqueue(Call("t2", "u2"));
  dispatcher_->RemoveWorker(w1.session, "stream broke");
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "started t2/u2#1 on w1",
                          "lost t1/u1#1 counted", "lost t2/u2#1 counted"));
  EXPECT_THAT(listener_.messages[0], HasSubstr("stream broke"));
  EXPECT_EQ(dispatcher_->connected_workers(), 0);
  EXPECT_EQ(dispatcher_->running_calls(), 0);
  EXPECT_THAT(w1.link->Cancels(), IsEmpty());
  // Unknown sessions are ignored.
  dispatcher_->RemoveWorker(w1.session, "again");
  dispatcher_->RemoveWorker(999, "never");
  EXPECT_THAT(listener_.log, SizeIs(4));
}

TEST_F(DispatcherTest, ReturnCallLosesTheCallWithoutCountingAnAttempt) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  Return(w1, "t1", "u1", 2);  // not the attempt it runs: ignored
  EXPECT_EQ(dispatcher_->running_calls(), 1);
  Return(w1, "t1", "u1", 1);
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "lost t1/u1#1 uncounted"));
  EXPECT_EQ(dispatcher_->running_calls(), 0);
}

TEST_F(DispatcherTest, ListenerMayReEnqueueFromInsideOnCallLost) {
  Worker w1 = Connect("w1", /*slots=*/2);
  dispatcher_->Enqueue(Call("t1", "u1"));
  dispatcher_->Enqueue(Call("t1", "u2"));
  Worker w2 = Connect("w2", /*slots=*/2);
  listener_.on_lost = [this](const CallRef& ref) {
    CallSpec again = Call(ref.task_id, ref.tool_use_id, ref.attempt + 1);
    dispatcher_->Enqueue(again);
  };
  dispatcher_->RemoveWorker(w1.session, "gone");
  EXPECT_THAT(w2.link->AssignedNames(), ElementsAre("t1/u1#2", "t1/u2#2"));
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "started t1/u2#1 on w1",
                          "lost t1/u1#1 counted", "started t1/u1#2 on w2",
                          "lost t1/u2#1 counted", "started t1/u2#2 on w2"));
  EXPECT_EQ(dispatcher_->running_calls(), 2);
}

TEST_F(DispatcherTest, ListenerReEnqueueAfterLeaseExpiryGoesToTheSameQueue) {
  Worker w1 = Connect("w1");
  listener_.on_lost = [this](const CallRef& ref) {
    dispatcher_->Enqueue(Call(ref.task_id, ref.tool_use_id, ref.attempt + 1));
  };
  dispatcher_->Enqueue(Call("t1", "u1"));
  clock_.Advance(absl::Seconds(10));
  // The lease expiry freed the slot, so attempt 2 went to w1 again.
  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/u1#1", "t1/u1#2"));
  EXPECT_EQ(FromProto(w1.link->Assignments()[1].lease_expiry()),
            kStart + absl::Seconds(20));
}

TEST_F(DispatcherTest, MalformedWorkerMessageClosesTheStream) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  v1::WorkerMessage second_hello;
  *second_hello.mutable_hello() = MakeHello("w1", {Tool("echo")}, 1);
  dispatcher_->OnWorkerMessage(w1.session, second_hello);
  ASSERT_TRUE(w1.link->closed.has_value());
  EXPECT_THAT(*w1.link->closed, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(dispatcher_->connected_workers(), 0);
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "lost t1/u1#1 counted"));

  Worker w2 = Connect("w2");
  dispatcher_->OnWorkerMessage(w2.session, v1::WorkerMessage());
  ASSERT_TRUE(w2.link->closed.has_value());
  EXPECT_THAT(*w2.link->closed, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(dispatcher_->connected_workers(), 0);
}

// ---- Timeouts -------------------------------------------------------------

TEST_F(DispatcherTest, ScheduleToStartTimeoutFailsWithNoWorker) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "busy"));
  dispatcher_->Enqueue(Call("t1", "u1"));
  clock_.Advance(absl::Seconds(9));
  Heartbeat(w1, {{"t1", "busy", 1}});  // keep the first call's lease
  clock_.Advance(absl::Seconds(9));
  Heartbeat(w1, {{"t1", "busy", 1}});
  clock_.Advance(absl::Seconds(9));
  Heartbeat(w1, {{"t1", "busy", 1}});
  clock_.Advance(absl::Seconds(3));  // 30 s
  EXPECT_THAT(listener_.log, ElementsAre("started t1/busy#1 on w1",
                                         "failed t1/u1#1 no_worker"));
  EXPECT_THAT(listener_.messages[0], HasSubstr("no worker took the call"));
  EXPECT_EQ(dispatcher_->queued_calls(), 0);
}

TEST_F(DispatcherTest, ScheduleToStartTimeoutFailsWhenNoWorkerServesTheTool) {
  Connect("w1", 1, {Tool("echo")});
  dispatcher_->Enqueue(Call("t1", "u1", 1, "missing"));
  clock_.Advance(absl::Seconds(30));
  EXPECT_THAT(listener_.log, ElementsAre("failed t1/u1#1 no_worker"));
  EXPECT_THAT(listener_.messages[0],
              HasSubstr("no connected worker serves tool \"missing\""));
}

TEST_F(DispatcherTest, StartToCloseTimeoutFailsTheCallAndCancelsIt) {
  DispatcherOptions options;
  options.start_to_close_timeout = absl::Seconds(5);
  Rebuild(options);
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  dispatcher_->Enqueue(Call("t1", "u2"));
  clock_.Advance(absl::Seconds(5));
  EXPECT_THAT(listener_.log,
              ElementsAre("started t1/u1#1 on w1", "failed t1/u1#1 timeout",
                          "started t1/u2#1 on w1"));
  ASSERT_THAT(w1.link->Cancels(), SizeIs(1));
  const v1::Cancel cancel = w1.link->Cancels()[0];
  EXPECT_EQ(cancel.task_id(), "t1");
  EXPECT_EQ(cancel.tool_use_id(), "u1");
  EXPECT_EQ(cancel.attempt(), 1u);
  EXPECT_EQ(cancel.reason(), v1::CANCEL_REASON_DEADLINE_EXCEEDED);
  EXPECT_FALSE(cancel.message().empty());
  // A late result for the timed-out call is the listener's to judge (the
  // ledger finds the call ended).
  Result(w1, "t1", "u1", 1);
  EXPECT_THAT(listener_.late, ElementsAre("late t1/u1#1 from w1 ok \"done\""));
}

TEST_F(DispatcherTest, StaleTimerDoesNotHitACallThatMovedOn) {
  DispatcherOptions options;
  options.start_to_close_timeout = absl::Seconds(5);
  Rebuild(options);
  defer_posts_ = true;
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  clock_.Advance(absl::Seconds(5));  // the timeout fires, its closure waits
  ASSERT_THAT(posted_, SizeIs(1));
  // Before the engine runs it, the call is re-enqueued as attempt 2 (and
  // assigned again): the old timer must not fail the new delivery.
  dispatcher_->Enqueue(Call("t1", "u1", 2));
  RunPosted();
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1",
                                         "started t1/u1#2 on w1"));
  EXPECT_EQ(dispatcher_->running_calls(), 1);
}

TEST_F(DispatcherTest, TimerClosuresAfterDestructionDoNothing) {
  defer_posts_ = true;
  Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  dispatcher_->Enqueue(Call("t1", "u2"));  // queued: schedule-to-start
  clock_.Advance(absl::Seconds(10));       // lease fires, closure waits
  ASSERT_THAT(posted_, SizeIs(1));
  dispatcher_.reset();
  RunPosted();
  clock_.Advance(absl::Minutes(10));  // timers were cancelled
  EXPECT_THAT(posted_, IsEmpty());
  EXPECT_EQ(clock_.PendingTimers(), 0u);
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1"));
}

// ---- Cancel and replace -----------------------------------------------------

TEST_F(DispatcherTest, CancelOfAQueuedCallRemovesItSilently) {
  dispatcher_->Enqueue(Call("t1", "u1"));
  dispatcher_->Cancel("t1", "u1", v1::CANCEL_REASON_TASK_CANCELLED, "bye");
  EXPECT_EQ(dispatcher_->queued_calls(), 0);
  Worker w1 = Connect("w1");
  clock_.Advance(absl::Minutes(1));
  EXPECT_THAT(w1.link->Assignments(), IsEmpty());
  EXPECT_THAT(listener_.log, IsEmpty());
  dispatcher_->Cancel("t1", "unknown", v1::CANCEL_REASON_TASK_CANCELLED, "");
}

TEST_F(DispatcherTest, CancelOfARunningCallSendsCancelToItsWorker) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1"));
  dispatcher_->Enqueue(Call("t2", "u2"));
  dispatcher_->Cancel("t1", "u1", v1::CANCEL_REASON_STREAM_ABORTED,
                      "stream failed");
  ASSERT_THAT(w1.link->Cancels(), SizeIs(1));
  const v1::Cancel cancel = w1.link->Cancels()[0];
  EXPECT_EQ(cancel.task_id(), "t1");
  EXPECT_EQ(cancel.tool_use_id(), "u1");
  EXPECT_EQ(cancel.attempt(), 1u);
  EXPECT_EQ(cancel.reason(), v1::CANCEL_REASON_STREAM_ABORTED);
  EXPECT_EQ(cancel.message(), "stream failed");
  // The slot went to the queued call.
  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/u1#1", "t2/u2#1"));
  EXPECT_THAT(listener_.log, ElementsAre("started t1/u1#1 on w1",
                                         "started t2/u2#1 on w1"));
  Result(w1, "t1", "u1", 1);
  EXPECT_EQ(dispatcher_->late_results(), 1);
  EXPECT_EQ(listener_.log.size(), 2u);
}

TEST_F(DispatcherTest, CancelTaskCancelsEveryCallOfTheTaskOnly) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "a"));
  dispatcher_->Enqueue(Call("t1", "b"));
  dispatcher_->Enqueue(Call("t2", "c"));
  dispatcher_->Enqueue(Call("t10", "d"));
  dispatcher_->CancelTask("t1", v1::CANCEL_REASON_TASK_CANCELLED, "client");
  ASSERT_THAT(w1.link->Cancels(), SizeIs(1));
  EXPECT_EQ(w1.link->Cancels()[0].tool_use_id(), "a");
  // t1/b was cancelled while queued, never assigned.
  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/a#1", "t2/c#1"));
  EXPECT_EQ(dispatcher_->queued_calls(), 1);  // t10/d
  EXPECT_EQ(dispatcher_->running_calls(), 1);
}

TEST_F(DispatcherTest, EnqueueReplacesATrackedCall) {
  Worker w1 = Connect("w1");
  dispatcher_->Enqueue(Call("t1", "u1", 1));
  dispatcher_->Enqueue(Call("t1", "u1", 2));
  ASSERT_THAT(w1.link->Cancels(), SizeIs(1));
  EXPECT_EQ(w1.link->Cancels()[0].attempt(), 1u);
  EXPECT_EQ(w1.link->Cancels()[0].reason(), v1::CANCEL_REASON_SUPERSEDED);
  EXPECT_THAT(w1.link->AssignedNames(), ElementsAre("t1/u1#1", "t1/u1#2"));
  EXPECT_EQ(dispatcher_->running_calls(), 1);
  Result(w1, "t1", "u1", 1);
  EXPECT_THAT(listener_.late, ElementsAre("late t1/u1#1 from w1 ok \"done\""));
  EXPECT_EQ(dispatcher_->running_calls(), 1);

  // A queued call is replaced in its queue.
  dispatcher_->Enqueue(Call("t2", "q", 1));
  dispatcher_->Enqueue(Call("t2", "q", 2));
  EXPECT_EQ(dispatcher_->queued_calls(), 1);
  Result(w1, "t1", "u1", 2);
  EXPECT_THAT(w1.link->AssignedNames(),
              ElementsAre("t1/u1#1", "t1/u1#2", "t2/q#2"));
}

// ---- Hello ------------------------------------------------------------------

TEST_F(DispatcherTest, WelcomeCarriesVersionTimingsAndTools) {
  std::shared_ptr<RecordingLink> link;
  auto welcome =
      Add(MakeHello("w1", {Tool("echo"), Tool("grep")}, 2), &link);
  ASSERT_THAT(welcome, IsOk());
  EXPECT_EQ(welcome->protocol_version(), 1u);
  EXPECT_EQ(TimeUtil::DurationToNanoseconds(welcome->heartbeat_interval()),
            absl::ToInt64Nanoseconds(absl::Seconds(2)));
  EXPECT_EQ(TimeUtil::DurationToNanoseconds(welcome->lease_duration()),
            absl::ToInt64Nanoseconds(absl::Seconds(10)));
  EXPECT_THAT(welcome->accepted_tools(), ElementsAre("echo", "grep"));
  ASSERT_THAT(link->sent, SizeIs(1));
  EXPECT_EQ(link->sent[0].welcome().SerializeAsString(),
            welcome->SerializeAsString());
}

TEST_F(DispatcherTest, HelloValidationErrorsHaveTheirCodes) {
  using absl::StatusCode;
  struct Case {
    std::string label;
    v1::Hello hello;
    StatusCode code;
  };
  std::vector<Case> cases;
  cases.push_back({"empty id", MakeHello("", {Tool("echo")}, 1),
                   StatusCode::kInvalidArgument});
  cases.push_back({"zero slots", MakeHello("w", {Tool("echo")}, 0),
                   StatusCode::kInvalidArgument});
  cases.push_back({"tool without name", MakeHello("w", {Tool("")}, 1),
                   StatusCode::kInvalidArgument});
  cases.push_back({"bad tool name", MakeHello("w", {Tool("a b")}, 1),
                   StatusCode::kInvalidArgument});
  cases.push_back({"duplicate tool",
                   MakeHello("w", {Tool("echo"), Tool("echo")}, 1),
                   StatusCode::kInvalidArgument});
  cases.push_back({"schema is an array",
                   MakeHello("w", {Tool("echo", "d", "[]")}, 1),
                   StatusCode::kInvalidArgument});
  cases.push_back({"schema is not JSON",
                   MakeHello("w", {Tool("echo", "d", "{oops")}, 1),
                   StatusCode::kInvalidArgument});
  cases.push_back({"schema is empty",
                   MakeHello("w", {Tool("echo", "d", "")}, 1),
                   StatusCode::kInvalidArgument});
  v1::Hello unversioned = MakeHello("w", {Tool("echo")}, 1);
  unversioned.set_protocol_version(0);
  cases.push_back(
      {"version 0", unversioned, StatusCode::kFailedPrecondition});
  v1::Hello future = MakeHello("w", {Tool("echo")}, 1);
  future.set_protocol_version(2);
  cases.push_back({"version 2", future, StatusCode::kFailedPrecondition});

  for (const Case& c : cases) {
    std::shared_ptr<RecordingLink> link;
    EXPECT_THAT(Add(c.hello, &link), StatusIs(c.code)) << c.label;
    EXPECT_THAT(link->sent, IsEmpty()) << c.label;
  }
  EXPECT_EQ(dispatcher_->connected_workers(), 0);

  auto status = Add(future);
  EXPECT_THAT(status, StatusIs(StatusCode::kFailedPrecondition,
                               HasSubstr("this orchestrator speaks 1")));
}

TEST_F(DispatcherTest, SecondStreamWithTheSameWorkerIdIsAlreadyExists) {
  Connect("w1");
  EXPECT_THAT(Add(MakeHello("w1", {Tool("echo")}, 1)),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(dispatcher_->connected_workers(), 1);
  // Once the first stream is gone, the id may connect again.
  dispatcher_->RemoveWorker(1, "reconnect");
  EXPECT_THAT(Add(MakeHello("w1", {Tool("echo")}, 1)), IsOk());
}

TEST_F(DispatcherTest, WorkersBeyondTheLimitAreResourceExhausted) {
  DispatcherOptions options;
  options.max_workers = 2;
  Rebuild(options);
  Connect("w1");
  Connect("w2");
  EXPECT_THAT(Add(MakeHello("w3", {Tool("echo")}, 1)),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(dispatcher_->connected_workers(), 2);
}

TEST_F(DispatcherTest, RejectedForCarriesTheCodeAndVersions) {
  DispatcherOptions options;
  options.protocol_versions = {1, 3};
  const v1::OrchestratorMessage message = RejectedFor(
      absl::FailedPreconditionError("protocol_version 2 not supported"),
      options);
  ASSERT_TRUE(message.has_rejected());
  EXPECT_EQ(message.rejected().code(), 9);  // grpc FAILED_PRECONDITION
  EXPECT_EQ(message.rejected().message(), "protocol_version 2 not supported");
  EXPECT_THAT(message.rejected().supported_protocol_versions(),
              ElementsAre(1u, 3u));
  EXPECT_EQ(RejectedFor(absl::ResourceExhaustedError("full"), options)
                .rejected()
                .code(),
            8);
}

TEST_F(DispatcherTest, ToolWithAClashingDefinitionIsNotAccepted) {
  Connect("w1", 1,
          {Tool("echo", "Echoes", R"({"type":"object","properties":{}})")});
  std::shared_ptr<RecordingLink> link2;
  auto welcome2 = Add(
      MakeHello("w2",
                {Tool("echo", "Something else",
                      R"({"type":"object","properties":{}})"),
                 Tool("grep")},
                1),
      &link2);
  ASSERT_THAT(welcome2, IsOk());
  EXPECT_THAT(welcome2->accepted_tools(), ElementsAre("grep"));

  auto welcome3 = Add(MakeHello(
      "w3", {Tool("echo", "Echoes", R"({"type":"object","required":["x"]})")},
      1));
  ASSERT_THAT(welcome3, IsOk());
  EXPECT_THAT(welcome3->accepted_tools(), IsEmpty());

  // The same definition, keys in another order and other spacing: accepted.
  auto welcome4 = Add(MakeHello(
      "w4", {Tool("echo", "Echoes", R"({ "properties": {}, "type": "object" })")},
      1));
  ASSERT_THAT(welcome4, IsOk());
  EXPECT_THAT(welcome4->accepted_tools(), ElementsAre("echo"));

  // echo calls never reach w2.
  dispatcher_->Enqueue(Call("t1", "a"));
  dispatcher_->Enqueue(Call("t1", "b"));
  dispatcher_->Enqueue(Call("t1", "c"));
  EXPECT_THAT(link2->Assignments(), IsEmpty());
  EXPECT_EQ(dispatcher_->queued_calls(), 1);
  ASSERT_TRUE(dispatcher_->FindTool("echo").has_value());
  EXPECT_EQ(dispatcher_->FindTool("echo")->description(), "Echoes");
}

// ---- Queries ----------------------------------------------------------------

TEST_F(DispatcherTest, FindToolAndAllToolsCoverConnectedWorkers) {
  EXPECT_FALSE(dispatcher_->FindTool("echo").has_value());
  EXPECT_THAT(dispatcher_->AllTools(), IsEmpty());
  Worker w1 = Connect("w1", 1, {Tool("zip"), Tool("echo")});
  Connect("w2", 1, {Tool("echo"), Tool("awk")});
  std::vector<std::string> names;
  for (const auto& tool : dispatcher_->AllTools()) names.push_back(tool.name());
  EXPECT_THAT(names, ElementsAre("awk", "echo", "zip"));
  ASSERT_TRUE(dispatcher_->FindTool("zip").has_value());
  EXPECT_EQ(dispatcher_->FindTool("zip")->input_schema_json(),
            R"({"type":"object"})");
  dispatcher_->RemoveWorker(w1.session, "bye");
  EXPECT_FALSE(dispatcher_->FindTool("zip").has_value());
}

TEST_F(DispatcherTest, ListWorkersReportsWorkersSortedById) {
  Worker b = Connect("bravo", 3, {Tool("echo"), Tool("grep")});
  clock_.Advance(absl::Seconds(1));
  Connect("alpha", 1, {Tool("echo")});
  dispatcher_->Enqueue(Call("t1", "u1"));  // bravo: 3 free slots
  clock_.Advance(absl::Seconds(1));
  Heartbeat(b, {{"t1", "u1", 1}});

  const v1::ListWorkersResponse response = dispatcher_->ListWorkers();
  ASSERT_THAT(response.workers(), SizeIs(2));
  const v1::WorkerInfo& alpha = response.workers(0);
  const v1::WorkerInfo& bravo = response.workers(1);
  EXPECT_EQ(alpha.worker_id(), "alpha");
  EXPECT_EQ(alpha.running_calls(), 0u);
  EXPECT_EQ(FromProto(alpha.connected_at()), kStart + absl::Seconds(1));
  EXPECT_FALSE(alpha.has_last_heartbeat_at());
  EXPECT_EQ(bravo.worker_id(), "bravo");
  EXPECT_EQ(bravo.worker_version(), "test-1.0");
  EXPECT_THAT(bravo.tools(), ElementsAre("echo", "grep"));
  EXPECT_EQ(bravo.slots(), 3u);
  EXPECT_EQ(bravo.running_calls(), 1u);
  EXPECT_FALSE(bravo.draining());
  EXPECT_EQ(FromProto(bravo.connected_at()), kStart);
  ASSERT_TRUE(bravo.has_last_heartbeat_at());
  EXPECT_EQ(FromProto(bravo.last_heartbeat_at()), kStart + absl::Seconds(2));
}

TEST_F(DispatcherTest, MessagesFromUnknownSessionsAreIgnored) {
  v1::WorkerMessage message;
  message.mutable_heartbeat();
  dispatcher_->OnWorkerMessage(42, message);
  EXPECT_EQ(dispatcher_->connected_workers(), 0);
  EXPECT_THAT(listener_.log, IsEmpty());
}

}  // namespace
}  // namespace toolmesh::orchestrator
