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
#include <string>

#include "common/ids.h"
#include "worker/executor.h"
#include "worker/thread_per_call_executor.h"
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
  class Call;

  ToolOutcome Post(Call& call, const std::string& body);

  // Constant after construction.
  const HttpSpec spec_;
  const HttpOptions options_;

  // Last, so its destructor joins the call threads before the members above
  // go away.
  CallThreads calls_;
};

}  // namespace toolmesh::worker
