// Fuzz target: the worker's tool layer on untrusted text, without running
// anything: ParseToolsConfig over a fuzzed tools.json, each tool's
// InputValidator over a fuzzed input, and ExpandArgv (the exec executor's
// `{input.FIELD}` templating) of each exec tool's argv with that input.
//
// Input: the tools.json text, a 0xFF byte, the input JSON text. Without a
// 0xFF byte the whole input is the tools.json and the input is {}.
//
// Properties checked (a broken one traps):
//  - ParseToolsConfig fails with INVALID_ARGUMENT and a message, or gives
//    tools with unique, non-empty names, each found by Find();
//  - ModelFacingDefinition is an object without "executor" whose "name" is
//    the tool's name, and prints as JSON that parses again;
//  - Validate gives OK or INVALID_ARGUMENT with a message of at most ten
//    lines, the same answer twice;
//  - ExpandArgv on an object input gives OK or INVALID_ARGUMENT; an OK
//    result has the argv's length, the literal argv[0] unchanged, no NUL in
//    any element, and leaves elements without "{input." unchanged; a
//    non-object input is INVALID_ARGUMENT when argv has a reference.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "common/json.h"
#include "worker/tools_config.h"

namespace toolmesh::fuzzing {
namespace {

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

bool HasReference(const std::string& arg) {
  return arg.find("{input.") != std::string::npos;
}

void CheckExpand(const worker::ExecSpec& spec, const common::Json& input) {
  absl::StatusOr<std::vector<std::string>> argv =
      worker::ExpandArgv(spec.argv, input);
  bool any_reference = false;
  for (const std::string& arg : spec.argv) {
    any_reference = any_reference || HasReference(arg);
  }
  if (!argv.ok()) {
    Check(argv.status().code() == absl::StatusCode::kInvalidArgument);
    Check(!argv.status().message().empty());
    return;
  }
  if (!input.is_object()) Check(!any_reference);
  Check(argv->size() == spec.argv.size());
  Check(argv->empty() || (*argv)[0] == spec.argv[0]);
  for (std::size_t i = 0; i < argv->size(); ++i) {
    Check((*argv)[i].find('\0') == std::string::npos);
    if (!HasReference(spec.argv[i])) Check((*argv)[i] == spec.argv[i]);
  }
}

void RunOne(std::string_view bytes) {
  const std::size_t cut = bytes.find('\xff');
  const std::string_view tools_text = bytes.substr(0, cut);
  const std::string_view input_text =
      cut == std::string_view::npos ? std::string_view("{}")
                                    : bytes.substr(cut + 1);

  absl::StatusOr<worker::ToolsConfig> tools =
      worker::ParseToolsConfig(tools_text);
  if (!tools.ok()) {
    Check(tools.status().code() == absl::StatusCode::kInvalidArgument);
    Check(!tools.status().message().empty());
    return;
  }
  absl::StatusOr<common::Json> input = common::ParseJson(input_text);

  std::set<std::string> names;
  for (const worker::ToolDefinition& tool : tools->tools) {
    Check(!tool.name.empty());
    Check(names.insert(tool.name).second);
    Check(tools->Find(tool.name) == &tool);

    const common::Json facing = worker::ModelFacingDefinition(tool);
    Check(facing.is_object());
    Check(!facing.contains("executor"));
    Check(common::GetString(facing, "name") == tool.name);
    Check(common::ParseJson(common::DumpJson(facing)).ok());

    if (!input.ok()) continue;
    const absl::Status valid = tool.validator.Validate(*input);
    if (!valid.ok()) {
      Check(valid.code() == absl::StatusCode::kInvalidArgument);
      Check(!valid.message().empty());
      Check(std::count(valid.message().begin(), valid.message().end(),
                       '\n') < 10);
    }
    Check(tool.validator.Validate(*input) == valid);

    if (const auto* exec = std::get_if<worker::ExecSpec>(&tool.executor)) {
      Check(!exec->argv.empty());
      CheckExpand(*exec, *input);
    }
  }
}

}  // namespace
}  // namespace toolmesh::fuzzing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  toolmesh::fuzzing::RunOne(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
