// Commit throughput of the stores for batches shaped like one engine loop
// iteration: one task upsert (2 KiB snapshot) plus N events of 300 bytes.
// Compares SqliteStore with synchronous=FULL and NORMAL against MemoryStore
// (durability off). items/s counts events; batches/s counts commits.
//
// The database lives in a fresh directory under $TOOLMESH_BENCH_DIR, else
// $TMPDIR, else /tmp: put it on the disk you want to measure (a tmpfs makes
// fsync free). Like a real engine, each task gets 64 batches and is then
// deleted (retention) four tasks later, so the data stays bounded.
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "orchestrator/store/memory_store.h"
#include "orchestrator/store/sqlite_store.h"

namespace toolmesh::orchestrator {
namespace {

enum StoreKind : std::int64_t {
  kMemory = 0,
  kSqliteFull = 1,
  kSqliteNormal = 2
};

constexpr std::uint64_t kBatchesPerTask = 64;
constexpr std::uint64_t kLiveTasks = 4;

std::string MakeTempDir() {
  const char* base = getenv("TOOLMESH_BENCH_DIR");
  if (base == nullptr || *base == '\0') base = getenv("TMPDIR");
  if (base == nullptr || *base == '\0') base = "/tmp";
  std::string pattern = absl::StrCat(base, "/store_benchmark.XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) return std::string();
  return pattern;
}

void BM_CommitEngineIteration(benchmark::State& state) {
  const auto kind = static_cast<StoreKind>(state.range(0));
  const auto events_per_batch = static_cast<std::uint64_t>(state.range(1));
  std::string dir;
  std::unique_ptr<Store> store;
  if (kind == kMemory) {
    state.SetLabel("memory");
    store = std::make_unique<MemoryStore>();
  } else {
    dir = MakeTempDir();
    SqliteStoreOptions options;
    options.synchronous = kind == kSqliteFull ? SqliteSynchronous::kFull
                                              : SqliteSynchronous::kNormal;
    state.SetLabel(kind == kSqliteFull ? "sqlite FULL" : "sqlite NORMAL");
    auto opened = OpenSqliteStore(dir, options);
    if (!opened.ok()) {
      state.SkipWithError(std::string(opened.status().message()).c_str());
      return;
    }
    store = *std::move(opened);
  }

  const std::string payload(300, 'e');
  const absl::Time t0 = absl::FromUnixSeconds(1'700'000'000);
  TaskRecord task;
  task.spec = std::string(512, 's');
  task.state = 2;
  task.created_at = t0;
  task.snapshot = std::string(2048, 'j');

  std::uint64_t batches = 0;
  for (auto _ : state) {
    const std::uint64_t task_index = batches / kBatchesPerTask;
    const std::uint64_t in_task = batches % kBatchesPerTask;
    WriteBatch batch;
    task.task_id = absl::StrCat("task-", task_index);
    task.updated_at = t0 + absl::Milliseconds(batches);
    task.last_seq = (in_task + 1) * events_per_batch;
    batch.PutTask(task);
    for (std::uint64_t k = 1; k <= events_per_batch; ++k) {
      batch.AppendEvent(
          EventRecord{task.task_id, in_task * events_per_batch + k, payload});
    }
    if (in_task == 0 && task_index >= kLiveTasks) {
      batch.DeleteTask(absl::StrCat("task-", task_index - kLiveTasks));
    }
    const absl::Status status = store->Commit(batch);
    if (!status.ok()) {
      state.SkipWithError(std::string(status.message()).c_str());
      break;
    }
    ++batches;
  }
  state.SetItemsProcessed(
      static_cast<std::int64_t>(batches * events_per_batch));
  state.counters["batches/s"] = benchmark::Counter(static_cast<double>(batches),
                                                   benchmark::Counter::kIsRate);

  store.reset();
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
}

BENCHMARK(BM_CommitEngineIteration)
    ->ArgsProduct({{kMemory, kSqliteFull, kSqliteNormal}, {1, 8, 16, 256}})
    ->ArgNames({"store", "events"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace toolmesh::orchestrator

BENCHMARK_MAIN();
