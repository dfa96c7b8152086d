// Parsing and checking of tools.json (tools_config.h).
#include "worker/tools_config.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace toolmesh::worker {

using common::Json;

namespace {

constexpr size_t kMaxNameLength = 128;
constexpr int64_t kDefaultTimeoutMs = 30000;
// Long enough for any tool; short enough that absl::Milliseconds cannot
// overflow.
constexpr int64_t kMaxTimeoutMs = int64_t{7} * 24 * 3600 * 1000;

constexpr std::string_view kReferenceOpen = "{input.";

bool IsFieldChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// One piece of an argv element: literal text, or the name of an input field.
struct ArgPiece {
  bool is_field = false;
  std::string text;
};

// Splits `arg` into literal text and `{input.FIELD}` references. Any
// "{input." that does not open a well-formed reference is an error.
absl::StatusOr<std::vector<ArgPiece>> SplitArgTemplate(std::string_view arg) {
  std::vector<ArgPiece> pieces;
  size_t pos = 0;
  while (pos < arg.size()) {
    const size_t open = arg.find(kReferenceOpen, pos);
    if (open == std::string_view::npos) break;
    size_t end = open + kReferenceOpen.size();
    while (end < arg.size() && IsFieldChar(arg[end])) ++end;
    const size_t name_size = end - open - kReferenceOpen.size();
    if (name_size == 0 || name_size > kMaxNameLength || end >= arg.size() ||
        arg[end] != '}') {
      return absl::InvalidArgumentError(absl::StrCat(
          "malformed reference at offset ", open,
          ": expected {input.FIELD} with FIELD of [A-Za-z0-9_-]{1,128}"));
    }
    if (open > pos) pieces.push_back({false, std::string(arg.substr(pos, open - pos))});
    pieces.push_back(
        {true, std::string(arg.substr(open + kReferenceOpen.size(), name_size))});
    pos = end + 1;
  }
  if (pos < arg.size()) pieces.push_back({false, std::string(arg.substr(pos))});
  return pieces;
}

bool IsValidEnvName(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

// The worker's own credential never reaches a tool, whatever the config.
constexpr char kWorkerTokenVariable[] = "TOOLMESH_WORKER_TOKEN";

bool IsValidToolName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Prefixes every error about entry `index` (and its name once known).
class EntryErrors {
 public:
  explicit EntryErrors(size_t index) : prefix_(absl::StrCat("tools[", index, "]")) {}
  void SetName(const std::string& name) {
    absl::StrAppend(&prefix_, " (\"", name, "\")");
  }
  absl::Status Error(std::string_view field, std::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix_, ": ", std::string(field), ": ",
                     std::string(message)));
  }

 private:
  std::string prefix_;
};

absl::Status CheckOnlyFields(const Json& object,
                             std::initializer_list<std::string_view> allowed,
                             const EntryErrors& errors) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    bool known = false;
    for (std::string_view a : allowed) known = known || it.key() == a;
    if (!known) {
      return errors.Error(absl::StrCat("executor.", it.key()),
                          "unknown field");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckEnvName(const std::string& name, const std::string& field,
                          const EntryErrors& errors) {
  if (!IsValidEnvName(name)) {
    return errors.Error(field, absl::StrCat("\"", name,
                                            "\" is not a valid variable name "
                                            "(^[A-Za-z_][A-Za-z0-9_]*$)"));
  }
  if (name == kWorkerTokenVariable) {
    return errors.Error(field, absl::StrCat(kWorkerTokenVariable,
                                            " is the worker's credential and "
                                            "is never passed to tools"));
  }
  return absl::OkStatus();
}

// executor.limits: an object of positive integers, known names only.
absl::StatusOr<ExecLimits> ParseLimits(const Json& limits,
                                       const EntryErrors& errors) {
  if (!limits.is_object()) {
    return errors.Error("executor.limits", "must be an object");
  }
  ExecLimits parsed;
  const std::pair<std::string_view, uint64_t*> fields[] = {
      {"cpu_seconds", &parsed.cpu_seconds},
      {"memory_bytes", &parsed.memory_bytes},
      {"open_files", &parsed.open_files},
      {"processes", &parsed.processes},
      {"file_size_bytes", &parsed.file_size_bytes},
  };
  for (auto it = limits.begin(); it != limits.end(); ++it) {
    uint64_t* target = nullptr;
    for (const auto& [name, field] : fields) {
      if (it.key() == name) target = field;
    }
    const std::string field = absl::StrCat("executor.limits.", it.key());
    if (target == nullptr) {
      return errors.Error(field,
                          "unknown limit; expected cpu_seconds, memory_bytes, "
                          "open_files, processes or file_size_bytes");
    }
    // Unsigned JSON integers beyond int64 are refused too: no rlimit needs
    // them, and RLIM_INFINITY must not be spelt by accident.
    if (!it->is_number_integer() || it->get<int64_t>() <= 0) {
      return errors.Error(field, "must be a positive integer");
    }
    *target = static_cast<uint64_t>(it->get<int64_t>());
  }
  return parsed;
}

absl::StatusOr<absl::Duration> ParseTimeout(const Json& executor,
                                            const EntryErrors& errors) {
  auto it = executor.find("timeout_ms");
  if (it == executor.end()) return absl::Milliseconds(kDefaultTimeoutMs);
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 ||
      it->get<int64_t>() > kMaxTimeoutMs) {
    return errors.Error("executor.timeout_ms",
                        absl::StrCat("must be a positive integer of at most ",
                                     kMaxTimeoutMs, " (milliseconds)"));
  }
  return absl::Milliseconds(it->get<int64_t>());
}

absl::StatusOr<ExecutorSpec> ParseExecutor(const Json& entry,
                                           const EntryErrors& errors) {
  auto it = entry.find("executor");
  if (it == entry.end()) return errors.Error("executor", "missing");
  const Json& executor = *it;
  if (!executor.is_object()) {
    return errors.Error("executor", "must be an object");
  }
  auto type_it = executor.find("type");
  if (type_it == executor.end() || !type_it->is_string()) {
    return errors.Error("executor.type",
                        "missing; expected \"builtin\", \"exec\" or \"http\"");
  }
  const std::string type = type_it->get<std::string>();

  if (type == "builtin") {
    TOOLMESH_RETURN_IF_ERROR(
        CheckOnlyFields(executor, {"type", "name"}, errors));
    std::string name(common::GetString(executor, "name"));
    BuiltinSpec spec;
    if (name == "echo") {
      spec.kind = BuiltinSpec::Kind::kEcho;
    } else if (name == "sleep") {
      spec.kind = BuiltinSpec::Kind::kSleep;
    } else if (name == "fail") {
      spec.kind = BuiltinSpec::Kind::kFail;
    } else {
      return errors.Error("executor.name",
                          absl::StrCat("unknown builtin \"", name,
                                       "\"; expected echo, sleep or fail"));
    }
    return spec;
  }

  if (type == "exec") {
    TOOLMESH_RETURN_IF_ERROR(CheckOnlyFields(
        executor,
        {"type", "argv", "timeout_ms", "cwd", "env_allow", "env",
         "work_dir_root", "limits"},
        errors));
    ExecSpec spec;
    auto argv = executor.find("argv");
    if (argv == executor.end() || !argv->is_array() || argv->empty()) {
      return errors.Error("executor.argv",
                          "must be a non-empty array of strings");
    }
    for (size_t i = 0; i < argv->size(); ++i) {
      const Json& arg = (*argv)[i];
      std::string field = absl::StrCat("executor.argv[", i, "]");
      if (!arg.is_string()) return errors.Error(field, "must be a string");
      std::string value = arg.get<std::string>();
      if (value.find('\0') != std::string::npos) {
        return errors.Error(field, "must not contain a NUL character");
      }
      if (i == 0 && value.empty()) {
        return errors.Error(field, "the program must not be empty");
      }
      absl::StatusOr<std::vector<ArgPiece>> pieces = SplitArgTemplate(value);
      if (!pieces.ok()) {
        return errors.Error(field, std::string(pieces.status().message()));
      }
      if (i == 0 && (pieces->size() != 1 || (*pieces)[0].is_field)) {
        return errors.Error(field,
                            "the program must be literal (no {input.FIELD})");
      }
      spec.argv.push_back(std::move(value));
    }
    TOOLMESH_ASSIGN_OR_RETURN(spec.timeout, ParseTimeout(executor, errors));
    auto cwd = executor.find("cwd");
    if (cwd != executor.end()) {
      if (!cwd->is_string() || cwd->get<std::string>().empty()) {
        return errors.Error("executor.cwd", "must be a non-empty string");
      }
      spec.cwd = cwd->get<std::string>();
    }
    auto env_allow = executor.find("env_allow");
    if (env_allow != executor.end()) {
      if (!env_allow->is_array()) {
        return errors.Error("executor.env_allow",
                            "must be an array of variable names");
      }
      spec.env_allow.clear();
      for (size_t i = 0; i < env_allow->size(); ++i) {
        const Json& name = (*env_allow)[i];
        const std::string field = absl::StrCat("executor.env_allow[", i, "]");
        if (!name.is_string()) return errors.Error(field, "must be a string");
        TOOLMESH_RETURN_IF_ERROR(
            CheckEnvName(name.get<std::string>(), field, errors));
        spec.env_allow.push_back(name.get<std::string>());
      }
    }
    auto env = executor.find("env");
    if (env != executor.end()) {
      if (!env->is_object()) {
        return errors.Error("executor.env",
                            "must be an object of NAME: string value");
      }
      for (auto var = env->begin(); var != env->end(); ++var) {
        const std::string field = absl::StrCat("executor.env.", var.key());
        TOOLMESH_RETURN_IF_ERROR(CheckEnvName(var.key(), field, errors));
        if (!var->is_string()) return errors.Error(field, "must be a string");
        std::string value = var->get<std::string>();
        if (value.find('\0') != std::string::npos) {
          return errors.Error(field, "must not contain a NUL character");
        }
        spec.env.emplace_back(var.key(), std::move(value));
      }
    }
    auto root = executor.find("work_dir_root");
    if (root != executor.end()) {
      if (!root->is_string() || !absl::StartsWith(root->get<std::string>(), "/") ||
          root->get<std::string>().find('\0') != std::string::npos) {
        return errors.Error("executor.work_dir_root",
                            "must be an absolute directory path");
      }
      if (!spec.cwd.empty()) {
        return errors.Error("executor.work_dir_root",
                            "cannot be combined with cwd (cwd runs every "
                            "call in one fixed directory)");
      }
      spec.work_dir_root = root->get<std::string>();
    }
    auto limits = executor.find("limits");
    if (limits != executor.end()) {
      TOOLMESH_ASSIGN_OR_RETURN(spec.limits, ParseLimits(*limits, errors));
    }
    return spec;
  }

  if (type == "http") {
    TOOLMESH_RETURN_IF_ERROR(
        CheckOnlyFields(executor, {"type", "url", "timeout_ms"}, errors));
    HttpSpec spec;
    spec.url = std::string(common::GetString(executor, "url"));
    size_t scheme = absl::StartsWith(spec.url, "http://")    ? 7
                    : absl::StartsWith(spec.url, "https://") ? 8
                                                             : 0;
    if (scheme == 0 || spec.url.size() == scheme) {
      return errors.Error("executor.url",
                          "must be an http:// or https:// URL");
    }
    TOOLMESH_ASSIGN_OR_RETURN(spec.timeout, ParseTimeout(executor, errors));
    return spec;
  }

  return errors.Error("executor.type",
                      absl::StrCat("unknown executor type \"", type,
                                   "\"; expected builtin, exec or http"));
}

absl::StatusOr<ToolDefinition> ParseEntry(const Json& entry, size_t index) {
  EntryErrors errors(index);
  if (!entry.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tools[", index, "]: must be a JSON object"));
  }
  auto name_it = entry.find("name");
  if (name_it == entry.end() || !name_it->is_string()) {
    return errors.Error("name", "missing or not a string");
  }
  std::string name = name_it->get<std::string>();
  if (!IsValidToolName(name)) {
    return errors.Error(
        "name", absl::StrCat("\"", name,
                             "\" does not match ^[a-zA-Z0-9_-]{1,128}$"));
  }
  errors.SetName(name);

  auto description = entry.find("description");
  if (description != entry.end() && !description->is_string()) {
    return errors.Error("description", "must be a string");
  }

  auto schema_it = entry.find("input_schema");
  if (schema_it == entry.end()) return errors.Error("input_schema", "missing");
  absl::StatusOr<InputValidator> validator = InputValidator::Compile(*schema_it);
  if (!validator.ok()) {
    return errors.Error("input_schema",
                        std::string(validator.status().message()));
  }

  TOOLMESH_ASSIGN_OR_RETURN(ExecutorSpec executor, ParseExecutor(entry, errors));

  Json model_facing = entry;
  model_facing.erase("executor");
  return ToolDefinition{std::move(name), std::move(model_facing),
                        std::move(executor), *std::move(validator)};
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ExpandArgv(
    const std::vector<std::string>& argv, const Json& input) {
  std::vector<std::string> expanded;
  expanded.reserve(argv.size());
  for (const std::string& arg : argv) {
    absl::StatusOr<std::vector<ArgPiece>> pieces = SplitArgTemplate(arg);
    if (!pieces.ok()) return pieces.status();
    std::string out;
    for (const ArgPiece& piece : *pieces) {
      if (!piece.is_field) {
        out += piece.text;
        continue;
      }
      const Json* value = nullptr;
      if (input.is_object()) {
        auto it = input.find(piece.text);
        if (it != input.end()) value = &*it;
      }
      if (value == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input.", piece.text, " is missing; the tool's argv needs it"));
      }
      if (value->is_string()) {
        const std::string& text = value->get_ref<const std::string&>();
        if (text.find('\0') != std::string::npos) {
          return absl::InvalidArgumentError(
              absl::StrCat("input.", piece.text,
                           " contains a NUL character, which argv cannot "
                           "carry"));
        }
        out += text;
      } else {
        // Compact JSON escapes control characters, so no NUL can appear.
        out += common::DumpJson(*value);
      }
    }
    expanded.push_back(std::move(out));
  }
  return expanded;
}

const ToolDefinition* ToolsConfig::Find(std::string_view name) const {
  for (const ToolDefinition& tool : tools) {
    if (tool.name == name) return &tool;
  }
  return nullptr;
}

absl::StatusOr<ToolsConfig> ParseToolsConfig(std::string_view json_text) {
  absl::StatusOr<Json> parsed = common::ParseJson(json_text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tools.json is not valid JSON: ",
                     parsed.status().message()));
  }
  if (!parsed->is_array()) {
    return absl::InvalidArgumentError(
        "tools.json must be a JSON array of tool definitions");
  }
  ToolsConfig config;
  absl::flat_hash_set<std::string> names;
  for (size_t i = 0; i < parsed->size(); ++i) {
    TOOLMESH_ASSIGN_OR_RETURN(ToolDefinition tool, ParseEntry((*parsed)[i], i));
    if (!names.insert(tool.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tools[", i, "] (\"", tool.name,
                       "\"): name: duplicate of an earlier tool"));
    }
    config.tools.push_back(std::move(tool));
  }
  return config;
}

absl::StatusOr<ToolsConfig> LoadToolsConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read tools file ", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::FailedPreconditionError(
        absl::StrCat("error reading tools file ", path));
  }
  absl::StatusOr<ToolsConfig> config = ParseToolsConfig(text.str());
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

Json ModelFacingDefinition(const ToolDefinition& tool) {
  return tool.model_facing;
}

}  // namespace toolmesh::worker
