#include "tests/testing/fakeapi/scenario.h"

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/messages.h"
#include "tests/testing/fakeapi/sse_writer.h"

namespace toolmesh::fakeapi {
namespace {

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status CheckKeys(const Json& object, absl::string_view where,
                       std::initializer_list<std::string_view> allowed) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
      return Invalid(where, absl::StrCat("unknown key `", it.key(), "`"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::Status ParseMatch(const Json& spec, const std::string& where,
                        MatchSpec& match) {
  if (!spec.is_object()) return Invalid(where, "must be an object");
  if (auto s = CheckKeys(spec, where,
                         {"last_user_has_tool_result_for",
                          "last_user_text_contains", "turn", "model",
                          "stream"});
      !s.ok()) {
    return s;
  }
  for (const char* key : {"last_user_has_tool_result_for",
                          "last_user_text_contains", "model"}) {
    auto it = spec.find(key);
    if (it == spec.end()) continue;
    if (!it->is_string()) {
      return Invalid(absl::StrCat(where, ".", key), "must be a string");
    }
    std::string value = it->get<std::string>();
    if (std::string_view(key) == "model") {
      match.model = std::move(value);
    } else if (std::string_view(key) == "last_user_text_contains") {
      match.last_user_text_contains = std::move(value);
    } else {
      match.last_user_has_tool_result_for = std::move(value);
    }
  }
  if (auto it = spec.find("turn"); it != spec.end()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 ||
        it->get<std::int64_t>() > 1000000) {
      return Invalid(absl::StrCat(where, ".turn"),
                     "must be an integer >= 1");
    }
    match.turn = static_cast<int>(it->get<std::int64_t>());
  }
  if (auto it = spec.find("stream"); it != spec.end()) {
    if (!it->is_boolean()) {
      return Invalid(absl::StrCat(where, ".stream"), "must be a boolean");
    }
    match.stream = it->get<bool>();
  }
  return absl::OkStatus();
}

absl::Status CheckBlock(const Json& block, const std::string& where) {
  if (!block.is_object()) return Invalid(where, "must be an object");
  std::string_view type = common::GetString(block, "type");
  if (type.empty()) return Invalid(where, "needs a string `type`");
  auto require_string = [&](const char* key, bool non_empty) -> absl::Status {
    auto it = block.find(key);
    if (it == block.end() || !it->is_string() ||
        (non_empty && it->get_ref<const std::string&>().empty())) {
      return Invalid(where,
                     absl::StrCat("`", ToAbsl(type), "` needs a ",
                                  non_empty ? "non-empty " : "", "string `",
                                  key, "`"));
    }
    return absl::OkStatus();
  };
  if (type == "text") return require_string("text", true);
  if (type == "thinking") return require_string("thinking", false);
  if (common::StreamsToolInput(type)) {
    if (auto s = require_string("name", true); !s.ok()) return s;
    if (auto it = block.find("id"); it != block.end() && !it->is_string()) {
      return Invalid(where, "`id` must be a string");
    }
    if (auto it = block.find("input");
        it != block.end() && !it->is_object()) {
      return Invalid(where, "`input` must be an object");
    }
    return absl::OkStatus();
  }
  if (common::ClassifyBlockType(type) == common::BlockKind::kServerToolResult) {
    return require_string("tool_use_id", true);
  }
  return absl::OkStatus();
}

absl::StatusOr<ScenarioResponse> ParseResponse(const Json& spec, int index,
                                               const std::string& base_dir) {
  const std::string where = absl::StrCat("responses[", index, "]");
  if (!spec.is_object()) return Invalid(where, "must be an object");
  if (auto s = CheckKeys(spec, where,
                         {"name", "match", "repeat", "sse_file", "blocks",
                          "rule_model", "stop_reason", "stop_details", "usage",
                          "fault"});
      !s.ok()) {
    return s;
  }
  ScenarioResponse response;
  response.index = index;
  if (auto it = spec.find("name"); it != spec.end()) {
    if (!it->is_string()) return Invalid(where + ".name", "must be a string");
    response.name = it->get<std::string>();
  }
  if (auto it = spec.find("match"); it != spec.end()) {
    if (auto s = ParseMatch(*it, where + ".match", response.match); !s.ok()) {
      return s;
    }
  }
  if (auto it = spec.find("repeat"); it != spec.end()) {
    if (!it->is_boolean()) {
      return Invalid(where + ".repeat", "must be a boolean");
    }
    response.repeat = it->get<bool>();
  }
  const bool has_file = spec.contains("sse_file");
  const bool has_blocks = spec.contains("blocks");
  const bool has_model = spec.contains("rule_model");
  if (int(has_file) + int(has_blocks) + int(has_model) != 1) {
    return Invalid(where,
                   "needs exactly one of `sse_file`, `blocks`, `rule_model`");
  }
  if (has_file) {
    const Json& file = spec["sse_file"];
    if (!file.is_string() || file.get_ref<const std::string&>().empty()) {
      return Invalid(where + ".sse_file", "must be a non-empty string");
    }
    std::string path = file.get<std::string>();
    if (path.front() != '/' && !base_dir.empty()) {
      path = absl::StrCat(base_dir, "/", path);
    }
    auto bytes = ReadWholeFile(path);
    if (!bytes.ok()) {
      return Invalid(where + ".sse_file", bytes.status().message());
    }
    response.source = ScenarioResponse::Source::kSseFile;
    response.sse_path = path;
    response.sse_bytes = *std::move(bytes);
    for (const char* key : {"stop_reason", "stop_details", "usage"}) {
      if (spec.contains(key)) {
        return Invalid(where, absl::StrCat("`", key,
                                           "` applies to `blocks` only"));
      }
    }
  } else if (has_model) {
    if (spec["rule_model"] != true) {
      return Invalid(where + ".rule_model", "must be true");
    }
    response.source = ScenarioResponse::Source::kModel;
  } else {
    const Json& blocks = spec["blocks"];
    if (!blocks.is_array()) return Invalid(where + ".blocks", "must be an array");
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      if (auto s = CheckBlock(blocks[i], absl::StrCat(where, ".blocks[", i, "]"));
          !s.ok()) {
        return s;
      }
    }
    response.source = ScenarioResponse::Source::kBlocks;
    response.blocks = blocks;
    if (auto it = spec.find("stop_reason"); it != spec.end()) {
      if (!it->is_string()) {
        return Invalid(where + ".stop_reason", "must be a string");
      }
      response.stop_reason = it->get<std::string>();
    }
    if (auto it = spec.find("stop_details"); it != spec.end()) {
      if (!it->is_object() && !it->is_null()) {
        return Invalid(where + ".stop_details", "must be an object or null");
      }
      response.stop_details = *it;
    }
    if (auto it = spec.find("usage"); it != spec.end()) {
      if (!it->is_object()) return Invalid(where + ".usage", "must be an object");
      response.usage = *it;
    }
  }
  if (auto it = spec.find("fault"); it != spec.end() && !it->is_null()) {
    auto fault = ParseFault(*it);
    if (!fault.ok()) return Invalid(where + ".fault", fault.status().message());
    response.fault = *std::move(fault);
  }
  return response;
}

}  // namespace

absl::StatusOr<Scenario> LoadScenarioFile(const std::string& path) {
  auto text = ReadWholeFile(path);
  if (!text.ok()) return text.status();
  auto doc = common::ParseJson(*text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", doc.status().message()));
  }
  std::string base_dir = ".";
  if (auto slash = path.rfind('/'); slash != std::string::npos) {
    base_dir = slash == 0 ? "/" : path.substr(0, slash);
  }
  auto scenario = ParseScenario(*doc, base_dir);
  if (!scenario.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", scenario.status().message()));
  }
  scenario->path = path;
  return scenario;
}

absl::StatusOr<Scenario> ParseScenario(const Json& doc,
                                       const std::string& base_dir) {
  Scenario scenario;
  const Json* responses = &doc;
  if (doc.is_object()) {
    if (auto s = CheckKeys(doc, "scenario",
                           {"description", "responses", "fallback"});
        !s.ok()) {
      return s;
    }
    auto it = doc.find("responses");
    if (it == doc.end()) return Invalid("scenario", "needs `responses`");
    responses = &*it;
    if (auto fb = doc.find("fallback"); fb != doc.end()) {
      if (*fb == "model") {
        scenario.fallback_to_model = true;
      } else if (*fb != "error") {
        return Invalid("scenario.fallback", "must be \"model\" or \"error\"");
      }
    }
  }
  if (!responses->is_array()) {
    return Invalid("scenario", "`responses` must be an array");
  }
  for (std::size_t i = 0; i < responses->size(); ++i) {
    auto response =
        ParseResponse((*responses)[i], static_cast<int>(i), base_dir);
    if (!response.ok()) return response.status();
    scenario.responses.push_back(*std::move(response));
  }
  return scenario;
}

const Json* LastUserMessage(const Json& request) {
  if (!request.is_object()) return nullptr;
  auto messages = request.find("messages");
  if (messages == request.end() || !messages->is_array() ||
      messages->empty()) {
    return nullptr;
  }
  const Json& last = messages->back();
  if (common::GetString(last, "role") != "user") return nullptr;
  return &last;
}

std::string MessageText(const Json& message) {
  if (!message.is_object()) return "";
  auto content = message.find("content");
  if (content == message.end()) return "";
  if (content->is_string()) return content->get<std::string>();
  std::string text;
  if (!content->is_array()) return text;
  for (const Json& block : *content) {
    if (common::GetString(block, "type") != "text") continue;
    if (!text.empty()) text.push_back('\n');
    text.append(common::GetString(block, "text"));
  }
  return text;
}

std::vector<std::string> ToolResultIds(const Json& message) {
  std::vector<std::string> ids;
  if (!message.is_object()) return ids;
  auto content = message.find("content");
  if (content == message.end() || !content->is_array()) return ids;
  for (const Json& block : *content) {
    if (common::GetString(block, "type") != "tool_result") continue;
    ids.emplace_back(common::GetString(block, "tool_use_id"));
  }
  return ids;
}

int TurnOf(const Json& request) {
  int turn = 1;
  if (!request.is_object()) return turn;
  auto messages = request.find("messages");
  if (messages == request.end() || !messages->is_array()) return turn;
  for (const Json& message : *messages) {
    if (common::GetString(message, "role") == "assistant") ++turn;
  }
  return turn;
}

bool MatchesResolved(const MatchSpec& match, const Json& request, bool stream,
                     const std::string& resolved_tool_result_id) {
  if (match.stream && *match.stream != stream) return false;
  if (match.turn && *match.turn != TurnOf(request)) return false;
  if (match.model && *match.model != common::GetString(request, "model")) {
    return false;
  }
  const Json* last_user = LastUserMessage(request);
  if (match.last_user_text_contains) {
    if (last_user == nullptr ||
        !absl::StrContains(MessageText(*last_user),
                           *match.last_user_text_contains)) {
      return false;
    }
  }
  if (match.last_user_has_tool_result_for) {
    if (last_user == nullptr || resolved_tool_result_id.empty()) return false;
    std::vector<std::string> ids = ToolResultIds(*last_user);
    if (std::find(ids.begin(), ids.end(), resolved_tool_result_id) ==
        ids.end()) {
      return false;
    }
  }
  return true;
}

}  // namespace toolmesh::fakeapi
