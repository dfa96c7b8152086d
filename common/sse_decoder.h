// Incremental decoder for Server-Sent Events (the WHATWG event-stream
// format) as the Anthropic Messages API sends them.
//
// Bytes go in at any chunk boundary; complete events come out through a
// callback. Feeding a stream one byte at a time yields exactly the events of
// feeding it whole. Handles `\n`, `\r\n` and `\r` line ends (a `\r\n` split
// across two Feed() calls counts once), a leading UTF-8 BOM, comment lines
// (`:`), multi-line `data:` (joined with `\n`), `event:`, `id:` and `retry:`
// fields, and events with no `event:` line (the event name is then empty;
// callers dispatch on the JSON `type`). An event is dispatched at the blank
// line that ends it; an unterminated event at end of stream is dropped, as
// the standard says.
//
// Memory is bounded: a line longer than Options::max_line_bytes, or an event
// whose data exceeds Options::max_event_bytes, fails the decoder with
// kResourceExhausted; it never buffers without limit.
//
// Thread-compatible: one decoder per stream, used from one thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace toolmesh::common {

// One decoded event. The views point into the decoder's buffers and are
// valid only during the callback that receives them.
struct SseEventView {
  std::string_view event;  // the `event:` field; empty when absent
  std::string_view data;   // `data:` lines joined with '\n'
  std::string_view id;     // the last `id:` field seen (sticky, per the spec)
  std::optional<long long> retry_ms;  // `retry:` if this event carried one
};

class SseDecoder {
 public:
  struct Options {
    // Longest line accepted, without its line end.
    std::size_t max_line_bytes = 32 << 20;
    // Largest total data of one event.
    std::size_t max_event_bytes = 64 << 20;
  };
  using Sink = absl::FunctionRef<void(const SseEventView&)>;

  SseDecoder();
  explicit SseDecoder(Options options);

  SseDecoder(const SseDecoder&) = delete;
  SseDecoder& operator=(const SseDecoder&) = delete;

  // Decodes `bytes`, calling `sink` for each event completed by them.
  // Returns kResourceExhausted when a limit is exceeded; the decoder is then
  // failed and every later call returns the same error without decoding.
  absl::Status Feed(std::string_view bytes, Sink sink);

  // Ends the stream. A trailing line without a line end is processed as a
  // line; an event not terminated by a blank line is dropped (and counted in
  // dropped_partial_event()). Returns the failure, if any.
  absl::Status Finish(Sink sink);

  // True when Finish() dropped a started-but-unterminated event.
  bool dropped_partial_event() const { return dropped_partial_event_; }
  // Total bytes fed so far.
  std::size_t bytes_fed() const { return bytes_fed_; }
  // Events dispatched so far.
  std::size_t events_dispatched() const { return events_dispatched_; }

 private:
  // Splits `bytes` (after BOM handling) into lines, processing each complete
  // one and keeping a trailing partial line in line_.
  absl::Status ScanLines(std::string_view bytes, Sink sink);
  // Interprets one line (without its line end). Fails only on a limit.
  absl::Status ProcessLine(std::string_view line, Sink sink);
  void DispatchEvent(Sink sink);
  // Fails the decoder for good with kResourceExhausted.
  absl::Status Fail(std::string message);

  // Constant after construction.
  const Options options_;

  // Stream state.
  absl::Status status_;
  std::string line_;        // a line not yet terminated
  bool line_pending_ = false;  // line_ holds a started line (maybe empty)
  bool last_was_cr_ = false;   // previous chunk ended in '\r'
  bool bom_checked_ = false;
  std::string bom_prefix_;     // first bytes, held until the BOM is ruled out
  std::string event_;
  std::string data_;
  bool has_data_ = false;
  bool event_started_ = false;  // any field seen since the last dispatch
  std::string last_id_;
  std::optional<long long> retry_ms_;
  bool dropped_partial_event_ = false;
  std::size_t bytes_fed_ = 0;
  std::size_t events_dispatched_ = 0;
};

}  // namespace toolmesh::common
