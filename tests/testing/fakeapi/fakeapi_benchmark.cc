// Throughput of the fake API on loopback, printed as key=value lines:
//  - short streamed responses per second (a one-text-block message, ~1.3 KB
//    of SSE), libcurl clients on keep-alive connections, each request
//    validated, logged and rendered as in a test;
//  - SSE MB/s of one large streamed response (many text deltas), read by
//    one libcurl client.
// Usage: fakeapi_benchmark [--seconds S] [--clients N] [--large-mib M]
#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/testing/fakeapi/fake_api_server.h"

namespace {

using toolmesh::common::DumpJson;
using toolmesh::common::Json;
using toolmesh::fakeapi::FakeApiOptions;
using toolmesh::fakeapi::FakeApiServer;

std::size_t Discard(char*, std::size_t size, std::size_t n, void* out) {
  *static_cast<std::size_t*>(out) += size * n;
  return size * n;
}

struct Client {
  CURL* curl = curl_easy_init();
  curl_slist* headers = nullptr;
  std::size_t bytes = 0;

  Client(const std::string& url, const std::string& body) {
    headers = curl_slist_append(headers, "x-api-key: bench");
    headers = curl_slist_append(headers, "anthropic-version: 2023-06-01");
    headers = curl_slist_append(headers, "content-type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_COPYPOSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &bytes);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
  }
  ~Client() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
  }
  bool Perform() {
    long status = 0;
    if (curl_easy_perform(curl) != CURLE_OK) return false;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    return status == 200;
  }
};

std::unique_ptr<FakeApiServer> StartServer(const Json& blocks) {
  FakeApiOptions options;
  auto scenario = toolmesh::fakeapi::ParseScenario(
      Json{{"responses", Json::array({{{"repeat", true}, {"blocks", blocks}}})}},
      "");
  if (!scenario.ok()) {
    std::fprintf(stderr, "scenario: %s\n",
                 std::string(scenario.status().message()).c_str());
    std::exit(1);
  }
  options.scenario = *std::move(scenario);
  options.max_log_entries = 1000;
  auto server = std::make_unique<FakeApiServer>(std::move(options));
  if (!server->Start().ok()) {
    std::fprintf(stderr, "cannot start the server\n");
    std::exit(1);
  }
  return server;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  int clients = 2;
  int large_mib = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    bool ok = true;
    if (flag == "--seconds") ok = absl::SimpleAtod(argv[i + 1], &seconds);
    else if (flag == "--clients") ok = absl::SimpleAtoi(argv[i + 1], &clients);
    else if (flag == "--large-mib") ok = absl::SimpleAtoi(argv[i + 1], &large_mib);
    else ok = false;
    if (!ok) {
      std::fprintf(stderr,
                   "usage: fakeapi_benchmark [--seconds S] [--clients N] "
                   "[--large-mib M]\n");
      return 2;
    }
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const std::string body = DumpJson(
      Json{{"model", "claude-fake-1"},
           {"max_tokens", 64},
           {"stream", true},
           {"messages", Json::array({{{"role", "user"}, {"content", "hi"}}})}});

  // Short streamed responses per second.
  {
    auto server = StartServer(Json::array(
        {{{"type", "text"}, {"text", "Hello! How can I help you today?"}}}));
    const std::string url = server->base_url() + "/v1/messages";
    std::atomic<long> done{0};
    std::atomic<long> failed{0};
    std::atomic<std::size_t> bytes{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        Client client(url, body);
        while (!stop.load(std::memory_order_relaxed)) {
          if (client.Perform()) {
            done.fetch_add(1, std::memory_order_relaxed);
          } else {
            failed.fetch_add(1, std::memory_order_relaxed);
          }
        }
        bytes += client.bytes;
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (std::thread& t : threads) t.join();
    double elapsed = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    std::printf("short_stream_clients=%d\n", clients);
    std::printf("short_stream_responses=%ld\n", done.load());
    std::printf("short_stream_failures=%ld\n", failed.load());
    std::printf("short_stream_bytes_per_response=%zu\n",
                done.load() > 0 ? bytes.load() / static_cast<std::size_t>(done.load())
                                : 0);
    std::printf("short_stream_responses_per_sec=%.0f\n",
                static_cast<double>(done.load()) / elapsed);
    server->Stop();
  }

  // SSE MB/s of one large streamed response.
  {
    std::string text;
    const std::string sentence = "The quick brown fox jumps over the lazy dog. ";
    while (text.size() < static_cast<std::size_t>(large_mib) << 20) text += sentence;
    auto server =
        StartServer(Json::array({{{"type", "text"}, {"text", std::move(text)}}}));
    Client client(server->base_url() + "/v1/messages", body);
    auto start = std::chrono::steady_clock::now();
    bool ok = client.Perform();
    double elapsed = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - start)
                         .count();
    std::printf("large_stream_ok=%d\n", ok ? 1 : 0);
    std::printf("large_stream_sse_bytes=%zu\n", client.bytes);
    std::printf("large_stream_seconds=%.3f\n", elapsed);
    std::printf("large_stream_sse_mb_per_sec=%.1f\n",
                static_cast<double>(client.bytes) / 1e6 / elapsed);
    server->Stop();
  }
  curl_global_cleanup();
  return 0;
}
