// Repairs a Messages request body that breaks the API's conversation rules
// (request_validator.h), and brings a stored history into the normal form
// that stays valid when it is exported or continued.
//
// Repair is driven by the validator: it takes the first violation, applies
// the one fix for that rule, and validates again, until the body is clean or
// a violation cannot be fixed. So whenever it reports success,
// ValidateRequest(repaired) is empty; a valid body comes back unchanged with
// no actions; and repairing a repaired body changes nothing (idempotent, on
// failure too: the partly repaired body stops at the same violation).
//
// Fixes, by rule (each one writes an action line that starts with its path):
//  - a message whose turn spans several consecutive same-role messages is
//    first merged into one message (the API merges them anyway, d.8), so the
//    fixes below work on one message per turn;
//  - merged steps (seed 002): an assistant message in which a run of client
//    `tool_use` blocks is directly followed by `thinking`,
//    `redacted_thinking` or `text` holds two generations. It is split there
//    into two assistant messages; between them goes a user message with the
//    first part's `tool_result`s, moved out of the next user message where
//    they exist, otherwise synthesised as `is_error` results saying that the
//    stream was interrupted and retried. Block order is kept;
//  - other client `tool_use` blocks that are not last (fixture 20's shape):
//    moved, in order, to the end of their message;
//  - missing or misplaced `tool_result`s: all `tool_result` blocks of the
//    next user message move to its front, and missing ones are synthesised
//    as `{"type":"tool_result","tool_use_id":..,"content":..,
//    "is_error":true}` in `tool_use` order. An assistant message at the very
//    end of the history is pending work (the client is about to run its
//    tools) and is left alone;
//  - orphan `tool_result`s (incl. ones naming `srvtoolu_` ids, fixture 19)
//    and orphan server result blocks: dropped;
//  - thinking not first: the first `thinking`/`redacted_thinking` block of
//    that assistant message moves to the front. Without one the history
//    cannot be repaired (signed thinking cannot be invented):
//    kFailedPrecondition;
//  - an unpaired server call that the API no longer accepts: a late result
//    block in the next assistant turn (after any programmatic tool calling
//    rounds of that call) moves back right after its call (and so before the
//    message's client `tool_use` blocks). Without one, the call is
//    dropped: the API never ran it, the model never saw a result, and a
//    server call without a result has no effect on client state. The same
//    for an unresolved call whose tool is no longer in `tools`;
//  - `tool_use.input` that is not an object: a string holding a JSON object
//    is parsed, anything else becomes {}; a missing `input` becomes {};
//  - blocks that fail the schema (not an object, no `type`, a stream delta,
//    an empty text, a tool block without its id) are dropped; a message left
//    empty is dropped.
// Not repairable (the status says which violation stopped it): a body that
// is not an object or has no non-empty `messages` array, a message with a bad
// `role` or `content`, thinking enabled without a thinking block to put
// first.
//
// Thread-safety: pure functions over their arguments.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/json.h"
#include "common/request_validator.h"

namespace toolmesh::common {

struct RepairResult {
  // The repaired body; when `status` is not OK, repaired as far as possible.
  Json body;
  // What was changed, one human-readable line each, starting with the path
  // it refers to (indexes as they were when that fix was made).
  std::vector<std::string> actions;
  // OK: `body` validates clean. kInvalidArgument: the body's structure is
  // broken beyond repair. kFailedPrecondition: the history cannot be
  // continued (the message names the violation and why).
  absl::Status status;
};

struct RepairOptions {
  // The rules the result must satisfy.
  ValidateOptions validate;
};

// Repairs `body` (a whole Messages request). Never throws.
RepairResult Repair(const Json& body, const RepairOptions& options = {});

// The normal form for export and for appending a follow-up: Repair() with
// late server results always moved home into the assistant message of their
// call (ValidateOptions::accept_late_server_results = false), so the history
// stays valid whatever is appended after it. Unresolved calls at the very end
// (pause_turn or deferred continuations) stay as they are.
RepairResult Normalize(const Json& body);

}  // namespace toolmesh::common
