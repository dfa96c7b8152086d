// Fuzz target for the conversation validator and repair
// (common/request_validator.h, common/conversation_repair.h).
//
// Input bytes are parsed as JSON: an object is a request body, an array is a
// `messages` array; anything else (including bytes that are not JSON) is
// wrapped as the text of one user message. Checked properties, each one
// aborting the process when broken:
//  - ValidateRequest never crashes, and every message starts with its path;
//  - Repair and Normalize never crash; when they report success, the body
//    validates clean under the rules they were asked to satisfy;
//  - a valid body is repaired to itself with no actions;
//  - Repair is idempotent: repairing its result changes nothing, with the
//    same status code.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/conversation_repair.h"
#include "common/json.h"
#include "common/request_validator.h"

namespace {

using toolmesh::common::Json;

void Check(bool condition) {
  if (!condition) std::abort();
}

Json BodyFromBytes(std::string_view bytes) {
  absl::StatusOr<Json> parsed = toolmesh::common::ParseJson(bytes);
  if (parsed.ok() && parsed->is_object()) return *parsed;
  Json body = Json::object();
  body["model"] = "claude-sonnet-4-5";
  body["max_tokens"] = 16;
  if (parsed.ok() && parsed->is_array()) {
    body["messages"] = *parsed;
    return body;
  }
  Json block = Json::object();
  block["type"] = "text";
  block["text"] = std::string(bytes);
  Json message = Json::object();
  message["role"] = "user";
  message["content"] = Json::array({block});
  body["messages"] = Json::array({message});
  return body;
}

void CheckRepair(const Json& body, const toolmesh::common::RepairResult& result,
                 const toolmesh::common::ValidateOptions& rules,
                 bool input_valid) {
  using toolmesh::common::Repair;
  using toolmesh::common::RepairOptions;
  using toolmesh::common::ValidateRequest;
  if (result.status.ok()) {
    Check(ValidateRequest(result.body, rules).empty());
    Check(ValidateRequest(result.body).empty());
  }
  if (input_valid) {
    Check(result.status.ok());
    Check(result.actions.empty());
    Check(result.body == body);
  }
  RepairOptions options;
  options.validate = rules;
  toolmesh::common::RepairResult again = Repair(result.body, options);
  Check(again.status.code() == result.status.code());
  Check(again.actions.empty());
  Check(again.body == result.body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Json body = BodyFromBytes(
      std::string_view(reinterpret_cast<const char*>(data), size));

  toolmesh::common::ValidateOptions defaults;
  const auto violations = toolmesh::common::ValidateRequest(body, defaults);
  for (const auto& v : violations) {
    Check(!v.message.empty());
    Check(v.path.empty() || v.message.rfind(v.path + ": ", 0) == 0);
  }
  if (!violations.empty()) {
    Json error = toolmesh::common::ApiErrorBody(violations.front(), "req_x");
    Check(error["error"]["message"] == violations.front().message);
  }

  CheckRepair(body, toolmesh::common::Repair(body), defaults,
              violations.empty());

  toolmesh::common::ValidateOptions strict;
  strict.accept_late_server_results = false;
  CheckRepair(body, toolmesh::common::Normalize(body), strict,
              toolmesh::common::ValidateRequest(body, strict).empty());
  return 0;
}
