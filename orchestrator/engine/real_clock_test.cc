#include "orchestrator/engine/real_clock.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace toolmesh::orchestrator {
namespace {

using ::testing::ElementsAre;

// Every wait in these tests is bounded by this; none is expected to come
// close to it.
constexpr absl::Duration kWait = absl::Seconds(5);

// A thread-safe log of callback names.
class Log {
 public:
  void Add(std::string entry) {
    absl::MutexLock lock(&mu_);
    entries_.push_back(std::move(entry));
  }
  std::vector<std::string> entries() const {
    absl::MutexLock lock(&mu_);
    return entries_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> entries_ ABSL_GUARDED_BY(mu_);
};

class RealClockTest : public ::testing::Test {
 protected:
  std::unique_ptr<RealClock> clock_ = std::make_unique<RealClock>();
};

TEST_F(RealClockTest, NowNeverGoesBackwards) {
  absl::Time previous = clock_->Now();
  for (int i = 0; i < 10'000; ++i) {
    const absl::Time now = clock_->Now();
    ASSERT_GE(now, previous);
    previous = now;
  }
}

TEST_F(RealClockTest, CallbackRunsOnTheTimerThreadNoEarlierThanItsDelay) {
  absl::Notification done;
  std::thread::id callback_thread;
  absl::Time fired_at;
  const absl::Time scheduled_at = clock_->Now();
  clock_->ScheduleAfter(absl::Milliseconds(5), [&] {
    callback_thread = std::this_thread::get_id();
    fired_at = clock_->Now();
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  EXPECT_NE(callback_thread, std::this_thread::get_id());
  EXPECT_GE(fired_at - scheduled_at, absl::Milliseconds(5));
}

TEST_F(RealClockTest, ZeroAndNegativeDelaysRunButNeverInsideScheduleAfter) {
  absl::Mutex mu;
  absl::Notification done;
  std::atomic<int> runs{0};
  {
    // Holding a lock the callbacks take: running one inline would deadlock
    // (absl::Mutex is not reentrant) instead of finishing the test.
    absl::MutexLock lock(&mu);
    for (absl::Duration delay : {absl::ZeroDuration(), absl::Seconds(-1)}) {
      clock_->ScheduleAfter(delay, [&] {
        bool last = false;
        {
          absl::MutexLock inner(&mu);
          last = ++runs == 2;
        }
        // After unlocking: the test may destroy `mu` once notified.
        if (last) done.Notify();
      });
    }
    EXPECT_EQ(runs.load(), 0);
  }
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
}

TEST_F(RealClockTest, DueCallbacksRunInDeadlineOrderTiesInSchedulingOrder) {
  Log log;
  absl::Notification blocker_running;
  absl::Notification release;
  absl::Notification done;
  // Holds the timer thread until every timer below is on the heap, so that
  // the order observed is the heap's order, not the order of scheduling.
  clock_->ScheduleAfter(absl::ZeroDuration(), [&] {
    blocker_running.Notify();
    release.WaitForNotificationWithTimeout(kWait);
  });
  ASSERT_TRUE(blocker_running.WaitForNotificationWithTimeout(kWait));
  const absl::Time base = clock_->Now();
  // Delays relative to `base`, so that ties stay ties however slowly this
  // thread runs.
  auto at = [&](absl::Duration offset) {
    return base + offset - clock_->Now();
  };
  clock_->ScheduleAfter(at(absl::Milliseconds(30)), [&] { log.Add("c"); });
  clock_->ScheduleAfter(at(absl::Milliseconds(20)), [&] { log.Add("b"); });
  // The same delay twice: equal deadlines, or a later one for the second
  // (Now() is monotonic); either way the first scheduled runs first.
  const absl::Duration tie = at(absl::Milliseconds(10));
  clock_->ScheduleAfter(tie, [&] { log.Add("a1"); });
  clock_->ScheduleAfter(tie, [&] { log.Add("a2"); });
  clock_->ScheduleAfter(at(absl::Milliseconds(40)), [&] {
    log.Add("d");
    done.Notify();
  });
  release.Notify();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  EXPECT_THAT(log.entries(), ElementsAre("a1", "a2", "b", "c", "d"));
}

TEST_F(RealClockTest, CancelledCallbackIsDestroyedUnrun) {
  std::atomic<bool> ran{false};
  absl::Notification destroyed;
  absl::Notification later_ran;
  common::TimerHandle handle = clock_->ScheduleAfter(
      absl::Milliseconds(5),
      [&ran, cleanup = absl::Cleanup([&destroyed] { destroyed.Notify(); })] {
        ran = true;
      });
  EXPECT_TRUE(handle.IsPending());
  EXPECT_TRUE(handle.Cancel());
  EXPECT_FALSE(handle.Cancel());
  EXPECT_FALSE(handle.IsPending());
  clock_->ScheduleAfter(absl::Milliseconds(10), [&] { later_ran.Notify(); });
  ASSERT_TRUE(later_ran.WaitForNotificationWithTimeout(kWait));
  // The cancelled timer was due before the later one: it has been dropped.
  EXPECT_TRUE(destroyed.HasBeenNotified());
  EXPECT_FALSE(ran.load());
}

TEST_F(RealClockTest, CancelAfterFiringReturnsFalse) {
  absl::Notification done;
  common::TimerHandle handle =
      clock_->ScheduleAfter(absl::ZeroDuration(), [&] { done.Notify(); });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  EXPECT_FALSE(handle.Cancel());
  EXPECT_FALSE(handle.IsPending());
}

TEST_F(RealClockTest, CallbackMayScheduleAnotherAndCancelOthers) {
  absl::Notification done;
  std::atomic<bool> cancelled_ran{false};
  common::TimerHandle victim = clock_->ScheduleAfter(
      absl::Milliseconds(20), [&] { cancelled_ran = true; });
  clock_->ScheduleAfter(absl::Milliseconds(1), [&] {
    EXPECT_TRUE(victim.Cancel());
    clock_->ScheduleAfter(absl::Milliseconds(30), [&] { done.Notify(); });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  EXPECT_FALSE(cancelled_ran.load());
}

TEST_F(RealClockTest, CallbacksNeverRunConcurrently) {
  constexpr int kTimers = 200;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> finished{0};
  absl::Notification done;
  for (int i = 0; i < kTimers; ++i) {
    clock_->ScheduleAfter(absl::Microseconds(i * 10), [&] {
      if (inside.fetch_add(1) != 0) ++overlaps;
      inside.fetch_sub(1);
      if (finished.fetch_add(1) + 1 == kTimers) done.Notify();
    });
  }
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(overlaps.load(), 0);
}

TEST_F(RealClockTest, DestructorCancelsPendingTimersAndDestroysCallbacks) {
  std::atomic<bool> ran{false};
  bool destroyed = false;
  common::TimerHandle handle = clock_->ScheduleAfter(
      absl::Hours(1),
      [&ran, cleanup = absl::Cleanup([&destroyed] { destroyed = true; })] {
        ran = true;
      });
  clock_.reset();
  EXPECT_TRUE(destroyed);
  EXPECT_FALSE(ran.load());
  // The handle outlives the clock and stays safe to use.
  EXPECT_FALSE(handle.IsPending());
  EXPECT_FALSE(handle.Cancel());
}

TEST_F(RealClockTest, DestructorWaitsForARunningCallbackWithoutDeadlock) {
  absl::Notification running;
  absl::Notification release;
  std::atomic<bool> late_ran{false};
  std::atomic<bool> late_destroyed{false};
  std::atomic<bool> callback_returned{false};
  RealClock* clock = clock_.get();
  clock_->ScheduleAfter(absl::ZeroDuration(), [&, clock] {
    running.Notify();
    release.WaitForNotificationWithTimeout(kWait);
    // The clock may be inside its destructor by now: scheduling must still
    // work, and the new callback must be destroyed unrun (its delay is far
    // beyond the test, so it cannot fire before the destructor finishes).
    clock->ScheduleAfter(
        absl::Hours(1),
        [&late_ran,
         cleanup = absl::Cleanup([&late_destroyed] { late_destroyed = true; })] {
          late_ran = true;
        });
    callback_returned = true;
  });
  ASSERT_TRUE(running.WaitForNotificationWithTimeout(kWait));
  absl::Notification destroyed;
  std::thread destroyer([&] {
    clock_.reset();
    destroyed.Notify();
  });
  release.Notify();
  const bool finished = destroyed.WaitForNotificationWithTimeout(kWait);
  destroyer.join();
  ASSERT_TRUE(finished);
  EXPECT_TRUE(callback_returned.load());
  EXPECT_TRUE(late_destroyed.load());
  EXPECT_FALSE(late_ran.load());
}

TEST_F(RealClockTest, CallbackMayDestroyItsOwnClock) {
  absl::Notification destroyed;
  clock_->ScheduleAfter(absl::ZeroDuration(), [&] {
    clock_.reset();
    destroyed.Notify();
  });
  ASSERT_TRUE(destroyed.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(clock_, nullptr);
}

TEST_F(RealClockTest, CancelRacingTheFiringHasExactlyOneOutcome) {
  constexpr int kRounds = 300;
  int cancelled_count = 0;
  int fired_count = 0;
  for (int round = 0; round < kRounds; ++round) {
    auto ran = std::make_shared<std::atomic<bool>>(false);
    auto fired = std::make_shared<absl::Notification>();
    // Delays around the time it takes to start the cancelling thread, so
    // both outcomes occur across rounds.
    common::TimerHandle handle = clock_->ScheduleAfter(
        absl::Microseconds(round % 50), [ran, fired] {
          ran->exchange(true);
          fired->Notify();
        });
    bool cancelled = false;
    std::thread canceller([&cancelled, handle]() mutable {
      cancelled = handle.Cancel();
    });
    canceller.join();
    if (cancelled) {
      ++cancelled_count;
      // Callbacks run in deadline order: once a later timer has run, the
      // cancelled one would have run if it ever were to.
      absl::Notification later;
      clock_->ScheduleAfter(absl::Microseconds(100), [&] { later.Notify(); });
      ASSERT_TRUE(later.WaitForNotificationWithTimeout(kWait));
      ASSERT_FALSE(ran->load()) << "round " << round;
    } else {
      ++fired_count;
      ASSERT_TRUE(fired->WaitForNotificationWithTimeout(kWait))
          << "round " << round;
    }
    ASSERT_FALSE(handle.IsPending());
  }
  EXPECT_EQ(cancelled_count + fired_count, kRounds);
}

}  // namespace
}  // namespace toolmesh::orchestrator
