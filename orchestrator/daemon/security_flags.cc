// The orchestrator daemon's security flags; see security_flags.h.
#include "orchestrator/daemon/security_flags.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace toolmesh::orchestrator {
namespace {

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// One service's token: from `file` when named, else from `env_name`.
absl::StatusOr<std::string> ResolveToken(
    const std::string& file, const char* env_name,
    absl::FunctionRef<const char*(const char*)> getenv) {
  if (!file.empty()) return ReadTokenFile(file);
  const char* value = getenv(env_name);
  if (value == nullptr || value[0] == '\0') return std::string();
  if (absl::Status valid = ValidateToken(value); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(env_name, ": ", valid.message()));
  }
  return std::string(value);
}

}  // namespace

bool IsSecurityFlag(std::string_view name, bool* takes_value) {
  *takes_value = true;
  if (name == "--insecure-no-auth") {
    *takes_value = false;
    return true;
  }
  return name == "--client-token-file" || name == "--worker-token-file" ||
         name == "--tls-cert" || name == "--tls-key" ||
         name == "--tls-client-ca" || name == "--max-message-bytes";
}

absl::Status ApplySecurityFlag(std::string_view name, std::string_view value,
                               SecurityFlags& flags) {
  if (name == "--insecure-no-auth") {
    flags.insecure_no_auth = true;
    return absl::OkStatus();
  }
  if (name == "--max-message-bytes") {
    absl::StatusOr<int> bytes = ParseMaxMessageBytes(name, value);
    if (!bytes.ok()) return bytes.status();
    flags.max_message_bytes = *bytes;
    return absl::OkStatus();
  }
  if (value.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(name), " wants a file name"));
  }
  std::string* target = nullptr;
  if (name == "--client-token-file") {
    target = &flags.client_token_file;
  } else if (name == "--worker-token-file") {
    target = &flags.worker_token_file;
  } else if (name == "--tls-cert") {
    target = &flags.tls.cert_path;
  } else if (name == "--tls-key") {
    target = &flags.tls.key_path;
  } else if (name == "--tls-client-ca") {
    target = &flags.tls.client_ca_path;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown flag `", ToAbsl(name), "`"));
  }
  *target = std::string(value);
  return absl::OkStatus();
}

absl::StatusOr<ServerSecurity> ResolveServerSecurity(
    const SecurityFlags& flags,
    absl::FunctionRef<const char*(const char*)> getenv) {
  ServerSecurity security;
  security.max_message_bytes = flags.max_message_bytes;

  absl::StatusOr<std::string> client_token = ResolveToken(
      flags.client_token_file, "TOOLMESH_CLIENT_TOKEN", getenv);
  if (!client_token.ok()) return client_token.status();
  absl::StatusOr<std::string> worker_token = ResolveToken(
      flags.worker_token_file, "TOOLMESH_WORKER_TOKEN", getenv);
  if (!worker_token.ok()) return worker_token.status();
  security.client_token = *std::move(client_token);
  security.worker_token = *std::move(worker_token);

  const bool no_client = security.client_token.empty();
  const bool no_worker = security.worker_token.empty();
  if ((no_client || no_worker) && !flags.insecure_no_auth) {
    if (no_client && no_worker) {
      return absl::InvalidArgumentError(
          "no client or worker token: set TOOLMESH_CLIENT_TOKEN (or "
          "--client-token-file) and TOOLMESH_WORKER_TOKEN (or "
          "--worker-token-file), or pass --insecure-no-auth to run without "
          "authentication");
    }
    if (no_client) {
      return absl::InvalidArgumentError(
          "no client token: set TOOLMESH_CLIENT_TOKEN (or "
          "--client-token-file), or pass --insecure-no-auth to let "
          "TaskService accept unauthenticated clients");
    }
    return absl::InvalidArgumentError(
        "no worker token: set TOOLMESH_WORKER_TOKEN (or --worker-token-file), "
        "or pass --insecure-no-auth to let WorkerService accept "
        "unauthenticated workers");
  }
  if (no_client) {
    security.warnings.push_back(
        "WARNING: --insecure-no-auth: TaskService accepts any client without "
        "a token");
  }
  if (no_worker) {
    security.warnings.push_back(
        "WARNING: --insecure-no-auth: WorkerService accepts any worker "
        "without a token");
  }

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(flags.tls);
  if (!credentials.ok()) return credentials.status();
  security.credentials = *std::move(credentials);
  security.tls = flags.tls.enabled();
  return security;
}

}  // namespace toolmesh::orchestrator
