#include "orchestrator/cli/offline_commands.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace toolmesh::cli {
namespace {

using common::Json;
using ::testing::HasSubstr;

struct CliRun {
  int status;
  std::string out;
  std::string err;
};

CliRun SseDecode(std::vector<std::string> args) {
  std::ostringstream out, err;
  int status = RunSseDecode(args, out, err);
  return {status, out.str(), err.str()};
}

CliRun Check(std::vector<std::string> args) {
  std::ostringstream out, err;
  int status = RunConversationCheck(args, out, err);
  return {status, out.str(), err.str()};
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  return lines;
}

std::vector<Json> JsonLines(const std::string& text) {
  std::vector<Json> out;
  for (const std::string& line : Lines(text)) {
    auto value = common::ParseJson(line);
    EXPECT_TRUE(value.ok()) << line;
    if (value.ok()) out.push_back(*value);
  }
  return out;
}

std::string WriteTemp(const std::string& name, const std::string& contents) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST(SseDecodeTest, PrintsFinalMessageOfClientToolUseStream) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  CliRun run = SseDecode({dir + "/02-text-then-client-tool-use.sse"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  auto message = common::ParseJson(run.out);
  ASSERT_TRUE(message.ok());
  EXPECT_EQ((*message)["type"], "message");
  EXPECT_EQ((*message)["stop_reason"], "tool_use");
  const Json& tool = (*message)["content"][1];
  EXPECT_EQ(tool["type"], "tool_use");
  ASSERT_TRUE(tool["input"].is_object());
  EXPECT_TRUE(tool["input"].contains("location"));
}

TEST(SseDecodeTest, CompactPrintsOneLine) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  CliRun run = SseDecode({"--compact", dir + "/01-text-only.sse"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  EXPECT_EQ(Lines(run.out).size(), 1u);
}

TEST(SseDecodeTest, MidStreamErrorExitsNonZeroWithOneLine) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  CliRun run = SseDecode({dir + "/15-error-event-overloaded-mid-stream-after-text-SYNTHETIC.sse"});
  EXPECT_EQ(run.status, kExitInvalid);
  EXPECT_TRUE(run.out.empty());
  ASSERT_EQ(Lines(run.err).size(), 1u) << run.err;
  EXPECT_THAT(run.err, HasSubstr("overloaded_error"));
}

TEST(SseDecodeTest, SplicedStreamFailsAndPartialPrintsOnlyTheFirstMessage) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  const std::string file = dir + "/17-spliced-message-start-SYNTHETIC.sse";
  CliRun plain = SseDecode({file});
  EXPECT_EQ(plain.status, kExitInvalid);
  EXPECT_THAT(plain.err, HasSubstr("message_start"));
  EXPECT_TRUE(plain.out.empty());

  CliRun partial = SseDecode({"--partial", file});
  EXPECT_EQ(partial.status, kExitInvalid);
  auto message = common::ParseJson(partial.out);
  ASSERT_TRUE(message.ok()) << partial.out;
  EXPECT_EQ((*message)["id"], "msg_first");
  // Only the thinking block completed; the open tool_use is not shown and
  // nothing of the second message is merged in.
  ASSERT_EQ((*message)["content"].size(), 1u);
  EXPECT_EQ((*message)["content"][0]["type"], "thinking");
  EXPECT_EQ(partial.out.find("msg_second"), std::string::npos);
}

TEST(SseDecodeTest, EventsShowServerToolReconciledInTheSameResponse) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  CliRun run = SseDecode({"--events", dir + "/08-server-tool-web-search-with-citations.sse"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  std::vector<Json> events = JsonLines(run.out);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.front()["event"], "message_start");
  EXPECT_EQ(events.back()["event"], "message_stop");
  int announced = 0, done = 0;
  for (const Json& e : events) {
    if (e["event"] != "tool_transition") continue;
    EXPECT_EQ(e["kind"], "server");
    if (e.value("announced", false)) ++announced;
    if (e["to"] == "done") ++done;
  }
  EXPECT_GE(announced, 1);
  EXPECT_EQ(announced, done);
}

TEST(SseDecodeTest, EventsNeverRunATruncatedToolCall) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  CliRun run = SseDecode({"--events", dir + "/03-client-tool-use-max-tokens-truncated.sse"});
  ASSERT_EQ(run.status, kExitOk) << run.err;
  bool failed_invalid_input = false;
  for (const Json& e : JsonLines(run.out)) {
    if (e["event"] == "tool_transition" && e["to"] == "error") {
      EXPECT_EQ(e["reason"], "invalid_input");
      failed_invalid_input = true;
    }
  }
  EXPECT_TRUE(failed_invalid_input);
}

TEST(SseDecodeTest, EventsAbortTheStepOfAFailedStream) {
  const std::string sse =
      "event: message_start\n"
      "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
      "\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,"
      "\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n"
      "event: content_block_start\n"
      "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
      "\"tool_use\",\"id\":\"toolu_a\",\"name\":\"t\",\"input\":{}}}\n\n"
      "event: content_block_delta\n"
      "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
      "\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n"
      "event: content_block_stop\n"
      "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
      "event: error\n"
      "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
  CliRun run = SseDecode({"--events", WriteTemp("aborted.sse", sse)});
  EXPECT_EQ(run.status, kExitInvalid);
  std::vector<Json> events = JsonLines(run.out);
  int aborted = 0;
  for (const Json& e : events) {
    if (e["event"] == "tool_transition" && e["to"] == "error") {
      EXPECT_EQ(e["reason"], "stream_aborted");
      ++aborted;
    }
  }
  EXPECT_EQ(aborted, 1);
}

TEST(SseDecodeTest, BadUsageExitsTwo) {
  EXPECT_EQ(SseDecode({}).status, kExitUsage);
  EXPECT_EQ(SseDecode({"--bogus", "x.sse"}).status, kExitUsage);
  CliRun missing = SseDecode({"/nonexistent/file.sse"});
  EXPECT_EQ(missing.status, kExitUsage);
  EXPECT_EQ(Lines(missing.err).size(), 1u);
}

TEST(ConversationCheckTest, Fixture19IsInvalidWithTheApisText) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  auto text = testing::ReadFile(dir + "/19-400-orphan-srvtoolu-in-tool-result.request-response.json");
  ASSERT_TRUE(text.ok());
  auto pair = common::ParseJson(*text);
  ASSERT_TRUE(pair.ok());
  std::string request = WriteTemp("fx19.json", common::DumpJson((*pair)["request"]));
  CliRun run = Check({request});
  EXPECT_EQ(run.status, kExitInvalid);
  std::vector<std::string> lines = Lines(run.out);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.front(),
            (*pair)["response"]["body"]["error"]["message"].get<std::string>());

  CliRun repaired = Check({"--repair", request});
  EXPECT_EQ(repaired.status, kExitOk) << repaired.err;
  CliRun recheck = Check({WriteTemp("fx19-repaired.json", repaired.out)});
  EXPECT_EQ(recheck.status, kExitOk) << recheck.out;
}

TEST(ConversationCheckTest, RecordedValidRequestsPass) {
  TOOLMESH_REQUIRE_FIXTURES_DIR(dir);
  for (const std::string& name : testing::FixtureNames(".request.json")) {
    CliRun run = Check({dir + "/" + name});
    EXPECT_EQ(run.status, kExitOk) << name << ": " << run.out;
    EXPECT_TRUE(run.out.empty()) << name;
  }
}

TEST(ConversationCheckTest, NotJsonIsOneClearLine) {
  CliRun run = Check({WriteTemp("not.json", "{\"messages\": [")});
  EXPECT_EQ(run.status, kExitInvalid);
  EXPECT_EQ(Lines(run.err).size(), 1u);
  EXPECT_THAT(run.err, HasSubstr("invalid JSON"));
}

}  // namespace
}  // namespace toolmesh::cli
