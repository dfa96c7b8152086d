// tools.json: which tools a worker serves and how it runs each one.
//
// The file is a JSON array of Anthropic tool definitions (`name`,
// `description`, `input_schema`, and any other model-facing field, kept
// verbatim), each with an `executor` object (ARCHITECTURE.md, "tools.json
// (worker)"):
//   {"type": "builtin", "name": "echo" | "sleep" | "fail"}
//   {"type": "exec", "argv": ["python3", "x.py"], "timeout_ms": 30000,
//    "cwd": "/optional/dir"}
//   {"type": "http", "url": "http://host/path", "timeout_ms": 30000}
// `timeout_ms` is optional (default 30000). Unknown executor fields are
// rejected, so a misspelt "timout_ms" is an error rather than silently
// ignored.
//
// Tool names must match ^[a-zA-Z0-9_-]{1,128}$ and be unique in a file. This
// is the rule the Messages API documents for custom tool names; PROTOCOL.md
// does not record it, so it was not checked against a recorded 400 here.
//
// Thread-safety: the types are plain values; a loaded ToolsConfig is
// immutable and may be read from any thread.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "worker/input_validator.h"

namespace toolmesh::worker {

// {"type": "builtin", "name": ...}: tools for tests and the demo.
struct BuiltinSpec {
  enum class Kind { kEcho, kSleep, kFail };
  Kind kind = Kind::kEcho;
};

// {"type": "exec", ...}: run argv directly (never through a shell).
struct ExecSpec {
  std::vector<std::string> argv;  // non-empty; argv[0] looked up in PATH
  absl::Duration timeout = absl::Seconds(30);
  std::string cwd;  // empty: the worker's working directory
};

// {"type": "http", ...}: POST the input as JSON to `url`.
struct HttpSpec {
  std::string url;  // http:// or https://
  absl::Duration timeout = absl::Seconds(30);
};

using ExecutorSpec = std::variant<BuiltinSpec, ExecSpec, HttpSpec>;

// One entry of tools.json.
struct ToolDefinition {
  std::string name;
  // The entry without `executor`, fields in file order.
  common::Json model_facing;
  ExecutorSpec executor;
  // The compiled input_schema.
  InputValidator validator;
};

struct ToolsConfig {
  std::vector<ToolDefinition> tools;

  // The tool called `name`, or nullptr. The pointer is valid as long as
  // this config is alive and unmodified.
  const ToolDefinition* Find(std::string_view name) const;
};

// Parses and checks the text of a tools.json file. Returns kInvalidArgument
// with one message naming the tool (by index and, once known, by name) and
// the field at fault, e.g.
//   tools[2] ("weather"): executor.timeout_ms: must be a positive integer
// Checks: the top level is an array; each entry is an object with a valid,
// unique `name`; `description`, if present, is a string; `input_schema` is
// an object with "type": "object" that valijson can compile; `executor` is
// one of the forms above with non-empty string argv elements, an http(s)
// url and a positive timeout_ms. An empty array is accepted.
absl::StatusOr<ToolsConfig> ParseToolsConfig(std::string_view json_text);

// Reads and parses the file at `path`. Returns kFailedPrecondition naming
// the path when it cannot be read, otherwise as ParseToolsConfig with the
// message prefixed by the path. Blocks on file I/O.
absl::StatusOr<ToolsConfig> LoadToolsConfigFile(const std::string& path);

// What the worker advertises to the orchestrator for `tool`: its tools.json
// entry without `executor` (name, description, input_schema and any other
// model-facing fields, verbatim and in file order).
common::Json ModelFacingDefinition(const ToolDefinition& tool);

}  // namespace toolmesh::worker
