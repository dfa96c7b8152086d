// A toolmesh cluster on loopback for integration tests; see cluster.h.
#include "tests/integration/cluster.h"

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

#ifndef TOOLMESH_BIN_DIR
#error "TOOLMESH_BIN_DIR must name the build's bin/ folder"
#endif
#ifndef TOOLMESH_INTEGRATION_SCENARIOS
#error "TOOLMESH_INTEGRATION_SCENARIOS must name tests/integration/scenarios"
#endif

namespace toolmesh::integration {
namespace {

constexpr char kListeningOn[] = "listening on ";

// This Abseil's string_view is not std::string_view; converts for absl calls.
absl::string_view Sv(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// "... listening on HOST:PORT" -> "HOST:PORT".
absl::StatusOr<std::string> AddressFromLine(const std::string& line) {
  const std::size_t at = line.find(kListeningOn);
  if (at == std::string::npos) {
    return absl::InternalError(absl::StrCat("no address in \"", line, "\""));
  }
  std::string address = line.substr(at + sizeof(kListeningOn) - 1);
  while (!address.empty() && (address.back() == ' ' || address.back() == '\t'))
    address.pop_back();
  const std::size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return absl::InternalError(absl::StrCat("no port in \"", line, "\""));
  }
  return address;
}

std::chrono::system_clock::time_point Deadline(absl::Duration timeout) {
  return absl::ToChronoTime(absl::Now() + timeout);
}

absl::Status FromGrpc(const grpc::Status& status, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(Sv(what), ": ", status.error_message()));
}

}  // namespace

std::string BinaryPath(std::string_view name) {
  return absl::StrCat(TOOLMESH_BIN_DIR, "/", Sv(name));
}

std::string ScenarioPath(std::string_view file_name) {
  return absl::StrCat(TOOLMESH_INTEGRATION_SCENARIOS, "/", Sv(file_name));
}

v1::TaskSpec MakeSpec(std::string_view prompt,
                      const std::vector<std::string>& client_tools) {
  v1::TaskSpec spec;
  spec.set_model("claude-sonnet-4-5");
  spec.set_max_tokens(1024);
  spec.set_prompt(std::string(prompt));
  for (const std::string& tool : client_tools) spec.add_client_tools(tool);
  return spec;
}

// ---------------------------------------------------------------------------
// TaskRun

const v1::TaskTerminal* TaskRun::terminal() const {
  for (const v1::TaskEvent& event : events) {
    if (event.has_terminal()) return &event.terminal();
  }
  return nullptr;
}

std::vector<v1::ToolTransition> TaskRun::Transitions() const {
  std::vector<v1::ToolTransition> out;
  for (const v1::TaskEvent& event : events) {
    if (event.has_tool_transition()) out.push_back(event.tool_transition());
  }
  return out;
}

std::vector<v1::ToolTransition> TaskRun::Transitions(
    std::string_view id) const {
  std::vector<v1::ToolTransition> out;
  for (const v1::TaskEvent& event : events) {
    if (event.has_tool_transition() &&
        event.tool_transition().tool_use_id() == id) {
      out.push_back(event.tool_transition());
    }
  }
  return out;
}

std::vector<std::string> TaskRun::ToolIds() const {
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (const v1::ToolTransition& t : Transitions()) {
    if (seen.insert(t.tool_use_id()).second) ids.push_back(t.tool_use_id());
  }
  return ids;
}

std::vector<std::string> TaskRun::ToolIdsNamed(std::string_view name) const {
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (const v1::ToolTransition& t : Transitions()) {
    if (t.name() == name && seen.insert(t.tool_use_id()).second) {
      ids.push_back(t.tool_use_id());
    }
  }
  return ids;
}

common::Json TaskRun::Conversation() const {
  const v1::TaskTerminal* end = terminal();
  if (end == nullptr) return nullptr;
  absl::StatusOr<common::Json> parsed =
      common::ParseJson(end->conversation_json());
  if (!parsed.ok()) return nullptr;
  return *std::move(parsed);
}

std::string TaskRun::Dump() const {
  std::string out = absl::StrCat("task ", task_id, ": ", events.size(),
                                 " events, status ", status.ToString(), "\n");
  for (const v1::TaskEvent& event : events) {
    absl::StrAppend(&out, event.ShortDebugString(), "\n");
  }
  return out;
}

// ---------------------------------------------------------------------------
// Cluster

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Start(
    ClusterOptions options) {
  std::unique_ptr<Cluster> cluster(new Cluster());
  cluster->options_ = std::move(options);
  const ClusterOptions& opts = cluster->options_;
  absl::StatusOr<std::unique_ptr<TempDir>> dir =
      TempDir::Create("toolmesh-it-");
  if (!dir.ok()) return dir.status();
  cluster->dir_ = *std::move(dir);
  const std::string& root = cluster->dir_->path();

  // The fake API.
  Process::Options fake;
  fake.path = BinaryPath("toolmesh-fakeapi");
  fake.name = "fakeapi";
  fake.args = {"--listen", "127.0.0.1:0", "--log", root + "/fakeapi.jsonl"};
  if (!opts.scenario.empty()) {
    fake.args.push_back("--scenario");
    fake.args.push_back(opts.scenario);
  }
  for (const std::string& arg : opts.fakeapi_args) fake.args.push_back(arg);
  fake.stderr_path = root + "/fakeapi.stderr";
  absl::StatusOr<std::unique_ptr<Process>> fakeapi = Process::Start(fake);
  if (!fakeapi.ok()) return fakeapi.status();
  cluster->fakeapi_ = *std::move(fakeapi);
  absl::StatusOr<std::string> line =
      cluster->fakeapi_->WaitForLine(kListeningOn, opts.startup_timeout);
  if (!line.ok()) return line.status();
  absl::StatusOr<std::string> fake_address = AddressFromLine(*line);
  if (!fake_address.ok()) return fake_address.status();
  const std::size_t colon = fake_address->rfind(':');
  cluster->fakeapi_host_ = fake_address->substr(0, colon);
  cluster->fakeapi_port_ = std::stoi(fake_address->substr(colon + 1));
  cluster->fakeapi_url_ = absl::StrCat("http://", *fake_address);

  // The orchestrator.
  Process::Options orch;
  orch.path = BinaryPath("toolmesh-orchestrator");
  orch.name = "orchestrator";
  orch.args = {"--listen",
               "127.0.0.1:0",
               "--http-listen",
               "127.0.0.1:0",
               "--data-dir",
               root + "/data",
               "--anthropic-base-url",
               cluster->fakeapi_url_,
               "--heartbeat-interval",
               "200ms",
               "--lease-duration",
               "1s",
               "--schedule-to-start-timeout",
               "2s",
               "--tool-timeout",
               "10s",
               // The cluster's clients and workers present no token.
               "--insecure-no-auth"};
  for (const std::string& arg : opts.orchestrator_args) {
    orch.args.push_back(arg);
  }
  orch.env = {{"ANTHROPIC_API_KEY", "integration-test-key"}};
  orch.stderr_path = root + "/orchestrator.stderr";
  std::error_code mkdir_error;
  std::filesystem::create_directories(root + "/data", mkdir_error);
  if (mkdir_error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", root, "/data: ", mkdir_error.message()));
  }
  cluster->orchestrator_options_ = orch;
  absl::StatusOr<std::unique_ptr<Process>> orchestrator = Process::Start(orch);
  if (!orchestrator.ok()) return orchestrator.status();
  cluster->orchestrator_ = *std::move(orchestrator);
  line = cluster->orchestrator_->WaitForLine("grpc listening on ",
                                             opts.startup_timeout);
  if (!line.ok()) return line.status();
  absl::StatusOr<std::string> grpc_address = AddressFromLine(*line);
  if (!grpc_address.ok()) return grpc_address.status();
  cluster->grpc_address_ = *grpc_address;
  line = cluster->orchestrator_->WaitForLine("http listening on ",
                                             opts.startup_timeout);
  if (!line.ok()) return line.status();
  cluster->client_ = v1::TaskService::NewStub(grpc::CreateChannel(
      cluster->grpc_address_, grpc::InsecureChannelCredentials()));

  // The workers.
  std::vector<std::string> ids;
  for (const WorkerSpec& spec : opts.workers) {
    if (absl::Status s = cluster->StartWorker(spec); !s.ok()) return s;
    ids.push_back(spec.id);
  }
  if (!ids.empty()) {
    if (absl::Status s = cluster->WaitForWorkers(ids, opts.startup_timeout);
        !s.ok()) {
      return s;
    }
  }
  return cluster;
}

Cluster::~Cluster() {
  for (auto& [id, worker] : workers_) {
    if (!worker->reaped()) worker->Signal(SIGTERM).IgnoreError();
  }
  // All workers drain at once; one that does not finish in time is killed.
  // (A second SIGTERM would make a draining worker exit at once.)
  for (auto& [id, worker] : workers_) {
    if (worker->Wait(absl::Seconds(3)).ok()) continue;
    worker->Signal(SIGKILL).IgnoreError();
    worker->Wait(absl::Seconds(10)).IgnoreError();
  }
  // Our channel goes first, so the orchestrator has no client to wait for.
  client_.reset();
  if (orchestrator_ != nullptr) {
    orchestrator_->Stop(absl::Seconds(5)).IgnoreError();
  }
  if (fakeapi_ != nullptr) fakeapi_->Stop(absl::Seconds(3)).IgnoreError();
  workers_.clear();
  orchestrator_.reset();
  fakeapi_.reset();
}

Process* Cluster::worker(std::string_view id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : it->second.get();
}

absl::Status Cluster::StartWorker(const WorkerSpec& spec) {
  const std::string tools_path =
      absl::StrCat(dir_->path(), "/tools-", spec.id, ".json");
  if (absl::Status s =
          WriteFile(tools_path, common::DumpJsonPretty(spec.tools));
      !s.ok()) {
    return s;
  }
  Process::Options options;
  options.path = BinaryPath("toolmesh-worker");
  options.name = absl::StrCat("worker ", spec.id);
  options.args = {"--orchestrator", grpc_address_,
                  "--tools",        tools_path,
                  "--concurrency",  absl::StrCat(spec.concurrency),
                  "--id",           spec.id};
  options.stderr_path =
      absl::StrCat(dir_->path(), "/worker-", spec.id, ".stderr");
  absl::StatusOr<std::unique_ptr<Process>> process = Process::Start(options);
  if (!process.ok()) return process.status();
  Process& started = **process;
  workers_[spec.id] = *std::move(process);
  return started
      .WaitForLine(absl::StrCat("worker ", spec.id, " connected to "),
                   options_.startup_timeout)
      .status();
}

absl::StatusOr<v1::ListWorkersResponse> Cluster::ListWorkers() {
  grpc::ClientContext context;
  context.set_deadline(Deadline(absl::Seconds(5)));
  v1::ListWorkersResponse response;
  grpc::Status status =
      client_->ListWorkers(&context, v1::ListWorkersRequest(), &response);
  if (!status.ok()) return FromGrpc(status, "ListWorkers");
  return response;
}

absl::Status Cluster::WaitForWorkers(const std::vector<std::string>& ids,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<std::string> missing = ids;
  absl::Status last = absl::OkStatus();
  while (true) {
    absl::StatusOr<v1::ListWorkersResponse> listed = ListWorkers();
    if (listed.ok()) {
      std::set<std::string> present;
      for (const v1::WorkerInfo& info : listed->workers()) {
        if (!info.draining()) present.insert(info.worker_id());
      }
      missing.clear();
      for (const std::string& id : ids) {
        if (!present.contains(id)) missing.push_back(id);
      }
      if (missing.empty()) return absl::OkStatus();
    } else {
      last = listed.status();
    }
    if (absl::Now() >= deadline) break;
    // Workers register asynchronously after their "connected" line; re-ask
    // a few times per second until the deadline.
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "ListWorkers still lacks [", absl::StrJoin(missing, ", "), "] after ",
      absl::FormatDuration(timeout),
      last.ok() ? "" : absl::StrCat(" (last error: ", last.ToString(), ")"),
      "\n", Logs()));
}

absl::StatusOr<std::string> Cluster::Submit(const v1::TaskSpec& spec) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(absl::Seconds(10)));
  v1::SubmitTaskRequest request;
  *request.mutable_spec() = spec;
  v1::SubmitTaskResponse response;
  grpc::Status status = client_->SubmitTask(&context, request, &response);
  if (!status.ok()) return FromGrpc(status, "SubmitTask");
  if (response.task_id().empty()) {
    return absl::InternalError("SubmitTask returned an empty task_id");
  }
  return response.task_id();
}

TaskRun Cluster::Watch(const std::string& task_id, absl::Duration timeout,
                       const EventHook& hook, bool omit_deltas,
                       std::uint64_t after_seq) {
  TaskRun run;
  run.task_id = task_id;
  grpc::ClientContext context;
  context.set_deadline(Deadline(timeout));
  v1::WatchTaskRequest request;
  request.set_task_id(task_id);
  request.set_omit_deltas(omit_deltas);
  request.set_after_seq(after_seq);
  std::unique_ptr<grpc::ClientReader<v1::TaskEvent>> reader =
      client_->WatchTask(&context, request);
  bool terminal = false;
  v1::TaskEvent event;
  while (reader->Read(&event)) {
    run.events.push_back(event);
    if (hook) hook(event);
    if (event.has_terminal()) terminal = true;
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    run.status = FromGrpc(status, "WatchTask");
  } else if (!terminal) {
    run.status = absl::DataLossError(
        "WatchTask ended with OK before a TaskTerminal event");
  }
  return run;
}

absl::Status Cluster::RestartOrchestrator() {
  if (absl::Status killed = orchestrator_->Signal(SIGKILL); !killed.ok()) {
    return killed;
  }
  if (absl::StatusOr<int> waited = orchestrator_->Wait(absl::Seconds(10));
      !waited.ok()) {
    return waited.status();
  }
  Process::Options options = orchestrator_options_;
  for (std::size_t i = 0; i + 1 < options.args.size(); ++i) {
    if (options.args[i] == "--listen") options.args[i + 1] = grpc_address_;
  }
  options.stderr_path += ".restarted";
  absl::StatusOr<std::unique_ptr<Process>> orchestrator =
      Process::Start(options);
  if (!orchestrator.ok()) return orchestrator.status();
  orchestrator_ = *std::move(orchestrator);
  absl::StatusOr<std::string> line =
      orchestrator_->WaitForLine("grpc listening on ", absl::Seconds(20));
  if (!line.ok()) return line.status();
  line = orchestrator_->WaitForLine("http listening on ", absl::Seconds(20));
  return line.status();
}

TaskRun Cluster::Run(const v1::TaskSpec& spec, absl::Duration timeout,
                     const EventHook& hook) {
  absl::StatusOr<std::string> id = Submit(spec);
  if (!id.ok()) {
    TaskRun run;
    run.status = id.status();
    return run;
  }
  return Watch(*id, timeout, hook);
}

absl::Status Cluster::Cancel(const std::string& task_id,
                             std::string_view reason) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(absl::Seconds(5)));
  v1::CancelTaskRequest request;
  request.set_task_id(task_id);
  request.set_reason(std::string(reason));
  v1::CancelTaskResponse response;
  return FromGrpc(client_->CancelTask(&context, request, &response),
                  "CancelTask");
}

absl::StatusOr<common::Json> Cluster::FakeApiGet(std::string_view path) {
  httplib::Client client(fakeapi_host_, fakeapi_port_);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(10, 0);
  httplib::Result result = client.Get(std::string(path));
  if (!result) {
    return absl::UnavailableError(absl::StrCat(
        "GET ", Sv(path), ": ", httplib::to_string(result.error())));
  }
  if (result->status != 200) {
    return absl::InternalError(absl::StrCat("GET ", Sv(path), ": HTTP ",
                                            result->status, " ", result->body));
  }
  absl::StatusOr<common::Json> json = common::ParseJson(result->body);
  if (!json.ok()) {
    return absl::InternalError(
        absl::StrCat("GET ", Sv(path), ": ", json.status().message()));
  }
  return json;
}

std::string Cluster::Logs() const {
  std::string out;
  if (fakeapi_ != nullptr) absl::StrAppend(&out, fakeapi_->Describe(), "\n");
  if (orchestrator_ != nullptr) {
    absl::StrAppend(&out, orchestrator_->Describe(), "\n");
  }
  for (const auto& [id, worker] : workers_) {
    absl::StrAppend(&out, worker->Describe(), "\n");
  }
  return out;
}

}  // namespace toolmesh::integration
