// Bearer-token checks with roles and named principals; see auth.h.
#include "orchestrator/grpc/auth.h"

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace toolmesh::orchestrator {
namespace {

constexpr std::string_view kAuthorizationKey = "authorization";
constexpr std::string_view kBearer = "bearer";

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

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

std::vector<NamedToken> DefaultList(std::string token) {
  std::vector<NamedToken> list;
  if (!token.empty()) list.push_back({kDefaultPrincipal, std::move(token)});
  return list;
}

// The index of the token in `list` equal to `token`, or -1. Compares with
// every entry whatever matched, so the time does not reveal the index.
int FindToken(std::string_view token, const std::vector<NamedToken>& list) {
  int found = -1;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const bool equal = ConstantTimeEquals(token, list[i].token);
    // Branch-free select: `found` keeps the first match.
    const int candidate = static_cast<int>(i);
    const int take = static_cast<int>(equal) & static_cast<int>(found < 0);
    found = take * candidate + (1 - take) * found;
  }
  return found;
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

absl::StatusOr<std::string_view> ParseBearer(
    std::optional<std::string_view> authorization) {
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
  return token;
}

Authenticator::Authenticator(std::vector<NamedToken> client_tokens,
                             std::vector<NamedToken> worker_tokens)
    : client_tokens_(std::move(client_tokens)),
      worker_tokens_(std::move(worker_tokens)) {}

Authenticator::Authenticator(std::string client_token,
                             std::string worker_token)
    : Authenticator(DefaultList(std::move(client_token)),
                    DefaultList(std::move(worker_token))) {}

Authenticator Authenticator::FromEnvironment() {
  return Authenticator(EnvOrEmpty("TOOLMESH_CLIENT_TOKEN"),
                       EnvOrEmpty("TOOLMESH_WORKER_TOKEN"));
}

absl::StatusOr<std::string> Authenticator::Authenticate(
    std::optional<std::string_view> authorization,
    const std::vector<NamedToken>& own, const std::vector<NamedToken>& other,
    std::string_view service, std::string_view other_role) {
  if (own.empty()) return std::string(kAnonymousPrincipal);
  absl::StatusOr<std::string_view> token = ParseBearer(authorization);
  if (!token.ok()) return token.status();
  // Both lists are always searched in full.
  const int mine = FindToken(*token, own);
  const int theirs = FindToken(*token, other);
  if (mine >= 0) return own[static_cast<std::size_t>(mine)].name;
  if (theirs >= 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "a ", ToAbsl(other_role), " token (\"",
        other[static_cast<std::size_t>(theirs)].name, "\") may not call ",
        ToAbsl(service)));
  }
  return absl::UnauthenticatedError(absl::StrCat(
      "the presented token is not valid for ", ToAbsl(service)));
}

absl::StatusOr<std::string> Authenticator::AuthenticateClient(
    std::optional<std::string_view> authorization) const {
  return Authenticate(authorization, client_tokens_, worker_tokens_,
                      "TaskService", "worker");
}

absl::StatusOr<std::string> Authenticator::AuthenticateWorker(
    std::optional<std::string_view> authorization) const {
  return Authenticate(authorization, worker_tokens_, client_tokens_,
                      "WorkerService", "client");
}

absl::StatusOr<std::string> Authenticator::AuthenticateClient(
    const grpc::ServerContextBase& context) const {
  return AuthenticateClient(AuthorizationOf(context));
}

absl::StatusOr<std::string> Authenticator::AuthenticateWorker(
    const grpc::ServerContextBase& context) const {
  return AuthenticateWorker(AuthorizationOf(context));
}

absl::Status Authenticator::CheckClient(
    const grpc::ServerContextBase& context) const {
  return AuthenticateClient(context).status();
}

absl::Status Authenticator::CheckWorker(
    const grpc::ServerContextBase& context) const {
  return AuthenticateWorker(context).status();
}

}  // namespace toolmesh::orchestrator
