// Token files, TLS credentials and message-size limits; see
// transport_security.h.
#include "orchestrator/grpc/transport_security.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace toolmesh::orchestrator {
namespace {

constexpr std::size_t kMaxTokenFileBytes = 64 * 1024;
constexpr std::size_t kMaxTokenBytes = 4096;
constexpr std::size_t kMaxPemFileBytes = 1024 * 1024;

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// The whole file at `path`, at most `max_bytes` of it. `what` starts every
// error line ("token file", "--tls-cert").
absl::StatusOr<std::string> ReadSmallFile(std::string_view what,
                                          const std::string& path,
                                          std::size_t max_bytes) {
  if (path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ToAbsl(what), ": the file name is empty"));
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        ToAbsl(what), ": cannot read ", path, ": ", std::strerror(errno)));
  }
  struct stat info = {};
  if (fstat(fd, &info) != 0 || S_ISDIR(info.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        ToAbsl(what), ": cannot read ", path, ": not a regular file"));
  }
  std::string contents;
  char buffer[8192];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat(
          ToAbsl(what), ": cannot read ", path, ": ", std::strerror(error)));
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<std::size_t>(n));
    if (contents.size() > max_bytes) {
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(ToAbsl(what), ": ", path, " is larger than ",
                       max_bytes, " bytes"));
    }
  }
  close(fd);
  return contents;
}

}  // namespace

absl::Status ValidateToken(std::string_view token) {
  if (token.empty()) return absl::InvalidArgumentError("the token is empty");
  if (token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the token is longer than ", kMaxTokenBytes, " bytes"));
  }
  for (const char c : token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(
          "the token holds a space, a line break or a character that is not "
          "printable ASCII");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> contents =
      ReadSmallFile("token file", path, kMaxTokenFileBytes);
  if (!contents.ok()) return contents.status();
  std::string token = *std::move(contents);
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) {
    token.pop_back();
  }
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file: ", path, " is empty"));
  }
  if (absl::Status valid = ValidateToken(token); !valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file: ", path, ": ", valid.message()));
  }
  return token;
}

absl::StatusOr<std::string> ReadPemFile(std::string_view flag,
                                        const std::string& path) {
  absl::StatusOr<std::string> contents =
      ReadSmallFile(flag, path, kMaxPemFileBytes);
  if (!contents.ok()) return contents.status();
  if (contents->find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        ToAbsl(flag), ": ", path, " is not a PEM file (no -----BEGIN line)"));
  }
  return contents;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options) {
  if (!options.enabled()) return grpc::InsecureServerCredentials();
  if (options.cert_path.empty() || options.key_path.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls-cert and --tls-key (--tls-client-ca only adds "
        "client verification)");
  }
  absl::StatusOr<std::string> cert = ReadPemFile("--tls-cert", options.cert_path);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile("--tls-key", options.key_path);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  if (!options.client_ca_path.empty()) {
    absl::StatusOr<std::string> ca =
        ReadPemFile("--tls-client-ca", options.client_ca_path);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  } else {
    ssl.client_certificate_request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientTlsOptions& options) {
  if (!options.enabled()) return grpc::InsecureChannelCredentials();
  if (options.cert_path.empty() != options.key_path.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs both --tls-cert and --tls-key");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.ca_path.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile("--tls-ca", options.ca_path);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.cert_path.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPemFile("--tls-cert", options.cert_path);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile("--tls-key", options.key_path);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::SslCredentials(ssl);
  if (credentials == nullptr) {
    return absl::InvalidArgumentError("cannot build TLS channel credentials");
  }
  return credentials;
}

absl::StatusOr<int> ParseMaxMessageBytes(std::string_view flag,
                                         std::string_view text) {
  int value = 0;
  if (text.empty() || text[0] == '+' || text[0] == '-' ||
      !absl::SimpleAtoi(ToAbsl(text), &value) || value < kMinMaxMessageBytes ||
      value > kMaxMaxMessageBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        ToAbsl(flag), " wants a number of bytes from ", kMinMaxMessageBytes,
        " to ", kMaxMaxMessageBytes, ", got `", ToAbsl(text), "`"));
  }
  return value;
}

void SetServerMaxMessageBytes(int max_bytes, grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(max_bytes);
}

void SetChannelMaxMessageBytes(int max_bytes, grpc::ChannelArguments& args) {
  args.SetMaxSendMessageSize(max_bytes);
  args.SetMaxReceiveMessageSize(max_bytes);
}

}  // namespace toolmesh::orchestrator
