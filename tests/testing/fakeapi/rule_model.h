// The fake API's built-in rule-driven "model", used when no scenario is given
// (demos, load) or when a scenario response says `"rule_model": true`.
//
// Rules, applied to the request's `tools`, `tool_choice`, `thinking` and last
// message:
//  - A server call left without result at the end of the history (a
//    pause_turn continuation, or a deferred call answered by tool_results)
//    gets its result block first, as the API does.
//  - With `thinking` enabled the reply starts with a signed thinking block.
//  - Last message a plain user prompt and client tools present (and
//    tool_choice not "none"): call the tools the prompt names (all of them,
//    in parallel), else one or two chosen with the seed; one only with
//    `disable_parallel_tool_use`; exactly the named one with tool_choice
//    {"type":"tool"}. Inputs are generated from each tool's input_schema.
//    A web_search server tool is called first when the prompt mentions
//    "search" (or when there is no client tool to call). stop_reason
//    tool_use when a client tool is called.
//  - Last user message holding tool_results: an end_turn text that quotes
//    every result.
//  - Otherwise: an end_turn text answer.
// Everything is a function of the request and the seed (ids included).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/json.h"
#include "tests/testing/fakeapi/sse_writer.h"

namespace toolmesh::fakeapi {

using common::Json;

// A value that satisfies `schema`, a JSON Schema subset: const, enum,
// anyOf/oneOf (first branch), type (string or list; "null" only if alone),
// object properties/required (required ones always, optional ones by coin
// flip), array items/minItems/maxItems, string minLength/maxLength/format,
// number and integer minimum/maximum/exclusiveMinimum/exclusiveMaximum,
// boolean, null. `key` names the property being generated (it shapes the
// example strings). Depth is bounded.
Json GenerateFromSchema(const Json& schema, IdSource& rng,
                        std::string_view key = "", int depth = 0);

// A plausible result block for a server tool call: web_search ->
// web_search_tool_result with two results, web_fetch -> web_fetch_tool_result
// with a text document, anything else -> `<name>_tool_result` with a
// code_execution_result-like object.
Json FakeServerToolResult(std::string_view tool_name,
                          std::string_view tool_use_id);

// The model's reply to `request`.
struct ModelReply {
  Json blocks = Json::array();
  std::string stop_reason;  // "tool_use" or "end_turn"
};
ModelReply RuleModelRespond(const Json& request, std::uint64_t seed);

// Index of the first block of the trailing run of client tool_use blocks of
// an assistant message's `content`, or -1 when it does not end with one
// (where message faults insert server calls, rule d.4).
int TrailingToolUseStart(const Json& content);

// Whether `content` holds a server tool result block for `id`.
bool HasServerResultFor(const Json& content, std::string_view id);

}  // namespace toolmesh::fakeapi
