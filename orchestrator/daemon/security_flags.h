// The orchestrator daemon's security flags and how they combine with the
// environment, separate from main() so that the rules can be tested:
//
//   --client-token-file F   the client token (TaskService); wins over
//                           TOOLMESH_CLIENT_TOKEN
//   --worker-token-file F   the worker token (WorkerService); wins over
//                           TOOLMESH_WORKER_TOKEN
//   --insecure-no-auth      allow a service to run without a token
//   --tls-cert F --tls-key F          TLS for gRPC (and the HTTP endpoint)
//   --tls-client-ca F       require client certificates signed by F (mTLS;
//                           both services share the gRPC port, so this
//                           applies to workers and clients alike)
//   --max-message-bytes N   largest gRPC message accepted (default 4 MiB)
//
// Authentication rule: each service needs its token. A service without
// one is served unauthenticated only when --insecure-no-auth is given, and
// then a warning line says so at start; otherwise start-up fails with a
// line that names both ways out (set the token, or pass the flag).
//
// Thread-safety: free functions without shared state.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"
#include "orchestrator/grpc/auth.h"
#include "orchestrator/grpc/transport_security.h"

namespace toolmesh::orchestrator {

// The flags above as given (files are not read yet).
struct SecurityFlags {
  std::string client_token_file;
  std::string worker_token_file;
  bool insecure_no_auth = false;
  ServerTlsOptions tls;
  int max_message_bytes = kDefaultMaxMessageBytes;
};

// True when `name` (e.g. "--tls-cert") is one of the flags above;
// `*takes_value` then says whether it wants a value.
bool IsSecurityFlag(std::string_view name, bool* takes_value);

// Records flag `name` (IsSecurityFlag must hold) with `value` (ignored for
// --insecure-no-auth). kInvalidArgument with one line naming the flag: an
// empty file name, a bad --max-message-bytes.
absl::Status ApplySecurityFlag(std::string_view name, std::string_view value,
                               SecurityFlags& flags);

// What the daemon serves with, once files are read.
struct ServerSecurity {
  std::string client_token;  // empty: TaskService unauthenticated
  std::string worker_token;  // empty: WorkerService unauthenticated
  std::shared_ptr<grpc::ServerCredentials> credentials;
  bool tls = false;
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Lines to log at start (running without authentication).
  std::vector<std::string> warnings;

  Authenticator MakeAuthenticator() const {
    return Authenticator(client_token, worker_token);
  }
};

// Reads the token files and the TLS files, takes TOOLMESH_CLIENT_TOKEN and
// TOOLMESH_WORKER_TOKEN from `getenv` (nullptr or "": unset) when no file
// is named, and applies the authentication rule. kInvalidArgument with one
// line: an unreadable, empty or malformed token or TLS file, a malformed
// token in the environment, a service without a token and no
// --insecure-no-auth, TLS flags that do not go together.
absl::StatusOr<ServerSecurity> ResolveServerSecurity(
    const SecurityFlags& flags,
    absl::FunctionRef<const char*(const char*)> getenv);

}  // namespace toolmesh::orchestrator
