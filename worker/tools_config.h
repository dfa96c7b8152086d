// tools.json: which tools a worker serves and how it runs each one.
//
// The file is a JSON array of Anthropic tool definitions (`name`,
// `description`, `input_schema`, and any other model-facing field, kept
// verbatim), each with an `executor` object (ARCHITECTURE.md, "tools.json
// (worker)"):
//   {"type": "builtin", "name": "echo" | "sleep" | "fail"}
//   {"type": "exec", "argv": ["python3", "x.py", "--city={input.city}"],
//    "timeout_ms": 30000, "env_allow": ["PATH", "HOME", "LANG"],
//    "env": {"NAME": "value"}, "work_dir_root": "/var/tmp/toolmesh",
//    "limits": {"cpu_seconds": 10, "memory_bytes": 536870912,
//               "open_files": 64, "processes": 32,
//               "file_size_bytes": 10485760},
//    "cwd": "/optional/fixed/dir"}
//   {"type": "http", "url": "http://host/path", "timeout_ms": 30000}
// `timeout_ms` is optional (default 30000). Unknown executor fields are
// rejected, so a misspelt "timout_ms" is an error rather than silently
// ignored.
//
// exec fields (all but argv optional; ExecSpec below has the details):
//   argv           literal strings, except that an element may contain
//                  `{input.FIELD}` references (FIELD: [A-Za-z0-9_-]{1,128}),
//                  replaced per call by that top-level input field. argv[0]
//                  (the program) must be literal. Any other "{input." text
//                  is a config error, so a typo cannot silently go literal.
//   env_allow      names passed through from the worker's environment
//                  (default PATH, HOME, LANG); replaces the default.
//   env            fixed NAME -> string value pairs; they win over env_allow.
//                  Names must match ^[A-Za-z_][A-Za-z0-9_]*$; values must not
//                  contain NUL. TOOLMESH_WORKER_TOKEN is never passed.
//   work_dir_root  an absolute directory under which each call gets a fresh
//                  working directory (default: $TMPDIR or /tmp).
//   limits         rlimits of the tool process, each a positive integer.
//   cwd            a fixed, existing directory to run in instead of a fresh
//                  one per call (opts out of the per-call directory; not
//                  allowed together with work_dir_root).
//
// Tool names must match ^[a-zA-Z0-9_-]{1,128}$ and be unique in a file. This
// is the rule the Messages API documents for custom tool names; PROTOCOL.md
// does not record it, so it was not checked against a recorded 400 here.
//
// Thread-safety: the types are plain values; a loaded ToolsConfig is
// immutable and may be read from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
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

// rlimits applied to an exec tool's process between fork and exec. 0 means
// "not set" (the worker's own limit is inherited). Each becomes both the
// soft and the hard limit (never above the worker's hard limit), so the tool
// cannot raise it again unless it runs as root (run the worker as an
// unprivileged user).
struct ExecLimits {
  uint64_t cpu_seconds = 0;      // RLIMIT_CPU (hard limit one second later)
  uint64_t memory_bytes = 0;     // RLIMIT_AS (address space, not RSS)
  uint64_t open_files = 0;       // RLIMIT_NOFILE
  // RLIMIT_NPROC counts every process and thread of the tool's real uid,
  // the worker's own threads and other tools included, and root ignores
  // it; so it is only meaningful when the worker runs as a dedicated user.
  uint64_t processes = 0;
  uint64_t file_size_bytes = 0;  // RLIMIT_FSIZE

  bool any() const {
    return cpu_seconds != 0 || memory_bytes != 0 || open_files != 0 ||
           processes != 0 || file_size_bytes != 0;
  }
};

// {"type": "exec", ...}: run argv directly (never through a shell).
struct ExecSpec {
  // Non-empty; argv[0] is literal and looked up in the tool's PATH when it
  // has no '/'. Other elements may hold `{input.FIELD}` references
  // (ExpandArgv).
  std::vector<std::string> argv;
  absl::Duration timeout = absl::Seconds(30);
  // Non-empty: run in this fixed directory instead of a fresh one per call.
  std::string cwd;
  // Names passed through from the worker's environment.
  std::vector<std::string> env_allow = {"PATH", "HOME", "LANG"};
  // Fixed variables, in file order; they win over env_allow.
  std::vector<std::pair<std::string, std::string>> env;
  // Where per-call directories are made; empty: $TMPDIR, else /tmp.
  std::string work_dir_root;
  ExecLimits limits;
};

// Returns `argv` with every `{input.FIELD}` reference replaced by the
// top-level field FIELD of `input`: a string as is, any other value as its
// compact JSON text. Returns kInvalidArgument naming the field when it is
// missing ("input.city is missing; the tool's argv needs it"), when `input`
// is not an object, or when a string holds a NUL character (argv cannot
// carry it). Text that is not a reference is copied literally; a value
// is never scanned for references again.
absl::StatusOr<std::vector<std::string>> ExpandArgv(
    const std::vector<std::string>& argv, const common::Json& input);

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
// url and a positive timeout_ms; the exec fields as described at the top
// of this file. An empty array is accepted.
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
