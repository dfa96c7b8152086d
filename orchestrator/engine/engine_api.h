// The orchestrator's engine as its gRPC services see it: every task and
// worker operation, asynchronous, answered on the engine thread.
//
// The engine thread owns all task and worker state (ARCHITECTURE.md
// "Threading rule"). The services (orchestrator/grpc/) translate RPCs into
// calls on this interface and never touch engine state: every method here
// only queues work for the engine thread and returns at once; answers come
// back through callbacks that run on the engine thread, so they must be
// quick and must not block (finishing a gRPC reactor is fine).
//
// Thread-safety: every method may be called from any thread, concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "toolmesh/v1/task_service.pb.h"
#include "toolmesh/v1/worker_service.pb.h"

namespace toolmesh::orchestrator {

// One answer, delivered exactly once, on the engine thread.
template <typename T>
using Reply = absl::AnyInvocable<void(absl::StatusOr<T>)>;

// Receives the events of one WatchTask stream. Implemented by the gRPC
// reactor. All calls come from the engine thread, in order.
class EventSubscriber {
 public:
  virtual ~EventSubscriber() = default;

  // The next event (seq order; with omit_deltas, delta events are skipped).
  // Must not block: queue it. Returns false when the subscriber cannot take
  // more (its buffer is full, or its client went away): the engine then
  // drops the subscription and calls OnEnd(RESOURCE_EXHAUSTED) unless the
  // subscriber was cancelled.
  virtual bool OnEvent(const v1::TaskEvent& event) = 0;

  // The last call: OK right after the task's TaskTerminal event was passed
  // to OnEvent; NOT_FOUND / INVALID_ARGUMENT for a bad request; UNAVAILABLE
  // when the orchestrator shuts down; RESOURCE_EXHAUSTED (see OnEvent).
  // Not called after CancelWatch() for this subscriber.
  virtual void OnEnd(const absl::Status& status) = 0;
};

// The engine's side of one worker's Connect stream. Implemented by the gRPC
// reactor. Thread-safe; never blocks.
class WorkerLink {
 public:
  virtual ~WorkerLink() = default;

  // Queues `message` for the worker, in order.
  virtual void Send(v1::OrchestratorMessage message) = 0;

  // Ends the stream with `status` once the queued messages are written.
  // Later Send() calls are dropped. The engine then expects
  // WorkerGone() for this session (the reactor reports it when the stream
  // is done, whoever ended it).
  virtual void Close(const absl::Status& status) = 0;
};

// The client name of every caller when client authentication is off.
inline constexpr char kAnonymousClient[] = "anonymous";

// Who made a TaskService call, as the service's authentication found it.
struct Caller {
  // The client principal's name (orchestrator/grpc/auth.h): the name of
  // the token it presented, or "anonymous" when client authentication is
  // off.
  std::string client;
};

// Identifies one Connect stream for the life of the process (never 0, never
// reused). Obtained from NewWorkerSession().
using WorkerSessionId = std::uint64_t;

class EngineApi {
 public:
  virtual ~EngineApi() = default;

  // --- TaskService -------------------------------------------------------
  // Each Reply carries the RPC's response or a status with the codes and
  // messages named in task_service.proto. `request.spec`'s JSON-text
  // fields are validated here, not in the service.
  //
  // `caller` is who submits: the task is owned by `caller.client` (stored
  // with it, so it survives a restart), and counts against that client's
  // limit of active tasks (RESOURCE_EXHAUSTED "client X has N active tasks
  // (limit N)"). An idempotent resubmission of an existing task is never
  // refused by that limit.
  virtual void SubmitTask(Caller caller, v1::SubmitTaskRequest request,
                          Reply<v1::SubmitTaskResponse> reply) = 0;
  virtual void GetTask(v1::GetTaskRequest request,
                       Reply<v1::GetTaskResponse> reply) = 0;
  virtual void CancelTask(v1::CancelTaskRequest request,
                          Reply<v1::CancelTaskResponse> reply) = 0;
  virtual void ListTasks(v1::ListTasksRequest request,
                         Reply<v1::ListTasksResponse> reply) = 0;
  virtual void ListWorkers(v1::ListWorkersRequest request,
                           Reply<v1::ListWorkersResponse> reply) = 0;

  // Starts feeding `subscriber` (see EventSubscriber): stored events with
  // seq > request.after_seq, then live ones. Errors arrive as OnEnd().
  virtual void WatchTask(v1::WatchTaskRequest request,
                         std::shared_ptr<EventSubscriber> subscriber) = 0;
  // The client went away: no more calls to `subscriber`, not even OnEnd().
  // Harmless if it already ended.
  virtual void CancelWatch(std::shared_ptr<EventSubscriber> subscriber) = 0;

  // --- WorkerService.Connect ---------------------------------------------
  // A fresh session id for a new Connect stream.
  virtual WorkerSessionId NewWorkerSession() = 0;
  // The stream's first message. The engine validates it and answers through
  // `link`: Welcome, or Rejected followed by link->Close(status) with the
  // codes of worker_service.proto.
  virtual void WorkerHello(WorkerSessionId session,
                           std::shared_ptr<WorkerLink> link,
                           v1::Hello hello) = 0;
  // Every later message of the stream (a second Hello is an error: the
  // engine closes the stream with INVALID_ARGUMENT).
  virtual void WorkerMessage(WorkerSessionId session,
                             v1::WorkerMessage message) = 0;
  // The stream is over (any reason; `status` for logs). The worker's
  // unfinished calls are re-queued. Must be called once per session that
  // reached WorkerHello, and may be called for one that did not.
  virtual void WorkerGone(WorkerSessionId session, absl::Status status) = 0;

  // --- Health --------------------------------------------------------------
  // True while the engine accepts work (false once shutting down).
  virtual bool Ready() const = 0;
  // Prometheus text exposition of the engine's metrics (gauges and
  // counters), for GET /metrics.
  virtual void Metrics(Reply<std::string> reply) = 0;
};

}  // namespace toolmesh::orchestrator
