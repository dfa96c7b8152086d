#include "tests/testing/fakeapi/rule_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/messages.h"
#include "tests/testing/fakeapi/scenario.h"

namespace toolmesh::fakeapi {
namespace {

constexpr int kMaxDepth = 8;

std::string ExampleString(std::string_view key, const Json& schema) {
  std::string_view format = common::GetString(schema, "format");
  if (format == "date-time") return "2025-01-01T00:00:00Z";
  if (format == "date") return "2025-01-01";
  if (format == "email") return "user@example.com";
  if (format == "uri" || format == "url") return "https://example.com/";
  std::string lower = absl::AsciiStrToLower(ToAbsl(key));
  if (absl::StrContains(lower, "url")) return "https://example.com/";
  if (absl::StrContains(lower, "city")) return "Paris";
  if (absl::StrContains(lower, "path")) return "/tmp/example.txt";
  if (absl::StrContains(lower, "query")) return "toolmesh fake api";
  if (key.empty()) return "example";
  return absl::StrCat("example ", ToAbsl(key));
}

bool GetInt(const Json& schema, const char* key, double& out) {
  auto it = schema.find(key);
  if (it == schema.end() || !it->is_number()) return false;
  out = it->get<double>();
  return true;
}

std::string PickType(const Json& schema) {
  auto it = schema.find("type");
  if (it != schema.end()) {
    if (it->is_string()) return it->get<std::string>();
    if (it->is_array()) {
      for (const Json& t : *it) {
        if (t.is_string() && t != "null") return t.get<std::string>();
      }
      if (!it->empty() && (*it)[0].is_string()) {
        return (*it)[0].get<std::string>();
      }
    }
  }
  if (schema.contains("properties")) return "object";
  if (schema.contains("items")) return "array";
  return "string";
}

Json GenerateNumber(const Json& schema, IdSource& rng, bool integer) {
  double lo = 0;
  double hi = 0;
  bool has_lo = GetInt(schema, "minimum", lo);
  bool has_hi = GetInt(schema, "maximum", hi);
  double ex = 0;
  if (GetInt(schema, "exclusiveMinimum", ex)) {
    lo = integer ? std::floor(ex) + 1 : ex + 0.5;
    has_lo = true;
  }
  if (GetInt(schema, "exclusiveMaximum", ex)) {
    hi = integer ? std::ceil(ex) - 1 : ex - 0.5;
    has_hi = true;
  }
  if (integer) {
    lo = std::ceil(lo);
    hi = std::floor(hi);
  }
  double value = static_cast<double>(1 + rng.Uniform(10));
  if (!integer) value += 0.5;
  if (has_lo && has_hi) {
    if (hi < lo) hi = lo;
    double span = hi - lo;
    value = lo + (span <= 0 ? 0 : std::fmod(value, span + (integer ? 1 : 0)));
    if (value > hi) value = hi;
  } else if (has_lo) {
    value = lo + value;
  } else if (has_hi) {
    value = hi - value;
  }
  if (integer) return static_cast<std::int64_t>(value);
  return value;
}

std::string ContentText(const Json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::vector<std::string> parts;
  if (content.is_array()) {
    for (const Json& block : content) {
      if (common::GetString(block, "type") == "text") {
        parts.emplace_back(common::GetString(block, "text"));
      }
    }
  }
  return absl::StrJoin(parts, " ");
}

struct ToolSet {
  std::vector<const Json*> client;
  std::string web_search;  // name of a web_search server tool, or ""
  std::vector<std::string> server_names;
};

ToolSet ReadTools(const Json& request) {
  ToolSet set;
  auto tools = request.find("tools");
  if (tools == request.end() || !tools->is_array()) return set;
  for (const Json& tool : *tools) {
    if (!tool.is_object()) continue;
    std::string_view type = common::GetString(tool, "type");
    std::string_view name = common::GetString(tool, "name");
    if (name.empty()) continue;
    if (type.empty() || type == "custom") {
      set.client.push_back(&tool);
    } else {
      set.server_names.emplace_back(name);
      if (absl::StartsWith(ToAbsl(type), "web_search_") && set.web_search.empty()) {
        set.web_search = std::string(name);
      }
    }
  }
  return set;
}

bool ThinkingEnabled(const Json& request) {
  auto it = request.find("thinking");
  if (it == request.end() || !it->is_object()) return false;
  std::string_view type = common::GetString(*it, "type");
  return type == "enabled" || type == "adaptive";
}

Json ThinkingBlock(std::string_view about, IdSource& rng) {
  return Json{{"type", "thinking"},
              {"thinking", absl::StrCat("The user asked: ", ToAbsl(about),
                                        ". I will work through it step by "
                                        "step.")},
              {"signature", absl::StrCat("fakesig", rng.NextId("").substr(2),
                                         "==")}};
}

// Server calls of the last assistant message that have no result in it.
std::vector<const Json*> UnresolvedServerCalls(const Json& messages) {
  std::vector<const Json*> calls;
  for (auto m = messages.rbegin(); m != messages.rend(); ++m) {
    if (common::GetString(*m, "role") != "assistant") continue;
    auto content = m->find("content");
    if (content == m->end() || !content->is_array()) break;
    for (const Json& block : *content) {
      if (common::ClassifyBlock(block) != common::BlockKind::kServerToolCall) {
        continue;
      }
      std::string_view id = common::GetString(block, "id");
      bool resolved = false;
      for (const Json& other : *content) {
        if (common::ClassifyBlock(other) ==
                common::BlockKind::kServerToolResult &&
            common::GetString(other, "tool_use_id") == id) {
          resolved = true;
        }
      }
      if (!resolved) calls.push_back(&block);
    }
    break;
  }
  return calls;
}

}  // namespace

Json GenerateFromSchema(const Json& schema, IdSource& rng,
                        std::string_view key, int depth) {
  if (!schema.is_object()) return ExampleString(key, Json::object());
  if (auto it = schema.find("const"); it != schema.end()) return *it;
  if (auto it = schema.find("enum"); it != schema.end() && it->is_array() &&
                                      !it->empty()) {
    return (*it)[rng.Uniform(it->size())];
  }
  for (const char* combinator : {"anyOf", "oneOf", "allOf"}) {
    if (auto it = schema.find(combinator);
        it != schema.end() && it->is_array() && !it->empty()) {
      return GenerateFromSchema((*it)[0], rng, key, depth + 1);
    }
  }
  std::string type = PickType(schema);
  if (type == "object") {
    Json out = Json::object();
    if (depth >= kMaxDepth) return out;
    std::vector<std::string> required;
    if (auto it = schema.find("required"); it != schema.end() &&
                                           it->is_array()) {
      for (const Json& name : *it) {
        if (name.is_string()) required.push_back(name.get<std::string>());
      }
    }
    auto props = schema.find("properties");
    if (props != schema.end() && props->is_object()) {
      for (auto it = props->begin(); it != props->end(); ++it) {
        bool is_required = std::find(required.begin(), required.end(),
                                     it.key()) != required.end();
        if (!is_required && rng.Uniform(2) == 0) continue;
        out[it.key()] = GenerateFromSchema(it.value(), rng, it.key(), depth + 1);
      }
    }
    for (const std::string& name : required) {
      if (!out.contains(name)) out[name] = ExampleString(name, Json::object());
    }
    return out;
  }
  if (type == "array") {
    Json out = Json::array();
    if (depth >= kMaxDepth) return out;
    double min_items = 1;
    double max_items = 3;
    GetInt(schema, "minItems", min_items);
    GetInt(schema, "maxItems", max_items);
    auto n = static_cast<std::int64_t>(std::min(std::max(min_items, 1.0),
                                                std::max(max_items, 0.0)));
    n = std::min<std::int64_t>(n, 16);
    Json items = schema.contains("items") ? schema["items"] : Json::object();
    for (std::int64_t i = 0; i < n; ++i) {
      out.push_back(GenerateFromSchema(items, rng, key, depth + 1));
    }
    return out;
  }
  if (type == "integer") return GenerateNumber(schema, rng, true);
  if (type == "number") return GenerateNumber(schema, rng, false);
  if (type == "boolean") return rng.Uniform(2) == 1;
  if (type == "null") return nullptr;
  std::string text = ExampleString(key, schema);
  double min_len = 0;
  double max_len = -1;
  GetInt(schema, "minLength", min_len);
  if (GetInt(schema, "maxLength", max_len) && max_len >= 0 &&
      text.size() > static_cast<std::size_t>(max_len)) {
    text.resize(static_cast<std::size_t>(max_len));
  }
  if (min_len > 0 && text.size() < static_cast<std::size_t>(min_len)) {
    text.append(static_cast<std::size_t>(min_len) - text.size(), 'x');
  }
  return text;
}

Json FakeServerToolResult(std::string_view tool_name,
                          std::string_view tool_use_id) {
  Json block = Json::object();
  block["type"] = absl::StrCat(ToAbsl(tool_name), "_tool_result");
  block["tool_use_id"] = std::string(tool_use_id);
  if (tool_name == "web_search") {
    Json results = Json::array();
    for (int i = 1; i <= 2; ++i) {
      results.push_back(
          Json{{"type", "web_search_result"},
               {"title", absl::StrCat("Fake search result ", i)},
               {"url", absl::StrCat("https://example.com/fake/", i)},
               {"encrypted_content", "ZmFrZSBlbmNyeXB0ZWQgY29udGVudA=="},
               {"page_age", nullptr}});
    }
    block["content"] = std::move(results);
  } else if (tool_name == "web_fetch") {
    block["content"] = Json{
        {"type", "web_fetch_result"},
        {"url", "https://example.com/fake"},
        {"retrieved_at", "2025-01-01T00:00:00Z"},
        {"content",
         Json{{"type", "document"},
              {"source", Json{{"type", "text"},
                              {"media_type", "text/plain"},
                              {"data", "Fake page content."}}}}}};
  } else {
    block["content"] = Json{{"type", "code_execution_result"},
                            {"stdout", "fake output\n"},
                            {"stderr", ""},
                            {"return_code", 0},
                            {"content", Json::array()}};
  }
  return block;
}

ModelReply RuleModelRespond(const Json& request, std::uint64_t seed) {
  ModelReply reply;
  static const Json* const kEmpty = new Json(Json::array());
  const Json* messages = kEmpty;
  if (request.is_object()) {
    auto it = request.find("messages");
    if (it != request.end() && it->is_array()) messages = &*it;
  }
  IdSource rng(StableHash(common::DumpJson(*messages), seed));
  const ToolSet tools = request.is_object() ? ReadTools(request) : ToolSet{};
  const bool thinking = request.is_object() && ThinkingEnabled(request);
  const Json* last_user = LastUserMessage(request);

  // The API runs a server call left unresolved at the end of the history
  // and opens its reply with the result (pause_turn, deferred call).
  if (last_user == nullptr || MessageText(*last_user).empty()) {
    for (const Json* call : UnresolvedServerCalls(*messages)) {
      reply.blocks.push_back(FakeServerToolResult(
          common::GetString(*call, "name"), common::GetString(*call, "id")));
    }
  }

  if (last_user == nullptr) {
    reply.blocks.push_back(
        Json{{"type", "text"}, {"text", "Continuing where I left off. Done."}});
    reply.stop_reason = "end_turn";
    return reply;
  }

  std::vector<std::string> result_ids = ToolResultIds(*last_user);
  if (!result_ids.empty()) {
    // Name each result by the tool_use it answers.
    std::vector<std::pair<std::string, std::string>> names;
    for (const Json& message : *messages) {
      if (common::GetString(message, "role") != "assistant") continue;
      auto content = message.find("content");
      if (content == message.end() || !content->is_array()) continue;
      for (const Json& block : *content) {
        if (common::GetString(block, "type") == "tool_use") {
          names.emplace_back(common::GetString(block, "id"),
                             common::GetString(block, "name"));
        }
      }
    }
    std::string text = "Here is what the tools returned:";
    for (const Json& block : (*last_user)["content"]) {
      if (common::GetString(block, "type") != "tool_result") continue;
      std::string_view id = common::GetString(block, "tool_use_id");
      std::string name(id);
      for (const auto& [tool_id, tool_name] : names) {
        if (tool_id == id) name = tool_name;
      }
      bool is_error = block.contains("is_error") && block["is_error"] == true;
      std::string content =
          block.contains("content") ? ContentText(block["content"]) : "";
      absl::StrAppend(&text, "\n- ", name, is_error ? " failed: " : ": ",
                      content.empty() ? "(no output)" : content);
    }
    if (thinking) {
      reply.blocks.push_back(ThinkingBlock("to summarise the results", rng));
    }
    reply.blocks.push_back(Json{{"type", "text"}, {"text", text}});
    reply.stop_reason = "end_turn";
    return reply;
  }

  const std::string prompt = MessageText(*last_user);
  const std::string lower_prompt = absl::AsciiStrToLower(prompt);
  if (thinking) reply.blocks.push_back(ThinkingBlock(prompt.substr(0, 80), rng));

  // Which client tools to call.
  std::string_view choice_type;
  std::string_view choice_name;
  bool no_parallel = false;
  if (auto it = request.find("tool_choice"); it != request.end() &&
                                             it->is_object()) {
    choice_type = common::GetString(*it, "type");
    choice_name = common::GetString(*it, "name");
    no_parallel = it->contains("disable_parallel_tool_use") &&
                  (*it)["disable_parallel_tool_use"] == true;
  }
  std::vector<const Json*> calls;
  if (choice_type != "none" && !tools.client.empty()) {
    if (choice_type == "tool") {
      for (const Json* tool : tools.client) {
        if (common::GetString(*tool, "name") == choice_name) {
          calls.push_back(tool);
        }
      }
    } else {
      for (const Json* tool : tools.client) {
        std::string name =
            absl::AsciiStrToLower(ToAbsl(common::GetString(*tool, "name")));
        if (absl::StrContains(lower_prompt, name)) calls.push_back(tool);
      }
      if (calls.empty()) {
        std::size_t n = tools.client.size();
        std::size_t count = 1 + rng.Uniform(std::min<std::size_t>(2, n));
        std::size_t first = rng.Uniform(n);
        for (std::size_t i = 0; i < count; ++i) {
          calls.push_back(tools.client[(first + i) % n]);
        }
      }
    }
    if (no_parallel && calls.size() > 1) calls.resize(1);
  }
  const bool search =
      choice_type != "none" && !tools.web_search.empty() &&
      (absl::StrContains(lower_prompt, "search") || calls.empty());

  std::vector<std::string> call_names;
  for (const Json* tool : calls) {
    call_names.emplace_back(common::GetString(*tool, "name"));
  }
  if (!calls.empty()) {
    reply.blocks.push_back(
        Json{{"type", "text"},
             {"text", absl::StrCat("I'll use ", absl::StrJoin(call_names, ", "),
                                   " to answer that.")}});
  }
  if (search) {
    std::string id = rng.NextId("srvtoolu_");
    reply.blocks.push_back(Json{{"type", "server_tool_use"},
                                {"id", id},
                                {"name", tools.web_search},
                                {"input", {{"query", prompt.substr(0, 80)}}}});
    reply.blocks.push_back(FakeServerToolResult("web_search", id));
  }
  if (calls.empty()) {
    reply.blocks.push_back(Json{
        {"type", "text"},
        {"text", absl::StrCat(search ? "According to the search results, "
                                     : "Fake model reply to: ",
                              prompt.empty() ? "(empty prompt)" : prompt)}});
    reply.stop_reason = "end_turn";
    return reply;
  }
  for (const Json* tool : calls) {
    const Json schema =
        tool->contains("input_schema") ? (*tool)["input_schema"] : Json();
    Json input = GenerateFromSchema(schema, rng);
    if (!input.is_object()) input = Json::object();
    reply.blocks.push_back(Json{{"type", "tool_use"},
                                {"id", rng.NextId("toolu_")},
                                {"name", common::GetString(*tool, "name")},
                                {"input", std::move(input)}});
  }
  reply.stop_reason = "tool_use";
  return reply;
}

int TrailingToolUseStart(const Json& content) {
  int start = -1;
  for (int i = static_cast<int>(content.size()) - 1; i >= 0; --i) {
    if (common::GetString(content[static_cast<std::size_t>(i)], "type") !=
        "tool_use") {
      break;
    }
    start = i;
  }
  return start;
}

bool HasServerResultFor(const Json& content, std::string_view id) {
  for (const Json& block : content) {
    if (common::ClassifyBlock(block) == common::BlockKind::kServerToolResult &&
        common::GetString(block, "tool_use_id") == id) {
      return true;
    }
  }
  return false;
}

}  // namespace toolmesh::fakeapi
