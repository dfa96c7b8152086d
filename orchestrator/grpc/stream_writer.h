// StreamWriter: the write half of one server-streaming gRPC call (a
// ServerWriteReactor or ServerBidiReactor), fed from any thread.
//
// gRPC's callback API allows one write in flight per stream and requires
// every call to be finished exactly once, never while a write is in flight.
// StreamWriter keeps those rules for producers that live on other threads
// (the engine thread): Push() queues a message in a bounded buffer and
// starts a write when none is in flight; the reactor's OnWriteDone() starts
// the next one; Close() finishes the call once the buffer is written; a
// client that went away (OnCancel, a failed write) drops the buffer and
// finishes the call with CANCELLED as soon as no write is in flight.
//
// Decisions are taken under the writer's mutex; the reactor's StartWrite()
// and Finish() are called after it is released, so a reaction that gRPC
// runs inline cannot deadlock on it. The reactor stays alive while a write
// is in flight or Finish() has not been called (gRPC calls OnDone() only
// after both), which is what makes calling it outside the lock safe.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/status.h"

namespace toolmesh::orchestrator {

// `Reactor` has StartWrite(const Message*) and Finish(grpc::Status).
template <typename Message, typename Reactor>
class StreamWriter {
 public:
  enum class PushResult {
    kQueued,
    kFull,    // the buffer holds `capacity` messages: not queued
    kClosed,  // Close() was called or the client went away: not queued
  };

  // `reactor` must stay valid until Detach(); `capacity` >= 1 is the number
  // of messages buffered besides the one being written.
  StreamWriter(Reactor* reactor, std::size_t capacity)
      : capacity_(capacity < 1 ? 1 : capacity), reactor_(reactor) {}

  StreamWriter(const StreamWriter&) = delete;
  StreamWriter& operator=(const StreamWriter&) = delete;

  // Queues `message`, in order after the earlier ones.
  PushResult Push(Message message) ABSL_LOCKS_EXCLUDED(mu_) {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      if (closing_.has_value() || client_gone_ || reactor_ == nullptr) {
        return PushResult::kClosed;
      }
      if (queue_.size() >= capacity_) return PushResult::kFull;
      queue_.push_back(std::move(message));
      step = NextLocked();
    }
    Run(step);
    return PushResult::kQueued;
  }

  // Finishes the call with `status` once every queued message is written.
  // The first Close() wins; later ones are ignored. Later Push() calls
  // return kClosed.
  void Close(grpc::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      if (closing_.has_value()) return;
      closing_ = std::move(status);
      step = NextLocked();
    }
    Run(step);
  }

  // The reactor's OnWriteDone(ok). `ok` false means the stream is broken:
  // treated as ClientGone().
  void OnWriteDone(bool ok) ABSL_LOCKS_EXCLUDED(mu_) {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      if (!ok) client_gone_ = true;
      step = NextLocked();
    }
    Run(step);
  }

  // The client went away (the reactor's OnCancel): the buffer is dropped and
  // the call finished with CANCELLED when no write is in flight.
  void ClientGone() ABSL_LOCKS_EXCLUDED(mu_) {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      client_gone_ = true;
      step = NextLocked();
    }
    Run(step);
  }

  // The reactor's OnDone: it is about to be deleted; nothing touches it
  // after this returns.
  void Detach() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
    queue_.clear();
  }

  // True once Finish() was (or is about to be) called on the reactor.
  bool finished() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return finish_started_;
  }

 private:
  struct Step {
    enum class Kind { kNone, kWrite, kFinish };
    Kind kind = Kind::kNone;
    Reactor* reactor = nullptr;
    grpc::Status status;
  };

  // The reactor operation to start now, if any, with the bookkeeping for it
  // done.
  Step NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Step step;
    if (reactor_ == nullptr || finish_started_ || write_in_flight_) {
      return step;
    }
    step.reactor = reactor_;
    if (client_gone_) {
      queue_.clear();
      finish_started_ = true;
      step.kind = Step::Kind::kFinish;
      step.status =
          grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      return step;
    }
    if (!queue_.empty()) {
      writing_ = std::move(queue_.front());
      queue_.pop_front();
      write_in_flight_ = true;
      step.kind = Step::Kind::kWrite;
      return step;
    }
    if (closing_.has_value()) {
      finish_started_ = true;
      step.kind = Step::Kind::kFinish;
      step.status = *closing_;
    }
    return step;
  }

  // Starts `step` on the reactor; called without mu_. `writing_` is not
  // touched by anyone else until the write's OnWriteDone.
  void Run(Step& step) ABSL_LOCKS_EXCLUDED(mu_) {
    switch (step.kind) {
      case Step::Kind::kNone:
        return;
      case Step::Kind::kWrite:
        step.reactor->StartWrite(&writing_);
        return;
      case Step::Kind::kFinish:
        step.reactor->Finish(std::move(step.status));
        return;
    }
  }

  // Constant after construction.
  const std::size_t capacity_;

  mutable absl::Mutex mu_;
  Reactor* reactor_ ABSL_GUARDED_BY(mu_);  // null after Detach()
  std::deque<Message> queue_ ABSL_GUARDED_BY(mu_);
  // The message being written; stable while write_in_flight_.
  Message writing_;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_started_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> closing_ ABSL_GUARDED_BY(mu_);
};

}  // namespace toolmesh::orchestrator
