// A gRPC server-reflection client; see reflection_client.h.
#include "tests/integration/reflection_client.h"

#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "reflection_v1alpha.grpc.pb.h"

namespace toolmesh::integration {
namespace {

namespace pb = ::google::protobuf;
namespace rpb = ::grpc::reflection::v1alpha;

// How long past its deadline a call may take to report its end before it
// is cancelled (gRPC reports a deadline itself; this only guards a hang).
constexpr absl::Duration kGrace = absl::Seconds(5);

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

absl::StatusCode CodeFromInt(int code) {
  if (code < 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

void AddMetadata(const CallMetadata& metadata, grpc::ClientContext* context) {
  for (const auto& [key, value] : metadata) context->AddMetadata(key, value);
}

// One request and its response on a new ServerReflectionInfo stream.
absl::StatusOr<rpb::ServerReflectionResponse> Exchange(
    const std::shared_ptr<grpc::Channel>& channel,
    const CallMetadata& metadata, absl::Duration timeout,
    const rpb::ServerReflectionRequest& request) {
  std::unique_ptr<rpb::ServerReflection::Stub> service =
      rpb::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  AddMetadata(metadata, &context);
  std::unique_ptr<grpc::ClientReaderWriter<rpb::ServerReflectionRequest,
                                           rpb::ServerReflectionResponse>>
      stream = service->ServerReflectionInfo(&context);
  rpb::ServerReflectionResponse response;
  bool got_response = false;
  if (stream->Write(request)) {
    stream->WritesDone();
    got_response = stream->Read(&response);
    // Drain: the server ends the stream once it has seen our half-close.
    rpb::ServerReflectionResponse extra;
    while (stream->Read(&extra)) {
    }
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) return FromGrpcStatus(status, "server reflection");
  if (!got_response) {
    return absl::InternalError(
        "server reflection: the stream ended without a response");
  }
  if (response.has_error_response()) {
    return absl::Status(CodeFromInt(response.error_response().error_code()),
                        absl::StrCat("server reflection: ",
                                     response.error_response().error_message()));
  }
  return response;
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(CodeFromInt(static_cast<int>(status.error_code())),
                      absl::StrCat(ToAbsl(what), ": ", status.error_message()));
}

// --- ReflectionClient -------------------------------------------------------

ReflectionClient::ReflectionClient(std::shared_ptr<grpc::Channel> channel,
                                   CallMetadata metadata,
                                   absl::Duration timeout)
    : channel_(std::move(channel)),
      metadata_(std::move(metadata)),
      timeout_(timeout) {}

absl::StatusOr<std::vector<std::string>> ReflectionClient::ListServices()
    const {
  rpb::ServerReflectionRequest request;
  request.set_list_services("");
  absl::StatusOr<rpb::ServerReflectionResponse> response =
      Exchange(channel_, metadata_, timeout_, request);
  if (!response.ok()) return response.status();
  if (!response->has_list_services_response()) {
    return absl::InternalError(
        "server reflection: list_services was not answered with a service "
        "list");
  }
  std::vector<std::string> names;
  for (const rpb::ServiceResponse& service :
       response->list_services_response().service()) {
    names.push_back(service.name());
  }
  return names;
}

absl::StatusOr<std::vector<pb::FileDescriptorProto>>
ReflectionClient::FileContainingSymbol(std::string_view symbol) const {
  rpb::ServerReflectionRequest request;
  request.set_file_containing_symbol(std::string(symbol));
  absl::StatusOr<rpb::ServerReflectionResponse> response =
      Exchange(channel_, metadata_, timeout_, request);
  if (!response.ok()) return response.status();
  if (!response->has_file_descriptor_response()) {
    return absl::InternalError(absl::StrCat(
        "server reflection: file_containing_symbol ", ToAbsl(symbol),
        " was not answered with files"));
  }
  std::vector<pb::FileDescriptorProto> files;
  for (const std::string& bytes :
       response->file_descriptor_response().file_descriptor_proto()) {
    pb::FileDescriptorProto file;
    if (!file.ParseFromString(bytes)) {
      return absl::InternalError(absl::StrCat(
          "server reflection: a file sent for ", ToAbsl(symbol),
          " is not a FileDescriptorProto (", bytes.size(), " bytes)"));
    }
    files.push_back(std::move(file));
  }
  return files;
}

// --- ReflectedSchema --------------------------------------------------------

// Collects what the pool reports while it builds files, so that a bad file
// becomes a Status instead of a log line.
class ReflectedSchema::Errors final : public pb::DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, const std::string& element_name,
                const pb::Message* /*descriptor*/, ErrorLocation /*location*/,
                const std::string& message) override {
    errors_.push_back(absl::StrCat(filename, ": ", element_name, ": ", message));
  }

  // Returns the errors so far, joined, and forgets them.
  std::string Take() {
    std::string joined = absl::StrJoin(errors_, "; ");
    errors_.clear();
    return joined;
  }

 private:
  std::vector<std::string> errors_;
};

ReflectedSchema::ReflectedSchema()
    : errors_(std::make_unique<Errors>()),
      pool_(std::make_unique<pb::DescriptorPool>(&database_, errors_.get())),
      factory_(std::make_unique<pb::DynamicMessageFactory>(pool_.get())) {}

// The factory and the pool refer to the database and the collector: they go
// first (members are destroyed in reverse order of declaration, which is
// this order already; the explicit resets document it).
ReflectedSchema::~ReflectedSchema() {
  factory_.reset();
  pool_.reset();
}

absl::Status ReflectedSchema::AddFiles(
    const std::vector<pb::FileDescriptorProto>& files) {
  for (const pb::FileDescriptorProto& file : files) {
    std::string bytes;
    if (!file.SerializeToString(&bytes)) {
      return absl::InvalidArgumentError(
          absl::StrCat("file ", file.name(), " does not serialize"));
    }
    auto it = files_.find(file.name());
    if (it != files_.end()) {
      if (it->second == bytes) continue;
      return absl::AlreadyExistsError(absl::StrCat(
          "a different file named ", file.name(), " was added before"));
    }
    if (!database_.Add(file)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file ", file.name(), " conflicts with a file added before"));
    }
    files_.emplace(file.name(), std::move(bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<const pb::FileDescriptor*> ReflectedSchema::BuildFile(
    std::string_view file_name) {
  const pb::FileDescriptor* file =
      pool_->FindFileByName(std::string(file_name));
  const std::string errors = errors_->Take();
  if (file != nullptr) return file;
  if (!errors.empty()) return absl::InvalidArgumentError(errors);
  return absl::NotFoundError(
      absl::StrCat("no file named ", ToAbsl(file_name)));
}

absl::StatusOr<const pb::ServiceDescriptor*> ReflectedSchema::FindService(
    std::string_view full_name) {
  const pb::ServiceDescriptor* service =
      pool_->FindServiceByName(std::string(full_name));
  const std::string errors = errors_->Take();
  if (service != nullptr) return service;
  if (!errors.empty()) return absl::InvalidArgumentError(errors);
  return absl::NotFoundError(
      absl::StrCat("no service named ", ToAbsl(full_name)));
}

absl::StatusOr<const pb::MethodDescriptor*> ReflectedSchema::FindMethod(
    std::string_view name) {
  if (!name.empty() && name.front() == '/') name.remove_prefix(1);
  std::size_t split = name.rfind('/');
  if (split == std::string_view::npos) split = name.rfind('.');
  if (split == std::string_view::npos || split == 0 ||
      split + 1 == name.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("method name ", ToAbsl(name),
                     " is not package.Service/Method"));
  }
  absl::StatusOr<const pb::ServiceDescriptor*> service =
      FindService(name.substr(0, split));
  if (!service.ok()) return service.status();
  const std::string method_name(name.substr(split + 1));
  const pb::MethodDescriptor* method =
      (*service)->FindMethodByName(method_name);
  if (method == nullptr) {
    return absl::NotFoundError(absl::StrCat(
        "service ", (*service)->full_name(), " has no method ", method_name));
  }
  return method;
}

std::unique_ptr<pb::Message> ReflectedSchema::NewMessage(
    const pb::Descriptor& type) {
  return std::unique_ptr<pb::Message>(factory_->GetPrototype(&type)->New());
}

// --- CallUnaryJson ----------------------------------------------------------

absl::StatusOr<std::string> CallUnaryJson(
    const std::shared_ptr<grpc::Channel>& channel, ReflectedSchema& schema,
    const pb::MethodDescriptor& method, std::string_view request_json,
    const CallMetadata& metadata, absl::Duration timeout, bool pretty) {
  if (method.client_streaming() || method.server_streaming()) {
    return absl::UnimplementedError(absl::StrCat(
        method.full_name(), " is a streaming method; only unary calls are "
                            "supported"));
  }
  std::unique_ptr<pb::Message> request =
      schema.NewMessage(*method.input_type());
  pb::util::JsonParseOptions parse_options;
  parse_options.ignore_unknown_fields = false;
  pb::util::Status parsed = pb::util::JsonStringToMessage(
      std::string(request_json), request.get(), parse_options);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("request is not a ", method.input_type()->full_name(),
                     " in JSON: ", std::string(parsed.message())));
  }
  std::string request_bytes;
  if (!request->SerializeToString(&request_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", method.input_type()->full_name(),
                     " does not serialize (a required field unset?)"));
  }

  grpc::GenericStub generic(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  AddMetadata(metadata, &context);
  grpc::Slice request_slice(request_bytes);
  grpc::ByteBuffer request_buffer(&request_slice, 1);
  grpc::ByteBuffer response_buffer;
  absl::Notification done;
  grpc::Status status;
  const std::string path = absl::StrCat("/", method.service()->full_name(),
                                        "/", method.name());
  generic.UnaryCall(&context, path, grpc::StubOptions(), &request_buffer,
                    &response_buffer, [&status, &done](grpc::Status s) {
                      status = std::move(s);
                      done.Notify();
                    });
  if (!done.WaitForNotificationWithTimeout(timeout + kGrace)) {
    context.TryCancel();
    done.WaitForNotification();
  }
  if (!status.ok()) return FromGrpcStatus(status, path);

  std::vector<grpc::Slice> slices;
  if (!response_buffer.Dump(&slices).ok()) {
    return absl::InternalError(absl::StrCat(path, ": unreadable response"));
  }
  std::string response_bytes;
  for (const grpc::Slice& slice : slices) {
    response_bytes.append(reinterpret_cast<const char*>(slice.begin()),
                          slice.size());
  }
  std::unique_ptr<pb::Message> response =
      schema.NewMessage(*method.output_type());
  if (!response->ParseFromString(response_bytes)) {
    return absl::InternalError(
        absl::StrCat(path, ": the response is not a ",
                     method.output_type()->full_name(), " (",
                     response_bytes.size(), " bytes)"));
  }
  pb::util::JsonPrintOptions print_options;
  print_options.add_whitespace = pretty;
  std::string json;
  pb::util::Status printed =
      pb::util::MessageToJsonString(*response, &json, print_options);
  if (!printed.ok()) {
    return absl::InternalError(absl::StrCat(
        path, ": cannot print the response as JSON: ",
        std::string(printed.message())));
  }
  return json;
}

}  // namespace toolmesh::integration
