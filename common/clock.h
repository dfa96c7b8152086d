// The time seam of toolmesh: what "now" is and how to run something later.
//
// Nothing in the core calls absl::Now() or sleeps; it takes a `Clock&` and
// asks it. Two implementations exist:
//   - the real clock (orchestrator/, backed by absl::Now() and a timer
//     thread) runs callbacks on its own timer thread;
//   - FakeClock (common/fake_clock.h) only moves when a test or the
//     deterministic simulation calls Advance(), and runs due callbacks inside
//     that call, on the caller's thread.
// Modelled on leveldb's Env and envoy's TimeSource: the comments below are
// the contract every implementation keeps.
//
// Thread-safety: Clock implementations are safe to call from any thread
// unless their own header says otherwise. TimerHandle is a cheap copyable
// value; Cancel() on copies of the same handle may race safely (exactly one
// outcome wins: the callback runs, or it is cancelled).
#pragma once

#include <atomic>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"

namespace toolmesh::common {

// The state one scheduled timer shares between its clock and its handles.
// Exactly one transition out of "pending" ever happens: to "fired" (the clock
// is about to run the callback) or to "cancelled". Clock implementations
// create one per ScheduleAfter() call; users only see it through TimerHandle.
class TimerState {
 public:
  TimerState() = default;
  TimerState(const TimerState&) = delete;
  TimerState& operator=(const TimerState&) = delete;

  // For clock implementations: claims the timer for running. Returns true if
  // the timer was pending (the caller must now run the callback), false if it
  // was cancelled or already claimed (the callback must not run).
  bool TryStartFiring();

  // Claims the timer for cancellation. Returns true if it was pending, i.e.
  // this call prevented the callback from running.
  bool TryCancel();

  // True while neither fired nor cancelled.
  bool IsPending() const;

 private:
  enum : int { kPending = 0, kFired = 1, kCancelled = 2 };
  std::atomic<int> state_{kPending};
};

// A handle on one scheduled callback. A default-constructed handle refers to
// no timer. Handles may outlive the clock that issued them and stay safe to
// use: a destroyed clock has cancelled all its pending timers, so Cancel()
// then returns false.
class TimerHandle {
 public:
  TimerHandle() = default;
  // For clock implementations.
  explicit TimerHandle(std::shared_ptr<TimerState> state);

  // Prevents the callback from running if it has not started yet. Returns
  // whether this call prevented it: false for an empty handle, a timer that
  // already fired (or is running right now, possibly on another thread), or a
  // timer cancelled before. Never blocks and never waits for a running
  // callback to finish.
  bool Cancel();

  // True if the timer has neither fired nor been cancelled.
  bool IsPending() const;

 private:
  std::shared_ptr<TimerState> state_;
};

// Source of time and timers.
class Clock {
 public:
  virtual ~Clock() = default;

  // The current time. Monotonic for a given clock: never goes backwards.
  virtual absl::Time Now() = 0;

  // Runs `callback` once, no earlier than `delay` after Now(). A negative
  // delay counts as zero. The callback never runs inside ScheduleAfter()
  // itself (so the caller may hold locks the callback takes). Which thread
  // runs it is the implementation's: the real clock uses its timer thread,
  // FakeClock runs it inside Advance(). Callbacks of one clock never run
  // concurrently with each other; due callbacks run in deadline order, ties
  // in scheduling order. A callback may call ScheduleAfter() and Cancel().
  // A cancelled callback is destroyed unrun (by the next clock operation
  // that finds it, at the latest by the clock's destructor). Destroying a
  // clock cancels its pending timers and destroys their callbacks unrun.
  // Anything a callback captures must stay valid until it is destroyed.
  virtual TimerHandle ScheduleAfter(absl::Duration delay,
                                    absl::AnyInvocable<void()> callback) = 0;
};

}  // namespace toolmesh::common
