// TaskService over EngineApi; see task_service.h.
#include "orchestrator/grpc/task_service.h"

#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "orchestrator/grpc/status_conversion.h"
#include "orchestrator/grpc/stream_writer.h"
#include "worker/input_validator.h"

namespace toolmesh::orchestrator {
namespace {

grpc::Status EngineStopped() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the orchestrator is shutting down");
}

// The engine's answer to one unary call: finishes the call exactly once,
// with the answer, or with UNAVAILABLE if it is destroyed unanswered.
template <typename Response>
class UnaryAnswer {
 public:
  UnaryAnswer(grpc::ServerUnaryReactor* reactor, Response* response)
      : reactor_(reactor), response_(response) {}
  UnaryAnswer(UnaryAnswer&& other) noexcept
      : reactor_(std::exchange(other.reactor_, nullptr)),
        response_(other.response_) {}
  UnaryAnswer& operator=(UnaryAnswer&&) = delete;
  UnaryAnswer(const UnaryAnswer&) = delete;
  UnaryAnswer& operator=(const UnaryAnswer&) = delete;

  ~UnaryAnswer() {
    if (reactor_ != nullptr) reactor_->Finish(EngineStopped());
  }

  void operator()(absl::StatusOr<Response> result) {
    grpc::ServerUnaryReactor* reactor = std::exchange(reactor_, nullptr);
    if (reactor == nullptr) return;
    if (!result.ok()) {
      reactor->Finish(rpc::ToGrpcStatus(result.status()));
      return;
    }
    *response_ = *std::move(result);
    reactor->Finish(grpc::Status::OK);
  }

 private:
  grpc::ServerUnaryReactor* reactor_;  // null once finished
  Response* response_;                 // owned by gRPC, valid until OnDone
};

template <typename Request, typename Response>
using EngineMethod = void (EngineApi::*)(Request, Reply<Response>);

template <typename Request, typename Response>
grpc::ServerUnaryReactor* HandleUnary(EngineApi& engine,
                                      const Authenticator& auth,
                                      grpc::CallbackServerContext* context,
                                      const Request* request,
                                      Response* response,
                                      EngineMethod<Request, Response> method) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::Status allowed = auth.CheckClient(*context);
  if (!allowed.ok()) {
    reactor->Finish(rpc::ToGrpcStatus(allowed));
    return reactor;
  }
  (engine.*method)(*request, Reply<Response>(
                                 UnaryAnswer<Response>(reactor, response)));
  return reactor;
}

// The input_schema of every tool definition in spec.server_tools_json that
// has one (a custom tool passed through) must be a JSON Schema the workers
// could check inputs against. Entries that are not JSON objects are left
// to the engine, which names them.
absl::Status CheckToolSchemas(const v1::TaskSpec& spec) {
  for (int i = 0; i < spec.server_tools_json_size(); ++i) {
    absl::StatusOr<common::Json> tool =
        common::ParseJson(spec.server_tools_json(i));
    if (!tool.ok() || !tool->is_object()) continue;
    auto schema = tool->find("input_schema");
    if (schema == tool->end()) continue;
    absl::StatusOr<worker::InputValidator> compiled =
        worker::InputValidator::Compile(*schema);
    if (compiled.ok()) continue;
    const common::Json name = tool->value("name", common::Json());
    return absl::InvalidArgumentError(absl::StrCat(
        rpc::FieldPath("spec.server_tools_json", static_cast<std::size_t>(i)),
        ": tool ",
        name.is_string() ? absl::StrCat("\"", name.get<std::string>(), "\"")
                         : std::string("without a name"),
        ": ", compiled.status().message()));
  }
  return absl::OkStatus();
}

class WatchReactor;

// The engine's half of one WatchTask call. Shared by the engine (as long
// as it keeps the subscription) and the reactor (until OnDone), so either
// may outlive the other.
class WatchSubscriber final
    : public EventSubscriber,
      public std::enable_shared_from_this<WatchSubscriber> {
 public:
  WatchSubscriber(EngineApi& engine, WatchReactor* reactor,
                  std::size_t capacity)
      : engine_(engine), writer_(reactor, capacity) {}

  // EventSubscriber (engine thread).
  bool OnEvent(const v1::TaskEvent& event) override {
    return writer_.Push(event) == Writer::PushResult::kQueued;
  }
  void OnEnd(const absl::Status& status) override {
    engine_done_.store(true);
    writer_.Close(rpc::ToGrpcStatus(status));
  }

  // Reactions of the reactor (gRPC threads).
  void OnWriteDone(bool ok) {
    if (!ok) ForgetClient();
    writer_.OnWriteDone(ok);
  }
  void OnCancel() {
    ForgetClient();
    writer_.ClientGone();
  }
  void OnDone() {
    ForgetClient();
    writer_.Detach();
  }

 private:
  using Writer = StreamWriter<v1::TaskEvent, WatchReactor>;

  // Tells the engine once that this subscriber is gone, unless the engine
  // ended the watch itself.
  void ForgetClient() {
    if (!engine_done_.exchange(true)) engine_.CancelWatch(shared_from_this());
  }

  EngineApi& engine_;
  // True once OnEnd() arrived or CancelWatch() was sent.
  std::atomic<bool> engine_done_{false};
  Writer writer_;
};

class WatchReactor final : public grpc::ServerWriteReactor<v1::TaskEvent> {
 public:
  // A call refused before it reached the engine.
  explicit WatchReactor(const grpc::Status& refusal) { Finish(refusal); }

  // A call handed to the engine.
  WatchReactor(EngineApi& engine, const v1::WatchTaskRequest& request,
               std::size_t capacity)
      : subscriber_(
            std::make_shared<WatchSubscriber>(engine, this, capacity)) {
    engine.WatchTask(request, subscriber_);
  }

  void OnWriteDone(bool ok) override { subscriber_->OnWriteDone(ok); }
  void OnCancel() override {
    if (subscriber_ != nullptr) subscriber_->OnCancel();
  }
  void OnDone() override {
    if (subscriber_ != nullptr) subscriber_->OnDone();
    delete this;
  }

 private:
  const std::shared_ptr<WatchSubscriber> subscriber_;  // null when refused
};

}  // namespace

TaskServiceImpl::TaskServiceImpl(EngineApi& engine, Authenticator auth,
                                 TaskServiceOptions options)
    : engine_(engine), auth_(std::move(auth)), options_(options) {}

grpc::ServerUnaryReactor* TaskServiceImpl::SubmitTask(
    grpc::CallbackServerContext* context, const v1::SubmitTaskRequest* request,
    v1::SubmitTaskResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> client = auth_.AuthenticateClient(*context);
  if (!client.ok()) {
    reactor->Finish(rpc::ToGrpcStatus(client.status()));
    return reactor;
  }
  if (absl::Status schemas = CheckToolSchemas(request->spec());
      !schemas.ok()) {
    reactor->Finish(rpc::ToGrpcStatus(schemas));
    return reactor;
  }
  engine_.SubmitTask(Caller{*std::move(client)}, *request,
                     Reply<v1::SubmitTaskResponse>(
                         UnaryAnswer<v1::SubmitTaskResponse>(reactor,
                                                             response)));
  return reactor;
}

grpc::ServerUnaryReactor* TaskServiceImpl::GetTask(
    grpc::CallbackServerContext* context, const v1::GetTaskRequest* request,
    v1::GetTaskResponse* response) {
  return HandleUnary(engine_, auth_, context, request, response,
                     &EngineApi::GetTask);
}

grpc::ServerUnaryReactor* TaskServiceImpl::CancelTask(
    grpc::CallbackServerContext* context, const v1::CancelTaskRequest* request,
    v1::CancelTaskResponse* response) {
  return HandleUnary(engine_, auth_, context, request, response,
                     &EngineApi::CancelTask);
}

grpc::ServerUnaryReactor* TaskServiceImpl::ListTasks(
    grpc::CallbackServerContext* context, const v1::ListTasksRequest* request,
    v1::ListTasksResponse* response) {
  return HandleUnary(engine_, auth_, context, request, response,
                     &EngineApi::ListTasks);
}

grpc::ServerUnaryReactor* TaskServiceImpl::ListWorkers(
    grpc::CallbackServerContext* context,
    const v1::ListWorkersRequest* request,
    v1::ListWorkersResponse* response) {
  return HandleUnary(engine_, auth_, context, request, response,
                     &EngineApi::ListWorkers);
}

grpc::ServerWriteReactor<v1::TaskEvent>* TaskServiceImpl::WatchTask(
    grpc::CallbackServerContext* context,
    const v1::WatchTaskRequest* request) {
  absl::Status allowed = auth_.CheckClient(*context);
  if (!allowed.ok()) return new WatchReactor(rpc::ToGrpcStatus(allowed));
  return new WatchReactor(engine_, *request, options_.watch_buffer_events);
}

}  // namespace toolmesh::orchestrator
