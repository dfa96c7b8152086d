// Fuzz target for StreamAccumulator over raw SSE bytes.
//
// Properties checked (a broken one aborts):
//  - Feed/Finish never crash, and after Finish() the stream is complete or
//    failed;
//  - FinalMessage() succeeds exactly when the stream is complete;
//  - the same bytes split differently give the same outcome (state, failure
//    kind and message, final message);
//  - live and plain mode agree on the final message;
//  - a block reported runnable is a stopped tool_use whose final input is an
//    object; no block that never stopped is runnable.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/json.h"
#include "common/stream_accumulator.h"

namespace {

using toolmesh::common::BlockInfo;
using toolmesh::common::DumpJson;
using toolmesh::common::Json;
using toolmesh::common::StreamAccumulator;
using toolmesh::common::StreamErrorKindName;
using toolmesh::common::StreamStateName;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// Reads the partial input of every tool block after each delta, as a UI
// would, so live mode is exercised on every fragment.
class LiveReader : public toolmesh::common::StreamObserver {
 public:
  void set_accumulator(const StreamAccumulator* accumulator) {
    accumulator_ = accumulator;
  }
  void OnInputJsonDelta(std::int64_t index, std::string_view) override {
    const Json* partial = accumulator_->PartialInput(index);
    if (partial != nullptr) reads_ += partial->is_object() ? 1 : 0;
  }
  void OnBlockStop(std::int64_t, const Json& block,
                   const BlockInfo& info) override {
    if (info.runnable()) {
      auto input = block.find("input");
      Check(input != block.end() && input->is_object());
    }
  }

 private:
  const StreamAccumulator* accumulator_ = nullptr;
  std::size_t reads_ = 0;
};

// Runs the whole input through one accumulator, `chunk` bytes per Feed (0:
// all at once), and returns a description of the outcome.
std::string Run(std::string_view bytes, std::size_t chunk, bool live) {
  StreamAccumulator::Options options;
  options.live_partial_input = live;
  // Small limits keep the fuzzer fast and exercise the limit paths.
  options.sse.max_line_bytes = 1 << 16;
  options.sse.max_event_bytes = 1 << 18;
  LiveReader reader;
  StreamAccumulator accumulator(options, &reader);
  reader.set_accumulator(&accumulator);
  if (chunk == 0) {
    (void)accumulator.Feed(bytes);
  } else {
    for (std::size_t pos = 0; pos < bytes.size(); pos += chunk) {
      (void)accumulator.Feed(bytes.substr(pos, chunk));
    }
  }
  absl::Status finished = accumulator.Finish();
  const auto state = accumulator.state();
  Check(state == StreamAccumulator::State::kComplete ||
        state == StreamAccumulator::State::kFailed);
  Check(finished.ok() == (state == StreamAccumulator::State::kComplete));
  Check(accumulator.error().has_value() ==
        (state == StreamAccumulator::State::kFailed));

  absl::StatusOr<Json> final_message = accumulator.FinalMessage();
  Check(final_message.ok() == (state == StreamAccumulator::State::kComplete));
  (void)DumpJson(accumulator.PartialMessage());

  for (const BlockInfo& info : accumulator.Blocks()) {
    if (info.runnable()) Check(info.stopped);
    if (!info.stopped) Check(!info.runnable());
  }

  std::string outcome(StreamStateName(state));
  if (accumulator.error().has_value()) {
    outcome += ' ';
    outcome += StreamErrorKindName(accumulator.error()->kind);
    outcome += ' ';
    outcome += accumulator.error()->message;
  }
  if (final_message.ok()) {
    outcome += ' ';
    outcome += DumpJson(*final_message);
  }
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string whole = Run(bytes, 0, /*live=*/false);
  // A split size derived from the input, so the fuzzer explores many.
  const std::size_t chunk = size == 0 ? 1 : 1 + data[size - 1] % 29;
  Check(Run(bytes, chunk, /*live=*/false) == whole);
  Check(Run(bytes, 0, /*live=*/true) == whole);
  if (size <= 512) Check(Run(bytes, 1, /*live=*/true) == whole);
  return 0;
}
