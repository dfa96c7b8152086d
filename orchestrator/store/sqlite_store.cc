#include "orchestrator/store/sqlite_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/status_macros.h"

namespace toolmesh::orchestrator {
namespace {

constexpr char kSqliteHeader[] = "SQLite format 3";  // 16 bytes with the NUL

// Columns of every task query, in ReadTask's order.
#define TOOLMESH_TASK_COLUMNS                                       \
  "task_id, spec, idempotency_key, state, created_at, updated_at, " \
  "finished_at, last_seq, snapshot"

constexpr const char* kSchema[] = {
    "CREATE TABLE tasks ("
    " task_id TEXT NOT NULL PRIMARY KEY,"
    " spec BLOB NOT NULL,"
    " idempotency_key TEXT,"  // NULL: none
    " state INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"  // Unix nanoseconds
    " updated_at INTEGER NOT NULL,"
    " finished_at INTEGER,"  // NULL: unfinished
    " last_seq INTEGER NOT NULL,"
    " snapshot BLOB NOT NULL)",
    "CREATE UNIQUE INDEX tasks_by_idempotency_key ON tasks (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    "CREATE INDEX tasks_by_created ON tasks (created_at, task_id)",
    "CREATE INDEX tasks_unfinished ON tasks (created_at, task_id)"
    " WHERE finished_at IS NULL",
    "CREATE INDEX tasks_finished ON tasks (finished_at, task_id)"
    " WHERE finished_at IS NOT NULL",
    "CREATE TABLE events ("
    " task_id TEXT NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,"
    " seq INTEGER NOT NULL,"
    " event BLOB NOT NULL,"
    " PRIMARY KEY (task_id, seq)) WITHOUT ROWID",
};

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// One use of a cached statement: binds, steps, and resets it when it goes
// out of scope. Bound strings must outlive this object (they are bound
// without copying). A failed bind is reported by the next Step().
class StmtUse {
 public:
  explicit StmtUse(const StmtPtr& stmt) : stmt_(stmt.get()) {}
  ~StmtUse() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;

  void Int(int index, std::int64_t value) {
    Check(sqlite3_bind_int64(stmt_, index, value));
  }
  void Text(int index, const std::string& value) {
    Check(sqlite3_bind_text64(stmt_, index, value.data(), value.size(),
                              SQLITE_STATIC, SQLITE_UTF8));
  }
  // A zero-length value stays a zero-length blob, not NULL: data() is never
  // null for a std::string.
  void Blob(int index, const std::string& value) {
    Check(sqlite3_bind_blob64(stmt_, index, value.data(), value.size(),
                              SQLITE_STATIC));
  }
  void Null(int index) { Check(sqlite3_bind_null(stmt_, index)); }

  // SQLITE_ROW, SQLITE_DONE, or an error code.
  int Step() {
    if (bind_rc_ != SQLITE_OK) return bind_rc_;
    return sqlite3_step(stmt_);
  }
  sqlite3_stmt* get() const { return stmt_; }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

std::string ColumnBytes(sqlite3_stmt* stmt, int column) {
  const void* data = sqlite3_column_blob(stmt, column);
  const int size = sqlite3_column_bytes(stmt, column);
  if (data == nullptr || size <= 0) return std::string();
  return std::string(static_cast<const char*>(data),
                     static_cast<std::size_t>(size));
}

std::int64_t ClampToInt64(std::uint64_t value) {
  return value > kMaxStoredSeq ? static_cast<std::int64_t>(kMaxStoredSeq)
                               : static_cast<std::int64_t>(value);
}

// Maps an SQLite result code (and the errno behind an I/O error) to the
// Store contract's codes. `what` says what was being done.
absl::Status SqliteStatus(int rc, sqlite3* db, const std::string& path,
                          absl::string_view what) {
  const std::string detail =
      db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const int sys_errno = db != nullptr ? sqlite3_system_errno(db) : 0;
  const std::string message =
      absl::StrCat(what, " (", path, "): ", detail, " [sqlite ", rc, "]");
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(
          absl::StrCat("disk full writing ", path,
                       " (or the store's max_db_bytes reached) during ", what,
                       ": ", detail));
    case SQLITE_IOERR:
      if (sys_errno == ENOSPC || sys_errno == EDQUOT) {
        return absl::ResourceExhaustedError(
            absl::StrCat("disk full writing ", path, " during ", what, ": ",
                         detail, ": ", std::strerror(sys_errno)));
      }
      return absl::UnavailableError(
          sys_errno != 0 ? absl::StrCat(message, ": ", std::strerror(sys_errno))
                         : message);
    case SQLITE_NOMEM:
      return absl::ResourceExhaustedError(message);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_PROTOCOL:
    case SQLITE_CANTOPEN:
      return absl::UnavailableError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(
          absl::StrCat(path, " is damaged (", what, "): ", detail));
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::FailedPreconditionError(message);
    case SQLITE_TOOBIG:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string path, DbPtr db)
      : path_(std::move(path)), db_(std::move(db)) {}
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Checks the file, creates or verifies the schema, sets the pragmas and
  // prepares the statements.
  absl::Status Init(const SqliteStoreOptions& options);

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
  absl::Status Error(int rc, absl::string_view what) const {
    return SqliteStatus(rc, db_.get(), path_, what);
  }
  // Runs SQL text once (no results expected).
  absl::Status ExecSql(const char* sql, absl::string_view what);
  // The first column of the first row of `sql`, run once.
  absl::StatusOr<std::int64_t> QueryInt(const char* sql,
                                        absl::string_view what);
  absl::StatusOr<std::string> QueryText(const char* sql,
                                        absl::string_view what);
  absl::Status Prepare(const char* sql, StmtPtr* stmt);
  // Steps a statement without parameters or results to completion.
  absl::Status Run(const StmtPtr& stmt, absl::string_view what);
  absl::Status CheckExistingDatabase(const SqliteStoreOptions& options,
                                     bool* is_new);
  absl::Status CreateSchema();
  // Rolls back the open transaction, if SQLite did not already.
  void RollbackIfOpen();
  absl::Status ApplyBatch(const WriteBatch& batch);
  absl::Status ApplyPut(const TaskRecord& task);
  absl::Status ApplyAppend(
      const EventRecord& event,
      absl::flat_hash_map<std::string, std::uint64_t>* last_seq_in_batch);
  absl::Status ApplyDelete(const std::string& task_id);
  absl::StatusOr<TaskRecord> ReadTask(sqlite3_stmt* stmt) const;
  // Reads every row of a task query.
  absl::Status ReadTasks(StmtUse& use, std::vector<TaskRecord>* out,
                         absl::string_view what);

  // Constant after construction.
  const std::string path_;
  const DbPtr db_;

  // Cached statements (declared after db_: finalized before it is closed).
  StmtPtr begin_;
  StmtPtr commit_;
  StmtPtr rollback_;
  StmtPtr upsert_task_;
  StmtPtr last_event_seq_;
  StmtPtr insert_event_;
  StmtPtr delete_task_;
  StmtPtr get_task_;
  StmtPtr find_by_key_;
  StmtPtr load_unfinished_;
  StmtPtr load_events_;
  StmtPtr list_first_;
  StmtPtr list_after_;
  StmtPtr delete_finished_;
  StmtPtr count_tasks_;
  StmtPtr count_events_;
  StmtPtr page_count_;
  StmtPtr page_size_;
};

absl::Status SqliteStore::ExecSql(const char* sql, absl::string_view what) {
  char* errmsg = nullptr;
  const int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &errmsg);
  sqlite3_free(errmsg);  // sqlite3_errmsg() still holds the text
  if (rc != SQLITE_OK) return Error(rc, what);
  return absl::OkStatus();
}

absl::StatusOr<std::int64_t> SqliteStore::QueryInt(const char* sql,
                                                   absl::string_view what) {
  StmtPtr stmt;
  TOOLMESH_RETURN_IF_ERROR(Prepare(sql, &stmt));
  StmtUse use(stmt);
  const int rc = use.Step();
  if (rc == SQLITE_ROW) return sqlite3_column_int64(stmt.get(), 0);
  if (rc == SQLITE_DONE) {
    return absl::InternalError(absl::StrCat(what, " (", path_, "): no result"));
  }
  return Error(rc, what);
}

absl::StatusOr<std::string> SqliteStore::QueryText(const char* sql,
                                                   absl::string_view what) {
  StmtPtr stmt;
  TOOLMESH_RETURN_IF_ERROR(Prepare(sql, &stmt));
  StmtUse use(stmt);
  const int rc = use.Step();
  if (rc == SQLITE_ROW) return ColumnBytes(stmt.get(), 0);
  if (rc == SQLITE_DONE) {
    return absl::InternalError(absl::StrCat(what, " (", path_, "): no result"));
  }
  return Error(rc, what);
}

absl::Status SqliteStore::Prepare(const char* sql, StmtPtr* stmt) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db_.get(), sql, -1,
                                    SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  stmt->reset(raw);
  if (rc != SQLITE_OK) {
    return Error(rc, absl::StrCat("preparing \"", sql, "\""));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::Run(const StmtPtr& stmt, absl::string_view what) {
  StmtUse use(stmt);
  int rc;
  while ((rc = use.Step()) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) return Error(rc, what);
  return absl::OkStatus();
}

absl::Status SqliteStore::CheckExistingDatabase(
    const SqliteStoreOptions& options, bool* is_new) {
  TOOLMESH_ASSIGN_OR_RETURN(
      const std::int64_t app_id,
      QueryInt("PRAGMA application_id", "reading the application id"));
  TOOLMESH_ASSIGN_OR_RETURN(
      const std::int64_t version,
      QueryInt("PRAGMA user_version", "reading the schema version"));
  TOOLMESH_ASSIGN_OR_RETURN(
      const std::int64_t objects,
      QueryInt("SELECT count(*) FROM sqlite_master", "reading the schema"));
  *is_new = false;
  if (app_id == 0 && version == 0 && objects == 0) {
    *is_new = true;
    return absl::OkStatus();
  }
  if (app_id != kSqliteApplicationId) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is not a toolmesh database (an SQLite database with application "
        "id 0x%08x and %d schema objects, expected id 0x%08x); refusing to "
        "use it: move it away or choose another --data-dir",
        path_, static_cast<std::uint32_t>(app_id), objects,
        static_cast<std::uint32_t>(kSqliteApplicationId)));
  }
  if (version > kSqliteSchemaVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, " has toolmesh schema version ", version,
                     ", newer than the version ", kSqliteSchemaVersion,
                     " this build knows; run a newer toolmesh"));
  }
  if (version < 1) {
    return absl::DataLossError(absl::StrCat(
        path_, " is damaged: a toolmesh database without a schema version"));
  }
  if (options.verify_on_open) {
    TOOLMESH_ASSIGN_OR_RETURN(
        const std::string check,
        QueryText("PRAGMA quick_check(5)", "checking the database"));
    if (check != "ok") {
      // The report can run to many lines: keep the start, on one line.
      std::string summary = absl::StrReplaceAll(check, {{"\n", "; "}});
      if (summary.size() > 400) summary = summary.substr(0, 400) + "...";
      return absl::DataLossError(absl::StrCat(
          path_, " is damaged (PRAGMA quick_check): ", summary,
          "; refusing to start over it: restore a backup or move it away"));
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::CreateSchema() {
  TOOLMESH_RETURN_IF_ERROR(
      ExecSql("BEGIN IMMEDIATE", "starting the schema transaction"));
  absl::Status status;
  for (const char* sql : kSchema) {
    status = ExecSql(sql, "creating the schema");
    if (!status.ok()) break;
  }
  if (status.ok()) {
    const std::string pragmas =
        absl::StrCat("PRAGMA application_id = ", kSqliteApplicationId,
                     "; PRAGMA user_version = ", kSqliteSchemaVersion);
    status = ExecSql(pragmas.c_str(), "writing the schema version");
  }
  if (status.ok()) status = ExecSql("COMMIT", "committing the schema");
  if (!status.ok()) RollbackIfOpen();
  return status;
}

void SqliteStore::RollbackIfOpen() {
  if (sqlite3_get_autocommit(db_.get())) return;
  if (rollback_ != nullptr) {
    Run(rollback_, "rolling back").IgnoreError();
  } else {
    sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

absl::Status SqliteStore::Init(const SqliteStoreOptions& options) {
  sqlite3_extended_result_codes(db_.get(), 1);
  const std::int64_t busy_ms = absl::ToInt64Milliseconds(options.busy_timeout);
  sqlite3_busy_timeout(db_.get(), static_cast<int>(std::clamp<std::int64_t>(
                                      busy_ms, 0, INT_MAX)));

  bool is_new = false;
  TOOLMESH_RETURN_IF_ERROR(CheckExistingDatabase(options, &is_new));

  // From here on the file is ours (new, or a verified toolmesh database).
  TOOLMESH_ASSIGN_OR_RETURN(
      const std::string mode,
      QueryText("PRAGMA journal_mode = WAL", "switching to WAL mode"));
  if (mode != "wal") {
    return absl::UnavailableError(absl::StrCat(
        path_, ": SQLite refused WAL mode (journal mode is \"", mode, "\")"));
  }
  TOOLMESH_RETURN_IF_ERROR(
      ExecSql(options.synchronous == SqliteSynchronous::kFull
                  ? "PRAGMA synchronous = FULL"
                  : "PRAGMA synchronous = NORMAL",
              "setting synchronous"));
  TOOLMESH_RETURN_IF_ERROR(
      ExecSql("PRAGMA foreign_keys = ON", "enabling foreign keys"));
  TOOLMESH_ASSIGN_OR_RETURN(
      const std::int64_t fk,
      QueryInt("PRAGMA foreign_keys", "reading foreign_keys"));
  if (fk != 1) {
    return absl::InternalError(
        "this SQLite library was built without foreign key support");
  }
  // A checkpointed WAL is truncated back to this size.
  TOOLMESH_RETURN_IF_ERROR(ExecSql("PRAGMA journal_size_limit = 67108864",
                                   "setting journal_size_limit"));
  if (is_new) TOOLMESH_RETURN_IF_ERROR(CreateSchema());
  if (options.max_db_bytes > 0) {
    TOOLMESH_ASSIGN_OR_RETURN(
        const std::int64_t page_size,
        QueryInt("PRAGMA page_size", "reading page_size"));
    const std::uint64_t pages = std::max<std::uint64_t>(
        1, options.max_db_bytes / static_cast<std::uint64_t>(page_size));
    const std::string sql =
        absl::StrCat("PRAGMA max_page_count = ", ClampToInt64(pages));
    TOOLMESH_RETURN_IF_ERROR(
        QueryInt(sql.c_str(), "setting max_page_count").status());
  }

  TOOLMESH_RETURN_IF_ERROR(Prepare("BEGIN IMMEDIATE", &begin_));
  TOOLMESH_RETURN_IF_ERROR(Prepare("COMMIT", &commit_));
  TOOLMESH_RETURN_IF_ERROR(Prepare("ROLLBACK", &rollback_));
  TOOLMESH_RETURN_IF_ERROR(Prepare(
      "INSERT INTO tasks (" TOOLMESH_TASK_COLUMNS
      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
      " ON CONFLICT (task_id) DO UPDATE SET spec = excluded.spec,"
      " idempotency_key = excluded.idempotency_key, state = excluded.state,"
      " created_at = excluded.created_at, updated_at = excluded.updated_at,"
      " finished_at = excluded.finished_at, last_seq = excluded.last_seq,"
      " snapshot = excluded.snapshot",
      &upsert_task_));
  TOOLMESH_RETURN_IF_ERROR(Prepare(
      "SELECT seq FROM events WHERE task_id = ?1 ORDER BY seq DESC LIMIT 1",
      &last_event_seq_));
  TOOLMESH_RETURN_IF_ERROR(
      Prepare("INSERT INTO events (task_id, seq, event) VALUES (?1, ?2, ?3)",
              &insert_event_));
  TOOLMESH_RETURN_IF_ERROR(
      Prepare("DELETE FROM tasks WHERE task_id = ?1", &delete_task_));
  TOOLMESH_RETURN_IF_ERROR(Prepare("SELECT " TOOLMESH_TASK_COLUMNS
                                   " FROM tasks WHERE task_id = ?1",
                                   &get_task_));
  TOOLMESH_RETURN_IF_ERROR(Prepare(
      "SELECT task_id FROM tasks WHERE idempotency_key = ?1", &find_by_key_));
  TOOLMESH_RETURN_IF_ERROR(Prepare("SELECT " TOOLMESH_TASK_COLUMNS
                                   " FROM tasks WHERE finished_at IS NULL"
                                   " ORDER BY created_at, task_id",
                                   &load_unfinished_));
  TOOLMESH_RETURN_IF_ERROR(
      Prepare("SELECT seq, event FROM events WHERE task_id = ?1 AND seq > ?2"
              " ORDER BY seq LIMIT ?3",
              &load_events_));
  // ?1: bit mask of the wanted states (0: all); ?2: limit; ?3: whether to
  // read the snapshot; ?4, ?5: the cursor.
  constexpr char kListColumns[] =
      "task_id, spec, idempotency_key, state, created_at, updated_at,"
      " finished_at, last_seq, CASE WHEN ?3 THEN snapshot ELSE X'' END";
  constexpr char kStateFilter[] =
      "(?1 = 0 OR (state BETWEEN 0 AND 62 AND ((?1 >> state) & 1) = 1))";
  const std::string list_first =
      absl::StrCat("SELECT ", kListColumns, " FROM tasks WHERE ", kStateFilter,
                   " ORDER BY created_at DESC, task_id DESC LIMIT ?2");
  const std::string list_after =
      absl::StrCat("SELECT ", kListColumns, " FROM tasks WHERE ", kStateFilter,
                   " AND (created_at, task_id) < (?4, ?5)"
                   " ORDER BY created_at DESC, task_id DESC LIMIT ?2");
  TOOLMESH_RETURN_IF_ERROR(Prepare(list_first.c_str(), &list_first_));
  TOOLMESH_RETURN_IF_ERROR(Prepare(list_after.c_str(), &list_after_));
  TOOLMESH_RETURN_IF_ERROR(
      Prepare("DELETE FROM tasks WHERE finished_at IS NOT NULL AND ("
              " finished_at < ?1 OR task_id IN ("
              "  SELECT task_id FROM tasks WHERE finished_at IS NOT NULL"
              "  ORDER BY finished_at DESC, task_id DESC LIMIT -1 OFFSET ?2))",
              &delete_finished_));
  TOOLMESH_RETURN_IF_ERROR(
      Prepare("SELECT count(*) FROM tasks", &count_tasks_));
  TOOLMESH_RETURN_IF_ERROR(
      Prepare("SELECT count(*) FROM events", &count_events_));
  TOOLMESH_RETURN_IF_ERROR(Prepare("PRAGMA page_count", &page_count_));
  TOOLMESH_RETURN_IF_ERROR(Prepare("PRAGMA page_size", &page_size_));
  return absl::OkStatus();
}

absl::Status SqliteStore::ApplyPut(const TaskRecord& task) {
  StmtUse use(upsert_task_);
  use.Text(1, task.task_id);
  use.Blob(2, task.spec);
  if (task.idempotency_key.empty()) {
    use.Null(3);
  } else {
    use.Text(3, task.idempotency_key);
  }
  use.Int(4, task.state);
  use.Int(5, StoredNanos(task.created_at));
  use.Int(6, StoredNanos(task.updated_at));
  if (task.finished_at.has_value()) {
    use.Int(7, StoredNanos(*task.finished_at));
  } else {
    use.Null(7);
  }
  use.Int(8, static_cast<std::int64_t>(task.last_seq));
  use.Blob(9, task.snapshot);
  const int rc = use.Step();
  if (rc == SQLITE_DONE) return absl::OkStatus();
  if (rc == SQLITE_CONSTRAINT_UNIQUE) {
    return absl::AlreadyExistsError(
        absl::StrCat("idempotency key \"", task.idempotency_key, "\" of task ",
                     task.task_id, " already belongs to another task"));
  }
  return Error(rc, absl::StrCat("storing task ", task.task_id));
}

absl::Status SqliteStore::ApplyAppend(
    const EventRecord& event,
    absl::flat_hash_map<std::string, std::uint64_t>* last_seq_in_batch) {
  auto [it, inserted] = last_seq_in_batch->try_emplace(event.task_id, 0);
  if (inserted) {
    StmtUse use(last_event_seq_);
    use.Text(1, event.task_id);
    const int rc = use.Step();
    if (rc == SQLITE_ROW) {
      const std::int64_t seq = sqlite3_column_int64(use.get(), 0);
      if (seq < 0) {
        return absl::DataLossError(absl::StrCat(path_, " is damaged: task ",
                                                event.task_id,
                                                " has event seq ", seq));
      }
      it->second = static_cast<std::uint64_t>(seq);
    } else if (rc != SQLITE_DONE) {
      return Error(
          rc, absl::StrCat("reading the last event of task ", event.task_id));
    }
  }
  if (event.seq <= it->second) {
    return absl::AlreadyExistsError(absl::StrCat(
        "event ", event.seq, " of task ", event.task_id,
        " is not after the task's last stored event ", it->second));
  }
  StmtUse use(insert_event_);
  use.Text(1, event.task_id);
  use.Int(2, static_cast<std::int64_t>(event.seq));
  use.Blob(3, event.event);
  const int rc = use.Step();
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
    return absl::FailedPreconditionError(
        absl::StrCat("event ", event.seq, " of unknown task ", event.task_id));
  }
  if (rc != SQLITE_DONE) {
    return Error(rc, absl::StrCat("appending event ", event.seq, " of task ",
                                  event.task_id));
  }
  it->second = event.seq;
  return absl::OkStatus();
}

absl::Status SqliteStore::ApplyDelete(const std::string& task_id) {
  StmtUse use(delete_task_);
  use.Text(1, task_id);
  const int rc = use.Step();
  if (rc != SQLITE_DONE) {
    return Error(rc, absl::StrCat("deleting task ", task_id));
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::ApplyBatch(const WriteBatch& batch) {
  // The last event seq of each task this batch appends to, read once.
  absl::flat_hash_map<std::string, std::uint64_t> last_seq_in_batch;
  for (const WriteBatch::Operation& op : batch.operations()) {
    if (const auto* put = std::get_if<TaskRecord>(&op)) {
      TOOLMESH_RETURN_IF_ERROR(ApplyPut(*put));
    } else if (const auto* event = std::get_if<EventRecord>(&op)) {
      TOOLMESH_RETURN_IF_ERROR(ApplyAppend(*event, &last_seq_in_batch));
    } else {
      const std::string& task_id =
          std::get<WriteBatch::DeleteTaskOp>(op).task_id;
      TOOLMESH_RETURN_IF_ERROR(ApplyDelete(task_id));
      last_seq_in_batch[task_id] = 0;
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::Commit(const WriteBatch& batch) {
  TOOLMESH_RETURN_IF_ERROR(ValidateBatchShape(batch));
  if (batch.empty()) return absl::OkStatus();
  TOOLMESH_RETURN_IF_ERROR(Run(begin_, "starting a transaction"));
  absl::Status status = ApplyBatch(batch);
  if (status.ok()) status = Run(commit_, "committing");
  if (!status.ok()) RollbackIfOpen();
  return status;
}

absl::StatusOr<TaskRecord> SqliteStore::ReadTask(sqlite3_stmt* stmt) const {
  TaskRecord task;
  task.task_id = ColumnBytes(stmt, 0);
  task.spec = ColumnBytes(stmt, 1);
  task.idempotency_key = ColumnBytes(stmt, 2);
  const std::int64_t state = sqlite3_column_int64(stmt, 3);
  const std::int64_t last_seq = sqlite3_column_int64(stmt, 7);
  if (state < INT_MIN || state > INT_MAX || last_seq < 0) {
    return absl::DataLossError(absl::StrCat(path_, " is damaged: task ",
                                            task.task_id, " has state ", state,
                                            " and last_seq ", last_seq));
  }
  task.state = static_cast<int>(state);
  task.created_at = FromStoredNanos(sqlite3_column_int64(stmt, 4));
  task.updated_at = FromStoredNanos(sqlite3_column_int64(stmt, 5));
  if (sqlite3_column_type(stmt, 6) != SQLITE_NULL) {
    task.finished_at = FromStoredNanos(sqlite3_column_int64(stmt, 6));
  }
  task.last_seq = static_cast<std::uint64_t>(last_seq);
  task.snapshot = ColumnBytes(stmt, 8);
  return task;
}

absl::Status SqliteStore::ReadTasks(StmtUse& use, std::vector<TaskRecord>* out,
                                    absl::string_view what) {
  int rc;
  while ((rc = use.Step()) == SQLITE_ROW) {
    TOOLMESH_ASSIGN_OR_RETURN(TaskRecord task, ReadTask(use.get()));
    out->push_back(std::move(task));
  }
  if (rc != SQLITE_DONE) return Error(rc, what);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TaskRecord>> SqliteStore::LoadUnfinishedTasks() {
  std::vector<TaskRecord> out;
  StmtUse use(load_unfinished_);
  TOOLMESH_RETURN_IF_ERROR(ReadTasks(use, &out, "loading unfinished tasks"));
  return out;
}

absl::StatusOr<std::optional<TaskRecord>> SqliteStore::GetTask(
    const std::string& task_id) {
  std::vector<TaskRecord> out;
  StmtUse use(get_task_);
  use.Text(1, task_id);
  TOOLMESH_RETURN_IF_ERROR(
      ReadTasks(use, &out, absl::StrCat("reading task ", task_id)));
  if (out.empty()) return std::optional<TaskRecord>();
  return std::optional<TaskRecord>(std::move(out.front()));
}

absl::StatusOr<std::optional<std::string>>
SqliteStore::FindTaskByIdempotencyKey(const std::string& key) {
  if (key.empty()) {
    return absl::InvalidArgumentError("empty idempotency key");
  }
  StmtUse use(find_by_key_);
  use.Text(1, key);
  const int rc = use.Step();
  if (rc == SQLITE_ROW) {
    return std::optional<std::string>(ColumnBytes(use.get(), 0));
  }
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return Error(rc, "looking up an idempotency key");
}

absl::StatusOr<std::vector<EventRecord>> SqliteStore::LoadEvents(
    const std::string& task_id, std::uint64_t after_seq, std::size_t limit) {
  if (limit == 0) {
    return absl::InvalidArgumentError("LoadEvents: limit must be at least 1");
  }
  std::vector<EventRecord> out;
  if (after_seq >= kMaxStoredSeq) return out;
  StmtUse use(load_events_);
  use.Text(1, task_id);
  use.Int(2, static_cast<std::int64_t>(after_seq));
  use.Int(3, ClampToInt64(limit));
  int rc;
  while ((rc = use.Step()) == SQLITE_ROW) {
    const std::int64_t seq = sqlite3_column_int64(use.get(), 0);
    if (seq <= 0) {
      return absl::DataLossError(absl::StrCat(path_, " is damaged: task ",
                                              task_id, " has event seq ", seq));
    }
    out.push_back(EventRecord{task_id, static_cast<std::uint64_t>(seq),
                              ColumnBytes(use.get(), 1)});
  }
  if (rc != SQLITE_DONE) {
    return Error(rc, absl::StrCat("loading events of task ", task_id));
  }
  return out;
}

absl::StatusOr<TaskPage> SqliteStore::ListTasks(
    const ListTasksOptions& options) {
  TOOLMESH_RETURN_IF_ERROR(ValidateListOptions(options));
  std::int64_t mask = 0;
  for (int state : options.states) mask |= std::int64_t{1} << state;
  // One row more than asked tells whether there is a next page.
  const std::int64_t limit = options.limit >= kMaxStoredSeq
                                 ? static_cast<std::int64_t>(kMaxStoredSeq)
                                 : static_cast<std::int64_t>(options.limit) + 1;
  StmtUse use(options.after.has_value() ? list_after_ : list_first_);
  use.Int(1, mask);
  use.Int(2, limit);
  use.Int(3, options.with_snapshot ? 1 : 0);
  if (options.after.has_value()) {
    use.Int(4, StoredNanos(options.after->created_at));
    use.Text(5, options.after->task_id);
  }
  TaskPage page;
  TOOLMESH_RETURN_IF_ERROR(ReadTasks(use, &page.tasks, "listing tasks"));
  if (page.tasks.size() > options.limit) {
    page.tasks.resize(options.limit);
    const TaskRecord& last = page.tasks.back();
    page.next = TaskCursor{last.created_at, last.task_id};
  }
  return page;
}

absl::StatusOr<std::size_t> SqliteStore::DeleteFinished(
    absl::Time finished_before, std::size_t keep_newest) {
  TOOLMESH_RETURN_IF_ERROR(Run(begin_, "starting a transaction"));
  std::int64_t deleted = 0;
  absl::Status status;
  {
    StmtUse use(delete_finished_);
    use.Int(1, StoredNanos(finished_before));
    use.Int(2, ClampToInt64(keep_newest));
    const int rc = use.Step();
    if (rc == SQLITE_DONE) {
      deleted = sqlite3_changes64(db_.get());
    } else {
      status = Error(rc, "deleting finished tasks");
    }
  }
  if (status.ok()) status = Run(commit_, "committing the deletion");
  if (!status.ok()) {
    RollbackIfOpen();
    return status;
  }
  return static_cast<std::size_t>(deleted);
}

absl::StatusOr<StoreStats> SqliteStore::Stats() {
  std::int64_t values[4] = {0, 0, 0, 0};
  const StmtPtr* stmts[4] = {&count_tasks_, &count_events_, &page_count_,
                             &page_size_};
  for (int i = 0; i < 4; ++i) {
    StmtUse use(*stmts[i]);
    const int rc = use.Step();
    if (rc != SQLITE_ROW) {
      return Error(rc == SQLITE_DONE ? SQLITE_INTERNAL : rc, "reading stats");
    }
    values[i] = sqlite3_column_int64(use.get(), 0);
  }
  std::error_code ec;
  const std::uintmax_t wal_bytes =
      std::filesystem::file_size(path_ + "-wal", ec);
  StoreStats stats;
  stats.tasks = static_cast<std::uint64_t>(values[0]);
  stats.events = static_cast<std::uint64_t>(values[1]);
  stats.db_bytes = static_cast<std::uint64_t>(values[2] * values[3]) +
                   (ec ? 0 : static_cast<std::uint64_t>(wal_bytes));
  return stats;
}

// kDataLoss unless `path` is missing, empty, or starts with SQLite's header.
// Checked before SQLite touches the file, so that a file of another format
// is reported as such and never written.
absl::Status CheckFileHeader(const std::string& path) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::OkStatus();  // missing (or unreadable: SQLite says)
  if (size == 0) return absl::OkStatus();
  char header[sizeof(kSqliteHeader)] = {};
  std::ifstream in(path, std::ios::binary);
  in.read(header, sizeof(header));
  if (!in) {
    return absl::DataLossError(absl::StrCat(
        path, " is not an SQLite database (", size,
        " bytes, shorter than an SQLite header); refusing to start over it: "
        "move it away or choose another --data-dir"));
  }
  if (std::memcmp(header, kSqliteHeader, sizeof(kSqliteHeader)) != 0) {
    return absl::DataLossError(absl::StrCat(
        path,
        " is not an SQLite database (its header is not SQLite's); refusing to "
        "start over it: move it away or choose another --data-dir"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string SqliteDbPath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / kSqliteDbFileName).string();
}

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(
    const std::string& data_dir, SqliteStoreOptions options) {
  if (data_dir.empty()) {
    return absl::InvalidArgumentError("empty data dir");
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create data dir ", data_dir, ": ", ec.message()));
  }
  const std::string path = SqliteDbPath(data_dir);
  TOOLMESH_RETURN_IF_ERROR(CheckFileHeader(path));

  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &raw,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) {
    return SqliteStatus(rc, db.get(), path, "opening the database");
  }
  auto store = std::make_unique<SqliteStore>(path, std::move(db));
  TOOLMESH_RETURN_IF_ERROR(store->Init(options));
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace toolmesh::orchestrator
