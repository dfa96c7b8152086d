// The real clock: absl::Now() plus one timer thread; see real_clock.h.
#include "orchestrator/engine/real_clock.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace toolmesh::orchestrator {
namespace {

struct Timer {
  absl::Time deadline;
  std::uint64_t sequence = 0;
  std::shared_ptr<common::TimerState> state;
  absl::AnyInvocable<void()> callback;
};

// std::push_heap builds a max-heap; "greater" puts the earliest deadline
// (then the lowest sequence number) on top.
bool FiresLater(const Timer& a, const Timer& b) {
  if (a.deadline != b.deadline) return a.deadline > b.deadline;
  return a.sequence > b.sequence;
}

constexpr std::size_t kMinPruneThreshold = 64;

}  // namespace

struct RealClock::Shared {
  // Monotonic reading of absl::Now().
  absl::Time Now() {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&now_mu);
    last_now = std::max(last_now, now);
    return last_now;
  }

  // Pops the top of the heap.
  Timer PopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::pop_heap(heap.begin(), heap.end(), FiresLater);
    Timer timer = std::move(heap.back());
    heap.pop_back();
    return timer;
  }

  // Moves the callbacks of cancelled timers into `graveyard` (destroyed by
  // the caller after unlocking) and rebuilds the heap without them.
  void PruneLocked(std::vector<absl::AnyInvocable<void()>>& graveyard)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto live = std::partition(heap.begin(), heap.end(), [](const Timer& t) {
      return t.state->IsPending();
    });
    for (auto it = live; it != heap.end(); ++it) {
      graveyard.push_back(std::move(it->callback));
    }
    heap.erase(live, heap.end());
    std::make_heap(heap.begin(), heap.end(), FiresLater);
  }

  absl::Mutex now_mu;
  absl::Time last_now ABSL_GUARDED_BY(now_mu) = absl::InfinitePast();

  absl::Mutex mu;
  absl::CondVar cv;  // signalled on a new earliest timer and on stop
  std::vector<Timer> heap ABSL_GUARDED_BY(mu);
  std::uint64_t next_sequence ABSL_GUARDED_BY(mu) = 0;
  std::size_t prune_threshold ABSL_GUARDED_BY(mu) = kMinPruneThreshold;
  bool stopping ABSL_GUARDED_BY(mu) = false;
};

RealClock::RealClock()
    : shared_(std::make_shared<Shared>()),
      thread_(&RealClock::RunTimerThread, shared_) {}

RealClock::~RealClock() {
  std::vector<Timer> pending;
  {
    absl::MutexLock lock(&shared_->mu);
    shared_->stopping = true;
    pending.swap(shared_->heap);
    shared_->cv.SignalAll();
  }
  for (Timer& timer : pending) timer.state->TryCancel();
  pending.clear();  // destroys the callbacks, outside the lock
  if (thread_.get_id() == std::this_thread::get_id()) {
    // Destroyed from inside one of its own callbacks: the timer thread
    // holds `shared_` and exits as soon as that callback returns.
    thread_.detach();
  } else {
    thread_.join();
  }
}

absl::Time RealClock::Now() { return shared_->Now(); }

common::TimerHandle RealClock::ScheduleAfter(
    absl::Duration delay, absl::AnyInvocable<void()> callback) {
  auto state = std::make_shared<common::TimerState>();
  const absl::Time deadline =
      shared_->Now() + std::max(delay, absl::ZeroDuration());
  std::vector<absl::AnyInvocable<void()>> graveyard;
  {
    absl::MutexLock lock(&shared_->mu);
    if (shared_->stopping) {
      // The destructor is running (this call comes from a callback it waits
      // for): the timer can never fire.
      state->TryCancel();
      graveyard.push_back(std::move(callback));
    } else {
      // Dropping cancelled timers keeps the heap from growing without bound
      // in code that schedules and cancels far-off timers; the doubling
      // threshold keeps the sweep amortised O(1) per call.
      if (shared_->heap.size() >= shared_->prune_threshold) {
        shared_->PruneLocked(graveyard);
        shared_->prune_threshold =
            std::max(kMinPruneThreshold, 2 * shared_->heap.size());
      }
      shared_->heap.push_back(Timer{deadline, shared_->next_sequence++, state,
                                    std::move(callback)});
      std::push_heap(shared_->heap.begin(), shared_->heap.end(), FiresLater);
      // Only a new earliest timer changes how long the thread must wait.
      if (shared_->heap.front().state == state) shared_->cv.Signal();
    }
  }
  return common::TimerHandle(std::move(state));
}

void RealClock::RunTimerThread(std::shared_ptr<Shared> shared) {
  while (true) {
    absl::AnyInvocable<void()> callback;
    bool run = false;
    {
      absl::MutexLock lock(&shared->mu);
      while (true) {
        if (shared->stopping) return;
        if (shared->heap.empty()) {
          shared->cv.Wait(&shared->mu);
          continue;
        }
        if (!shared->heap.front().state->IsPending()) {
          // Cancelled: destroy its callback below, outside the lock.
          callback = shared->PopLocked().callback;
          break;
        }
        const absl::Time now = shared->Now();
        const absl::Time deadline = shared->heap.front().deadline;
        if (deadline <= now) {
          Timer timer = shared->PopLocked();
          // Loses to a Cancel() that raced in since the check above.
          run = timer.state->TryStartFiring();
          callback = std::move(timer.callback);
          break;
        }
        // Woken early by a new earliest timer, by stop, or spuriously: the
        // loop looks again either way.
        shared->cv.WaitWithTimeout(&shared->mu, deadline - now);
      }
    }
    if (run) callback();
    callback = nullptr;
  }
}

}  // namespace toolmesh::orchestrator
