// The Store contract, run against MemoryStore and SqliteStore alike
// (StoreTest), and what only a file can do: durability across instances and
// crashes, damaged and foreign files, a full disk (SqliteStoreTest).
#include "orchestrator/store/store.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "orchestrator/store/memory_store.h"
#include "orchestrator/store/sqlite_store.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::orchestrator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::SizeIs;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::IsOkAndHolds;
using ::toolmesh::testing::StatusIs;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// A fresh directory under TEST_TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern = absl::StrCat(
        base != nullptr && *base != '\0' ? base : "/tmp", "/store_test.XXXXXX");
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

TaskRecord Task(const std::string& id, absl::Time created, int state = 1) {
  TaskRecord task;
  task.task_id = id;
  task.spec = absl::StrCat("spec-of-", id, std::string("\0\x01\xff", 3));
  task.state = state;
  task.created_at = created;
  task.updated_at = created + absl::Seconds(1);
  task.snapshot = absl::StrCat("{\"snapshot\":\"", id, "\"}");
  return task;
}

TaskRecord Finished(const std::string& id, absl::Time created,
                    absl::Time finished) {
  TaskRecord task = Task(id, created, /*state=*/4);
  task.finished_at = finished;
  return task;
}

EventRecord Event(const std::string& id, std::uint64_t seq) {
  return EventRecord{id, seq, absl::StrCat("event ", seq, " of ", id)};
}

std::vector<std::uint64_t> Seqs(const std::vector<EventRecord>& events) {
  std::vector<std::uint64_t> out;
  for (const EventRecord& e : events) out.push_back(e.seq);
  return out;
}

std::vector<std::string> Ids(const std::vector<TaskRecord>& tasks) {
  std::vector<std::string> out;
  for (const TaskRecord& t : tasks) out.push_back(t.task_id);
  return out;
}

// ---------------------------------------------------------------------------
// The contract, for every implementation.

enum class Kind { kMemory, kSqlite };

class StoreTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    if (GetParam() == Kind::kMemory) {
      store_ = std::make_unique<MemoryStore>();
    } else {
      auto store = OpenSqliteStore(dir_.path());
      ASSERT_THAT(store, IsOk());
      store_ = *std::move(store);
    }
  }

  absl::Status Commit(std::vector<WriteBatch::Operation> ops) {
    WriteBatch batch;
    for (auto& op : ops) {
      if (auto* t = std::get_if<TaskRecord>(&op)) {
        batch.PutTask(std::move(*t));
      } else if (auto* e = std::get_if<EventRecord>(&op)) {
        batch.AppendEvent(std::move(*e));
      } else {
        batch.DeleteTask(std::get<WriteBatch::DeleteTaskOp>(op).task_id);
      }
    }
    return store_->Commit(batch);
  }

  std::vector<EventRecord> AllEvents(const std::string& id) {
    auto events = store_->LoadEvents(id, 0, 1'000'000);
    EXPECT_THAT(events, IsOk());
    return events.ok() ? *events : std::vector<EventRecord>{};
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreTest, CommittedTaskReadsBackWithEveryField) {
  TaskRecord task = Finished("t1", kT0, kT0 + absl::Minutes(3));
  task.idempotency_key = "key-1";
  task.last_seq = 42;
  // Sub-nanosecond parts are dropped: stores keep whole nanoseconds.
  task.updated_at = kT0 + absl::Nanoseconds(7) + absl::Nanoseconds(1) / 4;
  task.snapshot = std::string(100'000, 'x');
  ASSERT_THAT(Commit({task}), IsOk());

  TaskRecord expected = task;
  expected.updated_at = kT0 + absl::Nanoseconds(7);
  EXPECT_THAT(store_->GetTask("t1"), IsOkAndHolds(Optional(expected)));
  EXPECT_THAT(store_->GetTask("nope"), IsOkAndHolds(std::nullopt));
}

TEST_P(StoreTest, EmptyValuesStayEmpty) {
  TaskRecord task = Task("t1", kT0);
  task.spec.clear();
  task.snapshot.clear();
  ASSERT_THAT(Commit({task, EventRecord{"t1", 1, ""}}), IsOk());
  EXPECT_THAT(store_->GetTask("t1"), IsOkAndHolds(Optional(task)));
  EXPECT_THAT(AllEvents("t1"), ElementsAre(EventRecord{"t1", 1, ""}));
}

TEST_P(StoreTest, EmptyBatchCommitsNothing) {
  EXPECT_THAT(store_->Commit(WriteBatch()), IsOk());
  EXPECT_THAT(store_->Stats(), IsOk());
  EXPECT_EQ(store_->Stats()->tasks, 0u);
}

TEST_P(StoreTest, PutTaskReplacesEveryFieldAndKeepsEvents) {
  TaskRecord task = Task("t1", kT0);
  task.idempotency_key = "k";
  ASSERT_THAT(Commit({task, Event("t1", 1), Event("t1", 2)}), IsOk());

  TaskRecord updated = Task("t1", kT0 + absl::Seconds(5), /*state=*/2);
  updated.spec = "other spec";
  updated.last_seq = 2;
  updated.snapshot = "new snapshot";
  updated.finished_at = kT0 + absl::Hours(1);
  ASSERT_THAT(Commit({updated}), IsOk());

  EXPECT_THAT(store_->GetTask("t1"), IsOkAndHolds(Optional(updated)));
  EXPECT_THAT(Seqs(AllEvents("t1")), ElementsAre(1, 2));
  // The key was dropped by the upsert.
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("k"),
              IsOkAndHolds(std::nullopt));
}

TEST_P(StoreTest, DuplicateEventFailsTheWholeBatch) {
  TaskRecord a = Task("a", kT0);
  ASSERT_THAT(Commit({a, Event("a", 1), Event("a", 2)}), IsOk());

  TaskRecord a_changed = a;
  a_changed.snapshot = "changed";
  a_changed.last_seq = 3;
  TaskRecord b = Task("b", kT0);
  b.idempotency_key = "kb";
  EXPECT_THAT(Commit({b, Event("b", 1), a_changed, Event("a", 3),
                      WriteBatch::DeleteTaskOp{"x"}, Event("a", 2)}),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("a")));

  // Nothing of the failed batch is visible.
  EXPECT_THAT(store_->GetTask("b"), IsOkAndHolds(std::nullopt));
  EXPECT_THAT(store_->GetTask("a"), IsOkAndHolds(Optional(a)));
  EXPECT_THAT(Seqs(AllEvents("a")), ElementsAre(1, 2));
  EXPECT_THAT(AllEvents("b"), IsEmpty());
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("kb"),
              IsOkAndHolds(std::nullopt));
  // And the store takes the corrected batch afterwards.
  EXPECT_THAT(Commit({b, Event("b", 1), a_changed, Event("a", 3)}), IsOk());
  EXPECT_THAT(Seqs(AllEvents("a")), ElementsAre(1, 2, 3));
}

TEST_P(StoreTest, DuplicateWithinOneBatchIsRejected) {
  ASSERT_THAT(Commit({Task("a", kT0)}), IsOk());
  EXPECT_THAT(Commit({Event("a", 1), Event("a", 1)}),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(AllEvents("a"), IsEmpty());
}

TEST_P(StoreTest, EventNotAfterTheLastStoredSeqIsRejected) {
  ASSERT_THAT(Commit({Task("a", kT0), Event("a", 1), Event("a", 5)}), IsOk());
  EXPECT_THAT(Commit({Event("a", 3)}),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(Commit({Event("a", 6), Event("a", 4)}),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(Seqs(AllEvents("a")), ElementsAre(1, 5));
}

TEST_P(StoreTest, EventOfUnknownTaskFailsPrecondition) {
  EXPECT_THAT(
      Commit({Event("ghost", 1)}),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("ghost")));
  ASSERT_THAT(Commit({Task("a", kT0)}), IsOk());
  EXPECT_THAT(Commit({WriteBatch::DeleteTaskOp{"a"}, Event("a", 1)}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store_->GetTask("a"), IsOkAndHolds(Optional(Task("a", kT0))));
}

TEST_P(StoreTest, MalformedBatchIsInvalidArgument) {
  EXPECT_THAT(Commit({Task("", kT0)}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(Commit({Task("a", kT0)}), IsOk());
  EXPECT_THAT(Commit({Event("a", 0)}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Commit({Event("a", kMaxStoredSeq + 1)}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  TaskRecord bad = Task("a", kT0);
  bad.last_seq = kMaxStoredSeq + 1;
  EXPECT_THAT(Commit({bad}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Commit({WriteBatch::DeleteTaskOp{""}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Commit({Event("a", kMaxStoredSeq)}), IsOk());
  EXPECT_THAT(Seqs(AllEvents("a")), ElementsAre(kMaxStoredSeq));
}

TEST_P(StoreTest, IdempotencyKeyFindsItsTaskAndBelongsToOneTask) {
  TaskRecord a = Task("a", kT0);
  a.idempotency_key = "submit-1";
  ASSERT_THAT(Commit({a}), IsOk());
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("submit-1"),
              IsOkAndHolds(Optional(std::string("a"))));
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("submit-2"),
              IsOkAndHolds(std::nullopt));
  EXPECT_THAT(store_->FindTaskByIdempotencyKey(""),
              StatusIs(absl::StatusCode::kInvalidArgument));

  TaskRecord b = Task("b", kT0);
  b.idempotency_key = "submit-1";
  EXPECT_THAT(
      Commit({Task("c", kT0), b}),
      StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("submit-1")));
  EXPECT_THAT(store_->GetTask("c"), IsOkAndHolds(std::nullopt));

  // Re-putting the owner with its key is fine; tasks without keys never
  // conflict.
  EXPECT_THAT(Commit({a, Task("d", kT0), Task("e", kT0)}), IsOk());

  // A key released earlier in the same batch can be taken.
  TaskRecord a_rekeyed = a;
  a_rekeyed.idempotency_key = "submit-9";
  EXPECT_THAT(Commit({a_rekeyed, b}), IsOk());
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("submit-1"),
              IsOkAndHolds(Optional(std::string("b"))));
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("submit-9"),
              IsOkAndHolds(Optional(std::string("a"))));

  // Deleting a task frees its key.
  TaskRecord f = Task("f", kT0);
  f.idempotency_key = "submit-1";
  EXPECT_THAT(Commit({WriteBatch::DeleteTaskOp{"b"}, f}), IsOk());
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("submit-1"),
              IsOkAndHolds(Optional(std::string("f"))));
}

TEST_P(StoreTest, LoadEventsPagesAfterSeq) {
  std::vector<WriteBatch::Operation> ops = {Task("a", kT0), Task("b", kT0)};
  for (std::uint64_t seq = 1; seq <= 10; ++seq) ops.push_back(Event("a", seq));
  ops.push_back(Event("b", 1));
  ASSERT_THAT(Commit(std::move(ops)), IsOk());

  std::vector<std::vector<std::uint64_t>> pages;
  std::uint64_t after = 0;
  for (int guard = 0; guard < 10; ++guard) {
    auto page = store_->LoadEvents("a", after, 4);
    ASSERT_THAT(page, IsOk());
    if (page->empty()) break;
    pages.push_back(Seqs(*page));
    after = page->back().seq;
  }
  EXPECT_THAT(pages, ElementsAre(ElementsAre(1, 2, 3, 4),
                                 ElementsAre(5, 6, 7, 8), ElementsAre(9, 10)));
  auto events = store_->LoadEvents("a", 6, 1);
  ASSERT_THAT(events, IsOk());
  EXPECT_THAT(*events, ElementsAre(Event("a", 7)));
  EXPECT_THAT(store_->LoadEvents("a", 10, 5), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(store_->LoadEvents("a", ~std::uint64_t{0}, 5),
              IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(store_->LoadEvents("nope", 0, 5), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(store_->LoadEvents("a", 0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(StoreTest, LoadUnfinishedTasksReturnsOnlyUnfinishedOldestFirst) {
  TaskRecord late = Task("late", kT0 + absl::Seconds(9));
  late.snapshot = "snapshot of late";
  late.last_seq = 7;
  ASSERT_THAT(Commit({late, Task("b", kT0), Task("a", kT0),
                      Finished("done", kT0 - absl::Hours(1), kT0)}),
              IsOk());
  auto tasks = store_->LoadUnfinishedTasks();
  ASSERT_THAT(tasks, IsOk());
  EXPECT_THAT(Ids(*tasks), ElementsAre("a", "b", "late"));
  EXPECT_EQ(tasks->back(), late);
}

TEST_P(StoreTest, ListTasksPagesNewestFirst) {
  // created_at ties are ordered by task_id, descending.
  ASSERT_THAT(
      Commit({Task("t1", kT0), Task("t2", kT0 + absl::Seconds(1)),
              Task("t3b", kT0 + absl::Seconds(2)),
              Task("t3a", kT0 + absl::Seconds(2)),
              Finished("t4", kT0 + absl::Seconds(3), kT0 + absl::Hours(1)),
              Task("t5", kT0 + absl::Seconds(4), /*state=*/2),
              Task("t6", kT0 + absl::Seconds(5))}),
      IsOk());
  ListTasksOptions options;
  options.limit = 3;
  std::vector<std::vector<std::string>> pages;
  for (int guard = 0; guard < 10; ++guard) {
    auto page = store_->ListTasks(options);
    ASSERT_THAT(page, IsOk());
    pages.push_back(Ids(page->tasks));
    if (!page->next.has_value()) break;
    EXPECT_EQ(page->next->task_id, page->tasks.back().task_id);
    options.after = page->next;
  }
  EXPECT_THAT(pages,
              ElementsAre(ElementsAre("t6", "t5", "t4"),
                          ElementsAre("t3b", "t3a", "t2"), ElementsAre("t1")));

  // Exactly `limit` tasks left: no next page.
  options = ListTasksOptions();
  options.limit = 7;
  auto all = store_->ListTasks(options);
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(all->tasks, SizeIs(7));
  EXPECT_FALSE(all->next.has_value());
  EXPECT_EQ(all->tasks.front(), Task("t6", kT0 + absl::Seconds(5)));
}

TEST_P(StoreTest, ListTasksFiltersByStateAndCanSkipSnapshots) {
  ASSERT_THAT(Commit({Task("q1", kT0, 1), Task("r1", kT0 + absl::Seconds(1), 2),
                      Task("q2", kT0 + absl::Seconds(2), 1),
                      Task("c1", kT0 + absl::Seconds(3), 6),
                      Task("r2", kT0 + absl::Seconds(4), 2)}),
              IsOk());
  ListTasksOptions options;
  options.states = {2, 6};
  options.limit = 2;
  options.with_snapshot = false;
  auto page = store_->ListTasks(options);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(Ids(page->tasks), ElementsAre("r2", "c1"));
  ASSERT_TRUE(page->next.has_value());
  for (const TaskRecord& t : page->tasks) EXPECT_THAT(t.snapshot, IsEmpty());
  EXPECT_EQ(page->tasks.front().spec, Task("r2", kT0).spec);

  options.after = page->next;
  page = store_->ListTasks(options);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(Ids(page->tasks), ElementsAre("r1"));
  EXPECT_FALSE(page->next.has_value());

  options = ListTasksOptions();
  options.limit = 0;
  EXPECT_THAT(store_->ListTasks(options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.limit = 1;
  options.states = {kMaxFilterState + 1};
  EXPECT_THAT(store_->ListTasks(options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.states = {-1};
  EXPECT_THAT(store_->ListTasks(options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(StoreTest, DeleteFinishedByAgeDeletesTheirEventsToo) {
  ASSERT_THAT(
      Commit({Finished("old", kT0, kT0 + absl::Hours(1)), Event("old", 1),
              Event("old", 2), Finished("new", kT0, kT0 + absl::Hours(5)),
              Event("new", 1), Task("running", kT0 - absl::Hours(100)),
              Event("running", 1)}),
      IsOk());
  EXPECT_THAT(store_->DeleteFinished(kT0 + absl::Hours(2),
                                     std::numeric_limits<std::size_t>::max()),
              IsOkAndHolds(1u));
  EXPECT_THAT(store_->GetTask("old"), IsOkAndHolds(std::nullopt));
  EXPECT_THAT(AllEvents("old"), IsEmpty());
  EXPECT_THAT(store_->GetTask("new"), IsOkAndHolds(Optional(::testing::_)));
  EXPECT_THAT(store_->GetTask("running"), IsOkAndHolds(Optional(::testing::_)));
  auto stats = store_->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->tasks, 2u);
  EXPECT_EQ(stats->events, 2u);

  // A deleted task's id can start over from seq 1.
  EXPECT_THAT(Commit({Task("old", kT0), Event("old", 1)}), IsOk());
}

TEST_P(StoreTest, DeleteFinishedByCountKeepsTheNewest) {
  std::vector<WriteBatch::Operation> ops;
  for (int i = 0; i < 5; ++i) {
    const std::string id = absl::StrCat("f", i);
    ops.push_back(Finished(id, kT0, kT0 + absl::Minutes(i)));
    ops.push_back(Event(id, 1));
  }
  // Same finished_at as f4: the tie goes by task_id.
  ops.push_back(Finished("f4b", kT0, kT0 + absl::Minutes(4)));
  ops.push_back(Task("running", kT0));
  ASSERT_THAT(Commit(std::move(ops)), IsOk());

  EXPECT_THAT(store_->DeleteFinished(absl::InfinitePast(), 3),
              IsOkAndHolds(3u));
  ListTasksOptions options;
  options.limit = 100;
  auto page = store_->ListTasks(options);
  ASSERT_THAT(page, IsOk());
  EXPECT_THAT(Ids(page->tasks),
              ::testing::UnorderedElementsAre("f4b", "f4", "f3", "running"));
  EXPECT_THAT(AllEvents("f0"), IsEmpty());
  EXPECT_THAT(Seqs(AllEvents("f3")), ElementsAre(1));
  EXPECT_THAT(store_->DeleteFinished(absl::InfinitePast(), 3),
              IsOkAndHolds(0u));
  EXPECT_THAT(store_->DeleteFinished(absl::InfinitePast(), 0),
              IsOkAndHolds(3u));
  EXPECT_THAT(Ids(*store_->LoadUnfinishedTasks()), ElementsAre("running"));
}

TEST_P(StoreTest, DeleteFinishedAppliesBothLimits) {
  ASSERT_THAT(Commit({Finished("a", kT0, kT0 + absl::Minutes(1)),
                      Finished("b", kT0, kT0 + absl::Minutes(2)),
                      Finished("c", kT0, kT0 + absl::Minutes(3)),
                      Finished("d", kT0, kT0 + absl::Minutes(4))}),
              IsOk());
  // The age limit (finished before minute 3) deletes a and b; the count
  // limit (keep the newest 3) deletes a alone: together a and b.
  EXPECT_THAT(store_->DeleteFinished(kT0 + absl::Minutes(3), 3),
              IsOkAndHolds(2u));
  EXPECT_THAT(store_->GetTask("c"), IsOkAndHolds(Optional(::testing::_)));
  EXPECT_THAT(store_->GetTask("b"), IsOkAndHolds(std::nullopt));
  // Now the count limit is the stricter one.
  EXPECT_THAT(store_->DeleteFinished(kT0, 1), IsOkAndHolds(1u));
  EXPECT_THAT(store_->GetTask("d"), IsOkAndHolds(Optional(::testing::_)));
  EXPECT_THAT(store_->GetTask("c"), IsOkAndHolds(std::nullopt));
}

TEST_P(StoreTest, DeleteTaskRemovesTaskEventsAndKey) {
  TaskRecord a = Task("a", kT0);
  a.idempotency_key = "ka";
  ASSERT_THAT(Commit({a, Event("a", 1), Task("b", kT0), Event("b", 1)}),
              IsOk());
  ASSERT_THAT(Commit({WriteBatch::DeleteTaskOp{"a"},
                      WriteBatch::DeleteTaskOp{"never-existed"}}),
              IsOk());
  EXPECT_THAT(store_->GetTask("a"), IsOkAndHolds(std::nullopt));
  EXPECT_THAT(AllEvents("a"), IsEmpty());
  EXPECT_THAT(store_->FindTaskByIdempotencyKey("ka"),
              IsOkAndHolds(std::nullopt));
  EXPECT_THAT(Seqs(AllEvents("b")), ElementsAre(1));
  // Delete and recreate in one batch: the new log starts over.
  EXPECT_THAT(
      Commit({WriteBatch::DeleteTaskOp{"b"}, Task("b", kT0), Event("b", 1)}),
      IsOk());
  EXPECT_THAT(Seqs(AllEvents("b")), ElementsAre(1));
}

TEST_P(StoreTest, StatsCountTasksEventsAndBytes) {
  ASSERT_THAT(
      Commit({Task("a", kT0), Event("a", 1), Event("a", 2), Task("b", kT0)}),
      IsOk());
  auto stats = store_->Stats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->tasks, 2u);
  EXPECT_EQ(stats->events, 2u);
  EXPECT_GT(stats->db_bytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(AllStores, StoreTest,
                         ::testing::Values(Kind::kMemory, Kind::kSqlite),
                         [](const ::testing::TestParamInfo<Kind>& param_info) {
                           return param_info.param == Kind::kMemory ? "Memory"
                                                                    : "Sqlite";
                         });

// ---------------------------------------------------------------------------
// SQLite only.

// Runs SQL on a file with a separate raw connection.
void RawSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err != nullptr ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

std::string RawQuery(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      if (text != nullptr) out = reinterpret_cast<const char*>(text);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  std::string db_path() const { return SqliteDbPath(dir_.path()); }

  std::unique_ptr<Store> Open(SqliteStoreOptions options = {}) {
    auto store = OpenSqliteStore(dir_.path(), options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? *std::move(store) : nullptr;
  }

  TempDir dir_;
};

TEST_F(SqliteStoreTest, ReopenedStoreHasEverythingCommitted) {
  TaskRecord a = Task("a", kT0);
  a.idempotency_key = "ka";
  TaskRecord done = Finished("done", kT0, kT0 + absl::Hours(1));
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    WriteBatch batch;
    batch.PutTask(a);
    batch.PutTask(done);
    for (std::uint64_t seq = 1; seq <= 3; ++seq) {
      batch.AppendEvent(Event("a", seq));
    }
    ASSERT_THAT(store->Commit(batch), IsOk());
  }
  SqliteStoreOptions normal;
  normal.synchronous = SqliteSynchronous::kNormal;
  auto store = Open(normal);
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->GetTask("a"), IsOkAndHolds(Optional(a)));
  EXPECT_THAT(store->GetTask("done"), IsOkAndHolds(Optional(done)));
  EXPECT_THAT(store->FindTaskByIdempotencyKey("ka"),
              IsOkAndHolds(Optional(std::string("a"))));
  auto events = store->LoadEvents("a", 0, 10);
  ASSERT_THAT(events, IsOk());
  EXPECT_THAT(Seqs(*events), ElementsAre(1, 2, 3));
  EXPECT_THAT(Ids(*store->LoadUnfinishedTasks()), ElementsAre("a"));
  // The log continues after the stored events.
  WriteBatch next;
  next.AppendEvent(Event("a", 3));
  EXPECT_THAT(store->Commit(next), StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_F(SqliteStoreTest, CreatesTheDataDirAndUsesWalWithTheToolmeshIds) {
  const std::string nested = dir_.path() + "/a/b";
  auto store = OpenSqliteStore(nested);
  ASSERT_THAT(store, IsOk());
  WriteBatch batch;
  batch.PutTask(Task("a", kT0));
  ASSERT_THAT((*store)->Commit(batch), IsOk());
  const std::string path = SqliteDbPath(nested);
  EXPECT_EQ(path, nested + "/toolmesh.db");
  EXPECT_TRUE(std::filesystem::exists(path + "-wal"));
  EXPECT_EQ(RawQuery(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(RawQuery(path, "PRAGMA application_id"),
            std::to_string(kSqliteApplicationId));
  EXPECT_EQ(RawQuery(path, "PRAGMA user_version"),
            std::to_string(kSqliteSchemaVersion));
}

TEST_F(SqliteStoreTest, EmptyDataDirIsInvalid) {
  EXPECT_THAT(OpenSqliteStore(""),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SqliteStoreTest, ForeignDatabaseIsRefusedAndLeftUntouched) {
  RawSql(db_path(),
         "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);"
         "INSERT INTO accounts (name) VALUES ('alice'), ('bob');");
  const std::string before = ReadFile(db_path());
  ASSERT_FALSE(before.empty());
  EXPECT_THAT(OpenSqliteStore(dir_.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       ::testing::AllOf(HasSubstr(db_path()),
                                        HasSubstr("not a toolmesh database"))));
  EXPECT_EQ(ReadFile(db_path()), before);

  // Another program that stamps its own application id.
  RawSql(db_path(), "PRAGMA application_id = 1234");
  const std::string stamped = ReadFile(db_path());
  EXPECT_THAT(OpenSqliteStore(dir_.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("not a toolmesh database")));
  EXPECT_EQ(ReadFile(db_path()), stamped);
}

TEST_F(SqliteStoreTest, NewerSchemaVersionIsRefused) {
  { ASSERT_NE(Open(), nullptr); }
  RawSql(db_path(), "PRAGMA user_version = 99");
  EXPECT_THAT(
      OpenSqliteStore(dir_.path()),
      StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("newer")));
}

TEST_F(SqliteStoreTest, FileThatIsNotSqliteIsDataLossAndLeftUntouched) {
  std::string garbage;
  for (int i = 0; i < 8192; ++i) garbage.push_back(static_cast<char>(i * 7));
  WriteFile(db_path(), garbage);
  EXPECT_THAT(OpenSqliteStore(dir_.path()),
              StatusIs(absl::StatusCode::kDataLoss,
                       ::testing::AllOf(HasSubstr(db_path()),
                                        HasSubstr("not an SQLite database"))));
  EXPECT_EQ(ReadFile(db_path()), garbage);

  WriteFile(db_path(), "short");
  EXPECT_THAT(OpenSqliteStore(dir_.path()),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(ReadFile(db_path()), "short");
}

TEST_F(SqliteStoreTest, DamagedDatabaseIsDataLossAtOpen) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    WriteBatch batch;
    batch.PutTask(Task("a", kT0));
    for (std::uint64_t seq = 1; seq <= 2000; ++seq) {
      batch.AppendEvent(EventRecord{"a", seq, std::string(300, 'e')});
    }
    ASSERT_THAT(store->Commit(batch), IsOk());
  }
  // Closing the last connection checkpoints the WAL into the main file.
  ASSERT_FALSE(std::filesystem::exists(db_path() + "-wal"));
  std::string data = ReadFile(db_path());
  ASSERT_GT(data.size(), 100'000u);
  // Every page in the middle third is overwritten: whole b-tree pages of the
  // events table become garbage, which quick_check always notices.
  for (std::size_t i = data.size() / 3; i < 2 * data.size() / 3; ++i) {
    data[i] = static_cast<char>(0xA5);
  }
  WriteFile(db_path(), data);

  EXPECT_THAT(
      OpenSqliteStore(dir_.path()),
      StatusIs(absl::StatusCode::kDataLoss,
               ::testing::AllOf(HasSubstr(db_path()), HasSubstr("damaged"))));
}

TEST_F(SqliteStoreTest, FullDiskFailsTheCommitAndKeepsEarlierOnes) {
  SqliteStoreOptions options;
  options.max_db_bytes = 64 * 1024;
  {
    auto store = Open(options);
    ASSERT_NE(store, nullptr);
    WriteBatch small;
    small.PutTask(Task("a", kT0));
    small.AppendEvent(Event("a", 1));
    ASSERT_THAT(store->Commit(small), IsOk());

    WriteBatch big;
    big.PutTask(Task("b", kT0));
    for (std::uint64_t seq = 1; seq <= 200; ++seq) {
      big.AppendEvent(EventRecord{"b", seq, std::string(1000, 'x')});
    }
    EXPECT_THAT(store->Commit(big),
                StatusIs(absl::StatusCode::kResourceExhausted,
                         ::testing::AllOf(HasSubstr("disk full writing"),
                                          HasSubstr(db_path()))));
    EXPECT_THAT(store->GetTask("a"), IsOkAndHolds(Optional(Task("a", kT0))));
    EXPECT_THAT(store->GetTask("b"), IsOkAndHolds(std::nullopt));
    // Small commits still fit.
    WriteBatch next;
    next.AppendEvent(Event("a", 2));
    EXPECT_THAT(store->Commit(next), IsOk());
  }
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_THAT(store->GetTask("b"), IsOkAndHolds(std::nullopt));
  auto events = store->LoadEvents("a", 0, 10);
  ASSERT_THAT(events, IsOk());
  EXPECT_THAT(Seqs(*events), ElementsAre(1, 2));
}

// Batch `i` (from 1) of the crash tests: task "t" now at last_seq 4i, and
// its events 4i-3 .. 4i.
constexpr std::uint64_t kEventsPerBatch = 4;
WriteBatch CrashBatch(std::uint64_t i) {
  WriteBatch batch;
  TaskRecord task = Task("t", kT0);
  task.last_seq = i * kEventsPerBatch;
  task.snapshot = absl::StrCat("after batch ", i);
  batch.PutTask(task);
  for (std::uint64_t seq = (i - 1) * kEventsPerBatch + 1;
       seq <= i * kEventsPerBatch; ++seq) {
    batch.AppendEvent(EventRecord{"t", seq, std::string(200, 'e')});
  }
  return batch;
}

// In a child process: commits batches 1..max_batches, writing each
// acknowledged batch number to `fd`, then leaves with _exit (no destructor,
// no checkpoint). Never returns.
[[noreturn]] void CommitBatchesInChild(const std::string& dir,
                                       std::uint64_t max_batches, int fd) {
  auto store = OpenSqliteStore(dir);
  if (!store.ok()) _exit(2);
  for (std::uint64_t i = 1; i <= max_batches; ++i) {
    if (!(*store)->Commit(CrashBatch(i)).ok()) _exit(3);
    if (write(fd, &i, sizeof(i)) != sizeof(i)) _exit(4);
  }
  (void)store->release();  // leaked on purpose: no orderly close
  _exit(0);
}

// Reads acknowledgements following batch `last` until batch `want` was
// acknowledged, EOF, or 10 s passed. Returns the last acknowledged batch.
std::uint64_t ReadAcks(int fd, std::uint64_t last, std::uint64_t want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (last < want) {
    const std::int64_t left_ms =
        absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) break;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left_ms)) <= 0) break;
    std::uint64_t ack = 0;
    const ssize_t n = read(fd, &ack, sizeof(ack));
    if (n != sizeof(ack)) break;
    EXPECT_EQ(ack, last + 1);
    last = ack;
  }
  return last;
}

// Checks that the store holds exactly batches 1..n, each whole.
void ExpectBatches(Store& store, std::uint64_t n) {
  auto task = store.GetTask("t");
  ASSERT_THAT(task, IsOk());
  ASSERT_TRUE(task->has_value());
  EXPECT_EQ((*task)->last_seq, n * kEventsPerBatch);
  EXPECT_EQ((*task)->snapshot, absl::StrCat("after batch ", n));
  auto events = store.LoadEvents("t", 0, 1'000'000);
  ASSERT_THAT(events, IsOk());
  ASSERT_EQ(events->size(), n * kEventsPerBatch);
  for (std::size_t i = 0; i < events->size(); ++i) {
    EXPECT_EQ((*events)[i].seq, i + 1);
  }
}

TEST_F(SqliteStoreTest, ProcessExitWithoutCloseKeepsEveryAcknowledgedBatch) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    CommitBatchesInChild(dir_.path(), 20, fds[1]);
  }
  close(fds[1]);
  const std::uint64_t acked = ReadAcks(fds[0], 0, 20);
  close(fds[0]);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  ASSERT_EQ(acked, 20u);

  auto store = Open();
  ASSERT_NE(store, nullptr);
  ExpectBatches(*store, 20);
}

TEST_F(SqliteStoreTest, KilledProcessLosesNoAcknowledgedBatchAndNoHalfBatch) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    CommitBatchesInChild(dir_.path(), 100'000, fds[1]);
  }
  close(fds[1]);
  // Kill the child while it is busy committing.
  std::uint64_t acked = ReadAcks(fds[0], 0, 25);
  kill(pid, SIGKILL);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus));
  // Acknowledgements written before the kill are still in the pipe.
  acked = ReadAcks(fds[0], acked, ~std::uint64_t{0});
  close(fds[0]);
  ASSERT_GE(acked, 25u);

  auto store = Open();
  ASSERT_NE(store, nullptr);
  auto task = store->GetTask("t");
  ASSERT_THAT(task, IsOk());
  ASSERT_TRUE(task->has_value());
  // The batch in flight at the kill may have committed before its
  // acknowledgement was written; never less than acknowledged.
  const std::uint64_t stored = (*task)->last_seq / kEventsPerBatch;
  EXPECT_TRUE(stored == acked || stored == acked + 1)
      << "acked " << acked << ", stored " << stored;
  ExpectBatches(*store, stored);
}

}  // namespace
}  // namespace toolmesh::orchestrator
