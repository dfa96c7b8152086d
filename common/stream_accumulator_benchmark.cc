// The full streaming path over one tool_use whose input is 1 KiB .. 4 MiB:
// SSE decoding, event parsing, input rebuild and the final message. The
// input is a JSON object with a long string full of escapes, streamed as
// 40-byte input_json_delta fragments with pings, and fed as SSE bytes in
// 16 KiB chunks. "Live" reads the partial input after every delta, as a UI
// would. Bytes processed are SSE bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/json.h"
#include "common/stream_accumulator.h"

namespace toolmesh::common {
namespace {

// The tool input as JSON text, about `size` bytes.
std::string MakeInput(std::size_t size) {
  std::string body;
  const std::string line =
      "line with \\\"quotes\\\", a tab\\t, a path C:\\\\tmp\\\\x and text\\n";
  while (body.size() + line.size() + 64 < size) body += line;
  return absl::StrCat(R"({"path": "/tmp/out.txt", "mode": 420, "content": ")",
                      body, R"(", "append": false})");
}

std::string MakeStream(std::size_t input_size) {
  const std::string input = MakeInput(input_size);
  std::string sse;
  sse.reserve(input.size() * 5);
  sse +=
      "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
      "{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\","
      "\"model\":\"claude-bench\",\"content\":[],\"stop_reason\":null,"
      "\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,"
      "\"output_tokens\":1}}}\n\n";
  sse +=
      "event: content_block_start\ndata: {\"type\":\"content_block_start\","
      "\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":"
      "\"toolu_bench\",\"name\":\"write_file\",\"input\":{}}}\n\n";
  std::size_t events = 0;
  for (std::size_t pos = 0; pos < input.size(); pos += 40) {
    const Json fragment = input.substr(pos, 40);
    absl::StrAppend(&sse,
                    "event: content_block_delta\ndata: {\"type\":"
                    "\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                    "\"input_json_delta\",\"partial_json\":",
                    DumpJson(fragment), "}}\n\n");
    if (++events % 64 == 0) {
      sse += "event: ping\ndata: {\"type\": \"ping\"}\n\n";
    }
  }
  sse +=
      "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
      "\"index\":0}\n\n"
      "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
      "{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":"
      "{\"output_tokens\":999}}\n\n"
      "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
  return sse;
}

class LiveReader : public StreamObserver {
 public:
  const StreamAccumulator* accumulator = nullptr;
  std::size_t members = 0;
  void OnInputJsonDelta(std::int64_t index, std::string_view) override {
    const Json* partial = accumulator->PartialInput(index);
    if (partial != nullptr) members += partial->size();
  }
};

void RunStream(benchmark::State& state, bool live) {
  const std::string sse = MakeStream(static_cast<std::size_t>(state.range(0)));
  constexpr std::size_t kChunk = 16 << 10;
  for (auto _ : state) {
    StreamAccumulator::Options options;
    options.live_partial_input = live;
    LiveReader reader;
    StreamAccumulator acc(options, live ? &reader : nullptr);
    reader.accumulator = &acc;
    for (std::size_t pos = 0; pos < sse.size(); pos += kChunk) {
      if (!acc.Feed(std::string_view(sse).substr(pos, kChunk)).ok()) {
        state.SkipWithError("feed failed");
        return;
      }
    }
    if (!acc.Finish().ok()) {
      state.SkipWithError("finish failed");
      return;
    }
    absl::StatusOr<Json> message = acc.FinalMessage();
    if (!message.ok() || !(*message)["content"][0]["input"].contains("append")) {
      state.SkipWithError("input not rebuilt");
      return;
    }
    benchmark::DoNotOptimize(message);
    benchmark::DoNotOptimize(reader.members);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(sse.size()));
  state.counters["sse_bytes"] = static_cast<double>(sse.size());
}

void BM_StreamPlain(benchmark::State& state) { RunStream(state, false); }
void BM_StreamLive(benchmark::State& state) { RunStream(state, true); }

BENCHMARK(BM_StreamPlain)
    ->Arg(1 << 10)
    ->Arg(64 << 10)
    ->Arg(1 << 20)
    ->Arg(4 << 20)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StreamLive)
    ->Arg(1 << 10)
    ->Arg(64 << 10)
    ->Arg(1 << 20)
    ->Arg(4 << 20)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace toolmesh::common
