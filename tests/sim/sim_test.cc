// Tests of the deterministic simulation: a seed replays exactly (in this
// process and in a second one), a fault-free world completes every task,
// a batch of seeds passes every invariant, budgets turn into violations,
// and the in-memory model transport keeps the ModelTransport contract.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/fake_clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sim/sim_loop.h"
#include "tests/sim/sim_model.h"
#include "tests/sim/sim_world.h"

namespace toolmesh::sim {
namespace {

using ::testing::HasSubstr;

std::string Describe(const SimResult& r) {
  std::string out = absl::StrCat("seed=", r.seed, " step=", r.violation_step,
                                 ": ", r.violation.value_or("(none)"), "\n");
  for (const std::string& line : r.recent) absl::StrAppend(&out, "  ", line, "\n");
  return out;
}

SimOptions Small(std::uint64_t seed) {
  SimOptions options;
  options.seed = seed;
  options.tasks = 2;
  options.workers = 2;
  return options;
}

TEST(SimWorldTest, SameSeedReplaysTheSameRun) {
  for (std::uint64_t seed : {3u, 17u, 41u}) {
    const SimResult a = RunSimulation(Small(seed));
    const SimResult b = RunSimulation(Small(seed));
    EXPECT_EQ(a.digest, b.digest) << "seed " << seed;
    EXPECT_EQ(a.steps, b.steps) << "seed " << seed;
    EXPECT_EQ(a.faults, b.faults) << "seed " << seed;
  }
}

TEST(SimWorldTest, DifferentSeedsRunDifferently) {
  EXPECT_NE(RunSimulation(Small(1)).digest, RunSimulation(Small(2)).digest);
}

TEST(SimWorldTest, SecondProcessReplaysTheSameDigest) {
  for (std::uint64_t seed : {5u, 23u}) {
    const SimResult here = RunSimulation(Small(seed));
    const std::string command =
        absl::StrCat(TOOLMESH_SIM_BIN, " --seed=", seed,
                     " --tasks=2 --workers=2 --print-digest");
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr) << command;
    std::string output;
    char buffer[4096];
    while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
    pclose(pipe);
    EXPECT_THAT(output, HasSubstr(absl::StrFormat("seed=%d digest=%016x\n",
                                                  seed, here.digest)))
        << output;
  }
}

TEST(SimWorldTest, FaultFreeWorldCompletesEveryTask) {
  SimOptions options = Small(9);
  options.tasks = 4;
  options.crash = 0;
  options.worker_loss = 0;
  options.store_error = 0;
  options.cancel = 0;
  options.task_timeout = 0;
  options.model = SimModelOptions{.http_error = 0,
                                  .sse_error = 0,
                                  .malformed = 0,
                                  .splice = 0,
                                  .cut = 0,
                                  .stall = 0,
                                  .slow_chunks = 0,
                                  .max_tokens = 0,
                                  .pause_turn = 0,
                                  .deferred_server_call = 0,
                                  .repeat_server_result = 0};
  options.worker = SimWorkerOptions{.error_result = 0,
                                    .forget = 0,
                                    .hang = 0,
                                    .slow = 0,
                                    .stale_attempt = 0,
                                    .duplicate = 0,
                                    .reorder = 0,
                                    .drop = 0};
  for (std::uint64_t seed = 100; seed < 110; ++seed) {
    options.seed = seed;
    const SimResult r = RunSimulation(options);
    ASSERT_FALSE(r.violation.has_value()) << Describe(r);
    // A "ghost" tool (served by nobody) ends no_worker; the task still
    // completes: the model gets an is_error result.
    EXPECT_EQ(r.outcomes, (std::map<std::string, int>{
                              {"TASK_STATE_COMPLETED", options.tasks}}))
        << Describe(r);
    EXPECT_GT(r.tool_calls, 0) << Describe(r);
  }
}

TEST(SimWorldTest, SeedsKeepEveryInvariant) {
  std::int64_t faults = 0;
  int crashes = 0;
  for (std::uint64_t seed = 0; seed < 150; ++seed) {
    const SimResult r = RunSimulation(Small(seed));
    ASSERT_FALSE(r.violation.has_value()) << Describe(r);
    for (const auto& [kind, n] : r.faults) faults += n;
    crashes += r.crashes;
  }
  // The seeds did inject faults, orchestrator crashes among them.
  EXPECT_GT(faults, 150);
  EXPECT_GT(crashes, 10);
}

TEST(SimWorldTest, VirtualTimeBudgetIsAViolation) {
  SimOptions options = Small(4);
  options.max_virtual_time = absl::Milliseconds(50);
  const SimResult r = RunSimulation(options);
  ASSERT_TRUE(r.violation.has_value());
  EXPECT_THAT(*r.violation, HasSubstr("not finished within"));
  EXPECT_FALSE(r.recent.empty());
}

TEST(SimWorldTest, StepBudgetIsAViolation) {
  SimOptions options = Small(4);
  options.max_steps = 10;
  const SimResult r = RunSimulation(options);
  ASSERT_TRUE(r.violation.has_value());
  EXPECT_THAT(*r.violation, HasSubstr("10 steps"));
  EXPECT_EQ(r.violation_step, 10u);
}

// A handler that records what it gets.
class Recorder final : public common::ModelStreamHandler {
 public:
  void OnResponseStarted(int status, const common::HttpHeaders&) override {
    events.push_back(absl::StrCat("start ", status));
  }
  void OnData(std::string_view bytes) override { data.append(bytes); }
  void OnFinished(const common::TransportResult& result) override {
    events.push_back(absl::StrCat(
        "finished ", static_cast<int>(result.kind)));
    finished = result;
  }
  std::vector<std::string> events;
  std::string data;
  std::optional<common::TransportResult> finished;
};

class SimModelTransportTest : public ::testing::Test {
 protected:
  // Runs the loop's actions until none is left.
  void RunAll() {
    while (auto at = loop_.NextActionTime()) {
      clock_.AdvanceTo(*at);
      if (auto action = loop_.TakeDue(clock_.Now())) (*action)();
    }
  }
  static common::ModelRequest Request() {
    common::ModelRequest request;
    request.request_id = "task_x/turn_1/attempt_1";
    request.body = R"({"model":"m","max_tokens":100,"stream":true,
        "messages":[{"role":"user","content":"hello"}]})";
    return request;
  }
  static SimModelOptions NoFaults() {
    return SimModelOptions{.http_error = 0, .sse_error = 0, .malformed = 0,
                           .splice = 0, .cut = 0, .stall = 0,
                           .slow_chunks = 0, .max_tokens = 0};
  }

  common::FakeClock clock_{absl::FromUnixSeconds(1000)};
  SimLoop loop_{1, clock_};
};

TEST_F(SimModelTransportTest, StreamsAWholeMessageAfterStartReturns) {
  SimModelTransport transport(loop_, NoFaults());
  auto recorder = std::make_shared<Recorder>();
  ASSERT_TRUE(transport.Start(Request(), recorder).ok());
  EXPECT_TRUE(recorder->events.empty());  // nothing inside Start()
  RunAll();
  ASSERT_TRUE(recorder->finished.has_value());
  EXPECT_EQ(recorder->finished->kind, common::TransportResult::Kind::kCompleted);
  EXPECT_EQ(recorder->events.front(), "start 200");
  EXPECT_THAT(recorder->data, HasSubstr("message_stop"));
  EXPECT_EQ(transport.rejected(), 0);
}

TEST_F(SimModelTransportTest, CancelEndsTheStreamOnceWithCancelled) {
  SimModelTransport transport(loop_, NoFaults());
  auto recorder = std::make_shared<Recorder>();
  absl::StatusOr<common::ModelStreamId> id = transport.Start(Request(), recorder);
  ASSERT_TRUE(id.ok());
  transport.Cancel(*id);
  transport.Cancel(*id);
  RunAll();
  ASSERT_TRUE(recorder->finished.has_value());
  EXPECT_EQ(recorder->finished->kind, common::TransportResult::Kind::kCancelled);
  EXPECT_EQ(std::count_if(recorder->events.begin(), recorder->events.end(),
                          [](const std::string& e) {
                            return e.starts_with("finished");
                          }),
            1);
}

TEST_F(SimModelTransportTest, InvalidRequestIsRejectedAndReported) {
  SimModelTransport transport(loop_, NoFaults());
  common::ModelRequest request = Request();
  request.body = R"({"model":"m","max_tokens":100,"messages":[
      {"role":"user","content":"hi"},
      {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1",
        "name":"echo","input":{}}]},
      {"role":"user","content":"no result"}]})";
  auto recorder = std::make_shared<Recorder>();
  ASSERT_TRUE(transport.Start(request, recorder).ok());
  RunAll();
  EXPECT_EQ(transport.rejected(), 1);
  ASSERT_TRUE(loop_.violation().has_value());
  EXPECT_THAT(*loop_.violation(), HasSubstr("rejected"));
  EXPECT_EQ(recorder->events.front(), "start 400");
}

}  // namespace
}  // namespace toolmesh::sim
