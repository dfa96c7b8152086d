// Manually advanced clock; see fake_clock.h.
#include "common/fake_clock.h"

#include <algorithm>
#include <utility>

namespace toolmesh::common {

FakeClock::FakeClock(absl::Time start) : now_(start) {}

FakeClock::~FakeClock() {
  std::map<TimerKey, Timer> timers;
  {
    absl::MutexLock lock(&mu_);
    timers.swap(timers_);
  }
  for (auto& [key, timer] : timers) timer.state->TryCancel();
  // `timers` (and the callbacks) are destroyed here, outside the lock.
}

absl::Time FakeClock::Now() {
  absl::MutexLock lock(&mu_);
  return now_;
}

TimerHandle FakeClock::ScheduleAfter(absl::Duration delay,
                                     absl::AnyInvocable<void()> callback) {
  auto state = std::make_shared<TimerState>();
  std::vector<absl::AnyInvocable<void()>> graveyard;
  {
    absl::MutexLock lock(&mu_);
    // Dropping cancelled timers keeps the map from growing without bound in
    // code that schedules and cancels many timers without advancing. The
    // doubling threshold keeps the sweep amortised O(1) per call.
    if (timers_.size() >= prune_threshold_) {
      RemoveCancelledLocked(graveyard);
      prune_threshold_ =
          std::max<size_t>(kMinPruneThreshold, 2 * timers_.size());
    }
    const absl::Time deadline = now_ + std::max(delay, absl::ZeroDuration());
    timers_.emplace(TimerKey{deadline, next_sequence_++},
                    Timer{state, std::move(callback)});
  }
  return TimerHandle(std::move(state));
}

void FakeClock::Advance(absl::Duration delta) {
  absl::Time target;
  {
    absl::MutexLock lock(&mu_);
    target = now_ + std::max(delta, absl::ZeroDuration());
  }
  AdvanceTo(target);
}

void FakeClock::AdvanceTo(absl::Time target) {
  while (true) {
    absl::AnyInvocable<void()> callback;
    bool run = false;
    {
      absl::MutexLock lock(&mu_);
      // A target in the past still runs what is already due.
      target = std::max(target, now_);
      if (timers_.empty() || timers_.begin()->first.first > target) {
        now_ = std::max(now_, target);
        return;
      }
      auto node = timers_.extract(timers_.begin());
      now_ = std::max(now_, node.key().first);
      run = node.mapped().state->TryStartFiring();
      callback = std::move(node.mapped().callback);
    }
    // Run (or, if cancelled, just destroy) without the lock so the callback
    // may schedule, cancel and read Now().
    if (run) callback();
  }
}

size_t FakeClock::PendingTimers() const {
  absl::MutexLock lock(&mu_);
  return static_cast<size_t>(std::count_if(
      timers_.begin(), timers_.end(),
      [](const auto& entry) { return entry.second.state->IsPending(); }));
}

std::optional<absl::Time> FakeClock::NextDeadline() const {
  absl::MutexLock lock(&mu_);
  for (const auto& [key, timer] : timers_) {
    if (timer.state->IsPending()) return key.first;
  }
  return std::nullopt;
}

void FakeClock::RemoveCancelledLocked(
    std::vector<absl::AnyInvocable<void()>>& graveyard) {
  for (auto it = timers_.begin(); it != timers_.end();) {
    if (it->second.state->IsPending()) {
      ++it;
    } else {
      graveyard.push_back(std::move(it->second.callback));
      it = timers_.erase(it);
    }
  }
}

}  // namespace toolmesh::common
