#include "tests/testing/fakeapi/sse_writer.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/messages.h"

namespace toolmesh::fakeapi {
namespace {

std::uint64_t SplitMix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

bool IsContinuationByte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// Largest cut position <= pos that does not split a UTF-8 sequence.
std::size_t Utf8Boundary(std::string_view text, std::size_t pos) {
  while (pos > 0 && pos < text.size() && IsContinuationByte(text[pos])) --pos;
  return pos;
}

Json StartUsage(const MessageSpec& spec) {
  Json usage = Json::object();
  usage["input_tokens"] = spec.input_tokens;
  usage["cache_creation_input_tokens"] = 0;
  usage["cache_read_input_tokens"] = 0;
  usage["cache_creation"] = {{"ephemeral_5m_input_tokens", 0},
                             {"ephemeral_1h_input_tokens", 0}};
  usage["output_tokens"] = 1;
  usage["service_tier"] = "standard";
  if (spec.usage.is_object()) {
    for (const char* key :
         {"input_tokens", "cache_creation_input_tokens",
          "cache_read_input_tokens", "cache_creation", "service_tier"}) {
      auto it = spec.usage.find(key);
      if (it != spec.usage.end()) usage[key] = *it;
    }
  }
  return usage;
}

Json FinalUsage(const MessageSpec& spec) {
  std::size_t content_bytes = common::DumpJson(spec.content).size();
  std::int64_t web_search = 0;
  std::int64_t web_fetch = 0;
  for (const Json& block : spec.content) {
    if (common::GetString(block, "type") != "server_tool_use") continue;
    std::string_view name = common::GetString(block, "name");
    if (name == "web_search") ++web_search;
    if (name == "web_fetch") ++web_fetch;
  }
  Json usage = Json::object();
  usage["input_tokens"] = spec.input_tokens;
  usage["cache_creation_input_tokens"] = 0;
  usage["cache_read_input_tokens"] = 0;
  usage["output_tokens"] =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(content_bytes / 4));
  if (web_search > 0 || web_fetch > 0) {
    usage["server_tool_use"] = {{"web_search_requests", web_search},
                                {"web_fetch_requests", web_fetch}};
  }
  if (spec.usage.is_object()) {
    for (auto it = spec.usage.begin(); it != spec.usage.end(); ++it) {
      usage[it.key()] = it.value();
    }
  }
  return usage;
}

class EventSink {
 public:
  EventSink(std::uint64_t seed, std::vector<std::string>* out)
      : seed_(seed), out_(out) {}

  void Emit(std::string_view name, const Json& data) {
    // About a third of the events go unpadded, the others get 1-13 spaces,
    // as in the live recordings (FX-06).
    std::uint64_t r = SplitMix(seed_ ^ SplitMix(count_++));
    int padding = (r % 3 == 0) ? 0 : static_cast<int>(1 + (r >> 8) % 13);
    out_->push_back(RenderSseEvent(name, data, padding));
  }
  void Ping() { out_->push_back("event: ping\ndata: {\"type\": \"ping\"}\n\n"); }

 private:
  std::uint64_t seed_;
  std::uint64_t count_ = 0;
  std::vector<std::string>* out_;
};

Json Delta(std::int64_t index, Json delta) {
  return Json{{"type", "content_block_delta"},
              {"index", index},
              {"delta", std::move(delta)}};
}

}  // namespace

std::uint64_t IdSource::Next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  std::uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t IdSource::Uniform(std::uint64_t bound) {
  return bound == 0 ? 0 : Next() % bound;
}

double IdSource::UniformDouble() {
  return static_cast<double>(Next() >> 11) * (1.0 / 9007199254740992.0);
}

std::string IdSource::NextId(std::string_view prefix) {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  std::string id = absl::StrCat(ToAbsl(prefix), "01");
  std::uint64_t bits = Next();
  for (int i = 0; i < 22; ++i) {
    if (i == 11) bits = Next();
    id.push_back(kAlphabet[bits % 62]);
    bits /= 62;
  }
  return id;
}

std::uint64_t StableHash(std::string_view text, std::uint64_t seed) {
  std::uint64_t h = 0xcbf29ce484222325ULL ^ SplitMix(seed);
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::vector<std::string> SplitSseEvents(std::string_view bytes) {
  std::vector<std::string> events;
  std::size_t event_start = 0;
  std::size_t pos = 0;
  bool has_content = false;
  while (pos < bytes.size()) {
    std::size_t line_start = pos;
    while (pos < bytes.size() && bytes[pos] != '\n' && bytes[pos] != '\r') {
      ++pos;
    }
    bool empty_line = pos == line_start;
    if (pos == bytes.size()) break;  // an unterminated last line
    if (bytes[pos] == '\r' && pos + 1 < bytes.size() && bytes[pos + 1] == '\n')
      ++pos;
    ++pos;
    if (!empty_line) {
      has_content = true;
    } else if (has_content) {
      events.emplace_back(bytes.substr(event_start, pos - event_start));
      event_start = pos;
      has_content = false;
    }
  }
  if (event_start < bytes.size()) {
    events.emplace_back(bytes.substr(event_start));
  }
  return events;
}

std::string EventData(std::string_view raw_event) {
  std::string data;
  bool first = true;
  std::size_t pos = 0;
  while (pos < raw_event.size()) {
    std::size_t end = raw_event.find_first_of("\r\n", pos);
    if (end == std::string_view::npos) end = raw_event.size();
    std::string_view line = raw_event.substr(pos, end - pos);
    if (line.substr(0, 5) == "data:") {
      line.remove_prefix(5);
      if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (!first) data.push_back('\n');
      data.append(line);
      first = false;
    }
    pos = end + 1;
  }
  return data;
}

std::string RenderSseEvent(std::string_view name, const Json& data,
                           int padding) {
  std::string json = common::DumpJson(data);
  if (padding > 0 && !json.empty() && json.back() == '}') {
    json.insert(json.size() - 1, static_cast<std::size_t>(padding), ' ');
  }
  return absl::StrCat("event: ", ToAbsl(name), "\ndata: ", json, "\n\n");
}

std::string RenderErrorEvent(std::string_view error_type,
                             std::string_view message,
                             std::string_view request_id) {
  Json error = Json::object();
  error["type"] = "error";
  error["error"] = {{"details", nullptr},
                    {"type", std::string(error_type)},
                    {"message", std::string(message)}};
  error["request_id"] = std::string(request_id);
  return RenderSseEvent("error", error);
}

std::string EffectiveStopReason(const MessageSpec& spec) {
  if (spec.truncate) return "max_tokens";
  if (!spec.stop_reason.empty()) return spec.stop_reason;
  for (const Json& block : spec.content) {
    if (common::GetString(block, "type") == "tool_use") return "tool_use";
  }
  return "end_turn";
}

std::vector<std::string_view> SplitPieces(std::string_view text,
                                          std::size_t target) {
  std::vector<std::string_view> pieces;
  if (target == 0) target = 1;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = std::min(text.size(), pos + target);
    if (end < text.size()) {
      // Prefer to cut just after a space within the second half of the
      // piece; otherwise cut at the target, on a UTF-8 boundary.
      std::size_t space = text.rfind(' ', end - 1);
      if (space != std::string_view::npos && space >= pos + target / 2) {
        end = space + 1;
      } else {
        end = Utf8Boundary(text, end);
        if (end <= pos) {
          end = pos + 1;
          while (end < text.size() && IsContinuationByte(text[end])) ++end;
        }
      }
    }
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

std::vector<std::string> RenderMessageStream(const MessageSpec& spec) {
  std::vector<std::string> out;
  EventSink sink(spec.padding_seed, &out);
  static const Json* const kNoContent = new Json(Json::array());
  const Json& content = spec.content.is_array() ? spec.content : *kNoContent;

  // Where a max_tokens truncation stops the stream.
  std::int64_t cut_block = -1;
  bool cut_in_tool = false;
  if (spec.truncate) {
    for (std::size_t i = 0; i < content.size(); ++i) {
      std::string_view type = common::GetString(content[i], "type");
      if (common::StreamsToolInput(type)) {
        cut_block = static_cast<std::int64_t>(i);
        cut_in_tool = true;
      }
    }
    if (!cut_in_tool) {
      for (std::size_t i = 0; i < content.size(); ++i) {
        if (common::GetString(content[i], "type") == "text") {
          cut_block = static_cast<std::int64_t>(i);
        }
      }
    }
  }

  Json message = Json::object();
  message["model"] = spec.model;
  message["id"] = spec.id;
  message["type"] = "message";
  message["role"] = "assistant";
  message["content"] = Json::array();
  message["stop_reason"] = nullptr;
  message["stop_sequence"] = nullptr;
  message["stop_details"] = nullptr;
  message["usage"] = StartUsage(spec);
  sink.Emit("message_start",
            Json{{"type", "message_start"}, {"message", std::move(message)}});

  std::size_t last = content.size();
  if (spec.truncate && cut_block >= 0) {
    last = static_cast<std::size_t>(cut_block) + 1;
  }
  for (std::size_t i = 0; i < last; ++i) {
    const Json& block = content[i];
    const auto index = static_cast<std::int64_t>(i);
    const bool cut_here = spec.truncate && index == cut_block;
    std::string_view type = common::GetString(block, "type");
    auto start = [&](Json start_block) {
      sink.Emit("content_block_start",
                Json{{"type", "content_block_start"},
                     {"index", index},
                     {"content_block", std::move(start_block)}});
      if (i == 0) sink.Ping();
    };
    bool stop = true;
    if (type == "text" && block.is_object()) {
      Json start_block = block;
      start_block["text"] = "";
      auto citations = block.find("citations");
      bool has_citations = citations != block.end() && citations->is_array();
      if (has_citations) start_block["citations"] = Json::array();
      start(std::move(start_block));
      if (has_citations) {
        for (const Json& citation : *citations) {
          sink.Emit("content_block_delta",
                    Delta(index, Json{{"type", "citations_delta"},
                                      {"citation", citation}}));
        }
      }
      std::string_view text = common::GetString(block, "text");
      if (cut_here) text = text.substr(0, Utf8Boundary(text, text.size() / 2));
      for (std::string_view piece : SplitPieces(text, 24)) {
        sink.Emit("content_block_delta",
                  Delta(index, Json{{"type", "text_delta"},
                                    {"text", std::string(piece)}}));
      }
    } else if (type == "thinking" && block.is_object()) {
      start(Json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
      for (std::string_view piece :
           SplitPieces(common::GetString(block, "thinking"), 48)) {
        sink.Emit("content_block_delta",
                  Delta(index, Json{{"type", "thinking_delta"},
                                    {"thinking", std::string(piece)}}));
      }
      sink.Emit("content_block_delta",
                Delta(index, Json{{"type", "signature_delta"},
                                  {"signature", std::string(common::GetString(
                                                    block, "signature"))}}));
    } else if (common::StreamsToolInput(type) && block.is_object()) {
      Json start_block = block;
      start_block["input"] = Json::object();
      start(std::move(start_block));
      auto input = block.find("input");
      std::string input_text;
      if (input != block.end() && !(input->is_object() && input->empty())) {
        input_text = common::DumpJson(*input);
      }
      if (cut_here) {
        // Keep about half of the input: never all of it, so the JSON stays
        // unterminated.
        std::size_t keep = input_text.size() / 2;
        if (input_text.size() >= 2 && keep == 0) keep = 1;
        input_text = input_text.substr(0, Utf8Boundary(input_text, keep));
        stop = false;
      }
      sink.Emit("content_block_delta",
                Delta(index, Json{{"type", "input_json_delta"},
                                  {"partial_json", ""}}));
      for (std::string_view piece : SplitPieces(input_text, 10)) {
        sink.Emit("content_block_delta",
                  Delta(index, Json{{"type", "input_json_delta"},
                                    {"partial_json", std::string(piece)}}));
      }
    } else {
      // Results, redacted thinking and unknown types arrive whole.
      start(block);
    }
    if (stop) {
      sink.Emit("content_block_stop",
                Json{{"type", "content_block_stop"}, {"index", index}});
    }
  }

  Json delta = Json::object();
  delta["stop_reason"] = EffectiveStopReason(spec);
  delta["stop_sequence"] = nullptr;
  delta["stop_details"] = spec.stop_details;
  sink.Emit("message_delta", Json{{"type", "message_delta"},
                                  {"delta", std::move(delta)},
                                  {"usage", FinalUsage(spec)}});
  sink.Emit("message_stop", Json{{"type", "message_stop"}});
  return out;
}

}  // namespace toolmesh::fakeapi
