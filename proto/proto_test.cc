// Tests of the toolmesh.v1 wire contract: the generated descriptors name
// exactly the services, methods and message variants the contract promises;
// every message round-trips through the wire format with its JSON text
// untouched; and the generated gRPC code links and frames a real bidi
// stream (callback API server on 127.0.0.1:0) end to end, beside the
// standard health and reflection services.
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "toolmesh/v1/task.pb.h"
#include "toolmesh/v1/task_service.grpc.pb.h"
#include "toolmesh/v1/worker_service.grpc.pb.h"

namespace toolmesh::v1 {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::EnumDescriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::FileDescriptor;
using ::google::protobuf::Message;
using ::google::protobuf::MethodDescriptor;
using ::google::protobuf::OneofDescriptor;
using ::google::protobuf::ServiceDescriptor;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(10);

// ---------------------------------------------------------------------------
// Descriptors.

enum class Streaming { kUnary, kServer, kClient, kBidi };

struct MethodShape {
  std::string name;
  Streaming streaming;
  std::string input;
  std::string output;
};

std::vector<MethodShape> MethodsOf(const ServiceDescriptor& service) {
  std::vector<MethodShape> methods;
  for (int i = 0; i < service.method_count(); ++i) {
    const MethodDescriptor& m = *service.method(i);
    Streaming streaming = Streaming::kUnary;
    if (m.client_streaming() && m.server_streaming()) {
      streaming = Streaming::kBidi;
    } else if (m.server_streaming()) {
      streaming = Streaming::kServer;
    } else if (m.client_streaming()) {
      streaming = Streaming::kClient;
    }
    methods.push_back({m.name(), streaming, m.input_type()->full_name(),
                       m.output_type()->full_name()});
  }
  return methods;
}

bool operator==(const MethodShape& a, const MethodShape& b) {
  return a.name == b.name && a.streaming == b.streaming &&
         a.input == b.input && a.output == b.output;
}

void PrintTo(const MethodShape& m, std::ostream* os) {
  *os << m.name << "(" << m.input << ") -> " << m.output << " kind "
      << static_cast<int>(m.streaming);
}

std::vector<std::string> OneofMembers(const Descriptor& message,
                                      const std::string& oneof) {
  std::vector<std::string> names;
  const OneofDescriptor* descriptor = message.FindOneofByName(oneof);
  if (descriptor == nullptr) return names;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    names.push_back(field->name() + ":" +
                    (field->message_type() != nullptr
                         ? field->message_type()->name()
                         : std::string(field->type_name())));
  }
  return names;
}

TEST(ProtoDescriptorTest, TaskServiceHasExactlyTheContractMethods) {
  const ServiceDescriptor* service =
      SubmitTaskRequest::descriptor()->file()->FindServiceByName(
          "TaskService");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(std::string(TaskService::service_full_name()),
            "toolmesh.v1.TaskService");
  EXPECT_EQ(service->file()->package(), "toolmesh.v1");
  EXPECT_THAT(
      MethodsOf(*service),
      ElementsAre(
          MethodShape{"SubmitTask", Streaming::kUnary,
                      "toolmesh.v1.SubmitTaskRequest",
                      "toolmesh.v1.SubmitTaskResponse"},
          MethodShape{"GetTask", Streaming::kUnary,
                      "toolmesh.v1.GetTaskRequest",
                      "toolmesh.v1.GetTaskResponse"},
          MethodShape{"WatchTask", Streaming::kServer,
                      "toolmesh.v1.WatchTaskRequest", "toolmesh.v1.TaskEvent"},
          MethodShape{"CancelTask", Streaming::kUnary,
                      "toolmesh.v1.CancelTaskRequest",
                      "toolmesh.v1.CancelTaskResponse"},
          MethodShape{"ListTasks", Streaming::kUnary,
                      "toolmesh.v1.ListTasksRequest",
                      "toolmesh.v1.ListTasksResponse"},
          MethodShape{"ListWorkers", Streaming::kUnary,
                      "toolmesh.v1.ListWorkersRequest",
                      "toolmesh.v1.ListWorkersResponse"}));
}

TEST(ProtoDescriptorTest, WorkerServiceHasOneBidiConnect) {
  const ServiceDescriptor* service =
      WorkerMessage::descriptor()->file()->FindServiceByName("WorkerService");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(std::string(WorkerService::service_full_name()),
            "toolmesh.v1.WorkerService");
  EXPECT_THAT(MethodsOf(*service),
              ElementsAre(MethodShape{"Connect", Streaming::kBidi,
                                      "toolmesh.v1.WorkerMessage",
                                      "toolmesh.v1.OrchestratorMessage"}));
}

TEST(ProtoDescriptorTest, StreamMessagesHaveTheContractVariants) {
  EXPECT_THAT(OneofMembers(*WorkerMessage::descriptor(), "message"),
              ElementsAre("hello:Hello", "heartbeat:Heartbeat",
                          "tool_result:ToolResult", "draining:Draining",
                          "return_call:ReturnCall"));
  EXPECT_THAT(OneofMembers(*OrchestratorMessage::descriptor(), "message"),
              ElementsAre("welcome:Welcome", "assignment:Assignment",
                          "cancel:Cancel", "rejected:Rejected"));
  EXPECT_THAT(
      OneofMembers(*TaskEvent::descriptor(), "event"),
      ElementsAre("state_changed:TaskStateChanged", "turn_started:TurnStarted",
                  "turn_retrying:TurnRetrying",
                  "turn_completed:TurnCompleted", "text_delta:TextDelta",
                  "thinking_delta:ThinkingDelta",
                  "tool_transition:ToolTransition", "terminal:TaskTerminal"));
  EXPECT_THAT(OneofMembers(*TaskSpec::descriptor(), "conversation"),
              ElementsAre("prompt:string", "messages_json:string"));
  EXPECT_THAT(OneofMembers(*TaskSpec::descriptor(), "deadline"),
              ElementsAre("deadline_time:Timestamp", "timeout:Duration"));
}

TEST(ProtoDescriptorTest, EventsCarryTaskIdSeqAndTime) {
  const Descriptor& event = *TaskEvent::descriptor();
  ASSERT_NE(event.FindFieldByName("task_id"), nullptr);
  EXPECT_EQ(event.FindFieldByName("task_id")->type(), FieldDescriptor::TYPE_STRING);
  ASSERT_NE(event.FindFieldByName("seq"), nullptr);
  EXPECT_EQ(event.FindFieldByName("seq")->type(), FieldDescriptor::TYPE_UINT64);
  ASSERT_NE(event.FindFieldByName("time"), nullptr);
  EXPECT_EQ(event.FindFieldByName("time")->message_type()->full_name(),
            "google.protobuf.Timestamp");
  // WatchTask resumes from a sequence number of the same type.
  const FieldDescriptor* after =
      WatchTaskRequest::descriptor()->FindFieldByName("after_seq");
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after->type(), FieldDescriptor::TYPE_UINT64);
}

void CheckEnumsOf(const Descriptor& message, std::set<std::string>* seen) {
  for (int i = 0; i < message.enum_type_count(); ++i) {
    const EnumDescriptor& e = *message.enum_type(i);
    seen->insert(e.full_name());
    EXPECT_EQ(e.value(0)->number(), 0) << e.full_name();
  }
  for (int i = 0; i < message.nested_type_count(); ++i) {
    CheckEnumsOf(*message.nested_type(i), seen);
  }
}

TEST(ProtoDescriptorTest, EveryEnumStartsWithUnspecifiedZero) {
  std::set<std::string> seen;
  for (const FileDescriptor* file :
       {TaskSpec::descriptor()->file(), SubmitTaskRequest::descriptor()->file(),
        WorkerMessage::descriptor()->file()}) {
    for (int i = 0; i < file->enum_type_count(); ++i) {
      const EnumDescriptor& e = *file->enum_type(i);
      seen.insert(e.full_name());
      ASSERT_GT(e.value_count(), 1) << e.full_name();
      EXPECT_EQ(e.value(0)->number(), 0) << e.full_name();
      EXPECT_THAT(e.value(0)->name(), HasSubstr("_UNSPECIFIED"))
          << e.full_name();
    }
    for (int i = 0; i < file->message_type_count(); ++i) {
      CheckEnumsOf(*file->message_type(i), &seen);
    }
  }
  EXPECT_EQ(seen, (std::set<std::string>{
                      "toolmesh.v1.TaskState", "toolmesh.v1.ToolKind",
                      "toolmesh.v1.ToolCallState", "toolmesh.v1.ToolErrorReason",
                      "toolmesh.v1.ProtocolVersion",
                      "toolmesh.v1.CancelReason"}));
  EXPECT_EQ(PROTOCOL_VERSION_1, 1);
}

TEST(ProtoDescriptorTest, ToolErrorReasonsMatchTheLedger) {
  // ARCHITECTURE.md "The tool ledger": every ERROR carries one of these.
  std::vector<std::string> names;
  const EnumDescriptor& reasons = *ToolErrorReason_descriptor();
  for (int i = 1; i < reasons.value_count(); ++i) {
    names.push_back(reasons.value(i)->name());
  }
  EXPECT_THAT(names,
              ElementsAre("TOOL_ERROR_REASON_TOOL_FAILED",
                          "TOOL_ERROR_REASON_INVALID_INPUT",
                          "TOOL_ERROR_REASON_TIMEOUT",
                          "TOOL_ERROR_REASON_CANCELLED",
                          "TOOL_ERROR_REASON_WORKER_LOST",
                          "TOOL_ERROR_REASON_NO_WORKER",
                          "TOOL_ERROR_REASON_STREAM_ABORTED",
                          "TOOL_ERROR_REASON_SERVER_RESULT_MISSING",
                          "TOOL_ERROR_REASON_QUEUE_FULL"));
}

// ---------------------------------------------------------------------------
// Round trips.

// JSON text with non-ASCII, escapes and a key order that a re-serialising
// JSON library would change: it must come back byte for byte.
constexpr char kMessagesJson[] =
    R"([{"role":"user","content":"Wie sp\u00e4t ist es? \u2014 caf\u00e9 \ud83d\ude00"},)"
    R"({"role":"assistant","content":[{"type":"server_tool_use","id":"srvtoolu_01",)"
    R"("name":"web_search","input":{"query":"time","z":1,"a":2}}]}])";

// Fails the test unless every field of `message` (recursively) is set:
// singular fields present, repeated fields and maps non-empty, and each
// oneof holding a member. A new field added to the contract without being
// added to the test data below makes this fail.
void ExpectFullyPopulated(const Message& message, const std::string& path) {
  const Descriptor& descriptor = *message.GetDescriptor();
  const auto* reflection = message.GetReflection();
  for (int i = 0; i < descriptor.oneof_decl_count(); ++i) {
    const OneofDescriptor* oneof = descriptor.oneof_decl(i);
    EXPECT_NE(reflection->GetOneofFieldDescriptor(message, oneof), nullptr)
        << path << "." << oneof->name() << " has no member set";
  }
  for (int i = 0; i < descriptor.field_count(); ++i) {
    const FieldDescriptor* field = descriptor.field(i);
    const std::string field_path = path + "." + field->name();
    if (field->is_repeated()) {
      EXPECT_GT(reflection->FieldSize(message, field), 0) << field_path;
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
          !field->is_map() && reflection->FieldSize(message, field) > 0) {
        ExpectFullyPopulated(reflection->GetRepeatedMessage(message, field, 0),
                             field_path + "[0]");
      }
      continue;
    }
    if (field->containing_oneof() != nullptr) {
      // Only the set member counts (checked above).
      if (reflection->HasField(message, field) &&
          field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE &&
          field->message_type()->file()->package() == "toolmesh.v1") {
        ExpectFullyPopulated(reflection->GetMessage(message, field),
                             field_path);
      }
      continue;
    }
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      EXPECT_TRUE(reflection->HasField(message, field)) << field_path;
      if (reflection->HasField(message, field) &&
          field->message_type()->file()->package() == "toolmesh.v1") {
        ExpectFullyPopulated(reflection->GetMessage(message, field),
                             field_path);
      }
      continue;
    }
    // proto3 scalars: "set" means non-default.
    EXPECT_TRUE(reflection->HasField(message, field))
        << field_path << " is left at its default";
  }
}

template <typename T>
T RoundTrip(const T& message) {
  std::string wire;
  EXPECT_TRUE(message.SerializeToString(&wire));
  T parsed;
  EXPECT_TRUE(parsed.ParseFromString(wire));
  // Serialisation is deterministic for the same message in one binary.
  std::string again;
  EXPECT_TRUE(parsed.SerializeToString(&again));
  if (message.GetDescriptor()->FindFieldByName("labels") == nullptr &&
      message.GetDescriptor()->FindFieldByName("spec") == nullptr) {
    EXPECT_EQ(again, wire);
  }
  return parsed;
}

template <typename T>
void ExpectRoundTrips(const T& message) {
  T parsed = RoundTrip(message);
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(message, parsed)) << diff;
}

void SetTime(google::protobuf::Timestamp* t, int64_t seconds, int32_t nanos) {
  t->set_seconds(seconds);
  t->set_nanos(nanos);
}

void SetDuration(google::protobuf::Duration* d, int64_t seconds,
                 int32_t nanos) {
  d->set_seconds(seconds);
  d->set_nanos(nanos);
}

TaskSpec FullSpec() {
  TaskSpec spec;
  spec.set_model("claude-sonnet-4-5");
  spec.set_max_tokens(4096);
  spec.set_system_blocks_json(
      R"([{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}])");
  spec.set_messages_json(kMessagesJson);
  spec.add_client_tools("get_weather");
  spec.add_client_tools("run_sql");
  spec.set_all_worker_tools(true);
  spec.add_server_tools_json(
      R"({"type":"web_search_20250305","name":"web_search","max_uses":3})");
  spec.add_server_tools_json(
      R"({"type":"code_execution_20250522","name":"code_execution"})");
  spec.set_tool_choice_json(R"({"type":"auto","disable_parallel_tool_use":false})");
  spec.set_thinking_json(R"({"type":"enabled","budget_tokens":2048})");
  spec.set_max_turns(12);
  SetDuration(spec.mutable_timeout(), 600, 500);
  spec.set_idempotency_key("submit-7f3a");
  (*spec.mutable_labels())["team"] = "search";
  (*spec.mutable_labels())["run"] = "nightly \xE2\x9C\x93";
  return spec;
}

TEST(ProtoRoundTripTest, FullTaskSpecRoundTripsWithJsonTextVerbatim) {
  TaskSpec spec = FullSpec();
  ExpectFullyPopulated(spec, "spec");
  TaskSpec parsed = RoundTrip(spec);
  EXPECT_TRUE(MessageDifferencer::Equals(spec, parsed));
  EXPECT_EQ(parsed.messages_json(), kMessagesJson);
  EXPECT_EQ(parsed.conversation_case(), TaskSpec::kMessagesJson);
  EXPECT_EQ(parsed.system_case(), TaskSpec::kSystemBlocksJson);
  EXPECT_EQ(parsed.deadline_case(), TaskSpec::kTimeout);
  EXPECT_EQ(parsed.labels().at("run"), "nightly \xE2\x9C\x93");
}

TEST(ProtoRoundTripTest, OtherOneofMembersOfTaskSpecRoundTrip) {
  TaskSpec spec = FullSpec();
  spec.set_system_text("You are terse.");
  spec.set_prompt("What is 2+2?");
  SetTime(spec.mutable_deadline_time(), 1760000000, 123456789);
  TaskSpec parsed = RoundTrip(spec);
  EXPECT_TRUE(MessageDifferencer::Equals(spec, parsed));
  EXPECT_EQ(parsed.system_case(), TaskSpec::kSystemText);
  EXPECT_EQ(parsed.conversation_case(), TaskSpec::kPrompt);
  EXPECT_EQ(parsed.deadline_case(), TaskSpec::kDeadlineTime);
  EXPECT_EQ(parsed.deadline_time().nanos(), 123456789);
  EXPECT_TRUE(parsed.messages_json().empty());
}

TEST(ProtoRoundTripTest, FullTaskRoundTrips) {
  Task task;
  task.set_task_id("task_01HZX");
  *task.mutable_spec() = FullSpec();
  task.set_state(TASK_STATE_FAILED);
  SetTime(task.mutable_created_at(), 1760000000, 1);
  SetTime(task.mutable_updated_at(), 1760000010, 2);
  SetTime(task.mutable_finished_at(), 1760000011, 3);
  task.set_last_seq(18446744073709551615ull);
  task.set_turns(3);
  task.set_stop_reason("tool_use");
  task.mutable_error()->set_type("overloaded_error");
  task.mutable_error()->set_message("Overloaded");
  task.mutable_error()->set_http_status(529);
  task.set_usage_json(R"({"input_tokens":10,"output_tokens":20})");
  task.set_final_message_json(R"({"id":"msg_1","type":"message","content":[]})");
  task.set_conversation_json(kMessagesJson);
  ExpectFullyPopulated(task, "task");
  ExpectRoundTrips(task);
  EXPECT_EQ(RoundTrip(task).last_seq(), 18446744073709551615ull);
}

// One TaskEvent per variant of the `event` oneof, each fully populated.
std::vector<TaskEvent> OneEventOfEachKind() {
  std::vector<TaskEvent> events;
  auto next = [&events]() -> TaskEvent& {
    TaskEvent& event = events.emplace_back();
    event.set_task_id("task_01HZX");
    event.set_seq(events.size());
    SetTime(event.mutable_time(), 1760000000 + static_cast<int64_t>(events.size()),
            500);
    return event;
  };
  {
    TaskStateChanged* e = next().mutable_state_changed();
    e->set_state(TASK_STATE_RUNNING);
    e->set_previous_state(TASK_STATE_QUEUED);
  }
  {
    TurnStarted* e = next().mutable_turn_started();
    e->set_turn(1);
    e->set_attempt(1);
  }
  {
    TurnRetrying* e = next().mutable_turn_retrying();
    e->set_turn(1);
    e->set_attempt(1);
    e->set_reason("overloaded_error");
    e->set_message("Overloaded");
    SetDuration(e->mutable_delay(), 0, 500000000);
    e->set_http_status(529);
  }
  {
    TurnCompleted* e = next().mutable_turn_completed();
    e->set_turn(1);
    e->set_attempt(2);
    e->set_stop_reason("tool_use");
    e->set_usage_json(
        R"({"input_tokens":472,"output_tokens":89,"server_tool_use":{"web_search_requests":1}})");
  }
  {
    TextDelta* e = next().mutable_text_delta();
    e->set_turn(1);
    e->set_attempt(2);
    e->set_block_index(1);
    e->set_text("Let me check \xF0\x9F\x94\x8E");
  }
  {
    ThinkingDelta* e = next().mutable_thinking_delta();
    e->set_turn(1);
    e->set_attempt(2);
    e->set_block_index(2);
    e->set_thinking("The user wants the weather.");
  }
  {
    ToolTransition* e = next().mutable_tool_transition();
    e->set_tool_use_id("toolu_01A");
    e->set_name("get_weather");
    e->set_kind(TOOL_KIND_CLIENT);
    e->set_state(TOOL_CALL_STATE_ERROR);
    e->set_reason(TOOL_ERROR_REASON_WORKER_LOST);
    e->set_message("worker w2 lost; attempts spent");
    e->set_input_json(R"({"city":"Paris","units":"c"})");
    e->set_result_json(
        R"({"type":"tool_result","tool_use_id":"toolu_01A","content":"worker lost","is_error":true})");
    e->set_attempt(3);
    e->set_worker_id("w2");
    e->set_turn(1);
    e->set_block_type("tool_use");
  }
  {
    TaskTerminal* e = next().mutable_terminal();
    e->set_state(TASK_STATE_COMPLETED);
    e->set_stop_reason("end_turn");
    e->mutable_error()->set_type("none");
    e->mutable_error()->set_message("-");
    e->mutable_error()->set_http_status(200);
    e->set_final_message_json(
        R"({"id":"msg_2","type":"message","role":"assistant","content":[{"type":"text","text":"Sunny."}]})");
    e->set_conversation_json(kMessagesJson);
    e->set_usage_json(R"({"input_tokens":900,"output_tokens":150})");
  }
  return events;
}

TEST(ProtoRoundTripTest, EveryTaskEventVariantRoundTrips) {
  std::vector<TaskEvent> events = OneEventOfEachKind();
  std::set<int> cases;
  for (const TaskEvent& event : events) {
    SCOPED_TRACE(event.ShortDebugString());
    ExpectFullyPopulated(event, "event");
    ExpectRoundTrips(event);
    EXPECT_EQ(RoundTrip(event).event_case(), event.event_case());
    cases.insert(event.event_case());
  }
  // Every member of the oneof is exercised above.
  EXPECT_EQ(static_cast<int>(cases.size()),
            TaskEvent::descriptor()->FindOneofByName("event")->field_count());
}

TEST(ProtoRoundTripTest, EveryWorkerStreamMessageRoundTrips) {
  std::vector<WorkerMessage> from_worker(5);
  {
    Hello* hello = from_worker[0].mutable_hello();
    hello->set_worker_id("w1");
    hello->set_protocol_version(PROTOCOL_VERSION_1);
    ToolDefinition* tool = hello->add_tools();
    tool->set_name("get_weather");
    tool->set_description("Current weather for a city.");
    tool->set_input_schema_json(
        R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})");
    hello->set_slots(4);
    hello->set_worker_version("toolmesh-worker 0.1");
  }
  {
    Heartbeat* heartbeat = from_worker[1].mutable_heartbeat();
    RunningCall* call = heartbeat->add_running();
    call->set_task_id("task_1");
    call->set_tool_use_id("toolu_01A");
    call->set_attempt(2);
    heartbeat->set_free_slots(3);
  }
  {
    ToolResult* result = from_worker[2].mutable_tool_result();
    result->set_task_id("task_1");
    result->set_tool_use_id("toolu_01A");
    result->set_attempt(2);
    result->set_content_json(R"([{"type":"text","text":"18\u00b0C"}])");
    result->set_is_error(true);
    SetDuration(result->mutable_duration(), 1, 250000000);
  }
  SetDuration(from_worker[3].mutable_draining()->mutable_grace(), 30, 0);
  {
    ReturnCall* back = from_worker[4].mutable_return_call();
    back->set_task_id("task_1");
    back->set_tool_use_id("toolu_01B");
    back->set_attempt(1);
    back->set_reason("draining");
  }
  std::set<int> worker_cases;
  for (const WorkerMessage& message : from_worker) {
    SCOPED_TRACE(message.ShortDebugString());
    ExpectFullyPopulated(message, "worker_message");
    ExpectRoundTrips(message);
    worker_cases.insert(message.message_case());
  }
  EXPECT_EQ(static_cast<int>(worker_cases.size()),
            WorkerMessage::descriptor()->FindOneofByName("message")->field_count());

  std::vector<OrchestratorMessage> from_orchestrator(4);
  {
    Welcome* welcome = from_orchestrator[0].mutable_welcome();
    welcome->set_protocol_version(PROTOCOL_VERSION_1);
    SetDuration(welcome->mutable_heartbeat_interval(), 5, 0);
    SetDuration(welcome->mutable_lease_duration(), 20, 0);
    welcome->add_accepted_tools("get_weather");
  }
  {
    Assignment* assignment = from_orchestrator[1].mutable_assignment();
    assignment->set_task_id("task_1");
    assignment->set_tool_use_id("toolu_01A");
    assignment->set_attempt(2);
    assignment->set_name("get_weather");
    assignment->set_input_json(R"({"city":"Paris"})");
    SetTime(assignment->mutable_deadline(), 1760000100, 0);
    SetTime(assignment->mutable_lease_expiry(), 1760000020, 0);
  }
  {
    Cancel* cancel = from_orchestrator[2].mutable_cancel();
    cancel->set_task_id("task_1");
    cancel->set_tool_use_id("toolu_01A");
    cancel->set_attempt(2);
    cancel->set_reason(CANCEL_REASON_TASK_CANCELLED);
    cancel->set_message("cancelled by client");
  }
  {
    Rejected* rejected = from_orchestrator[3].mutable_rejected();
    rejected->set_code(static_cast<int32_t>(grpc::StatusCode::FAILED_PRECONDITION));
    rejected->set_message("protocol_version 2 not supported");
    rejected->add_supported_protocol_versions(PROTOCOL_VERSION_1);
  }
  std::set<int> orchestrator_cases;
  for (const OrchestratorMessage& message : from_orchestrator) {
    SCOPED_TRACE(message.ShortDebugString());
    ExpectFullyPopulated(message, "orchestrator_message");
    ExpectRoundTrips(message);
    orchestrator_cases.insert(message.message_case());
  }
  EXPECT_EQ(
      static_cast<int>(orchestrator_cases.size()),
      OrchestratorMessage::descriptor()->FindOneofByName("message")->field_count());
}

TEST(ProtoRoundTripTest, ServiceRequestsAndResponsesRoundTrip) {
  SubmitTaskRequest submit;
  *submit.mutable_spec() = FullSpec();
  ExpectFullyPopulated(submit, "submit");
  ExpectRoundTrips(submit);

  SubmitTaskResponse submitted;
  submitted.set_task_id("task_1");
  submitted.set_created(true);
  submitted.mutable_task()->set_task_id("task_1");
  ExpectRoundTrips(submitted);

  WatchTaskRequest watch;
  watch.set_task_id("task_1");
  watch.set_after_seq(41);
  watch.set_omit_deltas(true);
  ExpectFullyPopulated(watch, "watch");
  ExpectRoundTrips(watch);

  CancelTaskRequest cancel;
  cancel.set_task_id("task_1");
  cancel.set_reason("user pressed ^C");
  ExpectFullyPopulated(cancel, "cancel");
  ExpectRoundTrips(cancel);

  ListTasksRequest list;
  list.set_page_size(50);
  list.set_page_token("opaque");
  list.add_states(TASK_STATE_RUNNING);
  list.add_states(TASK_STATE_CANCELLING);
  (*list.mutable_label_selector())["team"] = "search";
  ExpectFullyPopulated(list, "list");
  ExpectRoundTrips(list);

  ListTasksResponse listed;
  listed.add_tasks()->set_task_id("task_2");
  listed.add_tasks()->set_task_id("task_1");
  listed.set_next_page_token("next");
  ListTasksResponse parsed = RoundTrip(listed);
  ASSERT_EQ(parsed.tasks_size(), 2);
  EXPECT_EQ(parsed.tasks(0).task_id(), "task_2");
  EXPECT_EQ(parsed.next_page_token(), "next");
}

TEST(ProtoRoundTripTest, GarbageBytesFailToParseWithoutCrashing) {
  TaskEvent event;
  // A length-delimited field whose length runs past the end.
  EXPECT_FALSE(event.ParseFromString(std::string("\x0a\x7f" "abc", 5)));
  WorkerMessage worker;
  EXPECT_FALSE(worker.ParseFromString(std::string("\x0a\xff\xff\xff\xff\x0f", 6)));
}

// ---------------------------------------------------------------------------
// A real gRPC server on loopback.

// Test double of WorkerService.Connect on the callback API: answers a Hello
// with Welcome and one Assignment (two writes, one in flight at a time),
// records the ToolResult, then ends the stream with OK. A Hello with another
// protocol version gets Rejected and FAILED_PRECONDITION; any other first
// message gets INVALID_ARGUMENT.
class EchoWorkerService final : public WorkerService::CallbackService {
 public:
  grpc::ServerBidiReactor<WorkerMessage, OrchestratorMessage>* Connect(
      grpc::CallbackServerContext* /*context*/) override {
    return new Reactor(this);
  }

  // Blocks until a ToolResult arrived or `timeout` passed.
  bool WaitForResult(absl::Duration timeout, ToolResult* result) {
    if (!result_seen_.WaitForNotificationWithTimeout(timeout)) return false;
    absl::MutexLock lock(&mu_);
    *result = result_;
    return true;
  }

  // Blocks until a reactor finished (OnDone) or `timeout` passed.
  bool WaitForDone(absl::Duration timeout) {
    return done_.WaitForNotificationWithTimeout(timeout);
  }

  std::string hello_worker_id() {
    absl::MutexLock lock(&mu_);
    return hello_worker_id_;
  }

 private:
  class Reactor final
      : public grpc::ServerBidiReactor<WorkerMessage, OrchestratorMessage> {
   public:
    explicit Reactor(EchoWorkerService* service) : service_(service) {
      StartRead(&in_);
    }

    void OnReadDone(bool ok) override {
      if (!ok) {
        // The worker closed its side before a result.
        Finish(grpc::Status(grpc::StatusCode::ABORTED, "stream closed early"));
        return;
      }
      if (!got_hello_) {
        if (!in_.has_hello()) {
          Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "first message must be hello"));
          return;
        }
        got_hello_ = true;
        {
          absl::MutexLock lock(&service_->mu_);
          service_->hello_worker_id_ = in_.hello().worker_id();
        }
        if (in_.hello().protocol_version() != PROTOCOL_VERSION_1) {
          Rejected* rejected = out_[0].mutable_rejected();
          rejected->set_code(
              static_cast<int32_t>(grpc::StatusCode::FAILED_PRECONDITION));
          rejected->set_message("unsupported protocol_version");
          rejected->add_supported_protocol_versions(PROTOCOL_VERSION_1);
          final_status_ = grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                       "unsupported protocol_version");
          pending_writes_ = 1;
          StartWrite(&out_[0]);
          return;
        }
        Welcome* welcome = out_[0].mutable_welcome();
        welcome->set_protocol_version(PROTOCOL_VERSION_1);
        welcome->mutable_heartbeat_interval()->set_seconds(5);
        welcome->mutable_lease_duration()->set_seconds(20);
        for (const ToolDefinition& tool : in_.hello().tools()) {
          welcome->add_accepted_tools(tool.name());
        }
        Assignment* assignment = out_[1].mutable_assignment();
        assignment->set_task_id("task_1");
        assignment->set_tool_use_id("toolu_01A");
        assignment->set_attempt(1);
        assignment->set_name(in_.hello().tools(0).name());
        assignment->set_input_json(R"({"text":"h\u00e9llo"})");
        pending_writes_ = 2;
        StartWrite(&out_[0]);
        StartRead(&in_);
        return;
      }
      if (in_.has_tool_result()) {
        {
          absl::MutexLock lock(&service_->mu_);
          service_->result_ = in_.tool_result();
        }
        service_->result_seen_.Notify();
        result_received_ = true;
        MaybeFinish();
        return;
      }
      // Heartbeats and anything else: keep reading.
      StartRead(&in_);
    }

    void OnWriteDone(bool ok) override {
      if (!ok) {
        Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
        return;
      }
      ++writes_done_;
      if (writes_done_ < pending_writes_) {
        StartWrite(&out_[writes_done_]);
        return;
      }
      if (!final_status_.ok()) {
        Finish(final_status_);
        return;
      }
      MaybeFinish();
    }

    void OnDone() override {
      service_->done_.Notify();
      delete this;
    }

   private:
    // Finish only when every write completed and the result arrived, so
    // that no write is in flight at Finish.
    void MaybeFinish() {
      if (result_received_ && writes_done_ == pending_writes_) {
        Finish(grpc::Status::OK);
      }
    }

    EchoWorkerService* const service_;
    WorkerMessage in_;
    OrchestratorMessage out_[2];
    int pending_writes_ = 0;
    int writes_done_ = 0;
    bool got_hello_ = false;
    bool result_received_ = false;
    grpc::Status final_status_;
  };

  absl::Mutex mu_;
  ToolResult result_ ABSL_GUARDED_BY(mu_);
  std::string hello_worker_id_ ABSL_GUARDED_BY(mu_);
  absl::Notification result_seen_;
  absl::Notification done_;
};

class WorkerServiceStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                   grpc::InsecureChannelCredentials());
    worker_client_ = WorkerService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(5));
    }
  }

  static void SetDeadline(grpc::ClientContext* context) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + kWait));
  }

  static WorkerMessage HelloMessage(uint32_t version) {
    WorkerMessage message;
    Hello* hello = message.mutable_hello();
    hello->set_worker_id("w1");
    hello->set_protocol_version(version);
    hello->set_slots(2);
    ToolDefinition* tool = hello->add_tools();
    tool->set_name("echo");
    tool->set_description("Echoes its input.");
    tool->set_input_schema_json(R"({"type":"object"})");
    return message;
  }

  EchoWorkerService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<WorkerService::StubInterface> worker_client_;
};

TEST_F(WorkerServiceStreamTest, HelloGetsWelcomeAndAssignmentGetsResult) {
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = worker_client_->Connect(&context);
  ASSERT_TRUE(stream->Write(HelloMessage(PROTOCOL_VERSION_1)));

  OrchestratorMessage welcome;
  ASSERT_TRUE(stream->Read(&welcome));
  ASSERT_TRUE(welcome.has_welcome()) << welcome.ShortDebugString();
  EXPECT_EQ(welcome.welcome().protocol_version(),
            static_cast<uint32_t>(PROTOCOL_VERSION_1));
  EXPECT_EQ(welcome.welcome().heartbeat_interval().seconds(), 5);
  EXPECT_THAT(welcome.welcome().accepted_tools(), ElementsAre("echo"));

  OrchestratorMessage assignment;
  ASSERT_TRUE(stream->Read(&assignment));
  ASSERT_TRUE(assignment.has_assignment()) << assignment.ShortDebugString();
  EXPECT_EQ(assignment.assignment().name(), "echo");
  EXPECT_EQ(assignment.assignment().input_json(), R"({"text":"h\u00e9llo"})");

  // A heartbeat in between is read and ignored by the double.
  WorkerMessage heartbeat;
  RunningCall* running = heartbeat.mutable_heartbeat()->add_running();
  running->set_task_id(assignment.assignment().task_id());
  running->set_tool_use_id(assignment.assignment().tool_use_id());
  running->set_attempt(assignment.assignment().attempt());
  ASSERT_TRUE(stream->Write(heartbeat));

  WorkerMessage result;
  ToolResult* tool_result = result.mutable_tool_result();
  tool_result->set_task_id(assignment.assignment().task_id());
  tool_result->set_tool_use_id(assignment.assignment().tool_use_id());
  tool_result->set_attempt(assignment.assignment().attempt());
  // The echo tool returns its input as content blocks.
  tool_result->set_content_json(R"([{"type":"text","text":)" +
                                assignment.assignment().input_json() + "}]");
  tool_result->mutable_duration()->set_nanos(1000);
  ASSERT_TRUE(stream->Write(result));
  stream->WritesDone();

  OrchestratorMessage end;
  EXPECT_FALSE(stream->Read(&end));
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_code() << " "
                           << status.error_message();

  ToolResult seen;
  ASSERT_TRUE(service_.WaitForResult(kWait, &seen));
  EXPECT_TRUE(MessageDifferencer::Equals(seen, *tool_result));
  EXPECT_EQ(service_.hello_worker_id(), "w1");
  EXPECT_TRUE(service_.WaitForDone(kWait));
}

TEST_F(WorkerServiceStreamTest, UnsupportedProtocolVersionIsRejected) {
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = worker_client_->Connect(&context);
  ASSERT_TRUE(stream->Write(HelloMessage(2)));
  OrchestratorMessage reply;
  ASSERT_TRUE(stream->Read(&reply));
  ASSERT_TRUE(reply.has_rejected()) << reply.ShortDebugString();
  EXPECT_EQ(reply.rejected().code(),
            static_cast<int32_t>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_THAT(reply.rejected().supported_protocol_versions(),
              ElementsAre(static_cast<uint32_t>(PROTOCOL_VERSION_1)));
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(status.error_message(), "unsupported protocol_version");
}

TEST_F(WorkerServiceStreamTest, FirstMessageOtherThanHelloIsInvalidArgument) {
  grpc::ClientContext context;
  SetDeadline(&context);
  auto stream = worker_client_->Connect(&context);
  WorkerMessage heartbeat;
  heartbeat.mutable_heartbeat()->set_free_slots(1);
  ASSERT_TRUE(stream->Write(heartbeat));
  OrchestratorMessage reply;
  EXPECT_FALSE(stream->Read(&reply));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "first message must be hello");
}

TEST_F(WorkerServiceStreamTest, TaskServiceClientReachesTheServer) {
  // The generated TaskService client links and reaches the server; this
  // server registers no TaskService, so gRPC answers with the code for an
  // unknown method.
  std::unique_ptr<TaskService::StubInterface> tasks = TaskService::NewStub(channel_);
  grpc::ClientContext context;
  SetDeadline(&context);
  GetTaskRequest request;
  request.set_task_id("task_1");
  GetTaskResponse response;
  grpc::Status status = tasks->GetTask(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// Calls `method` with `request` bytes through the generic callback client and
// returns the status and the response bytes.
std::pair<grpc::Status, std::string> GenericUnary(grpc::Channel* channel,
                                                  const std::string& method,
                                                  const std::string& request) {
  grpc::GenericStub generic(channel->shared_from_this());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kWait));
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  absl::Notification done;
  grpc::Status status;
  generic.UnaryCall(&context, method, grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  if (!done.WaitForNotificationWithTimeout(kWait + absl::Seconds(5))) {
    ADD_FAILURE() << "no completion for " << method;
    context.TryCancel();
    done.WaitForNotification();
  }
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (status.ok() && response_buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return {status, bytes};
}

TEST_F(WorkerServiceStreamTest, StandardHealthServiceAnswersServing) {
  // grpc.health.v1.HealthCheckRequest{service: ""} is the empty message;
  // HealthCheckResponse{status: SERVING (1)} is field 1 varint 1.
  auto [status, bytes] = GenericUnary(channel_.get(),
                                      "/grpc.health.v1.Health/Check", "");
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

// Client half of one server-reflection exchange over the generic client:
// sends one request, reads one response, half-closes.
class ReflectionCall final
    : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReflectionCall(grpc::Channel* channel, const std::string& request)
      : generic_(channel->shared_from_this()), request_slice_(request),
        request_(&request_slice_, 1) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + kWait));
    generic_.PrepareBidiStreamingCall(
        &context_, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        grpc::StubOptions(), this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }

  void OnWriteDone(bool /*ok*/) override { StartWritesDone(); }
  void OnReadDone(bool ok) override {
    if (ok) {
      std::vector<grpc::Slice> slices;
      if (response_.Dump(&slices).ok()) {
        absl::MutexLock lock(&mu_);
        for (const grpc::Slice& s : slices) {
          bytes_.append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
      }
    }
  }
  void OnDone(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      status_ = status;
    }
    done_.Notify();
  }

  // Waits (bounded) for the call to end; returns its status and the bytes
  // of the response.
  std::pair<grpc::Status, std::string> Await() {
    if (!done_.WaitForNotificationWithTimeout(kWait + absl::Seconds(5))) {
      context_.TryCancel();
      done_.WaitForNotification();
    }
    absl::MutexLock lock(&mu_);
    return {status_, bytes_};
  }

 private:
  grpc::GenericStub generic_;
  grpc::ClientContext context_;
  grpc::Slice request_slice_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  absl::Mutex mu_;
  std::string bytes_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  absl::Notification done_;
};

TEST_F(WorkerServiceStreamTest, ServerReflectionListsTheToolmeshService) {
  // ServerReflectionRequest{list_services: ""}: field 7, length 0.
  ReflectionCall call(channel_.get(), std::string("\x3a\x00", 2));
  auto [status, bytes] = call.Await();
  ASSERT_TRUE(status.ok()) << status.error_code() << " "
                           << status.error_message();
  EXPECT_THAT(bytes, HasSubstr("toolmesh.v1.WorkerService"));
  EXPECT_THAT(bytes, HasSubstr("grpc.health.v1.Health"));
}

}  // namespace
}  // namespace toolmesh::v1
