// Checks a whole Messages API request body against the rules the API
// enforces on conversations (PROTOCOL.md section d) and reports each
// violation with the text of the API's own 400 `invalid_request_error`.
//
// The orchestrator runs it on every request before sending (a violation there
// is a bug of ours), the fake API answers with its first violation, and the
// CLI's `conversation check` prints them all.
//
// Model of the API, rule by rule (decisions marked "modelled" are ours where
// the API's behaviour is not recorded):
//  - Schema first. Field-level errors (a wrong type, a missing field, a raw
//    stream delta used as a block) are reported before any conversation rule,
//    because the API validates the request schema before it looks at the
//    conversation. Within each of the two phases violations come in document
//    order, so `front()` is what the API answers with.
//  - d.8: consecutive messages with the same role form one turn. All
//    conversation rules are evaluated on that merged view; paths always name
//    the original indexes.
//  - d.1/d.3/d.4: a client `tool_use` in an assistant turn is answered only if
//    (a) it belongs to the trailing run of client `tool_use` blocks of its
//    turn (nothing but client `tool_use` follows it) and (b) the next turn's
//    leading run of `tool_result` blocks holds its id. Unanswered ids are
//    listed, in block order, in one violation at `messages.N`, N being the
//    message that holds the first of them (fixture 20). An assistant turn
//    that ends the request is pending work (the client is about to run its
//    tools), never a violation.
//  - d.2: a `tool_result` anywhere in a user turn must name a client
//    `tool_use` of the previous assistant turn; a `srvtoolu_` id names a
//    server call, so it is unexpected too (fixture 19).
//  - d.5: only when `thinking.type` is "enabled" or "adaptive". Let U be the
//    last user turn holding a `tool_result`; if U ends the request, or only a
//    final assistant turn follows it, the assistant turn before U must begin
//    with `thinking` or `redacted_thinking`. Thinking blocks always need their
//    `signature`.
//  - d.6: a `server_tool_use`/`mcp_tool_use` is paired when a result block
//    with its id follows it in the same turn. An unpaired call is accepted
//    only while every later user turn holds nothing but `tool_result` blocks
//    (the pydantic-ai "trap"), and then only if (a) no assistant turn follows
//    (pause_turn continuation, FX-10; deferred call, FX-19), or (b) the next
//    assistant turn opens, in its leading run of result blocks, with the late
//    result (the shape the API itself answers with). Programmatic tool
//    calling (FX-21): assistant turns that hold only client `tool_use` blocks
//    whose `caller.tool_id` is the call are rounds of its running code; "the
//    next assistant turn" is then the first one after those rounds. Anything else, e.g. a
//    follow-up user text in a replayed history, gets the "was found without a
//    corresponding ..." text at the call's path. With
//    `accept_late_server_results = false`, case (b) is rejected too: that is
//    the normal form for export and follow-ups, see conversation_repair.h.
//    A late result that answers an unpaired call of the assistant turn two
//    turns back is never reported as an orphan itself (the call's violation
//    already covers it); any other result block without a call before it in
//    its turn is the reverse orphan.
//  - Modelled: an unpaired call that the API would have to run (case (a))
//    needs its tool in `tools` (`bash_code_execution` and
//    `text_editor_code_execution` are provided by `code_execution`); MCP
//    servers are not checked. The text is "... was found without a
//    corresponding `X_tool_result` block, but no `X` tool was provided".
//  - d.7: `input` of `tool_use`/`server_tool_use`/`mcp_tool_use` must be an
//    object; stream delta tags (`input_json_delta`, `text_delta`, ...) are not
//    blocks; text blocks must be non-empty. Unknown block types are accepted
//    (new ones appear; toolmesh keeps them verbatim).
//  - Not modelled: first-message role, duplicate `tool_result` ids, tool
//    blocks in the wrong role's message, image/document schemas.
//
// Thread-safety: pure functions over their arguments.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"

namespace toolmesh::common {

// Which rule a violation breaks.
enum class Rule {
  kStructure,                // wrong JSON type or value (schema phase)
  kFieldRequired,            // a required field is missing (schema phase)
  kToolInputNotObject,       // d.7 `input` is not an object (schema phase)
  kUnknownBlockTag,          // d.7 a stream delta used as a block (schema)
  kEmptyContent,             // a message with empty content
  kEmptyText,                // d.7 a text block with ""
  kToolUseWithoutResult,     // d.1, d.3, d.4
  kUnexpectedToolResult,     // d.2
  kThinkingNotFirst,         // d.5
  kServerToolWithoutResult,  // d.6 unpaired server call
  kServerResultWithoutCall,  // d.6 reverse orphan
  kServerToolNotProvided,    // d.6 unresolved call but its tool is gone
};

// A short stable name for `rule`, e.g. "tool_use_without_result".
std::string_view RuleName(Rule rule);

// One broken rule.
struct Violation {
  // Where, in the API's notation: "messages.2.content.0", "messages.1",
  // "messages" or "" for the body itself.
  std::string path;
  // The full API-style error message, path prefix included, exactly as the
  // API's `error.message` would read.
  std::string message;
  Rule rule = Rule::kStructure;
  // The original message index and block index the path names, or -1.
  int message_index = -1;
  int block_index = -1;
};

struct ValidateOptions {
  // Accept a late server result at the start of the next assistant turn
  // (d.6 case (b)). The API does; the normal form for export does not.
  bool accept_late_server_results = true;
  // Check that an unresolved server call still has its tool in `tools`.
  bool require_server_tool_definitions = true;
};

// Validates a Messages request body. Returns every violation, schema errors
// first, then conversation rules in document order; empty when the API would
// accept the conversation. Never fails or throws on any JSON value.
std::vector<Violation> ValidateRequest(const Json& body,
                                       const ValidateOptions& options = {});

// The API's 400 body for `violation`:
// {"type":"error","error":{"type":"invalid_request_error","message":...},
//  "request_id":request_id}.
Json ApiErrorBody(const Violation& violation, std::string_view request_id);

}  // namespace toolmesh::common
