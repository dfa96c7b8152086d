#include "orchestrator/grpc/status_conversion.h"

#include <utility>

namespace toolmesh::rpc {
namespace {

// Both enums number their codes identically (0..16, from the same
// google.rpc.Code); the switches below still spell every pair out so that a
// divergence would be a visible edit, not a silent cast.

bool ShapeMatches(const common::Json& value, JsonShape shape) {
  switch (shape) {
    case JsonShape::kAny:
      return true;
    case JsonShape::kObject:
      return value.is_object();
    case JsonShape::kArray:
      return value.is_array();
    case JsonShape::kStringOrArray:
      return value.is_string() || value.is_array();
  }
  return false;
}

std::string_view KindOf(const common::Json& value) {
  if (value.is_object()) return "an object";
  if (value.is_array()) return "an array";
  if (value.is_string()) return "a string";
  if (value.is_boolean()) return "a boolean";
  if (value.is_number()) return "a number";
  return "null";
}

}  // namespace

::grpc::StatusCode ToGrpcCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return ::grpc::StatusCode::OK;
    case absl::StatusCode::kCancelled:
      return ::grpc::StatusCode::CANCELLED;
    case absl::StatusCode::kUnknown:
      return ::grpc::StatusCode::UNKNOWN;
    case absl::StatusCode::kInvalidArgument:
      return ::grpc::StatusCode::INVALID_ARGUMENT;
    case absl::StatusCode::kDeadlineExceeded:
      return ::grpc::StatusCode::DEADLINE_EXCEEDED;
    case absl::StatusCode::kNotFound:
      return ::grpc::StatusCode::NOT_FOUND;
    case absl::StatusCode::kAlreadyExists:
      return ::grpc::StatusCode::ALREADY_EXISTS;
    case absl::StatusCode::kPermissionDenied:
      return ::grpc::StatusCode::PERMISSION_DENIED;
    case absl::StatusCode::kResourceExhausted:
      return ::grpc::StatusCode::RESOURCE_EXHAUSTED;
    case absl::StatusCode::kFailedPrecondition:
      return ::grpc::StatusCode::FAILED_PRECONDITION;
    case absl::StatusCode::kAborted:
      return ::grpc::StatusCode::ABORTED;
    case absl::StatusCode::kOutOfRange:
      return ::grpc::StatusCode::OUT_OF_RANGE;
    case absl::StatusCode::kUnimplemented:
      return ::grpc::StatusCode::UNIMPLEMENTED;
    case absl::StatusCode::kInternal:
      return ::grpc::StatusCode::INTERNAL;
    case absl::StatusCode::kUnavailable:
      return ::grpc::StatusCode::UNAVAILABLE;
    case absl::StatusCode::kDataLoss:
      return ::grpc::StatusCode::DATA_LOSS;
    case absl::StatusCode::kUnauthenticated:
      return ::grpc::StatusCode::UNAUTHENTICATED;
    default:
      // absl reserves a value that must not be switched on exhaustively.
      return ::grpc::StatusCode::UNKNOWN;
  }
}

absl::StatusCode ToAbslCode(::grpc::StatusCode code) {
  switch (code) {
    case ::grpc::StatusCode::OK:
      return absl::StatusCode::kOk;
    case ::grpc::StatusCode::CANCELLED:
      return absl::StatusCode::kCancelled;
    case ::grpc::StatusCode::UNKNOWN:
      return absl::StatusCode::kUnknown;
    case ::grpc::StatusCode::INVALID_ARGUMENT:
      return absl::StatusCode::kInvalidArgument;
    case ::grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::StatusCode::kDeadlineExceeded;
    case ::grpc::StatusCode::NOT_FOUND:
      return absl::StatusCode::kNotFound;
    case ::grpc::StatusCode::ALREADY_EXISTS:
      return absl::StatusCode::kAlreadyExists;
    case ::grpc::StatusCode::PERMISSION_DENIED:
      return absl::StatusCode::kPermissionDenied;
    case ::grpc::StatusCode::RESOURCE_EXHAUSTED:
      return absl::StatusCode::kResourceExhausted;
    case ::grpc::StatusCode::FAILED_PRECONDITION:
      return absl::StatusCode::kFailedPrecondition;
    case ::grpc::StatusCode::ABORTED:
      return absl::StatusCode::kAborted;
    case ::grpc::StatusCode::OUT_OF_RANGE:
      return absl::StatusCode::kOutOfRange;
    case ::grpc::StatusCode::UNIMPLEMENTED:
      return absl::StatusCode::kUnimplemented;
    case ::grpc::StatusCode::INTERNAL:
      return absl::StatusCode::kInternal;
    case ::grpc::StatusCode::UNAVAILABLE:
      return absl::StatusCode::kUnavailable;
    case ::grpc::StatusCode::DATA_LOSS:
      return absl::StatusCode::kDataLoss;
    case ::grpc::StatusCode::UNAUTHENTICATED:
      return absl::StatusCode::kUnauthenticated;
    default:
      // DO_NOT_USE and out-of-range values from a peer.
      return absl::StatusCode::kUnknown;
  }
}

::grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return ::grpc::Status::OK;
  return ::grpc::Status(ToGrpcCode(status.code()),
                        std::string(status.message()));
}

absl::Status ToAbslStatus(const ::grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(ToAbslCode(status.error_code()),
                      status.error_message());
}

std::string_view JsonShapeName(JsonShape shape) {
  switch (shape) {
    case JsonShape::kAny:
      return "any JSON value";
    case JsonShape::kObject:
      return "an object";
    case JsonShape::kArray:
      return "an array";
    case JsonShape::kStringOrArray:
      return "a string or an array";
  }
  return "any JSON value";
}

std::string FieldPath(std::string_view parent, std::string_view field) {
  if (parent.empty()) return std::string(field);
  std::string path(parent);
  path += '.';
  path += field;
  return path;
}

std::string FieldPath(std::string_view parent, std::size_t index) {
  std::string path(parent);
  path += '[';
  path += std::to_string(index);
  path += ']';
  return path;
}

absl::StatusOr<common::Json> ParseJsonField(std::string_view field_path,
                                            std::string_view text,
                                            JsonShape shape) {
  if (text.empty()) {
    return absl::InvalidArgumentError(
        std::string(field_path) + ": required JSON text is empty");
  }
  absl::StatusOr<common::Json> parsed = common::ParseJson(text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(std::string(field_path) + ": " +
                                      std::string(parsed.status().message()));
  }
  if (!ShapeMatches(*parsed, shape)) {
    return absl::InvalidArgumentError(
        std::string(field_path) + ": expected " +
        std::string(JsonShapeName(shape)) + ", got " +
        std::string(KindOf(*parsed)));
  }
  return std::move(parsed).value();
}

absl::StatusOr<std::optional<common::Json>> ParseOptionalJsonField(
    std::string_view field_path, std::string_view text, JsonShape shape) {
  if (text.empty()) return std::optional<common::Json>();
  absl::StatusOr<common::Json> parsed =
      ParseJsonField(field_path, text, shape);
  if (!parsed.ok()) return parsed.status();
  return std::optional<common::Json>(std::move(parsed).value());
}

}  // namespace toolmesh::rpc
