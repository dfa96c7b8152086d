// Tests of CurlModelTransport (and AttemptStreamHandler over it) against the
// real fake Anthropic API, served in-process on loopback port 0.
#include "orchestrator/model/curl_model_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/random.h"
#include "common/retry_policy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "orchestrator/model/model_stream.h"
#include "tests/testing/fakeapi/fake_api_server.h"
#include "tests/testing/fakeapi/scenario.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::model {
namespace {

using common::AttemptFailure;
using common::HttpHeaders;
using common::Json;
using common::ModelRequest;
using common::TransportResult;
using ::testing::HasSubstr;
using ::testing::Not;
using toolmesh::testing::IsOk;
using toolmesh::testing::StatusIs;

constexpr char kApiKey[] = "sk-ant-test-SECRET-key-0123456789";
constexpr absl::Duration kWait = absl::Seconds(8);

// Records every callback; tests wait on it with a bounded timeout.
class RecordingHandler : public common::ModelStreamHandler {
 public:
  void OnResponseStarted(int http_status, const HttpHeaders& headers) override {
    absl::MutexLock lock(&mu_);
    ++started_calls_;
    status_ = http_status;
    headers_ = headers;
  }
  void OnData(std::string_view bytes) override {
    absl::MutexLock lock(&mu_);
    body_.append(bytes.data(), bytes.size());
  }
  void OnFinished(const TransportResult& result) override {
    absl::MutexLock lock(&mu_);
    ++finished_calls_;
    result_ = result;
  }

  // True if OnFinished came within `timeout`.
  bool WaitFinished(absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(
        absl::Condition(
            +[](int* n) { return *n > 0; }, &finished_calls_),
        timeout);
  }
  // True once at least `n` body bytes arrived within `timeout`.
  bool WaitBody(std::size_t n, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return body_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  }

  int finished_calls() {
    absl::MutexLock lock(&mu_);
    return finished_calls_;
  }
  int started_calls() {
    absl::MutexLock lock(&mu_);
    return started_calls_;
  }
  TransportResult result() {
    absl::MutexLock lock(&mu_);
    return result_;
  }
  int status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  HttpHeaders headers() {
    absl::MutexLock lock(&mu_);
    return headers_;
  }
  std::string body() {
    absl::MutexLock lock(&mu_);
    return body_;
  }

 private:
  absl::Mutex mu_;
  int started_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int finished_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int status_ ABSL_GUARDED_BY(mu_) = 0;
  HttpHeaders headers_ ABSL_GUARDED_BY(mu_);
  std::string body_ ABSL_GUARDED_BY(mu_);
  TransportResult result_ ABSL_GUARDED_BY(mu_);
};

// Collects AttemptOutcomes delivered by AttemptStreamHandlers.
class OutcomeSink {
 public:
  AttemptStreamHandler::DoneCallback Callback() {
    return [this](AttemptOutcome outcome) {
      absl::MutexLock lock(&mu_);
      outcomes_.push_back(std::move(outcome));
    };
  }
  bool WaitFor(std::size_t n, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    auto ready = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return outcomes_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  }
  std::vector<AttemptOutcome> outcomes() {
    absl::MutexLock lock(&mu_);
    return outcomes_;
  }

 private:
  absl::Mutex mu_;
  std::vector<AttemptOutcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

// A loopback port nothing listens on: bound, read, closed.
int UnusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 9;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 9;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string RequestBody(const std::string& prompt = "Say hello") {
  Json body = {{"model", "claude-sonnet-4-5"},
               {"max_tokens", 256},
               {"stream", true},
               {"messages", Json::array({Json{{"role", "user"},
                                              {"content", prompt}}})}};
  return common::DumpJson(body);
}

ModelRequest Request(const std::string& prompt = "Say hello") {
  ModelRequest request;
  request.body = RequestBody(prompt);
  request.request_id = "test";
  return request;
}

constexpr char kHelloBlocks[] =
    R"([{"type":"text","text":"Hello there, this is a streamed answer."}])";

std::string ScenarioWith(const std::string& fault_json, bool repeat = false) {
  std::string response = absl::StrCat(R"({"blocks":)", kHelloBlocks);
  if (!fault_json.empty()) absl::StrAppend(&response, R"(,"fault":)", fault_json);
  if (repeat) absl::StrAppend(&response, R"(,"repeat":true)");
  absl::StrAppend(&response, "}");
  return absl::StrCat(R"({"responses":[)", response, "]}");
}

class CurlModelTransportTest : public ::testing::Test {
 protected:
  void StartFake(const std::string& scenario_json, int threads = 16) {
    auto doc = common::ParseJson(scenario_json);
    ASSERT_THAT(doc.status(), IsOk());
    auto scenario = fakeapi::ParseScenario(*doc, "");
    ASSERT_THAT(scenario.status(), IsOk());
    fakeapi::FakeApiOptions options;
    options.scenario = *std::move(scenario);
    options.seed = 7;
    options.api_key = kApiKey;
    options.threads = threads;
    fake_ = std::make_unique<fakeapi::FakeApiServer>(std::move(options));
    ASSERT_THAT(fake_->Start(), IsOk());
  }

  CurlModelTransportOptions Options() {
    CurlModelTransportOptions options;
    options.base_url = fake_->base_url();
    options.api_key = kApiKey;
    options.connect_timeout = absl::Seconds(5);
    options.idle_timeout = absl::Seconds(5);
    options.total_timeout = absl::Seconds(30);
    return options;
  }

  void MakeTransport(CurlModelTransportOptions options) {
    auto transport = CurlModelTransport::Create(std::move(options));
    ASSERT_THAT(transport.status(), IsOk());
    transport_ = *std::move(transport);
  }

  void TearDown() override {
    transport_.reset();  // before the server: streams end cancelled
    if (fake_) fake_->Stop();
  }

  std::unique_ptr<fakeapi::FakeApiServer> fake_;
  std::unique_ptr<CurlModelTransport> transport_;
};

TEST_F(CurlModelTransportTest, StreamedResponseDecodesToFinalMessage) {
  StartFake(ScenarioWith(""));
  MakeTransport(Options());
  OutcomeSink sink;
  auto handler = std::make_shared<AttemptStreamHandler>(nullptr,
                                                        sink.Callback());
  ASSERT_THAT(transport_->Start(Request(), handler).status(), IsOk());
  ASSERT_TRUE(sink.WaitFor(1));
  AttemptOutcome outcome = sink.outcomes()[0];
  ASSERT_TRUE(outcome.ok()) << outcome.failure->detail;
  EXPECT_EQ(outcome.http_status, 200);
  EXPECT_EQ(outcome.transport.kind, TransportResult::Kind::kCompleted);
  EXPECT_GT(outcome.transport.bytes_received, 0);
  const Json& message = *outcome.message;
  EXPECT_EQ(message["type"], "message");
  EXPECT_EQ(message["stop_reason"], "end_turn");
  ASSERT_EQ(message["content"].size(), 1u);
  EXPECT_EQ(message["content"][0]["text"],
            "Hello there, this is a streamed answer.");
  EXPECT_TRUE(common::FindHeader(outcome.headers, "request-id").has_value());
  EXPECT_EQ(transport_->open_streams(), 0);
}

TEST_F(CurlModelTransportTest, FiftyConcurrentStreamsOnOneThreadAllComplete) {
  StartFake(ScenarioWith("", /*repeat=*/true), /*threads=*/64);
  // cpp-httplib listens with a backlog of 5: a burst of 50 connects loses
  // SYNs (1 s retransmits). Four keep-alive connections carry the 50
  // streams; all 50 are started at once and run on the one thread.
  CurlModelTransportOptions options = Options();
  options.max_connections = 4;
  MakeTransport(options);
  constexpr int kStreams = 50;
  OutcomeSink sink;
  std::vector<common::ModelStreamId> ids;
  for (int i = 0; i < kStreams; ++i) {
    auto handler = std::make_shared<AttemptStreamHandler>(nullptr,
                                                          sink.Callback());
    auto id = transport_->Start(Request(absl::StrCat("hello ", i)), handler);
    ASSERT_THAT(id.status(), IsOk());
    ids.push_back(*id);
  }
  // Ids are distinct and non-zero.
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
  EXPECT_NE(ids.front(), 0u);
  const bool all = sink.WaitFor(kStreams, absl::Seconds(9));
  EXPECT_EQ(sink.outcomes().size(), static_cast<std::size_t>(kStreams))
      << "open streams: " << transport_->open_streams()
      << ", fake API stats: " << common::DumpJson(fake_->Stats());
  ASSERT_TRUE(all);
  for (const AttemptOutcome& outcome : sink.outcomes()) {
    ASSERT_TRUE(outcome.ok()) << outcome.failure->detail;
    EXPECT_EQ((*outcome.message)["content"][0]["text"],
              "Hello there, this is a streamed answer.");
  }
  EXPECT_EQ(transport_->open_streams(), 0);
  EXPECT_EQ(fake_->Stats()["requests"], kStreams);
}

TEST_F(CurlModelTransportTest, Http429SurfacesStatusHeadersBodyAndServerDelay) {
  StartFake(ScenarioWith(
      R"({"type":"http_429","retry_after":"3","retry_after_ms":null})"));
  MakeTransport(Options());
  // Raw handler: what the transport itself reports.
  auto raw = std::make_shared<RecordingHandler>();
  ASSERT_THAT(transport_->Start(Request(), raw).status(), IsOk());
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_EQ(raw->started_calls(), 1);
  EXPECT_EQ(raw->status(), 429);
  EXPECT_EQ(raw->result().kind, TransportResult::Kind::kHttpError);
  EXPECT_EQ(raw->result().http_status, 429);
  EXPECT_EQ(raw->result().error, "");
  EXPECT_EQ(common::FindHeader(raw->headers(), "retry-after"), "3");
  EXPECT_EQ(common::FindHeader(raw->headers(), "x-should-retry"), "true");
  EXPECT_THAT(raw->body(), HasSubstr("rate_limit_error"));
  EXPECT_EQ(raw->result().bytes_received,
            static_cast<std::int64_t>(raw->body().size()));

  // The same response through the glue: a retryable failure with the
  // server's delay.
  transport_.reset();
  fake_->Stop();
  StartFake(ScenarioWith(
      R"({"type":"http_429","retry_after":"3","retry_after_ms":null})"));
  MakeTransport(Options());
  OutcomeSink sink;
  ASSERT_THAT(transport_->Start(Request(), std::make_shared<AttemptStreamHandler>(
                                               nullptr, sink.Callback()))
                  .status(),
              IsOk());
  ASSERT_TRUE(sink.WaitFor(1));
  AttemptOutcome outcome = sink.outcomes()[0];
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kHttpStatus);
  EXPECT_EQ(outcome.failure->http_status, 429);
  EXPECT_EQ(outcome.failure->error_type, "rate_limit_error");
  common::SeededRandomSource random(1);
  common::RetryPolicy policy(random);
  common::RetryDecision decision =
      policy.Decide(*outcome.failure, 0, absl::UnixEpoch());
  EXPECT_TRUE(decision.retry);
  EXPECT_EQ(decision.delay_kind, common::RetryDelayKind::kServer);
  EXPECT_EQ(decision.delay, absl::Seconds(3));
  EXPECT_EQ(decision.cause, "http_429");
}

TEST_F(CurlModelTransportTest, MidStreamErrorEventIsAStreamErrorFailure) {
  StartFake(ScenarioWith(R"({"type":"sse_error","after_events":3})"));
  MakeTransport(Options());
  OutcomeSink sink;
  ASSERT_THAT(transport_->Start(Request(), std::make_shared<AttemptStreamHandler>(
                                               nullptr, sink.Callback()))
                  .status(),
              IsOk());
  ASSERT_TRUE(sink.WaitFor(1));
  AttemptOutcome outcome = sink.outcomes()[0];
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.http_status, 200);
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kStreamError);
  EXPECT_EQ(outcome.failure->error_type, "overloaded_error");
  EXPECT_TRUE(common::ClassifyFailure(*outcome.failure).retryable);
}

TEST_F(CurlModelTransportTest, CutConnectionIsAConnectionError) {
  StartFake(ScenarioWith(R"({"type":"cut","after_bytes":300})"));
  MakeTransport(Options());
  auto raw = std::make_shared<RecordingHandler>();
  ASSERT_THAT(transport_->Start(Request(), raw).status(), IsOk());
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_EQ(raw->result().kind, TransportResult::Kind::kConnectionError);
  EXPECT_EQ(raw->result().http_status, 200);
  EXPECT_EQ(raw->body().size(), 300u);
  EXPECT_THAT(raw->result().error, HasSubstr("curl error"));

  // Through the glue: a retryable connection failure.
  auto doc = common::ParseJson(R"({"responses":[{"blocks":)" +
                               std::string(kHelloBlocks) +
                               R"(,"fault":{"type":"cut","after_bytes":300}}]})");
  ASSERT_THAT(doc.status(), IsOk());
  transport_.reset();
  fake_->Stop();
  StartFake(common::DumpJson(*doc));
  MakeTransport(Options());
  OutcomeSink sink;
  ASSERT_THAT(transport_->Start(Request(), std::make_shared<AttemptStreamHandler>(
                                               nullptr, sink.Callback()))
                  .status(),
              IsOk());
  ASSERT_TRUE(sink.WaitFor(1));
  AttemptOutcome outcome = sink.outcomes()[0];
  ASSERT_TRUE(outcome.failure.has_value());
  EXPECT_EQ(outcome.failure->kind, AttemptFailure::Kind::kConnection);
  EXPECT_TRUE(common::ClassifyFailure(*outcome.failure).retryable);
}

TEST_F(CurlModelTransportTest, SlowDripBeyondTheIdleTimeoutTimesOut) {
  StartFake(ScenarioWith(R"({"type":"drip","delay_ms":4000})"));
  CurlModelTransportOptions options = Options();
  options.idle_timeout = absl::Seconds(1);
  MakeTransport(options);
  auto raw = std::make_shared<RecordingHandler>();
  const absl::Time start = absl::Now();
  ASSERT_THAT(transport_->Start(Request(), raw).status(), IsOk());
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_EQ(raw->result().kind, TransportResult::Kind::kTimeout);
  EXPECT_EQ(raw->finished_calls(), 1);
  // Well before the drip's 4 s gap ended.
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(3900));
  EXPECT_THAT(raw->result().error, Not(HasSubstr(kApiKey)));
}

TEST_F(CurlModelTransportTest, CancelMidStreamFinishesExactlyOnceCancelled) {
  StartFake(ScenarioWith(R"({"type":"drip","delay_ms":300})", true));
  MakeTransport(Options());
  auto raw = std::make_shared<RecordingHandler>();
  auto id = transport_->Start(Request(), raw);
  ASSERT_THAT(id.status(), IsOk());
  ASSERT_TRUE(raw->WaitBody(1));  // mid-stream: the first event arrived
  transport_->Cancel(*id);
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_EQ(raw->result().kind, TransportResult::Kind::kCancelled);
  EXPECT_GT(raw->result().bytes_received, 0);
  transport_->Cancel(*id);  // already finished: nothing happens
  transport_->Cancel(987654321);  // unknown: nothing happens

  // Commands run in order: once a later stream is cancelled too, the
  // repeated Cancel above has been handled.
  auto barrier = std::make_shared<RecordingHandler>();
  auto barrier_id = transport_->Start(Request(), barrier);
  ASSERT_THAT(barrier_id.status(), IsOk());
  transport_->Cancel(*barrier_id);
  ASSERT_TRUE(barrier->WaitFinished());
  EXPECT_EQ(raw->finished_calls(), 1);
  EXPECT_EQ(transport_->open_streams(), 0);
}

TEST_F(CurlModelTransportTest, DestructionFinishesEveryOpenStreamCancelled) {
  StartFake(ScenarioWith(R"({"type":"drip","delay_ms":2000})", true), 16);
  MakeTransport(Options());
  std::vector<std::shared_ptr<RecordingHandler>> handlers;
  for (int i = 0; i < 5; ++i) {
    handlers.push_back(std::make_shared<RecordingHandler>());
    ASSERT_THAT(transport_->Start(Request(), handlers.back()).status(),
                IsOk());
  }
  ASSERT_TRUE(handlers[0]->WaitBody(1));
  transport_.reset();  // joins: every OnFinished has run when it returns
  for (const auto& handler : handlers) {
    EXPECT_EQ(handler->finished_calls(), 1);
    EXPECT_EQ(handler->result().kind, TransportResult::Kind::kCancelled);
  }
}

// A handler that starts a new stream from inside OnFinished, which must be
// refused cleanly during shutdown (no deadlock, no callback).
class RestartingHandler : public RecordingHandler {
 public:
  explicit RestartingHandler(common::ModelTransport* transport)
      : transport_(transport) {}
  void OnFinished(const TransportResult& result) override {
    restart_status_ =
        transport_->Start(Request(), std::make_shared<RecordingHandler>())
            .status();
    RecordingHandler::OnFinished(result);
  }
  absl::Status restart_status_;

 private:
  common::ModelTransport* transport_;
};

TEST_F(CurlModelTransportTest, StartFromAHandlerDuringShutdownIsRefused) {
  StartFake(ScenarioWith(R"({"type":"drip","delay_ms":2000})", true));
  MakeTransport(Options());
  auto handler = std::make_shared<RestartingHandler>(transport_.get());
  ASSERT_THAT(transport_->Start(Request(), handler).status(), IsOk());
  ASSERT_TRUE(handler->WaitBody(1));
  transport_.reset();
  EXPECT_EQ(handler->finished_calls(), 1);
  EXPECT_THAT(handler->restart_status_,
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(CurlModelTransportTest, RequestHeadersReachTheApi) {
  StartFake(ScenarioWith(""));
  CurlModelTransportOptions options = Options();
  options.anthropic_beta = {"beta-one", "beta-two"};
  MakeTransport(options);
  ModelRequest request = Request();
  request.extra_headers = {{"anthropic-beta", "beta-three"}};
  auto raw = std::make_shared<RecordingHandler>();
  ASSERT_THAT(transport_->Start(std::move(request), raw).status(), IsOk());
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_EQ(raw->result().kind, TransportResult::Kind::kCompleted);
  Json log = fake_->RequestLog();
  ASSERT_EQ(log.size(), 1u);
  const Json& headers = log[0]["headers"];
  EXPECT_EQ(headers["x-api-key-present"], true);
  EXPECT_EQ(headers["anthropic-version"], "2023-06-01");
  EXPECT_EQ(headers["anthropic-beta"], "beta-one,beta-two,beta-three");
  EXPECT_EQ(headers["content-type"], "application/json");
  EXPECT_EQ(log[0]["status"], 200);
  EXPECT_EQ(log[0]["body"]["messages"][0]["content"], "Say hello");
}

TEST_F(CurlModelTransportTest, WrongKeyGives401WithoutTheKeyAnywhere) {
  StartFake(ScenarioWith(""));
  CurlModelTransportOptions options = Options();
  options.api_key = "sk-ant-WRONG-secret-987654";
  MakeTransport(options);
  auto raw = std::make_shared<RecordingHandler>();
  ASSERT_THAT(transport_->Start(Request(), raw).status(), IsOk());
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_EQ(raw->result().kind, TransportResult::Kind::kHttpError);
  EXPECT_EQ(raw->status(), 401);
  EXPECT_THAT(raw->body(), HasSubstr("authentication_error"));
  EXPECT_THAT(raw->result().error, Not(HasSubstr("WRONG")));
}

TEST_F(CurlModelTransportTest, RefusedConnectionIsAConnectionErrorWithoutKey) {
  CurlModelTransportOptions options;
  options.base_url = absl::StrCat("http://127.0.0.1:", UnusedPort());
  options.api_key = kApiKey;
  MakeTransport(options);
  auto raw = std::make_shared<RecordingHandler>();
  ASSERT_THAT(transport_->Start(Request(), raw).status(), IsOk());
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_EQ(raw->result().kind, TransportResult::Kind::kConnectionError);
  EXPECT_EQ(raw->started_calls(), 0);
  EXPECT_EQ(raw->result().http_status, 0);
  EXPECT_FALSE(raw->result().error.empty());
  EXPECT_THAT(raw->result().error, Not(HasSubstr(kApiKey)));
  EXPECT_THAT(raw->result().error, Not(HasSubstr("SECRET")));
}

TEST_F(CurlModelTransportTest, ErrorTextsNeverContainTheKey) {
  // A key that also appears in the URL: the one place curl could echo it.
  CurlModelTransportOptions options;
  options.base_url = absl::StrCat("http://", kApiKey, ".invalid");
  options.api_key = kApiKey;
  options.connect_timeout = absl::Seconds(2);
  MakeTransport(options);
  auto raw = std::make_shared<RecordingHandler>();
  ASSERT_THAT(transport_->Start(Request(), raw).status(), IsOk());
  ASSERT_TRUE(raw->WaitFinished());
  EXPECT_NE(raw->result().kind, TransportResult::Kind::kCompleted);
  EXPECT_FALSE(raw->result().error.empty());
  EXPECT_THAT(raw->result().error, Not(HasSubstr(kApiKey)));
  // curl names the host it could not reach: the key in it was redacted.
  EXPECT_THAT(raw->result().error, HasSubstr("[redacted]"));

  // Option and header errors do not echo it either.
  CurlModelTransportOptions bad;
  bad.api_key = absl::StrCat(kApiKey, "\n");
  absl::Status status = bad.Validate();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("SECRET")));
}

TEST_F(CurlModelTransportTest, BadExtraHeadersAreRejectedAtStart) {
  CurlModelTransportOptions options;
  options.base_url = "http://127.0.0.1:9";
  options.api_key = kApiKey;
  MakeTransport(options);
  auto handler = std::make_shared<RecordingHandler>();
  ModelRequest injected = Request();
  injected.extra_headers = {{"x-note", "a\r\nx-evil: 1"}};
  EXPECT_THAT(transport_->Start(injected, handler).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ModelRequest reserved = Request();
  reserved.extra_headers = {{"X-Api-Key", "other"}};
  EXPECT_THAT(transport_->Start(reserved, handler).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ModelRequest bad_name = Request();
  bad_name.extra_headers = {{"bad name", "v"}};
  EXPECT_THAT(transport_->Start(bad_name, handler).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(transport_->Start(Request(), nullptr).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(handler->finished_calls(), 0);
  EXPECT_EQ(transport_->open_streams(), 0);
}

TEST(CurlModelTransportOptionsTest, ValidateRejectsBadOptions) {
  CurlModelTransportOptions options;
  options.api_key = "k";
  EXPECT_THAT(options.Validate(), IsOk());
  CurlModelTransportOptions no_key;
  EXPECT_THAT(no_key.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  CurlModelTransportOptions ftp = options;
  ftp.base_url = "ftp://example.com";
  EXPECT_THAT(ftp.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  CurlModelTransportOptions beta = options;
  beta.anthropic_beta = {"a,b"};
  EXPECT_THAT(beta.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  CurlModelTransportOptions conns = options;
  conns.max_connections = 0;
  EXPECT_THAT(conns.Validate(), StatusIs(absl::StatusCode::kInvalidArgument));
  CurlModelTransportOptions timeout = options;
  timeout.connect_timeout = absl::ZeroDuration();
  EXPECT_THAT(timeout.Validate(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(CurlModelTransport::Create(no_key).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace toolmesh::model
