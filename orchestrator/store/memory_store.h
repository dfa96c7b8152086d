// MemoryStore: the Store contract (store.h) kept in process memory.
//
// Used when the orchestrator runs without --data-dir and as the
// durability-off baseline of the benchmarks. It is a full implementation,
// not a test double: commits are atomic (a batch is checked against the
// stored state as a whole before any of it is applied), idempotency keys are
// unique, events are append-only, retention and paging behave exactly as in
// SqliteStore. Nothing survives the process, and no commit fails for
// I/O reasons.
//
// Thread-safety: thread-compatible, like every Store.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "orchestrator/store/store.h"

namespace toolmesh::orchestrator {

class MemoryStore final : public Store {
 public:
  MemoryStore() = default;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  absl::Status Commit(const WriteBatch& batch) override;
  absl::StatusOr<std::vector<TaskRecord>> LoadUnfinishedTasks() override;
  absl::StatusOr<std::optional<TaskRecord>> GetTask(
      const std::string& task_id) override;
  absl::StatusOr<std::optional<std::string>> FindTaskByIdempotencyKey(
      const std::string& key) override;
  absl::StatusOr<std::vector<EventRecord>> LoadEvents(
      const std::string& task_id, std::uint64_t after_seq,
      std::size_t limit) override;
  absl::StatusOr<TaskPage> ListTasks(const ListTasksOptions& options) override;
  absl::StatusOr<std::size_t> DeleteFinished(absl::Time finished_before,
                                             std::size_t keep_newest) override;
  absl::StatusOr<StoreStats> Stats() override;

 private:
  struct StoredTask {
    TaskRecord record;
    // seq -> serialized event.
    std::map<std::uint64_t, std::string> events;
  };
  // (created_at in stored nanoseconds, task_id): the ListTasks order.
  using CreatedKey = std::pair<std::int64_t, std::string>;

  // Checks the whole batch against the stored state as the batch's earlier
  // operations would change it; nothing is modified.
  absl::Status CheckAgainstState(const WriteBatch& batch) const;
  void ApplyPut(TaskRecord record);
  void ApplyAppend(const EventRecord& event);
  void ApplyDelete(const std::string& task_id);
  static std::uint64_t LastEventSeq(const StoredTask& task);
  static std::uint64_t RecordBytes(const TaskRecord& record);

  absl::flat_hash_map<std::string, StoredTask> tasks_;
  // Non-empty idempotency key -> task_id.
  absl::flat_hash_map<std::string, std::string> by_key_;
  std::set<CreatedKey> by_created_;
  std::uint64_t event_count_ = 0;
  std::uint64_t bytes_ = 0;
};

}  // namespace toolmesh::orchestrator
