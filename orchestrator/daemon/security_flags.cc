// The orchestrator daemon's security flags; see security_flags.h.
#include "orchestrator/daemon/security_flags.h"

#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace toolmesh::orchestrator {
namespace {

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

constexpr std::size_t kMaxTokenListBytes = 1024 * 1024;
constexpr std::size_t kMaxNameBytes = 64;

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' ||
                        s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// One service's tokens: from `file` when named, else from `env_name`
// (named "default"); none when neither is set.
absl::StatusOr<std::vector<NamedToken>> ResolveTokens(
    const std::string& file, const char* env_name,
    absl::FunctionRef<const char*(const char*)> getenv) {
  if (!file.empty()) return ReadTokenListFile(file);
  const char* value = getenv(env_name);
  if (value == nullptr || value[0] == '\0') return std::vector<NamedToken>();
  if (absl::Status valid = ValidateToken(value); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(env_name, ": ", valid.message()));
  }
  return std::vector<NamedToken>{{kDefaultPrincipal, std::string(value)}};
}

std::string Names(const std::vector<NamedToken>& tokens) {
  return absl::StrJoin(tokens, ", ",
                       [](std::string* out, const NamedToken& t) {
                         out->append(t.name);
                       });
}

}  // namespace

absl::StatusOr<std::vector<NamedToken>> ParseTokenList(
    std::string_view text, std::string_view source) {
  struct Entry {
    std::size_t line = 0;
    bool named = false;
    NamedToken token;
  };
  std::vector<Entry> entries;
  std::size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const std::size_t end = text.find('\n');
    std::string_view line = Trim(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (line.empty() || line.front() == '#') continue;
    const std::string where =
        absl::StrCat(ToAbsl(source), " line ", line_number);
    Entry entry;
    entry.line = line_number;
    std::string_view token = line;
    if (const std::size_t colon = line.find(':');
        colon != std::string_view::npos) {
      const std::string_view name = line.substr(0, colon);
      if (!IsValidName(name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": the name before ':' must be 1 to 64 letters, digits, "
            "'.', '_' or '-'"));
      }
      entry.named = true;
      entry.token.name = std::string(name);
      token = line.substr(colon + 1);
    }
    if (token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": no token after the name"));
    }
    if (absl::Status valid = ValidateToken(token); !valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", valid.message()));
    }
    entry.token.token = std::string(token);
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(source), " is empty (no token line)"));
  }
  std::vector<NamedToken> out;
  std::set<std::string> names;
  std::set<std::string> tokens;
  for (Entry& entry : entries) {
    if (!entry.named) {
      entry.token.name = entries.size() == 1
                             ? std::string(kDefaultPrincipal)
                             : absl::StrCat("line-", entry.line);
    }
    if (!names.insert(entry.token.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(ToAbsl(source), " line ", entry.line, ": the name \"",
                       entry.token.name, "\" is used twice"));
    }
    if (!tokens.insert(entry.token.token).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(ToAbsl(source), " line ", entry.line,
                       ": the same token is listed twice"));
    }
    out.push_back(std::move(entry.token));
  }
  return out;
}

absl::StatusOr<std::vector<NamedToken>> ReadTokenListFile(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file: cannot read ", path));
  }
  std::string contents(kMaxTokenListBytes + 1, '\0');
  in.read(contents.data(), static_cast<std::streamsize>(contents.size()));
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file: cannot read ", path));
  }
  contents.resize(static_cast<std::size_t>(in.gcount()));
  if (contents.size() > kMaxTokenListBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file: ", path, " is larger than 1 MiB"));
  }
  return ParseTokenList(contents, absl::StrCat("token file: ", path));
}

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

  absl::StatusOr<std::vector<NamedToken>> client_tokens = ResolveTokens(
      flags.client_token_file, "TOOLMESH_CLIENT_TOKEN", getenv);
  if (!client_tokens.ok()) return client_tokens.status();
  absl::StatusOr<std::vector<NamedToken>> worker_tokens = ResolveTokens(
      flags.worker_token_file, "TOOLMESH_WORKER_TOKEN", getenv);
  if (!worker_tokens.ok()) return worker_tokens.status();
  security.client_tokens = *std::move(client_tokens);
  security.worker_tokens = *std::move(worker_tokens);
  // A token of both roles would make PERMISSION_DENIED meaningless.
  for (const NamedToken& client : security.client_tokens) {
    for (const NamedToken& worker : security.worker_tokens) {
      if (client.token == worker.token) {
        return absl::InvalidArgumentError(absl::StrCat(
            "client token \"", client.name, "\" and worker token \"",
            worker.name, "\" are the same token; give clients and workers "
            "different tokens"));
      }
    }
  }

  const bool no_client = security.client_tokens.empty();
  const bool no_worker = security.worker_tokens.empty();
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

  if (!no_client) {
    security.notices.push_back(absl::StrCat(
        "TaskService accepts ", security.client_tokens.size(),
        " client token(s): ", Names(security.client_tokens)));
  }
  if (!no_worker) {
    security.notices.push_back(absl::StrCat(
        "WorkerService accepts ", security.worker_tokens.size(),
        " worker token(s): ", Names(security.worker_tokens)));
  }

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials(flags.tls);
  if (!credentials.ok()) return credentials.status();
  security.credentials = *std::move(credentials);
  security.tls = flags.tls.enabled();
  return security;
}

}  // namespace toolmesh::orchestrator
