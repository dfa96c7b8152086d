// Fuzz target: the worker's handling of the orchestrator's messages on its
// Connect stream (worker/worker_client.h).
//
// Seam: WorkerClient's testing session (OpenSessionForTesting and
// friends), which runs the same HandleMessage path as the gRPC read loop
// and collects what the client writes in memory, so one input costs
// microseconds instead of a loopback gRPC stream per input. The client is
// real: its tools.json (builtin echo, sleep, fail and an echo with a
// stricter input_schema) is parsed by ParseToolsConfig, inputs go through
// the InputValidator, calls through the BuiltinExecutor, timers through a
// FakeClock that the input advances.
//
// Input: byte 0 is a set of flags (kRaw, kSmallResults), then records,
// each an op byte and its operands:
//   op % 6 == 0  an OrchestratorMessage: 2-byte little-endian length, then
//                its binary proto (skipped when it does not parse)
//   op % 6 == 1  an Assignment: tool (of echo, sleep, fail, pick, an
//                unknown name), tool_use_id (one of four), attempt (0-3),
//                deadline (0: none, else now + n * 100 ms), then a 2-byte
//                length and the input_json text
//   op % 6 == 2  a Cancel: tool_use_id, attempt, reason
//   op % 6 == 3  advance the clock by (next byte) * 100 ms
//   op % 6 == 4  a Welcome whose heartbeat_interval is a 2-byte count of ms
//   op % 6 == 5  Drain() with a grace of (next byte) * 100 ms
// With kRaw the bytes after byte 0 are one OrchestratorMessage instead.
// kSmallResults caps results at 64 bytes (the truncation path).
//
// Properties checked (a broken one traps):
//  - the session opens with the Hello (worker id, protocol 1, four tools);
//  - a ToolResult names a call that was assigned, at most one per
//    Assignment of it, carries the task_id of that Assignment, its
//    content_json is JSON and, when a string, within the result limit;
//  - a ReturnCall names an assigned call; Draining comes only after
//    Drain(); a Heartbeat lists only assigned calls and free_slots never
//    exceeds the slots;
//  - once the session is closed, no call is active.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "common/fake_clock.h"
#include "common/json.h"
#include "common/random.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "toolmesh/v1/worker_service.pb.h"
#include "worker/tools_config.h"
#include "worker/worker_client.h"

namespace toolmesh::fuzzing {
namespace {

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

enum Flags : std::uint8_t {
  kRaw = 1 << 0,
  kSmallResults = 1 << 1,
};

constexpr int kSlots = 2;
constexpr std::size_t kSmallLimit = 64;
// Longer than any TruncationMarker (two 20-digit numbers and the text).
constexpr std::size_t kMarkerBound = 96;

constexpr char kToolsJson[] = R"([
  {"name": "echo", "description": "Echoes its input.",
   "input_schema": {"type": "object",
                    "properties": {"text": {"type": "string", "maxLength": 64},
                                   "n": {"type": "integer", "minimum": 0}},
                    "required": ["text"]},
   "executor": {"type": "builtin", "name": "echo"}},
  {"name": "sleep",
   "input_schema": {"type": "object",
                    "properties": {"ms": {"type": "integer"}},
                    "required": ["ms"]},
   "executor": {"type": "builtin", "name": "sleep"}},
  {"name": "fail",
   "input_schema": {"type": "object",
                    "properties": {"message": {"type": "string"}},
                    "additionalProperties": false},
   "executor": {"type": "builtin", "name": "fail"}},
  {"name": "pick",
   "input_schema": {"type": "object",
                    "properties": {
                      "unit": {"enum": ["c", "f"]},
                      "items": {"type": "array", "maxItems": 4,
                                "items": {"type": "object",
                                          "properties": {"id": {"type": "string",
                                                                "pattern": "^[a-z]+$"}}}}}},
   "executor": {"type": "builtin", "name": "echo"}}
])";

constexpr const char* kToolNames[] = {"echo", "sleep", "fail", "pick", "nope"};
constexpr const char* kCallIds[] = {"toolu_0", "toolu_1", "toolu_2",
                                    "toolu_3"};

const worker::ToolsConfig& Tools() {
  static const worker::ToolsConfig* const tools = [] {
    absl::StatusOr<worker::ToolsConfig> parsed =
        worker::ParseToolsConfig(kToolsJson);
    Check(parsed.ok());
    return new worker::ToolsConfig(*std::move(parsed));
  }();
  return *tools;
}

// Keeps gRPC initialised for the whole process, so that building and
// destroying a client per input does not start and stop the library, and
// silences protobuf's log line for every fuzzed string that is not UTF-8.
void InitOnce() {
  static const std::shared_ptr<grpc::Channel> channel = [] {
    google::protobuf::SetLogHandler(nullptr);
    return grpc::CreateChannel("127.0.0.1:1",
                               grpc::InsecureChannelCredentials());
  }();
  (void)channel;
}

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size)
      : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  std::uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::size_t Length() {
    std::size_t n = Byte();
    return n | static_cast<std::size_t>(Byte()) << 8;
  }
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

using Key = std::pair<std::string, std::uint32_t>;

// What the orchestrator side has sent and seen, for the checks.
struct Ledger {
  std::size_t limit = 0;
  bool drain_requested = false;
  bool saw_hello = false;
  std::map<Key, int> assigned;
  std::map<Key, std::string> task_of;
  std::map<Key, int> answered;

  void Sent(const v1::OrchestratorMessage& message) {
    if (!message.has_assignment()) return;
    const v1::Assignment& a = message.assignment();
    const Key key{a.tool_use_id(), a.attempt()};
    ++assigned[key];
    task_of[key] = a.task_id();
  }

  void Written(const v1::WorkerMessage& message) {
    if (!saw_hello) {
      Check(message.has_hello());
      const v1::Hello& hello = message.hello();
      Check(hello.worker_id() == "fuzz-worker");
      Check(hello.protocol_version() == 1);
      Check(hello.tools_size() == 4);
      Check(hello.slots() == kSlots);
      saw_hello = true;
      return;
    }
    switch (message.message_case()) {
      case v1::WorkerMessage::kToolResult: {
        const v1::ToolResult& r = message.tool_result();
        const Key key{r.tool_use_id(), r.attempt()};
        Check(assigned.contains(key));
        Check(++answered[key] <= assigned[key]);
        Check(r.task_id() == task_of[key]);
        absl::StatusOr<common::Json> content =
            common::ParseJson(r.content_json());
        Check(content.ok());
        if (content->is_string()) {
          Check(content->get_ref<const std::string&>().size() <=
                std::max(limit, kMarkerBound));
        }
        break;
      }
      case v1::WorkerMessage::kReturnCall: {
        const v1::ReturnCall& r = message.return_call();
        Check(assigned.contains({r.tool_use_id(), r.attempt()}));
        break;
      }
      case v1::WorkerMessage::kHeartbeat:
        Check(message.heartbeat().free_slots() <= kSlots);
        for (const v1::RunningCall& running : message.heartbeat().running()) {
          Check(assigned.contains({running.tool_use_id(), running.attempt()}));
        }
        break;
      case v1::WorkerMessage::kDraining:
        Check(drain_requested);
        break;
      default:
        // The client never writes a second Hello or an empty message.
        Check(false);
    }
  }
};

void RunOne(const std::uint8_t* data, std::size_t size) {
  InitOnce();
  Reader in(data, size);
  const std::uint8_t flags = in.Byte();

  common::FakeClock clock(absl::FromUnixSeconds(1700000000));
  common::SeededRandomSource random(11);
  worker::WorkerClientOptions options;
  options.orchestrator_address = "127.0.0.1:1";
  options.worker_id = "fuzz-worker";
  options.slots = kSlots;
  if ((flags & kSmallResults) != 0) options.max_result_bytes = kSmallLimit;
  options.log = [](const std::string&) {};
  Ledger ledger;
  ledger.limit = options.max_result_bytes;
  absl::StatusOr<std::unique_ptr<worker::WorkerClient>> created =
      worker::WorkerClient::Create(options, Tools(), clock, random);
  Check(created.ok());
  worker::WorkerClient& client = **created;
  Check(client.OpenSessionForTesting());

  auto drain_written = [&] {
    for (const v1::WorkerMessage& m : client.TakeWrittenForTesting()) {
      ledger.Written(m);
    }
  };
  auto send = [&](const v1::OrchestratorMessage& message) {
    ledger.Sent(message);
    client.HandleMessageForTesting(message);
    drain_written();
  };

  if ((flags & kRaw) != 0) {
    std::string_view raw = in.Rest();
    v1::OrchestratorMessage message;
    if (message.ParseFromArray(raw.data(), static_cast<int>(raw.size()))) {
      send(message);
    }
  }
  int ops = 0;
  while (!in.done() && ++ops <= 64) {
    const std::uint8_t op = in.Byte();
    switch (op % 6) {
      case 0: {
        std::string_view bytes = in.Bytes(in.Length());
        v1::OrchestratorMessage message;
        if (message.ParseFromArray(bytes.data(),
                                   static_cast<int>(bytes.size()))) {
          send(message);
        }
        break;
      }
      case 1: {
        v1::OrchestratorMessage message;
        v1::Assignment& a = *message.mutable_assignment();
        a.set_name(kToolNames[in.Byte() % 5]);
        a.set_tool_use_id(kCallIds[in.Byte() % 4]);
        a.set_attempt(in.Byte() % 4);
        a.set_task_id("task_fuzz");
        if (const std::uint8_t d = in.Byte(); d != 0) {
          const absl::Time deadline = clock.Now() + absl::Milliseconds(100) * d;
          a.mutable_deadline()->set_seconds(absl::ToUnixSeconds(deadline));
        }
        a.set_input_json(std::string(in.Bytes(in.Length())));
        send(message);
        break;
      }
      case 2: {
        v1::OrchestratorMessage message;
        v1::Cancel& c = *message.mutable_cancel();
        c.set_task_id("task_fuzz");
        c.set_tool_use_id(kCallIds[in.Byte() % 4]);
        c.set_attempt(in.Byte() % 4);
        c.set_reason(static_cast<v1::CancelReason>(in.Byte() % 5));
        send(message);
        break;
      }
      case 3:
        clock.Advance(absl::Milliseconds(100) * in.Byte());
        drain_written();
        break;
      case 4: {
        v1::OrchestratorMessage message;
        v1::Welcome& w = *message.mutable_welcome();
        w.set_protocol_version(1);
        const std::size_t ms = in.Length();
        w.mutable_heartbeat_interval()->set_seconds(
            static_cast<std::int64_t>(ms / 1000));
        w.mutable_heartbeat_interval()->set_nanos(
            static_cast<std::int32_t>(ms % 1000) * 1000000);
        send(message);
        break;
      }
      case 5:
        ledger.drain_requested = true;
        client.Drain(absl::Milliseconds(100) * in.Byte());
        drain_written();
        break;
    }
  }
  drain_written();
  client.CloseSessionForTesting();
  Check(client.ActiveCalls() == 0);
}

}  // namespace
}  // namespace toolmesh::fuzzing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  toolmesh::fuzzing::RunOne(data, size);
  return 0;
}
