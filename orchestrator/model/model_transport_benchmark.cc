// Throughput of CurlModelTransport against the in-process fake API on
// loopback, one transport thread:
//   short_streams_per_s  short streamed responses, `kConcurrency` in flight
//   large_stream_mb_per_s one large streamed text response, SSE bytes/s
//                         through AttemptStreamHandler (accumulator included)
// Prints key=value lines. Note: the fake API runs in the same process and
// shares the machine's cores with the transport.
#include <cstdio>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "orchestrator/model/curl_model_transport.h"
#include "orchestrator/model/model_stream.h"
#include "tests/testing/fakeapi/fake_api_server.h"
#include "tests/testing/fakeapi/scenario.h"

namespace toolmesh::model {
namespace {

using common::Json;

constexpr char kKey[] = "sk-bench";

std::string Body() {
  Json body = {{"model", "claude-sonnet-4-5"},
               {"max_tokens", 1024},
               {"stream", true},
               {"messages", Json::array({Json{{"role", "user"},
                                              {"content", "hi"}}})}};
  return common::DumpJson(body);
}

// Counts finished attempts and their SSE bytes.
struct Counter {
  absl::Mutex mu;
  int done ABSL_GUARDED_BY(mu) = 0;
  int failed ABSL_GUARDED_BY(mu) = 0;
  std::int64_t bytes ABSL_GUARDED_BY(mu) = 0;
};

std::unique_ptr<fakeapi::FakeApiServer> StartFake(const std::string& text) {
  Json doc = {{"responses",
               Json::array({Json{{"repeat", true},
                                 {"blocks", Json::array({Json{
                                                {"type", "text"},
                                                {"text", text}}})}}})}};
  auto scenario = fakeapi::ParseScenario(doc, "");
  if (!scenario.ok()) return nullptr;
  fakeapi::FakeApiOptions options;
  options.scenario = *std::move(scenario);
  options.threads = 64;
  options.max_log_entries = 16;
  auto fake = std::make_unique<fakeapi::FakeApiServer>(std::move(options));
  if (!fake->Start().ok()) return nullptr;
  return fake;
}

// Runs `total` attempts with at most `concurrency` in flight; returns the
// elapsed time, or an infinite duration if they stall.
absl::Duration RunAttempts(CurlModelTransport& transport, int total,
                           int concurrency, Counter& counter) {
  const std::string body = Body();
  int started = 0;
  const absl::Time begin = absl::Now();
  auto start_one = [&] {
    common::ModelRequest request;
    request.body = body;
    auto handler = std::make_shared<AttemptStreamHandler>(
        nullptr, [&counter](AttemptOutcome outcome) {
          absl::MutexLock lock(&counter.mu);
          ++counter.done;
          if (!outcome.ok()) ++counter.failed;
          counter.bytes += outcome.transport.bytes_received;
        });
    if (transport.Start(std::move(request), handler).ok()) ++started;
  };
  while (true) {
    int done = 0;
    {
      absl::MutexLock lock(&counter.mu);
      auto ready = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return counter.done >= total ||
               (started < total && started - counter.done < concurrency);
      };
      if (!counter.mu.AwaitWithTimeout(absl::Condition(&ready),
                                       absl::Seconds(60))) {
        return absl::InfiniteDuration();
      }
      done = counter.done;
    }
    if (done >= total) break;
    while (started < total && started - done < concurrency) start_one();
  }
  return absl::Now() - begin;
}

int Main() {
  // Short responses.
  auto fake = StartFake("Hello from the benchmark.");
  if (fake == nullptr) {
    std::fprintf(stderr, "fake API did not start\n");
    return 1;
  }
  CurlModelTransportOptions options;
  options.base_url = fake->base_url();
  options.api_key = kKey;
  auto transport = CurlModelTransport::Create(options);
  if (!transport.ok()) {
    std::fprintf(stderr, "%s\n", std::string(transport.status().message()).c_str());
    return 1;
  }
  constexpr int kShort = 2000;
  constexpr int kConcurrency = 32;
  Counter short_counter;
  absl::Duration short_time =
      RunAttempts(**transport, kShort, kConcurrency, short_counter);
  {
    absl::MutexLock lock(&short_counter.mu);
    std::printf("short_streams=%d\nshort_concurrency=%d\nshort_failed=%d\n",
                kShort, kConcurrency, short_counter.failed);
  }
  std::printf("short_streams_per_s=%.0f\n",
              kShort / absl::FDivDuration(short_time, absl::Seconds(1)));
  transport->reset();
  fake->Stop();

  // One large response: ~8 MiB of text.
  std::string big;
  while (big.size() < (8u << 20)) {
    big += "The quick brown fox jumps over the lazy dog; \"quoted\" \\ 0123. ";
  }
  fake = StartFake(big);
  if (fake == nullptr) return 1;
  options.base_url = fake->base_url();
  transport = CurlModelTransport::Create(options);
  if (!transport.ok()) return 1;
  constexpr int kLarge = 3;
  Counter large_counter;
  absl::Duration large_time =
      RunAttempts(**transport, kLarge, 1, large_counter);
  std::int64_t bytes = 0;
  {
    absl::MutexLock lock(&large_counter.mu);
    bytes = large_counter.bytes;
    std::printf("large_streams=%d\nlarge_failed=%d\nlarge_sse_bytes=%lld\n",
                kLarge, large_counter.failed, static_cast<long long>(bytes));
  }
  std::printf("large_stream_mb_per_s=%.1f\n",
              static_cast<double>(bytes) / 1e6 /
                  absl::FDivDuration(large_time, absl::Seconds(1)));
  transport->reset();
  fake->Stop();
  return 0;
}

}  // namespace
}  // namespace toolmesh::model

int main() { return toolmesh::model::Main(); }
