// The bookkeeping shared by executors that give each call its own thread
// (exec_executor.h, http_executor.h): the registry of running calls keyed by
// ToolUseId, the table of call threads, joining threads that have finished,
// the duplicate-id check of Run(), Cancel(), and cancel-all-and-join on
// destruction. The executor supplies only the body of a call.
//
// Thread-safety: all methods may be called concurrently from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "common/ids.h"
#include "worker/executor.h"

namespace toolmesh::worker {

// The state of one running call that Cancel() and shutdown reach. Each
// executor derives from it to add how its call's thread is woken.
class CallState {
 public:
  explicit CallState(common::ToolUseId id) : id_(std::move(id)) {}
  virtual ~CallState() = default;

  CallState(const CallState&) = delete;
  CallState& operator=(const CallState&) = delete;

  // Asks the call's thread to stop: sets cancelled() and wakes the thread.
  // Never blocks on the tool.
  void RequestCancel() {
    cancelled_.store(true);
    Wake();
  }

  const common::ToolUseId& id() const { return id_; }
  bool cancelled() const { return cancelled_.load(); }

 protected:
  // Interrupts whatever the call's thread waits on, so that it sees
  // cancelled() promptly. May be called from any thread, more than once.
  virtual void Wake() = 0;

 private:
  const common::ToolUseId id_;
  std::atomic<bool> cancelled_{false};
};

// Runs each call on a thread of its own. An executor owns one as its last
// data member, so that the destructor (which cancels every running call and
// joins its thread) runs while the rest of the executor is still intact.
class CallThreads {
 public:
  // Computes a call's outcome on the call's thread.
  using Body = absl::AnyInvocable<ToolOutcome() &&>;

  CallThreads() = default;
  // Cancels every running call and waits for their threads, so each `done`
  // has run when it returns.
  ~CallThreads();

  CallThreads(const CallThreads&) = delete;
  CallThreads& operator=(const CallThreads&) = delete;

  // Registers `state` under its id and starts a thread that runs `body`,
  // unregisters the call and passes the outcome to `done`. When a call with
  // that id is already running, calls `done` at once (on this thread) with
  // reason kToolFailed and runs nothing.
  void Start(std::shared_ptr<CallState> state, Body body, DoneCallback done);

  // CallState::RequestCancel() on the running call `id`. Returns false when
  // no call with that id is running.
  bool Cancel(const common::ToolUseId& id);

 private:
  // Body of a call's thread: runs `body`, calls `done`, retires itself.
  void CallThread(std::shared_ptr<CallState> state, Body body,
                  DoneCallback done, uint64_t serial);
  // Joins threads that have finished. Must not hold mu_.
  void JoinFinished();

  absl::Mutex mu_;
  absl::flat_hash_map<common::ToolUseId, std::shared_ptr<CallState>> running_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> finished_ ABSL_GUARDED_BY(mu_);
  uint64_t next_serial_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace toolmesh::worker
