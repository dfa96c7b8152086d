// Runs `http` tools: POST the tool input as JSON to a URL with libcurl.
//
// Per call: `Content-Type: application/json`, the compact input JSON as the
// body, redirects not followed, only http/https allowed, TLS verification
// on (libcurl's default), the whole request bounded by HttpSpec::timeout.
//   - 2xx: the response body is the result (text), capped at
//     HttpOptions::max_body_bytes with the line
//     "[toolmesh: output truncated at N bytes]" appended;
//   - any other status: is_error, reason kToolFailed,
//     "HTTP <status> from <url>" and the first error_body_bytes of the body;
//   - connection failures: is_error, reason kToolFailed, libcurl's text;
//   - the timeout: reason kTimeout; Cancel(): reason kCancelled, at once
//     (curl_multi_wakeup interrupts the wait).
//
// Threads: one thread per running call, each driving its own curl multi
// handle (calls are bounded by the worker's slots; a shared multi loop is
// the orchestrator model client's job, not needed here). `done` runs on
// that thread.
//
// Thread-safety: all methods may be called concurrently from any thread.
// The destructor cancels every running call and waits for their threads,
// so each `done` has run when it returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/ids.h"
#include "worker/executor.h"
#include "worker/tools_config.h"

namespace toolmesh::worker {

struct HttpOptions {
  size_t max_body_bytes = size_t{1} << 20;  // 1 MiB
  size_t error_body_bytes = 2048;
};

class HttpExecutor final : public Executor {
 public:
  explicit HttpExecutor(HttpSpec spec, HttpOptions options = {});
  ~HttpExecutor() override;

  HttpExecutor(const HttpExecutor&) = delete;
  HttpExecutor& operator=(const HttpExecutor&) = delete;

  void Run(const ToolCall& call, DoneCallback done) override;
  bool Cancel(const common::ToolUseId& id) override;

 private:
  struct Call;

  void CallThread(std::shared_ptr<Call> call, std::string body,
                  DoneCallback done, uint64_t serial);
  ToolOutcome Post(Call& call, const std::string& body);
  // Joins threads that have finished. Must not hold mu_.
  void JoinFinished();

  // Constant after construction.
  const HttpSpec spec_;
  const HttpOptions options_;

  absl::Mutex mu_;
  absl::flat_hash_map<common::ToolUseId, std::shared_ptr<Call>> running_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> finished_ ABSL_GUARDED_BY(mu_);
  uint64_t next_serial_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace toolmesh::worker
