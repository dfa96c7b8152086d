#include "worker/http_executor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace toolmesh::worker {
namespace {

using common::Json;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(20);

class Outcomes {
 public:
  DoneCallback Callback() {
    return [this](ToolOutcome outcome) {
      absl::MutexLock lock(&mu_);
      outcomes_.push_back(std::move(outcome));
    };
  }
  ToolOutcome WaitOne() {
    absl::MutexLock lock(&mu_);
    auto any = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return !outcomes_.empty();
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&any), kWait)) {
      ADD_FAILURE() << "no outcome within " << kWait;
      return ErrorOutcome(OutcomeReason::kToolFailed, "no outcome");
    }
    return outcomes_.front();
  }
  size_t Count() {
    absl::MutexLock lock(&mu_);
    return outcomes_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<ToolOutcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

std::string Text(const ToolOutcome& outcome) {
  return outcome.content.is_string() ? outcome.content.get<std::string>()
                                     : common::DumpJson(outcome.content);
}

ToolCall MakeCall(const std::string& id, Json input) {
  ToolCall call;
  call.id = common::ToolUseId(id);
  call.name = "t";
  call.input = std::move(input);
  return call;
}

class HttpExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Post("/ok", [](const httplib::Request& req, httplib::Response& res) {
      res.set_content("ct=" + req.get_header_value("Content-Type") +
                          " body=" + req.body,
                      "text/plain");
    });
    server_.Post("/fail", [](const httplib::Request&, httplib::Response& res) {
      res.status = 500;
      res.set_content("boom: " + std::string(5000, 'e'), "text/plain");
    });
    server_.Post("/big", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(std::string(3 << 20, 'b'), "text/plain");
    });
    server_.Post("/slow", [this](const httplib::Request&, httplib::Response& res) {
      absl::MutexLock lock(&mu_);
      ++slow_entered_;
      auto released = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return released_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&released), kWait);
      res.set_content("late", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }

  void TearDown() override {
    {
      absl::MutexLock lock(&mu_);
      released_ = true;
    }
    server_.stop();
    thread_.join();
  }

  HttpSpec Spec(const std::string& path,
                absl::Duration timeout = absl::Seconds(30)) {
    HttpSpec spec;
    spec.url = "http://127.0.0.1:" + std::to_string(port_) + path;
    spec.timeout = timeout;
    return spec;
  }

  void WaitForSlowRequest() {
    absl::MutexLock lock(&mu_);
    auto entered = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return slow_entered_ > 0;
    };
    ASSERT_TRUE(mu_.AwaitWithTimeout(absl::Condition(&entered), kWait));
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  absl::Mutex mu_;
  int slow_entered_ ABSL_GUARDED_BY(mu_) = 0;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  Outcomes outcomes_;
};

TEST_F(HttpExecutorTest, SuccessfulResponseBodyIsTheResult) {
  HttpExecutor executor(Spec("/ok"));
  executor.Run(MakeCall("toolu_1", Json::parse(R"({"city":"Oslo","n":2})")),
               outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_FALSE(outcome.is_error) << Text(outcome);
  EXPECT_EQ(outcome.reason, OutcomeReason::kOk);
  EXPECT_EQ(Text(outcome), R"(ct=application/json body={"city":"Oslo","n":2})");
}

TEST_F(HttpExecutorTest, ServerErrorIsAToolErrorWithStatusAndTruncatedBody) {
  HttpExecutor executor(Spec("/fail"));
  executor.Run(MakeCall("toolu_1", Json::object()), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kToolFailed);
  std::string text = Text(outcome);
  EXPECT_THAT(text, HasSubstr("HTTP 500 from http://127.0.0.1:"));
  EXPECT_THAT(text, HasSubstr("boom: eee"));
  EXPECT_THAT(text, ::testing::EndsWith("[truncated]"));
  EXPECT_LT(text.size(), 2048u + 100u);
}

TEST_F(HttpExecutorTest, SlowReplyBeyondTheTimeoutIsATimeout) {
  HttpExecutor executor(Spec("/slow", absl::Milliseconds(300)));
  executor.Run(MakeCall("toolu_1", Json::object()), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kTimeout);
  EXPECT_THAT(Text(outcome), HasSubstr("timed out after 300 ms"));
  // libcurl measures the timeout on its own clock, in whole milliseconds.
  EXPECT_GE(outcome.duration, absl::Milliseconds(250));
}

TEST_F(HttpExecutorTest, CancelEndsAWaitingRequestAtOnce) {
  HttpExecutor executor(Spec("/slow", absl::Seconds(60)));
  executor.Run(MakeCall("toolu_1", Json::object()), outcomes_.Callback());
  WaitForSlowRequest();
  EXPECT_EQ(outcomes_.Count(), 0u);
  EXPECT_TRUE(executor.Cancel(common::ToolUseId("toolu_1")));
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_EQ(outcome.reason, OutcomeReason::kCancelled);
  EXPECT_LT(outcome.duration, absl::Seconds(10));
  EXPECT_FALSE(executor.Cancel(common::ToolUseId("toolu_1")));
}

TEST_F(HttpExecutorTest, DestructionCancelsRunningRequests) {
  {
    HttpExecutor executor(Spec("/slow", absl::Seconds(60)));
    executor.Run(MakeCall("toolu_1", Json::object()), outcomes_.Callback());
    WaitForSlowRequest();
  }
  ASSERT_EQ(outcomes_.Count(), 1u);
  EXPECT_EQ(outcomes_.WaitOne().reason, OutcomeReason::kCancelled);
}

TEST_F(HttpExecutorTest, LargeBodyIsTruncatedWithAMarker) {
  HttpExecutor executor(Spec("/big"));
  executor.Run(MakeCall("toolu_1", Json::object()), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  ASSERT_FALSE(outcome.is_error);
  const std::string marker = "\n[toolmesh: output truncated at 1048576 bytes]";
  EXPECT_EQ(Text(outcome).size(), (size_t{1} << 20) + marker.size());
  EXPECT_THAT(Text(outcome), ::testing::EndsWith(marker));
}

TEST_F(HttpExecutorTest, UnknownPathIsANonSuccessStatus) {
  HttpExecutor executor(Spec("/nothing-here"));
  executor.Run(MakeCall("toolu_1", Json::object()), outcomes_.Callback());
  ToolOutcome outcome = outcomes_.WaitOne();
  EXPECT_TRUE(outcome.is_error);
  EXPECT_THAT(Text(outcome), HasSubstr("HTTP 404"));
}

TEST(HttpExecutorConnectTest, RefusedConnectionIsAToolError) {
  // A bound socket that does not listen: connecting to it is refused.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  HttpSpec spec;
  spec.url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/x";
  spec.timeout = absl::Seconds(10);
  Outcomes outcomes;
  {
    HttpExecutor executor(spec);
    executor.Run(MakeCall("toolu_1", Json::object()), outcomes.Callback());
    ToolOutcome outcome = outcomes.WaitOne();
    EXPECT_TRUE(outcome.is_error);
    EXPECT_EQ(outcome.reason, OutcomeReason::kToolFailed);
    EXPECT_THAT(Text(outcome), HasSubstr("request to " + spec.url + " failed"));
  }
  close(fd);
}

}  // namespace
}  // namespace toolmesh::worker
