// Fuzz target: the orchestrator's handling of a worker's Connect stream.
//
// A real Engine (its own thread, MemoryStore, FakeClock, scripted model
// transport) gets a worker session through the EngineApi seam the gRPC
// reactor uses (NewWorkerSession, WorkerHello, WorkerMessage, WorkerGone)
// and then a fuzzed sequence of WorkerMessages. To reach deep states the
// harness can first submit a task whose model reply calls client tool
// "echo", so the worker holds a real Assignment, and can patch the fuzzed
// messages' (task_id, tool_use_id, attempt) to that call's.
//
// Input: byte 0 is a set of flags (kDeep, kPatchIds, kHelloFromInput,
// kRaw, kAnswerEndTurn); with kHelloFromInput a 2-byte little-endian length
// and a binary Hello proto follow (the fixed Hello when it does not parse);
// then records, each an op byte and its operands:
//   op % 4 == 0  a WorkerMessage: 2-byte little-endian length, then its
//                binary proto (skipped when it does not parse)
//   op % 4 == 1  advance the clock by (next byte) * 250 ms (leases,
//                heartbeat and dispatch timeouts fire)
//   op % 4 == 2  answer every model stream not yet answered (a tool_use
//                reply, or end_turn with kAnswerEndTurn)
//   op % 4 == 3  reconnect: WorkerGone for the session, a new session with
//                the same Hello
// With kRaw the bytes after byte 0 are one WorkerMessage instead (with
// kHelloFromInput also the Hello, when it holds one).
//
// Properties checked (a broken one traps):
//  - every Reply arrives exactly once, within kReplyTimeout (no hang);
//  - a link's first message is Welcome or Rejected; Rejected is followed
//    by Close with a non-OK status; nothing is sent after Close;
//  - every Assignment names a tool of the Hello, has a task_id, a
//    tool_use_id, attempt >= 1 and input_json that is a JSON object;
//  - after WorkerGone for every session, ListWorkers lists no worker;
//  - GetTask of the submitted task succeeds and its conversation_json is
//    JSON; CancelTask is OK or FAILED_PRECONDITION (already finished).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "orchestrator/engine/engine.h"
#include "tests/fuzz/services/engine_harness.h"
#include "toolmesh/v1/task_service.pb.h"
#include "toolmesh/v1/worker_service.pb.h"

namespace toolmesh::fuzzing {
namespace {

using orchestrator::Reply;
using orchestrator::WorkerSessionId;

enum Flags : std::uint8_t {
  kDeep = 1 << 0,
  kPatchIds = 1 << 1,
  kHelloFromInput = 1 << 2,
  kRaw = 1 << 3,
  kAnswerEndTurn = 1 << 4,
};

// Reads the input front to back; every read past the end yields zeros.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size)
      : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  std::uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::string_view Bytes(std::size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::string_view out(reinterpret_cast<const char*>(data_) + pos_, n);
    pos_ += n;
    return out;
  }
  std::string_view Rest() { return Bytes(size_); }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// The engine's side of the fuzzed stream: records and checks what the
// engine sends.
class FuzzLink final : public orchestrator::WorkerLink {
 public:
  explicit FuzzLink(std::vector<std::string> tools)
      : tools_(std::move(tools)) {}

  void Send(v1::OrchestratorMessage message) override {
    absl::MutexLock lock(&mu_);
    Check(!closed_.has_value());
    if (sent_ == 0) Check(message.has_welcome() || message.has_rejected());
    ++sent_;
    if (message.has_rejected()) rejected_ = true;
    if (message.has_assignment()) {
      const v1::Assignment& a = message.assignment();
      bool known = false;
      for (const std::string& tool : tools_) known = known || tool == a.name();
      Check(known);
      Check(!a.task_id().empty() && !a.tool_use_id().empty());
      Check(a.attempt() >= 1);
      absl::StatusOr<common::Json> input = common::ParseJson(a.input_json());
      Check(input.ok() && input->is_object());
      last_assignment_ = a;
    }
  }

  void Close(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (rejected_) Check(!status.ok());
    if (!closed_.has_value()) closed_ = status;
  }

  std::optional<v1::Assignment> last_assignment() {
    absl::MutexLock lock(&mu_);
    return last_assignment_;
  }

 private:
  const std::vector<std::string> tools_;
  absl::Mutex mu_;
  int sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool rejected_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> closed_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::Assignment> last_assignment_ ABSL_GUARDED_BY(mu_);
};

v1::Hello FixedHello() {
  v1::Hello hello;
  hello.set_worker_id("fuzz-worker");
  hello.set_protocol_version(1);
  hello.set_slots(2);
  hello.set_worker_version("fuzz");
  v1::ToolDefinition* echo = hello.add_tools();
  echo->set_name("echo");
  echo->set_description("Echoes its input.");
  echo->set_input_schema_json(
      R"({"type":"object","properties":{"text":{"type":"string"}}})");
  v1::ToolDefinition* sleep = hello.add_tools();
  sleep->set_name("sleep");
  sleep->set_input_schema_json(R"({"type":"object"})");
  return hello;
}

// Points the call ids of `message` at `real` where the fuzzer asked for it.
void PatchIds(v1::WorkerMessage& message, const v1::Assignment& real) {
  auto patch = [&real](auto* m) {
    m->set_task_id(real.task_id());
    m->set_tool_use_id(real.tool_use_id());
    if (m->attempt() == 0) m->set_attempt(real.attempt());
  };
  switch (message.message_case()) {
    case v1::WorkerMessage::kToolResult:
      patch(message.mutable_tool_result());
      break;
    case v1::WorkerMessage::kReturnCall:
      patch(message.mutable_return_call());
      break;
    case v1::WorkerMessage::kHeartbeat:
      for (v1::RunningCall& running :
           *message.mutable_heartbeat()->mutable_running()) {
        patch(&running);
      }
      break;
    default:
      break;
  }
}

class Session {
 public:
  Session(orchestrator::Engine& engine, const v1::Hello& hello)
      : engine_(engine), hello_(hello) {}

  void Connect() {
    std::vector<std::string> tools;
    for (const v1::ToolDefinition& tool : hello_.tools()) {
      tools.push_back(tool.name());
    }
    link_ = std::make_shared<FuzzLink>(std::move(tools));
    id_ = engine_.NewWorkerSession();
    Check(id_ != 0);
    engine_.WorkerHello(id_, link_, hello_);
    open_ = true;
  }

  void Gone(absl::Status status) {
    if (!open_) return;
    engine_.WorkerGone(id_, std::move(status));
    open_ = false;
  }

  WorkerSessionId id() const { return id_; }
  FuzzLink& link() { return *link_; }

 private:
  orchestrator::Engine& engine_;
  const v1::Hello hello_;
  std::shared_ptr<FuzzLink> link_;
  WorkerSessionId id_ = 0;
  bool open_ = false;
};

void AnswerStreams(EngineHarness& harness, std::size_t& answered,
                   bool end_turn) {
  harness.Sync();
  while (answered < harness.transport().started()) {
    harness.transport().Answer(
        answered, end_turn ? EndTurnReplySse()
                           : ToolUseReplySse(
                                 "toolu_fuzz_" + std::to_string(answered)));
    ++answered;
    harness.Sync();
  }
}

void RunOne(const std::uint8_t* data, std::size_t size) {
  Reader in(data, size);
  const std::uint8_t flags = in.Byte();

  orchestrator::EngineOptions options;
  options.max_active_tasks = 4;
  options.dispatch.start_to_close_timeout = absl::Seconds(45);
  EngineHarness harness(std::move(options));
  orchestrator::Engine& engine = harness.engine();

  std::string_view raw;
  if ((flags & kRaw) != 0) raw = in.Rest();

  v1::Hello hello = FixedHello();
  if ((flags & kHelloFromInput) != 0) {
    if ((flags & kRaw) != 0) {
      // The raw message is also the Hello (and, fed again, a second one).
      v1::WorkerMessage first;
      if (first.ParseFromArray(raw.data(), static_cast<int>(raw.size())) &&
          first.has_hello()) {
        hello = first.hello();
      }
    } else {
      std::size_t length = in.Byte();
      length |= static_cast<std::size_t>(in.Byte()) << 8;
      std::string_view bytes = in.Bytes(length);
      v1::Hello parsed;
      if (parsed.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        hello = std::move(parsed);
      }
    }
  }
  std::vector<std::unique_ptr<Session>> sessions;
  sessions.push_back(std::make_unique<Session>(engine, hello));
  sessions.back()->Connect();

  std::string task_id;
  std::size_t answered = 0;
  if ((flags & kDeep) != 0) {
    absl::StatusOr<v1::SubmitTaskResponse> submitted =
        harness.Call<v1::SubmitTaskResponse>(
            [&engine](Reply<v1::SubmitTaskResponse> reply) {
              v1::SubmitTaskRequest request;
              v1::TaskSpec& spec = *request.mutable_spec();
              spec.set_model("claude-fuzz");
              spec.set_max_tokens(64);
              spec.set_prompt("call echo");
              spec.add_client_tools("echo");
              engine.SubmitTask(orchestrator::Caller{"fuzz"},
                                std::move(request), std::move(reply));
            });
    Check(submitted.ok());
    task_id = submitted->task_id();
    Check(harness.transport().started() == 1);
    AnswerStreams(harness, answered, /*end_turn=*/false);
    // A free worker that serves the tool gets the call at once.
    if ((flags & kHelloFromInput) == 0) {
      Check(sessions.back()->link().last_assignment().has_value());
    }
  }

  auto feed = [&](v1::WorkerMessage message) {
    if ((flags & kPatchIds) != 0) {
      std::optional<v1::Assignment> real =
          sessions.back()->link().last_assignment();
      if (real.has_value()) PatchIds(message, *real);
    }
    engine.WorkerMessage(sessions.back()->id(), std::move(message));
  };

  if ((flags & kRaw) != 0) {
    v1::WorkerMessage message;
    if (message.ParseFromArray(raw.data(), static_cast<int>(raw.size()))) {
      feed(std::move(message));
    }
  } else {
    int ops = 0;
    while (!in.done() && ++ops <= 64) {
      const std::uint8_t op = in.Byte();
      switch (op % 4) {
        case 0: {
          std::size_t length = in.Byte();
          length |= static_cast<std::size_t>(in.Byte()) << 8;
          std::string_view bytes = in.Bytes(length);
          v1::WorkerMessage message;
          if (message.ParseFromArray(bytes.data(),
                                     static_cast<int>(bytes.size()))) {
            feed(std::move(message));
          }
          break;
        }
        case 1:
          harness.Sync();
          harness.clock().Advance(absl::Milliseconds(250) * in.Byte());
          break;
        case 2:
          AnswerStreams(harness, answered, (flags & kAnswerEndTurn) != 0);
          break;
        case 3:
          sessions.back()->Gone(absl::UnavailableError("fuzz reconnect"));
          sessions.push_back(std::make_unique<Session>(engine, hello));
          sessions.back()->Connect();
          break;
      }
    }
  }
  harness.Sync();

  if (!task_id.empty()) {
    absl::StatusOr<v1::GetTaskResponse> got =
        harness.Call<v1::GetTaskResponse>(
            [&](Reply<v1::GetTaskResponse> reply) {
              v1::GetTaskRequest request;
              request.set_task_id(task_id);
              engine.GetTask(std::move(request), std::move(reply));
            });
    Check(got.ok());
    Check(got->task().task_id() == task_id);
    if (!got->task().conversation_json().empty()) {
      Check(common::ParseJson(got->task().conversation_json()).ok());
    }
  }

  for (auto& session : sessions) session->Gone(absl::CancelledError("done"));
  Check(harness.Sync().workers_size() == 0);

  if (!task_id.empty()) {
    absl::StatusOr<v1::CancelTaskResponse> cancelled =
        harness.Call<v1::CancelTaskResponse>(
            [&](Reply<v1::CancelTaskResponse> reply) {
              v1::CancelTaskRequest request;
              request.set_task_id(task_id);
              request.set_reason("fuzz input done");
              engine.CancelTask(std::move(request), std::move(reply));
            });
    Check(cancelled.ok() || cancelled.status().code() ==
                                absl::StatusCode::kFailedPrecondition);
  }
}

}  // namespace
}  // namespace toolmesh::fuzzing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  toolmesh::fuzzing::RunOne(data, size);
  return 0;
}
