// JSON Schema validation of tool inputs with valijson (input_validator.h).
//
// valijson reports errors by throwing (VALIJSON_USE_EXCEPTIONS) or by
// aborting; we build it with exceptions and catch them here, the one edge
// where they may occur. Only this file includes valijson.
#define VALIJSON_USE_EXCEPTIONS 1

#include "worker/input_validator.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "valijson/adapters/nlohmann_json_adapter.hpp"
#include "valijson/schema.hpp"
#include "valijson/schema_parser.hpp"
#include "valijson/validation_results.hpp"
#include "valijson/validator.hpp"

namespace toolmesh::worker {

using common::Json;

struct InputValidator::Compiled {
  valijson::Schema schema;
};

namespace {

constexpr size_t kMaxMessageLines = 10;
constexpr size_t kMaxValueChars = 80;

// valijson's adapter only knows nlohmann::json; ours keeps key order.
nlohmann::json ToPlainJson(const Json& value) { return nlohmann::json(value); }

std::string TypeName(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::string:
      return "string";
    case Json::value_t::array:
      return "array";
    case Json::value_t::object:
      return "object";
    default:
      return "unknown";
  }
}

std::string ShortDump(const Json& value) {
  std::string text = common::DumpJson(value);
  if (text.size() > kMaxValueChars) {
    text.resize(kMaxValueChars);
    text += "...";
  }
  return text;
}

bool IsIndex(std::string_view token) {
  if (token.empty() || token.size() > 9) return false;
  for (char c : token) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Follows valijson's error context ("<root>", "[key]", "[3]") through the
// input and the schema at once, producing a readable path ("input.a[3]")
// and, where they can be found, the value and the subschema at that path.
struct Located {
  std::string path = "input";
  const Json* value = nullptr;   // null when the path leaves the input
  const Json* schema = nullptr;  // null when no subschema could be found
};

const Json* SubschemaForKey(const Json* schema, const std::string& key) {
  if (schema == nullptr || !schema->is_object()) return nullptr;
  auto props = schema->find("properties");
  if (props != schema->end() && props->is_object()) {
    auto it = props->find(key);
    if (it != props->end()) return &*it;
  }
  auto additional = schema->find("additionalProperties");
  if (additional != schema->end() && additional->is_object()) {
    return &*additional;
  }
  return nullptr;
}

const Json* SubschemaForIndex(const Json* schema, size_t index) {
  if (schema == nullptr || !schema->is_object()) return nullptr;
  auto items = schema->find("items");
  if (items == schema->end()) return nullptr;
  if (items->is_object()) return &*items;
  if (items->is_array() && index < items->size()) return &(*items)[index];
  return nullptr;
}

Located Locate(const std::vector<std::string>& context, const Json& input,
               const Json& schema) {
  Located at;
  at.value = &input;
  at.schema = &schema;
  for (const std::string& raw : context) {
    if (raw == "<root>") continue;
    std::string token = raw;
    if (token.size() >= 2 && token.front() == '[' && token.back() == ']') {
      token = token.substr(1, token.size() - 2);
    }
    if (at.value != nullptr && at.value->is_array() && IsIndex(token)) {
      size_t index = std::stoul(token);
      absl::StrAppend(&at.path, "[", token, "]");
      at.value = index < at.value->size() ? &(*at.value)[index] : nullptr;
      at.schema = SubschemaForIndex(at.schema, index);
      continue;
    }
    absl::StrAppend(&at.path, ".", token);
    if (at.value != nullptr && at.value->is_object()) {
      auto it = at.value->find(token);
      at.value = it != at.value->end() ? &*it : nullptr;
    } else {
      at.value = nullptr;
    }
    at.schema = SubschemaForKey(at.schema, token);
  }
  return at;
}

std::string ExpectedTypes(const Json* schema) {
  if (schema == nullptr || !schema->is_object()) return "";
  auto type = schema->find("type");
  if (type == schema->end()) return "";
  if (type->is_string()) return type->get<std::string>();
  if (type->is_array()) {
    std::vector<std::string> names;
    for (const Json& t : *type) {
      if (t.is_string()) names.push_back(t.get<std::string>());
    }
    return absl::StrJoin(names, " or ");
  }
  return "";
}

// Errors that only say "a child failed"; the child's own error is more
// useful and is reported too.
bool IsWrapperError(const std::string& description) {
  return absl::StartsWith(description,
                          "Failed to validate against schema associated "
                          "with property name") ||
         absl::StartsWith(description, "Failed to validate item #") ||
         absl::StartsWith(description,
                          "Failed to validate against additional properties "
                          "schema") ||
         absl::StartsWith(description,
                          "Failed to validate against schema associated "
                          "with pattern");
}

std::string Describe(const valijson::ValidationResults::Error& error,
                     const Json& input, const Json& schema) {
  Located at = Locate(error.context, input, schema);
  const std::string& text = error.description;

  constexpr absl::string_view kMissing = "Missing required property '";
  if (absl::StartsWith(text, kMissing)) {
    std::string name = text.substr(kMissing.size());
    size_t quote = name.rfind('\'');
    if (quote != std::string::npos) name.resize(quote);
    return absl::StrCat(at.path, ".", name, ": required property missing");
  }
  if (absl::StartsWith(text, "Value type not permitted by 'type'")) {
    std::string expected = ExpectedTypes(at.schema);
    std::string got = at.value != nullptr ? TypeName(*at.value) : "a value";
    if (!expected.empty()) {
      return absl::StrCat(at.path, ": expected ", expected, ", got ", got);
    }
    return absl::StrCat(at.path, ": type ", got, " not permitted");
  }
  if (absl::StartsWith(text, "Failed to match against any enum values")) {
    std::string got = at.value != nullptr ? ShortDump(*at.value) : "a value";
    if (at.schema != nullptr && at.schema->is_object() &&
        at.schema->contains("enum")) {
      return absl::StrCat(at.path, ": expected one of ",
                          ShortDump((*at.schema)["enum"]), ", got ", got);
    }
    return absl::StrCat(at.path, ": ", got, " is not an allowed value");
  }
  std::string trimmed = text;
  if (!trimmed.empty() && trimmed.back() == '.') trimmed.pop_back();
  if (!trimmed.empty()) {
    trimmed[0] = absl::ascii_tolower(static_cast<unsigned char>(trimmed[0]));
  }
  return absl::StrCat(at.path, ": ", trimmed);
}

// The value that the local reference `ref` ("#" or "#/json/pointer") names
// inside `root`, or nullptr when it names nothing.
const Json* ResolveLocalRef(const Json& root, const std::string& ref) {
  const absl::string_view pointer = absl::string_view(ref).substr(1);
  const Json* at = &root;
  if (pointer.empty()) return at;
  if (pointer.front() != '/') return nullptr;
  for (absl::string_view raw : absl::StrSplit(pointer.substr(1), '/')) {
    std::string token = absl::StrReplaceAll(raw, {{"~1", "/"}, {"~0", "~"}});
    if (at->is_object()) {
      auto it = at->find(token);
      if (it == at->end()) return nullptr;
      at = &*it;
    } else if (at->is_array() && IsIndex(token)) {
      const size_t index = std::stoul(token);
      if (index >= at->size()) return nullptr;
      at = &(*at)[index];
    } else {
      return nullptr;
    }
  }
  return at;
}

// valijson follows "$ref" by recursion without a cycle check: a reference
// to itself ("#" at the root), a cycle of references, or a reference to
// another document (resolved against no base, so: this one) recurses until
// the stack overflows. So only references into this schema are accepted
// ("#" or "#/json/pointer", not percent-encoded), "$id" (which would move
// the base they resolve against) is refused, and a chain of references must
// end at something that is not itself a reference.
absl::Status CheckReferences(const Json& node, const Json& root) {
  if (node.is_array()) {
    for (const Json& item : node) {
      absl::Status status = CheckReferences(item, root);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }
  if (!node.is_object()) return absl::OkStatus();
  auto id = node.find("$id");
  if (id != node.end() && id->is_string()) {
    return absl::InvalidArgumentError(
        "input_schema: \"$id\" is not supported (references resolve "
        "within the schema itself)");
  }
  auto ref = node.find("$ref");
  if (ref != node.end() && ref->is_string()) {
    std::vector<std::string> chain;
    std::string next = ref->get<std::string>();
    while (true) {
      if (!absl::StartsWith(next, "#") || absl::StrContains(next, "%")) {
        return absl::InvalidArgumentError(absl::StrCat(
            "input_schema: $ref ", ShortDump(Json(next)),
            " is not a reference into the schema itself (\"#\" or "
            "\"#/json/pointer\", not percent-encoded)"));
      }
      for (const std::string& seen : chain) {
        if (seen == next) {
          return absl::InvalidArgumentError(absl::StrCat(
              "input_schema: $ref ", ShortDump(Json(next)),
              " is a cycle of references that never reaches a schema"));
        }
      }
      chain.push_back(next);
      const Json* target = ResolveLocalRef(root, next);
      if (target == nullptr || !target->is_object()) break;
      auto again = target->find("$ref");
      if (again == target->end() || !again->is_string()) break;
      next = again->get<std::string>();
    }
  }
  for (const auto& [key, value] : node.items()) {
    absl::Status status = CheckReferences(value, root);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<InputValidator> InputValidator::Compile(const Json& schema) {
  if (!schema.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input_schema must be a JSON object, got ", TypeName(schema)));
  }
  auto type = schema.find("type");
  if (type == schema.end() || !type->is_string() ||
      type->get<std::string>() != "object") {
    return absl::InvalidArgumentError(
        "input_schema must have \"type\": \"object\"");
  }
  if (absl::Status refs = CheckReferences(schema, schema); !refs.ok()) {
    return refs;
  }
  auto compiled = std::make_shared<Compiled>();
  try {
    nlohmann::json plain = ToPlainJson(schema);
    valijson::adapters::NlohmannJsonAdapter adapter(plain);
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    parser.populateSchema(adapter, compiled->schema);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("input_schema is not a valid JSON Schema: ", e.what()));
  }
  return InputValidator(std::move(compiled),
                        std::make_shared<const Json>(schema));
}

absl::Status InputValidator::Validate(const Json& input) const {
  valijson::ValidationResults results;
  bool ok = false;
  try {
    nlohmann::json plain = ToPlainJson(input);
    valijson::adapters::NlohmannJsonAdapter adapter(plain);
    // A Validator caches compiled regexes and is not thread-safe: one per
    // call keeps Validate() const and concurrent.
    valijson::Validator validator;
    ok = validator.validate(compiled_->schema, adapter, &results);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("input: the input_schema could not be evaluated: ",
                     e.what()));
  }
  if (ok) return absl::OkStatus();

  std::vector<valijson::ValidationResults::Error> errors;
  valijson::ValidationResults::Error error;
  while (results.popError(error)) errors.push_back(error);
  bool has_specific = false;
  for (const auto& e : errors) {
    if (!IsWrapperError(e.description)) has_specific = true;
  }
  std::vector<std::string> lines;
  for (const auto& e : errors) {
    if (has_specific && IsWrapperError(e.description)) continue;
    std::string line = Describe(e, input, *schema_json_);
    bool seen = false;
    for (const std::string& l : lines) seen = seen || l == line;
    if (!seen) lines.push_back(std::move(line));
    if (lines.size() == kMaxMessageLines) break;
  }
  if (lines.empty()) lines.push_back("input: does not match the input_schema");
  return absl::InvalidArgumentError(absl::StrJoin(lines, "\n"));
}

}  // namespace toolmesh::worker
