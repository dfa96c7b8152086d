// Engine: the one thread that owns every task and worker of the
// orchestrator (ARCHITECTURE.md "Processes", "A turn", "Dispatch").
//
// Everything reaches it as a closure on its queue: RPCs (through EngineApi),
// model stream bytes (the transport's callbacks forward them), timers (the
// Clock's callbacks forward them). The engine thread runs them one at a
// time, so task state needs no locks; a TaskRunner per task drives the turn
// loop and the Dispatcher hands client tool calls to workers.
//
// Thread-safety: the EngineApi methods, Post() and Shutdown() may be called
// from any thread. Construction and destruction from one thread that is not
// the engine thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/model_transport.h"
#include "common/random.h"
#include "common/retry_policy.h"
#include "orchestrator/engine/dispatcher.h"
#include "orchestrator/engine/engine_api.h"
#include "orchestrator/engine/task_runner.h"
#include "orchestrator/store/store.h"

namespace toolmesh::orchestrator {

struct EngineOptions {
  // max_turns for a task that gives 0.
  std::uint32_t default_max_turns = 32;
  // The largest max_turns a spec may ask for (INVALID_ARGUMENT beyond);
  // 0: no limit.
  std::uint32_t max_turns_limit = 0;
  // The deadline of a task whose spec gives none: accepted at + this.
  // ZeroDuration: no deadline (the daemon's --default-task-timeout is 1h).
  absl::Duration default_task_timeout = absl::ZeroDuration();
  // Tasks not yet terminal at most; SubmitTask beyond is
  // RESOURCE_EXHAUSTED.
  int max_active_tasks = 10000;
  // Tasks not yet terminal per client principal (Caller::client) at most;
  // SubmitTask beyond is RESOURCE_EXHAUSTED. 0: unlimited.
  int max_tasks_per_client = 0;
  // Retries of one turn's model request (SDK defaults).
  common::RetryPolicyOptions retry;
  DispatcherOptions dispatch;
  // Extra headers of every Messages request (e.g. anthropic-beta).
  common::HttpHeaders extra_headers;
  // Deliveries of one client tool call before ERROR worker_lost.
  int max_tool_attempts = 3;
  // A client tool input larger than this (JSON text) is not sent to a
  // worker: the call ends ERROR invalid_input saying so, and the model sees
  // that as its tool_result. 0: no limit.
  std::size_t max_tool_input_bytes = 1024 * 1024;
  // Retention of finished tasks in the store: deleted once finished longer
  // ago than `retention` (InfiniteDuration: never) or beyond the newest
  // `retention_count`; checked every `retention_interval`.
  absl::Duration retention = absl::Hours(24 * 7);
  std::size_t retention_count = 100000;
  absl::Duration retention_interval = absl::Minutes(1);
  // Finished tasks kept in memory; older ones are read from the store.
  std::size_t finished_in_memory = 1000;
  // True: the engine runs its own thread (the daemon). False (drive mode,
  // for the deterministic simulation): no thread is started and the caller
  // runs the engine from one thread with RunOnce(); Shutdown() and the
  // destructor then run the queue on the calling thread.
  bool own_thread = true;
};

class Engine final : public EngineApi {
 public:
  // `clock`, `transport`, `random` and `store` must outlive the engine. The
  // engine thread starts here (unless options.own_thread is false); its
  // first work is to reload the unfinished tasks of `store` and continue
  // them. Task ids are drawn from `random`.
  Engine(EngineOptions options, common::Clock& clock,
         common::ModelTransport& transport, common::RandomSource& random,
         Store& store);
  // Shutdown(), then joins the engine thread (drive mode: runs what is
  // left in the queue on the calling thread).
  ~Engine() override;

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs `fn` on the engine thread, after everything posted before it.
  // Dropped (destroyed unrun) once the engine has stopped.
  void Post(absl::AnyInvocable<void()> fn);

  // Drive mode only (EngineOptions::own_thread = false): runs everything
  // queued now as one engine iteration (then one store commit, events and
  // replies), on the calling thread, which acts as the engine thread.
  // Returns false, doing nothing, when nothing was queued. Never blocks.
  // Work that the iteration posts runs at the next call.
  bool RunOnce();

  // Stops accepting work (not from the engine thread): Ready() turns false, new RPCs get UNAVAILABLE,
  // watchers get OnEnd(UNAVAILABLE), worker streams are closed with
  // UNAVAILABLE, model streams are cancelled. Tasks stay where they are
  // (a restart with a store resumes them). Blocks until the engine thread
  // has done this (in drive mode it does it on the calling thread, which
  // must be the driving thread). Idempotent.
  void Shutdown();

  // EngineApi.
  void SubmitTask(Caller caller, v1::SubmitTaskRequest request,
                  Reply<v1::SubmitTaskResponse> reply) override;
  // SubmitTask() as the anonymous client (kAnonymousPrincipal of
  // orchestrator/grpc/auth.h), for in-process callers without a caller.
  void SubmitTask(v1::SubmitTaskRequest request,
                  Reply<v1::SubmitTaskResponse> reply);
  void GetTask(v1::GetTaskRequest request,
               Reply<v1::GetTaskResponse> reply) override;
  void CancelTask(v1::CancelTaskRequest request,
                  Reply<v1::CancelTaskResponse> reply) override;
  void ListTasks(v1::ListTasksRequest request,
                 Reply<v1::ListTasksResponse> reply) override;
  void ListWorkers(v1::ListWorkersRequest request,
                   Reply<v1::ListWorkersResponse> reply) override;
  void WatchTask(v1::WatchTaskRequest request,
                 std::shared_ptr<EventSubscriber> subscriber) override;
  void CancelWatch(std::shared_ptr<EventSubscriber> subscriber) override;
  WorkerSessionId NewWorkerSession() override;
  void WorkerHello(WorkerSessionId session, std::shared_ptr<WorkerLink> link,
                   v1::Hello hello) override;
  void WorkerMessage(WorkerSessionId session,
                     v1::WorkerMessage message) override;
  void WorkerGone(WorkerSessionId session, absl::Status status) override;
  bool Ready() const override;
  void Metrics(Reply<std::string> reply) override;

 private:
  class State;  // everything the engine thread owns

  void Run();
  // One engine iteration: runs `batch`, then commits.
  void RunBatch(std::deque<absl::AnyInvocable<void()>>& batch);
  void ScheduleRetention();

  const EngineOptions options_;
  std::atomic<bool> ready_{true};
  std::atomic<WorkerSessionId> next_session_{1};
  const std::shared_ptr<EngineQueue> queue_;

  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;

  std::unique_ptr<State> state_;  // engine thread only
  std::thread thread_;            // last
};

}  // namespace toolmesh::orchestrator
