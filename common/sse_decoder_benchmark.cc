// Throughput of SseDecoder on a synthetic Messages stream: ~4 MB of
// content_block_delta events (text and tool-input deltas, the shapes that
// dominate a long response), fed in chunks of the sizes a socket delivers.
// Reports bytes/s of SSE.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "benchmark/benchmark.h"
#include "common/sse_decoder.h"

namespace toolmesh::common {
namespace {

// Builds a deterministic stream of about `target_bytes`.
std::string MakeStream(std::size_t target_bytes) {
  static constexpr std::string_view kWords[] = {
      "the ",    "model ",  "streams ", "tokens ", "\\\"key\\\": ", "42, ",
      "while ",  "tools ",  "run, ",    "and ",    "\\n",          "results ",
      "return ", "quickly. "};
  std::string out;
  out.reserve(target_bytes + 512);
  out += "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
         "{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\","
         "\"content\":[],\"model\":\"claude-sonnet-4-5\"}}\n\n";
  std::uint32_t state = 12345;
  auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  };
  int n = 0;
  while (out.size() < target_bytes) {
    std::string fragment;
    const std::uint32_t words = 1 + next() % 12;
    for (std::uint32_t w = 0; w < words; ++w) {
      fragment += kWords[next() % (sizeof(kWords) / sizeof(kWords[0]))];
    }
    if (++n % 3 == 0) {
      out += "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
             "\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
             "\"partial_json\":\"";
    } else {
      out += "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
             "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"";
    }
    out += fragment;
    out += "\"}}\n\n";
    if (n % 50 == 0) out += "event: ping\ndata: {\"type\": \"ping\"}\n\n";
  }
  out += "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
  return out;
}

const std::string& Stream() {
  static const std::string* const stream = new std::string(MakeStream(4 << 20));
  return *stream;
}

void BM_Decode(benchmark::State& state) {
  const std::string& stream = Stream();
  const std::size_t chunk = static_cast<std::size_t>(state.range(0));
  std::size_t events = 0;
  for (auto _ : state) {
    SseDecoder decoder;
    std::size_t data_bytes = 0;
    auto sink = [&data_bytes](const SseEventView& e) {
      data_bytes += e.data.size() + e.event.size();
    };
    for (std::size_t pos = 0; pos < stream.size(); pos += chunk) {
      const absl::Status status =
          decoder.Feed(std::string_view(stream).substr(pos, chunk), sink);
      if (!status.ok()) state.SkipWithError(status.ToString().c_str());
    }
    if (!decoder.Finish(sink).ok()) state.SkipWithError("Finish failed");
    benchmark::DoNotOptimize(data_bytes);
    events = decoder.events_dispatched();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(stream.size()));
  state.counters["events"] = static_cast<double>(events);
  state.counters["stream_bytes"] = static_cast<double>(stream.size());
}
BENCHMARK(BM_Decode)->Arg(16 << 10)->Arg(1 << 10)->Arg(64)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace toolmesh::common
