// SimLoop: the single-threaded event loop of the deterministic simulation
// (tests/sim/README.md). It holds the pending actions of the simulated
// network, model and clients as a queue ordered by (virtual time, insertion
// number), the one seeded PRNG every random decision of the simulation
// draws from, the trace (a bounded ring of recent lines plus a running
// digest of all of them) and the first invariant violation.
//
// The loop does not know the engine: SimWorld advances the FakeClock to each
// action's time, runs it, then drives the engine until it is idle. Actors
// (SimModelTransport, SimWorker, the clients) reach the engine that is up
// now through engine() and tag what they send with incarnation(), so that a
// message sent to an orchestrator that has crashed never reaches its
// successor.
//
// Thread-safety: thread-compatible; everything runs on the thread that
// drives the simulation.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "common/fake_clock.h"
#include "orchestrator/engine/engine_api.h"

namespace toolmesh::sim {

class SimLoop {
 public:
  // `clock` must outlive the loop. Every random draw derives from `seed`.
  SimLoop(std::uint64_t seed, common::FakeClock& clock);
  SimLoop(const SimLoop&) = delete;
  SimLoop& operator=(const SimLoop&) = delete;

  // --- Actions -------------------------------------------------------------
  // Runs `fn` at Now() + max(delay, 0), after every action already queued
  // for the same time.
  void After(absl::Duration delay, absl::AnyInvocable<void()> fn);
  // The time of the earliest action, if any.
  std::optional<absl::Time> NextActionTime() const;
  // Removes and returns the earliest action if it is due at `now`.
  std::optional<absl::AnyInvocable<void()>> TakeDue(absl::Time now);
  std::size_t pending_actions() const { return actions_.size(); }
  absl::Time Now() { return clock_.Now(); }

  // --- Randomness (one stream, in call order) -------------------------------
  std::uint64_t Next();
  // In [0, bound); 0 for bound 0.
  std::uint64_t Uniform(std::uint64_t bound);
  double Uniform01();
  bool Chance(double p) { return Uniform01() < p; }
  // Uniform in [lo, hi], at microsecond resolution.
  absl::Duration Between(absl::Duration lo, absl::Duration hi);

  // --- The orchestrator that is up -----------------------------------------
  // Null while none is (between a crash and the restart).
  orchestrator::EngineApi* engine() const { return engine_; }
  std::uint64_t incarnation() const { return incarnation_; }
  void SetEngine(orchestrator::EngineApi* engine, std::uint64_t incarnation) {
    engine_ = engine;
    incarnation_ = incarnation;
  }

  // --- Trace, faults, violations --------------------------------------------
  // Records one trace line (prefixed with the virtual time); it enters the
  // digest, the ring of recent lines and, with echo on, stdout.
  void Trace(std::string_view line);
  void set_echo(bool echo) { echo_ = echo; }
  std::uint64_t digest() const { return digest_; }
  // The last lines traced, oldest first.
  const std::deque<std::string>& recent() const { return recent_; }

  // Counts one injected fault of `kind` (and traces it).
  void Fault(std::string_view kind, std::string_view detail);
  const std::map<std::string, std::int64_t>& faults() const { return faults_; }

  // Records an invariant violation; the first one is kept and stops the run.
  void Violation(std::string what);
  const std::optional<std::string>& violation() const { return violation_; }

  // Steps run so far (SimWorld counts them).
  std::uint64_t step = 0;

 private:
  static constexpr std::size_t kRecentLines = 50;

  common::FakeClock& clock_;
  const absl::Time start_;  // trace times are relative to it
  std::mt19937_64 rng_;
  std::map<std::pair<absl::Time, std::uint64_t>, absl::AnyInvocable<void()>>
      actions_;
  std::uint64_t next_seq_ = 0;
  orchestrator::EngineApi* engine_ = nullptr;
  std::uint64_t incarnation_ = 0;
  std::deque<std::string> recent_;
  std::uint64_t digest_ = 14695981039346656037ull;  // FNV-1a offset basis
  bool echo_ = false;
  std::map<std::string, std::int64_t> faults_;
  std::optional<std::string> violation_;
};

}  // namespace toolmesh::sim
