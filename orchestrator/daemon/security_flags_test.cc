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
  ASSERT_EQ(security->client_tokens.size(), 1u);
  EXPECT_EQ(security->client_tokens[0].token, "client-env");
  EXPECT_EQ(security->client_tokens[0].name, "default");
  ASSERT_EQ(security->worker_tokens.size(), 1u);
  EXPECT_EQ(security->worker_tokens[0].token, "worker-env");
  EXPECT_THAT(security->warnings, IsEmpty());
  // The start-up notices name the principals, never the tokens.
  EXPECT_THAT(security->notices,
              ElementsAre(HasSubstr("1 client token(s): default"),
                          HasSubstr("1 worker token(s): default")));
  for (const std::string& notice : security->notices) {
    EXPECT_THAT(notice, Not(HasSubstr("-env")));
  }
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
  ASSERT_EQ(security->client_tokens.size(), 1u);
  EXPECT_EQ(security->client_tokens[0].token, "client-file");
  ASSERT_EQ(security->worker_tokens.size(), 1u);
  EXPECT_EQ(security->worker_tokens[0].token, "worker-file");
}

TEST_F(SecurityFlagsTest, TokenFileHoldsNamedTokensCommentsAndBlankLines) {
  env_["TOOLMESH_WORKER_TOKEN"] = "worker-env";
  SecurityFlags flags;
  flags.client_token_file = Write(
      "clients", "# who may submit\n\nalice:tok-a\r\n  bob:tok-b  \ntok-c\n");
  absl::StatusOr<ServerSecurity> security = Resolve(flags);
  ASSERT_THAT(security.status(), IsOk());
  ASSERT_EQ(security->client_tokens.size(), 3u);
  EXPECT_EQ(security->client_tokens[0].name, "alice");
  EXPECT_EQ(security->client_tokens[0].token, "tok-a");
  EXPECT_EQ(security->client_tokens[1].name, "bob");
  EXPECT_EQ(security->client_tokens[1].token, "tok-b");
  EXPECT_EQ(security->client_tokens[2].name, "line-5");
  EXPECT_EQ(security->client_tokens[2].token, "tok-c");
  const Authenticator auth = security->MakeAuthenticator();
  EXPECT_EQ(auth.AuthenticateClient("Bearer tok-b").value_or(""), "bob");
  EXPECT_EQ(auth.AuthenticateClient("Bearer worker-env").status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(SecurityFlagsTest, BadTokenListsAreOneLineNamingTheLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : {
           Case{"alice:tok-a\nalice:tok-b\n", "line 2: the name \"alice\" is used twice"},
           Case{"alice:tok-a\nbob:tok-a\n", "line 2: the same token is listed twice"},
           Case{"bad name:tok-a\n", "line 1: the name before ':'"},
           Case{"alice:\n", "line 1: no token after the name"},
           Case{"# only a comment\n\n", "is empty (no token line)"},
       }) {
    absl::StatusOr<std::vector<NamedToken>> parsed =
        ParseTokenList(c.text, "token file: F");
    EXPECT_THAT(parsed.status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr(c.message)))
        << c.text;
    EXPECT_THAT(std::string(parsed.status().message()),
                Not(HasSubstr("tok-a")));
  }
  absl::StatusOr<std::vector<NamedToken>> single =
      ParseTokenList("just-one\n", "F");
  ASSERT_THAT(single.status(), IsOk());
  EXPECT_EQ((*single)[0].name, "default");
}

TEST_F(SecurityFlagsTest, ATokenOfBothRolesStopsTheStart) {
  SecurityFlags flags;
  flags.client_token_file = Write("clients", "alice:shared-1\n");
  flags.worker_token_file = Write("workers", "w1:shared-1\n");
  absl::Status status = Resolve(flags).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("client token \"alice\" and worker "
                                         "token \"w1\" are the same token")));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("shared-1")));
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
  ASSERT_EQ(security->worker_tokens.size(), 1u);
  EXPECT_EQ(security->worker_tokens[0].token, "worker-env");
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
