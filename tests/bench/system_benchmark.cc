// System benchmarks of issue 9 over real processes on loopback
// (toolmesh-fakeapi, toolmesh-orchestrator with its default SQLite store in
// a temporary --data-dir, toolmesh-worker serving builtin tools), printed as
// key=value lines. Two modes, each starting its own cluster:
//
//  dispatch  - toolcall_rtt: sequential tasks of one echo call each; the
//              call's round trip is its RUNNING -> DONE transition times
//              (orchestrator clock), also queued (input complete) -> DONE.
//            - burst: tasks whose first response holds --calls-per-task
//              parallel echo calls, all submitted at once, totalling
//              --burst-calls across 2 workers; calls/s over the dispatch
//              window (first RUNNING to last DONE) and over the wall time
//              (first submit to the last terminal event).
//            - turn_overhead: sequential text-only tasks (one end_turn
//              turn each): client wall time per task (SubmitTask to the
//              terminal event) minus the time of the same request body
//              POSTed to the fake API directly with libcurl (keep-alive,
//              sequential).
//  tasks10k  - rss_10k_tasks: --tasks tasks each waiting on a builtin
//              sleep of an hour, on as many workers of 1000 slots as that
//              takes (10 for 10,000); orchestrator VmRSS once every call is
//              RUNNING on a worker.
//            - restart_10k: SIGKILL the orchestrator with those tasks
//              unfinished, start it again on the same data dir: seconds
//              until a worker runs a call again (ListWorkers running_calls
//              > 0), and until every call is re-dispatched.
//
// Durability: dispatch runs its phases twice, on the default SQLite store
// (every commit fsynced) and with `--store memory`; the second run's keys
// end in `_memory`, so the ratio of the two is measured in one run.
//
// Usage: system_benchmark dispatch|tasks10k [--floor-p50-us X] [flags]
// (see kUsage). Every wait is bounded; a failure prints one line on stderr
// and exits 1 after printing what was measured so far.
#include <curl/curl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "tests/bench/bench_util.h"
#include "tests/integration/cluster.h"
#include "tests/integration/process.h"

namespace toolmesh::bench {
namespace {

using common::Json;
using integration::Cluster;
using integration::ClusterOptions;
using integration::TaskRun;
using integration::WorkerSpec;

constexpr char kUsage[] =
    "usage: system_benchmark dispatch|tasks10k [flags]\n"
    "  --floor-p50-us X      gRPC floor p50 of this run (for ratios); "
    "measured here when absent\n"
    "  --rtt-tasks N         sequential one-call tasks (dispatch; 300)\n"
    "  --burst-calls N       calls in the burst (dispatch; 10000)\n"
    "  --calls-per-task N    parallel calls per burst task (dispatch; 100)\n"
    "  --turn-tasks N        sequential text-only tasks (dispatch; 200)\n"
    "  --concurrency N       slots per worker (dispatch 256, tasks10k 1000)\n"
    "  --tasks N             waiting tasks (tasks10k; 10000)\n"
    "  --timeout-seconds S   bound on each phase's waits (120)\n";

// Targets of issue 9 / issue 6.
constexpr double kRttOverFloorTarget = 3.0;
constexpr double kBurstCallsPerSecTarget = 20000;
constexpr double kTurnOverheadMsTarget = 1.0;
constexpr double kRssMibTarget = 1024;
constexpr double kRestartSecondsTarget = 3.0;

// Slots of each sleep worker in tasks10k (toolmesh-worker allows 1..1024).
constexpr int kSlotsPerSleepWorker = 1000;

struct Flags {
  std::string mode;
  double floor_p50_us = 0;
  int rtt_tasks = 300;
  int burst_calls = 10000;
  int calls_per_task = 100;
  int turn_tasks = 200;
  int concurrency = 0;
  int tasks = 10000;
  absl::Duration timeout = absl::Seconds(120);
};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "system_benchmark: %s\n", what.c_str());
  std::exit(1);
}

[[noreturn]] void UsageError(const std::string& what) {
  std::fprintf(stderr, "system_benchmark: %s\n%s", what.c_str(), kUsage);
  std::exit(2);
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  if (argc < 2) UsageError("no mode");
  flags.mode = argv[1];
  if (flags.mode != "dispatch" && flags.mode != "tasks10k") {
    UsageError(absl::StrCat("unknown mode `", flags.mode, "`"));
  }
  for (int i = 2; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) UsageError(absl::StrCat(flag, " needs a value"));
    const char* value = argv[i + 1];
    bool ok = true;
    double seconds = 0;
    if (flag == "--floor-p50-us") {
      ok = absl::SimpleAtod(value, &flags.floor_p50_us);
    } else if (flag == "--rtt-tasks") {
      ok = absl::SimpleAtoi(value, &flags.rtt_tasks) && flags.rtt_tasks > 0;
    } else if (flag == "--burst-calls") {
      ok = absl::SimpleAtoi(value, &flags.burst_calls) && flags.burst_calls > 0;
    } else if (flag == "--calls-per-task") {
      ok = absl::SimpleAtoi(value, &flags.calls_per_task) &&
           flags.calls_per_task > 0;
    } else if (flag == "--turn-tasks") {
      ok = absl::SimpleAtoi(value, &flags.turn_tasks) && flags.turn_tasks > 0;
    } else if (flag == "--concurrency") {
      ok = absl::SimpleAtoi(value, &flags.concurrency) && flags.concurrency > 0;
    } else if (flag == "--tasks") {
      ok = absl::SimpleAtoi(value, &flags.tasks) && flags.tasks > 0;
    } else if (flag == "--timeout-seconds") {
      ok = absl::SimpleAtod(value, &seconds) && seconds > 0;
      flags.timeout = absl::Seconds(seconds);
    } else {
      ok = false;
    }
    if (!ok) UsageError(absl::StrCat("bad flag ", flag, " ", value));
  }
  return flags;
}

absl::Time ToTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

Json BuiltinTool(const std::string& name) {
  Json tool = {{"name", name}, {"executor", {{"type", "builtin"}, {"name", name}}}};
  if (name == "echo") {
    tool["description"] = "Returns its input as JSON text.";
    tool["input_schema"] = {{"type", "object"},
                            {"properties", {{"text", {{"type", "string"}}}}},
                            {"required", Json::array({"text"})}};
  } else {
    tool["description"] = "Waits `ms` milliseconds, then says so.";
    tool["input_schema"] = {
        {"type", "object"},
        {"properties", {{"ms", {{"type", "integer"}, {"minimum", 0}}}}},
        {"required", Json::array({"ms"})}};
  }
  return tool;
}

Json EchoCall(int i) {
  return {{"type", "tool_use"},
          {"name", "echo"},
          {"input", {{"text", absl::StrCat("call ", i)}}}};
}

// Per-call transition times of one run.
struct CallTimes {
  absl::Time queued = absl::InfinitePast();  // last PENDING (input complete)
  absl::Time running = absl::InfinitePast();
  absl::Time done = absl::InfinitePast();
};

std::map<std::string, CallTimes> CallTimesOf(const TaskRun& run) {
  std::map<std::string, CallTimes> calls;
  for (const v1::TaskEvent& event : run.events) {
    if (!event.has_tool_transition()) continue;
    const v1::ToolTransition& t = event.tool_transition();
    CallTimes& c = calls[t.tool_use_id()];
    const absl::Time at = ToTime(event.time());
    switch (t.state()) {
      case v1::TOOL_CALL_STATE_PENDING:
        c.queued = at;
        break;
      case v1::TOOL_CALL_STATE_RUNNING:
        if (c.running == absl::InfinitePast()) c.running = at;
        break;
      case v1::TOOL_CALL_STATE_DONE:
        c.done = at;
        break;
      default:
        break;
    }
  }
  return calls;
}

// Checks that a run completed and every call of it ended DONE.
absl::Status CheckCompleted(const TaskRun& run, std::size_t expected_calls) {
  if (!run.status.ok()) return run.status;
  const v1::TaskTerminal* end = run.terminal();
  if (end == nullptr || end->state() != v1::TASK_STATE_COMPLETED) {
    return absl::InternalError(
        absl::StrCat("task ", run.task_id, " did not complete: ",
                     end == nullptr ? "no terminal" : end->ShortDebugString()));
  }
  std::size_t done = 0;
  for (const auto& [id, c] : CallTimesOf(run)) {
    if (c.done != absl::InfinitePast()) ++done;
  }
  if (done != expected_calls) {
    return absl::InternalError(absl::StrCat("task ", run.task_id, ": ", done,
                                            " calls DONE, expected ",
                                            expected_calls));
  }
  return absl::OkStatus();
}

double FloorP50Us(const Flags& flags) {
  if (flags.floor_p50_us > 0) return flags.floor_p50_us;
  auto floor = RunGrpcFloor(200, 2000, absl::Seconds(2), 100000);
  if (!floor.ok()) Fail(floor.status().ToString());
  const double p50 = Micros(floor->round_trips.Percentile(50));
  Print("grpc_floor_p50_us", p50, 1);
  return p50;
}

// ---------------------------------------------------------------------------
// dispatch

std::unique_ptr<integration::TempDir> g_scenario_dir;

std::string WriteScenario(const Json& scenario) {
  auto dir = integration::TempDir::Create("toolmesh-bench-");
  if (!dir.ok()) Fail(dir.status().ToString());
  g_scenario_dir = *std::move(dir);
  const std::string path = g_scenario_dir->path() + "/scenario.json";
  if (absl::Status s = integration::WriteFile(path, common::DumpJson(scenario));
      !s.ok()) {
    Fail(s.ToString());
  }
  return path;
}

absl::Status RunToolcallRtt(Cluster& cluster, const Flags& flags,
                            double floor_us) {
  Samples rtt;
  Samples queued_to_done;
  for (int i = 0; i < flags.rtt_tasks; ++i) {
    TaskRun run = cluster.Run(integration::MakeSpec("rtt please", {"echo"}),
                              flags.timeout);
    if (absl::Status s = CheckCompleted(run, 1); !s.ok()) {
      return absl::InternalError(
          absl::StrCat("toolcall_rtt: ", s.ToString(), "\n", cluster.Logs()));
    }
    for (const auto& [id, c] : CallTimesOf(run)) {
      rtt.Add(c.done - c.running);
      queued_to_done.Add(c.done - c.queued);
    }
  }
  Print("toolcall_rtt_samples", static_cast<std::int64_t>(rtt.size()));
  Print("toolcall_rtt_p50_us", Micros(rtt.Percentile(50)), 1);
  Print("toolcall_rtt_p99_us", Micros(rtt.Percentile(99)), 1);
  Print("toolcall_queued_to_done_p50_us", Micros(queued_to_done.Percentile(50)),
        1);
  Print("toolcall_queued_to_done_p99_us", Micros(queued_to_done.Percentile(99)),
        1);
  const double ratio = Micros(rtt.Percentile(50)) / floor_us;
  Print("toolcall_rtt_p50_over_floor", ratio, 2);
  PrintTarget("toolcall_rtt_p50_le_3x_floor", ratio <= kRttOverFloorTarget);
  return absl::OkStatus();
}

absl::Status RunBurst(Cluster& cluster, const Flags& flags) {
  const int tasks = (flags.burst_calls + flags.calls_per_task - 1) /
                    flags.calls_per_task;
  std::vector<TaskRun> runs(static_cast<std::size_t>(tasks));
  std::vector<absl::Time> terminal_seen(runs.size(), absl::InfinitePast());
  const absl::Time start = absl::Now();
  {
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      threads.emplace_back([&, i] {
        runs[i] = cluster.Run(
            integration::MakeSpec("burst please", {"echo"}), flags.timeout,
            [&, i](const v1::TaskEvent& event) {
              if (event.has_terminal()) terminal_seen[i] = absl::Now();
            });
      });
    }
    for (std::thread& t : threads) t.join();
  }
  absl::Time first_running = absl::InfiniteFuture();
  absl::Time first_queued = absl::InfiniteFuture();
  absl::Time last_done = absl::InfinitePast();
  absl::Time last_terminal = absl::InfinitePast();
  Samples rtt;
  std::int64_t calls = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (absl::Status s = CheckCompleted(
            runs[i], static_cast<std::size_t>(flags.calls_per_task));
        !s.ok()) {
      return absl::InternalError(
          absl::StrCat("burst: ", s.ToString(), "\n", cluster.Logs()));
    }
    last_terminal = std::max(last_terminal, terminal_seen[i]);
    for (const auto& [id, c] : CallTimesOf(runs[i])) {
      ++calls;
      first_running = std::min(first_running, c.running);
      first_queued = std::min(first_queued, c.queued);
      last_done = std::max(last_done, c.done);
      rtt.Add(c.done - c.running);
    }
  }
  const double window = absl::ToDoubleSeconds(last_done - first_running);
  const double wall = absl::ToDoubleSeconds(last_terminal - start);
  const double per_sec = static_cast<double>(calls) / window;
  Print("burst_tasks", static_cast<std::int64_t>(tasks));
  Print("burst_calls", calls);
  Print("burst_dispatch_window_ms", window * 1000, 1);
  Print("burst_queued_window_ms",
        absl::ToDoubleMilliseconds(last_done - first_queued), 1);
  Print("burst_calls_per_sec", per_sec, 0);
  Print("burst_wall_ms", wall * 1000, 1);
  Print("burst_wall_calls_per_sec", static_cast<double>(calls) / wall, 0);
  Print("burst_rtt_p50_us", Micros(rtt.Percentile(50)), 1);
  Print("burst_rtt_p99_us", Micros(rtt.Percentile(99)), 1);
  PrintTarget("burst_ge_20000_calls_per_sec",
              per_sec >= kBurstCallsPerSecTarget);
  return absl::OkStatus();
}

std::size_t DiscardBody(char*, std::size_t size, std::size_t n, void* out) {
  *static_cast<std::size_t*>(out) += size * n;
  return size * n;
}

// POSTs `body` to `url` `count` times on one keep-alive connection.
absl::StatusOr<Samples> DirectRequests(const std::string& url,
                                       const std::string& body, int count) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "x-api-key: bench");
  headers = curl_slist_append(headers, "anthropic-version: 2023-06-01");
  headers = curl_slist_append(headers, "content-type: application/json");
  std::size_t bytes = 0;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, DiscardBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &bytes);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  Samples samples;
  absl::Status status;
  for (int i = 0; i < count + 5 && status.ok(); ++i) {
    const absl::Time t0 = absl::Now();
    const CURLcode code = curl_easy_perform(curl);
    const absl::Time t1 = absl::Now();
    long http = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http);
    if (code != CURLE_OK || http != 200) {
      status = absl::InternalError(absl::StrCat(
          "direct request: curl ", curl_easy_strerror(code), ", HTTP ", http));
    } else if (i >= 5) {  // the first few warm the connection up
      samples.Add(t1 - t0);
    }
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (!status.ok()) return status;
  return samples;
}

absl::Status RunTurnOverhead(Cluster& cluster, const Flags& flags) {
  Samples wall;
  Samples engine_turn;  // TurnStarted -> TurnCompleted (orchestrator clock)
  Samples engine_task;  // first event -> terminal event (orchestrator clock)
  for (int i = 0; i < flags.turn_tasks; ++i) {
    absl::Time terminal_at = absl::InfinitePast();
    const absl::Time t0 = absl::Now();
    TaskRun run = cluster.Run(integration::MakeSpec("plain please", {"echo"}),
                              flags.timeout, [&](const v1::TaskEvent& event) {
                                if (event.has_terminal()) {
                                  terminal_at = absl::Now();
                                }
                              });
    if (absl::Status s = CheckCompleted(run, 0); !s.ok()) {
      return absl::InternalError(absl::StrCat("turn_overhead: ", s.ToString(),
                                              "\n", cluster.Logs()));
    }
    wall.Add(terminal_at - t0);
    absl::Time started = absl::InfinitePast();
    for (const v1::TaskEvent& event : run.events) {
      if (event.has_turn_started()) started = ToTime(event.time());
      if (event.has_turn_completed()) {
        engine_turn.Add(ToTime(event.time()) - started);
      }
    }
    engine_task.Add(ToTime(run.events.back().time()) -
                    ToTime(run.events.front().time()));
  }
  // The same body the orchestrator sent, straight to the fake API.
  absl::StatusOr<Json> log = cluster.FakeApiGet("/_fake/requests");
  if (!log.ok() || !log->is_array() || log->empty()) {
    return absl::InternalError(
        absl::StrCat("turn_overhead: no request log: ",
                     log.ok() ? "empty" : log.status().ToString()));
  }
  const Json& last = log->back();
  if (!last.contains("body") || !last["body"].is_object()) {
    return absl::InternalError(
        "turn_overhead: the last logged request has no JSON body");
  }
  const std::string body = common::DumpJson(last["body"]);
  absl::StatusOr<Samples> direct = DirectRequests(
      cluster.fakeapi_url() + "/v1/messages", body, flags.turn_tasks);
  if (!direct.ok()) return direct.status();

  const double overhead_p50 =
      Millis(wall.Percentile(50)) - Millis(direct->Percentile(50));
  const double overhead_mean = Millis(wall.Mean()) - Millis(direct->Mean());
  Print("turn_tasks", static_cast<std::int64_t>(wall.size()));
  Print("turn_request_body_bytes", static_cast<std::int64_t>(body.size()));
  Print("turn_task_wall_p50_ms", Millis(wall.Percentile(50)), 3);
  Print("turn_task_wall_p99_ms", Millis(wall.Percentile(99)), 3);
  Print("turn_direct_request_p50_ms", Millis(direct->Percentile(50)), 3);
  Print("turn_direct_request_p99_ms", Millis(direct->Percentile(99)), 3);
  Print("turn_engine_turn_p50_ms", Millis(engine_turn.Percentile(50)), 3);
  Print("turn_engine_task_p50_ms", Millis(engine_task.Percentile(50)), 3);
  Print("turn_overhead_ms", overhead_p50, 3);
  Print("turn_overhead_mean_ms", overhead_mean, 3);
  PrintTarget("turn_overhead_le_1ms", overhead_p50 <= kTurnOverheadMsTarget);
  return absl::OkStatus();
}

// One cluster (fake API, orchestrator with `store_args`, 2 echo workers) and
// the three dispatch phases on it.
absl::Status RunDispatchPhases(const Flags& flags, double floor_us,
                               const Json& scenario,
                               std::vector<std::string> store_args) {
  ClusterOptions options;
  options.scenario = WriteScenario(scenario);
  options.fakeapi_args = {"--threads", "96", "--max-log-entries", "64"};
  // The daemon's own defaults for leases and heartbeats, generous timeouts.
  options.orchestrator_args = {"--heartbeat-interval", "2s",
                               "--lease-duration",     "10s",
                               "--schedule-to-start-timeout", "120s",
                               "--tool-timeout",       "120s"};
  for (std::string& arg : store_args) {
    options.orchestrator_args.push_back(std::move(arg));
  }
  const int concurrency = flags.concurrency > 0 ? flags.concurrency : 256;
  for (const char* id : {"w1", "w2"}) {
    WorkerSpec worker;
    worker.id = id;
    worker.tools = Json::array({BuiltinTool("echo")});
    worker.concurrency = concurrency;
    options.workers.push_back(worker);
  }
  auto cluster = Cluster::Start(std::move(options));
  if (!cluster.ok()) return cluster.status();
  Print("worker_concurrency", static_cast<std::int64_t>(concurrency));
  // A failed phase returns (the cluster's destructor stops every process).
  absl::Status status = RunToolcallRtt(**cluster, flags, floor_us);
  if (status.ok()) status = RunBurst(**cluster, flags);
  if (status.ok()) status = RunTurnOverhead(**cluster, flags);
  return status;
}

int RunDispatch(const Flags& flags) {
  const double floor_us = FloorP50Us(flags);
  Json burst_blocks = Json::array();
  for (int i = 0; i < flags.calls_per_task; ++i) {
    burst_blocks.push_back(EchoCall(i));
  }
  const Json scenario = {
      {"responses",
       Json::array(
           {{{"name", "burst"},
             {"match", {{"turn", 1}, {"last_user_text_contains", "burst"}}},
             {"repeat", true},
             {"blocks", burst_blocks}},
            {{"name", "rtt"},
             {"match", {{"turn", 1}, {"last_user_text_contains", "rtt"}}},
             {"repeat", true},
             {"blocks", Json::array({EchoCall(0)})}},
            {{"name", "plain"},
             {"match", {{"turn", 1}, {"last_user_text_contains", "plain"}}},
             {"repeat", true},
             {"blocks", Json::array({{{"type", "text"}, {"text", "Done."}}})}},
            {{"name", "answer"},
             {"match", {{"turn", 2}}},
             {"repeat", true},
             {"blocks",
              Json::array({{{"type", "text"},
                            {"text", "All calls returned."}}})}}})}};
  // Durability on (the default store, every commit fsynced), then off
  // (--store memory): the same phases, keys of the second run end in
  // "_memory".
  Print("durability", "on (SQLite, --store-sync full, --data-dir in a "
                      "temporary directory)");
  absl::Status status = RunDispatchPhases(flags, floor_us, scenario, {});
  if (status.ok()) {
    ScopedKeySuffix memory("_memory");
    Print("durability", "off (--store memory)");
    status = RunDispatchPhases(flags, floor_us, scenario,
                               {"--store", "memory"});
  }
  if (!status.ok()) {
    std::fprintf(stderr, "system_benchmark: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// tasks10k

// Sum of running_calls over the connected workers, or -1 when ListWorkers
// fails (orchestrator not up yet).
std::int64_t RunningCalls(Cluster& cluster) {
  absl::StatusOr<v1::ListWorkersResponse> listed = cluster.ListWorkers();
  if (!listed.ok()) return -1;
  std::int64_t sum = 0;
  for (const v1::WorkerInfo& w : listed->workers()) sum += w.running_calls();
  return sum;
}

// Polls until RunningCalls(cluster) >= want; returns when, or an error.
absl::StatusOr<absl::Time> WaitForRunning(Cluster& cluster, std::int64_t want,
                                          absl::Duration timeout,
                                          absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  std::int64_t seen = -1;
  while (absl::Now() < deadline) {
    seen = RunningCalls(cluster);
    if (seen >= want) return absl::Now();
    absl::SleepFor(poll);
  }
  return absl::DeadlineExceededError(
      absl::StrCat(seen, " calls running, waited for ", want, " during ",
                   absl::FormatDuration(timeout)));
}

absl::Status RunTasks10kPhases(Cluster& cluster, const Flags& flags);

int RunTasks10k(const Flags& flags) {
  const Json scenario = {
      {"responses",
       Json::array({{{"name", "slow"},
                     {"match", {{"turn", 1}}},
                     {"repeat", true},
                     {"blocks", Json::array({{{"type", "tool_use"},
                                              {"name", "sleep"},
                                              {"input", {{"ms", 3600000}}}}})}}})}};
  ClusterOptions options;
  options.scenario = WriteScenario(scenario);
  options.fakeapi_args = {"--threads", "96", "--max-log-entries", "64"};
  options.orchestrator_args = {"--heartbeat-interval", "2s",
                               "--lease-duration",     "10s",
                               "--schedule-to-start-timeout", "1h",
                               "--tool-timeout",       "2h",
                               // One client submits them all.
                               "--max-tasks-per-client", "0",
                               "--default-task-timeout", "0"};
  // toolmesh-worker takes at most 1024 slots: enough workers of up to
  // 1000 slots that every call runs at once.
  const int concurrency = flags.concurrency > 0
                              ? flags.concurrency
                              : std::min(flags.tasks, kSlotsPerSleepWorker);
  const int workers = (flags.tasks + concurrency - 1) / concurrency;
  for (int w = 1; w <= workers; ++w) {
    WorkerSpec worker;
    worker.id = absl::StrCat("w", w);
    worker.tools = Json::array({BuiltinTool("sleep")});
    worker.concurrency = concurrency;
    options.workers.push_back(worker);
  }
  auto started = Cluster::Start(std::move(options));
  if (!started.ok()) Fail(started.status().ToString());
  Print("durability", "on (SQLite, --data-dir in a temporary directory)");
  Print("sleep_workers", static_cast<std::int64_t>(workers));
  Print("sleep_worker_slots", static_cast<std::int64_t>(concurrency));
  // A failed phase returns (the cluster's destructor stops every process).
  const absl::Status status = RunTasks10kPhases(**started, flags);
  if (!status.ok()) {
    std::fprintf(stderr, "system_benchmark: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

absl::Status RunTasks10kPhases(Cluster& cluster, const Flags& flags) {

  const pid_t pid = cluster.orchestrator().pid();
  const std::int64_t idle_kib = ProcStatusKib(pid, "VmRSS").value_or(-1);

  // Submit from a few threads (SubmitTask returns after the commit).
  const absl::Time submit_start = absl::Now();
  std::atomic<int> next{0};
  std::atomic<int> failed{0};
  absl::Mutex error_mu;
  std::string first_error;
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < 32; ++t) {
      threads.emplace_back([&] {
        for (int i = next++; i < flags.tasks; i = next++) {
          auto id = cluster.Submit(
              integration::MakeSpec(absl::StrCat("slow ", i), {"sleep"}));
          if (!id.ok()) {
            ++failed;
            absl::MutexLock lock(&error_mu);
            if (first_error.empty()) first_error = id.status().ToString();
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }
  const absl::Time submitted = absl::Now();
  if (failed > 0) {
    return absl::InternalError(absl::StrCat(
        failed.load(), " submissions failed; first: ", first_error));
  }
  Print("tasks", static_cast<std::int64_t>(flags.tasks));
  Print("tasks_submit_seconds", absl::ToDoubleSeconds(submitted - submit_start),
        3);
  Print("tasks_submit_per_sec",
        flags.tasks / absl::ToDoubleSeconds(submitted - submit_start), 0);
  absl::StatusOr<absl::Time> all_running =
      WaitForRunning(cluster, flags.tasks, flags.timeout, absl::Milliseconds(100));
  if (!all_running.ok()) {
    return absl::InternalError(absl::StrCat(
        "rss_10k_tasks: ", all_running.status().ToString(), "\n",
        cluster.Logs()));
  }
  Print("tasks_all_running_seconds",
        absl::ToDoubleSeconds(*all_running - submit_start), 3);
  const std::int64_t rss_kib = ProcStatusKib(pid, "VmRSS").value_or(-1);
  const std::int64_t hwm_kib = ProcStatusKib(pid, "VmHWM").value_or(-1);
  const double rss_mib = static_cast<double>(rss_kib) / 1024;
  Print("rss_idle_mib", static_cast<double>(idle_kib) / 1024, 1);
  Print("rss_10k_tasks_mib", rss_mib, 1);
  Print("rss_10k_tasks_hwm_mib", static_cast<double>(hwm_kib) / 1024, 1);
  Print("rss_per_task_kib",
        static_cast<double>(rss_kib - idle_kib) / flags.tasks, 1);
  PrintTarget("rss_10k_tasks_le_1gib", rss_kib > 0 && rss_mib <= kRssMibTarget);

  // restart_10k.
  const absl::Time kill_at = absl::Now();
  if (absl::Status s = cluster.RestartOrchestrator(); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("restart_10k: ", s.ToString(), "\n", cluster.Logs()));
  }
  const absl::Time listening = absl::Now();
  absl::StatusOr<absl::Time> first =
      WaitForRunning(cluster, 1, flags.timeout, absl::Milliseconds(5));
  if (!first.ok()) {
    return absl::InternalError(absl::StrCat(
        "restart_10k: ", first.status().ToString(), "\n", cluster.Logs()));
  }
  const double restart_seconds = absl::ToDoubleSeconds(*first - kill_at);
  Print("restart_listening_seconds", absl::ToDoubleSeconds(listening - kill_at),
        3);
  Print("restart_10k_seconds", restart_seconds, 3);
  absl::StatusOr<absl::Time> all = WaitForRunning(
      cluster, flags.tasks, flags.timeout, absl::Milliseconds(50));
  if (all.ok()) {
    Print("restart_10k_all_dispatched_seconds",
          absl::ToDoubleSeconds(*all - kill_at), 3);
  } else {
    Print("restart_10k_all_dispatched_seconds", "timeout");
  }
  const pid_t new_pid = cluster.orchestrator().pid();
  Print("rss_after_restart_mib",
        static_cast<double>(ProcStatusKib(new_pid, "VmRSS").value_or(-1)) /
            1024,
        1);
  PrintTarget("restart_10k_le_3s", restart_seconds <= kRestartSecondsTarget);
  return absl::OkStatus();
}

}  // namespace
}  // namespace toolmesh::bench

int main(int argc, char** argv) {
  using namespace toolmesh::bench;  // NOLINT(build/namespaces)
  const Flags flags = ParseFlags(argc, argv);
  Print("load_average", LoadAverage());
  const int rc = flags.mode == "dispatch" ? RunDispatch(flags)
                                          : RunTasks10k(flags);
  Print("load_average_after", LoadAverage());
  g_scenario_dir.reset();
  return rc;
}
