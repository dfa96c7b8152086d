#include "common/request_validator.h"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace toolmesh::common {
namespace {

// The tags the API lists for a content block it does not recognise.
// Debian's Abseil keeps its own string_view type; StrCat wants that one.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

constexpr absl::string_view kExpectedTags =
    "'text', 'image', 'document', 'search_result', 'thinking', "
    "'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', "
    "'web_search_tool_result', 'web_fetch_tool_result', "
    "'code_execution_tool_result', 'bash_code_execution_tool_result', "
    "'text_editor_code_execution_tool_result', 'tool_search_tool_result', "
    "'mcp_tool_use', 'mcp_tool_result', 'container_upload'";

bool IsServerCall(std::string_view type) {
  return type == "server_tool_use" || type == "mcp_tool_use";
}

bool IsServerResult(std::string_view type) {
  return type != "tool_result" && absl::EndsWith(Sv(type), "_tool_result");
}

bool IsDeltaTag(std::string_view type) {
  return type == "input_json_delta" || type == "text_delta" ||
         type == "thinking_delta" || type == "signature_delta" ||
         type == "citations_delta" || type == "compaction_delta";
}

bool IsThinking(std::string_view type) {
  return type == "thinking" || type == "redacted_thinking";
}

std::string MessagePath(int msg) { return absl::StrCat("messages.", msg); }

std::string BlockPath(int msg, int block) {
  if (block < 0) return absl::StrCat("messages.", msg, ".content");
  return absl::StrCat("messages.", msg, ".content.", block);
}

// One content block of an included message. `index` is -1 for a message
// whose content is a plain string (it counts as one text block).
struct Block {
  int msg = 0;
  int index = -1;
  std::string type;
  std::string id;    // tool_use id, or tool_use_id of a result block
  std::string name;  // tool name of a call
  // For a client `tool_use` made by code (programmatic tool calling): the
  // `caller.tool_id` of the server call whose code made it.
  std::string caller_id;
};

// Consecutive messages with the same role (d.8).
struct Turn {
  bool assistant = false;
  int first_msg = 0;
  std::vector<Block> blocks;
};

class Validator {
 public:
  Validator(const Json& body, const ValidateOptions& options)
      : body_(body), options_(options) {}

  std::vector<Violation> Run() {
    if (!body_.is_object()) {
      Add(0, -1, -1, Rule::kStructure, "",
          "Input should be a valid dictionary");
      return Finish();
    }
    auto it = body_.find("messages");
    if (it == body_.end()) {
      Add(0, -1, -1, Rule::kFieldRequired, "messages", "Field required");
      return Finish();
    }
    if (!it->is_array()) {
      Add(0, -1, -1, Rule::kStructure, "messages",
          "Input should be a valid list");
      return Finish();
    }
    const Json& messages = *it;
    if (messages.empty()) {
      Add(1, -1, -1, Rule::kStructure, "messages",
          "at least one message is required");
      return Finish();
    }
    for (std::size_t m = 0; m < messages.size(); ++m) {
      CheckMessage(static_cast<int>(m), messages[m],
                   m + 1 == messages.size());
    }
    CheckToolUseAnswered();
    CheckToolResultsExpected();
    CheckThinkingFirst();
    CheckServerPairing();
    return Finish();
  }

 private:
  struct Pending {
    int phase;
    int msg;
    int block;
    std::size_t seq;
    Violation violation;
  };

  void Add(int phase, int msg, int block, Rule rule, std::string path,
           std::string_view text) {
    Violation v;
    v.message = path.empty() ? std::string(text) : absl::StrCat(path, ": ", Sv(text));
    v.path = std::move(path);
    v.rule = rule;
    v.message_index = msg;
    v.block_index = block;
    pending_.push_back(Pending{phase, msg, block, pending_.size(), std::move(v)});
  }

  std::vector<Violation> Finish() {
    std::stable_sort(pending_.begin(), pending_.end(),
                     [](const Pending& a, const Pending& b) {
                       if (a.phase != b.phase) return a.phase < b.phase;
                       if (a.msg != b.msg) return a.msg < b.msg;
                       if (a.block != b.block) return a.block < b.block;
                       return a.seq < b.seq;
                     });
    std::vector<Violation> out;
    out.reserve(pending_.size());
    for (auto& p : pending_) out.push_back(std::move(p.violation));
    return out;
  }

  // Reports a schema error unless block[field] is a string; returns it.
  std::optional<std::string> RequireString(int msg, int b, const Json& block,
                                           std::string_view type,
                                           std::string_view field) {
    auto it = block.find(field);
    std::string path =
        absl::StrCat(BlockPath(msg, b), ".", Sv(type), ".", Sv(field));
    if (it == block.end()) {
      Add(0, msg, b, Rule::kFieldRequired, std::move(path), "Field required");
      return std::nullopt;
    }
    if (!it->is_string()) {
      Add(0, msg, b, Rule::kStructure, std::move(path),
          "Input should be a valid string");
      return std::nullopt;
    }
    return it->get<std::string>();
  }

  void CheckMessage(int m, const Json& message, bool is_last) {
    if (!message.is_object()) {
      Add(0, m, -1, Rule::kStructure, MessagePath(m),
          "Input should be a valid dictionary");
      return;
    }
    bool ok = true;
    bool assistant = false;
    auto role = message.find("role");
    if (role == message.end()) {
      Add(0, m, -1, Rule::kFieldRequired, MessagePath(m) + ".role",
          "Field required");
      ok = false;
    } else if (!role->is_string() ||
               (*role != "user" && *role != "assistant")) {
      Add(0, m, -1, Rule::kStructure, MessagePath(m) + ".role",
          "Input should be 'user' or 'assistant'");
      ok = false;
    } else {
      assistant = *role == "assistant";
    }
    auto content = message.find("content");
    if (content == message.end()) {
      Add(0, m, -1, Rule::kFieldRequired, MessagePath(m) + ".content",
          "Field required");
      ok = false;
    } else if (!content->is_string() && !content->is_array()) {
      Add(0, m, -1, Rule::kStructure, MessagePath(m) + ".content",
          "Input should be a valid list");
      ok = false;
    }
    if (!ok) return;

    const bool empty = content->is_string()
                           ? content->get_ref<const std::string&>().empty()
                           : content->empty();
    if (empty && !(is_last && assistant)) {
      Add(1, m, -1, Rule::kEmptyContent, MessagePath(m),
          "all messages must have non-empty content except for the optional "
          "final assistant message");
    }

    std::vector<Block> blocks;
    if (content->is_string()) {
      if (!empty) blocks.push_back(Block{m, -1, "text", "", "", ""});
    } else {
      for (std::size_t b = 0; b < content->size(); ++b) {
        if (auto block = CheckBlock(m, static_cast<int>(b), (*content)[b])) {
          blocks.push_back(std::move(*block));
        }
      }
    }
    if (turns_.empty() || turns_.back().assistant != assistant) {
      turns_.push_back(Turn{assistant, m, {}});
    }
    Turn& turn = turns_.back();
    for (auto& block : blocks) turn.blocks.push_back(std::move(block));
  }

  // Schema checks for one block; returns it when the conversation rules can
  // use it.
  std::optional<Block> CheckBlock(int m, int b, const Json& block) {
    const std::string path = BlockPath(m, b);
    if (!block.is_object()) {
      Add(0, m, b, Rule::kStructure, path, "Input should be a valid dictionary");
      return std::nullopt;
    }
    auto type_it = block.find("type");
    if (type_it == block.end()) {
      Add(0, m, b, Rule::kFieldRequired, path + ".type", "Field required");
      return std::nullopt;
    }
    if (!type_it->is_string()) {
      Add(0, m, b, Rule::kStructure, path + ".type",
          "Input should be a valid string");
      return std::nullopt;
    }
    Block out{m, b, type_it->get<std::string>(), "", "", ""};
    const std::string& type = out.type;
    if (IsDeltaTag(type)) {
      Add(0, m, b, Rule::kUnknownBlockTag, path,
          absl::StrCat("Input tag '", type,
                       "' does not match any of the expected tags: ",
                       kExpectedTags));
      return std::nullopt;
    }
    if (type == "text") {
      auto text = RequireString(m, b, block, type, "text");
      if (!text) return std::nullopt;
      if (text->empty()) {
        Add(1, m, b, Rule::kEmptyText, path,
            "text content blocks must be non-empty");
      }
    } else if (type == "thinking") {
      bool ok = RequireString(m, b, block, type, "thinking").has_value();
      ok = RequireString(m, b, block, type, "signature").has_value() && ok;
      if (!ok) return std::nullopt;
    } else if (type == "redacted_thinking") {
      if (!RequireString(m, b, block, type, "data")) return std::nullopt;
    } else if (type == "tool_use" || IsServerCall(type)) {
      auto id = RequireString(m, b, block, type, "id");
      auto name = RequireString(m, b, block, type, "name");
      auto input = block.find("input");
      if (input == block.end()) {
        Add(0, m, b, Rule::kFieldRequired, absl::StrCat(path, ".", type, ".input"),
            "Field required");
      } else if (!input->is_object()) {
        Add(0, m, b, Rule::kToolInputNotObject,
            absl::StrCat(path, ".", type, ".input"),
            "Input should be an object");
      }
      if (!id || !name) return std::nullopt;
      out.id = std::move(*id);
      out.name = std::move(*name);
      auto caller = block.find("caller");
      if (type == "tool_use" && caller != block.end()) {
        out.caller_id = std::string(GetString(*caller, "tool_id"));
      }
    } else if (type == "tool_result" || IsServerResult(type)) {
      auto id = RequireString(m, b, block, type, "tool_use_id");
      if (!id) return std::nullopt;
      out.id = std::move(*id);
    }
    return out;
  }

  // d.1, d.3, d.4.
  void CheckToolUseAnswered() {
    for (std::size_t t = 0; t + 1 < turns_.size(); ++t) {
      const Turn& turn = turns_[t];
      if (!turn.assistant) continue;
      absl::flat_hash_set<std::string> answered;
      for (const Block& block : turns_[t + 1].blocks) {
        if (block.type != "tool_result") break;
        answered.insert(block.id);
      }
      std::size_t trailing = turn.blocks.size();
      while (trailing > 0 && turn.blocks[trailing - 1].type == "tool_use") {
        --trailing;
      }
      std::vector<std::string> missing;
      int first_msg = -1;
      for (std::size_t i = 0; i < turn.blocks.size(); ++i) {
        const Block& block = turn.blocks[i];
        if (block.type != "tool_use") continue;
        if (i >= trailing && answered.contains(block.id)) continue;
        if (missing.empty()) first_msg = block.msg;
        missing.push_back(block.id);
      }
      if (missing.empty()) continue;
      Add(1, first_msg, -1, Rule::kToolUseWithoutResult, MessagePath(first_msg),
          absl::StrCat("`tool_use` ids were found without `tool_result` blocks "
                       "immediately after: ",
                       absl::StrJoin(missing, ", "),
                       ". Each `tool_use` block must have a corresponding "
                       "`tool_result` block in the next message."));
    }
  }

  // d.2.
  void CheckToolResultsExpected() {
    for (std::size_t t = 0; t < turns_.size(); ++t) {
      if (turns_[t].assistant) continue;
      absl::flat_hash_set<std::string> client_ids;
      if (t > 0) {
        for (const Block& block : turns_[t - 1].blocks) {
          if (block.type == "tool_use") client_ids.insert(block.id);
        }
      }
      for (const Block& block : turns_[t].blocks) {
        if (block.type != "tool_result" || client_ids.contains(block.id)) {
          continue;
        }
        Add(1, block.msg, block.index, Rule::kUnexpectedToolResult,
            BlockPath(block.msg, block.index),
            absl::StrCat("unexpected `tool_use_id` found in `tool_result` "
                         "blocks: ",
                         block.id,
                         ". Each `tool_result` block must have a corresponding "
                         "`tool_use` block in the previous message."));
      }
    }
  }

  bool ThinkingEnabled() const {
    auto it = body_.find("thinking");
    if (it == body_.end() || !it->is_object()) return false;
    std::string_view type = GetString(*it, "type");
    return type == "enabled" || type == "adaptive";
  }

  // d.5.
  void CheckThinkingFirst() {
    if (!ThinkingEnabled()) return;
    std::optional<std::size_t> last_results;
    for (std::size_t t = 0; t < turns_.size(); ++t) {
      if (turns_[t].assistant) continue;
      for (const Block& block : turns_[t].blocks) {
        if (block.type == "tool_result") {
          last_results = t;
          break;
        }
      }
    }
    if (!last_results || *last_results == 0) return;
    if (*last_results + 2 < turns_.size()) return;  // a later round closed it
    const Turn& turn = turns_[*last_results - 1];
    const bool has_tool_use =
        std::any_of(turn.blocks.begin(), turn.blocks.end(),
                    [](const Block& b) { return b.type == "tool_use"; });
    if (!has_tool_use || turn.blocks.empty()) return;
    const Block& first = turn.blocks.front();
    if (IsThinking(first.type)) return;
    Add(1, turn.first_msg, 0, Rule::kThinkingNotFirst,
        absl::StrCat("messages.", turn.first_msg, ".content.0.type"),
        absl::StrCat(
            "Expected `thinking` or `redacted_thinking`, but found `",
            first.type,
            "`. When `thinking` is enabled, a final `assistant` message must "
            "start with a thinking block (preceeding the lastmost set of "
            "`tool_use` and `tool_result` blocks). We recommend you include "
            "thinking blocks from previous turns. To avoid this requirement, "
            "disable `thinking`."));
  }

  bool ToolProvided(std::string_view name) const {
    if (name == "bash_code_execution" || name == "text_editor_code_execution") {
      name = "code_execution";
    }
    auto it = body_.find("tools");
    if (it == body_.end() || !it->is_array()) return false;
    for (const Json& tool : *it) {
      if (GetString(tool, "name") == name) return true;
    }
    return false;
  }

  // only_results_after[t]: whether every user turn after `t` holds only
  // `tool_result` blocks. One pass from the end, so linear in the request.
  std::vector<bool> OnlyToolResultsAfter() const {
    std::vector<bool> only(turns_.size(), true);
    bool ok = true;
    for (std::size_t u = turns_.size(); u-- > 0;) {
      only[u] = ok;
      if (turns_[u].assistant) continue;
      for (const Block& block : turns_[u].blocks) {
        if (block.type != "tool_result") ok = false;
      }
    }
    return only;
  }

  // Whether assistant turn `t` is a round of programmatic tool calling for
  // server call `id`: it holds nothing but client `tool_use` blocks whose
  // `caller` is that call (FX-21). The API sends such a response while the
  // call's code runs; the call's result comes in a later response.
  bool IsProgrammaticRound(std::size_t t, const std::string& id) const {
    if (id.empty() || t >= turns_.size() || !turns_[t].assistant ||
        turns_[t].blocks.empty()) {
      return false;
    }
    for (const Block& block : turns_[t].blocks) {
      if (block.type != "tool_use" || block.caller_id != id) return false;
    }
    return true;
  }

  // The assistant turn in which the API answers unpaired server call `id` of
  // assistant turn `t`: the next one, after any programmatic rounds of that
  // call. turns_.size() or more when no such turn exists yet.
  std::size_t ResolutionTurn(std::size_t t, const std::string& id) const {
    std::size_t r = t + 2;  // turns alternate roles
    while (IsProgrammaticRound(r, id)) r += 2;
    return r;
  }

  // The ids answered by the leading run of result blocks of turn `t`.
  absl::flat_hash_set<std::string> LeadingResults(std::size_t t) const {
    absl::flat_hash_set<std::string> ids;
    if (t >= turns_.size()) return ids;
    for (const Block& block : turns_[t].blocks) {
      if (!IsServerResult(block.type)) break;
      ids.insert(block.id);
    }
    return ids;
  }

  // d.6.
  void CheckServerPairing() {
    // Per assistant turn, the unpaired calls whose late result may open it.
    std::vector<absl::flat_hash_set<std::string>> late_expected(turns_.size());
    const std::vector<bool> only_results_after = OnlyToolResultsAfter();
    std::vector<absl::flat_hash_set<std::string>> leading_results(
        turns_.size());
    for (std::size_t t = 0; t < turns_.size(); ++t) {
      if (turns_[t].assistant) leading_results[t] = LeadingResults(t);
    }
    for (std::size_t t = 0; t < turns_.size(); ++t) {
      const Turn& turn = turns_[t];
      if (!turn.assistant) continue;
      const bool later_ok = only_results_after[t];
      // paired[i]: a result block with call i's id follows it in the turn.
      std::vector<bool> paired(turn.blocks.size(), false);
      {
        absl::flat_hash_set<std::string> results_after;
        for (std::size_t i = turn.blocks.size(); i-- > 0;) {
          const Block& block = turn.blocks[i];
          if (IsServerCall(block.type)) {
            paired[i] = results_after.contains(block.id);
          } else if (IsServerResult(block.type)) {
            results_after.insert(block.id);
          }
        }
      }
      for (std::size_t i = 0; i < turn.blocks.size(); ++i) {
        const Block& call = turn.blocks[i];
        if (!IsServerCall(call.type) || paired[i]) continue;
        const std::size_t r = ResolutionTurn(t, call.id);
        const bool is_last_assistant = r >= turns_.size();
        if (!is_last_assistant) late_expected[r].insert(call.id);
        const bool late_found =
            !is_last_assistant && leading_results[r].contains(call.id);
        bool accepted = later_ok && (is_last_assistant ||
                                     (late_found &&
                                      options_.accept_late_server_results));
        const bool mcp = call.type == "mcp_tool_use";
        const std::string result_type =
            mcp ? "mcp_tool_result" : absl::StrCat(call.name, "_tool_result");
        const std::string text =
            mcp ? absl::StrCat("mcp_tool_use with id ", call.id,
                               " was found without a corresponding "
                               "mcp_tool_result block")
                : absl::StrCat("`", call.name, "` tool use with id `", call.id,
                               "` was found without a corresponding `",
                               result_type, "` block");
        const std::string path = BlockPath(call.msg, call.index);
        if (!accepted) {
          Add(1, call.msg, call.index, Rule::kServerToolWithoutResult, path,
              text);
        } else if (!late_found && !mcp &&
                   options_.require_server_tool_definitions &&
                   !ToolProvided(call.name)) {
          Add(1, call.msg, call.index, Rule::kServerToolNotProvided, path,
              absl::StrCat(text, ", but no `", call.name,
                           "` tool was provided"));
        }
      }
    }
    // Reverse orphans.
    for (std::size_t t = 0; t < turns_.size(); ++t) {
      const Turn& turn = turns_[t];
      absl::flat_hash_set<std::string> calls_before;
      bool leading = true;
      for (const Block& block : turn.blocks) {
        if (IsServerCall(block.type)) calls_before.insert(block.id);
        if (!IsServerResult(block.type)) {
          leading = false;
          continue;
        }
        if (calls_before.contains(block.id)) continue;
        if (turn.assistant && leading && late_expected[t].contains(block.id)) {
          continue;
        }
        const std::string_view call_type =
            block.type == "mcp_tool_result" ? "mcp_tool_use" : "server_tool_use";
        Add(1, block.msg, block.index, Rule::kServerResultWithoutCall,
            BlockPath(block.msg, block.index),
            absl::StrCat("unexpected `tool_use_id` found in `", block.type,
                         "` blocks: ", block.id, ". Each `", block.type,
                         "` block must have a corresponding `", Sv(call_type),
                         "` block before it."));
      }
    }
  }

  const Json& body_;
  const ValidateOptions& options_;
  std::vector<Turn> turns_;
  std::vector<Pending> pending_;
};

}  // namespace

std::string_view RuleName(Rule rule) {
  switch (rule) {
    case Rule::kStructure:
      return "structure";
    case Rule::kFieldRequired:
      return "field_required";
    case Rule::kToolInputNotObject:
      return "tool_input_not_object";
    case Rule::kUnknownBlockTag:
      return "unknown_block_tag";
    case Rule::kEmptyContent:
      return "empty_content";
    case Rule::kEmptyText:
      return "empty_text";
    case Rule::kToolUseWithoutResult:
      return "tool_use_without_result";
    case Rule::kUnexpectedToolResult:
      return "unexpected_tool_result";
    case Rule::kThinkingNotFirst:
      return "thinking_not_first";
    case Rule::kServerToolWithoutResult:
      return "server_tool_without_result";
    case Rule::kServerResultWithoutCall:
      return "server_result_without_call";
    case Rule::kServerToolNotProvided:
      return "server_tool_not_provided";
  }
  return "unknown";
}

std::vector<Violation> ValidateRequest(const Json& body,
                                       const ValidateOptions& options) {
  return Validator(body, options).Run();
}

Json ApiErrorBody(const Violation& violation, std::string_view request_id) {
  Json body = Json::object();
  body["type"] = "error";
  body["error"] = Json::object();
  body["error"]["type"] = "invalid_request_error";
  body["error"]["message"] = violation.message;
  body["request_id"] = std::string(request_id);
  return body;
}

}  // namespace toolmesh::common
