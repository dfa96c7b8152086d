#include "orchestrator/store/memory_store.h"

#include <algorithm>
#include <variant>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace toolmesh::orchestrator {
namespace {

absl::Time Normalized(absl::Time t) { return FromStoredNanos(StoredNanos(t)); }

}  // namespace

std::uint64_t MemoryStore::LastEventSeq(const StoredTask& task) {
  return task.events.empty() ? 0 : task.events.rbegin()->first;
}

std::uint64_t MemoryStore::RecordBytes(const TaskRecord& record) {
  return record.task_id.size() + record.spec.size() +
         record.idempotency_key.size() + record.snapshot.size();
}

absl::Status MemoryStore::CheckAgainstState(const WriteBatch& batch) const {
  // What the batch's earlier operations did to a task.
  struct TaskView {
    bool exists = false;
    std::uint64_t last_event_seq = 0;
    std::string key;
  };
  absl::flat_hash_map<std::string, TaskView> views;
  // Key -> owner (nullopt: released) as changed by the batch.
  absl::flat_hash_map<std::string, std::optional<std::string>> key_owner;

  auto view_of = [&](const std::string& task_id) -> TaskView& {
    auto [it, inserted] = views.try_emplace(task_id);
    if (inserted) {
      auto stored = tasks_.find(task_id);
      if (stored != tasks_.end()) {
        it->second.exists = true;
        it->second.last_event_seq = LastEventSeq(stored->second);
        it->second.key = stored->second.record.idempotency_key;
      }
    }
    return it->second;
  };
  auto owner_of = [&](const std::string& key) -> std::optional<std::string> {
    auto changed = key_owner.find(key);
    if (changed != key_owner.end()) return changed->second;
    auto stored = by_key_.find(key);
    if (stored == by_key_.end()) return std::nullopt;
    return stored->second;
  };

  for (const WriteBatch::Operation& op : batch.operations()) {
    if (const auto* put = std::get_if<TaskRecord>(&op)) {
      TaskView& view = view_of(put->task_id);
      const std::string& key = put->idempotency_key;
      if (!key.empty()) {
        std::optional<std::string> owner = owner_of(key);
        if (owner.has_value() && *owner != put->task_id) {
          return absl::AlreadyExistsError(
              absl::StrCat("idempotency key \"", key, "\" of task ",
                           put->task_id, " already belongs to task ", *owner));
        }
      }
      if (view.exists && !view.key.empty() && view.key != key) {
        key_owner[view.key] = std::nullopt;
      }
      if (!key.empty()) key_owner[key] = put->task_id;
      view.exists = true;
      view.key = key;
    } else if (const auto* event = std::get_if<EventRecord>(&op)) {
      TaskView& view = view_of(event->task_id);
      if (!view.exists) {
        return absl::FailedPreconditionError(absl::StrCat(
            "event ", event->seq, " of unknown task ", event->task_id));
      }
      if (event->seq <= view.last_event_seq) {
        return absl::AlreadyExistsError(
            absl::StrCat("event ", event->seq, " of task ", event->task_id,
                         " is not after the task's last stored event ",
                         view.last_event_seq));
      }
      view.last_event_seq = event->seq;
    } else {
      const auto& del = std::get<WriteBatch::DeleteTaskOp>(op);
      TaskView& view = view_of(del.task_id);
      if (view.exists && !view.key.empty()) key_owner[view.key] = std::nullopt;
      view = TaskView{};
    }
  }
  return absl::OkStatus();
}

void MemoryStore::ApplyPut(TaskRecord record) {
  record.created_at = Normalized(record.created_at);
  record.updated_at = Normalized(record.updated_at);
  if (record.finished_at.has_value()) {
    record.finished_at = Normalized(*record.finished_at);
  }
  auto [it, inserted] = tasks_.try_emplace(record.task_id);
  StoredTask& stored = it->second;
  if (!inserted) {
    const TaskRecord& old = stored.record;
    by_created_.erase({StoredNanos(old.created_at), old.task_id});
    if (!old.idempotency_key.empty()) by_key_.erase(old.idempotency_key);
    bytes_ -= RecordBytes(old);
  }
  by_created_.insert({StoredNanos(record.created_at), record.task_id});
  if (!record.idempotency_key.empty()) {
    by_key_[record.idempotency_key] = record.task_id;
  }
  bytes_ += RecordBytes(record);
  stored.record = std::move(record);
}

void MemoryStore::ApplyAppend(const EventRecord& event) {
  StoredTask& stored = tasks_.at(event.task_id);
  stored.events.emplace(event.seq, event.event);
  ++event_count_;
  bytes_ += event.event.size() + sizeof(event.seq);
}

void MemoryStore::ApplyDelete(const std::string& task_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return;
  const TaskRecord& record = it->second.record;
  by_created_.erase({StoredNanos(record.created_at), record.task_id});
  if (!record.idempotency_key.empty()) by_key_.erase(record.idempotency_key);
  bytes_ -= RecordBytes(record);
  for (const auto& [seq, event] : it->second.events) {
    bytes_ -= event.size() + sizeof(seq);
  }
  event_count_ -= it->second.events.size();
  tasks_.erase(it);
}

absl::Status MemoryStore::Commit(const WriteBatch& batch) {
  TOOLMESH_RETURN_IF_ERROR(ValidateBatchShape(batch));
  TOOLMESH_RETURN_IF_ERROR(CheckAgainstState(batch));
  // Checked as a whole: nothing below can fail.
  for (const WriteBatch::Operation& op : batch.operations()) {
    if (const auto* put = std::get_if<TaskRecord>(&op)) {
      ApplyPut(*put);
    } else if (const auto* event = std::get_if<EventRecord>(&op)) {
      ApplyAppend(*event);
    } else {
      ApplyDelete(std::get<WriteBatch::DeleteTaskOp>(op).task_id);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TaskRecord>> MemoryStore::LoadUnfinishedTasks() {
  std::vector<TaskRecord> out;
  for (const CreatedKey& key : by_created_) {
    const TaskRecord& record = tasks_.at(key.second).record;
    if (!record.finished_at.has_value()) out.push_back(record);
  }
  return out;
}

absl::StatusOr<std::optional<TaskRecord>> MemoryStore::GetTask(
    const std::string& task_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return std::optional<TaskRecord>();
  return std::optional<TaskRecord>(it->second.record);
}

absl::StatusOr<std::optional<std::string>>
MemoryStore::FindTaskByIdempotencyKey(const std::string& key) {
  if (key.empty()) {
    return absl::InvalidArgumentError("empty idempotency key");
  }
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

absl::StatusOr<std::vector<EventRecord>> MemoryStore::LoadEvents(
    const std::string& task_id, std::uint64_t after_seq, std::size_t limit) {
  if (limit == 0) {
    return absl::InvalidArgumentError("LoadEvents: limit must be at least 1");
  }
  std::vector<EventRecord> out;
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return out;
  const auto& events = it->second.events;
  for (auto e = events.upper_bound(after_seq);
       e != events.end() && out.size() < limit; ++e) {
    out.push_back(EventRecord{task_id, e->first, e->second});
  }
  return out;
}

absl::StatusOr<TaskPage> MemoryStore::ListTasks(
    const ListTasksOptions& options) {
  TOOLMESH_RETURN_IF_ERROR(ValidateListOptions(options));
  TaskPage page;
  // Everything strictly before `after` in ascending order comes after it in
  // the newest-first order.
  auto it =
      options.after.has_value()
          ? by_created_.lower_bound({StoredNanos(options.after->created_at),
                                     options.after->task_id})
          : by_created_.end();
  while (it != by_created_.begin()) {
    --it;
    const TaskRecord& record = tasks_.at(it->second).record;
    if (!StateMatches(options.states, record.state)) continue;
    if (page.tasks.size() == options.limit) {
      const TaskRecord& last = page.tasks.back();
      page.next = TaskCursor{last.created_at, last.task_id};
      break;
    }
    page.tasks.push_back(record);
    if (!options.with_snapshot) page.tasks.back().snapshot.clear();
  }
  return page;
}

absl::StatusOr<std::size_t> MemoryStore::DeleteFinished(
    absl::Time finished_before, std::size_t keep_newest) {
  std::vector<std::pair<std::int64_t, std::string>> finished;
  for (const auto& [id, stored] : tasks_) {
    if (stored.record.finished_at.has_value()) {
      finished.emplace_back(StoredNanos(*stored.record.finished_at), id);
    }
  }
  std::sort(finished.begin(), finished.end(),
            [](const auto& a, const auto& b) { return a > b; });
  const std::int64_t before = StoredNanos(finished_before);
  std::size_t deleted = 0;
  for (std::size_t i = 0; i < finished.size(); ++i) {
    if (i >= keep_newest || finished[i].first < before) {
      ApplyDelete(finished[i].second);
      ++deleted;
    }
  }
  return deleted;
}

absl::StatusOr<StoreStats> MemoryStore::Stats() {
  return StoreStats{tasks_.size(), event_count_, bytes_};
}

}  // namespace toolmesh::orchestrator
