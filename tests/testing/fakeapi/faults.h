// Faults the fake Anthropic API can inject, and how each one changes what is
// sent. A fault is attached to one scenario response, or drawn at random per
// request (--fault-rate/--faults).
//
// Three families:
//  - HTTP faults (`http_429`, `http_500`, `http_529`, or `http` with any
//    status): the request is answered with the API's error body and retry
//    headers (`retry-after`, `retry-after-ms`, `x-should-retry`) instead of a
//    message.
//  - Stream faults, applied to the bytes of a 200 response (PlanWrites):
//    `sse_error` (an `error` event after N events, then the stream ends
//    without message_stop), `cut` (the connection is dropped after N bytes),
//    `drip` (a delay before every event), `malformed` (a data line that is
//    not JSON after N events), `splice` (after N events a second
//    message_start, and the whole message again under another id).
//  - Message faults, applied to the message before it is rendered (by the
//    server): `max_tokens` (truncation in the middle of a tool input),
//    `pause_turn` (a dangling server_tool_use whose result opens the next
//    response), `deferred_server_call` (a server_tool_use without result
//    next to the client tool_use; the next response opens with its result,
//    seed 000), `repeat_server_result` (a resolved server call whose result
//    is sent again at the start of the next response, FX-14).
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/json.h"

namespace toolmesh::fakeapi {

using common::Json;

enum class FaultKind {
  kHttp,
  kSseError,
  kCut,
  kDrip,
  kMalformed,
  kSplice,
  kMaxTokens,
  kPauseTurn,
  kDeferredServerCall,
  kRepeatServerResult,
};

struct Fault {
  FaultKind kind = FaultKind::kHttp;
  std::string name;  // as configured, e.g. "http_529"; used in logs/stats

  // kHttp: the status and the headers. A header is sent when set.
  int status = 500;
  std::optional<std::string> retry_after;     // seconds, e.g. "1"
  std::optional<std::string> retry_after_ms;  // e.g. "20"
  std::optional<std::string> should_retry;    // "true" / "false"
  // kHttp and kSseError: the error's `type` and `message`; empty means the
  // API's usual pair for the status (or overloaded_error for kSseError).
  std::string error_type;
  std::string error_message;

  // kSseError, kMalformed, kSplice: how many events go out first; -1 means
  // half of the stream's events.
  int after_events = -1;
  // kCut: how many bytes of the body go out before the connection drops; -1
  // means half of the body.
  std::int64_t after_bytes = -1;
  // kDrip: the delay before each event after the first.
  int delay_ms = 20;
  // kPauseTurn, kDeferredServerCall, kRepeatServerResult: which server tool
  // the injected call names ("web_search", "web_fetch", "code_execution").
  std::string server_tool = "web_search";

  bool is_http() const { return kind == FaultKind::kHttp; }
  // True for faults applied to the message before rendering.
  bool is_message_fault() const {
    return kind == FaultKind::kMaxTokens || kind == FaultKind::kPauseTurn ||
           kind == FaultKind::kDeferredServerCall ||
           kind == FaultKind::kRepeatServerResult;
  }
  bool is_stream_fault() const { return !is_http() && !is_message_fault(); }
};

// Every fault name accepted by FaultFromName, for --help and errors.
std::string_view KnownFaultNames();

// The fault with default parameters for `name`: "http_429", "http_500",
// "http_529", "sse_error", "cut", "drip", "malformed", "splice",
// "max_tokens", "pause_turn", "deferred_server_call",
// "repeat_server_result". kInvalidArgument for an unknown name.
absl::StatusOr<Fault> FaultFromName(std::string_view name);

// A fault from scenario JSON: a name string, or an object
// {"type": NAME, "status", "retry_after", "retry_after_ms", "should_retry",
//  "error_type", "message", "after_events", "after_bytes", "delay_ms",
//  "server_tool"} (type "http" takes any "status"; a header field set to
// null is not sent). kInvalidArgument on unknown names, fields or wrong
// types.
absl::StatusOr<Fault> ParseFault(const Json& spec);

// The API's error `type` for an HTTP status (429 rate_limit_error, 500
// api_error, 529 overloaded_error, 401 authentication_error, ...).
std::string_view ErrorTypeForStatus(int status);

// {"type":"error","error":{"type":...,"message":...},"request_id":...}.
Json ErrorBody(std::string_view type, std::string_view message,
               std::string_view request_id);

// What an HTTP fault answers.
struct HttpReply {
  int status = 500;
  std::vector<std::pair<std::string, std::string>> headers;
  Json body;
};
HttpReply HttpFaultReply(const Fault& fault, std::string_view request_id);

// One write of a streamed body.
struct Write {
  std::string bytes;
  int delay_ms_before = 0;
};
struct WritePlan {
  std::vector<Write> writes;
  // Drop the connection after the writes instead of ending the body.
  bool abort_after = false;
};

// How the raw SSE `events` of a 200 response go out under `fault` (nullptr:
// no fault). Stream faults change the bytes as documented above; message and
// HTTP faults are not applied here. Without a drip, events are coalesced
// into writes of up to 64 KiB.
WritePlan PlanWrites(const std::vector<std::string>& events,
                     const Fault* fault, std::string_view request_id);

}  // namespace toolmesh::fakeapi
