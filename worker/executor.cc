// Helpers for the Executor seam (executor.h).
#include "worker/executor.h"

#include <utility>

#include "absl/strings/str_cat.h"

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

std::string TruncationMarker(size_t original_size, size_t limit) {
  const size_t over = original_size > limit ? original_size - limit : 0;
  return absl::StrCat("[... truncated: ", over, " bytes over the ", limit,
                      "-byte limit]");
}

bool TruncateToLimit(std::string* text, size_t original_size, size_t limit) {
  if (original_size < text->size()) original_size = text->size();
  if (original_size <= limit) return false;
  const std::string marker =
      absl::StrCat("\n", TruncationMarker(original_size, limit));
  size_t keep = limit > marker.size() ? limit - marker.size() : 0;
  if (keep > text->size()) keep = text->size();
  // Back up over UTF-8 continuation bytes so no character is split.
  while (keep > 0 && keep < text->size() &&
         (static_cast<unsigned char>((*text)[keep]) & 0xC0) == 0x80) {
    --keep;
  }
  text->resize(keep);
  if (keep == 0) {
    *text = marker.substr(1);
  } else {
    text->append(marker);
  }
  return true;
}

ToolOutcome LimitResultSize(ToolOutcome outcome, size_t limit) {
  if (outcome.content.is_string()) {
    std::string& text = outcome.content.get_ref<std::string&>();
    if (text.size() > limit) TruncateToLimit(&text, text.size(), limit);
    return outcome;
  }
  std::string json = common::DumpJson(outcome.content);
  if (json.size() <= limit) return outcome;
  TruncateToLimit(&json, json.size(), limit);
  outcome.content = std::move(json);
  return outcome;
}

}  // namespace toolmesh::worker
