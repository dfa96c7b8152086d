// TransitionRecorder: a ToolLedger sink for tests that records every
// transition and checks, as they arrive, that each tool's transitions form
// one legal chain: announce first and once, each `from` equal to the
// previous `to`, nothing after a terminal state. At the end of a test,
// EveryAnnouncedToolEndedOnce() checks the ledger's central invariant.
//
// Header-only so any test binary linking toolmesh_tool_ledger can use it.
// Thread-safety: thread-compatible, like the ledger it listens to.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/ids.h"
#include "common/tool_ledger.h"
#include "gtest/gtest.h"

namespace toolmesh::testing {

class TransitionRecorder {
 public:
  using ToolTransition = ::toolmesh::common::ToolTransition;
  using ToolUseId = ::toolmesh::common::ToolUseId;
  using ToolState = ::toolmesh::common::ToolState;

  TransitionRecorder() = default;
  TransitionRecorder(const TransitionRecorder&) = delete;
  TransitionRecorder& operator=(const TransitionRecorder&) = delete;

  // A sink that records into this object, which must outlive the ledger's
  // use of it.
  ::toolmesh::common::TransitionSink Sink() {
    return [this](const ToolTransition& t) { Record(t); };
  }

  void Record(const ToolTransition& t) {
    if (::toolmesh::common::IsTerminal(t.to)) ++terminal_counts_[t.id];
    transitions_.push_back(t);
    auto it = last_.find(t.id);
    if (t.IsAnnounce()) {
      if (it != last_.end()) {
        Violation(t, "announced twice");
        return;
      }
      order_.push_back(t.id);
      last_.emplace(t.id, t.to);
      return;
    }
    if (it == last_.end()) {
      Violation(t, "transition before announce");
      return;
    }
    if (::toolmesh::common::IsTerminal(it->second)) {
      Violation(t, "transition after a terminal state");
    }
    if (t.from != it->second) Violation(t, "from does not match last state");
    if ((t.to == ToolState::kError) != t.reason.has_value()) {
      Violation(t, "reason set iff to == error");
    }
    it->second = t.to;
  }

  const std::vector<ToolTransition>& transitions() const {
    return transitions_;
  }
  void Clear() { transitions_.clear(); }
  size_t size() const { return transitions_.size(); }

  // All recorded transitions of `id` since the last Clear(), in order.
  std::vector<ToolTransition> For(const ToolUseId& id) const {
    std::vector<ToolTransition> out;
    for (const auto& t : transitions_) {
      if (t.id == id) out.push_back(t);
    }
    return out;
  }

  // The terminal transition of `id`, if one was recorded since Clear().
  std::optional<ToolTransition> TerminalOf(const ToolUseId& id) const {
    for (const auto& t : transitions_) {
      if (t.id == id && ::toolmesh::common::IsTerminal(t.to)) return t;
    }
    return std::nullopt;
  }

  // The last state reported for `id`, if it was ever announced.
  std::optional<ToolState> LastState(const ToolUseId& id) const {
    auto it = last_.find(id);
    if (it == last_.end()) return std::nullopt;
    return it->second;
  }

  // Ids in announce order (never cleared).
  const std::vector<ToolUseId>& announced() const { return order_; }

  ::testing::AssertionResult NoViolations() const {
    if (violations_.empty()) return ::testing::AssertionSuccess();
    auto failure = ::testing::AssertionFailure();
    for (const auto& v : violations_) failure << v << "\n";
    return failure;
  }

  // Every announced id reached exactly one terminal state. (Checks the
  // terminal count over the whole history, independent of Clear().)
  ::testing::AssertionResult EveryAnnouncedToolEndedOnce() const {
    auto failure = ::testing::AssertionFailure();
    bool ok = violations_.empty();
    for (const auto& v : violations_) failure << v << "\n";
    for (const ToolUseId& id : order_) {
      auto it = terminal_counts_.find(id);
      int count = it == terminal_counts_.end() ? 0 : it->second;
      if (count != 1) {
        ok = false;
        failure << id << " has " << count << " terminal transitions\n";
      }
    }
    return ok ? ::testing::AssertionSuccess() : failure;
  }

  // Every ledger entry's state equals the last state this recorder saw,
  // and every recorded id has an entry.
  ::testing::AssertionResult MatchesLedger(
      const ::toolmesh::common::ToolLedger& ledger) const {
    if (ledger.entries().size() != order_.size()) {
      return ::testing::AssertionFailure()
             << ledger.entries().size() << " entries but " << order_.size()
             << " announces";
    }
    for (const auto& entry : ledger.entries()) {
      auto it = last_.find(entry.id);
      if (it == last_.end()) {
        return ::testing::AssertionFailure() << entry.id << " never announced";
      }
      if (it->second != entry.state) {
        return ::testing::AssertionFailure()
               << entry.id << " is "
               << ::toolmesh::common::ToolStateName(entry.state)
               << " but the last transition said "
               << ::toolmesh::common::ToolStateName(it->second);
      }
    }
    return ::testing::AssertionSuccess();
  }

 private:
  void Violation(const ToolTransition& t, const char* what) {
    std::string v = t.id.value() + ": " + what + " (";
    v.append(::toolmesh::common::ToolStateName(t.from));
    v.append(" -> ");
    v.append(::toolmesh::common::ToolStateName(t.to));
    v.append(")");
    violations_.push_back(std::move(v));
  }

  std::vector<ToolTransition> transitions_;
  std::vector<ToolUseId> order_;
  absl::flat_hash_map<ToolUseId, ToolState> last_;
  // Terminal transitions per id, kept apart from transitions_ so that
  // Clear() cannot hide a second one.
  absl::flat_hash_map<ToolUseId, int> terminal_counts_;
  std::vector<std::string> violations_;
};

}  // namespace toolmesh::testing
