// A Clock for tests and the deterministic simulation: time stands still until
// Advance()/AdvanceTo() moves it, and due timers run inside those calls.
//
// Advance(d) walks through the window (Now(), Now() + d] one timer at a time:
// the earliest due timer (ties in scheduling order) runs with Now() equal to
// its deadline, then the next is looked up again, so timers that a callback
// schedules are honoured when they fall inside the window. When no due timer
// is left, Now() becomes the end of the window.
//
// Thread-safety: every method may be called from any thread; an internal
// mutex guards the state and is never held while a callback runs or is
// destroyed, so callbacks may call back into the clock. Advance()/AdvanceTo()
// calls must not overlap each other (the deterministic simulation drives
// time from one thread); callbacks therefore run on the advancing thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace toolmesh::common {

class FakeClock final : public Clock {
 public:
  // The clock starts at `start` (tests pass a fixed time, never absl::Now()).
  explicit FakeClock(absl::Time start);
  FakeClock(const FakeClock&) = delete;
  FakeClock& operator=(const FakeClock&) = delete;
  // Cancels every pending timer and destroys its callback unrun.
  ~FakeClock() override;

  absl::Time Now() override;

  // See Clock::ScheduleAfter. The deadline is Now() + max(delay, 0); a
  // zero-delay timer runs at the next Advance()/AdvanceTo(), even
  // Advance(absl::ZeroDuration()). A callback that keeps rescheduling itself
  // with zero delay makes that Advance() call loop forever.
  TimerHandle ScheduleAfter(absl::Duration delay,
                            absl::AnyInvocable<void()> callback) override;

  // Moves time forward by `delta` (negative counts as zero), running every
  // timer due by the new time as described at the top of this file.
  void Advance(absl::Duration delta);

  // Like Advance(target - Now()). A target in the past does not move time
  // back; it still runs timers already due.
  void AdvanceTo(absl::Time target);

  // Timers scheduled and neither fired nor cancelled.
  size_t PendingTimers() const;

  // Deadline of the earliest pending timer, or nullopt if none.
  std::optional<absl::Time> NextDeadline() const;

 private:
  struct Timer {
    std::shared_ptr<TimerState> state;
    absl::AnyInvocable<void()> callback;
  };
  // (deadline, scheduling sequence number): map order is firing order.
  using TimerKey = std::pair<absl::Time, uint64_t>;

  // Moves cancelled timers' callbacks out of `timers_` into `graveyard`, to
  // be destroyed by the caller after unlocking.
  void RemoveCancelledLocked(std::vector<absl::AnyInvocable<void()>>& graveyard)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  static constexpr size_t kMinPruneThreshold = 64;

  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<TimerKey, Timer> timers_ ABSL_GUARDED_BY(mu_);
  size_t prune_threshold_ ABSL_GUARDED_BY(mu_) = kMinPruneThreshold;
};

}  // namespace toolmesh::common
