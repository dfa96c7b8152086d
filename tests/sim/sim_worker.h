// SimWorker: one toolmesh worker of the deterministic simulation, in
// memory. It connects to the orchestrator that is up (NewWorkerSession,
// WorkerHello with its tools and slots), is the engine's WorkerLink for
// that session, heartbeats at the interval of the Welcome, and answers
// assignments after random delays.
//
// Faults it injects (probabilities in SimWorkerOptions): is_error results;
// calls it forgets at once (never answered, left out of heartbeats: the
// lease or the heartbeat check loses them); calls it hangs on (listed in
// heartbeats, never answered: the start-to-close timeout ends them); slow
// calls; an extra result for the previous attempt; messages to the
// orchestrator duplicated, reordered or dropped on the way; the loss of
// its stream (Lose(): WorkerGone, then a reconnect with a new session).
// Messages of a session that ended, or addressed to an orchestrator that
// crashed, never reach another session or the restarted orchestrator.
//
// Thread-safety: thread-compatible; the simulation thread only (the engine
// calls the link from RunOnce on that thread).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "orchestrator/engine/engine_api.h"
#include "tests/sim/sim_loop.h"
#include "toolmesh/v1/worker_service.pb.h"

namespace toolmesh::sim {

struct SimWorkerOptions {
  double error_result = 0.08;
  double forget = 0.02;
  double hang = 0.01;
  double slow = 0.1;
  double stale_attempt = 0.05;
  // Network, per message to the orchestrator.
  double duplicate = 0.03;
  double reorder = 0.03;
  double drop = 0.01;
};

class SimWorker {
 public:
  // `loop` must outlive the worker. `id` is its worker_id.
  SimWorker(SimLoop& loop, std::string id,
            std::vector<v1::ToolDefinition> tools, std::uint32_t slots,
            SimWorkerOptions options);
  ~SimWorker();
  SimWorker(const SimWorker&) = delete;
  SimWorker& operator=(const SimWorker&) = delete;

  // Opens a session on the orchestrator that is up (later if none is).
  void Connect();
  // The stream breaks now: the orchestrator learns it (WorkerGone) after a
  // network delay; the worker drops its calls and reconnects later.
  void Lose();
  // The orchestrator crashed: the session is gone without a word; the
  // worker reconnects to the restarted one after a delay.
  void OnEngineCrashed();

  const std::string& id() const { return id_; }
  std::int64_t assignments() const { return assignments_; }

 private:
  class Link;
  struct Running {
    std::uint32_t attempt = 0;
    std::string name;
    std::string input_json;
    bool hang = false;
  };
  using CallKey = std::pair<std::string, std::string>;  // task, tool_use_id

  // Delivery of what the engine sent on connection `conn`.
  void FromEngine(std::uint64_t conn, v1::OrchestratorMessage message);
  void ClosedByEngine(std::uint64_t conn, std::string why);
  // Queues `message` for the orchestrator on the current session.
  void ToEngine(v1::WorkerMessage message);
  void Heartbeat(std::uint64_t conn);
  void Answer(std::uint64_t conn, CallKey key, std::uint32_t attempt);
  // Drops the session's state; reconnects after a delay.
  void Disconnected(absl::Duration reconnect_after);
  // The delay of the next message on a FIFO link whose last message is due
  // at `last` (updated).
  absl::Duration FifoDelay(absl::Time& last, bool may_overtake);

  SimLoop& loop_;
  const std::string id_;
  const std::vector<v1::ToolDefinition> tools_;
  const std::uint32_t slots_;
  const SimWorkerOptions options_;

  bool connected_ = false;
  std::uint64_t conn_ = 0;  // the current connection (0: none yet)
  std::uint64_t next_conn_ = 1;
  orchestrator::WorkerSessionId session_ = 0;
  std::uint64_t incarnation_ = 0;  // of the orchestrator of the session
  std::shared_ptr<Link> link_;
  absl::Duration heartbeat_interval_ = absl::Seconds(2);
  std::map<CallKey, Running> running_;
  absl::Time last_up_ = absl::InfinitePast();    // worker -> orchestrator
  absl::Time last_down_ = absl::InfinitePast();  // orchestrator -> worker
  std::int64_t assignments_ = 0;
};

}  // namespace toolmesh::sim
