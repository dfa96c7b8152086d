// CurlModelTransport: the production ModelTransport (common/model_transport.h)
// on libcurl's multi interface. Many concurrent streamed Messages API
// requests share ONE thread that runs curl_multi_poll; HTTP/2 is used when
// the server offers it over TLS (streams are then multiplexed on one
// connection), plain http stays HTTP/1.1 with keep-alive reuse.
//
// Every request carries `content-type: application/json`, `x-api-key`,
// `anthropic-version`, `anthropic-beta` (when any), `user-agent:
// toolmesh/0.1`. TLS verification is always on (peer and host); only the CA
// bundle can be chosen. The API key is never logged and never appears in an
// error text.
//
// Threads: the constructor starts the transport thread; Start() and Cancel()
// may be called from any thread (they enqueue under a mutex and wake the
// loop with curl_multi_wakeup). All handler callbacks run on the transport
// thread, never under the transport's lock, so a handler may call Start()
// and Cancel(). The destructor finishes every open stream with kCancelled
// and joins the thread; it must not be called from a handler callback.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/model_transport.h"

namespace toolmesh::model {

struct CurlModelTransportOptions {
  // Scheme, host and optional port (and path prefix) of the API; requests go
  // to `base_url + "/v1/messages"`. Only http:// and https:// are accepted.
  std::string base_url = "https://api.anthropic.com";
  // Sent as `x-api-key`. Required (non-empty). Never logged.
  std::string api_key;
  std::string anthropic_version = "2023-06-01";
  // Joined with "," into one `anthropic-beta` header; none when empty.
  std::vector<std::string> anthropic_beta;
  // A CA bundle file (PEM) instead of the system's; verification stays on.
  std::string ca_file;
  absl::Duration connect_timeout = absl::Seconds(10);
  // A stream that receives no byte (header or body) for this long, counted
  // from Start() or the last byte, ends with kTimeout. Measured by the
  // transport thread on a monotonic clock, with millisecond resolution.
  // Zero disables it. It includes the time a stream waits for a free
  // connection when max_connections are busy.
  absl::Duration idle_timeout = absl::Seconds(60);
  // Whole-request limit (the SDKs' 10 minutes). Zero disables it.
  absl::Duration total_timeout = absl::Minutes(10);
  // Open connections at most (CURLMOPT_MAX_TOTAL_CONNECTIONS); further
  // streams wait for a free connection (or share one over HTTP/2).
  int max_connections = 64;
  std::string user_agent = "toolmesh/0.1";

  // OK, or kInvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

class CurlModelTransport final : public common::ModelTransport {
 public:
  // Validates `options`, initialises libcurl (once per process) and starts
  // the transport thread. kInvalidArgument for bad options, kInternal if
  // libcurl cannot be set up.
  static absl::StatusOr<std::unique_ptr<CurlModelTransport>> Create(
      CurlModelTransportOptions options);

  // Finishes every open stream with kCancelled (on the transport thread) and
  // joins it. Blocks until then.
  ~CurlModelTransport() override;

  CurlModelTransport(const CurlModelTransport&) = delete;
  CurlModelTransport& operator=(const CurlModelTransport&) = delete;

  // See common::ModelTransport. The easy handle is prepared on the calling
  // thread, so header errors are reported here (kInvalidArgument).
  absl::StatusOr<common::ModelStreamId> Start(
      common::ModelRequest request,
      std::shared_ptr<common::ModelStreamHandler> handler) override;
  void Cancel(common::ModelStreamId id) override;

  // Streams started and not yet finished (queued or running).
  int open_streams() const;

  const CurlModelTransportOptions& options() const { return options_; }

 private:
  struct Transfer;
  struct MultiHandle;
  struct Command {
    common::ModelStreamId id = 0;
    std::unique_ptr<Transfer> start;  // set: start it; null: cancel `id`
  };

  CurlModelTransport(CurlModelTransportOptions options,
                     std::unique_ptr<MultiHandle> multi);

  void Run();
  // Takes the queued commands; true once shutdown was requested.
  bool TakeCommands(std::vector<Command>& out);
  void AddTransfer(std::unique_ptr<Transfer> transfer);
  void FinishTransfer(common::ModelStreamId id,
                      common::TransportResult::Kind kind, int curl_code);
  void ReadCompletions();
  // Ends streams idle for longer than options_.idle_timeout with kTimeout;
  // returns how long the loop may wait before the next idle deadline (ms).
  int ExpireIdle();
  std::string Redact(std::string text) const;

  // Constant after construction.
  const CurlModelTransportOptions options_;
  const std::string url_;
  const std::unique_ptr<MultiHandle> multi_;

  std::atomic<common::ModelStreamId> next_id_{1};
  std::atomic<int> open_streams_{0};

  mutable absl::Mutex mu_;
  std::vector<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Transport thread only.
  absl::flat_hash_map<common::ModelStreamId, std::unique_ptr<Transfer>>
      active_;

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace toolmesh::model
