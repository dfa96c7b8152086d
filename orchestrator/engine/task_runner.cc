#include "orchestrator/engine/task_runner.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/conversation_repair.h"
#include "common/messages.h"
#include "common/request_validator.h"
#include "google/protobuf/util/time_util.h"
#include "orchestrator/engine/log.h"

namespace toolmesh::orchestrator {
namespace {

using common::ErrorReason;
using common::Json;
using common::ToolKind;
using common::ToolState;
using common::ToolUseId;
using google::protobuf::util::TimeUtil;

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

google::protobuf::Duration ToDurationProto(absl::Duration d) {
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

v1::ToolCallState StateToProto(ToolState state) {
  switch (state) {
    case ToolState::kPending:
      return v1::TOOL_CALL_STATE_PENDING;
    case ToolState::kRunning:
      return v1::TOOL_CALL_STATE_RUNNING;
    case ToolState::kDone:
      return v1::TOOL_CALL_STATE_DONE;
    case ToolState::kError:
      return v1::TOOL_CALL_STATE_ERROR;
  }
  return v1::TOOL_CALL_STATE_UNSPECIFIED;
}

v1::ToolErrorReason ReasonToProto(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kToolFailed:
      return v1::TOOL_ERROR_REASON_TOOL_FAILED;
    case ErrorReason::kInvalidInput:
      return v1::TOOL_ERROR_REASON_INVALID_INPUT;
    case ErrorReason::kTimeout:
      return v1::TOOL_ERROR_REASON_TIMEOUT;
    case ErrorReason::kCancelled:
      return v1::TOOL_ERROR_REASON_CANCELLED;
    case ErrorReason::kWorkerLost:
      return v1::TOOL_ERROR_REASON_WORKER_LOST;
    case ErrorReason::kNoWorker:
      return v1::TOOL_ERROR_REASON_NO_WORKER;
    case ErrorReason::kStreamAborted:
      return v1::TOOL_ERROR_REASON_STREAM_ABORTED;
    case ErrorReason::kServerResultMissing:
      return v1::TOOL_ERROR_REASON_SERVER_RESULT_MISSING;
    case ErrorReason::kQueueFull:
      return v1::TOOL_ERROR_REASON_QUEUE_FULL;
  }
  return v1::TOOL_ERROR_REASON_UNSPECIFIED;
}

// The cancel reason a worker gets when a call ends without its result.
v1::CancelReason CancelReasonFor(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kStreamAborted:
      return v1::CANCEL_REASON_STREAM_ABORTED;
    case ErrorReason::kTimeout:
      return v1::CANCEL_REASON_DEADLINE_EXCEEDED;
    default:
      return v1::CANCEL_REASON_TASK_CANCELLED;
  }
}

// A tool block of a streamed or committed message: its id, name and kind.
struct ToolBlock {
  std::string id;
  std::string name;
  ToolKind kind = ToolKind::kClient;
};

std::optional<ToolBlock> AsToolBlock(const Json& block) {
  if (!block.is_object()) return std::nullopt;
  auto type = block.find("type");
  auto id = block.find("id");
  if (type == block.end() || !type->is_string() || id == block.end() ||
      !id->is_string()) {
    return std::nullopt;
  }
  const std::string& t = type->get_ref<const std::string&>();
  ToolBlock out;
  if (t == "tool_use") {
    out.kind = ToolKind::kClient;
  } else if (t.size() > 9 && t.ends_with("_tool_use")) {
    out.kind = ToolKind::kServer;
  } else {
    return std::nullopt;
  }
  out.id = id->get<std::string>();
  auto name = block.find("name");
  if (name != block.end() && name->is_string()) out.name = name->get<std::string>();
  return out;
}

bool IsDeltaEvent(const v1::TaskEvent& event) {
  return event.has_text_delta() || event.has_thinking_delta();
}



}  // namespace

bool EngineQueue::Post(absl::AnyInvocable<void()> fn) {
  {
    absl::MutexLock lock(&mu_);
    if (!closed_) {
      queue_.push_back(std::move(fn));
      return true;
    }
  }
  return false;  // `fn` is destroyed here, outside the lock
}

bool EngineQueue::Take(std::deque<absl::AnyInvocable<void()>>& out) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || !queue_.empty();
  };
  mu_.Await(absl::Condition(&ready));
  if (queue_.empty()) return false;
  out.swap(queue_);
  return true;
}

bool EngineQueue::TryTake(std::deque<absl::AnyInvocable<void()>>& out) {
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) return false;
  out.swap(queue_);
  return true;
}

void EngineQueue::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

void AddUsage(Json& total, const Json& usage) {
  if (!usage.is_object()) return;
  if (!total.is_object()) total = Json::object();
  for (auto it = usage.begin(); it != usage.end(); ++it) {
    const Json& value = it.value();
    if (value.is_number_integer() || value.is_number_unsigned()) {
      auto existing = total.find(it.key());
      std::int64_t sum = value.get<std::int64_t>();
      if (existing != total.end() && existing->is_number()) {
        sum += existing->get<std::int64_t>();
      }
      total[it.key()] = sum;
    } else if (value.is_object()) {
      Json& nested = total[it.key()];
      AddUsage(nested, value);
    } else if (!total.contains(it.key())) {
      total[it.key()] = value;
    }
  }
}

// Forwards one attempt's transport callbacks (transport thread) to the
// engine thread, where the attempt's AttemptStreamHandler and accumulator
// live. Callbacks of an attempt that is no longer current are dropped there.
class TaskRunner::Forwarder final : public common::ModelStreamHandler {
 public:
  Forwarder(std::weak_ptr<TaskRunner> runner, std::uint64_t token,
            std::shared_ptr<EngineQueue> queue)
      : runner_(std::move(runner)), token_(token), env_(std::move(queue)) {}

  void OnResponseStarted(int http_status,
                         const common::HttpHeaders& headers) override {
    env_->Post([runner = runner_, token = token_, http_status,
               headers = headers] {
      if (auto self = runner.lock(); self && self->Current(token)) {
        self->handler_->OnResponseStarted(http_status, headers);
      }
    });
  }

  void OnData(std::string_view bytes) override {
    env_->Post([runner = runner_, token = token_,
               data = std::string(bytes)] {
      if (auto self = runner.lock(); self && self->Current(token)) {
        self->handler_->OnData(data);
      }
    });
  }

  void OnFinished(const common::TransportResult& result) override {
    env_->Post([runner = runner_, token = token_, result] {
      if (auto self = runner.lock(); self && self->Current(token)) {
        // Keeps the handler alive while it reports (it may be replaced).
        std::shared_ptr<model::AttemptStreamHandler> handler = self->handler_;
        handler->OnFinished(result);
      }
    });
  }

 private:
  const std::weak_ptr<TaskRunner> runner_;
  const std::uint64_t token_;
  // Named env_ for symmetry with the runner; only Post() is used.
  const std::shared_ptr<EngineQueue> env_;
};

TaskRunner::TaskRunner(PreparedTask task, RunnerEnv& env)
    : env_(env),
      task_id_(std::move(task.task_id)),
      spec_(std::move(task.spec)),
      request_fields_(std::move(task.request_fields)),
      created_at_(task.created_at),
      deadline_(task.deadline),
      max_turns_(task.max_turns),
      conversation_(std::move(task.conversation)),
      ledger_([this](const common::ToolTransition& t) {
                OnLedgerTransition(t);
              },
              common::ToolLedgerOptions{.max_attempts =
                                            task.max_tool_attempts}),
      updated_at_(task.created_at),
      max_tool_attempts_(static_cast<std::uint32_t>(
          std::max(1, task.max_tool_attempts))) {}

TaskRunner::~TaskRunner() {
  retry_timer_.Cancel();
  deadline_timer_.Cancel();
}

bool TaskRunner::Current(std::uint64_t token) const {
  return phase_ == Phase::kStreaming && token == attempt_token_ &&
         handler_ != nullptr;
}

bool TaskRunner::terminal() const {
  return state_ == v1::TASK_STATE_COMPLETED ||
         state_ == v1::TASK_STATE_FAILED ||
         state_ == v1::TASK_STATE_CANCELLED;
}

void TaskRunner::ScheduleDeadline() {
  if (deadline_ == absl::InfiniteFuture()) return;
  std::weak_ptr<TaskRunner> weak = weak_from_this();
  deadline_timer_ = env_.clock().ScheduleAfter(
      deadline_ - env_.clock().Now(), [weak, queue = env_.queue()] {
        queue->Post([weak] {
          if (auto self = weak.lock()) self->OnDeadline();
        });
      });
}

void TaskRunner::Start() {
  SetState(v1::TASK_STATE_QUEUED);
  ScheduleDeadline();
  SetState(v1::TASK_STATE_RUNNING);
  NextTurn();
}

// --- Turn loop --------------------------------------------------------------

void TaskRunner::NextTurn() {
  if (terminal()) return;
  if (turns_completed_ >= max_turns_) {
    FailTask("max_turns_exceeded",
             absl::StrCat("the task reached max_turns (", max_turns_,
                          ") before the model ended it"));
    return;
  }
  ++turn_;
  attempt_ = 0;
  retries_ = 0;
  SendAttempt();
}

void TaskRunner::SendAttempt() {
  if (terminal()) return;
  ++attempt_;
  step_ = next_step_++;
  ++attempt_token_;

  Json body = conversation_.BuildRequest(request_fields_);
  std::vector<common::Violation> violations = common::ValidateRequest(body);
  if (!violations.empty()) {
    // Our own bug: never send a request the API would reject.
    common::RepairResult repaired = common::Repair(body);
    std::string detail = absl::StrCat("turn ", turn_, ": request violated ",
                                      violations.front().message);
    Log(LogLevel::kError, "request failed validation; repaired before sending",
        {{"task_id", task_id_},
         {"turn", std::to_string(turn_)},
         {"violation", violations.front().message}});
    env_.OnRequestRepaired(*this, detail);
    if (!repaired.status.ok()) {
      FailTask("internal_error",
               absl::StrCat("the conversation cannot be sent: ",
                            repaired.status.message()));
      return;
    }
    body = std::move(repaired.body);
  }

  std::uint64_t token = attempt_token_;
  std::weak_ptr<TaskRunner> weak = weak_from_this();
  common::StreamObserver* observer = this;
  handler_ = std::make_shared<model::AttemptStreamHandler>(
      observer, [weak, token](model::AttemptOutcome outcome) {
        // Runs on the engine thread, inside Forwarder's OnFinished.
        if (auto self = weak.lock()) {
          self->OnAttemptDone(token, std::move(outcome));
        }
      });

  common::ModelRequest request;
  request.body = common::DumpJson(body);
  request.extra_headers = env_.extra_headers();
  request.request_id =
      absl::StrCat(task_id_, "/turn_", turn_, "/attempt_", attempt_);
  phase_ = Phase::kStreaming;
  v1::TaskEvent event;
  auto* started = event.mutable_turn_started();
  started->set_turn(turn_);
  started->set_attempt(attempt_);
  Emit(std::move(event));

  absl::StatusOr<common::ModelStreamId> id = env_.transport().Start(
      std::move(request), std::make_shared<Forwarder>(weak, token, env_.queue()));
  if (!id.ok()) {
    phase_ = Phase::kIdle;
    handler_.reset();
    FailTask("internal_error", absl::StrCat("the model request could not "
                                            "be started: ",
                                            id.status().message()));
    return;
  }
  stream_id_ = *id;
}

void TaskRunner::OnAttemptDone(std::uint64_t token,
                               model::AttemptOutcome outcome) {
  if (token != attempt_token_ || phase_ != Phase::kStreaming) return;
  stream_id_.reset();
  env_.OnModelBytes(outcome.transport.bytes_received);
  // The handler (and its accumulator) stays alive until this returns: the
  // Forwarder holds a reference while it reports.
  std::shared_ptr<model::AttemptStreamHandler> handler = std::move(handler_);
  if (outcome.ok()) {
    CommitStep(*outcome.message);
    return;
  }
  if (outcome.cancelled) {
    // We cancelled it (task cancel, deadline, shutdown); already handled.
    return;
  }
  HandleFailedAttempt(outcome);
}

void TaskRunner::CommitStep(const Json& message) {
  phase_ = Phase::kIdle;
  const int step = step_;
  Json content = Json::array();
  if (auto it = message.find("content");
      it != message.end() && it->is_array()) {
    content = *it;
  }
  std::string stop_reason;
  if (auto it = message.find("stop_reason");
      it != message.end() && it->is_string()) {
    stop_reason = it->get<std::string>();
  }

  // A client tool_use whose block never stopped (max_tokens truncation) or
  // whose input is unusable must never run: close it before the ledger
  // records the message's (SDK-style) partial input.
  for (const Json& block : content) {
    std::optional<ToolBlock> tool = AsToolBlock(block);
    if (!tool || tool->kind != ToolKind::kClient) continue;
    const common::ToolEntry* entry = ledger_.Get(ToolUseId(tool->id));
    if (entry != nullptr &&
        (entry->input.has_value() || IsTerminal(entry->state))) {
      continue;
    }
    if (entry == nullptr) {
      if (!tool_meta_.contains(ToolUseId(tool->id))) {
        tool_meta_[ToolUseId(tool->id)] = {"tool_use", turn_};
      }
      ledger_.Announce(ToolUseId(tool->id), tool->name, ToolKind::kClient,
                       step);
    }
    ledger_.Fail(ToolUseId(tool->id), ErrorReason::kInvalidInput,
                 common::StopReasonIsTruncation(stop_reason)
                     ? "the tool input was cut off (stop_reason " +
                           stop_reason + "); the tool was not run"
                     : "the tool input did not complete; the tool was not "
                       "run");
  }
  for (const Json& block : content) {
    std::optional<ToolBlock> tool = AsToolBlock(block);
    if (tool && !tool_meta_.contains(ToolUseId(tool->id))) {
      tool_meta_[ToolUseId(tool->id)] = {block["type"].get<std::string>(),
                                         turn_};
    }
  }

  Json assistant = {{"role", "assistant"}, {"content", content}};
  absl::StatusOr<common::MessageObservation> observed =
      ledger_.ObserveAssistantMessage(assistant, step);
  FlushTransitions();
  if (!observed.ok()) {
    FailTask("internal_error", absl::StrCat("the model's message could not "
                                            "be recorded: ",
                                            observed.status().message()));
    return;
  }
  // Client calls that arrived without a streamed block stop (e.g. whole in
  // message_start) are dispatched now.
  for (const ToolUseId& id : observed->client_tool_use_ids) {
    const common::ToolEntry* entry = ledger_.Get(id);
    if (entry != nullptr && !IsTerminal(entry->state) &&
        entry->input.has_value() && !dispatched_.contains(id)) {
      EmitInputKnown(*entry);
      EnqueueCall(id);
    }
  }

  if (!content.empty()) {
    absl::StatusOr<int> appended = conversation_.AppendStep(content, step);
    if (!appended.ok()) {
      FailTask("internal_error",
               absl::StrCat("the model's step could not be committed: ",
                            appended.status().message()));
      return;
    }
  }
  ++turns_completed_;
  stop_reason_ = stop_reason;
  final_message_ = message;
  Json usage = Json::object();
  if (auto it = message.find("usage"); it != message.end()) usage = *it;
  AddUsage(usage_, usage);
  updated_at_ = env_.clock().Now();

  v1::TaskEvent event;
  auto* completed = event.mutable_turn_completed();
  completed->set_turn(turn_);
  completed->set_attempt(attempt_);
  completed->set_stop_reason(stop_reason);
  completed->set_usage_json(common::DumpJson(usage));
  Emit(std::move(event));

  if (stop_reason == "tool_use" &&
      !conversation_.PendingToolUseIds().empty()) {
    phase_ = Phase::kWaitingTools;
    waiting_step_ = step;
    MaybeSendToolResults();
    return;
  }
  if (stop_reason == "pause_turn" || stop_reason == "compaction") {
    NextTurn();
    return;
  }
  Complete(stop_reason);
}

void TaskRunner::MaybeSendToolResults() {
  if (phase_ != Phase::kWaitingTools || terminal()) return;
  // Called on every result: the ids are read once per step, and the
  // results are built only once every call has ended (cheap state checks
  // until then, resumed where the last check stopped).
  const std::pair<int, std::size_t> key(waiting_step_,
                                        conversation_.messages().size());
  if (pending_key_ != key) {
    pending_key_ = key;
    pending_ids_.clear();
    for (std::string& id : conversation_.PendingToolUseIds()) {
      pending_ids_.emplace_back(std::move(id));
    }
    first_open_ = 0;
  }
  for (; first_open_ < pending_ids_.size(); ++first_open_) {
    const common::ToolEntry* entry = ledger_.Get(pending_ids_[first_open_]);
    if (entry != nullptr && !IsTerminal(entry->state)) return;
  }
  std::vector<Json> results;
  results.reserve(pending_ids_.size());
  for (const ToolUseId& id : pending_ids_) {
    absl::StatusOr<Json> result = ledger_.ToolResultFor(id);
    if (!result.ok()) {
      if (absl::IsFailedPrecondition(result.status())) return;  // running
      FailTask("internal_error",
               absl::StrCat("no result for tool ", id.value(), ": ",
                            result.status().message()));
      return;
    }
    results.push_back(*std::move(result));
  }
  absl::Status appended = conversation_.AppendToolResults(results);
  if (!appended.ok()) {
    FailTask("internal_error",
             absl::StrCat("the tool results could not be appended: ",
                          appended.message()));
    return;
  }
  phase_ = Phase::kIdle;
  waiting_step_ = -1;
  NextTurn();
}

void TaskRunner::HandleFailedAttempt(const model::AttemptOutcome& outcome) {
  phase_ = Phase::kIdle;
  const common::AttemptFailure& failure = *outcome.failure;
  common::FailureClassification classified = common::ClassifyFailure(failure);
  std::string reason =
      failure.error_type.empty() ? classified.cause : failure.error_type;
  if (failure.kind == common::AttemptFailure::Kind::kConnection) {
    reason = "connection_error";
  } else if (failure.kind == common::AttemptFailure::Kind::kMalformed) {
    reason = "malformed_stream";
  }
  std::string detail = failure.detail.empty() ? classified.cause
                                              : failure.detail;
  ledger_.AbortStep(step_, absl::StrCat("the model stream of turn ", turn_,
                                        " attempt ", attempt_,
                                        " failed (", reason,
                                        "); the turn is requested again"));
  FlushTransitions();

  common::RetryDecision decision =
      env_.retry_policy().Decide(failure, retries_, env_.clock().Now());
  if (!decision.retry) {
    FailTask(reason, detail, failure.http_status);
    return;
  }
  ++retries_;
  v1::TaskEvent event;
  auto* retrying = event.mutable_turn_retrying();
  retrying->set_turn(turn_);
  retrying->set_attempt(attempt_);
  retrying->set_reason(reason);
  retrying->set_message(detail);
  *retrying->mutable_delay() = ToDurationProto(decision.delay);
  retrying->set_http_status(failure.http_status);
  Emit(std::move(event));

  Log(LogLevel::kInfo, "model stream failed; retrying the turn",
      {{"task_id", task_id_},
       {"turn", std::to_string(turn_)},
       {"attempt", std::to_string(attempt_)},
       {"reason", reason},
       {"delay_ms", std::to_string(absl::ToInt64Milliseconds(decision.delay))}});
  phase_ = Phase::kBackoff;
  std::uint64_t token = ++attempt_token_;
  std::weak_ptr<TaskRunner> weak = weak_from_this();
  retry_timer_ = env_.clock().ScheduleAfter(
      decision.delay, [weak, token, queue = env_.queue()] {
        queue->Post([weak, token] {
          auto self = weak.lock();
          if (self && self->phase_ == Phase::kBackoff &&
              self->attempt_token_ == token) {
            self->SendAttempt();
          }
        });
      });
}

void TaskRunner::CancelStream() {
  ++attempt_token_;
  retry_timer_.Cancel();
  if (stream_id_.has_value()) {
    env_.transport().Cancel(*stream_id_);
    stream_id_.reset();
  }
  handler_.reset();
  if (phase_ == Phase::kStreaming) {
    // The partial step is void; its tools end with the task.
    phase_ = Phase::kIdle;
  }
}

// --- Endings ----------------------------------------------------------------

absl::Status TaskRunner::Cancel(std::string_view reason) {
  if (state_ == v1::TASK_STATE_CANCELLED) return absl::OkStatus();
  if (terminal()) {
    return absl::FailedPreconditionError(
        absl::StrCat("task ", task_id_, " already ended (",
                     v1::TaskState_Name(state_), ")"));
  }
  std::string message =
      reason.empty() ? "cancelled by a client" : std::string(reason);
  SetState(v1::TASK_STATE_CANCELLING);
  CancelStream();
  ledger_.CancelAll(absl::StrCat("the task was cancelled: ", message));
  FlushTransitions();
  v1::TaskError error;
  error.set_type("cancelled");
  error.set_message(message);
  Finish(v1::TASK_STATE_CANCELLED, error);
  return absl::OkStatus();
}

void TaskRunner::OnDeadline() {
  if (terminal()) return;
  CancelStream();
  for (const common::ToolEntry& entry : ledger_.entries()) {
    if (entry.kind == ToolKind::kClient && !IsTerminal(entry.state)) {
      ledger_.Fail(entry.id, ErrorReason::kTimeout,
                   "the task's deadline passed");
    }
  }
  FlushTransitions();
  FailTask("deadline_exceeded", "the task's deadline passed");
}

void TaskRunner::Complete(const std::string& stop_reason) {
  stop_reason_ = stop_reason;
  Finish(v1::TASK_STATE_COMPLETED, std::nullopt);
}

void TaskRunner::FailTask(std::string type, std::string message,
                          int http_status) {
  if (terminal()) return;
  Log(LogLevel::kWarn, "task failed",
      {{"task_id", task_id_}, {"type", type}, {"error", message}});
  v1::TaskError error;
  error.set_type(std::move(type));
  error.set_message(std::move(message));
  error.set_http_status(http_status);
  Finish(v1::TASK_STATE_FAILED, std::move(error));
}

void TaskRunner::Finish(v1::TaskState state,
                        std::optional<v1::TaskError> error) {
  if (terminal()) return;
  CancelStream();
  deadline_timer_.Cancel();
  phase_ = Phase::kDone;
  ledger_.CloseTask();
  FlushTransitions();
  env_.dispatcher().CancelTask(task_id_, v1::CANCEL_REASON_TASK_CANCELLED,
                               "the task ended");
  error_ = std::move(error);
  finished_at_ = env_.clock().Now();
  SetState(state);

  v1::TaskEvent event;
  auto* terminal_event = event.mutable_terminal();
  terminal_event->set_state(state);
  terminal_event->set_stop_reason(stop_reason_);
  if (error_.has_value()) *terminal_event->mutable_error() = *error_;
  if (!final_message_.is_null()) {
    terminal_event->set_final_message_json(common::DumpJson(final_message_));
  }
  v1::Task view = ToProto(/*full=*/true);
  terminal_event->set_conversation_json(view.conversation_json());
  terminal_event->set_usage_json(common::DumpJson(usage_));
  Emit(std::move(event));
  env_.OnTaskFinished(*this);
}

void TaskRunner::Shutdown() {
  CancelStream();
  deadline_timer_.Cancel();
  std::vector<Subscriber> subscribers = std::move(subscribers_);
  subscribers_.clear();
  for (Subscriber& s : subscribers) {
    s.sink->OnEnd(absl::UnavailableError("the orchestrator is shutting down"));
  }
}

// --- Dispatcher reports -----------------------------------------------------

void TaskRunner::OnCallStarted(const CallRef& call,
                               const std::string& worker_id) {
  ToolUseId id(call.tool_use_id);
  workers_[id] = worker_id;
  ledger_.Start(id, call.attempt);
  FlushTransitions();
}

void TaskRunner::OnCallResult(const CallRef& call, Json content,
                              bool is_error) {
  ledger_.CompleteClient(ToolUseId(call.tool_use_id), call.attempt,
                         std::move(content), is_error);
  FlushTransitions();
  MaybeSendToolResults();
}

void TaskRunner::OnCallLost(const CallRef& call, std::string_view message,
                            bool counts_as_attempt) {
  ToolUseId id(call.tool_use_id);
  const common::ToolEntry* entry = ledger_.Get(id);
  if (entry == nullptr || IsTerminal(entry->state) ||
      entry->attempt != call.attempt) {
    return;
  }
  if (entry->state == ToolState::kPending) {
    // Never started (handed back before Start): deliver the same attempt
    // again.
    EnqueueCall(id);
    return;
  }
  // A draining worker's hand-back does not count against max_attempts.
  ledger_.Requeue(id, message, counts_as_attempt);
  FlushTransitions();
  entry = ledger_.Get(id);
  if (entry != nullptr && entry->state == ToolState::kPending) {
    EnqueueCall(id);
  }
  MaybeSendToolResults();
}

void TaskRunner::OnCallFailed(const CallRef& call, ErrorReason reason,
                              std::string_view message) {
  ToolUseId id(call.tool_use_id);
  const common::ToolEntry* entry = ledger_.Get(id);
  if (entry == nullptr || entry->attempt != call.attempt) return;
  ledger_.Fail(id, reason, message);
  FlushTransitions();
  MaybeSendToolResults();
}

void TaskRunner::OnLateResult(const CallRef& call, const std::string& worker_id,
                              Json content, bool is_error) {
  ToolUseId id(call.tool_use_id);
  const common::ToolEntry* entry = ledger_.Get(id);
  if (entry == nullptr || IsTerminal(entry->state)) return;
  const int current = entry->attempt;
  if (ledger_.CompleteClientEarlierAttempt(id, call.attempt, std::move(content),
                                           is_error) !=
      common::LedgerOutcome::kApplied) {
    return;
  }
  Log(LogLevel::kInfo, "accepted the result of an earlier attempt",
      {{"task_id", task_id_},
       {"tool_use_id", call.tool_use_id},
       {"attempt", std::to_string(call.attempt)},
       {"current_attempt", std::to_string(current)},
       {"worker_id", worker_id}});
  // The current delivery is superseded: dequeued, or cancelled where it
  // runs.
  env_.dispatcher().Cancel(task_id_, call.tool_use_id,
                           v1::CANCEL_REASON_SUPERSEDED,
                           absl::StrCat("attempt ", call.attempt,
                                        " finished first"));
  workers_[id] = worker_id;
  FlushTransitions();
  MaybeSendToolResults();
}

// --- Ledger glue ------------------------------------------------------------

void TaskRunner::OnLedgerTransition(const common::ToolTransition& t) {
  // The ledger is mid-operation: record, and act on it in
  // FlushTransitions() once the ledger call returned.
  pending_transitions_.push_back(t);
}

void TaskRunner::FlushTransitions() {
  while (!pending_transitions_.empty()) {
    std::vector<common::ToolTransition> batch =
        std::move(pending_transitions_);
    pending_transitions_.clear();
    for (const common::ToolTransition& t : batch) {
      v1::TaskEvent event;
      auto* tool = event.mutable_tool_transition();
      tool->set_tool_use_id(t.id.value());
      tool->set_name(t.name);
      tool->set_kind(t.kind == ToolKind::kClient ? v1::TOOL_KIND_CLIENT
                                                 : v1::TOOL_KIND_SERVER);
      tool->set_state(StateToProto(t.to));
      if (t.reason.has_value()) tool->set_reason(ReasonToProto(*t.reason));
      tool->set_message(t.message);
      if (t.kind == ToolKind::kClient) tool->set_attempt(t.attempt);
      auto meta = tool_meta_.find(t.id);
      if (meta != tool_meta_.end()) {
        tool->set_block_type(meta->second.block_type);
        tool->set_turn(meta->second.turn);
      } else {
        tool->set_turn(turn_);
      }
      if (auto w = workers_.find(t.id);
          w != workers_.end() && t.to != ToolState::kPending) {
        tool->set_worker_id(w->second);
      }
      const common::ToolEntry* entry = ledger_.Get(t.id);
      if (IsTerminal(t.to) && entry != nullptr) {
        if (t.kind == ToolKind::kClient) {
          absl::StatusOr<Json> result = ledger_.ToolResultFor(t.id);
          if (result.ok()) tool->set_result_json(common::DumpJson(*result));
          if (t.to == ToolState::kError && t.reason.has_value() &&
              *t.reason != ErrorReason::kToolFailed) {
            // Ended without its own result: stop it wherever it runs.
            env_.dispatcher().Cancel(task_id_, t.id.value(),
                                     CancelReasonFor(*t.reason), t.message);
          }
        } else if (entry->result.has_value()) {
          tool->set_result_json(common::DumpJson(*entry->result));
        }
      }
      if (t.to == ToolState::kError && t.reason.has_value()) {
        Log(LogLevel::kInfo, "tool call ended with an error",
            {{"task_id", task_id_},
             {"tool_use_id", t.id.value()},
             {"tool", t.name},
             {"reason", std::string(common::ErrorReasonName(*t.reason))},
             {"detail", t.message}});
      } else if (t.from == ToolState::kRunning &&
                 t.to == ToolState::kPending) {
        Log(LogLevel::kInfo, "tool call delivery lost; delivering again",
            {{"task_id", task_id_},
             {"tool_use_id", t.id.value()},
             {"attempt", std::to_string(t.attempt)},
             {"detail", t.message}});
      }
      Emit(std::move(event));
    }
  }
}

void TaskRunner::EmitInputKnown(const common::ToolEntry& entry) {
  v1::TaskEvent event;
  auto* tool = event.mutable_tool_transition();
  tool->set_tool_use_id(entry.id.value());
  tool->set_name(entry.name);
  tool->set_kind(entry.kind == ToolKind::kClient ? v1::TOOL_KIND_CLIENT
                                                 : v1::TOOL_KIND_SERVER);
  tool->set_state(StateToProto(entry.state));
  if (entry.input.has_value()) {
    tool->set_input_json(common::DumpJson(*entry.input));
  }
  if (entry.kind == ToolKind::kClient) tool->set_attempt(entry.attempt);
  auto meta = tool_meta_.find(entry.id);
  if (meta != tool_meta_.end()) {
    tool->set_block_type(meta->second.block_type);
    tool->set_turn(meta->second.turn);
  }
  Emit(std::move(event));
}

void TaskRunner::EnqueueCall(const ToolUseId& id,
                             absl::Duration schedule_grace) {
  const common::ToolEntry* entry = ledger_.Get(id);
  if (entry == nullptr || !entry->input.has_value() ||
      IsTerminal(entry->state)) {
    return;
  }
  dispatched_.insert(id);
  CallSpec call;
  call.ref.task_id = task_id_;
  call.ref.tool_use_id = id.value();
  call.ref.attempt = entry->attempt;
  call.name = entry->name;
  call.input_json = common::DumpJson(*entry->input);
  call.deadline = deadline_;
  call.schedule_grace = schedule_grace;
  env_.dispatcher().Enqueue(std::move(call));
}

// --- Stream observer --------------------------------------------------------

void TaskRunner::OnBlockStart(std::int64_t /*index*/, const Json& block) {
  std::optional<ToolBlock> tool = AsToolBlock(block);
  if (!tool) return;
  ToolUseId id(tool->id);
  if (!tool_meta_.contains(id)) {
    tool_meta_[id] = {block["type"].get<std::string>(), turn_};
  }
  ledger_.Announce(id, tool->name, tool->kind, step_);
  FlushTransitions();
}

void TaskRunner::OnTextDelta(std::int64_t index, std::string_view text) {
  v1::TaskEvent event;
  auto* delta = event.mutable_text_delta();
  delta->set_turn(turn_);
  delta->set_attempt(attempt_);
  delta->set_block_index(static_cast<std::uint32_t>(index));
  delta->set_text(std::string(text));
  Emit(std::move(event));
}

void TaskRunner::OnThinkingDelta(std::int64_t index,
                                 std::string_view thinking) {
  v1::TaskEvent event;
  auto* delta = event.mutable_thinking_delta();
  delta->set_turn(turn_);
  delta->set_attempt(attempt_);
  delta->set_block_index(static_cast<std::uint32_t>(index));
  delta->set_thinking(std::string(thinking));
  Emit(std::move(event));
}

void TaskRunner::OnBlockStop(std::int64_t /*index*/, const Json& block,
                             const common::BlockInfo& info) {
  std::optional<ToolBlock> tool = AsToolBlock(block);
  if (!tool) return;
  ToolUseId id(tool->id);
  const common::ToolEntry* entry = ledger_.Get(id);
  if (entry == nullptr || entry->step != step_ || IsTerminal(entry->state)) {
    return;
  }
  auto input = block.find("input");
  bool valid = info.input_state == common::InputState::kValid &&
               input != block.end() && input->is_object();
  if (tool->kind == ToolKind::kClient && !info.runnable()) valid = false;
  if (valid && tool->kind == ToolKind::kClient &&
      env_.max_tool_input_bytes() > 0) {
    const std::size_t size = common::DumpJson(*input).size();
    if (size > env_.max_tool_input_bytes()) {
      ledger_.MarkInputInvalid(
          id, absl::StrCat("the tool input is ", size,
                           " bytes, over the orchestrator's limit of ",
                           env_.max_tool_input_bytes(), " bytes"));
      FlushTransitions();
      return;
    }
  }
  if (valid) {
    ledger_.SetInput(id, *input);
    FlushTransitions();
    entry = ledger_.Get(id);
    EmitInputKnown(*entry);
    if (tool->kind == ToolKind::kClient) EnqueueCall(id);
    return;
  }
  std::string why =
      info.input_error.ok()
          ? std::string("the tool input is not a JSON object")
          : absl::StrCat("the tool input is not valid JSON: ",
                         info.input_error.message());
  ledger_.MarkInputInvalid(id, why);
  FlushTransitions();
}

// --- Events -----------------------------------------------------------------

void TaskRunner::SetState(v1::TaskState state) {
  if (state == state_) return;
  v1::TaskEvent event;
  auto* changed = event.mutable_state_changed();
  changed->set_state(state);
  changed->set_previous_state(state_);
  state_ = state;
  updated_at_ = env_.clock().Now();
  Emit(std::move(event));
}

void TaskRunner::Emit(v1::TaskEvent event) {
  event.set_task_id(task_id_);
  event.set_seq(events_.size() + 1);
  *event.mutable_time() = ToTimestamp(env_.clock().Now());
  events_.push_back(std::move(event));
  const v1::TaskEvent& stored = events_.back();
  // Tool transitions and deltas are replayed from the event log at
  // recovery (see Restore); everything else is in the snapshot.
  if (!IsDeltaEvent(stored) && !stored.has_tool_transition()) {
    snapshot_dirty_ = true;
  }
  env_.OnEvent(stored);
  // Watchers get it once it is durable (Published()).
  env_.Touched(*this);
}

void TaskRunner::Published(std::uint64_t seq) {
  if (seq > published_seq_) published_seq_ = std::min<std::uint64_t>(
      seq, events_.size());
  Deliver();
}

void TaskRunner::Deliver() {
  std::vector<Subscriber> current = std::move(subscribers_);
  subscribers_.clear();
  std::vector<Subscriber> keep;
  keep.reserve(current.size());
  for (Subscriber& s : current) {
    bool ended = false;
    while (!ended && s.next_seq <= published_seq_) {
      const v1::TaskEvent& event = events_[s.next_seq - 1];
      ++s.next_seq;
      if (s.omit_deltas && IsDeltaEvent(event)) continue;
      if (!s.sink->OnEvent(event)) {
        s.sink->OnEnd(absl::ResourceExhaustedError(
            "the client reads events too slowly; resume WatchTask with "
            "after_seq set to the last seq received"));
        ended = true;
      } else if (event.has_terminal()) {
        s.sink->OnEnd(absl::OkStatus());
        ended = true;
      }
    }
    if (!ended && terminal() && published_seq_ == events_.size() &&
        s.next_seq > published_seq_) {
      // It had seen the terminal event already (after_seq == last_seq).
      s.sink->OnEnd(absl::OkStatus());
      ended = true;
    }
    if (!ended) keep.push_back(std::move(s));
  }
  for (Subscriber& s : subscribers_) keep.push_back(std::move(s));
  subscribers_ = std::move(keep);
}

void TaskRunner::Watch(std::shared_ptr<EventSubscriber> subscriber,
                       std::uint64_t after_seq, bool omit_deltas) {
  if (after_seq > events_.size()) {
    subscriber->OnEnd(absl::InvalidArgumentError(absl::StrCat(
        "after_seq ", after_seq, " is beyond the task's last_seq ",
        events_.size())));
    return;
  }
  subscribers_.push_back({std::move(subscriber), omit_deltas, after_seq + 1});
  Deliver();
}

void TaskRunner::Unwatch(const std::shared_ptr<EventSubscriber>& subscriber) {
  std::erase_if(subscribers_, [&](const Subscriber& s) {
    return s.sink == subscriber;
  });
}

v1::Task TaskRunner::ToProto(bool full) const {
  v1::Task task;
  task.set_task_id(task_id_);
  *task.mutable_spec() = spec_;
  task.set_state(state_);
  *task.mutable_created_at() = ToTimestamp(created_at_);
  *task.mutable_updated_at() = ToTimestamp(updated_at_);
  if (finished_at_.has_value()) {
    *task.mutable_finished_at() = ToTimestamp(*finished_at_);
  }
  task.set_last_seq(events_.size());
  task.set_turns(turns_completed_);
  task.set_stop_reason(stop_reason_);
  if (error_.has_value()) *task.mutable_error() = *error_;
  task.set_usage_json(common::DumpJson(usage_));
  if (full) {
    if (!final_message_.is_null()) {
      task.set_final_message_json(common::DumpJson(final_message_));
    }
    common::RepairResult normal = conversation_.Normalized(request_fields_);
    const Json* messages = &conversation_.messages();
    if (normal.status.ok() && normal.body.is_object() &&
        normal.body.contains("messages")) {
      messages = &normal.body["messages"];
    }
    task.set_conversation_json(common::DumpJson(*messages));
  }
  return task;
}

// --- Persistence ------------------------------------------------------------

namespace {

std::string_view PhaseName(int phase) {
  static constexpr std::string_view kNames[] = {"idle", "streaming", "backoff",
                                                "waiting_tools", "done"};
  return phase >= 0 && phase < 5 ? kNames[phase] : "idle";
}

int PhaseFromName(std::string_view name) {
  for (int i = 0; i < 5; ++i) {
    if (PhaseName(i) == name) return i;
  }
  return 0;
}

Json TimeJson(std::optional<absl::Time> t) {
  if (!t.has_value() || *t == absl::InfiniteFuture()) return nullptr;
  return absl::ToUnixNanos(*t);
}

absl::Time TimeFrom(const Json& j, absl::Time absent) {
  return j.is_number_integer() ? absl::FromUnixNanos(j.get<std::int64_t>())
                               : absent;
}

Json EntryJson(const common::ToolEntry& e) {
  Json j = {{"id", e.id.value()},
            {"name", e.name},
            {"kind", std::string(common::ToolKindName(e.kind))},
            {"step", e.step},
            {"state", std::string(common::ToolStateName(e.state))},
            {"attempt", e.attempt},
            {"lost", e.lost_deliveries},
            {"result_is_error", e.result_is_error},
            {"message", e.message}};
  if (e.input.has_value()) j["input"] = *e.input;
  if (e.input_invalid) j["input_error"] = e.input_error;
  if (e.result.has_value()) j["result"] = *e.result;
  if (e.result_step.has_value()) j["result_step"] = *e.result_step;
  if (e.reason.has_value()) {
    j["reason"] = std::string(common::ErrorReasonName(*e.reason));
  }
  return j;
}

absl::StatusOr<common::ToolEntry> EntryFrom(const Json& j) {
  if (!j.is_object()) return absl::DataLossError("tool entry not an object");
  common::ToolEntry e;
  e.id = ToolUseId(j.value("id", ""));
  e.name = j.value("name", "");
  e.kind = j.value("kind", "") == "server" ? ToolKind::kServer
                                           : ToolKind::kClient;
  e.step = j.value("step", 0);
  std::string state = j.value("state", "pending");
  e.state = state == "running" ? ToolState::kRunning
            : state == "done"  ? ToolState::kDone
            : state == "error" ? ToolState::kError
                               : ToolState::kPending;
  e.attempt = j.value("attempt", 1);
  e.lost_deliveries = j.value("lost", 0);
  e.result_is_error = j.value("result_is_error", false);
  e.message = j.value("message", "");
  if (auto it = j.find("input"); it != j.end()) e.input = *it;
  if (auto it = j.find("input_error"); it != j.end() && it->is_string()) {
    e.input_invalid = true;
    e.input_error = it->get<std::string>();
  }
  if (auto it = j.find("result"); it != j.end()) e.result = *it;
  if (auto it = j.find("result_step"); it != j.end() && it->is_number()) {
    e.result_step = it->get<int>();
  }
  if (auto it = j.find("reason"); it != j.end() && it->is_string()) {
    absl::StatusOr<ErrorReason> reason =
        common::ParseErrorReason(it->get<std::string>());
    if (!reason.ok()) return absl::DataLossError(reason.status().message());
    e.reason = *reason;
  }
  return e;
}

}  // namespace

Json TaskRunner::Snapshot() const {
  Json tools = Json::array();
  for (const common::ToolEntry& entry : ledger_.entries()) {
    Json j = EntryJson(entry);
    if (auto meta = tool_meta_.find(entry.id); meta != tool_meta_.end()) {
      j["block_type"] = meta->second.block_type;
      j["turn"] = meta->second.turn;
    }
    if (auto w = workers_.find(entry.id); w != workers_.end()) {
      j["worker"] = w->second;
    }
    if (dispatched_.contains(entry.id)) j["dispatched"] = true;
    tools.push_back(std::move(j));
  }
  Json error = nullptr;
  if (error_.has_value()) {
    error = {{"type", error_->type()},
             {"message", error_->message()},
             {"http_status", error_->http_status()}};
  }
  return Json{{"v", 1},
              {"seq", events_.size()},
              {"request_fields", request_fields_},
              {"conversation", conversation_.messages()},
              {"created_ns", absl::ToUnixNanos(created_at_)},
              {"deadline_ns", TimeJson(deadline_)},
              {"updated_ns", TimeJson(updated_at_)},
              {"finished_ns", TimeJson(finished_at_)},
              {"max_turns", max_turns_},
              {"max_tool_attempts", max_tool_attempts_},
              {"state", static_cast<int>(state_)},
              {"phase", std::string(PhaseName(static_cast<int>(phase_)))},
              {"turn", turn_},
              {"attempt", attempt_},
              {"retries", retries_},
              {"turns_completed", turns_completed_},
              {"step", step_},
              {"next_step", next_step_},
              {"waiting_step", waiting_step_},
              {"stop_reason", stop_reason_},
              {"error", std::move(error)},
              {"final_message", final_message_},
              {"usage", usage_},
              {"tools", std::move(tools)}};
}

absl::StatusOr<std::shared_ptr<TaskRunner>> TaskRunner::Restore(
    std::string task_id, v1::TaskSpec spec, const Json& snap,
    std::vector<v1::TaskEvent> events, RunnerEnv& env) {
  if (!snap.is_object() || snap.value("v", 0) != 1) {
    return absl::DataLossError(
        absl::StrCat("task ", task_id, ": unknown snapshot format"));
  }
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (events[i].seq() != i + 1) {
      return absl::DataLossError(absl::StrCat(
          "task ", task_id, ": stored events are not 1..n (event ", i + 1,
          " has seq ", events[i].seq(), ")"));
    }
  }
  PreparedTask prepared;
  prepared.task_id = task_id;
  prepared.spec = std::move(spec);
  prepared.request_fields = snap.value("request_fields", Json::object());
  absl::StatusOr<common::Conversation> conversation =
      common::Conversation::FromMessages(
          snap.value("conversation", Json::array()));
  if (!conversation.ok()) {
    return absl::DataLossError(absl::StrCat(
        "task ", task_id, ": ", conversation.status().message()));
  }
  prepared.conversation = *std::move(conversation);
  prepared.created_at = TimeFrom(snap.value("created_ns", Json()),
                                 absl::UnixEpoch());
  prepared.deadline = TimeFrom(snap.value("deadline_ns", Json()),
                               absl::InfiniteFuture());
  prepared.max_turns = snap.value("max_turns", 32u);
  prepared.max_tool_attempts = snap.value("max_tool_attempts", 3);
  auto runner = std::make_shared<TaskRunner>(std::move(prepared), env);
  TaskRunner& r = *runner;
  r.state_ = static_cast<v1::TaskState>(snap.value("state", 0));
  r.phase_ = static_cast<Phase>(PhaseFromName(snap.value("phase", "idle")));
  r.updated_at_ = TimeFrom(snap.value("updated_ns", Json()), r.created_at_);
  if (snap.contains("finished_ns") && snap["finished_ns"].is_number()) {
    r.finished_at_ = TimeFrom(snap["finished_ns"], r.created_at_);
  }
  r.turn_ = snap.value("turn", 0u);
  r.attempt_ = snap.value("attempt", 0u);
  r.retries_ = snap.value("retries", 0);
  r.turns_completed_ = snap.value("turns_completed", 0u);
  r.step_ = snap.value("step", -1);
  r.next_step_ = snap.value("next_step", 0);
  r.waiting_step_ = snap.value("waiting_step", -1);
  r.stop_reason_ = snap.value("stop_reason", "");
  if (const Json& error = snap.value("error", Json()); error.is_object()) {
    v1::TaskError e;
    e.set_type(error.value("type", ""));
    e.set_message(error.value("message", ""));
    e.set_http_status(error.value("http_status", 0));
    r.error_ = std::move(e);
  }
  r.final_message_ = snap.value("final_message", Json());
  r.usage_ = snap.value("usage", Json::object());
  for (const Json& j : snap.value("tools", Json::array())) {
    absl::StatusOr<common::ToolEntry> entry = EntryFrom(j);
    if (!entry.ok()) return entry.status();
    ToolUseId id = entry->id;
    if (j.contains("block_type")) {
      r.tool_meta_[id] = {j.value("block_type", ""), j.value("turn", 0u)};
    }
    if (j.contains("worker")) r.workers_[id] = j.value("worker", "");
    if (j.value("dispatched", false)) r.dispatched_.insert(id);
    absl::Status restored = r.ledger_.Restore(*std::move(entry));
    if (!restored.ok()) {
      return absl::DataLossError(
          absl::StrCat("task ", task_id, ": ", restored.message()));
    }
  }
  // Tool transitions after the snapshot live only in the event log.
  const std::uint64_t snapshot_seq = snap.value("seq", std::uint64_t{0});
  if (snapshot_seq > events.size()) {
    return absl::DataLossError(absl::StrCat(
        "task ", task_id, ": the snapshot is newer than the event log"));
  }
  for (std::size_t i = snapshot_seq; i < events.size(); ++i) {
    if (!events[i].has_tool_transition()) continue;
    if (absl::Status applied = r.ReplayToolTransition(
            events[i].tool_transition());
        !applied.ok()) {
      return absl::DataLossError(
          absl::StrCat("task ", task_id, ": event ", i + 1, ": ",
                       applied.message()));
    }
  }
  r.events_ = std::move(events);
  r.stored_seq_ = r.events_.size();
  r.batched_seq_ = r.events_.size();
  r.published_seq_ = r.events_.size();
  r.snapshot_dirty_ = false;
  return runner;
}

absl::Status TaskRunner::ReplayToolTransition(const v1::ToolTransition& t) {
  const ToolUseId id(t.tool_use_id());
  const common::ToolEntry* existing = ledger_.Get(id);
  common::ToolEntry entry;
  if (existing != nullptr) {
    entry = *existing;
  } else {
    // Announced after the snapshot: in the attempt that was streaming.
    entry.id = id;
    entry.name = t.name();
    entry.kind = t.kind() == v1::TOOL_KIND_SERVER ? ToolKind::kServer
                                                  : ToolKind::kClient;
    entry.step = step_ < 0 ? 0 : step_;
    tool_meta_[id] = {t.block_type(), t.turn()};
  }
  switch (t.state()) {
    case v1::TOOL_CALL_STATE_RUNNING:
      entry.state = ToolState::kRunning;
      break;
    case v1::TOOL_CALL_STATE_DONE:
      entry.state = ToolState::kDone;
      break;
    case v1::TOOL_CALL_STATE_ERROR:
      entry.state = ToolState::kError;
      break;
    default:
      entry.state = ToolState::kPending;
      break;
  }
  if (entry.kind == ToolKind::kClient && t.attempt() > 0) {
    if (static_cast<int>(t.attempt()) > entry.attempt &&
        existing != nullptr && existing->state == ToolState::kRunning) {
      // A RUNNING -> PENDING with a new attempt is a lost delivery.
      ++entry.lost_deliveries;
    }
    entry.attempt = static_cast<int>(t.attempt());
  }
  if (!t.input_json().empty()) {
    absl::StatusOr<Json> input = common::ParseJson(t.input_json());
    if (input.ok() && input->is_object()) entry.input = *std::move(input);
  }
  entry.reason.reset();
  if (entry.state == ToolState::kError) {
    absl::StatusOr<ErrorReason> reason = common::ParseErrorReason(
        absl::AsciiStrToLower(absl::StripPrefix(
            v1::ToolErrorReason_Name(t.reason()), "TOOL_ERROR_REASON_")));
    if (!reason.ok()) return absl::DataLossError("unknown tool error reason");
    entry.reason = *reason;
    if (*reason == ErrorReason::kInvalidInput && !entry.input.has_value()) {
      entry.input_invalid = true;
      entry.input_error = t.message();
    }
  }
  if (common::IsTerminal(entry.state)) entry.message = t.message();
  if (!t.result_json().empty()) {
    absl::StatusOr<Json> result = common::ParseJson(t.result_json());
    if (result.ok()) {
      if (entry.kind == ToolKind::kServer) {
        entry.result = *result;
        entry.result_is_error = entry.state == ToolState::kError;
        entry.result_step = entry.step;
      } else if (entry.state == ToolState::kDone ||
                 entry.reason == ErrorReason::kToolFailed) {
        if (auto content = result->find("content"); content != result->end()) {
          entry.result = *content;
        }
        entry.result_is_error = result->value("is_error", false);
      }
    }
  }
  if (!t.worker_id().empty()) workers_[id] = t.worker_id();
  return ledger_.Replace(std::move(entry));
}

void TaskRunner::Resume() {
  if (terminal()) {
    phase_ = Phase::kDone;
    return;
  }
  ScheduleDeadline();
  if (state_ == v1::TASK_STATE_CANCELLING) {
    (void)Cancel("cancelled before the orchestrator restarted");
    return;
  }
  if (state_ == v1::TASK_STATE_QUEUED || turn_ == 0) {
    SetState(v1::TASK_STATE_RUNNING);
    NextTurn();
    return;
  }
  if (phase_ == Phase::kWaitingTools) {
    for (const common::ToolEntry& entry : ledger_.entries()) {
      if (entry.kind != ToolKind::kClient || IsTerminal(entry.state)) {
        continue;
      }
      if (entry.state == ToolState::kRunning) {
        // Its worker's stream died with the old process: deliver again.
        ledger_.Requeue(entry.id, "the orchestrator restarted",
                        /*counts_as_attempt=*/false);
      }
    }
    FlushTransitions();
    for (const common::ToolEntry& entry : ledger_.entries()) {
      if (entry.kind == ToolKind::kClient && !IsTerminal(entry.state) &&
          entry.input.has_value()) {
        EnqueueCall(entry.id, kRecoveryScheduleGrace);
      }
    }
    MaybeSendToolResults();
    return;
  }
  // The turn was streaming (or about to): its partial step was never
  // committed. Its tools end stream_aborted and the turn is requested again.
  ledger_.AbortStep(step_, "the orchestrator restarted while the model "
                           "stream was running; the turn is requested again");
  FlushTransitions();
  v1::TaskEvent event;
  auto* retrying = event.mutable_turn_retrying();
  retrying->set_turn(turn_);
  retrying->set_attempt(attempt_);
  retrying->set_reason("orchestrator_restart");
  retrying->set_message(
      "the orchestrator restarted while this attempt was streaming");
  Emit(std::move(event));
  phase_ = Phase::kIdle;
  SendAttempt();
}

}  // namespace toolmesh::orchestrator
