// SimModelTransport: the Anthropic Messages API of the deterministic
// simulation, as an in-memory common::ModelTransport.
//
// Start() records and validates the request (common::ValidateRequest: a
// request the API would reject with 400 is an invariant violation — the
// simulation never injects a 400), decides the whole response with the
// loop's PRNG and queues it; the loop then delivers OnResponseStarted, the
// body in randomly sized chunks (so a stream fault can fall on any byte) and
// OnFinished as separate actions, never inside Start() or Cancel().
//
// The response is the fake API's rule model (tests/testing/fakeapi/
// rule_model.h) rendered with its SSE writer, plus, by chance:
//  - more rounds of client tool calls after tool results;
//  - message faults: max_tokens truncation inside a tool input, pause_turn
//    with a dangling server call, a deferred server call next to client
//    tool_use blocks, a server result repeated in the next response; as
//    the fake API server does, results owed for earlier server calls open
//    the next response of that conversation;
//  - HTTP 429/500/529 with retry-after / retry-after-ms / x-should-retry;
//  - stream faults: an SSE error event, a malformed data line, a spliced
//    second message_start, the connection cut after any byte, a stall that
//    ends in the transport's idle timeout, slow chunks.
// Cancel() ends the stream with kCancelled at the next delivery, soon.
//
// Thread-safety: thread-compatible; used on the simulation thread only
// (the engine calls Start/Cancel from RunOnce on that thread).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/model_transport.h"
#include "tests/sim/sim_loop.h"

namespace toolmesh::sim {

// Probabilities per request.
struct SimModelOptions {
  double http_error = 0.05;
  double sse_error = 0.03;
  double malformed = 0.02;
  double splice = 0.01;
  double cut = 0.04;
  double stall = 0.01;
  double slow_chunks = 0.05;
  double max_tokens = 0.03;
  double pause_turn = 0.05;
  double deferred_server_call = 0.08;
  double repeat_server_result = 0.04;
  // After tool results, another round of tool calls (at most 4 rounds).
  double more_tool_calls = 0.4;
  // A stalled stream ends with kTimeout after this long without a byte.
  absl::Duration idle_timeout = absl::Seconds(60);
};

class SimModelTransport final : public common::ModelTransport {
 public:
  // `loop` must outlive the transport.
  SimModelTransport(SimLoop& loop, SimModelOptions options);
  ~SimModelTransport() override;

  absl::StatusOr<common::ModelStreamId> Start(
      common::ModelRequest request,
      std::shared_ptr<common::ModelStreamHandler> handler) override;
  void Cancel(common::ModelStreamId id) override;

  // The orchestrator crashes: every open stream is dropped without a
  // callback (its handler belongs to the dead engine), and Cancel() calls
  // are ignored until Restarted() (the dying engine's calls come in an
  // order that the simulation must not depend on).
  void Crashed();
  void Restarted() { crashed_ = false; }

  std::int64_t requests() const { return requests_; }
  // Requests the API would have rejected (always an invariant violation).
  std::int64_t rejected() const { return rejected_; }
  // The `tools` of the last request of each task (keyed by task id, the
  // request_id's first segment), for validating final conversations.
  const std::map<std::string, common::Json>& tools_by_task() const {
    return tools_by_task_;
  }

 private:
  struct Stream {
    std::shared_ptr<common::ModelStreamHandler> handler;
    int http_status = 200;
    common::HttpHeaders headers;
    std::vector<std::string> chunks;
    std::size_t next = 0;
    bool started = false;
    bool cancelled = false;
    // How the stream ends after the last chunk.
    common::TransportResult::Kind end = common::TransportResult::Kind::kCompleted;
    // Stall: no delivery after this many chunks; kTimeout instead.
    std::optional<std::size_t> stall_after;
    bool slow = false;
    std::int64_t bytes = 0;
  };
  struct Owed {
    common::Json result;
    bool repeat = false;
  };

  // Decides the response to `body` (already validated) into `stream`.
  void Respond(const common::Json& body, const std::string& request_id,
               Stream& stream);
  // A reply of another round of client tool calls.
  common::Json MoreToolCalls(const common::Json& body);
  // Message faults that need a server tool: its name in `tools`, or "".
  static std::string WebSearchName(const common::Json& body);
  void ScheduleDelivery(common::ModelStreamId id, absl::Duration delay);
  void Deliver(common::ModelStreamId id);
  void Finish(common::ModelStreamId id, common::TransportResult result);

  SimLoop& loop_;
  const SimModelOptions options_;
  common::ModelStreamId next_id_ = 1;
  bool crashed_ = false;
  std::map<common::ModelStreamId, Stream> streams_;
  // Server calls whose result a later response owes, by srvtoolu_ id.
  std::map<std::string, Owed> owed_;
  std::int64_t requests_ = 0;
  std::int64_t rejected_ = 0;
  std::map<std::string, common::Json> tools_by_task_;
};

}  // namespace toolmesh::sim
