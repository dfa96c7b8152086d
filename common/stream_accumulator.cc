#include "common/stream_accumulator.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/partial_json.h"
#include "simdjson.h"

namespace toolmesh::common {
namespace {

// Debian's Abseil has its own string_view type; StrCat needs it spelled out.
absl::string_view AV(std::string_view text) {
  return absl::string_view(text.data(), text.size());
}

bool IsBlank(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
  });
}

bool IsKnownEventType(std::string_view type) {
  return type == "message_start" || type == "content_block_start" ||
         type == "content_block_delta" || type == "content_block_stop" ||
         type == "message_delta" || type == "message_stop" ||
         type == "ping" || type == "error";
}

// The payload key that carries each string delta's value.
std::string_view StringDeltaKey(std::string_view delta_type) {
  if (delta_type == "text_delta") return "text";
  if (delta_type == "input_json_delta") return "partial_json";
  if (delta_type == "thinking_delta") return "thinking";
  if (delta_type == "signature_delta") return "signature";
  return {};
}

void AddUnique(std::vector<std::string>& list, std::string_view value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) {
    list.emplace_back(value);
  }
}

// --- The TypeScript SDK's partial parse, for blocks cut off by max_tokens.
// A port of its vendored partial-json-parser: tokenise, drop an incomplete
// trailing token (a string or number still being received, a key without a
// value, a dangling `:` or `,`), close the open brackets, then parse
// strictly. Escapes inside strings are kept verbatim until the final parse.

struct SdkToken {
  enum Type { kBrace, kParen, kSeparator, kDelimiter, kString, kNumber, kName };
  Type type;
  std::string_view value;
  bool unterminated = false;
};

bool IsJsonSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLetter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::optional<std::vector<SdkToken>> SdkTokenize(std::string_view input) {
  static constexpr std::string_view kLiterals[] = {"true", "false", "null"};
  std::vector<SdkToken> tokens;
  std::size_t current = 0;
  const std::size_t size = input.size();
  while (current < size) {
    const char c = input[current];
    if (c == '{' || c == '}') {
      tokens.push_back({SdkToken::kBrace, input.substr(current, 1)});
      ++current;
    } else if (c == '[' || c == ']') {
      tokens.push_back({SdkToken::kParen, input.substr(current, 1)});
      ++current;
    } else if (c == ':') {
      tokens.push_back({SdkToken::kSeparator, input.substr(current, 1)});
      ++current;
    } else if (c == ',') {
      tokens.push_back({SdkToken::kDelimiter, input.substr(current, 1)});
      ++current;
    } else if (c == '"') {
      const std::size_t start = current + 1;
      std::size_t end = start;
      bool dangling = false;
      while (true) {
        end = input.find('"', end);
        if (end == std::string_view::npos) {
          dangling = true;
          break;
        }
        std::size_t backslashes = 0;
        for (std::size_t i = end; i > start && input[i - 1] == '\\'; --i) {
          ++backslashes;
        }
        if (backslashes % 2 == 0) break;
        ++end;
      }
      if (dangling) {
        current = size;
      } else {
        tokens.push_back({SdkToken::kString, input.substr(start, end - start)});
        current = end + 1;
      }
    } else if (IsJsonSpace(c)) {
      ++current;
    } else if (IsDigit(c) || c == '-' || c == '.') {
      const std::size_t start = current;
      if (c == '-') ++current;
      while (current < size) {
        const char d = input[current];
        const char prev = current > start ? input[current - 1] : '\0';
        if (IsDigit(d) || d == '.' || d == 'e' || d == 'E' ||
            ((d == '-' || d == '+') && current > start &&
             (prev == 'e' || prev == 'E'))) {
          ++current;
        } else {
          break;
        }
      }
      tokens.push_back({SdkToken::kNumber,
                        input.substr(start, current - start),
                        current == size});
    } else if (IsLetter(c)) {
      const std::size_t start = current;
      while (current < size && IsLetter(input[current])) ++current;
      const std::string_view word = input.substr(start, current - start);
      bool literal = false;
      for (std::string_view known : kLiterals) literal |= word == known;
      if (literal) {
        tokens.push_back({SdkToken::kName, word});
        continue;
      }
      bool truncated_literal = false;
      for (std::string_view known : kLiterals) {
        truncated_literal |= known != word && known.substr(0, word.size()) == word;
      }
      truncated_literal = truncated_literal && IsBlank(input.substr(current));
      if (!truncated_literal) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  return tokens;
}

bool IsCompleteJsonNumber(std::string_view number) {
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
  std::size_t i = 0;
  const std::size_t n = number.size();
  if (i < n && number[i] == '-') ++i;
  if (i >= n || !IsDigit(number[i])) return false;
  if (number[i] == '0') {
    ++i;
  } else {
    while (i < n && IsDigit(number[i])) ++i;
  }
  if (i < n && number[i] == '.') {
    ++i;
    if (i >= n || !IsDigit(number[i])) return false;
    while (i < n && IsDigit(number[i])) ++i;
  }
  if (i < n && (number[i] == 'e' || number[i] == 'E')) {
    ++i;
    if (i < n && (number[i] == '-' || number[i] == '+')) ++i;
    if (i >= n || !IsDigit(number[i])) return false;
    while (i < n && IsDigit(number[i])) ++i;
  }
  return i == n;
}

// Returns the completed text, or nullopt when the SDK would parse the input
// unchanged.
std::optional<std::string> SdkComplete(std::vector<SdkToken> tokens) {
  // strip
  char innermost = '\0';
  {
    std::vector<char> open;
    for (const SdkToken& token : tokens) {
      if (token.type != SdkToken::kBrace && token.type != SdkToken::kParen) {
        continue;
      }
      if (token.value == "{" || token.value == "[") {
        open.push_back(token.value[0]);
      } else if (!open.empty()) {
        open.pop_back();
      }
    }
    if (!open.empty()) innermost = open.back();
  }
  std::size_t length = tokens.size();
  while (length > 0) {
    const SdkToken& last = tokens[length - 1];
    if (last.type == SdkToken::kSeparator) {
      --length;
      continue;
    }
    if (last.type == SdkToken::kNumber) {
      if (last.unterminated || !IsCompleteJsonNumber(last.value)) {
        --length;
        continue;
      }
      break;
    }
    if (last.type == SdkToken::kString) {
      const SdkToken* before = length >= 2 ? &tokens[length - 2] : nullptr;
      if (innermost == '{' && before != nullptr &&
          (before->type == SdkToken::kDelimiter ||
           (before->type == SdkToken::kBrace && before->value == "{"))) {
        --length;
        continue;
      }
      break;
    }
    if (last.type == SdkToken::kDelimiter) --length;
    break;
  }
  tokens.resize(length);
  // unstrip
  std::vector<char> tail;
  for (const SdkToken& token : tokens) {
    if (token.type != SdkToken::kBrace && token.type != SdkToken::kParen) {
      continue;
    }
    if (token.value == "{") {
      tail.push_back('}');
    } else if (token.value == "[") {
      tail.push_back(']');
    } else {
      if (tail.empty() || tail.back() != token.value[0]) return std::nullopt;
      tail.pop_back();
    }
  }
  // generate
  std::string out;
  bool previous_scalar = false;
  for (const SdkToken& token : tokens) {
    const bool scalar = token.type == SdkToken::kString ||
                        token.type == SdkToken::kNumber ||
                        token.type == SdkToken::kName;
    if (scalar && previous_scalar) out += ' ';
    if (token.type == SdkToken::kString) {
      out += '"';
      out.append(token.value);
      out += '"';
    } else {
      out.append(token.value);
    }
    previous_scalar = scalar;
  }
  for (auto it = tail.rbegin(); it != tail.rend(); ++it) out += *it;
  return out;
}

}  // namespace

absl::StatusOr<Json> ParseTruncatedJsonLikeSdk(std::string_view text) {
  if (text.empty()) return Json::object();
  std::optional<std::vector<SdkToken>> tokens = SdkTokenize(text);
  std::optional<std::string> completed;
  if (tokens.has_value()) completed = SdkComplete(*std::move(tokens));
  return ParseJson(completed.has_value() ? std::string_view(*completed) : text);
}

namespace {

}  // namespace

// ---------------------------------------------------------------------------
// Per-block state.

struct StreamAccumulator::BlockState {
  std::int64_t index = 0;
  std::string type;
  BlockKind kind = BlockKind::kOther;
  // The block as started, with text/thinking/signature/citations applied.
  // For tool calls `input` holds the start input until the block stops.
  Json block;
  bool stopped = false;
  bool from_message_start = false;
  // Input rebuilding.
  bool tracks_input = false;
  bool received_input_deltas = false;
  Json start_input;  // the start `input` (null when absent)
  std::optional<PartialJsonParser> input;
  InputState input_state = InputState::kNone;
  absl::Status input_error;
  std::vector<std::string> ignored_delta_types;

  void TrackInput(bool live) {
    if (tracks_input) return;
    tracks_input = true;
    input_state = InputState::kStreaming;
    auto it = block.find("input");
    if (it != block.end()) start_input = *it;
    PartialJsonParser::Options parser_options;
    parser_options.live = live;
    input.emplace(parser_options);
  }
};

// ---------------------------------------------------------------------------
// The fast path for content_block_delta events carrying a string
// (text/input_json/thinking/signature), parsed with simdjson on-demand into a
// reusable padded buffer. Anything it does not fully understand is left to
// the nlohmann path, which is authoritative.

class StreamAccumulator::DeltaParser {
 public:
  struct Delta {
    std::int64_t index = 0;
    std::string_view type;   // delta.type
    std::string_view value;  // the unescaped string payload
  };

  // True when `data` is a well-formed content_block_delta whose delta is a
  // string delta; `out`'s views are valid until the next Parse().
  bool Parse(std::string_view data, Delta& out) {
    const std::size_t padded_size = data.size() + simdjson::SIMDJSON_PADDING;
    if (buffer_.size() < padded_size) buffer_.resize(padded_size);
    std::memcpy(buffer_.data(), data.data(), data.size());
    std::memset(buffer_.data() + data.size(), 0, simdjson::SIMDJSON_PADDING);

    simdjson::ondemand::document doc;
    if (parser_.iterate(buffer_.data(), data.size(), buffer_.size()).get(doc)) {
      return false;
    }
    simdjson::ondemand::object object;
    if (doc.get_object().get(object)) return false;
    bool have_type = false, have_index = false, have_delta = false;
    bool have_delta_type = false, have_value = false;
    std::string_view value_key;
    for (auto field_result : object) {
      simdjson::ondemand::field field;
      if (std::move(field_result).get(field)) return false;
      std::string_view key;
      if (field.unescaped_key().get(key)) return false;
      if (key == "type") {
        std::string_view type;
        if (field.value().get_string().get(type)) return false;
        if (type != "content_block_delta") return false;
        have_type = true;
      } else if (key == "index") {
        if (field.value().get_int64().get(out.index)) return false;
        have_index = true;
      } else if (key == "delta") {
        if (have_delta) return false;
        simdjson::ondemand::object delta;
        if (field.value().get_object().get(delta)) return false;
        for (auto delta_field_result : delta) {
          simdjson::ondemand::field delta_field;
          if (std::move(delta_field_result).get(delta_field)) return false;
          std::string_view delta_key;
          if (delta_field.unescaped_key().get(delta_key)) return false;
          if (delta_key == "type") {
            if (have_delta_type) return false;
            if (delta_field.value().get_string().get(out.type)) return false;
            have_delta_type = true;
          } else if (delta_key == "text" || delta_key == "partial_json" ||
                     delta_key == "thinking" || delta_key == "signature") {
            if (have_value) return false;
            if (delta_field.value().get_string().get(out.value)) return false;
            value_key = delta_key;
            have_value = true;
          } else {
            // An extra field: let the authoritative path look at it.
            return false;
          }
        }
        have_delta = true;
      } else {
        return false;
      }
    }
    // Trailing content after the object means malformed JSON.
    const char* trailing = nullptr;
    if (doc.current_location().get(trailing) == simdjson::SUCCESS) {
      return false;
    }
    return have_type && have_index && have_delta && have_delta_type &&
           have_value && StringDeltaKey(out.type) == value_key;
  }

 private:
  simdjson::ondemand::parser parser_;
  std::string buffer_;
};

// ---------------------------------------------------------------------------
// Names and statuses.

std::string_view StreamErrorKindName(StreamError::Kind kind) {
  switch (kind) {
    case StreamError::Kind::kApiError:
      return "api_error";
    case StreamError::Kind::kSpliced:
      return "spliced";
    case StreamError::Kind::kProtocol:
      return "protocol";
    case StreamError::Kind::kTruncated:
      return "truncated";
  }
  return "protocol";
}

absl::Status StreamError::ToStatus() const {
  std::string text = absl::StrCat("stream failed (", AV(StreamErrorKindName(kind)),
                                  "): ", message);
  switch (kind) {
    case Kind::kApiError:
    case Kind::kTruncated:
      return absl::UnavailableError(text);
    case Kind::kSpliced:
      return absl::AbortedError(text);
    case Kind::kProtocol:
      return absl::InvalidArgumentError(text);
  }
  return absl::InvalidArgumentError(text);
}

std::string_view InputStateName(InputState state) {
  switch (state) {
    case InputState::kNone:
      return "none";
    case InputState::kStreaming:
      return "streaming";
    case InputState::kValid:
      return "valid";
    case InputState::kInvalid:
      return "invalid";
    case InputState::kIncomplete:
      return "incomplete";
  }
  return "none";
}

std::string_view StreamStateName(StreamAccumulator::State state) {
  switch (state) {
    case StreamAccumulator::State::kAwaitingMessageStart:
      return "awaiting_message_start";
    case StreamAccumulator::State::kOpen:
      return "open";
    case StreamAccumulator::State::kComplete:
      return "complete";
    case StreamAccumulator::State::kFailed:
      return "failed";
  }
  return "failed";
}

// ---------------------------------------------------------------------------
// StreamAccumulator.

StreamAccumulator::StreamAccumulator(StreamObserver* observer)
    : StreamAccumulator(Options(), observer) {}

StreamAccumulator::StreamAccumulator(Options options, StreamObserver* observer)
    : options_(std::move(options)),
      observer_(observer),
      delta_parser_(std::make_unique<DeltaParser>()) {}

StreamAccumulator::~StreamAccumulator() = default;

absl::Status StreamAccumulator::Fail(StreamError::Kind kind,
                                     std::string message,
                                     std::optional<ApiError> api_error) {
  StreamError error;
  error.kind = kind;
  error.message = std::move(message);
  error.api_error = std::move(api_error);
  error_status_ = error.ToStatus();
  error_ = std::move(error);
  state_ = State::kFailed;
  if (observer_ != nullptr) observer_->OnError(*error_);
  return error_status_;
}

absl::Status StreamAccumulator::Feed(std::string_view bytes) {
  if (state_ == State::kFailed) return error_status_;
  if (decoder_ == nullptr) decoder_ = std::make_unique<SseDecoder>(options_.sse);
  absl::Status status =
      decoder_->Feed(bytes, [this](const SseEventView& event) {
        // A failure is kept in state_; the rest of the chunk is ignored.
        if (state_ != State::kFailed) (void)OnEvent(event.event, event.data);
      });
  if (state_ == State::kFailed) return error_status_;
  if (!status.ok()) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("SSE decoding: ", status.message()));
  }
  return absl::OkStatus();
}

absl::Status StreamAccumulator::Finish() {
  if (state_ == State::kFailed) return error_status_;
  if (decoder_ != nullptr) {
    absl::Status status = decoder_->Finish([this](const SseEventView& event) {
      if (state_ != State::kFailed) (void)OnEvent(event.event, event.data);
    });
    if (state_ == State::kFailed) return error_status_;
    if (!status.ok()) {
      return Fail(StreamError::Kind::kProtocol,
                  absl::StrCat("SSE decoding: ", status.message()));
    }
  }
  switch (state_) {
    case State::kComplete:
      return absl::OkStatus();
    case State::kAwaitingMessageStart:
      return Fail(StreamError::Kind::kTruncated,
                  "the stream ended before message_start");
    case State::kOpen:
      return Fail(StreamError::Kind::kTruncated,
                  "the stream ended before message_stop");
    case State::kFailed:
      break;
  }
  return error_status_;
}

absl::Status StreamAccumulator::OnEvent(std::string_view event_name,
                                        std::string_view data) {
  ++events_seen_;
  if (state_ == State::kFailed) return error_status_;

  // The hot path: a string delta, parsed without building a DOM.
  DeltaParser::Delta delta;
  if (state_ == State::kOpen && delta_parser_->Parse(data, delta)) {
    return ApplyStringDelta(delta.index, delta.type, delta.value);
  }

  absl::StatusOr<Json> event = ParseJson(data);
  if (!event.ok()) {
    // An event we would ignore anyway cannot hurt with bad data; a known
    // (or unnamed) event with bad data can.
    if (event_name == "ping") return absl::OkStatus();
    if (!event_name.empty() && !IsKnownEventType(event_name)) {
      AddUnique(ignored_event_types_, event_name);
      return absl::OkStatus();
    }
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("malformed JSON in ",
                             event_name.empty() ? "an unnamed" : AV(event_name),
                             " event: ", event.status().message()));
  }
  std::string_view type = GetString(*event, "type");
  if (type.empty()) type = event_name;
  return Dispatch(type, *event);
}

absl::Status StreamAccumulator::Dispatch(std::string_view type,
                                         const Json& event) {
  if (type == "ping") return absl::OkStatus();
  if (type == "error") return HandleError(event);
  if (!IsKnownEventType(type)) {
    // The API may add event types; they are ignored, never fatal.
    AddUnique(ignored_event_types_, type);
    return absl::OkStatus();
  }
  if (type == "message_start") {
    if (state_ == State::kOpen) {
      return Fail(StreamError::Kind::kSpliced,
                  "a second message_start arrived while the message was "
                  "open; the stream is not merged with another");
    }
    if (state_ == State::kComplete) {
      return Fail(StreamError::Kind::kSpliced,
                  "a message_start arrived after message_stop");
    }
    return HandleMessageStart(event);
  }
  if (state_ == State::kAwaitingMessageStart) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("got ", AV(type), " before message_start"));
  }
  if (state_ == State::kComplete) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("got ", AV(type), " after message_stop"));
  }
  if (type == "content_block_start") return HandleBlockStart(event);
  if (type == "content_block_delta") return HandleBlockDelta(event);
  if (type == "content_block_stop") return HandleBlockStop(event);
  if (type == "message_delta") return HandleMessageDelta(event);
  return HandleMessageStop();
}

absl::Status StreamAccumulator::HandleError(const Json& event) {
  ApiError api_error = ApiErrorFromJson(event);
  std::string message = api_error.ToString();
  return Fail(StreamError::Kind::kApiError, std::move(message),
              std::move(api_error));
}

absl::Status StreamAccumulator::HandleMessageStart(const Json& event) {
  auto message = event.find("message");
  if (message == event.end() || !message->is_object()) {
    return Fail(StreamError::Kind::kProtocol,
                "message_start without a message object");
  }
  // Programmatic tool calling can pre-populate content: those blocks are
  // complete as given.
  auto content = message->find("content");
  if (content != message->end() && content->is_array()) {
    for (std::size_t i = 0; i < content->size(); ++i) {
      if (!(*content)[i].is_object()) {
        return Fail(StreamError::Kind::kProtocol,
                    absl::StrCat("message_start content[", i,
                                 "] is not an object"));
      }
    }
  }
  message_ = *message;
  state_ = State::kOpen;
  auto own_content = message_.find("content");
  if (own_content != message_.end()) *own_content = Json::array();
  if (observer_ != nullptr) observer_->OnMessageStart(*message);
  if (content == message->end() || !content->is_array()) {
    return absl::OkStatus();
  }
  for (std::size_t i = 0; i < content->size(); ++i) {
    BlockState block;
    block.index = static_cast<std::int64_t>(i);
    block.block = (*content)[i];
    block.type = std::string(GetString(block.block, "type"));
    block.kind = ClassifyBlockType(block.type);
    block.from_message_start = true;
    blocks_.push_back(std::move(block));
    BlockState& stored = blocks_.back();
    if (StreamsToolInput(stored.type)) {
      stored.TrackInput(options_.live_partial_input);
    }
    if (observer_ != nullptr) observer_->OnBlockStart(stored.index, stored.block);
    StopBlock(stored);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::int64_t> StreamAccumulator::ReadIndex(
    const Json& event) const {
  auto index = event.find("index");
  if (index == event.end() || !index->is_number_integer()) {
    return absl::InvalidArgumentError("missing or non-integer index");
  }
  std::int64_t value = 0;
  if (index->is_number_unsigned()) {
    auto unsigned_value = index->get<std::uint64_t>();
    if (unsigned_value >
        static_cast<std::uint64_t>(options_.max_block_index)) {
      return absl::InvalidArgumentError("index out of range");
    }
    value = static_cast<std::int64_t>(unsigned_value);
  } else {
    value = index->get<std::int64_t>();
  }
  if (value < 0 || value > options_.max_block_index) {
    return absl::InvalidArgumentError("index out of range");
  }
  return value;
}

StreamAccumulator::BlockState* StreamAccumulator::FindBlock(
    std::int64_t index) {
  if (last_block_ < blocks_.size() && blocks_[last_block_].index == index) {
    return &blocks_[last_block_];
  }
  auto it = std::lower_bound(
      blocks_.begin(), blocks_.end(), index,
      [](const BlockState& block, std::int64_t i) { return block.index < i; });
  if (it == blocks_.end() || it->index != index) return nullptr;
  last_block_ = static_cast<std::size_t>(it - blocks_.begin());
  return &*it;
}

const StreamAccumulator::BlockState* StreamAccumulator::FindBlock(
    std::int64_t index) const {
  auto it = std::lower_bound(
      blocks_.begin(), blocks_.end(), index,
      [](const BlockState& block, std::int64_t i) { return block.index < i; });
  if (it == blocks_.end() || it->index != index) return nullptr;
  return &*it;
}

absl::Status StreamAccumulator::HandleBlockStart(const Json& event) {
  absl::StatusOr<std::int64_t> index = ReadIndex(event);
  if (!index.ok()) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_start: ", index.status().message()));
  }
  auto content_block = event.find("content_block");
  if (content_block == event.end() || !content_block->is_object()) {
    return Fail(StreamError::Kind::kProtocol,
                "content_block_start without a content_block object");
  }
  BlockState block;
  block.index = *index;
  block.block = *content_block;
  block.type = std::string(GetString(block.block, "type"));
  block.kind = ClassifyBlockType(block.type);

  // Blocks are placed by index. A start that is not the next index is
  // accepted; one that reuses an index cannot be interpreted: replacing a
  // stopped block would swap out a tool call that may already have been
  // dispatched, so the stream is failed (and the turn retried) instead.
  if (FindBlock(*index) != nullptr) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_start for index ", *index,
                             ", which this message already has"));
  }
  BlockState* stored = nullptr;
  if (blocks_.empty() || blocks_.back().index < *index) {
    blocks_.push_back(std::move(block));
    stored = &blocks_.back();
    last_block_ = blocks_.size() - 1;
  } else {
    auto it = std::lower_bound(
        blocks_.begin(), blocks_.end(), *index,
        [](const BlockState& b, std::int64_t i) { return b.index < i; });
    it = blocks_.insert(it, std::move(block));
    stored = &*it;
    last_block_ = static_cast<std::size_t>(it - blocks_.begin());
  }
  if (StreamsToolInput(stored->type)) {
    stored->TrackInput(options_.live_partial_input);
  }
  if (observer_ != nullptr) observer_->OnBlockStart(stored->index, stored->block);
  return absl::OkStatus();
}

absl::Status StreamAccumulator::ApplyStringDelta(std::int64_t index,
                                                 std::string_view type,
                                                 std::string_view value) {
  if (index < 0 || index > options_.max_block_index) {
    return Fail(StreamError::Kind::kProtocol,
                "content_block_delta: index out of range");
  }
  BlockState* block = FindBlock(index);
  if (block == nullptr) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_delta for unknown index ", index));
  }
  if (block->stopped) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_delta for index ", index,
                             " after its content_block_stop"));
  }
  if (type == "input_json_delta") {
    if (block->kind == BlockKind::kText || block->kind == BlockKind::kThinking ||
        block->kind == BlockKind::kServerToolResult ||
        block->kind == BlockKind::kClientToolResult) {
      AddUnique(block->ignored_delta_types, type);
      return absl::OkStatus();
    }
    block->TrackInput(options_.live_partial_input);
    block->received_input_deltas = true;
    // A syntax error is kept in the parser (which also keeps the raw text)
    // and judged when the block stops: bad input never fails the stream.
    (void)block->input->Append(value);
    if (observer_ != nullptr) observer_->OnInputJsonDelta(index, value);
    return absl::OkStatus();
  }
  if (type == "text_delta") {
    if (block->type != "text") {
      AddUnique(block->ignored_delta_types, type);
      return absl::OkStatus();
    }
    Json& text = block->block["text"];
    if (!text.is_string()) text = std::string();
    text.get_ref<std::string&>().append(value);
    if (observer_ != nullptr) observer_->OnTextDelta(index, value);
    return absl::OkStatus();
  }
  if (type == "thinking_delta") {
    if (block->type != "thinking") {
      AddUnique(block->ignored_delta_types, type);
      return absl::OkStatus();
    }
    Json& thinking = block->block["thinking"];
    if (!thinking.is_string()) thinking = std::string();
    thinking.get_ref<std::string&>().append(value);
    if (observer_ != nullptr) observer_->OnThinkingDelta(index, value);
    return absl::OkStatus();
  }
  if (type == "signature_delta") {
    if (block->type != "thinking") {
      AddUnique(block->ignored_delta_types, type);
      return absl::OkStatus();
    }
    // The SDKs replace the signature; it is sent whole.
    block->block["signature"] = std::string(value);
    if (observer_ != nullptr) observer_->OnSignatureDelta(index, value);
    return absl::OkStatus();
  }
  AddUnique(block->ignored_delta_types, type);
  return absl::OkStatus();
}

absl::Status StreamAccumulator::HandleBlockDelta(const Json& event) {
  absl::StatusOr<std::int64_t> index = ReadIndex(event);
  if (!index.ok()) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_delta: ", index.status().message()));
  }
  auto delta = event.find("delta");
  if (delta == event.end() || !delta->is_object()) {
    return Fail(StreamError::Kind::kProtocol,
                "content_block_delta without a delta object");
  }
  std::string_view type = GetString(*delta, "type");
  std::string_view key = StringDeltaKey(type);
  if (!key.empty()) {
    auto value = delta->find(key);
    if (value == delta->end() || !value->is_string()) {
      return Fail(StreamError::Kind::kProtocol,
                  absl::StrCat(AV(type), " without a string ", AV(key)));
    }
    return ApplyStringDelta(*index, type,
                            value->get_ref<const std::string&>());
  }
  BlockState* block = FindBlock(*index);
  if (block == nullptr) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_delta for unknown index ", *index));
  }
  if (block->stopped) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_delta for index ", *index,
                             " after its content_block_stop"));
  }
  if (type == "citations_delta" && block->type == "text") {
    auto citation = delta->find("citation");
    if (citation == delta->end()) {
      return Fail(StreamError::Kind::kProtocol,
                  "citations_delta without a citation");
    }
    Json& citations = block->block["citations"];
    if (!citations.is_array()) citations = Json::array();
    citations.push_back(*citation);
    if (observer_ != nullptr) observer_->OnCitation(*index, *citation);
    return absl::OkStatus();
  }
  if (type == "compaction_delta" && block->type == "compaction") {
    // It carries the whole value of each field it has.
    for (auto it = delta->begin(); it != delta->end(); ++it) {
      if (it.key() == "type") continue;
      block->block[it.key()] = it.value();
    }
    return absl::OkStatus();
  }
  // Unknown delta types (or known ones for another block type) are recorded
  // and left out of the message.
  AddUnique(block->ignored_delta_types, type);
  return absl::OkStatus();
}

void StreamAccumulator::StopBlock(BlockState& block) {
  block.stopped = true;
  if (block.tracks_input) {
    Json& input = block.block["input"];
    const bool blank = !block.received_input_deltas ||
                       IsBlank(block.input->raw());
    if (blank) {
      if (block.start_input.is_object()) {
        // Pre-filled input (or the usual `{}`) stands.
        block.input_state = InputState::kValid;
      } else if (block.received_input_deltas) {
        // A tool without arguments streams a single "" fragment.
        input = Json::object();
        block.input_state = InputState::kValid;
      } else {
        block.input_state = InputState::kInvalid;
        block.input_error = absl::InvalidArgumentError(
            "the tool call carries no input object");
        if (block.start_input.is_null()) block.block.erase("input");
      }
    } else {
      absl::StatusOr<Json> value = block.input->Finish();
      if (value.ok() && value->is_object()) {
        input = *std::move(value);
        block.input_state = InputState::kValid;
      } else {
        block.input_state = InputState::kInvalid;
        block.input_error =
            value.ok() ? absl::InvalidArgumentError(
                             "the tool input is not a JSON object")
                       : value.status();
        // The final message keeps the start input; the call is never run.
        if (block.start_input.is_null()) {
          input = Json::object();
        } else {
          input = block.start_input;
        }
      }
    }
  }
  if (observer_ != nullptr) {
    BlockInfo info = MakeInfo(block);
    observer_->OnBlockStop(block.index, block.block, info);
  }
}

absl::Status StreamAccumulator::HandleBlockStop(const Json& event) {
  absl::StatusOr<std::int64_t> index = ReadIndex(event);
  if (!index.ok()) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_stop: ", index.status().message()));
  }
  BlockState* block = FindBlock(*index);
  if (block == nullptr) {
    return Fail(StreamError::Kind::kProtocol,
                absl::StrCat("content_block_stop for unknown index ", *index));
  }
  // A repeated stop changes nothing.
  if (block->stopped) return absl::OkStatus();
  StopBlock(*block);
  return absl::OkStatus();
}

absl::Status StreamAccumulator::HandleMessageDelta(const Json& event) {
  auto delta = event.find("delta");
  if (delta != event.end() && delta->is_object()) {
    for (auto it = delta->begin(); it != delta->end(); ++it) {
      const std::string& key = it.key();
      // Only message-level fields; the identity and content of the message
      // are not the delta's to change.
      if (key == "type" || key == "id" || key == "role" || key == "model" ||
          key == "content" || key == "usage") {
        continue;
      }
      message_[key] = it.value();
    }
  }
  auto usage = event.find("usage");
  if (usage != event.end() && usage->is_object()) {
    Json& totals = message_["usage"];
    if (!totals.is_object()) totals = Json::object();
    // Cumulative whole-message totals: overwrite, never add.
    for (auto it = usage->begin(); it != usage->end(); ++it) {
      totals[it.key()] = it.value();
    }
  }
  auto context_management = event.find("context_management");
  if (context_management != event.end()) {
    message_["context_management"] = *context_management;
  }
  if (observer_ != nullptr) observer_->OnMessageDelta(event);
  return absl::OkStatus();
}

absl::Status StreamAccumulator::HandleMessageStop() {
  // Blocks that never stopped (max_tokens truncation) are incomplete: they
  // are shown the way the TypeScript SDK shows them (input partially
  // parsed) but can never be run.
  for (BlockState& block : blocks_) {
    if (block.stopped || !block.tracks_input) continue;
    block.input_state = InputState::kIncomplete;
    if (!block.received_input_deltas || IsBlank(block.input->raw())) continue;
    // The SDK's own completion (which drops a string still being received),
    // rather than our live view, so the message matches the SDK's.
    absl::StatusOr<Json> partial =
        ParseTruncatedJsonLikeSdk(block.input->raw());
    if (partial.ok() && partial->is_object()) {
      block.block["input"] = *std::move(partial);
    }
  }
  final_message_ = BuildMessage(/*only_stopped=*/false);
  state_ = State::kComplete;
  if (observer_ != nullptr) observer_->OnMessageStop(final_message_);
  return absl::OkStatus();
}

Json StreamAccumulator::BuildMessage(bool only_stopped) const {
  if (message_.is_null()) return Json();
  Json message = message_;
  Json content = Json::array();
  for (const BlockState& block : blocks_) {
    if (only_stopped && !block.stopped) continue;
    content.push_back(block.block);
  }
  message["content"] = std::move(content);
  return message;
}

absl::StatusOr<Json> StreamAccumulator::FinalMessage() const {
  switch (state_) {
    case State::kComplete:
      return final_message_;
    case State::kFailed:
      return error_status_;
    case State::kAwaitingMessageStart:
    case State::kOpen:
      break;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no final message: the stream is ", AV(StreamStateName(state_))));
}

Json StreamAccumulator::PartialMessage() const {
  return BuildMessage(/*only_stopped=*/true);
}

const Json* StreamAccumulator::PartialInput(std::int64_t index) const {
  const BlockState* block = FindBlock(index);
  if (block == nullptr || !block->tracks_input) return nullptr;
  if (block->stopped || block->input_state == InputState::kIncomplete ||
      !block->received_input_deltas) {
    auto it = block->block.find("input");
    return it == block->block.end() ? nullptr : &*it;
  }
  if (IsBlank(block->input->raw())) {
    auto it = block->block.find("input");
    return it == block->block.end() ? nullptr : &*it;
  }
  if (!options_.live_partial_input) return nullptr;
  return &block->input->Partial();
}

BlockInfo StreamAccumulator::MakeInfo(const BlockState& block) const {
  BlockInfo info;
  info.index = block.index;
  info.type = block.type;
  info.kind = block.kind;
  info.stopped = block.stopped;
  info.from_message_start = block.from_message_start;
  info.input_state = block.input_state;
  info.received_input_deltas = block.received_input_deltas;
  if (block.input.has_value()) info.raw_input = block.input->raw();
  info.input_error = block.input_error;
  info.partial_input = PartialInput(block.index);
  info.ignored_delta_types = block.ignored_delta_types;
  return info;
}

std::vector<BlockInfo> StreamAccumulator::Blocks() const {
  std::vector<BlockInfo> infos;
  infos.reserve(blocks_.size());
  for (const BlockState& block : blocks_) infos.push_back(MakeInfo(block));
  return infos;
}

std::optional<BlockInfo> StreamAccumulator::Block(std::int64_t index) const {
  const BlockState* block = FindBlock(index);
  if (block == nullptr) return std::nullopt;
  return MakeInfo(*block);
}

}  // namespace toolmesh::common
