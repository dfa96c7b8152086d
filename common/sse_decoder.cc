// Implementation of SseDecoder (see sse_decoder.h for the contract).
//
// The hot path is ScanLines(): it finds line ends with memchr, caching the
// position of the next '\n' and the next '\r' so that each byte of a chunk
// is scanned at most once per character, and hands every line that lies
// wholly inside the chunk to ProcessLine() as a view, without copying. Only
// a line split across Feed() calls is copied, into line_, and the limit on
// line_ is checked before every append, so memory stays bounded however the
// stream is chunked. Buffers are cleared, never shrunk, between events so a
// long stream reuses their capacity.
//
// Thread-compatible, like the class.
#include "common/sse_decoder.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace toolmesh::common {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

// Position of the first `c` in data[from, size), or `size` when none.
inline std::size_t FindByte(const char* data, std::size_t from,
                            std::size_t size, char c) {
  if (from >= size) return size;
  const void* hit = std::memchr(data + from, c, size - from);
  return hit == nullptr
             ? size
             : static_cast<std::size_t>(static_cast<const char*>(hit) - data);
}

// The `retry:` value as a number, or nullopt when it is empty, holds a byte
// that is not an ASCII digit, or does not fit in a long long. The standard
// says to ignore such a field; an overflowing one is ignored too rather than
// clamped, since no sane server sends it.
std::optional<long long> ParseRetry(std::string_view value) {
  if (value.empty()) return std::nullopt;
  long long result = 0;
  for (const char c : value) {
    if (c < '0' || c > '9') return std::nullopt;
    const int digit = c - '0';
    if (result > (LLONG_MAX - digit) / 10) return std::nullopt;
    result = result * 10 + digit;
  }
  return result;
}

}  // namespace

SseDecoder::SseDecoder() : SseDecoder(Options()) {}

SseDecoder::SseDecoder(Options options) : options_(options) {}

absl::Status SseDecoder::Feed(std::string_view bytes, Sink sink) {
  if (!status_.ok()) return status_;
  bytes_fed_ += bytes.size();
  if (!bom_checked_) {
    // Hold the first bytes until they are known to be (or not to be) a
    // BOM, which may arrive split over several calls.
    const std::size_t take =
        std::min(bytes.size(), kBom.size() - bom_prefix_.size());
    bom_prefix_.append(bytes.data(), take);
    bytes.remove_prefix(take);
    if (kBom.substr(0, bom_prefix_.size()) == bom_prefix_) {
      if (bom_prefix_.size() < kBom.size()) return absl::OkStatus();
      bom_checked_ = true;  // a whole BOM: drop it
      bom_prefix_.clear();
    } else {
      bom_checked_ = true;
      std::string prefix;
      prefix.swap(bom_prefix_);
      TOOLMESH_RETURN_IF_ERROR(ScanLines(prefix, sink));
    }
  }
  return ScanLines(bytes, sink);
}

absl::Status SseDecoder::Finish(Sink sink) {
  if (!status_.ok()) return status_;
  if (!bom_checked_) {
    // The stream ended inside what could have been a BOM: those bytes are
    // text after all.
    bom_checked_ = true;
    std::string prefix;
    prefix.swap(bom_prefix_);
    TOOLMESH_RETURN_IF_ERROR(ScanLines(prefix, sink));
  }
  last_was_cr_ = false;
  if (line_pending_) {
    line_pending_ = false;
    const absl::Status status = ProcessLine(line_, sink);
    line_.clear();
    TOOLMESH_RETURN_IF_ERROR(status);
  }
  if (event_started_) dropped_partial_event_ = true;
  event_.clear();
  data_.clear();
  has_data_ = false;
  event_started_ = false;
  retry_ms_.reset();
  return absl::OkStatus();
}

absl::Status SseDecoder::ScanLines(std::string_view bytes, Sink sink) {
  const char* const begin = bytes.data();
  const std::size_t size = bytes.size();
  if (size == 0) return absl::OkStatus();
  std::size_t pos = 0;
  if (last_was_cr_) {
    // The previous chunk ended in '\r': a '\n' here completes that same
    // line end rather than ending an empty line.
    last_was_cr_ = false;
    if (begin[0] == '\n') pos = 1;
  }
  const std::size_t max_line = options_.max_line_bytes;
  // `size` stands for "none in the rest of the chunk"; a cached position
  // is only searched again once the scan has passed it.
  std::size_t next_lf = FindByte(begin, pos, size, '\n');
  std::size_t next_cr = FindByte(begin, pos, size, '\r');
  while (true) {
    if (next_lf < pos) next_lf = FindByte(begin, pos, size, '\n');
    if (next_cr < pos) next_cr = FindByte(begin, pos, size, '\r');
    const std::size_t end = std::min(next_lf, next_cr);
    if (end == size) break;
    std::size_t next = end + 1;
    if (begin[end] == '\r') {
      if (next < size) {
        if (begin[next] == '\n') ++next;
      } else {
        last_was_cr_ = true;
      }
    }
    const std::string_view piece(begin + pos, end - pos);
    absl::Status status;
    if (line_pending_) {
      // line_.size() <= max_line always holds, so this cannot wrap.
      if (piece.size() > max_line - line_.size()) {
        return Fail(absl::StrCat("SSE line longer than max_line_bytes (",
                                 max_line, ")"));
      }
      line_.append(piece);
      line_pending_ = false;
      status = ProcessLine(line_, sink);
      line_.clear();
    } else {
      if (piece.size() > max_line) {
        return Fail(absl::StrCat("SSE line longer than max_line_bytes (",
                                 max_line, ")"));
      }
      status = ProcessLine(piece, sink);
    }
    if (!status.ok()) return status;
    pos = next;
  }
  if (pos < size) {
    // A partial line: reject it as soon as it is too long, before
    // buffering it.
    const std::size_t rest = size - pos;
    if (rest > max_line - line_.size()) {
      return Fail(absl::StrCat("SSE line longer than max_line_bytes (",
                               max_line, ")"));
    }
    line_.append(begin + pos, rest);
    line_pending_ = true;
  }
  return absl::OkStatus();
}

absl::Status SseDecoder::ProcessLine(std::string_view line, Sink sink) {
  if (line.empty()) {
    DispatchEvent(sink);
    return absl::OkStatus();
  }
  if (line.front() == ':') return absl::OkStatus();  // a comment
  std::string_view field = line;
  std::string_view value;
  if (const void* colon = std::memchr(line.data(), ':', line.size())) {
    const std::size_t n =
        static_cast<std::size_t>(static_cast<const char*>(colon) - line.data());
    field = line.substr(0, n);
    value = line.substr(n + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  event_started_ = true;
  switch (field.size()) {
    case 4:
      if (field == "data") {
        const std::size_t separator = has_data_ ? 1 : 0;
        // data_.size() <= max_event_bytes always holds.
        if (value.size() + separator >
            options_.max_event_bytes - data_.size()) {
          return Fail(absl::StrCat("SSE event data longer than "
                                   "max_event_bytes (",
                                   options_.max_event_bytes, ")"));
        }
        if (has_data_) data_.push_back('\n');
        data_.append(value);
        has_data_ = true;
      }
      break;
    case 5:
      if (field == "event") {
        event_.assign(value);
      } else if (field == "retry") {
        if (std::optional<long long> retry = ParseRetry(value)) {
          retry_ms_ = retry;
        }
      }
      break;
    case 2:
      if (field == "id" && value.find('\0') == std::string_view::npos) {
        last_id_.assign(value);
      }
      break;
    default:
      break;  // unknown fields are ignored, as the standard says
  }
  return absl::OkStatus();
}

void SseDecoder::DispatchEvent(Sink sink) {
  // An event without any data field is not dispatched (the standard's
  // "data buffer is empty" rule), but still resets the event state.
  if (has_data_) {
    const SseEventView view{event_, data_, last_id_, retry_ms_};
    sink(view);
    ++events_dispatched_;
  }
  event_.clear();
  data_.clear();
  has_data_ = false;
  event_started_ = false;
  retry_ms_.reset();
}

absl::Status SseDecoder::Fail(std::string message) {
  status_ = absl::ResourceExhaustedError(std::move(message));
  // A failed decoder never decodes again: give its buffers back.
  std::string().swap(line_);
  std::string().swap(data_);
  std::string().swap(event_);
  line_pending_ = false;
  return status_;
}

}  // namespace toolmesh::common
