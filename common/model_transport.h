// The seam between the orchestrator and the Anthropic Messages API: a
// transport that runs many streamed `POST /v1/messages` requests at once and
// hands their bytes to a per-stream handler as they arrive.
//
// Only the interface and plain structs live here (common/ has no sockets).
// The production implementation is orchestrator/model/curl_model_transport.h
// (libcurl's multi interface, one thread); tests can implement ModelTransport
// in memory to drop, delay or fail any stream.
//
// Contract every implementation keeps:
//  - Start() and Cancel() may be called from any thread, concurrently, also
//    from inside a handler callback.
//  - For every stream that Start() accepted (an OK result), the handler gets
//    exactly one OnFinished(), also when the stream is cancelled and when the
//    transport shuts down. No callback follows OnFinished().
//  - A handler's callbacks for one stream are never called concurrently and
//    come in the order OnResponseStarted (at most once, before any OnData),
//    OnData (zero or more), OnFinished (exactly once).
//
// Thread-safety: see the contract above; the structs are plain values.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/retry_headers.h"

namespace toolmesh::common {

// Identifies one stream of one transport. Never 0 for an accepted stream;
// never reused by the same transport.
using ModelStreamId = std::uint64_t;

// One Messages API request.
struct ModelRequest {
  // The JSON request body, sent as is (with `"stream": true` for SSE).
  std::string body;
  // Headers added to the transport's own (e.g. `anthropic-beta`). Names are
  // HTTP tokens; values must not contain CR, LF or NUL. The transport's
  // fixed headers (`x-api-key`, `anthropic-version`, `content-type`) cannot
  // be overridden; an `anthropic-beta` given here is merged with the
  // transport's list.
  HttpHeaders extra_headers;
  // For logs only (e.g. "task_12/turn_3/attempt_1"); never sent.
  std::string request_id;
};

// How a stream ended.
struct TransportResult {
  enum class Kind {
    // The response had a 2xx status and its body was received completely.
    kCompleted,
    // The response had a non-2xx status; its body (the API's error JSON, or
    // whatever a proxy sent) was received completely through OnData.
    kHttpError,
    // No complete response: could not resolve or connect, TLS failure, the
    // connection dropped mid-body, a malformed HTTP response.
    kConnectionError,
    // The connect timeout, the idle timeout (no byte for too long) or the
    // total timeout expired.
    kTimeout,
    // Cancel() or the transport's shutdown ended the stream.
    kCancelled,
  };

  Kind kind = Kind::kConnectionError;
  // The response's status; 0 if no response status line was received.
  int http_status = 0;
  // Human-readable cause for logs (the transport library's error text);
  // empty for kCompleted and kHttpError. Never contains the API key.
  std::string error;
  // Response body bytes delivered through OnData.
  std::int64_t bytes_received = 0;
};

inline std::string_view TransportResultKindName(TransportResult::Kind kind) {
  switch (kind) {
    case TransportResult::Kind::kCompleted:
      return "completed";
    case TransportResult::Kind::kHttpError:
      return "http_error";
    case TransportResult::Kind::kConnectionError:
      return "connection_error";
    case TransportResult::Kind::kTimeout:
      return "timeout";
    case TransportResult::Kind::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

// Receives one stream. Every callback runs on the transport's own thread
// (see the contract at the top of this file) and must not block for long:
// all streams of the transport share that thread. A callback may call the
// transport's Start() and Cancel().
class ModelStreamHandler {
 public:
  virtual ~ModelStreamHandler() = default;

  // The final response's status line and headers arrived (informational 1xx
  // responses are skipped). `headers` is valid during the call only.
  virtual void OnResponseStarted(int http_status,
                                 const HttpHeaders& headers) = 0;

  // Body bytes as they arrive, in order, in chunks of any size: for a 2xx
  // response the SSE stream, for an error status the error body. `bytes` is
  // valid during the call only.
  virtual void OnData(std::string_view bytes) = 0;

  // The stream ended; exactly once per accepted stream, last.
  virtual void OnFinished(const TransportResult& result) = 0;
};

class ModelTransport {
 public:
  virtual ~ModelTransport() = default;

  // Starts sending `request` and returns its id; the stream then runs
  // asynchronously and reports to `handler`, which the transport keeps alive
  // until OnFinished() has returned. Does not block on the network.
  // Errors (the stream is not started and `handler` is never called):
  // kInvalidArgument for a bad extra header, kFailedPrecondition once the
  // transport is shutting down, kInternal if the transport cannot allocate
  // the stream.
  virtual absl::StatusOr<ModelStreamId> Start(
      ModelRequest request, std::shared_ptr<ModelStreamHandler> handler) = 0;

  // Ends the stream `id` with OnFinished(kCancelled) on the transport's
  // thread, soon, unless it has already finished (then, and for unknown ids,
  // nothing happens). Does not block.
  virtual void Cancel(ModelStreamId id) = 0;
};

}  // namespace toolmesh::common
