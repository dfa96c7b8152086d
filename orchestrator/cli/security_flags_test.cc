// Tests of the task verbs' --token-file, --tls-* and --max-message-bytes
// flags (remote_commands.h) against an in-process TaskService that accepts
// only one bearer token. TLS handshakes themselves are covered by
// orchestrator/grpc/tls_test.cc.
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "orchestrator/cli/offline_commands.h"
#include "orchestrator/cli/remote_commands.h"
#include "toolmesh/v1/task_service.grpc.pb.h"

namespace toolmesh::cli {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "file-token-7";

// ListWorkers answers one worker to the right token, UNAUTHENTICATED to
// anything else.
class TokenCheckingService final : public v1::TaskService::CallbackService {
 public:
  grpc::ServerUnaryReactor* ListWorkers(
      grpc::CallbackServerContext* context, const v1::ListWorkersRequest*,
      v1::ListWorkersResponse* response) override {
    ++calls_;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    auto it = context->client_metadata().find("authorization");
    if (it == context->client_metadata().end() ||
        std::string(it->second.data(), it->second.size()) !=
            std::string("Bearer ") + kToken) {
      reactor->Finish(
          grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong token"));
      return reactor;
    }
    response->add_workers()->set_worker_id("w1");
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  int calls() const { return calls_.load(); }

 private:
  std::atomic<int> calls_{0};
};

class CliSecurityFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "toolmesh-cli-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    context_.orchestrator = "127.0.0.1:" + std::to_string(port);
    context_.rpc_timeout = absl::Seconds(5);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(2));
      server_->Wait();
    }
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  std::string Write(const std::string& name, const std::string& contents) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }

  int Workers(const std::vector<std::string>& args) {
    out_.str("");
    err_.str("");
    return RunWorkers(args, out_, err_, context_);
  }

  std::string dir_;
  TokenCheckingService service_;
  std::unique_ptr<grpc::Server> server_;
  RemoteContext context_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(CliSecurityFlagsTest, TokenFromFileIsSentAsBearer) {
  const std::string path = Write("token", std::string(kToken) + "\n");
  EXPECT_EQ(Workers({"--token-file", path}), 0) << err_.str();
  EXPECT_THAT(out_.str(), HasSubstr("w1"));
  EXPECT_EQ(Workers({"--token-file=" + path, "--json"}), 0) << err_.str();
}

TEST_F(CliSecurityFlagsTest, TokenFileWinsOverTheEnvironmentToken) {
  context_.token = "env-token";
  EXPECT_EQ(Workers({}), kExitFailed);
  const std::string path = Write("token", kToken);
  EXPECT_EQ(Workers({"--token-file", path}), 0) << err_.str();
}

TEST_F(CliSecurityFlagsTest, UnreadableOrEmptyTokenFileIsUsageErrorOneLine) {
  EXPECT_EQ(Workers({"--token-file", dir_ + "/absent"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("cannot read " + dir_ + "/absent"));
  const std::string err = err_.str();
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(Workers({"--token-file", Write("empty", "\n")}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("is empty"));
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(CliSecurityFlagsTest, TokenAndTokenFileTogetherAreRejected) {
  const std::string path = Write("token", kToken);
  EXPECT_EQ(Workers({"--token", kToken, "--token-file", path}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("exclude each other"));
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(CliSecurityFlagsTest, BadTlsAndSizeFlagsAreUsageErrors) {
  EXPECT_EQ(Workers({"--tls-cert", "/x/c.pem"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--tls-key"));
  EXPECT_EQ(Workers({"--tls-ca", dir_ + "/absent.pem"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--tls-ca: cannot read"));
  EXPECT_EQ(Workers({"--tls-ca", Write("ca.pem", "not pem")}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("not a PEM file"));
  EXPECT_EQ(Workers({"--max-message-bytes", "7"}), kExitUsage);
  EXPECT_THAT(err_.str(), HasSubstr("--max-message-bytes"));
  EXPECT_EQ(service_.calls(), 0);
}

TEST_F(CliSecurityFlagsTest, EnvironmentCaIsUsedAndBreaksAPlaintextServer) {
  // A CA from TOOLMESH_TLS_CA switches the CLI to TLS; this server speaks
  // plaintext, so the call cannot succeed.
  RemoteContext from_env = RemoteContext::FromLookup(
      [](const char* name) -> const char* {
        return std::string(name) == "TOOLMESH_TLS_CA" ? "/etc/ca.pem"
                                                      : nullptr;
      });
  EXPECT_EQ(from_env.tls_ca, "/etc/ca.pem");
  context_.tls_ca = Write(
      "ca.pem",
      "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n");
  const std::string path = Write("token", kToken);
  EXPECT_NE(Workers({"--token-file", path}), 0);
  EXPECT_EQ(service_.calls(), 0);
}

TEST(CliGlobalFlagsTest, SecurityFlagsAreHoistedLikeTheOtherGlobals) {
  absl::StatusOr<std::vector<std::string>> hoisted = HoistGlobalFlags(
      {"--token-file", "/t", "--tls-ca=/ca", "--max-message-bytes", "9999",
       "workers", "--json"});
  ASSERT_TRUE(hoisted.ok()) << hoisted.status();
  EXPECT_EQ(*hoisted,
            (std::vector<std::string>{"workers", "--token-file", "/t",
                                      "--tls-ca=/ca", "--max-message-bytes",
                                      "9999", "--json"}));
}

}  // namespace
}  // namespace toolmesh::cli
