// Group commit on a thread of its own; see committer.h.
#include "orchestrator/engine/committer.h"

#include <utility>

#include "absl/time/clock.h"

namespace toolmesh::orchestrator {

// --- SerializedStore ---------------------------------------------------------

absl::Status SerializedStore::Commit(const WriteBatch& batch) {
  absl::MutexLock lock(&mu_);
  return inner_.Commit(batch);
}

absl::StatusOr<std::vector<TaskRecord>> SerializedStore::LoadUnfinishedTasks() {
  absl::MutexLock lock(&mu_);
  return inner_.LoadUnfinishedTasks();
}

absl::StatusOr<std::optional<TaskRecord>> SerializedStore::GetTask(
    const std::string& task_id) {
  absl::MutexLock lock(&mu_);
  return inner_.GetTask(task_id);
}

absl::StatusOr<std::optional<std::string>>
SerializedStore::FindTaskByIdempotencyKey(const std::string& key) {
  absl::MutexLock lock(&mu_);
  return inner_.FindTaskByIdempotencyKey(key);
}

absl::StatusOr<std::vector<EventRecord>> SerializedStore::LoadEvents(
    const std::string& task_id, std::uint64_t after_seq, std::size_t limit) {
  absl::MutexLock lock(&mu_);
  return inner_.LoadEvents(task_id, after_seq, limit);
}

absl::StatusOr<TaskPage> SerializedStore::ListTasks(
    const ListTasksOptions& options) {
  absl::MutexLock lock(&mu_);
  return inner_.ListTasks(options);
}

absl::StatusOr<std::size_t> SerializedStore::DeleteFinished(
    absl::Time finished_before, std::size_t keep_newest) {
  absl::MutexLock lock(&mu_);
  return inner_.DeleteFinished(finished_before, keep_newest);
}

absl::StatusOr<StoreStats> SerializedStore::Stats() {
  absl::MutexLock lock(&mu_);
  return inner_.Stats();
}

// --- Committer ---------------------------------------------------------------

Committer::Committer(Store& store, absl::AnyInvocable<void()> notify,
                     bool own_thread)
    : store_(store), notify_(std::move(notify)), own_thread_(own_thread) {
  if (own_thread_) thread_ = std::thread([this] { Run(); });
}

Committer::~Committer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Committer::Start(WriteBatch batch) {
  busy_ = true;
  if (!own_thread_) {
    const absl::Time start = absl::Now();
    absl::Status status = store_.Commit(batch);
    const absl::Duration took = absl::Now() - start;
    absl::MutexLock lock(&mu_);
    result_ = Result{std::move(status), took};
    return;
  }
  absl::MutexLock lock(&mu_);
  pending_ = std::move(batch);
}

Committer::Result Committer::Collect() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return result_.has_value();
  };
  mu_.Await(absl::Condition(&done));
  Result result = *std::move(result_);
  result_.reset();
  busy_ = false;
  return result;
}

void Committer::Run() {
  while (true) {
    WriteBatch batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return pending_.has_value() || stop_;
      };
      mu_.Await(absl::Condition(&ready));
      // A batch handed over before the stop is still committed: the engine
      // may be waiting for it in Collect().
      if (!pending_.has_value()) return;
      batch = *std::move(pending_);
      pending_.reset();
    }
    const absl::Time start = absl::Now();
    absl::Status status = store_.Commit(batch);
    const absl::Duration took = absl::Now() - start;
    {
      absl::MutexLock lock(&mu_);
      result_ = Result{std::move(status), took};
    }
    notify_();
  }
}

}  // namespace toolmesh::orchestrator
