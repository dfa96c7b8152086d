// Tests of the orchestrator daemon's security flags (security_flags.h):
// which flags exist, where tokens come from, and the --insecure-no-auth
// rule.
#include "orchestrator/daemon/security_flags.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::orchestrator {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::StatusIs;

class SecurityFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "toolmesh-flags-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  std::string Write(const std::string& name, const std::string& contents) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << contents;
    return path;
  }

  absl::StatusOr<ServerSecurity> Resolve(const SecurityFlags& flags) {
    return ResolveServerSecurity(flags, [this](const char* name) {
      auto it = env_.find(name);
      return it == env_.end() ? static_cast<const char*>(nullptr)
                              : it->second.c_str();
    });
  }

  std::string dir_;
  std::map<std::string, std::string> env_;
};

TEST_F(SecurityFlagsTest, KnowsItsFlagsAndWhichTakeValues) {
  bool takes_value = false;
  for (const char* name :
       {"--client-token-file", "--worker-token-file", "--tls-cert",
        "--tls-key", "--tls-client-ca", "--max-message-bytes"}) {
    EXPECT_TRUE(IsSecurityFlag(name, &takes_value)) << name;
    EXPECT_TRUE(takes_value) << name;
  }
  EXPECT_TRUE(IsSecurityFlag("--insecure-no-auth", &takes_value));
  EXPECT_FALSE(takes_value);
  EXPECT_FALSE(IsSecurityFlag("--listen", &takes_value));
  EXPECT_FALSE(IsSecurityFlag("--tls-ca", &takes_value));
}

TEST_F(SecurityFlagsTest, ApplyRecordsValuesAndRejectsBadOnes) {
  SecurityFlags flags;
  EXPECT_THAT(ApplySecurityFlag("--client-token-file", "/c", flags), IsOk());
  EXPECT_THAT(ApplySecurityFlag("--worker-token-file", "/w", flags), IsOk());
  EXPECT_THAT(ApplySecurityFlag("--tls-cert", "/cert", flags), IsOk());
  EXPECT_THAT(ApplySecurityFlag("--tls-key", "/key", flags), IsOk());
  EXPECT_THAT(ApplySecurityFlag("--tls-client-ca", "/ca", flags), IsOk());
  EXPECT_THAT(ApplySecurityFlag("--max-message-bytes", "65536", flags),
              IsOk());
  EXPECT_THAT(ApplySecurityFlag("--insecure-no-auth", "", flags), IsOk());
  EXPECT_EQ(flags.client_token_file, "/c");
  EXPECT_EQ(flags.worker_token_file, "/w");
  EXPECT_EQ(flags.tls.cert_path, "/cert");
  EXPECT_EQ(flags.tls.key_path, "/key");
  EXPECT_EQ(flags.tls.client_ca_path, "/ca");
  EXPECT_EQ(flags.max_message_bytes, 65536);
  EXPECT_TRUE(flags.insecure_no_auth);

  EXPECT_THAT(ApplySecurityFlag("--client-token-file", "", flags),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--client-token-file wants a file name")));
  EXPECT_THAT(ApplySecurityFlag("--max-message-bytes", "lots", flags),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--max-message-bytes")));
}

TEST_F(SecurityFlagsTest, TokensFromTheEnvironmentNeedNoFlag) {
  env_["TOOLMESH_CLIENT_TOKEN"] = "client-env";
  env_["TOOLMESH_WORKER_TOKEN"] = "worker-env";
  absl::StatusOr<ServerSecurity> security = Resolve(SecurityFlags());
  ASSERT_THAT(security.status(), IsOk());
  EXPECT_EQ(security->client_token, "client-env");
  EXPECT_EQ(security->worker_token, "worker-env");
  EXPECT_THAT(security->warnings, IsEmpty());
  EXPECT_FALSE(security->tls);
  EXPECT_NE(security->credentials, nullptr);
  EXPECT_EQ(security->max_message_bytes, kDefaultMaxMessageBytes);
  const Authenticator auth = security->MakeAuthenticator();
  EXPECT_TRUE(auth.client_auth_enabled());
  EXPECT_TRUE(auth.worker_auth_enabled());
}

TEST_F(SecurityFlagsTest, TokenFilesWinOverTheEnvironment) {
  env_["TOOLMESH_CLIENT_TOKEN"] = "client-env";
  env_["TOOLMESH_WORKER_TOKEN"] = "worker-env";
  SecurityFlags flags;
  flags.client_token_file = Write("client", "client-file\n");
  flags.worker_token_file = Write("worker", "worker-file\r\n");
  absl::StatusOr<ServerSecurity> security = Resolve(flags);
  ASSERT_THAT(security.status(), IsOk());
  EXPECT_EQ(security->client_token, "client-file");
  EXPECT_EQ(security->worker_token, "worker-file");
}

TEST_F(SecurityFlagsTest, UnreadableOrEmptyTokenFileIsOneClearLine) {
  env_["TOOLMESH_WORKER_TOKEN"] = "worker-env";
  SecurityFlags flags;
  flags.client_token_file = dir_ + "/absent";
  EXPECT_THAT(Resolve(flags).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("cannot read " + dir_ + "/absent")));
  flags.client_token_file = Write("empty", "\n");
  absl::Status status = Resolve(flags).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("is empty")));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("\n")));
}

TEST_F(SecurityFlagsTest, MalformedEnvironmentTokenIsRejectedWithoutEcho) {
  env_["TOOLMESH_CLIENT_TOKEN"] = "two words";
  env_["TOOLMESH_WORKER_TOKEN"] = "worker-env";
  absl::Status status = Resolve(SecurityFlags()).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("TOOLMESH_CLIENT_TOKEN")));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("two words")));
}

TEST_F(SecurityFlagsTest, NoTokensWithoutInsecureFlagNamesBothWaysOut) {
  absl::Status status = Resolve(SecurityFlags()).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("--insecure-no-auth")));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("TOOLMESH_CLIENT_TOKEN"));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("--worker-token-file"));
}

TEST_F(SecurityFlagsTest, OneMissingTokenAlsoNeedsTheInsecureFlag) {
  env_["TOOLMESH_CLIENT_TOKEN"] = "client-env";
  EXPECT_THAT(Resolve(SecurityFlags()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no worker token")));
  env_.clear();
  env_["TOOLMESH_WORKER_TOKEN"] = "worker-env";
  EXPECT_THAT(Resolve(SecurityFlags()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no client token")));

  SecurityFlags insecure;
  insecure.insecure_no_auth = true;
  absl::StatusOr<ServerSecurity> security = Resolve(insecure);
  ASSERT_THAT(security.status(), IsOk());
  EXPECT_EQ(security->worker_token, "worker-env");
  EXPECT_THAT(security->warnings,
              ElementsAre(HasSubstr("TaskService accepts any client")));
  EXPECT_FALSE(security->MakeAuthenticator().client_auth_enabled());
  EXPECT_TRUE(security->MakeAuthenticator().worker_auth_enabled());
}

TEST_F(SecurityFlagsTest, InsecureFlagWithoutTokensWarnsForBothServices) {
  SecurityFlags flags;
  flags.insecure_no_auth = true;
  absl::StatusOr<ServerSecurity> security = Resolve(flags);
  ASSERT_THAT(security.status(), IsOk());
  EXPECT_THAT(security->warnings,
              ElementsAre(HasSubstr("TaskService"), HasSubstr("WorkerService")));
  EXPECT_THAT(security->warnings[0], HasSubstr("WARNING"));
}

TEST_F(SecurityFlagsTest, TlsFlagsAreCheckedWhenResolved) {
  env_["TOOLMESH_CLIENT_TOKEN"] = "client-env";
  env_["TOOLMESH_WORKER_TOKEN"] = "worker-env";
  SecurityFlags flags;
  flags.tls.cert_path = Write("cert.pem", "-----BEGIN CERTIFICATE-----\n");
  EXPECT_THAT(Resolve(flags).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-key")));
  flags.tls.key_path = dir_ + "/absent.key";
  EXPECT_THAT(Resolve(flags).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls-key: cannot read")));
}

}  // namespace
}  // namespace toolmesh::orchestrator
