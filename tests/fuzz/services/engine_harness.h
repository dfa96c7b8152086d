// What the orchestrator fuzz targets share: a real Engine (its own thread)
// over a MemoryStore, a FakeClock, a seeded random source and the scripted
// model transport, plus a helper that waits for one asynchronous Reply and
// checks that it comes exactly once.
//
// A harness is built per fuzz input, so inputs cannot influence each other;
// building one costs a thread start and an empty store.
//
// Thread-safety: one fuzz thread uses a harness; the engine thread only
// runs the Reply callbacks and the WorkerLink methods.
#pragma once

#include <cstdlib>
#include <memory>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/fake_clock.h"
#include "common/random.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/store/memory_store.h"
#include "tests/fuzz/services/scripted_model_transport.h"

namespace toolmesh::fuzzing {

// A broken invariant: stop here, so that libFuzzer records the input.
inline void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// How long the harness waits for a reply before calling it a hang. Far
// above any real latency (the engine answers in microseconds), far below
// libFuzzer's default -timeout.
inline constexpr absl::Duration kReplyTimeout = absl::Seconds(10);

class EngineHarness {
 public:
  // Sends orchestrator and protobuf log lines nowhere (once per process),
  // then starts the engine.
  explicit EngineHarness(orchestrator::EngineOptions options);
  // Destroys the engine, then finishes the streams it left open.
  ~EngineHarness();

  EngineHarness(const EngineHarness&) = delete;
  EngineHarness& operator=(const EngineHarness&) = delete;

  orchestrator::Engine& engine() { return *engine_; }
  ScriptedModelTransport& transport() { return transport_; }
  common::FakeClock& clock() { return clock_; }

  // Calls `start` with a Reply and waits for it. Traps when no reply comes
  // within kReplyTimeout or when the Reply is invoked more than once (also
  // later, from the engine thread).
  template <typename T>
  absl::StatusOr<T> Call(
      absl::FunctionRef<void(orchestrator::Reply<T>)> start) {
    struct Slot {
      absl::Mutex mu;
      int calls ABSL_GUARDED_BY(mu) = 0;
      absl::StatusOr<T> result ABSL_GUARDED_BY(mu) =
          absl::UnknownError("no reply");
    };
    auto slot = std::make_shared<Slot>();
    start([slot](absl::StatusOr<T> r) {
      absl::MutexLock lock(&slot->mu);
      Check(++slot->calls == 1);
      slot->result = std::move(r);
    });
    absl::MutexLock lock(&slot->mu);
    auto replied = [&slot]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot->mu) {
      return slot->calls > 0;
    };
    Check(slot->mu.AwaitWithTimeout(absl::Condition(&replied), kReplyTimeout));
    return slot->result;
  }

  // Waits until everything posted to the engine so far has run (a
  // ListWorkers round trip) and returns the connected workers.
  v1::ListWorkersResponse Sync();

 private:
  common::FakeClock clock_;
  common::SeededRandomSource random_;
  orchestrator::MemoryStore store_;
  ScriptedModelTransport transport_;
  std::unique_ptr<orchestrator::Engine> engine_;  // last: uses the above
};

}  // namespace toolmesh::fuzzing
