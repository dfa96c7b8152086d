// An in-memory ModelTransport for the orchestrator's fuzz targets: Start()
// only records the stream; the fuzz harness then answers it from its own
// thread with a fixed SSE body (Answer), or ends it (FinishAll). Nothing
// touches a socket, and nothing happens unless the harness pumps it, so a
// run is deterministic.
//
// Contract kept (common/model_transport.h): every accepted stream gets
// exactly one OnFinished, last; a stream that Cancel() reached before it was
// answered finishes kCancelled; callbacks of one stream come from the
// harness thread only, never concurrently.
//
// Thread-safety: Start() and Cancel() may be called from any thread (the
// engine thread calls them); the harness methods from one thread at a time.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/model_transport.h"

namespace toolmesh::fuzzing {

// A streamed reply that calls client tool "echo" (id `tool_use_id`) with
// input {"text":"hi"} and stops with stop_reason "tool_use".
std::string ToolUseReplySse(const std::string& tool_use_id);
// A streamed text reply that stops with stop_reason "end_turn".
std::string EndTurnReplySse();

class ScriptedModelTransport final : public common::ModelTransport {
 public:
  ScriptedModelTransport() = default;
  ScriptedModelTransport(const ScriptedModelTransport&) = delete;
  ScriptedModelTransport& operator=(const ScriptedModelTransport&) = delete;

  absl::StatusOr<common::ModelStreamId> Start(
      common::ModelRequest request,
      std::shared_ptr<common::ModelStreamHandler> handler) override;
  void Cancel(common::ModelStreamId id) override;

  // Streams started so far.
  std::size_t started() const;
  // The request body of stream `index` (0-based, in Start() order); empty
  // when there is no such stream.
  std::string request_body(std::size_t index) const;

  // Answers stream `index` with a 200 response whose body is `sse`, in one
  // OnData, then OnFinished(kCompleted); or only OnFinished(kCancelled) when
  // it was cancelled. No-op for an unknown or already finished stream.
  void Answer(std::size_t index, const std::string& sse);
  // Ends every unfinished stream: kCancelled. Call once the engine is gone.
  void FinishAll();

 private:
  struct Stream {
    common::ModelStreamId id = 0;
    std::string body;
    std::shared_ptr<common::ModelStreamHandler> handler;
    bool cancelled = false;
    bool finished = false;
  };

  mutable absl::Mutex mu_;
  std::vector<Stream> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolmesh::fuzzing
