// ToolLedger implementation. See tool_ledger.h for the contract.
#include "common/tool_ledger.h"

#include <concepts>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace toolmesh::common {
namespace {

// Abseil 20220623 as packaged here has its own absl::string_view (not
// std::string_view), so absl::StrCat cannot take our std::string_views;
// this small concatenation helper can.
void AppendPart(std::string& out, std::string_view part) { out.append(part); }
template <std::integral T>
void AppendPart(std::string& out, T number) {
  out.append(std::to_string(number));
}
template <typename... Parts>
std::string Cat(const Parts&... parts) {
  std::string out;
  (AppendPart(out, parts), ...);
  return out;
}

constexpr ErrorReason kAllReasons[] = {
    ErrorReason::kToolFailed,    ErrorReason::kInvalidInput,
    ErrorReason::kTimeout,       ErrorReason::kCancelled,
    ErrorReason::kWorkerLost,    ErrorReason::kNoWorker,
    ErrorReason::kStreamAborted, ErrorReason::kServerResultMissing,
    ErrorReason::kQueueFull,
};

// A non-empty string field, or nullptr.
const std::string* NonEmptyString(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return nullptr;
  const std::string& s = it->get_ref<const std::string&>();
  return s.empty() ? nullptr : &s;
}

bool IsKnownToolUseType(std::string_view type) {
  return type == "tool_use" || type == "server_tool_use" ||
         type == "mcp_tool_use";
}

// `tool_use`, `server_tool_use`, `mcp_tool_use`, or a future `*_tool_use`.
bool IsToolUseType(std::string_view type) {
  return type == "tool_use" || type.ends_with("_tool_use");
}

// `web_search_tool_result`, `mcp_tool_result`, ... but not the client
// `tool_result` (which belongs in user messages).
bool IsServerResultType(std::string_view type) {
  return type.ends_with("_tool_result");
}

// Whether a server result block reports an error, and a short description.
bool ServerResultIsError(const Json& block, std::string* description) {
  auto is_error = block.find("is_error");
  bool flagged = is_error != block.end() && is_error->is_boolean() &&
                 is_error->get<bool>();
  auto content = block.find("content");
  if (content != block.end() && content->is_object()) {
    std::string_view content_type = GetString(*content, "type");
    if (content_type.ends_with("_tool_result_error")) {
      std::string_view code = GetString(*content, "error_code");
      *description = code.empty() ? std::string(content_type)
                                  : Cat(content_type, ": ", code);
      std::string_view detail = GetString(*content, "error_message");
      if (!detail.empty()) *description += Cat(" (", detail, ")");
      return true;
    }
  }
  if (flagged) {
    *description = Cat(GetString(block, "type"), " reported is_error");
    return true;
  }
  return false;
}

// Content for a tool_result block: strings and arrays of typed content
// blocks pass through; empty values are left out (the API's `content` is
// optional); anything else is carried as its JSON text.
std::optional<Json> ToolResultContent(const Json& content) {
  if (content.is_null()) return std::nullopt;
  if (content.is_string()) {
    if (content.get_ref<const std::string&>().empty()) return std::nullopt;
    return content;
  }
  if (content.is_array()) {
    if (content.empty()) return std::nullopt;
    bool all_blocks = true;
    for (const Json& element : content) {
      if (!element.is_object() || GetString(element, "type").empty()) {
        all_blocks = false;
        break;
      }
    }
    if (all_blocks) return content;
  }
  return Json(DumpJson(content));
}

std::string WithDetail(std::string text, std::string_view detail) {
  if (!detail.empty()) text += Cat(": ", detail);
  return text;
}

[[noreturn]] void InvariantBroken(const ToolEntry& entry, ToolState to) {
  std::fprintf(stderr,
               "ToolLedger invariant broken: transition of terminal tool %s "
               "(%s) to %s\n",
               entry.id.value().c_str(),
               std::string(ToolStateName(entry.state)).c_str(),
               std::string(ToolStateName(to)).c_str());
  std::abort();
}

}  // namespace

std::string_view ToolKindName(ToolKind kind) {
  switch (kind) {
    case ToolKind::kClient:
      return "client";
    case ToolKind::kServer:
      return "server";
  }
  return "unknown";
}

std::string_view ToolStateName(ToolState state) {
  switch (state) {
    case ToolState::kPending:
      return "pending";
    case ToolState::kRunning:
      return "running";
    case ToolState::kDone:
      return "done";
    case ToolState::kError:
      return "error";
  }
  return "unknown";
}

bool IsTerminal(ToolState state) {
  return state == ToolState::kDone || state == ToolState::kError;
}

std::string_view ErrorReasonName(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kToolFailed:
      return "tool_failed";
    case ErrorReason::kInvalidInput:
      return "invalid_input";
    case ErrorReason::kTimeout:
      return "timeout";
    case ErrorReason::kCancelled:
      return "cancelled";
    case ErrorReason::kWorkerLost:
      return "worker_lost";
    case ErrorReason::kNoWorker:
      return "no_worker";
    case ErrorReason::kStreamAborted:
      return "stream_aborted";
    case ErrorReason::kServerResultMissing:
      return "server_result_missing";
    case ErrorReason::kQueueFull:
      return "queue_full";
  }
  return "unknown";
}

absl::StatusOr<ErrorReason> ParseErrorReason(std::string_view name) {
  for (ErrorReason reason : kAllReasons) {
    if (ErrorReasonName(reason) == name) return reason;
  }
  return absl::InvalidArgumentError(
      Cat("unknown tool error reason \"", name, "\""));
}

std::string_view LedgerOutcomeName(LedgerOutcome outcome) {
  switch (outcome) {
    case LedgerOutcome::kApplied:
      return "applied";
    case LedgerOutcome::kDuplicateAnnounce:
      return "duplicate_announce";
    case LedgerOutcome::kReusedId:
      return "reused_id";
    case LedgerOutcome::kUnknownId:
      return "unknown_id";
    case LedgerOutcome::kWrongKind:
      return "wrong_kind";
    case LedgerOutcome::kWrongState:
      return "wrong_state";
    case LedgerOutcome::kStaleAttempt:
      return "stale_attempt";
    case LedgerOutcome::kAlreadyTerminal:
      return "already_terminal";
    case LedgerOutcome::kDuplicateResult:
      return "duplicate_result";
    case LedgerOutcome::kLedgerClosed:
      return "ledger_closed";
    case LedgerOutcome::kInvalidArgument:
      return "invalid_argument";
  }
  return "unknown";
}

ToolLedger::ToolLedger(TransitionSink sink, ToolLedgerOptions options)
    : options_(options), sink_(std::move(sink)) {
  if (options_.max_attempts < 1) options_.max_attempts = 1;
}

ToolEntry* ToolLedger::Find(const ToolUseId& id) {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const ToolEntry* ToolLedger::Get(const ToolUseId& id) const {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

void ToolLedger::Report(const ToolEntry& entry, ToolState from,
                        std::string_view message) {
  if (!sink_) return;
  ToolTransition transition;
  transition.id = entry.id;
  transition.name = entry.name;
  transition.kind = entry.kind;
  transition.from = from;
  transition.to = entry.state;
  transition.reason =
      entry.state == ToolState::kError ? entry.reason : std::nullopt;
  transition.message = std::string(message);
  transition.attempt = entry.attempt;
  transition.step = entry.step;
  sink_(transition);
}

void ToolLedger::Transition(ToolEntry& entry, ToolState to,
                            std::optional<ErrorReason> reason,
                            std::string_view message) {
  if (IsTerminal(entry.state)) InvariantBroken(entry, to);
  ToolState from = entry.state;
  entry.state = to;
  if (IsTerminal(to)) {
    entry.reason = to == ToolState::kError ? reason : std::nullopt;
    entry.message = std::string(message);
  }
  Report(entry, from, message);
}

LedgerOutcome ToolLedger::Announce(const ToolUseId& id, std::string_view name,
                                   ToolKind kind, int step) {
  if (id.empty() || step < 0) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kInvalidArgument;
  }
  if (const ToolEntry* existing = Find(id); existing != nullptr) {
    if (existing->step == step) {
      ++counters_.duplicate_announces;
      return LedgerOutcome::kDuplicateAnnounce;
    }
    ++counters_.reused_ids;
    return LedgerOutcome::kReusedId;
  }
  if (closed_) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kLedgerClosed;
  }
  ToolEntry& entry = entries_.emplace_back();
  entry.id = id;
  entry.name = std::string(name);
  entry.kind = kind;
  entry.step = step;
  index_.emplace(id, entries_.size() - 1);
  Report(entry, ToolState::kPending, {});
  return LedgerOutcome::kApplied;
}

absl::Status ToolLedger::Restore(ToolEntry entry) {
  if (entry.id.empty() || entry.step < 0 || entry.attempt < 1 ||
      entry.lost_deliveries < 0) {
    return absl::InvalidArgumentError(
        Cat("cannot restore tool entry '", entry.id.value(),
            "': empty id, negative step or attempt below 1"));
  }
  if ((entry.state == ToolState::kError) != entry.reason.has_value()) {
    return absl::InvalidArgumentError(
        Cat("cannot restore tool entry ", entry.id.value(),
            ": a reason is required exactly for the error state"));
  }
  if (entry.input.has_value() && !entry.input->is_object()) {
    return absl::InvalidArgumentError(Cat(
        "cannot restore tool entry ", entry.id.value(), ": input not an object"));
  }
  if (Find(entry.id) != nullptr) {
    return absl::AlreadyExistsError(
        Cat("tool entry ", entry.id.value(), " is already in the ledger"));
  }
  return Replace(std::move(entry));
}

absl::Status ToolLedger::Replace(ToolEntry entry) {
  if (entry.id.empty() || entry.step < 0 || entry.attempt < 1 ||
      entry.lost_deliveries < 0) {
    return absl::InvalidArgumentError(
        Cat("cannot restore tool entry '", entry.id.value(),
            "': empty id, negative step or attempt below 1"));
  }
  if ((entry.state == ToolState::kError) != entry.reason.has_value()) {
    return absl::InvalidArgumentError(
        Cat("cannot restore tool entry ", entry.id.value(),
            ": a reason is required exactly for the error state"));
  }
  if (closed_) {
    return absl::FailedPreconditionError("the ledger is closed");
  }
  if (ToolEntry* existing = Find(entry.id); existing != nullptr) {
    *existing = std::move(entry);
    return absl::OkStatus();
  }
  ToolUseId id = entry.id;
  entries_.push_back(std::move(entry));
  index_.emplace(std::move(id), entries_.size() - 1);
  return absl::OkStatus();
}

LedgerOutcome ToolLedger::SetInput(const ToolUseId& id, Json input) {
  ToolEntry* entry = Find(id);
  if (entry == nullptr) {
    ++counters_.unknown_ids;
    return LedgerOutcome::kUnknownId;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.ignored_terminal_events;
    return LedgerOutcome::kAlreadyTerminal;
  }
  if (!input.is_object()) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kInvalidArgument;
  }
  if (entry->input.has_value() || entry->input_invalid) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongState;
  }
  entry->input = std::move(input);
  return LedgerOutcome::kApplied;
}

LedgerOutcome ToolLedger::MarkInputInvalid(const ToolUseId& id,
                                           std::string_view message) {
  ToolEntry* entry = Find(id);
  if (entry == nullptr) {
    ++counters_.unknown_ids;
    return LedgerOutcome::kUnknownId;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.ignored_terminal_events;
    return LedgerOutcome::kAlreadyTerminal;
  }
  if (entry->input.has_value() || entry->input_invalid) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongState;
  }
  entry->input_invalid = true;
  entry->input_error = std::string(message);
  if (entry->kind == ToolKind::kClient) {
    Transition(*entry, ToolState::kError, ErrorReason::kInvalidInput, message);
  }
  return LedgerOutcome::kApplied;
}

LedgerOutcome ToolLedger::Start(const ToolUseId& id, int attempt) {
  ToolEntry* entry = Find(id);
  if (entry == nullptr) {
    ++counters_.unknown_ids;
    return LedgerOutcome::kUnknownId;
  }
  if (entry->kind != ToolKind::kClient) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongKind;
  }
  if (attempt < 1) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kInvalidArgument;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.ignored_terminal_events;
    return LedgerOutcome::kAlreadyTerminal;
  }
  if (attempt != entry->attempt) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kStaleAttempt;
  }
  if (entry->state != ToolState::kPending || !entry->input.has_value()) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongState;
  }
  Transition(*entry, ToolState::kRunning, std::nullopt, {});
  return LedgerOutcome::kApplied;
}

LedgerOutcome ToolLedger::Requeue(const ToolUseId& id,
                                  std::string_view message,
                                  bool counts_as_attempt) {
  ToolEntry* entry = Find(id);
  if (entry == nullptr) {
    ++counters_.unknown_ids;
    return LedgerOutcome::kUnknownId;
  }
  if (entry->kind != ToolKind::kClient) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongKind;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.ignored_terminal_events;
    return LedgerOutcome::kAlreadyTerminal;
  }
  if (entry->state != ToolState::kRunning) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongState;
  }
  if (counts_as_attempt &&
      ++entry->lost_deliveries >= options_.max_attempts) {
    Transition(*entry, ToolState::kError, ErrorReason::kWorkerLost,
               WithDetail(Cat("the worker was lost on each of ",
                              entry->lost_deliveries, " attempts"),
                          message));
    return LedgerOutcome::kApplied;
  }
  ++entry->attempt;
  Transition(*entry, ToolState::kPending, std::nullopt, message);
  return LedgerOutcome::kApplied;
}

LedgerOutcome ToolLedger::CompleteClient(const ToolUseId& id, int attempt,
                                         Json content, bool is_error) {
  ToolEntry* entry = Find(id);
  if (entry == nullptr) {
    ++counters_.orphan_results;
    return LedgerOutcome::kUnknownId;
  }
  if (entry->kind != ToolKind::kClient) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongKind;
  }
  if (attempt < 1) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kInvalidArgument;
  }
  // A superseded attempt is stale whether or not the entry has ended since:
  // it says nothing about the current delivery.
  if (attempt != entry->attempt) {
    ++counters_.stale_results;
    return LedgerOutcome::kStaleAttempt;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.duplicate_results;
    return LedgerOutcome::kDuplicateResult;
  }
  ApplyClientResult(*entry, std::move(content), is_error, {});
  return LedgerOutcome::kApplied;
}

void ToolLedger::ApplyClientResult(ToolEntry& entry, Json content,
                                   bool is_error, std::string_view message) {
  entry.result = std::move(content);
  entry.result_is_error = is_error;
  if (is_error) {
    Transition(entry, ToolState::kError, ErrorReason::kToolFailed, message);
  } else {
    Transition(entry, ToolState::kDone, std::nullopt, message);
  }
}

LedgerOutcome ToolLedger::CompleteClientEarlierAttempt(const ToolUseId& id,
                                                       int attempt,
                                                       Json content,
                                                       bool is_error) {
  ToolEntry* entry = Find(id);
  if (entry == nullptr) {
    ++counters_.orphan_results;
    return LedgerOutcome::kUnknownId;
  }
  if (entry->kind != ToolKind::kClient) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kWrongKind;
  }
  if (attempt < 1) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kInvalidArgument;
  }
  if (attempt >= entry->attempt) {
    ++counters_.stale_results;
    return LedgerOutcome::kStaleAttempt;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.duplicate_results;
    return LedgerOutcome::kDuplicateResult;
  }
  ApplyClientResult(*entry, std::move(content), is_error,
                    absl::StrCat("result of attempt ", attempt,
                                 " (finished after attempt ", entry->attempt,
                                 " was delivered)"));
  return LedgerOutcome::kApplied;
}

LedgerOutcome ToolLedger::Fail(const ToolUseId& id, ErrorReason reason,
                               std::string_view message) {
  ToolEntry* entry = Find(id);
  if (entry == nullptr) {
    ++counters_.unknown_ids;
    return LedgerOutcome::kUnknownId;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.ignored_terminal_events;
    return LedgerOutcome::kAlreadyTerminal;
  }
  Transition(*entry, ToolState::kError, reason, message);
  return LedgerOutcome::kApplied;
}

LedgerOutcome ToolLedger::ObserveServerResult(const Json& result_block,
                                              int step) {
  const std::string* tool_use_id = nullptr;
  if (step >= 0 && result_block.is_object() &&
      IsServerResultType(GetString(result_block, "type"))) {
    tool_use_id = NonEmptyString(result_block, "tool_use_id");
  }
  if (tool_use_id == nullptr) {
    ++counters_.inapplicable_events;
    return LedgerOutcome::kInvalidArgument;
  }
  ToolEntry* entry = Find(ToolUseId(*tool_use_id));
  if (entry == nullptr || entry->step > step) {
    ++counters_.orphan_results;
    return LedgerOutcome::kUnknownId;
  }
  if (entry->kind != ToolKind::kServer) {
    ++counters_.orphan_results;
    return LedgerOutcome::kWrongKind;
  }
  if (IsTerminal(entry->state)) {
    ++counters_.duplicate_results;
    return LedgerOutcome::kDuplicateResult;
  }
  std::string description;
  bool is_error = ServerResultIsError(result_block, &description);
  entry->result = result_block;
  entry->result_is_error = is_error;
  entry->result_step = step;
  if (is_error) {
    Transition(*entry, ToolState::kError, ErrorReason::kToolFailed,
               description);
  } else {
    Transition(*entry, ToolState::kDone, std::nullopt, {});
  }
  return LedgerOutcome::kApplied;
}

absl::StatusOr<MessageObservation> ToolLedger::ObserveAssistantMessage(
    const Json& message, int step) {
  if (closed_) {
    return absl::FailedPreconditionError(
        "tool ledger is closed: the task has ended");
  }
  if (step < 0) {
    return absl::InvalidArgumentError(Cat("negative step ", step));
  }
  if (!message.is_object()) {
    return absl::InvalidArgumentError("assistant message is not an object");
  }
  if (auto role = message.find("role");
      role != message.end() &&
      !(role->is_string() &&
        role->get_ref<const std::string&>() == "assistant")) {
    return absl::InvalidArgumentError("message role is not \"assistant\"");
  }
  auto content = message.find("content");
  if (content == message.end() || !content->is_array()) {
    return absl::InvalidArgumentError("assistant message has no content array");
  }

  // Validate every block before applying any, so a malformed message leaves
  // the ledger untouched.
  enum class BlockRole { kOther, kToolUse, kResult };
  std::vector<BlockRole> roles;
  roles.reserve(content->size());
  for (size_t i = 0; i < content->size(); ++i) {
    const Json& block = (*content)[i];
    if (!block.is_object()) {
      return absl::InvalidArgumentError(
          Cat("content block ", i, " is not an object"));
    }
    std::string_view type = GetString(block, "type");
    BlockRole role = BlockRole::kOther;
    if (IsToolUseType(type)) {
      // A future `*_tool_use` block without an id is not a call we can
      // track; the known ones must have one.
      if (IsKnownToolUseType(type) || block.contains("id")) {
        if (NonEmptyString(block, "id") == nullptr) {
          return absl::InvalidArgumentError(
              Cat("content block ", i, " (", type, ") has no string id"));
        }
        if (auto name = block.find("name");
            name != block.end() && !name->is_string()) {
          return absl::InvalidArgumentError(
              Cat("content block ", i, " (", type, ") has a non-string name"));
        }
        role = BlockRole::kToolUse;
      }
    } else if (IsServerResultType(type) && block.contains("tool_use_id")) {
      if (NonEmptyString(block, "tool_use_id") == nullptr) {
        return absl::InvalidArgumentError(Cat("content block ", i, " (", type,
                                              ") has no string tool_use_id"));
      }
      role = BlockRole::kResult;
    }
    roles.push_back(role);
  }

  MessageObservation observation;
  std::vector<ToolUseId> announced_server;
  for (size_t i = 0; i < content->size(); ++i) {
    const Json& block = (*content)[i];
    switch (roles[i]) {
      case BlockRole::kOther:
        break;
      case BlockRole::kToolUse: {
        ToolUseId id(*NonEmptyString(block, "id"));
        bool client = GetString(block, "type") == "tool_use";
        ToolKind kind = client ? ToolKind::kClient : ToolKind::kServer;
        if (Announce(id, GetString(block, "name"), kind, step) ==
            LedgerOutcome::kApplied) {
          observation.announced.push_back(id);
          if (!client) announced_server.push_back(id);
          auto input = block.find("input");
          if (input != block.end() && input->is_object()) {
            SetInput(id, *input);
          }
        }
        if (client) observation.client_tool_use_ids.push_back(std::move(id));
        break;
      }
      case BlockRole::kResult: {
        switch (ObserveServerResult(block, step)) {
          case LedgerOutcome::kApplied:
            observation.server_results_matched.emplace_back(
                *NonEmptyString(block, "tool_use_id"));
            break;
          case LedgerOutcome::kDuplicateResult:
            observation.duplicate_result_indexes.push_back(i);
            break;
          default:
            observation.orphan_result_indexes.push_back(i);
            break;
        }
        break;
      }
    }
  }
  for (ToolUseId& id : announced_server) {
    if (!IsTerminal(Get(id)->state)) {
      observation.deferred_server_ids.push_back(std::move(id));
    }
  }
  return observation;
}

template <typename Select, typename ReasonFor>
ClosedTools ToolLedger::CloseWhere(Select select, ReasonFor reason_for,
                                   std::string_view message) {
  ClosedTools closed;
  for (ToolEntry& entry : entries_) {
    if (IsTerminal(entry.state) || !select(entry)) continue;
    Transition(entry, ToolState::kError, reason_for(entry), message);
    (entry.kind == ToolKind::kClient ? closed.client : closed.server)
        .push_back(entry.id);
  }
  return closed;
}

ClosedTools ToolLedger::AbortStep(int step, std::string_view message) {
  return CloseWhere(
      [step](const ToolEntry& entry) { return entry.step == step; },
      [](const ToolEntry&) { return ErrorReason::kStreamAborted; }, message);
}

ClosedTools ToolLedger::CancelAll(std::string_view message) {
  return CloseWhere([](const ToolEntry&) { return true; },
                    [](const ToolEntry&) { return ErrorReason::kCancelled; },
                    message);
}

ClosedTools ToolLedger::CloseTask() {
  closed_ = true;
  ClosedTools closed = CloseWhere(
      [](const ToolEntry& entry) { return entry.kind == ToolKind::kServer; },
      [](const ToolEntry&) { return ErrorReason::kServerResultMissing; },
      "the task ended before the server tool's result arrived");
  closed.client =
      CloseWhere([](const ToolEntry&) { return true; },
                 [](const ToolEntry&) { return ErrorReason::kCancelled; },
                 "the task ended before the tool finished")
          .client;
  return closed;
}

std::vector<ToolUseId> ToolLedger::PendingClientIds(int step) const {
  std::vector<ToolUseId> ids;
  for (const ToolEntry& entry : entries_) {
    if (entry.kind == ToolKind::kClient && entry.step == step &&
        !IsTerminal(entry.state)) {
      ids.push_back(entry.id);
    }
  }
  return ids;
}

bool ToolLedger::AllClientTerminal(int step) const {
  for (const ToolEntry& entry : entries_) {
    if (entry.kind == ToolKind::kClient && entry.step == step &&
        !IsTerminal(entry.state)) {
      return false;
    }
  }
  return true;
}

std::vector<ToolUseId> ToolLedger::OpenServerIds() const {
  std::vector<ToolUseId> ids;
  for (const ToolEntry& entry : entries_) {
    if (entry.kind == ToolKind::kServer && !IsTerminal(entry.state)) {
      ids.push_back(entry.id);
    }
  }
  return ids;
}

absl::StatusOr<Json> ToolLedger::ToolResultFor(const ToolUseId& id) const {
  const ToolEntry* entry = Get(id);
  if (entry == nullptr) {
    return absl::NotFoundError(Cat("no tool with id ", id.value()));
  }
  if (entry->kind != ToolKind::kClient) {
    return absl::FailedPreconditionError(Cat(
        "tool ", id.value(), " is a server tool; the API supplies its result"));
  }
  if (!IsTerminal(entry->state)) {
    return absl::FailedPreconditionError(
        Cat("tool ", id.value(), " is still ", ToolStateName(entry->state)));
  }
  Json block = Json::object();
  block["type"] = "tool_result";
  block["tool_use_id"] = id.value();
  if (entry->state == ToolState::kDone) {
    if (entry->result.has_value()) {
      if (auto content = ToolResultContent(*entry->result)) {
        block["content"] = *std::move(content);
      }
    }
    return block;
  }

  const std::string& detail = entry->message;
  std::string text;
  switch (entry->reason.value_or(ErrorReason::kToolFailed)) {
    case ErrorReason::kToolFailed:
      if (entry->result.has_value()) {
        // The tool's own error output tells the model the most.
        if (auto content = ToolResultContent(*entry->result)) {
          block["content"] = *std::move(content);
          block["is_error"] = true;
          return block;
        }
      }
      text = WithDetail(Cat("Tool '", entry->name, "' failed"),
                        detail.empty() ? "it reported an error" : detail);
      break;
    case ErrorReason::kInvalidInput:
      text = entry->input_invalid
                 ? WithDetail("Tool input was invalid JSON", entry->input_error)
                 : WithDetail(Cat("Tool '", entry->name,
                                  "' rejected its input as invalid"),
                              detail);
      break;
    case ErrorReason::kTimeout:
      text = WithDetail("The tool did not finish: it timed out", detail);
      break;
    case ErrorReason::kCancelled:
      text = WithDetail("The tool did not finish: the request was cancelled",
                        detail);
      break;
    case ErrorReason::kWorkerLost:
      text = WithDetail(
          "The tool did not finish: the worker running it was lost", detail);
      break;
    case ErrorReason::kNoWorker:
      text = WithDetail(Cat("The tool did not run: no worker for '",
                            entry->name, "' was available"),
                        detail);
      break;
    case ErrorReason::kQueueFull:
      text = WithDetail(Cat("The tool did not run: too many calls of '",
                            entry->name, "' were waiting"),
                        detail);
      break;
    case ErrorReason::kStreamAborted:
      text = WithDetail(
          "The tool did not finish: the response that requested it was "
          "interrupted",
          detail);
      break;
    case ErrorReason::kServerResultMissing:
      text = WithDetail("The tool did not finish: its result never arrived",
                        detail);
      break;
  }
  block["content"] = text;
  block["is_error"] = true;
  return block;
}

}  // namespace toolmesh::common
