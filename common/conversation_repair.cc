#include "common/conversation_repair.h"

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace toolmesh::common {
namespace {

// Debian's Abseil keeps its own string_view type; StrCat wants that one.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

constexpr std::string_view kMissingResultText =
    "toolmesh: no result was recorded for this tool call; it did not "
    "complete.";
constexpr std::string_view kRetriedText =
    "toolmesh: the stream was interrupted and retried; this tool call did not "
    "complete.";

bool IsServerResult(std::string_view type) {
  return type != "tool_result" && absl::EndsWith(Sv(type), "_tool_result");
}

bool IsThinking(std::string_view type) {
  return type == "thinking" || type == "redacted_thinking";
}

std::string_view TypeOf(const Json& block) { return GetString(block, "type"); }

Json ErrorResult(std::string_view id, std::string_view text) {
  Json result = Json::object();
  result["type"] = "tool_result";
  result["tool_use_id"] = std::string(id);
  result["content"] = std::string(text);
  result["is_error"] = true;
  return result;
}

std::size_t CountItems(const Json& body) {
  std::size_t n = 0;
  if (!body.is_object()) return n;
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array()) return n;
  for (const Json& message : *it) {
    ++n;
    if (!message.is_object()) continue;
    auto content = message.find("content");
    if (content != message.end() && content->is_array()) n += content->size();
  }
  return n;
}

class Repairer {
 public:
  Repairer(const Json& body, const ValidateOptions& options)
      : body_(body), options_(options) {}

  RepairResult Run() {
    const std::size_t budget = 64 + 8 * CountItems(body_);
    for (std::size_t round = 0;; ++round) {
      std::vector<Violation> violations = ValidateRequest(body_, options_);
      if (violations.empty()) return Result(absl::OkStatus());
      if (round >= budget) {
        return Result(absl::FailedPreconditionError(
            absl::StrCat("repair did not converge; still: ",
                         violations.front().message)));
      }
      absl::Status status = Fix(violations.front());
      if (!status.ok()) return Result(std::move(status));
    }
  }

 private:
  RepairResult Result(absl::Status status) {
    return RepairResult{std::move(body_), std::move(actions_),
                        std::move(status)};
  }

  Json& Messages() { return body_["messages"]; }
  int Size() { return static_cast<int>(Messages().size()); }
  std::string_view Role(int i) { return GetString(Messages()[i], "role"); }

  // Only called in the conversation phase, where every message is an object
  // with a valid role and content.
  std::pair<int, int> TurnRange(int i) {
    const std::string role(Role(i));
    int a = i;
    while (a > 0 && Role(a - 1) == role) --a;
    int b = i;
    while (b + 1 < Size() && Role(b + 1) == role) ++b;
    return {a, b};
  }

  // The content of message `i` as an array (a string becomes a text block).
  Json& ContentArray(int i) {
    Json& content = Messages()[i]["content"];
    if (content.is_string()) {
      std::string text = content.get<std::string>();
      content = Json::array();
      if (!text.empty()) {
        Json block = Json::object();
        block["type"] = "text";
        block["text"] = std::move(text);
        content.push_back(std::move(block));
      }
    }
    return content;
  }

  void Merge(int a, int b) {
    Json merged = Json::array();
    for (int i = a; i <= b; ++i) {
      for (Json& block : ContentArray(i)) merged.push_back(std::move(block));
    }
    const std::string role(Role(a));
    Messages()[a]["content"] = std::move(merged);
    for (int i = b; i > a; --i) Messages().erase(static_cast<std::size_t>(i));
    actions_.push_back(absl::StrCat("messages.", a, "-", b, ": merged ",
                                    b - a + 1, " consecutive ", role,
                                    " messages into one (the API merges them "
                                    "anyway)"));
  }

  // The block a violation names, or null when the path does not resolve.
  Json* BlockAt(const Violation& v) {
    if (v.message_index < 0 || v.block_index < 0) return nullptr;
    Json& messages = Messages();
    if (!messages.is_array() ||
        static_cast<std::size_t>(v.message_index) >= messages.size()) {
      return nullptr;
    }
    Json& message = messages[static_cast<std::size_t>(v.message_index)];
    if (!message.is_object()) return nullptr;
    auto content = message.find("content");
    if (content == message.end() || !content->is_array() ||
        static_cast<std::size_t>(v.block_index) >= content->size()) {
      return nullptr;
    }
    return &(*content)[static_cast<std::size_t>(v.block_index)];
  }

  absl::Status DropBlock(const Violation& v, std::string_view why) {
    if (BlockAt(v) == nullptr) return Unfixable(v);
    Json& content = Messages()[static_cast<std::size_t>(v.message_index)]["content"];
    std::string type(TypeOf(content[static_cast<std::size_t>(v.block_index)]));
    content.erase(static_cast<std::size_t>(v.block_index));
    actions_.push_back(absl::StrCat(
        "messages.", v.message_index, ".content.", v.block_index,
        ": dropped the ", type.empty() ? "malformed" : absl::StrCat("`", type, "`"),
        " block (", Sv(why), ")"));
    return absl::OkStatus();
  }

  static absl::Status Unfixable(const Violation& v) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot be repaired: ",
                     v.message.empty() ? std::string(RuleName(v.rule))
                                       : v.message));
  }

  absl::Status Fix(const Violation& v) {
    switch (v.rule) {
      case Rule::kStructure:
        if (v.block_index < 0) return Unfixable(v);
        return DropBlock(v, "it does not fit the block schema");
      case Rule::kFieldRequired:
        if (v.block_index < 0) return Unfixable(v);
        if (absl::EndsWith(Sv(v.path), ".input")) return FixInput(v);
        return DropBlock(v, "a required field is missing");
      case Rule::kToolInputNotObject:
        return FixInput(v);
      case Rule::kUnknownBlockTag:
        return DropBlock(v, "a raw stream delta is not a content block");
      case Rule::kEmptyText:
        return DropBlock(v, "text blocks must be non-empty");
      case Rule::kEmptyContent:
        return DropMessage(v);
      case Rule::kToolUseWithoutResult:
        return FixMissingResults(v);
      case Rule::kUnexpectedToolResult:
        return DropBlock(v, "it answers no tool_use in the previous assistant "
                            "message");
      case Rule::kThinkingNotFirst:
        return FixThinkingFirst(v);
      case Rule::kServerToolWithoutResult:
        return FixUnpairedServerCall(v);
      case Rule::kServerResultWithoutCall:
        return DropBlock(v, "no server tool call before it names its id");
      case Rule::kServerToolNotProvided:
        return DropBlock(v, "its result never arrived and its tool is no "
                            "longer in `tools`, so the API cannot run it");
    }
    return Unfixable(v);
  }

  absl::Status DropMessage(const Violation& v) {
    if (v.message_index < 0 || v.message_index >= Size()) return Unfixable(v);
    Messages().erase(static_cast<std::size_t>(v.message_index));
    actions_.push_back(absl::StrCat("messages.", v.message_index,
                                    ": dropped the message (empty content)"));
    return absl::OkStatus();
  }

  absl::Status FixInput(const Violation& v) {
    Json* block = BlockAt(v);
    if (block == nullptr || !block->is_object()) return Unfixable(v);
    Json& input = (*block)["input"];
    if (input.is_string()) {
      absl::StatusOr<Json> parsed = ParseJson(input.get<std::string>());
      if (parsed.ok() && parsed->is_object()) {
        input = std::move(*parsed);
        actions_.push_back(absl::StrCat(
            v.path, ": parsed the string input into a JSON object"));
        return absl::OkStatus();
      }
    }
    const std::string was = input.is_null() ? "missing" : input.type_name();
    input = Json::object();
    actions_.push_back(
        absl::StrCat(v.path, ": replaced the ", was, " input with {}"));
    return absl::OkStatus();
  }

  // d.1/d.3/d.4: decides between a merged-step split, moving client tool_use
  // blocks last, and fixing the next user message.
  absl::Status FixMissingResults(const Violation& v) {
    if (v.message_index < 0 || v.message_index >= Size()) return Unfixable(v);
    auto [a, b] = TurnRange(v.message_index);
    if (a != b) {
      Merge(a, b);
      return absl::OkStatus();
    }
    if (a + 1 >= Size()) return Unfixable(v);
    Json& blocks = ContentArray(a);
    const std::size_t n = blocks.size();
    std::size_t p = 0;
    while (p < n && TypeOf(blocks[p]) != "tool_use") ++p;
    std::size_t q = p;
    while (q < n && TypeOf(blocks[q]) == "tool_use") ++q;
    if (p < n && q < n &&
        (IsThinking(TypeOf(blocks[q])) || TypeOf(blocks[q]) == "text")) {
      return SplitMergedStep(a, q);
    }
    std::size_t trailing = n;
    while (trailing > 0 && TypeOf(blocks[trailing - 1]) == "tool_use") {
      --trailing;
    }
    if (p < trailing) return MoveToolUsesLast(a);
    return FixUserMessage(a, v);
  }

  absl::Status SplitMergedStep(int a, std::size_t q) {
    auto [c, d] = TurnRange(a + 1);
    if (c != d) {
      Merge(c, d);
      return absl::OkStatus();
    }
    Json& blocks = Messages()[a]["content"];
    Json first = Json::array();
    Json second = Json::array();
    std::vector<std::string> ids;
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      if (i < q && TypeOf(blocks[i]) == "tool_use") {
        ids.emplace_back(GetString(blocks[i], "id"));
      }
      (i < q ? first : second).push_back(std::move(blocks[i]));
    }
    const absl::flat_hash_set<std::string> id_set(ids.begin(), ids.end());
    Json answers = Json::array();
    Json remaining = Json::array();
    absl::flat_hash_set<std::string> found;
    for (Json& block : ContentArray(a + 1)) {
      std::string id(GetString(block, "tool_use_id"));
      if (TypeOf(block) == "tool_result" && id_set.contains(id)) {
        found.insert(id);
        answers.push_back(std::move(block));
      } else {
        remaining.push_back(std::move(block));
      }
    }
    std::vector<std::string> synthesised;
    for (const std::string& id : ids) {
      if (found.contains(id)) continue;
      answers.push_back(ErrorResult(id, kRetriedText));
      synthesised.push_back(id);
    }
    Json& messages = Messages();
    messages[a]["content"] = std::move(first);
    const bool remaining_empty = remaining.empty();
    messages[a + 1]["content"] = std::move(remaining);
    Json user = Json::object();
    user["role"] = "user";
    user["content"] = std::move(answers);
    Json assistant = Json::object();
    assistant["role"] = "assistant";
    assistant["content"] = std::move(second);
    messages.insert(messages.begin() + a + 1, std::move(user));
    messages.insert(messages.begin() + a + 2, std::move(assistant));
    actions_.push_back(absl::StrCat(
        "messages.", a, ": split an assistant message that holds two "
        "generations (a retried stream appended to its step) before block ",
        q, ": the first part stays at messages.", a,
        ", the rest becomes messages.", a + 2, ", and messages.", a + 1,
        " answers ", absl::StrJoin(ids, ", ")));
    if (!synthesised.empty()) {
      actions_.push_back(absl::StrCat(
          "messages.", a + 1, ": added error tool_results for ",
          absl::StrJoin(synthesised, ", "),
          " (the stream was interrupted and retried)"));
    }
    if (remaining_empty) {
      messages.erase(static_cast<std::size_t>(a + 3));
      actions_.push_back(absl::StrCat(
          "messages.", a + 3, ": dropped the user message its tool_results "
          "were moved out of (nothing else was left in it)"));
    }
    return absl::OkStatus();
  }

  absl::Status MoveToolUsesLast(int a) {
    Json& blocks = Messages()[a]["content"];
    Json others = Json::array();
    Json tool_uses = Json::array();
    std::vector<std::string> ids;
    for (Json& block : blocks) {
      if (TypeOf(block) == "tool_use") {
        ids.emplace_back(GetString(block, "id"));
        tool_uses.push_back(std::move(block));
      } else {
        others.push_back(std::move(block));
      }
    }
    for (Json& block : tool_uses) others.push_back(std::move(block));
    blocks = std::move(others);
    actions_.push_back(absl::StrCat(
        "messages.", a, ": moved client tool_use blocks ",
        absl::StrJoin(ids, ", "),
        " to the end of the message (client tool_use blocks must come last)"));
    return absl::OkStatus();
  }

  absl::Status FixUserMessage(int a, const Violation& v) {
    auto [c, d] = TurnRange(a + 1);
    if (c != d) {
      Merge(c, d);
      return absl::OkStatus();
    }
    std::vector<std::string> ids;
    for (const Json& block : Messages()[a]["content"]) {
      if (TypeOf(block) == "tool_use") ids.emplace_back(GetString(block, "id"));
    }
    Json& content = ContentArray(a + 1);
    Json results = Json::array();
    Json others = Json::array();
    absl::flat_hash_set<std::string> present;
    bool reordered = false;
    for (Json& block : content) {
      if (TypeOf(block) == "tool_result") {
        if (!others.empty()) reordered = true;
        present.insert(std::string(GetString(block, "tool_use_id")));
        results.push_back(std::move(block));
      } else {
        others.push_back(std::move(block));
      }
    }
    std::vector<std::string> synthesised;
    for (const std::string& id : ids) {
      if (present.contains(id)) continue;
      present.insert(id);
      results.push_back(ErrorResult(id, kMissingResultText));
      synthesised.push_back(id);
    }
    if (!reordered && synthesised.empty()) return Unfixable(v);
    for (Json& block : others) results.push_back(std::move(block));
    content = std::move(results);
    if (reordered) {
      actions_.push_back(absl::StrCat(
          "messages.", a + 1,
          ": moved the tool_result blocks before the other content "
          "(tool_results must come first)"));
    }
    if (!synthesised.empty()) {
      actions_.push_back(absl::StrCat(
          "messages.", a + 1, ": added error tool_results for ",
          absl::StrJoin(synthesised, ", "), " (no result was recorded)"));
    }
    return absl::OkStatus();
  }

  absl::Status FixThinkingFirst(const Violation& v) {
    if (v.message_index < 0 || v.message_index >= Size()) return Unfixable(v);
    auto [a, b] = TurnRange(v.message_index);
    if (a != b) {
      Merge(a, b);
      return absl::OkStatus();
    }
    Json& blocks = ContentArray(a);
    std::size_t k = 0;
    while (k < blocks.size() && !IsThinking(TypeOf(blocks[k]))) ++k;
    if (k == 0 || k >= blocks.size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot be repaired: ", v.message,
          " (messages.", a, " holds no thinking block to move first, and "
          "signed thinking cannot be invented)"));
    }
    Json thinking = std::move(blocks[k]);
    const std::string type(TypeOf(thinking));
    blocks.erase(k);
    blocks.insert(blocks.begin(), std::move(thinking));
    actions_.push_back(absl::StrCat("messages.", a, ".content.", k,
                                    ": moved the `", type,
                                    "` block to the front (thinking first)"));
    return absl::OkStatus();
  }

  // Whether messages [e, f] hold nothing but client `tool_use` blocks whose
  // `caller.tool_id` is `id`: a round of programmatic tool calling made by
  // the code of server call `id` (see request_validator.h).
  bool IsProgrammaticRound(int e, int f, std::string_view id) {
    if (id.empty()) return false;
    bool any = false;
    for (int i = e; i <= f; ++i) {
      const Json& content = Messages()[i]["content"];
      if (!content.is_array()) return false;
      for (const Json& block : content) {
        if (TypeOf(block) != "tool_use") return false;
        auto caller = block.find("caller");
        if (caller == block.end() || GetString(*caller, "tool_id") != id) {
          return false;
        }
        any = true;
      }
    }
    return any;
  }

  absl::Status FixUnpairedServerCall(const Violation& v) {
    Json* call = BlockAt(v);
    if (call == nullptr) return Unfixable(v);
    const std::string id(GetString(*call, "id"));
    const std::string name(GetString(*call, "name"));
    const int n = v.message_index;
    const int m = v.block_index;
    // The late result, if any, sits in the next assistant turn, or (for a
    // code execution call whose code called client tools: programmatic tool
    // calling) in the first one after the rounds of those calls.
    auto [a, b] = TurnRange(n);
    static_cast<void>(a);
    int next_user = b + 1;
    while (next_user < Size()) {
      auto [c, d] = TurnRange(next_user);
      static_cast<void>(c);
      if (d + 1 >= Size()) break;
      auto [e, f] = TurnRange(d + 1);
      for (int i = e; i <= f; ++i) {
        Json& content = Messages()[i]["content"];
        if (!content.is_array()) continue;
        for (std::size_t j = 0; j < content.size(); ++j) {
          if (!IsServerResult(TypeOf(content[j])) ||
              GetString(content[j], "tool_use_id") != id) {
            continue;
          }
          Json result = std::move(content[j]);
          const std::string type(TypeOf(result));
          content.erase(j);
          Json& home = Messages()[n]["content"];
          home.insert(home.begin() + m + 1, std::move(result));
          actions_.push_back(absl::StrCat(
              "messages.", i, ".content.", j, ": moved the late `", type,
              "` for ", id, " back into messages.", n,
              ", right after its call (content.", m, ")"));
          return absl::OkStatus();
        }
      }
      if (!IsProgrammaticRound(e, f, id)) break;
      next_user = f + 1;
    }
    return DropBlock(
        v, absl::StrCat("the `", name, "` call ", id,
                        " never got its result and the history continues past "
                        "it, so the API can no longer run it; a server call "
                        "without a result has no effect on client state"));
  }

  Json body_;
  const ValidateOptions& options_;
  std::vector<std::string> actions_;
};

}  // namespace

RepairResult Repair(const Json& body, const RepairOptions& options) {
  return Repairer(body, options.validate).Run();
}

RepairResult Normalize(const Json& body) {
  RepairOptions options;
  options.validate.accept_late_server_results = false;
  return Repair(body, options);
}

}  // namespace toolmesh::common
