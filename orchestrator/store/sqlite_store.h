// SqliteStore: the Store contract (store.h) on an embedded SQLite database,
// the orchestrator's default under --data-dir.
//
// One file, <data_dir>/toolmesh.db, in WAL mode (beside it SQLite keeps
// toolmesh.db-wal and toolmesh.db-shm while it is open). Each Commit is one
// SQLite transaction; with synchronous=FULL (the default) it is on disk when
// Commit returns, so it survives a power loss; with NORMAL it survives a
// crash of the process but the last commits may be lost on a power loss.
//
// The file is checked when it is opened, and never silently replaced:
//   - missing or empty: a new database is created (and the directory);
//   - not an SQLite file, or failing `PRAGMA quick_check`: kDataLoss;
//   - an SQLite database of another program (its application_id is not
//     kSqliteApplicationId, or it is 0 with tables in it):
//     kFailedPrecondition, the file left untouched;
//   - a schema newer than kSqliteSchemaVersion: kFailedPrecondition.
// A full disk (or the max_db_bytes limit) fails the commit with
// kResourceExhausted ("disk full writing <file>"); the transaction is rolled
// back and earlier commits stay readable.
//
// Thread-safety: thread-compatible. The store owns one SQLite connection
// (opened without SQLite's own mutexes) and its cached prepared statements;
// one thread at a time may call it. One process should own a data dir: two
// stores on the same file serialise their writes through SQLite's locks
// (waiting up to busy_timeout, then kUnavailable) but each would resume the
// same unfinished tasks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "orchestrator/store/store.h"

namespace toolmesh::orchestrator {

// The database file's name inside the data dir.
inline constexpr char kSqliteDbFileName[] = "toolmesh.db";
// `PRAGMA application_id` of a toolmesh database ("Tmsh").
inline constexpr std::int32_t kSqliteApplicationId = 0x546d7368;
// `PRAGMA user_version`: the schema this build writes.
inline constexpr int kSqliteSchemaVersion = 1;

enum class SqliteSynchronous {
  // fsync the WAL on every commit: durable across power loss.
  kFull,
  // fsync only at checkpoints: durable across process crashes.
  kNormal,
};

struct SqliteStoreOptions {
  SqliteSynchronous synchronous = SqliteSynchronous::kFull;
  // How long a statement waits for a lock held by another connection.
  absl::Duration busy_timeout = absl::Seconds(5);
  // Run `PRAGMA quick_check` on an existing database at open (reads the
  // whole file once).
  bool verify_on_open = true;
  // Upper bound of the database file size (SQLite's max_page_count); a
  // commit that would grow past it fails like a full disk. 0: no bound.
  std::uint64_t max_db_bytes = 0;
};

// <data_dir>/toolmesh.db.
std::string SqliteDbPath(const std::string& data_dir);

// Opens (creating if needed) the store in `data_dir`, creating the
// directory if missing. Blocks on disk I/O (a quick_check reads the whole
// file). Errors: kInvalidArgument for an empty data_dir; kDataLoss,
// kFailedPrecondition as in the file comment; kUnavailable when the
// directory or file cannot be created or opened, or the database is locked.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(
    const std::string& data_dir, SqliteStoreOptions options = {});

}  // namespace toolmesh::orchestrator
