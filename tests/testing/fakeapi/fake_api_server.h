// FakeApiServer: a local stand-in for the Anthropic Messages API
// (`POST /v1/messages`) on loopback, for tests, the demo and benchmarks.
//
// Per request it does what the API does, in the API's order: `request-id`
// header on every response; a key required, as `x-api-key` or
// `authorization: Bearer KEY` (401
// authentication_error); `anthropic-version` required (400); the body must be
// JSON (400) and pass common/'s ValidateRequest (400 with the API's exact
// text for the first violation, ApiErrorBody); then it answers with the next
// scenario response that matches (or the rule-driven model), streamed as SSE
// when `"stream": true`, else as one Message JSON with the same content.
// Faults (faults.h) come from the scenario response or, with probability
// `fault_rate`, from a seeded draw among `random_faults`.
//
// It remembers server calls it left unresolved (pause_turn, deferred call)
// and results it will repeat (FX-14), and opens the next response whose
// request carries that call with the result, as the API does.
//
// Side endpoints: `GET /_fake/requests` (the request log as a JSON array),
// `GET /_fake/stats` (counts, incl. `rejected_400`), `POST /_fake/reset`
// (clears log, stats, scenario progress and pending results).
//
// Thread-safety: Start/Stop from one owner thread; requests are served on an
// internal thread pool; RequestLog/Stats may be called from any thread.
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/json.h"
#include "tests/testing/fakeapi/faults.h"
#include "tests/testing/fakeapi/scenario.h"
#include "tests/testing/fakeapi/sse_writer.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace toolmesh::fakeapi {

using common::Json;

struct FakeApiOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port, see FakeApiServer::port()
  // Without a scenario every request goes to the rule-driven model.
  std::optional<Scenario> scenario;
  std::uint64_t seed = 0;
  // Empty: any non-empty key is accepted; else exactly this one.
  std::string api_key;
  // Probability of a fault per /v1/messages request that passed validation
  // and has none from its scenario response, drawn with the seed.
  double fault_rate = 0;
  std::vector<Fault> random_faults;
  // When set, every request is also appended to this file as a JSON line.
  std::string log_path;
  // The in-memory log keeps the newest entries only.
  std::size_t max_log_entries = 10000;
  // Worker threads (each keep-alive connection holds one while open).
  int threads = 16;
};

class FakeApiServer {
 public:
  explicit FakeApiServer(FakeApiOptions options);
  ~FakeApiServer();  // Stop()s

  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  // Binds and starts serving on a background thread; returns once the
  // socket listens (connections made after it succeed). kUnavailable when
  // the address cannot be bound, kFailedPrecondition when already started,
  // kNotFound when the log file cannot be opened.
  absl::Status Start();

  // The bound port (after Start).
  int port() const { return port_; }
  // "http://HOST:PORT".
  std::string base_url() const;

  // Stops accepting, aborts drips in progress and joins every thread.
  // Idempotent; blocks until done.
  void Stop();

  // The request log (JSON array, oldest first) and the counters.
  Json RequestLog() const;
  Json Stats() const;

 private:
  struct Pending {
    Json result;     // the result block to open the next response with
    bool repeat;     // FX-14: sent again although already resolved
  };
  struct Choice;

  void HandleMessages(const httplib::Request& req, httplib::Response& res);
  // Picks the response for a validated request and resolves its ids,
  // pending results and message faults. Fills `entry`.
  void Choose(const Json& body, bool stream, const std::string& request_id,
              Choice& choice, Json& entry);
  Json ResolveBlocksLocked(const Json& blocks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string ResolveNameLocked(const std::string& name,
                                std::string_view prefix)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyMessageFaultLocked(const Fault& fault, MessageSpec& spec,
                               std::string& fault_note)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Record(Json entry, bool validation_reject);
  // Waits `ms` unless the server stops first; returns false if it stopped.
  bool Sleep(int ms);

  // Constant after construction.
  const FakeApiOptions options_;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  bool started_ = false;

  mutable absl::Mutex mu_;
  IdSource ids_ ABSL_GUARDED_BY(mu_);
  IdSource fault_rng_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> used_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> names_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::uint64_t request_count_ ABSL_GUARDED_BY(mu_) = 0;

  mutable absl::Mutex log_mu_;
  std::deque<Json> log_ ABSL_GUARDED_BY(log_mu_);
  Json stats_ ABSL_GUARDED_BY(log_mu_);
  std::FILE* log_file_ ABSL_GUARDED_BY(log_mu_) = nullptr;

  absl::Mutex stop_mu_;
  bool stopping_ ABSL_GUARDED_BY(stop_mu_) = false;
};

}  // namespace toolmesh::fakeapi
