// The one place where absl::Status and grpc::Status meet, plus helpers that
// read the JSON-text fields of toolmesh.v1 messages (`*_json` strings).
//
// gRPC reactors of the orchestrator and the worker convert at their edge:
// core classes return absl::Status, services answer grpc::Status; requests'
// JSON-text fields are parsed here with common::ParseJson so that a bad
// field becomes INVALID_ARGUMENT naming the field (e.g.
// "spec.server_tools_json[1]: invalid JSON: ...").
//
// Thread-safety: free functions without shared state; safe from any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/json.h"
#include "grpcpp/support/status.h"

namespace toolmesh::rpc {

// The gRPC code with the same meaning as `code`. The two code sets are the
// same 17 values; a value outside them (only reachable by casting) maps to
// UNKNOWN.
::grpc::StatusCode ToGrpcCode(absl::StatusCode code);

// The absl code with the same meaning as `code`; a value outside the 17
// defined codes maps to kUnknown.
absl::StatusCode ToAbslCode(::grpc::StatusCode code);

// `status` as a grpc::Status: code mapped one to one, message kept. absl
// payloads are not carried (gRPC's error_details is left empty).
::grpc::Status ToGrpcStatus(const absl::Status& status);

// `status` as an absl::Status: code mapped one to one, message kept (an OK
// status has no message, so an OK grpc::Status's message is dropped).
// error_details are not carried.
absl::Status ToAbslStatus(const ::grpc::Status& status);

// What a JSON-text field must hold.
enum class JsonShape {
  kAny,            // any JSON value
  kObject,         // a JSON object, e.g. input_schema_json, tool_choice_json
  kArray,          // a JSON array, e.g. messages_json
  kStringOrArray,  // a string or an array of blocks, e.g. content_json
};

// "object", "array", ... for messages.
std::string_view JsonShapeName(JsonShape shape);

// `parent` + "." + `field` ("spec" + "messages_json" ->
// "spec.messages_json"); just `field` when `parent` is empty.
std::string FieldPath(std::string_view parent, std::string_view field);

// `parent` + "[" + `index` + "]" ("spec.server_tools_json", 2 ->
// "spec.server_tools_json[2]").
std::string FieldPath(std::string_view parent, std::size_t index);

// Parses `text`, the value of the field named `field_path`, as one JSON
// value of shape `shape`. Errors (kInvalidArgument, the message starting with
// `field_path`): `text` is empty ("required"), not valid JSON (with the
// parser's position and reason), or of another shape. Never throws.
absl::StatusOr<common::Json> ParseJsonField(std::string_view field_path,
                                            std::string_view text,
                                            JsonShape shape = JsonShape::kAny);

// Like ParseJsonField, but an empty `text` means "absent": returns
// std::nullopt. Whitespace-only text is not empty: it is invalid JSON.
absl::StatusOr<std::optional<common::Json>> ParseOptionalJsonField(
    std::string_view field_path, std::string_view text,
    JsonShape shape = JsonShape::kAny);

}  // namespace toolmesh::rpc
