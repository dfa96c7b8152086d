#include "orchestrator/cli/offline_commands.h"

#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/conversation_repair.h"
#include "common/json.h"
#include "common/request_validator.h"
#include "common/stream_accumulator.h"
#include "common/tool_ledger.h"

namespace toolmesh::cli {
namespace {

using common::Json;

// Parsed `[--flag ...] FILE` arguments.
struct Args {
  std::vector<std::string> flags;
  std::string file;
};

absl::StatusOr<Args> ParseArgs(const std::vector<std::string>& args,
                               const std::vector<std::string_view>& known) {
  Args parsed;
  for (const std::string& arg : args) {
    if (arg.size() > 1 && arg[0] == '-') {
      bool ok = false;
      for (std::string_view flag : known) ok = ok || arg == flag;
      if (!ok) return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
      parsed.flags.push_back(arg);
      continue;
    }
    if (!parsed.file.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument ", arg, " (one FILE only)"));
    }
    parsed.file = arg;
  }
  if (parsed.file.empty()) return absl::InvalidArgumentError("missing FILE");
  return parsed;
}

bool HasFlag(const Args& args, std::string_view flag) {
  for (const std::string& f : args.flags) {
    if (f == flag) return true;
  }
  return false;
}

absl::StatusOr<std::string> ReadInput(const std::string& file) {
  std::ostringstream buffer;
  if (file == "-") {
    buffer << std::cin.rdbuf();
    return buffer.str();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", file));
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", file));
  return buffer.str();
}

std::string Dump(const Json& value, bool compact) {
  return compact ? common::DumpJson(value) : common::DumpJsonPretty(value);
}

// Prints each stream event and each ledger transition as one JSON line, and
// keeps the ledger in step with the stream: tool calls are announced at
// their block start, inputs completed at their block stop, server results
// matched when their block arrives, and a failed stream aborts the step.
class EventPrinter : public common::StreamObserver {
 public:
  explicit EventPrinter(std::ostream& out)
      : out_(out),
        ledger_([this](const common::ToolTransition& t) { PrintTransition(t); }) {}

  void OnMessageStart(const Json& message) override {
    Print({{"event", "message_start"}, {"message", message}});
  }
  void OnBlockStart(std::int64_t index, const Json& block) override {
    Print({{"event", "content_block_start"}, {"index", index}, {"block", block}});
    std::string_view id = common::GetString(block, "id");
    common::BlockKind kind = common::ClassifyBlock(block);
    // An unknown block type shaped like a tool call (id, name, input) is a
    // tool the API runs: tracked as a server tool.
    const bool unknown_call = kind == common::BlockKind::kOther &&
                              block.contains("name") && block.contains("input");
    if (!id.empty() && (kind == common::BlockKind::kClientToolCall ||
                        kind == common::BlockKind::kServerToolCall ||
                        unknown_call)) {
      ledger_.Announce(common::ToolUseId(std::string(id)),
                       common::GetString(block, "name"),
                       kind == common::BlockKind::kClientToolCall
                           ? common::ToolKind::kClient
                           : common::ToolKind::kServer,
                       kStep);
    } else if (kind == common::BlockKind::kServerToolResult) {
      ledger_.ObserveServerResult(block, kStep);
    }
  }
  void OnTextDelta(std::int64_t index, std::string_view text) override {
    Print({{"event", "text_delta"}, {"index", index}, {"text", text}});
  }
  void OnThinkingDelta(std::int64_t index, std::string_view thinking) override {
    Print({{"event", "thinking_delta"}, {"index", index}, {"thinking", thinking}});
  }
  void OnSignatureDelta(std::int64_t index, std::string_view signature) override {
    Print({{"event", "signature_delta"}, {"index", index}, {"signature", signature}});
  }
  void OnInputJsonDelta(std::int64_t index, std::string_view fragment) override {
    Print({{"event", "input_json_delta"}, {"index", index}, {"partial_json", fragment}});
  }
  void OnCitation(std::int64_t index, const Json& citation) override {
    Print({{"event", "citation"}, {"index", index}, {"citation", citation}});
  }
  void OnBlockStop(std::int64_t index, const Json& block,
                   const common::BlockInfo& info) override {
    Json line = {{"event", "content_block_stop"},
                 {"index", index},
                 {"block", block},
                 {"input_state", common::InputStateName(info.input_state)}};
    if (info.input_state == common::InputState::kInvalid) {
      line["input_error"] = std::string(info.input_error.message());
      line["raw_input"] = info.raw_input;
    }
    Print(line);
    std::string_view id = common::GetString(block, "id");
    if (id.empty()) return;
    common::ToolUseId tool_id{std::string(id)};
    if (info.input_state == common::InputState::kValid) {
      auto it = block.find("input");
      if (it != block.end()) ledger_.SetInput(tool_id, *it);
    } else if (info.input_state == common::InputState::kInvalid) {
      ledger_.MarkInputInvalid(tool_id, std::string(info.input_error.message()));
    }
  }
  void OnMessageDelta(const Json& event) override {
    Print({{"event", "message_delta"}, {"delta", event.value("delta", Json::object())},
           {"usage", event.value("usage", Json::object())}});
  }
  void OnMessageStop(const Json& message) override {
    Print({{"event", "message_stop"},
           {"stop_reason", message.value("stop_reason", Json())}});
  }
  void OnError(const common::StreamError& error) override {
    Json line = {{"event", "error"},
                 {"kind", common::StreamErrorKindName(error.kind)},
                 {"message", error.message}};
    if (error.api_error.has_value()) {
      line["error_type"] = error.api_error->type;
    }
    Print(line);
    // The partial step is thrown away: its tools can never run.
    ledger_.AbortStep(kStep, "the stream failed before message_stop");
  }

  // Tools whose block never stopped (max_tokens truncation) can never run.
  void FailIncomplete(const std::vector<common::BlockInfo>& blocks,
                      const Json& message) {
    const Json& content = message.value("content", Json::array());
    for (const common::BlockInfo& info : blocks) {
      if (info.input_state != common::InputState::kIncomplete) continue;
      if (info.index < 0 || static_cast<std::size_t>(info.index) >= content.size()) continue;
      std::string_view id = common::GetString(content[info.index], "id");
      if (id.empty()) continue;
      ledger_.Fail(common::ToolUseId(std::string(id)),
                   common::ErrorReason::kInvalidInput,
                   "the response ended (max_tokens) before the tool input was "
                   "complete; the call is never run");
    }
  }

 private:
  static constexpr int kStep = 1;

  void Print(const Json& line) { out_ << common::DumpJson(line) << '\n'; }

  void PrintTransition(const common::ToolTransition& t) {
    Json line = {{"event", "tool_transition"},
                 {"tool_use_id", t.id.value()},
                 {"name", t.name},
                 {"kind", common::ToolKindName(t.kind)},
                 {"from", common::ToolStateName(t.from)},
                 {"to", common::ToolStateName(t.to)},
                 {"step", t.step}};
    if (t.IsAnnounce()) line["announced"] = true;
    if (t.reason.has_value()) line["reason"] = common::ErrorReasonName(*t.reason);
    if (!t.message.empty()) line["message"] = t.message;
    Print(line);
  }

  std::ostream& out_;
  common::ToolLedger ledger_;
};

constexpr std::string_view kSseUsage =
    "usage: toolmesh sse decode [--events] [--partial] [--compact] FILE";
constexpr std::string_view kCheckUsage =
    "usage: toolmesh conversation check [--repair] [--compact] FILE";

}  // namespace

int RunSseDecode(const std::vector<std::string>& raw_args, std::ostream& out,
                 std::ostream& err) {
  auto args = ParseArgs(raw_args, {"--events", "--partial", "--compact"});
  if (!args.ok()) {
    err << "toolmesh sse decode: " << args.status().message() << "\n"
        << kSseUsage << "\n";
    return kExitUsage;
  }
  auto bytes = ReadInput(args->file);
  if (!bytes.ok()) {
    err << "toolmesh sse decode: " << bytes.status().message() << "\n";
    return kExitUsage;
  }
  const bool events = HasFlag(*args, "--events");
  const bool compact = HasFlag(*args, "--compact");

  std::optional<EventPrinter> printer;
  if (events) printer.emplace(out);
  common::StreamAccumulator::Options options;
  options.live_partial_input = false;
  common::StreamAccumulator accumulator(options, events ? &*printer : nullptr);
  // Chunked like a network read; the accumulator is indifferent to where
  // the chunks split.
  constexpr std::size_t kChunk = 64 << 10;
  std::string_view rest = *bytes;
  absl::Status status;
  while (status.ok() && !rest.empty()) {
    std::string_view chunk = rest.substr(0, kChunk);
    rest.remove_prefix(chunk.size());
    status = accumulator.Feed(chunk);
  }
  if (status.ok()) status = accumulator.Finish();

  auto message = accumulator.FinalMessage();
  if (status.ok() && message.ok()) {
    if (events) {
      printer->FailIncomplete(accumulator.Blocks(), *message);
    } else {
      out << Dump(*message, compact) << "\n";
    }
    return kExitOk;
  }
  std::string reason;
  if (accumulator.error().has_value()) {
    const common::StreamError& error = *accumulator.error();
    reason = absl::StrCat(std::string(common::StreamErrorKindName(error.kind)),
                          ": ", error.message);
    if (error.api_error.has_value() &&
        reason.find(error.api_error->type) == std::string::npos) {
      absl::StrAppend(&reason, " (", error.api_error->type, ")");
    }
  } else {
    reason = std::string(status.ok() ? message.status().message()
                                     : status.message());
  }
  if (HasFlag(*args, "--partial") && !events) {
    out << Dump(accumulator.PartialMessage(), compact) << "\n";
  }
  err << "toolmesh sse decode: " << args->file << ": " << reason << "\n";
  return kExitInvalid;
}

int RunConversationCheck(const std::vector<std::string>& raw_args,
                         std::ostream& out, std::ostream& err) {
  auto args = ParseArgs(raw_args, {"--repair", "--compact"});
  if (!args.ok()) {
    err << "toolmesh conversation check: " << args.status().message() << "\n"
        << kCheckUsage << "\n";
    return kExitUsage;
  }
  auto text = ReadInput(args->file);
  if (!text.ok()) {
    err << "toolmesh conversation check: " << text.status().message() << "\n";
    return kExitUsage;
  }
  auto body = common::ParseJson(*text);
  if (!body.ok()) {
    err << "toolmesh conversation check: " << args->file << ": "
        << body.status().message() << "\n";
    return kExitInvalid;
  }
  if (HasFlag(*args, "--repair")) {
    common::RepairResult repaired = common::Repair(*body);
    for (const std::string& action : repaired.actions) {
      err << "repair: " << action << "\n";
    }
    if (!repaired.status.ok()) {
      err << "toolmesh conversation check: " << args->file
          << ": cannot repair: " << repaired.status.message() << "\n";
      return kExitInvalid;
    }
    std::vector<common::Violation> left = common::ValidateRequest(repaired.body);
    for (const common::Violation& v : left) err << v.message << "\n";
    out << Dump(repaired.body, HasFlag(*args, "--compact")) << "\n";
    return left.empty() ? kExitOk : kExitInvalid;
  }
  std::vector<common::Violation> violations = common::ValidateRequest(*body);
  for (const common::Violation& v : violations) out << v.message << "\n";
  return violations.empty() ? kExitOk : kExitInvalid;
}

}  // namespace toolmesh::cli
