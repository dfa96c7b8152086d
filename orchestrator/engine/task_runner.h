// TaskRunner: one task's life on the engine thread (ARCHITECTURE.md "A
// turn"). It owns the task's Conversation, ToolLedger and event log, runs
// the turn loop (stream, early dispatch, commit, tools, next turn), retries
// failed streams without ever merging steps, and ends the task exactly once
// with every announced tool closed.
//
// Turn loop, per attempt:
//   1. The request is built from the conversation and checked with
//      common::ValidateRequest; a violation is our bug: it is repaired,
//      counted and logged, never sent.
//   2. While the stream runs, a tool block is announced at
//      content_block_start; a client `tool_use` whose block stopped with a
//      valid input is handed to the Dispatcher at once (early dispatch).
//   3. On message_stop the step is committed to the conversation. A client
//      tool_use that never stopped (max_tokens) or whose input is not a JSON
//      object is never run: it ends ERROR invalid_input and the model gets
//      an is_error tool_result.
//   4. tool_use: wait for every client tool of the step, append their
//      results in tool_use order, next turn. pause_turn: next turn with the
//      content sent back unchanged. Anything else: the task completes.
//   5. A failed attempt: its step is thrown away, its tools end ERROR
//      stream_aborted (and are cancelled on their workers), and RetryPolicy
//      decides on the next attempt of the same turn; every attempt has its
//      own step number, so a retry can never be appended to the step it
//      replaces.
//
// Every ledger transition becomes a ToolTransition event; a client tool that
// ends for any reason other than its own result is also cancelled on the
// dispatcher.
//
// Thread-safety: thread-compatible; used only on the engine thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/conversation.h"
#include "common/json.h"
#include "common/model_transport.h"
#include "common/retry_policy.h"
#include "common/stream_accumulator.h"
#include "common/tool_ledger.h"
#include "orchestrator/engine/dispatcher.h"
#include "orchestrator/engine/engine_api.h"
#include "orchestrator/model/model_stream.h"
#include "toolmesh/v1/task.pb.h"

namespace toolmesh::orchestrator {

class TaskRunner;

// The engine thread's work queue. Shared (shared_ptr) by everything that
// posts from other threads (transport callbacks, timers), so that a post
// arriving after the engine is gone is dropped instead of touching freed
// memory.
//
// Thread-safety: thread-safe.
class EngineQueue {
 public:
  // Queues `fn`; once Close()d, destroys it unrun and returns false.
  bool Post(absl::AnyInvocable<void()> fn);
  // Blocks until work is queued or the queue is closed; moves the queued
  // work into `out`. False once closed and empty.
  bool Take(std::deque<absl::AnyInvocable<void()>>& out);
  // Like Take() without blocking: false when nothing is queued.
  bool TryTake(std::deque<absl::AnyInvocable<void()>>& out);
  // Refuses further posts; Take() returns what is left, then false.
  void Close();

 private:
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// What a runner needs from the engine. Every method is called on the engine
// thread.
class RunnerEnv {
 public:
  virtual ~RunnerEnv() = default;
  virtual common::Clock& clock() = 0;
  virtual common::ModelTransport& transport() = 0;
  virtual common::RetryPolicy& retry_policy() = 0;
  virtual Dispatcher& dispatcher() = 0;
  // The engine thread's queue: work posted to it runs later on the engine
  // thread (and is dropped once the engine stopped).
  virtual const std::shared_ptr<EngineQueue>& queue() = 0;
  // Headers added to every model request.
  virtual const common::HttpHeaders& extra_headers() = 0;
  // The largest client tool input (as JSON text) sent to a worker; 0: no
  // limit.
  virtual std::size_t max_tool_input_bytes() = 0;
  // The task reached a terminal state (called once, after its terminal
  // event).
  virtual void OnTaskFinished(TaskRunner& runner) = 0;
  // Every event the runner records, right after it got its seq (metrics).
  virtual void OnEvent(const v1::TaskEvent& event) = 0;
  // The runner recorded events or changed state: the engine stores it at
  // the end of this engine iteration and then calls Published().
  virtual void Touched(TaskRunner& runner) = 0;
  // Response bytes of one finished model stream.
  virtual void OnModelBytes(std::int64_t bytes) = 0;
  // A request failed our own validation and was repaired before sending.
  virtual void OnRequestRepaired(TaskRunner& runner,
                                 const std::string& detail) = 0;
};

// A task ready to run: the spec as accepted and what was derived from it.
struct PreparedTask {
  std::string task_id;
  v1::TaskSpec spec;
  // Everything of the request but `messages`: model, max_tokens, system,
  // tools, tool_choice, thinking, stream.
  common::Json request_fields;
  // The initial conversation (validated).
  common::Conversation conversation;
  absl::Time created_at;
  absl::Time deadline = absl::InfiniteFuture();
  std::uint32_t max_turns = 32;
  int max_tool_attempts = 3;
};

// How long calls re-queued by a restart may wait for workers to reconnect
// on top of the schedule-to-start timeout.
inline constexpr absl::Duration kRecoveryScheduleGrace = absl::Seconds(15);

class TaskRunner : public std::enable_shared_from_this<TaskRunner>,
                   private common::StreamObserver {
 public:
  TaskRunner(PreparedTask task, RunnerEnv& env);
  ~TaskRunner() override;

  TaskRunner(const TaskRunner&) = delete;
  TaskRunner& operator=(const TaskRunner&) = delete;

  // Emits QUEUED and starts the first turn. Call once, with the runner
  // owned by a shared_ptr.
  void Start();

  // A client asked to cancel. kFailedPrecondition once the task is
  // COMPLETED or FAILED; OK (nothing to do) when already CANCELLED.
  absl::Status Cancel(std::string_view reason);

  // The engine is shutting down: the model stream is cancelled, timers
  // stop, watchers end with UNAVAILABLE. No events are emitted.
  void Shutdown();

  // Dispatcher reports for this task's calls.
  void OnCallStarted(const CallRef& call, const std::string& worker_id);
  void OnCallResult(const CallRef& call, common::Json content, bool is_error);
  void OnCallLost(const CallRef& call, std::string_view message,
                  bool counts_as_attempt);
  void OnCallFailed(const CallRef& call, common::ErrorReason reason,
                    std::string_view message);
  // A finished result of an earlier attempt (DispatchListener::
  // OnLateResult): completes the call if it has not ended and cancels its
  // current delivery; otherwise ignored.
  void OnLateResult(const CallRef& call, const std::string& worker_id,
                    common::Json content, bool is_error);

  // Watchers. Replays stored events with seq > after_seq, then streams live
  // ones; ends the subscriber at once after a terminal event.
  void Watch(std::shared_ptr<EventSubscriber> subscriber,
             std::uint64_t after_seq, bool omit_deltas);
  void Unwatch(const std::shared_ptr<EventSubscriber>& subscriber);

  const std::string& id() const { return task_id_; }
  v1::TaskState state() const { return state_; }
  bool terminal() const;
  std::uint64_t last_seq() const { return events_.size(); }
  const v1::TaskSpec& spec() const { return spec_; }
  absl::Time created_at() const { return created_at_; }
  // The task's view; `full` adds final_message_json and conversation_json.
  v1::Task ToProto(bool full) const;
  const std::vector<v1::TaskEvent>& events() const { return events_; }
  const common::LedgerCounters& ledger_counters() const {
    return ledger_.counters();
  }

  // --- Persistence (engine thread) ----------------------------------------
  // Everything needed to continue the task after a restart, as JSON.
  common::Json Snapshot() const;
  // A runner saved with Snapshot(), with its stored events (seq 1..n, in
  // order). Not started: call Resume() for an unfinished task.
  // kDataLoss when the snapshot or the events do not fit together.
  static absl::StatusOr<std::shared_ptr<TaskRunner>> Restore(
      std::string task_id, v1::TaskSpec spec, const common::Json& snapshot,
      std::vector<v1::TaskEvent> events, RunnerEnv& env);
  // Continues a restored unfinished task (ARCHITECTURE.md "Durability"): a
  // turn that was streaming is requested again (its tools end
  // stream_aborted), running tool calls are re-queued with attempt + 1.
  void Resume();
  // Whether the snapshot changed since clear_snapshot_dirty().
  bool snapshot_dirty() const { return snapshot_dirty_; }
  void clear_snapshot_dirty() { snapshot_dirty_ = false; }
  void mark_snapshot_dirty() { snapshot_dirty_ = true; }
  // Events up to this seq are committed.
  std::uint64_t stored_seq() const { return stored_seq_; }
  void set_stored_seq(std::uint64_t seq) {
    stored_seq_ = std::max(stored_seq_, seq);
  }
  // Events up to this seq are in a store batch (committed or in flight);
  // >= stored_seq(). A failed commit sets it back to stored_seq().
  std::uint64_t batched_seq() const { return batched_seq_; }
  void set_batched_seq(std::uint64_t seq) { batched_seq_ = seq; }
  // Events up to `seq` are durable: watchers get them now.
  void Published(std::uint64_t seq);
  // Set while the engine has this runner on its list of touched runners.
  bool touched = false;

 private:
  class Forwarder;
  enum class Phase { kIdle, kStreaming, kBackoff, kWaitingTools, kDone };
  struct Subscriber {
    std::shared_ptr<EventSubscriber> sink;
    bool omit_deltas = false;
    std::uint64_t next_seq = 1;  // the next event it gets
  };
  struct ToolMeta {
    std::string block_type;
    std::uint32_t turn = 0;
  };

  // Turn loop.
  void NextTurn();
  void SendAttempt();
  void OnAttemptDone(std::uint64_t token, model::AttemptOutcome outcome);
  void CommitStep(const common::Json& message);
  void HandleFailedAttempt(const model::AttemptOutcome& outcome);
  void MaybeSendToolResults();
  void CancelStream();

  // Endings.
  void Complete(const std::string& stop_reason);
  void FailTask(std::string type, std::string message, int http_status = 0);
  void Finish(v1::TaskState state, std::optional<v1::TaskError> error);
  void OnDeadline();
  // Arms deadline_timer_ when the task has a deadline.
  void ScheduleDeadline();

  // Ledger and dispatcher glue.
  void OnLedgerTransition(const common::ToolTransition& transition);
  void FlushTransitions();
  void EnqueueCall(const common::ToolUseId& id,
                   absl::Duration schedule_grace = absl::ZeroDuration());
  void EmitInputKnown(const common::ToolEntry& entry);

  // True while `token` names the attempt that is streaming now.
  bool Current(std::uint64_t token) const;

  // Events: numbers, stores and fans out `event`.
  void SetState(v1::TaskState state);
  void Emit(v1::TaskEvent event);

  // common::StreamObserver (the current attempt's accumulator).
  void OnBlockStart(std::int64_t index, const common::Json& block) override;
  void OnTextDelta(std::int64_t index, std::string_view text) override;
  void OnThinkingDelta(std::int64_t index,
                       std::string_view thinking) override;
  void OnBlockStop(std::int64_t index, const common::Json& block,
                   const common::BlockInfo& info) override;

  RunnerEnv& env_;
  const std::string task_id_;
  const v1::TaskSpec spec_;
  const common::Json request_fields_;
  const absl::Time created_at_;
  const absl::Time deadline_;
  const std::uint32_t max_turns_;

  common::Conversation conversation_;
  common::ToolLedger ledger_;
  std::vector<common::ToolTransition> pending_transitions_;
  absl::flat_hash_map<common::ToolUseId, ToolMeta> tool_meta_;
  // Client calls handed to the dispatcher at least once.
  absl::flat_hash_set<common::ToolUseId> dispatched_;
  // The worker of each client call's current delivery.
  absl::flat_hash_map<common::ToolUseId, std::string> workers_;

  v1::TaskState state_ = v1::TASK_STATE_UNSPECIFIED;
  Phase phase_ = Phase::kIdle;
  absl::Time updated_at_;
  std::optional<absl::Time> finished_at_;
  std::uint32_t turn_ = 0;             // the turn being run (1-based)
  std::uint32_t attempt_ = 0;          // attempt of turn_ (1-based)
  int retries_ = 0;                    // retries of turn_ so far
  std::uint32_t turns_completed_ = 0;  // committed steps
  int step_ = -1;                      // step number of the current attempt
  int next_step_ = 0;
  int waiting_step_ = -1;  // the committed step whose tools we wait for
  std::uint64_t attempt_token_ = 0;  // identifies the current attempt
  std::optional<common::ModelStreamId> stream_id_;
  std::shared_ptr<model::AttemptStreamHandler> handler_;
  common::TimerHandle retry_timer_;
  common::TimerHandle deadline_timer_;

  std::string stop_reason_;
  std::optional<v1::TaskError> error_;
  common::Json final_message_;  // null before the first step
  common::Json usage_ = common::Json::object();

  std::vector<v1::TaskEvent> events_;
  std::vector<Subscriber> subscribers_;
  bool snapshot_dirty_ = true;
  // MaybeSendToolResults' view of the step waiting for tools: the ids
  // (read for (waiting_step_, message count) = pending_key_) and the first
  // one not known to be terminal.
  std::pair<int, std::size_t> pending_key_{-1, 0};
  std::vector<common::ToolUseId> pending_ids_;
  std::size_t first_open_ = 0;
  std::uint64_t stored_seq_ = 0;
  std::uint64_t batched_seq_ = 0;
  std::uint64_t published_seq_ = 0;
  std::uint32_t max_tool_attempts_ = 3;

  // Delivers published events to the subscribers.
  void Deliver();
  // Recovery: applies one stored tool transition to the restored ledger.
  absl::Status ReplayToolTransition(const v1::ToolTransition& transition);
};

// Adds the numeric fields of `usage` into `total` (nested objects such as
// server_tool_use are summed field by field).
void AddUsage(common::Json& total, const common::Json& usage);

}  // namespace toolmesh::orchestrator
