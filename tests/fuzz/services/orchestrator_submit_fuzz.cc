// Fuzz target: Engine::SubmitTask over a fuzzed SubmitTaskRequest.
//
// A real Engine (its own thread, MemoryStore, FakeClock, scripted model
// transport; at most one active task) gets the request twice.
//
// Input: byte 0 is a set of flags. Without kFields the rest is the binary
// SubmitTaskRequest. With kFields the rest, split at 0xFF bytes, fills the
// JSON-text fields of an otherwise valid request, in this order:
//   conversation (messages_json, or prompt with kPrompt), system
//   (system_blocks_json with kSystemBlocks, else system_text; unset when
//   empty), tool_choice_json, thinking_json, then up to four
//   server_tools_json entries;
// kClientTool adds client tool "echo", kKey an idempotency_key, kWorker
// connects a worker serving "echo" (so its definition is used) and sets
// all_worker_tools, kNoMaxTokens leaves max_tokens 0.
//
// Properties checked (a broken one traps):
//  - each SubmitTask reply arrives exactly once, within kReplyTimeout;
//  - the first reply is OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED, and an
//    error carries a message;
//  - the same request again: with an idempotency_key after an OK, OK with
//    created = false and the same task; after an OK without a key,
//    RESOURCE_EXHAUSTED (the limit is one active task); after an error, the
//    same code;
//  - after an OK, the model request that was sent is JSON that the request
//    validator accepts (the engine never sends what the API would reject),
//    GetTask finds the task, and once the model answers end_turn the task
//    is COMPLETED with a conversation that is JSON.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/json.h"
#include "common/request_validator.h"
#include "orchestrator/engine/engine.h"
#include "tests/fuzz/services/engine_harness.h"
#include "toolmesh/v1/task_service.pb.h"
#include "toolmesh/v1/worker_service.pb.h"

namespace toolmesh::fuzzing {
namespace {

using orchestrator::Reply;

enum Flags : std::uint8_t {
  kFields = 1 << 0,
  kPrompt = 1 << 1,
  kSystemBlocks = 1 << 2,
  kClientTool = 1 << 3,
  kKey = 1 << 4,
  kWorker = 1 << 5,
  kNoMaxTokens = 1 << 6,
};

// Accepts the Welcome; the worker never runs anything.
class IdleLink final : public orchestrator::WorkerLink {
 public:
  void Send(v1::OrchestratorMessage) override {}
  void Close(const absl::Status&) override {}
};

std::vector<std::string_view> Split(std::string_view text) {
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t cut = text.find('\xff');
    parts.push_back(text.substr(0, cut));
    if (cut == std::string_view::npos) return parts;
    text.remove_prefix(cut + 1);
  }
}

v1::SubmitTaskRequest FromFields(std::uint8_t flags, std::string_view rest) {
  std::vector<std::string_view> parts = Split(rest);
  parts.resize(std::max<std::size_t>(parts.size(), 4));
  v1::SubmitTaskRequest request;
  v1::TaskSpec& spec = *request.mutable_spec();
  spec.set_model("claude-fuzz");
  if ((flags & kNoMaxTokens) == 0) spec.set_max_tokens(1024);
  if ((flags & kPrompt) != 0) {
    spec.set_prompt(std::string(parts[0]));
  } else {
    spec.set_messages_json(std::string(parts[0]));
  }
  if (!parts[1].empty()) {
    if ((flags & kSystemBlocks) != 0) {
      spec.set_system_blocks_json(std::string(parts[1]));
    } else {
      spec.set_system_text(std::string(parts[1]));
    }
  }
  spec.set_tool_choice_json(std::string(parts[2]));
  spec.set_thinking_json(std::string(parts[3]));
  for (std::size_t i = 4; i < parts.size() && i < 8; ++i) {
    spec.add_server_tools_json(std::string(parts[i]));
  }
  if ((flags & kClientTool) != 0) spec.add_client_tools("echo");
  if ((flags & kKey) != 0) spec.set_idempotency_key("fuzz-key");
  if ((flags & kWorker) != 0) spec.set_all_worker_tools(true);
  return request;
}

void ConnectWorker(orchestrator::Engine& engine) {
  v1::Hello hello;
  hello.set_worker_id("fuzz-worker");
  hello.set_protocol_version(1);
  hello.set_slots(1);
  v1::ToolDefinition* echo = hello.add_tools();
  echo->set_name("echo");
  echo->set_description("Echoes its input.");
  echo->set_input_schema_json(
      R"({"type":"object","properties":{"text":{"type":"string"}},)"
      R"("required":["text"]})");
  engine.WorkerHello(engine.NewWorkerSession(), std::make_shared<IdleLink>(),
                     std::move(hello));
}

bool AllowedFirst(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return true;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kResourceExhausted:
      return !status.message().empty();
    default:
      return false;
  }
}

void RunOne(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t flags = size > 0 ? data[0] : 0;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  if (!rest.empty()) rest.remove_prefix(1);

  v1::SubmitTaskRequest request;
  if ((flags & kFields) != 0) {
    request = FromFields(flags, rest);
  } else if (!request.ParseFromArray(rest.data(),
                                     static_cast<int>(rest.size()))) {
    return;
  }

  orchestrator::EngineOptions options;
  options.max_active_tasks = 1;
  EngineHarness harness(std::move(options));
  orchestrator::Engine& engine = harness.engine();
  if ((flags & kFields) != 0 && (flags & kWorker) != 0) ConnectWorker(engine);

  auto submit = [&]() {
    return harness.Call<v1::SubmitTaskResponse>(
        [&](Reply<v1::SubmitTaskResponse> reply) {
          engine.SubmitTask(orchestrator::Caller{"fuzz"}, request,
                            std::move(reply));
        });
  };
  absl::StatusOr<v1::SubmitTaskResponse> first = submit();
  Check(AllowedFirst(first.status()));
  absl::StatusOr<v1::SubmitTaskResponse> second = submit();
  if (!first.ok()) {
    Check(second.status().code() == first.status().code());
    return;
  }
  Check(first->created() && !first->task_id().empty());
  if (!request.spec().idempotency_key().empty()) {
    Check(second.ok());
    Check(!second->created());
    Check(second->task_id() == first->task_id());
  } else {
    Check(second.status().code() == absl::StatusCode::kResourceExhausted);
  }

  harness.Sync();
  Check(harness.transport().started() == 1);
  absl::StatusOr<common::Json> body =
      common::ParseJson(harness.transport().request_body(0));
  Check(body.ok());
  Check(common::ValidateRequest(*body).empty());

  harness.transport().Answer(0, EndTurnReplySse());
  harness.Sync();
  absl::StatusOr<v1::GetTaskResponse> got = harness.Call<v1::GetTaskResponse>(
      [&](Reply<v1::GetTaskResponse> reply) {
        v1::GetTaskRequest get;
        get.set_task_id(first->task_id());
        engine.GetTask(std::move(get), std::move(reply));
      });
  Check(got.ok());
  Check(got->task().state() == v1::TASK_STATE_COMPLETED);
  Check(common::ParseJson(got->task().conversation_json()).ok());
}

}  // namespace
}  // namespace toolmesh::fuzzing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  toolmesh::fuzzing::RunOne(data, size);
  return 0;
}
