// Bearer-token checks; see auth.h.
#include "orchestrator/grpc/auth.h"

#include <cstdlib>
#include <utility>

namespace toolmesh::orchestrator {
namespace {

constexpr std::string_view kAuthorizationKey = "authorization";
constexpr std::string_view kBearer = "bearer";

bool StartsWithBearerScheme(std::string_view value) {
  if (value.size() < kBearer.size()) return false;
  for (std::size_t i = 0; i < kBearer.size(); ++i) {
    char c = value[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kBearer[i]) return false;
  }
  return true;
}

std::optional<std::string_view> AuthorizationOf(
    const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(grpc::string_ref(kAuthorizationKey.data(),
                                           kAuthorizationKey.size()));
  if (it == metadata.end()) return std::nullopt;
  return std::string_view(it->second.data(), it->second.size());
}

std::string EnvOrEmpty(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

}  // namespace

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  // Every byte of `a` is visited whatever the inputs; `volatile` keeps the
  // compiler from turning the loop into an early-exit comparison.
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const unsigned char other =
        b.empty() ? 0 : static_cast<unsigned char>(b[i % b.size()]);
    diff = diff | static_cast<unsigned char>(
                      static_cast<unsigned char>(a[i]) ^ other);
  }
  return diff == 0;
}

absl::Status CheckBearer(std::optional<std::string_view> authorization,
                         std::string_view expected) {
  if (expected.empty()) return absl::OkStatus();
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "missing authorization metadata (expected \"Bearer <token>\")");
  }
  std::string_view value = *authorization;
  if (!StartsWithBearerScheme(value) || value.size() == kBearer.size() ||
      value[kBearer.size()] != ' ') {
    return absl::UnauthenticatedError(
        "authorization metadata is not \"Bearer <token>\"");
  }
  std::string_view token = value.substr(kBearer.size() + 1);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  if (token.empty()) {
    return absl::UnauthenticatedError("authorization metadata has no token");
  }
  if (!ConstantTimeEquals(token, expected)) {
    return absl::PermissionDeniedError(
        "the presented token is not valid for this service");
  }
  return absl::OkStatus();
}

Authenticator::Authenticator(std::string client_token,
                             std::string worker_token)
    : client_token_(std::move(client_token)),
      worker_token_(std::move(worker_token)) {}

Authenticator Authenticator::FromEnvironment() {
  return Authenticator(EnvOrEmpty("TOOLMESH_CLIENT_TOKEN"),
                       EnvOrEmpty("TOOLMESH_WORKER_TOKEN"));
}

absl::Status Authenticator::CheckClient(
    const grpc::ServerContextBase& context) const {
  return CheckBearer(AuthorizationOf(context), client_token_);
}

absl::Status Authenticator::CheckWorker(
    const grpc::ServerContextBase& context) const {
  return CheckBearer(AuthorizationOf(context), worker_token_);
}

}  // namespace toolmesh::orchestrator
