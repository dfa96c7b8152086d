#include "tests/sim/sim_worker.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "google/protobuf/util/time_util.h"

namespace toolmesh::sim {

using google::protobuf::util::TimeUtil;

// The engine's side of one connection. Holds the worker by pointer: the
// world destroys every engine before its workers.
class SimWorker::Link final : public orchestrator::WorkerLink {
 public:
  Link(SimWorker& worker, std::uint64_t conn) : worker_(worker), conn_(conn) {}

  // Calls made while the orchestrator crashes (loop engine() is null) are
  // dropped: a dead process sends nothing, and the order in which it would
  // close its streams is not the simulation's to depend on.
  void Send(v1::OrchestratorMessage message) override {
    if (closed_ || worker_.loop_.engine() == nullptr) return;
    SimWorker& w = worker_;
    const absl::Duration delay = w.FifoDelay(w.last_down_, false);
    w.loop_.After(delay, [&w, conn = conn_, message = std::move(message)] {
      w.FromEngine(conn, message);
    });
  }
  void Close(const absl::Status& status) override {
    if (closed_ || worker_.loop_.engine() == nullptr) return;
    closed_ = true;
    SimWorker& w = worker_;
    const absl::Duration delay = w.FifoDelay(w.last_down_, false);
    w.loop_.After(delay, [&w, conn = conn_, why = status.ToString()] {
      w.ClosedByEngine(conn, why);
    });
  }

 private:
  SimWorker& worker_;
  const std::uint64_t conn_;
  bool closed_ = false;
};

SimWorker::SimWorker(SimLoop& loop, std::string id,
                     std::vector<v1::ToolDefinition> tools,
                     std::uint32_t slots, SimWorkerOptions options)
    : loop_(loop),
      id_(std::move(id)),
      tools_(std::move(tools)),
      slots_(slots),
      options_(options) {}

SimWorker::~SimWorker() = default;

absl::Duration SimWorker::FifoDelay(absl::Time& last, bool may_overtake) {
  const absl::Time now = loop_.Now();
  absl::Time at =
      now + loop_.Between(absl::Microseconds(100), absl::Milliseconds(30));
  if (may_overtake && loop_.Chance(options_.reorder)) {
    // Overtakes what is on the way (the FIFO order is not kept).
    loop_.Fault("worker_reorder", id_);
    return at - now;
  }
  at = std::max(at, last);
  last = at;
  return at - now;
}

void SimWorker::Connect() {
  if (connected_) return;
  orchestrator::EngineApi* engine = loop_.engine();
  if (engine == nullptr) {
    loop_.After(absl::Seconds(1), [this] { Connect(); });
    return;
  }
  session_ = engine->NewWorkerSession();
  conn_ = next_conn_++;
  incarnation_ = loop_.incarnation();
  connected_ = true;
  running_.clear();
  link_ = std::make_shared<Link>(*this, conn_);
  v1::Hello hello;
  hello.set_worker_id(id_);
  hello.set_protocol_version(1);
  hello.set_slots(slots_);
  hello.set_worker_version("sim");
  for (const v1::ToolDefinition& tool : tools_) *hello.add_tools() = tool;
  loop_.Trace(absl::StrCat("worker ", id_, " connect session ", session_));
  engine->WorkerHello(session_, link_, std::move(hello));
}

void SimWorker::Disconnected(absl::Duration reconnect_after) {
  connected_ = false;
  conn_ = 0;
  link_.reset();
  running_.clear();
  loop_.After(reconnect_after, [this] { Connect(); });
}

void SimWorker::Lose() {
  if (!connected_) return;
  loop_.Fault("worker_lost", id_);
  const orchestrator::WorkerSessionId session = session_;
  const std::uint64_t incarnation = incarnation_;
  loop_.After(loop_.Between(absl::Milliseconds(1), absl::Milliseconds(500)),
              [this, session, incarnation] {
                if (loop_.incarnation() != incarnation ||
                    loop_.engine() == nullptr) {
                  return;
                }
                loop_.engine()->WorkerGone(
                    session, absl::UnavailableError("connection reset"));
              });
  Disconnected(loop_.Between(absl::Milliseconds(200), absl::Seconds(8)));
}

void SimWorker::OnEngineCrashed() {
  if (!connected_) return;
  Disconnected(loop_.Between(absl::Milliseconds(200), absl::Seconds(5)));
}

void SimWorker::ClosedByEngine(std::uint64_t conn, std::string why) {
  if (!connected_ || conn != conn_) return;
  loop_.Trace(absl::StrCat("worker ", id_, " closed by orchestrator: ", why));
  const orchestrator::WorkerSessionId session = session_;
  const std::uint64_t incarnation = incarnation_;
  loop_.After(absl::Milliseconds(1), [this, session, incarnation] {
    if (loop_.incarnation() != incarnation || loop_.engine() == nullptr) {
      return;
    }
    loop_.engine()->WorkerGone(session, absl::OkStatus());
  });
  Disconnected(loop_.Between(absl::Milliseconds(200), absl::Seconds(3)));
}

void SimWorker::ToEngine(v1::WorkerMessage message) {
  if (!connected_) return;
  if (loop_.Chance(options_.drop)) {
    loop_.Fault("worker_drop", id_);
    return;
  }
  const int copies = loop_.Chance(options_.duplicate) ? 2 : 1;
  if (copies == 2) loop_.Fault("worker_duplicate", id_);
  for (int i = 0; i < copies; ++i) {
    const absl::Duration delay = FifoDelay(last_up_, true);
    loop_.After(delay, [this, session = session_, incarnation = incarnation_,
                        message] {
      // A message of a dead orchestrator's stream reaches nobody.
      if (loop_.incarnation() != incarnation || loop_.engine() == nullptr) {
        return;
      }
      loop_.engine()->WorkerMessage(session, message);
    });
  }
}

void SimWorker::FromEngine(std::uint64_t conn, v1::OrchestratorMessage message) {
  if (!connected_ || conn != conn_) return;
  switch (message.message_case()) {
    case v1::OrchestratorMessage::kWelcome: {
      const std::int64_t nanos =
          TimeUtil::DurationToNanoseconds(message.welcome().heartbeat_interval());
      if (nanos > 0) heartbeat_interval_ = absl::Nanoseconds(nanos);
      loop_.Trace(absl::StrCat("worker ", id_, " welcome"));
      loop_.After(heartbeat_interval_, [this, conn] { Heartbeat(conn); });
      break;
    }
    case v1::OrchestratorMessage::kRejected:
      loop_.Trace(absl::StrCat("worker ", id_, " rejected: ",
                               message.rejected().message()));
      break;
    case v1::OrchestratorMessage::kCancel: {
      const v1::Cancel& cancel = message.cancel();
      auto it = running_.find({cancel.task_id(), cancel.tool_use_id()});
      if (it != running_.end() && it->second.attempt <= cancel.attempt()) {
        running_.erase(it);
      }
      loop_.Trace(absl::StrCat("worker ", id_, " cancel ", cancel.tool_use_id(),
                               " #", cancel.attempt()));
      break;
    }
    case v1::OrchestratorMessage::kAssignment: {
      const v1::Assignment& a = message.assignment();
      ++assignments_;
      CallKey key{a.task_id(), a.tool_use_id()};
      if (loop_.Chance(options_.forget)) {
        running_.erase(key);
        loop_.Fault("worker_forget", a.tool_use_id());
        break;
      }
      Running call;
      call.attempt = a.attempt();
      call.name = a.name();
      call.input_json = a.input_json();
      call.hang = loop_.Chance(options_.hang);
      running_[key] = call;
      loop_.Trace(absl::StrCat("worker ", id_, " runs ", a.tool_use_id(), " #",
                               a.attempt(), " ", a.name()));
      if (call.hang) {
        loop_.Fault("worker_hang", a.tool_use_id());
        break;
      }
      const absl::Duration delay =
          loop_.Chance(options_.slow)
              ? loop_.Between(absl::Seconds(3), absl::Seconds(25))
              : loop_.Between(absl::Milliseconds(5), absl::Seconds(2));
      loop_.After(delay, [this, conn, key, attempt = a.attempt()] {
        Answer(conn, key, attempt);
      });
      break;
    }
    default:
      break;
  }
}

void SimWorker::Answer(std::uint64_t conn, CallKey key, std::uint32_t attempt) {
  if (!connected_ || conn != conn_) return;
  auto it = running_.find(key);
  if (it == running_.end() || it->second.attempt != attempt) return;
  Running call = std::move(it->second);
  running_.erase(it);
  const bool is_error = loop_.Chance(options_.error_result);
  if (is_error) loop_.Fault("tool_error_result", key.second);
  // The text names its call, so that a result delivered to the wrong call
  // is caught at the end.
  const std::string text =
      is_error ? absl::StrCat("failed ", key.second, " #", attempt)
               : absl::StrCat("ok ", key.second, " #", attempt, " ",
                              call.name, " ", call.input_json);
  auto result_for = [&](std::uint32_t which) {
    v1::WorkerMessage message;
    v1::ToolResult* result = message.mutable_tool_result();
    result->set_task_id(key.first);
    result->set_tool_use_id(key.second);
    result->set_attempt(which);
    result->set_content_json(common::DumpJson(common::Json(text)));
    result->set_is_error(is_error);
    *result->mutable_duration() = TimeUtil::MillisecondsToDuration(10);
    return message;
  };
  if (attempt > 1 && loop_.Chance(options_.stale_attempt)) {
    loop_.Fault("stale_attempt_result", key.second);
    ToEngine(result_for(attempt - 1));
  }
  loop_.Trace(absl::StrCat("worker ", id_, " result ", key.second, " #",
                           attempt, is_error ? " error" : ""));
  ToEngine(result_for(attempt));
}

void SimWorker::Heartbeat(std::uint64_t conn) {
  if (!connected_ || conn != conn_) return;
  v1::WorkerMessage message;
  v1::Heartbeat* beat = message.mutable_heartbeat();
  for (const auto& [key, call] : running_) {
    v1::RunningCall* running = beat->add_running();
    running->set_task_id(key.first);
    running->set_tool_use_id(key.second);
    running->set_attempt(call.attempt);
  }
  beat->set_free_slots(slots_ > running_.size()
                           ? static_cast<std::uint32_t>(slots_ - running_.size())
                           : 0);
  ToEngine(std::move(message));
  loop_.After(heartbeat_interval_ +
                  loop_.Between(absl::ZeroDuration(), absl::Milliseconds(100)),
              [this, conn] { Heartbeat(conn); });
}

}  // namespace toolmesh::sim
