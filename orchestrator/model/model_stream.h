// AttemptStreamHandler: the glue between a ModelTransport stream and the
// turn loop. It feeds a 2xx body into a common::StreamAccumulator (whose
// observer sees block starts, deltas and stops as they arrive, for early
// dispatch), keeps a non-2xx body, and when the stream ends reports ONE
// AttemptOutcome: either the final Message or a common::AttemptFailure that
// common::RetryPolicy can decide on:
//   - non-2xx status            -> kHttpStatus (status, headers, the body's
//                                  error.type; detail: the error message)
//   - SSE `error` event          -> kStreamError (error.type, the 200's
//                                  headers)
//   - spliced / malformed stream -> kMalformed
//   - connection error, timeout, -> kConnection
//     clean end before message_stop
//   - cancelled                  -> kConnection with `cancelled` set
//
// Thread-safety: thread-compatible. The transport calls it from its own
// thread; the observer and the done callback run there too, synchronously.
// Construct one handler per attempt; it is not reusable.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/any_invocable.h"
#include "common/json.h"
#include "common/model_transport.h"
#include "common/retry_policy.h"
#include "common/stream_accumulator.h"

namespace toolmesh::model {

// The result of one attempt. Exactly one of `message` and `failure` is set.
struct AttemptOutcome {
  // The final Message (the API's non-streaming shape) after message_stop.
  std::optional<common::Json> message;
  std::optional<common::AttemptFailure> failure;
  // The stream was cancelled (by the caller or by the transport's shutdown);
  // `failure` is then a kConnection failure that should not be retried.
  bool cancelled = false;
  // The response's status and headers; 0 and empty when none arrived.
  int http_status = 0;
  common::HttpHeaders headers;
  // How the transport ended the stream.
  common::TransportResult transport;

  bool ok() const { return message.has_value(); }
};

class AttemptStreamHandler : public common::ModelStreamHandler {
 public:
  struct Options {
    // Bytes of a non-2xx body kept for ParseApiError; the rest is dropped.
    std::size_t max_error_body_bytes = 64 * 1024;
    common::StreamAccumulator::Options accumulator;
  };
  // Called once, from OnFinished.
  using DoneCallback = absl::AnyInvocable<void(AttemptOutcome)>;

  // `observer` may be null; if not, it must outlive this handler and is
  // called from the transport's thread (see common::StreamObserver).
  AttemptStreamHandler(Options options, common::StreamObserver* observer,
                       DoneCallback on_done);
  AttemptStreamHandler(common::StreamObserver* observer, DoneCallback on_done);

  void OnResponseStarted(int http_status,
                         const common::HttpHeaders& headers) override;
  void OnData(std::string_view bytes) override;
  void OnFinished(const common::TransportResult& result) override;

  // The accumulator of the 2xx body. Only from the thread that runs the
  // callbacks (or after OnFinished).
  const common::StreamAccumulator& accumulator() const {
    return accumulator_;
  }

 private:
  AttemptOutcome BuildOutcome(const common::TransportResult& result);

  const Options options_;
  common::StreamAccumulator accumulator_;
  DoneCallback on_done_;
  int http_status_ = 0;
  common::HttpHeaders headers_;
  std::string error_body_;
  bool finished_ = false;
};

}  // namespace toolmesh::model
