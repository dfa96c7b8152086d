// WorkerServiceImpl: toolmesh.v1.WorkerService.Connect on gRPC's callback
// API, a thin layer over EngineApi (orchestrator/engine/engine_api.h).
//
// One bidi reactor per worker stream. Its engine-facing half, a WorkerLink,
// is a separate object shared by the engine and the reactor, so the engine
// may keep the link after the stream is gone (Send() then drops messages).
//   - The call is authenticated first (Authenticator::CheckWorker).
//   - The first worker message must be Hello (else the stream ends with
//     INVALID_ARGUMENT and the engine hears nothing). A Hello whose tool
//     has an input_schema that is JSON but not a valid JSON Schema for
//     tool input (the worker's InputValidator refuses it) is answered
//     Rejected and the stream ends with INVALID_ARGUMENT naming the tool;
//     the engine hears nothing either. Otherwise the Hello gets a fresh
//     session id and goes to EngineApi::WorkerHello with the link; every
//     later message goes to EngineApi::WorkerMessage, in order.
//   - Send() queues (unbounded: the engine bounds what it assigns) and
//     writes one message at a time; Close(status) ends the stream with
//     `status` once the queue is written.
//   - The end of the stream (the worker half-closes or breaks it, the call
//     is cancelled, or it finishes) is reported once with
//     EngineApi::WorkerGone, after every WorkerHello/WorkerMessage call of
//     the stream, for each stream that reached WorkerHello.
//
// Thread-safety: used by gRPC's threads and the engine thread
// concurrently; shared state is under mutexes per stream. Nothing blocks.
#pragma once

#include "orchestrator/engine/engine_api.h"
#include "orchestrator/grpc/auth.h"
#include "toolmesh/v1/worker_service.grpc.pb.h"

namespace toolmesh::orchestrator {

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  // `engine` must outlive the service and every stream it started (in the
  // daemon: shut the gRPC server down before destroying the engine).
  WorkerServiceImpl(EngineApi& engine, Authenticator auth);

  WorkerServiceImpl(const WorkerServiceImpl&) = delete;
  WorkerServiceImpl& operator=(const WorkerServiceImpl&) = delete;

  grpc::ServerBidiReactor<v1::WorkerMessage, v1::OrchestratorMessage>*
  Connect(grpc::CallbackServerContext* context) override;

 private:
  // Constant after construction.
  EngineApi& engine_;
  const Authenticator auth_;
};

}  // namespace toolmesh::orchestrator
