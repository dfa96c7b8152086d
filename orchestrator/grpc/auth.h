// Bearer-token authentication of the orchestrator's gRPC services, with two
// roles and named principals.
//
// Clients (TaskService) and workers (WorkerService) present
// `authorization: Bearer <token>` metadata. Each role has a list of named
// tokens (the daemon reads them from --client-token-file /
// --worker-token-file, or TOOLMESH_CLIENT_TOKEN / TOOLMESH_WORKER_TOKEN,
// which are named "default"); an empty list switches authentication off for
// that role. Each reactor checks its call once, before it talks to the
// engine:
//   - no authorization metadata, one that is not a non-empty
//     "Bearer <token>" credential, or a token that is no one's:
//     UNAUTHENTICATED;
//   - a valid token of the other role (a worker token on TaskService, a
//     client token on WorkerService): PERMISSION_DENIED;
//   - a token of the right role: OK, and the principal's name (which the
//     engine uses for per-client limits).
// The presented token is compared with every token of both roles, each
// comparison in time that does not depend on where the strings differ, and
// without stopping at the first match, so the time taken does not say
// which token (or whether any) matched. Error messages and logs never
// contain a token; they may contain a principal's name.
//
// Thread-safety: Authenticator is immutable after construction; its const
// methods are safe from any thread. The free functions have no state.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"
#include "orchestrator/engine/engine_api.h"

namespace toolmesh::orchestrator {

// The principal name of every caller of a role whose authentication is off
// (--insecure-no-auth); the engine's Caller::client for such clients.
inline constexpr const char* kAnonymousPrincipal = kAnonymousClient;
// The principal name of a token given by environment variable, or as the
// only unnamed token of a file.
inline constexpr char kDefaultPrincipal[] = "default";

// One accepted token and the name of whoever holds it.
struct NamedToken {
  std::string name;
  std::string token;
};

// True when `a` and `b` are equal. Runs in time that depends only on the
// length of `a` (the presented credential), not on the position of the
// first difference nor on the content of `b`.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// The token of one `authorization` metadata value (std::nullopt: absent).
// kUnauthenticated when it is absent, not of the form "Bearer <token>"
// (scheme case-insensitive) or the token is empty. The returned view points
// into `authorization`.
absl::StatusOr<std::string_view> ParseBearer(
    std::optional<std::string_view> authorization);

class Authenticator {
 public:
  // `client_tokens` guard TaskService, `worker_tokens` WorkerService; an
  // empty list disables the check for that service. The lists should not
  // share a token (the daemon refuses that at start); if they do, the
  // token authenticates for both roles.
  Authenticator(std::vector<NamedToken> client_tokens,
                std::vector<NamedToken> worker_tokens);
  // One token per role, both named "default"; empty disables that role.
  Authenticator(std::string client_token, std::string worker_token);

  // Reads TOOLMESH_CLIENT_TOKEN and TOOLMESH_WORKER_TOKEN (unset = empty).
  static Authenticator FromEnvironment();

  // The name of the client principal that made the call (see the rules at
  // the top), or kAnonymousPrincipal when client authentication is off.
  // kUnauthenticated or kPermissionDenied as described above.
  absl::StatusOr<std::string> AuthenticateClient(
      const grpc::ServerContextBase& context) const;
  // The same for WorkerService and the worker tokens.
  absl::StatusOr<std::string> AuthenticateWorker(
      const grpc::ServerContextBase& context) const;

  // AuthenticateClient / AuthenticateWorker without the name.
  absl::Status CheckClient(const grpc::ServerContextBase& context) const;
  absl::Status CheckWorker(const grpc::ServerContextBase& context) const;

  // The same checks on one `authorization` value (std::nullopt: absent);
  // what the context overloads use, exposed for tests.
  absl::StatusOr<std::string> AuthenticateClient(
      std::optional<std::string_view> authorization) const;
  absl::StatusOr<std::string> AuthenticateWorker(
      std::optional<std::string_view> authorization) const;

  bool client_auth_enabled() const { return !client_tokens_.empty(); }
  bool worker_auth_enabled() const { return !worker_tokens_.empty(); }

 private:
  // `own` is the role the service accepts, `other` the other role's list;
  // `service` and `other_role` only word the error messages.
  static absl::StatusOr<std::string> Authenticate(
      std::optional<std::string_view> authorization,
      const std::vector<NamedToken>& own, const std::vector<NamedToken>& other,
      std::string_view service, std::string_view other_role);

  // Constant after construction.
  const std::vector<NamedToken> client_tokens_;
  const std::vector<NamedToken> worker_tokens_;
};

}  // namespace toolmesh::orchestrator
