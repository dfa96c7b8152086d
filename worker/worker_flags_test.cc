// Tests of toolmesh-worker's token file, TLS and message-size flags
// (worker_flags.h). The older flags are covered in worker_client_test.cc.
#include "worker/worker_flags.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::worker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::toolmesh::testing::IsOk;
using ::toolmesh::testing::IsOkAndHolds;
using ::toolmesh::testing::StatusIs;

std::vector<std::string> With(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--orchestrator", "h:1", "--tools",
                                   "t.json"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

const char* NoEnv(const char*) { return nullptr; }

TEST(WorkerFlagsTest, SecurityFlagsDefaultToPlaintextAndTheEnvironment) {
  absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags(With({}), "d");
  ASSERT_THAT(flags.status(), IsOk());
  EXPECT_TRUE(flags->token_file.empty());
  EXPECT_FALSE(flags->tls.enabled());
  EXPECT_EQ(flags->max_message_bytes, orchestrator::kDefaultMaxMessageBytes);
  EXPECT_THAT(ResolveWorkerToken(*flags, NoEnv), IsOkAndHolds(""));
  EXPECT_THAT(ResolveWorkerToken(*flags,
                                 [](const char* name) -> const char* {
                                   return std::string(name) ==
                                                  "TOOLMESH_WORKER_TOKEN"
                                              ? "from-env"
                                              : nullptr;
                                 }),
              IsOkAndHolds("from-env"));
}

TEST(WorkerFlagsTest, ParsesTokenFileTlsFilesAndMessageSize) {
  absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags(
      With({"--token-file", "/run/token", "--tls-ca=/ca.pem", "--tls-cert",
            "/c.pem", "--tls-key", "/c.key", "--max-message-bytes", "65536"}),
      "d");
  ASSERT_THAT(flags.status(), IsOk());
  EXPECT_EQ(flags->token_file, "/run/token");
  EXPECT_EQ(flags->tls.ca_path, "/ca.pem");
  EXPECT_EQ(flags->tls.cert_path, "/c.pem");
  EXPECT_EQ(flags->tls.key_path, "/c.key");
  EXPECT_EQ(flags->max_message_bytes, 65536);
}

TEST(WorkerFlagsTest, BadSecurityFlagsNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--token-file", ""}, "--token-file"},
      {{"--tls-ca="}, "--tls-ca"},
      {{"--tls-cert", "/c.pem"}, "--tls-key"},
      {{"--tls-key", "/c.key"}, "--tls-cert"},
      {{"--max-message-bytes", "12"}, "--max-message-bytes"},
      {{"--token-file"}, "--token-file: missing value"},
  };
  for (const auto& [extra, expected] : cases) {
    EXPECT_THAT(ParseWorkerFlags(With(extra), "d").status(),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr(expected)))
        << expected;
  }
}

class WorkerTokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "toolmesh-wflags-XXXXXX")
            .string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  std::string dir_;
};

TEST_F(WorkerTokenFileTest, FileWinsOverTheEnvironmentAndIsTrimmed) {
  const std::string path = dir_ + "/token";
  std::ofstream(path) << "file-token\n";
  absl::StatusOr<WorkerFlags> flags =
      ParseWorkerFlags(With({"--token-file", path}), "d");
  ASSERT_THAT(flags.status(), IsOk());
  EXPECT_THAT(ResolveWorkerToken(*flags,
                                 [](const char*) -> const char* {
                                   return "env-token";
                                 }),
              IsOkAndHolds("file-token"));
}

TEST_F(WorkerTokenFileTest, UnreadableOrEmptyFileIsOneLine) {
  absl::StatusOr<WorkerFlags> flags =
      ParseWorkerFlags(With({"--token-file", dir_ + "/absent"}), "d");
  ASSERT_THAT(flags.status(), IsOk());
  absl::Status status = ResolveWorkerToken(*flags, NoEnv).status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("cannot read " + dir_ + "/absent")));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("\n")));

  const std::string empty = dir_ + "/empty";
  std::ofstream(empty) << "";
  flags->token_file = empty;
  EXPECT_THAT(ResolveWorkerToken(*flags, NoEnv).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is empty")));
}

TEST(WorkerFlagsTest, MalformedEnvironmentTokenIsRejected) {
  absl::StatusOr<WorkerFlags> flags = ParseWorkerFlags(With({}), "d");
  ASSERT_THAT(flags.status(), IsOk());
  EXPECT_THAT(ResolveWorkerToken(*flags,
                                 [](const char*) -> const char* {
                                   return "bad token";
                                 })
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TOOLMESH_WORKER_TOKEN")));
}

}  // namespace
}  // namespace toolmesh::worker
