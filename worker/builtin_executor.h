// Built-in tools for tests and the demo: echo, sleep and fail.
//
//   echo  content = the input JSON as compact text; never an error.
//   sleep input {"ms": N} (a non-negative integer): succeeds with the text
//         "slept N ms" N ms later, timed by the injected Clock (no thread is
//         held per call). Cancel() ends it at once with reason kCancelled.
//   fail  is_error with reason kToolFailed; the text is input["message"]
//         when that is a string, else "failed: " + the input JSON.
// An input the builtin cannot use (sleep without an integer "ms") gives
// reason kInvalidInput.
//
// echo, fail and rejected inputs call `done` inside Run(); sleep calls it on
// the clock's callback thread (inside FakeClock::Advance() in tests).
// Destroying the executor cancels pending sleeps: their `done` receives
// kCancelled before the destructor returns (a sleep whose timer is firing
// at that moment completes normally on the clock's thread instead).
//
// Thread-safety: all methods may be called concurrently from any thread.
#pragma once

#include <memory>

#include "common/clock.h"
#include "worker/executor.h"
#include "worker/tools_config.h"

namespace toolmesh::worker {

class BuiltinExecutor final : public Executor {
 public:
  // `clock` must outlive this object.
  BuiltinExecutor(BuiltinSpec spec, common::Clock& clock);
  ~BuiltinExecutor() override;

  BuiltinExecutor(const BuiltinExecutor&) = delete;
  BuiltinExecutor& operator=(const BuiltinExecutor&) = delete;

  void Run(const ToolCall& call, DoneCallback done) override;
  bool Cancel(const common::ToolUseId& id) override;

 private:
  struct Pending;
  struct State;

  const BuiltinSpec spec_;
  common::Clock& clock_;
  // Shared with timer callbacks, which may outlive this object on the
  // clock's thread.
  std::shared_ptr<State> state_;
};

}  // namespace toolmesh::worker
