// TaskServiceImpl: toolmesh.v1.TaskService on gRPC's callback API, a thin
// layer over EngineApi (orchestrator/engine/engine_api.h).
//
// Each RPC authenticates the call (Authenticator::AuthenticateClient), hands
// the request to the engine and returns; the engine answers on its own
// thread and the answer finishes the call. SubmitTask passes the client
// principal's name to the engine (per-client task limits), and first
// checks that every input_schema in spec.server_tools_json is a valid JSON
// Schema (INVALID_ARGUMENT naming the field and the tool; the worker's
// InputValidator decides). Unary RPCs use the default unary
// reactor. WatchTask uses a write reactor whose engine-facing half, an
// EventSubscriber, is a separate object shared by the engine and the
// reactor, so the engine may keep it after the call is gone:
//   - OnEvent queues the event in a bounded buffer (full: returns false and
//     the engine ends the watch with RESOURCE_EXHAUSTED); one write is in
//     flight at a time, the next one started when the previous is done;
//   - OnEnd finishes the call with its status once the buffer is written;
//   - a client that goes away (cancel, broken stream) makes the service
//     call EngineApi::CancelWatch once.
// An engine answer that is dropped without being called (the engine
// stopped) finishes the call with UNAVAILABLE, so no call hangs.
//
// Thread-safety: the service is used by gRPC's threads and the engine
// thread concurrently; all shared state is under a mutex per call. Nothing
// here blocks.
#pragma once

#include <cstddef>

#include "orchestrator/engine/engine_api.h"
#include "orchestrator/grpc/auth.h"
#include "toolmesh/v1/task_service.grpc.pb.h"

namespace toolmesh::orchestrator {

struct TaskServiceOptions {
  // Events a WatchTask stream buffers for a slow client before the watch
  // ends with RESOURCE_EXHAUSTED. At least 1.
  std::size_t watch_buffer_events = 4096;
};

class TaskServiceImpl final : public v1::TaskService::CallbackService {
 public:
  // `engine` must outlive the service and every call it started (in the
  // daemon: shut the gRPC server down before destroying the engine).
  TaskServiceImpl(EngineApi& engine, Authenticator auth,
                  TaskServiceOptions options = {});

  TaskServiceImpl(const TaskServiceImpl&) = delete;
  TaskServiceImpl& operator=(const TaskServiceImpl&) = delete;

  grpc::ServerUnaryReactor* SubmitTask(
      grpc::CallbackServerContext* context,
      const v1::SubmitTaskRequest* request,
      v1::SubmitTaskResponse* response) override;
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* context,
                                    const v1::GetTaskRequest* request,
                                    v1::GetTaskResponse* response) override;
  grpc::ServerUnaryReactor* CancelTask(
      grpc::CallbackServerContext* context,
      const v1::CancelTaskRequest* request,
      v1::CancelTaskResponse* response) override;
  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* context,
                                      const v1::ListTasksRequest* request,
                                      v1::ListTasksResponse* response) override;
  grpc::ServerUnaryReactor* ListWorkers(
      grpc::CallbackServerContext* context,
      const v1::ListWorkersRequest* request,
      v1::ListWorkersResponse* response) override;
  grpc::ServerWriteReactor<v1::TaskEvent>* WatchTask(
      grpc::CallbackServerContext* context,
      const v1::WatchTaskRequest* request) override;

 private:
  // Constant after construction.
  EngineApi& engine_;
  const Authenticator auth_;
  const TaskServiceOptions options_;
};

}  // namespace toolmesh::orchestrator
