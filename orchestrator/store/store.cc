#include "orchestrator/store/store.h"

#include <algorithm>
#include <type_traits>
#include <variant>

#include "absl/strings/str_cat.h"

namespace toolmesh::orchestrator {

absl::Status ValidateBatchShape(const WriteBatch& batch) {
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const WriteBatch::Operation& op = batch.operations()[i];
    absl::Status status = std::visit(
        [i](const auto& o) -> absl::Status {
          using T = std::decay_t<decltype(o)>;
          if (o.task_id.empty()) {
            return absl::InvalidArgumentError(
                absl::StrCat("write batch operation ", i, ": empty task_id"));
          }
          if constexpr (std::is_same_v<T, TaskRecord>) {
            if (o.last_seq > kMaxStoredSeq) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "write batch operation ", i, ": task ", o.task_id,
                  " has last_seq ", o.last_seq, " above ", kMaxStoredSeq));
            }
          } else if constexpr (std::is_same_v<T, EventRecord>) {
            if (o.seq == 0 || o.seq > kMaxStoredSeq) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "write batch operation ", i, ": event of task ", o.task_id,
                  " has seq ", o.seq, ", outside [1, ", kMaxStoredSeq, "]"));
            }
          }
          return absl::OkStatus();
        },
        op);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

bool StateMatches(const std::vector<int>& states, int state) {
  return states.empty() ||
         std::find(states.begin(), states.end(), state) != states.end();
}

absl::Status ValidateListOptions(const ListTasksOptions& options) {
  if (options.limit == 0) {
    return absl::InvalidArgumentError("ListTasks: limit must be at least 1");
  }
  for (int state : options.states) {
    if (state < 0 || state > kMaxFilterState) {
      return absl::InvalidArgumentError(absl::StrCat("ListTasks: state filter ",
                                                     state, " outside [0, ",
                                                     kMaxFilterState, "]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace toolmesh::orchestrator
