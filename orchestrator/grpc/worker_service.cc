// WorkerService.Connect over EngineApi; see worker_service.h.
#include "orchestrator/grpc/worker_service.h"

#include <cstddef>
#include <limits>
#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "orchestrator/grpc/status_conversion.h"
#include "orchestrator/grpc/stream_writer.h"
#include "worker/input_validator.h"

namespace toolmesh::orchestrator {
namespace {

using ConnectReactorBase =
    grpc::ServerBidiReactor<v1::WorkerMessage, v1::OrchestratorMessage>;

// Every tool of `hello` must carry an input_schema that is a JSON Schema
// the worker can check inputs against (a JSON object with "type":
// "object" that a Draft 7 validator accepts); the model would otherwise be
// offered a tool the API or the worker refuses. INVALID_ARGUMENT naming the
// tool. Text that is not JSON at all is left to the engine, which names it
// the same way it always did.
absl::Status CheckHelloSchemas(const v1::Hello& hello) {
  for (int i = 0; i < hello.tools_size(); ++i) {
    const v1::ToolDefinition& tool = hello.tools(i);
    absl::StatusOr<common::Json> schema =
        common::ParseJson(tool.input_schema_json());
    if (!schema.ok()) continue;
    absl::StatusOr<worker::InputValidator> compiled =
        worker::InputValidator::Compile(*schema);
    if (!compiled.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Hello.tools[", i, "] (tool \"", tool.name(),
                       "\"): ", compiled.status().message()));
    }
  }
  return absl::OkStatus();
}

v1::OrchestratorMessage RejectedMessage(const absl::Status& status) {
  v1::OrchestratorMessage message;
  message.mutable_rejected()->set_code(
      static_cast<std::int32_t>(rpc::ToGrpcCode(status.code())));
  message.mutable_rejected()->set_message(std::string(status.message()));
  return message;
}

class ConnectReactor;

// The engine's half of one Connect stream. Shared by the engine (through
// WorkerHello's link) and the reactor (until OnDone).
class WorkerStream final : public WorkerLink,
                           public std::enable_shared_from_this<WorkerStream> {
 public:
  WorkerStream(EngineApi& engine, ConnectReactor* reactor)
      : engine_(engine),
        writer_(reactor, std::numeric_limits<std::size_t>::max()) {}

  // WorkerLink (engine thread).
  void Send(v1::OrchestratorMessage message) override {
    writer_.Push(std::move(message));
  }
  void Close(const absl::Status& status) override {
    writer_.Close(rpc::ToGrpcStatus(status));
  }

  // One message read from the worker, or the end of its side (`ok` false).
  // Returns whether to read the next one.
  bool OnRead(bool ok, v1::WorkerMessage message) {
    if (!ok) {
      ReportGone(absl::CancelledError("the worker ended its side"));
      // Nothing more can arrive; end the call once pending writes are out.
      writer_.Close(grpc::Status::OK);
      return false;
    }
    bool not_hello = false;
    absl::Status bad_hello;
    {
      absl::MutexLock lock(&engine_mu_);
      if (gone_reported_) return false;
      if (session_ != 0) {
        engine_.WorkerMessage(session_, std::move(message));
      } else if (message.message_case() == v1::WorkerMessage::kHello &&
                 !(bad_hello = CheckHelloSchemas(message.hello())).ok()) {
        // Refused before the engine heard of it: nothing to report later.
        gone_reported_ = true;
      } else if (message.message_case() == v1::WorkerMessage::kHello) {
        session_ = engine_.NewWorkerSession();
        engine_.WorkerHello(session_, shared_from_this(),
                            std::move(*message.mutable_hello()));
      } else {
        // The engine never heard of this stream: nothing to report later.
        gone_reported_ = true;
        not_hello = true;
      }
    }
    if (!bad_hello.ok()) {
      writer_.Push(RejectedMessage(bad_hello));
      writer_.Close(rpc::ToGrpcStatus(bad_hello));
      return false;
    }
    if (not_hello) {
      writer_.Close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "the first message on Connect must be hello"));
      return false;
    }
    return !writer_.finished();
  }

  // Reactions of the reactor (gRPC threads).
  void OnWriteDone(bool ok) {
    if (!ok) ReportGone(absl::UnavailableError("writing to the worker failed"));
    writer_.OnWriteDone(ok);
  }
  void OnCancel() {
    ReportGone(absl::CancelledError("the worker stream was cancelled"));
    writer_.ClientGone();
  }
  void OnDone() {
    ReportGone(absl::OkStatus());
    writer_.Detach();
  }

 private:
  using Writer = StreamWriter<v1::OrchestratorMessage, ConnectReactor>;

  // EngineApi::WorkerGone, once, for a session that reached WorkerHello.
  void ReportGone(const absl::Status& why) {
    absl::MutexLock lock(&engine_mu_);
    if (gone_reported_) return;
    gone_reported_ = true;
    if (session_ != 0) engine_.WorkerGone(session_, why);
  }

  EngineApi& engine_;

  // Serialises this stream's calls into the engine, so that WorkerGone is
  // the last of them. The engine's methods only queue work, so holding it
  // across them is short; the engine's callbacks (Send, Close) never take
  // it.
  absl::Mutex engine_mu_;
  WorkerSessionId session_ ABSL_GUARDED_BY(engine_mu_) = 0;  // 0: no Hello
  bool gone_reported_ ABSL_GUARDED_BY(engine_mu_) = false;

  Writer writer_;
};

class ConnectReactor final : public ConnectReactorBase {
 public:
  // A call refused before it reached the engine.
  explicit ConnectReactor(const grpc::Status& refusal) { Finish(refusal); }

  // A call whose messages go to the engine.
  explicit ConnectReactor(EngineApi& engine)
      : stream_(std::make_shared<WorkerStream>(engine, this)) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    v1::WorkerMessage message;
    message.Swap(&in_);
    if (stream_->OnRead(ok, std::move(message))) StartRead(&in_);
  }
  void OnWriteDone(bool ok) override { stream_->OnWriteDone(ok); }
  void OnCancel() override {
    if (stream_ != nullptr) stream_->OnCancel();
  }
  void OnDone() override {
    if (stream_ != nullptr) stream_->OnDone();
    delete this;
  }

 private:
  const std::shared_ptr<WorkerStream> stream_;  // null when refused
  v1::WorkerMessage in_;                        // the read in flight
};

}  // namespace

WorkerServiceImpl::WorkerServiceImpl(EngineApi& engine, Authenticator auth)
    : engine_(engine), auth_(std::move(auth)) {}

grpc::ServerBidiReactor<v1::WorkerMessage, v1::OrchestratorMessage>*
WorkerServiceImpl::Connect(grpc::CallbackServerContext* context) {
  absl::Status allowed = auth_.CheckWorker(*context);
  if (!allowed.ok()) return new ConnectReactor(rpc::ToGrpcStatus(allowed));
  return new ConnectReactor(engine_);
}

}  // namespace toolmesh::orchestrator
