// Helpers for the Executor seam (executor.h).
#include "worker/executor.h"

#include <utility>

namespace toolmesh::worker {

std::string_view OutcomeReasonName(OutcomeReason reason) {
  switch (reason) {
    case OutcomeReason::kOk:
      return "ok";
    case OutcomeReason::kToolFailed:
      return "tool_failed";
    case OutcomeReason::kTimeout:
      return "timeout";
    case OutcomeReason::kCancelled:
      return "cancelled";
    case OutcomeReason::kInvalidInput:
      return "invalid_input";
  }
  return "unknown";
}

ToolOutcome ErrorOutcome(OutcomeReason reason, std::string message,
                         absl::Duration duration) {
  ToolOutcome outcome;
  outcome.content = std::move(message);
  outcome.is_error = true;
  outcome.reason = reason;
  outcome.duration = duration;
  return outcome;
}

}  // namespace toolmesh::worker
