// SimWorld: one seed of the deterministic simulation of the orchestrator
// engine (tests/sim/README.md). It builds the engine in drive mode
// (EngineOptions::own_thread = false) on a FakeClock, an in-memory model
// (SimModelTransport), in-memory workers (SimWorker), clients that submit,
// watch, re-watch and cancel tasks, and a store that checks every committed
// batch; then it runs the loop:
//
//   repeat: advance the clock to the earliest of (next action, next engine
//   timer), run that action, run the engine until it is idle, check.
//
// Orchestrator crashes: at seeded moments the engine dies in the middle of
// an iteration (the store refuses that iteration's commit, so exactly what
// was not committed is lost), is destroyed, and a new engine starts on the
// same store; workers reconnect, clients re-watch from their last seq and
// resubmit their idempotency keys (and must get the same task id back).
//
// Invariants: at every step, every Messages request passes
// common::ValidateRequest (the model rejects none) and the engine logs no
// repaired request; at every commit, each task's events are numbered
// 1, 2, 3... with nothing after its TaskTerminal, each tool's first
// transition is PENDING and nothing follows its terminal one; every watcher
// sees seq last+1 each time and nothing after the terminal event. At the
// end: every task is terminal (in the store and for its client), every
// started tool has exactly one terminal transition, every final
// conversation passes ValidateRequest, each tool_use has exactly one
// tool_result (in the next message, in order), a successful result names
// its own call, no task failed with internal_error. A seed that does not
// finish within its step and virtual-time budget fails.
//
// Everything random comes from the seed: the run of a seed is a pure
// function of (seed, options), and its trace digest says so.
//
// Thread-safety: thread-compatible; one thread runs a world.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "tests/sim/sim_model.h"
#include "tests/sim/sim_worker.h"

namespace toolmesh::sim {

struct SimOptions {
  std::uint64_t seed = 1;
  int tasks = 3;
  int workers = 2;
  // Print every trace line (and the engine's log lines) as it happens.
  bool echo_trace = false;
  // Budgets: a seed that needs more fails.
  std::uint64_t max_steps = 200000;
  absl::Duration max_virtual_time = absl::Hours(1);
  // Orchestrator crashes per seed: each one with this probability (so
  // 0, 1 or 2), at a time within `crash_window` of the start.
  double crash = 0.3;
  absl::Duration crash_window = absl::Seconds(40);
  // Worker stream losses: each worker loses its stream with this
  // probability at some time within `crash_window`.
  double worker_loss = 0.3;
  // A store commit fails (transient I/O error) with this probability.
  double store_error = 0.01;
  // Per client: cancel its task; watch a second time mid-run.
  double cancel = 0.12;
  double rewatch = 0.2;
  // Per task: a timeout of 5-95 s (the task may end FAILED on it).
  double task_timeout = 0.1;
  SimModelOptions model;
  SimWorkerOptions worker;
};

struct SimResult {
  std::uint64_t seed = 0;
  std::uint64_t steps = 0;
  int tasks = 0;
  std::int64_t tool_calls = 0;
  std::int64_t model_requests = 0;
  int crashes = 0;
  absl::Duration virtual_time;
  std::uint64_t digest = 0;
  std::map<std::string, std::int64_t> faults;
  // Outcomes by terminal state name.
  std::map<std::string, int> outcomes;
  // The first violation; empty when the seed passed.
  std::optional<std::string> violation;
  std::uint64_t violation_step = 0;
  // The last trace lines (about 50), oldest first.
  std::vector<std::string> recent;
};

// Runs one seed to the end. Never throws; a violation is reported in the
// result.
SimResult RunSimulation(const SimOptions& options);

}  // namespace toolmesh::sim
