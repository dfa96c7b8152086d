// The orchestrator's durable store: tasks, their event logs, and retention.
//
// The engine thread persists everything a client or the model may depend on
// (ARCHITECTURE.md "Durability") through this interface, grouped into one
// WriteBatch per commit (an engine loop iteration, or all the iterations
// that ran while the previous commit was being written: see
// orchestrator/engine/committer.h) and committed atomically before those
// effects are acknowledged or sent on. On start it reloads the
// unfinished tasks; WatchTask replays events from here; ListTasks pages
// through tasks that are no longer held in memory.
//
// The store knows nothing of the engine's types: a task's spec, its runner
// snapshot and every event are opaque bytes (serialized protobuf or JSON
// text) chosen by the engine. Implementations: SqliteStore (sqlite_store.h,
// the embedded default under --data-dir) and MemoryStore (memory_store.h,
// for runs without a data dir). The contract is written so that a
// PostgreSQL implementation can follow: it uses no SQLite types and only
// relational operations (upsert, keyset paging, cascading delete).
//
// Times are stored with nanosecond precision: a time read back equals
// absl::FromUnixNanos(absl::ToUnixNanos(t)) of the time written (infinite
// times saturate to the int64 range).
//
// Error codes shared by every method of every implementation:
//   - kUnavailable: an I/O error that may pass (retry later);
//   - kResourceExhausted: the disk (or a configured size limit) is full; the
//     message names the file; the failed commit left nothing behind and
//     everything committed before is intact;
//   - kDataLoss: the stored data is corrupt;
//   - kFailedPrecondition: the database belongs to another program or to a
//     newer toolmesh, or (Commit) an operation contradicts stored state as
//     documented there.
//
// Thread-safety: WriteBatch is a value type. Store implementations are
// thread-compatible: one thread at a time calls any method, reads included;
// they hold no locks and start no threads. (The engine commits on its
// committer thread and reads on the engine thread, serialized by
// SerializedStore.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace toolmesh::orchestrator {

// The largest event sequence number (and last_seq) a store accepts: stores
// keep them as signed 64-bit integers.
inline constexpr std::uint64_t kMaxStoredSeq =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

// The largest state value that ListTasksOptions::states may name.
inline constexpr int kMaxFilterState = 62;

// One task as stored. A task is *finished* when finished_at is set; the
// store does not interpret `state`.
struct TaskRecord {
  // Orchestrator-assigned id. Required, non-empty.
  std::string task_id;
  // The TaskSpec as serialized protobuf bytes (labels live inside it).
  std::string spec;
  // The client's idempotency key; empty: none. A non-empty key belongs to
  // at most one task.
  std::string idempotency_key;
  // A v1::TaskState value.
  int state = 0;
  absl::Time created_at = absl::UnixEpoch();
  absl::Time updated_at = absl::UnixEpoch();
  // Set once the task reached a terminal state.
  std::optional<absl::Time> finished_at;
  // Sequence number of the task's newest event (0: none yet). Kept as given:
  // the store does not derive it from the events. At most kMaxStoredSeq.
  std::uint64_t last_seq = 0;
  // The task runner's snapshot (JSON text: conversation, ledger, counters,
  // usage...). Opaque; rewritten whole by every PutTask.
  std::string snapshot;

  friend bool operator==(const TaskRecord&, const TaskRecord&) = default;
};

// One event of a task's log.
struct EventRecord {
  std::string task_id;
  // 1, 2, 3, ... per task; each appended event's seq must be greater than
  // every stored seq of its task. At most kMaxStoredSeq.
  std::uint64_t seq = 0;
  // A serialized v1::TaskEvent.
  std::string event;

  friend bool operator==(const EventRecord&, const EventRecord&) = default;
};

// Writes to apply atomically with Store::Commit, in the order they were
// added. Building a batch never fails; Commit validates it.
class WriteBatch {
 public:
  struct DeleteTaskOp {
    std::string task_id;
  };
  using Operation = std::variant<TaskRecord, EventRecord, DeleteTaskOp>;

  // Inserts the task, or replaces every field of the stored task with the
  // same task_id (its events stay).
  void PutTask(TaskRecord task) { operations_.emplace_back(std::move(task)); }
  // Appends one event to an existing task's log (stored before, or put
  // earlier in this batch).
  void AppendEvent(EventRecord event) {
    operations_.emplace_back(std::move(event));
  }
  // Deletes the task and all its events. Deleting an unknown task is a
  // no-op.
  void DeleteTask(std::string task_id) {
    operations_.emplace_back(DeleteTaskOp{std::move(task_id)});
  }
  void Clear() { operations_.clear(); }

  bool empty() const { return operations_.empty(); }
  // Number of operations.
  std::size_t size() const { return operations_.size(); }
  const std::vector<Operation>& operations() const { return operations_; }

 private:
  std::vector<Operation> operations_;
};

// Position in the newest-first task order: (created_at, task_id), both
// descending.
struct TaskCursor {
  absl::Time created_at;
  std::string task_id;

  friend bool operator==(const TaskCursor&, const TaskCursor&) = default;
};

struct ListTasksOptions {
  // Only tasks after this position (the previous page's `next`); none: from
  // the newest task.
  std::optional<TaskCursor> after;
  // Maximum tasks in the page; must be >= 1.
  std::size_t limit = 100;
  // Only tasks whose state is one of these; empty: every state. Each value
  // must be in [0, kMaxFilterState].
  std::vector<int> states;
  // False: the returned records have an empty snapshot (cheaper).
  bool with_snapshot = true;
};

struct TaskPage {
  // Newest first: created_at descending, ties by task_id descending.
  std::vector<TaskRecord> tasks;
  // Where the next page starts; none when this page is the last one.
  std::optional<TaskCursor> next;
};

struct StoreStats {
  std::uint64_t tasks = 0;
  std::uint64_t events = 0;
  // Bytes the store occupies: database files on disk, or the stored bytes
  // of a MemoryStore.
  std::uint64_t db_bytes = 0;
};

// See the file comment. Every method blocks on disk I/O in a durable
// implementation.
class Store {
 public:
  virtual ~Store() = default;

  // Applies every operation of `batch`, in order, as one transaction: all
  // or nothing. Returns only once the batch is as durable as the store is
  // configured to make it. An empty batch is OK and writes nothing.
  // Errors (nothing of the batch is applied): kInvalidArgument for an empty
  // task_id, a seq of 0 or above kMaxStoredSeq, a last_seq above
  // kMaxStoredSeq; kAlreadyExists when an event's seq is not greater than
  // the last stored seq of its task (a duplicate (task_id, seq) included),
  // or a PutTask's idempotency key belongs to another task;
  // kFailedPrecondition for an event of a task that does not exist; and the
  // shared codes of the file comment.
  virtual absl::Status Commit(const WriteBatch& batch) = 0;

  // Every task without finished_at, with its snapshot, oldest first
  // (created_at, then task_id, ascending). For recovery at start.
  virtual absl::StatusOr<std::vector<TaskRecord>> LoadUnfinishedTasks() = 0;

  // The task, or nullopt if there is none with this id.
  virtual absl::StatusOr<std::optional<TaskRecord>> GetTask(
      const std::string& task_id) = 0;

  // The id of the task holding this idempotency key, or nullopt.
  // kInvalidArgument for an empty key.
  virtual absl::StatusOr<std::optional<std::string>> FindTaskByIdempotencyKey(
      const std::string& key) = 0;

  // The task's events with seq > after_seq, ascending, at most `limit`
  // (>= 1, else kInvalidArgument). Empty for an unknown task: callers that
  // care check GetTask.
  virtual absl::StatusOr<std::vector<EventRecord>> LoadEvents(
      const std::string& task_id, std::uint64_t after_seq,
      std::size_t limit) = 0;

  // One page of tasks, newest first. kInvalidArgument for limit 0 or a
  // state outside [0, kMaxFilterState].
  virtual absl::StatusOr<TaskPage> ListTasks(
      const ListTasksOptions& options) = 0;

  // Retention, in one transaction. Deletes (with their events) the finished
  // tasks that exceed either limit:
  //   - age: finished_at < finished_before (absl::InfinitePast(): no age
  //     limit);
  //   - count: all but the newest `keep_newest` finished tasks, newest by
  //     finished_at then task_id, both descending (SIZE_MAX: no count
  //     limit).
  // Unfinished tasks are never deleted. Returns the number of tasks
  // deleted.
  virtual absl::StatusOr<std::size_t> DeleteFinished(
      absl::Time finished_before, std::size_t keep_newest) = 0;

  // Counts and size. Cost grows with the number of stored rows: meant for
  // occasional metrics, not for every iteration.
  virtual absl::StatusOr<StoreStats> Stats() = 0;
};

// Checks what Commit checks without looking at stored state (empty ids,
// sequence numbers out of range). Shared by the implementations so that
// they reject the same batches with the same messages.
absl::Status ValidateBatchShape(const WriteBatch& batch);

// Whether `state` passes `states` (empty: everything passes). Assumes
// ValidateListOptions() accepted `states`.
bool StateMatches(const std::vector<int>& states, int state);

// kInvalidArgument unless options.limit >= 1 and every filter state is in
// [0, kMaxFilterState].
absl::Status ValidateListOptions(const ListTasksOptions& options);

// `t` at the precision stores keep: whole nanoseconds since the epoch,
// saturated to int64.
inline std::int64_t StoredNanos(absl::Time t) { return absl::ToUnixNanos(t); }
inline absl::Time FromStoredNanos(std::int64_t nanos) {
  return absl::FromUnixNanos(nanos);
}

}  // namespace toolmesh::orchestrator
