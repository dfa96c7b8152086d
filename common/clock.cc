// Timer handle plumbing shared by every Clock implementation.
#include "common/clock.h"

#include <utility>

namespace toolmesh::common {

bool TimerState::TryStartFiring() {
  int expected = kPending;
  return state_.compare_exchange_strong(expected, kFired,
                                        std::memory_order_acq_rel);
}

bool TimerState::TryCancel() {
  int expected = kPending;
  return state_.compare_exchange_strong(expected, kCancelled,
                                        std::memory_order_acq_rel);
}

bool TimerState::IsPending() const {
  return state_.load(std::memory_order_acquire) == kPending;
}

TimerHandle::TimerHandle(std::shared_ptr<TimerState> state)
    : state_(std::move(state)) {}

bool TimerHandle::Cancel() { return state_ != nullptr && state_->TryCancel(); }

bool TimerHandle::IsPending() const {
  return state_ != nullptr && state_->IsPending();
}

}  // namespace toolmesh::common
