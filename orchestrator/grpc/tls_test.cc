// Tests of transport_security.h: token and PEM files, TLS and mutual TLS on
// a real in-process gRPC server on 127.0.0.1:0, and the message-size
// limits. The certificates are generated per test binary with the
// `openssl` tool into a temporary directory: a test CA, a server
// certificate for 127.0.0.1, a client certificate, and a second CA with its
// own client certificate that the server must not trust.
#include "orchestrator/grpc/transport_security.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "toolmesh/v1/task_service.grpc.pb.h"

namespace toolmesh::orchestrator {
namespace {

using ::testing::HasSubstr;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

// A temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "toolmesh-tls-XXXXXX")
            .string();
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const {
    return path_ + "/" + name;
  }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

constexpr char kOpensslConfig[] = R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = toolmesh-test
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
)";

// Runs `command` with its output in DIR/openssl.log; its exit status
// (127: the shell found no such program).
int Run(const TempDir& dir, const std::string& command) {
  const std::string line = absl::StrCat("cd '", dir.path(), "' && ", command,
                                        " >>openssl.log 2>&1");
  const int status = std::system(line.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The test PKI, generated once for the whole binary.
struct Pki {
  TempDir dir;
  std::string error;    // why generation failed; empty: it worked
  bool no_openssl = false;
};

// Fills `pki` (whose directory exists or whose path is empty).
void GeneratePki(Pki* pki) {
  if (pki->dir.path().empty()) {
    pki->error = "cannot create a temporary directory";
    return;
  }
  WriteFile(pki->dir.File("openssl.cnf"), kOpensslConfig);
  if (Run(pki->dir, "openssl version") == 127) {
    pki->no_openssl = true;
    return;
  }
  const std::string new_key =
      "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::vector<std::string> commands = {
      absl::StrCat("openssl req -x509 -config openssl.cnf ", new_key,
                   " -keyout ca.key -out ca.pem -days 2 "
                   "-subj /CN=toolmesh-test-ca -extensions ca_ext"),
      absl::StrCat("openssl req -x509 -config openssl.cnf ", new_key,
                   " -keyout other-ca.key -out other-ca.pem -days 2 "
                   "-subj /CN=toolmesh-other-ca -extensions ca_ext"),
      absl::StrCat("openssl req -new -config openssl.cnf ", new_key,
                   " -keyout server.key -out server.csr -subj /CN=localhost"),
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
      "-set_serial 2 -days 2 -out server.pem -extfile openssl.cnf "
      "-extensions server_ext",
      absl::StrCat("openssl req -new -config openssl.cnf ", new_key,
                   " -keyout client.key -out client.csr -subj /CN=worker-1"),
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
      "-set_serial 3 -days 2 -out client.pem -extfile openssl.cnf "
      "-extensions client_ext",
      absl::StrCat("openssl req -new -config openssl.cnf ", new_key,
                   " -keyout rogue.key -out rogue.csr -subj /CN=rogue"),
      "openssl x509 -req -in rogue.csr -CA other-ca.pem -CAkey other-ca.key "
      "-set_serial 4 -days 2 -out rogue.pem -extfile openssl.cnf "
      "-extensions client_ext",
  };
  for (const std::string& command : commands) {
    if (Run(pki->dir, command) != 0) {
      std::ifstream log(pki->dir.File("openssl.log"));
      std::string text((std::istreambuf_iterator<char>(log)),
                       std::istreambuf_iterator<char>());
      pki->error = absl::StrCat("`", command, "` failed:\n", text);
      return;
    }
  }
}

const Pki& TestPki() {
  // Destroyed (and its directory removed) at exit.
  static Pki pki;
  static const bool generated = [] {
    GeneratePki(&pki);
    return true;
  }();
  (void)generated;
  return pki;
}

// TaskService with three methods, enough to see whether a call got
// through and how large messages are treated.
class EchoTaskService final : public v1::TaskService::CallbackService {
 public:
  grpc::ServerUnaryReactor* GetTask(grpc::CallbackServerContext* context,
                                    const v1::GetTaskRequest* request,
                                    v1::GetTaskResponse* response) override {
    ++calls_;
    response->mutable_task()->set_task_id(request->task_id());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  // Answers with the size of the prompt it received.
  grpc::ServerUnaryReactor* SubmitTask(
      grpc::CallbackServerContext* context,
      const v1::SubmitTaskRequest* request,
      v1::SubmitTaskResponse* response) override {
    ++calls_;
    response->set_task_id(absl::StrCat(request->spec().prompt().size()));
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  // Answers with page_size tasks whose ids are 1 KiB each.
  grpc::ServerUnaryReactor* ListTasks(
      grpc::CallbackServerContext* context,
      const v1::ListTasksRequest* request,
      v1::ListTasksResponse* response) override {
    ++calls_;
    for (uint32_t i = 0; i < request->page_size(); ++i) {
      response->add_tasks()->set_task_id(std::string(1024, 'x'));
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  int calls() const { return calls_.load(); }

 private:
  std::atomic<int> calls_{0};
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Pki& pki = TestPki();
    if (pki.no_openssl) GTEST_SKIP() << "the openssl tool is not installed";
    ASSERT_TRUE(pki.error.empty()) << pki.error;
  }

  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(2));
      server_->Wait();
    }
  }

  static std::string PkiFile(const std::string& name) {
    return TestPki().dir.File(name);
  }

  // Starts the echo service on 127.0.0.1:0 with `tls`; returns the
  // address.
  std::string StartServer(const ServerTlsOptions& tls,
                          int max_message_bytes = kDefaultMaxMessageBytes) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
        MakeServerCredentials(tls);
    EXPECT_THAT(credentials.status(), IsOk());
    if (!credentials.ok()) return "";
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", *credentials, &port);
    SetServerMaxMessageBytes(max_message_bytes, builder);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    EXPECT_NE(server_, nullptr);
    EXPECT_GT(port, 0);
    return absl::StrCat("127.0.0.1:", port);
  }

  static ServerTlsOptions ServerTls(bool mutual) {
    ServerTlsOptions tls;
    tls.cert_path = PkiFile("server.pem");
    tls.key_path = PkiFile("server.key");
    if (mutual) tls.client_ca_path = PkiFile("ca.pem");
    return tls;
  }

  static std::unique_ptr<v1::TaskService::Stub> Client(
      const std::string& address, const ClientTlsOptions& tls,
      int max_message_bytes = kDefaultMaxMessageBytes) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        MakeChannelCredentials(tls);
    EXPECT_THAT(credentials.status(), IsOk());
    if (!credentials.ok()) return nullptr;
    grpc::ChannelArguments args;
    SetChannelMaxMessageBytes(max_message_bytes, args);
    return v1::TaskService::NewStub(
        grpc::CreateCustomChannel(address, *credentials, args));
  }

  // GetTask("t1") with a bounded deadline.
  static grpc::Status Ping(v1::TaskService::Stub& stub) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    v1::GetTaskRequest request;
    request.set_task_id("t1");
    v1::GetTaskResponse response;
    grpc::Status status = stub.GetTask(&context, request, &response);
    if (status.ok() && response.task().task_id() != "t1") {
      return grpc::Status(grpc::StatusCode::INTERNAL, "wrong echo");
    }
    return status;
  }

  EchoTaskService service_;
  std::unique_ptr<grpc::Server> server_;
};

// ---------------------------------------------------------------------------
// Files.

TEST(TokenFileTest, TrailingLineBreaksAreTrimmed) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  WriteFile(dir.File("unix"), "s3cret-token\n");
  WriteFile(dir.File("dos"), "s3cret-token\r\n");
  WriteFile(dir.File("bare"), "s3cret-token");
  for (const char* name : {"unix", "dos", "bare"}) {
    absl::StatusOr<std::string> token = ReadTokenFile(dir.File(name));
    ASSERT_THAT(token.status(), IsOk()) << name;
    EXPECT_EQ(*token, "s3cret-token") << name;
  }
}

TEST(TokenFileTest, MissingEmptyAndMalformedFilesAreInvalidArgument) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  WriteFile(dir.File("empty"), "");
  WriteFile(dir.File("newline"), "\n");
  WriteFile(dir.File("two-lines"), "abc\ndef\n");
  WriteFile(dir.File("space"), "abc def\n");
  EXPECT_THAT(ReadTokenFile(dir.File("absent")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot read")));
  EXPECT_THAT(ReadTokenFile(dir.path()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("not a regular file")));
  for (const char* name : {"empty", "newline"}) {
    EXPECT_THAT(ReadTokenFile(dir.File(name)).status(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("is empty")))
        << name;
  }
  for (const char* name : {"two-lines", "space"}) {
    absl::Status status = ReadTokenFile(dir.File(name)).status();
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("printable ASCII")))
        << name;
    EXPECT_THAT(status.message(), ::testing::Not(HasSubstr("abc"))) << name;
  }
}

TEST(TokenFileTest, OversizeFileIsRejected) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  WriteFile(dir.File("big"), std::string(70 * 1024, 'a'));
  EXPECT_THAT(ReadTokenFile(dir.File("big")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("larger than")));
}

TEST(PemFileTest, FileWithoutPemBlockIsRejected) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  WriteFile(dir.File("cert.pem"), "not a certificate\n");
  EXPECT_THAT(ReadPemFile("--tls-cert", dir.File("cert.pem")).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-cert")));
}

TEST(ServerCredentialsTest, NoTlsFilesMeansPlaintext) {
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials({});
  ASSERT_THAT(credentials.status(), IsOk());
  EXPECT_NE(*credentials, nullptr);
}

TEST(ServerCredentialsTest, IncompleteTlsFlagsAreInvalidArgument) {
  ServerTlsOptions cert_only;
  cert_only.cert_path = "/x/server.pem";
  EXPECT_THAT(MakeServerCredentials(cert_only).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-key")));
  ServerTlsOptions ca_only;
  ca_only.client_ca_path = "/x/ca.pem";
  EXPECT_THAT(MakeServerCredentials(ca_only).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-cert")));
  ClientTlsOptions client_cert_only;
  client_cert_only.cert_path = "/x/client.pem";
  EXPECT_THAT(MakeChannelCredentials(client_cert_only).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-key")));
  ClientTlsOptions missing_ca;
  missing_ca.ca_path = "/nonexistent/ca.pem";
  EXPECT_THAT(MakeChannelCredentials(missing_ca).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-ca: cannot read /nonexistent/ca.pem")));
}

TEST(MaxMessageBytesTest, ParsesTheAcceptedRange) {
  EXPECT_THAT(ParseMaxMessageBytes("--max-message-bytes", "4194304"),
              ::toolmesh::testing::IsOkAndHolds(4194304));
  EXPECT_THAT(ParseMaxMessageBytes("--max-message-bytes", "1024"),
              ::toolmesh::testing::IsOkAndHolds(1024));
  for (const char* bad : {"", "1023", "-5", "+5000", "4MiB", "99999999999"}) {
    EXPECT_THAT(ParseMaxMessageBytes("--max-message-bytes", bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("--max-message-bytes")))
        << bad;
  }
}

// ---------------------------------------------------------------------------
// TLS on a live server.

TEST_F(TlsTest, TlsServerAcceptsClientThatTrustsItsCa) {
  const std::string address = StartServer(ServerTls(/*mutual=*/false));
  ClientTlsOptions tls;
  tls.ca_path = PkiFile("ca.pem");
  auto stub = Client(address, tls);
  ASSERT_NE(stub, nullptr);
  grpc::Status status = Ping(*stub);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(service_.calls(), 1);
}

TEST_F(TlsTest, TlsServerRejectsPlaintextClient) {
  const std::string address = StartServer(ServerTls(/*mutual=*/false));
  auto stub = Client(address, ClientTlsOptions());
  ASSERT_NE(stub, nullptr);
  EXPECT_EQ(Ping(*stub).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(TlsTest, ClientRejectsServerSignedByAnotherCa) {
  const std::string address = StartServer(ServerTls(/*mutual=*/false));
  ClientTlsOptions tls;
  tls.ca_path = PkiFile("other-ca.pem");
  auto stub = Client(address, tls);
  ASSERT_NE(stub, nullptr);
  EXPECT_EQ(Ping(*stub).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(TlsTest, MutualTlsAcceptsClientWithCertificateFromTheCa) {
  const std::string address = StartServer(ServerTls(/*mutual=*/true));
  ClientTlsOptions tls;
  tls.ca_path = PkiFile("ca.pem");
  tls.cert_path = PkiFile("client.pem");
  tls.key_path = PkiFile("client.key");
  auto stub = Client(address, tls);
  ASSERT_NE(stub, nullptr);
  grpc::Status status = Ping(*stub);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(service_.calls(), 1);
}

TEST_F(TlsTest, MutualTlsRejectsClientWithoutCertificate) {
  const std::string address = StartServer(ServerTls(/*mutual=*/true));
  ClientTlsOptions tls;
  tls.ca_path = PkiFile("ca.pem");
  auto stub = Client(address, tls);
  ASSERT_NE(stub, nullptr);
  EXPECT_EQ(Ping(*stub).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(TlsTest, MutualTlsRejectsClientCertificateFromAnotherCa) {
  const std::string address = StartServer(ServerTls(/*mutual=*/true));
  ClientTlsOptions tls;
  tls.ca_path = PkiFile("ca.pem");
  tls.cert_path = PkiFile("rogue.pem");
  tls.key_path = PkiFile("rogue.key");
  auto stub = Client(address, tls);
  ASSERT_NE(stub, nullptr);
  EXPECT_EQ(Ping(*stub).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(service_.calls(), 0);
}

// ---------------------------------------------------------------------------
// Message size.

TEST_F(TlsTest, OversizeRequestIsResourceExhaustedByTheServer) {
  const std::string address =
      StartServer(ServerTlsOptions(), /*max_message_bytes=*/64 * 1024);
  // The client would send anything; the server's limit decides.
  auto stub = Client(address, ClientTlsOptions(), kMaxMaxMessageBytes);
  ASSERT_NE(stub, nullptr);
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    v1::SubmitTaskRequest request;
    request.mutable_spec()->set_prompt(std::string(100 * 1024, 'p'));
    v1::SubmitTaskResponse response;
    grpc::Status status = stub->SubmitTask(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << status.error_message();
  }
  EXPECT_EQ(service_.calls(), 0);
  // A request under the limit on the same server still goes through.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
  v1::SubmitTaskRequest request;
  request.mutable_spec()->set_prompt(std::string(10 * 1024, 'p'));
  v1::SubmitTaskResponse response;
  grpc::Status status = stub->SubmitTask(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.task_id(), "10240");
}

TEST_F(TlsTest, ChannelLimitStopsOversizeSendsAndReceives) {
  const std::string address = StartServer(ServerTlsOptions());
  auto stub = Client(address, ClientTlsOptions(), /*max_message_bytes=*/
                     64 * 1024);
  ASSERT_NE(stub, nullptr);
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    v1::SubmitTaskRequest request;
    request.mutable_spec()->set_prompt(std::string(100 * 1024, 'p'));
    v1::SubmitTaskResponse response;
    grpc::Status status = stub->SubmitTask(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << status.error_message();
    EXPECT_EQ(service_.calls(), 0);
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
  v1::ListTasksRequest request;
  request.set_page_size(100);  // ~100 KiB of answer
  v1::ListTasksResponse response;
  grpc::Status status = stub->ListTasks(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << status.error_message();
  EXPECT_EQ(service_.calls(), 1);
}

}  // namespace
}  // namespace toolmesh::orchestrator
