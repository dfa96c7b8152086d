// The Connect loop of toolmesh-worker (worker_client.h).
#include "worker/worker_client.h"

#include <algorithm>
#include <iostream>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/sync_stream.h"
#include "orchestrator/grpc/status_conversion.h"
#include "worker/builtin_executor.h"
#include "worker/exec_executor.h"
#include "worker/http_executor.h"

namespace toolmesh::worker {
namespace {

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// An unset Timestamp (all zero) means "no deadline".
absl::Time FromProto(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return absl::InfiniteFuture();
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  absl::Duration rem;
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &rem);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(rem)));
}

// Codes that retrying with the same Hello and credentials cannot fix.
bool IsPermanent(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnimplemented:
      return true;
    default:
      return false;
  }
}

std::string StatusLine(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                      status.message());
}

}  // namespace

std::unique_ptr<Executor> MakeExecutor(const ExecutorSpec& spec,
                                       common::Clock& clock,
                                       size_t max_result_bytes) {
  if (const auto* builtin = std::get_if<BuiltinSpec>(&spec)) {
    return std::make_unique<BuiltinExecutor>(*builtin, clock);
  }
  if (const auto* exec = std::get_if<ExecSpec>(&spec)) {
    ExecOptions exec_options;
    exec_options.max_stdout_bytes = max_result_bytes;
    return std::make_unique<ExecExecutor>(*exec, exec_options);
  }
  return std::make_unique<HttpExecutor>(std::get<HttpSpec>(spec));
}

// One accepted call, from its Assignment to its `done`.
struct WorkerClient::Call {
  enum class State { kQueued, kRunning };

  uint64_t serial = 0;
  uint64_t session = 0;
  State state = State::kQueued;
  std::string task_id;
  CallKey key;
  std::string name;
  common::Json input;
  absl::Time deadline = absl::InfiniteFuture();
  Executor* executor = nullptr;
  common::ToolUseId executor_id;
  common::TimerHandle deadline_timer;
  // The result is not sent: the orchestrator cancelled the call, it was
  // handed back, or its stream ended.
  bool abandoned = false;
  // The deadline timer fired; a kCancelled outcome becomes kTimeout.
  bool timed_out = false;
  // Cancel() was asked for; repeated after Run() in case it raced it.
  bool stop_requested = false;
};

struct WorkerClient::LifeGuard {
  absl::Mutex mu;
  bool alive ABSL_GUARDED_BY(mu) = true;
  int active ABSL_GUARDED_BY(mu) = 0;

  bool Enter() {
    absl::MutexLock lock(&mu);
    if (!alive) return false;
    ++active;
    return true;
  }
  void Exit() {
    absl::MutexLock lock(&mu);
    --active;
  }
  // After this returns no callback runs inside the client any more.
  void Kill() {
    absl::MutexLock lock(&mu);
    alive = false;
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return active == 0; };
    mu.Await(absl::Condition(&idle));
  }
};

// One Connect stream and its writer thread. The outbox has its own mutex,
// taken after WorkerClient::mu_ when both are held.
class WorkerClient::Connection {
 public:
  using Stream =
      grpc::ClientReaderWriter<v1::WorkerMessage, v1::OrchestratorMessage>;

  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream;

  ~Connection() { Join(); }

  // Queues `message` unless the outbox is closed or WritesDone is due.
  void Push(v1::WorkerMessage message) {
    absl::MutexLock lock(&mu_);
    if (closed_ || writes_done_) return;
    outbox_.push_back(std::move(message));
  }

  // Removes and returns what is queued (the testing seam's writer).
  std::vector<v1::WorkerMessage> TakeOutbox() {
    absl::MutexLock lock(&mu_);
    std::vector<v1::WorkerMessage> taken(
        std::make_move_iterator(outbox_.begin()),
        std::make_move_iterator(outbox_.end()));
    outbox_.clear();
    return taken;
  }

  // The writer sends what is queued, then WritesDone, then stops.
  void RequestWritesDone() {
    absl::MutexLock lock(&mu_);
    writes_done_ = true;
  }

  void StartWriter() {
    writer_ = std::thread([this] { WriterLoop(); });
  }

  // Stops the writer (dropping what is unsent) and joins it. Only after
  // Read() has returned false, so that a blocked Write() returns.
  void Join() {
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
    }
    if (writer_.joinable()) writer_.join();
  }

 private:
  void WriterLoop() {
    while (true) {
      v1::WorkerMessage message;
      bool writes_done = false;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return closed_ || writes_done_ || !outbox_.empty();
        };
        mu_.Await(absl::Condition(&ready));
        if (closed_) return;
        if (!outbox_.empty()) {
          message = std::move(outbox_.front());
          outbox_.pop_front();
        } else {
          writes_done = true;
        }
      }
      if (writes_done) {
        stream->WritesDone();
        return;
      }
      if (!stream->Write(message)) {
        // The stream is broken; make sure the reader sees it too.
        ctx.TryCancel();
        return;
      }
    }
  }

  absl::Mutex mu_;
  std::deque<v1::WorkerMessage> outbox_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;
};

template <typename Fn>
auto WorkerClient::Guard(Fn fn) {
  return [guard = guard_, fn = std::move(fn)](auto&&... args) mutable {
    if (!guard->Enter()) return;
    fn(std::forward<decltype(args)>(args)...);
    guard->Exit();
  };
}

absl::StatusOr<std::unique_ptr<WorkerClient>> WorkerClient::Create(
    WorkerClientOptions options, ToolsConfig tools, common::Clock& clock,
    common::RandomSource& random) {
  if (options.worker_id.empty()) {
    return absl::InvalidArgumentError("worker id must not be empty");
  }
  if (options.orchestrator_address.empty()) {
    return absl::InvalidArgumentError("orchestrator address must not be empty");
  }
  if (options.slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("slots must be positive, got ", options.slots));
  }
  if (options.max_message_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_message_bytes must be positive, got ", options.max_message_bytes));
  }
  if (options.max_result_bytes == 0) {
    return absl::InvalidArgumentError("max_result_bytes must be positive");
  }
  absl::StatusOr<common::ExponentialBackoff> backoff =
      common::ExponentialBackoff::Create(options.reconnect_backoff, random);
  if (!backoff.ok()) return backoff.status();
  return std::unique_ptr<WorkerClient>(new WorkerClient(
      std::move(options), std::move(tools), clock, *std::move(backoff)));
}

WorkerClient::WorkerClient(WorkerClientOptions options, ToolsConfig tools,
                           common::Clock& clock,
                           common::ExponentialBackoff backoff)
    : options_(std::move(options)),
      tools_(std::move(tools)),
      clock_(clock),
      guard_(std::make_shared<LifeGuard>()),
      backoff_(std::move(backoff)),
      heartbeat_interval_(options_.default_heartbeat_interval) {
  for (const ToolDefinition& tool : tools_.tools) {
    executors_[tool.name] =
        MakeExecutor(tool.executor, clock_, options_.max_result_bytes);
  }
  // gRPC's own reconnect backoff (1 s growing to 120 s by default) would
  // make our attempts fail fast long after the orchestrator is back; keep
  // it within the range of our own backoff.
  grpc::ChannelArguments args;
  const int min_ms = static_cast<int>(
      absl::ToInt64Milliseconds(options_.reconnect_backoff.initial_delay));
  const int max_ms = static_cast<int>(
      absl::ToInt64Milliseconds(options_.reconnect_backoff.max_delay));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::max(min_ms, 1));
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is left at gRPC's default (20 s): in
  // gRPC core it is also the minimum connect timeout, and a short one cuts
  // off handshakes with a busy orchestrator that is just restarting.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, std::max(max_ms, 1));
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  stub_ = v1::WorkerService::NewStub(grpc::CreateCustomChannel(
      options_.orchestrator_address,
      options_.credentials != nullptr ? options_.credentials
                                      : grpc::InsecureChannelCredentials(),
      args));
}

WorkerClient::~WorkerClient() {
  Stop();
  std::vector<std::pair<Executor*, common::ToolUseId>> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    to_cancel = AbandonCallsLocked();
    heartbeat_timer_.Cancel();
    drain_timer_.Cancel();
    backoff_timer_.Cancel();
  }
  // From here on, `done` callbacks and timers find the client gone; the
  // executors' destructors then kill and reap what still runs.
  guard_->Kill();
  for (auto& [executor, id] : to_cancel) executor->Cancel(id);
  executors_.clear();
}

void WorkerClient::Log(
    const std::string& msg,
    std::vector<std::pair<std::string, std::string>> fields) {
  common::Json entry = common::Json::object();
  entry["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(),
                                 absl::UTCTimeZone());
  entry["level"] = "info";
  entry["component"] = "worker";
  entry["worker_id"] = options_.worker_id;
  entry["msg"] = msg;
  for (auto& [key, value] : fields) entry[key] = std::move(value);
  const std::string line = common::DumpJson(entry);
  if (options_.log) {
    options_.log(line);
  } else {
    std::cerr << line << std::endl;
  }
}

int WorkerClient::ActiveCalls() const {
  absl::MutexLock lock(&mu_);
  int active = 0;
  for (const auto& [key, call] : calls_) {
    if (!call->abandoned) ++active;
  }
  return active;
}

int WorkerClient::RunningLocked() const {
  int running = 0;
  for (const auto& [key, call] : calls_) {
    if (call->state == Call::State::kRunning) ++running;
  }
  return running;
}

absl::Status WorkerClient::Run() {
  int retry = 0;
  while (true) {
    absl::Status status;
    bool welcomed = false;
    const SessionEnd end = RunSession(&status, &welcomed);
    if (end == SessionEnd::kDone) return absl::OkStatus();
    if (end == SessionEnd::kPermanent) return status;
    if (welcomed) retry = 0;
    const absl::Duration delay = backoff_.Delay(retry);
    retry = std::min(retry + 1, 30);
    Log(absl::StrCat("reconnecting in ", absl::FormatDuration(delay)));
    if (!WaitBeforeReconnect(delay)) return absl::OkStatus();
  }
}

bool WorkerClient::WaitBeforeReconnect(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  const uint64_t wait = ++backoff_wait_;
  backoff_elapsed_ = false;
  backoff_timer_ = clock_.ScheduleAfter(delay, Guard([this, wait]() {
                                          absl::MutexLock l(&mu_);
                                          if (backoff_wait_ == wait) {
                                            backoff_elapsed_ = true;
                                          }
                                        }));
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return backoff_elapsed_ || stopping_ || draining_;
  };
  mu_.Await(absl::Condition(&ready));
  backoff_timer_.Cancel();
  return !stopping_ && !draining_;
}

uint64_t WorkerClient::BeginSession(Connection& connection) {
  // Hello is queued first, before anything else (a Drain()) can reach the
  // outbox.
  v1::WorkerMessage hello_message;
  v1::Hello& hello = *hello_message.mutable_hello();
  hello.set_worker_id(options_.worker_id);
  hello.set_protocol_version(v1::PROTOCOL_VERSION_1);
  for (const ToolDefinition& tool : tools_.tools) {
    v1::ToolDefinition& def = *hello.add_tools();
    def.set_name(tool.name);
    const common::Json facing = ModelFacingDefinition(tool);
    def.set_description(std::string(common::GetString(facing, "description")));
    def.set_input_schema_json(common::DumpJson(tool.validator.schema()));
  }
  hello.set_slots(static_cast<uint32_t>(options_.slots));
  hello.set_worker_version(kWorkerVersion);
  connection.Push(std::move(hello_message));
  absl::MutexLock lock(&mu_);
  if (stopping_ || draining_) return 0;
  connection_ = &connection;
  welcomed_ = false;
  rejected_.reset();
  drain_finished_ = false;
  return ++session_;
}

std::vector<std::pair<Executor*, common::ToolUseId>>
WorkerClient::EndSessionLocked() {
  connection_ = nullptr;
  heartbeat_timer_.Cancel();
  drain_timer_.Cancel();
  return AbandonCallsLocked();
}

WorkerClient::SessionEnd WorkerClient::RunSession(absl::Status* status,
                                                  bool* welcomed) {
  auto connection = std::make_unique<Connection>();
  if (!options_.token.empty()) {
    connection->ctx.AddMetadata("authorization",
                                absl::StrCat("Bearer ", options_.token));
  }
  const uint64_t session = BeginSession(*connection);
  if (session == 0) return SessionEnd::kDone;
  Log(absl::StrCat("connecting to ", options_.orchestrator_address, " as ",
                   options_.worker_id));
  connection->stream = stub_->Connect(&connection->ctx);
  connection->StartWriter();

  v1::OrchestratorMessage message;
  while (connection->stream->Read(&message)) {
    HandleMessage(session, message);
  }

  std::vector<std::pair<Executor*, common::ToolUseId>> to_cancel;
  bool draining = false;
  bool stopping = false;
  int kept = 0;
  std::optional<absl::Status> rejected;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || draining_) {
      to_cancel = EndSessionLocked();
    } else {
      kept = DetachSessionLocked();
    }
    *welcomed = welcomed_;
    draining = draining_;
    stopping = stopping_;
    rejected = rejected_;
  }
  for (auto& [executor, id] : to_cancel) executor->Cancel(id);
  if (!to_cancel.empty()) {
    Log(absl::StrCat("cancelled ", to_cancel.size(),
                     " running call(s) of the ended stream"));
  }
  if (kept > 0) {
    Log(absl::StrCat("keeping ", kept,
                     " running call(s) of the ended stream; their results "
                     "go out once connected again"));
  }
  connection->Join();
  const absl::Status end = rpc::ToAbslStatus(connection->stream->Finish());

  if (stopping) {
    Log("stopped");
    return SessionEnd::kDone;
  }
  if (draining) {
    Log(end.ok() ? "drained; stream closed"
                 : absl::StrCat("drained; stream ended: ", StatusLine(end)));
    return SessionEnd::kDone;
  }
  absl::Status final_status = end;
  if (rejected.has_value() && (end.ok() || end.message().empty())) {
    final_status = *rejected;
  }
  if (IsPermanent(final_status.code())) {
    *status = final_status;
    Log(absl::StrCat("giving up: ", StatusLine(final_status)));
    {
      absl::MutexLock lock(&mu_);
      to_cancel = AbandonCallsLocked();
      held_results_.clear();
    }
    for (auto& [executor, id] : to_cancel) executor->Cancel(id);
    return SessionEnd::kPermanent;
  }
  Log(final_status.ok() ? std::string("stream closed by the orchestrator")
                        : absl::StrCat("stream ended: ",
                                       StatusLine(final_status)));
  return SessionEnd::kBroken;
}

bool WorkerClient::OpenSessionForTesting() {
  CloseSessionForTesting();
  auto connection = std::make_unique<Connection>();
  const uint64_t session = BeginSession(*connection);
  if (session == 0) return false;
  testing_connection_ = std::move(connection);
  testing_session_ = session;
  return true;
}

void WorkerClient::HandleMessageForTesting(
    const v1::OrchestratorMessage& message) {
  if (testing_connection_ == nullptr) return;
  HandleMessage(testing_session_, message);
}

std::vector<v1::WorkerMessage> WorkerClient::TakeWrittenForTesting() {
  if (testing_connection_ == nullptr) return {};
  return testing_connection_->TakeOutbox();
}

void WorkerClient::CloseSessionForTesting() {
  if (testing_connection_ == nullptr) return;
  std::vector<std::pair<Executor*, common::ToolUseId>> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    if (connection_ == testing_connection_.get()) {
      to_cancel = EndSessionLocked();
    }
  }
  for (auto& [executor, id] : to_cancel) executor->Cancel(id);
  testing_connection_.reset();
  testing_session_ = 0;
}

void WorkerClient::HandleMessage(uint64_t session,
                                 const v1::OrchestratorMessage& message) {
  switch (message.message_case()) {
    case v1::OrchestratorMessage::kWelcome:
      HandleWelcome(session, message.welcome());
      return;
    case v1::OrchestratorMessage::kAssignment:
      HandleAssignment(session, message.assignment());
      return;
    case v1::OrchestratorMessage::kCancel:
      HandleCancel(message.cancel());
      return;
    case v1::OrchestratorMessage::kRejected: {
      const v1::Rejected& rejected = message.rejected();
      absl::StatusCode code = absl::StatusCode::kUnknown;
      if (rejected.code() > 0 && rejected.code() <= 16) {
        code = static_cast<absl::StatusCode>(rejected.code());
      }
      absl::Status status(code, rejected.message());
      {
        absl::MutexLock lock(&mu_);
        if (session == session_) rejected_ = status;
      }
      std::string line = absl::StrCat("rejected: ", StatusLine(status));
      if (rejected.supported_protocol_versions_size() > 0) {
        absl::StrAppend(&line, " (orchestrator speaks protocol ",
                        absl::StrJoin(rejected.supported_protocol_versions(),
                                      ","),
                        ")");
      }
      Log(line);
      return;
    }
    case v1::OrchestratorMessage::MESSAGE_NOT_SET:
      break;
  }
  Log("ignored an empty or unknown message from the orchestrator");
}

void WorkerClient::HandleWelcome(uint64_t session, const v1::Welcome& welcome) {
  absl::Duration interval = FromProto(welcome.heartbeat_interval());
  if (interval <= absl::ZeroDuration()) {
    interval = options_.default_heartbeat_interval;
  }
  // A tiny interval (found by fuzzing: 1 ns) would make the heartbeat timer
  // spin and flood the stream.
  interval = std::max(interval, kMinHeartbeatInterval);
  std::size_t held = 0;
  {
    absl::MutexLock lock(&mu_);
    if (session != session_) return;
    welcomed_ = true;
    heartbeat_interval_ = interval;
    ScheduleHeartbeatLocked(session);
    // Results of calls that finished while no stream was up: the
    // orchestrator takes them if the calls have not ended meanwhile.
    held = held_results_.size();
    for (v1::WorkerMessage& message : held_results_) {
      SendLocked(session, std::move(message));
    }
    held_results_.clear();
  }
  if (held > 0) {
    Log(absl::StrCat("sent ", held,
                     " result(s) of calls that finished while disconnected"));
  }
  Log(absl::StrCat("connected to ", options_.orchestrator_address, " as ",
                   options_.worker_id, " (protocol ",
                   welcome.protocol_version(), ", heartbeat every ",
                   absl::FormatDuration(interval), ", ",
                   welcome.accepted_tools_size(), " of ",
                   tools_.tools.size(), " tools accepted)"));
  if (options_.on_connected) options_.on_connected();
}

void WorkerClient::HandleAssignment(uint64_t session,
                                    const v1::Assignment& assignment) {
  const CallKey key{assignment.tool_use_id(), assignment.attempt()};
  const ToolDefinition* tool = tools_.Find(assignment.name());
  std::string invalid;
  common::Json input;
  if (tool == nullptr) {
    std::vector<std::string> names;
    for (const ToolDefinition& t : tools_.tools) names.push_back(t.name);
    invalid = absl::StrCat("unknown tool \"", assignment.name(),
                           "\"; this worker serves: ",
                           absl::StrJoin(names, ", "));
  } else {
    absl::StatusOr<common::Json> parsed =
        common::ParseJson(assignment.input_json());
    if (!parsed.ok()) {
      invalid = absl::StrCat("invalid input for tool ", tool->name,
                             ": input is not valid JSON: ",
                             parsed.status().message());
    } else {
      input = *std::move(parsed);
      absl::Status valid = tool->validator.Validate(input);
      if (!valid.ok()) {
        invalid = absl::StrCat("invalid input for tool ", tool->name, ":\n",
                               valid.message());
      }
    }
  }

  {
    absl::MutexLock lock(&mu_);
    if (session != session_) return;
    if (draining_ || stopping_) {
      v1::WorkerMessage back;
      v1::ReturnCall& ret = *back.mutable_return_call();
      ret.set_task_id(assignment.task_id());
      ret.set_tool_use_id(assignment.tool_use_id());
      ret.set_attempt(assignment.attempt());
      ret.set_reason("draining");
      SendLocked(session, std::move(back));
      return;
    }
    if (!invalid.empty()) {
      v1::WorkerMessage reply;
      v1::ToolResult& result = *reply.mutable_tool_result();
      result.set_task_id(assignment.task_id());
      result.set_tool_use_id(assignment.tool_use_id());
      result.set_attempt(assignment.attempt());
      result.set_content_json(common::DumpJson(
          LimitResultSize(ErrorOutcome(OutcomeReason::kInvalidInput, invalid),
                          options_.max_result_bytes)
              .content));
      result.set_is_error(true);
      ToProto(absl::ZeroDuration(), result.mutable_duration());
      SendLocked(session, std::move(reply));
      return;
    }
    if (calls_.contains(key)) {
      // A repeated Assignment of a call we already hold: one result only.
      return;
    }
    auto call = std::make_unique<Call>();
    call->serial = ++next_serial_;
    call->session = session;
    call->task_id = assignment.task_id();
    call->key = key;
    call->name = tool->name;
    call->input = std::move(input);
    call->deadline = FromProto(assignment.deadline());
    call->executor = executors_.at(tool->name).get();
    call->executor_id = common::ToolUseId(
        absl::StrCat(assignment.tool_use_id(), "#", assignment.attempt()));
    calls_.emplace(key, std::move(call));
    queue_.push_back(key);
  }
  StartQueued();
}

void WorkerClient::StartQueued() {
  while (true) {
    Executor* executor = nullptr;
    ToolCall tool_call;
    CallKey key;
    uint64_t serial = 0;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || queue_.empty() ||
          RunningLocked() >= options_.slots) {
        return;
      }
      key = queue_.front();
      queue_.pop_front();
      auto it = calls_.find(key);
      if (it == calls_.end()) continue;
      Call& call = *it->second;
      call.state = Call::State::kRunning;
      serial = call.serial;
      if (call.deadline != absl::InfiniteFuture()) {
        call.deadline_timer = clock_.ScheduleAfter(
            call.deadline - clock_.Now(),
            Guard([this, key, serial]() { OnDeadline(key, serial); }));
      }
      executor = call.executor;
      tool_call.id = call.executor_id;
      tool_call.attempt = static_cast<int>(key.attempt);
      tool_call.name = call.name;
      tool_call.input = call.input;
    }
    executor->Run(tool_call, Guard([this, key, serial](ToolOutcome outcome) {
                    OnCallDone(key, serial, std::move(outcome));
                  }));
    // A Cancel, deadline or stream end that came between the unlock above
    // and Run() found nothing to cancel in the executor yet.
    bool cancel_now = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = calls_.find(key);
      cancel_now = it != calls_.end() && it->second->serial == serial &&
                   it->second->stop_requested;
    }
    if (cancel_now) executor->Cancel(tool_call.id);
  }
}

void WorkerClient::OnCallDone(const CallKey& key, uint64_t serial,
                              ToolOutcome outcome) {
  {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(key);
    if (it == calls_.end() || it->second->serial != serial) return;
    std::unique_ptr<Call> call = std::move(it->second);
    calls_.erase(it);
    call->deadline_timer.Cancel();
    if (!call->abandoned) {
      if (call->timed_out && outcome.reason == OutcomeReason::kCancelled) {
        outcome = ErrorOutcome(
            OutcomeReason::kTimeout,
            absl::StrCat("tool ", call->name,
                         " did not finish before its deadline and was "
                         "stopped after ",
                         absl::FormatDuration(outcome.duration)),
            outcome.duration);
      }
      // Whatever the executor, a result longer than the limit is cut with
      // a marker and still delivered: the task goes on.
      outcome = LimitResultSize(std::move(outcome), options_.max_result_bytes);
      if (outcome.is_error) {
        Log("tool call failed",
            {{"task_id", call->task_id},
             {"tool_use_id", key.tool_use_id},
             {"attempt", absl::StrCat(key.attempt)},
             {"tool", call->name},
             {"duration_ms",
              absl::StrCat(absl::ToInt64Milliseconds(outcome.duration))}});
      }
      v1::WorkerMessage reply;
      v1::ToolResult& result = *reply.mutable_tool_result();
      result.set_task_id(call->task_id);
      result.set_tool_use_id(key.tool_use_id);
      result.set_attempt(key.attempt);
      result.set_content_json(common::DumpJson(outcome.content));
      result.set_is_error(outcome.is_error);
      ToProto(outcome.duration, result.mutable_duration());
      if (connection_ != nullptr && welcomed_) {
        // On the call's own stream, or (a call kept from an ended stream)
        // on the current one.
        SendLocked(session_, std::move(reply));
      } else {
        held_results_.push_back(std::move(reply));
      }
    }
    MaybeFinishDrainLocked(session_);
  }
  StartQueued();
}

void WorkerClient::OnDeadline(const CallKey& key, uint64_t serial) {
  Executor* executor = nullptr;
  common::ToolUseId id;
  {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(key);
    if (it == calls_.end() || it->second->serial != serial) return;
    it->second->timed_out = true;
    it->second->stop_requested = true;
    executor = it->second->executor;
    id = it->second->executor_id;
  }
  executor->Cancel(id);
}

void WorkerClient::HandleCancel(const v1::Cancel& cancel) {
  const CallKey key{cancel.tool_use_id(), cancel.attempt()};
  Executor* executor = nullptr;
  common::ToolUseId id;
  {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(key);
    if (it == calls_.end() || it->second->abandoned) return;
    Call& call = *it->second;
    if (call.state == Call::State::kQueued) {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), key),
                   queue_.end());
      calls_.erase(it);
      MaybeFinishDrainLocked(session_);
      return;
    }
    call.abandoned = true;
    call.stop_requested = true;
    executor = call.executor;
    id = call.executor_id;
    MaybeFinishDrainLocked(session_);
  }
  Log("cancelling a tool call",
      {{"task_id", cancel.task_id()},
       {"tool_use_id", cancel.tool_use_id()},
       {"attempt", absl::StrCat(cancel.attempt())},
       {"reason", v1::CancelReason_Name(cancel.reason())},
       {"detail", cancel.message()}});
  executor->Cancel(id);
}

void WorkerClient::ScheduleHeartbeatLocked(uint64_t session) {
  heartbeat_timer_ = clock_.ScheduleAfter(
      heartbeat_interval_,
      Guard([this, session]() { OnHeartbeatTimer(session); }));
}

void WorkerClient::OnHeartbeatTimer(uint64_t session) {
  absl::MutexLock lock(&mu_);
  if (session != session_ || connection_ == nullptr || drain_finished_) return;
  v1::WorkerMessage message;
  v1::Heartbeat& heartbeat = *message.mutable_heartbeat();
  // Queued calls are listed too: they are assigned to us, and an unlisted
  // call would be taken for lost.
  for (const auto& [key, call] : calls_) {
    if (call->abandoned || call->session != session) continue;
    v1::RunningCall& running = *heartbeat.add_running();
    running.set_task_id(call->task_id);
    running.set_tool_use_id(key.tool_use_id);
    running.set_attempt(key.attempt);
  }
  int free_slots = options_.slots - RunningLocked() -
                   static_cast<int>(queue_.size());
  if (draining_ || free_slots < 0) free_slots = 0;
  heartbeat.set_free_slots(static_cast<uint32_t>(free_slots));
  SendLocked(session, std::move(message));
  ScheduleHeartbeatLocked(session);
}

void WorkerClient::SendLocked(uint64_t session, v1::WorkerMessage message) {
  if (session != session_ || connection_ == nullptr) return;
  connection_->Push(std::move(message));
}

void WorkerClient::Drain(absl::Duration grace) {
  int running = 0;
  {
    absl::MutexLock lock(&mu_);
    if (draining_ || stopping_) return;
    draining_ = true;
    if (connection_ != nullptr) {
      const uint64_t session = session_;
      v1::WorkerMessage message;
      ToProto(grace, message.mutable_draining()->mutable_grace());
      SendLocked(session, std::move(message));
      ReturnQueuedLocked(session);
      drain_timer_ = clock_.ScheduleAfter(
          grace, Guard([this, session]() { OnDrainGraceOver(session); }));
      MaybeFinishDrainLocked(session);
      running = RunningLocked();
    }
  }
  Log(absl::StrCat("draining: grace ", absl::FormatDuration(grace), ", ",
                   running, " call(s) running"));
}

void WorkerClient::ReturnQueuedLocked(uint64_t session) {
  for (const CallKey& key : queue_) {
    auto it = calls_.find(key);
    if (it == calls_.end()) continue;
    v1::WorkerMessage message;
    v1::ReturnCall& ret = *message.mutable_return_call();
    ret.set_task_id(it->second->task_id);
    ret.set_tool_use_id(key.tool_use_id);
    ret.set_attempt(key.attempt);
    ret.set_reason("draining");
    SendLocked(session, std::move(message));
    calls_.erase(it);
  }
  queue_.clear();
}

void WorkerClient::MaybeFinishDrainLocked(uint64_t session) {
  if (!draining_ || drain_finished_ || session != session_ ||
      connection_ == nullptr) {
    return;
  }
  for (const auto& [key, call] : calls_) {
    if (!call->abandoned && call->session == session) return;
  }
  FinishDrainLocked(session);
}

void WorkerClient::FinishDrainLocked(uint64_t session) {
  drain_finished_ = true;
  drain_timer_.Cancel();
  heartbeat_timer_.Cancel();
  connection_->RequestWritesDone();
  clock_.ScheduleAfter(options_.close_timeout,
                       Guard([this, session]() { OnCloseTimeout(session); }));
}

void WorkerClient::OnDrainGraceOver(uint64_t session) {
  std::vector<std::pair<Executor*, common::ToolUseId>> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    if (session != session_ || connection_ == nullptr || drain_finished_) {
      return;
    }
    for (auto& [key, call] : calls_) {
      if (call->abandoned || call->session != session) continue;
      call->abandoned = true;
      call->stop_requested = true;
      v1::WorkerMessage message;
      v1::ReturnCall& ret = *message.mutable_return_call();
      ret.set_task_id(call->task_id);
      ret.set_tool_use_id(key.tool_use_id);
      ret.set_attempt(key.attempt);
      ret.set_reason("draining");
      SendLocked(session, std::move(message));
      to_cancel.emplace_back(call->executor, call->executor_id);
    }
    FinishDrainLocked(session);
  }
  Log(absl::StrCat("drain grace over: handed back ", to_cancel.size(),
                   " call(s)"));
  for (auto& [executor, id] : to_cancel) executor->Cancel(id);
}

void WorkerClient::OnCloseTimeout(uint64_t session) {
  absl::MutexLock lock(&mu_);
  if (session == session_ && connection_ != nullptr) {
    connection_->ctx.TryCancel();
  }
}

void WorkerClient::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  if (connection_ != nullptr) connection_->ctx.TryCancel();
}

int WorkerClient::DetachSessionLocked() {
  connection_ = nullptr;
  heartbeat_timer_.Cancel();
  drain_timer_.Cancel();
  queue_.clear();
  int kept = 0;
  for (auto it = calls_.begin(); it != calls_.end();) {
    Call& call = *it->second;
    if (call.state == Call::State::kQueued) {
      calls_.erase(it++);
      continue;
    }
    if (!call.abandoned) ++kept;
    ++it;
  }
  return kept;
}

std::vector<std::pair<Executor*, common::ToolUseId>>
WorkerClient::AbandonCallsLocked() {
  std::vector<std::pair<Executor*, common::ToolUseId>> to_cancel;
  queue_.clear();
  for (auto it = calls_.begin(); it != calls_.end();) {
    Call& call = *it->second;
    if (call.state == Call::State::kQueued) {
      calls_.erase(it++);
      continue;
    }
    if (!call.abandoned || !call.stop_requested) {
      to_cancel.emplace_back(call.executor, call.executor_id);
    }
    call.abandoned = true;
    call.stop_requested = true;
    ++it;
  }
  return to_cancel;
}

}  // namespace toolmesh::worker
