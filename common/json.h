// JSON types shared by the Messages API model, the accumulator and the
// validator.
//
// `Json` keeps object keys in insertion order so that what toolmesh prints
// (final messages, repaired requests) reads in the API's own field order and
// unknown fields round-trip unchanged. Parsing never throws: untrusted bytes
// become an absl::Status.
//
// Thread-safety: free functions, no shared state.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace toolmesh::common {

using Json = nlohmann::ordered_json;

// The deepest nesting of arrays and objects ParseJson() accepts. Copying,
// comparing or printing a Json recurses once per level, so a deeper value
// from untrusted bytes could overflow the stack.
inline constexpr std::size_t kMaxJsonDepth = 1024;

// Parses `text` as one JSON value (surrounding whitespace allowed).
// Returns kInvalidArgument with the parser's position and reason on bad input,
// and for nesting deeper than kMaxJsonDepth.
absl::StatusOr<Json> ParseJson(std::string_view text);

// Serialises `value` compactly. Invalid UTF-8 inside strings is replaced with
// U+FFFD rather than throwing, so any value we hold can always be printed.
std::string DumpJson(const Json& value);

// Like DumpJson, indented by `indent` spaces.
std::string DumpJsonPretty(const Json& value, int indent = 2);

// Returns value[key] as a string, or "" when absent or not a string.
std::string_view GetString(const Json& value, std::string_view key);

}  // namespace toolmesh::common
