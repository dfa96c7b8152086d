// SSE writer of the fake Anthropic Messages API: turns a complete assistant
// message (its content blocks, stop_reason and usage) into the event stream
// the live API would send for it, and splits recorded `.sse` files into
// events so that faults can be injected between them.
//
// What the rendered stream looks like (PROTOCOL.md sections a and b):
// `event:` and `data:` lines per event; message_start with `content: []`, the
// null stop fields and a starting usage; a `{"type": "ping"}` after the first
// content_block_start; text in several text_deltas, tool input (tool_use,
// server_tool_use, mcp_tool_use) in several input_json_deltas whose first
// fragment is ""; thinking as thinking_deltas and one signature_delta;
// citations as citations_deltas; every other block (server-tool results,
// redacted_thinking, unknown types) whole in content_block_start; a
// message_delta with the stop_reason and the cumulative usage; message_stop.
// Like the live API, whitespace padding is inserted before the closing brace
// of most data objects (`"index":0   }`), deterministically.
//
// Thread-safety: pure functions; IdSource is thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/json.h"

namespace toolmesh::fakeapi {

using common::Json;

// This Abseil build has its own string_view type; converts for absl calls.
inline absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// Deterministic source of ids and random numbers (splitmix64).
class IdSource {
 public:
  explicit IdSource(std::uint64_t seed) : state_(seed) {}

  // The next 64 random bits.
  std::uint64_t Next();
  // A number in [0, bound); 0 when bound is 0.
  std::uint64_t Uniform(std::uint64_t bound);
  // A double in [0, 1).
  double UniformDouble();
  // `prefix` + "01" + 22 base62 characters, e.g. "toolu_01AbC...".
  std::string NextId(std::string_view prefix);

 private:
  std::uint64_t state_;
};

// A stable 64-bit hash (FNV-1a) of `text`, for seeding per request.
std::uint64_t StableHash(std::string_view text, std::uint64_t seed = 0);

// Splits SSE bytes into events. Each element is the raw text of one event,
// its terminating blank line included, byte for byte as in `bytes` (so
// joining the elements gives `bytes` back, except for bytes after the last
// blank line, which form a final element of their own).
std::vector<std::string> SplitSseEvents(std::string_view bytes);

// The `data:` lines of one raw event, joined with '\n' ("" if none).
std::string EventData(std::string_view raw_event);

// Renders one event: "event: NAME\ndata: JSON\n\n", with `padding` spaces
// inserted before the closing brace of the JSON object.
std::string RenderSseEvent(std::string_view name, const Json& data,
                           int padding = 0);

// The `error` event the API sends mid-stream:
// {"type":"error","error":{"details":null,"type":...,"message":...},
//  "request_id":...}.
std::string RenderErrorEvent(std::string_view error_type,
                             std::string_view message,
                             std::string_view request_id);

// A complete assistant message to be streamed.
struct MessageSpec {
  std::string id;       // "msg_..."
  std::string model;    // echoed in message_start
  Json content = Json::array();  // complete blocks, ids and inputs filled in
  std::string stop_reason;       // "" -> "tool_use" when a client tool_use
                                 // is present, else "end_turn"
  Json stop_details;             // null, or e.g. a refusal object
  // Usage fields that override the computed defaults (any key; e.g.
  // {"input_tokens": 10, "output_tokens": 42}).
  Json usage = Json::object();
  std::int64_t input_tokens = 1;  // default input_tokens
  // max_tokens truncation: the stream stops in the middle of the input of
  // the last tool call (no content_block_stop for it, later blocks dropped);
  // without a tool call, in the middle of the last text block. The
  // stop_reason becomes "max_tokens".
  bool truncate = false;
  // Seeds the padding pattern.
  std::uint64_t padding_seed = 0;
};

// The stop_reason the stream of `spec` will carry.
std::string EffectiveStopReason(const MessageSpec& spec);

// Renders `spec` as the list of raw SSE events the API would send.
std::vector<std::string> RenderMessageStream(const MessageSpec& spec);

// Splits `text` into pieces of roughly `target` bytes, never inside a UTF-8
// sequence, preferring to cut after a space. Empty text gives no pieces.
std::vector<std::string_view> SplitPieces(std::string_view text,
                                          std::size_t target);

}  // namespace toolmesh::fakeapi
