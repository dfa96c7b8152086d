// Dispatcher: hands client tool calls to connected workers
// (ARCHITECTURE.md "Dispatch").
//
//  - One FIFO queue per tool name; within a queue calls are taken round
//    robin across tasks, so one task with many calls cannot starve others.
//  - An assignment is pushed to a worker that serves the tool, is not
//    draining and has a free slot (the least loaded such worker first).
//  - Each assignment holds a lease; a Heartbeat that lists the call extends
//    it. A lease that expires, a heartbeat that omits an assigned call, or
//    a broken stream loses the delivery: the listener's OnCallLost decides
//    (the task's ledger counts attempts) and re-enqueues with attempt + 1.
//  - ReturnCall (a draining worker handing work back) also reports
//    OnCallLost, with `counts_as_attempt` = false.
//  - Per call: a start-to-close timeout from assignment (capped by the
//    call's own deadline) gives OnCallFailed(kTimeout) and a Cancel to the
//    worker; a schedule-to-start timeout from enqueue gives
//    OnCallFailed(kNoWorker) — also when no connected worker serves the tool.
//  - Results are matched on (task_id, tool_use_id, attempt). A result that
//    is not for the current delivery held by the sending worker (an
//    earlier attempt, or a call the dispatcher no longer tracks, e.g. after
//    the worker reconnected or the orchestrator restarted) goes to the
//    listener's OnLateResult, which accepts it if the call has not ended.
//    A result for a later attempt than the current one is counted and
//    ignored.
//
// The dispatcher tracks deliveries only; the task's ToolLedger stays the
// authority on a call's state and attempt count.
//
// Thread-safety: thread-compatible; owned and used by the engine thread
// only. Timers are scheduled on the Clock and their callbacks are handed to
// `post`, which must run them on the engine thread (tests with a FakeClock
// may run them inline). Listener callbacks run synchronously inside the
// dispatcher's methods or timer callbacks; a listener may call Enqueue()
// and Cancel() from them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/tool_ledger.h"
#include "orchestrator/engine/engine_api.h"
#include "toolmesh/v1/task_service.pb.h"
#include "toolmesh/v1/worker_service.pb.h"

namespace toolmesh::orchestrator {

// One delivery of one client tool call.
struct CallRef {
  std::string task_id;
  std::string tool_use_id;
  int attempt = 1;
};

// What the dispatcher reports to the engine.
class DispatchListener {
 public:
  virtual ~DispatchListener() = default;
  // A worker accepted delivery `call` (the Assignment was queued on its
  // stream): the ledger's Start().
  virtual void OnCallStarted(const CallRef& call,
                             const std::string& worker_id) = 0;
  // The worker's result for the current delivery.
  virtual void OnCallResult(const CallRef& call, common::Json content,
                            bool is_error) = 0;
  // A result that is not for the current delivery held by its sender:
  // `call.attempt` is the attempt the worker ran, `worker_id` the sender
  // (see the file comment). The listener decides (a call that has not ended
  // takes it and cancels its current delivery through Cancel()); the
  // dispatcher has changed nothing.
  virtual void OnLateResult(const CallRef& call, const std::string& worker_id,
                            common::Json content, bool is_error) = 0;
  // The delivery was lost (lease expired, heartbeat omitted it, stream
  // broke, or ReturnCall when `counts_as_attempt` is false). The dispatcher
  // no longer tracks it; the listener re-enqueues with attempt + 1 or gives
  // up (ERROR worker_lost).
  virtual void OnCallLost(const CallRef& call, std::string_view message,
                          bool counts_as_attempt) = 0;
  // The call ended without a result: kTimeout (start-to-close), kNoWorker
  // (schedule-to-start) or kQueueFull (refused at enqueue, see Enqueue).
  // The dispatcher no longer tracks it (and has sent
  // Cancel to the worker for kTimeout).
  virtual void OnCallFailed(const CallRef& call, common::ErrorReason reason,
                            std::string_view message) = 0;
};

struct DispatcherOptions {
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // A lease lasts this long after assignment or the last heartbeat that
  // listed the call.
  absl::Duration lease_duration = absl::Seconds(10);
  // From enqueue until a worker takes the call.
  absl::Duration schedule_to_start_timeout = absl::Seconds(30);
  // From assignment until the result.
  absl::Duration start_to_close_timeout = absl::Minutes(5);
  // Connected workers at most (RESOURCE_EXHAUSTED beyond).
  int max_workers = 1000;
  // Calls waiting for a worker, per tool, at most; 0: unlimited. A first
  // delivery beyond it is not queued: it fails (see Enqueue()).
  int max_queue_depth = 10000;
  // The protocol versions accepted in Hello.
  std::vector<std::uint32_t> protocol_versions = {1};
};

// A call waiting for, or handed to, a worker.
struct CallSpec {
  CallRef ref;
  std::string name;        // the tool's name
  std::string input_json;  // the complete input, JSON text
  // The task's deadline; the assignment's deadline is the earlier of this
  // and assignment time + start_to_close_timeout.
  absl::Time deadline = absl::InfiniteFuture();
  // Added to schedule_to_start_timeout for this call: calls re-queued when
  // the orchestrator restarts wait for the workers to reconnect first.
  absl::Duration schedule_grace = absl::ZeroDuration();
};

class Dispatcher {
 public:
  using Post = absl::AnyInvocable<void(absl::AnyInvocable<void()>)>;

  // `clock` and `listener` must outlive the dispatcher.
  Dispatcher(DispatcherOptions options, common::Clock& clock, Post post,
             DispatchListener& listener);
  // Cancels its timers. Does not call the listener.
  ~Dispatcher();

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // --- Calls -------------------------------------------------------------
  // Queues `call` and assigns it at once if a worker is free. A call with
  // the same (task_id, tool_use_id) still tracked is replaced (its old
  // delivery is cancelled on its worker with CANCEL_REASON_SUPERSEDED).
  //
  // Queue depth: when max_queue_depth calls of the tool already wait for a
  // worker, a first delivery (attempt 1, not re-queued by a restart) is
  // refused: it is not tracked, and OnCallFailed(kQueueFull, "tool queue for
  // \"X\" is full (N calls waiting)") follows through `post`, never from
  // inside Enqueue(); Cancel() before then suppresses it. The task goes on:
  // the model gets an is_error tool_result. Re-deliveries are always queued
  // (the call already held a place). Counted as rejected, reason
  // "queue_full".
  void Enqueue(CallSpec call);

  // Stops tracking (task_id, tool_use_id): removed from its queue, or a
  // Cancel with `reason` is sent to the worker running it. No listener
  // call. Unknown ids are ignored.
  void Cancel(std::string_view task_id, std::string_view tool_use_id,
              v1::CancelReason reason, std::string_view message);

  // Cancel() for every call of `task_id`.
  void CancelTask(std::string_view task_id, v1::CancelReason reason,
                  std::string_view message);

  // --- Workers -------------------------------------------------------------
  // Validates `hello` (worker_service.proto's Connect errors) and registers
  // the worker: its Welcome (already sent on `link`), or the error status
  // (the caller sends Rejected and closes; see RejectedFor()).
  absl::StatusOr<v1::Welcome> AddWorker(WorkerSessionId session,
                                        std::shared_ptr<WorkerLink> link,
                                        const v1::Hello& hello);
  // A message after Hello. A malformed one (a second Hello, an empty
  // oneof) closes the stream with INVALID_ARGUMENT and removes the worker.
  void OnWorkerMessage(WorkerSessionId session,
                       const v1::WorkerMessage& message);
  // The stream ended: every delivery it held is lost (OnCallLost with
  // counts_as_attempt = true). Unknown sessions are ignored.
  void RemoveWorker(WorkerSessionId session, std::string_view why);

  // --- Queries -------------------------------------------------------------
  // The definition of tool `name` as some connected worker serves it.
  std::optional<v1::ToolDefinition> FindTool(std::string_view name) const;
  // Every tool served by a connected worker, sorted by name.
  std::vector<v1::ToolDefinition> AllTools() const;
  v1::ListWorkersResponse ListWorkers() const;

  int queued_calls() const;
  // Calls of tool `name` waiting for a worker.
  int QueueDepth(std::string_view name) const;
  // True when a first delivery of tool `name` would be refused now (see
  // Enqueue()).
  bool QueueFull(std::string_view name) const;
  int running_calls() const;
  int connected_workers() const;
  // Results ignored: for an attempt never delivered, or from a worker that
  // does not hold the call's current attempt.
  std::int64_t ignored_results() const;
  // Results handed to OnLateResult.
  std::int64_t late_results() const;
  // Prometheus text: queue depth per tool, worker slots and free slots, and
  // the dispatch latency and tool duration histograms.
  void AppendMetrics(std::string& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The Rejected message for a failed AddWorker() status.
v1::OrchestratorMessage RejectedFor(const absl::Status& status,
                                    const DispatcherOptions& options);

}  // namespace toolmesh::orchestrator
