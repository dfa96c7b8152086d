// End-to-end tests of FakeApiServer over loopback with a plain HTTP client
// (libcurl): headers and 400s, scenario responses, replays of every recorded
// fixture, each fault as a client sees it, the request log, the rule-driven
// model, and the toolmesh-fakeapi binary's command line.
#include <curl/curl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "common/stream_accumulator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fakeapi/fake_api_server.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/status_matchers.h"

namespace toolmesh::fakeapi {
namespace {

using ::testing::HasSubstr;
using ::toolmesh::testing::IsOk;

struct HttpResult {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  double seconds = 0;
};

std::size_t OnBody(char* data, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

std::size_t OnHeader(char* data, std::size_t size, std::size_t n, void* out) {
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) {
      value.pop_back();
    }
    if (!value.empty() && value.front() == ' ') value.erase(0, 1);
    (*static_cast<std::map<std::string, std::string>*>(out))[name] = value;
  }
  return size * n;
}

HttpResult Http(const std::string& url, const std::string* body,
                const std::vector<std::string>& headers) {
  HttpResult result;
  CURL* curl = curl_easy_init();
  curl_slist* list = nullptr;
  for (const std::string& header : headers) {
    list = curl_slist_append(list, header.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  if (body != nullptr) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE,
                     static_cast<long>(body->size()));
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &result.headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  auto start = std::chrono::steady_clock::now();
  result.code = curl_easy_perform(curl);
  result.seconds = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - start)
                       .count();
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &result.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(curl);
  return result;
}

Json Parse(const std::string& text) {
  auto value = common::ParseJson(text);
  EXPECT_THAT(value.status(), IsOk()) << text;
  return value.ok() ? *value : Json();
}

// What a client makes of a streamed body.
struct Decoded {
  common::StreamAccumulator::State state;
  std::optional<common::StreamError> error;
  Json message;  // the final message when complete
  std::vector<common::BlockInfo> blocks;
};

Decoded Decode(const std::string& bytes) {
  common::StreamAccumulator accumulator;
  (void)accumulator.Feed(bytes);
  (void)accumulator.Finish();
  Decoded decoded{accumulator.state(), accumulator.error(), Json(),
                  accumulator.Blocks()};
  auto message = accumulator.FinalMessage();
  if (message.ok()) decoded.message = *message;
  return decoded;
}

Json UserRequest(const std::string& prompt, bool stream = true) {
  return Json{{"model", "claude-fake-1"},
              {"max_tokens", 1024},
              {"stream", stream},
              {"messages",
               Json::array({{{"role", "user"}, {"content", prompt}}})}};
}

Json WebSearchTool() {
  return Json{{"type", "web_search_20250305"}, {"name", "web_search"}};
}

Json ClientTool(const std::string& name) {
  return Json{{"name", name},
              {"input_schema",
               {{"type", "object"},
                {"properties", {{"city", {{"type", "string"}}}}},
                {"required", Json::array({"city"})}}}};
}

class FakeApiServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { curl_global_init(CURL_GLOBAL_DEFAULT); }

  void Start(FakeApiOptions options) {
    server_ = std::make_unique<FakeApiServer>(std::move(options));
    ASSERT_THAT(server_->Start(), IsOk());
  }

  void StartScenario(const std::string& scenario_json,
                     FakeApiOptions options = {}) {
    auto scenario = ParseScenario(Parse(scenario_json), "");
    ASSERT_THAT(scenario.status(), IsOk());
    options.scenario = *std::move(scenario);
    Start(std::move(options));
  }

  HttpResult Post(const Json& body,
                  std::vector<std::string> headers = {
                      "x-api-key: sk-test", "anthropic-version: 2023-06-01",
                      "content-type: application/json"}) {
    std::string text = common::DumpJson(body);
    return Http(server_->base_url() + "/v1/messages", &text, headers);
  }

  HttpResult Get(const std::string& path) {
    return Http(server_->base_url() + path, nullptr, {});
  }

  std::unique_ptr<FakeApiServer> server_;
};

// ---------------------------------------------------------------------------
// Headers, validation, non-streaming.

TEST(FakeApiServerLifecycleTest, StopRightAfterStartReturns) {
  // A Stop() before the server loop had started used to be ignored by
  // cpp-httplib and hang on join; repeat to make the race likely.
  for (int i = 0; i < 50; ++i) {
    FakeApiServer server(FakeApiOptions{});
    ASSERT_TRUE(server.Start().ok());
    server.Stop();
  }
}

TEST_F(FakeApiServerTest, MissingApiKeyIs401AuthenticationError) {
  Start({});
  HttpResult r = Post(UserRequest("hi"), {"anthropic-version: 2023-06-01"});
  EXPECT_EQ(r.status, 401);
  Json body = Parse(r.body);
  EXPECT_EQ(body["type"], "error");
  EXPECT_EQ(body["error"]["type"], "authentication_error");
  ASSERT_TRUE(r.headers.count("request-id"));
  EXPECT_EQ(body["request_id"], r.headers["request-id"]);
  EXPECT_EQ(r.headers["request-id"].substr(0, 4), "req_");
}

TEST_F(FakeApiServerTest, WrongApiKeyIs401WhenAKeyIsConfigured) {
  FakeApiOptions options;
  options.api_key = "sk-right";
  Start(options);
  HttpResult wrong = Post(UserRequest("hi"), {"x-api-key: sk-wrong",
                                               "anthropic-version: 2023-06-01"});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(Parse(wrong.body)["error"]["message"], "invalid x-api-key");
  HttpResult right = Post(UserRequest("hi"), {"x-api-key: sk-right",
                                               "anthropic-version: 2023-06-01"});
  EXPECT_EQ(right.status, 200);
}

TEST_F(FakeApiServerTest, MissingVersionHeaderIs400) {
  Start({});
  HttpResult r = Post(UserRequest("hi"), {"x-api-key: k"});
  EXPECT_EQ(r.status, 400);
  Json body = Parse(r.body);
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["message"], "anthropic-version: header is required");
}

TEST_F(FakeApiServerTest, BadJsonAndMissingFieldsAre400) {
  Start({});
  std::string bad = "{\"model\":";
  HttpResult r = Http(server_->base_url() + "/v1/messages", &bad,
                      {"x-api-key: k", "anthropic-version: 2023-06-01"});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Parse(r.body)["error"]["type"], "invalid_request_error");
  Json no_max = UserRequest("hi");
  no_max.erase("max_tokens");
  HttpResult r2 = Post(no_max);
  EXPECT_EQ(r2.status, 400);
  EXPECT_EQ(Parse(r2.body)["error"]["message"], "max_tokens: Field required");
  EXPECT_EQ(server_->Stats()["rejected_400"], 2);
}

TEST_F(FakeApiServerTest, Fixture19RequestGetsFixture19Response) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  auto text = ::toolmesh::testing::ReadFile(
      dir + "/19-400-orphan-srvtoolu-in-tool-result.request-response.json");
  ASSERT_THAT(text.status(), IsOk());
  Json fixture = Parse(*text);
  Start({});
  HttpResult r = Post(fixture["request"]);
  EXPECT_EQ(r.status, fixture["response"]["status"]);
  Json body = Parse(r.body);
  Json expected = fixture["response"]["body"];
  EXPECT_EQ(body["type"], expected["type"]);
  EXPECT_EQ(body["error"], expected["error"]);
  EXPECT_EQ(body["request_id"], r.headers["request-id"]);
  EXPECT_EQ(server_->Stats()["rejected_400"], 1);
}

TEST_F(FakeApiServerTest, ReplayTrapIsRejectedWithTheApisText) {
  // A deferred server call followed by more than tool results (d.6 trap).
  Start({});
  Json request = UserRequest("x");
  request["tools"] = Json::array({WebSearchTool(), ClientTool("client")});
  request["messages"] = Parse(R"([
    {"role":"user","content":"go"},
    {"role":"assistant","content":[
      {"type":"server_tool_use","id":"srvtoolu_D","name":"web_search","input":{"query":"q"}},
      {"type":"tool_use","id":"toolu_C","name":"client","input":{"city":"x"}}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"toolu_C","content":"ok"},
      {"type":"text","text":"and also this"}]}])");
  HttpResult r = Post(request);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(Parse(r.body)["error"]["message"].get<std::string>(),
              HasSubstr("`web_search` tool use with id `srvtoolu_D` was found "
                        "without a corresponding `web_search_tool_result` "
                        "block"));
}

TEST_F(FakeApiServerTest, NonStreamingReturnsTheMessageTheStreamBuilds) {
  StartScenario(R"({"responses":[{"repeat":true,"blocks":[
      {"type":"text","text":"Let me check the weather for you right away."},
      {"type":"tool_use","id":"toolu_fixed","name":"get_weather","input":{"city":"Paris"}}],
      "usage":{"input_tokens":12,"output_tokens":34}}]})");
  HttpResult streamed = Post(UserRequest("w", true));
  HttpResult whole = Post(UserRequest("w", false));
  ASSERT_EQ(streamed.status, 200);
  ASSERT_EQ(whole.status, 200);
  EXPECT_EQ(streamed.headers["content-type"], "text/event-stream");
  EXPECT_EQ(whole.headers["content-type"], "application/json");
  Decoded decoded = Decode(streamed.body);
  ASSERT_EQ(decoded.state, common::StreamAccumulator::State::kComplete);
  Json message = Parse(whole.body);
  EXPECT_EQ(message["content"], decoded.message["content"]);
  EXPECT_EQ(message["stop_reason"], "tool_use");
  EXPECT_EQ(message["usage"], decoded.message["usage"]);
  EXPECT_EQ(message["usage"]["output_tokens"], 34);
  EXPECT_EQ(message["content"][1]["input"]["city"], "Paris");
}

// ---------------------------------------------------------------------------
// Recorded replays.

TEST_F(FakeApiServerTest, ReplayingEveryFixtureKeepsItsMeaning) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  std::vector<std::string> names = ::toolmesh::testing::FixtureNames(".sse");
  ASSERT_FALSE(names.empty());
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    Json scenario = {{"responses", Json::array({{{"sse_file", dir + "/" + name}}})}};
    StartScenario(common::DumpJson(scenario));
    HttpResult r = Post(UserRequest("replay"));
    ASSERT_EQ(r.status, 200);
    auto file = ::toolmesh::testing::ReadFile(dir + "/" + name);
    ASSERT_THAT(file.status(), IsOk());
    EXPECT_EQ(r.body, *file);  // recorded bytes go out unchanged
    Decoded served = Decode(r.body);
    Decoded direct = Decode(*file);
    EXPECT_EQ(served.state, direct.state);
    EXPECT_EQ(served.message, direct.message);
    EXPECT_EQ(served.error.has_value(), direct.error.has_value());
    if (served.error && direct.error) {
      EXPECT_EQ(served.error->kind, direct.error->kind);
    }
    server_->Stop();
  }
}

// ---------------------------------------------------------------------------
// Faults, observed by a client.

constexpr char kToolScenarioBlocks[] = R"([
  {"type":"text","text":"I will call the weather tool for Paris now, one moment."},
  {"type":"tool_use","name":"get_weather","input":{"city":"Paris","units":"celsius"}}])";

std::string FaultScenario(const std::string& fault) {
  return std::string(R"({"responses":[{"blocks":)") + kToolScenarioBlocks +
         R"(,"fault":)" + fault + "}]}";
}

TEST_F(FakeApiServerTest, Http429CarriesRetryHeadersAndRateLimitBody) {
  StartScenario(FaultScenario(R"("http_429")"));
  HttpResult r = Post(UserRequest("x"));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["retry-after"], "1");
  EXPECT_EQ(r.headers["retry-after-ms"], "20");
  EXPECT_EQ(r.headers["x-should-retry"], "true");
  Json body = Parse(r.body);
  EXPECT_EQ(body["error"]["type"], "rate_limit_error");
  EXPECT_EQ(body["request_id"], r.headers["request-id"]);
}

TEST_F(FakeApiServerTest, Http500And529AreApiAndOverloadedErrors) {
  StartScenario(R"({"responses":[
    {"blocks":[{"type":"text","text":"a"}],"fault":"http_500"},
    {"blocks":[{"type":"text","text":"b"}],"fault":{"type":"http_529","should_retry":"false"}},
    {"blocks":[{"type":"text","text":"after the faults"}]}]})");
  HttpResult r500 = Post(UserRequest("x"));
  EXPECT_EQ(r500.status, 500);
  EXPECT_EQ(Parse(r500.body)["error"]["type"], "api_error");
  HttpResult r529 = Post(UserRequest("x"));
  EXPECT_EQ(r529.status, 529);
  EXPECT_EQ(Parse(r529.body)["error"]["type"], "overloaded_error");
  EXPECT_EQ(r529.headers["x-should-retry"], "false");
  HttpResult ok = Post(UserRequest("x"));
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(Decode(ok.body).message["content"][0]["text"], "after the faults");
}

TEST_F(FakeApiServerTest, SseErrorEventEndsTheStreamWithoutMessageStop) {
  StartScenario(FaultScenario(R"({"type":"sse_error","after_events":4})"));
  HttpResult r = Post(UserRequest("x"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.code, CURLE_OK);
  std::vector<std::string> events = SplitSseEvents(r.body);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_THAT(events.back(), HasSubstr("event: error"));
  EXPECT_THAT(r.body, ::testing::Not(HasSubstr("message_stop")));
  Decoded decoded = Decode(r.body);
  ASSERT_TRUE(decoded.error.has_value());
  EXPECT_EQ(decoded.error->kind, common::StreamError::Kind::kApiError);
  EXPECT_EQ(decoded.error->api_error->type, "overloaded_error");
  EXPECT_EQ(decoded.error->api_error->request_id, r.headers["request-id"]);
}

TEST_F(FakeApiServerTest, CutConnectionIsAPartialTransfer) {
  StartScenario(FaultScenario(R"({"type":"cut","after_bytes":700})"));
  HttpResult r = Post(UserRequest("x"));
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_TRUE(r.code == CURLE_PARTIAL_FILE || r.code == CURLE_RECV_ERROR)
      << curl_easy_strerror(r.code);
  EXPECT_EQ(r.body.size(), 700u);
  EXPECT_EQ(Decode(r.body).error->kind, common::StreamError::Kind::kTruncated);
}

TEST_F(FakeApiServerTest, DripDelaysEveryEvent) {
  StartScenario(FaultScenario(R"({"type":"drip","delay_ms":15})"));
  HttpResult r = Post(UserRequest("x"));
  EXPECT_EQ(r.status, 200);
  std::size_t events = SplitSseEvents(r.body).size();
  ASSERT_GT(events, 5u);
  EXPECT_GE(r.seconds, 0.015 * static_cast<double>(events - 1) * 0.9);
  EXPECT_EQ(Decode(r.body).state, common::StreamAccumulator::State::kComplete);
}

TEST_F(FakeApiServerTest, MalformedDataLineFailsTheStream) {
  StartScenario(FaultScenario(R"({"type":"malformed","after_events":3})"));
  HttpResult r = Post(UserRequest("x"));
  EXPECT_EQ(r.status, 200);
  Decoded decoded = Decode(r.body);
  ASSERT_TRUE(decoded.error.has_value());
  EXPECT_EQ(decoded.error->kind, common::StreamError::Kind::kProtocol);
}

TEST_F(FakeApiServerTest, SpliceSendsASecondMessageStart) {
  StartScenario(FaultScenario(R"({"type":"splice","after_events":7})"));
  HttpResult r = Post(UserRequest("x"));
  EXPECT_EQ(r.status, 200);
  std::size_t first = r.body.find("event: message_start");
  ASSERT_NE(first, std::string::npos);
  EXPECT_NE(r.body.find("event: message_start", first + 1), std::string::npos);
  Decoded decoded = Decode(r.body);
  ASSERT_TRUE(decoded.error.has_value());
  EXPECT_EQ(decoded.error->kind, common::StreamError::Kind::kSpliced);
}

TEST_F(FakeApiServerTest, MaxTokensTruncatesInsideTheToolInput) {
  StartScenario(FaultScenario(R"("max_tokens")"));
  HttpResult r = Post(UserRequest("x"));
  Decoded decoded = Decode(r.body);
  ASSERT_EQ(decoded.state, common::StreamAccumulator::State::kComplete);
  EXPECT_EQ(decoded.message["stop_reason"], "max_tokens");
  ASSERT_EQ(decoded.blocks.size(), 2u);
  EXPECT_FALSE(decoded.blocks[1].stopped);
  EXPECT_EQ(decoded.blocks[1].input_state, common::InputState::kIncomplete);
  EXPECT_FALSE(decoded.blocks[1].runnable());
  EXPECT_THAT(r.body, ::testing::Not(HasSubstr(
                          "\"content_block_stop\",\"index\":1")));
}

TEST_F(FakeApiServerTest, PauseTurnResultOpensTheContinuation) {
  StartScenario(R"({"responses":[
    {"blocks":[{"type":"text","text":"Searching the web for you."}],"fault":"pause_turn"},
    {"blocks":[{"type":"text","text":"Here is the answer."}]}]})");
  Json request = UserRequest("search please");
  request["tools"] = Json::array({WebSearchTool()});
  Decoded first = Decode(Post(request).body);
  ASSERT_EQ(first.state, common::StreamAccumulator::State::kComplete);
  EXPECT_EQ(first.message["stop_reason"], "pause_turn");
  const Json& content = first.message["content"];
  ASSERT_EQ(content.back()["type"], "server_tool_use");
  std::string id = content.back()["id"];
  EXPECT_EQ(id.substr(0, 9), "srvtoolu_");

  // Continuation: the assistant content goes back unchanged.
  request["messages"].push_back({{"role", "assistant"}, {"content", content}});
  HttpResult second = Post(request);
  ASSERT_EQ(second.status, 200) << second.body;
  Decoded next = Decode(second.body);
  ASSERT_EQ(next.state, common::StreamAccumulator::State::kComplete);
  EXPECT_EQ(next.message["content"][0]["type"], "web_search_tool_result");
  EXPECT_EQ(next.message["content"][0]["tool_use_id"], id);
  EXPECT_EQ(next.message["content"][1]["text"], "Here is the answer.");
  EXPECT_EQ(server_->Stats()["rejected_400"], 0);
}

TEST_F(FakeApiServerTest, DeferredServerCallResultOpensTheNextResponse) {
  StartScenario(std::string(R"({"responses":[{"blocks":)") +
                kToolScenarioBlocks + R"(,"fault":"deferred_server_call"},
    {"blocks":[{"type":"text","text":"All done."}]}]})");
  Json request = UserRequest("weather and search");
  request["tools"] = Json::array({WebSearchTool(), ClientTool("get_weather")});
  Decoded first = Decode(Post(request).body);
  ASSERT_EQ(first.state, common::StreamAccumulator::State::kComplete);
  EXPECT_EQ(first.message["stop_reason"], "tool_use");
  const Json& content = first.message["content"];
  ASSERT_EQ(content.size(), 3u);
  EXPECT_EQ(content[1]["type"], "server_tool_use");
  EXPECT_EQ(content[2]["type"], "tool_use");  // client tool_use stays last
  std::string server_id = content[1]["id"];
  request["messages"].push_back({{"role", "assistant"}, {"content", content}});
  request["messages"].push_back(
      {{"role", "user"},
       {"content", Json::array({{{"type", "tool_result"},
                                 {"tool_use_id", content[2]["id"]},
                                 {"content", "18 C"}}})}});
  HttpResult second = Post(request);
  ASSERT_EQ(second.status, 200) << second.body;
  Decoded next = Decode(second.body);
  EXPECT_EQ(next.message["content"][0]["type"], "web_search_tool_result");
  EXPECT_EQ(next.message["content"][0]["tool_use_id"], server_id);
  EXPECT_EQ(server_->Stats()["rejected_400"], 0);
}

TEST_F(FakeApiServerTest, RepeatedServerResultOpensTheNextResponseAgain) {
  StartScenario(std::string(R"({"responses":[{"blocks":)") +
                kToolScenarioBlocks + R"(,"fault":{"type":"repeat_server_result","server_tool":"web_fetch"}},
    {"blocks":[{"type":"text","text":"Done."}]}]})");
  Json request = UserRequest("fetch and weather");
  request["tools"] = Json::array(
      {{{"type", "web_fetch_20250910"}, {"name", "web_fetch"}},
       ClientTool("get_weather")});
  Decoded first = Decode(Post(request).body);
  const Json& content = first.message["content"];
  ASSERT_EQ(content.size(), 4u);
  EXPECT_EQ(content[2]["type"], "web_fetch_tool_result");
  std::string server_id = content[1]["id"];
  request["messages"].push_back({{"role", "assistant"}, {"content", content}});
  request["messages"].push_back(
      {{"role", "user"},
       {"content", Json::array({{{"type", "tool_result"},
                                 {"tool_use_id", content[3]["id"]},
                                 {"content", "18 C"}}})}});
  HttpResult second = Post(request);
  ASSERT_EQ(second.status, 200) << second.body;
  Decoded next = Decode(second.body);
  EXPECT_EQ(next.message["content"][0]["type"], "web_fetch_tool_result");
  EXPECT_EQ(next.message["content"][0]["tool_use_id"], server_id);
  EXPECT_EQ(next.message["content"][1]["text"], "Done.");
}

TEST_F(FakeApiServerTest, RandomFaultsAreSeededAndDeterministic) {
  auto statuses = [&](std::uint64_t seed) {
    FakeApiOptions options;
    options.seed = seed;
    options.fault_rate = 0.5;
    for (const char* name : {"http_429", "http_500", "http_529"}) {
      options.random_faults.push_back(*FaultFromName(name));
    }
    Start(std::move(options));
    std::vector<long> out;
    for (int i = 0; i < 12; ++i) out.push_back(Post(UserRequest("x")).status);
    server_->Stop();
    return out;
  };
  std::vector<long> a = statuses(5);
  EXPECT_EQ(a, statuses(5));
  EXPECT_THAT(a, ::testing::Contains(200));
  EXPECT_THAT(a, ::testing::Contains(::testing::AnyOf(429, 500, 529)));
}

// ---------------------------------------------------------------------------
// Scenario matching, named ids, the request log.

TEST_F(FakeApiServerTest, NamedIdsAndMatchesMakeMultiTurnFlowsDeterministic) {
  StartScenario(R"({"responses":[
    {"match":{"last_user_has_tool_result_for":"$t1"},
     "blocks":[{"type":"text","text":"The tool said something."}]},
    {"match":{"turn":1},
     "blocks":[{"type":"tool_use","id":"$t1","name":"get_weather","input":{"city":"Oslo"}}]}]})");
  Json request = UserRequest("weather");
  request["tools"] = Json::array({ClientTool("get_weather")});
  Decoded first = Decode(Post(request).body);
  ASSERT_EQ(first.message["content"][0]["type"], "tool_use");
  std::string id = first.message["content"][0]["id"];
  EXPECT_EQ(id.substr(0, 6), "toolu_");
  request["messages"].push_back(
      {{"role", "assistant"}, {"content", first.message["content"]}});
  request["messages"].push_back(
      {{"role", "user"},
       {"content", Json::array({{{"type", "tool_result"},
                                 {"tool_use_id", id},
                                 {"content", "cold"}}})}});
  Decoded second = Decode(Post(request).body);
  EXPECT_EQ(second.message["content"][0]["text"], "The tool said something.");
  // Nothing left: the scenario says so with a 500.
  HttpResult third = Post(request);
  EXPECT_EQ(third.status, 500);
  EXPECT_THAT(third.body, HasSubstr("no scenario response"));
  EXPECT_EQ(server_->Stats()["unmatched"], 1);
}

TEST_F(FakeApiServerTest, RequestLogRecordsEveryRequest) {
  StartScenario(R"({"fallback":"model","responses":[
    {"name":"overloaded","blocks":[{"type":"text","text":"x"}],"fault":"http_529"}]})");
  Post(UserRequest("one"));
  Post(UserRequest("two"));
  Post(UserRequest("three"), {"x-api-key: k"});
  HttpResult log = Get("/_fake/requests");
  ASSERT_EQ(log.status, 200);
  Json entries = Parse(log.body);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0]["status"], 529);
  EXPECT_EQ(entries[0]["fault"], "http_529");
  EXPECT_EQ(entries[0]["response"]["name"], "overloaded");
  EXPECT_EQ(entries[1]["status"], 200);
  EXPECT_EQ(entries[1]["response"]["source"], "model");
  EXPECT_EQ(entries[1]["body"]["messages"][0]["content"], "two");
  EXPECT_EQ(entries[1]["headers"]["anthropic-version"], "2023-06-01");
  EXPECT_EQ(entries[2]["status"], 400);
  Json stats = Parse(Get("/_fake/stats").body);
  EXPECT_EQ(stats["requests"], 3);
  EXPECT_EQ(stats["rejected_400"], 1);
  EXPECT_EQ(stats["faults"]["http_529"], 1);
  EXPECT_EQ(Http(server_->base_url() + "/nope", nullptr, {}).status, 404);
}

TEST_F(FakeApiServerTest, RuleModelRunsAToolRoundTrip) {
  Start({});
  Json request = UserRequest("What is the weather? use get_weather");
  request["tools"] = Json::array({ClientTool("get_weather"), ClientTool("other")});
  Decoded first = Decode(Post(request).body);
  ASSERT_EQ(first.state, common::StreamAccumulator::State::kComplete);
  EXPECT_EQ(first.message["stop_reason"], "tool_use");
  Json results = Json::array();
  for (const Json& block : first.message["content"]) {
    if (block["type"] != "tool_use") continue;
    EXPECT_TRUE(block["input"]["city"].is_string());
    results.push_back({{"type", "tool_result"},
                       {"tool_use_id", block["id"]},
                       {"content", "sunny"}});
  }
  ASSERT_EQ(results.size(), 1u);
  request["messages"].push_back(
      {{"role", "assistant"}, {"content", first.message["content"]}});
  request["messages"].push_back({{"role", "user"}, {"content", results}});
  Decoded second = Decode(Post(request).body);
  EXPECT_EQ(second.message["stop_reason"], "end_turn");
  EXPECT_THAT(second.message["content"].back()["text"].get<std::string>(),
              HasSubstr("get_weather: sunny"));
  EXPECT_EQ(server_->Stats()["rejected_400"], 0);
}

// ---------------------------------------------------------------------------
// The binary.

struct Child {
  pid_t pid = -1;
  std::FILE* out = nullptr;
};

// Starts toolmesh-fakeapi with `args`, stdout on a pipe.
Child Spawn(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) return {};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    std::string bin = TOOLMESH_FAKEAPI_BIN;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (std::string& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  return Child{pid, fdopen(fds[0], "r")};
}

int WaitExit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(FakeApiBinaryTest, PrintsThePortServesAndStopsOnSigterm) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  Child child = Spawn({"--listen", "127.0.0.1:0", "--scenario",
                       std::string(TOOLMESH_FAKEAPI_SCENARIOS) +
                           "/text_then_tool.json",
                       "--seed", "3"});
  ASSERT_GT(child.pid, 0);
  char line[256] = {};
  ASSERT_NE(std::fgets(line, sizeof line, child.out), nullptr);
  std::string text(line);
  ASSERT_THAT(text, ::testing::StartsWith("listening on 127.0.0.1:"));
  int port = std::stoi(text.substr(text.rfind(':') + 1));
  std::string body = common::DumpJson(UserRequest("hello"));
  HttpResult r = Http("http://127.0.0.1:" + std::to_string(port) +
                          "/v1/messages",
                      &body, {"x-api-key: k", "anthropic-version: 2023-06-01"});
  EXPECT_EQ(r.status, 200);
  kill(child.pid, SIGTERM);
  EXPECT_EQ(WaitExit(child.pid), 0);
  std::fclose(child.out);
}

TEST(FakeApiBinaryTest, BadFlagsAndBadScenariosExitWith2) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"--nope"},
           {"--listen", "nonsense"},
           {"--fault-rate", "2"},
           {"--fault-rate", "0.1", "--faults", "http_999"},
           {"--scenario", "/no/such/scenario.json"}}) {
    Child child = Spawn(args);
    ASSERT_GT(child.pid, 0);
    EXPECT_EQ(WaitExit(child.pid), 2) << args[0];
    std::fclose(child.out);
  }
  Child help = Spawn({"--help"});
  char line[256] = {};
  ASSERT_NE(std::fgets(line, sizeof line, help.out), nullptr);
  EXPECT_THAT(std::string(line), HasSubstr("usage: toolmesh-fakeapi"));
  while (std::fgets(line, sizeof line, help.out) != nullptr) {
  }
  EXPECT_EQ(WaitExit(help.pid), 0);
  std::fclose(help.out);
}

TEST(FakeApiBinaryTest, ExampleScenariosLoad) {
  for (const char* name : {"text_then_tool.json", "faults_tour.json",
                           "pause_turn.json", "deferred_server_call.json"}) {
    SCOPED_TRACE(name);
    EXPECT_THAT(LoadScenarioFile(std::string(TOOLMESH_FAKEAPI_SCENARIOS) + "/" +
                                 name)
                    .status(),
                IsOk());
  }
}

}  // namespace
}  // namespace toolmesh::fakeapi
