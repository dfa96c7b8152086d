// Fuzz target for SseDecoder.
//
// For each input, under two sets of small limits (so the limit paths are
// reached), it checks that:
//  - decoding the input whole, one byte at a time, and in chunks whose sizes
//    come from a hash of the input all give the same events, the same
//    status and the same dropped_partial_event();
//  - those results equal a deliberately simple reference decoder that works
//    on the whole input at once, written from the standard's rules;
//  - no event's data exceeds max_event_bytes, a failure is always
//    kResourceExhausted, and the counters agree with what was seen.
// A broken property aborts via __builtin_trap().
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "common/sse_decoder.h"

namespace {

using ::toolmesh::common::SseDecoder;
using ::toolmesh::common::SseEventView;

#define SSE_FUZZ_CHECK(cond) \
  do {                       \
    if (!(cond)) __builtin_trap(); \
  } while (false)

struct Event {
  std::string event;
  std::string data;
  std::string id;
  std::optional<long long> retry_ms;
  bool operator==(const Event&) const = default;
};

struct Result {
  std::vector<Event> events;
  bool failed = false;
  bool dropped = false;
  bool operator==(const Result&) const = default;
};

// Feeds `input` in chunks of the sizes produced by `next_size` (0 = rest).
template <typename NextSize>
Result RunDecoder(std::string_view input, const SseDecoder::Options& options,
                  NextSize next_size) {
  Result out;
  SseDecoder decoder(options);
  auto sink = [&out, &options](const SseEventView& e) {
    SSE_FUZZ_CHECK(e.data.size() <= options.max_event_bytes);
    out.events.push_back(Event{std::string(e.event), std::string(e.data),
                               std::string(e.id), e.retry_ms});
  };
  std::size_t pos = 0;
  absl::Status status;
  while (pos < input.size() && status.ok()) {
    std::size_t n = next_size();
    if (n == 0 || n > input.size() - pos) n = input.size() - pos;
    status = decoder.Feed(input.substr(pos, n), sink);
    pos += n;
    SSE_FUZZ_CHECK(decoder.bytes_fed() == pos);
  }
  if (status.ok()) {
    status = decoder.Finish(sink);
    out.dropped = decoder.dropped_partial_event();
  }
  if (!status.ok()) {
    SSE_FUZZ_CHECK(status.code() == absl::StatusCode::kResourceExhausted);
    out.failed = true;
    // Failed for good.
    SSE_FUZZ_CHECK(decoder.Feed("data: x\n\n", sink) == status);
    SSE_FUZZ_CHECK(decoder.Finish(sink) == status);
  }
  SSE_FUZZ_CHECK(decoder.events_dispatched() == out.events.size());
  return out;
}

// The reference: the whole input is split into lines first, then each line
// is interpreted, following the WHATWG steps literally.
Result Reference(std::string_view in, const SseDecoder::Options& options) {
  Result out;
  if (in.substr(0, 3) == "\xEF\xBB\xBF") in.remove_prefix(3);
  std::string event_type;
  std::vector<std::string> data_lines;
  std::string last_id;
  std::optional<long long> retry;
  bool started = false;
  std::size_t pos = 0;
  while (pos < in.size()) {
    std::size_t end = pos;
    while (end < in.size() && in[end] != '\r' && in[end] != '\n') ++end;
    const bool terminated = end < in.size();
    const std::string_view line = in.substr(pos, end - pos);
    if (line.size() > options.max_line_bytes) {
      out.failed = true;
      return out;
    }
    if (line.empty()) {
      if (!data_lines.empty()) {
        std::string data;
        for (std::size_t i = 0; i < data_lines.size(); ++i) {
          if (i > 0) data += '\n';
          data += data_lines[i];
        }
        out.events.push_back(Event{event_type, data, last_id, retry});
      }
      event_type.clear();
      data_lines.clear();
      retry.reset();
      started = false;
    } else if (line[0] != ':') {
      started = true;
      std::string_view name = line;
      std::string_view value;
      const std::size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        name = line.substr(0, colon);
        value = line.substr(colon + 1);
        if (!value.empty() && value[0] == ' ') value = value.substr(1);
      }
      if (name == "event") {
        event_type = std::string(value);
      } else if (name == "data") {
        std::size_t total = value.size();
        for (const std::string& d : data_lines) total += d.size() + 1;
        if (total > options.max_event_bytes) {
          out.failed = true;
          return out;
        }
        data_lines.emplace_back(value);
      } else if (name == "id") {
        if (value.find('\0') == std::string_view::npos) {
          last_id = std::string(value);
        }
      } else if (name == "retry") {
        bool digits = !value.empty();
        for (const char c : value) digits = digits && c >= '0' && c <= '9';
        // Without leading zeros, compared with LLONG_MAX as text.
        std::string_view v = value;
        while (v.size() > 1 && v[0] == '0') v.remove_prefix(1);
        const std::string_view max = "9223372036854775807";
        if (digits && (v.size() < max.size() ||
                       (v.size() == max.size() && v <= max))) {
          retry = std::stoll(std::string(v));
        }
      }
    }
    if (!terminated) break;
    pos = end + 1;
    if (in[end] == '\r' && pos < in.size() && in[pos] == '\n') ++pos;
  }
  out.dropped = started;
  return out;
}

std::uint64_t Hash(const uint8_t* data, size_t size) {
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < size; ++i) {
    h ^= data[i];
    h *= 1099511628211ull;
  }
  return h;
}

void CheckWith(std::string_view input, const SseDecoder::Options& options,
               std::uint64_t seed) {
  const Result whole = RunDecoder(input, options, [] { return 0; });
  const Result bytewise = RunDecoder(input, options, [] { return 1; });
  std::uint64_t state = seed | 1;
  const Result hashed = RunDecoder(input, options, [&state]() -> std::size_t {
    state ^= state << 13;  // xorshift64
    state ^= state >> 7;
    state ^= state << 17;
    // Mostly short chunks, sometimes long ones.
    return (state & 7) == 0 ? 1 + (state >> 8) % 512 : 1 + (state >> 8) % 9;
  });
  SSE_FUZZ_CHECK(bytewise == whole);
  SSE_FUZZ_CHECK(hashed == whole);
  SSE_FUZZ_CHECK(Reference(input, options) == whole);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::uint64_t seed = Hash(data, size);
  SseDecoder::Options roomy;
  roomy.max_line_bytes = 4096;
  roomy.max_event_bytes = 4096;
  CheckWith(input, roomy, seed);
  SseDecoder::Options tight;
  tight.max_line_bytes = 24;
  tight.max_event_bytes = 40;
  CheckWith(input, tight, seed >> 1);
  return 0;
}
