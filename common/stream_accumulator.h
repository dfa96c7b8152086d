// StreamAccumulator: the events of one streamed Messages API response in,
// the final Message out, in exactly the shape of the API's non-streaming
// response.
//
// It sits between the SSE decoder and the orchestrator's turn loop. Events
// come in either already decoded (OnEvent) or as raw SSE bytes (Feed /
// Finish, which own an SseDecoder). As the stream progresses the accumulator
// tells an optional StreamObserver about each block start, delta and stop, so
// a client tool can be dispatched the moment its block stops (early
// dispatch), before `message_stop`.
//
// What it guarantees (PROTOCOL.md a-c, g):
//  - dispatch on the JSON `type` of each event (the SSE event name is used
//    only when the data has no `type`); unknown event and delta types are
//    recorded and ignored, never fatal; `ping` is ignored anywhere;
//  - the input of every block that streams `input_json_delta` (tool_use,
//    server_tool_use, mcp_tool_use, and unknown types) is rebuilt in linear
//    time; a block whose input is invalid JSON, or that never stopped
//    (max_tokens truncation), is flagged and never runnable;
//  - usage counters in `message_delta` overwrite (they are totals);
//  - a stream that fails (SSE `error` event, a second `message_start`,
//    malformed data, end of input before `message_stop`) is dead: later
//    events are ignored and it is never merged with another stream.
//
// The hot event (content_block_delta) is parsed with simdjson on-demand and
// its strings routed straight to their block; nlohmann is used for the rare
// structural events.
//
// Thread-compatible: one accumulator per stream, used from one thread. The
// observer is called synchronously from inside OnEvent/Feed/Finish.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/json.h"
#include "common/messages.h"
#include "common/sse_decoder.h"

namespace toolmesh::common {

// Why a stream failed.
struct StreamError {
  enum class Kind {
    kApiError,   // the API sent an SSE `error` event (see api_error)
    kSpliced,    // a second `message_start` arrived in the same stream
    kProtocol,   // malformed JSON, a delta for an unknown block, an event
                 // order that cannot be interpreted, an SSE limit exceeded
    kTruncated,  // the input ended before `message_stop`
  };
  Kind kind = Kind::kProtocol;
  std::string message;
  // Set for kApiError.
  std::optional<ApiError> api_error;

  // The failure as a Status: kUnavailable for kApiError and kTruncated (the
  // turn may be requested again), kAborted for kSpliced, kInvalidArgument
  // for kProtocol. The message names the kind.
  absl::Status ToStatus() const;
};

std::string_view StreamErrorKindName(StreamError::Kind kind);

// The state of a tool call's input.
enum class InputState {
  kNone,        // the block does not take input (text, results, ...)
  kStreaming,   // input deltas may still arrive
  kValid,       // stopped; input is a JSON object
  kInvalid,     // stopped; the streamed text is not a JSON object
  kIncomplete,  // the message ended without this block's content_block_stop
};

std::string_view InputStateName(InputState state);

// A snapshot of what the accumulator knows about one content block. The
// views (`raw_input`, `partial_input`) point into the accumulator and are
// valid until its next non-const call.
struct BlockInfo {
  std::int64_t index = 0;  // the block's `index` (position in content[])
  std::string type;        // the block's `type`; "" if it had none
  BlockKind kind = BlockKind::kOther;
  bool stopped = false;             // got content_block_stop (or came whole
                                    // in message_start)
  bool from_message_start = false;  // pre-populated in message_start
  // Input: set for tool_use/server_tool_use/mcp_tool_use, and for any block
  // that received input_json_delta.
  InputState input_state = InputState::kNone;
  bool received_input_deltas = false;
  std::string_view raw_input;  // all input_json_delta fragments, joined
  absl::Status input_error;    // why the input is kInvalid
  // The input so far: the start input until a non-blank fragment arrives,
  // then (live mode only; nullptr in plain mode) the partial value. After the
  // block stops, or the message ends without its stop: the block's `input`.
  // nullptr for blocks without input.
  const Json* partial_input = nullptr;
  // Delta types that did not apply to this block (unknown types, or a known
  // type for a block of another type), in arrival order, without repeats.
  std::vector<std::string> ignored_delta_types;

  // True only for a client `tool_use` that stopped with a valid object
  // input. An incomplete or invalid tool call must never be run: the
  // orchestrator answers it with an `is_error` tool_result.
  bool runnable() const {
    return kind == BlockKind::kClientToolCall && stopped &&
           input_state == InputState::kValid;
  }
};

// Receives the stream as it is accumulated. Every method has an empty
// default. Called synchronously from inside the accumulator's OnEvent, Feed
// or Finish; the references passed are valid only during the call. An
// observer must not call the accumulator's mutating methods from a callback
// (const accessors such as Block() are fine). The observer must outlive the
// accumulator it is registered with.
class StreamObserver {
 public:
  virtual ~StreamObserver() = default;

  // `message` is message_start's `message` as received.
  virtual void OnMessageStart(const Json& /*message*/) {}
  // A block began; `block` is as given by content_block_start (or by
  // message_start's content for pre-populated blocks).
  virtual void OnBlockStart(std::int64_t /*index*/, const Json& /*block*/) {}
  virtual void OnTextDelta(std::int64_t /*index*/, std::string_view /*text*/) {}
  virtual void OnThinkingDelta(std::int64_t /*index*/,
                               std::string_view /*thinking*/) {}
  virtual void OnSignatureDelta(std::int64_t /*index*/,
                                std::string_view /*signature*/) {}
  virtual void OnInputJsonDelta(std::int64_t /*index*/,
                                std::string_view /*fragment*/) {}
  virtual void OnCitation(std::int64_t /*index*/, const Json& /*citation*/) {}
  // The block is complete: `block` is exactly what FinalMessage() will hold
  // for it (tool input rebuilt, or the start input when invalid). Dispatch a
  // tool here only if info.runnable().
  virtual void OnBlockStop(std::int64_t /*index*/, const Json& /*block*/,
                           const BlockInfo& /*info*/) {}
  // `event` is the whole message_delta payload (delta, usage, ...).
  virtual void OnMessageDelta(const Json& /*event*/) {}
  // The message is complete; `message` equals FinalMessage().
  virtual void OnMessageStop(const Json& /*message*/) {}
  // The stream failed; no other callback follows.
  virtual void OnError(const StreamError& /*error*/) {}
};

class StreamAccumulator {
 public:
  struct Options {
    // Maintain each tool input's partial value after every input delta
    // (O(delta) per delta), readable through Block(index).partial_input.
    bool live_partial_input = false;
    // Limits of the SSE decoder used by Feed().
    SseDecoder::Options sse;
    // Largest block `index` accepted; a larger one is a protocol error.
    std::int64_t max_block_index = 1 << 16;
  };

  enum class State {
    kAwaitingMessageStart,
    kOpen,
    kComplete,  // message_stop received: FinalMessage() is available
    kFailed,    // see error()
  };

  // `observer` may be null; if not, it must outlive this accumulator.
  explicit StreamAccumulator(StreamObserver* observer = nullptr);
  StreamAccumulator(Options options, StreamObserver* observer = nullptr);
  ~StreamAccumulator();

  StreamAccumulator(const StreamAccumulator&) = delete;
  StreamAccumulator& operator=(const StreamAccumulator&) = delete;

  // Consumes one decoded SSE event. `event_name` may be empty (the JSON
  // `type` is authoritative). Returns OK when the event was applied or
  // ignored; the failure's status (StreamError::ToStatus) when it failed the
  // stream, and the same status for every call after a failure (the event is
  // then ignored).
  absl::Status OnEvent(std::string_view event_name, std::string_view data);

  // Decodes SSE `bytes` (any chunking) and applies each event. Returns the
  // stream's failure, if any (see OnEvent).
  absl::Status Feed(std::string_view bytes);

  // Ends the input. If message_stop has not arrived the stream fails with
  // kTruncated. Returns OK only when the message is complete.
  absl::Status Finish();

  State state() const { return state_; }
  // The failure; set iff state() == kFailed.
  const std::optional<StreamError>& error() const { return error_; }

  // The final message (only after message_stop): id, type, role, model,
  // content[], stop_reason, stop_sequence, usage, and every other field
  // message_start or message_delta carried, in message_start's key order.
  // A tool block that never stopped shows its input as the TypeScript SDK
  // does (ParseTruncatedJsonLikeSdk of the raw text, if that is an object;
  // else its start input); BlockInfo flags it kIncomplete.
  // kFailedPrecondition before message_stop; the failure's status when the
  // stream failed.
  absl::StatusOr<Json> FinalMessage() const;

  // The message so far, holding only the blocks that have stopped (for
  // `--partial` views). A null Json before message_start.
  Json PartialMessage() const;

  // The blocks seen so far, in index order.
  std::vector<BlockInfo> Blocks() const;
  // The block with this `index`, if it started.
  std::optional<BlockInfo> Block(std::int64_t index) const;

  // The input of the tool block at `index` parsed so far: in live mode after
  // every delta, otherwise only once the block stopped. nullptr when there is
  // no such block or nothing to show. Valid until the next non-const call.
  // Cheaper than Block(index).partial_input (no copies).
  const Json* PartialInput(std::int64_t index) const;

  // The stream's events so far (all, including ignored ones).
  std::size_t events_seen() const { return events_seen_; }
  // Event types that were ignored as unknown, without repeats.
  const std::vector<std::string>& ignored_event_types() const {
    return ignored_event_types_;
  }

 private:
  struct BlockState;
  class DeltaParser;

  absl::Status Fail(StreamError::Kind kind, std::string message,
                    std::optional<ApiError> api_error = std::nullopt);
  absl::Status Dispatch(std::string_view type, const Json& event);
  absl::Status HandleMessageStart(const Json& event);
  absl::Status HandleBlockStart(const Json& event);
  absl::Status HandleBlockDelta(const Json& event);
  absl::Status HandleBlockStop(const Json& event);
  absl::Status HandleMessageDelta(const Json& event);
  absl::Status HandleMessageStop();
  absl::Status HandleError(const Json& event);

  // Delta application shared by the fast (simdjson) and slow paths.
  absl::Status ApplyStringDelta(std::int64_t index, std::string_view type,
                                std::string_view value);
  BlockState* FindBlock(std::int64_t index);
  const BlockState* FindBlock(std::int64_t index) const;
  absl::StatusOr<std::int64_t> ReadIndex(const Json& event) const;
  void StopBlock(BlockState& block);
  Json BuildMessage(bool only_stopped) const;
  BlockInfo MakeInfo(const BlockState& block) const;

  // Constant after construction.
  const Options options_;
  StreamObserver* const observer_;

  State state_ = State::kAwaitingMessageStart;
  std::optional<StreamError> error_;
  absl::Status error_status_;
  Json message_;        // message_start's message, updated by message_delta
  Json final_message_;  // built at message_stop
  std::vector<BlockState> blocks_;  // sorted by index
  std::size_t last_block_ = 0;      // position of the last block touched
  std::size_t events_seen_ = 0;
  std::vector<std::string> ignored_event_types_;
  std::unique_ptr<SseDecoder> decoder_;  // created by the first Feed()
  std::unique_ptr<DeltaParser> delta_parser_;
};

std::string_view StreamStateName(StreamAccumulator::State state);

// Parses text that may be cut off mid-value exactly as the official
// TypeScript SDK's `partialParse` does for a tool input that never completed:
// an incomplete trailing token (a string or number still being received, a
// key without a value, a dangling `:` or `,`) is dropped and open brackets
// are closed. Empty text gives `{}`. Returns kInvalidArgument when the text
// is not truncated JSON (e.g. an invalid escape, an unknown word). Linear in
// the text.
absl::StatusOr<Json> ParseTruncatedJsonLikeSdk(std::string_view text);

}  // namespace toolmesh::common
