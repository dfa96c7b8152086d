// toolmesh-grpc-reflect: a test-only stand-in for grpcurl's reflection
// verbs, built on reflection_client.h. It knows no toolmesh types: every
// description and every message comes from the server's reflection service.
//
//   toolmesh-grpc-reflect [-H 'key: value']... HOST:PORT list
//   toolmesh-grpc-reflect [-H ...] HOST:PORT describe SYMBOL
//   toolmesh-grpc-reflect [-H ...] HOST:PORT call METHOD [JSON]
//
// Plaintext only (the orchestrator's default). Exit status: 0 done, 1 the
// server or the call failed (one line on stderr), 2 bad usage.
// Single-threaded apart from gRPC's own threads.
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "tests/integration/reflection_client.h"

namespace {

namespace pb = ::google::protobuf;
using ::toolmesh::integration::CallMetadata;
using ::toolmesh::integration::CallUnaryJson;
using ::toolmesh::integration::ReflectedSchema;
using ::toolmesh::integration::ReflectionClient;

constexpr char kUsage[] =
    "usage: toolmesh-grpc-reflect [-H 'key: value']... HOST:PORT VERB\n"
    "Lists, describes and calls a gRPC server's methods through its server\n"
    "reflection service (grpc.reflection.v1alpha), like grpcurl.\n"
    "\n"
    "  list                 the services the server registered, one a line\n"
    "  describe SYMBOL      the definition of a service, method, message or\n"
    "                       enum (fully-qualified name)\n"
    "  call METHOD [JSON]   calls the unary METHOD (package.Service/Method)\n"
    "                       with the request JSON (default {}) and prints\n"
    "                       the response as JSON\n"
    "  -H 'key: value'      metadata for every call, e.g.\n"
    "                       -H 'authorization: Bearer TOKEN'\n"
    "\n"
    "Exit status: 0 done, 1 failed, 2 bad usage.\n";

int Usage(std::string_view problem) {
  std::cerr << "toolmesh-grpc-reflect: " << problem << "\n" << kUsage;
  return 2;
}

int Failed(const absl::Status& status) {
  std::cerr << "toolmesh-grpc-reflect: " << status << std::endl;
  return 1;
}

// The service of a method symbol (package.Service.Method -> package.Service).
std::string Parent(const std::string& symbol) {
  const std::size_t dot = symbol.rfind('.');
  return dot == std::string::npos ? std::string() : symbol.substr(0, dot);
}

// Loads the files that declare `symbol` into `schema` and prints the
// symbol's definition.
int Describe(const ReflectionClient& client, ReflectedSchema& schema,
             const std::string& symbol) {
  auto files = client.FileContainingSymbol(symbol);
  if (!files.ok()) return Failed(files.status());
  if (absl::Status s = schema.AddFiles(*files); !s.ok()) return Failed(s);
  const pb::DescriptorPool& pool = schema.pool();
  if (const auto* service = pool.FindServiceByName(symbol)) {
    std::cout << service->DebugString();
  } else if (const auto* method = pool.FindMethodByName(symbol)) {
    std::cout << method->DebugString();
  } else if (const auto* message = pool.FindMessageTypeByName(symbol)) {
    std::cout << message->DebugString();
  } else if (const auto* enum_type = pool.FindEnumTypeByName(symbol)) {
    std::cout << enum_type->DebugString();
  } else {
    return Failed(absl::NotFoundError(absl::StrCat(
        symbol, " is not a service, method, message or enum in the files "
                "the server sent")));
  }
  return 0;
}

int Call(const std::shared_ptr<grpc::Channel>& channel,
         const ReflectionClient& client, ReflectedSchema& schema,
         const std::string& method_name, const std::string& json,
         const CallMetadata& metadata) {
  std::string service = method_name;
  if (!service.empty() && service.front() == '/') service.erase(0, 1);
  const std::size_t slash = service.rfind('/');
  service = slash != std::string::npos ? service.substr(0, slash)
                                       : Parent(service);
  if (service.empty()) {
    return Usage(absl::StrCat("bad method name ", method_name));
  }
  auto files = client.FileContainingSymbol(service);
  if (!files.ok()) return Failed(files.status());
  if (absl::Status s = schema.AddFiles(*files); !s.ok()) return Failed(s);
  auto method = schema.FindMethod(method_name);
  if (!method.ok()) return Failed(method.status());
  auto response = CallUnaryJson(channel, schema, **method, json, metadata,
                                absl::Seconds(30), /*pretty=*/true);
  if (!response.ok()) return Failed(response.status());
  // The pretty printer ends with a newline of its own.
  std::cout << *response;
  if (response->empty() || response->back() != '\n') std::cout << '\n';
  std::cout.flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  CallMetadata metadata;
  std::size_t i = 0;
  for (; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (args[i] != "-H") break;
    if (i + 1 == args.size()) return Usage("-H needs 'key: value'");
    const std::string& header = args[++i];
    const std::size_t colon = header.find(':');
    if (colon == std::string::npos || colon == 0) {
      return Usage(absl::StrCat("-H ", header, ": expected 'key: value'"));
    }
    metadata.emplace_back(
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(
            absl::string_view(header).substr(0, colon))),
        std::string(absl::StripAsciiWhitespace(
            absl::string_view(header).substr(colon + 1))));
  }
  if (args.size() - i < 2) return Usage("expected HOST:PORT and a verb");
  const std::string& address = args[i];
  const std::string& verb = args[i + 1];
  const std::vector<std::string> rest(args.begin() + i + 2, args.end());

  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  ReflectionClient client(channel, metadata, absl::Seconds(30));
  ReflectedSchema schema;
  if (verb == "list" && rest.empty()) {
    auto services = client.ListServices();
    if (!services.ok()) return Failed(services.status());
    for (const std::string& name : *services) std::cout << name << "\n";
    return 0;
  }
  if (verb == "describe" && rest.size() == 1) {
    return Describe(client, schema, rest[0]);
  }
  if (verb == "call" && (rest.size() == 1 || rest.size() == 2)) {
    return Call(channel, client, schema, rest[0],
                rest.size() == 2 ? rest[1] : "{}", metadata);
  }
  return Usage(absl::StrCat("bad verb or arguments: ", verb));
}
