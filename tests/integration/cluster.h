// A toolmesh cluster on loopback for integration tests: toolmesh-fakeapi
// (with a scenario file), toolmesh-orchestrator, N toolmesh-worker
// processes with their own tools.json, and a TaskService client.
//
// Everything binds port 0 and lives in one temporary directory (the
// orchestrator's data dir, every tools.json, every process's stderr), which
// is removed when the Cluster is destroyed. Processes are stopped (workers
// first) and reaped by the destructor. Every wait has a deadline.
//
// Binaries are looked up in TOOLMESH_BIN_DIR (a compile definition: the
// build's bin/ folder); a binary that is not built makes Start() fail with
// kNotFound naming it.
//
// Thread-safety: a Cluster is used from the test thread only.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "tests/integration/process.h"
#include "toolmesh/v1/task_service.grpc.pb.h"

namespace toolmesh::integration {

// The generated TaskService client class.
using TaskServiceClient = v1::TaskService::Stub;

// The absolute path of a toolmesh binary in TOOLMESH_BIN_DIR.
std::string BinaryPath(std::string_view name);

// The absolute path of a scenario file in tests/integration/scenarios/.
std::string ScenarioPath(std::string_view file_name);

// One worker process.
struct WorkerSpec {
  // --id; also the name its Process gets ("worker ID").
  std::string id;
  // The tools.json array (written to DIR/tools-ID.json).
  common::Json tools = common::Json::array();
  // --concurrency.
  int concurrency = 2;
};

struct ClusterOptions {
  // Scenario file for toolmesh-fakeapi; empty: its rule-driven model.
  std::string scenario;
  // Extra toolmesh-fakeapi flags (e.g. {"--seed", "7"}).
  std::vector<std::string> fakeapi_args;
  // Orchestrator flags added after the defaults (--heartbeat-interval 200ms
  // --lease-duration 1s --schedule-to-start-timeout 2s --tool-timeout 10s
  // --insecure-no-auth).
  std::vector<std::string> orchestrator_args;
  std::vector<WorkerSpec> workers;
  // Bound on each startup wait (a port line, a worker being listed).
  absl::Duration startup_timeout = absl::Seconds(20);
};

// The events of one task as WatchTask delivered them.
struct TaskRun {
  std::string task_id;
  std::vector<v1::TaskEvent> events;
  // OK when the stream ended after a TaskTerminal event; otherwise why not
  // (deadline, stream error).
  absl::Status status;

  // The TaskTerminal event, or nullptr.
  const v1::TaskTerminal* terminal() const;
  // Every ToolTransition, in order.
  std::vector<v1::ToolTransition> Transitions() const;
  // The transitions of one tool_use_id, in order.
  std::vector<v1::ToolTransition> Transitions(std::string_view id) const;
  // tool_use_ids in the order they were first announced.
  std::vector<std::string> ToolIds() const;
  // tool_use_ids whose name is `name`, in announce order.
  std::vector<std::string> ToolIdsNamed(std::string_view name) const;
  // The terminal event's conversation_json parsed (a `messages` array), or
  // null when there is none or it is not JSON.
  common::Json Conversation() const;
  // One line per event (TextFormat short form), for failure messages.
  std::string Dump() const;
};

class Cluster {
 public:
  // Starts the fake API, the orchestrator and every worker, and waits until
  // ListWorkers shows all workers. Errors: kNotFound (a binary is missing),
  // kDeadlineExceeded / kFailedPrecondition (a process did not come up; the
  // message has its output), kInternal.
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(ClusterOptions options);

  // Stops workers, then the orchestrator, then the fake API (SIGTERM with a
  // short grace, then SIGKILL), reaps them and removes the directory.
  ~Cluster();

  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // The temporary directory of this cluster.
  const std::string& dir() const { return dir_->path(); }
  // The orchestrator's gRPC address, HOST:PORT.
  const std::string& orchestrator_address() const { return grpc_address_; }
  // The fake API's base URL, http://HOST:PORT.
  const std::string& fakeapi_url() const { return fakeapi_url_; }
  TaskServiceClient& tasks() { return *client_; }

  // The worker with this id, or nullptr.
  Process* worker(std::string_view id);
  Process& orchestrator() { return *orchestrator_; }
  Process& fakeapi() { return *fakeapi_; }

  // Writes the worker's tools.json, starts it and waits for its
  // "worker ID connected to" line. Does not wait for ListWorkers.
  absl::Status StartWorker(const WorkerSpec& spec);

  // Polls ListWorkers until every id in `ids` is listed (and not draining).
  // Errors: kDeadlineExceeded naming the missing ones.
  absl::Status WaitForWorkers(const std::vector<std::string>& ids,
                              absl::Duration timeout);

  // The ListWorkers response (5 s deadline).
  absl::StatusOr<v1::ListWorkersResponse> ListWorkers();

  // SubmitTask; returns the task id.
  absl::StatusOr<std::string> Submit(const v1::TaskSpec& spec);

  // Called for every event as it arrives, on the calling thread, before the
  // next one is read; may act on the cluster (kill a worker, cancel).
  using EventHook = std::function<void(const v1::TaskEvent&)>;

  // Watches `task_id` from the first event until the terminal event, the
  // stream's end, or `timeout`. Always returns what arrived; see
  // TaskRun::status.
  TaskRun Watch(const std::string& task_id, absl::Duration timeout,
                const EventHook& hook = nullptr, bool omit_deltas = true,
                std::uint64_t after_seq = 0);

  // Kills the orchestrator with SIGKILL (no shutdown at all) and starts it
  // again on the same address and data dir; returns once it listens.
  // Workers reconnect on their own.
  absl::Status RestartOrchestrator();

  // Submit + Watch.
  TaskRun Run(const v1::TaskSpec& spec, absl::Duration timeout,
              const EventHook& hook = nullptr);

  // CancelTask with `reason`.
  absl::Status Cancel(const std::string& task_id, std::string_view reason);

  // GET `path` (e.g. "/_fake/stats") from the fake API, parsed as JSON.
  // Errors: kUnavailable (no answer), kInternal (status not 200, not JSON).
  absl::StatusOr<common::Json> FakeApiGet(std::string_view path);

  // The stdout and stderr tails of every process, for failure messages.
  std::string Logs() const;

 private:
  Cluster() = default;

  ClusterOptions options_;
  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<Process> fakeapi_;
  std::unique_ptr<Process> orchestrator_;
  Process::Options orchestrator_options_;
  std::map<std::string, std::unique_ptr<Process>, std::less<>> workers_;
  std::string fakeapi_host_;
  int fakeapi_port_ = 0;
  std::string fakeapi_url_;
  std::string grpc_address_;
  std::unique_ptr<TaskServiceClient> client_;
};

// A TaskSpec with model "claude-sonnet-4-5", max_tokens 1024, `prompt` and
// these client tools.
v1::TaskSpec MakeSpec(std::string_view prompt,
                      const std::vector<std::string>& client_tools);

}  // namespace toolmesh::integration
