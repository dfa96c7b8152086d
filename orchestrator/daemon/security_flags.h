// The orchestrator daemon's security flags and how they combine with the
// environment, separate from main() so that the rules can be tested:
//
//   --client-token-file F   the client tokens (TaskService); wins over
//                           TOOLMESH_CLIENT_TOKEN
//   --worker-token-file F   the worker tokens (WorkerService); wins over
//                           TOOLMESH_WORKER_TOKEN
//   --insecure-no-auth      allow a service to run without a token
//   --tls-cert F --tls-key F          TLS for gRPC (and the HTTP endpoint)
//   --tls-client-ca F       require client certificates signed by F (mTLS;
//                           both services share the gRPC port, so this
//                           applies to workers and clients alike)
//   --max-message-bytes N   largest gRPC message accepted (default 4 MiB)
//
// Token files (ParseTokenList): one token per line, `NAME:TOKEN` or a bare
// TOKEN; blank lines and lines starting with # are skipped. Each token's
// name identifies its holder (per-client task limits, logs); a token from
// the environment, or the only bare token of a file, is named "default",
// other bare tokens "line-N" (N its line number). Names and tokens are
// unique within a file, and no token may be both a client and a worker
// token. A file of one bare token is the old single-token format.
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

// Parses the text of a token file (format above). `source` names the file
// in errors. kInvalidArgument with one line naming `source` and the line
// number, never the token: a malformed name, a token that fails
// ValidateToken(), a repeated name or token, no token at all.
absl::StatusOr<std::vector<NamedToken>> ParseTokenList(
    std::string_view text, std::string_view source);

// Reads and parses the token file at `path` (at most 1 MiB).
// kInvalidArgument "token file: cannot read PATH" and as ParseTokenList.
absl::StatusOr<std::vector<NamedToken>> ReadTokenListFile(
    const std::string& path);

// What the daemon serves with, once files are read.
struct ServerSecurity {
  // Empty: that service is unauthenticated.
  std::vector<NamedToken> client_tokens;
  std::vector<NamedToken> worker_tokens;
  std::shared_ptr<grpc::ServerCredentials> credentials;
  bool tls = false;
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Lines to log at start (running without authentication).
  std::vector<std::string> warnings;
  // Lines to log at start: the names (never the tokens) each service
  // accepts.
  std::vector<std::string> notices;

  Authenticator MakeAuthenticator() const {
    return Authenticator(client_tokens, worker_tokens);
  }
};

// Reads the token files and the TLS files, takes TOOLMESH_CLIENT_TOKEN and
// TOOLMESH_WORKER_TOKEN from `getenv` (nullptr or "": unset) when no file
// is named, and applies the authentication rule. kInvalidArgument with one
// line: an unreadable, empty or malformed token or TLS file, a malformed
// token in the environment, a token that is both a client and a worker
// token, a service without a token and no --insecure-no-auth, TLS flags
// that do not go together.
absl::StatusOr<ServerSecurity> ResolveServerSecurity(
    const SecurityFlags& flags,
    absl::FunctionRef<const char*(const char*)> getenv);

}  // namespace toolmesh::orchestrator
