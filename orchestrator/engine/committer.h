// Group commit for the engine: store transactions run on a thread of their
// own, so the engine thread goes on with the next iteration while the disk
// syncs (ARCHITECTURE.md "Durability").
//
// The engine builds one WriteBatch at the end of an iteration and hands it
// to Start(). While that commit runs, later iterations keep changing tasks;
// their changes wait, and when the commit is done (the engine learns it
// through `notify`, which posts to its queue) the next batch holds all of
// them. So there is at most one transaction in flight, batches grow with the
// load, and an fsync costs one wait per batch instead of stalling the engine.
// Nothing is acknowledged or sent to watchers before the batch holding it
// has committed: the engine runs a batch's effects only after Collect().
//
// SerializedStore wraps the engine's Store so that the engine thread's reads
// (idempotency lookups, ListTasks, tasks loaded back, retention) and the
// committer thread's Commit() never overlap: Store implementations are
// thread-compatible only.
//
// Thread-safety: SerializedStore is thread-safe. Committer: Start(),
// Collect() and Busy() from one thread (the engine thread); `notify` runs on
// the committer's thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "orchestrator/store/store.h"

namespace toolmesh::orchestrator {

// A Store whose every method runs under one mutex. `inner` must outlive it.
class SerializedStore final : public Store {
 public:
  explicit SerializedStore(Store& inner) : inner_(inner) {}

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
  absl::StatusOr<std::size_t> DeleteFinished(
      absl::Time finished_before, std::size_t keep_newest) override;
  absl::StatusOr<StoreStats> Stats() override;

 private:
  absl::Mutex mu_;
  Store& inner_ ABSL_GUARDED_BY(mu_);
};

class Committer {
 public:
  struct Result {
    absl::Status status;
    absl::Duration took;  // time inside Store::Commit
  };

  // `store` must outlive the committer. `notify` is called on the
  // committer's thread after each commit started by Start() finished; it
  // must not block and must not call into the committer. With
  // `own_thread` false (the engine's drive mode, which must stay
  // deterministic) there is no thread: Start() commits inline, Collect()
  // returns at once and `notify` is never called.
  Committer(Store& store, absl::AnyInvocable<void()> notify,
            bool own_thread = true);
  // Waits for a commit in flight (its result is dropped unless collected),
  // then joins the thread.
  ~Committer();

  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  // Starts committing `batch`. Requires !Busy().
  void Start(WriteBatch batch);
  // A batch was started and its result not yet collected.
  bool Busy() const { return busy_; }
  // Waits until the started batch is committed (or failed) and returns the
  // outcome. Requires Busy(); afterwards !Busy().
  Result Collect();

 private:
  void Run();

  Store& store_;
  absl::AnyInvocable<void()> notify_;
  const bool own_thread_;
  bool busy_ = false;  // the owner's thread only

  absl::Mutex mu_;
  std::optional<WriteBatch> pending_ ABSL_GUARDED_BY(mu_);
  std::optional<Result> result_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last; not started without own_thread
};

}  // namespace toolmesh::orchestrator
