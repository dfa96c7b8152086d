// Dispatcher implementation; see dispatcher.h for the behaviour.
//
// Bookkeeping:
//  - `calls_` holds every tracked call by (task_id, tool_use_id), ordered so
//    that one task's calls are contiguous (CancelTask). A call is either
//    queued (in its tool's queue) or assigned (in its worker's `assigned`).
//  - Every queued or assigned phase of a call gets a fresh `generation`.
//    Timers carry the generation they were scheduled for and do nothing
//    when the call has moved on (finished, re-enqueued, re-assigned), so
//    cancelling a timer handle is an optimisation, never needed for
//    correctness.
//
// Timers (all on the Clock, their callbacks handed to `post`):
//  - schedule-to-start: one per queued call, from Enqueue().
//  - start-to-close: one per assignment, at the assignment's deadline.
//  - lease: one per assignment. A heartbeat only moves the call's
//    `lease_expiry`; when the timer fires before that time it reschedules
//    itself for the remainder. A heartbeat therefore costs no timer
//    operations, and an assignment never has more than one lease timer.
//
// Heartbeat omission rule: an assigned, unanswered call that a heartbeat
// does not list is lost only if it was assigned before the PREVIOUS
// heartbeat of that worker was received. A heartbeat the worker sent before
// the Assignment reached it may arrive after the assignment was made; only
// a second heartbeat is proof that the worker has seen the assignment and
// dropped it. Until then the lease covers the call.
//
// Listener calls are collected in an Outbox while the internal state
// changes and made once the state is consistent again, so a listener may
// call Enqueue() and Cancel() from any of them. A deferred OnCallStarted is
// dropped when the delivery it announces was ended in between by such a
// re-entrant call.
#include "orchestrator/engine/dispatcher.h"

#include "orchestrator/engine/histogram.h"

#include <algorithm>
#include <cstddef>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/time_util.h"
#include "orchestrator/grpc/status_conversion.h"

namespace toolmesh::orchestrator {
namespace {

using ::google::protobuf::util::TimeUtil;
using CallKey = std::pair<std::string, std::string>;

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  // absl saturates infinite times to the int64 range, which Timestamp holds
  // (years 1677 to 2262).
  return TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(t));
}

google::protobuf::Duration ToDuration(absl::Duration d) {
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

std::uint32_t WireAttempt(int attempt) {
  return static_cast<std::uint32_t>(std::max(attempt, 0));
}

// The largest attempt number a CallRef can carry.
constexpr std::uint32_t kMaxWireAttempt =
    static_cast<std::uint32_t>(std::numeric_limits<int>::max());

// The Messages API's rule for custom tool names, as the worker's tools.json
// loader applies it.
bool IsValidToolName(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// Equal JSON values, object keys in any order.
bool JsonEquivalent(const common::Json& a, const common::Json& b) {
  if (a.is_object() && b.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto other = b.find(it.key());
      if (other == b.end() || !JsonEquivalent(it.value(), *other)) {
        return false;
      }
    }
    return true;
  }
  if (a.is_array() && b.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!JsonEquivalent(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

std::string Quoted(std::string_view s) {
  return absl::StrCat("\"", absl::string_view(s.data(), s.size()), "\"");
}

}  // namespace

struct Dispatcher::Impl {
  // ---- Types ----------------------------------------------------------

  enum class Phase { kQueued, kAssigned };

  struct Call {
    CallSpec spec;
    Phase phase = Phase::kQueued;
    // For the dispatch latency and tool duration histograms.
    absl::Time enqueued_at;
    absl::Time assigned_at;
    std::uint64_t generation = 0;
    // kQueued.
    common::TimerHandle schedule_timer;
    // kAssigned.
    WorkerSessionId worker = 0;
    std::string worker_id;
    // The worker's heartbeat count when the call was assigned.
    std::uint64_t heartbeats_at_assignment = 0;
    // True when the task's deadline, not start_to_close_timeout, set the
    // assignment's deadline.
    bool deadline_from_task = false;
    absl::Time lease_expiry;
    common::TimerHandle lease_timer;
    common::TimerHandle close_timer;
  };

  // One tool's queue: FIFO per task, round robin across tasks.
  struct ToolQueue {
    // Tasks with queued calls, in turn order.
    std::deque<std::string> rotation;
    absl::flat_hash_map<std::string, std::deque<std::string>> by_task;
  };

  struct Tool {
    v1::ToolDefinition definition;
    common::Json schema;
  };

  struct Worker {
    WorkerSessionId session = 0;
    std::shared_ptr<WorkerLink> link;
    std::string worker_id;
    std::string worker_version;
    std::int64_t slots = 0;
    // Accepted tools, in Hello order, and their definitions.
    std::vector<std::string> tool_names;
    absl::flat_hash_map<std::string, Tool> tools;
    bool draining = false;
    absl::Time connected_at;
    std::optional<absl::Time> last_heartbeat_at;
    std::uint64_t heartbeats = 0;
    // Calls assigned and not answered.
    std::set<CallKey> assigned;
    // Where PumpWorker() starts in `tool_names` next time, so that one busy
    // tool cannot take every slot the worker frees.
    std::size_t next_tool = 0;

    std::int64_t FreeSlots() const {
      return slots - static_cast<std::int64_t>(assigned.size());
    }
    bool CanTake(const std::string& tool) const {
      return !draining && FreeSlots() > 0 && tools.contains(tool);
    }
  };

  // Listener calls to make once the state is consistent.
  using Outbox = std::vector<absl::AnyInvocable<void()>>;
  using TimerMethod = void (Impl::*)(const CallKey&, std::uint64_t);

  Impl(DispatcherOptions opts, common::Clock& clk, Post post_fn,
       DispatchListener& lsn)
      : options(std::move(opts)),
        clock(clk),
        post(std::make_shared<Post>(std::move(post_fn))),
        listener(lsn) {}

  // ---- Helpers --------------------------------------------------------

  static void Flush(Outbox& out) {
    // Index loop: nothing appends to `out` while it is flushed (re-entrant
    // calls use their own Outbox), but this stays correct if it did.
    for (std::size_t i = 0; i < out.size(); ++i) out[i]();
    out.clear();
  }

  // Schedules `method(key, generation)` after `delay`, on the engine thread
  // through `post`. Safe after the dispatcher is gone: the timer callback
  // holds only `post` (shared) and a weak token.
  common::TimerHandle Schedule(absl::Duration delay, CallKey key,
                               std::uint64_t generation, TimerMethod method) {
    return clock.ScheduleAfter(
        delay, [post_fn = post, token = std::weak_ptr<char>(alive), self = this,
                key = std::move(key), generation, method]() mutable {
          (*post_fn)([token = std::move(token), self, key = std::move(key),
                      generation, method] {
            // The dispatcher is destroyed on the engine thread, where this
            // runs, so the check cannot race with the destruction.
            if (token.expired()) return;
            (self->*method)(key, generation);
          });
        });
  }

  Worker* FindWorker(WorkerSessionId session) {
    auto it = workers.find(session);
    return it == workers.end() ? nullptr : &it->second;
  }

  // ---- Queue depth (see Enqueue() in dispatcher.h) -----------------------

  // Calls of `tool` waiting for a worker.
  int Depth(std::string_view tool) const {
    auto it = queues.find(std::string(tool));
    if (it == queues.end()) return 0;
    std::size_t n = 0;
    for (const auto& [task, ids] : it->second.by_task) n += ids.size();
    return static_cast<int>(n);
  }

  bool Full(std::string_view tool) const {
    // `queued` counts every tool: below the limit no queue can be full, so
    // the common case costs nothing.
    return options.max_queue_depth > 0 && queued >= options.max_queue_depth &&
           Depth(tool) >= options.max_queue_depth;
  }

  // Refuses a first delivery of `spec` whose tool queue is full: it is not
  // tracked; OnCallFailed(kQueueFull) follows on the engine thread unless
  // the call is cancelled or enqueued again first.
  void Refuse(const CallSpec& spec) {
    const int depth = Depth(spec.name);
    CallKey key{spec.ref.task_id, spec.ref.tool_use_id};
    const std::uint64_t generation = ++next_generation;
    refused[key] = generation;
    ++rejections[{spec.name, "queue_full"}];
    std::string message =
        absl::StrCat("tool queue for ", Quoted(spec.name), " is full (", depth,
                     " calls waiting)");
    (*post)([token = std::weak_ptr<char>(alive), self = this,
             key = std::move(key), generation, ref = spec.ref,
             message = std::move(message)] {
      if (token.expired()) return;
      auto it = self->refused.find(key);
      if (it == self->refused.end() || it->second != generation) return;
      self->refused.erase(it);
      self->listener.OnCallFailed(ref, common::ErrorReason::kQueueFull,
                                  message);
    });
  }

  // The live call `key` in `phase` with `generation`, or nullptr.
  Call* FindCurrent(const CallKey& key, std::uint64_t generation,
                    Phase phase) {
    auto it = calls.find(key);
    if (it == calls.end() || it->second.generation != generation ||
        it->second.phase != phase) {
      return nullptr;
    }
    return &it->second;
  }

  void SendCancel(const Call& call, v1::CancelReason reason,
                  std::string_view message) {
    if (call.phase != Phase::kAssigned) return;
    Worker* worker = FindWorker(call.worker);
    if (worker == nullptr) return;
    v1::OrchestratorMessage out;
    v1::Cancel& cancel = *out.mutable_cancel();
    cancel.set_task_id(call.spec.ref.task_id);
    cancel.set_tool_use_id(call.spec.ref.tool_use_id);
    cancel.set_attempt(WireAttempt(call.spec.ref.attempt));
    cancel.set_reason(reason);
    cancel.set_message(std::string(message));
    worker->link->Send(std::move(out));
  }

  void PushToQueue(const CallSpec& spec) {
    ToolQueue& queue = queues[spec.name];
    std::deque<std::string>& task_calls = queue.by_task[spec.ref.task_id];
    if (task_calls.empty()) queue.rotation.push_back(spec.ref.task_id);
    task_calls.push_back(spec.ref.tool_use_id);
    ++queued;
  }

  void RemoveFromQueue(const CallSpec& spec) {
    auto qit = queues.find(spec.name);
    if (qit == queues.end()) return;
    ToolQueue& queue = qit->second;
    auto tit = queue.by_task.find(spec.ref.task_id);
    if (tit == queue.by_task.end()) return;
    std::deque<std::string>& task_calls = tit->second;
    auto cit =
        std::find(task_calls.begin(), task_calls.end(), spec.ref.tool_use_id);
    if (cit == task_calls.end()) return;
    task_calls.erase(cit);
    --queued;
    if (task_calls.empty()) {
      queue.by_task.erase(tit);
      queue.rotation.erase(std::find(queue.rotation.begin(),
                                     queue.rotation.end(), spec.ref.task_id));
    }
    if (queue.rotation.empty()) queues.erase(qit);
  }

  // Stops tracking `it`: cancels its timers, takes it off its queue or its
  // worker. Returns the worker whose slot it freed, if any.
  std::optional<WorkerSessionId> Untrack(std::map<CallKey, Call>::iterator it) {
    Call& call = it->second;
    call.schedule_timer.Cancel();
    call.lease_timer.Cancel();
    call.close_timer.Cancel();
    std::optional<WorkerSessionId> freed;
    if (call.phase == Phase::kQueued) {
      RemoveFromQueue(call.spec);
    } else {
      --running;
      if (Worker* worker = FindWorker(call.worker)) {
        worker->assigned.erase(it->first);
        freed = call.worker;
      }
    }
    calls.erase(it);
    return freed;
  }

  // The eligible worker for `tool` with the lowest load (assigned / slots);
  // ties go to the most free slots, then to the earliest session.
  Worker* PickWorker(const std::string& tool) {
    Worker* best = nullptr;
    for (auto& [session, worker] : workers) {
      if (!worker.CanTake(tool)) continue;
      if (best == nullptr) {
        best = &worker;
        continue;
      }
      const std::int64_t lhs =
          static_cast<std::int64_t>(worker.assigned.size()) * best->slots;
      const std::int64_t rhs =
          static_cast<std::int64_t>(best->assigned.size()) * worker.slots;
      if (lhs < rhs || (lhs == rhs && worker.FreeSlots() > best->FreeSlots())) {
        best = &worker;
      }
    }
    return best;
  }

  // Hands call `key` (queued) to `worker`.
  void Assign(const CallKey& key, Worker& worker, Outbox& out) {
    Call& call = calls.at(key);
    call.schedule_timer.Cancel();
    const absl::Time now = clock.Now();
    const absl::Time deadline =
        std::min(call.spec.deadline, now + options.start_to_close_timeout);
    call.phase = Phase::kAssigned;
    call.generation = ++next_generation;
    call.worker = worker.session;
    call.worker_id = worker.worker_id;
    call.heartbeats_at_assignment = worker.heartbeats;
    call.deadline_from_task =
        call.spec.deadline < now + options.start_to_close_timeout;
    call.lease_expiry = now + options.lease_duration;
    call.assigned_at = now;
    dispatch_latency.Observe(now - call.enqueued_at);
    worker.assigned.insert(key);
    --queued;
    ++running;

    v1::OrchestratorMessage message;
    v1::Assignment& assignment = *message.mutable_assignment();
    assignment.set_task_id(call.spec.ref.task_id);
    assignment.set_tool_use_id(call.spec.ref.tool_use_id);
    assignment.set_attempt(WireAttempt(call.spec.ref.attempt));
    assignment.set_name(call.spec.name);
    assignment.set_input_json(call.spec.input_json);
    *assignment.mutable_deadline() = ToTimestamp(deadline);
    *assignment.mutable_lease_expiry() = ToTimestamp(call.lease_expiry);
    worker.link->Send(std::move(message));

    call.lease_timer = Schedule(options.lease_duration, key, call.generation,
                                &Impl::OnLeaseTimer);
    call.close_timer = Schedule(deadline - now, key, call.generation,
                                &Impl::OnStartToCloseTimer);
    out.push_back([this, key, generation = call.generation,
                   ref = call.spec.ref, worker_id = worker.worker_id] {
      if (FindCurrent(key, generation, Phase::kAssigned) == nullptr) return;
      listener.OnCallStarted(ref, worker_id);
    });
  }

  // Assigns queued calls of `tool` while an eligible worker is free.
  void PumpTool(const std::string& tool, Outbox& out) {
    while (true) {
      auto qit = queues.find(tool);
      if (qit == queues.end()) return;
      Worker* worker = PickWorker(tool);
      if (worker == nullptr) return;
      ToolQueue& queue = qit->second;
      std::string task_id = std::move(queue.rotation.front());
      queue.rotation.pop_front();
      auto tit = queue.by_task.find(task_id);
      CallKey key{task_id, std::move(tit->second.front())};
      tit->second.pop_front();
      if (tit->second.empty()) {
        queue.by_task.erase(tit);
      } else {
        queue.rotation.push_back(std::move(task_id));
      }
      if (queue.rotation.empty()) queues.erase(qit);
      Assign(key, *worker, out);
    }
  }

  // Offers the queues of every tool `session` serves; called when the
  // worker gained free slots.
  void PumpWorker(std::optional<WorkerSessionId> session, Outbox& out) {
    if (!session.has_value()) return;
    Worker* worker = FindWorker(*session);
    if (worker == nullptr || worker->tool_names.empty()) return;
    const std::size_t n = worker->tool_names.size();
    const std::size_t start = worker->next_tool % n;
    worker->next_tool = start + 1;
    for (std::size_t i = 0; i < n; ++i) {
      if (worker->draining || worker->FreeSlots() <= 0) return;
      // A copy: PumpTool does not touch workers, but keep the name stable.
      const std::string tool = worker->tool_names[(start + i) % n];
      PumpTool(tool, out);
    }
  }

  // Loses the delivery `it` (assigned): Cancel(SUPERSEDED) to its worker
  // in case it still runs it, then OnCallLost. Returns the freed worker.
  std::optional<WorkerSessionId> Lose(std::map<CallKey, Call>::iterator it,
                                      std::string message,
                                      bool counts_as_attempt, Outbox& out) {
    SendCancel(it->second, v1::CANCEL_REASON_SUPERSEDED, message);
    CallRef ref = it->second.spec.ref;
    std::optional<WorkerSessionId> freed = Untrack(it);
    out.push_back([this, ref = std::move(ref), message = std::move(message),
                   counts_as_attempt] {
      listener.OnCallLost(ref, message, counts_as_attempt);
    });
    return freed;
  }

  // Cancels and untracks every call in `keys` that is still tracked, then
  // offers the freed slots.
  void CancelCalls(const std::vector<CallKey>& keys, v1::CancelReason reason,
                   std::string_view message) {
    Outbox out;
    std::vector<WorkerSessionId> freed;
    for (const CallKey& key : keys) {
      auto it = calls.find(key);
      if (it == calls.end()) continue;
      SendCancel(it->second, reason, message);
      if (auto session = Untrack(it)) freed.push_back(*session);
    }
    // Slots are offered only once every call of the batch is gone, so a
    // queued call of the same batch is not assigned just to be cancelled.
    for (WorkerSessionId session : freed) PumpWorker(session, out);
    Flush(out);
  }

  // ---- Timer handlers (engine thread) -----------------------------------

  void OnScheduleToStartTimer(const CallKey& key, std::uint64_t generation) {
    Call* call = FindCurrent(key, generation, Phase::kQueued);
    if (call == nullptr) return;
    CallRef ref = call->spec.ref;
    const std::string tool = call->spec.name;
    const bool served = std::any_of(
        workers.begin(), workers.end(),
        [&](const auto& entry) { return entry.second.tools.contains(tool); });
    std::string message =
        served ? absl::StrCat("no worker took the call to tool ", Quoted(tool),
                              " within ",
                              absl::FormatDuration(
                                  options.schedule_to_start_timeout))
               : absl::StrCat("no connected worker serves tool ",
                              Quoted(tool), " (waited ",
                              absl::FormatDuration(
                                  options.schedule_to_start_timeout),
                              ")");
    Untrack(calls.find(key));
    listener.OnCallFailed(ref, common::ErrorReason::kNoWorker, message);
  }

  void OnLeaseTimer(const CallKey& key, std::uint64_t generation) {
    Call* call = FindCurrent(key, generation, Phase::kAssigned);
    if (call == nullptr) return;
    const absl::Time now = clock.Now();
    if (now < call->lease_expiry) {
      // A heartbeat extended the lease since this timer was set.
      call->lease_timer = Schedule(call->lease_expiry - now, key, generation,
                                   &Impl::OnLeaseTimer);
      return;
    }
    Outbox out;
    std::string message =
        absl::StrCat("lease expired on worker ", Quoted(call->worker_id),
                     " (no heartbeat listed the call for ",
                     absl::FormatDuration(options.lease_duration), ")");
    auto freed = Lose(calls.find(key), std::move(message),
                      /*counts_as_attempt=*/true, out);
    PumpWorker(freed, out);
    Flush(out);
  }

  void OnStartToCloseTimer(const CallKey& key, std::uint64_t generation) {
    Call* call = FindCurrent(key, generation, Phase::kAssigned);
    if (call == nullptr) return;
    Outbox out;
    std::string message =
        call->deadline_from_task
            ? std::string("the task's deadline passed while the tool ran")
            : absl::StrCat("the tool did not finish within its ",
                           absl::FormatDuration(options.start_to_close_timeout),
                           " start-to-close timeout");
    SendCancel(*call, v1::CANCEL_REASON_DEADLINE_EXCEEDED, message);
    CallRef ref = call->spec.ref;
    auto freed = Untrack(calls.find(key));
    out.push_back([this, ref = std::move(ref), message = std::move(message)] {
      listener.OnCallFailed(ref, common::ErrorReason::kTimeout, message);
    });
    PumpWorker(freed, out);
    Flush(out);
  }

  // ---- Worker messages ----------------------------------------------------

  void OnHeartbeat(Worker& worker, const v1::Heartbeat& heartbeat) {
    const absl::Time now = clock.Now();
    ++worker.heartbeats;
    worker.last_heartbeat_at = now;
    absl::flat_hash_set<CallKey> listed;
    for (const v1::RunningCall& running_call : heartbeat.running()) {
      CallKey key{running_call.task_id(), running_call.tool_use_id()};
      auto it = calls.find(key);
      if (it == calls.end()) continue;
      Call& call = it->second;
      if (call.phase != Phase::kAssigned || call.worker != worker.session ||
          WireAttempt(call.spec.ref.attempt) != running_call.attempt()) {
        continue;
      }
      call.lease_expiry = now + options.lease_duration;
      listed.insert(std::move(key));
    }
    // See the omission rule at the top of this file.
    std::vector<CallKey> omitted;
    for (const CallKey& key : worker.assigned) {
      if (listed.contains(key)) continue;
      if (calls.at(key).heartbeats_at_assignment + 1 < worker.heartbeats) {
        omitted.push_back(key);
      }
    }
    if (omitted.empty()) return;
    Outbox out;
    const WorkerSessionId session = worker.session;
    const std::string worker_id = worker.worker_id;
    for (const CallKey& key : omitted) {
      Lose(calls.find(key),
           absl::StrCat("worker ", Quoted(worker_id),
                        " no longer reports the call in its heartbeats"),
           /*counts_as_attempt=*/true, out);
    }
    PumpWorker(session, out);
    Flush(out);
  }

  // The content of `result`: an empty content_json is read as an empty
  // text result; anything else must be what a tool_result block's content
  // may be, else the result becomes an is_error text saying so.
  static common::Json ResultContent(const Worker& worker,
                                    const v1::ToolResult& result,
                                    bool& is_error) {
    is_error = result.is_error();
    absl::StatusOr<std::optional<common::Json>> parsed =
        rpc::ParseOptionalJsonField("ToolResult.content_json",
                                    result.content_json(),
                                    rpc::JsonShape::kStringOrArray);
    if (!parsed.ok()) {
      is_error = true;
      return absl::StrCat("worker ", Quoted(worker.worker_id),
                          " sent an unusable result: ",
                          parsed.status().message());
    }
    if (parsed->has_value()) return std::move(**parsed);
    return "";
  }

  void OnToolResult(Worker& worker, const v1::ToolResult& result) {
    auto it = calls.find(CallKey{result.task_id(), result.tool_use_id()});
    const bool current =
        it != calls.end() && it->second.phase == Phase::kAssigned &&
        it->second.worker == worker.session &&
        WireAttempt(it->second.spec.ref.attempt) == result.attempt();
    if (!current) {
      // Not the delivery this worker holds: an earlier attempt finished
      // after all (or the call is no longer tracked here). Attempt 0 is
      // never delivered; a later attempt than the tracked one cannot be.
      if (result.attempt() == 0 || result.attempt() > kMaxWireAttempt ||
          (it != calls.end() &&
           result.attempt() >= WireAttempt(it->second.spec.ref.attempt))) {
        ++ignored_results;
        return;
      }
      ++late_results;
      bool is_error = false;
      common::Json content = ResultContent(worker, result, is_error);
      CallRef ref{result.task_id(), result.tool_use_id(),
                  static_cast<int>(result.attempt())};
      listener.OnLateResult(ref, worker.worker_id, std::move(content),
                            is_error);
      return;
    }
    bool is_error = false;
    common::Json content = ResultContent(worker, result, is_error);
    Outbox out;
    CallRef ref = it->second.spec.ref;
    tool_duration.Observe(clock.Now() - it->second.assigned_at);
    auto freed = Untrack(it);
    out.push_back([this, ref = std::move(ref), content = std::move(content),
                   is_error]() mutable {
      listener.OnCallResult(ref, std::move(content), is_error);
    });
    PumpWorker(freed, out);
    Flush(out);
  }

  void OnReturnCall(Worker& worker, const v1::ReturnCall& returned) {
    auto it = calls.find(CallKey{returned.task_id(), returned.tool_use_id()});
    if (it == calls.end() || it->second.phase != Phase::kAssigned ||
        it->second.worker != worker.session ||
        WireAttempt(it->second.spec.ref.attempt) != returned.attempt()) {
      return;
    }
    Outbox out;
    CallRef ref = it->second.spec.ref;
    std::string message =
        absl::StrCat("worker ", Quoted(worker.worker_id), " returned the call",
                     returned.reason().empty() ? "" : ": ", returned.reason());
    auto freed = Untrack(it);
    out.push_back([this, ref = std::move(ref), message = std::move(message)] {
      listener.OnCallLost(ref, message, /*counts_as_attempt=*/false);
    });
    PumpWorker(freed, out);
    Flush(out);
  }

  // Forgets `session` and loses every delivery it held.
  void DropWorker(WorkerSessionId session, std::string_view why) {
    auto wit = workers.find(session);
    if (wit == workers.end()) return;
    const std::string worker_id = wit->second.worker_id;
    const std::vector<CallKey> held(wit->second.assigned.begin(),
                                    wit->second.assigned.end());
    worker_ids.erase(worker_id);
    workers.erase(wit);
    Outbox out;
    std::string message = absl::StrCat(
        "worker ", Quoted(worker_id), " disconnected",
        why.empty() ? "" : ": ", absl::string_view(why.data(), why.size()));
    for (const CallKey& key : held) {
      auto it = calls.find(key);
      if (it == calls.end()) continue;
      // The stream is gone: no Cancel to send (Lose finds no worker).
      Lose(it, message, /*counts_as_attempt=*/true, out);
    }
    Flush(out);
  }

  absl::Status ValidateHello(const v1::Hello& hello,
                             std::vector<Tool>& tools) const {
    if (std::find(options.protocol_versions.begin(),
                  options.protocol_versions.end(),
                  hello.protocol_version()) ==
        options.protocol_versions.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "protocol_version ", hello.protocol_version(),
          " not supported; this orchestrator speaks ",
          absl::StrJoin(options.protocol_versions, ", ")));
    }
    if (hello.worker_id().empty()) {
      return absl::InvalidArgumentError("Hello.worker_id is empty");
    }
    if (hello.slots() == 0) {
      return absl::InvalidArgumentError("Hello.slots must be > 0");
    }
    absl::flat_hash_set<std::string> names;
    for (int i = 0; i < hello.tools_size(); ++i) {
      const v1::ToolDefinition& tool = hello.tools(i);
      const std::string path = absl::StrCat("Hello.tools[", i, "]");
      if (tool.name().empty()) {
        return absl::InvalidArgumentError(absl::StrCat(path, " has no name"));
      }
      if (!IsValidToolName(tool.name())) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ".name ", Quoted(tool.name()),
                         " does not match ^[a-zA-Z0-9_-]{1,128}$"));
      }
      if (!names.insert(tool.name()).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": tool ", Quoted(tool.name()), " is listed twice"));
      }
      absl::StatusOr<common::Json> schema =
          rpc::ParseJsonField(absl::StrCat(path, ".input_schema_json"),
                              tool.input_schema_json(), rpc::JsonShape::kObject);
      if (!schema.ok()) return schema.status();
      tools.push_back(Tool{tool, *std::move(schema)});
    }
    return absl::OkStatus();
  }

  // True if another connected worker serves `tool.definition.name` with a
  // different description or input schema.
  bool Clashes(const Tool& tool) const {
    for (const auto& [session, worker] : workers) {
      auto it = worker.tools.find(tool.definition.name());
      if (it == worker.tools.end()) continue;
      if (it->second.definition.description() !=
              tool.definition.description() ||
          !JsonEquivalent(it->second.schema, tool.schema)) {
        return true;
      }
    }
    return false;
  }

  // ---- State ----------------------------------------------------------------

  // Constant after construction.
  const DispatcherOptions options;
  common::Clock& clock;
  // Shared with timer callbacks, which may run on the clock's thread.
  const std::shared_ptr<Post> post;
  DispatchListener& listener;
  // Expires with the dispatcher; posted timer closures check it.
  const std::shared_ptr<char> alive = std::make_shared<char>(0);

  std::map<CallKey, Call> calls;
  absl::flat_hash_map<std::string, ToolQueue> queues;
  std::map<WorkerSessionId, Worker> workers;
  absl::flat_hash_map<std::string, WorkerSessionId> worker_ids;
  std::uint64_t next_generation = 0;
  int queued = 0;
  int running = 0;
  std::int64_t ignored_results = 0;
  // First deliveries refused because their tool queue was full, whose
  // OnCallFailed is still to come: key -> the refusal's generation.
  std::map<CallKey, std::uint64_t> refused;
  // (tool, reason) -> calls refused.
  std::map<std::pair<std::string, std::string>, std::int64_t> rejections;
  std::int64_t late_results = 0;
  // From enqueue to assignment, and from assignment to the worker's result.
  Histogram dispatch_latency;
  Histogram tool_duration;
};

Dispatcher::Dispatcher(DispatcherOptions options, common::Clock& clock,
                       Post post, DispatchListener& listener)
    : impl_(std::make_unique<Impl>(std::move(options), clock, std::move(post),
                                   listener)) {}

Dispatcher::~Dispatcher() {
  for (auto& [key, call] : impl_->calls) {
    call.schedule_timer.Cancel();
    call.lease_timer.Cancel();
    call.close_timer.Cancel();
  }
}

void Dispatcher::Enqueue(CallSpec call) {
  Impl& d = *impl_;
  Impl::Outbox out;
  CallKey key{call.ref.task_id, call.ref.tool_use_id};
  d.refused.erase(key);
  if (call.ref.attempt <= 1 &&
      call.schedule_grace == absl::ZeroDuration() && !d.calls.contains(key) &&
      d.Full(call.name)) {
    d.Refuse(call);
    return;
  }
  std::optional<WorkerSessionId> freed;
  if (auto it = d.calls.find(key); it != d.calls.end()) {
    d.SendCancel(it->second, v1::CANCEL_REASON_SUPERSEDED,
                 absl::StrCat("superseded by attempt ", call.ref.attempt));
    freed = d.Untrack(it);
  }
  const std::string tool = call.name;
  Impl::Call& tracked = d.calls[key];
  tracked.spec = std::move(call);
  tracked.phase = Impl::Phase::kQueued;
  tracked.enqueued_at = d.clock.Now();
  tracked.generation = ++d.next_generation;
  d.PushToQueue(tracked.spec);
  tracked.schedule_timer = d.Schedule(
      d.options.schedule_to_start_timeout + tracked.spec.schedule_grace, key,
      tracked.generation, &Impl::OnScheduleToStartTimer);
  d.PumpTool(tool, out);
  d.PumpWorker(freed, out);
  Impl::Flush(out);
}

void Dispatcher::Cancel(std::string_view task_id, std::string_view tool_use_id,
                        v1::CancelReason reason, std::string_view message) {
  CallKey key{std::string(task_id), std::string(tool_use_id)};
  impl_->refused.erase(key);
  impl_->CancelCalls({std::move(key)}, reason, message);
}

void Dispatcher::CancelTask(std::string_view task_id, v1::CancelReason reason,
                            std::string_view message) {
  std::vector<CallKey> keys;
  const std::string task(task_id);
  for (auto it = impl_->refused.lower_bound(CallKey{task, std::string()});
       it != impl_->refused.end() && it->first.first == task;) {
    it = impl_->refused.erase(it);
  }
  for (auto it = impl_->calls.lower_bound(CallKey{task, std::string()});
       it != impl_->calls.end() && it->first.first == task; ++it) {
    keys.push_back(it->first);
  }
  impl_->CancelCalls(keys, reason, message);
}

absl::StatusOr<v1::Welcome> Dispatcher::AddWorker(
    WorkerSessionId session, std::shared_ptr<WorkerLink> link,
    const v1::Hello& hello) {
  Impl& d = *impl_;
  if (link == nullptr) {
    return absl::InvalidArgumentError("AddWorker without a WorkerLink");
  }
  std::vector<Impl::Tool> tools;
  if (absl::Status status = d.ValidateHello(hello, tools); !status.ok()) {
    return status;
  }
  if (d.workers.contains(session)) {
    return absl::AlreadyExistsError(
        absl::StrCat("worker session ", session, " already said Hello"));
  }
  if (d.worker_ids.contains(hello.worker_id())) {
    return absl::AlreadyExistsError(
        absl::StrCat("worker ", Quoted(hello.worker_id()),
                     " is already connected on another stream"));
  }
  if (static_cast<std::int64_t>(d.workers.size()) >=
      static_cast<std::int64_t>(d.options.max_workers)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this orchestrator's limit of ", d.options.max_workers,
                     " connected workers is reached"));
  }

  Impl::Worker worker;
  worker.session = session;
  worker.link = link;
  worker.worker_id = hello.worker_id();
  worker.worker_version = hello.worker_version();
  worker.slots = hello.slots();
  worker.connected_at = d.clock.Now();
  v1::Welcome welcome;
  welcome.set_protocol_version(hello.protocol_version());
  *welcome.mutable_heartbeat_interval() =
      ToDuration(d.options.heartbeat_interval);
  *welcome.mutable_lease_duration() = ToDuration(d.options.lease_duration);
  for (Impl::Tool& tool : tools) {
    if (d.Clashes(tool)) continue;
    welcome.add_accepted_tools(tool.definition.name());
    worker.tool_names.push_back(tool.definition.name());
    std::string name = tool.definition.name();
    worker.tools.emplace(std::move(name), std::move(tool));
  }
  d.worker_ids.emplace(worker.worker_id, session);
  d.workers.emplace(session, std::move(worker));

  v1::OrchestratorMessage message;
  *message.mutable_welcome() = welcome;
  link->Send(std::move(message));

  Impl::Outbox out;
  d.PumpWorker(session, out);
  Impl::Flush(out);
  return welcome;
}

void Dispatcher::OnWorkerMessage(WorkerSessionId session,
                                 const v1::WorkerMessage& message) {
  Impl& d = *impl_;
  Impl::Worker* worker = d.FindWorker(session);
  if (worker == nullptr) return;
  switch (message.message_case()) {
    case v1::WorkerMessage::kHeartbeat:
      d.OnHeartbeat(*worker, message.heartbeat());
      return;
    case v1::WorkerMessage::kToolResult:
      d.OnToolResult(*worker, message.tool_result());
      return;
    case v1::WorkerMessage::kDraining:
      // Its queued work stays queued for other workers.
      worker->draining = true;
      return;
    case v1::WorkerMessage::kReturnCall:
      d.OnReturnCall(*worker, message.return_call());
      return;
    case v1::WorkerMessage::kHello:
    case v1::WorkerMessage::MESSAGE_NOT_SET:
      break;
  }
  const std::string why =
      message.message_case() == v1::WorkerMessage::kHello
          ? "a second Hello on the stream"
          : "a WorkerMessage with no message set";
  worker->link->Close(absl::InvalidArgumentError(why));
  d.DropWorker(session, why);
}

void Dispatcher::RemoveWorker(WorkerSessionId session, std::string_view why) {
  impl_->DropWorker(session, why);
}

std::optional<v1::ToolDefinition> Dispatcher::FindTool(
    std::string_view name) const {
  const std::string key(name);
  for (const auto& [session, worker] : impl_->workers) {
    auto it = worker.tools.find(key);
    if (it != worker.tools.end()) return it->second.definition;
  }
  return std::nullopt;
}

std::vector<v1::ToolDefinition> Dispatcher::AllTools() const {
  std::map<std::string, const v1::ToolDefinition*> by_name;
  for (const auto& [session, worker] : impl_->workers) {
    for (const auto& [name, tool] : worker.tools) {
      by_name.emplace(name, &tool.definition);
    }
  }
  std::vector<v1::ToolDefinition> tools;
  tools.reserve(by_name.size());
  for (const auto& [name, definition] : by_name) tools.push_back(*definition);
  return tools;
}

v1::ListWorkersResponse Dispatcher::ListWorkers() const {
  std::vector<const Impl::Worker*> sorted;
  for (const auto& [session, worker] : impl_->workers) {
    sorted.push_back(&worker);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const Impl::Worker* a, const Impl::Worker* b) {
              return a->worker_id < b->worker_id;
            });
  v1::ListWorkersResponse response;
  for (const Impl::Worker* worker : sorted) {
    v1::WorkerInfo& info = *response.add_workers();
    info.set_worker_id(worker->worker_id);
    info.set_worker_version(worker->worker_version);
    for (const std::string& name : worker->tool_names) info.add_tools(name);
    info.set_slots(static_cast<std::uint32_t>(worker->slots));
    info.set_running_calls(static_cast<std::uint32_t>(worker->assigned.size()));
    info.set_draining(worker->draining);
    *info.mutable_connected_at() = ToTimestamp(worker->connected_at);
    if (worker->last_heartbeat_at.has_value()) {
      *info.mutable_last_heartbeat_at() =
          ToTimestamp(*worker->last_heartbeat_at);
    }
  }
  return response;
}

int Dispatcher::queued_calls() const { return impl_->queued; }
int Dispatcher::QueueDepth(std::string_view name) const {
  return impl_->Depth(name);
}
bool Dispatcher::QueueFull(std::string_view name) const {
  return impl_->Full(name);
}
int Dispatcher::running_calls() const { return impl_->running; }
int Dispatcher::connected_workers() const {
  return static_cast<int>(impl_->workers.size());
}
std::int64_t Dispatcher::ignored_results() const {
  return impl_->ignored_results;
}

std::int64_t Dispatcher::late_results() const { return impl_->late_results; }

v1::OrchestratorMessage RejectedFor(const absl::Status& status,
                                    const DispatcherOptions& options) {
  v1::OrchestratorMessage message;
  v1::Rejected& rejected = *message.mutable_rejected();
  // absl and gRPC share the numeric code values (rpc::ToGrpcCode is the
  // identity on the 17 defined codes).
  rejected.set_code(static_cast<std::int32_t>(rpc::ToGrpcCode(status.code())));
  rejected.set_message(std::string(status.message()));
  for (std::uint32_t version : options.protocol_versions) {
    rejected.add_supported_protocol_versions(version);
  }
  return message;
}

void Dispatcher::AppendMetrics(std::string& out) const {
  const Impl& d = *impl_;
  absl::StrAppend(&out,
                  "# HELP toolmesh_tool_queue_depth Client tool calls waiting "
                  "for a worker, by tool.\n# TYPE toolmesh_tool_queue_depth "
                  "gauge\n");
  std::map<std::string, std::size_t> depth;
  for (const auto& [tool, queue] : d.queues) {
    std::size_t n = 0;
    for (const auto& [task, ids] : queue.by_task) n += ids.size();
    depth[tool] = n;
  }
  for (const auto& [tool, n] : depth) {
    absl::StrAppend(&out, "toolmesh_tool_queue_depth{tool=\"", tool, "\"} ",
                    n, "\n");
  }
  std::int64_t free_slots = 0;
  std::int64_t slots = 0;
  for (const auto& [session, worker] : d.workers) {
    slots += worker.slots;
    if (!worker.draining) free_slots += std::max<std::int64_t>(0, worker.FreeSlots());
  }
  absl::StrAppend(&out,
                  "# HELP toolmesh_worker_slots Slots of the connected "
                  "workers.\n# TYPE toolmesh_worker_slots gauge\n"
                  "toolmesh_worker_slots ",
                  slots,
                  "\n# HELP toolmesh_worker_free_slots Slots free for new "
                  "calls (draining workers count none).\n# TYPE "
                  "toolmesh_worker_free_slots gauge\ntoolmesh_worker_free_slots ",
                  free_slots, "\n");
  absl::StrAppend(&out,
                  "# HELP toolmesh_tool_calls_rejected_total Client tool "
                  "calls refused without queueing, by tool and reason.\n"
                  "# TYPE toolmesh_tool_calls_rejected_total counter\n");
  for (const auto& [key, n] : d.rejections) {
    absl::StrAppend(&out, "toolmesh_tool_calls_rejected_total{tool=\"",
                    key.first, "\",reason=\"", key.second, "\"} ", n, "\n");
  }
  d.dispatch_latency.AppendTo(
      out, "toolmesh_dispatch_latency_seconds",
      "Time from a client tool call being queued to its assignment.");
  d.tool_duration.AppendTo(
      out, "toolmesh_tool_duration_seconds",
      "Time from assignment to the worker's result.");
}

}  // namespace toolmesh::orchestrator
