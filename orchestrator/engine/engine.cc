#include "orchestrator/engine/engine.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <tuple>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/conversation_repair.h"
#include "common/request_validator.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "orchestrator/engine/committer.h"
#include "orchestrator/engine/histogram.h"
#include "orchestrator/engine/log.h"
#include "orchestrator/engine/task_runner.h"
#include "orchestrator/grpc/status_conversion.h"
#include "orchestrator/store/store.h"
#include "absl/strings/numbers.h"

namespace toolmesh::orchestrator {
namespace {

using common::Json;
using google::protobuf::util::TimeUtil;

constexpr std::uint32_t kDefaultPageSize = 100;
// After a failed commit, the next attempt waits this long.
constexpr absl::Duration kCommitRetryDelay = absl::Milliseconds(200);
constexpr std::uint32_t kMaxPageSize = 1000;
// Unfinished tasks recovered per engine iteration at start: between chunks
// the engine serves RPCs and worker streams, so dispatch starts long before
// a large store is fully loaded.
constexpr std::size_t kRecoveryChunk = 256;

absl::Status Unavailable() {
  return absl::UnavailableError("the orchestrator is shutting down");
}

// 24 characters of 5 random bits each, from the injected source (so that
// the deterministic simulation replays task ids too).
std::string NewTaskId(common::RandomSource& random) {
  static constexpr char kAlphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
  std::string id = "task_";
  for (int i = 0; i < 24; ++i) {
    const double u = random.Uniform01();
    int index = u > 0 ? static_cast<int>(u * 32) : 0;  // NaN and < 0 too
    id.push_back(kAlphabet[std::min(index, 31)]);
  }
  return id;
}

std::string_view TaskStateLabel(v1::TaskState state) {
  switch (state) {
    case v1::TASK_STATE_QUEUED:
      return "queued";
    case v1::TASK_STATE_RUNNING:
      return "running";
    case v1::TASK_STATE_CANCELLING:
      return "cancelling";
    case v1::TASK_STATE_COMPLETED:
      return "completed";
    case v1::TASK_STATE_FAILED:
      return "failed";
    case v1::TASK_STATE_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

}  // namespace

v1::Task TaskViewFromRecord(const TaskRecord& record);

// --- Engine::State: everything the engine thread owns ----------------------

class Engine::State final : public RunnerEnv, public DispatchListener {
 public:
  State(Engine& engine, common::Clock& clock,
        common::ModelTransport& transport, common::RandomSource& random,
        Store& store)
      : engine_(engine),
        clock_(clock),
        transport_(transport),
        store_(store),
        committer_(store_,
                   [queue = engine.queue_, this] {
                     queue->Post([this] { OnCommitted(); });
                   },
                   engine.options_.own_thread),
        random_(random),
        retry_policy_(MakeRetryPolicy(engine.options_.retry, random)),
        dispatcher_(engine.options_.dispatch, clock,
                    [queue = engine.queue_](absl::AnyInvocable<void()> fn) {
                      queue->Post(std::move(fn));
                    },
                    *this) {}

  // --- RunnerEnv ---
  common::Clock& clock() override { return clock_; }
  common::ModelTransport& transport() override { return transport_; }
  common::RetryPolicy& retry_policy() override { return retry_policy_; }
  Dispatcher& dispatcher() override { return dispatcher_; }
  const std::shared_ptr<EngineQueue>& queue() override {
    return engine_.queue_;
  }
  const common::HttpHeaders& extra_headers() override {
    return engine_.options_.extra_headers;
  }
  std::size_t max_tool_input_bytes() override {
    return engine_.options_.max_tool_input_bytes;
  }
  void OnTaskFinished(TaskRunner& runner) override {
    --active_tasks_;
    ReleaseClientSlot(runner.id());
    ++finished_by_state_[runner.state()];
    finished_order_.push_back(runner.id());
  }
  void Touched(TaskRunner& runner) override {
    if (runner.touched) return;
    runner.touched = true;
    touched_.push_back(runner.shared_from_this());
  }
  void OnEvent(const v1::TaskEvent& event) override {
    switch (event.event_case()) {
      case v1::TaskEvent::kTurnStarted:
        ++turns_started_;
        break;
      case v1::TaskEvent::kTurnRetrying:
        ++retries_by_reason_[event.turn_retrying().reason()];
        break;
      case v1::TaskEvent::kTurnCompleted:
        ++turns_by_stop_reason_[event.turn_completed().stop_reason()];
        break;
      case v1::TaskEvent::kTextDelta:
        text_bytes_ += event.text_delta().text().size();
        break;
      case v1::TaskEvent::kToolTransition: {
        const v1::ToolTransition& t = event.tool_transition();
        if (t.input_json().empty() || t.state() != v1::TOOL_CALL_STATE_PENDING) {
          ++tool_transitions_[{t.kind(), t.state(), t.reason()}];
        }
        break;
      }
      default:
        break;
    }
  }
  void OnModelBytes(std::int64_t bytes) override { model_bytes_ += bytes; }
  void OnRequestRepaired(TaskRunner& /*runner*/,
                         const std::string& /*detail*/) override {
    ++requests_repaired_;
  }

  // --- DispatchListener: routes by task id ---
  void OnCallStarted(const CallRef& call,
                     const std::string& worker_id) override {
    if (TaskRunner* runner = Find(call.task_id)) {
      runner->OnCallStarted(call, worker_id);
    }
  }
  void OnCallResult(const CallRef& call, Json content,
                    bool is_error) override {
    if (TaskRunner* runner = Find(call.task_id)) {
      runner->OnCallResult(call, std::move(content), is_error);
    }
  }
  void OnLateResult(const CallRef& call, const std::string& worker_id,
                    Json content, bool is_error) override {
    if (TaskRunner* runner = Find(call.task_id)) {
      runner->OnLateResult(call, worker_id, std::move(content), is_error);
    }
  }
  void OnCallLost(const CallRef& call, std::string_view message,
                  bool counts_as_attempt) override {
    // Shutting down (ShutdownAll removes the workers): the calls stay where
    // they are, a restart re-queues them; nothing may spend attempts or
    // move a task on now.
    if (stopping_) return;
    ++calls_lost_;
    if (TaskRunner* runner = Find(call.task_id)) {
      runner->OnCallLost(call, message, counts_as_attempt);
    }
  }
  void OnCallFailed(const CallRef& call, common::ErrorReason reason,
                    std::string_view message) override {
    if (TaskRunner* runner = Find(call.task_id)) {
      runner->OnCallFailed(call, reason, message);
    }
  }

  // The task, from memory or (finished tasks no longer held) the store.
  TaskRunner* Find(const std::string& task_id) {
    auto it = tasks_.find(task_id);
    if (it != tasks_.end()) return it->second.get();
    if (task_id.empty()) return nullptr;
    if (auto pending = unrecovered_.find(task_id);
        pending != unrecovered_.end()) {
      // Unfinished and not reached by recovery yet: recover it now.
      const TaskRecord record = std::move(pending->second);
      unrecovered_.erase(pending);
      std::shared_ptr<TaskRunner> runner = RecoverOne(record);
      if (runner == nullptr) return nullptr;
      runner->Resume();
      return runner.get();
    }
    absl::StatusOr<std::optional<TaskRecord>> record = store_.GetTask(task_id);
    if (!record.ok()) {
      LogStoreError("reading task " + task_id, record.status());
      return nullptr;
    }
    if (!record->has_value()) return nullptr;
    absl::StatusOr<std::shared_ptr<TaskRunner>> runner = Load(**record);
    if (!runner.ok()) {
      LogStoreError("loading task " + task_id, runner.status());
      return nullptr;
    }
    TaskRunner* raw = runner->get();
    tasks_[task_id] = *std::move(runner);
    if (raw->terminal()) finished_order_.push_back(task_id);
    return raw;
  }

  // Runs `fn` once everything recorded so far is durable.
  void AfterCommit(absl::AnyInvocable<void()> fn) {
    after_commit_.push_back(std::move(fn));
  }

  // End of an engine iteration: hands what changed to the committer as one
  // batch, unless a commit is in flight (then it waits for the next batch).
  // Events are published and deferred replies run in OnCommitted(), once
  // the batch holding them is durable. A failed commit keeps everything
  // pending and tries again shortly; nothing is acknowledged until it
  // succeeds.
  void Flush();
  // The commit in flight is done (waits for it if need be): publishes its
  // events and runs its replies, or after a failure queues all of it again.
  // Nothing when no commit is in flight.
  void OnCommitted();
  // Commits everything now and waits for it (shutdown).
  void FlushNow();
  // Loads the unfinished tasks and continues them, kRecoveryChunk per
  // engine iteration (RecoverSome). At start, on the engine thread. A task
  // that something asks for before its turn (Find) is recovered at once.
  void Recover();
  void RecoverSome();
  // Loads one unfinished task into tasks_ (not resumed yet); null after an
  // error (logged).
  std::shared_ptr<TaskRunner> RecoverOne(const TaskRecord& record);
  // Retention: deletes old finished tasks from the store and drops finished
  // tasks from memory beyond the configured count.
  void Retain();

  // --- RPCs ---
  absl::StatusOr<v1::SubmitTaskResponse> Submit(const Caller& caller,
                                                v1::SubmitTaskRequest request);
  absl::StatusOr<v1::ListTasksResponse> List(const v1::ListTasksRequest& req);
  std::string MetricsText();
  void ShutdownAll();

  // Worker sessions: the link of every session that said Hello.
  absl::flat_hash_map<WorkerSessionId, std::shared_ptr<WorkerLink>> sessions_;
  Dispatcher& dispatcher_ref() { return dispatcher_; }

 private:
  static common::RetryPolicy MakeRetryPolicy(
      const common::RetryPolicyOptions& options, common::RandomSource& random) {
    absl::StatusOr<common::RetryPolicy> policy =
        common::RetryPolicy::Create(options, random);
    if (policy.ok()) return *std::move(policy);
    Log(LogLevel::kWarn, "invalid retry options; using the SDK defaults",
        {{"error", std::string(policy.status().message())}});
    return common::RetryPolicy(random);
  }

  absl::StatusOr<PreparedTask> Prepare(const v1::TaskSpec& spec);
  absl::StatusOr<std::shared_ptr<TaskRunner>> Load(const TaskRecord& record);
  TaskRecord RecordOf(const TaskRunner& runner) const;
  void LogStoreError(const std::string& what, const absl::Status& status) {
    ++store_errors_;
    Log(LogLevel::kError, "store operation failed",
        {{"operation", what}, {"error", status.ToString()}});
  }

  Engine& engine_;
  common::Clock& clock_;
  common::ModelTransport& transport_;
  SerializedStore store_;
  Committer committer_;
  common::RandomSource& random_;
  std::vector<std::shared_ptr<TaskRunner>> touched_;
  std::vector<absl::AnyInvocable<void()>> after_commit_;
  // The batch the committer is writing: each runner with the last seq it
  // holds, and the replies waiting for it.
  struct InFlight {
    std::vector<std::pair<std::shared_ptr<TaskRunner>, std::uint64_t>> runners;
    std::vector<absl::AnyInvocable<void()>> replies;
  };
  InFlight inflight_;
  // Idempotency keys of tasks whose first commit is not done yet (the store
  // does not know them): key -> task id.
  absl::flat_hash_map<std::string, std::string> uncommitted_keys_;
  // After a failed commit, the next one waits until then.
  absl::Time retry_commit_at_ = absl::InfinitePast();
  // Finished tasks held in memory, oldest first (for eviction).
  std::deque<std::string> finished_order_;
  bool stopping_ = false;  // set by ShutdownAll
  common::RetryPolicy retry_policy_;
  Dispatcher dispatcher_;

 public:
  absl::flat_hash_map<std::string, std::shared_ptr<TaskRunner>> tasks_;

  int active_tasks_ = 0;
  // The client that submitted each task held in memory (tasks stored before
  // owners were recorded have none), persisted as the snapshot's "owner".
  absl::flat_hash_map<std::string, std::string> owners_;
  // Non-terminal tasks per owning client (absent: 0).
  absl::flat_hash_map<std::string, int> active_by_client_;

  // The owner of `task_id`, or "" when unknown.
  const std::string& OwnerOf(const std::string& task_id) const {
    static const std::string kNone;
    auto it = owners_.find(task_id);
    return it == owners_.end() ? kNone : it->second;
  }
  // A non-terminal task of its owner started (submitted or recovered).
  void TakeClientSlot(const std::string& task_id) {
    const std::string& owner = OwnerOf(task_id);
    if (!owner.empty()) ++active_by_client_[owner];
  }
  // It ended.
  void ReleaseClientSlot(const std::string& task_id) {
    auto it = active_by_client_.find(OwnerOf(task_id));
    if (it == active_by_client_.end()) return;
    if (--it->second <= 0) active_by_client_.erase(it);
  }
  std::int64_t submitted_ = 0;
  std::int64_t requests_repaired_ = 0;
  std::int64_t calls_lost_ = 0;
  std::int64_t store_errors_ = 0;
  std::int64_t commits_ = 0;
  std::int64_t recovered_ = 0;
  // Unfinished tasks that recovery has not reached yet, by id, and the
  // order it takes them in (ids already recovered through Find are
  // skipped).
  absl::flat_hash_map<std::string, TaskRecord> unrecovered_;
  std::deque<std::string> recovery_order_;
  absl::Time recovery_started_;
  absl::Duration commit_time_ = absl::ZeroDuration();
  Histogram commit_latency_;
  std::int64_t model_bytes_ = 0;
  absl::flat_hash_map<int, std::int64_t> finished_by_state_;
  std::int64_t turns_started_ = 0;
  std::int64_t text_bytes_ = 0;
  std::map<std::string, std::int64_t> retries_by_reason_;
  std::map<std::string, std::int64_t> turns_by_stop_reason_;
  // (kind, state, reason) -> transitions.
  std::map<std::tuple<int, int, int>, std::int64_t> tool_transitions_;
};

absl::StatusOr<PreparedTask> Engine::State::Prepare(const v1::TaskSpec& spec) {
  if (spec.model().empty()) {
    return absl::InvalidArgumentError("spec.model: required");
  }
  if (spec.max_tokens() == 0) {
    return absl::InvalidArgumentError("spec.max_tokens: required, > 0");
  }
  PreparedTask task;
  task.spec = spec;
  Json fields = Json::object();
  fields["model"] = spec.model();
  fields["max_tokens"] = spec.max_tokens();
  switch (spec.system_case()) {
    case v1::TaskSpec::kSystemText:
      if (!spec.system_text().empty()) fields["system"] = spec.system_text();
      break;
    case v1::TaskSpec::kSystemBlocksJson: {
      absl::StatusOr<Json> blocks =
          rpc::ParseJsonField("spec.system_blocks_json",
                              spec.system_blocks_json(), rpc::JsonShape::kArray);
      if (!blocks.ok()) return blocks.status();
      fields["system"] = *std::move(blocks);
      break;
    }
    default:
      break;
  }

  // Tools: client tools as the workers define them, then server tools.
  Json tools = Json::array();
  std::vector<std::string> names(spec.client_tools().begin(),
                                 spec.client_tools().end());
  if (spec.all_worker_tools()) {
    for (const v1::ToolDefinition& def : dispatcher_.AllTools()) {
      names.push_back(def.name());
    }
  }
  absl::flat_hash_set<std::string> seen;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    if (name.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(rpc::FieldPath("spec.client_tools", i), ": empty name"));
    }
    // The Messages API's rule for tool names: the API would refuse every
    // turn of the task, so refuse the task now.
    if (name.size() > 128) {
      return absl::InvalidArgumentError(
          absl::StrCat(rpc::FieldPath("spec.client_tools", i),
                       ": tool name is ", name.size(),
                       " bytes long (at most 128)"));
    }
    if (!std::all_of(name.begin(), name.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '_' || c == '-';
        })) {
      return absl::InvalidArgumentError(absl::StrCat(
          rpc::FieldPath("spec.client_tools", i), ": tool name \"", name,
          "\" does not match ^[a-zA-Z0-9_-]{1,128}$"));
    }
    if (!seen.insert(name).second) continue;
    Json tool = Json::object();
    tool["name"] = name;
    std::optional<v1::ToolDefinition> def = dispatcher_.FindTool(name);
    if (def.has_value()) {
      if (!def->description().empty()) tool["description"] = def->description();
      absl::StatusOr<Json> schema =
          rpc::ParseJsonField("input_schema_json", def->input_schema_json(),
                              rpc::JsonShape::kObject);
      tool["input_schema"] =
          schema.ok() ? *std::move(schema) : Json{{"type", "object"}};
    } else {
      // Not served now: offered with an open schema; its calls end
      // no_worker unless a worker serving it connects in time.
      tool["input_schema"] = Json{{"type", "object"}};
    }
    tools.push_back(std::move(tool));
  }
  for (int i = 0; i < spec.server_tools_json_size(); ++i) {
    absl::StatusOr<Json> tool = rpc::ParseJsonField(
        rpc::FieldPath("spec.server_tools_json", static_cast<std::size_t>(i)),
        spec.server_tools_json(i), rpc::JsonShape::kObject);
    if (!tool.ok()) return tool.status();
    tools.push_back(*std::move(tool));
  }
  if (!tools.empty()) fields["tools"] = std::move(tools);
  absl::StatusOr<std::optional<Json>> tool_choice =
      rpc::ParseOptionalJsonField("spec.tool_choice_json",
                                  spec.tool_choice_json(),
                                  rpc::JsonShape::kObject);
  if (!tool_choice.ok()) return tool_choice.status();
  if (tool_choice->has_value()) fields["tool_choice"] = **tool_choice;
  absl::StatusOr<std::optional<Json>> thinking = rpc::ParseOptionalJsonField(
      "spec.thinking_json", spec.thinking_json(), rpc::JsonShape::kObject);
  if (!thinking.ok()) return thinking.status();
  if (thinking->has_value()) fields["thinking"] = **thinking;
  fields["stream"] = true;

  // The initial conversation.
  switch (spec.conversation_case()) {
    case v1::TaskSpec::kPrompt: {
      absl::Status st = task.conversation.AppendUserText(spec.prompt());
      if (!st.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("spec.prompt: ", st.message()));
      }
      break;
    }
    case v1::TaskSpec::kMessagesJson: {
      absl::StatusOr<Json> messages =
          rpc::ParseJsonField("spec.messages_json", spec.messages_json(),
                              rpc::JsonShape::kArray);
      if (!messages.ok()) return messages.status();
      if (messages->empty()) {
        return absl::InvalidArgumentError(
            "spec.messages_json: the array is empty");
      }
      Json body = fields;
      body["messages"] = *messages;
      common::RepairResult repaired = common::Repair(body);
      if (!repaired.status.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec.messages_json: cannot be made valid: ",
            repaired.status.message()));
      }
      absl::StatusOr<common::Conversation> conversation =
          common::Conversation::FromMessages(repaired.body["messages"]);
      if (!conversation.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec.messages_json: ", conversation.status().message()));
      }
      if (!conversation->PendingToolUseIds().empty()) {
        return absl::InvalidArgumentError(
            "spec.messages_json: the last assistant message waits for tool "
            "results; end the array with the user message holding them");
      }
      const Json& last = conversation->messages().back();
      if (!last.is_object() || last.value("role", "") != "user") {
        return absl::InvalidArgumentError(
            "spec.messages_json: the last message must have role \"user\"");
      }
      task.conversation = *std::move(conversation);
      break;
    }
    default:
      return absl::InvalidArgumentError(
          "spec: one of prompt or messages_json is required");
  }
  task.request_fields = std::move(fields);
  task.created_at = clock_.Now();
  switch (spec.deadline_case()) {
    case v1::TaskSpec::kDeadlineTime:
      task.deadline = absl::FromUnixNanos(
          TimeUtil::TimestampToNanoseconds(spec.deadline_time()));
      break;
    case v1::TaskSpec::kTimeout: {
      absl::Duration timeout = absl::Nanoseconds(
          TimeUtil::DurationToNanoseconds(spec.timeout()));
      if (timeout <= absl::ZeroDuration()) {
        return absl::InvalidArgumentError("spec.timeout: must be positive");
      }
      task.deadline = task.created_at + timeout;
      break;
    }
    default:
      // No deadline asked for: the orchestrator's default, if any. Not
      // written into the spec, so an idempotent resubmission still matches.
      if (engine_.options_.default_task_timeout > absl::ZeroDuration()) {
        task.deadline = task.created_at + engine_.options_.default_task_timeout;
      }
      break;
  }
  if (engine_.options_.max_turns_limit > 0 &&
      spec.max_turns() > engine_.options_.max_turns_limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.max_turns: ", spec.max_turns(),
                     " is more than this orchestrator allows (",
                     engine_.options_.max_turns_limit, ")"));
  }
  task.max_turns = spec.max_turns() > 0 ? spec.max_turns()
                                        : engine_.options_.default_max_turns;
  task.spec.set_max_turns(task.max_turns);
  task.max_tool_attempts = engine_.options_.max_tool_attempts;
  return task;
}

absl::StatusOr<v1::SubmitTaskResponse> Engine::State::Submit(
    const Caller& caller, v1::SubmitTaskRequest request) {
  const v1::TaskSpec& spec = request.spec();
  if (!spec.idempotency_key().empty()) {
    absl::StatusOr<std::optional<std::string>> known =
        store_.FindTaskByIdempotencyKey(spec.idempotency_key());
    if (!known.ok()) return absl::UnavailableError(known.status().message());
    // A task whose submission is not committed yet is not in the store.
    std::optional<std::string> id = *known;
    if (!id.has_value()) {
      auto pending = uncommitted_keys_.find(spec.idempotency_key());
      if (pending != uncommitted_keys_.end()) id = pending->second;
    }
    TaskRunner* existing = id.has_value() ? Find(*id) : nullptr;
    if (existing != nullptr) {
      v1::TaskSpec asked = spec;
      v1::TaskSpec stored = existing->spec();
      // max_turns is filled with the default at acceptance.
      if (asked.max_turns() == 0) asked.set_max_turns(stored.max_turns());
      if (!google::protobuf::util::MessageDifferencer::Equals(asked, stored)) {
        return absl::AlreadyExistsError(absl::StrCat(
            "idempotency_key \"", spec.idempotency_key(),
            "\" was used for task ", *id, " with a different spec"));
      }
      v1::SubmitTaskResponse response;
      response.set_task_id(*id);
      response.set_created(false);
      *response.mutable_task() = existing->ToProto(false);
      return response;
    }
  }
  if (active_tasks_ >= engine_.options_.max_active_tasks) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the orchestrator runs its limit of ",
        engine_.options_.max_active_tasks, " active tasks"));
  }
  const int per_client = engine_.options_.max_tasks_per_client;
  if (per_client > 0) {
    auto it = active_by_client_.find(caller.client);
    const int active = it == active_by_client_.end() ? 0 : it->second;
    if (active >= per_client) {
      return absl::ResourceExhaustedError(
          absl::StrCat("client ", caller.client, " has ", active,
                       " active tasks (limit ", per_client, ")"));
    }
  }
  // A tool named explicitly whose queue is full would refuse every call
  // the task makes to it: push back on the submission instead.
  for (const std::string& name : spec.client_tools()) {
    if (dispatcher_.QueueFull(name)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("tool queue for \"", name, "\" is full (",
                       dispatcher_.QueueDepth(name), " calls waiting)"));
    }
  }
  absl::StatusOr<PreparedTask> prepared = Prepare(spec);
  if (!prepared.ok()) return prepared.status();
  prepared->task_id = NewTaskId(random_);
  while (tasks_.contains(prepared->task_id)) {
    prepared->task_id = NewTaskId(random_);
  }
  std::string id = prepared->task_id;
  auto runner = std::make_shared<TaskRunner>(*std::move(prepared), *this);
  tasks_[id] = runner;
  if (!spec.idempotency_key().empty()) {
    uncommitted_keys_[spec.idempotency_key()] = id;
  }
  owners_[id] = caller.client;
  ++active_tasks_;
  TakeClientSlot(id);
  ++submitted_;
  runner->Start();
  v1::SubmitTaskResponse response;
  response.set_task_id(id);
  response.set_created(true);
  *response.mutable_task() = runner->ToProto(false);
  return response;
}

absl::StatusOr<v1::ListTasksResponse> Engine::State::List(
    const v1::ListTasksRequest& req) {
  if (req.page_size() > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: at most ", kMaxPageSize));
  }
  const std::uint32_t page_size =
      req.page_size() == 0 ? kDefaultPageSize : req.page_size();
  ListTasksOptions options;
  options.limit = page_size;
  for (int state : req.states()) options.states.push_back(state);
  if (!req.page_token().empty()) {
    // "<created_at unix nanos>/<task_id>" of the last task of the previous
    // page.
    std::string_view token = req.page_token();
    std::size_t slash = token.find('/');
    std::int64_t nanos = 0;
    if (slash == std::string_view::npos ||
        !absl::SimpleAtoi(absl::string_view(token.data(), slash), &nanos) ||
        slash + 1 >= token.size()) {
      return absl::InvalidArgumentError(
          "page_token: not from a previous ListTasks call");
    }
    options.after = TaskCursor{FromStoredNanos(nanos),
                               std::string(token.substr(slash + 1))};
  }
  v1::ListTasksResponse response;
  while (true) {
    absl::StatusOr<TaskPage> page = store_.ListTasks(options);
    if (!page.ok()) {
      LogStoreError("listing tasks", page.status());
      return absl::UnavailableError(
          absl::StrCat("the store cannot list tasks: ",
                       page.status().message()));
    }
    for (const TaskRecord& record : page->tasks) {
      v1::Task task;
      if (auto it = tasks_.find(record.task_id); it != tasks_.end()) {
        task = it->second->ToProto(false);
      } else {
        task = TaskViewFromRecord(record);
      }
      bool labels_match = true;
      for (const auto& [key, value] : req.label_selector()) {
        auto label = task.spec().labels().find(key);
        if (label == task.spec().labels().end() || label->second != value) {
          labels_match = false;
          break;
        }
      }
      if (!labels_match) continue;
      *response.add_tasks() = std::move(task);
      if (static_cast<std::uint32_t>(response.tasks_size()) == page_size) {
        if (&record != &page->tasks.back() || page->next.has_value()) {
          response.set_next_page_token(
              absl::StrCat(StoredNanos(record.created_at), "/",
                           record.task_id));
        }
        return response;
      }
    }
    if (!page->next.has_value()) return response;
    options.after = page->next;
  }
}

std::string Engine::State::MetricsText() {
  std::string out;
  auto gauge = [&out](absl::string_view name, absl::string_view help,
                      absl::string_view type, double value,
                      absl::string_view labels = "") {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                    type, "\n", name, labels, " ", value, "\n");
  };
  gauge("toolmesh_tasks_submitted_total", "Tasks accepted.", "counter",
        static_cast<double>(submitted_));
  gauge("toolmesh_tasks_active", "Tasks not yet terminal.", "gauge",
        active_tasks_);
  absl::StrAppend(&out,
                  "# HELP toolmesh_tasks_finished_total Tasks that ended, by "
                  "state.\n# TYPE toolmesh_tasks_finished_total counter\n");
  for (v1::TaskState s : {v1::TASK_STATE_COMPLETED, v1::TASK_STATE_FAILED,
                          v1::TASK_STATE_CANCELLED}) {
    absl::StrAppend(&out, "toolmesh_tasks_finished_total{state=\"",
                    std::string(TaskStateLabel(s)), "\"} ", finished_by_state_[s], "\n");
  }
  gauge("toolmesh_turn_attempts_total", "Model requests started.",
        "counter", static_cast<double>(turns_started_));
  absl::StrAppend(&out,
                  "# HELP toolmesh_turn_retries_total Model streams that "
                  "failed and were requested again, by reason.\n# TYPE "
                  "toolmesh_turn_retries_total counter\n");
  for (const auto& [reason, n] : retries_by_reason_) {
    absl::StrAppend(&out, "toolmesh_turn_retries_total{reason=\"", reason,
                    "\"} ", n, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP toolmesh_turns_completed_total Committed steps, "
                  "by stop_reason.\n# TYPE toolmesh_turns_completed_total "
                  "counter\n");
  for (const auto& [reason, n] : turns_by_stop_reason_) {
    absl::StrAppend(&out, "toolmesh_turns_completed_total{stop_reason=\"",
                    reason, "\"} ", n, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP toolmesh_tool_transitions_total Tool ledger "
                  "transitions, by kind, state and error reason.\n# TYPE "
                  "toolmesh_tool_transitions_total counter\n");
  for (const auto& [key, n] : tool_transitions_) {
    const auto& [kind, state, reason] = key;
    std::string name = v1::ToolErrorReason_Name(
        static_cast<v1::ToolErrorReason>(reason));
    absl::StrAppend(
        &out, "toolmesh_tool_transitions_total{kind=\"",
        kind == v1::TOOL_KIND_SERVER ? "server" : "client", "\",state=\"",
        absl::AsciiStrToLower(absl::StripPrefix(
            v1::ToolCallState_Name(static_cast<v1::ToolCallState>(state)),
            "TOOL_CALL_STATE_")),
        "\",reason=\"",
        reason == 0 ? std::string()
                    : absl::AsciiStrToLower(
                          absl::StripPrefix(name, "TOOL_ERROR_REASON_")),
        "\"} ", n, "\n");
  }
  gauge("toolmesh_model_text_bytes_total", "Text streamed by the model.",
        "counter", static_cast<double>(text_bytes_));
  gauge("toolmesh_store_commits_total", "Store transactions committed.",
        "counter", static_cast<double>(commits_));
  gauge("toolmesh_store_commit_seconds_total",
        "Time spent committing store transactions.", "counter",
        absl::ToDoubleSeconds(commit_time_));
  gauge("toolmesh_store_errors_total", "Store operations that failed.",
        "counter", static_cast<double>(store_errors_));
  gauge("toolmesh_tasks_recovered_total",
        "Unfinished tasks reloaded from the store at start.", "counter",
        static_cast<double>(recovered_));
  gauge("toolmesh_requests_repaired_total",
        "Model requests that failed validation and were repaired before "
        "sending.",
        "counter", static_cast<double>(requests_repaired_));
  gauge("toolmesh_tool_deliveries_lost_total",
        "Tool call deliveries lost (lease expired, worker gone, handed "
        "back).",
        "counter", static_cast<double>(calls_lost_));
  gauge("toolmesh_workers_connected", "Connected workers.", "gauge",
        dispatcher_.connected_workers());
  gauge("toolmesh_tool_calls_queued", "Client tool calls waiting for a "
        "worker.", "gauge", dispatcher_.queued_calls());
  gauge("toolmesh_tool_calls_running", "Client tool calls on workers.",
        "gauge", dispatcher_.running_calls());
  gauge("toolmesh_tool_results_ignored_total",
        "Worker results ignored: for an attempt never delivered, or from a "
        "worker that does not hold the call.", "counter",
        static_cast<double>(dispatcher_.ignored_results()));
  gauge("toolmesh_tool_results_late_total",
        "Worker results for an earlier attempt or an untracked call, "
        "checked against the task's ledger.", "counter",
        static_cast<double>(dispatcher_.late_results()));
  dispatcher_.AppendMetrics(out);
  absl::StrAppend(&out,
                  "# HELP toolmesh_tasks Tasks held by this orchestrator, by "
                  "state.\n# TYPE toolmesh_tasks gauge\n");
  std::map<std::string, int> by_state;
  for (v1::TaskState s : {v1::TASK_STATE_QUEUED, v1::TASK_STATE_RUNNING,
                          v1::TASK_STATE_CANCELLING, v1::TASK_STATE_COMPLETED,
                          v1::TASK_STATE_FAILED, v1::TASK_STATE_CANCELLED}) {
    by_state[std::string(TaskStateLabel(s))] = 0;
  }
  for (const auto& [id, runner] : tasks_) {
    ++by_state[std::string(TaskStateLabel(runner->state()))];
  }
  for (const auto& [state, n] : by_state) {
    absl::StrAppend(&out, "toolmesh_tasks{state=\"", state, "\"} ", n, "\n");
  }
  gauge("toolmesh_model_stream_bytes_total",
        "Response bytes received from the Messages API.", "counter",
        static_cast<double>(model_bytes_));
  commit_latency_.AppendTo(out, "toolmesh_store_commit_seconds",
                           "Duration of one store transaction.");
  return out;
}

void Engine::State::ShutdownAll() {
  FlushNow();
  for (auto& [id, runner] : tasks_) runner->Shutdown();
  stopping_ = true;
  auto sessions = std::move(sessions_);
  sessions_.clear();
  for (auto& [session, link] : sessions) {
    link->Close(Unavailable());
    dispatcher_.RemoveWorker(session, "the orchestrator is shutting down");
  }
}


// --- Persistence ------------------------------------------------------------

v1::Task TaskViewFromRecord(const TaskRecord& record) {
  v1::Task task;
  task.set_task_id(record.task_id);
  task.mutable_spec()->ParseFromString(record.spec);
  task.set_state(static_cast<v1::TaskState>(record.state));
  *task.mutable_created_at() =
      TimeUtil::NanosecondsToTimestamp(StoredNanos(record.created_at));
  *task.mutable_updated_at() =
      TimeUtil::NanosecondsToTimestamp(StoredNanos(record.updated_at));
  if (record.finished_at.has_value()) {
    *task.mutable_finished_at() =
        TimeUtil::NanosecondsToTimestamp(StoredNanos(*record.finished_at));
  }
  task.set_last_seq(record.last_seq);
  absl::StatusOr<Json> snap = common::ParseJson(record.snapshot);
  if (snap.ok() && snap->is_object()) {
    task.set_turns(snap->value("turns_completed", 0u));
    task.set_stop_reason(snap->value("stop_reason", ""));
    const Json error = snap->value("error", Json());
    if (error.is_object()) {
      task.mutable_error()->set_type(error.value("type", ""));
      task.mutable_error()->set_message(error.value("message", ""));
      task.mutable_error()->set_http_status(error.value("http_status", 0));
    }
    task.set_usage_json(common::DumpJson(snap->value("usage", Json::object())));
  }
  return task;
}

TaskRecord Engine::State::RecordOf(const TaskRunner& runner) const {
  v1::Task view = runner.ToProto(false);
  TaskRecord record;
  record.task_id = runner.id();
  runner.spec().SerializeToString(&record.spec);
  record.idempotency_key = runner.spec().idempotency_key();
  record.state = runner.state();
  record.created_at = runner.created_at();
  record.updated_at = absl::FromUnixNanos(
      TimeUtil::TimestampToNanoseconds(view.updated_at()));
  if (view.has_finished_at()) {
    record.finished_at = absl::FromUnixNanos(
        TimeUtil::TimestampToNanoseconds(view.finished_at()));
  }
  record.last_seq = runner.last_seq();
  Json snapshot = runner.Snapshot();
  // The owning client rides in the snapshot (an opaque JSON object to the
  // store; older snapshots simply lack it).
  if (const std::string& owner = OwnerOf(runner.id());
      !owner.empty() && snapshot.is_object()) {
    snapshot["owner"] = owner;
  }
  record.snapshot = common::DumpJson(snapshot);
  return record;
}

absl::StatusOr<std::shared_ptr<TaskRunner>> Engine::State::Load(
    const TaskRecord& record) {
  v1::TaskSpec spec;
  if (!spec.ParseFromString(record.spec)) {
    return absl::DataLossError("the stored spec does not parse");
  }
  absl::StatusOr<Json> snapshot = common::ParseJson(record.snapshot);
  if (!snapshot.ok()) {
    return absl::DataLossError(absl::StrCat("the stored snapshot: ",
                                            snapshot.status().message()));
  }
  std::vector<v1::TaskEvent> events;
  std::uint64_t after = 0;
  while (true) {
    absl::StatusOr<std::vector<EventRecord>> page =
        store_.LoadEvents(record.task_id, after, 4096);
    if (!page.ok()) return page.status();
    if (page->empty()) break;
    for (const EventRecord& stored : *page) {
      v1::TaskEvent event;
      if (!event.ParseFromString(stored.event)) {
        return absl::DataLossError(
            absl::StrCat("event ", stored.seq, " does not parse"));
      }
      events.push_back(std::move(event));
      after = stored.seq;
    }
  }
  absl::StatusOr<std::shared_ptr<TaskRunner>> runner = TaskRunner::Restore(
      record.task_id, std::move(spec), *snapshot, std::move(events), *this);
  if (!runner.ok()) return runner.status();
  (*runner)->touched = false;
  if (snapshot->is_object()) {
    const Json owner = snapshot->value("owner", Json());
    if (owner.is_string() && !owner.get<std::string>().empty()) {
      owners_[record.task_id] = owner.get<std::string>();
    }
  }
  return runner;
}

void Engine::State::Flush() {
  // The commit in flight ends with OnCommitted(), whose iteration flushes
  // again with everything that changed meanwhile.
  if (committer_.Busy()) return;
  if (touched_.empty() && after_commit_.empty()) return;
  if (clock_.Now() < retry_commit_at_) return;
  WriteBatch batch;
  InFlight flight;
  flight.runners.reserve(touched_.size());
  for (const std::shared_ptr<TaskRunner>& runner : touched_) {
    // The task row (with its snapshot) only when something other than
    // streamed deltas and tool transitions changed; events always.
    if (runner->snapshot_dirty() || runner->batched_seq() == 0) {
      batch.PutTask(RecordOf(*runner));
    }
    const std::uint64_t last = runner->last_seq();
    for (std::uint64_t seq = runner->batched_seq() + 1; seq <= last; ++seq) {
      const v1::TaskEvent& event = runner->events()[seq - 1];
      batch.AppendEvent(
          EventRecord{runner->id(), seq, event.SerializeAsString()});
    }
    runner->touched = false;
    runner->clear_snapshot_dirty();
    runner->set_batched_seq(last);
    flight.runners.emplace_back(runner, last);
  }
  touched_.clear();
  flight.replies = std::move(after_commit_);
  after_commit_.clear();
  inflight_ = std::move(flight);
  committer_.Start(std::move(batch));
  // Drive mode commits inline: its effects belong to this iteration.
  if (!engine_.options_.own_thread) OnCommitted();
}

void Engine::State::OnCommitted() {
  if (!committer_.Busy()) return;
  const Committer::Result result = committer_.Collect();
  commit_time_ += result.took;
  commit_latency_.Observe(result.took);
  InFlight flight = std::move(inflight_);
  inflight_ = InFlight();
  if (!result.status.ok()) {
    LogStoreError("commit", result.status);
    // All of it goes again with the next batch, ahead of anything newer.
    for (auto& [runner, last] : flight.runners) {
      runner->set_batched_seq(runner->stored_seq());
      runner->mark_snapshot_dirty();
      Touched(*runner);
    }
    for (auto& reply : after_commit_) flight.replies.push_back(std::move(reply));
    after_commit_ = std::move(flight.replies);
    // Try again shortly; until then nothing of it is acknowledged or sent.
    retry_commit_at_ = clock_.Now() + kCommitRetryDelay;
    clock_.ScheduleAfter(kCommitRetryDelay, [queue = engine_.queue_] {
      queue->Post([] {});  // an iteration, whose Flush() tries again
    });
    return;
  }
  ++commits_;
  retry_commit_at_ = absl::InfinitePast();
  for (auto& [runner, last] : flight.runners) {
    runner->set_stored_seq(last);
    const std::string& key = runner->spec().idempotency_key();
    if (!key.empty()) uncommitted_keys_.erase(key);
  }
  for (auto& [runner, last] : flight.runners) runner->Published(last);
  for (auto& reply : flight.replies) reply();
}

void Engine::State::FlushNow() {
  OnCommitted();
  retry_commit_at_ = absl::InfinitePast();
  Flush();
  OnCommitted();
}

void Engine::State::Recover() {
  absl::StatusOr<std::vector<TaskRecord>> records =
      store_.LoadUnfinishedTasks();
  if (!records.ok()) {
    LogStoreError("loading unfinished tasks", records.status());
    return;
  }
  recovery_started_ = absl::Now();
  for (TaskRecord& record : *records) {
    recovery_order_.push_back(record.task_id);
    std::string id = record.task_id;
    unrecovered_.emplace(std::move(id), std::move(record));
  }
  // Counted from the start, so that the limit on active tasks holds while
  // recovery runs. (Per-client counts grow as tasks load: their owners are
  // in the snapshots.)
  active_tasks_ += static_cast<int>(unrecovered_.size());
  RecoverSome();
}

std::shared_ptr<TaskRunner> Engine::State::RecoverOne(
    const TaskRecord& record) {
  absl::StatusOr<std::shared_ptr<TaskRunner>> runner = Load(record);
  if (!runner.ok()) {
    --active_tasks_;
    LogStoreError("recovering task " + record.task_id, runner.status());
    return nullptr;
  }
  tasks_[record.task_id] = *runner;
  TakeClientSlot(record.task_id);
  ++recovered_;
  return *std::move(runner);
}

void Engine::State::RecoverSome() {
  if (!engine_.ready_.load() || stopping_) return;
  std::vector<std::shared_ptr<TaskRunner>> loaded;
  while (loaded.size() < kRecoveryChunk && !recovery_order_.empty()) {
    auto it = unrecovered_.find(recovery_order_.front());
    recovery_order_.pop_front();
    if (it == unrecovered_.end()) continue;  // recovered through Find
    const TaskRecord record = std::move(it->second);
    unrecovered_.erase(it);
    if (std::shared_ptr<TaskRunner> runner = RecoverOne(record)) {
      loaded.push_back(std::move(runner));
    }
  }
  // Resumed once the chunk is loaded, as a whole store would be.
  for (const std::shared_ptr<TaskRunner>& runner : loaded) runner->Resume();
  if (!recovery_order_.empty()) {
    engine_.queue_->Post([this] { RecoverSome(); });
    return;
  }
  if (recovered_ > 0) {
    Log(LogLevel::kInfo, "recovered unfinished tasks",
        {{"count", std::to_string(recovered_)},
         {"duration_ms",
          std::to_string(absl::ToInt64Milliseconds(absl::Now() -
                                                   recovery_started_))}});
  }
}

void Engine::State::Retain() {
  const EngineOptions& options = engine_.options_;
  absl::StatusOr<std::size_t> deleted = store_.DeleteFinished(
      options.retention == absl::InfiniteDuration()
          ? absl::InfinitePast()
          : clock_.Now() - options.retention,
      options.retention_count);
  if (!deleted.ok()) LogStoreError("retention", deleted.status());
  while (finished_order_.size() > options.finished_in_memory) {
    std::string id = std::move(finished_order_.front());
    finished_order_.pop_front();
    auto it = tasks_.find(id);
    // Only once everything of it is committed: the store has the rest.
    if (it != tasks_.end() && it->second->terminal() && !it->second->touched &&
        it->second->stored_seq() == it->second->last_seq()) {
      tasks_.erase(it);
      owners_.erase(id);
    }
  }
}

// --- Engine -----------------------------------------------------------------

Engine::Engine(EngineOptions options, common::Clock& clock,
               common::ModelTransport& transport, common::RandomSource& random,
               Store& store)
    : options_(std::move(options)),
      queue_(std::make_shared<EngineQueue>()) {
  state_ = std::make_unique<State>(*this, clock, transport, random, store);
  queue_->Post([this] {
    state_->Recover();
    ScheduleRetention();
  });
  if (options_.own_thread) thread_ = std::thread([this] { Run(); });
}

void Engine::ScheduleRetention() {
  state_->Retain();
  if (!ready_.load()) return;
  state_->clock().ScheduleAfter(
      options_.retention_interval, [queue = queue_, this] {
        queue->Post([this] { ScheduleRetention(); });
      });
}

Engine::~Engine() {
  Shutdown();
  queue_->Close();
  if (thread_.joinable()) {
    thread_.join();
  } else if (!options_.own_thread) {
    // What the engine thread would do: run what is left, then stop.
    while (RunOnce()) {
    }
  }
  state_.reset();
}

void Engine::Post(absl::AnyInvocable<void()> fn) { queue_->Post(std::move(fn)); }

void Engine::Run() {
  std::deque<absl::AnyInvocable<void()>> batch;
  while (queue_->Take(batch)) RunBatch(batch);
}

void Engine::RunBatch(std::deque<absl::AnyInvocable<void()>>& batch) {
  for (auto& fn : batch) fn();
  batch.clear();
  // This iteration's changes go to the committer (one transaction per
  // batch, see committer.h); replies and events wait for their commit.
  state_->Flush();
}

bool Engine::RunOnce() {
  std::deque<absl::AnyInvocable<void()>> batch;
  if (!queue_->TryTake(batch)) return false;
  RunBatch(batch);
  return true;
}

void Engine::Shutdown() {
  bool expected = true;
  if (ready_.compare_exchange_strong(expected, false)) {
    bool posted = queue_->Post([this] {
      state_->ShutdownAll();
      absl::MutexLock lock(&mu_);
      shut_down_ = true;
    });
    if (!posted) return;
  }
  if (!options_.own_thread) {
    // Drive mode: the caller is the engine thread.
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        if (shut_down_) return;
      }
      if (!RunOnce()) return;
    }
  }
  // Wait until the engine thread has shut everything down (also when
  // another thread started the shutdown).
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return shut_down_;
  };
  mu_.Await(absl::Condition(&done));
}

bool Engine::Ready() const { return ready_.load(); }

// Runs `fn` on the engine thread while it accepts work; otherwise answers
// `reply` with UNAVAILABLE on the calling thread.
#define TOOLMESH_ENGINE_CALL(reply, body)                          \
  do {                                                             \
    if (!ready_.load()) {                                          \
      reply(Unavailable());                                        \
      return;                                                      \
    }                                                              \
    Post([this, request = std::move(request),                      \
          reply = std::move(reply)]() mutable {                    \
      if (!ready_.load()) {                                        \
        reply(Unavailable());                                      \
        return;                                                    \
      }                                                            \
      body;                                                        \
    });                                                            \
  } while (false)

void Engine::SubmitTask(v1::SubmitTaskRequest request,
                        Reply<v1::SubmitTaskResponse> reply) {
  SubmitTask(Caller{kAnonymousClient}, std::move(request), std::move(reply));
}

void Engine::SubmitTask(Caller caller, v1::SubmitTaskRequest request,
                        Reply<v1::SubmitTaskResponse> reply) {
  // TOOLMESH_ENGINE_CALL, with the caller carried along.
  if (!ready_.load()) {
    reply(Unavailable());
    return;
  }
  Post([this, caller = std::move(caller), request = std::move(request),
        reply = std::move(reply)]() mutable {
    if (!ready_.load()) {
      reply(Unavailable());
      return;
    }
    absl::StatusOr<v1::SubmitTaskResponse> response =
        state_->Submit(caller, std::move(request));
    // Acknowledged only once the task is stored.
    state_->AfterCommit([reply = std::move(reply),
                         response = std::move(response)]() mutable {
      reply(std::move(response));
    });
  });
}

void Engine::GetTask(v1::GetTaskRequest request,
                     Reply<v1::GetTaskResponse> reply) {
  TOOLMESH_ENGINE_CALL(reply, {
    if (request.task_id().empty()) {
      reply(absl::InvalidArgumentError("task_id: required"));
      return;
    }
    TaskRunner* runner = state_->Find(request.task_id());
    if (runner == nullptr) {
      reply(absl::NotFoundError(
          absl::StrCat("task ", request.task_id(), " not found")));
      return;
    }
    v1::GetTaskResponse response;
    *response.mutable_task() = runner->ToProto(true);
    reply(std::move(response));
  });
}

void Engine::CancelTask(v1::CancelTaskRequest request,
                        Reply<v1::CancelTaskResponse> reply) {
  TOOLMESH_ENGINE_CALL(reply, {
    if (request.task_id().empty()) {
      reply(absl::InvalidArgumentError("task_id: required"));
      return;
    }
    TaskRunner* runner = state_->Find(request.task_id());
    if (runner == nullptr) {
      reply(absl::NotFoundError(
          absl::StrCat("task ", request.task_id(), " not found")));
      return;
    }
    absl::Status cancelled = runner->Cancel(request.reason());
    if (!cancelled.ok()) {
      reply(cancelled);
      return;
    }
    v1::CancelTaskResponse response;
    *response.mutable_task() = runner->ToProto(false);
    state_->AfterCommit([reply = std::move(reply),
                         response = std::move(response)]() mutable {
      reply(std::move(response));
    });
  });
}

void Engine::ListTasks(v1::ListTasksRequest request,
                       Reply<v1::ListTasksResponse> reply) {
  TOOLMESH_ENGINE_CALL(reply, reply(state_->List(request)));
}

void Engine::ListWorkers(v1::ListWorkersRequest request,
                         Reply<v1::ListWorkersResponse> reply) {
  TOOLMESH_ENGINE_CALL(reply, {
    (void)request;
    reply(state_->dispatcher().ListWorkers());
  });
}

#undef TOOLMESH_ENGINE_CALL

void Engine::Metrics(Reply<std::string> reply) {
  if (!ready_.load()) {
    reply(Unavailable());
    return;
  }
  Post([this, reply = std::move(reply)]() mutable {
    reply(state_->MetricsText());
  });
}

void Engine::WatchTask(v1::WatchTaskRequest request,
                       std::shared_ptr<EventSubscriber> subscriber) {
  if (!ready_.load()) {
    subscriber->OnEnd(Unavailable());
    return;
  }
  Post([this, request = std::move(request),
        subscriber = std::move(subscriber)]() mutable {
    if (!ready_.load()) {
      subscriber->OnEnd(Unavailable());
      return;
    }
    if (request.task_id().empty()) {
      subscriber->OnEnd(absl::InvalidArgumentError("task_id: required"));
      return;
    }
    TaskRunner* runner = state_->Find(request.task_id());
    if (runner == nullptr) {
      subscriber->OnEnd(absl::NotFoundError(
          absl::StrCat("task ", request.task_id(), " not found")));
      return;
    }
    runner->Watch(std::move(subscriber), request.after_seq(),
                  request.omit_deltas());
  });
}

void Engine::CancelWatch(std::shared_ptr<EventSubscriber> subscriber) {
  Post([this, subscriber = std::move(subscriber)] {
    for (auto& [id, runner] : state_->tasks_) {
      if (!runner->terminal()) runner->Unwatch(subscriber);
    }
  });
}

WorkerSessionId Engine::NewWorkerSession() { return next_session_++; }

void Engine::WorkerHello(WorkerSessionId session,
                         std::shared_ptr<WorkerLink> link, v1::Hello hello) {
  if (!ready_.load()) {
    link->Close(Unavailable());
    return;
  }
  Post([this, session, link = std::move(link),
        hello = std::move(hello)]() mutable {
    if (!ready_.load()) {
      link->Close(Unavailable());
      return;
    }
    absl::StatusOr<v1::Welcome> welcome =
        state_->dispatcher().AddWorker(session, link, hello);
    if (!welcome.ok()) {
      link->Send(RejectedFor(welcome.status(), options_.dispatch));
      link->Close(welcome.status());
      return;
    }
    state_->sessions_[session] = std::move(link);
    Log(LogLevel::kInfo, "worker connected",
        {{"worker_id", hello.worker_id()},
         {"tools", std::to_string(hello.tools_size())},
         {"slots", std::to_string(hello.slots())}});
  });
}

void Engine::WorkerMessage(WorkerSessionId session,
                           v1::WorkerMessage message) {
  Post([this, session, message = std::move(message)] {
    if (!state_->sessions_.contains(session)) return;
    state_->dispatcher().OnWorkerMessage(session, message);
  });
}

void Engine::WorkerGone(WorkerSessionId session, absl::Status status) {
  Post([this, session, status = std::move(status)] {
    if (state_->sessions_.erase(session) == 0) return;
    Log(LogLevel::kInfo, "worker stream ended",
        {{"session", std::to_string(session)},
         {"status", status.ToString()}});
    state_->dispatcher().RemoveWorker(
        session, status.ok() ? std::string("the worker disconnected")
                             : absl::StrCat("the worker's stream ended: ",
                                            status.message()));
  });
}

}  // namespace toolmesh::orchestrator
