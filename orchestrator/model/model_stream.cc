// AttemptStreamHandler: see model_stream.h.
#include "orchestrator/model/model_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/messages.h"

namespace toolmesh::model {
namespace {

using common::AttemptFailure;
using common::StreamError;
using common::TransportResult;

bool IsSuccess(int status) { return status >= 200 && status < 300; }

}  // namespace

AttemptStreamHandler::AttemptStreamHandler(Options options,
                                           common::StreamObserver* observer,
                                           DoneCallback on_done)
    : options_(std::move(options)),
      accumulator_(options_.accumulator, observer),
      on_done_(std::move(on_done)) {}

AttemptStreamHandler::AttemptStreamHandler(common::StreamObserver* observer,
                                           DoneCallback on_done)
    : AttemptStreamHandler(Options(), observer, std::move(on_done)) {}

void AttemptStreamHandler::OnResponseStarted(
    int http_status, const common::HttpHeaders& headers) {
  http_status_ = http_status;
  headers_ = headers;
}

void AttemptStreamHandler::OnData(std::string_view bytes) {
  if (finished_) return;
  if (IsSuccess(http_status_)) {
    // A failed accumulator ignores further bytes; its error is read at the
    // end.
    (void)accumulator_.Feed(bytes);
    return;
  }
  const std::size_t room = options_.max_error_body_bytes > error_body_.size()
                               ? options_.max_error_body_bytes -
                                     error_body_.size()
                               : 0;
  error_body_.append(bytes.substr(0, room));
}

AttemptOutcome AttemptStreamHandler::BuildOutcome(
    const TransportResult& result) {
  AttemptOutcome outcome;
  outcome.http_status = http_status_;
  outcome.headers = headers_;
  outcome.transport = result;

  if (result.kind == TransportResult::Kind::kCancelled) {
    outcome.cancelled = true;
    outcome.failure = AttemptFailure::Connection("cancelled");
    return outcome;
  }

  // A non-2xx response: the status decides, whether or not its body came
  // in whole.
  if (http_status_ != 0 && !IsSuccess(http_status_)) {
    AttemptFailure failure =
        AttemptFailure::HttpStatus(http_status_, headers_);
    absl::StatusOr<common::ApiError> api_error = common::ParseApiError(
        error_body_);
    if (api_error.ok()) {
      failure.error_type = api_error->type;
      failure.detail = api_error->ToString();
    } else {
      failure.detail = absl::StrCat("HTTP ", http_status_,
                                    " with a body that is not an API error");
    }
    if (result.kind != TransportResult::Kind::kHttpError) {
      absl::StrAppend(&failure.detail, " (", result.error, ")");
    }
    outcome.failure = std::move(failure);
    return outcome;
  }

  // A 2xx stream: what the accumulator saw wins over how the connection
  // ended (an SSE error event is followed by the server closing).
  if (accumulator_.state() == common::StreamAccumulator::State::kComplete) {
    absl::StatusOr<common::Json> message = accumulator_.FinalMessage();
    if (message.ok()) {
      outcome.message = *std::move(message);
      return outcome;
    }
    outcome.failure = AttemptFailure::Malformed(
        std::string(message.status().message()));
    return outcome;
  }
  if (accumulator_.state() != common::StreamAccumulator::State::kFailed &&
      result.kind == TransportResult::Kind::kCompleted && http_status_ != 0) {
    (void)accumulator_.Finish();
    if (accumulator_.state() == common::StreamAccumulator::State::kComplete) {
      absl::StatusOr<common::Json> message = accumulator_.FinalMessage();
      if (message.ok()) {
        outcome.message = *std::move(message);
        return outcome;
      }
    }
  }
  if (const auto& error = accumulator_.error(); error.has_value()) {
    switch (error->kind) {
      case StreamError::Kind::kApiError: {
        std::string type = error->api_error ? error->api_error->type : "";
        AttemptFailure failure = AttemptFailure::StreamError(type, headers_);
        failure.detail = error->api_error ? error->api_error->ToString()
                                          : error->message;
        outcome.failure = std::move(failure);
        return outcome;
      }
      case StreamError::Kind::kSpliced:
      case StreamError::Kind::kProtocol:
        outcome.failure = AttemptFailure::Malformed(
            absl::StrCat(std::string(common::StreamErrorKindName(error->kind)),
                         ": ",
                         error->message));
        return outcome;
      case StreamError::Kind::kTruncated:
        break;
    }
  }
  switch (result.kind) {
    case TransportResult::Kind::kTimeout:
      outcome.failure =
          AttemptFailure::Connection(absl::StrCat("timeout: ", result.error));
      break;
    case TransportResult::Kind::kConnectionError:
      outcome.failure = AttemptFailure::Connection(result.error);
      break;
    default:
      outcome.failure = AttemptFailure::Connection(
          "the stream ended before message_stop");
      break;
  }
  return outcome;
}

void AttemptStreamHandler::OnFinished(const TransportResult& result) {
  if (finished_) return;
  finished_ = true;
  AttemptOutcome outcome = BuildOutcome(result);
  if (on_done_) on_done_(std::move(outcome));
}

}  // namespace toolmesh::model
