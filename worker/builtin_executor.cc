// Built-in tools (builtin_executor.h).
#include "worker/builtin_executor.h"

#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace toolmesh::worker {

using common::Json;
using common::ToolUseId;

struct BuiltinExecutor::Pending {
  common::TimerHandle timer;
  DoneCallback done;
  absl::Time started;
};

struct BuiltinExecutor::State {
  absl::Mutex mu;
  absl::flat_hash_map<ToolUseId, Pending> pending ABSL_GUARDED_BY(mu);

  // Removes the entry for `id` and returns its callback; empty when absent.
  DoneCallback Take(const ToolUseId& id, absl::Time* started) {
    absl::MutexLock lock(&mu);
    auto it = pending.find(id);
    if (it == pending.end()) return nullptr;
    DoneCallback done = std::move(it->second.done);
    *started = it->second.started;
    pending.erase(it);
    return done;
  }
};

BuiltinExecutor::BuiltinExecutor(BuiltinSpec spec, common::Clock& clock)
    : spec_(spec), clock_(clock), state_(std::make_shared<State>()) {}

BuiltinExecutor::~BuiltinExecutor() {
  std::vector<ToolUseId> ids;
  {
    absl::MutexLock lock(&state_->mu);
    for (const auto& [id, unused] : state_->pending) ids.push_back(id);
  }
  for (const ToolUseId& id : ids) Cancel(id);
}

void BuiltinExecutor::Run(const ToolCall& call, DoneCallback done) {
  const absl::Time started = clock_.Now();
  switch (spec_.kind) {
    case BuiltinSpec::Kind::kEcho: {
      ToolOutcome outcome;
      outcome.content = common::DumpJson(call.input);
      outcome.duration = clock_.Now() - started;
      done(std::move(outcome));
      return;
    }
    case BuiltinSpec::Kind::kFail: {
      std::string message;
      if (call.input.is_object() && call.input.contains("message") &&
          call.input["message"].is_string()) {
        message = call.input["message"].get<std::string>();
      } else {
        message = absl::StrCat("failed: ", common::DumpJson(call.input));
      }
      done(ErrorOutcome(OutcomeReason::kToolFailed, std::move(message),
                        clock_.Now() - started));
      return;
    }
    case BuiltinSpec::Kind::kSleep:
      break;
  }

  if (!call.input.is_object() || !call.input.contains("ms") ||
      !call.input["ms"].is_number_integer() ||
      call.input["ms"].get<int64_t>() < 0) {
    done(ErrorOutcome(OutcomeReason::kInvalidInput,
                      "input.ms: expected a non-negative integer"));
    return;
  }
  const int64_t ms = call.input["ms"].get<int64_t>();
  bool duplicate = false;
  {
    absl::MutexLock lock(&state_->mu);
    auto [it, inserted] = state_->pending.try_emplace(call.id);
    if (!inserted) {
      duplicate = true;
    } else {
      it->second.done = std::move(done);
      it->second.started = started;
      // Scheduling under the lock is safe: the clock never runs a callback
      // inside ScheduleAfter(), and the callback takes the lock first.
      it->second.timer = clock_.ScheduleAfter(
          absl::Milliseconds(ms),
          [state = state_, id = call.id, ms, &clock = clock_]() {
            absl::Time begun;
            DoneCallback finished = state->Take(id, &begun);
            if (!finished) return;
            ToolOutcome outcome;
            outcome.content = absl::StrCat("slept ", ms, " ms");
            outcome.duration = clock.Now() - begun;
            finished(std::move(outcome));
          });
    }
  }
  if (duplicate) {
    done(ErrorOutcome(OutcomeReason::kToolFailed,
                      absl::StrCat("a call with id ", call.id.value(),
                                   " is already running")));
  }
}

bool BuiltinExecutor::Cancel(const ToolUseId& id) {
  common::TimerHandle timer;
  {
    absl::MutexLock lock(&state_->mu);
    auto it = state_->pending.find(id);
    if (it == state_->pending.end()) return false;
    timer = it->second.timer;
  }
  // If the timer already started firing, its callback delivers the real
  // outcome; otherwise this call owns the entry and reports cancellation.
  if (!timer.Cancel()) return true;
  absl::Time started;
  DoneCallback done = state_->Take(id, &started);
  if (done) {
    done(ErrorOutcome(OutcomeReason::kCancelled, "cancelled",
                      clock_.Now() - started));
  }
  return true;
}

}  // namespace toolmesh::worker
