// RealClock: the production common::Clock of the orchestrator, backed by
// absl::Now() and one timer thread (common/clock.h holds the contract; this
// file only adds what is specific to the real clock).
//
//  - Now() is absl::Now() made monotonic: a reading earlier than the latest
//    one returned (the wall clock stepped back) yields the latest one again.
//  - ScheduleAfter() puts the timer on a min-heap ordered by (deadline,
//    scheduling sequence number) and wakes the timer thread. The timer
//    thread runs due callbacks one at a time, in heap order, without holding
//    the clock's lock, so callbacks may call Now(), ScheduleAfter() and
//    TimerHandle::Cancel(). Deadlines are in the Now() time base: a
//    callback runs no earlier than Now() + delay as seen when it was
//    scheduled.
//  - Cancelled timers are dropped unrun when they reach the top of the heap,
//    when ScheduleAfter() prunes a heap that has grown, or by the
//    destructor, whichever comes first; their callbacks are destroyed
//    outside the lock.
//
// Thread-safety: every method may be called from any thread, including from
// a callback on the timer thread. The destructor cancels pending timers,
// destroys their callbacks unrun and waits for a callback that is running
// on the timer thread to return; it may also be called from inside a
// callback (the timer thread then exits once that callback returns). A
// callback that runs while the destructor waits may still call
// ScheduleAfter(): the timer is cancelled at once and its callback destroyed
// unrun.
#pragma once

#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace toolmesh::orchestrator {

class RealClock final : public common::Clock {
 public:
  // Starts the timer thread.
  RealClock();
  RealClock(const RealClock&) = delete;
  RealClock& operator=(const RealClock&) = delete;
  // Cancels pending timers (their handles' Cancel() then returns false),
  // destroys their callbacks unrun and stops the timer thread; see the top
  // of this file.
  ~RealClock() override;

  // Monotonic wall time. Never blocks for long (one uncontended lock).
  absl::Time Now() override;

  // See common::Clock::ScheduleAfter. Never runs `callback` inline.
  common::TimerHandle ScheduleAfter(
      absl::Duration delay, absl::AnyInvocable<void()> callback) override;

 private:
  // The timer heap and its lock, shared with the timer thread so that the
  // thread can outlive the clock when the clock is destroyed from inside a
  // callback.
  struct Shared;

  static void RunTimerThread(std::shared_ptr<Shared> shared);

  // Constant after construction.
  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

}  // namespace toolmesh::orchestrator
