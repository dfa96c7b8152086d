// The toolmesh-worker's side of WorkerService.Connect
// (proto/toolmesh/v1/worker_service.proto): connect out to the orchestrator,
// say Hello with the tools of tools.json, heartbeat, run assigned calls on
// the tools' executors, cancel on request, reconnect with backoff when the
// stream breaks, and drain (hand back unfinished work) before exiting.
//
// Transport choice: gRPC's synchronous bidi stream. Per connection, the
// thread that called Run() reads (ClientReaderWriter::Read) and a writer
// thread owned by the connection drains an outbox queue into Write(); so
// nothing but that writer ever blocks on the network, and there is only ever
// one write in flight. Everything else (executor `done` callbacks, clock
// timers, Drain(), Stop()) only appends to the outbox under `mu_`.
//
// Calls: an Assignment is validated (known tool, input_json parses, input
// matches the tool's input_schema); a violation is answered at once with an
// is_error ToolResult naming the field. Valid calls start when a slot is
// free (the orchestrator never exceeds the slots it was told; if it does,
// the extra calls wait in a local queue and are listed in heartbeats, so
// their leases do not expire). Each running call has a timer at the
// Assignment's deadline that cancels it and reports is_error "timeout". The
// executor key of a call is "<tool_use_id>#<attempt>", so that an old
// attempt still being killed never collides with its redelivery.
//
// Streams end in one of three ways:
//   - broken (network, orchestrator restart, UNAVAILABLE, ALREADY_EXISTS,
//     RESOURCE_EXHAUSTED, ...): the orchestrator re-queues our calls with
//     attempt + 1. Queued calls are dropped; running ones keep running
//     (until done or their deadline), and a result that arrives while no
//     stream is welcomed is held and sent after the next Welcome with its
//     original attempt: the orchestrator takes it if the call has not
//     ended meanwhile. Held results are bounded by `slots` (no call starts
//     while disconnected). Run() reconnects after an exponential backoff
//     with jitter (reset once a Welcome arrives), forever until Stop() or
//     Drain();
//   - permanent (INVALID_ARGUMENT, FAILED_PRECONDITION, UNAUTHENTICATED,
//     PERMISSION_DENIED, UNIMPLEMENTED: our Hello, protocol or credentials
//     are wrong and retrying cannot help): every call is cancelled and Run()
//     returns that status;
//   - drained: Run() returns OK.
//
// Thread-safety: Run() is called once, from one thread, and blocks. Drain(),
// Stop() and the accessors may be called from any thread at any time,
// including from another thread while Run() blocks. The destructor stops the
// client, cancels every call and waits for the executors; it must not run
// concurrently with Run() (join the Run() thread first) nor inside a clock
// callback.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/backoff.h"
#include "common/clock.h"
#include "common/json.h"
#include "common/random.h"
#include "grpcpp/security/credentials.h"
#include "toolmesh/v1/worker_service.grpc.pb.h"
#include "worker/executor.h"
#include "worker/tools_config.h"

namespace toolmesh::worker {

// The build string sent in Hello.worker_version.
inline constexpr char kWorkerVersion[] = "toolmesh-worker/0.1";

// The shortest heartbeat period the worker keeps; a Welcome asking for less
// gets this.
inline constexpr absl::Duration kMinHeartbeatInterval =
    absl::Milliseconds(100);

struct WorkerClientOptions {
  // HOST:PORT of the orchestrator's gRPC listener.
  std::string orchestrator_address;
  // Channel credentials (orchestrator::MakeChannelCredentials); null:
  // plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Largest gRPC message the channel sends or receives; larger ones fail
  // the stream with RESOURCE_EXHAUSTED.
  int max_message_bytes = 4 * 1024 * 1024;
  // Hello.worker_id; must not be empty.
  std::string worker_id;
  // Sent as `authorization: Bearer <token>` when not empty.
  std::string token;
  // Hello.slots: calls run at once; > 0.
  int slots = 4;
  // The most bytes of a tool result's content; a longer one is truncated
  // with "[... truncated: N bytes over the M-byte limit]" (LimitResultSize)
  // and still sent as the result. Also the exec executors' stdout cap. > 0.
  size_t max_result_bytes = kDefaultMaxResultBytes;
  // Reconnect delays: 0.2 s doubling up to 5 s, jitter in [0.5, 1].
  common::BackoffOptions reconnect_backoff = {
      absl::Milliseconds(200), 2.0, absl::Seconds(5), 0.5, 1.0};
  // Heartbeat period when a Welcome carries none (or a non-positive one).
  absl::Duration default_heartbeat_interval = absl::Seconds(10);
  // After WritesDone at the end of a drain, how long to wait for the
  // orchestrator to end the stream before cancelling it.
  absl::Duration close_timeout = absl::Seconds(5);
  // One-line state changes ("connected", "stream ended: ...", ...). Called
  // from any of the client's threads, never under its lock. Default: stderr.
  // Receives each log line, a JSON object as text (see Log()).
  std::function<void(const std::string&)> log;
  // Called after each Welcome (main prints "worker ID connected to ...").
  // Same threading as `log`.
  std::function<void()> on_connected;
};

// Builds the executor that runs `spec`. `clock` (used by builtin sleep) must
// outlive the executor. `max_result_bytes` caps an exec tool's stdout.
std::unique_ptr<Executor> MakeExecutor(
    const ExecutorSpec& spec, common::Clock& clock,
    size_t max_result_bytes = kDefaultMaxResultBytes);

class WorkerClient {
 public:
  // Checks the options and builds one executor per tool. Returns
  // kInvalidArgument for an empty worker_id or address, slots < 1,
  // max_result_bytes == 0,
  // max_message_bytes < 1, or bad
  // backoff options. `clock` and `random` must outlive the client; the
  // clock times heartbeats, deadlines, backoff and the drain grace.
  static absl::StatusOr<std::unique_ptr<WorkerClient>> Create(
      WorkerClientOptions options, ToolsConfig tools, common::Clock& clock,
      common::RandomSource& random);

  ~WorkerClient();
  WorkerClient(const WorkerClient&) = delete;
  WorkerClient& operator=(const WorkerClient&) = delete;

  // Connects and serves until Stop() (returns OK), a completed drain
  // (returns OK), or a permanent rejection (returns its status, code and
  // message as the orchestrator gave them, e.g. kFailedPrecondition). Blocks;
  // call at most once.
  absl::Status Run();

  // Starts a drain and returns at once: sends Draining{grace}, hands back
  // queued and newly assigned calls with ReturnCall, lets running calls
  // finish for up to `grace`, then hands back and cancels the rest, closes
  // the stream and makes Run() return OK. Without a connection Run()
  // returns OK at once. A second call is ignored.
  void Drain(absl::Duration grace);

  // Makes Run() return OK soon: cancels the stream and every call without
  // handing anything back. Idempotent.
  void Stop();

  // The number of calls accepted and not yet finished (running or queued).
  int ActiveCalls() const;

  // --- Testing seam (fuzz targets) -----------------------------------------
  // Drives the message handling of one session without a network: never
  // together with Run(), and from one thread at a time.
  //
  // Opens a session the way Run() does (its Hello is the first message
  // written), except that what the client writes collects in memory.
  // Closes a session opened before. Returns false when the client is
  // stopping or draining (nothing is opened then).
  bool OpenSessionForTesting();
  // Handles `message` as if the open session's stream had read it.
  void HandleMessageForTesting(const v1::OrchestratorMessage& message);
  // Takes what the open session has written so far, in order.
  std::vector<v1::WorkerMessage> TakeWrittenForTesting();
  // Ends the open session (EndSessionLocked, as when the stream ends while
  // stopping): queued calls are dropped, running ones cancelled, their
  // results discarded. Harmless without an open session.
  void CloseSessionForTesting();

 private:
  struct CallKey {
    std::string tool_use_id;
    uint32_t attempt = 0;
    template <typename H>
    friend H AbslHashValue(H h, const CallKey& k) {
      return H::combine(std::move(h), k.tool_use_id, k.attempt);
    }
    friend bool operator==(const CallKey&, const CallKey&) = default;
  };
  struct Call;
  struct Tool;
  // Keeps callbacks (executor `done`, clock timers) from entering a client
  // that is being destroyed; see Guard().
  struct LifeGuard;
  class Connection;
  enum class SessionEnd { kBroken, kPermanent, kDone };

  WorkerClient(WorkerClientOptions options, ToolsConfig tools,
               common::Clock& clock, common::ExponentialBackoff backoff);

  // Wraps `fn` (a callback for an executor or the clock) so that it runs
  // only while the client is alive; the destructor waits for running ones.
  template <typename Fn>
  auto Guard(Fn fn);

  // One JSON log line ({"ts","level","component":"worker","worker_id",
  // "msg", fields...}) handed to options_.log (default: stderr).
  void Log(const std::string& msg,
           std::vector<std::pair<std::string, std::string>> fields = {});

  // One connection: Hello, the read loop, the end. Sets *status for a
  // permanent end and *welcomed when a Welcome arrived.
  SessionEnd RunSession(absl::Status* status, bool* welcomed);
  // The start of a session: queues the Hello on `connection` and makes it
  // the current connection. Returns the new session, or 0 when stopping or
  // draining.
  uint64_t BeginSession(Connection& connection);
  // The end of a session's stream: detaches the connection and abandons
  // its calls; returns the executor keys to cancel.
  std::vector<std::pair<Executor*, common::ToolUseId>> EndSessionLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The end of a broken stream: detaches the connection, drops the queued
  // calls and keeps the running ones (see the file comment). Returns how
  // many keep running.
  int DetachSessionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits `delay` on the clock, or until Stop()/Drain(). Returns false when
  // the client should not reconnect.
  bool WaitBeforeReconnect(absl::Duration delay);

  void HandleMessage(uint64_t session, const v1::OrchestratorMessage& message);
  void HandleWelcome(uint64_t session, const v1::Welcome& welcome);
  void HandleAssignment(uint64_t session, const v1::Assignment& assignment);
  void HandleCancel(const v1::Cancel& cancel);

  // Starts queued calls while slots are free. Must not hold mu_.
  void StartQueued();
  void OnCallDone(const CallKey& key, uint64_t serial, ToolOutcome outcome);
  void OnDeadline(const CallKey& key, uint64_t serial);
  void OnHeartbeatTimer(uint64_t session);
  void OnDrainGraceOver(uint64_t session);
  void OnCloseTimeout(uint64_t session);

  // Appends to the current connection's outbox; dropped when `session` is
  // not the current connection.
  void SendLocked(uint64_t session, v1::WorkerMessage message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleHeartbeatLocked(uint64_t session)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands back every queued call of `session` with ReturnCall.
  void ReturnQueuedLocked(uint64_t session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When draining and no call of the session runs: WritesDone.
  void MaybeFinishDrainLocked(uint64_t session)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishDrainLocked(uint64_t session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks every call of the ended session as abandoned (results dropped),
  // drops its queued calls, and returns the executor keys to cancel.
  std::vector<std::pair<Executor*, common::ToolUseId>> AbandonCallsLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int RunningLocked() const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const WorkerClientOptions options_;
  const ToolsConfig tools_;
  common::Clock& clock_;
  absl::flat_hash_map<std::string, std::unique_ptr<Executor>> executors_;
  std::shared_ptr<v1::WorkerService::Stub> stub_;
  std::shared_ptr<LifeGuard> guard_;

  // Only the Run() thread.
  common::ExponentialBackoff backoff_;

  // Only the thread using the testing seam.
  std::unique_ptr<Connection> testing_connection_;
  uint64_t testing_session_ = 0;

  mutable absl::Mutex mu_;
  // Bumped for every connection attempt; messages and timers carry the
  // session they belong to and are dropped when it is over.
  uint64_t session_ ABSL_GUARDED_BY(mu_) = 0;
  // The live connection, or nullptr between connections.
  Connection* connection_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool welcomed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_);
  common::TimerHandle heartbeat_timer_ ABSL_GUARDED_BY(mu_);
  // Set by a Rejected message of the current session.
  std::optional<absl::Status> rejected_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool drain_finished_ ABSL_GUARDED_BY(mu_) = false;
  common::TimerHandle drain_timer_ ABSL_GUARDED_BY(mu_);
  // The reconnect wait in progress (its timer sets backoff_elapsed_ only if
  // the ids match).
  uint64_t backoff_wait_ ABSL_GUARDED_BY(mu_) = 0;
  bool backoff_elapsed_ ABSL_GUARDED_BY(mu_) = false;
  common::TimerHandle backoff_timer_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<CallKey, std::unique_ptr<Call>> calls_
      ABSL_GUARDED_BY(mu_);
  std::deque<CallKey> queue_ ABSL_GUARDED_BY(mu_);
  // ToolResult messages of calls that finished while no stream was
  // welcomed; sent after the next Welcome.
  std::vector<v1::WorkerMessage> held_results_ ABSL_GUARDED_BY(mu_);
  uint64_t next_serial_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace toolmesh::worker
