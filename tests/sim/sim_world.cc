#include "tests/sim/sim_world.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>
#include <streambuf>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/fake_clock.h"
#include "common/json.h"
#include "common/random.h"
#include "common/request_validator.h"
#include "google/protobuf/util/time_util.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/log.h"
#include "orchestrator/store/memory_store.h"
#include "tests/sim/sim_loop.h"

namespace toolmesh::sim {
namespace {

using common::Json;
using orchestrator::Engine;
using orchestrator::EngineOptions;
using orchestrator::EventRecord;
using orchestrator::TaskRecord;
using orchestrator::WriteBatch;

std::string StateName(v1::TaskState state) {
  return v1::TaskState_Name(state);
}

bool TerminalToolState(v1::ToolCallState state) {
  return state == v1::TOOL_CALL_STATE_DONE ||
         state == v1::TOOL_CALL_STATE_ERROR;
}

// The engine's log lines: scanned for repaired requests, echoed when
// tracing, never part of the digest (they carry wall-clock times).
class LogSink final : public std::streambuf {
 public:
  LogSink(SimLoop& loop, bool echo) : loop_(loop), echo_(echo) {}

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return 0;
    if (c == '\n') {
      Line();
    } else {
      line_.push_back(static_cast<char>(c));
    }
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    for (std::streamsize i = 0; i < n; ++i) overflow(s[i]);
    return n;
  }

 private:
  void Line() {
    if (echo_) std::printf("  log %s\n", line_.c_str());
    if (line_.find("repaired before sending") != std::string::npos) {
      loop_.Violation(absl::StrCat("the engine repaired an invalid request: ",
                                   line_));
    }
    line_.clear();
  }

  SimLoop& loop_;
  const bool echo_;
  std::string line_;
};

// The store: a MemoryStore that checks every batch it commits, fails
// commits on purpose (transient errors; every commit while the
// orchestrator crashes) and lists unfinished tasks in a fixed order.
class SimStore final : public orchestrator::Store {
 public:
  SimStore(SimLoop& loop, double error_rate)
      : loop_(loop), error_rate_(error_rate) {}

  struct ToolTrack {
    bool pending_seen = false;
    int terminals = 0;
    std::string last;  // the last transition, for messages
  };
  struct TaskTrack {
    std::uint64_t last_seq = 0;
    std::optional<v1::TaskTerminal> terminal;
    bool finished_record = false;
    std::map<std::string, ToolTrack> tools;  // by tool_use_id
  };

  void set_crashing(bool crashing) { crashing_ = crashing; }
  const std::map<std::string, TaskTrack>& tracks() const { return tracks_; }

  absl::Status Commit(const WriteBatch& batch) override {
    if (crashing_) return absl::UnavailableError("the orchestrator crashed");
    if (loop_.Chance(error_rate_)) {
      loop_.Fault("store_commit_error", absl::StrCat(batch.size(), " ops"));
      return absl::UnavailableError("injected store error");
    }
    absl::Status status = inner_.Commit(batch);
    if (!status.ok()) {
      loop_.Violation(absl::StrCat("the store refused a batch: ",
                                   status.ToString()));
      return status;
    }
    for (const WriteBatch::Operation& op : batch.operations()) {
      if (const auto* record = std::get_if<TaskRecord>(&op)) {
        tracks_[record->task_id].finished_record =
            record->finished_at.has_value();
      } else if (const auto* event = std::get_if<EventRecord>(&op)) {
        Check(*event);
      }
    }
    return status;
  }
  absl::StatusOr<std::vector<TaskRecord>> LoadUnfinishedTasks() override {
    absl::StatusOr<std::vector<TaskRecord>> records =
        inner_.LoadUnfinishedTasks();
    if (records.ok()) {
      // The MemoryStore's order is its hash map's; the simulation's must
      // not depend on it.
      std::sort(records->begin(), records->end(),
                [](const TaskRecord& a, const TaskRecord& b) {
                  return a.task_id < b.task_id;
                });
    }
    return records;
  }
  absl::StatusOr<std::optional<TaskRecord>> GetTask(
      const std::string& task_id) override {
    return inner_.GetTask(task_id);
  }
  absl::StatusOr<std::optional<std::string>> FindTaskByIdempotencyKey(
      const std::string& key) override {
    return inner_.FindTaskByIdempotencyKey(key);
  }
  absl::StatusOr<std::vector<EventRecord>> LoadEvents(
      const std::string& task_id, std::uint64_t after_seq,
      std::size_t limit) override {
    return inner_.LoadEvents(task_id, after_seq, limit);
  }
  absl::StatusOr<orchestrator::TaskPage> ListTasks(
      const orchestrator::ListTasksOptions& options) override {
    return inner_.ListTasks(options);
  }
  absl::StatusOr<std::size_t> DeleteFinished(absl::Time finished_before,
                                             std::size_t keep_newest) override {
    return inner_.DeleteFinished(finished_before, keep_newest);
  }
  absl::StatusOr<orchestrator::StoreStats> Stats() override {
    return inner_.Stats();
  }

 private:
  void Check(const EventRecord& record) {
    TaskTrack& task = tracks_[record.task_id];
    const std::string where =
        absl::StrCat("task ", record.task_id, " event ", record.seq);
    v1::TaskEvent event;
    if (!event.ParseFromString(record.event)) {
      loop_.Violation(absl::StrCat(where, ": does not parse"));
      return;
    }
    if (record.seq != task.last_seq + 1 || event.seq() != record.seq ||
        event.task_id() != record.task_id) {
      loop_.Violation(absl::StrCat(where, ": stored after seq ", task.last_seq,
                                   " (event says ", event.task_id(), "/",
                                   event.seq(), ")"));
    }
    task.last_seq = record.seq;
    if (task.terminal.has_value()) {
      loop_.Violation(absl::StrCat(where, ": after the TaskTerminal: ",
                                   event.ShortDebugString()));
    }
    if (event.has_terminal()) task.terminal = event.terminal();
    if (!event.has_tool_transition()) return;
    const v1::ToolTransition& t = event.tool_transition();
    ToolTrack& tool = task.tools[t.tool_use_id()];
    if (!tool.pending_seen && t.state() != v1::TOOL_CALL_STATE_PENDING) {
      loop_.Violation(absl::StrCat(where, ": the first transition of ",
                                   t.tool_use_id(), " is ",
                                   v1::ToolCallState_Name(t.state())));
    }
    tool.pending_seen = true;
    if (tool.terminals > 0) {
      loop_.Violation(absl::StrCat(where, ": ", t.tool_use_id(),
                                   " moved after its terminal transition (",
                                   tool.last, "): ", t.ShortDebugString()));
    }
    if (TerminalToolState(t.state())) ++tool.terminals;
    tool.last = absl::StrCat(v1::ToolCallState_Name(t.state()), "/",
                             v1::ToolErrorReason_Name(t.reason()));
  }

  SimLoop& loop_;
  const double error_rate_;
  bool crashing_ = false;
  orchestrator::MemoryStore inner_;
  std::map<std::string, TaskTrack> tracks_;
};

class World;

// One client: submits one task, watches it to the end (re-watching from
// its last seq when a stream ends early), may cancel it.
class SimClient {
 public:
  SimClient(World& world, int index, v1::TaskSpec spec)
      : world_(world), index_(index), spec_(std::move(spec)) {}

  void Submit();
  void Rewatch(const char* why);
  void Cancel();
  void OnEngineCrashed();

  bool done() const { return done_; }
  const std::string& task_id() const { return task_id_; }
  const v1::TaskSpec& spec() const { return spec_; }
  std::uint64_t last_seq() const { return last_seq_; }
  const std::optional<v1::TaskTerminal>& terminal() const { return terminal_; }
  std::string Describe() const {
    return absl::StrCat("client ", index_, " task ",
                        task_id_.empty() ? "(none)" : task_id_, " last_seq ",
                        last_seq_, terminal_ ? " terminal" : "",
                        done_ ? " done" : "");
  }

 private:
  class Watcher final : public orchestrator::EventSubscriber {
   public:
    Watcher(SimClient& client, std::uint64_t gen)
        : client_(client), gen_(gen) {}
    bool OnEvent(const v1::TaskEvent& event) override {
      return client_.OnEvent(gen_, event);
    }
    void OnEnd(const absl::Status& status) override {
      client_.OnEnd(gen_, status);
    }

   private:
    SimClient& client_;
    const std::uint64_t gen_;
  };

  void Watch();
  bool OnEvent(std::uint64_t gen, const v1::TaskEvent& event);
  void OnEnd(std::uint64_t gen, const absl::Status& status);
  void OnSubmitted(std::uint64_t gen,
                   absl::StatusOr<v1::SubmitTaskResponse> response);

  World& world_;
  const int index_;
  const v1::TaskSpec spec_;
  std::string task_id_;
  std::uint64_t submit_gen_ = 0;
  bool submit_pending_ = false;
  std::uint64_t watch_gen_ = 0;
  std::shared_ptr<Watcher> watcher_;
  std::uint64_t last_seq_ = 0;
  std::optional<v1::TaskTerminal> terminal_;
  bool done_ = false;
};

class World {
 public:
  explicit World(const SimOptions& options);
  ~World();
  SimResult Run();

  SimLoop& loop() { return loop_; }
  const SimOptions& options() const { return options_; }

 private:
  void StartEngine();
  void Crash();
  // Runs the engine until nothing is queued.
  void Drain();
  bool AllDone() const;
  void FinalChecks(SimResult& result);
  void CheckConversation(const std::string& task_id,
                         const v1::TaskTerminal& terminal);
  v1::TaskSpec MakeSpec(int index);

  const SimOptions options_;
  const absl::Time start_;
  common::FakeClock clock_;
  SimLoop loop_;
  LogSink log_sink_;
  std::ostream log_stream_;
  common::SeededRandomSource random_;
  SimModelTransport model_;
  SimStore store_;
  std::vector<std::unique_ptr<SimWorker>> workers_;
  std::vector<std::unique_ptr<SimClient>> clients_;
  int crash_countdown_ = 0;
  int crashes_ = 0;
  std::uint64_t incarnation_ = 0;
  std::unique_ptr<Engine> engine_;  // destroyed first
};

// --- SimClient --------------------------------------------------------------

void SimClient::Submit() {
  orchestrator::EngineApi* engine = world_.loop().engine();
  if (engine == nullptr) {
    world_.loop().After(absl::Seconds(1), [this] { Submit(); });
    return;
  }
  const std::uint64_t gen = ++submit_gen_;
  submit_pending_ = true;
  world_.loop().Trace(absl::StrCat("client ", index_, " submit",
                                   spec_.idempotency_key().empty()
                                       ? ""
                                       : " key=" + spec_.idempotency_key()));
  v1::SubmitTaskRequest request;
  *request.mutable_spec() = spec_;
  engine->SubmitTask(orchestrator::Caller{"sim-client"}, std::move(request),
                     [this, gen](absl::StatusOr<v1::SubmitTaskResponse> r) {
                       OnSubmitted(gen, std::move(r));
                     });
  // No answer (the orchestrator crashed first): submit again.
  world_.loop().After(absl::Seconds(20), [this, gen] {
    if (submit_pending_ && gen == submit_gen_ && task_id_.empty()) Submit();
  });
}

void SimClient::OnSubmitted(std::uint64_t gen,
                            absl::StatusOr<v1::SubmitTaskResponse> response) {
  if (gen != submit_gen_) return;
  submit_pending_ = false;
  SimLoop& loop = world_.loop();
  if (!response.ok()) {
    if (absl::IsUnavailable(response.status())) {
      loop.After(absl::Seconds(1), [this] { Submit(); });
      return;
    }
    loop.Violation(absl::StrCat("client ", index_, ": SubmitTask failed: ",
                                response.status().ToString()));
    return;
  }
  if (!task_id_.empty() && response->task_id() != task_id_) {
    loop.Violation(absl::StrCat(
        "client ", index_, ": idempotency key ", spec_.idempotency_key(),
        " gave task ", response->task_id(), " after ", task_id_));
    return;
  }
  loop.Trace(absl::StrCat("client ", index_, " ack ", response->task_id(),
                          response->created() ? " created" : " known"));
  const bool first = task_id_.empty();
  task_id_ = response->task_id();
  if (!first) return;
  Watch();
  if (loop.Chance(world_.options().cancel)) {
    loop.After(loop.Between(absl::Milliseconds(10), absl::Seconds(30)),
               [this] { Cancel(); });
  }
  if (loop.Chance(world_.options().rewatch)) {
    loop.After(loop.Between(absl::Milliseconds(10), absl::Seconds(20)),
               [this] { Rewatch("client re-watch"); });
  }
}

void SimClient::Watch() {
  orchestrator::EngineApi* engine = world_.loop().engine();
  if (done_) return;
  if (engine == nullptr) {
    world_.loop().After(absl::Seconds(1), [this] { Watch(); });
    return;
  }
  watcher_ = std::make_shared<Watcher>(*this, ++watch_gen_);
  v1::WatchTaskRequest request;
  request.set_task_id(task_id_);
  request.set_after_seq(last_seq_);
  world_.loop().Trace(absl::StrCat("client ", index_, " watch after ",
                                   last_seq_));
  engine->WatchTask(std::move(request), watcher_);
}

void SimClient::Rewatch(const char* why) {
  if (done_ || task_id_.empty()) return;
  world_.loop().Trace(absl::StrCat("client ", index_, " ", why));
  orchestrator::EngineApi* engine = world_.loop().engine();
  if (watcher_ != nullptr && engine != nullptr) engine->CancelWatch(watcher_);
  ++watch_gen_;
  watcher_.reset();
  Watch();
}

void SimClient::Cancel() {
  orchestrator::EngineApi* engine = world_.loop().engine();
  if (engine == nullptr || task_id_.empty() || done_) return;
  world_.loop().Fault("client_cancel", task_id_);
  v1::CancelTaskRequest request;
  request.set_task_id(task_id_);
  request.set_reason("simulated client cancel");
  engine->CancelTask(std::move(request),
                     [this](absl::StatusOr<v1::CancelTaskResponse> r) {
                       if (!r.ok() &&
                           !absl::IsFailedPrecondition(r.status()) &&
                           !absl::IsUnavailable(r.status())) {
                         world_.loop().Violation(absl::StrCat(
                             "client ", index_, ": CancelTask: ",
                             r.status().ToString()));
                       }
                     });
}

bool SimClient::OnEvent(std::uint64_t gen, const v1::TaskEvent& event) {
  if (gen != watch_gen_) return false;  // a stream this client left
  SimLoop& loop = world_.loop();
  if (event.task_id() != task_id_ || event.seq() != last_seq_ + 1) {
    loop.Violation(absl::StrCat("client ", index_, " watching ", task_id_,
                                " after seq ", last_seq_, " got ",
                                event.task_id(), " seq ", event.seq()));
  }
  if (terminal_.has_value()) {
    loop.Violation(absl::StrCat("client ", index_, ": event ", event.seq(),
                                " after the terminal event"));
  }
  last_seq_ = event.seq();
  if (event.has_terminal()) {
    terminal_ = event.terminal();
    loop.Trace(absl::StrCat("client ", index_, " terminal seq ", event.seq(),
                            " ", StateName(event.terminal().state()), " ",
                            event.terminal().stop_reason(), " ",
                            event.terminal().error().type()));
  }
  // A slow consumer now and then: the engine must drop the stream.
  if (!terminal_.has_value() && loop.Chance(0.002)) {
    loop.Fault("slow_watcher", task_id_);
    return false;
  }
  return true;
}

void SimClient::OnEnd(std::uint64_t gen, const absl::Status& status) {
  if (gen != watch_gen_) return;
  SimLoop& loop = world_.loop();
  if (loop.engine() == nullptr) return;  // the orchestrator is crashing
  if (status.ok()) {
    if (!terminal_.has_value()) {
      loop.Violation(absl::StrCat("client ", index_,
                                  ": the watch ended OK before the terminal "
                                  "event (last seq ", last_seq_, ")"));
    }
    done_ = true;
    watcher_.reset();
    return;
  }
  if (absl::IsUnavailable(status) || absl::IsResourceExhausted(status)) {
    ++watch_gen_;
    watcher_.reset();
    loop.After(loop.Between(absl::Milliseconds(10), absl::Seconds(2)),
               [this] { Watch(); });
    return;
  }
  loop.Violation(absl::StrCat("client ", index_, ": the watch of ", task_id_,
                              " ended with ", status.ToString()));
}

void SimClient::OnEngineCrashed() {
  ++watch_gen_;
  watcher_.reset();
  SimLoop& loop = world_.loop();
  const absl::Duration delay =
      loop.Between(absl::Milliseconds(10), absl::Seconds(3));
  if (task_id_.empty()) {
    // The answer of the dead orchestrator never comes: submit again (a
    // client that has not submitted yet will do so on its own).
    if (submit_pending_) {
      ++submit_gen_;
      submit_pending_ = false;
      loop.After(delay, [this] { Submit(); });
    }
    return;
  }
  if (!spec_.idempotency_key().empty()) {
    // The same key must give the same task.
    loop.After(delay, [this] { Submit(); });
  }
  if (!done_) loop.After(delay, [this] { Watch(); });
}

// --- World --------------------------------------------------------------------

World::World(const SimOptions& options)
    : options_(options),
      start_(absl::FromUnixSeconds(1767225600)),  // 2026-01-01
      clock_(start_),
      loop_(options.seed * 0x9E3779B97F4A7C15ull + 1, clock_),
      log_sink_(loop_, options.echo_trace),
      log_stream_(&log_sink_),
      random_(options.seed ^ 0x5eed5eed5eedull),
      model_(loop_, options.model),
      store_(loop_, options.store_error) {
  loop_.set_echo(options.echo_trace);
  orchestrator::SetLogStreamForTesting(&log_stream_);
}

World::~World() {
  engine_.reset();
  orchestrator::SetLogStreamForTesting(nullptr);
}

v1::TaskSpec World::MakeSpec(int index) {
  v1::TaskSpec spec;
  spec.set_model("claude-sonnet-4-5");
  spec.set_max_tokens(2048);
  static constexpr const char* kTools[] = {"echo", "add", "lookup"};
  std::vector<std::string> names;
  for (const char* tool : kTools) {
    if (loop_.Chance(0.6)) names.emplace_back(tool);
  }
  if (names.empty()) names.emplace_back(kTools[loop_.Uniform(3)]);
  // A tool no worker serves: its calls end no_worker.
  if (loop_.Chance(0.04)) names.emplace_back("ghost");
  for (const std::string& name : names) spec.add_client_tools(name);
  std::string prompt = absl::StrCat("Task ", index, ": use ",
                                    absl::StrJoin(names, " and "));
  if (loop_.Chance(0.5)) {
    spec.add_server_tools_json(
        R"({"type":"web_search_20250305","name":"web_search"})");
    if (loop_.Chance(0.3)) absl::StrAppend(&prompt, ", then search the web");
  }
  spec.set_prompt(prompt);
  if (loop_.Chance(0.2)) {
    spec.set_thinking_json(R"({"type":"enabled","budget_tokens":1024})");
  }
  if (loop_.Chance(0.5)) {
    spec.set_idempotency_key(absl::StrCat("sim-", options_.seed, "-", index));
  }
  if (loop_.Chance(options_.task_timeout)) {
    *spec.mutable_timeout() = google::protobuf::util::TimeUtil::SecondsToDuration(
        static_cast<std::int64_t>(5 + loop_.Uniform(90)));
  }
  return spec;
}

void World::StartEngine() {
  EngineOptions options;
  options.own_thread = false;
  options.dispatch.heartbeat_interval = absl::Seconds(2);
  options.dispatch.lease_duration = absl::Seconds(10);
  options.dispatch.schedule_to_start_timeout = absl::Seconds(30);
  options.dispatch.start_to_close_timeout = absl::Seconds(60);
  options.retention = absl::InfiniteDuration();
  ++incarnation_;
  engine_ = std::make_unique<Engine>(options, clock_, model_, random_, store_);
  loop_.SetEngine(engine_.get(), incarnation_);
  loop_.Trace(absl::StrCat("orchestrator up, incarnation ", incarnation_));
}

void World::Crash() {
  ++crashes_;
  loop_.Fault("orchestrator_crash",
              absl::StrCat("incarnation ", incarnation_));
  // The iteration in progress runs, but its commit never happens.
  store_.set_crashing(true);
  engine_->RunOnce();
  loop_.SetEngine(nullptr, incarnation_);
  model_.Crashed();
  engine_.reset();
  store_.set_crashing(false);
  model_.Restarted();
  for (auto& worker : workers_) worker->OnEngineCrashed();
  for (auto& client : clients_) client->OnEngineCrashed();
  StartEngine();
}

void World::Drain() {
  // Armed by an action, the crash hits the next step: in the middle of
  // whatever that step's action set off.
  if (crash_countdown_ > 0 && --crash_countdown_ == 0) Crash();
  int iterations = 0;
  while (engine_->RunOnce()) {
    if (++iterations > 100000) {
      loop_.Violation("the engine does not settle (100000 iterations)");
      return;
    }
  }
}

bool World::AllDone() const {
  for (const auto& client : clients_) {
    if (!client->done()) return false;
  }
  return true;
}

SimResult World::Run() {
  SimResult result;
  result.seed = options_.seed;
  result.tasks = options_.tasks;
  StartEngine();

  // Workers: every tool but "ghost" is served by at least one of them.
  static constexpr const char* kSchemas[][2] = {
      {"echo",
       R"({"type":"object","properties":{"text":{"type":"string"}},"required":["text"]})"},
      {"add",
       R"({"type":"object","properties":{"a":{"type":"integer","minimum":0,"maximum":100},"b":{"type":"integer"}},"required":["a","b"]})"},
      {"lookup",
       R"({"type":"object","properties":{"key":{"type":"string","enum":["alpha","beta"]},"limit":{"type":"integer","minimum":1,"maximum":5}},"required":["key"]})"},
  };
  const int n_workers = std::max(1, options_.workers);
  for (int w = 0; w < n_workers; ++w) {
    std::vector<v1::ToolDefinition> tools;
    for (int t = 0; t < 3; ++t) {
      if (t % n_workers != w && !loop_.Chance(0.5)) continue;
      v1::ToolDefinition def;
      def.set_name(kSchemas[t][0]);
      def.set_description(absl::StrCat("sim tool ", kSchemas[t][0]));
      def.set_input_schema_json(kSchemas[t][1]);
      tools.push_back(std::move(def));
    }
    auto worker = std::make_unique<SimWorker>(
        loop_, absl::StrCat("w", w), std::move(tools),
        static_cast<std::uint32_t>(1 + loop_.Uniform(4)), options_.worker);
    SimWorker* raw = worker.get();
    loop_.After(loop_.Between(absl::ZeroDuration(), absl::Seconds(1)),
                [raw] { raw->Connect(); });
    if (loop_.Chance(options_.worker_loss)) {
      loop_.After(loop_.Between(absl::Seconds(1), options_.crash_window),
                  [raw] { raw->Lose(); });
    }
    workers_.push_back(std::move(worker));
  }
  for (int i = 0; i < options_.tasks; ++i) {
    auto client = std::make_unique<SimClient>(*this, i, MakeSpec(i));
    SimClient* raw = client.get();
    loop_.After(loop_.Between(absl::ZeroDuration(), absl::Seconds(3)),
                [raw] { raw->Submit(); });
    clients_.push_back(std::move(client));
  }
  for (int c = 0; c < 2; ++c) {
    if (!loop_.Chance(options_.crash)) continue;
    loop_.After(loop_.Between(absl::Milliseconds(100), options_.crash_window),
                [this] { crash_countdown_ = 2; });
  }

  const absl::Time deadline = start_ + options_.max_virtual_time;
  while (!loop_.violation().has_value() && !AllDone()) {
    if (loop_.step >= options_.max_steps) {
      loop_.Violation(absl::StrCat("not finished within ", options_.max_steps,
                                   " steps"));
      break;
    }
    std::optional<absl::Time> next = loop_.NextActionTime();
    std::optional<absl::Time> timer = clock_.NextDeadline();
    if (timer.has_value() && (!next.has_value() || *timer < *next)) {
      next = timer;
    }
    if (!next.has_value()) {
      loop_.Violation("nothing is scheduled but tasks are not finished");
      break;
    }
    if (*next > deadline) {
      loop_.Violation(absl::StrCat("not finished within ",
                                   absl::FormatDuration(options_.max_virtual_time),
                                   " of virtual time"));
      break;
    }
    ++loop_.step;
    clock_.AdvanceTo(*next);
    if (auto action = loop_.TakeDue(clock_.Now())) (*action)();
    Drain();
  }
  if (!loop_.violation().has_value()) FinalChecks(result);
  if (loop_.violation().has_value()) {
    std::vector<std::string> states;
    for (const auto& client : clients_) states.push_back(client->Describe());
    loop_.Trace(absl::StrCat("clients: ", absl::StrJoin(states, "; ")));
  }

  result.steps = loop_.step;
  result.violation = loop_.violation();
  result.violation_step = loop_.step;
  result.virtual_time = clock_.Now() - start_;
  result.model_requests = model_.requests();
  result.crashes = crashes_;
  for (const auto& worker : workers_) result.tool_calls += worker->assignments();
  result.faults = loop_.faults();
  for (const auto& client : clients_) {
    if (client->terminal().has_value()) {
      ++result.outcomes[StateName(client->terminal()->state())];
    }
  }
  result.digest = loop_.digest();
  result.recent.assign(loop_.recent().begin(), loop_.recent().end());
  return result;
}

void World::FinalChecks(SimResult& result) {
  (void)result;
  if (model_.rejected() > 0) {
    loop_.Violation(absl::StrCat("the model rejected ", model_.rejected(),
                                 " requests"));
  }
  absl::StatusOr<std::vector<TaskRecord>> unfinished =
      store_.LoadUnfinishedTasks();
  if (!unfinished.ok() || !unfinished->empty()) {
    std::vector<std::string> ids;
    if (unfinished.ok()) {
      for (const TaskRecord& r : *unfinished) ids.push_back(r.task_id);
    }
    loop_.Violation(absl::StrCat("tasks not finished in the store: ",
                                 absl::StrJoin(ids, ", ")));
  }
  for (const auto& [task_id, track] : store_.tracks()) {
    if (!track.terminal.has_value() || !track.finished_record) {
      loop_.Violation(absl::StrCat("task ", task_id,
                                   " has no TaskTerminal / finished record"));
      continue;
    }
    for (const auto& [tool_id, tool] : track.tools) {
      if (tool.terminals != 1) {
        loop_.Violation(absl::StrCat("task ", task_id, " tool ", tool_id,
                                     " has ", tool.terminals,
                                     " terminal transitions (last ",
                                     tool.last, ")"));
      }
    }
    if (track.terminal->state() == v1::TASK_STATE_FAILED &&
        track.terminal->error().type() == "internal_error") {
      loop_.Violation(absl::StrCat("task ", task_id, " failed: ",
                                   track.terminal->error().message()));
    }
    CheckConversation(task_id, *track.terminal);
  }
  for (const auto& client : clients_) {
    auto it = store_.tracks().find(client->task_id());
    if (it == store_.tracks().end()) {
      loop_.Violation(absl::StrCat(client->Describe(), ": not in the store"));
      continue;
    }
    if (client->last_seq() != it->second.last_seq) {
      loop_.Violation(absl::StrCat(client->Describe(), ": the store has ",
                                   it->second.last_seq, " events"));
    }
  }
}

void World::CheckConversation(const std::string& task_id,
                              const v1::TaskTerminal& terminal) {
  const std::string where = absl::StrCat("task ", task_id, " (",
                                         StateName(terminal.state()), ")");
  if (terminal.conversation_json().empty()) {
    loop_.Violation(absl::StrCat(where, ": no conversation"));
    return;
  }
  absl::StatusOr<Json> messages = common::ParseJson(terminal.conversation_json());
  if (!messages.ok() || !messages->is_array()) {
    loop_.Violation(absl::StrCat(where, ": the conversation does not parse"));
    return;
  }
  Json body = {{"model", "claude-sonnet-4-5"},
               {"max_tokens", 2048},
               {"messages", *messages}};
  auto tools = model_.tools_by_task().find(task_id);
  common::ValidateOptions validate;
  if (tools != model_.tools_by_task().end() && !tools->second.empty()) {
    body["tools"] = tools->second;
  } else {
    validate.require_server_tool_definitions = false;
  }
  std::vector<common::Violation> violations =
      common::ValidateRequest(body, validate);
  if (!violations.empty()) {
    loop_.Violation(absl::StrCat(where, ": the final conversation is invalid: ",
                                 violations.front().message));
    return;
  }
  // Each tool_use: exactly one tool_result, in the next message, in order;
  // a successful result names its own call (the workers' texts do).
  std::map<std::string, int> results;
  const std::size_t n = messages->size();
  for (std::size_t i = 0; i < n; ++i) {
    const Json& message = (*messages)[i];
    const Json content = message.value("content", Json());
    if (!content.is_array()) continue;
    if (common::GetString(message, "role") == "user") {
      for (const Json& block : content) {
        if (common::GetString(block, "type") != "tool_result") continue;
        const std::string id(common::GetString(block, "tool_use_id"));
        ++results[id];
        if (block.value("is_error", false)) continue;
        const Json result_content = block.value("content", Json());
        const std::string text = result_content.is_string()
                                     ? result_content.get<std::string>()
                                     : common::DumpJson(result_content);
        if (text.find(id) == std::string::npos) {
          loop_.Violation(absl::StrCat(where, ": the result for ", id,
                                       " is not its own: ", text));
        }
      }
      continue;
    }
    std::vector<std::string> uses;
    for (const Json& block : content) {
      if (common::GetString(block, "type") == "tool_use") {
        uses.emplace_back(common::GetString(block, "id"));
      }
    }
    if (uses.empty()) continue;
    if (i + 1 == n) {
      // Calls left without results at the end: a task that was cancelled
      // or failed while they ran, or one that ended on max_tokens (the
      // truncated step is final); never one that completed on tool_use.
      if (terminal.state() == v1::TASK_STATE_COMPLETED &&
          terminal.stop_reason() == "tool_use") {
        loop_.Violation(absl::StrCat(where, ": tool_use ",
                                     absl::StrJoin(uses, ","),
                                     " end the conversation"));
      }
      continue;
    }
    std::vector<std::string> answered;
    for (const Json& block : (*messages)[i + 1].value("content", Json::array())) {
      if (common::GetString(block, "type") == "tool_result") {
        answered.emplace_back(common::GetString(block, "tool_use_id"));
      }
    }
    if (answered != uses) {
      loop_.Violation(absl::StrCat(where, ": messages.", i + 1,
                                   " answers [", absl::StrJoin(answered, ","),
                                   "] for tool_use [", absl::StrJoin(uses, ","),
                                   "]"));
    }
  }
  for (const auto& [id, count] : results) {
    if (count != 1) {
      loop_.Violation(absl::StrCat(where, ": ", id, " has ", count,
                                   " tool_results"));
    }
  }
}

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  World world(options);
  return world.Run();
}

}  // namespace toolmesh::sim
