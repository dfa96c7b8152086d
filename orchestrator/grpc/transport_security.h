// Transport security shared by the orchestrator, the worker and the CLI:
// bearer tokens read from files, TLS credentials for the gRPC server and
// channels, and the maximum gRPC message size.
//
// TLS is off unless a TLS file is named: without one the server listens in
// plaintext and channels connect in plaintext, as before. With
// ServerTlsOptions::client_ca_path the server requires and verifies a
// client certificate on every connection; TaskService and WorkerService
// share one port, so mutual TLS then applies to workers and clients alike.
//
// Every file is read when the credentials are built (at start-up); a file
// that is missing, unreadable, empty or not PEM gives kInvalidArgument with
// one line naming the file. Error messages never contain a token or a key.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/support/channel_arguments.h"

namespace toolmesh::orchestrator {

// The default of every --max-message-bytes flag (gRPC's own default for
// received messages).
inline constexpr int kDefaultMaxMessageBytes = 4 * 1024 * 1024;
// The range --max-message-bytes accepts.
inline constexpr int kMinMaxMessageBytes = 1024;
inline constexpr int kMaxMaxMessageBytes = 1024 * 1024 * 1024;

// Checks that `token` can be sent as `authorization: Bearer <token>`
// metadata and compared: not empty, at most 4096 bytes, printable ASCII
// without spaces. kInvalidArgument otherwise (the message describes the
// fault, never the token).
absl::Status ValidateToken(std::string_view token);

// Reads a bearer token from the file at `path`: its contents without the
// trailing line break(s) ("\n" or "\r\n"). kInvalidArgument, with one line
// naming the file, when it cannot be read, is larger than 64 KiB, is empty
// (after trimming) or fails ValidateToken().
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Reads a PEM file (certificate chain, private key or CA bundle) whole.
// kInvalidArgument naming `flag` and the file when it cannot be read, is
// larger than 1 MiB, or holds no "-----BEGIN " block.
absl::StatusOr<std::string> ReadPemFile(std::string_view flag,
                                        const std::string& path);

// The server's TLS files (paths; empty = not given).
struct ServerTlsOptions {
  std::string cert_path;       // --tls-cert: the server's certificate chain
  std::string key_path;        // --tls-key: its private key
  std::string client_ca_path;  // --tls-client-ca: require client certs

  bool enabled() const {
    return !cert_path.empty() || !key_path.empty() || !client_ca_path.empty();
  }
};

// grpc::InsecureServerCredentials() when no TLS file is given; otherwise
// SSL server credentials with the certificate and key, and, with a client
// CA, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY.
// kInvalidArgument: --tls-cert without --tls-key or the reverse,
// --tls-client-ca without --tls-cert, or a file as in ReadPemFile().
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options);

// A channel's TLS files (paths; empty = not given).
struct ClientTlsOptions {
  std::string ca_path;    // --tls-ca: CA bundle that verifies the server
  std::string cert_path;  // --tls-cert: client certificate chain (mTLS)
  std::string key_path;   // --tls-key: its private key

  bool enabled() const {
    return !ca_path.empty() || !cert_path.empty() || !key_path.empty();
  }
};

// grpc::InsecureChannelCredentials() when no TLS file is given; otherwise
// SSL channel credentials that verify the server against the CA bundle
// (gRPC's default roots when only a client certificate is given) and
// present the client certificate when one is given. kInvalidArgument:
// --tls-cert without --tls-key or the reverse, or a file as in
// ReadPemFile().
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
MakeChannelCredentials(const ClientTlsOptions& options);

// Parses a --max-message-bytes value: a decimal integer in
// [kMinMaxMessageBytes, kMaxMaxMessageBytes]. kInvalidArgument naming
// `flag` otherwise.
absl::StatusOr<int> ParseMaxMessageBytes(std::string_view flag,
                                         std::string_view text);

// The server rejects a received message larger than `max_bytes` with
// RESOURCE_EXHAUSTED. What the server sends is not limited here: a large
// task (GetTask, the terminal event) is bounded by the receiver's limit.
void SetServerMaxMessageBytes(int max_bytes, grpc::ServerBuilder& builder);

// The channel neither sends nor accepts a message larger than `max_bytes`;
// either fails the call with RESOURCE_EXHAUSTED.
void SetChannelMaxMessageBytes(int max_bytes, grpc::ChannelArguments& args);

}  // namespace toolmesh::orchestrator
