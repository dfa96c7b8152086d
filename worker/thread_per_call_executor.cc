// Thread-per-call bookkeeping (thread_per_call_executor.h).
#include "worker/thread_per_call_executor.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace toolmesh::worker {

CallThreads::~CallThreads() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, call] : running_) call->RequestCancel();
    for (auto& [serial, thread] : threads_) threads.push_back(std::move(thread));
    threads_.clear();
    finished_.clear();
  }
  for (std::thread& thread : threads) thread.join();
}

void CallThreads::Start(std::shared_ptr<CallState> state, Body body,
                        DoneCallback done) {
  JoinFinished();
  const common::ToolUseId id = state->id();
  bool duplicate = false;
  {
    absl::MutexLock lock(&mu_);
    if (!running_.try_emplace(id, state).second) {
      duplicate = true;
    } else {
      uint64_t serial = next_serial_++;
      // The thread's first step takes mu_, so it cannot retire before it
      // is registered here.
      threads_.emplace(serial,
                       std::thread(&CallThreads::CallThread, this,
                                   std::move(state), std::move(body),
                                   std::move(done), serial));
    }
  }
  if (duplicate) {
    done(ErrorOutcome(OutcomeReason::kToolFailed,
                      absl::StrCat("a call with id ", id.value(),
                                   " is already running")));
  }
}

bool CallThreads::Cancel(const common::ToolUseId& id) {
  std::shared_ptr<CallState> call;
  {
    absl::MutexLock lock(&mu_);
    auto it = running_.find(id);
    if (it == running_.end()) return false;
    call = it->second;
  }
  call->RequestCancel();
  return true;
}

void CallThreads::JoinFinished() {
  std::vector<std::thread> done_threads;
  {
    absl::MutexLock lock(&mu_);
    for (uint64_t serial : finished_) {
      auto it = threads_.find(serial);
      if (it == threads_.end()) continue;
      done_threads.push_back(std::move(it->second));
      threads_.erase(it);
    }
    finished_.clear();
  }
  for (std::thread& thread : done_threads) thread.join();
}

void CallThreads::CallThread(std::shared_ptr<CallState> state, Body body,
                             DoneCallback done, uint64_t serial) {
  {
    // Waits for Start() to finish registering this thread.
    absl::MutexLock lock(&mu_);
  }
  ToolOutcome outcome = std::move(body)();
  {
    absl::MutexLock lock(&mu_);
    running_.erase(state->id());
  }
  done(std::move(outcome));
  absl::MutexLock lock(&mu_);
  finished_.push_back(serial);
}

}  // namespace toolmesh::worker
