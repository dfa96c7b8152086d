// Bearer-token authentication of the orchestrator's gRPC services.
//
// Clients (TaskService) and workers (WorkerService) present
// `authorization: Bearer <token>` metadata. The tokens come from the
// environment (TOOLMESH_CLIENT_TOKEN, TOOLMESH_WORKER_TOKEN); an empty token
// switches authentication off for that side. Each reactor checks its call
// once, before it talks to the engine:
//   - no authorization metadata, or one that is not a non-empty Bearer
//     credential: UNAUTHENTICATED;
//   - a Bearer token that is not the expected one (the other side's token
//     included): PERMISSION_DENIED.
// Tokens are compared in time that does not depend on where they differ.
// Error messages never contain a token.
//
// Thread-safety: Authenticator is immutable after construction; its const
// methods are safe from any thread. The free functions have no state.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/server_context.h"

namespace toolmesh::orchestrator {

// True when `a` and `b` are equal. Runs in time that depends only on the
// length of `a` (the presented credential), not on the position of the
// first difference nor on the content of `b`.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// Checks one `authorization` metadata value (std::nullopt: absent) against
// `expected`. An empty `expected` accepts everything. Otherwise: absent,
// not of the form "Bearer <token>" (scheme case-insensitive) or an empty
// token -> kUnauthenticated; another token -> kPermissionDenied.
absl::Status CheckBearer(std::optional<std::string_view> authorization,
                         std::string_view expected);

class Authenticator {
 public:
  // `client_token` guards TaskService, `worker_token` WorkerService; empty
  // disables the check for that service.
  Authenticator(std::string client_token, std::string worker_token);

  // Reads TOOLMESH_CLIENT_TOKEN and TOOLMESH_WORKER_TOKEN (unset = empty).
  static Authenticator FromEnvironment();

  // CheckBearer() of the call's first `authorization` metadata value against
  // the client token, resp. the worker token. Error codes as CheckBearer().
  absl::Status CheckClient(const grpc::ServerContextBase& context) const;
  absl::Status CheckWorker(const grpc::ServerContextBase& context) const;

  bool client_auth_enabled() const { return !client_token_.empty(); }
  bool worker_auth_enabled() const { return !worker_token_.empty(); }

 private:
  // Constant after construction.
  const std::string client_token_;
  const std::string worker_token_;
};

}  // namespace toolmesh::orchestrator
