// Scenario files of the fake Anthropic API: an ordered list of responses,
// each a recorded `.sse` file, a structured message spec, or a hand-off to
// the built-in rule-driven model, optionally matched against the request
// and optionally carrying a fault. The format is documented with examples in
// tests/testing/fakeapi/README.md.
//
// Loading checks everything it can (unknown keys, block shapes, fault
// parameters, that recorded files exist) so that a bad file fails at start
// with one clear message instead of at the first request.
//
// Thread-safety: loaded once, then read-only.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/json.h"
#include "tests/testing/fakeapi/faults.h"

namespace toolmesh::fakeapi {

using common::Json;

// Conditions on the request; all set ones must hold.
struct MatchSpec {
  // The last user message holds a tool_result for this id ("$name" refers
  // to an id generated for an earlier response, see README.md).
  std::optional<std::string> last_user_has_tool_result_for;
  // The text of the last user message contains this substring.
  std::optional<std::string> last_user_text_contains;
  // 1 + the number of assistant messages in the request.
  std::optional<int> turn;
  // The request's `model`.
  std::optional<std::string> model;
  // Whether the request streams.
  std::optional<bool> stream;
};

struct ScenarioResponse {
  int index = 0;     // position in the scenario
  std::string name;  // optional label, for logs

  MatchSpec match;
  // Used for every matching request instead of only once.
  bool repeat = false;

  enum class Source { kSseFile, kBlocks, kModel };
  Source source = Source::kBlocks;
  // kSseFile: the resolved path and its bytes, read at load time.
  std::string sse_path;
  std::string sse_bytes;
  // kBlocks: the blocks as written (ids may be missing or "$name"), the
  // stop_reason ("" = derived), stop_details and usage overrides.
  Json blocks = Json::array();
  std::string stop_reason;
  Json stop_details;
  Json usage = Json::object();

  std::optional<Fault> fault;
};

struct Scenario {
  std::string path;  // where it was loaded from ("" if parsed)
  std::vector<ScenarioResponse> responses;
  // When no response matches: answer with the rule-driven model (true) or
  // with an HTTP 500 `api_error` naming the problem (false).
  bool fallback_to_model = false;
};

// Loads a scenario file. kNotFound if it cannot be read; kInvalidArgument,
// with the JSON path of the problem, if it is not a valid scenario.
absl::StatusOr<Scenario> LoadScenarioFile(const std::string& path);

// Parses a scenario document: {"responses": [...], "fallback": "model" |
// "error"} or a bare array of responses. Relative `sse_file` paths are
// resolved against `base_dir`.
absl::StatusOr<Scenario> ParseScenario(const Json& doc,
                                       const std::string& base_dir);

// Request helpers shared by matching and the rule-driven model. All accept
// any JSON value and never throw.

// The last message of the request if it is a user message, else nullptr.
const Json* LastUserMessage(const Json& request);
// The concatenated text of a message's content (a string, or its text
// blocks joined with "\n").
std::string MessageText(const Json& message);
// The tool_use_ids of the tool_result blocks of `message`, in order.
std::vector<std::string> ToolResultIds(const Json& message);
// 1 + the number of assistant messages.
int TurnOf(const Json& request);

// True when `request` satisfies `match`. `resolve` maps a "$name" to the id
// generated for it ("" when none was generated yet).
template <typename Resolve>
bool Matches(const MatchSpec& match, const Json& request, bool stream,
             Resolve&& resolve);

// Implementation of Matches.
bool MatchesResolved(const MatchSpec& match, const Json& request, bool stream,
                     const std::string& resolved_tool_result_id);

template <typename Resolve>
bool Matches(const MatchSpec& match, const Json& request, bool stream,
             Resolve&& resolve) {
  std::string id;
  if (match.last_user_has_tool_result_for) {
    id = *match.last_user_has_tool_result_for;
    if (!id.empty() && id.front() == '$') id = resolve(id);
  }
  return MatchesResolved(match, request, stream, id);
}

}  // namespace toolmesh::fakeapi
