// A gRPC server-reflection client, the way grpcurl uses reflection: list a
// server's services, fetch the FileDescriptorProtos that declare a symbol
// (with their dependencies), build a DescriptorPool from them alone, and call
// a unary method with a request written as JSON text, the request and the
// response being DynamicMessages of that pool sent as raw bytes over
// grpc::GenericStub. Nothing here knows toolmesh's generated classes, so a
// passing test proves that a client that has only the server's address can
// describe and call it.
//
// Test-only (tests/integration/): used by reflection_test.cc and the
// toolmesh-grpc-reflect tool. It compiles its own copy of the reflection
// schema (reflection_v1alpha.proto) and so must never share a binary with
// grpc++_reflection.
//
// Thread-safety: ReflectionClient is safe to use from several threads (each
// call opens its own stream). ReflectedSchema is not: AddFiles() and the
// lookups must not run concurrently; CallUnaryJson() only reads it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace toolmesh::integration {

// gRPC metadata sent with a call, e.g. {"authorization", "Bearer TOKEN"}.
// Keys must be lower case (a gRPC rule).
using CallMetadata = std::vector<std::pair<std::string, std::string>>;

// The google.rpc-style error of a gRPC call as an absl::Status (same code
// numbers), with `what` before the server's message.
absl::Status FromGrpcStatus(const grpc::Status& status, std::string_view what);

class ReflectionClient {
 public:
  // `channel` must not be null. `metadata` goes with every reflection call;
  // each call is bounded by `timeout`.
  ReflectionClient(std::shared_ptr<grpc::Channel> channel,
                   CallMetadata metadata = {},
                   absl::Duration timeout = absl::Seconds(10));

  // The fully-qualified names of every service the server registered, in
  // the server's order. Blocks for one reflection exchange.
  // Errors: the call's gRPC code (kUnavailable when nothing listens,
  // kUnimplemented when the server has no reflection service,
  // kDeadlineExceeded after the timeout); the server's ErrorResponse code;
  // kInternal when the answer is not a service list.
  absl::StatusOr<std::vector<std::string>> ListServices() const;

  // The file that declares `symbol` (a message, enum, service or
  // package.Service.Method) and its transitive dependencies, as the server
  // sent them (dependencies are usually, not necessarily, first).
  // Errors: as ListServices(); kNotFound when the server does not know the
  // symbol; kInternal when a file does not parse as a FileDescriptorProto.
  absl::StatusOr<std::vector<google::protobuf::FileDescriptorProto>>
  FileContainingSymbol(std::string_view symbol) const;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  CallMetadata metadata_;
  absl::Duration timeout_;
};

// Descriptors learned at run time (from reflection or anything else that
// yields FileDescriptorProtos) and messages made from them. The pool reads
// only the files given to AddFiles(); the generated pool of the process is
// never consulted.
class ReflectedSchema {
 public:
  ReflectedSchema();
  ~ReflectedSchema();

  ReflectedSchema(const ReflectedSchema&) = delete;
  ReflectedSchema& operator=(const ReflectedSchema&) = delete;

  // Adds files. A file whose name was added before is skipped when it is
  // byte-for-byte the same and rejected otherwise.
  // Errors: kAlreadyExists for a different file under a known name.
  absl::Status AddFiles(
      const std::vector<google::protobuf::FileDescriptorProto>& files);

  // Builds the file named `file_name` and every dependency in the pool.
  // Errors: kNotFound (not added, or a dependency missing), kInvalidArgument
  // (the descriptors do not build; the message has the pool's errors).
  absl::StatusOr<const google::protobuf::FileDescriptor*> BuildFile(
      std::string_view file_name);

  // A service by its fully-qualified name, built on demand.
  // Errors: kNotFound; kInvalidArgument as BuildFile().
  absl::StatusOr<const google::protobuf::ServiceDescriptor*> FindService(
      std::string_view full_name);

  // A method as grpcurl names it: "package.Service/Method" or
  // "package.Service.Method". Errors: kInvalidArgument for a malformed
  // name; kNotFound for an unknown service or method.
  absl::StatusOr<const google::protobuf::MethodDescriptor*> FindMethod(
      std::string_view name);

  // An empty DynamicMessage of `type`, which must come from this schema's
  // pool. It must not outlive this schema.
  std::unique_ptr<google::protobuf::Message> NewMessage(
      const google::protobuf::Descriptor& type);

  // The pool; valid as long as this schema.
  const google::protobuf::DescriptorPool& pool() const { return *pool_; }

 private:
  class Errors;

  // The serialized bytes of every file added, by name.
  std::map<std::string, std::string, std::less<>> files_;
  google::protobuf::SimpleDescriptorDatabase database_;
  std::unique_ptr<Errors> errors_;
  std::unique_ptr<google::protobuf::DescriptorPool> pool_;
  std::unique_ptr<google::protobuf::DynamicMessageFactory> factory_;
};

// Calls the unary `method` on `channel` like
// `grpcurl -d REQUEST_JSON host:port Service/Method`: parses `request_json`
// (proto3 JSON mapping, unknown fields rejected) into a message of the
// method's input type, sends its bytes through grpc::GenericStub, parses the
// response bytes as the output type and returns them as JSON text
// (`pretty`: indented). `method` must come from `schema`; both must outlive
// the call. Blocks for at most `timeout` (plus a short grace).
// Errors: kInvalidArgument (request JSON does not fit the type),
// kUnimplemented (a streaming method), the call's gRPC code, kInternal
// (response bytes do not parse as the output type).
absl::StatusOr<std::string> CallUnaryJson(
    const std::shared_ptr<grpc::Channel>& channel, ReflectedSchema& schema,
    const google::protobuf::MethodDescriptor& method,
    std::string_view request_json, const CallMetadata& metadata = {},
    absl::Duration timeout = absl::Seconds(10), bool pretty = false);

}  // namespace toolmesh::integration
